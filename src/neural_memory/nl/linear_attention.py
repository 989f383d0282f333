r"""Linear attention and fast weights in Nested Learning's reading (NL v1, Eq. 5, 14–18).

The vanilla fast-weight programmer (Eq. 5) and unnormalised linear attention (Eq. 14–16) keep a matrix
memory written with key-value outer products. Eq. 17–18 read that write as one gradient step, with
learning rate 1, on the dot-product objective :math:`-\langle\mathcal M k, v\rangle`: linear attention is
an associative memory (NL Definition 1) whose inner optimiser is GD. The write here *is* that step —
:func:`neural_memory.nl.associative_memory.proximal_step` on
:class:`~neural_memory.nl.associative_memory.DotProductObjective` with key ``k`` and value ``−v`` — and
the fast-weight programmer's decayed write is MIRAS' Hebbian step
(:func:`neural_memory.miras.framework.hebbian_step`).

One sequence, no batch, the catalog's column convention: tokens are rows, ``x (L, d_in)``; weights are
``W_k, W_q (d_k, d_in)``, ``W_v (d_v, d_in)``; the memory is ``(d_v, d_k)`` and reads ``M q``. The
batched, chunked layers are :mod:`neural_memory.miras.baselines` (``rule="linear"``), same numbers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from neural_memory.common.validation import check_range
from neural_memory.miras.framework import hebbian_step
from neural_memory.nl.associative_memory import DotProductObjective, proximal_step
from neural_memory.registry import implements


def _check_matrix_memory(memory: Tensor) -> tuple[int, int]:
    if not isinstance(memory, Tensor) or memory.dim() != 2:
        raise ValueError(f"memory must be (d_v, d_k), got shape {tuple(getattr(memory, 'shape', ()))}")
    return memory.shape[0], memory.shape[1]


def _check_vector(name: str, vector: Tensor, size: int, axis: str) -> None:
    if not isinstance(vector, Tensor) or vector.shape != (size,):
        raise ValueError(f"{name} must be ({axis}={size},), got shape {tuple(getattr(vector, 'shape', ()))}")


def _initial_state(initial_state: Tensor | None, d_v: int, d_k: int, like: Tensor) -> Tensor:
    if initial_state is None:
        return like.new_zeros(d_v, d_k)
    if initial_state.shape != (d_v, d_k):
        raise ValueError(
            f"initial_state must be (d_v={d_v}, d_k={d_k}), got shape {tuple(initial_state.shape)}"
        )
    return initial_state


@implements("nl", 5)
def fast_weight_programmer(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    alpha: float | Tensor = 1.0,
    feature_map: Callable[[Tensor], Tensor] | None = None,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""The vanilla fast-weight programmer over a sequence (NL v1, Eq. 5; read-out N-U3).

    .. math::
        \mathcal{M}_t = \alpha_t\mathcal{M}_{t-1} + \mathbf{v}_t\,\phi(\mathbf{k}_t)^\top \qquad (5)
        \qquad\qquad \mathbf{y}_t = \mathcal{M}_t\,\phi(\mathbf{q}_t)

    Decay the fast weight, add the outer product of the value and the key's features, read with the
    query's features. Each write is :func:`~neural_memory.miras.framework.hebbian_step`. The paper fixes
    neither φ nor the gate's shape: any element-wise φ, one scalar gate per token (docs/errata.md, NL Eq. 5).

    Args:
        q, k: ``(L, d_k)``.
        v: ``(L, d_v)``.
        alpha: decay ``α_t`` in [0, 1]: a float, or ``(L,)`` one per token.
        feature_map: element-wise ``φ`` (shape-preserving); the identity when ``None``.
        initial_state: ``M_0``, ``(d_v, d_k)``; zeros when ``None``.

    Returns:
        ``(y, M_L)``: outputs ``(L, d_v)`` and the final fast weight ``(d_v, d_k)``.
    """
    if q.dim() != 2:
        raise ValueError(f"q must be (L, d_k), got shape {tuple(q.shape)}")
    length, d_k = q.shape
    if k.shape != q.shape:
        raise ValueError(f"k must be (L={length}, d_k={d_k}), got shape {tuple(k.shape)}")
    if v.dim() != 2 or v.shape[0] != length:
        raise ValueError(f"v must be (L={length}, d_v), got shape {tuple(v.shape)}")
    alphas = check_range("alpha", alpha, q, shape=torch.Size([length]), low=0.0, high=1.0).expand(length)
    phi = feature_map if feature_map is not None else (lambda z: z)
    fq, fk = phi(q), phi(k)
    if fq.shape != q.shape or fk.shape != k.shape:
        raise ValueError("feature_map must act element-wise (it changed the shape of q or k)")
    memory = _initial_state(initial_state, v.shape[1], d_k, v)
    outputs = []
    for t in range(length):
        memory = hebbian_step(memory, fk[t], v[t], alphas[t])
        outputs.append(memory @ fq[t])
    return torch.stack(outputs), memory


