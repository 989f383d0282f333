"""Options shared by ``neural-memory experiment`` and ``neural-memory reproduce`` (no torch at import)."""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

SCALES = ("test", "tiny", "small", "medium")  # keys of neural_memory.experiments.base.SCALES


def add_common_options(parser: argparse.ArgumentParser, *, default_scale: str | None) -> None:
    help_scale = "test (seconds, for the tests), tiny (minutes), small, medium"
    if default_scale is not None:
        help_scale += f" (default {default_scale})"
    parser.add_argument("--scale", choices=SCALES, default=default_scale, help=help_scale)
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="output directory (default results/<timestamp>); run again with the same DIR to resume",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--text",
        type=Path,
        metavar="PATH",
        help="text file of the LM experiments (default: generated sentences)",
    )
    source.add_argument(
        "--dataset",
        metavar="NAME",
        help="a named dataset instead of --text (`neural-memory data list`), downloaded on first use",
    )
    parser.add_argument("--seeds", type=int, nargs="+", metavar="S", help="seeds (default: the scale's)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="torch intra-op threads (default 1: the models are small, and on a shared CPU a second thread "
        "made training 30x slower in our measurements)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def fail(command: str, message: str) -> SystemExit:
    """An error exit with one line on stderr, no traceback."""
    return SystemExit(f"neural-memory {command}: error: {message}")


def context(args: argparse.Namespace, command: str):
    """The experiment :class:`~neural_memory.experiments.base.Context` of the parsed arguments."""
    from neural_memory.experiments.base import Context, get_scale

    if args.dataset is not None:
        from neural_memory.datasets import dataset_path

        try:
            args.text = dataset_path(args.dataset, progress=False if args.no_progress else None)
        except (ValueError, OSError) as error:
            raise fail(command, f"--dataset {args.dataset}: {error}") from error
    if args.text is not None and not args.text.is_file():
        raise fail(command, f"--text {args.text}: no such file")
    if args.seeds is not None and any(s < 0 for s in args.seeds):
        raise fail(command, f"--seeds must be integers >= 0, got {args.seeds}")
    if args.threads < 1:
        raise fail(command, f"--threads must be an integer >= 1, got {args.threads}")
    _configure_process(args.threads)
    scale = get_scale(args.scale)
    out = args.out
    if out is None:
        out = Path("results") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    seeds = tuple(args.seeds) if args.seeds is not None else scale.seeds
    progress = False if args.no_progress else None
    return Context(scale, out, seeds, text=args.text, progress=progress)


def _configure_process(threads: int) -> None:
    import torch

    from neural_memory.common.runtime import configure_allocator

    configure_allocator()  # this process owns its allocator, as `neural-memory train` does
    torch.set_num_threads(threads)


def check_text(ctx, command: str) -> None:
    """Fail early, with a clear message, if the text cannot hold one training window."""
    if ctx.text is None:
        return
    from neural_memory.data import TextData

    try:
        TextData(ctx.text).check_seq_len(ctx.scale.seq_len)
    except (ValueError, FileNotFoundError) as error:
        raise fail(command, str(error)) from error
