"""Training throughput and peak memory of the Titans LM kinds against the Transformer baseline.

Every (kind, sequence length) pair runs in a **fresh subprocess** with the same width and depth: build the LM,
run ``--warmup`` training steps (forward, backward, AdamW step) untimed, then ``--steps`` timed ones.

* throughput: trained tokens per second, ``batch * seq / (mean seconds per step)``;
* peak memory: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of the subprocess (peak resident set size) at
  the end, minus its resident set size just before the first training step (model and data already built) —
  "delta peak RSS". tracemalloc is not used: it does not see PyTorch's tensor allocations.

A config that fails (out of memory, timeout, error) is reported as such and the run continues. The table ends
with the time ratio ``time(longest) / time(shortest)`` per kind (linear scaling gives the length ratio, e.g.
16 for 16384/1024; full attention tends to the square).

* ``--code NAME=SRC ...``: several versions of the library side by side in one run (each config runs
  every version in turn, so they share the machine's state), e.g. a ``git worktree`` of an older commit:
  ``--code then=/tmp/then/src now=src``; the child imports ``neural_memory`` from ``SRC`` (``PYTHONPATH``).
* ``--compile-chunks off on``: the memories' ``compile_chunks`` (``torch.compile`` of the per-chunk step),
  each measured in turn; the result's ``first_step_seconds`` is the first warm-up step, compiling included,
  with an empty inductor cache for every config (a cold compile, as on a fresh machine). A ``--code``
  version without the option runs ``off`` only. After the warm-up every row collects and freezes its heap
  (``gc.freeze``), as the training loop does after a step that compiled.
* ``--profile``: one more step under ``torch.profiler`` after the timed ones; the result gets the number of
  ``aten`` operator calls per step and the operators with the most self CPU time (at dim 128 and chunk 16
  a step is a million small operators, so their count bounds the time as much as their FLOPs).

    python benchmarks/titans_models.py --quick                   # smoke run, seconds
    python benchmarks/titans_models.py --out results.json        # full run: seq 1024, 4096, 16384
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MMAP_THRESHOLD = 1 << 20  # configure_allocator's default, the CLI's setting
KINDS = ("titans-mac", "titans-mag", "titans-mal", "titans-lmm", "transformer")
FULL = {
    "seqs": (1024, 4096, 16384),
    "dim": 128,
    "depth": 2,
    "vocab": 256,
    "batch": 1,
    "steps": 2,
    "warmup": 1,
}
QUICK = {"seqs": (128, 256), "dim": 32, "depth": 1, "vocab": 64, "batch": 1, "steps": 1, "warmup": 1}


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


def child(spec: dict) -> dict:
    """One measurement, run inside the subprocess."""
    import torch

    from neural_memory.common.runtime import configure_allocator
    from neural_memory.models.registry import build_lm

    # the same fixed glibc mmap threshold for every kind (see neural_memory.common.runtime)
    configure_allocator(spec.get("mmap_threshold") or MMAP_THRESHOLD)
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    # the memory's checkpointing (NeuralMemory's checkpoint_chunks) through the kind's memory dict
    setting = spec.get("checkpoint_chunks", "default")
    memory = {} if setting == "default" else {"checkpoint_chunks": setting}
    if spec.get("compile_chunks") == "on":
        memory["compile_chunks"] = True
    config = {"memory": memory} if memory else {}
    lm = build_lm(spec["kind"], vocab_size=spec["vocab"], dim=spec["dim"], depth=spec["depth"], **config)
    optimiser = torch.optim.AdamW(lm.parameters(), lr=1e-3)
    tokens = torch.randint(0, spec["vocab"], (spec["batch"], spec["seq"] + 1))

    def step() -> float:
        loss = lm.loss(tokens)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        return loss.item()

    rss_before = rss_mb()
    first_step = None  # the first warm-up step's seconds: compiling, with compile_chunks
    for _ in range(spec["warmup"]):
        first = time.perf_counter()
        step()
        first_step = time.perf_counter() - first if first_step is None else first_step
    # what the training loop does after a step that compiled (neural_memory.common.compiled.
    # settle_after_compiling), here for every row alike: collect, then freeze the live heap
    gc.collect()
    gc.freeze()
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(spec["steps"]):
        loss = step()
    seconds = (time.perf_counter() - start) / spec["steps"]
    cpu_seconds = (time.process_time() - cpu_start) / spec["steps"]
    result = {
        "seconds_per_step": seconds,
        # user + system CPU time of the process: less sensitive to other jobs on the machine than wall time
        "cpu_seconds_per_step": cpu_seconds,
        "tokens_per_second": spec["batch"] * spec["seq"] / seconds,
        "peak_rss_mb": peak_rss_mb(),
        "delta_peak_rss_mb": peak_rss_mb() - rss_before,
        "parameters": sum(p.numel() for p in lm.parameters()),
        "final_loss": loss,
        "first_step_seconds": first_step,
    }
    if spec.get("profile"):  # after the peak is read: the profiler's own records take gigabytes
        result["profile"] = profile_step(step)
    return result


def profile_step(step, top: int = 8) -> dict:
    """One training step under ``torch.profiler``: aten calls, total self CPU, the top operators."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)  # microseconds, profiler overhead included
    ranked = sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]
    return {
        "aten_calls": sum(e.count for e in events if e.key.startswith("aten::")),
        "self_cpu_seconds": total / 1e6,
        "top": [
            [e.key, e.self_cpu_time_total / 1e3, 100 * e.self_cpu_time_total / total, e.count] for e in ranked
        ],
    }


