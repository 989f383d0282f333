r"""Attention as memory: the background of Titans §2.1 (Eq. 1–7) and §3.3 (Eq. 20).

Conventions (Titans v1 mixes them; we fix one):

* tokens are **row vectors** and sequences are ``(..., seq, d)`` tensors; projections are ``x W`` with
  ``W`` of shape ``(d_in, d_out)`` (Eq. 1);
* boolean masks use ``True`` = may attend (see :mod:`neural_memory.common.masks`);
* every function accepts any leading batch axes, e.g. ``(batch, heads, seq, d)``, and works in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol, TypeVar

import torch
import torch.nn.functional as F

from neural_memory.common.masks import causal_mask
from neural_memory.common.validation import check_int
from neural_memory.registry import implements

State = TypeVar("State")
FeatureMap = Callable[[torch.Tensor], torch.Tensor]


def _check_tensor(name: str, value: object, min_dims: int) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dim() < min_dims:
        raise ValueError(f"{name} must have at least {min_dims} dims, got shape {tuple(value.shape)}")
    return value


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check_tensor(name, t, 2)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share the last dim (d_k), got {q.shape[-1]} and {k.shape[-1]}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have the same number of keys, got {k.shape[-2]} and {v.shape[-2]}")


def _check_square(q: torch.Tensor, k: torch.Tensor) -> None:
    if q.shape[-2] != k.shape[-2]:
        raise ValueError(
            f"causal attention needs the same number of queries and keys, got {q.shape[-2]} and {k.shape[-2]}"
        )


# --------------------------------------------------------------------------------------------------
# Eq. 1–2: projections and softmax attention
# --------------------------------------------------------------------------------------------------


@implements("titans", 1)
@implements("miras", 1)
@implements("nl", 61)
def qkv_projection(
    x: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor, w_v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Query, key and value projections (Titans v1, Eq. 1).

    Also MIRAS v1 Eq. 1 (the same formula in MIRAS §2) and NL v1 Eq. 61 (NL §5's row convention,
    :math:`k_t = x_tW_k`, the same product per token).

    .. math::
        \mathbf{Q} = x\mathbf{W}_{\mathrm{Q}}, \quad \mathbf{K} = x\mathbf{W}_{\mathrm{K}},
        \quad \mathbf{V} = x\mathbf{W}_{\mathrm{V}} \qquad (1)

    Each token (a row of ``x``) is multiplied on the right by each weight matrix.

    Args:
        x: ``(..., seq, d_in)``.
        w_q, w_k, w_v: ``(d_in, d_out)`` each (the paper has ``d_out = d_in``; any widths are allowed).

    Returns:
        ``(q, k, v)``, each ``(..., seq, d_out)`` of its weight.
    """
    _check_tensor("x", x, 2)
    d_in = x.shape[-1]
    for name, w in (("w_q", w_q), ("w_k", w_k), ("w_v", w_v)):
        _check_tensor(name, w, 0)
        if w.dim() != 2:
            raise ValueError(f"{name} must be 2-D (d_in, d_out), got shape {tuple(w.shape)}")
        if w.shape[0] != d_in:
            raise ValueError(f"{name} must have shape (d_in={d_in}, d_out), got {tuple(w.shape)}")
    return x @ w_q, x @ w_k, x @ w_v


