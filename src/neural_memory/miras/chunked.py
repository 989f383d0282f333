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

Three forms, one semantics:

* :math:`\phi = \mathrm{id}` (Titans, Yaad): the dual form of
  :func:`neural_memory.titans.chunked.chunked_memory` reads every position without materialising a
  per-token state;
* :math:`\phi(C) = C\,\rho(\|C\|)`, one number per layer matrix (Moneta's :math:`\ell_q` normalisation):
  the same dual form, each layer's read :math:`h\,C_t` rescaled by :math:`\rho(\|C_t\|)`; the per-token
  accumulators are materialised only for their norms, and back-propagation rebuilds them instead of
  keeping them (:class:`_TokenNorms`);
* any other non-linear :math:`\phi` (Memora's softmax): the chunk's per-token accumulators :math:`C_t`
  are materialised (``b × params`` per chunk) and each query is read with :math:`\phi(C_t)`; here too
  back-propagation rebuilds them instead of keeping them (:class:`_ProjectedRead`).

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

from neural_memory.common.checkpoint import checkpoint_chunks_group
from neural_memory.common.compiled import chunk_step
from neural_memory.miras.retention import Retention
from neural_memory.registry import implements
from neural_memory.titans.chunked import (
    checkpoint_group,
    chunk_end_state,
    chunked_memory,
    dual_read,
    join_outputs,
    piece_coefficients,
    piece_sizes,
    split_pieces,
)
from neural_memory.titans.memory_model import MemoryMLP
from neural_memory.titans.reference import Project, anchors_gradient, project_weights
from neural_memory.titans.state import MemoryState

# compile_chunks: the compiled step's activation memory budget (common.compiled.chunk_step). The default
# (1) keeps the per-token accumulators C_t that the hand-written backward passes recompute: Moneta at
# dim 256, seq 1024 peaked at 4.8 GB compiled against 0.7 GB eager; 0.05 gives 0.95 GB (benchmarks/README.md)
MEMORY_BUDGET = 0.05


def _scaled_states(inv, beta, s, q, start, momentum, a, g, anchor=None) -> Tensor:
    """Every in-chunk accumulator :math:`C_t` of one layer times its token's ``inv``: ``(N, b, d_in, d_out)``.

    With an ``anchor`` (one layer of :meth:`MemoryMLP.anchor`) forgetting moves towards it, not zero.
    """
    # sum_i Q_ti a_i^T g_i for every t as one batched matmul, then the start terms in place
    scaled = (q[..., None] * inv[..., None, None] * a[:, None]).transpose(-1, -2) @ g[:, None]
    scaled = scaled.addcmul_((beta * inv)[..., None, None], start[:, None])
    scaled = scaled.addcmul_((s * inv)[..., None, None], momentum[:, None])
    if anchor is not None:
        scaled = scaled.addcmul_(((1 - beta) * inv)[..., None, None], anchor[:, None])
    return scaled


def _factor_grads(gamma: Tensor, beta, s, q, start, momentum, a, g, anchor=None) -> list[Tensor | None]:
    r"""Back-propagate :math:`\Gamma_t = \partial L/\partial C_t` ``(N, b, d_in, d_out)`` to the factors of
    :math:`C_t = \beta_t C_{t'} + s_t S_{t'} + (1 - \beta_t)\,\mathcal{M}_0 + \sum_i Q_{ti}\,a_i^\top g_i`:
    :math:`\bar\beta_t = \langle\Gamma_t, C_{t'} - \mathcal{M}_0\rangle`, :math:`\bar C_{t'} =
    \sum_t\beta_t\Gamma_t`, :math:`\bar Q_{ti} = a_i\Gamma_t g_i^\top`, :math:`\bar a_i = \sum_t Q_{ti}\,
    \Gamma_t g_i^\top`, :math:`\bar g_i = \sum_t Q_{ti}\,a_i\Gamma_t`. Returns the gradients of
    ``(beta, s, q, start, momentum, a, g, anchor)``.
    """
    flat = gamma.flatten(-2)  # (N, b, D)
    grad_beta = (flat @ start.flatten(-2)[..., None])[..., 0]
    grad_s = (flat @ momentum.flatten(-2)[..., None])[..., 0]
    grad_start = (beta[:, None] @ flat).reshape(start.shape)
    grad_momentum = (s[:, None] @ flat).reshape(momentum.shape)
    grad_anchor = None
    if anchor is not None:
        grad_beta = grad_beta - (flat @ anchor.flatten(-2)[..., None])[..., 0]
        grad_anchor = ((1 - beta)[:, None] @ flat).reshape(anchor.shape)
    x = gamma @ g.transpose(-1, -2)[:, None]  # (N, b_t, d_in, b_i): Gamma_t g_i^T
    y = a[:, None] @ gamma  # (N, b_t, b_i, d_out): a_i Gamma_t
    grad_q = torch.einsum("nij,ntji->nti", a, x)
    grad_a = torch.einsum("nti,ntji->nij", q, x)
    grad_g = torch.einsum("nti,ntik->nik", q, y)
    return [grad_beta, grad_s, grad_q, grad_start, grad_momentum, grad_a, grad_g, grad_anchor]


class _TokenNorms(torch.autograd.Function):
    r""":math:`\|C_t\|` for every token of a chunk, from the chunk's factors, keeping none of the ``b``
    accumulators :math:`C_t = \beta_t C_{t'} + s_t S_{t'} + \sum_i Q_{ti}\,a_i^\top g_i`.

    The backward pass rebuilds them and contracts :math:`\Gamma_t = \bar n_t\,\partial\|C_t\|/\partial C_t`
    with the factors (:func:`_factor_grads`; autograd through the same computation keeps every :math:`C_t`
    and passes over it ~12 times; tests compare the two in float64).
    """

    @staticmethod
    def forward(ctx, beta, s, q, start, momentum, a, g, rescaling):
        with torch.no_grad():  # a bound of every entry of C_t (the triangle inequality), detached
            peak = beta.abs() * start.abs().amax((-2, -1))[:, None]
            peak = peak + s.abs() * momentum.abs().amax((-2, -1))[:, None]
            peak = peak + (q.abs() @ (a.abs().amax(-1) * g.abs().amax(-1))[..., None])[..., 0]
            bound = torch.where(peak > 0, peak, torch.ones_like(peak))  # (N, b)
        scaled = _scaled_states(1 / bound, beta, s, q, start, momentum, a, g)
        unit = rescaling.matrix_norm(scaled, bounded=True)[..., 0, 0]  # (N, b): ||C_t / bound_t||
        ctx.save_for_backward(beta, s, q, start, momentum, a, g, bound, unit)
        ctx.rescaling = rescaling
        return bound * unit

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_norm):
        beta, s, q, start, momentum, a, g, bound, unit = ctx.saved_tensors
        scaled = _scaled_states(1 / bound, beta, s, q, start, momentum, a, g)
        # d||C||/dC is 0-homogeneous: its value at C/bound is its value at C
        gamma = ctx.rescaling.matrix_norm_grad(scaled, unit[..., None, None])  # consumes `scaled`
        gamma = gamma.mul_(grad_norm[..., None, None])  # (N, b, d_in, d_out)
        return (*_factor_grads(gamma, beta, s, q, start, momentum, a, g)[:7], None)


def _token_norms(rescaling, c: dict[str, Tensor], start: Tensor, momentum: Tensor, a: Tensor, g: Tensor):
    r"""The norm :math:`\|C_t\|` of every in-chunk accumulator of one layer, ``(N, b, 1)``.

    :math:`C_t` is materialised already divided by a bound of its entries, :math:`|\beta_t|\max|C_{t'}|
    + |s_t|\max|S_{t'}| + \sum_i |Q_{ti}|\max|a_i|\max|g_i|` (the triangle inequality): the division is
    folded into the coefficients, so it costs no pass over the ``b × d_in × d_out`` tensor, and
    :math:`|C_t/\mathrm{bound}|^q \le 1` cannot overflow. The bound is detached:
    :math:`s\|C/s\| = \|C\|` for every :math:`s > 0`. Back-propagation keeps only the factors
    (:class:`_TokenNorms`).
    """
    return _TokenNorms.apply(c["beta"], c["s"], c["Q"], start, momentum, a, g, rescaling)[..., None]


class _ProjectedRead(torch.autograd.Function):
    r"""One layer's read of every token through its own projected accumulator: ``out_t = h_t @ phi(C_t)``.

    ``(N, b, d_in) -> (N, b, d_out)``, keeping none of the ``b`` accumulators for back-propagation: the
    backward pass rebuilds :math:`C_t`, takes :math:`\Gamma_t` through :math:`\phi` with autograd (any
    retention's ``project``) against :math:`h_t^\top\bar y_t`, and contracts it with the factors
    (:func:`_factor_grads`).
    """

    @staticmethod
    def forward(ctx, beta, s, q, start, momentum, a, g, anchor, h, project):
        ones = torch.ones_like(beta)
        weights = _scaled_states(ones, beta, s, q, start, momentum, a, g, anchor)
        if project is not None:
            weights = project(weights)
        ctx.save_for_backward(beta, s, q, start, momentum, a, g, anchor, h)
        ctx.project = project
        return (h[:, :, None] @ weights)[:, :, 0]  # (N, b, 1, d_in) @ (N, b, d_in, d_out)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        beta, s, q, start, momentum, a, g, anchor, h = ctx.saved_tensors
        states = _scaled_states(torch.ones_like(beta), beta, s, q, start, momentum, a, g, anchor)
        upstream = h[..., :, None] * grad_out[..., None, :]  # dL/dphi(C_t) = h_t^T grad_t
        if ctx.project is None:
            weights, gamma = states, upstream
        else:
            with torch.enable_grad():
                states.requires_grad_(True)
                weights = ctx.project(states)
                (gamma,) = torch.autograd.grad(weights, states, upstream)
        grad_h = (grad_out[:, :, None] @ weights.detach().transpose(-1, -2))[:, :, 0]
        return (*_factor_grads(gamma, beta, s, q, start, momentum, a, g, anchor), grad_h, None)


def _projected_read(model, project, c, acc, momentum, acts, grads, queries, anchor=None) -> Tensor:
    r"""Read every token of the chunk through :math:`\phi(C_t)`, layer by layer: ``(N, b, d)``."""
    anchors = anchor if anchor is not None else (None,) * len(acc)

    def linear(layer: int, h: Tensor) -> Tensor:
        factors = (acc[layer], momentum[layer], acts[layer], grads[layer], anchors[layer])
        return _ProjectedRead.apply(c["beta"], c["s"], c["Q"], *factors, h, project)

    _, pre = model.layers(queries, linear)
    return model.readout(queries, pre[-1])


def _chunk(model, acc, momentum, grad_weights, piece, output_grad, project, anchor, rescaling=None):
    """One piece sharing one gradient anchor: ``(y or None, accumulator, momentum)`` at its end."""
    keys, values, queries, c, params = piece
    acts, grads = model.gradient_factors(grad_weights, keys, values, partial(output_grad, **params))
    y = None
    if queries is not None and rescaling is not None:
        # h @ phi(C_t) = rescale(h @ C_t, ||C_t||): the dual form's linear read, rescaled token by token
        layers = zip(acc, momentum, acts, grads, strict=True)
        norms = [_token_norms(rescaling, c, c0, m0, a, g) for c0, m0, a, g in layers]
        rescale = lambda layer, out: rescaling.rescale(out, norms[layer])  # noqa: E731
        y = dual_read(model, acc, momentum, acts, grads, c, queries, rescale=rescale)
    elif queries is not None:
        y = _projected_read(model, project, c, acc, momentum, acts, grads, queries, anchor)
    return (y, *chunk_end_state(c, acc, momentum, acts, grads, anchor))


def _run(model, carry, pieces, rules):
    """Consecutive pieces from ``carry = (weights, accumulator, momentum, chunk_weights, offset)``.

    Returns ``(outputs, *carry)`` at the end of the pieces.
    """
    output_grad, project, lag_token, chunk_size, anchor, rescaling, step = rules
    weights, acc, momentum, chunk_weights, offset = carry
    outputs = []
    for piece in pieces:
        grad_weights = weights if anchors_gradient(offset, lag_token) else chunk_weights
        y, acc, momentum = step(
            model, acc, momentum, grad_weights, piece, output_grad, project, anchor, rescaling
        )
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
    rescaling: Retention | None = None,
    chunk_size: int,
    dual_form: bool | None = None,
    read: str = "token",
    checkpoint_chunks: int | str = 0,
    compile_chunks: bool = False,
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
        rescaling: instead of ``project``, a retention whose :math:`\phi` rescales each layer matrix by one
            number (``rescaling = True``: Moneta's :class:`~neural_memory.miras.retention.LqNormalization`).
            The same semantics, read through the dual form: :math:`h\,\phi(C_t)` is the rescaled
            :math:`h\,C_t`, so each token's accumulator is materialised only for its norm.
        chunk_size: ``b``.
        dual_form: read through the dual form without materialising states (only for ``project=None``
            without lag token); ``None`` chooses it whenever it applies.
        read, checkpoint_chunks: as in :func:`~neural_memory.titans.chunked.chunked_memory` (the same
            gradients for one more forward pass, and back-propagation keeps the per-token states of only
            ``checkpoint_chunks`` pieces at a time); the materialised form supports only ``read="token"``.
        compile_chunks: run the per-chunk step through ``torch.compile``
            (:mod:`~neural_memory.common.compiled`), in both forms: the same arithmetic fused, equal to
            rounding.

    Returns:
        ``(y (N, T, d) or None, new state)``.
    """
    if rescaling is not None:
        if project is not None:
            raise ValueError("give project or rescaling, not both (rescaling's phi is its project)")
        if not getattr(rescaling, "rescaling", False):
            raise ValueError(f"rescaling must be a retention with rescaling = True, got {rescaling!r}")
        project = rescaling.project
    linear = project is None and not lag_token
    if dual_form is None:
        dual_form = linear
    if dual_form and not linear:
        raise ValueError("dual_form=True needs project=None and lag_token=False (a linear retention)")
    if dual_form:
        return chunked_memory(
            model, state, keys, values, queries, alpha, eta, theta, chunk_size=chunk_size, read=read,
            checkpoint_chunks=checkpoint_chunks, output_grad=output_grad, bias_params=bias_params,
            compile_chunks=compile_chunks,
        )  # fmt: skip
    if read != "token":
        raise ValueError("the materialised form reads every token with its own state: read='token' only")
    sizes = piece_sizes(state.offset, keys.shape[1], chunk_size, lag_token)
    pieces = piece_coefficients(
        split_pieces(sizes, (keys, values, queries), (alpha, eta, theta), bias_params)
    )
    carry = (state.weights, state.carried, state.momentum, state.chunk_weights, state.offset)
    anchor = model.anchor(keys.shape[0], keys.dtype, project)
    step = chunk_step(_chunk, compile_chunks, memory_budget=MEMORY_BUDGET)
    rules = (output_grad, project, lag_token, chunk_size, anchor, rescaling, step)
    # Back-propagation keeps every chunk's per-token states (b x params each); checkpointing groups of
    # chunks keeps only the group's starting state and recomputes the group in the backward pass.
    group = checkpoint_group(checkpoint_chunks, len(pieces))
    outputs = []
    for first in range(0, len(pieces), group):
        block = pieces[first : first + group]
        if group < len(pieces):
            ys, *carry = checkpoint_chunks_group(_run, model, carry, block, rules, check_hidden=first == 0)
        else:
            ys, *carry = _run(model, carry, block, rules)
        outputs.extend(ys)
    weights, acc, momentum, chunk_weights, offset = carry
    accumulator = None if project is None else acc
    new_state = state.advanced(keys.shape[1], weights, momentum, chunk_weights, offset, accumulator)
    return join_outputs(outputs, queries), new_state
