#!/usr/bin/env python
"""Build the equation registry (``src/neural_memory/registry/data/<paper>.json``) from the paper catalogs.

The catalogs live outside the repository (``/work/shared/papers/{titans,miras,nl}.md``); the registry files
are committed so the package works without them. Re-run this script when a catalog changes::

    python scripts/build_registry.py                 # default catalog dir: ../shared/papers
    python scripts/build_registry.py --shared PATH   # PATH/papers/<paper>.md
    python scripts/build_registry.py --check         # exit 1 if the committed JSON is stale

Sources of truth, per field:

* ``number``, ``name``, ``section``, ``kind``, ``confidence``: the CSV index at the end of each catalog.
  Titans' CSV writes sections bare (``2.1``, ``C``); they are written ``§2.1`` / ``App. C`` like the other
  two papers. MIRAS' two named displays get the ids ``FTRL-VP`` and ``LR-VP`` in catalog order.
* ``latex``: every ``$$...$$`` display of the catalog entry (``### <Paper> Eq. N — name (§x)``) before its
  first bullet, joined with newlines. NL Eq. 36 has no display of its own (an empty numbered line, the
  catalog's bracketed note is kept verbatim and the registry marks it ``n/a``); NL Eq. 95 was recovered
  from a second copy of the paper (catalog update of 2026-11-28).
* ``na``: ``scripts/registry_na.json`` (``{"titans": {"6": "reason"}}``), the project's decisions not to
  implement an equation. Every key must name an equation of the registry.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO / "src" / "neural_memory" / "registry" / "data"
NA_FILE = REPO / "scripts" / "registry_na.json"
KINDS = ("implement", "definition", "derivation", "background")
CONFIDENCES = ("high", "medium", "low")

# Pinned versions; the catalog header is checked to mention the same arXiv id and version.
PAPERS: dict[str, dict] = {
    "titans": {
        "heading": "Titans",
        "title": "Titans: Learning to Memorize at Test Time",
        "authors": "Ali Behrouz, Peilin Zhong, Vahab Mirrokni",
        "arxiv": "2501.00663",
        "version": "v1",
        "version_date": "2024-12-31",
        "count": 35,
    },
    "miras": {
        "heading": "MIRAS",
        "title": (
            "It's All Connected: A Journey Through Test-Time Memorization, Attentional Bias, Retention, "
            "and Online Optimization"
        ),
        "authors": "Ali Behrouz, Meisam Razaviyayn, Peilin Zhong, Vahab Mirrokni",
        "arxiv": "2504.13173",
        "version": "v1",
        "version_date": "2025-04-17",
        "count": 38,
    },
    "nl": {
        "heading": "NL",
        "title": "Nested Learning: The Illusion of Deep Learning Architectures",
        "authors": "Ali Behrouz, Meisam Razaviyayn, Peilin Zhong, Vahab Mirrokni",
        "arxiv": "2512.24695",
        "version": "v1",
        "version_date": "2025-12-31",
        "count": 121,
    },
}
NAMED_IDS = {"miras": ("FTRL-VP", "LR-VP")}  # named displays, in catalog order
ENTRY_HEADING = re.compile(r"^### (?P<paper>Titans|MIRAS|NL) Eq\. (?P<id>\d+|\([^)]*\)) — ", re.M)
DISPLAY = re.compile(r"\$\$(.*?)\$\$", re.S)


def parse_csv_index(text: str, paper: str) -> list[dict]:
    """Rows of the fenced ``csv`` block that ends the catalog."""
    blocks = re.findall(r"```csv\n(.*?)```", text, re.S)
    if len(blocks) != 1:
        raise SystemExit(f"{paper}: expected one ```csv block, found {len(blocks)}")
    rows = list(csv.DictReader(io.StringIO(blocks[0])))
    for row in rows:
        if row["paper"] != paper:
            raise SystemExit(f"{paper}: CSV row for another paper: {row}")
    return rows


def parse_entries(text: str, paper: str) -> list[tuple[str, str]]:
    """``(id, latex)`` of every ``### <Paper> Eq.`` entry, in catalog order (ids as printed: "13", "(…)")."""
    heading = PAPERS[paper]["heading"]
    matches = [m for m in ENTRY_HEADING.finditer(text) if m.group("paper") == heading]
    entries = []
    for m in matches:
        body_start = text.index("\n", m.start()) + 1
        end = re.compile(r"^##", re.M).search(text, body_start)
        body = text[body_start : end.start() if end else len(text)]
        bullet = re.compile(r"^- ", re.M).search(body)
        head = body[: bullet.start()] if bullet else body
        displays = [d.strip() for d in DISPLAY.findall(head) if d.strip()]
        entries.append((m.group("id"), "\n".join(displays)))
    return entries


