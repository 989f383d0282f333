"""Forward+backward speed of the MIRAS memories (Moneta, Yaad, Memora) beside the Titans memory.

Every configuration (memory, implementation, mode, sequence length) runs in a fresh subprocess, so its
peak memory is its own. Inside it, one call is ``y, _ = module(x)`` then ``y.pow(2).mean().backward()``
(``fwd_bwd``), or the forward under ``torch.no_grad()`` (``fwd``): 1 untimed warm-up call, then ``--iters``
timed calls; throughput is ``batch * seq / median seconds``; peak memory is ``ru_maxrss`` minus the RSS right
after building the module and input.

Memories: ``titans`` (``NeuralMemory``, l2 bias, weight decay, momentum: the dual form), ``yaad`` (Huber-type
bias, weight decay: the dual form), ``moneta`` (the dual form, each token's read rescaled by the norm of
its accumulator, which is materialised for the norm and rebuilt in the backward pass) and ``memora`` (each
token read through the softmax of its materialised accumulator, rebuilt in the backward pass; neither keeps
the per-token states, so ``checkpoint_chunks`` is 0: ``--checkpoint-chunks`` sets it); ``impl="chunked"``
forward+backward at every length, and forward only, beside the token loop (``impl="reference"``), at seq
1024. Same shapes as ``benchmarks/titans_memory.py``: dim 256, 1 head, depth 2, expansion 4, batch 2; chunk
16 (MIRAS §6).

The run ends with the derived speed-ups (chunked / token loop; each preset / Titans, chunked) and a PASS/FAIL
line per target. Results go to ``--out`` (JSON), rewritten after every configuration.

    python benchmarks/miras_memory.py --quick     # smoke run, seconds
    python benchmarks/miras_memory.py             # full run (about 20 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

MEMORIES = ("titans", "yaad", "moneta", "memora")
FULL = {"dim": 256, "heads": 1, "depth": 2, "expansion": 4, "batch": 2, "chunk": 16, "iters": 2,
        "seqs": [1024, 4096], "ref_seqs": [1024], "checkpoint_chunks": 0}  # fmt: skip
QUICK = {**FULL, "dim": 8, "seqs": [16, 32], "ref_seqs": [16], "iters": 1, "chunk": 4, "checkpoint_chunks": 2}
TARGETS = {"chunked_vs_reference": 10.0, "preset_vs_titans": 0.5}  # >= ; the second: within 2x of Titans


def build(spec: dict):
    import torch

    from neural_memory.miras.memory import memora, moneta, yaad
    from neural_memory.titans.memory import NeuralMemory

    torch.manual_seed(0)
    kwargs = {"depth": spec["depth"], "heads": spec["heads"], "expansion": spec["expansion"],
              "chunk_size": spec["chunk"], "impl": spec["impl"]}  # fmt: skip
    if spec["memory"] in ("moneta", "memora") and spec["impl"] == "chunked":
        kwargs["checkpoint_chunks"] = spec["checkpoint_chunks"]
    factory = {"titans": NeuralMemory, "yaad": yaad, "moneta": moneta, "memora": memora}[spec["memory"]]
    return factory(spec["dim"], **kwargs)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(spec: dict) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    module = build(spec)
    x = torch.randn(spec["batch"], spec["seq"], spec["dim"])
    base = peak_rss_mb()

    def call():
        if spec["mode"] == "fwd":
            with torch.no_grad():
                module(x)
            return
        y, _ = module(x)
        y.pow(2).mean().backward()

    call()
    times = []
    for _ in range(spec["iters"]):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    tokens_per_s = spec["batch"] * spec["seq"] / median
    return {**spec, "seconds": times, "median_s": median, "tokens_per_s": tokens_per_s,
            "peak_delta_mb": peak_rss_mb() - base}  # fmt: skip


def run_child(spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    load = os.getloadavg()[0]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timeout after {timeout:.0f} s", "load_before": load}
    if done.returncode != 0:
        return {**spec, "error": done.stderr.strip().splitlines()[-1:] or ["failed"], "load_before": load}
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "load_before": load}


def rate(rows, memory, impl, seq, mode="fwd_bwd"):
    for row in rows:
        key = (row["memory"], row["impl"], row["seq"], row.get("mode", "fwd_bwd"))
        if key == (memory, impl, seq, mode) and "tokens_per_s" in row:
            return row["tokens_per_s"]
    return None


def derived(rows, config) -> list[str]:
    lines = []
    for memory in MEMORIES:
        for seq in config["ref_seqs"]:
            fast = rate(rows, memory, "chunked", seq, "fwd")
            slow = rate(rows, memory, "reference", seq, "fwd")
            if fast and slow:
                ratio = fast / slow
                verdict = "PASS" if ratio >= TARGETS["chunked_vs_reference"] else "FAIL"
                what = f"{memory}: chunked / token loop (forward) at seq {seq}"
                lines.append(f"[{verdict}] {what}: {ratio:.1f}x (target >= 10x)")
    for memory in MEMORIES[1:]:
        for seq in config["seqs"]:
            mine, titans = rate(rows, memory, "chunked", seq), rate(rows, "titans", "chunked", seq)
            if mine and titans:
                ratio = mine / titans
                verdict = "PASS" if ratio >= TARGETS["preset_vs_titans"] else "FAIL"
                lines.append(
                    f"[{verdict}] {memory} / titans (chunked) at seq {seq}: {ratio:.2f} (target >= 0.5)"
                )
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per configuration")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "miras_memory.json")
    parser.add_argument("--memories", nargs="+", choices=MEMORIES, default=list(MEMORIES))
    parser.add_argument("--seqs", nargs="+", type=int, help="forward+backward lengths (default 1024 4096)")
    parser.add_argument("--iters", type=int, help="timed calls per configuration (default 2)")
    parser.add_argument("--checkpoint-chunks", type=int, help="Moneta's and Memora's (default 0: none)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    config = dict(QUICK if args.quick else FULL)
    options = (("seqs", args.seqs), ("iters", args.iters), ("checkpoint_chunks", args.checkpoint_chunks))
    config.update({key: value for key, value in options if value is not None})
    # forward+backward of the chunked form at every length; the token loop forward only (its backward keeps
    # two weight copies per token: 8 GB at seq 1024 here), compared with the chunked forward at its length
    runs = [("chunked", "fwd_bwd", seq) for seq in config["seqs"]]
    runs += [(impl, "fwd", seq) for seq in config["ref_seqs"] for impl in ("chunked", "reference")]
    specs = [
        {**config, "memory": m, "impl": impl, "mode": mode, "seq": seq, "threads": args.threads}
        for m in args.memories
        for impl, mode, seq in runs
    ]
    rows = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(f"{'memory':8} {'impl':9} {'mode':7} {'seq':>6} {'tokens/s':>9} {'median s':>9} {'peak MB':>8}")
    for spec in specs:
        row = run_child(spec, args.timeout)
        rows.append(row)
        if "error" in row:
            print(f"{row['memory']:8} {row['impl']:9} {row['mode']:7} {row['seq']:>6}  error: {row['error']}")
        else:
            name = f"{row['memory']:8} {row['impl']:9} {row['mode']:7} {row['seq']:>6}"
            print(f"{name} {row['tokens_per_s']:9.0f} {row['median_s']:9.2f} {row['peak_delta_mb']:8.0f}")
        meta = {"machine": platform.machine(), "python": platform.python_version(), "config": config}
        args.out.write_text(
            json.dumps({"meta": meta, "rows": rows, "derived": derived(rows, config)}, indent=1)
        )
    print("\nDerived")
    for line in derived(rows, config):
        print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
