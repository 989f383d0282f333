"""``neural-memory equations``: which equation is implemented where, and which tests prove it.

The logic lives in :mod:`neural_memory.registry.report`; this module only declares the arguments.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from neural_memory.registry import PAPERS

DESCRIPTION = """\
Print every numbered equation of the pinned paper versions with the objects that implement it
(@implements claims) and the tests that verify it (@pytest.mark.equation markers, read by pytest
collection; no test is run). Status: verified (implemented and tested), implemented (no test),
tested (no implementing object), missing, n/a (the project decided not to implement it)."""


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
        help="exit 1 on unknown citations, implement-kind equations without tests, or n/a equations "
        "that are implemented",
    )
    parser.add_argument(
        "--tests",
        type=Path,
        metavar="PATH",
        help="tests folder to collect markers from (default: the repository's tests/, else ./tests)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from neural_memory.registry import report

    if args.tests is not None and not args.tests.is_dir():
        raise SystemExit(f"neural-memory equations: error: --tests {args.tests}: not a directory")
    output = "json" if args.json else "markdown" if args.markdown else "table"
    return report.run(paper=args.paper, output=output, check=args.check, tests_dir=args.tests)
