"""Mutation testing of the equation modules with mutmut, and the committed report (issue 8, section 2).

    python scripts/mutation_report.py                                  # every module of common/ and titans/
    python scripts/mutation_report.py src/neural_memory/common/scan.py # some modules (paths or dotted names)
    python scripts/mutation_report.py --fresh ...    # clear mutmut's cache mutants/ first
    python scripts/mutation_report.py --markdown-only # rewrite docs/mutation.md from the JSON (new notes)

mutmut's settings are in pyproject.toml (``[tool.mutmut]``): it copies ``src`` to ``mutants/``, mutates
the modules of ``common/`` and ``titans/`` and runs, for each mutant, the equation tests under
``tests/test_equations/{common,titans}`` that executed the mutated function. This script runs
``mutmut run`` once per requested module (so each gets its own runtime; ``--fresh`` first deletes
mutmut's cache ``mutants/``), reads ``mutmut results --all true`` and merges the counts into
``benchmarks/results/mutation.json``, then writes ``docs/mutation.md`` from that file. Modules not
requested keep their previous entry. Each entry records the sha256 of the module's source, so a later
check can tell that the report is older than the code.

Score = (killed + timeout) / (total - skipped), as mutmut's own badge counts it. A survivor's note comes
from ``scripts/mutation_notes.json`` (mutant name -> "killed by new test X" / "equivalent: reason"),
else "not yet analysed"; a noted mutant that no longer survives is still listed with its note.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = ("src/neural_memory/common", "src/neural_memory/titans")
JSON_PATH = ROOT / "benchmarks" / "results" / "mutation.json"
MD_PATH = ROOT / "docs" / "mutation.md"
NOTES_PATH = ROOT / "scripts" / "mutation_notes.json"
KILLED = ("killed", "timeout", "caught by type check")
RESULT_LINE = re.compile(r"^\s+(\S+): (.+)$")


def default_modules() -> list[str]:
    return [
        str(p.relative_to(ROOT))
        for d in PACKAGE_DIRS
        for p in sorted((ROOT / d).glob("*.py"))
        if p.name != "__init__.py"
    ]


def module_path(arg: str) -> str:
    """``src/neural_memory/common/scan.py`` or ``neural_memory.common.scan`` -> the path from the root."""
    path = arg if arg.endswith(".py") else "src/" + arg.replace(".", "/") + ".py"
    resolved = (ROOT / path).resolve()
    if not resolved.is_file() or not any(resolved.is_relative_to(ROOT / d) for d in PACKAGE_DIRS):
        raise SystemExit(f"mutation_report: {arg!r} is not a module of {' or '.join(PACKAGE_DIRS)}")
    return str(resolved.relative_to(ROOT))


def dotted(path: str) -> str:
    return path.removeprefix("src/").removesuffix(".py").replace("/", ".")


def git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def mutmut(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=ROOT, capture_output=True, text=True)


def run_module(path: str) -> float:
    """Run mutmut on one module's mutants; return the wall time in seconds."""
    print(f"\n--- mutmut run {dotted(path)}.* ---", flush=True)
    start = time.monotonic()
    code = subprocess.call([sys.executable, "-m", "mutmut", "run", f"{dotted(path)}.*"], cwd=ROOT)
    if code != 0:
        raise SystemExit(f"mutation_report: mutmut run failed on {path} (exit code {code})")
    return time.monotonic() - start


def results() -> dict[str, str]:
    """Every mutant mutmut knows of -> its status ("killed", "survived", "not checked", ...)."""
    out = mutmut("results", "--all", "true")
    if out.returncode != 0:
        raise SystemExit(f"mutation_report: mutmut results failed:\n{out.stdout}{out.stderr}")
    return {m.group(1): m.group(2).strip() for m in map(RESULT_LINE.match, out.stdout.splitlines()) if m}


def natural(name: str) -> tuple[str, int]:
    """Sort ``f__mutmut_2`` before ``f__mutmut_12``."""
    stem, _, number = name.rpartition("_")
    return (stem, int(number)) if number.isdigit() else (name, 0)


def summarise(path: str, statuses: dict[str, str], runtime: float) -> dict[str, object]:
    prefix = dotted(path) + "."
    mine = {name: s for name, s in statuses.items() if name.startswith(prefix)}
    counts: dict[str, int] = {}
    for status in mine.values():
        counts[status] = counts.get(status, 0) + 1
    killed = sum(counts.get(s, 0) for s in KILLED)
    tested = len(mine) - counts.get("skipped", 0)
    return {
        "sha256": hashlib.sha256((ROOT / path).read_bytes()).hexdigest(),
        "total": len(mine),
        "killed": killed,
        "survived": counts.get("survived", 0),
        "other": {s: n for s, n in sorted(counts.items()) if s not in (*KILLED, "survived")},
        "score": round(killed / tested, 4) if tested else None,
        "runtime_seconds": round(runtime, 1),
        "survivors": sorted((n for n, s in mine.items() if s == "survived"), key=natural),
    }


