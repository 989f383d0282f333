"""``miras-variants``: Moneta, Yaad, Memora, Titans LMM, DeltaNet, Gated DeltaNet, linear attention and Mamba2
on the same data and budget (mirrors MIRAS Table 2, whose 760M and 1.3B rows include Mamba2).

The runs are the ``lm`` experiment's runs of these kinds (same configs, so a ``reproduce`` trains them once).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from neural_memory.experiments import lm
from neural_memory.experiments.base import Claim, Context, Experiment
from neural_memory.experiments.paper_claims import MIRAS_TABLE2_WIKI, TITANS_TABLE1_340M_WIKI
from neural_memory.experiments.plots import bars_with_ci

KINDS = ["moneta", "yaad", "memora", "titans-lmm", "deltanet", "gated-deltanet", "linear-attention", "mamba2"]


def run(ctx: Context) -> dict[str, Any]:
    return lm.kind_runs(ctx, "miras-variants", KINDS)


def claims(results: dict[str, Any]) -> list[Claim]:
    ci = lm.kind_intervals(results)
    rows = []
    for kind, name, size in (
        ("moneta", "Moneta", "340M"),
        ("yaad", "Yaad", "340M"),
        ("memora", "Memora", "1.3B"),
    ):
        table = MIRAS_TABLE2_WIKI[size]
        rows.append(
            lm.lower_loss_claim(
                ci,
                kind,
                "gated-deltanet",
                claim=f"{name} beats Gated DeltaNet at equal budget",
                reference=f"MIRAS Table 2 ({size})",
                paper=f"Wiki ppl {table[name]} vs {table['Gated DeltaNet']}",
            )
        )
    t1 = TITANS_TABLE1_340M_WIKI
    rows.append(
        lm.lower_loss_claim(
            ci,
            "gated-deltanet",
            "deltanet",
            claim="the retention gate helps: Gated DeltaNet beats DeltaNet",
            reference="Titans Table 1 (340M)",
            paper=f"Wiki ppl {t1['Gated DeltaNet']} vs {t1['DeltaNet']}",
        )
    )
    return rows


def plot(results: dict[str, Any], path: Path) -> None:
    ci = lm.kind_intervals(results)
    bars_with_ci(
        list(ci), list(ci.values()), ylabel="held-out bits per byte", title="MIRAS variants", path=path
    )


EXPERIMENT = Experiment(
    name="miras-variants",
    mirrors="MIRAS Table 2",
    description=(
        "Moneta, Yaad, Memora, Titans LMM, DeltaNet, Gated DeltaNet, linear attention, Mamba2; same budget."
    ),
    run=run,
    claims=claims,
    table=lm.table,
    plot=plot,
)
