"""Training-step speed at ``--precision fp32`` and ``bf16`` (CPU autocast), side by side in one run.

For each kind and width, one model and one batch (``TrainConfig`` defaults: batch 32, sequence 128, depth 2),
then ``--steps`` timed training steps per precision, alternating fp32 and bf16 so that both see the same
machine load. Reports the median step time, tokens/s, the bf16/fp32 speed ratio and the loss of the first
step in each precision (the same weights and batch: how far bfloat16 moves the loss).

    python benchmarks/precision.py --out benchmarks/results/precision.json
    python benchmarks/precision.py --quick       # smoke run, seconds

bfloat16 matmuls are fast only on CPUs with native support (``avx512_bf16`` / AMX); the JSON records
whether this CPU advertises them.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from neural_memory.training import (
    Task,
    TrainConfig,
    build_model,
    make_optimizer,
    precision_context,
    train_step,
)

KINDS = ("transformer", "titans-mac", "titans-lmm")


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    return sorted({flag for flag in ("avx512_bf16", "amx_bf16") if flag in text})


def measure(kind: str, dim: int, steps: int, batch_size: int, seq_len: int) -> dict:
    config = TrainConfig(kind=kind, dim=dim, batch_size=batch_size, seq_len=seq_len)
    batch = Task(config).batch(torch.Generator().manual_seed(0))
    base = build_model(config)
    runs = {}
    for precision in ("fp32", "bf16"):
        model = copy.deepcopy(base)
        runs[precision] = {"model": model, "optimizer": make_optimizer(model, config), "times": []}
    first = {}
    for step in range(steps + 1):  # step 0 is the warm-up (and the loss comparison)
        for precision, run in runs.items():
            started = time.perf_counter()
            with precision_context(precision):
                loss = train_step(run["model"], run["optimizer"], batch, config.lr, config.grad_clip)
            if step == 0:
                first[precision] = loss
            else:
                run["times"].append(time.perf_counter() - started)
    tokens = batch.inputs.numel()
    out = {"kind": kind, "dim": dim, "batch_size": batch_size, "seq_len": seq_len, "steps": steps}
    for precision, run in runs.items():
        median = statistics.median(run["times"])
        out[precision] = {"median_s": median, "tokens_per_s": tokens / median, "first_loss": first[precision]}
    out["bf16_speedup"] = out["fp32"]["median_s"] / out["bf16"]["median_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kinds", nargs="+", default=list(KINDS))
    parser.add_argument("--dims", nargs="+", type=int, default=[64, 256])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    batch_size, seq_len = (4, 32) if args.quick else (32, 128)
    dims, steps = ([16], 1) if args.quick else (args.dims, args.steps)
    rows = []
    print("| kind | dim | fp32 tok/s | bf16 tok/s | bf16 / fp32 | first loss fp32 | bf16 |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    for kind in args.kinds:
        for dim in dims:
            r = measure(kind, dim, steps, batch_size, seq_len)
            rows.append(r)
            print(
                f"| {kind} | {dim} | {r['fp32']['tokens_per_s']:.0f} | {r['bf16']['tokens_per_s']:.0f} | "
                f"{r['bf16_speedup']:.2f}x | {r['fp32']['first_loss']:.4f} | {r['bf16']['first_loss']:.4f} |",
                flush=True,
            )
    if args.out is not None:
        meta = {"python": platform.python_version(), "torch": torch.__version__, "cpu_bf16": cpu_flags(),
                "threads": args.threads, "argv": sys.argv[1:]}  # fmt: skip
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
