#!/usr/bin/env python
"""Refresh the equation status tables in README.md (``neural-memory equations --markdown``).

Replaces everything between ``<!-- equations:start -->`` and ``<!-- equations:end -->``::

    python scripts/update_readme.py            # rewrite README.md
    python scripts/update_readme.py --check    # exit 1, printing a diff, if README.md is stale (CI)

A README without the two markers is an error (put them where the tables belong); a missing README is
created with just the markers and the tables. The statuses come from the status file of the last whole
test run (src/neural_memory/registry/data/status.json): run the tests first; the script names the run
it read, and warns when that run is older than the code.
"""

from __future__ import annotations

import argparse
import difflib
import io
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START = "<!-- equations:start -->"
END = "<!-- equations:end -->"

sys.path.insert(0, str(REPO / "src"))  # run from a checkout without installing


def splice(readme: str, block: str) -> str:
    """``readme`` with the text between the markers replaced by ``block``."""
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < 0 or end < start:
        raise ValueError(f"README needs {START} followed by {END} (one pair) where the tables belong")
    if readme.count(START) != 1 or readme.count(END) != 1:
        raise ValueError(f"README must contain {START} and {END} exactly once each")
    return f"{readme[: start + len(START)]}\n{block.rstrip()}\n{readme[end:]}"


def equations_markdown(tests_dir: Path | None) -> str:
    from neural_memory.registry import report

    out, err = io.StringIO(), io.StringIO()
    report.run(output="markdown", tests_dir=tests_dir, out=out, err=err)
    if err.getvalue():
        sys.stderr.write(err.getvalue())
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 with a diff if README.md is stale")
    parser.add_argument("--readme", type=Path, default=REPO / "README.md", help="default: the repository's")
    parser.add_argument("--tests", type=Path, default=None, help="tests folder (default: the repository's)")
    args = parser.parse_args(argv)

    if args.readme.exists():
        current = args.readme.read_text("utf-8")
    else:
        print(f"{args.readme} does not exist; starting from a README with just the markers", file=sys.stderr)
        current = f"{START}\n{END}\n"
    try:
        updated = splice(current, equations_markdown(args.tests))
    except ValueError as error:
        print(f"{args.readme}: {error}", file=sys.stderr)
        return 1

    if args.check:
        if updated == current and args.readme.exists():
            print(f"{args.readme}: equation tables are up to date")
            return 0
        diff = difflib.unified_diff(
            current.splitlines(keepends=True),
            updated.splitlines(keepends=True),
            "README.md",
            "README.md (fresh)",
        )
        sys.stdout.writelines(diff)
        print(
            f"{args.readme}: equation tables are stale; run python scripts/update_readme.py", file=sys.stderr
        )
        return 1
    if updated != current or not args.readme.exists():
        args.readme.write_text(updated, "utf-8")
        print(f"updated {args.readme}")
    else:
        print(f"{args.readme}: already up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
