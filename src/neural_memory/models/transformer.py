r"""The attention baselines: multi-head causal softmax attention as a mixer, full (kind ``"transformer"``) or
in a sliding window (kind ``"swa"``).

Every token attends to every earlier token of the stream (Titans Eq. 2 per head, with rotary position
embeddings on queries and keys). Streaming keeps a KV cache in the state: the keys and values of every token
seen so far. That cache **grows by one key and one value per token** — inherent to full attention, and the
cost the recurrent memories of Titans/MIRAS/NL avoid (their state has a fixed size).

With a ``window`` a token attends only to the ``window`` most recent tokens (itself included), the
sliding-window attention (SWA) baseline of Titans §5 and of the needle experiment: the cache keeps only the
last ``window - 1`` keys and values, so its state is bounded, and queries are processed in blocks, all in
one attention call (:func:`~neural_memory.common.attention.windowed_attention`, shared with Titans'
SW-Attn), so time and memory grow linearly with the sequence, not quadratically.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from neural_memory.common.attention import masked_attention, windowed_attention
from neural_memory.common.masks import window_mask_from_positions
from neural_memory.common.validation import check_int
from neural_memory.models.registry import register_kind


def rotate_half(x: Tensor) -> Tensor:
    """``[x1, x2] -> [-x2, x1]`` on the last axis (halves of equal width)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def rotary_embedding(x: Tensor, positions: Tensor, *, base: float = 10000.0) -> Tensor:
    r"""Rotary position embedding (RoPE, Su et al., 2021), "rotate-half" layout.

    .. math::
        \mathrm{rope}(x, p)_{[i,\, i + d/2]} = R(p\,\theta_i)\,(x_i, x_{i+d/2})^\top,
        \qquad \theta_i = \mathrm{base}^{-2i/d}

    Channel ``i`` and ``i + d/2`` form a plane rotated by the angle ``p θ_i``, so the score
    ``rope(q, m) · rope(k, n)`` depends on the positions only through ``m - n``.

    Args:
        x: ``(..., seq, d)``, ``d`` even.
        positions: ``(seq,)`` absolute positions (any numeric dtype).
        base: frequency base, ``> 1``.

    Returns:
        ``(..., seq, d)``, same dtype as ``x``.
    """
    d = x.shape[-1]
    if d % 2:
        raise ValueError(f"rotary embedding needs an even last dim, got {d}")
    if positions.shape != (x.shape[-2],):
        raise ValueError(f"positions must have shape ({x.shape[-2]},), got {tuple(positions.shape)}")
    inv_freq = base ** (-torch.arange(0, d // 2, dtype=torch.float64, device=x.device) * 2 / d)
    angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]  # (seq, d/2), float64 for long streams
    angles = torch.cat([angles, angles], dim=-1)
    return x * angles.cos().to(x.dtype) + rotate_half(x) * angles.sin().to(x.dtype)


@dataclass(frozen=True)
class KVCache:
    """The keys and values of every token seen so far (keys already rotated).

    Attributes:
        keys, values: ``(batch, heads, L, head_dim)``, the keys/values of positions ``position - L ..
            position - 1``; ``L = position`` for full attention (grows with the stream), ``L <= window - 1``
            with a window.
        position: tokens seen, i.e. the absolute position of the next token.
    """

    keys: Tensor
    values: Tensor
    position: int = 0

    def detach(self) -> KVCache:
        return KVCache(self.keys.detach(), self.values.detach(), self.position)

    def numel(self) -> int:
        return self.keys.numel() + self.values.numel()


class CausalSelfAttention(nn.Module):
    r"""Multi-head causal softmax self-attention with an optional RoPE, streaming through a :class:`KVCache`.

    Per head: :math:`y_i = \sum_{j \le i} \mathrm{softmax}_j(q_i^\top k_j / \sqrt{d_h})\, v_j` (Titans Eq. 2
    as in :func:`~neural_memory.common.attention.causal_softmax_attention`), then heads are concatenated and
    projected. Bias-free fused QKV projection (``dim -> 3 dim``) and output projection (``dim -> dim``).

    Args:
        dim: model width.
        heads: number of heads, dividing ``dim`` (head width ``dim // heads``, even when ``rope``).
        rope: rotate queries and keys by their absolute position (RoPE).
        rope_base: RoPE frequency base.
        window: ``None`` for full causal attention; else how many most recent tokens (itself included) a
            query sees, ``>= 1`` (:func:`~neural_memory.common.masks.window_mask_from_positions`).
        block_size: queries per attention call when ``window`` is set; default ``max(window, 128)``.

    Shapes:
        ``forward(x (B, T, dim), cache | None) -> (y (B, T, dim), KVCache)``.
    """

    def __init__(
        self,
        dim: int,
        *,
        heads: int = 4,
        rope: bool = True,
        rope_base: float = 10000.0,
        window: int | None = None,
        block_size: int | None = None,
    ):
        super().__init__()
        if window is not None:
            check_int("window", window)
        if block_size is not None:
            check_int("block_size", block_size)
        check_int("dim", dim)
        check_int("heads", heads)
        if dim % heads:
            raise ValueError(f"heads must divide dim, got dim={dim}, heads={heads}")
        if rope and (dim // heads) % 2:
            raise ValueError(f"rope needs an even head width dim // heads, got {dim // heads}")
        if not rope_base > 1:
            raise ValueError(f"rope_base must be > 1, got {rope_base}")
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.rope, self.rope_base = rope, float(rope_base)
        self.window = window
        self.block_size = (
            (max(window, 128) if window is not None else None) if block_size is None else block_size
        )
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> KVCache:
        """An empty cache at stream position 0."""
        empty = torch.zeros(batch_size, self.heads, 0, self.head_dim, device=device, dtype=dtype)
        return KVCache(empty, empty, 0)

    def _split_heads(self, t: Tensor) -> Tensor:
        b, n, _ = t.shape
        return t.reshape(b, n, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, d_h)

    def forward(self, x: Tensor, state: KVCache | None = None) -> tuple[Tensor, KVCache]:
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (batch, seq, {self.dim}), got {tuple(x.shape)}")
        b, n, _ = x.shape
        cache = self.init_state(b, device=x.device, dtype=x.dtype) if state is None else state
        if cache.keys.shape[0] != b:
            raise ValueError(f"state holds batch {cache.keys.shape[0]}, x has batch {b}")
        q, k, v = (self._split_heads(t) for t in self.to_qkv(x).chunk(3, dim=-1))
        query_pos = torch.arange(cache.position, cache.position + n, device=x.device)
        if self.rope:
            q = rotary_embedding(q, query_pos, base=self.rope_base)
            k = rotary_embedding(k, query_pos, base=self.rope_base)
        keys = torch.cat(
            [cache.keys, k], dim=2
        )  # (B, H, L + T, d_h): positions position - L .. position + T - 1
        values = torch.cat([cache.values, v], dim=2)
        if self.window is None:
            key_pos = torch.arange(cache.position + n, device=x.device)
            # a window covering the whole stream is plain causal masking: key j is visible iff j <= query
            mask = window_mask_from_positions(query_pos, key_pos, cache.position + n)
            y = masked_attention(q, keys, values, mask)  # (B, H, T, d_h)
            new_cache = KVCache(keys, values, cache.position + n)
        else:
            y = windowed_attention(q, keys, values, window=self.window, block_size=self.block_size)
            keep = min(self.window - 1, keys.shape[2])  # the next query sees at most window - 1 old keys
            start = keys.shape[2] - keep
            new_cache = KVCache(keys[:, :, start:], values[:, :, start:], cache.position + n)
        y = self.to_out(y.transpose(1, 2).reshape(b, n, self.dim))
        return y, new_cache


def transformer_mixer(
    *, dim: int, layer_index: int, heads: int = 4, rope: bool = True, rope_base: float = 10000.0
) -> CausalSelfAttention:
    """Builder of kind ``"transformer"`` (every layer alike; ``layer_index`` unused)."""
    return CausalSelfAttention(dim, heads=heads, rope=rope, rope_base=rope_base)


def sliding_window_mixer(
    *,
    dim: int,
    layer_index: int,
    heads: int = 4,
    window: int = 64,
    rope: bool = True,
    rope_base: float = 10000.0,
) -> CausalSelfAttention:
    """Builder of kind ``"swa"``: causal attention over the last ``window`` tokens (``layer_index`` unused).

    The default window, 64, is that of Titans MAG/MAL here (:mod:`neural_memory.titans.models`), so the
    sliding-window baseline sees as far back as their attention branch.
    """
    return CausalSelfAttention(dim, heads=heads, rope=rope, rope_base=rope_base, window=window)


register_kind(
    "transformer",
    transformer_mixer,
    description="full causal softmax attention with RoPE (KV cache grows with the stream)",
)
register_kind(
    "swa",
    sliding_window_mixer,
    defaults={"window": 64},
    description="sliding-window causal softmax attention with RoPE (cache of the last window - 1 tokens)",
)

__all__ = ["CausalSelfAttention", "KVCache", "rotary_embedding", "sliding_window_mixer", "transformer_mixer"]