def measure(spec: dict, timeout: float, src: str | None = None) -> dict:
    """Run :func:`child` in a fresh interpreter (importing the library from ``src`` if given); a failure
    becomes ``{"error": ...}``."""
    command = [sys.executable, __file__, "--child", json.dumps(spec)]
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join([str(Path(src).resolve()), os.environ.get("PYTHONPATH", "")])
    try:
        with tempfile.TemporaryDirectory() as cache:  # every compile cold, as on a fresh machine
            env["TORCHINDUCTOR_CACHE_DIR"] = cache
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, check=False, env=env
            )
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        if done.returncode < 0:
            tail = f"killed by signal {-done.returncode} (out of memory?)"
        return {"error": tail[:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def label(r: dict) -> str:
    """The kind, with the memories' checkpointing when it is not the library's default."""
    setting = r.get("checkpoint_chunks", "default")
    name = (
        (f"{r['code']}: " if r.get("code") else "")
        + r["kind"]
        + (f" ckpt={setting}" if setting != "default" else "")
        + (" compiled" if r.get("compile_chunks") == "on" else "")
    )
    threshold = r.get("mmap_threshold", MMAP_THRESHOLD)
    return name + (f" mmap={threshold >> 10}K" if threshold != MMAP_THRESHOLD else "")


def table(results: list[dict], seqs: list[int]) -> str:
    lines = [
        f"{'kind':<30} {'seq':>6} {'tokens/s':>10} {'s/step':>9} {'cpu s/step':>10} {'dPeakRSS MB':>12} "
        f"{'params':>9} {'1st step s':>10}"
    ]
    for r in results:
        if "error" in r:
            lines.append(f"{label(r):<30} {r['seq']:>6}  FAILED: {r['error']}")
            continue
        lines.append(
            f"{label(r):<30} {r['seq']:>6} {r['tokens_per_second']:>10.0f} {r['seconds_per_step']:>9.3f} "
            f"{r['cpu_seconds_per_step']:>10.3f} {r['delta_peak_rss_mb']:>12.1f} {r['parameters']:>9} "
            f"{r.get('first_step_seconds') or float('nan'):>10.1f}"
        )
        if "profile" in r:
            p = r["profile"]
            lines.append(
                f"{'':>8}profile: {p['aten_calls']} aten calls, {p['self_cpu_seconds']:.2f} s self CPU; top:"
            )
            lines.extend(
                f"{'':>10}{name[:44]:<44} {ms:9.1f} ms {pct:5.1f} % {n:>8}" for name, ms, pct, n in p["top"]
            )
    lines.append("")
    lines.append(f"time ratio seq {seqs[-1]} / seq {seqs[0]} (linear = {seqs[-1] / seqs[0]:g}):")
    for name, ratio in ratios(results, seqs).items():
        lines.append(f"  {name:<30} {ratio if isinstance(ratio, str) else f'{ratio:.2f}'}")
    return "\n".join(lines)


def ratios(results: list[dict], seqs: list[int]) -> dict[str, float | str]:
    out: dict[str, float | str] = {}
    for name in dict.fromkeys(label(r) for r in results):
        by_seq = {r["seq"]: r for r in results if label(r) == name and "error" not in r}
        if seqs[0] in by_seq and seqs[-1] in by_seq:
            out[name] = by_seq[seqs[-1]]["seconds_per_step"] / by_seq[seqs[0]]["seconds_per_step"]
        else:
            out[name] = "n/a (a length failed)"
    return out


def parse_code(arg: str) -> tuple[str, str]:
    """``NAME=SRC`` of ``--code``: a label and a directory holding the ``neural_memory`` package."""
    name, sep, src = arg.partition("=")
    if not sep or not name or not (Path(src) / "neural_memory").is_dir():
        raise SystemExit(f"--code wants NAME=SRC with SRC/neural_memory a directory, got {arg!r}")
    return name, src


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: short sequences, tiny model")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), help="kinds to compare")
    parser.add_argument("--seqs", nargs="+", type=int, help="sequence lengths (default 1024 4096 16384)")
    parser.add_argument("--dim", type=int)
    parser.add_argument("--depth", type=int)
    parser.add_argument("--steps", type=int, help="timed training steps per config")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per config before giving up")
    parser.add_argument(
        "--checkpoint-chunks",
        nargs="+",
        default=["default"],
        help="the memories' checkpoint_chunks, each measured in turn: default (NeuralMemory's, 'auto'), 0 "
        "(none), auto or an int "
        "(Titans kinds only)",
    )
    parser.add_argument(
        "--compile-chunks",
        nargs="+",
        choices=["off", "on"],
        default=["off"],
        help="the memories' compile_chunks, each measured in turn (Titans kinds only; default off)",
    )
    parser.add_argument(
        "--mmap-threshold",
        nargs="+",
        type=int,
        default=[MMAP_THRESHOLD],
        help="glibc mmap thresholds in bytes, each measured in turn (default 1048576, the CLI's)",
    )
    parser.add_argument(
        "--code",
        nargs="+",
        default=[],
        metavar="NAME=SRC",
        help="library versions to compare in one run: each config runs each in turn (default: this checkout)",
    )
    parser.add_argument("--profile", action="store_true", help="profile one more step per config")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0

    base = dict(QUICK if args.quick else FULL)
    for key in ("seqs", "dim", "depth", "steps"):
        if getattr(args, key):
            base[key] = tuple(args.seqs) if key == "seqs" else getattr(args, key)
    seqs = sorted(base.pop("seqs"))
    results = []
    settings = [c if c in ("auto", "default") else int(c) for c in args.checkpoint_chunks]
    codes = [parse_code(c) for c in args.code] or [(None, None)]
    for seq in seqs:
        for kind in args.kinds:
            titans = kind.startswith("titans-")
            for ckpt, mmap, compiled in itertools.product(
                settings if titans else ["default"],
                args.mmap_threshold,
                args.compile_chunks if titans else ["off"],
            ):
                setting = {"checkpoint_chunks": ckpt, "mmap_threshold": mmap, "compile_chunks": compiled}
                spec = {**base, "kind": kind, "seq": seq, "threads": args.threads, **setting}
                spec["profile"] = args.profile
                for code, src in codes:
                    if (
                        compiled == "on"
                        and src
                        and not (Path(src) / "neural_memory/common/compiled.py").exists()
                    ):
                        continue  # a version without compile_chunks
                    result = {"kind": kind, "seq": seq, **setting, **measure(spec, args.timeout, src)}
                    if code:
                        result["code"] = code
                    results.append(result)
                    print(json.dumps(result), flush=True)
    print()
    print(table(results, seqs))
    if args.out:
        report = {
            "config": {
                **base,
                "seqs": seqs,
                "threads": args.threads,
                "code": dict(codes) if args.code else None,
            },
            "memory_metric": "delta peak RSS (ru_maxrss at the end minus RSS before the first step), MB, "
            "each config in a fresh subprocess",
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
            },
            "results": results,
            "time_ratio_longest_over_shortest": ratios(results, seqs),
        }
        args.out.write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
