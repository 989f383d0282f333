"""Hope (NL issue, part 2): training speed of the Hope LMs beside ``titans-lmm``, and the chunk-parallel
self-modifying Titans beside its token-by-token reference — one run, side by side.

Every configuration runs in a **fresh subprocess** (its peak memory is its own), one torch thread by default:

* ``lm`` rows — kinds ``hope``, ``hope-attention`` and ``titans-lmm`` of ``build_lm`` at the same width and
  depth (dim 128, depth 2, vocab 256, batch 1; each kind's registry defaults otherwise), seq 1024 / 4096 /
  16384: ``--warmup`` untimed training steps (forward, backward, AdamW step), then ``--steps`` timed ones;
  throughput is ``batch * seq / mean seconds per step``; memory is ``ru_maxrss`` at the end minus the RSS just
  before the first step (model and data built): "delta peak RSS", as ``benchmarks/titans_models.py``.
* ``memory`` rows — Hope's front end alone, ``SelfModifyingTitans`` as ``HopeBlock`` builds it (dim 128,
  chunk 16, q/k/v l2-normalised), forward under ``torch.no_grad()`` of the chunk-parallel module
  (``impl="chunked"``) and of ``self_modifying_reference`` (``impl="reference"``, the token loop with the
  same chunk semantics) at ``--ref-seq`` (4096): 1 untimed warm-up call, then the median of ``--iters``. The
  token loop's backward keeps every token's weights, so it is timed forward only, like
  ``benchmarks/miras_memory.py``.

The run ends with PASS/FAIL lines for the issue's targets: chunk-parallel / token loop >= 10x at the
reference length; cost linear in sequence length for ``hope`` (least-squares exponent of seconds per step
against seq, target <= 1.2; the exponents of the other kinds are printed for comparison); ``hope`` within 3x
of ``titans-lmm``'s tokens/s at every length (ratio >= 1/3). The JSON (``--out``) is rewritten after every
configuration; ``--quick`` writes ``results/hope_quick.json`` unless ``--out`` is given, so a smoke run never
overwrites the full table.

    python benchmarks/hope.py --quick                       # smoke run, seconds
    python benchmarks/hope.py                               # full run (long on 2 cores)
    python benchmarks/hope.py --seqs 1024 4096 --ref-seq 1024 --kinds hope titans-lmm
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

KINDS = ("hope", "hope-attention", "titans-lmm")
RESULTS = Path(__file__).parent / "results"
FULL = {"seqs": [1024, 4096, 16384], "ref_seq": 4096, "dim": 128, "depth": 2, "vocab": 256, "batch": 1,
        "steps": 2, "warmup": 1, "iters": 1, "chunk": 16}  # fmt: skip
QUICK = {**FULL, "seqs": [32, 64], "ref_seq": 32, "dim": 16, "depth": 1, "vocab": 32, "steps": 1}
TARGETS = {"chunked_vs_reference": 10.0, "exponent": 1.2, "hope_vs_titans_lmm": 1 / 3}


def rss_mb() -> float:
    """Current resident set size of this process (Linux /proc; falls back to the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return peak_rss_mb()


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def child_lm(spec: dict) -> dict:
    """One training-throughput measurement of an LM kind (inside the subprocess)."""
    import torch

    from neural_memory.models.registry import build_lm

    torch.manual_seed(0)
    lm = build_lm(spec["kind"], vocab_size=spec["vocab"], dim=spec["dim"], depth=spec["depth"])
    optimiser = torch.optim.AdamW(lm.parameters(), lr=1e-3)
    tokens = torch.randint(0, spec["vocab"], (spec["batch"], spec["seq"] + 1))

    def step() -> float:
        loss = lm.loss(tokens)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        return loss.item()

    before = rss_mb()
    for _ in range(spec["warmup"]):
        step()
    start = time.perf_counter()
    for _ in range(spec["steps"]):
        loss = step()
    seconds = (time.perf_counter() - start) / spec["steps"]
    return {"seconds_per_step": seconds, "tokens_per_s": spec["batch"] * spec["seq"] / seconds,
            "delta_peak_rss_mb": peak_rss_mb() - before, "peak_rss_mb": peak_rss_mb(),
            "parameters": sum(p.numel() for p in lm.parameters()), "final_loss": loss}  # fmt: skip


def child_memory(spec: dict) -> dict:
    """Forward of Hope's self-modifying Titans, chunk-parallel or token by token (inside the subprocess)."""
    import torch

    from neural_memory.nl.self_modifying import SelfModifyingTitans, self_modifying_reference

    torch.manual_seed(0)
    # the front end as HopeBlock builds it (nl/hope.py): q, k and v l2-normalised, one chunk size
    module = SelfModifyingTitans(spec["dim"], chunk_size=spec["chunk"], qk_norm=True, v_norm=True)
    x = torch.randn(spec["batch"], spec["seq"], spec["dim"])
    run = module if spec["impl"] == "chunked" else (lambda z: self_modifying_reference(module, z))
    before = rss_mb()

    def call() -> None:
        with torch.no_grad():
            run(x)

    call()
    times = []
    for _ in range(spec["iters"]):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    tokens_per_s = spec["batch"] * spec["seq"] / median
    return {"seconds": times, "seconds_per_step": median, "tokens_per_s": tokens_per_s,
            "delta_peak_rss_mb": peak_rss_mb() - before, "peak_rss_mb": peak_rss_mb()}  # fmt: skip


def child(spec: dict) -> dict:
    import torch

    from neural_memory.common.runtime import configure_allocator

    configure_allocator()  # the same fixed glibc mmap threshold for every configuration (see the README)
    torch.set_num_threads(spec["threads"])
    return (child_lm if spec["part"] == "lm" else child_memory)(spec)


def run_child(spec: dict, timeout: float) -> dict:
    """Run :func:`child` in a fresh interpreter; a failure becomes ``{"error": ...}``."""
    command = [sys.executable, __file__, "--child", json.dumps(spec)]
    load = os.getloadavg()[0]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timeout after {timeout:.0f} s", "load_before": load}
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        if done.returncode < 0:
            tail = f"killed by signal {-done.returncode} (out of memory?)"
        return {**spec, "error": tail[:200], "load_before": load}
    return {**spec, **json.loads(done.stdout.strip().splitlines()[-1]), "load_before": load}


def name_of(row: dict) -> str:
    return row["kind"] if row["part"] == "lm" else f"self-mod {row['impl']} (fwd)"


def row_line(row: dict) -> str:
    head = f"{name_of(row):<26} {row['seq']:>6}"
    if "error" in row:
        return f"{head}  FAILED: {row['error']}"
    numbers = (
        f"{row['tokens_per_s']:>10.0f} {row['seconds_per_step']:>9.3f} {row['delta_peak_rss_mb']:>12.1f}"
    )
    return f"{head} {numbers}"


def lookup(rows: list[dict], **key) -> dict | None:
    for row in rows:
        if all(row.get(k) == v for k, v in key.items()) and "error" not in row:
            return row
    return None


def exponent(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of log(seconds) against log(seq): 1 is linear, 2 quadratic."""
    xs, ys = [math.log(s) for s, _ in points], [math.log(t) for _, t in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def verdict(ok: bool) -> str:
    return "[PASS]" if ok else "[FAIL]"


def derived(rows: list[dict], config: dict) -> list[str]:
    """PASS / FAIL lines for the issue's three targets (a target with a missing input is left out)."""
    lines = []
    seq = config["ref_seq"]
    fast, slow = (
        lookup(rows, part="memory", impl="chunked", seq=seq),
        lookup(rows, part="memory", impl="reference", seq=seq),
    )
    if fast and slow:
        ratio = fast["tokens_per_s"] / slow["tokens_per_s"]
        lines.append(
            f"{verdict(ratio >= TARGETS['chunked_vs_reference'])} self-modifying Titans chunk-parallel / "
            f"token loop (forward) at seq {seq}: {ratio:.1f}x (target >= 10x)"
        )
    for kind in dict.fromkeys(r["kind"] for r in rows if r["part"] == "lm"):
        points = [
            (s, r["seconds_per_step"])
            for s in config["seqs"]
            if (r := lookup(rows, part="lm", kind=kind, seq=s))
        ]
        if len(points) < 2:
            continue
        p = exponent(points)
        span = f"seq {points[0][0]}-{points[-1][0]}"
        if kind == "hope":
            lines.append(
                f"{verdict(p <= TARGETS['exponent'])} hope: cost ~ seq^{p:.2f} over {span} (target <= 1.2)"
            )
        else:
            lines.append(f"[info] {kind}: cost ~ seq^{p:.2f} over {span}")
    for s in config["seqs"]:
        hope, lmm = (
            lookup(rows, part="lm", kind="hope", seq=s),
            lookup(rows, part="lm", kind="titans-lmm", seq=s),
        )
        if hope and lmm:
            ratio = hope["tokens_per_s"] / lmm["tokens_per_s"]
            lines.append(
                f"{verdict(ratio >= TARGETS['hope_vs_titans_lmm'])} hope / titans-lmm tokens/s at seq {s}: "
                f"{ratio:.2f} (target >= 0.33, within 3x)"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: short sequences, tiny model")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="LM kinds to train")
    parser.add_argument("--seqs", nargs="+", type=int, help="LM sequence lengths (default 1024 4096 16384)")
    parser.add_argument("--ref-seq", type=int, help="length of the chunked vs token-loop comparison (4096)")
    parser.add_argument("--no-memory", action="store_true", help="skip the chunked vs token-loop rows")
    parser.add_argument("--dim", type=int)
    parser.add_argument("--depth", type=int)
    parser.add_argument("--steps", type=int, help="timed training steps per LM configuration")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per subprocess")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per configuration")
    parser.add_argument("--out", type=Path, help="JSON output (default results/hope.json, hope_quick.json)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0

    config = dict(QUICK if args.quick else FULL)
    for key in ("seqs", "ref_seq", "dim", "depth", "steps"):
        if getattr(args, key):
            config[key] = sorted(args.seqs) if key == "seqs" else getattr(args, key)
    config["threads"] = args.threads
    out = args.out or RESULTS / ("hope_quick.json" if args.quick else "hope.json")
    specs = [{**config, "part": "lm", "kind": k, "seq": s} for s in config["seqs"] for k in args.kinds]
    if not args.no_memory:
        specs += [
            {**config, "part": "memory", "impl": i, "seq": config["ref_seq"]}
            for i in ("chunked", "reference")
        ]
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"{'configuration':<26} {'seq':>6} {'tokens/s':>10} {'s/step':>9} {'dPeakRSS MB':>12}", flush=True)
    for spec in specs:
        rows.append(run_child(spec, args.timeout))
        print(row_line(rows[-1]), flush=True)
        report = {
            "config": config,
            "metrics": "lm: training step (fwd+bwd+AdamW), tokens/s = batch*seq/mean s; memory: forward "
            "under no_grad, median s; dPeakRSS = ru_maxrss at the end minus RSS before the first step, MB; "
            "each configuration in a fresh subprocess",
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
            },
            "rows": rows,
            "derived": derived(rows, config),
        }
        out.write_text(json.dumps(report, indent=1))
    print("\nTargets")
    for line in derived(rows, config):
        print("  " + line)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
