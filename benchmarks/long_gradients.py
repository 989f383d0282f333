"""Outer gradients through long sequences: does back-propagation through the test-time inner loop explode?

Issue 7's long-sequence failure. For each LM kind and sequence length, one forward and backward pass of a
freshly initialised ``build_lm(kind, vocab_size=256, dim, depth=2)`` on uniform random bytes (batch 1,
seed ``--seed``). Each pass reports the largest absolute gradient entry, the parameter it belongs to, and
whether every gradient is finite. Each memory kind runs twice, side by side: with the default
``forget_to_initial=True`` (forgetting returns the memory to its learned M_0) and with ``False`` (Eq. 13 as
printed, decay towards zero). With the LayerNorm read-out, decay towards zero makes the inner loop chaotic,
so the exact gradient grows like exp(length) (docs/errata.md, "Titans Eq. 13").

    python benchmarks/long_gradients.py --out benchmarks/results/long_gradients.json
    python benchmarks/long_gradients.py --dim 128 --seqs 4096 16384 --kinds titans-lmm \\
        --out benchmarks/results/long_gradients_16k.json
    python benchmarks/long_gradients.py --quick      # smoke run, seconds

Every configuration runs in this process, one torch thread. The JSON is written at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

KINDS = ("titans-lmm", "titans-mac", "titans-mag", "titans-mal", "yaad", "hope")
NO_MEMORY_FLAG = ("hope",)  # its memories are NL's own (CMS, self-modifying Titans): one row, no flag


def measure(kind: str, seq: int, dim: int, seed: int, forget_to_initial: bool | None) -> dict:
    """One forward and backward pass; the largest gradient entry and where it is."""
    from neural_memory.models.registry import build_lm

    torch.manual_seed(seed)
    flag = {} if forget_to_initial is None else {"memory": {"forget_to_initial": forget_to_initial}}
    model = build_lm(kind, vocab_size=256, dim=dim, depth=2, **flag)
    ids = torch.randint(0, 256, (1, seq + 1))
    started = time.perf_counter()
    logits = model(ids[:, :-1])
    logits = logits[0] if isinstance(logits, tuple) else logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), ids[:, 1:].reshape(-1))
    loss.backward()
    grads = [(name, p.grad) for name, p in model.named_parameters() if p.grad is not None]
    finite = all(torch.isfinite(g).all().item() for _, g in grads)
    largest, where = max((g.abs().nan_to_num(math.inf).max().item(), name) for name, g in grads)
    return {
        "kind": kind,
        "seq": seq,
        "dim": dim,
        "seed": seed,
        "forget_to_initial": forget_to_initial,
        "loss": loss.item(),
        "max_abs_grad": largest,
        "argmax_parameter": where,
        "finite": finite,
        "seconds": time.perf_counter() - started,
    }


def table(records: list[dict]) -> str:
    lines = [
        "| kind | dim | seq | forget to M_0: max abs grad | decay to zero: max abs grad |",
        "|---|--:|--:|--:|--:|",
    ]
    keyed = {(r["kind"], r["dim"], r["seq"], r["forget_to_initial"]): r for r in records}
    for kind, dim, seq in dict.fromkeys((r["kind"], r["dim"], r["seq"]) for r in records):
        cells = []
        for anchored in (True, False):
            r = keyed.get((kind, dim, seq, anchored))
            if r is None and anchored:  # a kind without the flag: its one row, in the first column
                r = keyed.get((kind, dim, seq, None))
            cells.append("–" if r is None else f"{r['max_abs_grad']:.3g}" + ("" if r["finite"] else " (NaN)"))
        lines.append(f"| {kind} | {dim} | {seq} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--seqs", nargs="+", type=int, default=[256, 1024, 2048, 4096])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--quick", action="store_true", help="short sequences, one kind (smoke run)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.kinds, args.seqs, args.dim, args.seeds = ["titans-lmm"], [64, 128], 16, [0]
    torch.set_num_threads(1)
    records = []
    for kind in args.kinds:
        for seq in args.seqs:
            for seed in args.seeds:
                for anchored in (None,) if kind in NO_MEMORY_FLAG else (True, False):
                    record = measure(kind, seq, args.dim, seed, anchored)
                    records.append(record)
                    print(
                        f"{kind:11s} seq {seq:6d} seed {seed} forget_to_initial={anchored!s:5s} "
                        f"max|grad| {record['max_abs_grad']:.3g} ({record['argmax_parameter']}) "
                        f"finite={record['finite']} {record['seconds']:.1f}s",
                        flush=True,
                    )
    print(table([r for r in records if r["seed"] == args.seeds[0]]))
    if args.out is not None:
        meta = {"python": sys.version.split()[0], "torch": torch.__version__, "machine": platform.machine()}
        payload = {"meta": {**meta, "argv": sys.argv[1:]}, "records": records}
        args.out.write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
