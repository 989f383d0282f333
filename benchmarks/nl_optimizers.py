"""Per-step time, optimizer-state memory and recall loss of the training optimizers, side by side in one run.

The optimizers are those of ``neural-memory train --optimizer`` (``neural_memory.training_optimizers``):
by default AdamW, our Muon (``nl.optimizers.Muon``), ``torch.optim.Muon`` and M3, each built exactly as the
training loop builds it (Muon and M3 on the hidden ``nn.Linear`` weights, AdamW on the rest). Two models:

* ``lm``: the default Titans LM of ``neural-memory train`` (``titans-mac``, dim 64, depth 2, seq 128,
  batch 8, associative-recall batches);
* ``mlp``: a 2-layer MLP ``Linear(d, h) -> GELU -> Linear(h, d)`` on a random regression batch (no head:
  both weights are "hidden" matrices, only the biases go to AdamW).

Per model, every optimizer trains its own copy on one thread, their steps interleaved (step i of each in
turn, so all see the same machine load): ``--warmup`` untimed training steps (the optimizer state is
allocated), then ``--iters`` timed ones; each reports the median seconds of ``optimizer.step()`` alone
(``step_ms``, what the targets compare) and of the whole step, forward + backward + clip + update
(``train_step_ms``). ``state_bytes`` is the bytes of every tensor in ``optimizer.state`` after the steps
(``main_state_bytes``: the Muon/M3 part alone; the AdamW fallback holds the rest). Then, for the LM only,
``neural-memory train`` runs ``--recall-steps`` steps of the recall task with each optimizer at the
default settings (lr 3e-3, weight decay 0.1) and reports the final train and held-out loss and answer
accuracy.

DMGD (``dmgd``, Deep Momentum GD, NL Eq. 50) is measured the same way, on every parameter.

Derived lines (PASS / FAIL / N/A) per model: M3's step within 1.5x of our Muon's, our Muon's within 1.2x of
``torch.optim.Muon``'s.

The Eq. 53 toy (``neural_memory.nl.toy_problems.curvature_toy``, the paper's Fig. 4 setting): ψ after
``--toy-steps`` steps from ``CURVATURE_TOY_START`` = (−3.5, 2) at each learning rate of ``toy_lrs``, for
GD with momentum (Eq. 33, α = 0.9), Delta momentum (Eq. 48–49, α = 0.9) with the printed correction step
ζ = 1 and with a small ζ = 1e-5, DMGD (Eq. 50, α = 0.9, 16 hidden units) and Adam (torch, as a reference).
Muon and M3 are not applicable: the toy's parameter (r, θ) is a 2-vector, and Muon orthogonalises a matrix
(Newton–Schulz of a vector only normalises it; M3 sends vectors to its AdamW fallback). A run whose ψ is
not finite or exceeds 1e12 is reported as diverged, with its step.

    python benchmarks/nl_optimizers.py --quick      # smoke run, seconds
    python benchmarks/nl_optimizers.py              # full run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from neural_memory.models import lm_loss
from neural_memory.nl.optimizers import DeepMomentumGD, DeltaMomentum, MomentumGD
from neural_memory.nl.toy_problems import CURVATURE_TOY_START, curvature_toy, curvature_toy_grad
from neural_memory.training import Task, TrainConfig, build_model, train
from neural_memory.training_optimizers import OPTIMIZER_NAMES, OptimizerChain, build_optimizer, state_bytes

DEFAULT_OPTIMIZERS = ["adamw", "muon", "torch-muon", "m3", "dmgd"]
FULL = {
    "lm": {"kind": "titans-mac", "dim": 64, "depth": 2, "seq_len": 128, "batch_size": 8, "recall_pairs": 8},
    "mlp": {"dim": 256, "hidden": 1024, "batch": 64},
    "warmup": 3,
    "iters": 20,
    "recall_steps": 300,
    "toy_steps": 2000,
    "toy_lrs": [1e-3, 3e-3, 1e-2],
}
QUICK = {
    "lm": {"kind": "titans-mac", "dim": 16, "depth": 1, "seq_len": 16, "batch_size": 2, "recall_pairs": 3},
    "mlp": {"dim": 16, "hidden": 32, "batch": 8},
    "warmup": 1,
    "iters": 2,
    "recall_steps": 2,
    "toy_steps": 20,
    "toy_lrs": [1e-3, 1e-2],
}
LR, WEIGHT_DECAY, GRAD_CLIP = 3e-3, 0.1, 1.0  # the defaults of neural-memory train
TARGETS = (("m3", "muon", 1.5), ("muon", "torch-muon", 1.2))  # (numerator, denominator, max ratio)
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "nl_optimizers.json"


def lm_problem(cfg: dict):
    """The default Titans LM and a fixed recall batch: ``(model, loss_fn)``."""
    config = TrainConfig(steps=1, **cfg)
    model = build_model(config)
    batch = Task(config).batch(torch.Generator().manual_seed(0))

    def loss_fn() -> torch.Tensor:
        logits, _ = model(batch.inputs)
        return lm_loss(logits, batch.targets, batch.loss_mask)

    return model, loss_fn


def mlp_problem(cfg: dict):
    """A 2-layer MLP on a fixed random regression batch: ``(model, loss_fn)``."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(cfg["dim"], cfg["hidden"]), nn.GELU(), nn.Linear(cfg["hidden"], cfg["dim"])
    )
    x = torch.randn(cfg["batch"], cfg["dim"], generator=g)
    y = torch.randn(cfg["batch"], cfg["dim"], generator=g)

    def loss_fn() -> torch.Tensor:
        return (model(x) - y).square().mean()

    return model, loss_fn


