#!/usr/bin/env python
"""Generate the documentation site's pages from the equation registry, the code and the last test run.

    python scripts/build_docs.py               # write the generated pages into docs/
    python scripts/build_docs.py --out DIR     # write them elsewhere (tests)
    mkdocs build --strict                      # then build the site (python3 dev.py docs does both)

Generated (git-ignored, rewritten on every run, so they are never stale):

* ``papers/{titans,miras,nl}.md``: one section per numbered equation: its LaTeX, kind, status (from the
  status file of the last whole test run, as ``neural-memory equations`` reports it), the n/a reason, the
  mutation score of the claiming code's module when ``benchmarks/results/mutation.json`` has it, the
  ``docs/errata.md`` entries that name it, and links to every claiming object (source line and API entry)
  and every marked test (source line, outcome in the recorded run);
* ``papers/index.md``: the summary table;
* ``api/<area>.md``: the API reference of each part of the package (mkdocstrings), each module preceded by
  the equations its objects claim, linked back to the paper pages;
* ``source/<path>.md``: every package module and every test file an equation page links to, with line
  numbers and a line anchor per line (``#__codelineno-0-N``);
* ``benchmarks.md``: ``benchmarks/README.md`` (the benchmark tables);
* ``reproduction/index.md``: the latest ``neural-memory reproduce`` report (``results/*/report.md``)
  copied in, or a page that says there is none yet.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import json
import re
import shutil
import sys
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # run from a checkout without installing

GENERATED = ("papers", "api", "source", "reproduction")  # folders under docs/ this script owns
GENERATED_FILES = ("benchmarks.md",)
PAPER_PAGES = {"titans": "Titans", "miras": "MIRAS", "nl": "Nested Learning"}
SHORT = {"titans": "Titans", "miras": "MIRAS", "nl": "NL"}
# API pages: each module of the package goes on the page of the first prefix it starts with.
API_AREAS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("common", "Common building blocks", ("neural_memory.common",)),
    ("titans", "Titans", ("neural_memory.titans",)),
    ("miras", "MIRAS", ("neural_memory.miras",)),
    ("nl", "Nested Learning", ("neural_memory.nl",)),
    ("models", "Models", ("neural_memory.models",)),
    (
        "training",
        "Training, data and command line",
        (
            "neural_memory.training",
            "neural_memory.training_optimizers",
            "neural_memory.distributed",
            "neural_memory.data",
            "neural_memory.datasets",
            "neural_memory.cli",
            "neural_memory.commands",
        ),
    ),
    (
        "experiments",
        "Experiments, tasks, evaluation and figures",
        (
            "neural_memory.experiments",
            "neural_memory.tasks",
            "neural_memory.evaluation",
            "neural_memory.memory_trace",
            "neural_memory.figures",
        ),
    ),
    ("registry", "Equation registry", ("neural_memory.registry",)),
)
API_SKIPPED = ("neural_memory.__main__", "neural_memory.registry._pytest_collect", "neural_memory")
LINE_ANCHOR = (
    "__codelineno-0-{line}"  # pymdownx.highlight's anchor_linenums id of line N of a page's first block
)


# ---------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Erratum:
    """One ``### <Paper> Eq. ...: title`` entry of docs/errata.md."""

    paper: str
    numbers: frozenset
    title: str  # the heading text
    body: str  # the entry's markdown below its heading


@dataclass
class Inputs:
    """Everything the pages are made from; each part is plain data so tests can build it by hand."""

    report: dict  # ``neural-memory equations --json``
    latex: dict[tuple[str, object], str]
    locations: dict[str, tuple[str, int]]  # claim "module:qualname" -> (repo-relative file, def line)
    test_outcomes: dict[tuple[str, object], dict[str, str]]  # from the status file: nodeid -> outcome
    errata: list[Erratum] = field(default_factory=list)
    mutation: dict = field(default_factory=dict)


def equation_report() -> dict:
    """The JSON report of ``neural-memory equations`` (same discovery, collection and status file)."""
    from neural_memory.registry import report

    out, err = io.StringIO(), io.StringIO()
    report.run(output="json", out=out, err=err)
    return json.loads(out.getvalue())


def claim_location(where: str) -> tuple[str, int]:
    """Repository-relative file and line of the ``def``/``class`` statement of a claimed object."""
    import inspect

    from neural_memory.registry import claimed_object

    obj = claimed_object(where)
    if obj is None:
        raise ValueError(f"claim {where} names no imported object")
    obj = inspect.unwrap(obj)
    path = Path(inspect.getsourcefile(obj)).resolve()
    lines, start = inspect.getsourcelines(obj)
    name = where.split(":")[1].split(".")[-1]
    pattern = re.compile(rf"^\s*(?:async\s+def|def|class)\s+{re.escape(name)}\b")
    offset = next((i for i, line in enumerate(lines) if pattern.match(line)), 0)
    return path.relative_to(REPO).as_posix(), start + offset


