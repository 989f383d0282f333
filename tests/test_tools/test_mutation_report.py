"""scripts/mutation_report.py: counting mutants per function and per equation, and the freshness check.

Made-up mutmut results; nothing here runs mutmut.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "mutation_report.py"
SEP = "\u01c1"


@pytest.fixture(scope="module")
def mr() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutation_report_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_function_of_strips_the_mutant_number_only(mr: ModuleType) -> None:
    assert mr.function_of("pkg.mod.x_f__mutmut_12") == "pkg.mod.x_f"
    assert mr.function_of(f"pkg.mod.x{SEP}C{SEP}__init____mutmut_7") == f"pkg.mod.x{SEP}C{SEP}__init__"
    with pytest.raises(ValueError, match="not a mutmut mutant name"):
        mr.function_of("pkg.mod.x_f")


def test_function_counts_count_killed_and_timeouts_and_leave_skipped_out(mr: ModuleType) -> None:
    statuses = {
        "m.x_f__mutmut_1": "killed",
        "m.x_f__mutmut_2": "survived",
        "m.x_f__mutmut_3": "timeout",
        "m.x_f__mutmut_4": "skipped",
        "m.x_g__mutmut_1": "no tests",
    }
    assert mr.function_counts(statuses) == {
        "m.x_f": {"killed": 2, "tested": 3},
        "m.x_g": {"killed": 0, "tested": 1},
    }


def _module(functions: dict[str, dict[str, int]], sha: str = "abc") -> dict[str, object]:
    return {"sha256": sha, "functions": functions}


def test_equation_scores_sum_the_claimed_objects_mutants(mr: ModuleType) -> None:
    modules = {
        "src/pkg/a.py": _module(
            {
                "pkg.a.x_f": {"killed": 3, "tested": 4},
                "pkg.a.x_f2": {"killed": 0, "tested": 5},  # not f: a name that merely starts like it
                f"pkg.a.x{SEP}C{SEP}__init__": {"killed": 2, "tested": 2},
                f"pkg.a.x{SEP}C{SEP}forward": {"killed": 5, "tested": 6},
                f"pkg.a.x{SEP}D{SEP}forward": {"killed": 1, "tested": 9},
                "pkg.a.x__helper": {"killed": 0, "tested": 7},  # a helper: not counted for any equation
            },
            sha="sha-a",
        ),
    }
    implementations = {
        ("titans", 1): ["pkg.a:f"],
        ("titans", 2): ["pkg.a:C"],  # a class: all its methods
        ("titans", 3): ["pkg.a:D.forward", "pkg.b:g"],  # a method, and a claim in a module not run
        ("titans", 4): ["pkg.b:g"],  # nothing run: left out
        ("titans", 5): ["pkg.a:C", "pkg.a:C.forward"],  # a class and its own method: each mutant once
    }
    rows = mr.equation_scores(modules, implementations, classes={"pkg.a:C"})
    by_number = {r["number"]: r for r in rows}
    assert set(by_number) == {1, 2, 3, 5}
    assert (by_number[5]["killed"], by_number[5]["tested"]) == (7, 8)
    assert (by_number[1]["killed"], by_number[1]["tested"], by_number[1]["score"]) == (3, 4, 0.75)
    assert (by_number[2]["killed"], by_number[2]["tested"]) == (7, 8)
    assert (by_number[3]["killed"], by_number[3]["tested"]) == (1, 9)
    assert by_number[3]["not_run"] == ["pkg.b:g"] and by_number[1]["not_run"] == []
    assert by_number[1]["sha256"] == {"src/pkg/a.py": "sha-a"}


def test_an_equation_whose_claiming_code_has_no_mutants_gets_no_score(mr: ModuleType) -> None:
    modules = {"src/pkg/a.py": _module({"pkg.a.x_helper": {"killed": 1, "tested": 1}})}
    assert mr.equation_scores(modules, {("titans", 1): ["pkg.a:f"]}, classes=set()) == []


def test_a_module_reported_without_function_counts_counts_as_not_run(mr: ModuleType) -> None:
    modules = {"src/pkg/a.py": {"sha256": "x", "killed": 1, "total": 1}}
    assert mr.equation_scores(modules, {("titans", 1): ["pkg.a:f"]}, classes=set()) == []


def test_stale_modules_compare_the_recorded_sha256_with_the_source(
    mr: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mr, "ROOT", tmp_path)
    (tmp_path / "same.py").write_text("x = 1\n")
    (tmp_path / "changed.py").write_text("x = 2\n")
    sha = hashlib.sha256(b"x = 1\n").hexdigest()
    modules = {"same.py": {"sha256": sha}, "changed.py": {"sha256": sha}, "gone.py": {"sha256": sha}}
    assert mr.stale_modules(modules) == ["changed.py", "gone.py"]


def test_check_exits_1_on_a_stale_module_and_0_when_current(
    mr: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(mr, "ROOT", tmp_path)
    source = tmp_path / "m.py"
    source.write_text("y = 1\n")
    report = tmp_path / "mutation.json"
    monkeypatch.setattr(mr, "JSON_PATH", report)
    sha = hashlib.sha256(b"y = 1\n").hexdigest()
    report.write_text(json.dumps({"modules": {"m.py": {"sha256": sha}}}))
    assert mr.main(["--check"]) == 0
    source.write_text("y = 2\n")
    assert mr.main(["--check"]) == 1
    assert "stale: m.py" in capsys.readouterr().out


def test_the_committed_report_is_not_older_than_the_code_it_covers(mr: ModuleType) -> None:
    """The freshness check CI relies on: rerun `python3 dev.py mutate MODULE` after changing MODULE."""
    report = json.loads(mr.JSON_PATH.read_text())
    assert mr.stale_modules(report["modules"]) == []


def test_survivors_split_into_noted_equivalents_and_the_rest(mr: ModuleType) -> None:
    notes = {"a": "equivalent: same value", "b": "killed by new test t", "c": "not killable (not equivalent)"}
    assert mr.split_survivors(["a", "b", "c", "d"], notes) == (["a"], ["b", "c", "d"])


def test_implements_is_unwrapped_so_that_mutmut_mutates_the_equation_functions(mr: ModuleType) -> None:
    """mutmut skips decorated functions; the stage registers the same claims after each definition."""
    source = (
        "@implements('titans', 8)\n"
        "def f(x):\n"
        "    return x + 1\n"
        "\n"
        "\n"
        "class C:\n"
        "    @implements('titans', 11)\n"
        "    @implements('miras', 3)\n"
        "    def m(self):\n"
        "        return 2\n"
        "\n"
        "    @staticmethod\n"
        "    def s():\n"
        "        return 3\n"
    )
    out = mr.unwrap_implements(source)
    assert "@implements" not in out
    assert "f = implements('titans', 8)(f)" in out
    assert "    m = implements('titans', 11)(implements('miras', 3)(m))" in out
    assert "    @staticmethod\n    def s():" in out
    claims = []

    def implements(*key):
        def register(fn):
            claims.append((fn.__qualname__, key))
            return fn

        return register

    namespace = {"implements": implements}
    exec(compile(out, "<unwrapped>", "exec"), namespace)
    assert namespace["f"](1) == 2 and namespace["C"]().m() == 2
    assert claims == [("f", ("titans", 8)), ("C.m", ("miras", 3)), ("C.m", ("titans", 11))]


def test_a_note_cannot_make_a_reference_link_outside_code(mr: ModuleType) -> None:
    # markdown (mkdocs' autorefs, strict) reads `x[a][1]` outside backticks as a reference link to "1"
    note = "killed: current['memory'][1] raises, `weights[0][1]` is fine, a [b] c"
    want = r"killed: current\['memory']\[1] raises, `weights[0][1]` is fine, a \[b] c"
    assert mr.markdown_safe(note) == want
    assert mr.markdown_safe("no brackets") == "no brackets"


def test_the_committed_notes_render_without_reference_links(mr: ModuleType) -> None:
    text = (SCRIPT.parents[1] / "docs" / "mutation.md").read_text(encoding="utf-8")
    outside_code = "".join(text.split("`")[::2])
    assert "][" not in outside_code
