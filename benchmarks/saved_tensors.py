"""What the chunk-parallel Titans memory keeps for back-propagation, counted exactly (issue 14).

Peak memory of a training step is dominated by the tensors autograd saves during the forward pass. This
script runs one forward pass of ``NeuralMemory`` under ``torch.autograd.graph.saved_tensors_hooks`` and adds
up the distinct storages saved (parameters excluded), grouped by shape. Unlike peak RSS it does not depend on
the allocator or the machine's load, so two versions of the code can be compared exactly.

    .venv/bin/python benchmarks/saved_tensors.py                     # dim 256, hidden 1024, batch 2, seq 1024
    .venv/bin/python benchmarks/saved_tensors.py --seq 4096 --chunk 16
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import torch

from neural_memory.titans.memory import NeuralMemory


def count_saved(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    model = NeuralMemory(
        args.dim, depth=args.depth, chunk_size=args.chunk, heads=args.heads, expansion=args.expansion
    )
    x = torch.randn(args.batch, args.seq, args.dim)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: set[tuple[int, int]] = set()
    by_shape: Counter[tuple[int, ...]] = Counter()
    count: Counter[tuple[int, ...]] = Counter()

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if key not in seen and key[0] not in params:
            seen.add(key)
            by_shape[tuple(t.shape)] += storage.nbytes()
            count[tuple(t.shape)] += 1
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    total = sum(by_shape.values())
    chunks = -(-args.seq // args.chunk)
    return {
        "config": vars(args) | {"out": str(args.out)},
        "saved_mb": total / 2**20,
        "saved_mb_per_chunk": total / 2**20 / chunks,
        "by_shape": [
            {"shape": list(s), "tensors": count[s], "mb": b / 2**20} for s, b in by_shape.most_common()
        ],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--expansion", type=int, default=4)
    p.add_argument("--heads", type=int, default=1)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--chunk", type=int, default=64)
    p.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "results" / "saved_tensors.json"
    )
    args = p.parse_args(argv)
    result = count_saved(args)
    print(f"saved for backward: {result['saved_mb']:.1f} MB, {result['saved_mb_per_chunk']:.2f} MB per chunk")
    for row in result["by_shape"][:10]:
        print(f"  {tuple(row['shape'])!s:>18} x{row['tensors']:<5} {row['mb']:8.1f} MB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"JSON: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
