"""pytest plugin: record, in the real test run, which equations are verified; refuse misplaced markers.

Registered by ``tests/conftest.py`` (``pytest_plugins``); also loaded by the marker collection of
``neural-memory equations``. It does three things:

1. **Markers belong to test functions.** An ``equation`` marker on a module (``pytestmark``) or a class is
   a collection error: it would make every test of the module count for the equation. A parametrized
   test may carry a marker per parameter (``pytest.param(..., marks=...)``); markers are read per test
   item, so each case counts only for the equations it names.
2. **Recording.** During the call phase of each test marked with equations, a
   :class:`~neural_memory.registry.recorder.ClaimRecorder` notes which of the objects claiming those
   equations (``@implements``) the test executed. The result travels in the test report's
   ``user_properties``, so under pytest-xdist it reaches the controller with the report.
3. **The status file.** At the end of a run that selected the whole suite (no path arguments other than
   ``testpaths``, no ``-k``/``-m``/``--deselect``/``--lf``) and reported every collected test, the
   controller writes :mod:`neural_memory.registry.status` to ``registry/data/status.json`` of the imported
   package, if that package lies inside the repository under test (``--equation-status PATH`` writes
   elsewhere). A partial run leaves the file alone and says so.

An equation counts as verified for a claiming object when a test marked with it **passed** (not skipped,
not xfail, not an error in setup or teardown) and **executed** that object's code.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from types import CodeType

import pytest

from neural_memory.registry import EquationId, claimed_object, discover_implementations, normalise_number
from neural_memory.registry import status as status_file
from neural_memory.registry.recorder import ClaimRecorder, code_objects

EQUATIONS = "equations"  # user_properties key: [[paper, number], ...] of the test item
RAN = "equation_claims_ran"  # user_properties key: [[paper, number, claim], ...] executed in the call
PARTIAL_OPTIONS = ("keyword", "markexpr", "deselect", "lf", "stepwise")  # options that select a subset


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--equation-status",
        default=None,
        metavar="PATH",
        help="where a whole run writes the equation status file (default: the package's "
        "registry/data/status.json when the package is inside the repository under test)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "equation(paper, number): the test verifies this equation")
    config.pluginmanager.register(StatusRecorder(config), "neural_memory_status_recorder")


# ---------------------------------------------------------------------------------------------------------
# 1. Markers belong to test functions
# ---------------------------------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    report = yield
    if report.passed and isinstance(collector, pytest.Module | pytest.Class):
        misplaced = [m for m in collector.own_markers if m.name == "equation"]
        if misplaced:
            where = "the module (pytestmark)" if isinstance(collector, pytest.Module) else "the class"
            cited = ", ".join(f"equation{tuple(m.args)!r}" for m in misplaced)
            report.outcome = "failed"
            report.longrepr = (
                f"equation marker on {where}: {cited}. Equation markers go on test functions, one per "
                "equation, so that only the tests that check an equation count for it."
            )
            report.result = []
    return report


def item_equations(item: pytest.Item) -> list[tuple[str, EquationId]]:
    """The well-formed ``equation`` markers of one test item, in order, without repeats."""
    keys: list[tuple[str, EquationId]] = []
    for marker in item.iter_markers("equation"):
        if len(marker.args) != 2 or marker.kwargs:
            continue  # malformed: `neural-memory equations --check` reports it
        try:
            key = (str(marker.args[0]), normalise_number(marker.args[1]))
        except TypeError:
            continue
        if key not in keys:
            keys.append(key)
    return keys


# ---------------------------------------------------------------------------------------------------------
# 2. Recording (in every process that runs tests: the only one, or each xdist worker)
# ---------------------------------------------------------------------------------------------------------


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        keys = item_equations(item)
        if keys:
            item.user_properties.append((EQUATIONS, [list(key) for key in keys]))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    keys = tuple(item_equations(item))
    if not keys:
        return (yield)
    with ClaimRecorder(_watched_code(keys)) as recorder:
        try:
            return (yield)
        finally:
            ran = [[*key, where] for key in keys for where in _claims().get(key, ()) if where in recorder.ran]
            item.user_properties.append((RAN, ran))


@cache
def _claims() -> dict[tuple[str, EquationId], list[str]]:
    return discover_implementations()  # imports every claiming module, once per process


@cache
def _watched_code(keys: tuple[tuple[str, EquationId], ...]) -> dict[CodeType, list[str]]:
    """Code object -> names of the claims it belongs to, for every object claiming one of ``keys``."""
    watched: dict[CodeType, list[str]] = {}
    for key in keys:
        for where in _claims().get(key, ()):
            for code in code_objects(claimed_object(where)):
                watched.setdefault(code, []).append(where)
    return watched


# ---------------------------------------------------------------------------------------------------------
# 3. Outcomes and the status file (in the process that sees every report: the only one, or the controller)
# ---------------------------------------------------------------------------------------------------------


class StatusRecorder:
    """Collects the reports of marked tests and writes the status file at the end of a whole run."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.records: dict[str, dict] = {}
        self.finished: set[str] = set()
        self.note: str | None = None

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "teardown":
            self.finished.add(report.nodeid)
        properties = dict(report.user_properties)
        if EQUATIONS not in properties:
            return
        record = self.records.setdefault(
            report.nodeid, {"equations": properties[EQUATIONS], "outcome": None, "ran": []}
        )
        outcome = phase_outcome(report)
        if outcome is not None and record["outcome"] in (None, "passed"):
            record["outcome"] = outcome  # the first bad phase decides; a teardown error spoils a pass
        if report.when == "call":
            record["ran"] = properties.get(RAN, [])

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if hasattr(self.config, "workerinput") or self.config.option.collectonly:
            return  # an xdist worker (the controller writes) or a collection without a run
        reason = self.partial_reason(session, exitstatus)
        path = self.target_path()
        if reason is not None or isinstance(path, str):
            self.note = f"equation status: not written ({reason or path})"
            return
        run = status_file.run_info(self.config.rootpath)
        run.update(tests=len(self.finished), exit_status=int(exitstatus), digest=self.digest())
        records = {nodeid: {**r, "outcome": r["outcome"] or "error"} for nodeid, r in self.records.items()}
        status_file.write_status(path, run, records)
        self.note = f"equation status: wrote {path}"

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.note:
            terminalreporter.write_line(self.note)

    def partial_reason(self, session: pytest.Session, exitstatus: int) -> str | None:
        """Why this run does not describe the whole suite, or None if it does."""
        chosen = [name for name in PARTIAL_OPTIONS if getattr(self.config.option, name, None)]
        if chosen:
            return f"partial run: --{chosen[0]} selects a subset of the tests"
        if self.selected_dirs() != self.suite_dirs():
            return "partial run: not the whole test suite"
        if exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
            return f"the run ended with {pytest.ExitCode(exitstatus).name}"
        if session.testscollected == 0 or len(self.finished) != session.testscollected:
            return f"{len(self.finished)} of {session.testscollected} collected tests reported"
        return None

    def selected_dirs(self) -> list[Path]:
        base = self.config.invocation_params.dir
        return sorted((base / arg).resolve() for arg in self.config.args)

    def suite_dirs(self) -> list[Path]:
        testpaths = self.config.getini("testpaths") or ["."]
        return sorted((self.config.rootpath / p).resolve() for p in testpaths)

    def target_path(self) -> Path | str:
        """Where to write, or why not (a str)."""
        chosen = self.config.getoption("--equation-status")
        if chosen:
            return Path(self.config.invocation_params.dir, chosen)
        path = status_file.default_path()
        if not path.is_relative_to(self.config.rootpath.resolve()):
            return (
                f"neural_memory is imported from {status_file.package_dir()}, outside {self.config.rootpath}"
            )
        return path

    def digest(self) -> str:
        suite = self.suite_dirs()
        return status_file.source_digest(status_file.package_dir(), suite[0] if len(suite) == 1 else None)


def phase_outcome(report: pytest.TestReport) -> str | None:
    """The outcome one phase's report gives the test (None: a passed setup or teardown says nothing)."""
    xfail = hasattr(report, "wasxfail")
    if report.failed:
        return "failed" if report.when == "call" else "error"
    if report.skipped:
        return "xfailed" if xfail else "skipped"
    if report.when == "call":
        return "xpassed" if xfail else "passed"
    return None
