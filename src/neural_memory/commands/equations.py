"""``neural-memory equations``: which equation is implemented where, and which tests prove it.

The logic lives in :mod:`neural_memory.registry.report`; this module only declares the arguments.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from neural_memory.registry import PAPERS

DESCRIPTION = """\
Print every numbered equation of the pinned paper versions with the objects that implement it
(@implements claims) and the tests marked with it (@pytest.mark.equation, read by pytest collection; no
test is run here). Status: verified (in the last whole test run, recorded in the package's
registry/data/status.json, a passing test marked with the equation executed every object claiming it),
implemented (claimed, not verified), tested (marked tests, nothing claims it), missing, n/a (the project
decided not to implement it; the reason is shown). An installed package (no tests/ next to it) shows the
statuses recorded by the test run it was built from."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "equations",
        help="equation status table: implemented by / tested by",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--paper", choices=PAPERS, help="only this paper (default: all three)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    output.add_argument("--markdown", action="store_true", help="GitHub markdown tables (for the README)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 on claims the last whole test run did not verify, a stale or missing status file, "
        "unknown citations, or n/a equations that are implemented (needs the repository's tests)",
    )
    parser.add_argument(
        "--tests",
        type=Path,
        metavar="PATH",
        help="tests folder to collect markers from (default: the tests/ of the source checkout)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from neural_memory.registry import report

    if args.tests is not None and not args.tests.is_dir():
        raise SystemExit(f"neural-memory equations: error: --tests {args.tests}: not a directory")
    output = "json" if args.json else "markdown" if args.markdown else "table"
    return report.run(paper=args.paper, output=output, check=args.check, tests_dir=args.tests)
