"""The setup files agree with each other: README, dev.py, .ci/run, pyproject, Docker, compose, CI workflow.

These tests read files and call dev.py's pure helpers; nothing here installs or runs a job.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def read(relative: str) -> str:
    return (ROOT / relative).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def dev() -> Iterator[ModuleType]:
    """dev.py imported as a module (its job runs only under ``__main__``)."""
    name = "neural_memory_dev_script"
    spec = importlib.util.spec_from_file_location(name, ROOT / "dev.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)


# ------------------------------------------------------------------------------------------------------
# README <-> dev.py
# ------------------------------------------------------------------------------------------------------


def quick_start_commands() -> list[str]:
    section = read("README.md").split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    assert block is not None, "README's Quick start has no ```bash block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_quick_start_is_exactly_the_two_dev_py_jobs(dev: ModuleType) -> None:
    assert quick_start_commands() == ["python3 dev.py run", "python3 dev.py test"]
    assert {"run", "test"} <= set(dev.JOBS)


def test_readme_names_every_main_job_step(dev: ModuleType) -> None:
    readme = read("README.md")
    for step in dev.RUN_STEPS:
        assert shlex.join(step.argv) in readme, f"README does not mention `{shlex.join(step.argv)}`"


def test_readme_has_the_status_table_markers_once_and_in_order() -> None:
    readme = read("README.md")
    start, end = "<!-- equations:start -->", "<!-- equations:end -->"
    assert readme.count(start) == 1 and readme.count(end) == 1
    assert readme.index(start) < readme.index(end)


def test_readme_pins_the_three_arxiv_versions() -> None:
    readme = read("README.md")
    for arxiv_id in ("2501.00663v1", "2504.13173v1", "2512.24695v1"):
        assert arxiv_id in readme


# ------------------------------------------------------------------------------------------------------
# dev.py job definitions
# ------------------------------------------------------------------------------------------------------


def test_test_job_starts_with_pytest_on_two_workers_and_a_90_percent_coverage_floor(dev: ModuleType) -> None:
    first = dev.TEST_STEPS[0].argv
    assert first[:3] == ("python", "-m", "pytest")
    assert "--cov-fail-under=90" in first and "--cov=neural_memory" in first
    assert first[first.index("-n") + 1] == "2"


def test_test_job_runs_every_required_check_in_order(dev: ModuleType) -> None:
    commands = [shlex.join(step.argv) for step in dev.TEST_STEPS]
    expected_in_order = [
        "python -m pytest",
        "ruff check .",
        "ruff format --check .",
        "neural-memory equations --check",
        "python scripts/update_readme.py --check",
        "python scripts/build_docs.py",
        "mkdocs build --strict",
        "python scripts/run_notebooks.py",
        "hadolint Dockerfile",
        "check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml",
        "actionlint .github/workflows/ci.yml",
    ]
    positions = [next(i for i, c in enumerate(commands) if c.startswith(want)) for want in expected_in_order]
    assert positions == sorted(positions)


def test_docs_and_notebook_jobs_are_the_test_job_steps_and_their_extra_is_installed(dev: ModuleType) -> None:
    assert set(dev.JOBS["docs"]) | set(dev.JOBS["notebooks"]) <= set(dev.TEST_STEPS)
    assert [step.argv for step in dev.JOBS["docs"]] == [
        ("python", "scripts/build_docs.py"),
        ("mkdocs", "build", "--strict"),
    ]
    assert dev.INSTALL_EXTRAS == "dev,docs"
    assert "\ndocs = [" in read("pyproject.toml") and (ROOT / "mkdocs.yml").is_file()


def test_compose_jupyter_serves_the_notebooks_folder() -> None:
    jupyter = read("docker-compose.yml").split("\n  jupyter:\n", 1)[1].split("\n  lint:\n", 1)[0]
    assert "--notebook-dir=/app/notebooks" in jupyter
    assert (ROOT / "notebooks").is_dir()


def test_main_job_runs_report_then_training_then_tiny_reproduction(dev: ModuleType) -> None:
    argvs = [step.argv for step in dev.RUN_STEPS]
    assert argvs[0] == ("neural-memory", "equations")
    assert argvs[1] == ("neural-memory", "train", "titans-mac", "--steps", "200")
    assert argvs[2] == ("neural-memory", "reproduce")  # the default scale, tiny: minutes on 2 CPU cores
    assert [step.optional for step in dev.RUN_STEPS] == [False, False, False]


@pytest.mark.parametrize("metavar", [None, "COMMAND"])
def test_subcommands_are_read_from_real_argparse_help(dev: ModuleType, metavar: str | None) -> None:
    parser = argparse.ArgumentParser(prog="neural-memory")
    sub = parser.add_subparsers(dest="command", metavar=metavar)
    long_help = "print the equation status table: implemented by / tested by; mentions reproduce in prose"
    sub.add_parser("equations", help=long_help)
    sub.add_parser("train", help="train a model")
    assert dev.parse_subcommands(parser.format_help()) == {"equations", "train"}


def test_missing_optional_subcommand_is_skipped_and_missing_required_one_fails(dev: ModuleType) -> None:
    reproduce = dev.Step("optional reproduction", ("neural-memory", "reproduce"), optional=True)
    train = dev.RUN_STEPS[1]
    assert dev.check_available(reproduce, {"equations", "train"}) is False
    assert dev.check_available(reproduce, {"equations", "train", "reproduce"}) is True
    with pytest.raises(dev.JobFailed, match="neural-memory train"):
        dev.check_available(train, {"equations"})


def test_pytest_collecting_no_tests_fails_the_job(dev: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dev, "echo_and_run", lambda argv, env=None: dev.PYTEST_NO_TESTS)
    with pytest.raises(dev.JobFailed, match="collected no tests"):
        dev.run_step(dev.PYTEST)


def test_mutate_job_runs_the_mutation_report_script_with_the_given_modules(
    dev: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(dev, "echo_and_run", lambda argv, env=None: calls.append(list(argv)) or 0)
    assert [step.argv for step in dev.JOBS["mutate"]] == [("python", "scripts/mutation_report.py")]
    assert (ROOT / "scripts" / "mutation_report.py").is_file()
    dev.run_job("mutate", ["src/neural_memory/common/scan.py"])
    assert calls == [
        [str(dev.venv_python()), "scripts/mutation_report.py", "src/neural_memory/common/scan.py"]
    ]


def test_only_the_mutate_job_takes_module_arguments(dev: ModuleType) -> None:
    assert set(dev.JOBS_WITH_ARGUMENTS) == {"mutate"}
    with pytest.raises(dev.JobFailed, match="takes no extra arguments"):
        dev.run_job("lint", ["src/neural_memory/common/scan.py"])


def test_mutation_run_stays_out_of_ci_and_is_documented() -> None:
    assert "mutate" not in read(".ci/run")
    for doc in ("README.md", "CLAUDE.md"):
        assert "python3 dev.py mutate" in read(doc), doc
    pyproject = read("pyproject.toml")
    assert '"mutmut==3.8.1"' in pyproject and "[tool.mutmut]" in pyproject


def test_install_stamp_changes_when_pyproject_changes(
    dev: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "dev.py").write_text("script")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'a'\n")
    monkeypatch.setattr(dev, "ROOT", tmp_path)
    before = dev.install_stamp()
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'b'\n")
    assert dev.install_stamp() != before


# ------------------------------------------------------------------------------------------------------
# pyproject: the torch range
# ------------------------------------------------------------------------------------------------------


def torch_requirement() -> str:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: read the dependency list by pattern
        found = re.search(r'^\s*"(torch\b[^"]*)"', read("pyproject.toml"), flags=re.MULTILINE)
        assert found is not None, "no torch requirement in pyproject.toml"
        return found.group(1)
    deps = tomllib.loads(read("pyproject.toml"))["project"]["dependencies"]
    matches = [d for d in deps if re.match(r"torch\b(?![-_.\w])", d)]
    assert len(matches) == 1, f"expected one torch requirement, got {matches}"
    return matches[0]


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("+")[0].split("."))


def admits(requirement: str, version: str) -> bool:
    """Whether ``requirement`` (e.g. ``torch>=2.2,<2.14``) allows ``version``."""
    try:
        from packaging.requirements import Requirement
    except ModuleNotFoundError:  # pragma: no cover - packaging ships with pytest in practice
        ops = {">=": "__ge__", "<=": "__le__", "==": "__eq__", "!=": "__ne__", ">": "__gt__", "<": "__lt__"}
        clauses = re.findall(r"(>=|<=|==|!=|>|<)\s*([\d.]+)", requirement)
        have = version_tuple(version)
        return all(getattr(have, ops[op])(version_tuple(v)) for op, v in clauses)
    return Requirement(requirement).specifier.contains(version, prereleases=True)


def test_pyproject_torch_range_admits_the_pinned_cpu_build_and_excludes_2_14(dev: ModuleType) -> None:
    requirement = torch_requirement()
    pinned = dev.TORCH_PIN.split("==")[1]
    assert pinned == "2.13.0"
    assert admits(requirement, "2.13.0") and admits(requirement, "2.13.0+cpu")
    for too_new in ("2.14.0", "2.14.1", "3.0.0"):
        assert not admits(requirement, too_new), f"{requirement} admits torch {too_new}"


def runtime_dependencies() -> list[str]:
    block = read("pyproject.toml").split("\ndependencies = [", 1)[1].split("\n]", 1)[0]
    return re.findall(r'^\s*"([^"]+)"', block, flags=re.MULTILINE)


def test_numpy_is_a_runtime_dependency() -> None:
    # torch warns "Failed to initialize NumPy" on every import without it (a clean install, issue 8)
    assert [d for d in runtime_dependencies() if re.match(r"numpy\b", d)] == ["numpy>=1.26"]


def test_the_status_file_ships_as_package_data_and_is_not_committed() -> None:
    assert 'neural_memory = ["registry/data/*.json"]' in read("pyproject.toml")
    for ignore in (".gitignore", ".dockerignore"):
        assert "src/neural_memory/registry/data/status.json" in read(ignore).splitlines(), ignore


# ------------------------------------------------------------------------------------------------------
# CI entry points, Docker, compose
# ------------------------------------------------------------------------------------------------------


def test_ci_run_is_strict_bash_that_runs_the_test_job_then_the_main_job() -> None:
    script = read(".ci/run")
    assert script.startswith("#!/usr/bin/env bash")
    assert "set -euo pipefail" in script
    commands = re.findall(r"^python3 dev\.py (\w+)$", script, flags=re.MULTILINE)
    assert commands == ["test", "run"]  # the README's two commands, tests first
    if os.name != "nt":
        assert os.access(ROOT / ".ci" / "run", os.X_OK), ".ci/run is not executable"


def test_github_workflow_runs_the_test_job_with_the_cpu_torch_index() -> None:
    workflow = read(".github/workflows/ci.yml")
    assert re.search(r"run: python3 dev\.py test\s*$", workflow, flags=re.MULTILINE)
    assert "TORCH_INDEX_URL: https://download.pytorch.org/whl/cpu" in workflow
    assert 'python-version: "3.11"' in workflow


def compose_services() -> set[str]:
    text = read("docker-compose.yml")
    try:
        import yaml
    except ModuleNotFoundError:  # no PyYAML: the two-space keys under the top-level `services:`
        block = text.split("\nservices:\n", 1)[1]
        block = re.split(r"^\S", block, maxsplit=1, flags=re.MULTILINE)[0]
        return set(re.findall(r"^  ([A-Za-z0-9_.-]+):\s*$", block, flags=re.MULTILINE))
    return set(yaml.safe_load(text)["services"])


def test_compose_defines_exactly_the_five_services() -> None:
    assert compose_services() == {"test", "dev", "jupyter", "lint", "format"}


def test_dockerfile_default_target_is_the_test_stage_running_the_test_job() -> None:
    dockerfile = read("Dockerfile")
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile, flags=re.MULTILINE | re.IGNORECASE)
    assert stages[-1] == "test" and "deps" in stages
    last_stage = dockerfile.split("AS test", 1)[1]
    assert 'CMD ["python", "dev.py", "test"]' in last_stage
    assert "torch==2.13.0" in dockerfile and "ARG TORCH_INDEX_URL=" in dockerfile


def test_makefile_targets_are_aliases_of_dev_py(dev: ModuleType) -> None:
    makefile = read("Makefile")
    for job in ("run", "test", "lint", "format"):
        assert job in dev.JOBS
        assert re.search(rf"^{job}:\n\t\$\(PYTHON\) dev\.py {job}$", makefile, flags=re.MULTILINE)
