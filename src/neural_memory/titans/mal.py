r"""Titans MAL — Memory as a Layer (Titans v1, §4.3, Eq. 29–31) — and Titans (LMM), the memory alone.

MAL stacks the long-term memory and sliding-window attention: prepend the persistent tokens (Eq. 29), run
the memory as a sequence layer (Eq. 30), then plain sliding-window attention over its outputs (Eq. 31).
Titans (LMM) is the same without the attention (§4.3, T-U13); it keeps the persistent tokens, since
Table 5 ablates "w/o Persistent Memory" from the LMM.

Streaming: the persistent prefix is written into the memory once, at stream start (:meth:`init_state`).
For MAL, the memory's outputs for the prefix rows are ordinary positions ``0 .. N_p - 1`` of the attention
stream (Eq. 31 has no always-visible prefix), so they enter the window cache at stream start and slide out
after ``window`` tokens. States hold the memory state plus at most ``window - 1`` keys/values.
"""

from __future__ import annotations

from torch import Tensor, nn

from neural_memory.registry import implements
from neural_memory.titans.mag import MemoryWindowState, SlidingWindowAttention, memory_config
from neural_memory.titans.memory import NeuralMemory
from neural_memory.titans.persistent import PersistentMemory, check_int, check_sequence
from neural_memory.titans.state import MemoryState


@implements("titans", 29, 30)
class LongTermMemoryLayer(nn.Module):
    r"""Titans (LMM): persistent tokens, then the neural memory as a sequence layer (Titans v1, Eq. 29–30).

    .. math::
        \tilde{x} = \left[p_1 \; p_2 \; \dots \; p_{N_p}\right] \,\|\, x \qquad (29)

        y = \mathcal{M}(\tilde{x}) \qquad (30)

    Every token of :math:`\tilde x` is written into the memory and then read with its own query (write, then
    read: :class:`~neural_memory.titans.memory.NeuralMemory`). The ``N_p`` prefix rows are dropped from the
    output; their effect is the memory state they leave behind.

    Args:
        dim: model width.
        n_persistent: ``N_p >= 0`` (0 = Table 5's "w/o Persistent Memory").
        memory: keyword arguments of :class:`~neural_memory.titans.memory.NeuralMemory` (``dim`` excluded).

    Shapes:
        ``forward(x (B, T, dim), state: MemoryState | None) -> (y (B, T, dim), MemoryState)``.
    """

    def __init__(self, dim: int, *, n_persistent: int, memory: dict | None = None):
        super().__init__()
        self.dim = check_int("dim", dim, 1)
        self.persistent = PersistentMemory(n_persistent, dim)
        self.memory = NeuralMemory(dim, **memory_config(memory))

    def start(self, batch_size: int, *, device=None, dtype=None) -> tuple[Tensor, MemoryState]:
        """Write the persistent prefix: ``(y_P (B, N_p, dim), state after P)``."""
        check_int("batch_size", batch_size, 1)
        state = self.memory.init_state(batch_size, device=device, dtype=dtype)
        prefix = self.persistent.expand(batch_size).to(device=device, dtype=dtype)
        if not self.persistent.n_persistent:
            return prefix, state
        return self.memory(prefix, state)

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> MemoryState:
        """The memory state at stream start (after writing the persistent prefix)."""
        return self.start(batch_size, device=device, dtype=dtype)[1]

    def forward(self, x: Tensor, state: MemoryState | None = None) -> tuple[Tensor, MemoryState]:
        check_sequence(x, self.dim)
        if state is None:
            state = self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        return self.memory(x, state)


@implements("titans", 29, 30, 31)
class MemoryAsLayer(nn.Module):
    r"""Titans MAL: the memory as a layer, followed by sliding-window attention (Titans v1, Eq. 29–31).

    .. math::
        \tilde{x} = \left[p_1 \; p_2 \; \dots \; p_{N_p}\right] \,\|\, x \qquad (29)

        y = \mathcal{M}(\tilde{x}) \qquad (30)

        o = \mathrm{SW\text{-}Attn}(y) \qquad (31)

    The attention is *plain* sliding-window attention, as printed (no ∗, unlike MAG's Eq. 27): the memory
    outputs of the prefix rows are visible only while they are inside a query's window (docs/errata.md).
    The ``N_p`` prefix rows of ``o`` are dropped.

    Args:
        dim: model width; window: attention window (not given in v1); n_persistent: ``N_p >= 0``;
        heads: attention heads; memory: :class:`NeuralMemory` keyword arguments.

    Shapes:
        ``forward(x (B, T, dim), state) -> (o (B, T, dim), MemoryWindowState)``.
    """

    def __init__(self, dim: int, *, window: int, n_persistent: int, heads: int, memory: dict | None = None):
        super().__init__()
        self.dim = check_int("dim", dim, 1)
        self.layer = LongTermMemoryLayer(dim, n_persistent=n_persistent, memory=memory)
        self.attention = SlidingWindowAttention(dim, heads=heads, window=window)

    @property
    def persistent(self) -> PersistentMemory:
        return self.layer.persistent

    @property
    def memory(self) -> NeuralMemory:
        return self.layer.memory

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> MemoryWindowState:
        """Stream start: prefix written into the memory, its memory outputs in the attention cache."""
        y_prefix, memory = self.layer.start(batch_size, device=device, dtype=dtype)
        cache = self.attention.init_cache(batch_size, device=device, dtype=dtype)
        if y_prefix.shape[1]:
            _, cache = self.attention(y_prefix, cache)  # the prefix rows' outputs are dropped
        return MemoryWindowState(memory=memory, attention=cache)

    def forward(self, x: Tensor, state: MemoryWindowState | None = None) -> tuple[Tensor, MemoryWindowState]:
        check_sequence(x, self.dim)
        if state is None:
            state = self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        y, memory = self.memory(x, state.memory)  # Eq. 30
        o, attention = self.attention(y, state.attention)  # Eq. 31
        return o, MemoryWindowState(memory=memory, attention=attention)


__all__ = ["LongTermMemoryLayer", "MemoryAsLayer"]