def write_markdown(report: dict[str, object], notes: dict[str, str]) -> None:
    modules: dict[str, dict[str, object]] = report["modules"]  # type: ignore[assignment]
    lines = [
        "# Mutation testing",
        "",
        "Generated by `python3 dev.py mutate [MODULE ...]` (`scripts/mutation_report.py`, mutmut "
        f"{report['mutmut']}); do not edit by hand. Data: `benchmarks/results/mutation.json`.",
        "",
        "mutmut mutates a module (one small change per mutant: an operator, a constant, an argument) and",
        "runs the equation tests (`tests/test_equations/common`, `tests/test_equations/titans`) that",
        "executed the mutated function. A mutant is killed when a test fails. Score = (killed + timeout) /",
        "(total - skipped). Target (issue 8): at least 90 % per module, every survivor killed by a new test",
        "or listed as equivalent with a reason. Runtime: wall time of the module's `mutmut run` on 2 CPU",
        "cores; mutants already checked in the `mutants/` cache are not rerun (`--fresh` clears it), and the",
        "first module of a run also pays for mutmut's one pass over the tests to see which test runs what.",
        "",
        "| module | killed | survived | other | total | score | runtime | date | commit | source sha256 |",
        "|---|---:|---:|---|---:|---:|---:|---|---|---|",
    ]
    for path, m in sorted(modules.items()):
        score = "n/a" if m["score"] is None else f"{100 * m['score']:.1f} %"
        other = ", ".join(f"{k} {v}" for k, v in m["other"].items()) or "-"  # type: ignore[union-attr]
        lines.append(
            f"| `{path}` | {m['killed']} | {m['survived']} | {other} | {m['total']} | {score} "
            f"| {m['runtime_seconds']} s | {m['date']} | `{str(m['commit'])[:10]}` "
            f"| `{str(m['sha256'])[:12]}` |"
        )
    lines += ["", "Modules not in the table have not been run yet.", "", "## Surviving mutants", ""]
    for path, m in sorted(modules.items()):
        survivors: list[str] = m["survivors"]  # type: ignore[assignment]
        # Mutants that survived an earlier run and that a new test now kills keep their note here.
        mine = (n for n in notes if n.startswith(dotted(path) + ".") and n not in survivors)
        fixed = sorted(mine, key=natural)
        lines.append(f"### `{path}` ({len(survivors)} surviving)")
        lines.append("")
        lines += [f"- `{n}`: {notes.get(n, 'not yet analysed')}" for n in survivors] or ["None."]
        if fixed:
            lines += ["", "Survived an earlier run:", ""]
            lines += [f"- `{n}`: {notes[n]}" for n in fixed]
        lines.append("")
    lines += [
        "Show one with `mutmut show NAME` after a run (the `mutants/` directory is not committed).",
        "",
        "## Next steps",
        "",
        "- A CI freshness check: fail when a module's sha256 above differs from its source (the report is",
        "  older than the code). Not added yet; the mutation run itself stays out of `.ci/run`.",
        "- Run every module of `common/` and `titans/`, analyse the survivors, per-equation scores, and",
        "  show an equation's score in `neural-memory equations`.",
        "",
    ]
    MD_PATH.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("modules", nargs="*", help="module paths or dotted names (default: all)")
    parser.add_argument("--fresh", action="store_true", help="delete mutmut's cache (mutants/) first")
    parser.add_argument("--markdown-only", action="store_true", help="rewrite docs/mutation.md, run nothing")
    args = parser.parse_args(argv)
    if args.fresh:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    paths = [module_path(m) for m in args.modules] or default_modules()
    commit = git_commit()  # the code that is mutated, before anything else is committed
    notes = json.loads(NOTES_PATH.read_text()) if NOTES_PATH.exists() else {}
    if args.markdown_only:
        write_markdown(json.loads(JSON_PATH.read_text()), notes)
        print(f"wrote {MD_PATH.relative_to(ROOT)} from {JSON_PATH.relative_to(ROOT)}")
        return 0
    runtimes = {path: run_module(path) for path in paths}
    statuses = results()
    report = json.loads(JSON_PATH.read_text()) if JSON_PATH.exists() else {"modules": {}}
    version = mutmut("--version").stdout.strip().rsplit(" ", 1)[-1]
    report["mutmut"] = version or "unknown"
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    for path in paths:
        report["modules"][path] = {
            "date": date,
            "commit": commit,
            **summarise(path, statuses, runtimes[path]),
        }
    JSON_PATH.parent.mkdir(parents=True, exist_ok=True)
    JSON_PATH.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    write_markdown(report, notes)
    for path in paths:
        m = report["modules"][path]
        print(f"{path}: {m['killed']}/{m['total']} killed, {m['survived']} survived, score {m['score']}")
    print(f"wrote {JSON_PATH.relative_to(ROOT)} and {MD_PATH.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
