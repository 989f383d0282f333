"""Mutation testing of the equation modules with mutmut, and the committed report (issue 8, section 2).

    python scripts/mutation_report.py                                  # every module of the four packages
    python scripts/mutation_report.py src/neural_memory/common/scan.py # some modules (paths or dotted names)
    python scripts/mutation_report.py --fresh ...    # clear mutmut's cache build/mutation/mutants first
    python scripts/mutation_report.py --markdown-only # rewrite docs/mutation.md from the JSON (new notes)
    python scripts/mutation_report.py --check         # exit 1 if a reported module changed since its run

mutmut's settings are in pyproject.toml (``[tool.mutmut]``): it copies ``src`` to ``mutants/``, mutates
the modules of ``common/``, ``titans/``, ``miras/`` and ``nl/`` and runs, for each mutant, the equation
tests under ``tests/test_equations/{common,titans,miras,nl}`` that executed the mutated function. mutmut
never mutates a decorated function, and ``@implements`` decorates exactly the functions that compute the
equations, so mutmut runs in a stage, ``build/mutation``: a copy of ``pyproject.toml``, ``tests`` and
``src`` in which each ``@implements`` of a function becomes a call after its definition
(:func:`unwrap_implements`); the working tree is never touched. This script runs ``mutmut run`` once per
requested module (so each gets its own runtime; ``--fresh`` first deletes mutmut's cache
``build/mutation/mutants``), reads ``mutmut results --all true`` and merges the counts into
``benchmarks/results/mutation.json``, then writes ``docs/mutation.md`` from that file. Modules not
requested keep their previous entry. Each entry records the sha256 of the module's source, so a later
check can tell that the report is older than the code.

Score = (killed + timeout) / (total - skipped), as mutmut's own badge counts it. A survivor's note comes
from ``scripts/mutation_notes.json`` (mutant name -> "killed by new test X" / "equivalent: reason"),
else "not yet analysed"; a noted mutant that no longer survives is still listed with its note.

Per equation: the mutants inside the objects that claim it with ``@implements`` (a claimed class counts
all its methods), summed over the claims; helpers the claimed code calls are counted in their module's
score only. ``neural-memory equations`` shows this score beside the status, marked stale when a module
it comes from changed since its run (``--check`` here fails on such a module).
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
PACKAGE_DIRS = (
    "src/neural_memory/common",
    "src/neural_memory/titans",
    "src/neural_memory/miras",
    "src/neural_memory/nl",
)
JSON_PATH = ROOT / "benchmarks" / "results" / "mutation.json"
MD_PATH = ROOT / "docs" / "mutation.md"
STAGE = ROOT / "build" / "mutation"  # mutmut's working directory: a copy of src (unwrapped) and tests
NOTES_PATH = ROOT / "scripts" / "mutation_notes.json"
KILLED = ("killed", "timeout", "caught by type check")
RESULT_LINE = re.compile(r"^\s+(\S+): (.+)$")
SEPARATOR = "\u01c1"  # mutmut's mangling: module.x_function, module.x<SEP>Class<SEP>method


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
    return subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=STAGE, capture_output=True, text=True)


def unwrap_implements(source: str) -> str:
    """``@implements(...)`` on a function rewritten as ``f = implements(...)(f)`` after its definition.

    mutmut leaves every decorated function unmutated (a decorator runs at definition time), and the
    decorated functions are exactly the ones that compute the equations. The rewritten module registers
    the same claims; it exists only in the mutation stage (:func:`prepare_stage`), never in ``src``.
    """
    import libcst as cst

    class Unwrap(cst.CSTTransformer):
        def leave_FunctionDef(self, original, updated):
            claims = [d for d in updated.decorators if _is_implements(d.decorator)]
            if not claims or len(claims) != len(updated.decorators):
                return updated  # another decorator too: left as it is (mutmut skips it either way)
            name = updated.name.value
            value: cst.BaseExpression = cst.Name(name)
            for decorator in reversed(claims):  # the decorator nearest the def applies first
                value = cst.Call(func=decorator.decorator, args=[cst.Arg(value)])
            assign = cst.SimpleStatementLine(
                [cst.Assign(targets=[cst.AssignTarget(cst.Name(name))], value=value)]
            )
            return cst.FlattenSentinel([updated.with_changes(decorators=[]), assign])

    return cst.parse_module(source).visit(Unwrap()).code


def has_decorated_claims(path: Path) -> bool:
    """Whether a module has a function decorated with ``@implements`` (which mutmut alone would skip)."""
    text = path.read_text() if path.is_file() else ""
    return "@implements" in text and unwrap_implements(text) != text


def _is_implements(node) -> bool:
    import libcst as cst

    return isinstance(node, cst.Call) and isinstance(node.func, cst.Name) and node.func.value == "implements"


def prepare_stage() -> None:
    """Copy the configuration, the tests and ``src`` (the mutated packages unwrapped) into the stage.

    mutmut runs in ``build/mutation`` (its cache ``mutants/`` too), so the working tree is never touched.
    """
    STAGE.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / "pyproject.toml", STAGE / "pyproject.toml")
    for name in ("src", "tests"):
        shutil.rmtree(STAGE / name, ignore_errors=True)
        shutil.copytree(ROOT / name, STAGE / name, ignore=shutil.ignore_patterns("__pycache__"))
    for d in PACKAGE_DIRS:
        for path in (STAGE / d).glob("*.py"):
            text = path.read_text()
            if "@implements" in text:
                path.write_text(unwrap_implements(text))


def run_module(path: str) -> float:
    """Run mutmut on one module's mutants; return the wall time in seconds."""
    print(f"\n--- mutmut run {dotted(path)}.* ---", flush=True)
    start = time.monotonic()
    code = subprocess.call([sys.executable, "-m", "mutmut", "run", f"{dotted(path)}.*"], cwd=STAGE)
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


