"""The report of ``neural-memory reproduce``: ``report.md`` with the claims table and the plots, and the
plain-text tables printed on the terminal.

The claims table has one row per claim of every experiment that ran, plus one "not tested" row per claim of
a planned experiment that does not exist yet (:data:`PLANNED_CLAIMS`), so nothing is silently dropped.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from neural_memory.experiments.base import Claim
from neural_memory.experiments.stats import NOT_TESTED

NOT_IMPLEMENTED = f"{NOT_TESTED}: experiment not implemented yet"

# experiment of the plan (issue 12) that does not exist yet -> its claims (claim, reference, paper numbers)
PLANNED_CLAIMS: dict[str, list[tuple[str, str, str]]] = {}


def planned_rows(planned: Sequence[str]) -> list[Claim]:
    """ "Not tested" rows for the claims of planned experiments that are not implemented."""
    return [
        Claim(claim, reference, paper, "-", NOT_IMPLEMENTED, rule="-")
        for name in planned
        for claim, reference, paper in PLANNED_CLAIMS.get(name, [])
    ]


def claims_of(documents: Sequence[dict[str, Any]], planned: Sequence[str]) -> list[tuple[str, Claim]]:
    """(experiment name, claim) for every claim of the documents, then the planned experiments' rows."""
    rows = [(doc["experiment"], Claim(**c)) for doc in documents for c in doc["claims"]]
    return rows + [(name, row) for name in planned for row in planned_rows([name])]


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|")


def markdown_table(rows: Sequence[Sequence[str]]) -> str:
    header, *body = rows
    lines = ["| " + " | ".join(_escape(c) for c in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_escape(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def text_table(rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell (for the terminal)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def claims_table(claims: Sequence[tuple[str, Claim]]) -> list[list[str]]:
    header = ["experiment", "claim", "paper reference", "paper's numbers", "measured [95 % CI]", "verdict"]
    return [header, *[[name, c.claim, c.reference, c.paper, c.measured, c.verdict] for name, c in claims]]


def verdict_counts(claims: Sequence[tuple[str, Claim]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, claim in claims:
        counts[claim.verdict] = counts.get(claim.verdict, 0) + 1
    return counts


def write_report(
    out: Path,
    documents: Sequence[dict[str, Any]],
    planned: Sequence[str],
    *,
    scale: dict[str, Any],
    seconds: float,
) -> Path:
    """Write ``out/report.md``: summary, claims table, then one section per experiment with its plot."""
    claims = claims_of(documents, planned)
    counts = ", ".join(f"{n} {verdict}" for verdict, n in sorted(verdict_counts(claims).items()))
    lines = [
        f"# neural-memory reproduction report (scale `{scale['name']}`)",
        "",
        f"Written {datetime.datetime.now().isoformat(timespec='seconds')}. The experiments took "
        f"{sum(doc['timings']['seconds'] for doc in documents):.0f} s when they ran; this invocation took "
        f"{seconds:.0f} s (finished experiments and runs are reused). Scale: width {scale['dim']}, depth "
        f"{scale['depth']}, sequence length {scale['seq_len']}, batch {scale['batch_size']}, "
        f"{scale['steps']} steps, seeds {list(scale['seeds'])}, {scale['eval_windows']} held-out samples "
        "per run.",
        "",
        "Verdicts come from one rule in code (`neural_memory.experiments.stats`): a claim is "
        "**reproduced** only when the two 95 % confidence intervals are separated in the claimed "
        "direction; otherwise it is **not reproduced at this scale**; a claim whose model or experiment "
        "does not exist, or whose model needs more blocks than the scale has, is **not tested**. Losses "
        "are bits per byte on held-out windows (t interval over "
        "seeds when there are 3 or more, else over the held-out windows, which covers evaluation noise "
        "only); accuracies have Wilson intervals over samples (over answers for recall, whose answers share "
        "a sequence, so those intervals are optimistic). With one seed no interval covers the variation "
        "between training runs, so a 'reproduced' at the tiny scale is weak evidence; the measured column "
        "says what each interval covers. The papers report perplexities of 170M-1.3B models on billions "
        "of tokens, so only the direction of each comparison is tested, never the value.",
        "",
        f"## Claims ({counts})",
        "",
        markdown_table(claims_table(claims)),
        "",
    ]
    for doc in documents:
        lines += [
            f"## `{doc['experiment']}` — mirrors {doc['mirrors']}",
            "",
            doc["description"],
            "",
            markdown_table(doc["table"]),
            "",
            f"![{doc['experiment']}]({doc['experiment']}.png)",
            "",
        ]
    for name in planned:
        lines += [f"## `{name}` — {NOT_IMPLEMENTED}", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


__all__ = [
    "NOT_IMPLEMENTED",
    "PLANNED_CLAIMS",
    "claims_of",
    "claims_table",
    "markdown_table",
    "planned_rows",
    "text_table",
    "verdict_counts",
    "write_report",
]
