"""The status file: what the last whole test run verified, equation by equation.

Written by the pytest plugin (:mod:`neural_memory.registry.pytest_plugin`) at the end of a run that
collected the whole suite, read by ``neural-memory equations``. It lives in the package
(``registry/data/status.json``), so a wheel built after the test run ships the statuses of the run it was
built from. It is not committed: every whole run rewrites it, and the README table generated from it is
what the repository keeps (``scripts/update_readme.py --check`` compares the two in CI).

Format (``"format": 1``)::

    {"format": 1,
     "run": {"date": "2026-11-28T14:02:11Z", "commit": "7cb8065...", "dirty": false, "python": "3.11.7",
             "torch": "2.13.0", "pytest": "9.2.0", "tests": 581, "exit_status": 0,
             "digest": "sha256 of the package's and the tests' .py files"},
     "equations": [
        {"paper": "titans", "number": 13,
         "verified_by": {"neural_memory.titans.update:forgetting_update": ["tests/...::test_x", ...]},
         "tests": {"tests/...::test_x": "passed", "tests/...::test_y": "skipped"}}]}

``tests`` lists every test marked with the equation and its outcome (passed, failed, error, skipped,
xfailed, xpassed); ``verified_by`` lists, per claiming object, the passed tests that executed it. A passed
test listed under no claim executed none of them (:meth:`RunStatus.passed_without_claims`), which
``--check`` reports.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from neural_memory.registry import EquationId, normalise_number

Key = tuple[str, EquationId]
FORMAT = 1
OUTCOMES: tuple[str, ...] = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")


def package_dir() -> Path:
    """The imported ``neural_memory`` package (a source checkout's ``src/neural_memory`` or site-packages)."""
    return Path(__file__).resolve().parents[1]


def default_path() -> Path:
    """``registry/data/status.json`` inside the imported package: shipped with it as package data."""
    return package_dir() / "registry" / "data" / "status.json"


@dataclass(frozen=True)
class RunStatus:
    """The content of a status file."""

    run: dict
    verified_by: dict[Key, dict[str, list[str]]] = field(default_factory=dict)
    tests: dict[Key, dict[str, str]] = field(default_factory=dict)
    path: Path | None = None

    def verified_claims(self, key: Key) -> dict[str, list[str]]:
        return self.verified_by.get(key, {})

    def passed_without_claims(self, key: Key) -> list[str]:
        """The passing tests marked with ``key`` that executed none of its claims (helper or generic tests).

        A passed test that executed a claim is listed under that claim in ``verified_by``; one that is
        listed nowhere ran and passed without entering the code of any object claiming the equation.
        """
        executed = {nodeid for ids in self.verified_claims(key).values() for nodeid in ids}
        tests = self.tests.get(key, {})
        return [nodeid for nodeid, outcome in tests.items() if outcome == "passed" and nodeid not in executed]

    def describe(self) -> str:
        """One line: when, at which commit and with what the run was made."""
        run = self.run
        commit = (run.get("commit") or "unknown")[:12]
        if run.get("dirty"):
            commit += " with uncommitted changes"
        return (
            f"test run of {run.get('date', '?')}, commit {commit}, {run.get('tests', '?')} tests, "
            f"python {run.get('python', '?')}, torch {run.get('torch', '?')}"
        )


def load_status(path: Path | None = None) -> RunStatus | None:
    """The status file at ``path`` (default :func:`default_path`), or None if there is none."""
    path = path or default_path()
    if not path.is_file():
        return None
    data = json.loads(path.read_text("utf-8"))
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: status file format {data.get('format')!r}, expected {FORMAT}")
    verified_by: dict[Key, dict[str, list[str]]] = {}
    tests: dict[Key, dict[str, str]] = {}
    for entry in data["equations"]:
        key = (entry["paper"], normalise_number(entry["number"]))
        verified_by[key] = {where: list(ids) for where, ids in entry["verified_by"].items()}
        tests[key] = dict(entry["tests"])
    return RunStatus(run=data["run"], verified_by=verified_by, tests=tests, path=path)


def to_json(run: Mapping, records: Mapping[str, Mapping]) -> dict:
    """The status document from per-test records ``{nodeid: {"equations", "outcome", "ran"}}``.

    ``equations`` is a list of ``[paper, number]``; ``ran`` a list of ``[paper, number, claim]``: the
    claims of those equations whose code the test entered. Everything is sorted, so two runs that
    verify the same things write the same ``equations`` list.
    """
    per_key: dict[Key, dict] = {}
    for nodeid, record in records.items():
        ran = {(paper, normalise_number(number), where) for paper, number, where in record.get("ran", ())}
        for paper, number in record["equations"]:
            key = (paper, normalise_number(number))
            entry = per_key.setdefault(key, {"verified_by": {}, "tests": {}})
            entry["tests"][nodeid] = record["outcome"]
            if record["outcome"] != "passed":
                continue
            for where in sorted(w for p, n, w in ran if (p, n) == key):
                entry["verified_by"].setdefault(where, []).append(nodeid)
    equations = []
    for (paper, number), entry in sorted(per_key.items(), key=lambda item: _order(item[0])):
        equations.append(
            {
                "paper": paper,
                "number": number,
                "verified_by": {w: sorted(ids) for w, ids in sorted(entry["verified_by"].items())},
                "tests": dict(sorted(entry["tests"].items())),
            }
        )
    return {"format": FORMAT, "run": dict(run), "equations": equations}


def _order(key: Key) -> tuple:
    paper, number = key
    return (paper, 0, number, "") if isinstance(number, int) else (paper, 1, 0, number)


def write_status(path: Path, run: Mapping, records: Mapping[str, Mapping]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(run, records), indent=1) + "\n", "utf-8")


def source_digest(package_dir: Path, tests_dir: Path | None) -> str:
    """sha256 over the ``.py`` files of the package and of the tests: a run's status describes these."""
    digest = hashlib.sha256()
    for root in (package_dir, tests_dir):
        if root is None:
            continue
        for file in sorted(root.rglob("*.py")):
            if "__pycache__" in file.parts:
                continue
            digest.update(file.relative_to(root).as_posix().encode() + b"\0")
            digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()


def run_info(repo: Path) -> dict:
    """Date, git commit of ``repo`` (if it is a checkout) and versions, for the ``run`` block."""
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": _git(repo, "rev-parse", "HEAD"),
        "dirty": bool(_git(repo, "status", "--porcelain", "--untracked-files=no")),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "pytest": _version("pytest"),
    }


def _git(repo: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