def test_location(nodeid: str, root: Path = REPO) -> tuple[str, int]:
    """File and line of the ``def`` of a test ``path::[Class::]name[params]``."""
    path, *names = nodeid.split("[")[0].split("::")
    tree = ast.parse((root / path).read_text("utf-8"))
    body: Sequence[ast.stmt] = tree.body
    node: ast.stmt | None = None
    for name in names:
        node = next(
            (
                n
                for n in body
                if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and n.name == name
            ),
            None,
        )
        if node is None:
            raise ValueError(f"{nodeid}: no {name} in {path}")
        body = getattr(node, "body", [])
    if node is None:
        raise ValueError(f"{nodeid} names no test function")
    # A decorated def: the line of the ``def`` itself, not of its first decorator.
    return path, node.lineno


def parse_errata(text: str) -> list[Erratum]:
    """The ``### <Paper> ...Eq. N...: title`` entries; the equation numbers are read from the heading."""
    papers = {"titans": "titans", "miras": "miras", "nl": "nl"}
    entries, current = [], None
    for line in text.splitlines():
        if line.startswith("## ") or line.startswith("### "):
            if current is not None:
                entries.append(current)
            current = None
            if line.startswith("### "):
                current = _erratum_heading(line[4:].strip(), papers)
            continue
        if current is not None:
            current["body"].append(line)
    if current is not None:
        entries.append(current)
    return [
        Erratum(e["paper"], frozenset(e["numbers"]), e["title"], "\n".join(e["body"]).strip())
        for e in entries
        if e["numbers"]
    ]


def _erratum_heading(heading: str, papers: Mapping[str, str]) -> dict | None:
    first = heading.split()[0].lower()
    if first not in papers:
        return None
    label = heading.split(": ", 1)[0]
    numbers: set = set()
    for part in re.split(r"\bEq\.\s*", label)[1:]:
        # "6–7", "19, 26, 29", "28-32 and Algorithm B", "42 (Muon)": the numbers before any "("
        for match in re.finditer(r"(?<![\w.])(\d+)(?:\s*[–-]\s*(\d+))?(?![\w.])", part.split("(")[0]):
            lo, hi = int(match.group(1)), int(match.group(2) or match.group(1))
            numbers.update(range(lo, hi + 1))
    return {"paper": papers[first], "numbers": numbers, "title": heading, "body": []}


def slugify(text: str) -> str:
    """The heading id Python-Markdown's toc extension gives (its default ``slugify``)."""
    value = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    value = re.sub(r"[^\w\s-]", "", value).strip().lower()
    return re.sub(r"[-\s]+", "-", value)


def load_mutation(path: Path) -> dict:
    """Per module ``{"score", "date", "fresh"}``; ``fresh`` is False when the module changed since the run."""
    if not path.is_file():
        return {}
    modules = json.loads(path.read_text("utf-8")).get("modules", {})
    result = {}
    for module, entry in modules.items():
        source = REPO / module
        digest = hashlib.sha256(source.read_bytes()).hexdigest() if source.is_file() else None
        result[module] = {
            "score": entry.get("score"),
            "date": entry.get("date", "?"),
            "fresh": digest == entry.get("sha256"),
        }
    return result


def gather() -> Inputs:
    """Read the registry, the code's claims, the tests' markers, the status file, errata and mutation data."""
    from neural_memory.registry import load_registry
    from neural_memory.registry import status as status_file

    report = equation_report()  # imports every module: the claims are registered after this
    latex = {key: eq.latex for key, eq in load_registry().items()}
    claims = {w for row in report["equations"] for w in row["implemented_by"]}
    status = status_file.load_status()
    outcomes = dict(status.tests) if status is not None else {}
    errata_path = REPO / "docs" / "errata.md"
    errata = parse_errata(errata_path.read_text("utf-8")) if errata_path.is_file() else []
    return Inputs(
        report=report,
        latex=latex,
        locations={w: claim_location(w) for w in sorted(claims)},
        test_outcomes=outcomes,
        errata=errata,
        mutation=load_mutation(REPO / "benchmarks" / "results" / "mutation.json"),
    )


# ---------------------------------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------------------------------


def source_page(path: str) -> str:
    """The docs-relative page of a repository file (``source/<path>.md``)."""
    return f"source/{path}.md"


