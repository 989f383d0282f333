"""What "verified" means: a marked test that ran, passed and executed the claimed code (issue 8 §1).

The pytest plugin (neural_memory.registry.pytest_plugin) runs here on a tiny synthetic project: a module of
claimed functions and a class, and one test per situation, each marked with its own equation. pytest runs
in a subprocess (its own interpreter), so the synthetic claims never mix with the package's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import neural_memory
from neural_memory.registry import load_registry
from neural_memory.registry.recorder import ClaimRecorder, code_objects
from neural_memory.registry.report import build_rows, find_problems
from neural_memory.registry.status import RunStatus, load_status

SRC = Path(neural_memory.__file__).resolve().parents[1]

CLAIMS = """\
    from neural_memory.registry import implements


    @implements("titans", 8)
    def surprise(x):
        return x + 1


    @implements("titans", 9)
    def skipped_claim(x):
        return x


    @implements("titans", 10)
    def xfail_claim(x):
        return x


    @implements("titans", 11)
    def never_called(x):
        return x


    @implements("titans", 12)
    class Memory:
        def __init__(self, w):
            self.w = w

        def forward(self, x):
            return self.w * x


    @implements("titans", 13)
    def case_a(x):
        return x


    @implements("titans", 14)
    def case_b(x):
        return x


    @implements("titans", 15)
    def xpass_claim(x):
        return x


    @implements("titans", 16)
    def failing_claim(x):
        return x


    def helper(x):  # claims nothing: a test of it verifies no equation
        return x + 1
"""

TESTS = """\
    import pytest

    import synth


    @pytest.mark.equation("titans", 8)
    def test_passes_and_runs_the_claim():
        assert synth.surprise(1) == 2


    @pytest.mark.skip(reason="skipped on purpose")
    @pytest.mark.equation("titans", 9)
    def test_skipped():
        assert synth.skipped_claim(1) == 1


    @pytest.mark.xfail(reason="fails on purpose")
    @pytest.mark.equation("titans", 10)
    def test_xfail():
        assert synth.xfail_claim(1) == 0


    @pytest.mark.equation("titans", 11)
    def test_8():
        pass


    @pytest.mark.equation("titans", 12)
    def test_class_claim():
        assert synth.Memory(2).forward(3) == 6


    @pytest.mark.parametrize(
        "case",
        [
            pytest.param("a", marks=pytest.mark.equation("titans", 13)),
            pytest.param("b", marks=pytest.mark.equation("titans", 14)),
        ],
    )
    def test_cases(case):
        assert synth.case_a(case) == case  # both cases run Eq. 13's code, neither runs Eq. 14's


    @pytest.mark.xfail(reason="passes, so strict xfail fails it")
    @pytest.mark.equation("titans", 15)
    def test_xpass():
        assert synth.xpass_claim(1) == 1


    @pytest.mark.equation("titans", 16)
    def test_fails():
        assert synth.failing_claim(1) == 0


    @pytest.mark.equation("titans", 8)
    def test_marked_helper():
        assert synth.helper(1) == 2  # Eq. 8 is verified by another test, but not by this one


    def test_unmarked():
        assert synth.surprise(0) == 1
