"""Training data: byte-level text from a file, and a generated associative-recall task (no download).

Both give a :class:`Batch` ``(inputs, targets, loss_mask)`` of ``(batch, seq_len)`` tensors with
``targets[:, t] = next token after inputs[:, t]``; the loss is averaged over ``loss_mask`` (all positions
for text, only the answers for recall). Randomness comes from an explicit seeded :class:`torch.Generator`,
so a batch is a function of the generator state alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from neural_memory.common.validation import check_int

BYTE_VOCAB = 256


class Batch(NamedTuple):
    """One training batch.

    Attributes:
        inputs: ``(B, T)`` long token ids.
        targets: ``(B, T)`` long, the token that follows each input.
        loss_mask: ``(B, T)`` bool, the target positions the loss (and accuracy) counts.
    """

    inputs: Tensor
    targets: Tensor
    loss_mask: Tensor


def read_bytes(path: str | Path) -> Tensor:
    """The bytes of the file at ``path`` as a 1-D ``uint8`` tensor; ``FileNotFoundError`` if it is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text file not found: {path}")
    raw = path.read_bytes()
    if not raw:
        raise ValueError(f"text file is empty: {path}")
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8)


def sample_windows(data: Tensor, batch_size: int, seq_len: int, generator: torch.Generator) -> Batch:
    """``batch_size`` random windows of ``seq_len + 1`` consecutive bytes of ``data (N,)`` as a ``Batch``.

    Every window start in ``[0, N - seq_len - 1]`` is equally likely; the mask marks every position.
    """
    check_int("batch_size", batch_size, 1)
    check_int("seq_len", seq_len, 1)
    n_starts = data.numel() - seq_len
    if n_starts < 1:
        raise ValueError(f"data holds {data.numel()} bytes; a window needs seq_len + 1 = {seq_len + 1}")
    starts = torch.randint(0, n_starts, (batch_size,), generator=generator)
    windows = data[starts[:, None] + torch.arange(seq_len + 1)].long()  # (B, seq_len + 1)
    inputs, targets = windows[:, :-1], windows[:, 1:]
    return Batch(inputs, targets, torch.ones_like(targets, dtype=torch.bool))


class TextData:
    """A text file as bytes (vocabulary 256), split by position: the first part trains, the tail validates.

    Args:
        path: the file.
        val_fraction: share of the bytes, at the end of the file, held out for validation, in ``(0, 1)``.
    """

    def __init__(self, path: str | Path, *, val_fraction: float = 0.1):
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
        self.path = Path(path)
        data = read_bytes(self.path)
        cut = round(data.numel() * (1 - val_fraction))
        self.train, self.val = data[:cut], data[cut:]

    def check_seq_len(self, seq_len: int) -> None:
        """``ValueError`` unless both splits hold a window of ``seq_len + 1`` bytes."""
        for name, split in (("train", self.train), ("validation", self.val)):
            if split.numel() < seq_len + 1:
                raise ValueError(
                    f"{self.path}: the {name} split holds {split.numel()} bytes, fewer than "
                    f"seq_len + 1 = {seq_len + 1}; use a longer file or a smaller --seq-len"
                )

    def batch(self, split: str, batch_size: int, seq_len: int, generator: torch.Generator) -> Batch:
        """Random windows from ``split`` (``"train"`` or ``"val"``)."""
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        self.check_seq_len(seq_len)
        return sample_windows(self.train if split == "train" else self.val, batch_size, seq_len, generator)


class AssociativeRecall:
    """Generated associative recall: remember key → value pairs, answer queries of earlier keys.

    Each sequence of ``seq_len + 1`` bytes is ::

        k_1 v_1 k_2 v_2 ... k_P v_P | q_1 a_1 q_2 a_2 ... q_Q a_Q [.]

    with ``P = n_pairs`` distinct keys (lower-case letters), random values (digits), and queries ``q_j``
    drawn from the keys with replacement; ``a_j`` is the value paired with ``q_j``. ``Q`` fills the length;
    a trailing ``.`` pads when ``seq_len`` is odd. The loss mask marks exactly the answers ``a_j`` (the
    only predictable targets): the input there is ``q_j`` and the target ``a_j``.

    Args:
        seq_len: model input length ``T``; needs ``T >= 2 P + 2`` (at least one query).
        n_pairs: number of key–value pairs ``P``, ``1 <= P <= 26``.
    """

    KEYS = b"abcdefghijklmnopqrstuvwxyz"
    VALUES = b"0123456789"
    SEPARATOR = ord("|")
    PAD = ord(".")

    def __init__(self, seq_len: int, *, n_pairs: int = 8):
        check_int("seq_len", seq_len, 1)
        check_int("n_pairs", n_pairs, 1)
        if n_pairs > len(self.KEYS):
            raise ValueError(f"n_pairs must be <= {len(self.KEYS)} (distinct keys), got {n_pairs}")
        if seq_len < 2 * n_pairs + 2:
            raise ValueError(
                f"seq_len must be >= 2 * n_pairs + 2 = {2 * n_pairs + 2} to hold one query, got {seq_len}"
            )
        self.seq_len, self.n_pairs = seq_len, n_pairs
        self.n_queries, self.n_pad = divmod(seq_len - 2 * n_pairs, 2)

    def sequences(self, batch_size: int, generator: torch.Generator) -> Tensor:
        """``(batch_size, seq_len + 1)`` long byte sequences in the layout of the class docstring."""
        check_int("batch_size", batch_size, 1)
        b, p, q = batch_size, self.n_pairs, self.n_queries
        keys_table = torch.tensor(list(self.KEYS))
        values_table = torch.tensor(list(self.VALUES))
        key_ids = torch.rand(b, len(self.KEYS), generator=generator).argsort(dim=1)[:, :p]  # distinct
        keys = keys_table[key_ids]  # (B, P)
        values = values_table[torch.randint(0, len(self.VALUES), (b, p), generator=generator)]
        asked = torch.randint(0, p, (b, q), generator=generator)  # which pair each query asks for
        pairs = torch.stack([keys, values], dim=-1).reshape(b, 2 * p)
        queries = torch.stack([keys.gather(1, asked), values.gather(1, asked)], dim=-1).reshape(b, 2 * q)
        separator = torch.full((b, 1), self.SEPARATOR)
        pad = torch.full((b, self.n_pad), self.PAD)
        return torch.cat([pairs, separator, queries, pad], dim=1).long()

    def answer_mask(self, batch_size: int) -> Tensor:
        """``(batch_size, seq_len)`` bool: True at target positions holding an answer ``a_j``."""
        mask = torch.zeros(self.seq_len, dtype=torch.bool)
        first = 2 * self.n_pairs + 1  # target index of a_1 (its input is q_1)
        mask[first : first + 2 * self.n_queries : 2] = True
        return mask.expand(batch_size, -1).clone()

    def batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        """A :class:`Batch` of fresh sequences; the mask marks the answers."""
        seq = self.sequences(batch_size, generator)
        return Batch(seq[:, :-1], seq[:, 1:], self.answer_mask(batch_size))


def answer_accuracy(logits: Tensor, batch: Batch) -> float:
    """Share of masked positions where the most likely token is the target (``logits (B, T, V)``)."""
    hits = logits.argmax(dim=-1) == batch.targets
    return hits[batch.loss_mask].float().mean().item()


__all__ = [
    "BYTE_VOCAB",
    "AssociativeRecall",
    "Batch",
    "TextData",
    "answer_accuracy",
    "read_bytes",
    "sample_windows",
]