def source_link(path: str, line: int, from_dir: str) -> str:
    return f"{_rel(source_page(path), from_dir)}#{LINE_ANCHOR.format(line=line)}"


def _rel(target: str, from_dir: str) -> str:
    depth = len(Path(from_dir).parts)
    return "../" * depth + target


def api_area(module: str) -> str | None:
    for name, _, prefixes in API_AREAS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return name
    return None


def api_anchor(where: str) -> str:
    module, qualname = where.split(":")
    return f"{module}.{qualname}"


def equation_anchor(number: object) -> str:
    return f"eq-{slugify(str(number))}"


def _key(paper: str, number: object) -> tuple[str, object]:
    return (paper, int(number) if isinstance(number, str) and number.isdigit() else number)


def render_paper(paper: str, inputs: Inputs) -> str:
    meta = inputs.report["papers"][paper]
    source = inputs.report.get("status_source") or {}
    rows = [r for r in inputs.report["equations"] if r["paper"] == paper]
    version = f"{meta['arxiv']}{meta['version']}"
    out = [
        f"# {PAPER_PAGES[paper]}: every numbered equation",
        "",
        f"*{meta['title']}*, [arXiv:{version}](https://arxiv.org/abs/{version}) ({meta['version_date']}). "
        "Equation numbers follow this version.",
        "",
        "Generated by `scripts/build_docs.py` from the equation registry, the `@implements` claims, the "
        "`@pytest.mark.equation` markers and the status file of the last whole test run.",
        "",
        f'!!! info "Statuses"\n    {_escape(source.get("note", "no status information"))}',
        "",
        _summary_table([paper], inputs.report),
        "",
    ]
    for row in rows:
        out += render_equation(row, inputs)
    return "\n".join(out) + "\n"


def _summary_table(papers: Iterable[str], report: Mapping) -> str:
    head = (
        "| Paper | Total | verified | implemented | tested | missing | n/a |\n|---|--:|--:|--:|--:|--:|--:|"
    )
    lines = [head]
    for paper in papers:
        c = report["papers"][paper]
        counts = " | ".join(
            str(c[k]) for k in ("total", "verified", "implemented", "tested", "missing", "n/a")
        )
        lines.append(f"| [{PAPER_PAGES[paper]}]({paper}.md) | {counts} |")
    return "\n".join(lines)


def render_equation(row: Mapping, inputs: Inputs) -> list[str]:
    paper, number = row["paper"], row["number"]
    key = _key(paper, number)
    out = [
        f"## Eq. {number}: {_escape(row['name'])} {{#{equation_anchor(number)}}}",
        "",
        f"**Kind:** {row['kind']} · **Section:** {_escape(row['section'])} · **Status:** "
        f"{_status_badge(row['status'])}",
        "",
    ]
    if row["na"]:
        out += [f"**n/a:** {_escape(row['na'])}", ""]
    out += ["$$", inputs.latex[key].strip(), "$$", ""]
    out += _code_lines(row, inputs)
    out += _test_lines(row, inputs)
    for erratum in inputs.errata:
        if erratum.paper == paper and number in erratum.numbers:
            out += _erratum_lines(erratum)
    return out


def _status_badge(status: str) -> str:
    return f'<span class="eq-status eq-status-{slugify(status) or "na"}">{status}</span>'


def _code_lines(row: Mapping, inputs: Inputs) -> list[str]:
    if not row["implemented_by"]:
        return ["**Code:** none claims this equation.", ""]
    out = ["**Code:**", ""]
    for where in row["implemented_by"]:
        path, line = inputs.locations[where]
        api = api_area(where.split(":")[0])
        api_link = f" · [API](../api/{api}.md#{api_anchor(where)})" if api else ""
        mutation = _mutation_text(path, inputs.mutation)
        out.append(
            f"- [`{where}`]({source_link(path, line, 'papers')}) (`{path}:{line}`){api_link}{mutation}"
        )
    score = row.get("mutation")
    if score and score["tested"]:
        stale = " (stale: the code changed since)" if score["stale"] else ""
        out += [
            "",
            f"**Mutation:** {score['killed']} of the {score['tested']} mutants of the claiming code killed "
            f"({score['killed'] / score['tested']:.0%}){stale}; [report](../mutation.md).",
        ]
    return [*out, ""]


def _mutation_text(path: str, mutation: Mapping) -> str:
    entry = mutation.get(path)
    if not entry or entry["score"] is None:
        return ""
    stale = "" if entry["fresh"] else ", module changed since"
    return f" · mutation score {entry['score']:.0%} ([{entry['date']}{stale}](../mutation.md))"