def function_of(mutant: str) -> str:
    """``pkg.mod.x_f__mutmut_3`` -> ``pkg.mod.x_f`` (the mangled function the mutant lives in)."""
    stem, sep, number = mutant.rpartition("__mutmut_")
    if not sep or not number.isdigit():
        raise ValueError(f"not a mutmut mutant name: {mutant!r}")
    return stem


def function_counts(statuses: dict[str, str]) -> dict[str, dict[str, int]]:
    """Per mangled function: mutants ``killed`` (killed or timed out) and ``tested`` (all but skipped)."""
    counts: dict[str, dict[str, int]] = {}
    for name, status in statuses.items():
        if status == "skipped":
            continue
        entry = counts.setdefault(function_of(name), {"killed": 0, "tested": 0})
        entry["tested"] += 1
        entry["killed"] += status in KILLED
    return dict(sorted(counts.items()))


def claim_prefixes(where: str, is_class: bool) -> tuple[str, ...]:
    """The mangled names a ``module:qualname`` claim covers: a function, a method, or a class's methods."""
    module, _, qualname = where.partition(":")
    parts = qualname.split(".")
    if is_class:
        return (f"{module}.x{SEPARATOR}{qualname}{SEPARATOR}",)
    if len(parts) == 2:  # a method
        return (f"{module}.x{SEPARATOR}{parts[0]}{SEPARATOR}{parts[1]}",)
    return (f"{module}.x_{qualname}",)


def covers(prefix: str, function: str) -> bool:
    # a class prefix ends with the separator; a function must match whole (x_f is not x_f2's prefix)
    return function.startswith(prefix) if prefix.endswith(SEPARATOR) else function == prefix


def equation_scores(
    modules: dict[str, dict[str, object]],
    implementations: dict[tuple[str, object], list[str]],
    classes: set[str],
) -> list[dict[str, object]]:
    """Per claimed equation: the mutants of its claiming objects, from the reported modules' counts.

    ``modules``: the report's module entries (each with ``functions``); ``implementations``: the
    registry's claims ``{(paper, number): ["module:qualname", ...]}``; ``classes``: the claims that
    are classes. An equation whose claims lie in modules not yet run is left out; one with some
    claims in run modules lists the others under ``not_run``.
    """
    by_module = {dotted(path): (path, entry) for path, entry in modules.items()}
    rows = []
    for (paper, number), claims in implementations.items():
        counted: dict[str, dict[str, int]] = {}  # a class and its own method may both claim it: once each
        used: dict[str, str] = {}
        not_run = []
        for where in sorted(claims):
            module = where.partition(":")[0]
            if module not in by_module or "functions" not in by_module[module][1]:
                not_run.append(where)
                continue
            path, entry = by_module[module]
            used[path] = str(entry["sha256"])
            for prefix in claim_prefixes(where, where in classes):
                for function, c in entry["functions"].items():  # type: ignore[union-attr]
                    if covers(prefix, function):
                        counted[function] = c
        if not used:
            continue
        killed = sum(c["killed"] for c in counted.values())
        tested = sum(c["tested"] for c in counted.values())
        if not tested:  # claimed by code without mutants (a module run before the stage: decorated, skipped)
            continue
        rows.append(
            {
                "paper": paper,
                "number": number,
                "killed": killed,
                "tested": tested,
                "score": round(killed / tested, 4) if tested else None,
                "sha256": used,
                "not_run": not_run,
            }
        )
    return sorted(rows, key=lambda r: (str(r["paper"]), _number_key(r["number"])))


def _number_key(number: object) -> tuple[int, str]:
    text = str(number)
    digits = "".join(ch for ch in text if ch.isdigit())
    return (int(digits) if digits and text[0].isdigit() else 10**6, text)


