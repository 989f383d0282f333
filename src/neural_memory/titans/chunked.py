r"""The chunk-parallel long-term memory (Titans §3.2, Eq. 16-18): the fast form used for training.

Inside a chunk of ``b`` tokens every gradient is taken at the same weights, those of the chunk's start
(mini-batch gradient descent, Eq. 16). That freezes the only non-linear part of the recurrence, and what is
left is linear in the per-token gradients :math:`u_i = \nabla\ell(\mathcal{M}_{t'}; x_i)`:

* momentum (Eq. 18) :math:`S_t = \eta_t S_{t-1} - \theta_t u_t` and forgetting (Eq. 13)
  :math:`\mathcal{M}_t = (1-\alpha_t)\mathcal{M}_{t-1} + S_t` are two first-order linear recurrences. We run
  them with the parallel associative scan of :mod:`neural_memory.common.scan` on *coefficient vectors*: the
  scan tracks how much of each :math:`u_i`, of :math:`S_{t'}` and of :math:`\mathcal{M}_{t'}` is in
  :math:`\mathcal{M}_t`, giving

  .. math::
      \mathcal{M}_t = \beta_t\,\mathcal{M}_{t'} + s_t\,S_{t'} + \sum_{i \le t} Q_{ti}\, u_i ,

  with :math:`\beta_t = \prod_{j=t'+1}^{t}(1-\alpha_j)` (the :math:`\beta_t/\beta_{t'}` of Eq. 16) and a
  lower-triangular ``b × b`` matrix :math:`Q` (with :math:`\eta \equiv 0`,
  :math:`Q_{ti} = -\theta_i\beta_t/\beta_i`, exactly Eq. 16's weights).
* each :math:`u_i` of an MLP layer is an outer product :math:`a_i^\top g_i` (closed-form back-propagation,
  Eq. 17 generalised), so neither per-token gradients nor per-token weights are ever materialised. Reading
  the memory at position ``t`` through layer ``l`` (the TTT "dual form", catalog T-U8) is

  .. math::
      h\,W_{l,t} = \beta_t\,(h W_{l,t'}) + s_t\,(h S_{l,t'}) + \big((h A_l^\top) \odot Q\big)_t\, G_l ,

  a handful of matmuls of chunk-sized matrices.

The weights and momentum at the chunk's end are carried to the next chunk; chunks themselves run in
sequence, since each chunk's gradients need the previous chunk's final weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor

from neural_memory.common.checkpoint import checkpoint_chunks_group
from neural_memory.common.compiled import chunk_step
from neural_memory.common.scan import linear_scan
from neural_memory.registry import implements
from neural_memory.titans.associative_loss import associative_loss_output_grad
from neural_memory.titans.memory_model import MemoryMLP, Weights
from neural_memory.titans.state import MemoryState


@implements("titans", 16, 18)
def chunk_coefficients(alpha: Tensor, eta: Tensor, theta: Tensor) -> dict[str, Tensor]:
    r"""Closed-form coefficients of a chunk's recurrences (Titans v1, Eq. 16 and Eq. 18; catalog T-U5, T-U6).

    .. math::
        S_t = \eta_t S_{t-1} - \theta_t u_t \qquad (18) \\
        \mathcal{M}_t = \beta_t\mathcal{M}_0 - \sum_{i=1}^{t}\theta_i\frac{\beta_t}{\beta_i}
            \nabla\ell(\mathcal{M}_{t'}; x_i) \qquad (16,\ \eta = 0)

    Both recurrences are scanned in parallel with the per-token gradients :math:`u_i` kept symbolic, as
    unit vectors of a ``b``-dimensional coefficient space.

    Args:
        alpha, eta, theta: gates of the chunk's tokens, ``(N, b)``.

    Returns:
        dict of ``eta_decay (N, b)`` = :math:`\prod_{j\le t}\eta_j` (weight of :math:`S_{t'}` in :math:`S_t`),
        ``P (N, b, b)`` (weight of :math:`u_i` in :math:`S_t`), ``beta (N, b)`` (weight of
        :math:`\mathcal{M}_{t'}` in :math:`\mathcal{M}_t`), ``s (N, b)`` (weight of :math:`S_{t'}` in
        :math:`\mathcal{M}_t`) and ``Q (N, b, b)`` (weight of :math:`u_i` in :math:`\mathcal{M}_t`).
    """
    n = alpha.shape[-1]
    eye = torch.eye(n, dtype=alpha.dtype, device=alpha.device)
    eta_decay, p = linear_scan(eta, -theta[..., None] * eye)  # Eq. 18, input -theta_i u_i at step i
    keep = 1 - alpha
    beta, q = linear_scan(keep, p)  # Eq. 13 driven by the momenta
    _, s = linear_scan(keep, eta_decay[..., None])
    return {"eta_decay": eta_decay, "P": p, "beta": beta, "s": s[..., 0], "Q": q}


def piece_coefficients(pieces: list[tuple]) -> list[tuple]:
    """Replace each piece's gates ``(alpha, eta, theta)`` by its :func:`chunk_coefficients`.

    The coefficients depend on the gates alone, not on the memory, so they need not wait for the chunk
    loop: the pieces of one length are stacked and scanned in one call. The arithmetic is the same, element
    by element; what changes is the number of operators, about 150 per piece forward and as many backward
    for the three scans of a 16-token chunk, now that many per piece length.

    Args:
        pieces: :func:`split_pieces`' ``(keys, values, queries, alpha, eta, theta, params)`` tuples.

    Returns:
        ``(keys, values, queries, coefficients, params)`` per piece.
    """
    by_length: dict[int, list[int]] = {}
    for i, piece in enumerate(pieces):
        by_length.setdefault(piece[3].shape[1], []).append(i)
    coefficients: list[dict[str, Tensor]] = [{}] * len(pieces)
    for members in by_length.values():
        gates = [torch.stack([pieces[i][j] for i in members]) for j in (3, 4, 5)]  # each (pieces, N, b)
        # unbind, not indexing: its backward is one stack, where one index per piece would add a
        # zero-padded gradient of all the pieces per piece
        parts = {name: value.unbind(0) for name, value in chunk_coefficients(*gates).items()}
        for k, i in enumerate(members):
            coefficients[i] = {name: values[k] for name, values in parts.items()}
    return [(*piece[:3], c, piece[6]) for piece, c in zip(pieces, coefficients, strict=True)]


# The hand-written passes below call bmm and multiply-and-sum directly: at chunk 16 a step is hundreds of
# thousands of small operators, and the `@` of two 3-d tensors adds an expand, a reshape and a view to
# each bmm (vecdot a conj, broadcasts and views to each product and sum), for the same arithmetic.
def _rowdot(x: Tensor, y: Tensor) -> Tensor:
    """Each row's inner product ``<x_t, y_t>`` over the last dimension, kept as ``(..., 1)``."""
    return (x * y).sum(-1, keepdim=True)


class _DualLinear(torch.autograd.Function):
    """:func:`dual_linear` with a backward that keeps only its inputs (see there)."""

    @staticmethod
    def forward(ctx, h, w, m, a, g, beta, s, q, anchor):
        # (N, b, b): how much of token i's gradient token t reads
        scores = torch.bmm(h, a.transpose(-1, -2)) * q
        out = torch.baddbmm(torch.addcmul(beta * torch.bmm(h, w), s, torch.bmm(h, m)), scores, g)
        if anchor is not None:
            out = torch.addcmul(out, 1 - beta, torch.bmm(h, anchor))
        ctx.save_for_backward(h, w, m, a, g, beta, s, q, anchor)
        # the backward runs its matmuls as the forward did (autograd's own backward of an autocast
        # matmul runs in the lower precision too)
        ctx.device = h.device.type
        ctx.autocast = torch.is_autocast_enabled(ctx.device)
        ctx.autocast_dtype = torch.get_autocast_dtype(ctx.device)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        inputs = ctx.saved_tensors  # once: checkpointing allows one unpacking per backward
        with torch.autocast(ctx.device, dtype=ctx.autocast_dtype, enabled=ctx.autocast):
            # autograd casts each gradient to its input's dtype (float32 leaves under bf16 autocast)
            return _DualLinear._backward(ctx.needs_input_grad, grad_out, *inputs)

    @staticmethod
    def _backward(need, grad_out, h, w, m, a, g, beta, s, q, anchor):
        # go @ W^T is both the gradient at h through W and, dotted with h, the gradient of beta: the
        # products h W that autograd would have kept are never needed.
        through_w, through_m = (
            torch.bmm(grad_out, w.transpose(-1, -2)),
            torch.bmm(grad_out, m.transpose(-1, -2)),
        )
        out_scores = torch.bmm(grad_out, g.transpose(-1, -2))  # (N, b, b)
        grad_h = grad_w = grad_m = grad_a = grad_g = grad_beta = grad_s = grad_q = grad_anchor = None
        if need[0]:
            grad_h = torch.baddbmm(torch.addcmul(beta * through_w, s, through_m), out_scores * q, a)
        if need[5]:
            grad_beta = _rowdot(h, through_w)
        if anchor is not None:
            through_anchor = torch.bmm(grad_out, anchor.transpose(-1, -2))
            if need[0]:
                grad_h = torch.addcmul(grad_h, 1 - beta, through_anchor)
            if need[5]:
                grad_beta = grad_beta - _rowdot(h, through_anchor)
            if need[8]:
                grad_anchor = torch.bmm(h.transpose(-1, -2), (1 - beta) * grad_out)
        if need[1]:
            grad_w = torch.bmm(h.transpose(-1, -2), beta * grad_out)
        if need[2]:
            grad_m = torch.bmm(h.transpose(-1, -2), s * grad_out)
        if need[6]:
            grad_s = _rowdot(h, through_m)
        if need[3]:
            grad_a = torch.bmm((out_scores * q).transpose(-1, -2), h)
        if need[4] or need[7]:
            raw = torch.bmm(h, a.transpose(-1, -2))
            grad_g = torch.bmm((raw * q).transpose(-1, -2), grad_out) if need[4] else None
            grad_q = raw * out_scores if need[7] else None
        return grad_h, grad_w, grad_m, grad_a, grad_g, grad_beta, grad_s, grad_q, grad_anchor


@implements("titans", 16)
def dual_linear(
    h: Tensor, w: Tensor, m: Tensor, a: Tensor, g: Tensor, beta: Tensor, s: Tensor, q: Tensor,
    anchor: Tensor | None = None,
) -> Tensor:  # fmt: skip
    r"""One layer of the dual-form read (Titans Eq. 16, catalog T-U8): each token through its own weights.

    .. math::
        h_t\,W_t = \beta_t\,(h_t W) + s_t\,(h_t S) + (1 - \beta_t)\,(h_t \mathcal{M}_0)
            + \sum_{i} Q_{ti}\,(h_t a_i^\top)\,g_i

    where :math:`W_t = \beta_t W + s_t S + (1-\beta_t)\mathcal{M}_0 + \sum_i Q_{ti} a_i^\top g_i` are the
    weights after token ``t`` of the chunk (the :math:`\mathcal{M}_0` term only with an ``anchor``), never
    materialised. Its backward keeps only the inputs: autograd through the same expression would keep
    :math:`hW`, :math:`hS` and :math:`h\mathcal{M}_0` (``b × d_out`` each, per layer and chunk) just to get
    the gradients of :math:`\beta` and :math:`s`, which are :math:`h_t \cdot (\bar y_t W^\top)` with the
    product :math:`\bar y W^\top` that the gradient at :math:`h` needs anyway.

    Args:
        h: the layer's input ``(N, b, d_in)``; w, m, anchor: ``(N, d_in, d_out)`` (``anchor`` optional).
        a, g: the chunk's gradient factors ``(N, b, d_in)``, ``(N, b, d_out)``.
        beta, s: ``(N, b, 1)``; q: ``(N, b, b)`` (:func:`chunk_coefficients`).

    Returns:
        ``(N, b, d_out)``.
    """
    return _DualLinear.apply(h, w, m, a, g, beta, s, q, anchor)


def dual_read(
    model: MemoryMLP, weights: Weights, momentum: Weights, acts, grads, c, queries: Tensor, anchor=None,
    rescale: Callable[[int, Tensor], Tensor] | None = None,
) -> Tensor:  # fmt: skip
    """Read every position of the chunk with its own weights M_t, without materialising them (T-U8).

    With an ``anchor`` M_0 (:meth:`MemoryMLP.anchor`) forgetting moves the weights towards it:
    ``M_t = M_0 + beta_t (M_t' - M_0) + ...``. ``rescale(layer, h @ C_t)`` maps each layer's linear read
    when the weights are a per-token rescaling of the accumulator (MIRAS' Moneta, ``miras/chunked.py``).
    """
    beta, s, q = c["beta"][..., None], c["s"][..., None], c["Q"]

    def linear(layer: int, h: Tensor) -> Tensor:
        w, m, a, g = weights[layer], momentum[layer], acts[layer], grads[layer]
        out = dual_linear(h, w, m, a, g, beta, s, q, None if anchor is None else anchor[layer])
        return out if rescale is None else rescale(layer, out)

    _, pre = model.layers(queries, linear)
    return model.readout(queries, pre[-1])


def _chunk(model, weights, momentum, grad_weights, piece, read, output_grad, anchor=None):
    """One chunk (or the piece of one): returns ``(y or None, weights at its end, momentum at its end)``."""
    keys, values, queries, c, params = piece
    acts, grads = model.gradient_factors(grad_weights, keys, values, partial(output_grad, **params))
    y = None
    if queries is not None:
        if read == "token":
            y = dual_read(model, weights, momentum, acts, grads, c, queries, anchor)
        else:
            y = model.recall(grad_weights, queries)
    return (y, *chunk_end_state(c, weights, momentum, acts, grads, anchor))


class _ChunkEnd(torch.autograd.Function):
    """:func:`chunk_end_update` with a backward that keeps only its inputs (see there)."""

    @staticmethod
    def forward(ctx, w, m, a, g, beta, s, eta_decay, last_q, last_p, anchor):
        # Every term goes into one buffer in place: these weight-sized passes dominate the cost of small
        # chunks, and each fresh weight-sized block is a new mapping the kernel zero-fills page by page.
        start = (beta * w).addcmul_(s, m)
        if anchor is not None:
            start.addcmul_(1 - beta, anchor)
        ctx.device = w.device.type
        ctx.autocast = torch.is_autocast_enabled(ctx.device)
        ctx.autocast_dtype = torch.get_autocast_dtype(ctx.device)
        term_w, term_s = (a * last_q).transpose(-1, -2), (a * last_p).transpose(-1, -2)
        if ctx.autocast:  # the matmul (and so its sum) runs in the lower precision, as torch.baddbmm's would
            new_w, new_s = torch.baddbmm(start, term_w, g), torch.baddbmm(eta_decay * m, term_s, g)
        else:
            new_w, new_s = start.baddbmm_(term_w, g), (eta_decay * m).baddbmm_(term_s, g)
        ctx.save_for_backward(w, m, a, g, beta, s, eta_decay, last_q, last_p, anchor)
        return new_w, new_s

    @staticmethod
    def backward(ctx, grad_w_out, grad_s_out):
        inputs = ctx.saved_tensors  # once: checkpointing allows one unpacking per backward
        with torch.autocast(ctx.device, dtype=ctx.autocast_dtype, enabled=ctx.autocast):
            return _ChunkEnd._backward(ctx.needs_input_grad, grad_w_out, grad_s_out, *inputs)

    @staticmethod
    def _backward(need, gw, gs, w, m, a, g, beta, s, eta_decay, last_q, last_p, anchor):
        def dot(x, y):  # <x, y> of each row's (d_in, d_out) matrices, as beta's (N, 1, 1)
            return (x * y).sum((-2, -1), keepdim=True)

        grads = [None] * 10
        if need[0]:
            grads[0] = beta * gw
        if need[1]:
            grads[1] = torch.addcmul(s * gw, eta_decay, gs)
        if need[2] or need[7] or need[8]:
            # the matmul terms (a * Q_b)^T g and (a * P_b)^T g: the gradient at a * Q_b is g Gw^T
            at_w, at_s = (
                torch.bmm(g, gw.transpose(-1, -2)),
                torch.bmm(g, gs.transpose(-1, -2)),
            )  # (N, b, d_in)
            if need[2]:
                grads[2] = torch.addcmul(at_w * last_q, at_s, last_p)
            if need[7]:
                grads[7] = _rowdot(a, at_w)
            if need[8]:
                grads[8] = _rowdot(a, at_s)
        if need[3]:
            grads[3] = torch.baddbmm(torch.bmm(a * last_q, gw), a * last_p, gs)
        if need[4]:
            grads[4] = dot(gw, w) if anchor is None else dot(gw, w) - dot(gw, anchor)
        if need[5]:
            grads[5] = dot(gw, m)
        if need[6]:
            grads[6] = dot(gs, m)
        if anchor is not None and need[9]:
            grads[9] = (1 - beta) * gw
        return tuple(grads)


def chunk_end_update(
    w: Tensor, m: Tensor, a: Tensor, g: Tensor, beta: Tensor, s: Tensor, eta_decay: Tensor,
    last_q: Tensor, last_p: Tensor, anchor: Tensor | None = None,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    r"""One layer's weights and momentum after the chunk's last token ``b`` (Eq. 13, 18; Eq. 17's matmul).

    .. math::
        \mathcal{M}_b = \beta_b W + s_b S + (1-\beta_b)\mathcal{M}_0 + A^\top\mathrm{diag}(Q_{b\cdot})\,G,
        \qquad S_b = \Big(\prod_{j}\eta_j\Big) S + A^\top\mathrm{diag}(P_{b\cdot})\,G

    with :math:`W, S` the chunk's starting weights and momentum and :math:`A^\top\mathrm{diag}(c)\,G =
    \sum_i c_i\, a_i^\top g_i` the chunk's per-token gradients summed in one matmul (the
    :math:`\mathcal{M}_0` term only with an ``anchor``). Its backward keeps only the inputs: autograd
    through the same expression would also keep :math:`A \odot Q_{b\cdot}` and :math:`A \odot P_{b\cdot}`
    (``b × d_in`` each, per layer and chunk), and it takes the gradients of the scalars
    :math:`\beta_b, s_b, \prod\eta` as single inner products (``vecdot``) instead of a product and a sum.

    Args:
        w, m, anchor: ``(N, d_in, d_out)`` (``anchor`` optional).
        a, g: the chunk's gradient factors, ``(N, b, d_in)`` and ``(N, b, d_out)``.
        beta, s, eta_decay: ``(N, 1, 1)``.
        last_q, last_p: the last rows of :math:`Q` and :math:`P` (:func:`chunk_coefficients`), ``(N, b, 1)``.

    Returns:
        ``(new weights, new momentum)``, each ``(N, d_in, d_out)``.
    """
    return _ChunkEnd.apply(w, m, a, g, beta, s, eta_decay, last_q, last_p, anchor)


def chunk_end_state(c: dict[str, Tensor], weights: Weights, momentum: Weights, acts, grads, anchor=None):
    r"""The weights (or accumulator) and momentum at the end of a chunk, each one tensor per layer.

    The chunk's last row of coefficients gives them: :math:`\beta_b, s_b` and :math:`\prod\eta` as
    ``(N, 1, 1)`` scalars on the start state plus the Eq. 17 matmul :math:`A^\top\mathrm{diag}(c)\,G`
    of the per-token gradient factors (:func:`chunk_end_update`, layer by layer). With an ``anchor``
    (:meth:`MemoryMLP.anchor`) the forgotten part :math:`1 - \beta_b` of the weights goes to
    :math:`\mathcal{M}_0` instead of to zero.
    """
    beta, s, eta_decay = (c[key][:, -1, None, None] for key in ("beta", "s", "eta_decay"))
    last_q, last_p = c["Q"][:, -1, :, None], c["P"][:, -1, :, None]  # (N, b, 1)
    new_w, new_s = [], []
    for layer, (w, m, a, g) in enumerate(zip(weights, momentum, acts, grads, strict=True)):
        layer_anchor = None if anchor is None else anchor[layer]
        w_end, s_end = chunk_end_update(w, m, a, g, beta, s, eta_decay, last_q, last_p, layer_anchor)
        new_w.append(w_end)
        new_s.append(s_end)
    return tuple(new_w), tuple(new_s)


def piece_sizes(offset: int, total: int, chunk_size: int, lag_token: bool = False) -> list[int]:
    """Lengths of the pieces of ``total`` tokens that share one gradient anchor.

    A piece ends at every chunk boundary (the first may finish a started chunk) and, with MIRAS' lag token
    (Memora, Eq. 30), after each chunk's first token.
    """
    sizes, pos = [], 0
    while pos < total:
        stop = 1 if lag_token and offset == 0 and chunk_size > 1 else chunk_size
        n = min(stop - offset, total - pos)
        sizes.append(n)
        offset, pos = (offset + n) % chunk_size, pos + n
    return sizes


def split_pieces(sizes: list[int], streams, gates, params: dict[str, Tensor] | None) -> list[tuple]:
    """Cut ``(keys, values, queries)``, the gates and the loss's per-token parameters into pieces.

    Split once: one slice per chunk would make back-propagation add T/b full-length zero-padded gradients.
    Returns one ``(keys, values, queries, alpha, eta, theta, params)`` tuple per piece.
    """
    split = [x.split(sizes, dim=1) if x is not None else [None] * len(sizes) for x in streams]
    split += [g.split(sizes, dim=1) for g in gates]
    cut = {name: value.split(sizes, dim=1) for name, value in (params or {}).items()}
    split.append([{name: parts[i] for name, parts in cut.items()} for i in range(len(sizes))])
    return list(zip(*split, strict=True))


def join_outputs(outputs: list[Tensor], queries: Tensor | None) -> Tensor | None:
    """The pieces' read-outs as one ``(N, T, d)`` tensor (``None`` for a write-only call)."""
    if queries is None:
        return None
    return torch.cat(outputs, dim=1) if outputs else queries[:, :0]


# Back-propagation through n chunks keeps n chunk states (2 x params each); past this many pieces
# checkpoint_chunks="auto" checkpoints groups of ceil(sqrt(n)) pieces, so it keeps about 2 sqrt(n) states.
# 512 = 8K tokens at chunk 16: a 4K LM with persistent tokens (257 pieces) is not recomputed (15-27 % of
# its CPU time, for memory it does not need), a 16K one (1025 pieces) is (issue 14's 2 GB).
AUTO_CHECKPOINT_MIN_PIECES = 512


def checkpoint_group(checkpoint_chunks: int | str, n_pieces: int) -> int:
    r"""Pieces per checkpointed group; ``n_pieces`` (one group: no checkpointing) when it is off.

    ``checkpoint_chunks``: ``0`` never checkpoints, ``g > 0`` keeps the state every ``g`` pieces, and
    ``"auto"`` keeps every state up to :data:`AUTO_CHECKPOINT_MIN_PIECES` pieces and, beyond, one every
    :math:`\lceil\sqrt{n}\rceil` pieces: at 16K tokens and chunk 16 (1024 pieces) 64 states instead of
    1024, for one more forward pass of the memory. Without gradients nothing is kept, so never.
    """
    if checkpoint_chunks == "auto":
        checkpoint_chunks = 0 if n_pieces <= AUTO_CHECKPOINT_MIN_PIECES else math.isqrt(n_pieces - 1) + 1
    elif not isinstance(checkpoint_chunks, int) or isinstance(checkpoint_chunks, bool):
        raise TypeError(f"checkpoint_chunks must be 'auto' or an int >= 0, got {checkpoint_chunks!r}")
    elif checkpoint_chunks < 0:
        raise ValueError(f"checkpoint_chunks must be 'auto' or >= 0 (0 disables it), got {checkpoint_chunks}")
    if checkpoint_chunks == 0 or not torch.is_grad_enabled():
        return max(n_pieces, 1)
    return checkpoint_chunks


def _run(
    model, weights, momentum, chunk_weights, offset, pieces, chunk_size, read, output_grad, anchor, step
):
    """Run consecutive pieces ``(keys, values, queries, coefficients, bias_params)`` with ``step``
    (:func:`_chunk`, or its compiled form).

    Returns ``(outputs, weights, momentum, chunk_weights)``.
    """
    outputs = []
    for piece in pieces:
        grad_weights = chunk_weights if offset else weights
        y, weights, momentum = step(model, weights, momentum, grad_weights, piece, read, output_grad, anchor)
        outputs.append(y)
        offset = (offset + piece[0].shape[1]) % chunk_size
        chunk_weights = grad_weights if offset else weights
    return outputs, weights, momentum, chunk_weights


@implements("titans", 16, 17, 18)
def chunked_memory(
    model: MemoryMLP,
    state: MemoryState,
    keys: Tensor,
    values: Tensor,
    queries: Tensor | None,
    alpha: Tensor,
    eta: Tensor,
    theta: Tensor,
    *,
    chunk_size: int,
    read: str = "token",
    checkpoint_chunks: int | str = 0,
    output_grad: Callable[..., Tensor] = associative_loss_output_grad,
    bias_params: dict[str, Tensor] | None = None,
    compile_chunks: bool = False,
) -> tuple[Tensor | None, MemoryState]:
    r"""Chunk-parallel long-term memory (Titans v1, Eq. 16-18), equal to :func:`reference_memory`.

    .. math::
        \mathcal{M}_t = \beta_t\mathcal{M}_0 - \sum_{i=1}^{t}\theta_i\frac{\beta_t}{\beta_i}
            \nabla\ell(\mathcal{M}_{t'}; x_i), \quad t' = b\lfloor (t-1)/b \rfloor \qquad (16) \\
        S_t = \eta_t S_{t-1} - \theta_t u_t \qquad (18)

    Chunks are aligned on the stream (every ``chunk_size`` tokens since its start), so a call that begins
    inside a chunk first finishes that chunk with the gradients at ``state.chunk_weights``. Eq. 16 as printed
    gives :math:`t' = t - \mathrm{mod}(t, b)`, which is ``b`` (not 0) for ``t = b``; we use the chunk start
    (``docs/errata.md``). ``read`` is as in :func:`~neural_memory.titans.reference.reference_memory`.

    The chunk's summed gradient enters the weights in the matmul form of Eq. 17, corrected for keys and
    values (row convention, factor 2 of Eq. 12 inside ``g``): :math:`\sum_i c_i\,a_i^\top g_i = A^\top
    \mathrm{diag}(c)\,G` — for a linear memory :math:`2K^\top\mathrm{diag}(c)(KW_0 - V)`.

    Back-propagation keeps every chunk's starting weights and momentum, ``2 × params`` per chunk.
    ``checkpoint_chunks=g > 0`` keeps them only every ``g`` chunks and recomputes the chunks in between
    during the backward pass (gradient checkpointing): the same gradients, for one more forward pass.
    ``"auto"`` does so with :math:`g = \lceil\sqrt{n}\rceil` once there are more than
    :data:`AUTO_CHECKPOINT_MIN_PIECES` pieces (:func:`checkpoint_group`); ``0`` never.

    Args:
        keys, values: ``(N, T, d)``; queries: ``(N, T, d)`` or ``None`` (write only).
        alpha, eta, theta: gates ``(N, T)``.
        output_grad: gradient of the inner loss with respect to the memory's output,
            ``(pred, target, **bias_params) -> (N, t, d)``; Eq. 12's by default, a MIRAS attentional bias's
            ``output_grad`` otherwise.
        bias_params: per-token parameters of that loss (e.g. Yaad's :math:`\delta_t`), each ``(N, T, ...)``.
        compile_chunks: run each chunk through ``torch.compile`` of the per-chunk step
            (:mod:`~neural_memory.common.compiled`): the same arithmetic fused, equal to rounding.

    Returns:
        ``(y (N, T, d) or None, new state)``.
    """
    step = chunk_step(_chunk, compile_chunks)
    sizes = piece_sizes(state.offset, keys.shape[1], chunk_size)
    pieces = piece_coefficients(
        split_pieces(sizes, (keys, values, queries), (alpha, eta, theta), bias_params)
    )
    weights, momentum, chunk_weights, offset = (
        state.weights,
        state.momentum,
        state.chunk_weights,
        state.offset,
    )
    group = checkpoint_group(checkpoint_chunks, len(pieces))
    anchor = model.anchor(keys.shape[0], keys.dtype)
    outputs = []
    for first in range(0, len(pieces), group):
        block = pieces[first : first + group]
        args = (model, weights, momentum, chunk_weights, offset, block, chunk_size, read, output_grad)
        args = (*args, anchor, step)
        if group < len(pieces):
            ys, weights, momentum, chunk_weights = checkpoint_chunks_group(
                _run, *args, check_hidden=first == 0
            )
        else:
            ys, weights, momentum, chunk_weights = _run(*args)
        outputs.extend(ys)
        offset = (offset + sum(sizes[first : first + group])) % chunk_size
    return join_outputs(outputs, queries), state.advanced(
        keys.shape[1], weights, momentum, chunk_weights, offset
    )
