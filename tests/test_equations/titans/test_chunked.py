"""The chunk-parallel memory (Titans Eq. 16-18) equals the slow token loop: outputs, states, gradients."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from neural_memory.titans.chunked import (
    AUTO_CHECKPOINT_MIN_PIECES,
    checkpoint_group,
    chunk_coefficients,
    chunked_memory,
    join_outputs,
    piece_coefficients,
    piece_sizes,
    split_pieces,
)
from neural_memory.titans.memory_model import MemoryMLP
from neural_memory.titans.reference import per_token_gradients, reference_memory
from neural_memory.titans.state import MemoryState

from . import hand_memory as hand

DT = torch.float64
TOL = {"rtol": 0.0, "atol": 1e-10}
# Gradients through the read-out's LayerNorm carry its 1/sigma and reach ~1e4 here: compare them relative
# to their size (float64 rounding is ~1e-15 relative).
GRAD_TOL = {"rtol": 1e-12, "atol": 1e-10}
# A read-out through the LayerNorm divides by sqrt(var(z) + 1e-5) <= 316: where a gate of 1 wipes the memory
# (the "edges" cases), z is tiny and float64 rounding of z is amplified up to ~300x in the outputs, and the
# LayerNorm backward's cancellation (g - mean g - z_hat mean(g z_hat)) / sigma reaches ~1e-12 relative in
# the weights. Both stay orders of magnitude below any real discrepancy.
NORM_OUT_TOL = {"rtol": 0.0, "atol": 1e-9}
NORM_STATE_TOL = {"rtol": 1e-11, "atol": 1e-10}


def make(depth, n=3, seq=11, dim=4, seed=0, special=None, norm=None, anchored=None):
    torch.manual_seed(seed)
    model = MemoryMLP(dim, depth=depth, expansion=2, residual_norm=norm, forget_to_initial=anchored).to(DT)
    if model.residual_norm:  # a gain and bias away from (1, 0), so a wrong read-out cannot hide
        with torch.no_grad():
            model.norm_weight.add_(0.3 * torch.randn_like(model.norm_weight))
            model.norm_bias.add_(0.3 * torch.randn_like(model.norm_bias))
    w0 = tuple(w + 0.05 * torch.randn_like(w) for w in model.expand(n))
    state = MemoryState(weights=w0, momentum=tuple(0.1 * torch.randn_like(w) for w in w0), chunk_weights=w0)
    keys = torch.nn.functional.normalize(torch.randn(n, seq, dim, dtype=DT), dim=-1)
    values, queries = torch.randn(n, seq, dim, dtype=DT), torch.randn(n, seq, dim, dtype=DT)
    alpha = 0.2 * torch.rand(n, seq, dtype=DT)
    eta = torch.rand(n, seq, dtype=DT)
    theta = 0.3 * torch.rand(n, seq, dtype=DT)
    if special == "edges":  # gates exactly at the ends of their ranges
        alpha[:, ::4], eta[:, 1::3], eta[:, 2::5], alpha[:, 3::7] = 0.0, 0.0, 1.0, 1.0
    return model, state, keys, values, queries, alpha, eta, theta


def assert_states_close(a: MemoryState, b: MemoryState, tol=None):
    for x, y in zip(
        a.weights + a.momentum + a.chunk_weights, b.weights + b.momentum + b.chunk_weights, strict=True
    ):
        torch.testing.assert_close(x, y, **(tol or TOL))
    assert (a.offset, a.tokens_seen) == (b.offset, b.tokens_seen)


@pytest.mark.equation("titans", 13)
@pytest.mark.equation("titans", 14)
@pytest.mark.equation("titans", 16)
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("read", ["token", "chunk"])
@pytest.mark.parametrize("norm", [False, True])
def test_chunk_size_one_is_the_exact_recurrence(depth, read, norm):
    model, state, k, v, q, a, e, th = make(depth, norm=norm)
    ref_y, ref_s = reference_memory(model, state, k, v, q, a, e, th, chunk_size=1, read=read)
    y, s = chunked_memory(model, state, k, v, q, a, e, th, chunk_size=1, read=read)
    torch.testing.assert_close(y, ref_y, **TOL)
    assert_states_close(s, ref_s)


@pytest.mark.equation("titans", 16)
@pytest.mark.equation("titans", 18)
@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("chunk", [2, 4, 16])
@pytest.mark.parametrize("seq", [7, 19])
@pytest.mark.parametrize("special", [None, "edges"])
@pytest.mark.parametrize("norm", [False, True])
def test_chunked_equals_reference_with_chunk_semantics(depth, chunk, seq, special, norm):
    model, state, k, v, q, a, e, th = make(depth, seq=seq, special=special, norm=norm)
    ref_y, ref_s = reference_memory(model, state, k, v, q, a, e, th, chunk_size=chunk)
    y, s = chunked_memory(model, state, k, v, q, a, e, th, chunk_size=chunk)
    torch.testing.assert_close(y, ref_y, **(NORM_OUT_TOL if model.residual_norm else TOL))
    assert_states_close(s, ref_s, NORM_STATE_TOL if model.residual_norm else TOL)


@pytest.mark.equation("titans", 16)
@settings(max_examples=15)
@given(
    seq=st.integers(1, 14),
    chunk=st.integers(1, 6),
    cut=st.integers(0, 14),
    read=st.sampled_from(["token", "chunk"]),
)
def test_any_split_of_the_stream_gives_the_same_result(seq, chunk, cut, read):
    model, state, k, v, q, a, e, th = make(2, seq=seq)
    cut = min(cut, seq)
    whole_y, whole_s = chunked_memory(model, state, k, v, q, a, e, th, chunk_size=chunk, read=read)
    first, mid = chunked_memory(
        model, state, *(x[:, :cut] for x in (k, v, q, a, e, th)), chunk_size=chunk, read=read
    )
    second, end = chunked_memory(
        model, mid, *(x[:, cut:] for x in (k, v, q, a, e, th)), chunk_size=chunk, read=read
    )
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole_y, **TOL)
    assert_states_close(end, whole_s)


@pytest.mark.equation("titans", 16)
def test_one_token_at_a_time_equals_one_call():
    model, state, k, v, q, a, e, th = make(2, seq=9)
    whole_y, whole_s = chunked_memory(model, state, k, v, q, a, e, th, chunk_size=4)
    ys, s = [], state
    for t in range(9):
        y, s = chunked_memory(model, s, *(x[:, t : t + 1] for x in (k, v, q, a, e, th)), chunk_size=4)
        ys.append(y)
    torch.testing.assert_close(torch.cat(ys, dim=1), whole_y, **TOL)
    assert_states_close(s, whole_s)


@pytest.mark.equation("titans", 16)
def test_eq16_plain_minibatch_gd_without_decay():
    # Catalog Eq. 16 check (c): alpha = 0, eta = 0 => M_b = M_0 - sum_i theta_i grad(M_0; x_i).
    model, state, k, v, q, a, _, th = make(2, seq=5)
    zero = torch.zeros_like(a)
    _, s = chunked_memory(model, state, k, v, q, zero, zero, th, chunk_size=5)
    grads = [per_token_gradients(model, state.weights, k[:, i], v[:, i]) for i in range(5)]
    for layer, w in enumerate(s.weights):
        expected = state.weights[layer] - sum(th[:, i, None, None] * grads[i][layer] for i in range(5))
        torch.testing.assert_close(w, expected, **TOL)


@pytest.mark.equation("titans", 16)
def test_eq16_hand_unroll_of_two_tokens():
    # Catalog Eq. 16 check (d): M_2 = beta_2 M_0 - theta_1 (1 - alpha_2) g_1 - theta_2 g_2 (eta = 0).
    model, state, k, v, q, a, e, th = make(1, seq=2)
    _, s = chunked_memory(model, state, k, v, q, a, torch.zeros_like(e), th, chunk_size=2)
    g1 = per_token_gradients(model, state.weights, k[:, 0], v[:, 0])[0]
    g2 = per_token_gradients(model, state.weights, k[:, 1], v[:, 1])[0]
    beta2 = ((1 - a[:, 0]) * (1 - a[:, 1]))[:, None, None]
    expected = (
        beta2 * state.weights[0] - (th[:, 0] * (1 - a[:, 1]))[:, None, None] * g1 - th[:, 1, None, None] * g2
    )
    torch.testing.assert_close(s.weights[0], expected, **TOL)


def test_eq17_matmul_form_of_the_chunk_gradient_for_linear_memory():
    # Corrected Eq. 17 (row convention): sum_i c_i 2 k_i^T (k_i W_0 - v_i) = 2 K^T diag(c) (K W_0 - V),
    # c_i = theta_i beta_b / beta_i; compared against autograd of the summed, weighted Eq. 12 losses.
    torch.manual_seed(3)
    b, d = 6, 4
    w0 = torch.randn(d, d, dtype=DT, requires_grad=True)
    keys, values = torch.randn(b, d, dtype=DT), torch.randn(b, d, dtype=DT)
    alpha, theta = 0.3 * torch.rand(b, dtype=DT), torch.rand(b, dtype=DT)
    beta = torch.cumprod(1 - alpha, 0)
    c = theta * beta[-1] / beta
    loss = (c * ((keys @ w0 - values) ** 2).sum(-1)).sum()
    (auto,) = torch.autograd.grad(loss, w0)
    matmul_form = 2 * keys.T @ torch.diag(c) @ (keys @ w0.detach() - values)
    torch.testing.assert_close(matmul_form, auto, **TOL)
    # ...and it is what the chunk update adds to the weights (Q's last row holds -c when eta = 0)
    coeffs = chunk_coefficients(alpha[None], torch.zeros(1, b, dtype=DT), theta[None])
    torch.testing.assert_close(-coeffs["Q"][0, -1], c, **TOL)


@pytest.mark.equation("titans", 17)
def test_eq17_chunk_update_of_a_linear_memory_adds_the_matmul_form():
    # One chunk of b tokens, linear memory z = k W, no momentum (eta = 0): chunked_memory must end at
    # M_b = beta_b W_0 - 2 K^T diag(c) (K W_0 - V), c_i = theta_i beta_b / beta_i (corrected Eq. 17).
    torch.manual_seed(4)
    b, d = 5, 3
    w0 = torch.randn(d, d, dtype=DT)
    keys, values, queries = torch.randn(3, b, d, dtype=DT).unbind(0)
    alpha, theta = 0.3 * torch.rand(b, dtype=DT), torch.rand(b, dtype=DT)
    beta = torch.cumprod(1 - alpha, 0)
    c = theta * beta[-1] / beta
    expected = beta[-1] * w0 - 2 * keys.T @ torch.diag(c) @ (keys @ w0 - values)
    model = MemoryMLP(d, depth=1, heads=1).to(DT)
    state = MemoryState(
        weights=(w0[None],), momentum=(torch.zeros(1, d, d, dtype=DT),), chunk_weights=(w0[None],)
    )
    gates = (alpha[None], torch.zeros(1, b, dtype=DT), theta[None])
    _, end = chunked_memory(model, state, keys[None], values[None], queries[None], *gates, chunk_size=b)
    torch.testing.assert_close(end.weights[0][0], expected, **TOL)


@pytest.mark.equation("titans", 18)
def test_coefficients_match_the_closed_forms():
    torch.manual_seed(0)
    alpha, eta, theta = torch.rand(2, 5, dtype=DT), torch.rand(2, 5, dtype=DT), torch.rand(2, 5, dtype=DT)
    c = chunk_coefficients(alpha, eta, theta)
    for t in range(5):
        for i in range(5):
            p = -theta[:, i] * torch.prod(eta[:, i + 1 : t + 1], -1) if i <= t else torch.zeros(2, dtype=DT)
            torch.testing.assert_close(c["P"][:, t, i], p, **TOL)
        torch.testing.assert_close(c["beta"][:, t], torch.prod(1 - alpha[:, : t + 1], -1), **TOL)


@pytest.mark.equation("titans", 16)
@pytest.mark.parametrize("anchored", [False, True])
def test_alpha_one_wipes_the_past(anchored):
    # alpha = 1 forgets everything: towards zero (Eq. 13 as printed) or towards M_0 (forget_to_initial)
    model, state, k, v, q, a, e, th = make(2, seq=4, anchored=anchored)
    a[:, 2] = 1.0
    e[:, 2] = 0.0  # momentum forgotten too: M_2 = S_2 = -theta_2 g_2, gradients all at M_0 (one chunk)
    _, s = chunked_memory(model, state, k, v, q, a, e, th, chunk_size=4)
    grads2 = per_token_gradients(model, state.weights, k[:, 2], v[:, 2])
    grads3 = per_token_gradients(model, state.weights, k[:, 3], v[:, 3])
    blank = model.expand(3) if anchored else tuple(torch.zeros_like(w) for w in state.weights)
    for layer in range(2):
        s2 = -th[:, 2, None, None] * grads2[layer]
        m2 = blank[layer] + s2
        s3 = e[:, 3, None, None] * s2 - th[:, 3, None, None] * grads3[layer]
        m3 = blank[layer] + (1 - a[:, 3, None, None]) * (m2 - blank[layer]) + s3
        torch.testing.assert_close(s.weights[layer], m3, **TOL)


def rows(n, d):
    """``(n, d)`` float64 tensors with bounded elements."""
    return arrays(np.float64, (n, d), elements=st.floats(-1, 1)).map(torch.from_numpy)


# fixed, distinct gates of the 5 tokens (alpha, eta in [0, 1], theta >= 0)
ALPHA, ETA, THETA = [0.1, 0.0, 0.25, 0.5, 0.05], [0.0, 0.9, 0.5, 0.3, 0.7], [0.4, 0.2, 0.3, 0.1, 0.5]


@pytest.mark.parametrize(
    "memory",
    [
        # the token loop claims the read (Eq. 15); the chunk-parallel form the chunk equations (16, 18)
        pytest.param(reference_memory, marks=pytest.mark.equation("titans", 15)),
        pytest.param(
            chunked_memory, marks=[pytest.mark.equation("titans", 16), pytest.mark.equation("titans", 18)]
        ),
    ],
    ids=["reference_memory", "chunked_memory"],
)
@pytest.mark.parametrize("read", ["token", "chunk"])
@settings(max_examples=10)
@given(w0=rows(3, 3), keys=rows(5, 3), values=rows(5, 3), queries=rows(5, 3))
def test_read_rule_of_a_linear_memory_by_hand(memory, read, w0, keys, values, queries):
    # One sequence, linear memory z = k W, chunk_size 2 (chunks {0, 1}, {2, 3}, {4}). By hand (Eq. 13-14,
    # gradient 2 k^T (k W_{t'} - v) at the chunk start t'): M_t after every token and the chunk starts.
    # read="token": y_t = q_t M_t (the memory after writing token t); read="chunk": y_t = q_t M_{t'}.
    weights, chunk_start, momentum = hand.linear_memory_loop(
        w0, torch.zeros_like(w0), keys, values, ALPHA, ETA, THETA, chunk_size=2
    )
    torch.manual_seed(0)  # the model's own M_0 is drawn, then replaced by w0 in the state
    model = MemoryMLP(3, depth=1, heads=1).to(DT)
    zero = torch.zeros(1, 3, 3, dtype=DT)
    state = MemoryState(weights=(w0[None],), momentum=(zero,), chunk_weights=(w0[None],))
    gates = (torch.tensor([g], dtype=DT) for g in (ALPHA, ETA, THETA))
    y, end = memory(model, state, keys[None], values[None], queries[None], *gates, chunk_size=2, read=read)
    read_weights = weights if read == "token" else chunk_start
    expected = torch.stack([queries[t] @ read_weights[t] for t in range(5)])
    torch.testing.assert_close(y[0], expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(end.weights[0][0], weights[-1], rtol=0, atol=1e-12)
    torch.testing.assert_close(end.momentum[0][0], momentum, rtol=0, atol=1e-12)


def _loss_and_grads(fn, model, state, inputs, chunk):
    y, s = fn(model, state, *inputs, chunk_size=chunk)
    loss = (y**2).sum() + sum((w**2).sum() for w in s.weights) + sum(m.sum() for m in s.momentum)
    leaves = [*model.parameters(), *inputs]
    return torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("chunk", [1, 3])
@pytest.mark.parametrize("norm", [False, True])
def test_gradients_of_fast_and_reference_agree(depth, chunk, norm):
    model, _, k, v, q, a, e, th = make(depth, n=2, seq=7, norm=norm)
    inputs = [x.clone().requires_grad_(True) for x in (k, v, q, a, e, th)]
    w0 = model.expand(2)
    state = MemoryState(weights=w0, momentum=tuple(torch.zeros_like(w) for w in w0), chunk_weights=w0)
    fast = _loss_and_grads(chunked_memory, model, state, inputs, chunk)
    slow = _loss_and_grads(reference_memory, model, state, inputs, chunk)
    for f, s in zip(fast, slow, strict=True):
        torch.testing.assert_close(f, s, **GRAD_TOL)


def test_empty_sequence_is_a_no_op():
    model, state, k, v, q, a, e, th = make(2, seq=0)
    y, s = chunked_memory(model, state, k, v, q, a, e, th, chunk_size=4)
    assert y.shape == (3, 0, 4)
    assert s.weights is state.weights


def dual_linear_inputs(anchored, n=2, b=5, d_in=3, d_out=4, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, dtype=DT, generator=g, requires_grad=True)

    h, w, m, a, grad = r(n, b, d_in), r(n, d_in, d_out), r(n, d_in, d_out), r(n, b, d_in), r(n, b, d_out)
    beta, s = torch.rand(n, b, 1, dtype=DT, generator=g), torch.randn(n, b, 1, dtype=DT, generator=g)
    q = torch.randn(n, b, b, dtype=DT, generator=g).tril()
    anchor = r(n, d_in, d_out) if anchored else None
    return h, w, m, a, grad, beta.requires_grad_(), s.requires_grad_(), q.requires_grad_(), anchor


@pytest.mark.equation("titans", 16)
@pytest.mark.parametrize("anchored", [False, True])
def test_dual_linear_reads_each_token_through_its_own_materialised_weights(anchored):
    # Independent form: build W_t = beta_t W + s_t S + (1 - beta_t) M_0 + sum_i Q_ti a_i^T g_i for every
    # token as a full matrix (Eq. 16's weights of the chunk), then read h_t W_t, one token at a time.
    from neural_memory.titans.chunked import dual_linear

    h, w, m, a, grad, beta, s, q, anchor = dual_linear_inputs(anchored)
    got = dual_linear(h, w, m, a, grad, beta, s, q, anchor)
    for n in range(h.shape[0]):
        for t in range(h.shape[1]):
            w_t = beta[n, t] * w[n] + s[n, t] * m[n]
            if anchored:
                w_t = w_t + (1 - beta[n, t]) * anchor[n]
            for i in range(h.shape[1]):
                w_t = w_t + q[n, t, i] * torch.outer(a[n, i], grad[n, i])
            torch.testing.assert_close(got[n, t], h[n, t] @ w_t, rtol=0, atol=1e-12)


@pytest.mark.parametrize("anchored", [False, True])
def test_dual_linear_gradients_and_second_derivatives_are_exact(anchored):
    from neural_memory.titans.chunked import dual_linear

    inputs = dual_linear_inputs(anchored, n=1, b=3, d_in=2, d_out=3)
    args = inputs if anchored else inputs[:-1]
    fn = (lambda *x: dual_linear(*x)) if anchored else (lambda *x: dual_linear(*x, None))
    assert torch.autograd.gradcheck(fn, args)
    assert torch.autograd.gradgradcheck(fn, args)


def saved_storages(fn, *args):
    """Storages that autograd keeps for back-propagation of ``fn(*args)`` (data pointers)."""
    kept = set()

    def pack(t):
        kept.add(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*args)
    return kept, out


def test_dual_linear_keeps_nothing_but_its_inputs_for_back_propagation():
    # autograd through the plain expression keeps h W, h S and h M_0 (chunk x d_out each) to get the
    # gradients of beta and s; the dual linear map recomputes what it needs from its inputs
    from neural_memory.titans.chunked import dual_linear

    inputs = dual_linear_inputs(True)
    kept, _ = saved_storages(dual_linear, *inputs)
    assert kept and kept <= {x.untyped_storage().data_ptr() for x in inputs}


@pytest.mark.parametrize("anchored", [False, True])
def test_dual_linear_under_bf16_autocast_matches_autograd_of_the_plain_expression(anchored):
    # the backward runs its matmuls under the forward's autocast, as autograd's own backward would
    from neural_memory.titans.chunked import dual_linear

    inputs = [
        x.detach().float().requires_grad_() if x is not None else None for x in dual_linear_inputs(anchored)
    ]

    def plain(*x):
        h, w, m, a, grad, beta, s, q, anchor = x
        out = beta * (h @ w) + s * (h @ m) + ((h @ a.transpose(-1, -2)) * q) @ grad
        return out if anchor is None else out + (1 - beta) * (h @ anchor)

    results = []
    for fn in (dual_linear, plain):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fn(*inputs)
        leaves = [x for x in inputs if x is not None]
        results.append((out.float(), torch.autograd.grad(out.float().pow(2).sum(), leaves)))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0.05, atol=0.05)
    for got, want in zip(results[0][1], results[1][1], strict=True):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=0.05, atol=0.05 * want.abs().max().item())


@pytest.mark.parametrize(
    ("setting", "pieces", "group"),
    [
        ("auto", 1, 1),
        ("auto", 257, 257),  # 4K tokens at chunk 16 after persistent tokens: every state kept
        ("auto", 512, 512),  # up to the threshold: every state kept (one group)
        ("auto", 513, 23),  # ceil(sqrt(513)) = 23 (22^2 = 484 < 513 <= 529 = 23^2)
        ("auto", 1024, 32),  # 16K tokens at chunk 16
        ("auto", 1025, 33),
        (0, 10, 10),
        (0, 0, 1),
        (3, 10, 3),
    ],
)
def test_checkpoint_group_by_hand(setting, pieces, group):
    assert AUTO_CHECKPOINT_MIN_PIECES == 512
    assert checkpoint_group(setting, pieces) == group


def test_checkpoint_group_never_checkpoints_without_gradients():
    with torch.no_grad():
        assert checkpoint_group("auto", 1024) == 1024
        assert checkpoint_group(3, 10) == 10


@pytest.mark.parametrize(
    ("setting", "error"), [(-1, ValueError), ("sqrt", TypeError), (2.0, TypeError), (True, TypeError)]
)
def test_checkpoint_group_refuses_bad_settings(setting, error):
    with pytest.raises(error, match="checkpoint_chunks must be 'auto' or"):
        checkpoint_group(setting, 10)


def plain_dual_linear(h, w, m, a, grad, beta, s, q, anchor):
    """The dual-form read written out, for autograd to differentiate."""
    out = beta * (h @ w) + s * (h @ m) + ((h @ a.transpose(-1, -2)) * q) @ grad
    return out if anchor is None else out + (1 - beta) * (h @ anchor)


INPUT_NAMES = ("h", "w", "m", "a", "g", "beta", "s", "q", "anchor")


@pytest.mark.parametrize("which", range(9), ids=INPUT_NAMES)
def test_dual_linear_gives_each_input_its_own_gradient_when_only_it_needs_one(which):
    """The backward computes only the gradients asked for, each of the right input (autograd reference)."""
    from neural_memory.titans.chunked import dual_linear

    inputs = [x.detach() for x in dual_linear_inputs(True)]
    inputs[which].requires_grad_()
    weight = torch.randn(2, 5, 4, dtype=DT, generator=torch.Generator().manual_seed(1))
    (got,) = torch.autograd.grad((dual_linear(*inputs) * weight).sum(), inputs[which])
    (want,) = torch.autograd.grad((plain_dual_linear(*inputs) * weight).sum(), inputs[which])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("offset", "total", "chunk", "lag", "sizes"),
    [
        (0, 10, 4, False, [4, 4, 2]),
        (3, 10, 4, False, [1, 4, 4, 1]),
        (0, 0, 4, False, []),
        (2, 1, 4, False, [1]),
        (0, 10, 4, True, [1, 3, 1, 3, 1, 1]),  # Memora's lag token: each chunk's first token alone
        (1, 5, 4, True, [3, 1, 1]),
        (0, 3, 1, True, [1, 1, 1]),  # chunk 1: the lag token is the whole chunk
        (0, 5, 2, True, [1, 1, 1, 1, 1]),  # chunk 2: the lag token, then the chunk's other token
    ],
)
def test_piece_sizes_by_hand(offset, total, chunk, lag, sizes):
    assert piece_sizes(offset, total, chunk, lag) == sizes


def test_split_pieces_cuts_streams_gates_and_parameters_alike():
    keys = torch.arange(2 * 5 * 1.0).reshape(2, 5, 1)
    gates = [torch.arange(10.0).reshape(2, 5) + k for k in (0, 100, 200)]
    delta = torch.arange(10.0).reshape(2, 5) * -1
    pieces = split_pieces([2, 3], (keys, keys + 1, None), gates, {"delta": delta})
    assert len(pieces) == 2
    k, v, q, alpha, eta, theta, params = pieces[1]
    torch.testing.assert_close(k, keys[:, 2:], rtol=0, atol=0)
    torch.testing.assert_close(v, keys[:, 2:] + 1, rtol=0, atol=0)
    assert q is None
    for got, gate in zip((alpha, eta, theta), gates, strict=True):
        torch.testing.assert_close(got, gate[:, 2:], rtol=0, atol=0)
    assert list(params) == ["delta"]
    torch.testing.assert_close(params["delta"], delta[:, 2:], rtol=0, atol=0)
    assert split_pieces([5], (keys, keys, keys), gates, None)[0][-1] == {}


@pytest.mark.equation("titans", 16)
@pytest.mark.equation("titans", 18)
@pytest.mark.parametrize("sizes", [[3, 4, 4, 4, 2], [1, 3, 1, 3, 1, 2], [4], [2, 1]])
def test_piece_coefficients_are_each_pieces_own_and_scan_once_per_length(sizes, monkeypatch):
    # each piece's coefficients and their gradients at its gates, bit for bit those of chunk_coefficients on
    # that piece alone, with one scan per piece length (the lag token's 1, b-1 alternate; ragged ends)
    import neural_memory.titans.chunked as chunked

    gen = torch.Generator().manual_seed(sum(sizes) + len(sizes))
    total = sum(sizes)
    gates = [torch.rand(2, total, dtype=DT, generator=gen).requires_grad_(True) for _ in range(3)]
    keys = torch.randn(2, total, 3, dtype=DT, generator=gen)
    pieces = split_pieces(sizes, (keys, keys, None), gates, None)
    calls = []
    scan = chunked.chunk_coefficients
    monkeypatch.setattr(chunked, "chunk_coefficients", lambda *g: calls.append(g[0].shape) or scan(*g))
    got = piece_coefficients(pieces)
    assert sorted(shape[-1] for shape in calls) == sorted(set(sizes))
    b = max(sizes)
    weights = {name: torch.randn(2, b, b, dtype=DT, generator=gen) for name in got[0][3]}
    start = 0
    for piece, split, size in zip(got, pieces, sizes, strict=True):
        assert len(piece) == 5 and piece[0] is split[0] and piece[0].shape[1] == size
        assert piece[2] is None and piece[4] == {}
        alone = chunk_coefficients(*(g[:, start : start + size] for g in gates))
        assert sorted(piece[3]) == sorted(alone) == ["P", "Q", "beta", "eta_decay", "s"]
        for name, value in alone.items():
            torch.testing.assert_close(piece[3][name], value, rtol=0, atol=0)
        start += size

    # gradients: a loss over every piece's coefficients, against the same loss over per-piece scans
    def loss(coefficients):  # each coefficient against a fixed random weight of its shape
        total = 0.0
        for c in coefficients:
            for name, value in c.items():
                n = value.shape[1]
                total = (
                    total
                    + (
                        value * (weights[name][:, :n, :n] if value.dim() == 3 else weights[name][:, 0, :n])
                    ).sum()
                )
        return total

    grads = torch.autograd.grad(loss([piece[3] for piece in got]), gates)
    alone, start = [], 0
    for size in sizes:
        alone.append(chunk_coefficients(*(g[:, start : start + size] for g in gates)))
        start += size
    for got_grad, want in zip(grads, torch.autograd.grad(loss(alone), gates), strict=True):
        torch.testing.assert_close(got_grad, want, rtol=1e-14, atol=1e-15)


def test_join_outputs():
    queries = torch.randn(3, 4, 2)
    assert join_outputs([torch.ones(3, 1, 2)], None) is None
    assert join_outputs([], queries).shape == (3, 0, 2)
    parts = [torch.zeros(3, 1, 2), torch.ones(3, 2, 2)]
    torch.testing.assert_close(join_outputs(parts, queries), torch.cat(parts, dim=1), rtol=0, atol=0)


def test_piece_sizes_default_has_no_lag_token():
    assert piece_sizes(0, 10, 4) == [4, 4, 2]


def test_a_scaled_attentional_bias_is_a_scaled_step_size():
    """Another bias reaches the update through ``output_grad`` (and its per-token ``bias_params``):
    the gradient of c_t * loss is c_t times the gradient, so it must equal theta_t -> c_t theta_t."""
    from neural_memory.titans.associative_loss import associative_loss_output_grad as l2_grad

    model, state, keys, values, queries, alpha, eta, theta = make(depth=2, seq=7)
    scale = 0.5 + torch.rand(theta.shape, dtype=DT)

    def run(theta, **kwargs):
        return chunked_memory(model, state, keys, values, queries, alpha, eta, theta, chunk_size=3, **kwargs)

    y_const, s_const = run(theta, output_grad=lambda pred, target: 3.0 * l2_grad(pred, target))
    y_want, s_want = run(3.0 * theta)
    torch.testing.assert_close(y_const, y_want, **GRAD_TOL)
    assert_states_close(s_const, s_want, GRAD_TOL)
    y_tok, s_tok = run(
        theta,
        output_grad=lambda pred, target, c: c * l2_grad(pred, target),
        bias_params={"c": scale[..., None]},
    )
    y_want, s_want = run(scale * theta)
    torch.testing.assert_close(y_tok, y_want, **GRAD_TOL)
    assert_states_close(s_tok, s_want, GRAD_TOL)


@pytest.mark.parametrize("depth", [1, 2])
def test_dual_read_rescales_each_layers_linear_read(depth):
    """``rescale(layer, h @ C_t)`` (MIRAS' Moneta) is applied to every layer's read, with its index."""
    from neural_memory.titans.chunked import dual_read

    model, state, keys, values, queries, alpha, eta, theta = make(depth=depth, seq=4, norm=False)
    acts, grads = model.gradient_factors(state.weights, keys, values)
    c = chunk_coefficients(alpha, eta, theta)
    args = (model, state.weights, state.momentum, acts, grads, c, queries)
    seen = []

    def double(layer, out):
        seen.append(layer)
        return 2.0 * out

    doubled = dual_read(*args, rescale=double)
    assert seen == list(range(depth))
    plain = dual_read(*args)
    if depth == 1:  # a linear memory: the read itself doubles
        torch.testing.assert_close(doubled, 2.0 * plain, **TOL)
    else:  # every layer's weights doubled: the same read as a model whose M_t are all 2 M_t
        w2 = tuple(2.0 * w for w in state.weights)
        m2 = tuple(2.0 * m for m in state.momentum)
        g2 = [2.0 * g for g in grads]
        torch.testing.assert_close(doubled, dual_read(model, w2, m2, acts, g2, c, queries), **GRAD_TOL)


@pytest.mark.parametrize("dtype", [None, torch.bfloat16, torch.float16], ids=["off", "bf16", "fp16"])
def test_dual_linear_backward_runs_under_the_forwards_autocast(dtype):
    """The backward's matmuls run as the forward's did: not at all under autocast when it was off, and in
    the forward's autocast dtype (not autocast's default) when it was on."""
    import contextlib

    from neural_memory.titans.chunked import _DualLinear, dual_linear

    inputs = [x.detach().float().requires_grad_() for x in dual_linear_inputs(True)]
    context = (lambda: torch.autocast("cpu", dtype=dtype)) if dtype else contextlib.nullcontext
    with context():
        out = dual_linear(*inputs)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(3)).to(out.dtype)
    got = torch.autograd.grad(out, inputs, grad_out)
    with context():
        want = _DualLinear._backward([True] * 9, grad_out, *(x.detach() for x in inputs))
    for g, w, x in zip(got, want, inputs, strict=True):
        assert g.dtype == x.dtype
        torch.testing.assert_close(g, w.to(x.dtype), rtol=0, atol=0)


@pytest.mark.parametrize(("setting", "calls"), [(None, 0), (0, 0), (2, 2)])
def test_chunked_memory_checkpoints_only_when_asked(setting, calls, checkpoint_calls):
    """chunked_memory's default keeps every chunk state; ``checkpoint_chunks=g`` checkpoints groups of
    g pieces (4 pieces of chunk 3 in 11 tokens -> 2 groups)."""
    import neural_memory.titans.chunked as chunked

    seen = checkpoint_calls(chunked)
    model, state, keys, values, queries, alpha, eta, theta = make(depth=2, seq=11)
    kwargs = {} if setting is None else {"checkpoint_chunks": setting}
    chunked_memory(
        model, state, keys, values, queries, alpha, eta, theta.requires_grad_(), chunk_size=3, **kwargs
    )
    # the first group's backward pass looks for hidden tensors; the others run the same code
    assert seen == [True] + [False] * (calls - 1) if calls else seen == []


# -- the state at a chunk's end: one layer's weights (Eq. 13) and momentum (Eq. 18) after its last token ----


def chunk_end_inputs(anchored, n=2, b=4, d_in=3, d_out=5, seed=0):
    """w, m, a, g, beta, s, eta_decay, last_q, last_p, anchor as :func:`chunk_end_update` takes them."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, dtype=DT, generator=g, requires_grad=True)

    w, m, a, grad = r(n, d_in, d_out), r(n, d_in, d_out), r(n, b, d_in), r(n, b, d_out)
    beta = torch.rand(n, 1, 1, dtype=DT, generator=g).requires_grad_()
    s, eta_decay, last_q, last_p = r(n, 1, 1), r(n, 1, 1), r(n, b, 1), r(n, b, 1)
    anchor = r(n, d_in, d_out) if anchored else None
    return w, m, a, grad, beta, s, eta_decay, last_q, last_p, anchor