PROBLEMS = {"lm": lm_problem, "mlp": mlp_problem}


def one_step(model: nn.Module, loss_fn, optimizer) -> tuple[float, float, float]:
    """One training step: ``(seconds of optimizer.step(), seconds of the whole step, loss)``."""
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)  # before the forward: DGD records the inputs during it
    loss = loss_fn()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    before_step = time.perf_counter()
    optimizer.step()
    end = time.perf_counter()
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss {loss.item()}")
    return end - before_step, end - start, loss.item()


def measure_all(problem: str, names: list[str], cfg: dict) -> dict[str, dict]:
    """Every optimizer on its own copy of the problem, their steps interleaved (step i of each, in turn).

    Interleaving puts every optimizer under the same machine load, so the ratios compare like with like.
    Each row: median ``optimizer.step()`` and whole-step milliseconds after ``warmup`` steps, state bytes;
    an optimizer whose loss goes non-finite or that raises gets ``status: failed`` and drops out.
    """
    runs, rows = {}, {}
    for name in names:
        model, loss_fn = PROBLEMS[problem](cfg[problem])
        try:
            optimizer = build_optimizer(name, model, lr=LR, weight_decay=WEIGHT_DECAY)
        except (RuntimeError, ValueError) as error:
            rows[name] = {"status": "failed", "reason": f"{type(error).__name__}: {error}"}
            continue
        runs[name] = {"model": model, "loss_fn": loss_fn, "optimizer": optimizer, "step": [], "total": []}
    for i in range(cfg["warmup"] + cfg["iters"]):
        for name in list(runs):
            run = runs[name]
            try:
                step_s, total_s, loss = one_step(run["model"], run["loss_fn"], run["optimizer"])
            except (FloatingPointError, RuntimeError, ValueError) as error:
                rows[name] = {"status": "failed", "reason": f"{type(error).__name__} at step {i}: {error}"}
                del runs[name]
                continue
            run["loss"] = loss
            if i >= cfg["warmup"]:
                run["step"].append(step_s)
                run["total"].append(total_s)
    for name, run in runs.items():
        optimizer = run["optimizer"]
        main = optimizer.optimizers["main"] if isinstance(optimizer, OptimizerChain) else optimizer
        rows[name] = {
            "status": "ok",
            "step_ms": 1e3 * statistics.median(run["step"]),
            "train_step_ms": 1e3 * statistics.median(run["total"]),
            "step_seconds": run["step"],
            "final_loss": run["loss"],
            "state_bytes": state_bytes(optimizer),
            "main_state_bytes": state_bytes(main),
            "param_bytes": sum(p.numel() * p.element_size() for p in run["model"].parameters()),
        }
    return {name: {"model": problem, "optimizer": name, **rows[name]} for name in names}


