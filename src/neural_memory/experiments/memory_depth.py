"""``memory-depth``: the Titans memory alone with ``L_M = 1..4`` MLP layers at a fixed budget (Titans §5.5,
Fig. 7 and Fig. 8).

Each depth trains ``titans-lmm`` with ``memory_depth = L_M`` on the same text, steps and tokens; we report
held-out bits per byte and the throughput (tokens per second of timed forward+backward passes of one
training batch).
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
    throughput_interval,
    train_config,
    train_variants,
)
from neural_memory.experiments.paper_claims import TITANS_FIG7, TITANS_FIG8
from neural_memory.experiments.plots import lines_with_ci


def run(ctx: Context) -> dict[str, Any]:
    text = str(ctx.lm_text())
    variants = {
        f"L_M={d}": (
            lambda seed, d=d: train_config(
                ctx, "titans-lmm", seed, text=text, model_config={"memory_depth": d}
            )
        )
        for d in ctx.scale.memory_depths
    }
    records = train_variants(ctx, "memory-depth", variants, throughput=True)
    return {
        "depths": list(ctx.scale.memory_depths),
        "variants": {name: {"kind": "titans-lmm", "runs": runs} for name, runs in records.items()},
    }


def _intervals(results: dict[str, Any]):
    variants = results["variants"]
    loss = {name: loss_interval(v["runs"]) for name, v in variants.items()}
    speed = {name: throughput_interval(v["runs"]) for name, v in variants.items()}
    return loss, speed


def claims(results: dict[str, Any]) -> list[Claim]:
    loss, speed = _intervals(results)
    shallow, deep = f"L_M={results['depths'][0]}", f"L_M={results['depths'][-1]}"
    return [
        compared_claim(
            claim=f"deeper memory lowers loss at equal budget ({deep} below {shallow})",
            reference="Titans Fig. 7 (§5.5)",
            paper=TITANS_FIG7,
            measured=f"bpb {loss[deep].text()} vs {loss[shallow].text()}",
            a=loss[deep],
            b=loss[shallow],
            direction="lower",
        ),
        compared_claim(
            claim=f"deeper memory is slower ({deep} has lower throughput than {shallow})",
            reference="Titans Fig. 8 (§5.5)",
            paper=TITANS_FIG8,
            measured=f"tokens/s {speed[deep].text(0)} vs {speed[shallow].text(0)}",
            a=speed[deep],
            b=speed[shallow],
            direction="lower",
        ),
    ]


def table(results: dict[str, Any]) -> list[list[str]]:
    loss, speed = _intervals(results)
    header = ["memory depth", "params", "bpb [95 % CI]", "tokens/s [95 % CI]"]
    rows = [
        [name, str(v["runs"][0]["params"]), loss[name].text(), speed[name].text(0)]
        for name, v in results["variants"].items()
    ]
    return [header, *rows]


def plot(results: dict[str, Any], path: Path) -> None:
    loss, speed = _intervals(results)
    depths = results["depths"]
    lines_with_ci(
        depths,
        {},
        xlabel="memory depth L_M",
        ylabel="value (see title)",
        title="",
        path=path,
        panels={
            "held-out bits per byte (Fig. 7)": {"titans-lmm": list(loss.values())},
            "training tokens/s (Fig. 8)": {"titans-lmm": list(speed.values())},
        },
    )


EXPERIMENT = Experiment(
    name="memory-depth",
    mirrors="Titans Fig. 7 and Fig. 8 (§5.5)",
    description="Titans LMM with memory depth L_M = 1..4 at a fixed budget: loss and throughput.",
    run=run,
    claims=claims,
    table=table,
    plot=plot,
)