def chunk_end_by_hand(w, m, a, grad, beta, s, eta_decay, last_q, last_p, anchor):
    """M_b = beta_b W + s_b S + (1 - beta_b) M_0 + sum_i Q_bi a_i^T g_i and S_b = (prod eta) S +
    sum_i P_bi a_i^T g_i, one outer product per token (Eq. 17's sum before its matmul form)."""
    new_w, new_s = beta * w + s * m, eta_decay * m
    if anchor is not None:
        new_w = new_w + (1 - beta) * anchor
    for i in range(a.shape[1]):
        outer = a[:, i, :, None] * grad[:, i, None, :]  # (N, d_in, d_out)
        new_w = new_w + last_q[:, i, :, None] * outer
        new_s = new_s + last_p[:, i, :, None] * outer
    return new_w, new_s


@pytest.mark.parametrize("anchored", [False, True])
def test_chunk_end_update_is_the_sum_of_outer_products_with_its_gradients(anchored):
    from neural_memory.titans.chunked import chunk_end_update

    inputs = chunk_end_inputs(anchored)
    leaves = [x for x in inputs if x is not None]
    g = torch.Generator().manual_seed(1)
    up_w, up_s = (torch.randn(2, 3, 5, dtype=DT, generator=g) for _ in range(2))
    results = []
    for fn in (chunk_end_update, chunk_end_by_hand):
        new_w, new_s = fn(*inputs)
        grads = torch.autograd.grad((new_w * up_w).sum() + (new_s * up_s).sum(), leaves)
        results.append((new_w, new_s, grads))
    for got, want in zip(results[0][:2], results[1][:2], strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    for got, want in zip(results[0][2], results[1][2], strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("anchored", [False, True])
def test_chunk_end_update_gradients_and_second_derivatives_are_exact(anchored):
    from neural_memory.titans.chunked import chunk_end_update

    inputs = chunk_end_inputs(anchored, n=1, b=2, d_in=2, d_out=3)
    args = inputs if anchored else inputs[:-1]
    fn = (lambda *x: chunk_end_update(*x)) if anchored else (lambda *x: chunk_end_update(*x, None))
    assert torch.autograd.gradcheck(fn, args)
    assert torch.autograd.gradgradcheck(fn, args)


def test_chunk_end_update_keeps_nothing_but_its_inputs_for_back_propagation():
    # autograd through the plain expression keeps the token-scaled factors a * Q_b and a * P_b (chunk x d_in
    # each, per layer and chunk); the update recomputes them from a and the coefficients
    from neural_memory.titans.chunked import chunk_end_update

    inputs = chunk_end_inputs(True)
    kept, _ = saved_storages(chunk_end_update, *inputs)
    assert kept and kept <= {x.untyped_storage().data_ptr() for x in inputs}


@pytest.mark.parametrize("which", range(10))
def test_chunk_end_update_gives_each_input_its_own_gradient_when_only_it_needs_one(which):
    from neural_memory.titans.chunked import chunk_end_update

    inputs = [x.detach() for x in chunk_end_inputs(True)]
    inputs[which].requires_grad_()
    g = torch.Generator().manual_seed(2)
    up_w, up_s = (torch.randn(2, 3, 5, dtype=DT, generator=g) for _ in range(2))

    def objective(fn):
        new_w, new_s = fn(*inputs)
        return (new_w * up_w).sum() + (new_s * up_s).sum()

    (got,) = torch.autograd.grad(objective(chunk_end_update), [inputs[which]])
    (want,) = torch.autograd.grad(objective(chunk_end_by_hand), [inputs[which]])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("anchored", [False, True])
def test_chunk_end_update_under_bf16_autocast_matches_autograd_of_the_plain_expression(anchored):
    # the matmul term runs in bfloat16 under autocast (and so the sum it is added to), as torch.baddbmm
    # would; the backward's matmuls run in the forward's autocast dtype too
    from neural_memory.titans.chunked import chunk_end_update

    inputs = [
        x.detach().float().requires_grad_() if x is not None else None for x in chunk_end_inputs(anchored)
    ]

    def plain(w, m, a, grad, beta, s, eta_decay, last_q, last_p, anchor):
        start = beta * w + s * m
        if anchor is not None:
            start = start + (1 - beta) * anchor
        new_w = torch.baddbmm(start, (a * last_q).transpose(-1, -2), grad)
        return new_w, torch.baddbmm(eta_decay * m, (a * last_p).transpose(-1, -2), grad)

    leaves = [x for x in inputs if x is not None]
    results = []
    for fn in (chunk_end_update, plain):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            new_w, new_s = fn(*inputs)
        loss = new_w.float().pow(2).sum() + new_s.float().pow(2).sum()
        results.append(((new_w, new_s), torch.autograd.grad(loss, leaves)))
    for got, want in zip(results[0][0], results[1][0], strict=True):
        assert got.dtype == want.dtype == torch.bfloat16
        torch.testing.assert_close(got.float(), want.float(), rtol=0.02, atol=0.02)
    for got, want in zip(results[0][1], results[1][1], strict=True):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=0.05, atol=0.05 * want.abs().max().item())


def test_chunk_end_update_without_autocast_stays_in_the_inputs_dtype():
    from neural_memory.titans.chunked import chunk_end_update

    inputs = [x.detach().float() if x is not None else None for x in chunk_end_inputs(True)]
    for out, want in zip(chunk_end_update(*inputs), chunk_end_by_hand(*inputs), strict=True):
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [None, torch.bfloat16, torch.float16], ids=["off", "bf16", "fp16"])
def test_chunk_end_update_backward_runs_under_the_forwards_autocast(dtype):
    """As dual_linear's: the backward's matmuls not under autocast when the forward's was off, and in the
    forward's autocast dtype (not autocast's default) when it was on."""
    import contextlib

    from neural_memory.titans.chunked import _ChunkEnd, chunk_end_update

    inputs = [x.detach().float().requires_grad_() for x in chunk_end_inputs(True)]
    context = (lambda: torch.autocast("cpu", dtype=dtype)) if dtype else contextlib.nullcontext
    with context():
        outs = chunk_end_update(*inputs)
    g = torch.Generator().manual_seed(3)
    grad_outs = [torch.randn(o.shape, generator=g).to(o.dtype) for o in outs]
    got = torch.autograd.grad(outs, inputs, grad_outs)
    with context():
        want = _ChunkEnd._backward([True] * 10, *grad_outs, *(x.detach() for x in inputs))
    for grad, expected, x in zip(got, want, inputs, strict=True):
        assert grad.dtype == x.dtype
        torch.testing.assert_close(grad, expected.to(x.dtype), rtol=0, atol=0)


