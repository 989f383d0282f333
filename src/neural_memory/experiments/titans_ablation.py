"""``titans-ablation``: the full Titans LMM against one change at a time (mirrors Titans v1 Table 5).

Rows: the neural memory alone (``titans-lmm``, deep memory ``L_M = 2``, momentum, weight decay, convolution,
persistent tokens), then with attention (MAC, MAG, MAL), then linear memory (``L_M = 1``), and without the
convolution, the momentum, the weight decay (forgetting) and the persistent memory. All on the same text, at
the same width, depth, steps and tokens; the measure is bits per byte on held-out windows.
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
from neural_memory.experiments.paper_claims import TITANS_TABLE5
from neural_memory.experiments.plots import bars_with_ci

# Table 5 row -> (kind, model_config)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "LMM": ("titans-lmm", {}),
    "+Attn (MAC)": ("titans-mac", {}),
    "+Attn (MAG)": ("titans-mag", {}),
    "+Attn (MAL)": ("titans-mal", {}),
    "Linear Memory": ("titans-lmm", {"memory_depth": 1}),
    "w/o Convolution": ("titans-lmm", {"memory": {"conv_kernel": 0}}),
    "w/o Momentum": ("titans-lmm", {"memory": {"momentum": False}}),
    "w/o Weight Decay": ("titans-lmm", {"memory": {"weight_decay": False}}),
    "w/o Persistent Memory": ("titans-lmm", {"n_persistent": 0}),
}
ABLATIONS = ("Linear Memory", "w/o Convolution", "w/o Momentum", "w/o Weight Decay", "w/o Persistent Memory")
WITH_ATTENTION = ("+Attn (MAC)", "+Attn (MAG)", "+Attn (MAL)")


def run(ctx: Context) -> dict[str, Any]:
    text = str(ctx.lm_text())
    variants = {
        name: (lambda seed, k=kind, c=cfg: train_config(ctx, k, seed, text=text, model_config=c))
        for name, (kind, cfg) in VARIANTS.items()
    }
    records = train_variants(ctx, "titans-ablation", variants)
    return {
        "variants": {
            name: {"kind": VARIANTS[name][0], "model_config": VARIANTS[name][1], "runs": runs}
            for name, runs in records.items()
        }
    }


def intervals(results: dict[str, Any]):
    return {name: loss_interval(v["runs"]) for name, v in results["variants"].items()}


def claims(results: dict[str, Any]) -> list[Claim]:
    ci = intervals(results)
    rows = []
    base_ppl = TITANS_TABLE5["LMM"][0]
    for name in ABLATIONS:
        rows.append(
            compared_claim(
                claim=f"{name} hurts: the full LMM has lower loss than the LMM {name.lower()}",
                reference="Titans Table 5",
                paper=f"ppl {base_ppl} (LMM) vs {TITANS_TABLE5[name][0]}",
                measured=f"bpb {ci['LMM'].text()} vs {ci[name].text()}",
                a=ci["LMM"],
                b=ci[name],
                direction="lower",
            )
        )
    for name in WITH_ATTENTION:
        rows.append(
            compared_claim(
                claim=f"adding attention helps: {name[7:-1]} has lower loss than the LMM alone",
                reference="Titans Table 5",
                paper=f"ppl {TITANS_TABLE5[name][0]} vs {base_ppl} (LMM)",
                measured=f"bpb {ci[name].text()} vs {ci['LMM'].text()}",
                a=ci[name],
                b=ci["LMM"],
                direction="lower",
            )
        )
    return rows


def table(results: dict[str, Any]) -> list[list[str]]:
    ci = intervals(results)
    header = ["variant", "kind", "params", "bpb [95 % CI]", "paper ppl (Table 5)"]
    rows = [
        [name, v["kind"], str(v["runs"][0]["params"]), ci[name].text(), f"{TITANS_TABLE5[name][0]:.2f}"]
        for name, v in results["variants"].items()
    ]
    return [header, *rows]


def plot(results: dict[str, Any], path: Path) -> None:
    ci = intervals(results)
    bars_with_ci(
        list(ci),
        list(ci.values()),
        ylabel="held-out bits per byte",
        title="Titans Table 5 ablation",
        path=path,
    )


EXPERIMENT = Experiment(
    name="titans-ablation",
    mirrors="Titans Table 5",
    description=__doc__.split("\n\n")[1].replace("\n", " "),
    run=run,
    claims=claims,
    table=table,
    plot=plot,
)
