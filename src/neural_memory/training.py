"""Training loop for any :func:`~neural_memory.models.build_lm` kind: byte-level text or associative recall.

AdamW (weight decay on matrices only) or another optimizer by name (``TrainConfig.optimizer``, see
:mod:`neural_memory.training_optimizers`), linear warmup then cosine decay to ``min_lr_ratio * lr``, gradient
clipping, periodic evaluation on held-out data, and checkpoints that make a run resumable bit for bit: the
model, the optimizer, the step, the config and both random states (the data generator and torch's global
one) are saved. Every batch is an independent window (no state carried between batches). Under ``torchrun``
the run is data-parallel over the processes, each on its share of every batch
(:mod:`neural_memory.distributed`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from neural_memory.common import compiled
from neural_memory.data import BYTE_VOCAB, AssociativeRecall, Batch, TextData, answer_accuracy
from neural_memory.distributed import DataParallel, barrier, from_environment, wrap
from neural_memory.models import LanguageModel, build_lm, lm_loss
from neural_memory.training_optimizers import (
    OptimizerChain,
    build_optimizer,
    check_optimizer_name,
    set_learning_rate,
)

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.jsonl"  # one JSON object per scheduled evaluation (see _append_metrics)
CHECKPOINT_FORMAT = 1
VAL_SEED_OFFSET = 1_000_003  # the held-out stream's seed is far from the training seed
# Settings a resumed run may change; everything else must match the checkpoint.
RESUMABLE_CHANGES = ("steps", "eval_every", "eval_batches")
PRECISIONS = ("fp32", "bf16")


def precision_context(precision: str) -> contextlib.AbstractContextManager:
    """Where the forward pass runs: ``"fp32"`` as is, ``"bf16"`` under CPU autocast to bfloat16.

    Autocast runs matmuls, linear layers and convolutions in bfloat16 and keeps reductions such as the
    cross-entropy in float32; the weights, their gradients and the optimizer state stay float32. The test-time
    memories' inner-loop matmuls are inside the forward pass, so they run in bfloat16 too (8 bits of
    mantissa: a choice of speed over the float32 inner loop, measured in ``benchmarks/precision.py``).
    """
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if precision == "fp32":
        return contextlib.nullcontext()
    raise ValueError(f"precision must be one of {', '.join(repr(p) for p in PRECISIONS)}, got {precision!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (saved in the checkpoint).

    ``text=None`` trains on :class:`~neural_memory.data.AssociativeRecall` with ``recall_pairs`` pairs.
    ``warmup=None`` means ``min(100, steps // 10)``. ``model_config`` goes to :func:`build_lm`.
    ``optimizer`` is a name of :data:`~neural_memory.training_optimizers.OPTIMIZER_NAMES`; it is saved
    in the checkpoint, so a resumed run rebuilds the same optimizer (changing it on resume is an error).

    Defaults (issue 7): batch 32 and lr 1e-3. At batch 8 and lr 3e-3 every kind sat on the recall task's
    shortcut plateau (answer accuracy about 0.30, the mode of the pair values) for 2000+ steps; at batch 32
    and lr 1e-3, with unit-normal token embeddings and an untied head, the memory kinds leave it within
    1000 steps (``benchmarks/results/recall_defaults_*.json``).
    """

    kind: str
    text: str | None = None
    steps: int = 500
    seq_len: int = 128
    batch_size: int = 32
    dim: int = 64
    depth: int = 2
    lr: float = 1e-3
    warmup: int | None = None
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_batches: int = 4
    seed: int = 0
    recall_pairs: int = 8
    val_fraction: float = 0.1
    model_config: dict[str, Any] = field(default_factory=dict)
    optimizer: str = "adamw"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        for name in ("steps", "seq_len", "batch_size", "dim", "depth", "eval_every", "eval_batches"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if self.warmup is not None and not (isinstance(self.warmup, int) and self.warmup >= 0):
            raise ValueError(f"warmup must be an int >= 0 or None, got {self.warmup!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay}")
        check_optimizer_name(self.optimizer)
        if self.precision not in PRECISIONS:
            choices = ", ".join(repr(p) for p in PRECISIONS)
            raise ValueError(f"precision must be one of {choices}, got {self.precision!r}")

    @property
    def warmup_steps(self) -> int:
        return min(100, self.steps // 10) if self.warmup is None else self.warmup

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass(frozen=True)
class TrainResult:
    """Summary of a run: final metrics (``val_accuracy`` only for recall) and throughput."""

    kind: str
    steps: int
    train_loss: float
    val_loss: float
    val_accuracy: float | None
    tokens_per_second: float
    checkpoint: Path

    def summary(self) -> str:
        accuracy = "" if self.val_accuracy is None else f" val_accuracy={self.val_accuracy:.3f}"
        return (
            f"kind={self.kind} steps={self.steps} train_loss={self.train_loss:.4f} "
            f"val_loss={self.val_loss:.4f}{accuracy} tokens/s={self.tokens_per_second:.0f} "
            f"checkpoint={self.checkpoint}"
        )


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate of update ``step`` (0-based): linear warmup, then cosine to ``min_lr_ratio * lr``."""
    warmup, peak = config.warmup_steps, config.lr
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, config.steps - warmup))
    floor = config.min_lr_ratio * peak
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))


class Task:
    """The data of a run: training batches from a generator, and a fixed set of held-out batches."""

    def __init__(self, config: TrainConfig):
        self.config = config
        if config.text is None:
            self.text, self.recall = None, AssociativeRecall(config.seq_len, n_pairs=config.recall_pairs)
        else:
            self.text, self.recall = TextData(config.text, val_fraction=config.val_fraction), None
            self.text.check_seq_len(config.seq_len)

    def batch(self, generator: torch.Generator, split: str = "train") -> Batch:
        c = self.config
        if self.text is not None:
            return self.text.batch(split, c.batch_size, c.seq_len, generator)
        return self.recall.batch(c.batch_size, generator)

    def val_batches(self) -> list[Batch]:
        """The same held-out batches at every evaluation (their own generator, untouched by training)."""
        generator = torch.Generator().manual_seed(self.config.seed + VAL_SEED_OFFSET)
        return [self.batch(generator, "val") for _ in range(self.config.eval_batches)]


def build_model(config: TrainConfig) -> LanguageModel:
    """The run's model, initialised from ``config.seed`` without touching the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return build_lm(
            config.kind, vocab_size=BYTE_VOCAB, dim=config.dim, depth=config.depth, **config.model_config
        )


def make_optimizer(model: LanguageModel, config: TrainConfig) -> torch.optim.Optimizer | OptimizerChain:
    """``config.optimizer`` over the model; weight decay on matrices only (not on norm gains, other vectors).

    ``adamw`` is ``torch.optim.AdamW(betas=(0.9, 0.95))``; the others are described in
    :mod:`neural_memory.training_optimizers`.
    """
    return build_optimizer(config.optimizer, model, lr=config.lr, weight_decay=config.weight_decay)


@torch.no_grad()
def evaluate(model: LanguageModel, batches: list[Batch], *, accuracy: bool) -> dict[str, float]:
    """Mean loss over ``batches`` (and answer accuracy when ``accuracy``)."""
    losses, accuracies = [], []
    for batch in batches:
        logits, _ = model(batch.inputs)
        losses.append(lm_loss(logits, batch.targets, batch.loss_mask).item())
        if accuracy:
            accuracies.append(answer_accuracy(logits, batch))
    metrics = {"val_loss": sum(losses) / len(losses)}
    if accuracy:
        metrics["val_accuracy"] = sum(accuracies) / len(accuracies)
    return metrics


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | OptimizerChain,
    batch: Batch,
    lr: float,
    grad_clip: float,
    parallel: DataParallel | None = None,
) -> float:
    """One optimizer update on ``batch`` at learning rate ``lr``; returns the loss before the update.

    The gradients are cleared *before* the forward pass: DGD records the layer inputs during the forward
    and its ``zero_grad`` forgets them. With ``parallel`` (``model`` wrapped by
    :func:`neural_memory.distributed.wrap`) this process trains on its share of the global ``batch`` and
    the returned loss is the global batch's (:mod:`neural_memory.distributed`).

    Raises ``FloatingPointError`` on a non-finite loss, and on a non-finite gradient norm at a finite loss,
    before the optimizer step: the parameters (and a checkpoint saved from them) stay finite.
    """
    set_learning_rate(optimizer, lr)
    optimizer.zero_grad(set_to_none=True)
    if parallel is None:
        logits, _ = model(batch.inputs)
        loss = value = lm_loss(logits, batch.targets, batch.loss_mask)
    else:
        loss, _ = parallel.loss(model, parallel.shard(batch), batch)
        value = parallel.mean(loss)  # every rank sees the same value, so all of them stop on a NaN
    if not torch.isfinite(value):
        raise FloatingPointError(f"training loss is {value.item()}; lower --lr or check the model")
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if not torch.isfinite(norm):  # clipping by it has just made every gradient NaN: stop before the update
        raise FloatingPointError(
            f"gradient norm is {norm.item()} at a finite loss ({value.item():.4g}); the parameters were not "
            "updated; lower --lr or check the model"
        )
    optimizer.step()
    return value.item()


