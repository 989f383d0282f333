"""``neural-memory figures RUN_DIR``: PNG figures of what a trained Titans model's memory does on a sequence.

The work is done by :func:`neural_memory.figures.make_figures`; this module only checks the input and turns
errors into one-line messages.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Figures of a run of `neural-memory train` with a Titans kind (titans-mac, titans-mag, titans-mal,
titans-lmm). The model reads one sequence of the run's own task (a recall sequence, or a window of the
held-out tail of its text file) and one of its memories is traced token by token with the reference
recurrence (Titans Eq. 13-14). Writes into --out (default RUN_DIR/figures):
  surprise.png        gradient norm, momentary surprise and momentum norm per token
  memory_updates.png  how much every row of every memory weight matrix changed at every token
  forgetting.png      recall of old key-value pairs vs their age for forget rates 0, 0.01, 0.05, 0.2
                      (a fresh memory of the run's width and depth with fixed gates)
  dashboard.png       loss curves (RUN_DIR/metrics.jsonl), gates and memory weight norms
  figures.json        the numbers behind every plot"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "figures",
        help="PNG figures of a Titans run's memory: surprise, row updates, forgetting, dashboard",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run directory (holds checkpoint.pt)")
    parser.add_argument("--out", type=Path, metavar="DIR", help="output directory (default RUN_DIR/figures)")
    parser.add_argument("--seq-len", type=int, metavar="N", help="tokens to trace (default: run's seq_len)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="seed of sequence and probe (0)")
    parser.add_argument("--memory", type=int, default=0, metavar="I", help="which memory, 0 = first block's")
    parser.set_defaults(run=run)


def _fail(message: str) -> SystemExit:
    return SystemExit(f"neural-memory figures: error: {message}")


def _first_line(error: BaseException) -> str:
    text = str(error)
    return text.splitlines()[0] if text else type(error).__name__


def run(args: argparse.Namespace) -> int:
    from neural_memory.figures import FIGURES, write_figures
    from neural_memory.training import checkpoint_path

    if args.seq_len is not None and args.seq_len < 1:
        raise _fail(f"--seq-len must be an integer >= 1, got {args.seq_len}")
    if not args.run_dir.exists():
        raise _fail(f"{args.run_dir}: no such directory")
    file = checkpoint_path(args.run_dir)
    if not file.is_file():
        raise _fail(f"{args.run_dir}: no checkpoint ({file} is missing)")
    model, config, step = _load(file)
    out = args.out if args.out is not None else file.parent / "figures"
    options = {"seq_len": args.seq_len, "seed": args.seed, "memory": args.memory}
    try:
        data = write_figures(model, config, step, file.parent, out, **options)
    except (FileNotFoundError, ValueError, TypeError) as error:
        raise _fail(_first_line(error)) from error
    except OSError as error:
        raise _fail(f"cannot write the figures to {out}: {_first_line(error)}") from error
    r = data["run"]
    print(
        f"kind={r['kind']} step={r['step']} memory={r['memory_index']}/{r['memories']} tokens={r['seq_len']} "
        f"replay_error={r['replay_max_abs_error']:.1e}: wrote {', '.join(FIGURES)} and figures.json to {out}"
    )
    return 0


def _load(file: Path):
    from neural_memory.figures import load_run
    from neural_memory.training import UNREADABLE_CHECKPOINT_ERRORS

    try:
        return load_run(file)
    except UNREADABLE_CHECKPOINT_ERRORS as error:
        raise _fail(f"{file}: not a readable checkpoint ({_first_line(error)})") from error
