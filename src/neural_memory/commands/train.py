"""``neural-memory train KIND``: train a byte-level language model of any kind, checkpoint it, resume it.

The loop lives in :mod:`neural_memory.training`; this module only turns arguments into a
:class:`~neural_memory.training.TrainConfig`. Options left out take the ``TrainConfig`` defaults (or, with
``--resume``, the checkpoint's values).
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Train a byte-level language model (vocabulary 256) whose blocks mix with KIND (see the list printed for an
unknown kind). With --text PATH (or --dataset NAME, a named dataset from the cache) it learns the file
(the last 10% held out); without it, the generated associative-recall task (key-value pairs, then queries;
loss and accuracy on the answers only). AdamW (or --optimizer), warmup + cosine schedule, gradient clipping
1.0. Evaluates and saves OUT/checkpoint.pt every --eval-every steps and at the end; --resume continues from
it exactly."""

# Options that map one-to-one to TrainConfig fields (dest, flag, type, metavar, help).
OPTIONS: list[tuple[str, str, type, str, str]] = [
    ("steps", "--steps", int, "N", "total training steps (default 500)"),
    ("seq_len", "--seq-len", int, "L", "tokens per training window (default 128)"),
    ("batch_size", "--batch-size", int, "B", "windows per step (default 32)"),
    ("dim", "--dim", int, "D", "model width (default 64)"),
    ("depth", "--depth", int, "N", "number of blocks (default 2)"),
    ("lr", "--lr", float, "LR", "peak learning rate (default 1e-3)"),
    ("warmup", "--warmup", int, "N", "warmup steps (default min(100, steps/10))"),
    ("eval_every", "--eval-every", int, "N", "evaluate and checkpoint every N steps (default 100)"),
    ("eval_batches", "--eval-batches", int, "N", "held-out batches per evaluation (default 4)"),
    ("seed", "--seed", int, "S", "seed of the initialisation and the data (default 0)"),
    ("recall_pairs", "--recall-pairs", int, "P", "key-value pairs per recall sequence (default 8)"),
]


# --optimizer NAME: one line each (the names are neural_memory.training_optimizers.OPTIMIZER_NAMES; kept
# here so that building the parser imports no torch).
OPTIMIZERS: dict[str, str] = {
    "adamw": "torch.optim.AdamW on every parameter (default)",
    "muon": "NL Muon (Eq. 42) on the hidden nn.Linear weights, AdamW on embeddings, head, norms, biases",
    "torch-muon": "torch.optim.Muon on the hidden nn.Linear weights, AdamW on the rest",
    "m3": "NL M3 (Algorithm 1, EMA reading: decays 0.9/0.999/0.9, eps 0.1) on the hidden nn.Linear "
    "weights, AdamW on the rest",
    "dgd": "Delta Gradient Descent (Eq. 56-57) on every hidden nn.Linear, its inputs recorded by forward "
    "hooks (Gram averaged over the batch's tokens, as the loss); AdamW on the rest",
    "momentum": "GD with momentum (Eq. 33, alpha 0.9) on every parameter",
    "adam-nl": "App. B's Adam form of the element-wise momentum (Eq. 105) on every parameter",
    "dmgd": "Deep Momentum GD (Eq. 50, a 16-unit tanh MLP momentum, alpha 0.9) on every parameter",
    "delta-momentum": "Delta momentum (Eq. 48-49, alpha 0.9, printed correction step 1) on every parameter",
}


def _optimizer_help() -> str:
    lines = "; ".join(f"{name}: {text}" for name, text in OPTIMIZERS.items())
    return f"optimizer (default adamw; fixed on --resume). {lines}"


def parse_assignment(text: str) -> tuple[list[str], Any]:
    """``"key=value"`` → ``(["key"], value)``; dotted keys nest (``memory.chunk_size=16``).

    The value is a Python literal when it parses as one (``16``, ``0.5``, ``True``, ``[1, 2]``), else the
    string itself.
    """
    key, sep, raw = text.partition("=")
    path = key.strip().split(".")
    if not sep or not all(part.isidentifier() for part in path):
        raise argparse.ArgumentTypeError(f"expected key=value with key a (dotted) identifier, got {text!r}")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return path, value


