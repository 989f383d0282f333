"""``recall``: multi-query associative recall (MQAR) accuracy vs number of pairs and model width, for every
kind (the Zoology-style recall curve; the closest claims are NL Table 3's short in-context recall and Titans
Table 2's needle retrieval).

Each (kind, pairs, width) trains on generated key-value sequences (:class:`~neural_memory.data.
AssociativeRecall`: ``k_1 v_1 ... k_P v_P | q_1 a_1 ...``) and is scored on held-out sequences: the share of
answers whose most likely byte is right, with a Wilson 95 % interval over the answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from neural_memory.experiments import lm
from neural_memory.experiments.base import (
    Claim,
    Context,
    Experiment,
    accuracy_interval,
    compared_claim,
    train_config,
    train_variants,
)
from neural_memory.experiments.paper_claims import NL_TABLE3_SWDE, TITANS_TABLE2_NIAH_N
from neural_memory.experiments.plots import lines_with_ci


def _name(kind: str, pairs: int, width: int) -> str:
    return f"{kind} P={pairs} d={width}"


def run(ctx: Context) -> dict[str, Any]:
    from neural_memory.models.registry import available_kinds

    present = available_kinds()
    kinds = [k for k in lm.ALL_KINDS if k in present] + [k for k in present if k not in lm.ALL_KINDS]
    s = ctx.scale
    shallow = lm.too_shallow(kinds, s.depth)
    kinds = [k for k in kinds if k not in shallow]
    variants = {
        _name(kind, p, d): (
            lambda seed, k=kind, p=p, d=d: train_config(
                ctx, k, seed, recall_pairs=p, dim=d, seq_len=s.recall_seq_len or s.seq_len
            )
        )
        for kind in kinds
        for d in s.recall_widths
        for p in s.recall_pairs
    }
    records = train_variants(ctx, "recall", variants)
    return {
        "pairs": list(s.recall_pairs),
        "widths": list(s.recall_widths),
        "kinds": kinds,
        "missing_kinds": [k for k in lm.ALL_KINDS if k not in present],
        "shallow_kinds": shallow,
        "variants": {name: {"runs": runs} for name, runs in records.items()},
    }


def _interval(results, kind, pairs, width):
    return accuracy_interval(results["variants"][_name(kind, pairs, width)]["runs"])


def _claim(results, a: str, b: str, *, claim: str, reference: str, paper: str) -> Claim:
    """ "kind a recalls better than kind b" at the most pairs and the largest width."""
    if a not in results["kinds"] or b not in results["kinds"]:
        missing = ", ".join(k for k in (a, b) if k not in results["kinds"])
        return Claim(claim, reference, paper, f"({missing} not implemented)", lm.MODEL_NOT_IMPLEMENTED)
    p, d = results["pairs"][-1], results["widths"][-1]
    ia, ib = _interval(results, a, p, d), _interval(results, b, p, d)
    measured = f"accuracy at P={p}, d={d}: {ia.text()} vs {ib.text()}"
    return compared_claim(claim, reference, paper, measured, ia, ib, "higher")


def claims(results: dict[str, Any]) -> list[Claim]:
    swde, niah = NL_TABLE3_SWDE, TITANS_TABLE2_NIAH_N
    return [
        _claim(
            results,
            "titans-lmm",
            "deltanet",
            claim="the Titans memory recalls better than DeltaNet",
            reference="Titans Table 2 (S-NIAH-N, closest analogue)",
            paper=f"S-NIAH-N 2K accuracy {niah['Titans (LMM)'][0]} vs {niah['DeltaNet'][0]} %",
        ),
        _claim(
            results,
            "transformer",
            "titans-mac",
            claim="full attention recalls better than Titans",
            reference="NL Table 3 (SWDE)",
            paper=f"accuracy {swde['Transformers']} vs {swde['Titans']} %",
        ),
        _claim(
            results,
            "hope",
            "titans-mac",
            claim="Hope recalls better than Titans",
            reference="NL Table 3 (SWDE)",
            paper=f"accuracy {swde['Hope']} vs {swde['Titans']} %",
        ),
    ]


def table(results: dict[str, Any]) -> list[list[str]]:
    header = ["kind", *[f"P={p} d={d}" for d in results["widths"] for p in results["pairs"]]]
    rows = [
        [kind, *[_interval(results, kind, p, d).text(2) for d in results["widths"] for p in results["pairs"]]]
        for kind in results["kinds"]
    ]
    rows += [[kind, *["not implemented"] * (len(header) - 1)] for kind in results["missing_kinds"]]
    rows += [
        [k, *[f"not run: needs depth >= {n}"] * (len(header) - 1)]
        for k, n in results.get("shallow_kinds", {}).items()
    ]
    return [header, *rows]


def plot(results: dict[str, Any], path: Path) -> None:
    panels = {
        f"MQAR accuracy, width {d}": {
            kind: [_interval(results, kind, p, d) for p in results["pairs"]] for kind in results["kinds"]
        }
        for d in results["widths"]
    }
    lines_with_ci(
        results["pairs"],
        {},
        xlabel="key-value pairs",
        ylabel="answer accuracy",
        title="",
        path=path,
        panels=panels,
    )


EXPERIMENT = Experiment(
    name="recall",
    mirrors="Zoology-style MQAR curve (closest paper claims: NL Table 3, Titans Table 2)",
    description="Multi-query associative recall accuracy vs number of pairs and width for every kind.",
    run=run,
    claims=claims,
    table=table,
    plot=plot,
)
