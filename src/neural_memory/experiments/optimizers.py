"""``optimizers``: M3 vs AdamW vs Muon on the same small model and data (mirrors NL v1 §9.7, Fig. 11).

The NL paper trains ViTs (and, for Fig. 12's timing, Transformer LMs) with AdamW, Muon and M3, each with its
own tuned hyper-parameters, and reports that M3 reaches the lowest train and test loss (values only in the
figure). Here the same byte-level Transformer (kind ``transformer``) trains on the LM experiments' text with
each optimizer of :mod:`neural_memory.training_optimizers` — ``adamw``, ``muon`` (the project's Muon, NL
Eq. 42) and ``m3`` (NL Algorithm 1) — at the scale's learning rate, schedule, steps and seeds. The Muons use
``match_rms_adamw`` scaling, so one learning rate serves all three; nothing is tuned per optimizer, which
is a weaker test than the paper's (a claim that fails here may hold with tuning). We compare held-out
bits per byte.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from neural_memory.experiments.base import (
    Claim,
    Context,
    Experiment,
    compared_claim,
    loss_interval,
    train_config,
    train_variants,
)
from neural_memory.experiments.plots import bars_with_ci

KIND = "transformer"
OPTIMIZERS = ("adamw", "muon", "m3")
NL_FIG11 = "Fig. 11 (ViT on ImageNet-21K): M3 has the lowest train and test loss; values only in the figure"


def run(ctx: Context) -> dict[str, Any]:
    text = str(ctx.lm_text())
    variants = {
        name: (lambda seed, name=name: train_config(ctx, KIND, seed, text=text, optimizer=name))
        for name in OPTIMIZERS
    }
    records = train_variants(ctx, "optimizers", variants)
    return {
        "kind": KIND,
        "optimizers": list(OPTIMIZERS),
        "variants": {name: {"kind": KIND, "runs": runs} for name, runs in records.items()},
    }


def claims(results: dict[str, Any]) -> list[Claim]:
    loss = {name: loss_interval(v["runs"]) for name, v in results["variants"].items()}
    return [
        compared_claim(
            claim=f"M3 reaches lower loss than {label} at equal budget",
            reference="NL Fig. 11 (§9.7)",
            paper=NL_FIG11,
            measured=f"bpb m3 {loss['m3'].text()} vs {other} {loss[other].text()}",
            a=loss["m3"],
            b=loss[other],
            direction="lower",
        )
        for other, label in (("adamw", "AdamW"), ("muon", "Muon"))
    ]


def table(results: dict[str, Any]) -> list[list[str]]:
    header = ["optimizer", "model", "params", "bpb [95 % CI]", "training s (mean over seeds)"]
    rows = []
    for name, variant in results["variants"].items():
        runs = variant["runs"]
        seconds = sum(r["timings"]["train_seconds"] for r in runs) / len(runs)
        rows.append(
            [name, variant["kind"], str(runs[0]["params"]), loss_interval(runs).text(), f"{seconds:.1f}"]
        )
    return [header, *rows]


def plot(results: dict[str, Any], path: Path) -> None:
    names = list(results["variants"])
    bars_with_ci(
        names,
        [loss_interval(results["variants"][n]["runs"]) for n in names],
        ylabel="held-out bits per byte (95 % CI)",
        title=f"optimizers on the {results['kind']} LM (NL Fig. 11)",
        path=path,
    )


EXPERIMENT = Experiment(
    name="optimizers",
    mirrors="NL Fig. 11 (§9.7, optimizers)",
    description=(
        "The same byte-level Transformer trained with AdamW, Muon and M3 at the same learning rate, schedule "
        "and token budget (no per-optimizer tuning): held-out bits per byte with 95 % intervals."
    ),
    run=run,
    claims=claims,
    table=table,
    plot=plot,
)