def assignments_to_dict(assignments: list[tuple[list[str], Any]]) -> dict[str, Any]:
    """Nest parsed ``key=value`` pairs into one dict (later assignments win)."""
    config: dict[str, Any] = {}
    for path, value in assignments:
        node = config
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[path[-1]] = value
    return config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a byte-level LM of any kind (text file or associative recall)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("kind", help="model kind, e.g. transformer, titans-mac")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--text", type=Path, metavar="PATH", help="text file (default: associative recall)")
    source.add_argument(
        "--dataset",
        metavar="NAME",
        help="a named dataset instead of --text (`neural-memory data list`), downloaded into the cache on "
        "first use; the checkpoint stores the cached file's path as its text",
    )
    for dest, flag, type_, metavar, help_ in OPTIONS:
        parser.add_argument(flag, dest=dest, type=type_, metavar=metavar, help=help_)
    parser.add_argument("--optimizer", choices=list(OPTIMIZERS), metavar="NAME", help=_optimizer_help())
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        help="fp32 (default) or bf16: the forward pass under CPU autocast to bfloat16, float32 weights",
    )
    parser.add_argument("--out", type=Path, metavar="DIR", help="run directory (default runs/KIND)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    parser.add_argument(
        "--config",
        type=parse_assignment,
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="model config passed to build_lm, e.g. heads=2 or memory.chunk_size=16",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def _fail(message: str) -> SystemExit:
    return SystemExit(f"neural-memory train: error: {message}")


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields the user set explicitly."""
    settings = {dest: getattr(args, dest) for dest, *_ in OPTIONS if getattr(args, dest) is not None}
    if args.optimizer is not None:
        settings["optimizer"] = args.optimizer
    if args.precision is not None:
        settings["precision"] = args.precision
    if args.text is not None:
        settings["text"] = str(args.text)
    if args.config:
        settings["model_config"] = assignments_to_dict(args.config)
    return settings


def _dataset_text(name: str, *, progress: bool | None) -> Path:
    """The cached file of dataset ``name`` (downloaded if missing): ``--dataset`` becomes ``--text``."""
    from neural_memory.datasets import dataset_path

    try:
        return dataset_path(name, progress=progress)
    except (ValueError, OSError) as error:
        raise _fail(f"--dataset {name}: {error}") from error


def _prepare(args: argparse.Namespace, out: Path):
    """Validate everything cheap before training; returns the config (``None`` when resuming)."""
    from neural_memory.models.registry import available_kinds, check_depth, mixer_config
    from neural_memory.training import (
        CHECKPOINT_NAME,
        Task,
        TrainConfig,
        load_checkpoint,
        resume_config,
    )

    kinds = available_kinds()
    if args.kind not in kinds:
        raise _fail(f"unknown kind {args.kind!r}; available kinds: {', '.join(kinds)}")
    if args.dataset is not None:
        args.text = _dataset_text(args.dataset, progress=False if args.no_progress else None)
    if args.text is not None and not args.text.is_file():
        raise _fail(f"--text {args.text}: no such file")
    settings = _settings(args)
    try:
        if args.resume:
            saved = TrainConfig.from_dict(load_checkpoint(out / CHECKPOINT_NAME)["config"])
            config = resume_config(saved, {"kind": args.kind, **settings})
        else:
            config = TrainConfig(kind=args.kind, **settings)
        mixer_config(config.kind, config.model_config)
        check_depth(config.kind, config.depth)
        Task(config)
    except (ValueError, TypeError, FileNotFoundError) as error:
        raise _fail(str(error)) from error
    return None if args.resume else config, settings


def run(args: argparse.Namespace) -> int:
    from neural_memory.common.runtime import configure_allocator
    from neural_memory.distributed import is_main_process, shutdown
    from neural_memory.training import train

    configure_allocator()  # a training process owns its allocator; see neural_memory.common.runtime

    out = args.out if args.out is not None else Path("runs") / args.kind
    config, settings = _prepare(args, out)
    progress = False if args.no_progress else None
    try:
        result = train(config, out, resume=args.resume, overrides=settings, progress=progress)
        if is_main_process():
            print(result.summary())
    finally:
        shutdown()
    return 0