def _test_lines(row: Mapping, inputs: Inputs) -> list[str]:
    tests = row["tested_by"]
    if not tests:
        return ["**Tests:** none is marked with this equation.", ""]
    outcomes = inputs.test_outcomes.get(_key(row["paper"], row["number"]), {})
    executed = {nodeid.split("[")[0] for ids in row["verified_by"].values() for nodeid in ids}
    out = ["**Tests:**", ""]
    for nodeid in tests:
        path, line = test_location(nodeid)
        name = nodeid.split("::", 1)[1]
        out.append(
            f"- [`{name}`]({source_link(path, line, 'papers')}) (`{path}:{line}`): "
            f"{_outcome_text(nodeid, outcomes, nodeid in executed)}"
        )
    return [*out, ""]


def _outcome_text(nodeid: str, outcomes: Mapping[str, str], executed: bool) -> str:
    """``passed``, ``passed (12 cases)``, ``2 passed, 1 skipped``; a note when it ran none of the claims."""
    counts: dict[str, int] = {}
    for test, outcome in outcomes.items():
        if test.split("[")[0] == nodeid:
            counts[outcome] = counts.get(outcome, 0) + 1
    if not counts:
        return "not in the recorded run"
    if len(counts) == 1:
        ((outcome, n),) = counts.items()
        text = outcome if n == 1 else f"{outcome} ({n} cases)"
    else:
        text = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
    if counts.get("passed") and not executed:
        text += ", ran none of the claiming code"
    return text


def _erratum_lines(erratum: Erratum) -> list[str]:
    link = f"../errata.md#{slugify(erratum.title)}"
    body = [f"    {line}" if line else "" for line in erratum.body.splitlines()]
    return [
        f'!!! warning "Erratum: {_escape(erratum.title)}"',
        "",
        *body,
        "",
        f"    [In the errata]({link})",
        "",
    ]


def _escape(text: str) -> str:
    return text.replace('"', "&quot;") if text else text


def render_papers_index(inputs: Inputs) -> str:
    source = inputs.report.get("status_source") or {}
    return "\n".join(
        [
            "# Equations",
            "",
            "One page per paper, each numbered equation with its LaTeX, status, code and tests.",
            "",
            _summary_table(PAPER_PAGES, inputs.report),
            "",
            f"Statuses: {source.get('note', 'no status information')}.",
            "",
            "**verified**: every object claiming the equation was executed by a passing test marked with "
            "it in the recorded whole test run; **implemented**: claimed by code, not (fully) verified by "
            "that run; **tested**: marked tests but no claiming object; **missing**: neither; **n/a**: the "
            "project decided not to implement it, for the reason given.",
            "",
        ]
    )


def render_api(area: str, title: str, modules: Sequence[str], inputs: Inputs) -> str:
    """One API page: per module, the equations its objects claim (linked back), then mkdocstrings."""
    claims: dict[str, list[tuple[str, object]]] = {}
    for row in inputs.report["equations"]:
        for where in row["implemented_by"]:
            claims.setdefault(where, []).append((row["paper"], row["number"]))
    out = [f"# {title}", ""]
    for module in modules:
        out += [f"## `{module}`", ""]
        owned = sorted(w for w in claims if w.split(":")[0] == module)
        if owned:
            out += ["| object | equations |", "|---|---|"]
            for where in owned:
                eqs = ", ".join(
                    f"[{SHORT[p]} Eq. {n}](../papers/{p}.md#{equation_anchor(n)})" for p, n in claims[where]
                )
                out.append(f"| [`{where.split(':')[1]}`](#{api_anchor(where)}) | {eqs} |")
            out.append("")
        out += [
            f"::: {module}",
            "    options:",
            "      show_root_heading: false",
            "      heading_level: 3",
            "",
        ]
    return "\n".join(out) + "\n"


def package_modules() -> list[str]:
    import pkgutil

    import neural_memory

    names = [info.name for info in pkgutil.walk_packages(neural_memory.__path__, prefix="neural_memory.")]
    return sorted(n for n in names if n not in API_SKIPPED)


