"""Evaluation of a trained model (``neural-memory evaluate``): bits per byte of a text, read as one stream,
or answer accuracy on a generated task.

A text is read in chunks of ``chunk`` bytes (by default the training length) and the language model's
streaming state (:class:`~neural_memory.models.lm.LMState`) is carried from chunk to chunk, so every byte is
predicted from *all* the bytes before it, however long the text is: a memory model keeps writing into its
memory, full attention keeps a growing KV cache, sliding-window attention a bounded one. The loss is the mean
cross-entropy over every predicted byte (bytes 2..N), in nats; bits per byte is that over ln 2 and the
perplexity its exponential.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from neural_memory.common.validation import check_int
from neural_memory.data import AssociativeRecall
from neural_memory.models import LanguageModel

TASKS = ("recall", "needle")
TASK_SEED = 4_242


@torch.no_grad()
def stream_loss(model: LanguageModel, data: Tensor, chunk: int) -> dict[str, float]:
    """Loss, bits per byte and perplexity of ``data (N,)`` (byte ids, ``N >= 2``) read as one stream.

    Args:
        model: the language model, in eval mode.
        data: ``(N,)`` integer byte ids.
        chunk: bytes per forward call, ``>= 1``; the state carries the context across calls.

    Returns:
        ``{"loss": nats per byte, "bpb", "perplexity", "bytes": predicted bytes}``.
    """
    check_int("chunk", chunk)
    if data.dim() != 1 or data.numel() < 2:
        raise ValueError(f"data must be 1-D with at least 2 bytes, got shape {tuple(data.shape)}")
    data = data.long()
    total, count, state = 0.0, 0, None
    for start in range(0, data.numel() - 1, chunk):
        stop = min(start + chunk, data.numel() - 1)
        inputs, targets = data[None, start:stop], data[None, start + 1 : stop + 1]
        logits, state = model(inputs, state)
        total += torch.nn.functional.cross_entropy(logits[0].double(), targets[0], reduction="sum").item()
        count += stop - start
    loss = total / count
    return {"loss": loss, "bpb": loss / math.log(2), "perplexity": math.exp(loss), "bytes": count}


def _recall_batch(config, samples: int, _length: int | None):
    generator = torch.Generator().manual_seed(TASK_SEED)
    return AssociativeRecall(config.seq_len, n_pairs=config.recall_pairs).batch(samples, generator)


def _needle_batch(config, samples: int, length: int | None):
    from neural_memory.experiments.needle import needle_batch

    return needle_batch(random.Random(TASK_SEED), samples, length or config.seq_len)


TASK_BATCHES: dict[str, Callable[..., Any]] = {"recall": _recall_batch, "needle": _needle_batch}


@torch.no_grad()
def task_accuracy(model: LanguageModel, config, task: str, *, samples: int, length: int | None = None):
    """Accuracy of ``model`` on ``samples`` generated samples of ``task`` (one of :data:`TASKS`).

    ``recall``: share of the answer bytes predicted right (argmax), at the checkpoint's ``seq_len`` and
    ``recall_pairs``. ``needle``: share of samples whose every answer byte is right (exact match), the three
    S-NIAH forms in turn, with prompts of ``length`` bytes (default: the checkpoint's ``seq_len``).
    Returns ``{"task", "accuracy", "hits", "n"}``.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    check_int("samples", samples)
    if length is not None:
        check_int("length", length)
    batch = TASK_BATCHES[task](config, samples, length)
    logits, _ = model(batch.inputs)
    right = (logits.argmax(-1) == batch.targets) | ~batch.loss_mask
    if task == "needle":
        hits, n = int(right.all(dim=1).sum()), batch.inputs.shape[0]
    else:
        hits, n = int((right & batch.loss_mask).sum()), int(batch.loss_mask.sum())
    return {"task": task, "accuracy": hits / n, "hits": hits, "n": n}


__all__ = ["TASKS", "stream_loss", "task_accuracy"]
