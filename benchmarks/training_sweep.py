"""Training stability and recall accuracy of every LM kind, over seeds: the evidence of issue 7.

Every (kind, seed, task, learning-rate multiplier) run is one ``neural_memory.training.train`` call in its
own subprocess with one torch thread; ``--jobs`` of them run at once (2 on the project's 2-core machine).
Each run evaluates every ``--eval-every`` steps; the JSON keeps the whole curve (answer accuracy and
validation loss against steps), whether every training loss was finite, and the wall time.

    python benchmarks/training_sweep.py stability --text ../shared/data/tinyshakespeare.txt \\
        --out benchmarks/results/stability.json         # kinds x seeds 0-4 x {recall, text}, 500 steps
    python benchmarks/training_sweep.py stability --lr-mult 3 --tasks recall \\
        --out benchmarks/results/stability_lr3.json     # the same at 3x the default learning rate
    python benchmarks/training_sweep.py recall --steps 2000 --seeds 0 1 2 \\
        --out benchmarks/results/recall.json            # answer accuracy vs steps
    python benchmarks/training_sweep.py recall --steps 1500 --seeds 0 1 2 --kinds transformer titans-lmm \\
        --overrides '{"batch_size": 32, "model_config": {"embedding_std": 1.0}}'  # issue 7's open lead
    python benchmarks/training_sweep.py stability --quick       # smoke run, seconds

Defaults are the training defaults of ``neural-memory train`` (``TrainConfig``), nothing tuned here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

KINDS = ("titans-mac", "titans-mag", "titans-mal", "titans-lmm", "transformer")


def child(spec: dict) -> dict:
    """One training run, inside the subprocess: returns its curve and whether it stayed finite."""
    import torch

    from neural_memory.training import TrainConfig, train

    torch.set_num_threads(1)
    base = TrainConfig(kind=spec["kind"])
    config = TrainConfig(
        kind=spec["kind"],
        text=spec["text"],
        steps=spec["steps"],
        seed=spec["seed"],
        lr=spec.get("lr", base.lr) * spec["lr_mult"],
        eval_every=spec["eval_every"],
        **spec.get("overrides", {}),
    )
    curve: list[dict] = []

    def log(line: str) -> None:  # "step N: key=value ..."
        head, _, rest = line.partition(": ")
        point = {"step": int(head.split()[1])}
        point.update({k: float(v) for k, v in (item.split("=") for item in rest.split())})
        curve.append(point)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        try:
            train(config, out, progress=False, log=log)
            finite, error = True, None
        except FloatingPointError as exc:
            finite, error = False, str(exc)
    return {
        **spec,
        "lr_effective": config.lr,
        "finite": finite,
        "error": error,
        "curve": curve,
        "seconds": time.perf_counter() - started,
    }


def run_one(spec: dict, timeout: float) -> dict:
    """Run ``child(spec)`` in a fresh interpreter (one thread) and return its record."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {**spec, "finite": None, "error": f"timeout after {timeout:.0f} s", "curve": []}
    if done.returncode != 0:
        return {**spec, "finite": None, "error": done.stderr.strip().splitlines()[-1:], "curve": []}
    return json.loads(done.stdout.strip().splitlines()[-1])


def specs(args: argparse.Namespace) -> list[dict]:
    tasks = {"recall": None, "text": args.text}
    if "text" in args.tasks and args.text is None:
        raise SystemExit("--tasks text needs --text PATH")
    out = []
    for task in args.tasks:
        for seed in args.seeds:
            for kind in args.kinds:
                spec = {
                    "kind": kind,
                    "seed": seed,
                    "task": task,
                    "text": None if tasks[task] is None else str(Path(tasks[task]).resolve()),
                    "steps": args.steps,
                    "eval_every": args.eval_every,
                    "lr_mult": args.lr_mult,
                }
                if args.lr is not None:
                    spec["lr"] = args.lr
                quick = {"seq_len": 48, "batch_size": 2, "dim": 16, "depth": 1} if args.quick else {}
                if quick or args.overrides:
                    spec["overrides"] = {**quick, **(args.overrides or {})}
                out.append(spec)
    return out


def final(record: dict, key: str) -> float | None:
    values = [p[key] for p in record.get("curve", []) if key in p]
    return values[-1] if values else None


def table(records: list[dict]) -> str:
    lines = [
        "| kind | task | seed | lr | finite | final train loss | final val loss | val accuracy | s |",
        "|---|---|--:|--:|---|--:|--:|--:|--:|",
    ]
    for r in records:
        cells = [final(r, "train_loss"), final(r, "val_loss"), final(r, "val_accuracy")]
        shown = ["–" if c is None else f"{c:.3f}" for c in cells]
        finite = {True: "yes", False: "**NaN**", None: f"error: {r.get('error')}"}[r["finite"]]
        seconds = f"{r['seconds']:.0f}" if "seconds" in r else "–"
        lr = f"{r['lr_effective']:g}" if "lr_effective" in r else "–"
        lines.append(
            f"| {r['kind']} | {r['task']} | {r['seed']} | {lr} | {finite} | "
            + " | ".join(shown)
            + f" | {seconds} |"
        )
    return "\n".join(lines)


