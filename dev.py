#!/usr/bin/env python3
"""Developer entry point: one file, standard library only, works on a fresh machine with Python >= 3.10.

    python3 dev.py run       # the main job: equation report, short training run, tiny reproduction
    python3 dev.py test      # the test job CI runs: pytest, ruff, registry, docs, notebooks, static checks
    python3 dev.py test -- -k memory   # only pytest, with extra arguments (no coverage floor)
    python3 dev.py lint      # ruff + Dockerfile / compose / workflow checks
    python3 dev.py format    # ruff --fix and ruff format, in place
    python3 dev.py install   # (re)install the virtualenv unconditionally
    python3 dev.py mutate [MODULE ...]  # mutation testing (mutmut) of the equation packages, or of MODULEs
    python3 dev.py docs      # generate the documentation pages and build the site (mkdocs, strict) in site/
    python3 dev.py notebooks # execute the five notebooks in notebooks/ top to bottom

Every command first makes sure ``.venv`` exists and is installed: ``pip install torch==2.13.0`` first
(with ``--index-url $TORCH_INDEX_URL`` when that variable is set: that is how CI and Docker get the CPU
build), then ``pip install -e ".[dev,docs]"``. A stamp in the venv (hash of pyproject.toml + dev.py) skips
the install when nothing changed. ``NEURAL_MEMORY_VENV`` points at another venv (the Docker image uses
``/opt/venv``). Each command is printed before it runs; the first failing step stops the job.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent
TORCH_PIN = "torch==2.13.0"
# The extras the venv gets: tests and linters, and the documentation site and notebook runner (the test job
# builds the docs and executes the notebooks).
INSTALL_EXTRAS = "dev,docs"


@dataclass(frozen=True)
class Step:
    """One command of a job. ``argv[0]`` is looked up in the venv first (``python`` is the venv's)."""

    name: str
    argv: tuple[str, ...]
    # For ``neural-memory SUBCOMMAND ...`` steps: when the CLI does not list the subcommand yet, an
    # optional step is skipped with a note, a required one fails the job with a clear message.
    optional: bool = False


# ---------------------------------------------------------------------------------------------------------
# The jobs. Edit these lists, not the machinery below.
# ---------------------------------------------------------------------------------------------------------

RUN_STEPS: tuple[Step, ...] = (
    Step("equation report", ("neural-memory", "equations")),
    Step("short training run", ("neural-memory", "train", "titans-mac", "--steps", "200")),
    Step("tiny-scale reproduction of the papers' claims", ("neural-memory", "reproduce")),
)

PYTEST = Step(
    "tests with coverage floor",
    (
        "python",
        "-m",
        "pytest",
        "-n",
        "2",
        "--cov=neural_memory",
        "--cov-report=term",
        "--cov-fail-under=90",
    ),
)
RUFF_CHECK = Step("ruff lint", ("ruff", "check", "."))
RUFF_FORMAT_CHECK = Step("ruff format check", ("ruff", "format", "--check", "."))
STATIC_CHECKS: tuple[Step, ...] = (
    Step("Dockerfile lint", ("hadolint", "Dockerfile")),
    Step(
        "compose file schema",
        ("check-jsonschema", "--builtin-schema", "vendor.compose-spec", "docker-compose.yml"),
    ),
    Step("workflow lint", ("actionlint", ".github/workflows/ci.yml")),
)

# The documentation site: pages generated from the registry and the last test run, then a strict build
# (no network: KaTeX is vendored under docs/assets/katex). After the test run, which writes the statuses.
DOCS_STEPS: tuple[Step, ...] = (
    Step("generate the documentation pages", ("python", "scripts/build_docs.py")),
    Step("documentation site (strict)", ("mkdocs", "build", "--strict")),
)
NOTEBOOK_STEPS: tuple[Step, ...] = (
    Step("notebooks execute top to bottom", ("python", "scripts/run_notebooks.py")),
)

TEST_STEPS: tuple[Step, ...] = (
    PYTEST,
    RUFF_CHECK,
    RUFF_FORMAT_CHECK,
    Step("equation registry check", ("neural-memory", "equations", "--check")),
    Step("README status table is fresh", ("python", "scripts/update_readme.py", "--check")),
    *DOCS_STEPS,
    *NOTEBOOK_STEPS,
    *STATIC_CHECKS,
)

LINT_STEPS: tuple[Step, ...] = (RUFF_CHECK, RUFF_FORMAT_CHECK, *STATIC_CHECKS)

FORMAT_STEPS: tuple[Step, ...] = (
    Step("ruff safe fixes", ("ruff", "check", "--fix", ".")),
    Step("ruff format", ("ruff", "format", ".")),
)

# Slow (minutes per module), so not part of the test job or .ci/run. Arguments: modules to mutate.
MUTATE_STEPS: tuple[Step, ...] = (
    Step("mutation testing and report", ("python", "scripts/mutation_report.py")),
)

JOBS: dict[str, tuple[Step, ...]] = {
    "run": RUN_STEPS,
    "test": TEST_STEPS,
    "lint": LINT_STEPS,
    "format": FORMAT_STEPS,
    "install": (),
    "mutate": MUTATE_STEPS,
    "docs": DOCS_STEPS,
    "notebooks": NOTEBOOK_STEPS,
}

# Jobs whose single step takes the command line's extra arguments (``dev.py mutate src/.../scan.py``).
JOBS_WITH_ARGUMENTS = frozenset({"mutate"})

# pytest's "no tests were collected": a test job that ran nothing must not pass.
PYTEST_NO_TESTS = 5


# ---------------------------------------------------------------------------------------------------------
# Virtualenv
# ---------------------------------------------------------------------------------------------------------


class JobFailed(Exception):
    """A step failed; ``code`` is the exit status dev.py returns."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def venv_dir() -> Path:
    return Path(os.environ.get("NEURAL_MEMORY_VENV", ROOT / ".venv")).resolve()


def venv_bin() -> Path:
    return venv_dir() / ("Scripts" if os.name == "nt" else "bin")


def venv_python() -> Path:
    return venv_bin() / ("python.exe" if os.name == "nt" else "python")


def install_stamp() -> str:
    """Hash of what decides the install: the project's metadata and this script's install procedure."""
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "dev.py"):
        digest.update(name.encode())
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def stamp_path() -> Path:
    return venv_dir() / ".neural-memory-install-stamp"


def child_env() -> dict[str, str]:
    """The environment of every step: the venv's bin first on PATH, as if it were activated."""
    env = dict(os.environ)
    env["VIRTUAL_ENV"] = str(venv_dir())
    env["PATH"] = os.pathsep.join([str(venv_bin()), env.get("PATH", "")])
    env.pop("PYTHONHOME", None)
    return env


def echo_and_run(argv: Sequence[str], env: dict[str, str] | None = None) -> int:
    print(f"\n$ {shlex.join(argv)}", flush=True)
    return subprocess.call(list(argv), cwd=ROOT, env=env)


def ensure_venv(force: bool = False) -> None:
    """Create and install the venv unless the stamp says it is current."""
    create = [sys.executable, "-m", "venv", str(venv_dir())]
    if not venv_python().exists() and echo_and_run(create) != 0:
        raise JobFailed(f"could not create the virtualenv at {venv_dir()}")
    stamp = install_stamp()
    if not force and stamp_path().exists() and stamp_path().read_text().strip() == stamp:
        print(f"dev.py: {venv_dir()} is up to date (stamp matches pyproject.toml + dev.py)", flush=True)
        return
    stamp_path().unlink(missing_ok=True)
    pip = [str(venv_python()), "-m", "pip", "install"]
    # torch first and pinned: otherwise pip may resolve the range in pyproject to a multi-GB CUDA wheel.
    torch_index = os.environ.get("TORCH_INDEX_URL")
    torch_cmd = [*pip, *(["--index-url", torch_index] if torch_index else []), TORCH_PIN]
    for argv in (torch_cmd, [*pip, "-e", f".[{INSTALL_EXTRAS}]"]):
        if echo_and_run(argv, env=child_env()) != 0:
            raise JobFailed("installing the virtualenv failed (see pip's output above)")
    stamp_path().write_text(stamp + "\n")


# ---------------------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------------------


def resolve(argv: Sequence[str]) -> list[str]:
    """Run ``python`` and the tools from the venv, whatever else is on PATH."""
    exe = argv[0]
    if exe == "python":
        return [str(venv_python()), *argv[1:]]
    suffix = ".exe" if os.name == "nt" else ""
    candidate = venv_bin() / f"{exe}{suffix}"
    return [str(candidate) if candidate.exists() else exe, *argv[1:]]


def parse_subcommands(help_text: str) -> set[str]:
    """Subcommands an argparse ``--help`` lists: its ``{a,b,c}`` group, else its indented command column."""
    names: set[str] = set()
    for group in re.findall(r"\{([A-Za-z0-9_,-]+)\}", help_text):
        names.update(group.split(","))
    if names:
        return names
    # No {a,b} group (a subparser with a metavar): take the indented command column instead.
    return set(re.findall(r"^ {2,}([a-z][a-z0-9_-]*)(?: {2,}|$)", help_text, flags=re.MULTILINE))


def cli_subcommands() -> set[str]:
    result = subprocess.run(
        resolve(["neural-memory", "--help"]),
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        print(result.stdout + result.stderr, file=sys.stderr)
        raise JobFailed("`neural-memory --help` failed: the CLI does not start (output above)")
    return parse_subcommands(result.stdout)


def check_available(step: Step, subcommands: set[str]) -> bool:
    """True if the step can run; False for an optional step whose subcommand does not exist yet."""
    script = step.argv[1] if step.argv[0] == "python" and len(step.argv) > 1 else ""
    if script.endswith(".py") and not (ROOT / script).exists():
        raise JobFailed(f"{step.name}: {script} does not exist")
    if step.argv[0] != "neural-memory" or step.argv[1] in subcommands:
        return True
    cmd = f"neural-memory {step.argv[1]}"
    if step.optional:
        print(f"\ndev.py: skipping '{step.name}': `{cmd}` is not available yet", flush=True)
        return False
    raise JobFailed(f"{step.name}: `{cmd}` is not available (not listed by `neural-memory --help`)")


def run_step(step: Step, extra: Sequence[str] = ()) -> None:
    print(f"\n=== {step.name} ===", flush=True)
    code = echo_and_run([*resolve(step.argv), *extra], env=child_env())
    if step.argv[:3] == PYTEST.argv[:3] and code == PYTEST_NO_TESTS:
        raise JobFailed(f"{step.name}: pytest collected no tests (exit code 5); the test job needs tests")
    if code != 0:
        raise JobFailed(f"{step.name} failed with exit code {code}", code=code)


def run_job(job: str, extra: Sequence[str] = ()) -> None:
    steps = JOBS[job]
    if job == "test" and extra:
        # A selection cannot reach the coverage floor: run pytest alone, with the floor dropped.
        print("dev.py: extra arguments given: pytest only, without the coverage floor", flush=True)
        floorless = tuple(a for a in PYTEST.argv if not a.startswith("--cov-fail-under"))
        run_step(Step(PYTEST.name, floorless), extra)
        return
    if job in JOBS_WITH_ARGUMENTS:
        (step,) = steps
        if check_available(step, set()):
            run_step(step, extra)
        return
    if extra:
        raise JobFailed(f"`dev.py {job}` takes no extra arguments (got {shlex.join(extra)})", code=2)
    subcommands: set[str] | None = None  # asked of the CLI when the first step needs it, not before
    for step in steps:
        if step.argv[0] == "neural-memory" and subcommands is None:
            subcommands = cli_subcommands()
        if check_available(step, subcommands or set()):
            run_step(step)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    if not args or args[0] not in JOBS:
        print(__doc__, file=sys.stderr)
        got = shlex.join(args) or "nothing"
        print(f"dev.py: expected one of {', '.join(JOBS)}, got {got}", file=sys.stderr)
        return 2
    job, rest = args[0], args[1:]
    extra = rest[1:] if rest[:1] == ["--"] else rest
    os.chdir(ROOT)
    try:
        ensure_venv(force=job == "install")
        run_job(job, extra)
    except JobFailed as failure:
        print(f"\ndev.py {job}: FAILED: {failure}", file=sys.stderr, flush=True)
        return failure.code
    print(f"\ndev.py {job}: all steps passed", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