def recall_run(name: str, cfg: dict) -> dict:
    """``neural-memory train`` on the recall task with ``name``: final losses and answer accuracy."""
    steps = cfg["recall_steps"]
    config = TrainConfig(
        steps=steps, eval_every=steps, optimizer=name, lr=LR, weight_decay=WEIGHT_DECAY, **cfg["lm"]
    )
    with tempfile.TemporaryDirectory() as out:
        try:
            result = train(config, out, progress=False, log=lambda _: None)
        except FloatingPointError as error:
            return {"status": "diverged", "reason": str(error)}
    return {
        "status": "ok",
        "steps": steps,
        "train_loss": result.train_loss,
        "val_loss": result.val_loss,
        "val_accuracy": result.val_accuracy,
    }


TOY_OPTIMIZERS = {
    "momentum": lambda p, lr: MomentumGD(p, lr=lr, alpha=0.9),
    "delta-momentum zeta=1 (printed)": lambda p, lr: DeltaMomentum(p, lr=lr, alpha=0.9, delta_lr=1.0),
    "delta-momentum zeta=1e-5": lambda p, lr: DeltaMomentum(p, lr=lr, alpha=0.9, delta_lr=1e-5),
    "dmgd": lambda p, lr: DeepMomentumGD(p, lr=lr, alpha=0.9, hidden=16),
    "adam (torch)": lambda p, lr: torch.optim.Adam(p, lr=lr),
}
TOY_NOT_APPLICABLE = {
    "muon": "the parameter (r, theta) is a 2-vector; Muon orthogonalises matrices",
    "m3": "the parameter is a 2-vector; M3 orthogonalises matrices (vectors go to its AdamW fallback)",
}
TOY_DIVERGED = 1e12


def toy_run(name: str, lr: float, steps: int) -> dict:
    """ψ (Eq. 53) after ``steps`` steps of ``name`` from the paper's start, float64, closed-form gradients."""
    point = torch.tensor(CURVATURE_TOY_START, dtype=torch.float64, requires_grad=True)
    optimizer = TOY_OPTIMIZERS[name]([point], lr)
    row = {"optimizer": name, "lr": lr, "steps": steps}
    for step in range(steps):
        point.grad = curvature_toy_grad(point.detach())
        optimizer.step()
        psi = curvature_toy(point.detach()).item()
        if not psi < TOY_DIVERGED:  # also catches NaN
            return row | {"status": "diverged", "at_step": step + 1, "loss": psi}
    return row | {"status": "ok", "loss": psi, "point": point.detach().tolist()}


def toy_rows(cfg: dict) -> list[dict]:
    rows = [toy_run(name, lr, cfg["toy_steps"]) for name in TOY_OPTIMIZERS for lr in cfg["toy_lrs"]]
    return rows + [{"optimizer": n, "status": "n/a", "reason": r} for n, r in TOY_NOT_APPLICABLE.items()]


def toy_table(rows: list[dict]) -> str:
    out = ["| optimizer (Eq. 53 toy) | lr | steps | psi |", "|---|---|---|---|"]
    for r in rows:
        if r["status"] == "n/a":
            out.append(f"| {r['optimizer']} | | | n/a: {r['reason']} |")
        elif r["status"] == "diverged":
            out.append(f"| {r['optimizer']} | {r['lr']:g} | {r['steps']} | diverged at step {r['at_step']} |")
        else:
            out.append(f"| {r['optimizer']} | {r['lr']:g} | {r['steps']} | {r['loss']:.3e} |")
    return "\n".join(out)


