"""The ``neural-memory`` command line (also ``python -m neural_memory``).

Each subcommand is one module in :mod:`neural_memory.commands`, found automatically (sorted by name, modules
starting with ``_`` skipped). Adding a command never edits this file: create
``src/neural_memory/commands/<name>.py`` with ::

    def register(subparsers: argparse._SubParsersAction) -> None:
        parser = subparsers.add_parser("train", help="one line shown by `neural-memory --help`")
        parser.add_argument(...)
        parser.set_defaults(run=run)


    def run(args: argparse.Namespace) -> int:  # the exit code
        from neural_memory.models import ...  # heavy imports here, not at module level
        ...

Keep command modules import-light (no torch at import time): every invocation imports all of them to build
the parser, so ``neural-memory --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from types import ModuleType

import neural_memory
import neural_memory.commands


def command_modules() -> list[ModuleType]:
    """Every module of :mod:`neural_memory.commands` that defines ``register``, sorted by name."""
    names = sorted(
        info.name
        for info in pkgutil.iter_modules(neural_memory.commands.__path__)
        if not info.name.startswith("_")
    )
    modules = [importlib.import_module(f"neural_memory.commands.{name}") for name in names]
    return [module for module in modules if hasattr(module, "register")]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neural-memory",
        description="Titans, MIRAS and Nested Learning, equation by equation.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {neural_memory.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in command_modules():
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the chosen command, return its exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except BrokenPipeError:  # `neural-memory equations | head`: the reader left; not an error
        sys.stdout = None  # type: ignore[assignment]  # stop the interpreter flushing into the closed pipe
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