@implements("nl", 62)
def masked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    scale: float | None = None,
) -> torch.Tensor:
    r"""Softmax attention with a boolean visibility mask.

    .. math::
        y_i = \sum_{j:\,\mathrm{mask}_{ij}} \frac{\exp(s\,Q_i^\top K_j)}{\sum_{\ell:\,\mathrm{mask}_{i\ell}}
        \exp(s\,Q_i^\top K_\ell)}\, V_j, \qquad s = 1/\sqrt{d_k} \text{ by default}

    Every query averages the values of the keys it may see, weighted by the softmax of the scores.
    That average is the minimiser of a locally weighted regression (NL v1, Eq. 62, attention as a
    Nadaraya–Watson estimator, with :math:`\mathbf s(k, q) = \exp(s\,q^\top k)` over the visible keys):

    .. math::
        \mathcal{M}^* = \arg\min_{\mathcal{M}} \sum_{i=1}^L \mathbf{s}(\mathbf{k}_i, \mathbf{q})
            \|\mathbf{v}_i - \mathcal{M}\|_2^2 = \sum_{i=1}^L \frac{\mathbf{s}(\mathbf{k}_i, \mathbf{q})}
            {\sum_{j=1}^L \mathbf{s}(\mathbf{k}_j, \mathbf{q})} \mathbf{v}_i \qquad (62)

    Any other similarity: :func:`neural_memory.nl.learning_rules.nadaraya_watson`.
    A query that may see no key at all raises ``ValueError`` (softmax over nothing would be NaN).

    Args:
        q: ``(..., L_q, d_k)``.
        k: ``(..., L_k, d_k)``.
        v: ``(..., L_k, d_v)``.
        mask: bool, broadcastable to ``(..., L_q, L_k)``; ``True`` = may attend. ``None`` = all visible.
        scale: score scale ``s > 0``; default ``1 / sqrt(d_k)``.

    Returns:
        ``(..., L_q, d_v)``.
    """
    _check_qkv(q, k, v)
    if scale is not None and not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0, got {scale}")
    if mask is not None:
        _check_mask(mask, q, k)
    # SDPA's math/flash CPU kernels agree with an explicit softmax to ~1e-15 in float64.
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def _check_mask(mask: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> None:
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError("mask must be a bool tensor (True = may attend)")
    batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    target = (*batch, q.shape[-2], k.shape[-2])
    try:
        fits = torch.broadcast_shapes(mask.shape, target) == target
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to (..., L_q, L_k) = {target}"
        )
    if not mask.any(dim=-1).all():
        raise ValueError("mask leaves a query with no visible key; every row needs at least one True")


