r"""The slow, obviously-correct long-term memory: one token at a time (Titans Eq. 13-15, catalog A1).

For every token: take the gradient of the associative loss (Eq. 12) with ``torch.func`` autograd (no
closed form), update the momentum (Eq. 14), decay the weights and add the momentum (Eq. 13), then read
the memory with the token's query (Eq. 15). This is the definition the fast chunk-parallel code in
:mod:`neural_memory.titans.chunked` is tested against.

``chunk_size`` gives the same loop the mini-batch semantics of Titans §3.2: the gradient of token ``t`` is
taken at the weights of the start of its chunk, :math:`\nabla\ell(\mathcal{M}_{t'}; x_t)` (Eq. 16), instead
of at :math:`\mathcal{M}_{t-1}`. ``chunk_size=1`` is the exact recurrence of Eq. 13-14.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor
from torch.func import grad, vjp, vmap

from neural_memory.registry import implements
from neural_memory.titans.associative_loss import associative_loss
from neural_memory.titans.chunked import join_outputs
from neural_memory.titans.memory_model import MemoryMLP, Weights
from neural_memory.titans.state import MemoryState
from neural_memory.titans.update import forgetting_update, surprise_momentum


def per_token_gradients(
    model: MemoryMLP,
    weights: tuple[Tensor, ...],
    key: Tensor,
    value: Tensor,
    loss: Callable[..., Tensor] = associative_loss,
    params: dict[str, Tensor] | None = None,
    output_grad: Callable[..., Tensor] | None = None,
):
    """:math:`\\nabla\\ell(\\mathcal{M}; x_t)` for one token of every sequence, by autograd (``torch.func``).

    Args:
        weights: one ``(N, d_in, d_out)`` tensor per layer; key, value: ``(N, d)``.
        loss: the inner loss ``(pred (d,), target (d,), **params) -> ()``; Eq. 12 by default.
        params: the loss's per-token parameters for this token, each ``(N, ...)``.
        output_grad: instead of ``loss``, a gradient at the memory's output that is not the gradient of a
            closed-form loss (MIRAS' smooth surrogates, Remark 5): back-propagated through the network by
            autograd (a vector-Jacobian product), so the outer loop still differentiates through it.
    """

    def recall(ws, k, norm):
        # One (sequence, head) row at a time: the read-out's gain and bias of that row come along.
        norm = None if norm is None else tuple(p[None] for p in norm)
        return model.recall(tuple(w[None] for w in ws), k[None, None], norm)[0, 0]

    def token_grads(ws, k, v, norm, token_params):
        if output_grad is None:
            return grad(lambda w: loss(recall(w, k, norm), v, **token_params))(ws)
        pred, pullback = vjp(lambda w: recall(w, k, norm), ws)
        return pullback(output_grad(pred, v, **token_params))[0]

    norm = model.norm_params(key.shape[0]) if model.residual_norm else None
    in_dims = (0, 0, 0, None if norm is None else 0, 0)
    return vmap(token_grads, in_dims=in_dims)(weights, key, value, norm, params or {})


Project = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class TokenStep:
    r"""What :func:`reference_memory` computed for one token, handed to its ``record`` callback.

    The tensors are the loop's own (not copies): a callback must not modify them in place.

    Attributes:
        index: the token's index in the call, ``0 <= index < T``.
        grads: the momentary surprise's gradient :math:`\nabla\ell(\mathcal{M}_{t'}; x_t)` (Eq. 14;
            :math:`t' = t-1` when ``chunk_size == 1``), one ``(N, d_in, d_out)`` tensor per layer.
        momentum: :math:`S_t` after the token (Eq. 14).
        previous: the weights :math:`\mathcal{M}_{t-1}` before the token; weights: :math:`\mathcal{M}_t`
            after it (Eq. 13).
        alpha, eta, theta: the token's gates, each ``(N,)``.
    """

    index: int
    grads: Weights
    momentum: Weights
    previous: Weights
    weights: Weights
    alpha: Tensor
    eta: Tensor
    theta: Tensor


Record = Callable[[TokenStep], None]


def project_weights(project: Project | None, acc: Weights) -> Weights:
    """:math:`\\mathcal{M} = \\phi(C)` layer by layer; ``None`` is the identity (no copy)."""
    return acc if project is None else tuple(project(a) for a in acc)


def anchors_gradient(offset: int, lag_token: bool) -> bool:
    """Whether the token at ``offset`` in its chunk takes its gradient at the current weights.

    The chunk's first token always does (the chunk's start :math:`\\mathcal{M}_{t'}`); with MIRAS' lag token
    (Memora, Eq. 30) the second one does too — at the weights after the chunk's first token — and the rest of
    the chunk reuses that anchor.
    """
    return offset == 0 or (lag_token and offset == 1)


def _forget(acc: Weights, momentum: Weights, alpha: Tensor, anchor: Weights | None) -> Weights:
    """Eq. 13; with an ``anchor`` M_0 (:meth:`MemoryMLP.anchor`), Eq. 13 of the content ``M - M_0``."""
    if anchor is None:
        return forgetting_update(acc, momentum, alpha)
    content = forgetting_update(tuple(w - w0 for w, w0 in zip(acc, anchor, strict=True)), momentum, alpha)
    return tuple(w0 + w for w, w0 in zip(content, anchor, strict=True))


@implements("titans", 13, 14, 15)
def reference_memory(
    model: MemoryMLP,
    state: MemoryState,
    keys: Tensor,
    values: Tensor,
    queries: Tensor | None,
    alpha: Tensor,
    eta: Tensor,
    theta: Tensor,
    *,
    chunk_size: int = 1,
    read: str = "token",
    loss: Callable[..., Tensor] = associative_loss,
    bias_params: dict[str, Tensor] | None = None,
    project: Project | None = None,
    lag_token: bool = False,
    output_grad: Callable[..., Tensor] | None = None,
    record: Record | None = None,
) -> tuple[Tensor | None, MemoryState]:
    r"""Token-by-token long-term memory (Titans v1, Eq. 13-15; with ``chunk_size > 1``, Eq. 16's chunks).

    .. math::
        S_t = \eta_t S_{t-1} - \theta_t \nabla\ell(\mathcal{M}_{t'}; x_t), \qquad
        \mathcal{M}_t = (1-\alpha_t)\mathcal{M}_{t-1} + S_t, \qquad
        y_t = \mathcal{M}^{*}_t(\mathbf{q}_t)

    with :math:`t' = t-1` when ``chunk_size == 1`` (Eq. 13-14 exactly) and :math:`t'` the last token
    before the chunk of ``t`` otherwise. ``read="token"`` answers query ``t`` with :math:`\mathcal{M}_t`
    (after writing token ``t``); ``read="chunk"`` with :math:`\mathcal{M}_{t'}` (see ``docs/errata.md``).
    When ``model.forget_to_initial`` (the deep memory with the LayerNorm read-out), Eq. 13 acts on the
    content :math:`\mathcal{M}_t - \mathcal{M}_0`, so forgetting returns to the learned :math:`\mathcal{M}_0`
    (errata "Titans Eq. 13").

    **The MIRAS generalisation** (MIRAS §5.3, catalog Algorithm A). The same loop runs every MIRAS memory:
    ``loss`` is the attentional bias, and a retention that is not linear in the gradients keeps a linear
    accumulator :math:`C_t` (in ``state.accumulator``) and reads the memory through a map of it,

    .. math::
        C_t = (1-\alpha_t)\,C_{t-1} + S_t, \qquad \mathcal{M}_t = \phi(C_t)

    (Moneta: :math:`\phi(A) = A/\|A\|_q^{q-2}`, Eq. 24; Memora: :math:`C` the log-weights and
    :math:`\phi` a softmax, Eq. 27; Titans and Yaad: :math:`\phi = \mathrm{id}`, no accumulator). With
    ``lag_token`` (Memora, Eq. 30) the chunk's first token is applied with the gradient at the chunk's start
    and the rest of the chunk takes its gradients at the weights after it.

    Args:
        keys, values: ``(N, T, d)``; queries: ``(N, T, d)`` or ``None`` (write only).
        alpha, eta, theta: gates ``(N, T)``: forget rate, momentum decay, step.
        loss: the inner loss ``(pred (d,), target (d,), **params) -> ()``; Eq. 12 by default.
        bias_params: the loss's per-token parameters, each ``(N, T, ...)``.
        project: :math:`\phi`, applied to each layer's ``(N, d_in, d_out)`` accumulator; ``None`` = identity.
        lag_token: MIRAS' lag token (Eq. 30).
        output_grad: a surrogate gradient at the memory's output used instead of autograd of ``loss``
            (see :func:`per_token_gradients`).
        record: called after every token with its :class:`TokenStep` (instrumentation; ``None``, the
            default, records nothing and changes nothing).

    Returns:
        ``(y (N, T, d) or None, new state)``.
    """
    weights, acc, momentum = state.weights, state.carried, state.momentum
    chunk_weights, offset = state.chunk_weights, state.offset
    params = bias_params or {}
    anchor = model.anchor(keys.shape[0], keys.dtype, project)
    outputs = []
    for t in range(keys.shape[1]):
        if anchors_gradient(offset, lag_token):
            chunk_weights = weights
        token_params = {name: value[:, t] for name, value in params.items()}
        grads = per_token_gradients(
            model, chunk_weights, keys[:, t], values[:, t], loss, token_params, output_grad
        )
        momentum = surprise_momentum(momentum, grads, eta[:, t], theta[:, t])
        acc = _forget(acc, momentum, alpha[:, t], anchor)
        previous, weights = weights, project_weights(project, acc)
        if record is not None:
            record(TokenStep(t, grads, momentum, previous, weights, alpha[:, t], eta[:, t], theta[:, t]))
        if queries is not None:
            read_weights = weights if read == "token" else chunk_weights
            outputs.append(model.recall(read_weights, queries[:, t : t + 1]))
        offset = (offset + 1) % chunk_size
    if offset == 0:
        chunk_weights = weights
    accumulator = None if project is None else acc
    new_state = state.advanced(keys.shape[1], weights, momentum, chunk_weights, offset, accumulator)
    return join_outputs(outputs, queries), new_state
