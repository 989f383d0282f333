"""``neural-memory equations``: statuses on synthetic inputs, pytest collection, output formats, README."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import sys
import textwrap
from pathlib import Path

import pytest

from neural_memory.registry import Equation, load_registry, report
from neural_memory.registry.report import (
    STATUSES,
    Problem,
    build_rows,
    collect_test_map,
    find_problems,
    parse_collection,
    render_markdown,
    render_plain,
    status_of,
    summarise,
)
from neural_memory.registry.status import RunStatus

REPO = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[")


def _eq(number, kind="implement", na=None, paper="titans"):
    return Equation(paper, number, f"eq {number}", "§1", kind, "x = y", "high", na)


SYNTHETIC = {
    eq.key: eq
    for eq in (
        _eq(1),  # implemented, tested, verified by the run
        _eq(2),  # implemented only: a --check failure
        _eq(3, kind="derivation"),  # tested only
        _eq(4),  # nothing
        _eq(5, na="covered by Eq. 1"),  # n/a
        _eq(6, kind="background"),  # implemented only: a --check failure too (any kind needs a test)
    )
}
CLAIMS = {("titans", 1): ["m:f"], ("titans", 2): ["m:g"], ("titans", 6): ["m:h"]}
TESTS = {("titans", 1): ["t.py::a"], ("titans", 3): ["t.py::b"], ("titans", 5): ["t.py::c"]}
RUN = RunStatus(
    run={"date": "2026-11-28T12:00:00Z", "commit": "0123456789abcdef", "tests": 3},
    verified_by={("titans", 1): {"m:f": ["t.py::a"]}},
    tests={("titans", 1): {"t.py::a": "passed"}, ("titans", 3): {"t.py::b": "passed"}},
)


def _run(**verified: list[str]) -> RunStatus:
    """A recorded run in which test ``t.py::<claim>`` passed and executed each claim of each equation."""
    by_key = {("titans", int(n[1:])): {w: [f"t.py::{w}"] for w in claims} for n, claims in verified.items()}
    return RunStatus(run={"date": "d"}, verified_by=by_key, tests={})


def _write_tests(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test_marked.py").write_text(textwrap.dedent(body), "utf-8")
    return folder


# ---------------------------------------------------------------------------------------------------
# Pure logic
# ---------------------------------------------------------------------------------------------------


def test_statuses_on_synthetic_inputs():
    rows = build_rows(SYNTHETIC, CLAIMS, TESTS, status=RUN)
    assert [(r.number, r.status) for r in rows] == [
        (1, "verified"),
        (2, "implemented"),
        (3, "tested"),
        (4, "missing"),
        (5, "n/a"),
        (6, "implemented"),
    ]
    assert rows[0].implemented_by == ("m:f",) and rows[0].tested_by == ("t.py::a",)
    assert rows[0].verified_by == (("m:f", ("t.py::a",)),)
    assert rows[4].na == "covered by Eq. 1"


def test_nothing_is_verified_without_a_recorded_run():
    rows = build_rows(SYNTHETIC, CLAIMS, TESTS, status=None)
    assert [r.status for r in rows] == [
        "implemented",
        "implemented",
        "tested",
        "missing",
        "n/a",
        "implemented",
    ]


def test_verified_needs_every_claim_of_the_equation_verified():
    eq = _eq(1)
    assert status_of(eq, ["m:f", "m:g"], ["t.py::a"], verified=["m:f", "m:g"]) == "verified"
    assert status_of(eq, ["m:f", "m:g"], ["t.py::a"], verified=["m:f"]) == "implemented"
    assert status_of(eq, [], ["t.py::a"], verified=["m:f"]) == "tested"
    rows = build_rows({eq.key: eq}, {eq.key: ["m:f", "m:g"]}, {eq.key: ["t.py::a"]}, status=_run(n1=["m:f"]))
    assert rows[0].status == "implemented" and rows[0].verified_by == (("m:f", ("t.py::m:f",)),)


def test_na_wins_over_claims():
    assert status_of(_eq(5, na="reason"), ["m:f"], ["t.py::a"]) == "n/a"


def test_summary_counts_every_status():
    counts = summarise(build_rows(SYNTHETIC, CLAIMS, TESTS, status=RUN))
    assert counts == {
        "titans": {"total": 6, "verified": 1, "implemented": 2, "tested": 1, "missing": 1, "n/a": 1}
    }


def test_rows_are_filtered_by_paper():
    registry = {**SYNTHETIC, ("miras", 1): _eq(1, paper="miras")}
    assert [r.paper for r in build_rows(registry, {}, {}, paper="miras")] == ["miras"]


def test_problems_on_synthetic_inputs():
    claims = {**CLAIMS, ("titans", 5): ["m:na"], ("titans", 98): ["m:ghost"]}
    tests = {**TESTS, ("titans", 99): ["t.py::ghost"], ("bogus", 1): ["t.py::bogus"]}
    problems = find_problems(SYNTHETIC, claims, tests, ["t_broken.py: ImportError"], status=RUN)
    messages = [p.message for p in problems]
    assert messages[0] == "test collection: t_broken.py: ImportError"
    assert any("Titans Eq. 98 is not in the registry (implemented by m:ghost)" in m for m in messages)
    assert any("Titans Eq. 99 is not in the registry (cited by test t.py::ghost)" in m for m in messages)
    assert any("'bogus' Eq. 1 is not in the registry" in m for m in messages)
    assert any("Titans Eq. 5 is marked n/a (covered by Eq. 1) but implemented by m:na" in m for m in messages)
    assert any("Titans Eq. 2 is implemented by m:g but no test" in m for m in messages)
    assert any("Titans Eq. 6 is implemented by m:h but no test" in m for m in messages)  # background too
    assert not any(f"Titans Eq. {n} " in m for n in (1, 3, 4) for m in messages)
    assert len(problems) == 7
    assert problems[0] == Problem(None, "test collection: t_broken.py: ImportError")


def test_no_problems_when_everything_is_covered():
    assert find_problems(SYNTHETIC, {("titans", 1): ["m:f"]}, TESTS, status=RUN) == []


def test_a_claim_the_run_did_not_verify_is_a_problem_whatever_the_kind():
    registry = {eq.key: eq for eq in (_eq(1), _eq(2, kind="definition"))}
    claims = {("titans", 1): ["m:f", "m:g"], ("titans", 2): ["m:d"]}
    tests = {("titans", 1): ["t.py::a"], ("titans", 2): ["t.py::d"]}
    run = RunStatus(
        run={},
        verified_by={("titans", 1): {"m:f": ["t.py::a"]}},
        tests={("titans", 1): {"t.py::a": "passed"}, ("titans", 2): {"t.py::d": "skipped"}},
    )
    messages = [p.message for p in find_problems(registry, claims, tests, status=run)]
    assert messages == [
        "Titans Eq. 1: no passing test marked equation('titans', 1) executed m:g in the recorded run "
        "(marked tests in the run: t.py::a (passed))",
        "Titans Eq. 2: no passing test marked equation('titans', 2) executed m:d in the recorded run "
        "(marked tests in the run: t.py::d (skipped))",
    ]


def test_without_a_recorded_run_check_says_so_once():
    messages = [p.message for p in find_problems(SYNTHETIC, {("titans", 1): ["m:f"]}, TESTS, status=None)]
    assert len(messages) == 1 and messages[0].startswith("no recorded test run (")
    assert "python3 dev.py test" in messages[0]
    assert find_problems(SYNTHETIC, {}, TESTS, status=None) == []  # nothing claimed, nothing to verify


def test_parse_collection_normalises_numbers():
    data = {
        "items": [
            {"nodeid": "a.py::t", "equations": [["titans", "13"], ["miras", "FTRL-VP"]]},
            {"nodeid": "b.py::t", "equations": [["titans", 13], ["titans", "1.5"]]},
        ],
        "errors": [{"nodeid": "c.py", "message": "E   SyntaxError"}],
    }
    test_map = parse_collection(data)
    assert test_map.tests == {
        ("titans", 13): ["a.py::t", "b.py::t"],
        ("miras", "FTRL-VP"): ["a.py::t"],
        ("titans", "1.5"): ["b.py::t"],
    }
    assert test_map.errors == ["c.py: E   SyntaxError"]


# ---------------------------------------------------------------------------------------------------
# Collection through pytest (subprocess)
# ---------------------------------------------------------------------------------------------------

MARKED_TESTS = """\
    import pytest
    from pathlib import Path

    @pytest.mark.equation("titans", 8)
    @pytest.mark.parametrize("x", [1, 2])
    def test_eq8(x):
        Path(__file__).with_name("RAN").write_text("collection ran a test")

    @pytest.mark.equation("titans", 99)
    def test_unknown():
        pass

    class TestNamed:
        @pytest.mark.equation("miras", "FTRL-VP")
        def test_inside(self):
            pass

    @pytest.mark.parametrize(
        "case",
        [pytest.param(1, marks=pytest.mark.equation("titans", 9)), pytest.param(2)],
    )
    def test_cases(case):
        pass

    def test_unmarked():
        pass