def stale_modules(modules: dict[str, dict[str, object]]) -> list[str]:
    """The reported modules whose source no longer has the sha256 recorded with their run."""
    stale = []
    for path, entry in sorted(modules.items()):
        source = ROOT / path
        current = hashlib.sha256(source.read_bytes()).hexdigest() if source.is_file() else None
        if current != entry["sha256"]:
            stale.append(path)
    return stale


def claims() -> tuple[dict[tuple[str, object], list[str]], set[str]]:
    """The package's ``@implements`` claims and which of them are classes (imports the package)."""
    import inspect

    sys.path.insert(0, str(ROOT / "src"))
    from neural_memory.registry import claimed_object, discover_implementations

    implementations = discover_implementations()
    classes = {w for ws in implementations.values() for w in ws if inspect.isclass(claimed_object(w))}
    return implementations, classes


def summarise(path: str, statuses: dict[str, str], runtime: float) -> dict[str, object]:
    prefix = dotted(path) + "."
    mine = {name: s for name, s in statuses.items() if name.startswith(prefix)}
    counts: dict[str, int] = {}
    for status in mine.values():
        counts[status] = counts.get(status, 0) + 1
    killed = sum(counts.get(s, 0) for s in KILLED)
    tested = len(mine) - counts.get("skipped", 0)
    return {
        "functions": function_counts(mine),
        "sha256": hashlib.sha256((ROOT / path).read_bytes()).hexdigest(),
        "total": len(mine),
        "killed": killed,
        "survived": counts.get("survived", 0),
        "other": {s: n for s, n in sorted(counts.items()) if s not in (*KILLED, "survived")},
        "score": round(killed / tested, 4) if tested else None,
        "runtime_seconds": round(runtime, 1),
        "survivors": sorted((n for n, s in mine.items() if s == "survived"), key=natural),
    }


def markdown_safe(note: str) -> str:
    """``note`` with each ``[`` outside code spans escaped: the docs site (mkdocs autorefs, strict) reads
    ``x[a][1]`` in plain text as a reference link to ``1`` and fails the build."""
    parts = note.split("`")
    return "`".join(p if i % 2 else p.replace("[", "\\[") for i, p in enumerate(parts))


def write_markdown(report: dict[str, object], notes: dict[str, str]) -> None:
    modules: dict[str, dict[str, object]] = report["modules"]  # type: ignore[assignment]
    lines = [
        "# Mutation testing",
        "",
        "Generated by `python3 dev.py mutate [MODULE ...]` (`scripts/mutation_report.py`, mutmut "
        f"{report['mutmut']}); do not edit by hand. Data: `benchmarks/results/mutation.json`.",
        "",
        "mutmut mutates a module (one small change per mutant: an operator, a constant, an argument) and",
        "runs the equation tests (`tests/test_equations/{common,titans,miras,nl}`) that",
        "executed the mutated function. A mutant is killed when a test fails. Score = (killed + timeout) /",
        "(total - skipped). Target (issue 8): at least 90 % per module, every survivor killed by a new test",
        "or listed as equivalent with a reason. Runtime: wall time of the module's `mutmut run` on 2 CPU",
        "cores; mutants already checked in the cache are not rerun (`--fresh` clears it), and the",
        "first module of a run also pays for mutmut's one pass over the tests to see which test runs what.",
        "",
        "Survivors are split into those noted as equivalent (with the reason, below) and the rest (not",
        "equivalent but not killable here, or not yet analysed); the target holds for a module when its",
        "score is at least 90 % or every survivor is a noted equivalent.",
        "",
        "| module | killed | survived (equivalent / other) | other status | total | score | target | runtime "
        "| date | commit | source sha256 |",
        "|---|---:|---:|---|---:|---:|---|---:|---|---|---|",
    ]
    for path, m in sorted(modules.items()):
        score = "n/a" if m["score"] is None else f"{100 * m['score']:.1f} %"
        other = ", ".join(f"{k} {v}" for k, v in m["other"].items()) or "-"  # type: ignore[union-attr]
        equivalent, rest = split_survivors(m["survivors"], notes)  # type: ignore[arg-type]
        met = "met" if (m["score"] or 0) >= 0.9 or not rest else "not met"  # type: ignore[operator]
        if not m.get("equation_functions_mutated") and has_decorated_claims(ROOT / path):
            met = "not met: run before the stage, its `@implements` functions were not mutated"
        lines.append(
            f"| `{path}` | {m['killed']} | {m['survived']} ({len(equivalent)} / {len(rest)}) | {other} "
            f"| {m['total']} | {score} | {met} | {m['runtime_seconds']} s | {m['date']} "
            f"| `{str(m['commit'])[:10]}` | `{str(m['sha256'])[:12]}` |"
        )
    not_run = [path for path in default_modules() if path not in modules]
    lines += [""]
    if not_run:
        lines += ["Not run yet (no score, target not met):", ""]
        lines += [f"- `{path}`" for path in not_run]
    else:
        lines += ["Every module of the four packages has been run."]
    lines += [""]
    lines += equation_lines(report.get("equations", []))  # type: ignore[arg-type]
    lines += ["## Surviving mutants", ""]
    for path, m in sorted(modules.items()):
        survivors: list[str] = m["survivors"]  # type: ignore[assignment]
        # Mutants that survived an earlier run and that a new test now kills keep their note here.
        mine = (n for n in notes if n.startswith(dotted(path) + ".") and n not in survivors)
        fixed = sorted(mine, key=natural)
        lines.append(f"### `{path}` ({len(survivors)} surviving)")
        lines.append("")
        noted = (markdown_safe(notes.get(n, "not yet analysed")) for n in survivors)
        lines += [f"- `{n}`: {note}" for n, note in zip(survivors, noted, strict=True)] or ["None."]
        if fixed:
            lines += ["", "Survived an earlier run:", ""]
            lines += [f"- `{n}`: {markdown_safe(notes[n])}" for n in fixed]
        lines.append("")
    lines += [
        "Show one with `mutmut show NAME` in `build/mutation` after a run (mutmut runs there, on a copy",
        "of `src` in which `@implements` is applied after each definition, since mutmut never mutates a",
        "decorated function; nothing there is committed).",
        "",
        "## Freshness",
        "",
        "`python scripts/mutation_report.py --check` fails when a module's source no longer has the sha256",
        "recorded above (the report is older than the code); `neural-memory equations` marks the scores",
        "that come from such a module as stale.",
        "",
    ]
    MD_PATH.write_text("\n".join(lines))


