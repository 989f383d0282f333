r"""Sequence models as associative memories: the learning rules of NL §5 (NL v1, Eq. 21, 61–69).

Nested Learning reads every token mixer as a memory that is *optimised in context*: attention solves a
locally weighted regression in closed form (Eq. 62–63), and each recurrent rule is one gradient step of a
matrix memory on an inner objective over the current key and value —

* Hebbian / gated linear attention (Eq. 64): the dot-product objective :math:`-\langle\mathcal M k, v\rangle`;
* the delta rule (Eq. 65): the regression objective :math:`\tfrac12\|\mathcal M k - v\|_2^2`;
* Oja's rule (Eq. 66–67): :math:`-2\langle\mathcal M k, v\rangle + \|\mathcal M^\top v\|_2^2`, step η/2;
* the Omega rule (Eq. 68): the regression (or dot-product) objective summed over the last ``c`` tokens;
* AdaTransformer / Linear Attention++ (Eq. 21, 69): a Transformer block whose last weight is a Hebbian
  memory written in context from a meta-learned start.

Conventions. Tokens are rows and sequences ``(batch, seq, d)`` (Eq. 61). A matrix memory is the column
convention of the NL catalog, ``M`` of shape ``(batch, d_v, d_k)``, reading :math:`\mathcal M\phi(q_t)`
*after* the write at ``t`` (N-U3). Gates ``eta`` and ``alpha`` are floats or one value per token
``(batch, seq)``. Every rule has a token loop (the reference); where a cheap exact fast form exists it is
given beside it and tested equal in float64: the Hebbian rule's decay-masked parallel form, the delta
rule's chunked WY form, the Omega rule's window-statistics form.

Reuse: the per-token steps are :func:`neural_memory.miras.framework.hebbian_step` (Eq. 64) and
:func:`neural_memory.common.delta_rule.delta_rule_step` (Eq. 65, via
:func:`~neural_memory.common.delta_rule_chunked.recurrent_delta_rule` and its chunked twin); attention is
:func:`neural_memory.common.attention.masked_attention` with the masks of :mod:`neural_memory.common.masks`;
the inner objectives are those of :mod:`neural_memory.nl.associative_memory`. Decisions where the paper is
wrong or silent: docs/errata.md, NL Eq. 21/69, 62–63, 64, 65, 66–67, 68.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from neural_memory.common.attention import (
    _check_qkv,
    _check_square,
    causal_softmax_attention,
    masked_attention,
    qkv_projection,
)
from neural_memory.common.delta_rule import _check_memory
from neural_memory.common.delta_rule_chunked import chunk_delta_rule, recurrent_delta_rule
from neural_memory.common.masks import sliding_window_mask
from neural_memory.common.scan import linear_recurrence, linear_scan
from neural_memory.common.validation import check_int, check_range
from neural_memory.miras.framework import hebbian_step
from neural_memory.nl.associative_memory import InnerObjective, _check_pairs
from neural_memory.registry import implements

FeatureMap = Callable[[Tensor], Tensor]
Gate = float | Tensor
OBJECTIVES = ("l2", "dot")
IMPLS = ("recurrent", "parallel")


# --------------------------------------------------------------------------------------------------
# shared checks
# --------------------------------------------------------------------------------------------------


def _check_sequences(q: Tensor, k: Tensor, v: Tensor) -> None:
    """``q, k (batch, seq, d_k)``, ``v (batch, seq, d_v)``."""
    if not isinstance(q, Tensor) or q.dim() != 3:
        raise ValueError(f"q must have shape (batch, seq, d_k), got {getattr(q, 'shape', type(q).__name__)}")
    if not isinstance(k, Tensor) or k.shape != q.shape:
        raise ValueError(
            f"k must have shape (batch, seq, d_k) = {tuple(q.shape)} like q, got {getattr(k, 'shape', None)}"
        )
    if not isinstance(v, Tensor) or v.dim() != 3 or v.shape[:2] != q.shape[:2]:
        raise ValueError(
            f"v must have shape (batch, seq, d_v) = ({q.shape[0]}, {q.shape[1]}, d_v), "
            f"got {getattr(v, 'shape', None)}"
        )


def _features(feature_map: FeatureMap | None, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    """``(φ(q), φ(k))``; ``None`` is the identity. φ must act element-wise (keep the shape)."""
    if feature_map is None:
        return q, k
    fq, fk = feature_map(q), feature_map(k)
    if fq.shape != q.shape or fk.shape != k.shape:
        raise ValueError("feature_map changed the shape of q or k; it must act element-wise")
    return fq, fk


def _gate(name: str, value: Gate, like: Tensor, *, high: float = math.inf) -> Tensor:
    """A per-token gate in ``[0, high]`` as a ``(batch, seq)`` tensor (floats broadcast)."""
    shape = like.shape[:2]
    return check_range(name, value, like, shape=shape, high=high).expand(shape)


def _initial_state(initial_state: Tensor | None, q: Tensor, v: Tensor, dtype: torch.dtype) -> Tensor:
    shape = (q.shape[0], v.shape[-1], q.shape[-1])
    if initial_state is None:
        return torch.zeros(shape, dtype=dtype, device=q.device)
    if not isinstance(initial_state, Tensor) or initial_state.shape != shape:
        raise ValueError(
            f"initial_state must have shape {shape} = (batch, d_v, d_k), "
            f"got {getattr(initial_state, 'shape', type(initial_state).__name__)}"
        )
    return initial_state


def _read(memory: Tensor, query: Tensor) -> Tensor:
    """``M φ(q)``: ``(batch, d_v, d_k)`` and ``(batch, d_k)`` → ``(batch, d_v)``."""
    return (memory @ query[..., None]).squeeze(-1)


def _outer(v: Tensor, k: Tensor) -> Tensor:
    """``v kᵀ`` for batched vectors: ``(..., d_v)``, ``(..., d_k)`` → ``(..., d_v, d_k)``."""
    return v[..., :, None] * k[..., None, :]


# --------------------------------------------------------------------------------------------------
# Eq. 62–63: attention as locally weighted regression
# --------------------------------------------------------------------------------------------------


@implements("nl", 62)
def nadaraya_watson(similarity: Tensor, values: Tensor) -> Tensor:
    r"""The minimiser of a similarity-weighted regression onto a constant (NL v1, Eq. 62).

    .. math::
        \mathcal{M}^* = \arg\min_{\mathcal{M}} \sum_{i=1}^L \mathbf{s}(\mathbf{k}_i, \mathbf{q})
            \|\mathbf{v}_i - \mathcal{M}\|_2^2
            = \sum_{i=1}^L \frac{\mathbf{s}(\mathbf{k}_i, \mathbf{q})}{\sum_{j=1}^L
            \mathbf{s}(\mathbf{k}_j, \mathbf{q})} \mathbf{v}_i \qquad (62)

    For each query, the weighted mean of the values: setting the gradient
    :math:`-2\sum_i s_i(v_i - \mathcal M)` to zero gives it, for *any* similarity ``s >= 0``. With
    :math:`s = \exp(q^\top k/\sqrt d)` it is softmax attention
    (:func:`neural_memory.common.attention.masked_attention`, which also claims Eq. 62); a similarity that
    is zero outside a window gives Eq. 63.

    Args:
        similarity: :math:`s(k_i, q)`, ``(..., L_q, L)``, finite and ``>= 0``, each query with at least one
            positive entry (the minimiser is not unique otherwise).
        values: ``(..., L, d_v)``.

    Returns:
        ``M*`` per query, ``(..., L_q, d_v)``.
    """
    if not isinstance(similarity, Tensor) or similarity.dim() < 2:
        raise ValueError(f"similarity must be (..., L_q, L), got {getattr(similarity, 'shape', None)}")
    length = similarity.shape[-1]
    if not isinstance(values, Tensor) or values.dim() < 2 or values.shape[-2] != length:
        raise ValueError(f"values must be (..., L={length}, d_v), got {getattr(values, 'shape', None)}")
    if not bool(torch.isfinite(similarity).all() and (similarity >= 0).all()):
        raise ValueError("similarity must be >= 0 and finite")
    total = similarity.sum(dim=-1, keepdim=True)
    if not bool((total > 0).all()):
        raise ValueError("every query needs at least one positive similarity (else the minimiser is any M)")
    return (similarity / total) @ values


@implements("nl", 63)
def sliding_window_attention(
    q: Tensor, k: Tensor, v: Tensor, window: int, *, scale: float | None = None
) -> Tensor:
    r"""Sliding-window softmax attention as the window's regression minimiser (NL v1, Eq. 63).

    .. math::
        \mathcal{M}^* = \arg \min_{\mathcal{M}} \sum_{i=t-c+1}^t s(\mathbf k_i, \mathbf q)
            \|\mathbf v_i - \mathcal{M}\|_2^2 = \sum_{i=t-c+1}^t \frac{s(\mathbf k_i, \mathbf q)}
            {\sum_{j=t-c+1}^t s(\mathbf k_j, \mathbf q)} \mathbf v_i \qquad (63)

    Query ``t`` averages the values of the last ``c`` tokens (itself included) with weights
    :math:`s = \exp(\text{scale}\; q_t^\top k_i)`: :func:`~neural_memory.common.attention.masked_attention`
    with :func:`~neural_memory.common.masks.sliding_window_mask`. The printed :math:`s(k_i, q_i)` inside the
    argmin is read :math:`s(k_i, q)`, as on the right; the first ``c − 1`` queries see the tokens that
    exist, ``1..t`` (docs/errata.md, NL Eq. 62–63).

    Args:
        q, k: ``(..., L, d_k)``.
        v: ``(..., L, d_v)``.
        window: ``c >= 1``.
        scale: score scale; default ``1 / sqrt(d_k)``.

    Returns:
        ``(..., L, d_v)``.
    """
    check_int("window", window, 1)
    _check_qkv(q, k, v)
    _check_square(q, k)
    mask = sliding_window_mask(q.shape[-2], window, device=q.device)
    return masked_attention(q, k, v, mask, scale=scale)


# --------------------------------------------------------------------------------------------------
# Eq. 64: Hebbian RNN
# --------------------------------------------------------------------------------------------------


def _hebbian_inputs(q, k, v, eta, alpha, feature_map, initial_state):
    _check_sequences(q, k, v)
    fq, fk = _features(feature_map, q, k)
    eta_ = _gate("eta", eta, v)
    alpha_ = _gate("alpha", alpha, v, high=1.0)
    return fq, fk, eta_, alpha_, _initial_state(initial_state, q, v, v.dtype)


@implements("nl", 64)
def hebbian_rnn(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    eta: Gate = 1.0,
    alpha: Gate = 1.0,
    feature_map: FeatureMap | None = None,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Hebbian RNN / linear attention with decay, token by token (NL v1, Eq. 64).

    .. math::
        \mathcal{M}_{t} = \alpha_{t} \mathcal{M}_{t-1} - \eta\,\nabla_{\mathcal{M}_{t-1}}
            \tilde{\mathcal{L}}\big(\mathcal{M}_{t-1}; \phi(\mathbf k_{t}), \mathbf v_{t}\big)
            = \alpha_{t} \mathcal{M}_{t-1} + \eta_{t}\, \mathbf v_{t} \phi(\mathbf k_{t})^{\top}, \qquad
        \mathbf y_t = \mathcal M_t\,\phi(\mathbf q_t) \qquad (64)

    Decay the memory, then add the value–key outer product: one GD step of size ``η`` on the dot-product
    objective :math:`\tilde{\mathcal L} = -\langle\mathcal M\phi(k), v\rangle`. The reference: a loop of
    :func:`neural_memory.miras.framework.hebbian_step` (MIRAS Eq. 8, which this is with the value
    :math:`\eta_t v_t`). ``α = η = 1``, ``φ = id`` is linear attention (NL Eq. 15–16). The prose's
    :math:`\tilde{\mathcal L} = -2\langle\cdot\rangle` and the printed :math:`\phi(k_t^\top)` are read as the
    printed gradient says (docs/errata.md, NL Eq. 64). Per-channel decays (GLA) are
    ``hebbian_step(..., diagonal="col")``.

    Args:
        q, k: ``(batch, seq, d_k)``.
        v: ``(batch, seq, d_v)``.
        eta: write strength ``η_t >= 0``, a float or ``(batch, seq)``.
        alpha: decay ``α_t ∈ [0, 1]``, a float or ``(batch, seq)``.
        feature_map: element-wise ``φ`` applied to keys and queries; ``None`` is the identity.
        initial_state: ``M_0``, ``(batch, d_v, d_k)``; zeros when ``None``.

    Returns:
        ``(y, M_T)``: outputs ``(batch, seq, d_v)`` and the final memory ``(batch, d_v, d_k)``.
    """
    fq, fk, eta_, alpha_, state = _hebbian_inputs(q, k, v, eta, alpha, feature_map, initial_state)
    outputs = []
    for t in range(q.shape[1]):
        state = hebbian_step(state, fk[:, t], eta_[:, t, None] * v[:, t], alpha_[:, t])
        outputs.append(_read(state, fq[:, t]))
    return torch.stack(outputs, dim=1), state


