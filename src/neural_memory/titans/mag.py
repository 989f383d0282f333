r"""Titans MAG — Memory as a Gate (Titans v1, §4.2, Eq. 26–28, Fig. 3b), and the sliding-window attention
shared with MAL (Eq. 31).

MAG runs two branches over the same input :math:`\tilde x = P \,\|\, x` (Eq. 26): sliding-window attention
whose persistent prefix stays visible to every query (Eq. 27), and the long-term memory (Eq. 28); the two are
normalised and combined by a sigmoid gate (T-U10). The ``N_p`` prefix rows are not returned.

Streaming: the persistent prefix is part of :math:`\tilde x`, so the memory writes it exactly once, when the
stream starts (:meth:`MemoryAsGate.init_state`); the attention recomputes the prefix keys from ``P`` on every
call (they depend on parameters only). The state is the memory state plus the keys and values of the last
``window - 1`` tokens — its size never depends on the stream length.

The attention branches have no positional encoding (the paper names none); order reaches them through the
causal mask and, in MAL, through the memory's causal convolutions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from neural_memory.common.attention import windowed_attention
from neural_memory.registry import implements
from neural_memory.titans.memory import NeuralMemory
from neural_memory.titans.persistent import PersistentMemory, check_int, check_sequence
from neural_memory.titans.state import MemoryState

NORM_EPS = 1e-6


def memory_config(memory: object) -> dict:
    """The keyword arguments for :class:`NeuralMemory` (``None`` = its defaults); a dict is required."""
    if memory is None:
        return {}
    if not isinstance(memory, dict):
        raise TypeError(
            f"memory must be a dict of NeuralMemory keyword arguments or None, got {type(memory).__name__}"
        )
    if "dim" in memory:
        raise ValueError("memory config must not set 'dim'; the memory always has the mixer's width")
    return dict(memory)


class AttentionProjections(nn.Module):
    r"""Multi-head attention weights: :math:`W_Q, W_K, W_V` (Titans Eq. 1, per head) and an output map.

    Shared by the attention branches of MAC, MAG and MAL. Bias-free linear maps ``dim -> dim``; the head
    width is ``dim // heads`` and the score scale its inverse square root (Eq. 2).

    Args:
        dim: model width.
        heads: number of heads, dividing ``dim``.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        check_int("dim", dim, 1)
        check_int("heads", heads, 1)
        if dim % heads:
            raise ValueError(f"heads must divide dim, got dim={dim}, heads={heads}")
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def split_heads(self, t: Tensor) -> Tensor:
        """``(B, T, dim) -> (B, heads, T, dim // heads)``."""
        b, n, _ = t.shape
        return t.reshape(b, n, self.heads, self.head_dim).transpose(1, 2)

    def queries(self, x: Tensor) -> Tensor:
        """``x (B, T, dim) -> q (B, heads, T, d_head)``."""
        return self.split_heads(self.to_q(x))

    def keys_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x (B, T, dim) -> (k, v)``, each ``(B, heads, T, d_head)``."""
        return self.split_heads(self.to_k(x)), self.split_heads(self.to_v(x))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """Masked softmax attention, heads merged and mapped out: ``q (B, H, Lq, d)`` → ``(B, Lq, dim)``.

        :func:`~neural_memory.common.attention.masked_attention` without its input checks: the callers (MAG's
        window, MAC's segment) build the mask themselves, every query seeing at least itself, and the
        check that every row has a visible key reads a value per call (a GPU sync; under
        ``compile_chunks``, a graph break in MAC's compiled segment step)."""
        return self.attend_output(F.scaled_dot_product_attention(q, k, v, attn_mask=mask))

    def attend_output(self, y: Tensor) -> Tensor:
        """Heads merged and mapped out: ``y (B, H, L, d_head)`` → ``(B, L, dim)``."""
        b, _, n, _ = y.shape
        return self.to_out(y.transpose(1, 2).reshape(b, n, self.dim))


@dataclass(frozen=True)
class WindowCache:
    """Keys and values a sliding-window attention needs to continue a stream.

    Attributes:
        keys, values: the last ``L <= window - 1`` tokens' keys/values, ``(B, heads, L, d_head)``.
        seen: tokens seen so far, i.e. the absolute position of the next token.
    """

    keys: Tensor
    values: Tensor
    seen: int = 0

    def detach(self) -> WindowCache:
        return replace(self, keys=self.keys.detach(), values=self.values.detach())

    def numel(self) -> int:
        return self.keys.numel() + self.values.numel()


@implements("titans", 27, 31)
class SlidingWindowAttention(nn.Module):
    r"""Causal sliding-window attention, optionally with an always-visible prefix (Titans v1, Eq. 27, 31).

    .. math::
        y = \mathrm{SW\text{-}Attn}^{*}(\tilde{x}) \qquad (27) \qquad\qquad
        o = \mathrm{SW\text{-}Attn}(y) \qquad (31)

    A token at absolute position ``p`` attends to the tokens at positions ``(p - window, p]`` and, when a
    ``prefix`` is passed (MAG's :math:`\mathrm{SW\text{-}Attn}^*`, Fig. 3b), to every prefix token. MAL's
    plain SW-Attn passes no prefix. Queries are processed in blocks, so memory is
    ``O(T * (block + window))``, never ``O(T^2)``; the result equals the full masked attention
    (:func:`neural_memory.common.masks.sliding_window_mask`).

    Args:
        dim: model width; heads: number of heads (dividing ``dim``).
        window: how many most recent tokens (itself included) a query sees, ``>= 1``.
        block_size: queries per attention call; default ``max(window, 128)``.

    Shapes:
        ``forward(x (B, T, dim), cache, prefix (B, N_p, dim) | None) -> (y (B, T, dim), cache)``.
    """

    def __init__(self, dim: int, *, heads: int, window: int, block_size: int | None = None):
        super().__init__()
        check_int("window", window, 1)
        self.window = window
        self.block_size = max(window, 128) if block_size is None else check_int("block_size", block_size, 1)
        self.proj = AttentionProjections(dim, heads)

    def init_cache(self, batch_size: int, *, device=None, dtype=None) -> WindowCache:
        """An empty cache at stream position 0."""
        shape = (batch_size, self.proj.heads, 0, self.proj.head_dim)
        empty = torch.zeros(shape, device=device, dtype=dtype)
        return WindowCache(keys=empty, values=empty, seen=0)

    def forward(
        self, x: Tensor, cache: WindowCache | None = None, *, prefix: Tensor | None = None
    ) -> tuple[Tensor, WindowCache]:
        check_sequence(x, self.proj.dim)
        if cache is None:
            cache = self.init_cache(x.shape[0], device=x.device, dtype=x.dtype)
        q = self.proj.queries(x)
        k_new, v_new = self.proj.keys_values(x)
        keys = torch.cat([cache.keys, k_new], dim=2)  # (B, H, L + T, d), positions seen - L .. seen + T - 1
        values = torch.cat([cache.values, v_new], dim=2)
        prefix_kv = self.proj.keys_values(prefix) if prefix is not None else None
        y = self._blocked(q, keys, values, prefix_kv)
        keep = min(self.window - 1, keys.shape[2])
        new_cache = WindowCache(
            keys=keys[:, :, keys.shape[2] - keep :],
            values=values[:, :, keys.shape[2] - keep :],
            seen=cache.seen + x.shape[1],
        )
        return y, new_cache

    def _blocked(self, q: Tensor, keys: Tensor, values: Tensor, prefix_kv) -> Tensor:
        """All query blocks in one attention call, heads merged and mapped out: ``(B, T, dim)``
        (:func:`~neural_memory.common.attention.windowed_attention`)."""
        y = windowed_attention(
            q, keys, values, window=self.window, block_size=self.block_size, prefix_kv=prefix_kv
        )
        return self.proj.attend_output(y)


@dataclass(frozen=True)
class MemoryWindowState:
    """Streaming state of MAG and MAL: the long-term memory's state and the attention's window cache."""

    memory: MemoryState
    attention: WindowCache

    def detach(self) -> MemoryWindowState:
        return MemoryWindowState(memory=self.memory.detach(), attention=self.attention.detach())

    def numel(self) -> int:
        return self.memory.numel() + self.attention.numel()


@implements("titans", 26, 27, 28)
class MemoryAsGate(nn.Module):
    r"""Titans MAG: sliding-window attention gated by the long-term memory (Titans v1, Eq. 26–28).

    .. math::
        \tilde{x} = \left[p_1 \; p_2 \; \dots \; p_{N_p}\right] \,\|\, x \qquad (26)

        y = \mathrm{SW\text{-}Attn}^{*}(\tilde{x}) \qquad (27)

        o = y \otimes \mathcal{M}(\tilde{x}) \qquad (28)

    Persistent tokens go in front; one branch is sliding-window attention that always sees them, the other
    is the neural memory run (write, then read, per token) over the same sequence; the memory branch gates
    the attention branch. ⊗ is not defined in v1 (only "normalise both with learnable vector weights, then
    a non-linearity"); we use :meth:`gate`, see docs/errata.md. The ``N_p`` prefix rows of ``o`` are
    dropped, so the output aligns with ``x``.

    Args:
        dim: model width.
        window: sliding-window size of Eq. 27 (not given in v1).
        n_persistent: ``N_p >= 0`` persistent tokens.
        heads: attention heads.
        memory: keyword arguments of :class:`~neural_memory.titans.memory.NeuralMemory` (``dim`` excluded).

    Shapes:
        ``forward(x (B, T, dim), state) -> (o (B, T, dim), MemoryWindowState)``.
    """

    def __init__(self, dim: int, *, window: int, n_persistent: int, heads: int, memory: dict | None = None):
        super().__init__()
        self.dim = check_int("dim", dim, 1)
        self.persistent = PersistentMemory(n_persistent, dim)
        self.attention = SlidingWindowAttention(dim, heads=heads, window=window)
        self.memory = NeuralMemory(dim, **memory_config(memory))
        self.norm_attention = nn.RMSNorm(dim, eps=NORM_EPS)
        self.norm_memory = nn.RMSNorm(dim, eps=NORM_EPS)

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> MemoryWindowState:
        """Stream start: the memory has written the persistent prefix (part of :math:`\\tilde x`, Eq. 26)."""
        check_int("batch_size", batch_size, 1)
        memory = self.memory.init_state(batch_size, device=device, dtype=dtype)
        if self.persistent.n_persistent:
            prefix = self.persistent.expand(batch_size).to(device=device, dtype=dtype)
            _, memory = self.memory(prefix, memory)
        return MemoryWindowState(
            memory=memory, attention=self.attention.init_cache(batch_size, device=device, dtype=dtype)
        )

    @implements("titans", 28)
    def gate(self, y: Tensor, m: Tensor) -> Tensor:
        r"""The MAG gate ⊗ (Titans v1, Eq. 28, T-U10).

        .. math::
            o = \mathrm{RMSNorm}_{\gamma_1}(y) \odot
                \sigma\!\left(\mathrm{RMSNorm}_{\gamma_2}(\mathcal{M}(\tilde x))\right)

        Both branches are RMS-normalised with learnable per-channel weights ``γ1, γ2`` (eps ``1e-6``), the
        memory branch goes through a sigmoid and multiplies the attention branch element-wise. The paper
        names neither the norm nor σ (docs/errata.md).

        Args:
            y: attention branch, ``(B, T, dim)``; m: memory branch, ``(B, T, dim)``.

        Returns:
            ``(B, T, dim)``.
        """
        return self.norm_attention(y) * torch.sigmoid(self.norm_memory(m))

    def forward(self, x: Tensor, state: MemoryWindowState | None = None) -> tuple[Tensor, MemoryWindowState]:
        check_sequence(x, self.dim)
        if state is None:
            state = self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        prefix = (
            self.persistent.expand(x.shape[0]).to(dtype=x.dtype) if self.persistent.n_persistent else None
        )
        y, attention = self.attention(x, state.attention, prefix=prefix)  # Eq. 27
        m, memory = self.memory(x, state.memory)  # Eq. 28: M(x~), continuing after the prefix
        return self.gate(y, m), MemoryWindowState(memory=memory, attention=attention)


__all__ = [
    "AttentionProjections",
    "MemoryAsGate",
    "MemoryWindowState",
    "SlidingWindowAttention",
    "WindowCache",
]
