"""Forward+backward speed of DeltaNet and Gated DeltaNet: chunk-parallel (WY/UT) form vs the token recurrence.

Times ``neural_memory.common.delta_rule_chunked.chunk_delta_rule`` against ``recurrent_delta_rule`` (a Python
loop of ``delta_rule_step``) at B=1, H=4, d_k=d_v=64, float32, one thread, seq 1024 / 4096 / 16384:

* one call is ``o, s = fn(q, k, v, beta, alpha=...)``, ``(o.square().mean() + s.square().mean()).backward()``
  with gradients wanted for q, k, v, beta (and alpha for Gated DeltaNet);
* the chunked form at each ``--chunks`` size (default 32 and 64);
* 1 untimed warm-up call, then ``--iters`` timed calls; throughput is ``batch * seq / median seconds``;
* the recurrence at a longer sequence is skipped (and says so) when its projected time, linear in seq from
  the longest sequence it ran, exceeds ``--max-recurrent-s`` for the warm-up plus the timed calls.

The run ends with the speed-up chunked / recurrent per variant, chunk size and sequence, and a PASS/FAIL
line against the target (>= 20x at seq 4096). Results go to ``--out`` (JSON), rewritten after every row.

    python benchmarks/delta_rule.py --quick      # smoke run, seconds
    python benchmarks/delta_rule.py              # full run
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from neural_memory.common.delta_rule_chunked import chunk_delta_rule, recurrent_delta_rule

VARIANTS = ("deltanet", "gated-deltanet")
IMPLS = {"chunked": chunk_delta_rule, "recurrent": recurrent_delta_rule}
FULL = {"batch": 1, "heads": 4, "dim": 64, "chunks": [32, 64], "seqs": [1024, 4096, 16384], "iters": 3}
QUICK = {"batch": 1, "heads": 2, "dim": 16, "chunks": [16], "seqs": [64, 128], "iters": 1}
TARGET_SPEEDUP, TARGET_SEQ = 20.0, 4096
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "delta_rule.json"


def make_inputs(cfg: dict, seq: int, gated: bool) -> dict:
    g = torch.Generator().manual_seed(0)
    shape = (cfg["batch"], cfg["heads"], seq)
    q = torch.randn(*shape, cfg["dim"], generator=g)
    k = torch.nn.functional.normalize(torch.randn(*shape, cfg["dim"], generator=g), dim=-1)
    v = torch.randn(*shape, cfg["dim"], generator=g)
    beta = torch.sigmoid(torch.randn(*shape, generator=g))
    inputs = {"q": q, "k": k, "v": v, "beta": beta}
    if gated:
        inputs["alpha"] = 0.9 + 0.1 * torch.rand(*shape, generator=g)  # (0.9, 1): Gated DeltaNet-like decays
    return {name: x.requires_grad_(True) for name, x in inputs.items()}


def fwd_bwd(fn, inputs: dict, chunk: int) -> None:
    o, s = fn(
        inputs["q"], inputs["k"], inputs["v"], inputs["beta"], alpha=inputs.get("alpha"), chunk_size=chunk
    )
    (o.square().mean() + s.square().mean()).backward()
    for x in inputs.values():
        x.grad = None


def time_calls(call, iters: int) -> dict:
    call()  # warm-up: first calls pay for allocation
    seconds = []
    for _ in range(iters):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return {"seconds": seconds, "median_s": statistics.median(seconds)}


def projected_seconds(rows: list[dict], variant: str, seq: int, iters: int) -> float | None:
    """Warm-up plus timed calls of the recurrence at ``seq``, linear in seq from its longest run so far."""
    done = [r for r in rows if r["variant"] == variant and r["impl"] == "recurrent" and r["status"] == "ok"]
    if not done:
        return None
    longest = max(done, key=lambda r: r["seq"])
    return longest["median_s"] * seq / longest["seq"] * (1 + iters)


def derived(rows: list[dict], seqs: list[int], chunks: list[int]) -> list[dict]:
    """Speed-up chunked / recurrent for every (variant, chunk, seq) where both ran; verdict at TARGET_SEQ."""
    ok = {(r["variant"], r["impl"], r["chunk"], r["seq"]): r for r in rows if r["status"] == "ok"}
    lines = []
    for variant in VARIANTS:
        for chunk in chunks:
            for seq in seqs:
                fast = ok.get((variant, "chunked", chunk, seq))
                slow = ok.get((variant, "recurrent", None, seq))
                value = slow["median_s"] / fast["median_s"] if fast and slow else None
                if seq == TARGET_SEQ:
                    verdict = "N/A" if value is None else "PASS" if value >= TARGET_SPEEDUP else "FAIL"
                else:
                    verdict = "INFO" if value is not None else "N/A"
                target = f" (target >= {TARGET_SPEEDUP:g}x)" if seq == TARGET_SEQ else ""
                lines.append(
                    {
                        "name": f"speed-up chunked/recurrent fwd+bwd, {variant}, chunk {chunk}, "
                        f"seq {seq}{target}",
                        "value": value,
                        "verdict": verdict,
                    }
                )
    return lines


def table(rows: list[dict]) -> str:
    out = ["| variant | impl | chunk | seq | tokens/s | median s | status |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        name = f"| {r['variant']} | {r['impl']} | {r['chunk'] or '–'} | {r['seq']} |"
        if r["status"] == "ok":
            out.append(f"{name} {r['tokens_per_s']:,.0f} | {r['median_s']:.4f} | ok |")
        else:
            out.append(f"{name} – | – | {r['status']}: {r['reason']} |")
    return "\n".join(out)


def write(path: Path, cfg: dict, rows: list[dict], lines: list[dict]) -> None:
    report = {
        "config": cfg,
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "platform": platform.platform(),
            "threads": torch.get_num_threads(),
            "loadavg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "argv": sys.argv[1:],
        },
        "throughput_metric": "batch * seq / median seconds of one forward+backward call",
        "rows": rows,
        "derived": lines,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--seqs", nargs="+", type=int, default=None)
    parser.add_argument("--heads", type=int, default=None)
    parser.add_argument("--dim", type=int, default=None)
    parser.add_argument("--chunks", nargs="+", type=int, default=None)
    parser.add_argument("--iters", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--max-recurrent-s", type=float, default=60.0, help="skip longer recurrent runs")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    for key in ("seqs", "heads", "dim", "chunks", "iters"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    cfg |= {"dtype": "float32", "threads": args.threads, "max_recurrent_s": args.max_recurrent_s}
    torch.set_num_threads(args.threads)

    rows: list[dict] = []
    for seq in sorted(cfg["seqs"]):
        for variant in args.variants:
            runs = [("chunked", chunk) for chunk in cfg["chunks"]] + [("recurrent", None)]
            for impl, chunk in runs:
                row = {"variant": variant, "impl": impl, "chunk": chunk, "seq": seq}
                guess = projected_seconds(rows, variant, seq, cfg["iters"]) if impl == "recurrent" else None
                if guess is not None and guess > args.max_recurrent_s:
                    row |= {
                        "status": "skipped",
                        "reason": f"projected {guess:.0f} s > {args.max_recurrent_s:g} s",
                    }
                    print(f"skipped: {variant} recurrent at seq {seq} ({row['reason']})", flush=True)
                else:
                    inputs = make_inputs(cfg, seq, gated=variant == "gated-deltanet")
                    call = functools.partial(fwd_bwd, IMPLS[impl], inputs, chunk or 1)
                    row |= {"status": "ok", **time_calls(call, cfg["iters"])}
                    row["tokens_per_s"] = cfg["batch"] * seq / row["median_s"]
                    label = f"{impl} {chunk}" if chunk else impl
                    print(
                        f"{variant:<15} {label:<12} seq {seq:>6}: {row['tokens_per_s']:>12,.0f} tokens/s",
                        flush=True,
                    )
                rows.append(row)
                write(args.out, cfg, rows, derived(rows, cfg["seqs"], cfg["chunks"]))
    lines = derived(rows, cfg["seqs"], cfg["chunks"])
    write(args.out, cfg, rows, lines)
    print()
    print(table(rows))
    print("\nDerived")
    for line in lines:
        value = "–" if line["value"] is None else f"{line['value']:.1f}x"
        print(f"  {line['verdict']:<4} {line['name']}: {value}")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
