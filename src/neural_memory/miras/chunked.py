r"""Chunk-parallel training of a MIRAS memory (MIRAS §5.4, Eq. 28-32; catalog Algorithms B-D).

Inside a chunk of ``b`` tokens every gradient is taken at one anchor state (the chunk's start
:math:`\mathcal{M}_{t'}`, Eq. 28; for Memora the state after the chunk's first, "lag" token, Eq. 30). That
freezes the non-linear part of the recurrence, and what is left is linear in the per-token gradients
:math:`u_i = \nabla\ell(\mathcal{M}_{\mathrm{anchor}}; \mathbf{k}_i, \mathbf{v}_i)`:

.. math::
    C_t = \beta_t\,C_{t'} + s_t\,S_{t'} + \sum_{i \le t} Q_{ti}\,u_i, \qquad \mathcal{M}_t = \phi(C_t),

with the coefficients :math:`\beta, s, Q` of :func:`neural_memory.titans.chunked.chunk_coefficients`
(without momentum :math:`Q_{ti} = -\eta_i\beta_t/\beta_i`, Eq. 28's weights, :math:`\beta_i = \prod_{j \le
i}\alpha_j`). Each :math:`u_i` of a layer is an outer product :math:`a_i^\top g_i` of the layer's input and
the attentional bias's gradient back-propagated to the layer's output, so the chunk's summed update is the
matmul :math:`A^\top \mathrm{diag}(c)\,G` — for a linear memory and the :math:`\ell_p` bias exactly Eq. 29,
:math:`p\,(\mathbf{E}_b \odot \mathbf{B}_b \odot \mathrm{Sign}(R) \odot |R|^{p-1})\mathbf{K}^\top` (Eq. 32 for
:math:`\ell_2`).

Two forms, one semantics:

* :math:`\phi = \mathrm{id}` (Titans, Yaad): the dual form of
  :func:`neural_memory.titans.chunked.chunked_memory` reads every position without materialising a
  per-token state;
* a non-linear :math:`\phi` (Moneta's :math:`\ell_q` normalisation, Memora's softmax): the chunk's
  per-token accumulators :math:`C_t` are materialised (``b × params`` per chunk) and each query is read
  with :math:`\phi(C_t)`.

**Our chunk semantics, and where they differ from the paper** (``docs/errata.md``, "MIRAS Eq. 24, 28-32").
The paper normalises "only at chunk ends" and reads in-chunk tokens from the linear states (Algorithm B
step 4; Eq. 32 for Memora), which makes every in-chunk read a different function from the chunk-end one
and, for Memora, takes :math:`\log` of a linear state that can be negative. We freeze only the gradients
(the one thing that makes the chunk parallel) and read every token through :math:`\phi(C_t)`: chunk size 1
is the exact recurrence, every state Memora reads is on the simplex, and the carried log-weights never need a
logarithm.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from neural_memory.registry import implements
from neural_memory.titans.chunked import (
    chunk_coefficients,
    chunk_end_state,
    chunked_memory,
    join_outputs,
    piece_sizes,
    split_pieces,
)
from neural_memory.titans.memory_model import MemoryMLP, Weights
from neural_memory.titans.reference import Project, anchors_gradient, project_weights
from neural_memory.titans.state import MemoryState


def _token_states(c: dict[str, Tensor], start: Tensor, momentum: Tensor, a: Tensor, g: Tensor, anchor=None):
    """Every in-chunk accumulator :math:`C_t` of one layer: ``(N, b, d_in, d_out)``.

    With an ``anchor`` (one layer of :meth:`MemoryMLP.anchor`) forgetting moves towards it, not zero.
    """
    beta, s = c["beta"][..., None, None], c["s"][..., None, None]
    # sum_i Q_ti a_i^T g_i for every t as one batched matmul: (N, b, d_in, b) @ (N, 1, b, d_out).
    updates = (c["Q"][..., None] * a[:, None]).transpose(-1, -2) @ g[:, None]
    states = beta * start[:, None] + s * momentum[:, None] + updates
    return states if anchor is None else states + (1 - beta) * anchor[:, None]


def _read(model: MemoryMLP, states: Weights, queries: Tensor) -> Tensor:
    """Read query ``t`` with its own weights ``states[l][:, t]``: ``(N, b, d)``."""
    n, b, d = queries.shape
    flat = tuple(w.reshape(n * b, *w.shape[2:]) for w in states)
    norm = None
    if model.residual_norm:
        norm = tuple(p.repeat_interleave(b, dim=0) for p in model.norm_params(n))
    return model.recall(flat, queries.reshape(n * b, 1, d), norm).reshape(n, b, d)


def _chunk(model, acc, momentum, grad_weights, piece, output_grad, project, anchor):
    """One piece sharing one gradient anchor: ``(y or None, accumulator, momentum)`` at its end."""
    keys, values, queries, alpha, eta, theta, params = piece
    acts, grads = model.gradient_factors(grad_weights, keys, values, partial(output_grad, **params))
    c = chunk_coefficients(alpha, eta, theta)
    y = None
    if queries is not None:
        anchors = anchor if anchor is not None else (None,) * len(acc)
        layers = zip(acc, momentum, acts, grads, anchors, strict=True)
        states = tuple(_token_states(c, c0, m0, a, g, a0) for c0, m0, a, g, a0 in layers)
        y = _read(model, project_weights(project, states), queries)
    return (y, *chunk_end_state(c, acc, momentum, acts, grads, anchor))


def _run(model, carry, pieces, rules):
    """Consecutive pieces from ``carry = (weights, accumulator, momentum, chunk_weights, offset)``.

    Returns ``(outputs, *carry)`` at the end of the pieces.
    """
    output_grad, project, lag_token, chunk_size, anchor = rules
    weights, acc, momentum, chunk_weights, offset = carry
    outputs = []
    for piece in pieces:
        grad_weights = weights if anchors_gradient(offset, lag_token) else chunk_weights
        y, acc, momentum = _chunk(model, acc, momentum, grad_weights, piece, output_grad, project, anchor)
        weights = project_weights(project, acc)
        outputs.append(y)
        offset = (offset + piece[0].shape[1]) % chunk_size
        chunk_weights = grad_weights if offset else weights
    return outputs, weights, acc, momentum, chunk_weights, offset


@implements("miras", 28, 29, 30, 32)
def miras_chunked_memory(
    model: MemoryMLP,
    state: MemoryState,
    keys: Tensor,
    values: Tensor,
    queries: Tensor | None,
    alpha: Tensor,
    eta: Tensor,
    theta: Tensor,
    *,
    output_grad: Callable[..., Tensor],
    bias_params: dict[str, Tensor] | None = None,
    project: Project | None = None,
    lag_token: bool = False,
    chunk_size: int,
    dual_form: bool | None = None,
    read: str = "token",
    checkpoint_chunks: int = 0,
) -> tuple[Tensor | None, MemoryState]:
    r"""Chunk-parallel MIRAS memory (MIRAS v1, Eq. 28-32), equal to the token loop with the same chunks.

    .. math::
        \mathcal{M}_t = \beta_t\mathcal{M}_0 - \sum_{i=1}^{t}\eta_i\frac{\beta_t}{\beta_i}
            \nabla\ell(\mathcal{M}_{t'};\mathbf{k}_i,\mathbf{v}_i) \qquad (28) \\
        \sum_{i=1}^{b}\eta_i\frac{\beta_b}{\beta_i}\nabla\ell(W_0;\mathbf{k}_i,\mathbf{v}_i)
            = p\,\mathbf{E}_b\odot\mathbf{B}_b\odot\mathrm{Sign}(W_0\mathbf{K}-\mathbf{V})\odot
            |W_0\mathbf{K}-\mathbf{V}|^{p-1}\,\mathbf{K}^\top \qquad (29) \\
        \mathcal{M}_1 = \mathrm{Softmax}\big(\alpha_1\log\mathcal{M}_0 - \eta_1\nabla\ell(\mathcal{M}_0;
            \mathbf{k}_1,\mathbf{v}_1)\big) \qquad (30)

    and Eq. 32 (Eq. 29 with :math:`\ell_2` at the lag state :math:`W_1`). The recurrence runs on the
    accumulator :math:`C` (the weights themselves when ``project`` is ``None``), with Titans' momentum
    when ``eta > 0``; :math:`t'` is the chunk's start (the printed :math:`t - \mathrm{mod}(t, b)` is off by
    one at chunk ends, catalog A9). With ``lag_token`` (Eq. 30) the chunk's first token is applied alone,
    with its gradient at :math:`\mathcal{M}_{t'}`, and the rest of the chunk takes gradients at the
    resulting state. See the module docstring for the read semantics.

    Args:
        model: the memory network; state: the carried state (``state.accumulator`` when ``project``).
        keys, values: ``(N, T, d)``; queries: ``(N, T, d)`` or ``None`` (write only).
        alpha, eta, theta: forget rate, momentum decay and step, each ``(N, T)``.
        output_grad: the attentional bias's gradient at the memory's output, ``(pred, target, **params)``.
        bias_params: per-token parameters of the bias, each ``(N, T, ...)``.
        project: :math:`\phi` for one layer's ``(..., d_in, d_out)`` accumulator; ``None`` = identity.
        lag_token: Memora's lag token.
        chunk_size: ``b``.
        dual_form: read through the dual form without materialising states (only for ``project=None``
            without lag token); ``None`` chooses it whenever it applies.
        read, checkpoint_chunks: as in :func:`~neural_memory.titans.chunked.chunked_memory` (the same
            gradients for one more forward pass, and back-propagation keeps the per-token states of only
            ``checkpoint_chunks`` pieces at a time); the materialised form supports only ``read="token"``.

    Returns:
        ``(y (N, T, d) or None, new state)``.
    """
    linear = project is None and not lag_token
    if dual_form is None:
        dual_form = linear
    if dual_form and not linear:
        raise ValueError("dual_form=True needs project=None and lag_token=False (a linear retention)")
    if dual_form:
        return chunked_memory(
            model, state, keys, values, queries, alpha, eta, theta, chunk_size=chunk_size, read=read,
            checkpoint_chunks=checkpoint_chunks, output_grad=output_grad, bias_params=bias_params,
        )  # fmt: skip
    if read != "token":
        raise ValueError("the materialised form reads every token with its own state: read='token' only")
    sizes = piece_sizes(state.offset, keys.shape[1], chunk_size, lag_token)
    pieces = split_pieces(sizes, (keys, values, queries), (alpha, eta, theta), bias_params)
    carry = (state.weights, state.carried, state.momentum, state.chunk_weights, state.offset)
    anchor = model.anchor(keys.shape[0], keys.dtype, project)
    rules = (output_grad, project, lag_token, chunk_size, anchor)
    # Back-propagation keeps every chunk's per-token states (b x params each); checkpointing groups of
    # chunks keeps only the group's starting state and recomputes the group in the backward pass.
    group = checkpoint_chunks if checkpoint_chunks > 0 and torch.is_grad_enabled() else len(pieces) or 1
    outputs = []
    for first in range(0, len(pieces), group):
        block = pieces[first : first + group]
        if group < len(pieces):
            ys, *carry = checkpoint(_run, model, carry, block, rules, use_reentrant=False)
        else:
            ys, *carry = _run(model, carry, block, rules)
        outputs.extend(ys)
    weights, acc, momentum, chunk_weights, offset = carry
    accumulator = None if project is None else acc
    new_state = state.advanced(keys.shape[1], weights, momentum, chunk_weights, offset, accumulator)
    return join_outputs(outputs, queries), new_state