@implements("nl", 14)
def linear_attention_projections(
    x: Tensor, w_k: Tensor, w_v: Tensor, w_q: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Keys, values and queries of linear attention, column convention (NL v1, Eq. 14).

    .. math::
        \mathbf{k}_t = W_k\mathbf{x}_t, \qquad \mathbf{v}_t = W_v\mathbf{x}_t, \qquad
        \mathbf{q}_t = W_q\mathbf{x}_t \qquad (14)

    Three slow (trained, not in-context updated) linear maps of each token.

    Args:
        x: tokens, ``(L, d_in)``.
        w_k, w_q: ``(d_k, d_in)``.
        w_v: ``(d_v, d_in)``.

    Returns:
        ``(k, v, q)``: ``(L, d_k)``, ``(L, d_v)``, ``(L, d_k)``.
    """
    if w_k.dim() != 2:
        raise ValueError(f"w_k must be (d_k, d_in), got shape {tuple(w_k.shape)}")
    d_k, d_in = w_k.shape
    if x.dim() != 2 or x.shape[1] != d_in:
        raise ValueError(f"x must be (L, d_in={d_in}), got shape {tuple(x.shape)}")
    if w_v.dim() != 2 or w_v.shape[1] != d_in:
        raise ValueError(f"w_v must be (d_v, d_in={d_in}), got shape {tuple(w_v.shape)}")
    if w_q.shape != (d_k, d_in):
        raise ValueError(f"w_q must be (d_k={d_k}, d_in={d_in}), got shape {tuple(w_q.shape)}")
    return x @ w_k.T, x @ w_v.T, x @ w_q.T  # row t is W x_t


@implements("nl", 15, 17, 18)
def linear_attention_write(memory: Tensor, key: Tensor, value: Tensor) -> Tensor:
    r"""The linear-attention write, as one GD step on the dot-product objective (NL v1, Eq. 15, 17, 18).

    .. math::
        \mathcal{M}_t = \mathcal{M}_{t-1} + \mathbf{v}_t\mathbf{k}_t^\top \qquad (15)

        \mathcal{M}_{t+1} = \arg\min_{\mathcal{M}}\ -\langle\mathcal{M}\mathbf{k}_{t+1},
            \mathbf{v}_{t+1}\rangle + \frac{1}{2}\|\mathcal{M} - \mathcal{M}_t\|_2^2 \qquad (17)

        \mathcal{M}_{t+1} = \mathcal{M}_t - \nabla\tilde{\mathcal{L}}(\mathcal{M}_t; \mathbf{k}_{t+1},
            \mathbf{v}_{t+1}) = \mathcal{M}_t + \mathbf{v}_{t+1}\mathbf{k}_{t+1}^\top \qquad (18)

    Add the value-key outer product. Computed as the exact proximal step (lr 1) of
    :class:`~neural_memory.nl.associative_memory.DotProductObjective` with key ``k`` and value ``−v``:
    the objective is linear, so its argmin (Eq. 17) is one gradient step (Eq. 18), and the gradient
    :math:`-v k^\top` makes it the rank-1 write of Eq. 15 exactly (sign flips are exact in floating point).

    Args:
        memory: ``M_t``, ``(d_v, d_k)``.
        key: ``(d_k,)``.
        value: ``(d_v,)``.

    Returns:
        ``M_{t+1}``, ``(d_v, d_k)``.
    """
    d_v, d_k = _check_matrix_memory(memory)
    _check_vector("key", key, d_k, "d_k")
    _check_vector("value", value, d_v, "d_v")
    return proximal_step(DotProductObjective(), memory, key[None], -value[None], 1.0)


@implements("nl", 16)
def linear_attention_read(memory: Tensor, query: Tensor) -> Tensor:
    r"""The linear-attention read-out (NL v1, Eq. 16).

    .. math::
        \mathbf{y}_t = \mathcal{M}_t\mathbf{q}_t \qquad (16)

    Args:
        memory: ``M_t``, ``(d_v, d_k)``.
        query: ``(d_k,)``.

    Returns:
        ``y_t``, ``(d_v,)``.
    """
    _, d_k = _check_matrix_memory(memory)
    _check_vector("query", query, d_k, "d_k")
    return memory @ query


@implements("nl", 14, 15, 16)
def linear_attention(
    x: Tensor, w_k: Tensor, w_v: Tensor, w_q: Tensor, initial_state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    r"""Unnormalised linear attention over one sequence, token by token (NL v1, Eq. 14–16).

    .. math::
        \mathbf{k}_t = W_k\mathbf{x}_t,\ \mathbf{v}_t = W_v\mathbf{x}_t,\ \mathbf{q}_t = W_q\mathbf{x}_t
            \quad (14), \qquad
        \mathcal{M}_t = \mathcal{M}_{t-1} + \mathbf{v}_t\mathbf{k}_t^\top \quad (15), \qquad
        \mathbf{y}_t = \mathcal{M}_t\mathbf{q}_t \quad (16)

    Project, write, read. The outputs equal the causal-masked :math:`(QK^\top)V` without softmax.

    Args:
        x: ``(L, d_in)``; w_k, w_q: ``(d_k, d_in)``; w_v: ``(d_v, d_in)``.
        initial_state: ``M_0``, ``(d_v, d_k)`` (meta-learned in AdaTransformer); zeros when ``None``.

    Returns:
        ``(y, states)``: outputs ``(L, d_v)`` and every state ``M_1 … M_L``, ``(L, d_v, d_k)``.
    """
    keys, values, queries = linear_attention_projections(x, w_k, w_v, w_q)
    memory = _initial_state(initial_state, values.shape[1], keys.shape[1], values)
    outputs, states = [], []
    for k_t, v_t, q_t in zip(keys, values, queries, strict=True):
        memory = linear_attention_write(memory, k_t, v_t)
        states.append(memory)
        outputs.append(linear_attention_read(memory, q_t))
    return torch.stack(outputs), torch.stack(states)


__all__ = [
    "fast_weight_programmer",
    "linear_attention",
    "linear_attention_projections",
    "linear_attention_read",
    "linear_attention_write",
]