@implements("nl", 64)
def hebbian_rnn_parallel(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    eta: Gate = 1.0,
    alpha: Gate = 1.0,
    feature_map: FeatureMap | None = None,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Hebbian RNN, all tokens at once: decay-masked linear attention (NL v1, Eq. 64).

    .. math::
        \mathbf y_t = \gamma_t\,\mathcal M_0\phi(\mathbf q_t) + \sum_{s\le t} R_{ts}\,\eta_s\,
            \big(\phi(\mathbf k_s)^\top\phi(\mathbf q_t)\big)\,\mathbf v_s, \qquad
        R_{ts} = \prod_{r=s+1}^{t}\alpha_r,\quad \gamma_t = \prod_{r=1}^t \alpha_r

    The recurrence of :func:`hebbian_rnn` unrolled. The ratios come from
    :func:`neural_memory.common.scan.linear_scan` (products, no division), so gates exactly 0 or 1 are
    exact. ``O(seq² (d_k + d_v))`` time; same arguments and results as :func:`hebbian_rnn`.
    """
    fq, fk, eta_, alpha_, state = _hebbian_inputs(q, k, v, eta, alpha, feature_map, initial_state)
    n = q.shape[1]
    eye = torch.eye(n, dtype=alpha_.dtype, device=alpha_.device).expand(q.shape[0], n, n)
    gamma, ratios = linear_scan(alpha_, eye)  # (batch, seq), (batch, seq, seq) lower triangular
    weights = ratios * eta_[:, None, :]  # R_ts η_s
    y = ((fq @ fk.transpose(1, 2)) * weights) @ v + gamma[..., None] * (fq @ state.transpose(1, 2))
    final = gamma[:, -1, None, None] * state + (v * weights[:, -1, :, None]).transpose(1, 2) @ fk
    return y, final


# --------------------------------------------------------------------------------------------------
# Eq. 65: delta rule
# --------------------------------------------------------------------------------------------------


def _delta_inputs(q, k, v, eta, feature_map, initial_state):
    _check_sequences(q, k, v)
    fq, fk = _features(feature_map, q, k)
    eta_ = _gate("eta", eta, v)
    return fq[:, None], fk[:, None], v[:, None], eta_[:, None], _initial_state(initial_state, q, v, v.dtype)


@implements("nl", 65)
def delta_rule_rnn(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    eta: Gate,
    feature_map: FeatureMap | None = None,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Delta-rule RNN (DeltaNet), token by token (NL v1, Eq. 65, right-multiplied).

    .. math::
        \mathcal{M}_t = \mathcal{M}_{t-1} - \eta_t \nabla_{\mathcal{M}_{t-1}} \tilde{\mathcal{L}}
            \big(\mathcal{M}_{t-1}; \phi(\mathbf{k}_t), \mathbf{v}_t\big)
            = \mathcal{M}_{t-1}\big(\mathbf{I} - \eta_t\,\phi(\mathbf{k}_t)\phi(\mathbf{k}_t)^{\top}\big)
            + \eta_t\,\mathbf{v}_t\phi(\mathbf{k}_t)^{\top}, \qquad
        \mathbf y_t = \mathcal M_t\phi(\mathbf q_t) \qquad (65)

    One GD step of size ``η_t`` on :math:`\tilde{\mathcal L} = \tfrac12\|\mathcal M\phi(k_t) - v_t\|_2^2`
    (:class:`~neural_memory.nl.associative_memory.L2RegressionObjective`). The paper prints the transition
    on the *left*, :math:`(\mathbf I - \eta kk^\top)\mathcal M_{t-1}`, which is not that step for a memory
    read as :math:`\mathcal M k`; it states :math:`\|\mathcal Mk - v\|^2` but prints the gradient of the ½
    form. We implement the step the printed gradient gives (docs/errata.md, NL Eq. 65). The loop is
    :func:`neural_memory.common.delta_rule_chunked.recurrent_delta_rule` (Titans Eq. 34) on one head.

    Args:
        q, k: ``(batch, seq, d_k)``.
        v: ``(batch, seq, d_v)``.
        eta: step ``η_t >= 0``, a float or ``(batch, seq)``.
        feature_map: element-wise ``φ`` for keys and queries; ``None`` is the identity.
        initial_state: ``M_0``, ``(batch, d_v, d_k)``; zeros when ``None``.

    Returns:
        ``(y, M_T)``: ``(batch, seq, d_v)`` and ``(batch, d_v, d_k)``.
    """
    fq, fk, vh, eta_, state = _delta_inputs(q, k, v, eta, feature_map, initial_state)
    y, final = recurrent_delta_rule(fq, fk, vh, eta_, initial_state=state[:, None])
    return y[:, 0], final[:, 0]


@implements("nl", 65)
def delta_rule_rnn_chunked(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    eta: Gate,
    chunk_size: int = 64,
    feature_map: FeatureMap | None = None,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Delta-rule RNN in chunks, the WY / UT form (NL v1, Eq. 65, right-multiplied).

    The numbers of :func:`delta_rule_rnn`, ``chunk_size`` tokens at a time with
    :func:`neural_memory.common.delta_rule_chunked.chunk_delta_rule`. Same arguments, plus
    ``chunk_size >= 1``; same results.
    """
    fq, fk, vh, eta_, state = _delta_inputs(q, k, v, eta, feature_map, initial_state)
    y, final = chunk_delta_rule(
        fq, fk, vh, eta_.contiguous(), chunk_size=chunk_size, initial_state=state[:, None]
    )
    return y[:, 0], final[:, 0]


# --------------------------------------------------------------------------------------------------
# Eq. 66–67: Oja's rule
# --------------------------------------------------------------------------------------------------


@implements("nl", 67)
class OjaObjective(InnerObjective):
    r"""The inner objective whose gradient step is Oja's rule (NL v1, Eq. 67).

    .. math::
        \tilde{\mathcal L}(\mathcal M; k, v) = -2\langle\mathcal M k, v\rangle + \|\mathcal M^\top v\|_2^2,
        \qquad \nabla_{\mathcal M}\tilde{\mathcal L} = 2\,v v^\top\mathcal M - 2\,v k^\top

    A Hebbian term plus a penalty on what the memory sends back from the value: one GD step of size
    ``η/2`` from :math:`\mathcal M_{t-1}` is Oja's update with ``α = 1`` (:func:`oja_step`). The printed
    underbrace :math:`\mathcal M^\top v - v\phi(k)^\top` is half this gradient with
    :math:`\mathcal M^\top v` read as the matrix :math:`v v^\top\mathcal M` (docs/errata.md, NL Eq. 66–67).
    Sums over pairs.

    Shapes: ``memory (d_v, d_k)``, ``keys (n, d_k)`` (the features :math:`\phi(k)`), ``values (n, d_v)``.
    """

    def loss(self, memory: Tensor, keys: Tensor, values: Tensor | None) -> Tensor:
        _check_pairs(memory, keys, values)
        return -2 * (values * (keys @ memory.T)).sum() + ((values @ memory) ** 2).sum()

    def grad(self, memory: Tensor, keys: Tensor, values: Tensor | None) -> Tensor:
        _check_pairs(memory, keys, values)
        return 2 * values.T @ (values @ memory - keys)


@implements("nl", 66, 67)
def oja_step(memory: Tensor, k: Tensor, v: Tensor, eta: Gate, alpha: Gate = 1.0) -> Tensor:
    r"""One step of Oja's rule (NL v1, Eq. 66; with ``α = 1`` the GD step of Eq. 67).

    .. math::
        \mathcal{M}_t = \alpha_t \mathcal{M}_{t-1} + \eta_t \, \mathbf{v}_t \left( \phi(\mathbf{k}_t)^\top
            - \mathbf{v}_t^\top\mathcal{M}_{t-1} \right) \qquad (66)

        \mathcal{M}_{t} = \mathcal{M}_{t-1} - \eta_{t} \underbrace{\nabla_{\mathcal{M}_{t-1}}
            \tilde{\mathcal{L}}}_{\mathbf v_t\mathbf v_t^\top\mathcal{M}_{t-1}
            - \mathbf{v}_{t} \phi(\mathbf{k}_{t})^{\top}} \qquad (67)

    Hebbian write with a forgetting term: the memory loses what it would send back along the value. The
    printed :math:`\mathcal M_{t-1}^\top v_t` is a column of the wrong orientation; we use the row
    :math:`v_t^\top\mathcal M_{t-1}` (docs/errata.md, NL Eq. 66–67). With ``α = 1`` it is the delta rule
    on the transposed memory (key ``v``, value ``φ(k)``), and a GD step of size ``η/2`` on
    :class:`OjaObjective`.

    Args:
        memory: ``M_{t−1}``, ``(..., d_v, d_k)``.
        k: the feature :math:`\phi(k_t)`, ``(..., d_k)``.
        v: ``(..., d_v)``.
        eta: ``η_t >= 0``; alpha: ``α_t ∈ [0, 1]``; floats or tensors broadcastable to the batch ``(...)``.

    Returns:
        ``M_t``, ``(..., d_v, d_k)``.
    """
    _check_memory(memory, k, v)
    batch = memory.shape[:-2]
    eta_ = check_range("eta", eta, memory, shape=batch)[..., None, None]
    alpha_ = check_range("alpha", alpha, memory, shape=batch, high=1.0)[..., None, None]
    sent_back = (v[..., None, :] @ memory).squeeze(-2)  # vᵀ M, (..., d_k)
    return alpha_ * memory + eta_ * _outer(v, k - sent_back)


@implements("nl", 66)
def oja_rnn(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    eta: Gate,
    alpha: Gate = 1.0,
    feature_map: FeatureMap | None = None,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""OjaNet: Oja's rule over a sequence, token by token (NL v1, Eq. 66).

    .. math::
        \mathcal{M}_t = \alpha_t \mathcal{M}_{t-1} + \eta_t \, \mathbf{v}_t \left( \phi(\mathbf{k}_t)^\top
            - \mathbf{v}_t^\top\mathcal{M}_{t-1} \right), \qquad
        \mathbf y_t = \mathcal M_t\phi(\mathbf q_t) \qquad (66)

    A loop of :func:`oja_step`. (A chunked form exists for ``α = 1`` through the transposed delta rule,
    but its outputs read the transposed state from the other side, so it is not the cheap reuse of
    :func:`~neural_memory.common.delta_rule_chunked.chunk_delta_rule` it looks like; not provided.)

    Args:
        q, k: ``(batch, seq, d_k)``.
        v: ``(batch, seq, d_v)``.
        eta: ``η_t >= 0``; alpha: ``α_t ∈ [0, 1]``; each a float or ``(batch, seq)``.
        feature_map: element-wise ``φ`` for keys and queries; ``None`` is the identity.
        initial_state: ``M_0``, ``(batch, d_v, d_k)``; zeros when ``None``.

    Returns:
        ``(y, M_T)``: ``(batch, seq, d_v)`` and ``(batch, d_v, d_k)``.
    """
    fq, fk, eta_, alpha_, state = _hebbian_inputs(q, k, v, eta, alpha, feature_map, initial_state)
    outputs = []
    for t in range(q.shape[1]):
        state = oja_step(state, fk[:, t], v[:, t], eta_[:, t], alpha_[:, t])
        outputs.append(_read(state, fq[:, t]))
    return torch.stack(outputs, dim=1), state


# --------------------------------------------------------------------------------------------------
# Eq. 68: the Omega rule
# --------------------------------------------------------------------------------------------------


def _omega_inputs(q, k, v, window, gamma, alpha, objective, feature_map, initial_state):
    check_int("window", window, 1)
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be 'l2' or 'dot', got {objective!r}")
    _check_sequences(q, k, v)
    fq, fk = _features(feature_map, q, k)
    shape = (*q.shape[:2], window)
    gamma_ = check_range("gamma", gamma, v, shape=torch.Size(shape)).expand(shape)
    alpha_ = _gate("alpha", alpha, v, high=1.0)
    return fq, fk, gamma_, alpha_, _initial_state(initial_state, q, v, v.dtype)


def _token_grad(memory: Tensor, k: Tensor, v: Tensor, objective: str) -> Tensor:
    """∇ of ½‖M k − v‖² (``"l2"``) or of −⟨M k, v⟩ (``"dot"``) at ``M``, batched ``(batch, d_v, d_k)``."""
    if objective == "l2":
        return _outer(_read(memory, k) - v, k)
    return -_outer(v, k)


@implements("nl", 68)
def omega_rule(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    window: int,
    gamma: Gate,
    alpha: Gate = 1.0,
    objective: str = "l2",
    feature_map: FeatureMap | None = None,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""The Omega rule, token by token (NL v1, Eq. 68, with the gradient and the time index restored).

    .. math::
        \mathcal{M}_t = \alpha_t\,\mathcal{M}_{t-1} - \sum_{i=t-c+1}^t \gamma_{t,i}\,
            \nabla\tilde{\mathcal{L}}\big(\mathcal{M}_{t-1}; \phi(\mathbf{k}_i), \mathbf{v}_i\big), \qquad
        \mathbf y_t = \mathcal M_t\phi(\mathbf q_t) \qquad (68)

    One GD step on the last ``c`` tokens' losses, each weighted by its own ``γ_{t,i}``, instead of the
    current token's alone. ``objective="l2"`` is :math:`\tilde{\mathcal L} = \tfrac12\|\mathcal M k - v\|^2`
    (``c = 1``, ``γ = η``: the delta rule, Eq. 65); ``"dot"`` is :math:`-\langle\mathcal M k, v\rangle`
    (``c = 1``: the Hebbian rule, Eq. 64). The paper prints the loss without ``∇`` and at
    :math:`\mathcal M_t`; we take the gradient (Atlas, where the rule comes from, has it) at
    :math:`\mathcal M_{t-1}`, the explicit step of Eq. 64–67. The first ``c − 1`` tokens sum over the
    tokens that exist (docs/errata.md, NL Eq. 68). The reference: a loop over tokens and, inside, over
    the window.

    Args:
        q, k: ``(batch, seq, d_k)``.
        v: ``(batch, seq, d_v)``.
        window: ``c >= 1``.
        gamma: weights ``γ_{t,i} >= 0`` by lag: ``gamma[b, t, j]`` weighs token ``i = t − j``; a float or a
            tensor broadcastable to ``(batch, seq, c)``.
        alpha: decay ``α_t ∈ [0, 1]``, a float or ``(batch, seq)``.
        objective: ``"l2"`` or ``"dot"``.
        feature_map: element-wise ``φ`` for keys and queries; ``None`` is the identity.
        initial_state: ``M_0``, ``(batch, d_v, d_k)``; zeros when ``None``.

    Returns:
        ``(y, M_T)``: ``(batch, seq, d_v)`` and ``(batch, d_v, d_k)``.
    """
    fq, fk, gamma_, alpha_, state = _omega_inputs(
        q, k, v, window, gamma, alpha, objective, feature_map, initial_state
    )
    outputs = []
    for t in range(q.shape[1]):
        step = torch.zeros_like(state)
        for lag in range(min(window, t + 1)):
            i = t - lag
            step = step + gamma_[:, t, lag, None, None] * _token_grad(state, fk[:, i], v[:, i], objective)
        state = alpha_[:, t, None, None] * state - step
        outputs.append(_read(state, fq[:, t]))
    return torch.stack(outputs, dim=1), state


def _windows(x: Tensor, window: int) -> Tensor:
    """``(batch, seq, d)`` → ``(batch, seq, c, d)``; ``[b, t, j]`` is token ``t − j`` (zeros before 0)."""
    padded = nn.functional.pad(x, (0, 0, window - 1, 0))
    return padded.unfold(1, window, 1).flip(-1).transpose(-1, -2)


@implements("nl", 68)
def omega_rule_windowed(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    window: int,
    gamma: Gate,
    alpha: Gate = 1.0,
    objective: str = "l2",
    feature_map: FeatureMap | None = None,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""The Omega rule from window statistics (NL v1, Eq. 68): the same numbers as :func:`omega_rule`.

    .. math::
        \mathcal{M}_t = \alpha_t\mathcal{M}_{t-1} - \mathcal{M}_{t-1}G_t + H_t, \qquad
        G_t = \sum_{i} \gamma_{t,i}\,\phi(\mathbf k_i)\phi(\mathbf k_i)^\top, \quad
        H_t = \sum_{i} \gamma_{t,i}\,\mathbf v_i\phi(\mathbf k_i)^\top

    The window sums do not depend on the memory, so all ``G_t, H_t`` come from one batched product over
    the unfolded windows (zero-padded before the first token, which adds nothing). What remains is one
    ``d_k × d_k`` product per token for ``"l2"``; for ``"dot"`` (``G = 0``) the recurrence is a scalar-decay
    linear scan (:func:`neural_memory.common.scan.linear_recurrence`), with no loop. Same arguments and
    results as :func:`omega_rule`.
    """
    fq, fk, gamma_, alpha_, state = _omega_inputs(
        q, k, v, window, gamma, alpha, objective, feature_map, initial_state
    )
    keys, values = _windows(fk, window), _windows(v, window)  # (B, T, c, d_k), (B, T, c, d_v)
    writes = torch.einsum("btl,btli,btlj->btij", gamma_, values, keys)  # H_t, (B, T, d_v, d_k)
    n_b, n_t, d_v, d_k = writes.shape
    if objective == "dot":
        states = linear_recurrence(alpha_, writes.reshape(n_b, n_t, -1), state.reshape(n_b, -1))
        states = states.reshape(n_b, n_t, d_v, d_k)
        return (states @ fq[..., None]).squeeze(-1), states[:, -1]
    grams = torch.einsum("btl,btli,btlj->btij", gamma_, keys, keys)  # G_t, (B, T, d_k, d_k)
    outputs = []
    for t in range(n_t):
        state = alpha_[:, t, None, None] * state - state @ grams[:, t] + writes[:, t]
        outputs.append(_read(state, fq[:, t]))
    return torch.stack(outputs, dim=1), state


# --------------------------------------------------------------------------------------------------
# Eq. 21, 69: AdaTransformer / Linear Attention++
# --------------------------------------------------------------------------------------------------


@implements("nl", 21, 69)
def ada_transformer_block(
    x: Tensor,
    w_q: Tensor,
    w_k: Tensor,
    w_v: Tensor,
    w_lin_init: Tensor,
    *,
    eta: Gate = 1.0,
    scale: float | None = None,
    impl: str = "parallel",
) -> tuple[Tensor, Tensor]:
    r"""AdaTransformer block: attention, then a last weight written in context (NL v1, Eq. 21, 69).

    .. math::
        \mathbf k_{t} = \mathbf x_{t}W_{k},\ \mathbf v_{t} = \mathbf x_{t}W_{v},\
        \mathbf q_{t} = \mathbf x_{t}W_{q},\quad y_{\text{attn}_{t}} = \text{Attn}(\mathbf{k}_{t},
        \mathbf{v}_{t}, \mathbf{q}_{t}),\quad y_{\text{block}_{t}} = y_{\text{attn}_{t}}
        W_{\text{LinAttn}_{t}} \qquad (69)

        \mathcal{M}_t = \mathcal{M}_{t-1} + \mathbf{v}_t \mathbf{k}_t^{\top}, \qquad
        \mathcal M_t \equiv W_{\text{LinAttn}_t} \qquad (21)

    A Transformer block whose output weight is not fixed: each token adds its value–key outer product to
    it before it is applied, starting from the meta-learned :math:`W_{\text{LinAttn},0}`. With the rows
    :math:`v_t, k_t`, :math:`v_tk_t^\top` is read as the outer product :math:`v_t^\top k_t`
    (``(d_v, d_k)``), the only reading that fits :math:`y_{\text{attn}}W` (docs/errata.md, NL Eq. 21, 69).
    Attn is causal softmax attention (:func:`~neural_memory.common.attention.causal_softmax_attention`).
    ``eta`` scales the write (1 in the paper); ``eta = 0`` is the Transformer block with
    :math:`W_{\text{MLP}} = W_{\text{LinAttn},0}` (N-U4).

    The weight is a Hebbian memory (Eq. 64, ``α = 1``) in the transposed orientation:
    :math:`y_{\text{attn}}W_t = (W_t^\top y_{\text{attn}}^\top)^\top` with :math:`W_t^\top = W_0^\top +
    \sum_{s\le t} k_s^\top v_s`, i.e. key :math:`v_s`, value :math:`k_s`, query :math:`y_{\text{attn},t}`. So
    ``impl="recurrent"`` runs :func:`hebbian_rnn` and ``impl="parallel"`` :func:`hebbian_rnn_parallel`.

    Args:
        x: ``(batch, seq, d_in)``.
        w_q, w_k: ``(d_in, d_k)``; w_v: ``(d_in, d_v)`` (Eq. 61).
        w_lin_init: :math:`W_{\text{LinAttn},0}`, ``(d_v, d_k)``, shared by the batch.
        eta: write strength ``>= 0``, a float or ``(batch, seq)``.
        scale: attention score scale; default ``1 / sqrt(d_k)``.
        impl: ``"parallel"`` or ``"recurrent"``.

    Returns:
        ``(y_block, W_T)``: ``(batch, seq, d_k)`` and the final weight ``(batch, d_v, d_k)``.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if not isinstance(x, Tensor) or x.dim() != 3:
        raise ValueError(f"x must have shape (batch, seq, d_in), got {getattr(x, 'shape', type(x).__name__)}")
    q, k, v = qkv_projection(x, w_q, w_k, w_v)
    shape = (v.shape[-1], k.shape[-1])
    if not isinstance(w_lin_init, Tensor) or w_lin_init.shape != shape:
        raise ValueError(
            f"w_lin_init must have shape (d_v={shape[0]}, d_k={shape[1]}), "
            f"got {getattr(w_lin_init, 'shape', type(w_lin_init).__name__)}"
        )
    y_attn = causal_softmax_attention(q, k, v, scale=scale)
    start = w_lin_init.T.expand(x.shape[0], *shape[::-1])  # M_0 = W_0ᵀ: key v_s, value k_s, query y_attn
    run = hebbian_rnn if impl == "recurrent" else hebbian_rnn_parallel
    y, memory = run(y_attn, v, k, eta=eta, initial_state=start)
    return y, memory.transpose(1, 2)


@implements("nl", 69)
class AdaTransformerBlock(nn.Module):
    r"""Linear Attention++ / AdaTransformer block with learned projections and initial weight (NL v1, Eq. 69).

    The parameters :math:`W_q, W_k, W_v` and the meta-learned :math:`W_{\text{LinAttn},0}` are trained by
    back-propagation through :func:`ada_transformer_block`, which writes the last weight in context
    (Eq. 21). ``forward(x (batch, seq, d_in)) -> (y (batch, seq, d_k), W_T (batch, d_v, d_k))``.

    Args:
        d_in: input width ``>= 1``.
        d_k: key/query width (default ``d_in``); also the output width.
        d_v: value width (default ``d_in``).
        eta: write strength ``>= 0`` (1 in the paper).
        impl: ``"parallel"`` or ``"recurrent"``.
    """

    def __init__(
        self,
        d_in: int,
        d_k: int | None = None,
        d_v: int | None = None,
        *,
        eta: float = 1.0,
        impl: str = "parallel",
    ) -> None:
        super().__init__()
        check_int("d_in", d_in)
        d_k = check_int("d_k", d_in if d_k is None else d_k)
        d_v = check_int("d_v", d_in if d_v is None else d_v)
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        self.eta, self.impl = check_range("eta", eta, torch.zeros(())).item(), impl
        std = d_in**-0.5
        self.w_q = nn.Parameter(torch.randn(d_in, d_k) * std)
        self.w_k = nn.Parameter(torch.randn(d_in, d_k) * std)
        self.w_v = nn.Parameter(torch.randn(d_in, d_v) * std)
        self.w_lin_init = nn.Parameter(torch.randn(d_v, d_k) * d_v**-0.5)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return ada_transformer_block(
            x, self.w_q, self.w_k, self.w_v, self.w_lin_init, eta=self.eta, impl=self.impl
        )


__all__ = [
    "AdaTransformerBlock",
    "OjaObjective",
    "ada_transformer_block",
    "delta_rule_rnn",
    "delta_rule_rnn_chunked",
    "hebbian_rnn",
    "hebbian_rnn_parallel",
    "nadaraya_watson",
    "oja_rnn",
    "oja_step",
    "omega_rule",
    "omega_rule_windowed",
    "sliding_window_attention",
]