def render_source(path: str, text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    lang = "python" if path.endswith(".py") else "text"
    return f'# `{path}`\n\n{fence}{lang} linenums="1"\n{text.rstrip()}\n{fence}\n'


def latest_report(root: Path) -> Path | None:
    """The newest ``results/*/report.md`` of ``neural-memory reproduce`` (folder names are timestamps)."""
    reports = sorted(root.glob("results/*/report.md"), key=lambda p: (p.stat().st_mtime, p.parent.name))
    return reports[-1] if reports else None


def render_reproduction(out_dir: Path, report: Path | None) -> str:
    head = [
        "# Reproduction report",
        "",
        "`neural-memory reproduce` (the third step of the main job, `python3 dev.py run`) tests the papers' "
        "claims at small scale and writes `results/<timestamp>/report.md`. This page shows the newest such "
        "report found in the checkout when the docs were built.",
        "",
    ]
    if report is None:
        return "\n".join(
            [
                *head,
                '!!! note "No report yet"',
                "    No `results/*/report.md` exists in this checkout: either `neural-memory reproduce` has "
                "not run here, or the command does not exist yet (the main job then skips it with a note). "
                "Run `python3 dev.py run`, then rebuild the docs (`python3 dev.py docs`).",
                "",
            ]
        )
    target = out_dir / "reproduction"
    for item in report.parent.iterdir():
        if item.is_file() and item.name != "report.md":
            shutil.copy2(item, target / item.name)
    text = _unlink_missing(report.read_text("utf-8"), report.parent)
    rel = report.relative_to(REPO).as_posix() if report.is_relative_to(REPO) else str(report)
    return "\n".join([*head, f"Report: `{rel}`.", "", _demote_headings(text)])


def render_benchmarks(readme: Path) -> str:
    """``benchmarks/README.md`` as a page; its links to files beside it become plain text."""
    head = (
        '!!! info "Source"\n    This page is `benchmarks/README.md`, copied in by scripts/build_docs.py.\n\n'
    )
    text = _unlink_missing(readme.read_text("utf-8"), None)
    return text.replace("\n\n", "\n\n" + head, 1) if text.startswith("# ") else head + text


def _unlink_missing(text: str, folder: Path | None) -> str:
    """Relative links to files not copied beside the page (outside ``folder``, all if None) become text."""

    def fix(match: re.Match) -> str:
        bang, label, target = match.group(1), match.group(2), match.group(3)
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            return match.group(0)
        inside = (folder / target.split("#")[0]).resolve() if folder is not None else None
        if inside is not None and inside.parent == folder.resolve() and inside.is_file():
            return match.group(0)
        return f"{label} (`{target}`)" if not bang else f"`{target}`"

    return re.sub(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)", fix, text)


def _demote_headings(text: str) -> str:
    return re.sub(r"^(#{1,5}) ", r"#\1 ", text, flags=re.MULTILINE)


# ---------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------


def linked_files(pages: Mapping[str, str]) -> set[str]:
    """Repository files the generated pages link to through ``source/<path>.md``."""
    found = set()
    for text in pages.values():
        found.update(re.findall(r"\(\.\./source/([^)#]+)\.md#", text))
    return found


def build_pages(inputs: Inputs, modules: Sequence[str]) -> dict[str, str]:
    """Every generated page but the reproduction report: ``{docs-relative path: markdown}``."""
    pages = {f"papers/{paper}.md": render_paper(paper, inputs) for paper in PAPER_PAGES}
    pages["papers/index.md"] = render_papers_index(inputs)
    for area, title, _ in API_AREAS:
        members = [m for m in modules if api_area(m) == area]
        pages[f"api/{area}.md"] = render_api(area, title, members, inputs)
    unplaced = [m for m in modules if api_area(m) is None]
    if unplaced:
        raise ValueError(f"modules on no API page (add them to API_AREAS in {__file__}): {unplaced}")
    package_files = {f"src/{m.replace('.', '/')}.py" for m in modules}
    package_files |= {f"src/{m.replace('.', '/')}/__init__.py" for m in modules}
    files = {p for p in package_files if (REPO / p).is_file()} | linked_files(pages)
    for path in sorted(files):
        pages[source_page(path)] = render_source(path, (REPO / path).read_text("utf-8"))
    return pages


def write(out_dir: Path, pages: Mapping[str, str]) -> None:
    for folder in GENERATED:
        shutil.rmtree(out_dir / folder, ignore_errors=True)
    for name in GENERATED_FILES:
        (out_dir / name).unlink(missing_ok=True)
    (out_dir / "reproduction").mkdir(parents=True)
    pages = dict(pages)
    pages["reproduction/index.md"] = render_reproduction(out_dir, latest_report(REPO))
    pages["benchmarks.md"] = render_benchmarks(REPO / "benchmarks" / "README.md")
    for relative, text in pages.items():
        path = out_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, "utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="docs folder (default: docs/)")
    args = parser.parse_args(argv)
    inputs = gather()
    pages = build_pages(inputs, package_modules())
    write(args.out, pages)
    print(f"build_docs: {len(pages) + 1} pages written under {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