def accuracy_table(records: list[dict]) -> str:
    """Recall: mean (min–max over seeds) answer accuracy per kind at every evaluated step."""
    steps = sorted({p["step"] for r in records for p in r.get("curve", [])})
    lines = ["| kind | " + " | ".join(f"step {s}" for s in steps) + " |", "|---|" + "--:|" * len(steps)]
    for kind in dict.fromkeys(r["kind"] for r in records):
        cells = []
        for step in steps:
            accs = [
                p["val_accuracy"]
                for r in records
                if r["kind"] == kind
                for p in r.get("curve", [])
                if p["step"] == step and "val_accuracy" in p
            ]
            cells.append(f"{sum(accs) / len(accs):.3f} ({min(accs):.2f}–{max(accs):.2f})" if accs else "–")
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seed_table(records: list[dict]) -> str:
    """One row per kind, one column per seed: recall accuracy (final validation loss), or the text task's
    final validation loss; a non-finite run shows as **NaN**. For one task and learning rate."""
    seeds = sorted({r["seed"] for r in records})
    lines = [
        "| kind | " + " | ".join(f"seed {s}" for s in seeds) + " | all finite |",
        "|---|" + "--:|" * len(seeds) + "---|",
    ]
    for kind in dict.fromkeys(r["kind"] for r in records):
        runs = {r["seed"]: r for r in records if r["kind"] == kind}
        cells = []
        for seed in seeds:
            r = runs.get(seed)
            if r is None:
                cells.append("not run")
            elif r["finite"] is not True:
                cells.append("**NaN**" if r["finite"] is False else "error")
            elif r["task"] == "recall":
                cells.append(f"{final(r, 'val_accuracy'):.3f} ({final(r, 'val_loss'):.2f})")
            else:
                cells.append(f"{final(r, 'val_loss'):.3f}")
        finite = all(r["finite"] is True for r in runs.values())
        lines.append(f"| {kind} | " + " | ".join(cells) + f" | {'yes' if finite else 'no'} |")
    return "\n".join(lines)


def summary(files: list[Path]) -> str:
    """Seed tables of several stability result files, one per (task, learning-rate multiplier)."""
    records = [r for f in files for r in json.loads(f.read_text())["records"]]
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in records:
        groups.setdefault((r["task"], r["lr_mult"]), []).append(r)
    parts = [f"{task}, {mult:g}x lr:\n\n{seed_table(rs)}" for (task, mult), rs in sorted(groups.items())]
    return "\n\n".join(parts)


def save(out: Path | None, records: list[dict], stability: bool) -> None:
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    report = table(records) if stability else accuracy_table(records)
    meta = {"python": platform.python_version(), "machine": platform.machine(), "argv": sys.argv[1:]}
    out.write_text(json.dumps({"meta": meta, "records": records, "table": report}, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=["stability", "recall", "summary"])
    parser.add_argument("files", nargs="*", type=Path, help="summary: stability result files to tabulate")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS))
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--tasks", nargs="+", choices=["recall", "text"], default=None)
    parser.add_argument("--text", type=Path, default=None, help="text file for the text task")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--eval-every", type=int, default=None)
    parser.add_argument("--lr-mult", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=None, help="base learning rate (default: TrainConfig's)")
    parser.add_argument(
        "--overrides",
        type=json.loads,
        default=None,
        metavar="JSON",
        help='TrainConfig fields, e.g. \'{"batch_size": 32, "model_config": {"embedding_std": 1.0}}\'',
    )
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    parser.add_argument("--quick", action="store_true", help="tiny model, few steps (smoke test)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.mode == "summary":
        print(summary(args.files))
        return 0
    stability = args.mode == "stability"
    args.seeds = args.seeds or ([0, 1, 2, 3, 4] if stability else [0, 1, 2])
    args.tasks = args.tasks or (["recall", "text"] if stability and args.text else ["recall"])
    args.steps = args.steps or (3 if args.quick else 500 if stability else 2000)
    args.eval_every = args.eval_every or (args.steps if stability else max(1, args.steps // 4))
    todo = specs(args)
    print(f"{len(todo)} runs, {args.jobs} at a time", flush=True)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        records = []
        for record in pool.map(lambda s: run_one(s, args.timeout), todo):
            records.append(record)
            acc = final(record, "val_accuracy")
            print(
                f"{record['kind']:<12} {record['task']:<6} seed {record['seed']} finite={record['finite']} "
                f"val_loss={final(record, 'val_loss')} acc={acc}",
                flush=True,
            )
            save(args.out, records, stability)  # after every run: a killed sweep keeps what finished
    print(table(records) if stability else accuracy_table(records))
    nonfinite = [r for r in records if r["finite"] is not True]
    return 1 if stability and nonfinite else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
        sys.exit(0)
    sys.exit(main())