"""


@pytest.fixture(scope="module")
def marked_map(tmp_path_factory):
    """MARKED_TESTS collected once (a pytest subprocess) for the output-format tests."""
    return collect_test_map(_write_tests(tmp_path_factory.mktemp("marked") / "tests", MARKED_TESTS))


def test_collection_reads_markers_without_running_tests(tmp_path):
    tests_dir = _write_tests(tmp_path / "tests", MARKED_TESTS)
    test_map = collect_test_map(tests_dir)
    assert test_map.errors == []
    assert test_map.tests == {
        ("titans", 8): ["test_marked.py::test_eq8"],  # parametrised cases collapse
        ("titans", 99): ["test_marked.py::test_unknown"],
        ("miras", "FTRL-VP"): ["test_marked.py::TestNamed::test_inside"],
        ("titans", 9): ["test_marked.py::test_cases"],  # its first case names Eq. 9
    }
    assert not (tests_dir / "RAN").exists()


def test_collection_reports_module_and_class_markers_as_errors(tmp_path):
    tests_dir = _write_tests(
        tmp_path / "tests",
        """\
        import pytest

        pytestmark = pytest.mark.equation("titans", 8)

        @pytest.mark.equation("titans", 9)
        class TestAll:
            def test_x(self):
                pass
        """,
    )
    test_map = collect_test_map(tests_dir)
    assert test_map.tests == {}
    assert test_map.errors == [
        "test_marked.py: equation marker on the module (pytestmark): equation('titans', 8). Equation markers "
        "go on test functions, one per equation, so that only the tests that check an equation count for it."
    ]


def test_collection_reports_a_broken_test_file(tmp_path):
    tests_dir = _write_tests(tmp_path / "tests", MARKED_TESTS)
    (tests_dir / "test_broken.py").write_text("import a_module_that_does_not_exist\n", "utf-8")
    test_map = collect_test_map(tests_dir)
    assert ("titans", 8) in test_map.tests
    assert len(test_map.errors) == 1 and "test_broken.py" in test_map.errors[0]
    assert "a_module_that_does_not_exist" in test_map.errors[0]


def test_a_failed_pytest_run_is_an_error_not_an_empty_map(tmp_path):
    tests_dir = _write_tests(tmp_path / "tests", MARKED_TESTS)
    (tests_dir / "conftest.py").write_text('raise RuntimeError("conftest is broken")\n', "utf-8")
    test_map = collect_test_map(tests_dir)
    assert test_map.tests == {}
    assert len(test_map.errors) == 1
    assert test_map.errors[0].startswith("pytest collection failed (exit 4)")
    assert "conftest is broken" in test_map.errors[0]


def test_default_tests_dir_is_the_repository_tests_folder():
    assert report.default_tests_dir() == REPO / "tests"


def test_check_fails_on_an_unknown_citation(tmp_path):
    tests_dir = _write_tests(tmp_path / "tests", MARKED_TESTS)
    out = io.StringIO()
    code = report.run(
        check=True, tests_dir=tests_dir, out=out, err=io.StringIO(), implementations={}, status=None
    )
    assert code == 1
    assert (
        "Titans Eq. 99 is not in the registry (cited by test test_marked.py::test_unknown)" in out.getvalue()
    )
    assert "check failed: 1 problem(s)" in out.getvalue()


def test_check_fails_on_an_uncovered_implement_claim(tmp_path):
    tests_dir = _write_tests(
        tmp_path / "tests", '@__import__("pytest").mark.equation("titans", 8)\ndef test_8(): pass\n'
    )
    claims = {("titans", 8): ["fake.module:covered"], ("titans", 12): ["fake.module:uncovered"]}
    run = _run(n8=["fake.module:covered"])
    out = io.StringIO()
    kwargs = {"check": True, "tests_dir": tests_dir, "err": io.StringIO(), "status": run}
    assert report.run(out=out, implementations=claims, **kwargs) == 1
    assert "Titans Eq. 12 is implemented by fake.module:uncovered but no test" in out.getvalue()
    assert "Eq. 8 " not in out.getvalue()

    out = io.StringIO()
    claims = {("titans", 8): ["fake.module:covered"]}
    assert report.run(out=out, implementations=claims, **kwargs) == 0
    assert "check passed" in out.getvalue()

    out = io.StringIO()  # the same claim, but the recorded run did not execute it
    assert report.run(out=out, implementations=claims, **{**kwargs, "status": _run()}) == 1
    assert "Titans Eq. 8: no passing test marked equation('titans', 8) executed fake.module:covered" in (
        out.getvalue()
    )


def test_check_fails_on_an_implemented_na_equation(tmp_path, monkeypatch):
    registry = dict(load_registry())
    registry[("titans", 6)] = Equation(**{**registry[("titans", 6)].__dict__, "na": "interface only"})
    monkeypatch.setattr("neural_memory.registry.load_registry", lambda: registry)
    tests_dir = _write_tests(tmp_path / "tests", "def test_nothing(): pass\n")
    out = io.StringIO()
    code = report.run(
        paper="titans",
        check=True,
        tests_dir=tests_dir,
        out=out,
        err=io.StringIO(),
        implementations={("titans", 6): ["m:f"]},
        status=None,
    )
    assert code == 1
    assert "Titans Eq. 6 is marked n/a (interface only) but implemented by m:f" in out.getvalue()
    assert "n/a: interface only" in out.getvalue()


def test_an_installed_package_shows_the_shipped_statuses_and_no_problems(monkeypatch):
    monkeypatch.setattr(report, "default_tests_dir", lambda: None)
    shipped = RunStatus(
        run={"date": "2026-11-28T12:00:00Z", "commit": "0123456789abcdef", "tests": 9, "digest": "x"},
        verified_by={("titans", 8): {"m:f": ["tests/t.py::test_a[1]"]}},
        tests={("titans", 8): {"tests/t.py::test_a[1]": "passed", "tests/t.py::test_a[2]": "passed"}},
        path=Path("/site-packages/neural_memory/registry/data/status.json"),
    )
    out, err = io.StringIO(), io.StringIO()
    claims = {("titans", 8): ["m:f"], ("titans", 9): ["m:g"]}
    assert report.run(output="json", out=out, err=err, implementations=claims, status=shipped) == 0
    data = json.loads(out.getvalue())
    assert data["tests_dir"] is None and data["problems"] == []
    assert data["status_source"]["shipped"] and not data["status_source"]["stale"]
    assert "shipped with this package" in err.getvalue() and "2026-11-28T12:00:00Z" in err.getvalue()
    assert "commit 0123456789ab" in err.getvalue()
    assert "problem" not in err.getvalue()
    eq8 = next(eq for eq in data["equations"] if (eq["paper"], eq["number"]) == ("titans", 8))
    assert eq8["status"] == "verified" and eq8["tested_by"] == ["tests/t.py::test_a"]
    assert data["papers"]["titans"]["verified"] == 1 and data["papers"]["titans"]["implemented"] == 1


def test_check_of_an_installed_package_needs_the_repository(monkeypatch):
    monkeypatch.setattr(report, "default_tests_dir", lambda: None)
    out, err = io.StringIO(), io.StringIO()
    assert report.run(check=True, out=out, err=err, implementations={}, status=None) == 2
    assert "--check needs the repository" in err.getvalue() and out.getvalue() == ""


def test_statuses_say_where_they_come_from(marked_map):
    out = io.StringIO()
    report.run(
        paper="titans", out=out, err=io.StringIO(), implementations={}, test_map=marked_map, status=RUN
    )
    assert out.getvalue().splitlines()[-1] == (
        "statuses: recorded by the test run of 2026-11-28T12:00:00Z, commit 0123456789ab, 3 tests, "
        "python ?, torch ?"
    )
    out = io.StringIO()
    report.run(
        paper="titans", out=out, err=io.StringIO(), implementations={}, test_map=marked_map, status=None
    )
    assert out.getvalue().splitlines()[-1].startswith("statuses: no recorded test run (")


def test_a_status_file_older_than_the_code_is_a_problem(tmp_path):
    tests_dir = _write_tests(tmp_path / "tests", "def test_nothing(): pass\n")
    stale = RunStatus(run={"date": "d", "digest": "0" * 64}, path=tmp_path / "status.json")
    out = io.StringIO()
    code = report.run(
        check=True, tests_dir=tests_dir, out=out, err=io.StringIO(), implementations={}, status=stale
    )
    assert code == 1
    assert "STALE: the package or the tests changed since, run the whole test suite again" in out.getvalue()
    assert "problem: stale status file: the package or the tests changed since the test run of d" in (
        out.getvalue()
    )
    assert "check failed: 1 problem(s)" in out.getvalue()


# ---------------------------------------------------------------------------------------------------
# Output formats
# ---------------------------------------------------------------------------------------------------


def test_json_schema(marked_map):
    out = io.StringIO()
    claims = {("titans", 8): ["m:f"]}
    run = _run(n8=["m:f"])
    report.run(
        output="json", out=out, err=io.StringIO(), implementations=claims, test_map=marked_map, status=run
    )
    data = json.loads(out.getvalue())
    assert set(data) == {"papers", "equations", "problems", "tests_dir", "status_source"}
    assert list(data["papers"]) == ["titans", "miras", "nl"]
    for paper in data["papers"].values():
        assert set(paper) == {"title", "arxiv", "version", "version_date", "total", *STATUSES}
    assert data["papers"]["titans"]["total"] == 35 and data["papers"]["titans"]["verified"] == 1
    eq8 = next(eq for eq in data["equations"] if (eq["paper"], eq["number"]) == ("titans", 8))
    assert set(eq8) == {
        "paper",
        "number",
        "name",
        "section",
        "kind",
        "status",
        "implemented_by",
        "tested_by",
        "verified_by",
        "na",
        "mutation",
    }
    assert eq8["mutation"] is None  # the synthetic tests directory has no mutation report beside it
    assert eq8["status"] == "verified" and eq8["tested_by"] == ["test_marked.py::test_eq8"]
    assert eq8["verified_by"] == {"m:f": ["t.py::m:f"]}
    assert len(data["equations"]) == 35 + 38 + 121
    assert any("Titans Eq. 99" in p for p in data["problems"])


def test_plain_table_is_aligned_and_has_no_escape_codes():
    rows = build_rows(
        SYNTHETIC, {**CLAIMS, ("titans", 1): ["m:f", "m:f2"]}, TESTS, status=_run(n1=["m:f", "m:f2"])
    )
    text = render_plain(rows, summarise(rows))
    assert not ANSI.search(text)
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("Eq."))
    status_col = header.index("Status")
    body = lines[lines.index(header) + 2 : lines.index(header) + 2 + 7]  # 6 rows, one with 2 lines
    assert body[1].strip() == "m:f2"  # the second implementer continues on its own line
    for line in (body[0], *body[2:]):
        assert line[status_col:].split()[0] in (*STATUSES, "n/a:")
    assert (
        "Titans (arXiv:2501.00663v1): 6 equations: 1 verified, 2 implemented, 1 tested, 1 missing, 1 n/a"
        in text
    )


def test_run_prints_plain_text_when_not_a_terminal(marked_map):
    out = io.StringIO()
    kwargs = {"implementations": {}, "test_map": marked_map, "status": None}
    assert report.run(paper="miras", out=out, err=io.StringIO(), **kwargs) == 0
    text = out.getvalue()
    assert not ANSI.search(text)
    assert (
        "MIRAS (arXiv:2504.13173v1): 38 equations: 0 verified, 0 implemented, 1 tested, 37 missing, 0 n/a"
        in text
    )
    assert "Titans" not in text


def test_rich_table_for_a_terminal(marked_map):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    out = Terminal()
    kwargs = {"implementations": {}, "test_map": marked_map, "status": None}
    assert report.run(paper="titans", out=out, err=io.StringIO(), **kwargs) == 0
    assert "┃" in out.getvalue() or "|" in out.getvalue()
    assert "Titans (arXiv:2501.00663v1): 35 equations" in out.getvalue()


def test_markdown_tables():
    claims = {**CLAIMS, ("titans", 3): ["pkg.mod:a|b"]}
    rows = build_rows(SYNTHETIC, claims, TESTS, status=_run(n1=["m:f"], n3=["pkg.mod:a|b"]))
    text = render_markdown(rows, summarise(rows))
    lines = text.splitlines()
    assert "| Paper | Version | Total | Verified | Implemented | Tested | Missing | n/a |" in lines
    assert (
        "| Titans | [arXiv:2501.00663v1](https://arxiv.org/abs/2501.00663v1) | 6 | 2 | 2 | 0 | 1 | 1 |"
        in lines
    )
    assert "| Eq. | Name | Kind | Status | Implemented by |" in lines
    assert "| 1 | eq 1 | implement | verified | `m:f` |" in lines
    assert "| 3 | eq 3 | derivation | verified | `pkg.mod:a\\|b` |" in lines
    assert "| 5 | eq 5 | implement | n/a: covered by Eq. 1 |  |" in lines
    assert text.count("<details>") == text.count("</details>") == 1


# ---------------------------------------------------------------------------------------------------
# scripts/update_readme.py
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def update_readme():
    spec = importlib.util.spec_from_file_location("update_readme", REPO / "scripts" / "update_readme.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["update_readme"] = module
    spec.loader.exec_module(module)
    return module


def test_splice_replaces_only_the_marked_block(update_readme):
    readme = "# T\n\nbefore\n<!-- equations:start -->\nold\n<!-- equations:end -->\nafter\n"
    new = update_readme.splice(readme, "| a |\n")
    assert new == "# T\n\nbefore\n<!-- equations:start -->\n| a |\n<!-- equations:end -->\nafter\n"
    assert update_readme.splice(new, "| a |") == new
    with pytest.raises(ValueError, match="equations:start"):
        update_readme.splice("# no markers\n", "x")
    with pytest.raises(ValueError, match="exactly once"):
        update_readme.splice(readme + readme, "x")


def test_update_readme_check_then_update(update_readme, tmp_path, capsys):
    tests_dir = _write_tests(tmp_path / "tests", MARKED_TESTS)
    readme = tmp_path / "README.md"
    readme.write_text("# Demo\n\n<!-- equations:start -->\nstale\n<!-- equations:end -->\n\nmore\n", "utf-8")
    args = ["--readme", str(readme), "--tests", str(tests_dir)]

    assert update_readme.main([*args, "--check"]) == 1
    assert "-stale" in capsys.readouterr().out
    assert "stale" in readme.read_text("utf-8")  # --check never writes

    assert update_readme.main(args) == 0
    text = readme.read_text("utf-8")
    assert text.startswith("# Demo\n\n<!-- equations:start -->\n<!-- generated by")
    assert text.endswith("</details>\n<!-- equations:end -->\n\nmore\n")
    assert "| 8 | surprise-only gradient update | implement |" in text
    assert update_readme.main([*args, "--check"]) == 0


def test_update_readme_creates_a_missing_readme_and_rejects_one_without_markers(update_readme, tmp_path):
    tests_dir = _write_tests(tmp_path / "tests", "def test_nothing(): pass\n")
    readme = tmp_path / "README.md"
    assert update_readme.main(["--readme", str(readme), "--tests", str(tests_dir)]) == 0
    assert readme.read_text("utf-8").startswith("<!-- equations:start -->\n")
    readme.write_text("# no markers\n", "utf-8")
    assert update_readme.main(["--readme", str(readme), "--tests", str(tests_dir)]) == 1
    assert readme.read_text("utf-8") == "# no markers\n"


# ---------------------------------------------------------------------------------------------------
# Mutation scores (scripts/mutation_report.py's per-equation entries)
# ---------------------------------------------------------------------------------------------------


def _mutation_report(tmp_path: Path, source_text: str, recorded_text: str) -> Path:
    import hashlib

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "m.py").write_text(source_text)
    entry = {
        "paper": "titans",
        "number": 1,
        "killed": 9,
        "tested": 10,
        "score": 0.9,
        "sha256": {"src/m.py": hashlib.sha256(recorded_text.encode()).hexdigest()},
        "not_run": ["n:g"],
    }
    path = tmp_path / "mutation.json"
    path.write_text(json.dumps({"modules": {}, "equations": [entry]}))
    return path


def test_mutation_scores_are_read_per_equation_and_shown_beside_the_status(tmp_path):
    scores = report.load_mutation_scores(_mutation_report(tmp_path, "x = 1\n", "x = 1\n"), tmp_path)
    assert scores == {("titans", 1): report.MutationScore(9, 10, False, ("n:g",))}
    rows = build_rows(SYNTHETIC, CLAIMS, TESTS, status=RUN, mutation=scores)
    row1 = next(r for r in rows if r.number == 1)
    assert row1.mutation == scores[("titans", 1)] and all(r.mutation is None for r in rows if r.number != 1)
    assert "verified; mutation 90 % (9/10)" in render_plain(rows, summarise(rows))
    # the README's markdown keeps the status alone: it changes with the tests, not with each mutation run
    assert "mutation" not in render_markdown(rows, summarise(rows))


def test_a_mutation_score_from_changed_code_is_marked_stale(tmp_path):
    scores = report.load_mutation_scores(_mutation_report(tmp_path, "x = 2\n", "x = 1\n"), tmp_path)
    assert scores[("titans", 1)].stale
    assert scores[("titans", 1)].text() == "mutation 90 % (9/10) STALE"


def test_no_mutation_report_means_no_scores(tmp_path):
    assert report.load_mutation_scores(tmp_path / "absent.json", tmp_path) == {}