def windowed_attention(
    q: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    *,
    window: int,
    block_size: int,
    prefix_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    r"""Causal sliding-window softmax attention, all query blocks in one call: ``O(T (block + window))``.

    Query ``i`` (the ``i``-th of the ``T`` newest positions) sees the keys at most ``window - 1`` positions
    before it and itself, and every prefix key: :func:`masked_attention` with
    :func:`~neural_memory.common.masks.window_mask_from_positions`' mask, without the ``T × (L + T)``
    scores. The fast form behind Titans' SW-Attn (Eq. 27, 31;
    :class:`~neural_memory.titans.mag.SlidingWindowAttention`) and the sliding-window Transformer baseline.

    Block ``j`` (queries ``jB .. jB + B - 1``) sees the ``B + window - 1`` keys ending at its last query:
    the keys, padded by ``window - 1 - L`` rows in front and to whole blocks at the end, are cut into
    overlapping windows by ``unfold`` (a view), and one band mask (:func:`_window_band_mask`) serves every
    block. One call instead of a loop of slices: a sliced tensor's backward writes a zero-filled gradient of
    the whole sequence per slice, a cost that grows with the square of the length.

    Args:
        q: the ``T`` newest queries, ``(B, H, T, d)``.
        keys, values: ``(B, H, L + T, d)``: ``L <= window - 1`` cached positions, then the ``T`` new ones.
        window: keys per query, itself included, ``>= 1``; block_size: queries per block, ``>= 1``.
        prefix_kv: ``(keys, values)`` of ``(B, H, N_p, d)`` that every query sees (MAG's persistent tokens).

    Returns:
        ``(B, H, T, d)``.
    """
    _check_window_inputs(q, keys, values, window, block_size, prefix_kv)
    batch, heads, n_query, d_head = q.shape
    if n_query == 0:
        return q.new_zeros(q.shape)
    block = min(block_size, n_query)
    n_blocks, front = -(-n_query // block), window - 1 - (keys.shape[2] - n_query)
    back, span = n_blocks * block - n_query, block + window - 1

    def windows(t: torch.Tensor) -> torch.Tensor:  # (B, H, L + T, d) -> (B, n_blocks, H, span, d)
        return F.pad(t, (0, 0, front, back)).unfold(2, span, block).permute(0, 2, 1, 4, 3)

    k, v = windows(keys), windows(values)
    mask = _window_band_mask(n_blocks, block, window, front, q.device)
    if prefix_kv is not None:  # always visible, in front of every block's window
        n_prefix = prefix_kv[0].shape[2]
        k = torch.cat([prefix_kv[0][:, None].expand(-1, n_blocks, -1, -1, -1), k], dim=3)
        v = torch.cat([prefix_kv[1][:, None].expand(-1, n_blocks, -1, -1, -1), v], dim=3)
        mask = torch.cat([mask.new_ones(n_blocks, block, n_prefix), mask], dim=2)
    q_blocks = F.pad(q, (0, 0, 0, back)).reshape(batch, heads, n_blocks, block, d_head).transpose(1, 2)
    flat = batch * n_blocks
    y = F.scaled_dot_product_attention(
        q_blocks.reshape(flat, heads, block, d_head),
        k.reshape(flat, heads, -1, d_head),
        v.reshape(flat, heads, -1, d_head),
        attn_mask=mask.repeat(batch, 1, 1)[:, None],
    )  # (B * n_blocks, H, block, d)
    y = y.reshape(batch, n_blocks, heads, block, d_head).transpose(1, 2).reshape(batch, heads, -1, d_head)
    return y[:, :, :n_query]


def _check_window_inputs(q, keys, values, window, block_size, prefix_kv) -> None:
    """Shapes and sizes of :func:`windowed_attention`'s inputs; a mismatch would attend to the wrong keys."""
    check_int("window", window)
    check_int("block_size", block_size)
    for name, t in (("q", q), ("keys", keys), ("values", values)):
        _check_tensor(name, t, 4)
    if q.dim() != 4:
        raise ValueError(f"q must be (batch, heads, T, d), got {tuple(q.shape)}")
    batch, heads, n_query, d_head = q.shape
    cached = keys.shape[2] - n_query
    if (
        keys.dim() != 4
        or keys.shape[:2] != q.shape[:2]
        or keys.shape[3] != d_head
        or not 0 <= cached < window
    ):
        raise ValueError(
            f"keys must be ({batch}, {heads}, L + {n_query}, {d_head}) with 0 <= L <= window - 1 = "
            f"{window - 1} cached positions before the queries', got {tuple(keys.shape)}"
        )
    if values.shape != keys.shape:
        raise ValueError(f"values must have the keys' shape {tuple(keys.shape)}, got {tuple(values.shape)}")
    if prefix_kv is not None:
        pk, pv = prefix_kv
        if pk.dim() != 4 or pk.shape != pv.shape or pk.shape[:2] != q.shape[:2] or pk.shape[3] != d_head:
            raise ValueError(
                f"prefix_kv must be (keys, values) of one shape ({batch}, {heads}, N_p, {d_head}), "
                f"got {tuple(pk.shape)} and {tuple(pv.shape)}"
            )


def _window_band_mask(n_blocks: int, block: int, window: int, front: int, device) -> torch.Tensor:
    """``(n_blocks, block, block + window - 1)`` bool: may query ``i`` of a block see slot ``s``?

    Query ``i`` and slot ``s`` are ``i - s + window - 1`` tokens apart in every block, so one band serves
    all of them; the front padding (slots before the first key, in the first blocks) is hidden. The
    trailing padded queries (outputs dropped) see the padded keys of their band: no softmax row is empty.
    """
    slot = torch.arange(block + window - 1, device=device)
    row = torch.arange(block, device=device)[:, None]
    band = (slot >= row) & (slot <= row + window - 1)  # lag i - s + window - 1 in [0, window)
    padded = torch.arange(n_blocks, device=device)[:, None] * block + slot  # (n_blocks, span)
    return band & (padded >= front)[:, None, :]


@implements("titans", 2)
@implements("miras", 2)
def causal_softmax_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float | None = None
) -> torch.Tensor:
    r"""Causal softmax attention (Titans v1, Eq. 2).

    Also MIRAS v1 Eq. 2 (the same formula in MIRAS §2).

    .. math::
        \mathbf{y}_i = \sum_{j=1}^{i}
        \frac{\exp\left(\mathbf{Q}_i^{\top}\mathbf{K}_j/\sqrt{d_{\mathrm{in}}}\right)\mathbf{V}_j}
        {\sum_{\ell=1}^{i}\exp\left(\mathbf{Q}_i^{\top}\mathbf{K}_\ell/\sqrt{d_{\mathrm{in}}}\right)}
        \qquad (2)

    Token ``i`` averages the values of tokens ``1..i`` with softmax weights. The paper's single-head
    scale ``1/sqrt(d_in)`` is our default ``1/sqrt(d_k)`` (the head width for multi-head inputs).

    Args:
        q, k: ``(..., L, d_k)``.
        v: ``(..., L, d_v)``.
        scale: score scale; default ``1 / sqrt(d_k)``.

    Returns:
        ``(..., L, d_v)``.
    """
    _check_qkv(q, k, v)
    _check_square(q, k)
    return masked_attention(q, k, v, causal_mask(q.shape[-2], device=q.device), scale=scale)


# --------------------------------------------------------------------------------------------------
# Eq. 3–5: linear attention and its matrix-valued memory
# --------------------------------------------------------------------------------------------------


def elu_plus_one(x: torch.Tensor) -> torch.Tensor:
    r"""Positive feature map :math:`\phi(x) = \mathrm{elu}(x) + 1` (Katharopoulos et al., 2020)."""
    return F.elu(x) + 1.0


def _features(feature_map: FeatureMap, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    fq, fk = feature_map(q), feature_map(k)
    if fq.shape != q.shape or fk.shape != k.shape:
        raise ValueError("feature_map changed the shape of q or k; it must act element-wise")
    return fq, fk


def _check_normaliser(denominator: torch.Tensor) -> None:
    if not (denominator > 0).all():
        raise ValueError(
            "linear attention normaliser phi(Q_i)^T sum_{j<=i} phi(K_j) must be > 0; "
            "use a positive feature_map or normalize=False"
        )


@implements("titans", 3)
def linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    feature_map: FeatureMap = elu_plus_one,
    *,
    normalize: bool = True,
) -> torch.Tensor:
    r"""Causal kernelised (linear) attention, parallel/quadratic form (Titans v1, Eq. 3).

    .. math::
        \mathbf{y}_i = \sum_{j=1}^{i}\frac{\phi(Q_i)^{\top}\phi(K_j)}{\sum_{\ell=1}^{i}\phi(Q_i)^{\top}
        \phi(K_\ell)}V_j = \frac{\phi(Q_i)^{\top}\sum_{j=1}^{i}\phi(K_j)V_j}{\phi(Q_i)^{\top}
        \sum_{\ell=1}^{i}\phi(K_\ell)} \qquad (3)

    Softmax's ``exp(Q_i^T K_j)`` is replaced by a product of features, so the weights factorise.
    The paper prints the kernel as ``φ(x, y) = φ(x)φ(y)``; we read it as the inner product
    ``φ(x)^T φ(y)`` (docs/errata.md). ``normalize=False`` drops the denominator; with the identity
    feature map that is Eq. 4–5's ``y_i = Σ_{j≤i} (Q_i K_j^T) V_j``.

    Args:
        q, k: ``(..., L, d_k)``.
        v: ``(..., L, d_v)``.
        feature_map: element-wise map ``φ``; must keep normalisers positive (default ``elu + 1``).
        normalize: divide by ``φ(Q_i)^T Σ_{ℓ≤i} φ(K_ℓ)``.

    Returns:
        ``(..., L, d_v)``; ``O(L^2)`` time and memory.
    """
    _check_qkv(q, k, v)
    _check_square(q, k)
    fq, fk = _features(feature_map, q, k)
    scores = (fq @ fk.transpose(-2, -1)).tril()  # (..., L, L), phi(Q_i)^T phi(K_j) for j <= i
    if normalize:
        denominator = scores.sum(dim=-1, keepdim=True)
        _check_normaliser(denominator)
        scores = scores / denominator
    return scores @ v


@implements("titans", 3)
def linear_attention_recurrent(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    feature_map: FeatureMap = elu_plus_one,
    *,
    normalize: bool = True,
) -> torch.Tensor:
    r"""Causal linear attention, recurrent prefix-sum form (right-hand side of Titans v1, Eq. 3).

    .. math::
        \mathcal{M}_i = \mathcal{M}_{i-1} + \phi(K_i)^{\top} V_i, \quad z_i = z_{i-1} + \phi(K_i), \quad
        \mathbf{y}_i = \frac{\phi(Q_i)\,\mathcal{M}_i}{\phi(Q_i)\, z_i^{\top}}

    Carries the running sums of Eq. 3 token by token (Eq. 4–5's write and read on features), so the state
    has a fixed size ``d_k × d_v``. Same arguments and result as :func:`linear_attention`.

    Args:
        q, k: ``(..., L, d_k)``.
        v: ``(..., L, d_v)``.
        feature_map: element-wise map ``φ`` (default ``elu + 1``).
        normalize: divide by ``φ(Q_i) z_i^T``.

    Returns:
        ``(..., L, d_v)``; ``O(L d_k d_v)`` time, ``O(d_k d_v)`` state.
    """
    _check_qkv(q, k, v)
    _check_square(q, k)
    fq, fk = _features(feature_map, q, k)
    batch = torch.broadcast_shapes(fq.shape[:-2], fk.shape[:-2], v.shape[:-2])
    dtype = torch.promote_types(fk.dtype, v.dtype)
    memory = torch.zeros(*batch, fk.shape[-1], v.shape[-1], dtype=dtype, device=v.device)
    z = torch.zeros(*batch, fk.shape[-1], dtype=fk.dtype, device=fk.device)
    if q.shape[-2] == 0:  # no token: the empty (..., 0, d_v) read of linear_attention, not an empty stack
        return fq @ memory
    numerators, denominators = [], []
    for t in range(q.shape[-2]):
        memory = linear_memory_write(memory, fk[..., t, :], v[..., t, :])
        z = z + fk[..., t, :]
        numerators.append(linear_memory_read(memory, fq[..., t, :]))
        denominators.append((fq[..., t, :] * z).sum(dim=-1, keepdim=True))
    y = torch.stack(numerators, dim=-2)
    if not normalize:
        return y
    denominator = torch.stack(denominators, dim=-2)
    _check_normaliser(denominator)
    return y / denominator


@implements("titans", 4)
def linear_memory_write(memory: torch.Tensor, k_t: torch.Tensor, v_t: torch.Tensor) -> torch.Tensor:
    r"""Linear-attention memory write (Titans v1, Eq. 4).

    .. math::
        \mathcal{M}_t = \mathcal{M}_{t-1} + K_t^{\top}V_t \qquad (4)

    Add the outer product of the key and the value to the matrix memory (a rank-1 update).

    Args:
        memory: ``M_{t-1}``, ``(..., d_k, d_v)``.
        k_t: the row vector ``K_t``, ``(..., d_k)``.
        v_t: the row vector ``V_t``, ``(..., d_v)``.

    Returns:
        ``M_t``, ``(..., d_k, d_v)`` (a new tensor; ``memory`` is not modified).
    """
    d_k, d_v = _memory_dims(memory)
    _check_vector("k_t", k_t, d_k)
    _check_vector("v_t", v_t, d_v)
    return memory + k_t[..., :, None] * v_t[..., None, :]


@implements("titans", 5)
def linear_memory_read(memory: torch.Tensor, q_t: torch.Tensor) -> torch.Tensor:
    r"""Linear-attention memory read (Titans v1, Eq. 5).

    .. math::
        \mathbf{y}_t = Q_t\mathcal{M}_t \qquad (5)

    Multiply the query row by the memory matrix; the memory is not changed.

    Args:
        memory: ``M_t``, ``(..., d_k, d_v)``.
        q_t: the row vector ``Q_t``, ``(..., d_k)``.

    Returns:
        ``y_t``, ``(..., d_v)``.
    """
    d_k, _ = _memory_dims(memory)
    _check_vector("q_t", q_t, d_k)
    return (q_t[..., None, :] @ memory).squeeze(-2)


def _memory_dims(memory: torch.Tensor) -> tuple[int, int]:
    _check_tensor("memory", memory, 2)
    return memory.shape[-2], memory.shape[-1]


def _check_vector(name: str, t: torch.Tensor, dim: int) -> None:
    _check_tensor(name, t, 1)
    if t.shape[-1] != dim:
        raise ValueError(f"{name} must have shape (..., {dim}), got {tuple(t.shape)}")


# --------------------------------------------------------------------------------------------------
# Eq. 6–7: a recurrent memory is a write f and a read g
# --------------------------------------------------------------------------------------------------


class RecurrentMemory(Protocol[State]):
    r"""A recurrent memory in the sense of Titans v1, Eq. 6–7: a write ``f`` and a read ``g``.

    .. math::
        \mathcal{M}_t = f(\mathcal{M}_{t-1}, x_t) \quad \text{(6, write)}, \qquad
        \mathbf{y}_t = g(\mathcal{M}_t, x_t) \quad \text{(7, read)}

    ``write`` is the only operation that produces a new state; ``read`` must be pure (no in-place change of
    the state). The paper's sentence after Eq. 6–7 swaps ``f`` and ``g``; we follow the equation labels
    (f = write, g = read), see docs/errata.md.
    """

    def write(self, state: State, x_t: torch.Tensor) -> State: ...

    def read(self, state: State, x_t: torch.Tensor) -> torch.Tensor: ...


@implements("titans", 6, 7)
def run_recurrence(
    write: Callable[[State, torch.Tensor], State],
    read: Callable[[State, torch.Tensor], torch.Tensor],
    state: State,
    xs: torch.Tensor,
) -> tuple[torch.Tensor, State]:
    r"""Run a recurrent memory over a sequence: write, then read, per token (Titans v1, Eq. 6–7).

    .. math::
        \mathcal{M}_t = f(\mathcal{M}_{t-1}, x_t) \qquad (6) \\
        \mathbf{y}_t = g(\mathcal{M}_t, x_t) \qquad (7)

    The read at step ``t`` sees the state *after* writing ``x_t``. ``f`` = ``write`` and ``g`` = ``read``
    as the equation labels say (the paper's prose swaps them; docs/errata.md). For an object following
    :class:`RecurrentMemory`, pass ``memory.write, memory.read``.

    Args:
        write: ``f(state, x_t) -> state``; must return a new state rather than mutate its argument.
        read: ``g(state, x_t) -> y_t``, a tensor ``(..., d_out)``; must not mutate the state.
        state: ``M_0``, any object (a tensor, a tuple of tensors, ...).
        xs: ``(..., seq, d_in)``; token ``t`` is ``xs[..., t, :]``.

    Returns:
        ``(ys, M_seq)``: ``ys`` of shape ``(..., seq, d_out)`` and the final state.
    """
    _check_tensor("xs", xs, 2)
    if xs.shape[-2] == 0:
        raise ValueError("xs must hold at least one token (seq axis is -2)")
    ys = []
    for t in range(xs.shape[-2]):
        x_t = xs[..., t, :]
        state = write(state, x_t)
        y_t = read(state, x_t)
        if not isinstance(y_t, torch.Tensor):
            raise TypeError(f"read must return a torch.Tensor, got {type(y_t).__name__}")
        ys.append(y_t)
    return torch.stack(ys, dim=-2), state


# --------------------------------------------------------------------------------------------------
# Eq. 20: a feed-forward layer is attention over learned, input-independent key/value slots
# --------------------------------------------------------------------------------------------------


@implements("titans", 20)
def ffn_as_attention(x: torch.Tensor, w_k: torch.Tensor, w_v: torch.Tensor) -> torch.Tensor:
    r"""Feed-forward layer with a softmax, read as data-independent attention (Titans v1, Eq. 20).

    .. math::
        FFN(x) = W_V\,\mathrm{Softmax}(W_K x) \qquad (20)

    The ``m`` rows of ``W_K`` act as fixed keys and the ``m`` columns of ``W_V`` as fixed values: the
    input is a single query, and the output is a convex combination of ``W_V``'s columns (Sukhbaatar et
    al., 2019; motivation for persistent memory). The paper's ``x`` is a column; we take a batch of rows
    and apply the equation to each.

    Args:
        x: ``(..., d_in)``.
        w_k: ``W_K``, ``(m, d_in)``.
        w_v: ``W_V``, ``(d_out, m)``.

    Returns:
        ``(..., d_out)``.
    """
    _check_tensor("x", x, 1)
    _check_tensor("w_k", w_k, 2)
    _check_tensor("w_v", w_v, 2)
    if w_k.dim() != 2 or w_k.shape[1] != x.shape[-1]:
        raise ValueError(f"w_k must have shape (m, d_in={x.shape[-1]}), got {tuple(w_k.shape)}")
    if w_v.dim() != 2 or w_v.shape[1] != w_k.shape[0]:
        raise ValueError(f"w_v must have shape (d_out, m={w_k.shape[0]}), got {tuple(w_v.shape)}")
    weights = torch.softmax(x @ w_k.T, dim=-1)  # (..., m)
    return weights @ w_v.T


__all__ = [
    "RecurrentMemory",
    "causal_softmax_attention",
    "elu_plus_one",
    "ffn_as_attention",
    "linear_attention",
    "linear_attention_recurrent",
    "linear_memory_read",
    "linear_memory_write",
    "masked_attention",
    "qkv_projection",
    "run_recurrence",
    "windowed_attention",
]
