"""``neural-memory equations``: join the registry, the code's claims, the tests' markers and the last run.

Four inputs, each a plain mapping so the logic below is testable on synthetic data:

* the registry, ``{(paper, number): Equation}`` (:func:`neural_memory.registry.load_registry`);
* implementations, ``{(paper, number): ["module:qualname", ...]}``
  (:func:`neural_memory.registry.discover_implementations`);
* tests, ``{(paper, number): ["tests/x.py::test_y", ...]}`` read from ``@pytest.mark.equation`` markers by
  a pytest collection in a subprocess (:func:`collect_test_map`; collection never runs a test);
* the status file of the last whole test run (:mod:`neural_memory.registry.status`): for each equation,
  which claiming objects a passing test marked with it executed.

Status of an equation:

=========== ===================================================================================
verified    every object claiming it was executed by a passing test marked with it, in the recorded
            whole test run (skipped, xfail, failed tests and tests that never call the code do not count)
implemented claimed by code, not (fully) verified by the recorded run
tested      marked tests but no claiming object (expected for derivations)
missing     neither
n/a         the registry records a reason not to implement it (``na``), shown with the status
=========== ===================================================================================

Without a status file nothing is verified. ``--check`` fails on every claim (of any kind) that the
recorded run did not verify, on every marked test that passed without executing any claim of its
equation, on a status file older than the package's or the tests' code, and on claims, markers and
registry that disagree. Outside a source checkout (an installed package, no tests)
the report shows the statuses shipped with the package and says so; ``--check`` needs the repository.

When the repository holds a mutation report (``benchmarks/results/mutation.json``, written by
``python3 dev.py mutate``), each equation whose claiming code was mutated shows its mutation score
(killed / tested mutants of the claiming objects), marked stale when a module it comes from changed
since that run.

This module does not import torch; :func:`run` imports the package only to discover the claims.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TextIO

from neural_memory.registry import PAPER_TITLES, PAPERS, Equation, EquationId, normalise_number, paper_meta
from neural_memory.registry import status as status_file
from neural_memory.registry.status import RunStatus

Key = tuple[str, EquationId]
STATUSES: tuple[str, ...] = ("verified", "implemented", "tested", "missing", "n/a")
COLLECT_TIMEOUT_S = 300
MUTATION_REPORT = Path("benchmarks/results/mutation.json")  # relative to the repository


@dataclass(frozen=True)
class Row:
    """One line of the report: an equation of the registry and what covers it."""

    paper: str
    number: EquationId
    name: str
    section: str
    kind: str
    status: str
    implemented_by: tuple[str, ...]
    tested_by: tuple[str, ...]
    na: str | None
    verified_by: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (claim, passing tests that executed it)
    mutation: MutationScore | None = None


@dataclass(frozen=True)
class MutationScore:
    """Mutants of an equation's claiming code killed by the tests, from the committed mutation report."""

    killed: int
    tested: int
    stale: bool  # a module it comes from changed since the mutation run
    not_run: tuple[str, ...] = ()  # claims in modules the report has not covered

    def text(self) -> str:
        share = f"{100 * self.killed / self.tested:.0f} %" if self.tested else "n/a"
        return f"mutation {share} ({self.killed}/{self.tested}){' STALE' if self.stale else ''}"


@dataclass(frozen=True)
class Problem:
    """A ``--check`` failure; ``paper`` is None for problems not tied to one paper (collection errors)."""

    paper: str | None
    message: str