def split_survivors(survivors: list[str], notes: dict[str, str]) -> tuple[list[str], list[str]]:
    """``(noted as equivalent, the rest)``: a note starting with "equivalent" counts as the former."""
    equivalent = [n for n in survivors if notes.get(n, "").startswith("equivalent")]
    return equivalent, [n for n in survivors if n not in equivalent]


def equation_lines(rows: list[dict[str, object]]) -> list[str]:
    if not rows:
        return []
    lines = [
        "## Per equation",
        "",
        "The mutants inside the functions and classes that claim the equation with `@implements` (a class:",
        "all its methods); the helpers they call count in their module's score only. Claims in modules",
        "not yet run are listed and left out of the count.",
        "",
        "| paper | Eq. | killed / tested | score | modules | claims not run |",
        "|---|---:|---:|---:|---|---|",
    ]
    for r in rows:
        score = "n/a" if r["score"] is None else f"{100 * r['score']:.1f} %"  # type: ignore[operator]
        modules = ", ".join(f"`{Path(m).name}`" for m in r["sha256"])  # type: ignore[union-attr]
        not_run = ", ".join(f"`{w}`" for w in r["not_run"]) or "-"  # type: ignore[union-attr]
        counts = f"{r['killed']} / {r['tested']}"
        lines.append(f"| {r['paper']} | {r['number']} | {counts} | {score} | {modules} | {not_run} |")
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("modules", nargs="*", help="module paths or dotted names (default: all)")
    parser.add_argument("--fresh", action="store_true", help="delete mutmut's cache first")
    parser.add_argument("--markdown-only", action="store_true", help="rewrite docs/mutation.md, run nothing")
    parser.add_argument("--check", action="store_true", help="fail if a module changed since its run")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_modules(json.loads(JSON_PATH.read_text())["modules"])
        for path in stale:
            print(f"stale: {path} changed since its mutation run; python3 dev.py mutate {path}")
        print(f"mutation report: {len(stale)} stale module(s)" if stale else "mutation report: up to date")
        return 1 if stale else 0
    if args.fresh:
        shutil.rmtree(STAGE / "mutants", ignore_errors=True)
    paths = [module_path(m) for m in args.modules] or default_modules()
    commit = git_commit()  # the code that is mutated, before anything else is committed
    notes = json.loads(NOTES_PATH.read_text()) if NOTES_PATH.exists() else {}
    if args.markdown_only:
        report = json.loads(JSON_PATH.read_text())
        report["equations"] = equation_scores(report["modules"], *claims())
        JSON_PATH.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        write_markdown(report, notes)
        print(f"wrote {MD_PATH.relative_to(ROOT)} and the equation scores in {JSON_PATH.relative_to(ROOT)}")
        return 0
    prepare_stage()
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
            "equation_functions_mutated": True,  # run in the stage, @implements unwrapped
            **summarise(path, statuses, runtimes[path]),
        }
    report["equations"] = equation_scores(report["modules"], *claims())
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