"""

INI = "[pytest]\nxfail_strict = true\n"


def _project(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in {"pytest.ini": INI, **files}.items():
        (root / name).write_text(textwrap.dedent(text), "utf-8")
    return root


def _pytest(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    plugins = ["-p", "no:cacheprovider", "-p", "neural_memory.registry.pytest_plugin"]
    command = [sys.executable, "-m", "pytest", *plugins, *args]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, RunStatus]:
    root = _project(tmp_path_factory.mktemp("synthetic"), {"synth.py": CLAIMS, "test_synth.py": TESTS})
    status_path = root / "status.json"
    result = _pytest(root, "--equation-status", str(status_path))
    status = load_status(status_path)
    assert status is not None, result.stdout + result.stderr
    return root, result, status


def _verified(status: RunStatus, number: int) -> dict[str, list[str]]:
    return status.verified_claims(("titans", number))


def _outcomes(status: RunStatus, number: int) -> dict[str, str]:
    return status.tests.get(("titans", number), {})


def test_the_synthetic_run_fails_on_the_failing_and_the_strict_xpass_test(synthetic):
    _, result, status = synthetic
    assert result.returncode == 1, result.stdout
    assert "2 failed, 7 passed, 1 skipped, 1 xfailed" in result.stdout
    assert f"equation status: wrote {status.path}" in result.stdout


def test_a_passing_marked_test_that_runs_the_claim_verifies(synthetic):
    _, _, status = synthetic
    assert _verified(status, 8) == {"synth:surprise": ["test_synth.py::test_passes_and_runs_the_claim"]}
    assert _outcomes(status, 8) == {
        "test_synth.py::test_marked_helper": "passed",
        "test_synth.py::test_passes_and_runs_the_claim": "passed",
    }


def test_a_skipped_marked_test_does_not_verify(synthetic):
    _, _, status = synthetic
    assert _verified(status, 9) == {}
    assert _outcomes(status, 9) == {"test_synth.py::test_skipped": "skipped"}


def test_an_xfail_marked_test_does_not_verify(synthetic):
    _, _, status = synthetic
    assert _verified(status, 10) == {} and _outcomes(status, 10) == {"test_synth.py::test_xfail": "xfailed"}
    # xfail_strict: the unexpected pass is a failure, and does not verify either
    assert _verified(status, 15) == {} and _outcomes(status, 15) == {"test_synth.py::test_xpass": "failed"}


def test_a_marked_test_that_runs_no_claimed_code_does_not_verify(synthetic):
    _, _, status = synthetic
    assert _verified(status, 11) == {}
    assert _outcomes(status, 11) == {"test_synth.py::test_8": "passed"}


def test_a_failing_marked_test_does_not_verify(synthetic):
    _, _, status = synthetic
    assert _verified(status, 16) == {}
    assert _outcomes(status, 16) == {"test_synth.py::test_fails": "failed"}


def test_a_claimed_class_runs_through_its_methods(synthetic):
    _, _, status = synthetic
    assert _verified(status, 12) == {"synth:Memory": ["test_synth.py::test_class_claim"]}


def test_a_parametrized_case_counts_only_for_the_equation_it_names(synthetic):
    _, _, status = synthetic
    # case b runs Eq. 13's code too, but is marked Eq. 14 only
    assert _verified(status, 13) == {"synth:case_a": ["test_synth.py::test_cases[a]"]}
    assert _outcomes(status, 13) == {"test_synth.py::test_cases[a]": "passed"}
    assert _verified(status, 14) == {}
    assert _outcomes(status, 14) == {"test_synth.py::test_cases[b]": "passed"}


def test_unmarked_tests_are_not_recorded(synthetic):
    _, _, status = synthetic
    assert not [t for tests in status.tests.values() for t in tests if "test_unmarked" in t]


def test_the_run_block_names_date_commit_and_versions(synthetic):
    _, _, status = synthetic
    run = status.run
    assert set(run) >= {"date", "commit", "dirty", "python", "torch", "pytest"}
    assert set(run) >= {"tests", "exit_status", "digest"}
    assert run["tests"] == 11 and run["exit_status"] == 1
    assert run["date"].endswith("Z") and len(run["digest"]) == 64
    assert "test run of " + run["date"] in status.describe()


def test_the_report_shows_verified_only_where_the_run_verified(synthetic):
    _, _, status = synthetic
    registry = {key: eq for key, eq in load_registry().items() if key[0] == "titans" and 8 <= key[1] <= 16}
    names = ["surprise", "skipped_claim", "xfail_claim", "never_called", "Memory", "case_a", "case_b"]
    names += ["xpass_claim", "failing_claim"]
    claims = {("titans", n): [f"synth:{name}"] for n, name in zip(range(8, 17), names, strict=True)}
    tests = {key: list(status.tests[key]) for key in claims}
    rows = build_rows(registry, claims, tests, status=status)
    assert {r.number: r.status for r in rows} == {
        8: "verified",
        9: "implemented",
        10: "implemented",
        11: "implemented",
        12: "verified",
        13: "verified",
        14: "implemented",
        15: "implemented",
        16: "implemented",
    }
    problems = [p.message for p in find_problems(registry, claims, tests, status=status)]
    assert len(problems) == 9  # 6 unverified claims, 3 passing marked tests that ran no claim
    assert any(
        "Titans Eq. 11: no passing test marked equation('titans', 11) executed synth:never_called" in m
        for m in problems
    )
    assert any("test_synth.py::test_skipped (skipped)" in m for m in problems)


def test_check_reports_every_passing_marked_test_that_executed_none_of_its_claims(synthetic):
    _, _, status = synthetic
    assert status.passed_without_claims(("titans", 8)) == ["test_synth.py::test_marked_helper"]
    assert status.passed_without_claims(("titans", 11)) == ["test_synth.py::test_8"]
    assert status.passed_without_claims(("titans", 14)) == ["test_synth.py::test_cases[b]"]
    for number in (9, 10, 12, 13, 15, 16):  # skipped, xfail, failed, or ran its claim
        assert status.passed_without_claims(("titans", number)) == []
    registry = {key: eq for key, eq in load_registry().items() if key[0] == "titans" and key[1] in (8, 14)}
    claims = {("titans", 8): ["synth:surprise", "synth:other"], ("titans", 14): ["synth:case_b"]}
    tests = {key: list(status.tests[key]) for key in claims}
    problems = [p.message for p in find_problems(registry, claims, tests, status=status)]
    # Eq. 8's claim surprise is verified by another test: the marker on the helper's test is still wrong
    assert (
        "test_synth.py::test_marked_helper is marked Titans Eq. 8 but executed none of its claims "
        "(synth:other, synth:surprise): mark a test that runs the code, or add @implements to the code it "
        "tests"
    ) in problems
    assert not any("test_passes_and_runs_the_claim is marked" in m for m in problems)
    assert any(m.startswith("test_synth.py::test_cases[b] is marked Titans Eq. 14 but") for m in problems)


def test_xdist_workers_report_the_same_statuses(synthetic, tmp_path):
    root, _, status = synthetic
    status_path = tmp_path / "status.json"
    result = _pytest(root, "-n", "2", "--equation-status", str(status_path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert (status.verified_by, status.tests) == (
        load_status(status_path).verified_by,
        load_status(status_path).tests,
    )


def test_a_partial_run_leaves_the_status_file_alone(synthetic, tmp_path):
    root, _, _ = synthetic
    status_path = tmp_path / "status.json"
    result = _pytest(root, "-k", "class_claim", "--equation-status", str(status_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "equation status: not written (partial run: --keyword selects a subset" in result.stdout
    assert not status_path.exists()
    result = _pytest(root, "test_synth.py::test_8", "--equation-status", str(status_path))
    assert "equation status: not written (partial run: not the whole test suite)" in result.stdout
    assert not status_path.exists()


def test_module_and_class_equation_markers_are_collection_errors(tmp_path):
    root = _project(
        tmp_path / "misplaced",
        {
            "synth.py": CLAIMS,
            "test_module_mark.py": """\
                import pytest

                import synth

                pytestmark = pytest.mark.equation("titans", 8)


                @pytest.mark.skip(reason="would count for Eq. 8 through the module marker")
                def test_anything():
                    assert False
            """,
            "test_class_mark.py": """\
                import pytest

                import synth


                @pytest.mark.equation("titans", 12)
                class TestMemory:
                    def test_forward(self):
                        assert synth.Memory(1).forward(1) == 1
            """,
        },
    )
    status_path = root / "status.json"
    result = _pytest(root, "--equation-status", str(status_path))
    assert result.returncode == pytest.ExitCode.INTERRUPTED, result.stdout
    assert "2 errors" in result.stdout
    assert "ERROR collecting test_module_mark.py" in result.stdout
    assert "equation marker on the module (pytestmark): equation('titans', 8)." in result.stdout
    assert "ERROR test_class_mark.py::TestMemory - equation marker on the class" in result.stdout
    assert "equation marker on the class: equation('titans', 12)." in result.stdout
    assert "Equation markers go on test functions" in result.stdout
    assert not status_path.exists()


def test_the_project_runs_with_strict_xfail(pytestconfig):
    assert pytestconfig.getini("xfail_strict") is True


# ---------------------------------------------------------------------------------------------------------
# The recorder on its own
# ---------------------------------------------------------------------------------------------------------


class _Base:
    def inherited(self):
        return 1


class _Claimed(_Base):
    def __init__(self):
        self.x = 1

    @staticmethod
    def static():
        return 2

    @classmethod
    def klass(cls):
        return 3

    @property
    def value(self):
        return self.x


def _function():
    return 4


def test_code_objects_of_a_class_are_its_methods_and_those_of_its_own_bases():
    codes = code_objects(_Claimed)
    expected = {
        _Claimed.__init__.__code__,
        _Claimed.static.__code__,
        _Claimed.klass.__func__.__code__,
        _Claimed.value.fget.__code__,
        _Base.inherited.__code__,
    }
    assert codes == expected
    assert code_objects(_function) == {_function.__code__}
    assert code_objects(3) == set()


def test_recorder_names_the_claims_that_ran_and_restores_the_profile_hook():
    calls = []

    def outer_profile(frame, event, arg):
        calls.append(event)

    sys.setprofile(outer_profile)
    try:
        watched = {code: ["claimed"] for code in code_objects(_Claimed)} | {_function.__code__: ["function"]}
        with ClaimRecorder(watched) as recorder:
            _Claimed.static()
        assert sys.getprofile() is outer_profile
    finally:
        sys.setprofile(None)
    assert recorder.ran == {"claimed"}
    assert "call" in calls  # the hook that was there keeps seeing events while the recorder runs


def test_recorder_stops_profiling_once_every_claim_ran():
    with ClaimRecorder({_function.__code__: ["function"]}) as recorder:
        assert sys.getprofile() is not None
        _function()
        assert sys.getprofile() is None
    assert recorder.ran == {"function"}


def test_status_file_round_trip(tmp_path):
    from neural_memory.registry.status import write_status

    records = {
        "t.py::a": {"equations": [["titans", 8]], "outcome": "passed", "ran": [["titans", 8, "m:f"]]},
        "t.py::b": {"equations": [["titans", 8], ["miras", "FTRL-VP"]], "outcome": "skipped", "ran": []},
    }
    path = tmp_path / "status.json"
    write_status(path, {"date": "d"}, records)
    status = load_status(path)
    assert status.verified_by == {("titans", 8): {"m:f": ["t.py::a"]}, ("miras", "FTRL-VP"): {}}
    assert status.tests[("titans", 8)] == {"t.py::a": "passed", "t.py::b": "skipped"}
    assert json.loads(path.read_text("utf-8"))["format"] == 1
    path.write_text(json.dumps({"format": 99}), "utf-8")
    with pytest.raises(ValueError, match="status file format 99"):
        load_status(path)
    assert load_status(tmp_path / "absent.json") is None
