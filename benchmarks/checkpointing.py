"""Gradient checkpointing of the chunked memory: none vs ``torch.utils.checkpoint`` vs ours (issue 14).

``NeuralMemory(dim, chunk_size=chunk)`` runs forward+backward (``loss = y.pow(2).mean()``) on ``(batch, seq,
dim)`` with three settings, each in a **fresh subprocess** (so its peak memory is its own), alternating over
``--rounds`` rounds so that a busy machine slows all three alike:

* ``none``: ``checkpoint_chunks=0``, every chunk's state kept;
* ``torch``: ``checkpoint_chunks=g`` with ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)`` in
  place of :func:`neural_memory.common.checkpoint.checkpoint_chunks_group` (what the library used before);
* ``ours``: ``checkpoint_chunks=g``, :func:`~neural_memory.common.checkpoint.checkpoint_chunks_group`.

Per setting: median wall and CPU seconds of ``--iters`` timed calls after one warm-up call, delta peak RSS
(``ru_maxrss`` at the end minus RSS after building the model and input), and the sum of the parameters'
gradient norms (equal across the three up to rounding: the same gradients). Prints a table and writes JSON.

    python benchmarks/checkpointing.py --quick     # smoke run, seconds
    python benchmarks/checkpointing.py             # dim 128, chunk 16, seq 4096, g = 16, 1 thread
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = ("none", "torch", "ours")
FULL = {"dim": 128, "chunk": 16, "seq": 4096, "batch": 1, "group": 16, "iters": 3, "threads": 1}
QUICK = {"dim": 16, "chunk": 4, "seq": 64, "batch": 1, "group": 4, "iters": 1, "threads": 1}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def child(spec: dict) -> dict:
    """One setting, measured inside its own process."""
    import torch

    import neural_memory.titans.chunked as chunked
    from neural_memory.titans.memory import NeuralMemory

    torch.set_num_threads(spec["threads"])
    if spec["setting"] == "torch":
        from torch.utils.checkpoint import checkpoint

        chunked.checkpoint_chunks_group = lambda fn, *args, check_hidden=True: checkpoint(
            fn, *args, use_reentrant=False
        )
    torch.manual_seed(0)
    group = 0 if spec["setting"] == "none" else spec["group"]
    model = NeuralMemory(spec["dim"], chunk_size=spec["chunk"], checkpoint_chunks=group)
    x = torch.randn(spec["batch"], spec["seq"], spec["dim"])
    base = _rss_mb()

    def step() -> float:
        model.zero_grad(set_to_none=True)
        y, _ = model(x)
        y.pow(2).mean().backward()
        return sum(float(p.grad.norm()) for p in model.parameters() if p.grad is not None)

    step()
    walls, cpus = [], []
    for _ in range(spec["iters"]):
        w, c = time.perf_counter(), time.process_time()
        grad_norms = step()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "seconds": statistics.median(walls),
        "cpu_seconds": statistics.median(cpus),
        "delta_peak_rss_mb": peak - base,
        "grad_norm_sum": grad_norms,
    }


def measure(spec: dict) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        return {
            "error": proc.stderr.strip().splitlines()[-1]
            if proc.stderr.strip()
            else f"exit {proc.returncode}"
        }
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarise(rows: list[dict]) -> dict[str, dict]:
    """Per setting: the median over rounds of each measurement."""
    out = {}
    for setting in SETTINGS:
        mine = [r for r in rows if r["setting"] == setting and "error" not in r]
        if mine:
            out[setting] = {
                k: statistics.median(r[k] for r in mine)
                for k in ("seconds", "cpu_seconds", "delta_peak_rss_mb", "grad_norm_sum")
            }
    return out


def table(summary: dict[str, dict]) -> str:
    lines = [
        f"{'setting':8} {'fwd+bwd s':>10} {'cpu s':>8} {'x none':>7} {'dPeakRSS MB':>12} {'grad norms':>14}"
    ]
    none = summary.get("none", {}).get("cpu_seconds")
    for setting, r in summary.items():
        ratio = f"{r['cpu_seconds'] / none:.2f}" if none else "-"
        lines.append(
            f"{setting:8} {r['seconds']:10.3f} {r['cpu_seconds']:8.3f} {ratio:>7} "
            f"{r['delta_peak_rss_mb']:12.1f} {r['grad_norm_sum']:14.8g}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: a tiny model, seconds")
    for key in FULL:
        p.add_argument(f"--{key}", type=int)
    p.add_argument("--rounds", type=int, default=2, help="rounds of the three settings, alternating")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    config = {
        k: getattr(args, k) if getattr(args, k) is not None else v
        for k, v in (QUICK if args.quick else FULL).items()
    }
    rows = []
    for round_ in range(args.rounds):
        for setting in SETTINGS:
            row = {"round": round_, "setting": setting, **measure({**config, "setting": setting})}
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = summarise(rows)
    print()
    print(table(summary))
    if args.out:
        report = {
            "config": {**config, "rounds": args.rounds},
            "machine": {"platform": platform.platform(), "python": platform.python_version()},
            "rows": rows,
            "summary": summary,
        }
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"\nwrote {args.out}")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