@dataclass
class TestMap:
    """Equation markers found by pytest collection."""

    tests: dict[Key, list[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # files that failed to collect, or a failed run
    tests_dir: Path | None = None

    __test__ = False  # not a pytest test class, despite the name


# ---------------------------------------------------------------------------------------------------
# Pure logic
# ---------------------------------------------------------------------------------------------------


def status_of(
    eq: Equation, implemented_by: Sequence[str], tested_by: Sequence[str], verified: Iterable[str] = ()
) -> str:
    """The status of one equation (see the module docstring); ``verified``: the claims the run verified."""
    if eq.na is not None:
        return "n/a"
    if implemented_by and set(implemented_by) <= set(verified):
        return "verified"
    if implemented_by:
        return "implemented"
    if tested_by:
        return "tested"
    return "missing"


def build_rows(
    registry: Mapping[Key, Equation],
    implementations: Mapping[Key, Sequence[str]],
    tests: Mapping[Key, Sequence[str]],
    paper: str | None = None,
    status: RunStatus | None = None,
    mutation: Mapping[Key, MutationScore] | None = None,
) -> list[Row]:
    """One row per registry equation (of ``paper``, or of all papers), in registry order."""
    rows = []
    for key, eq in registry.items():
        if paper is not None and eq.paper != paper:
            continue
        impl = tuple(sorted(set(implementations.get(key, ()))))
        tested = tuple(sorted(set(tests.get(key, ()))))
        verified = status.verified_claims(key) if status is not None else {}
        verified_by = tuple((w, tuple(verified[w])) for w in impl if verified.get(w))
        status_text = status_of(eq, impl, tested, [w for w, _ in verified_by])
        rows.append(
            Row(
                eq.paper,
                eq.number,
                eq.name,
                eq.section,
                eq.kind,
                status_text,
                impl,
                tested,
                eq.na,
                verified_by,
                (mutation or {}).get(key),
            )
        )
    return rows


def load_mutation_scores(report: Path, root: Path) -> dict[Key, MutationScore]:
    """Per equation, from a mutation report (``scripts/mutation_report.py``); {} when there is none.

    ``root``: the repository the report's module paths are relative to (for the staleness check).
    """
    import hashlib

    if not report.is_file():
        return {}
    data = json.loads(report.read_text())
    current = {}  # each module hashed once, though several equations come from it
    for entry in data.get("equations", []):
        for path in entry["sha256"]:
            if path not in current:
                source = root / path
                current[path] = hashlib.sha256(source.read_bytes()).hexdigest() if source.is_file() else None
    scores = {}
    for entry in data.get("equations", []):
        stale = any(current[path] != sha for path, sha in entry["sha256"].items())
        key = (entry["paper"], normalise_number(entry["number"]))
        scores[key] = MutationScore(entry["killed"], entry["tested"], stale, tuple(entry.get("not_run", ())))
    return scores


def summarise(rows: Iterable[Row]) -> dict[str, dict[str, int]]:
    """Per paper: ``total`` and the count of each status."""
    summary: dict[str, dict[str, int]] = {}
    for row in rows:
        counts = summary.setdefault(row.paper, {"total": 0, **dict.fromkeys(STATUSES, 0)})
        counts["total"] += 1
        counts[row.status] += 1
    return summary


def find_problems(
    registry: Mapping[Key, Equation],
    implementations: Mapping[Key, Sequence[str]],
    tests: Mapping[Key, Sequence[str]],
    collection_errors: Sequence[str] = (),
    status: RunStatus | None = None,
) -> list[Problem]:
    """Everything ``--check`` fails on, in a stable order.

    ``status`` None means no test run was recorded: one problem says so (if anything is claimed) instead of
    one per unverified claim.
    """
    problems = [Problem(None, f"test collection: {error}") for error in collection_errors]
    for source, claims in (("implemented by", implementations), ("cited by test", tests)):
        for key in sorted(set(claims) - set(registry), key=lambda k: (k[0], str(k[1]))):
            paper, number = key
            where = ", ".join(sorted(claims[key]))
            problems.append(
                Problem(paper, f"{_label(paper, number)} is not in the registry ({source} {where})")
            )
    if status is None and any(key in registry for key in implementations):
        problems.append(
            Problem(
                None,
                f"no recorded test run ({status_file.default_path()} does not exist): "
                "run the whole test suite (python3 dev.py test)",
            )
        )
    for key, eq in registry.items():
        impl, tested = implementations.get(key, ()), tests.get(key, ())
        if eq.na is not None and impl:
            problems.append(
                Problem(eq.paper, f"{eq.label} is marked n/a ({eq.na}) but implemented by {', '.join(impl)}")
            )
        elif impl and not tested:
            problems.append(
                Problem(
                    eq.paper,
                    f"{eq.label} is implemented by {', '.join(impl)} but no test is marked "
                    f"@pytest.mark.equation({eq.paper!r}, {eq.number!r})",
                )
            )
        elif impl and status is not None:
            problems += _unverified_claims(eq, impl, status)
            problems += _tests_without_claims(eq, impl, status)
    return problems


def _unverified_claims(eq: Equation, implemented_by: Sequence[str], status: RunStatus) -> list[Problem]:
    """One problem per claim of ``eq`` that no passing, marked test executed in the recorded run."""
    verified, ran = status.verified_claims(eq.key), status.tests.get(eq.key, {})
    marked = [f"{nodeid} ({outcome})" for nodeid, outcome in ran.items()]
    if len(marked) > 4:
        marked = [*marked[:3], f"{len(marked) - 3} more"]
    seen = f"marked tests in the run: {', '.join(marked)}" if marked else "no marked test ran"
    return [
        Problem(
            eq.paper,
            f"{eq.label}: no passing test marked equation({eq.paper!r}, {eq.number!r}) executed {where} "
            f"in the recorded run ({seen})",
        )
        for where in sorted(implemented_by)
        if not verified.get(where)
    ]


def _tests_without_claims(eq: Equation, implemented_by: Sequence[str], status: RunStatus) -> list[Problem]:
    """One problem per passing test marked with ``eq`` that executed none of its claims.

    Such a marker sits on a helper or a generic test: it would stay green if the equation's code were
    wrong, so it must move to a test that runs that code (or the code it tests must claim the equation).
    """
    claims = ", ".join(sorted(implemented_by))
    return [
        Problem(
            eq.paper,
            f"{nodeid} is marked {eq.label} but executed none of its claims ({claims}): mark a test that "
            "runs the code, or add @implements to the code it tests",
        )
        for nodeid in status.passed_without_claims(eq.key)
    ]


def _label(paper: str, number: EquationId) -> str:
    short = PAPER_TITLES[paper][0] if paper in PAPER_TITLES else repr(paper)
    return f"{short} Eq. {number}"


# ---------------------------------------------------------------------------------------------------
# Test collection (pytest in a subprocess)
# ---------------------------------------------------------------------------------------------------


def default_tests_dir() -> Path | None:
    """The ``tests/`` of the source checkout the package is imported from, or None (an installed package)."""
    import neural_memory

    candidate = Path(neural_memory.__file__).resolve().parents[2] / "tests"
    return candidate if candidate.is_dir() else None


class TestCollection:
    """A running ``pytest --collect-only`` over ``tests_dir``; :meth:`wait` returns its :class:`TestMap`.

    A fresh interpreter is used so that collection works inside a running pytest session (our own tests)
    and never touches the caller's imported modules. Started early so it overlaps with discovery.
    """

    __test__ = False

    def __init__(self, tests_dir: Path) -> None:
        self.tests_dir = tests_dir
        self._tmp = tempfile.TemporaryDirectory(prefix="neural-memory-collect-")
        self._out = Path(self._tmp.name) / "equations.json"
        self._stderr = (Path(self._tmp.name) / "stderr.txt").open("w+", encoding="utf-8")
        command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
        command += ["-p", "neural_memory.registry._pytest_collect", "--equation-map-out", str(self._out)]
        self._proc = subprocess.Popen(
            [*command, str(tests_dir)],
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            env=_collection_env(),
            cwd=tests_dir,
        )

    def wait(self) -> TestMap:
        try:
            self._proc.wait(timeout=COLLECT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.cancel()
            error = f"pytest collection timed out after {COLLECT_TIMEOUT_S} s"
            return TestMap(errors=[error], tests_dir=self.tests_dir)
        try:
            if not self._out.exists():
                self._stderr.seek(0)
                tail = " | ".join(self._stderr.read().strip().splitlines()[-3:]) or "no output"
                error = f"pytest collection failed (exit {self._proc.returncode}): {tail}"
                return TestMap(errors=[error], tests_dir=self.tests_dir)
            return parse_collection(json.loads(self._out.read_text("utf-8")), self.tests_dir)
        finally:
            self._cleanup()

    def cancel(self) -> None:
        """Stop the collection (e.g. discovery failed) and remove its temporary files."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        self._stderr.close()
        self._tmp.cleanup()


def _collection_env() -> dict[str, str]:
    import neural_memory

    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    # The subprocess must import this very copy of the package (a source checkout need not be installed).
    src = str(Path(neural_memory.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def parse_collection(data: Mapping, tests_dir: Path | None = None) -> TestMap:
    """Turn the plugin's JSON (see :mod:`neural_memory.registry._pytest_collect`) into a :class:`TestMap`."""
    from neural_memory.registry import normalise_number

    tests: dict[Key, list[str]] = {}
    for item in data["items"]:
        for paper, number in item["equations"]:
            try:
                number = normalise_number(number)
            except TypeError:
                number = str(number)
            cited = tests.setdefault((paper, number), [])
            if item["nodeid"] not in cited:
                cited.append(item["nodeid"])
    errors = [f"{e['nodeid']}: {e['message']}" for e in data.get("errors", [])]
    return TestMap(tests=tests, errors=errors, tests_dir=tests_dir)


def collect_test_map(tests_dir: Path | None) -> TestMap:
    """Equation markers of every test under ``tests_dir`` (an empty map when there is no tests dir)."""
    if tests_dir is None:
        return TestMap()
    return TestCollection(tests_dir).wait()


# ---------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------


def summary_line(paper: str, counts: Mapping[str, int]) -> str:
    parts = ", ".join(f"{counts[s]} {s}" for s in STATUSES)
    return f"{PAPER_TITLES[paper][0]} ({_arxiv(paper)}): {counts['total']} equations: {parts}"


def _heading(paper: str) -> str:
    meta = paper_meta(paper)
    return f"{PAPER_TITLES[paper][0]}: {meta['title']} ({_arxiv(paper)}, {meta['version_date']})"


def _arxiv(paper: str) -> str:
    meta = paper_meta(paper)
    return f"arXiv:{meta['arxiv']}{meta['version']}"


def _status_text(row: Row, mutation: bool = True) -> str:
    text = f"n/a: {row.na}" if row.status == "n/a" else row.status
    return f"{text}; {row.mutation.text()}" if mutation and row.mutation is not None else text


def render_plain(rows: Sequence[Row], summary: Mapping[str, Mapping[str, int]]) -> str:
    """Aligned plain-text tables (no escape codes), one per paper, each followed by its summary line."""
    header = ("Eq.", "Name", "Kind", "Implemented by", "Tested by", "Status")
    out: list[str] = []
    for paper in summary:
        cells = [_plain_cells(r) for r in rows if r.paper == paper]
        widths = [max([len(h)] + [len(line) for c in cells for line in c[i]]) for i, h in enumerate(header)]
        out += [
            _heading(paper),
            "",
            _plain_line(header, widths),
            _plain_line(["-" * w for w in widths], widths),
        ]
        for c in cells:
            height = max(len(col) for col in c)
            for j in range(height):
                out.append(_plain_line([col[j] if j < len(col) else "" for col in c], widths))
        out += ["", summary_line(paper, summary[paper]), ""]
    return "\n".join(out)


def _plain_cells(row: Row) -> tuple[list[str], ...]:
    """The lines of each cell of a plain-text row (several implementers / tests go one per line)."""
    impl, tested = list(row.implemented_by) or ["-"], list(row.tested_by) or ["-"]
    return [str(row.number)], [row.name], [row.kind], impl, tested, [_status_text(row)]


def _plain_line(values: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()


_STATUS_STYLE = {
    "verified": "green",
    "implemented": "yellow",
    "tested": "cyan",
    "missing": "red",
    "n/a": "dim",
}


def render_rich(rows: Sequence[Row], summary: Mapping[str, Mapping[str, int]], file: TextIO) -> None:
    """Colour tables for a terminal."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file)
    for paper in summary:
        table = Table(title=_heading(paper), title_justify="left", show_lines=False)
        table.add_column("Eq.", justify="right", no_wrap=True)
        table.add_column("Name")
        table.add_column("Kind", no_wrap=True)
        table.add_column("Implemented by", overflow="fold")
        table.add_column("Tested by", overflow="fold")
        table.add_column("Status")
        for r in rows:
            if r.paper != paper:
                continue
            table.add_row(
                str(r.number),
                r.name,
                r.kind,
                "\n".join(r.implemented_by) or "—",
                "\n".join(r.tested_by) or "—",
                f"[{_STATUS_STYLE[r.status]}]{_status_text(r)}[/]",
            )
        console.print(table, markup=True)
        console.print(summary_line(paper, summary[paper]), markup=False, highlight=False)
        console.print()


def render_markdown(rows: Sequence[Row], summary: Mapping[str, Mapping[str, int]]) -> str:
    """GitHub markdown: a summary table, then one collapsible table per paper (for the README)."""
    out = [
        "<!-- generated by `neural-memory equations --markdown` (scripts/update_readme.py); do not edit -->",
        "",
        "| Paper | Version | Total | Verified | Implemented | Tested | Missing | n/a |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for paper, counts in summary.items():
        meta = paper_meta(paper)
        version = f"[arXiv:{meta['arxiv']}{meta['version']}](https://arxiv.org/abs/{meta['arxiv']}{meta['version']})"
        numbers = " | ".join(str(counts[k]) for k in ("total", *STATUSES))
        out.append(f"| {PAPER_TITLES[paper][0]} | {version} | {numbers} |")
    for paper, counts in summary.items():
        short = PAPER_TITLES[paper][0]
        out += [
            "",
            "<details>",
            f"<summary><b>{short}</b>: {counts['total']} equations, {counts['verified']} verified</summary>",
            "",
            "| Eq. | Name | Kind | Status | Implemented by |",
            "|--:|---|---|---|---|",
        ]
        for r in rows:
            if r.paper == paper:
                impl = "<br>".join(f"`{_md(w)}`" for w in r.implemented_by)
                status = _md(_status_text(r, mutation=False))
                out.append(f"| {r.number} | {_md(r.name)} | {r.kind} | {status} | {impl} |")
        out += ["", "</details>"]
    return "\n".join(out) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def to_json(
    rows: Sequence[Row],
    summary: Mapping[str, Mapping[str, int]],
    problems: Sequence[Problem],
    tests_dir: Path | None,
    source: Mapping | None = None,
) -> dict:
    """The ``--json`` document; ``source`` describes where the statuses come from (:func:`status_source`)."""
    papers = {}
    for paper, counts in summary.items():
        meta = paper_meta(paper)
        papers[paper] = {
            "title": meta["title"],
            "arxiv": meta["arxiv"],
            "version": meta["version"],
            "version_date": meta["version_date"],
            **counts,
        }
    equations = [
        {
            "paper": r.paper,
            "number": r.number,
            "name": r.name,
            "section": r.section,
            "kind": r.kind,
            "status": r.status,
            "implemented_by": list(r.implemented_by),
            "tested_by": list(r.tested_by),
            "verified_by": {where: list(tests) for where, tests in r.verified_by},
            "na": r.na,
            "mutation": None if r.mutation is None else dataclasses.asdict(r.mutation),
        }
        for r in rows
    ]
    return {
        "papers": papers,
        "equations": equations,
        "problems": [p.message for p in problems],
        "tests_dir": str(tests_dir) if tests_dir else None,
        "status_source": source,
    }


# ---------------------------------------------------------------------------------------------------
# Entry point used by ``neural-memory equations``
# ---------------------------------------------------------------------------------------------------


def run(
    paper: str | None = None,
    output: str = "table",
    check: bool = False,
    tests_dir: Path | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    implementations: Mapping[Key, Sequence[str]] | None = None,
    test_map: TestMap | None = None,
    status: RunStatus | Literal["file"] | None = "file",
) -> int:
    """Print the report; with ``check``, return 1 if :func:`find_problems` finds anything.

    ``output`` is ``"table"`` (rich in a terminal, plain otherwise), ``"json"`` or ``"markdown"``.
    ``tests_dir=None`` uses :func:`default_tests_dir`; when there is none (an installed package), the
    report shows the statuses shipped in the status file, and ``check`` returns 2 (it needs the tests).
    ``implementations`` overrides discovery, ``test_map`` collection and ``status`` the status file
    (``"file"`` reads :func:`neural_memory.registry.status.default_path`; None: no recorded run).
    """
    from neural_memory.registry import discover_implementations, load_registry

    out = out or sys.stdout
    err = err or sys.stderr
    if paper is not None and paper not in PAPERS:
        raise ValueError(f"paper must be one of {PAPERS}, got {paper!r}")
    if status == "file":
        status = status_file.load_status()
    if test_map is None:
        tests_dir = tests_dir if tests_dir is not None else default_tests_dir()
        collection = TestCollection(tests_dir) if tests_dir is not None else None
    else:
        tests_dir, collection = test_map.tests_dir, None
    shipped = tests_dir is None and test_map is None
    if shipped and check:
        print(
            "neural-memory equations --check needs the repository: it re-reads the tests' markers and "
            "compares them with the code (run it in a source checkout, or pass --tests PATH)",
            file=err,
        )
        return 2
    if implementations is None:
        try:
            implementations = discover_implementations()
        except BaseException:
            if collection is not None:
                collection.cancel()
            raise
    if collection is not None:
        test_map = collection.wait()
    elif test_map is None:
        test_map = TestMap(tests=_tests_of(status))

    registry = load_registry()
    root = tests_dir.resolve().parent if tests_dir is not None else None
    mutation = load_mutation_scores(root / MUTATION_REPORT, root) if root is not None else {}
    rows = build_rows(registry, implementations, test_map.tests, paper, status, mutation)
    summary = summarise(rows)
    source = status_source(status, tests_dir, shipped)
    problems = (
        [] if shipped else find_problems(registry, implementations, test_map.tests, test_map.errors, status)
    )
    if source["stale"]:
        message = f"stale status file: the package or the tests changed since the {status.describe()}"
        problems.insert(0, Problem(None, f"{message}; run the whole test suite again"))
    problems = [p for p in problems if paper is None or p.paper in (None, paper) or p.paper not in PAPERS]

    if output == "json":
        json.dump(to_json(rows, summary, problems, tests_dir, source), out, indent=2)
        out.write("\n")
    elif output == "markdown":
        out.write(render_markdown(rows, summary))
    elif _is_terminal(out):
        render_rich(rows, summary, out)
    else:
        out.write(render_plain(rows, summary))
    print(f"statuses: {source['note']}", file=out if output == "table" else err)

    if not check:
        if problems:
            print(f"note: {len(problems)} problem(s); `neural-memory equations --check` lists them", file=err)
        return 0
    stream = out if output == "table" else err  # keep --json / --markdown output parseable
    for problem in problems:
        print(f"problem: {problem.message}", file=stream)
    verdict = f"check failed: {len(problems)} problem(s)" if problems else "check passed: no problems"
    print(verdict, file=stream)
    return 1 if problems else 0


def status_source(status: RunStatus | None, tests_dir: Path | None, shipped: bool) -> dict:
    """Where the statuses come from: the status file's path and run, whether it is stale, a note to print."""
    if status is None:
        where = status_file.default_path()
        note = f"no recorded test run ({where} does not exist): nothing counts as verified"
        if not shipped:
            note += "; run the whole test suite (python3 dev.py test) to record one"
        return {"path": None, "run": None, "shipped": shipped, "stale": False, "note": note}
    note = status.describe() + (f" ({status.path})" if status.path else "")
    stale = False
    if shipped:
        note = f"recorded by the {note}, shipped with this package; no tests here to re-read"
    else:
        digest = status_file.source_digest(status_file.package_dir(), tests_dir)
        stale = "digest" in status.run and digest != status.run["digest"]
        note = f"recorded by the {note}"
        if stale:
            note += "; STALE: the package or the tests changed since, run the whole test suite again"
    path = str(status.path) if status.path else None
    return {"path": path, "run": status.run, "shipped": shipped, "stale": stale, "note": note}


def _tests_of(status: RunStatus | None) -> dict[Key, list[str]]:
    """The marked tests a status file names, one entry per test function (parameters dropped)."""
    if status is None:
        return {}
    return {key: sorted({nodeid.split("[")[0] for nodeid in ran}) for key, ran in status.tests.items()}


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