def normalise_section(section: str, paper: str) -> str:
    """Titans' CSV writes ``2.1`` / ``C``; the other catalogs write ``§2.1`` / ``App. B``."""
    section = section.strip()
    if paper == "titans":
        if re.fullmatch(r"\d+(\.\d+)*", section):
            return f"§{section}"
        if re.fullmatch(r"[A-Z]", section):
            return f"App. {section}"
    return section


def build_paper(paper: str, catalog: Path, na: dict[str, str]) -> dict:
    meta = PAPERS[paper]
    text = catalog.read_text("utf-8")
    if f"{meta['arxiv']}" not in text or meta["version"] not in text:
        raise SystemExit(f"{catalog}: does not mention arXiv {meta['arxiv']} {meta['version']}")
    rows = parse_csv_index(text, paper)
    entries = parse_entries(text, paper)
    if len(rows) != meta["count"] or len(entries) != meta["count"]:
        raise SystemExit(
            f"{paper}: expected {meta['count']} equations, CSV has {len(rows)}, entries {len(entries)}"
        )
    named = iter(NAMED_IDS.get(paper, ()))
    latex_by_id: dict[str, str] = {}
    for printed, latex in entries:
        key = printed if printed.isdigit() else next(named, None)
        if key is None:
            raise SystemExit(f"{paper}: unexpected named display {printed!r}")
        latex_by_id[key] = latex
    if next(named, None) is not None:
        raise SystemExit(f"{paper}: fewer named displays than expected")

    equations = []
    for row in rows:
        number: int | str = int(row["number"]) if row["number"].isdigit() else row["number"]
        if str(number) not in latex_by_id:
            raise SystemExit(f"{paper}: CSV equation {number} has no catalog entry")
        kind, confidence = row["kind"].strip(), row["confidence"].strip()
        if kind not in KINDS or confidence not in CONFIDENCES:
            raise SystemExit(f"{paper} Eq. {number}: kind {kind!r} / confidence {confidence!r} unknown")
        equations.append(
            {
                "number": number,
                "name": row["name"].strip(),
                "section": normalise_section(row["section"], paper),
                "kind": kind,
                "latex": latex_by_id[str(number)],
                "confidence": confidence,
                "na": na.get(str(number)),
            }
        )
    unknown_na = set(na) - {str(eq["number"]) for eq in equations}
    if unknown_na:
        raise SystemExit(f"{NA_FILE.name}: {paper} has no equations {sorted(unknown_na)}")
    numbered = [eq["number"] for eq in equations if isinstance(eq["number"], int)]
    if sorted(numbered) != list(range(1, len(numbered) + 1)):
        raise SystemExit(f"{paper}: numbers are not contiguous 1..{len(numbered)}")

    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return {
        "paper": paper,
        "title": meta["title"],
        "authors": meta["authors"],
        "arxiv": meta["arxiv"],
        "version": meta["version"],
        "version_date": meta["version_date"],
        "source": f"catalog papers/{paper}.md (sha256 {digest}), built by scripts/build_registry.py",
        "count": len(equations),
        "equations": equations,
    }


def render(data: dict) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def load_na() -> dict[str, dict[str, str]]:
    na = json.loads(NA_FILE.read_text("utf-8")) if NA_FILE.exists() else {}
    for paper, reasons in na.items():
        if paper not in PAPERS:
            raise SystemExit(f"{NA_FILE.name}: unknown paper {paper!r}")
        for number, reason in reasons.items():
            if not isinstance(reason, str) or not reason.strip():
                raise SystemExit(f"{NA_FILE.name}: {paper} Eq. {number} needs a non-empty reason")
    return na


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--shared",
        type=Path,
        default=REPO.parent / "shared",
        help="folder holding papers/<paper>.md (default: ../shared relative to the repository)",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON is out of date")
    args = parser.parse_args(argv)

    na = load_na()
    stale = []
    for paper in PAPERS:
        catalog = args.shared / "papers" / f"{paper}.md"
        if not catalog.exists():
            raise SystemExit(f"catalog not found: {catalog} (pass --shared)")
        text = render(build_paper(paper, catalog, na.get(paper, {})))
        target = DATA_DIR / f"{paper}.json"
        if args.check:
            if not target.exists() or target.read_text("utf-8") != text:
                stale.append(target)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, "utf-8")
        print(f"wrote {target.relative_to(REPO)} ({PAPERS[paper]['count']} equations)")
    for target in stale:
        print(f"stale: {target.relative_to(REPO)} (re-run scripts/build_registry.py)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