def test_chunk_coefficients_are_made_on_the_gates_device():
    """The identity that seeds Eq. 18's scan lives on the gates' device; ``meta`` stands in for a GPU."""
    gates = [torch.rand(2, 4, device="meta", dtype=DT) for _ in range(3)]
    c = chunk_coefficients(*gates)
    assert {v.device.type for v in c.values()} == {"meta"}
    assert c["Q"].shape == c["P"].shape == (2, 4, 4)


def test_forgetting_returns_to_an_anchor_cast_to_the_inputs_dtype():
    """M_0 comes from the model's parameters (float64 here) and the stream is float32: the anchor is cast,
    so the state stays float32 (a float64 anchor would promote it) and equals the token loop's. (No read-out
    norm: its gain and bias would be float64 parameters inside the float32 stream.)"""
    model = MemoryMLP(4, depth=2, expansion=2, residual_norm=False, forget_to_initial=True).to(DT)
    g = torch.Generator().manual_seed(4)
    keys, values, queries = (torch.randn(2, 6, 4, generator=g) for _ in range(3))
    alpha, eta, theta = (0.3 * torch.rand(2, 6, generator=g) for _ in range(3))
    w0 = tuple(w.float() for w in model.expand(2))
    state = MemoryState(weights=w0, momentum=tuple(torch.zeros_like(w) for w in w0), chunk_weights=w0)
    args = (model, state, keys, values, queries, alpha, eta, theta)
    y, final = chunked_memory(*args, chunk_size=3)
    y_ref, final_ref = reference_memory(*args, chunk_size=3)
    assert y.dtype == torch.float32
    assert {t.dtype for t in final.weights + final.momentum} == {torch.float32}
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    for w, w_ref in zip(final.weights, final_ref.weights, strict=True):
        torch.testing.assert_close(w, w_ref, rtol=1e-4, atol=1e-5)