def derived(rows: list[dict]) -> list[dict]:
    """Step-time ratios against the targets, per model."""
    step = {(r["model"], r["optimizer"]): r["step_ms"] for r in rows if r.get("status") == "ok"}
    lines = []
    for problem in PROBLEMS:
        for top, bottom, limit in TARGETS:
            a, b = step.get((problem, top)), step.get((problem, bottom))
            value = a / b if a is not None and b is not None else None
            verdict = "N/A" if value is None else "PASS" if value <= limit else "FAIL"
            name = f"{problem}: step time {top} / {bottom} (target <= {limit:g})"
            lines.append({"name": name, "value": value, "verdict": verdict})
    return lines


def table(rows: list[dict]) -> str:
    out = [
        "| model | optimizer | step ms | train step ms | state KiB | main state KiB | recall val loss "
        "| acc |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        head = f"| {r['model']} | {r['optimizer']} |"
        if r["status"] != "ok":
            out.append(f"{head} {r['status']}: {r['reason']} | | | | | |")
            continue
        recall = r.get("recall", {})
        loss = f"{recall['val_loss']:.4f}" if recall.get("status") == "ok" else recall.get("status", "–")
        acc = f"{recall['val_accuracy']:.3f}" if recall.get("status") == "ok" else "–"
        out.append(
            f"{head} {r['step_ms']:.3f} | {r['train_step_ms']:.2f} | {r['state_bytes'] / 1024:.1f} | "
            f"{r['main_state_bytes'] / 1024:.1f} | {loss} | {acc} |"
        )
    return "\n".join(out)


def write(path: Path, cfg: dict, rows: list[dict], lines: list[dict], toy: list[dict] | None = None) -> None:
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
        "metrics": {
            "step_ms": "median ms of optimizer.step() alone",
            "train_step_ms": "median ms of zero_grad + forward + backward + clip + step",
            "state_bytes": "bytes of the tensors in optimizer.state (all parts)",
            "main_state_bytes": "the same for the Muon / M3 / ... part alone (AdamW: everything)",
        },
        "rows": rows,
        "derived": lines,
        "toy": toy or [],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    parser.add_argument("--optimizers", nargs="+", choices=OPTIMIZER_NAMES, default=DEFAULT_OPTIMIZERS)
    parser.add_argument("--models", nargs="+", choices=list(PROBLEMS), default=list(PROBLEMS))
    parser.add_argument("--iters", type=int, default=None, help="timed steps per row")
    parser.add_argument("--recall-steps", type=int, default=None, help="0: no recall runs")
    parser.add_argument("--toy-steps", type=int, default=None, help="0: no Eq. 53 toy runs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    cfg = json.loads(json.dumps(QUICK if args.quick else FULL))  # a deep copy
    if args.iters is not None:
        cfg["iters"] = args.iters
    if args.recall_steps is not None:
        cfg["recall_steps"] = args.recall_steps
    if args.toy_steps is not None:
        cfg["toy_steps"] = args.toy_steps
    cfg |= {"optimizers": args.optimizers, "models": args.models, "threads": args.threads, "lr": LR}
    cfg |= {"weight_decay": WEIGHT_DECAY}
    torch.set_num_threads(args.threads)

    rows: list[dict] = []
    for problem in args.models:
        measured = measure_all(problem, args.optimizers, cfg)
        for name in args.optimizers:
            row = measured[name]
            if row["status"] == "ok" and problem == "lm" and cfg["recall_steps"] > 0:
                row["recall"] = recall_run(name, cfg)
            print(
                f"{problem:<4} {name:<11} "
                + (f"step {row['step_ms']:8.3f} ms" if row["status"] == "ok" else row["reason"]),
                flush=True,
            )
            rows.append(row)
            write(args.out, cfg, rows, derived(rows))
    lines = derived(rows)
    toy = toy_rows(cfg) if cfg["toy_steps"] > 0 else []
    write(args.out, cfg, rows, lines, toy)
    print()
    print(table(rows))
    if toy:
        print()
        print(toy_table(toy))
    print("\nDerived")
    for line in lines:
        value = "–" if line["value"] is None else f"{line['value']:.2f}x"
        print(f"  {line['verdict']:<4} {line['name']}: {value}")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
