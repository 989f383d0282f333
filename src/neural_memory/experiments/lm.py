"""``lm``: byte-level language modelling, bits per byte of every kind at the same budget (mirrors Titans
Table 1, MIRAS Table 2, NL Table 2).

Every registered kind trains on the same text (``--text PATH`` or the project's generated sentences) with
the same width, depth, steps and tokens; parameter counts differ by kind and are reported. Kinds the papers
compare against that the project does not have yet (e.g. Hope) make their claims "not tested".
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
from neural_memory.experiments.paper_claims import (
    MIRAS_TABLE2_760M_HYBRID_WIKI,
    NL_TABLE2_760M_WIKI,
    TITANS_TABLE1_340M_WIKI,
)
from neural_memory.experiments.plots import bars_with_ci
from neural_memory.experiments.stats import NOT_TESTED

MODEL_NOT_IMPLEMENTED = f"{NOT_TESTED}: model not implemented"


def too_shallow(kinds: list[str], depth: int) -> dict[str, int]:
    """The kinds of ``kinds`` that cannot be built with ``depth`` blocks, with the depth each needs."""
    from neural_memory.models.registry import get_kind

    return {k: get_kind(k).min_depth for k in kinds if get_kind(k).min_depth > depth}


def kind_runs(ctx: Context, desc: str, kinds: list[str]) -> dict[str, Any]:
    """Train each available kind of ``kinds`` with its defaults on the LM text; missing kinds are listed,
    and so are the kinds that need more blocks than the scale has (the alternating hybrids at depth 1)."""
    from neural_memory.models.registry import available_kinds

    present = set(available_kinds())
    shallow = too_shallow([k for k in kinds if k in present], ctx.scale.depth)
    text = str(ctx.lm_text())
    variants = {
        kind: (lambda seed, k=kind: train_config(ctx, k, seed, text=text))
        for kind in kinds
        if kind in present and kind not in shallow
    }
    records = train_variants(ctx, desc, variants)
    return {
        "variants": {kind: {"kind": kind, "runs": runs} for kind, runs in records.items()},
        "missing_kinds": [kind for kind in kinds if kind not in present],
        "shallow_kinds": shallow,
        "depth": ctx.scale.depth,
    }


def kind_intervals(results: dict[str, Any]):
    return {name: loss_interval(v["runs"]) for name, v in results["variants"].items()}


def lower_loss_claim(ci, a: str, b: str, *, claim: str, reference: str, paper: str, results=None) -> Claim:
    """The claim "kind a has lower loss than kind b"; not tested if either kind is not implemented, or
    (with the experiment's ``results``) needs more blocks than the scale has."""
    shallow = (results or {}).get("shallow_kinds", {})
    for kind in (a, b):
        if kind in shallow:
            measured = f"({kind} needs depth >= {shallow[kind]}; this scale has depth {results['depth']})"
            return Claim(claim, reference, paper, measured, f"{NOT_TESTED}: needs depth >= {shallow[kind]}")
    if a not in ci or b not in ci:
        missing = ", ".join(k for k in (a, b) if k not in ci)
        return Claim(claim, reference, paper, f"({missing} not implemented)", MODEL_NOT_IMPLEMENTED)
    measured = f"bpb {ci[a].text()} vs {ci[b].text()}"
    return compared_claim(claim, reference, paper, measured, ci[a], ci[b], "lower")


ALL_KINDS = [
    "transformer",
    "titans-lmm",
    "titans-mac",
    "titans-mag",
    "titans-mal",
    "moneta",
    "yaad",
    "memora",
    "moneta-h",
    "yaad-h",
    "memora-h",
    "hope",
    "linear-attention",
    "deltanet",
    "gated-deltanet",
    "mamba2",
]


def run(ctx: Context) -> dict[str, Any]:
    from neural_memory.models.registry import available_kinds

    # every kind the papers name, then any other registered kind
    kinds = ALL_KINDS + [k for k in available_kinds() if k not in ALL_KINDS]
    return kind_runs(ctx, "lm", kinds)


def claims(results: dict[str, Any]) -> list[Claim]:
    ci = kind_intervals(results)
    t1 = TITANS_TABLE1_340M_WIKI
    rows = [
        lower_loss_claim(
            ci,
            f"titans-{arch.lower()}",
            "transformer",
            claim=f"Titans ({arch}) beats the Transformer at equal budget",
            reference="Titans Table 1 (340M)",
            paper=f"Wiki ppl {t1[f'Titans ({arch})']} vs {t1['Transformer++']} (Transformer++)",
        )
        for arch in ("LMM", "MAC", "MAG", "MAL")
    ]
    rows.append(
        lower_loss_claim(
            ci,
            "titans-lmm",
            "gated-deltanet",
            claim="Titans (LMM) beats Gated DeltaNet at equal budget",
            reference="Titans Table 1 (340M)",
            paper=f"Wiki ppl {t1['Titans (LMM)']} vs {t1['Gated DeltaNet']}",
        )
    )
    hybrid = MIRAS_TABLE2_760M_HYBRID_WIKI
    for name in ("Moneta", "Yaad", "Memora"):
        rows.append(
            lower_loss_claim(
                ci,
                f"{name.lower()}-h",
                name.lower(),
                claim=f"{name}-H (sliding-window attention in every other layer) beats {name} at equal depth",
                reference="MIRAS Table 2 (760M)",
                paper=f"Wiki ppl {hybrid[name + '-H']} vs {hybrid[name]}",
                results=results,
            )
        )
    nl = NL_TABLE2_760M_WIKI
    for other, name in (("titans-mac", "Titans"), ("transformer", "Transformer++")):
        rows.append(
            lower_loss_claim(
                ci,
                "hope",
                other,
                claim=f"Hope beats {name} at equal budget",
                reference="NL Table 2 (760M)",
                paper=f"Wiki ppl {nl['Hope']} vs {nl[name]}",
            )
        )
    return rows


def table(results: dict[str, Any]) -> list[list[str]]:
    ci = kind_intervals(results)
    rows = [[kind, str(v["runs"][0]["params"]), ci[kind].text()] for kind, v in results["variants"].items()]
    rows += [[kind, "-", "not implemented"] for kind in results["missing_kinds"]]
    rows += [
        [kind, "-", f"not run: needs depth >= {n}"] for kind, n in results.get("shallow_kinds", {}).items()
    ]
    return [["kind", "params", "bpb [95 % CI]"], *rows]


def plot(results: dict[str, Any], path: Path) -> None:
    ci = kind_intervals(results)
    bars_with_ci(
        list(ci), list(ci.values()), ylabel="held-out bits per byte", title="LM at equal budget", path=path
    )


EXPERIMENT = Experiment(
    name="lm",
    mirrors="Titans Table 1, MIRAS Table 2, NL Table 2",
    description="Byte-level language modelling: bits per byte of every kind at the same budget.",
    run=run,
    claims=claims,
    table=table,
    plot=plot,
)