# ------------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------------


def checkpoint_path(path: str | Path) -> Path:
    """``path`` itself if it is a file, else ``path / checkpoint.pt``."""
    path = Path(path)
    return path if path.is_file() else path / CHECKPOINT_NAME


def save_checkpoint(out: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``out / checkpoint.pt`` atomically (a crash never leaves half a file)."""
    out.mkdir(parents=True, exist_ok=True)
    target = out / CHECKPOINT_NAME
    tmp = target.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, target)
    return target


# What torch.load and rebuilding a model raise on a file that is not a good checkpoint of ours (commands
# turn these into one-line errors).
UNREADABLE_CHECKPOINT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    TypeError,
    KeyError,
    RuntimeError,
    EOFError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path`` (a file, or a run directory holding ``checkpoint.pt``)."""
    file = checkpoint_path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no checkpoint at {file}")
    payload = torch.load(file, map_location="cpu", weights_only=True)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{file}: unknown checkpoint format {payload.get('format')!r}")
    return payload


def load_model(path: str | Path) -> tuple[LanguageModel, TrainConfig]:
    """The trained model of a checkpoint and the config it was trained with."""
    payload = load_checkpoint(path)
    config = TrainConfig.from_dict(payload["config"])
    model = build_model(config)
    model.load_state_dict(payload["model"])
    return model, config


def resume_config(saved: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """``saved`` with the allowed ``overrides`` applied; ``ValueError`` naming any other changed setting."""
    changed = {k: v for k, v in overrides.items() if v is not None and getattr(saved, k) != v}
    forbidden = sorted(set(changed) - set(RESUMABLE_CHANGES))
    if forbidden:
        details = ", ".join(f"{k}={changed[k]!r} (checkpoint: {getattr(saved, k)!r})" for k in forbidden)
        raise ValueError(
            f"cannot change {details} when resuming; only {', '.join(RESUMABLE_CHANGES)} may change"
        )
    return replace(saved, **changed)


# ------------------------------------------------------------------------------------------------
# the loop
# ------------------------------------------------------------------------------------------------


@dataclass
class _Run:
    config: TrainConfig
    model: LanguageModel
    optimizer: torch.optim.Optimizer | OptimizerChain
    generator: torch.Generator
    step: int = 0
    metrics: dict[str, float] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "kind": self.config.kind,
            "config": self.config.to_dict(),
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": {"data": self.generator.get_state(), "torch": torch.get_rng_state()},
            "metrics": dict(self.metrics),
        }


def _new_run(config: TrainConfig) -> _Run:
    model = build_model(config)
    generator = torch.Generator().manual_seed(config.seed)
    return _Run(config, model, make_optimizer(model, config), generator)


def _resumed_run(out: Path, overrides: dict[str, Any]) -> _Run:
    file = out / CHECKPOINT_NAME
    if not file.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint in {out} (expected {file})")
    payload = load_checkpoint(file)
    config = resume_config(TrainConfig.from_dict(payload["config"]), overrides)
    run = _new_run(config)
    run.model.load_state_dict(payload["model"])
    run.optimizer.load_state_dict(payload["optimizer"])
    run.generator.set_state(payload["rng"]["data"])
    torch.set_rng_state(payload["rng"]["torch"])
    run.step, run.metrics = payload["step"], dict(payload["metrics"])
    return run


def train(
    config: TrainConfig | None,
    out: str | Path,
    *,
    resume: bool = False,
    overrides: dict[str, Any] | None = None,
    stop_at: int | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train (or, with ``resume``, continue training) and checkpoint to ``out``.

    Args:
        config: the run; ignored when ``resume`` (the checkpoint's config is used, with ``overrides``).
        out: run directory; ``out / checkpoint.pt`` is written at every evaluation and at the end, and each
            scheduled evaluation appends a line to ``out / metrics.jsonl`` (:func:`read_metrics`).
        resume: continue from the checkpoint in ``out``.
        overrides: settings to change when resuming (``None`` values are ignored); see
            :data:`RESUMABLE_CHANGES`.
        stop_at: stop after this many total steps (checkpoint included), as an interruption would; the
            schedule still follows ``config.steps``.
        progress: show a tqdm bar (``None`` = only on a terminal).
        log: where evaluation lines go (default: ``tqdm.write``).

    Returns:
        the final :class:`TrainResult`.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    parallel = from_environment()
    run = _resumed_run(out, overrides or {}) if resume else _new_run(_require_config(config))
    config = run.config
    if parallel is not None:
        parallel.check_batch_size(config.batch_size)
    main = parallel is None or parallel.is_main
    if main:
        _keep_metrics_until(out, run.step)
    model = wrap(run.model, parallel)
    task = Task(config)
    val_batches = task.val_batches()
    last = config.steps if stop_at is None else min(stop_at, config.steps)
    bar = tqdm(
        total=config.steps,
        initial=run.step,
        desc=config.kind,
        unit="step",
        disable=_disable(progress) if main else True,
    )
    write = (log or bar.write) if main else _quiet
    recent: list[float] = []
    tokens, seconds = 0, 0.0
    # with compile_chunks the first step and the first evaluation compile: settle the heap after each
    to_settle = {"step", "evaluation"} if compiled.uses_compiled_steps(run.model) else set()
    while run.step < last:
        started = time.perf_counter()
        batch = task.batch(run.generator)  # the global batch, the same in every process
        lr = lr_at(run.step, config)
        with precision_context(config.precision):
            loss = train_step(model, run.optimizer, batch, lr, config.grad_clip, parallel)
        if "step" in to_settle:
            to_settle.discard("step")
            compiled.settle_after_compiling()
        seconds += time.perf_counter() - started
        tokens += batch.inputs.numel()
        run.step += 1
        recent.append(loss)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens / max(seconds, 1e-9):.0f}", refresh=False)
        if run.step % config.eval_every == 0 or run.step == last:
            _evaluate_and_save(run, task, val_batches, recent, out, write, save=main)
            recent = []
            if "evaluation" in to_settle:
                to_settle.discard("evaluation")
                compiled.settle_after_compiling()
    bar.close()
    if "val_loss" not in run.metrics:  # nothing to do (resumed a finished run with steps == checkpoint step)
        _evaluate_and_save(run, task, val_batches, recent, out, write, save=main)
    barrier(parallel)  # the checkpoint is complete before any process returns
    return TrainResult(
        kind=config.kind,
        steps=run.step,
        train_loss=run.metrics.get("train_loss", float("nan")),
        val_loss=run.metrics["val_loss"],
        val_accuracy=run.metrics.get("val_accuracy"),
        tokens_per_second=tokens / seconds if seconds > 0 else 0.0,
        checkpoint=out / CHECKPOINT_NAME,
    )


def _require_config(config: TrainConfig | None) -> TrainConfig:
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig for a new run, got {type(config).__name__}")
    return config


def _disable(progress: bool | None) -> bool | None:
    return None if progress is None else not progress  # tqdm: None = disable when not a terminal


def _quiet(_: str) -> None:
    """The log of a process that is not rank 0."""


def _evaluate_and_save(
    run: _Run,
    task: Task,
    val_batches: list[Batch],
    recent: list[float],
    out: Path,
    write: Callable,
    *,
    save: bool = True,
) -> None:
    # Every process evaluates (the same model on the same batches); only rank 0 writes.
    with precision_context(run.config.precision):
        metrics = evaluate(run.model, val_batches, accuracy=task.recall is not None)
    if recent:
        metrics["train_loss"] = sum(recent) / len(recent)
    run.metrics.update(metrics)
    if save:
        _append_metrics(out, run, metrics)
        save_checkpoint(out, run.payload())
    write(f"step {run.step}: " + " ".join(f"{k}={v:.4f}" for k, v in sorted(run.metrics.items())))


# ------------------------------------------------------------------------------------------------
# the metrics history (out / metrics.jsonl)
# ------------------------------------------------------------------------------------------------


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The evaluations of a run, oldest first: ``path`` is ``metrics.jsonl`` or the run directory.

    Each is ``{"step", "train_loss" (absent if no update since the last one), "val_loss", "val_accuracy"
    (recall only), "lr" (of the last update)}``. A missing file is an empty history; a last line without
    its newline is a write cut short by a crash and is left out; any other bad line is a ``ValueError``.
    """
    path = Path(path)
    file = path / METRICS_NAME if path.is_dir() else path
    if not file.is_file():
        return []
    lines = []
    for number, text in enumerate(file.read_text("utf-8").split("\n")[:-1], start=1):
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError as error:
            raise ValueError(f"{file}:{number}: not a JSON line ({error.msg})") from error
    return lines


def _append_metrics(out: Path, run: _Run, metrics: dict[str, float]) -> None:
    """Append the evaluation at ``run.step`` to ``out / metrics.jsonl`` if the schedule asked for it.

    Called *before* the checkpoint is written, and :func:`_keep_metrics_until` drops lines newer than the
    checkpoint on resume: a crash between the two writes neither loses nor duplicates a line. The extra
    evaluation of an interruption (``stop_at`` between two scheduled ones) is not written, so a resumed run
    has the lines of an uninterrupted one (the ``train_loss`` of the first line after such an interruption
    averages only the updates since it, as :class:`TrainResult`'s does).
    """
    config = run.config
    if run.step % config.eval_every and run.step != config.steps:
        return
    line = {"step": run.step, **metrics, "lr": lr_at(max(run.step - 1, 0), config)}
    out.mkdir(parents=True, exist_ok=True)
    with open(out / METRICS_NAME, "a", encoding="utf-8") as file:
        file.write(json.dumps(line) + "\n")


def _keep_metrics_until(out: Path, step: int) -> None:
    """Keep the lines of ``out / metrics.jsonl`` up to ``step`` (a new run, step 0: none)."""
    file = out / METRICS_NAME
    if not file.is_file():
        return
    kept = [line for line in read_metrics(file) if line["step"] <= step]
    file.write_text("".join(json.dumps(line) + "\n" for line in kept), encoding="utf-8")


__all__ = [
    "CHECKPOINT_NAME",
    "METRICS_NAME",
    "RESUMABLE_CHANGES",
    "Task",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "evaluate",
    "load_checkpoint",
    "load_model",
    "lr_at",
    "make_optimizer",
    "read_metrics",
    "resume_config",
    "train",
    "train_step",
]
