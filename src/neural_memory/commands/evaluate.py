"""``neural-memory evaluate CHECKPOINT``: loss, bits per byte and perplexity of a trained model on a text
(read as one stream, however long), or its accuracy on a generated task."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TASKS = ("recall", "needle")  # neural_memory.evaluation.TASKS (kept here: no torch at import)

DESCRIPTION = """\
Evaluate a checkpoint of `neural-memory train` (a run directory or its checkpoint.pt).
With --text PATH: the model reads the whole file as one stream, --chunk bytes per call (default: its training
length) with its state carried across calls, and reports the loss (nats per byte), bits per byte and
perplexity of every predicted byte. With --task NAME: accuracy on generated samples (recall: answer bytes;
needle: exact match of the needle, prompts of --length bytes). Without either: the held-out tail of the
text the model trained on, or its recall task."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="loss/bpb/perplexity or task accuracy of a trained checkpoint",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "checkpoint", type=Path, metavar="CHECKPOINT", help="run directory or checkpoint file"
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--text", type=Path, metavar="PATH", help="text file read as one stream")
    source.add_argument("--task", choices=TASKS, metavar="NAME", help=f"generated task: {', '.join(TASKS)}")
    parser.add_argument("--chunk", type=int, metavar="N", help="bytes per forward call (default: seq_len)")
    parser.add_argument("--max-bytes", type=int, metavar="N", help="read at most the first N bytes")
    parser.add_argument("--samples", type=int, default=200, metavar="N", help="task samples (default 200)")
    parser.add_argument("--length", type=int, metavar="N", help="needle prompt bytes (default: seq_len)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.set_defaults(run=run)


def _fail(message: str) -> SystemExit:
    return SystemExit(f"neural-memory evaluate: error: {message}")


def _load(path: Path):
    from neural_memory.training import UNREADABLE_CHECKPOINT_ERRORS, checkpoint_path, load_model

    if not path.exists():
        raise _fail(f"{path}: no such file or directory")
    try:
        return load_model(path)
    except FileNotFoundError as error:
        raise _fail(str(error)) from error
    except UNREADABLE_CHECKPOINT_ERRORS as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise _fail(f"{checkpoint_path(path)}: not a readable checkpoint ({first})") from error


def _check_positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise _fail(f"{name} must be an integer >= 1, got {value}")


def run(args: argparse.Namespace) -> int:
    for name in ("--chunk", "--max-bytes", "--samples", "--length"):
        _check_positive(name, getattr(args, name[2:].replace("-", "_")))
    if args.text is not None and not args.text.is_file():
        raise _fail(f"--text {args.text}: no such file")
    model, config = _load(args.checkpoint)
    model.eval()
    metrics = _metrics(args, model, config)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
    return 0


def _metrics(args: argparse.Namespace, model, config) -> dict:
    from neural_memory.data import TextData, read_bytes
    from neural_memory.evaluation import stream_loss, task_accuracy

    task = args.task if args.task is not None else (None if args.text or config.text else "recall")
    if task is not None:
        return {
            "kind": config.kind,
            **task_accuracy(model, config, task, samples=args.samples, length=args.length),
        }
    try:
        if args.text is not None:
            data, source = read_bytes(args.text), str(args.text)
        else:
            data, source = (
                TextData(config.text, val_fraction=config.val_fraction).val,
                f"{config.text} (held out)",
            )
    except (OSError, ValueError) as error:
        raise _fail(str(error)) from error
    if args.max_bytes is not None:
        data = data[: args.max_bytes]
    if data.numel() < 2:
        raise _fail(f"{source}: needs at least 2 bytes to predict one")
    chunk = args.chunk if args.chunk is not None else config.seq_len
    return {"kind": config.kind, "text": source, "chunk": chunk, **stream_loss(model, data, chunk)}
