"""The chunk-parallel MIRAS memory (Eq. 28-32) equals the token loop: outputs, states and gradients.

Two kinds of expectation: the slow token loop (:func:`neural_memory.titans.reference.reference_memory`,
autograd gradients, one token at a time) for every retention and bias, and the paper's chunk formulas
written out here by hand for a linear memory in the paper's column convention (Eq. 29, 30, 32).
"""

import pytest
import torch

from neural_memory.miras.chunked import miras_chunked_memory
from neural_memory.titans.associative_loss import associative_loss, associative_loss_output_grad
from neural_memory.titans.chunked import chunked_memory, piece_sizes
from neural_memory.titans.memory_model import MemoryMLP
from neural_memory.titans.reference import reference_memory
from neural_memory.titans.state import MemoryState

DT = torch.float64
TOL = {"rtol": 1e-12, "atol": 1e-11}
# The cubic l_p bias drives Memora's log-weights to ~100 in a few tokens (seed 0: max |L| = 126); the
# softmax and the second layer amplify float64 rounding of those logits (~1e-14 each) to a few 1e-11 in the
# outputs. A wrong chunk formula moves them by 1e-3 or more.
LP_SOFTMAX_TOL = {"rtol": 1e-10, "atol": 1e-10}


# -- losses and retentions written here, independently of neural_memory.miras ---------------------------


def lp_loss(pred, target, p=3.0):
    return (pred - target).abs().pow(p).sum(-1)


def lp_grad(pred, target, p=3.0):
    r = pred - target
    return p * torch.sign(r) * r.abs().pow(p - 1)


def scaled_l2_loss(pred, target, delta):  # a per-token parameter, to exercise bias_params
    return delta[..., 0] * (pred - target).pow(2).sum(-1)


def scaled_l2_grad(pred, target, delta):
    return 2 * delta * (pred - target)


def softmax_rows(c):  # Memora's phi: each output unit's incoming weights on the simplex
    return torch.softmax(c, dim=-2)


def lq_normalise(c, q=4.0):  # Moneta's phi, Eq. 24 as printed
    norm = c.abs().pow(q).sum(dim=(-2, -1), keepdim=True).pow(1 / q)
    return c / norm.pow(q - 2)


RETENTIONS = {
    "identity": (None, False),
    "lq": (lq_normalise, False),
    "softmax": (softmax_rows, False),
    "softmax-lag": (softmax_rows, True),
}
BIASES = {
    "l2": (associative_loss, associative_loss_output_grad, False),
    "lp": (lp_loss, lp_grad, False),
    "scaled": (scaled_l2_loss, scaled_l2_grad, True),
}


def make(depth=2, n=3, seq=11, dim=4, seed=0, retention="identity", norm=None, momentum=True):
    torch.manual_seed(seed)
    project, _ = RETENTIONS[retention]
    # a non-linear retention owns the state (phi(C)): forgetting cannot return to M_0
    anchored = None if project is None else False
    model = MemoryMLP(dim, depth=depth, expansion=2, residual_norm=norm, forget_to_initial=anchored).to(DT)
    if model.residual_norm:
        with torch.no_grad():
            model.norm_weight.add_(0.3 * torch.randn_like(model.norm_weight))
            model.norm_bias.add_(0.3 * torch.randn_like(model.norm_bias))
    acc = tuple(w + 0.05 * torch.randn_like(w) for w in model.expand(n))
    weights = acc if project is None else tuple(project(a) for a in acc)
    state = MemoryState(
        weights=weights,
        momentum=tuple(0.1 * torch.randn_like(w) for w in acc),
        chunk_weights=weights,
        accumulator=None if project is None else acc,
    )
    keys = torch.nn.functional.normalize(torch.randn(n, seq, dim, dtype=DT), dim=-1)
    values, queries = torch.randn(n, seq, dim, dtype=DT), torch.randn(n, seq, dim, dtype=DT)
    gates = (
        0.2 * torch.rand(n, seq, dtype=DT),
        torch.rand(n, seq, dtype=DT) if momentum else torch.zeros(n, seq, dtype=DT),
        0.1 * torch.rand(n, seq, dtype=DT),  # small enough that the cubic l_p inner loop stays finite
    )
    params = {"delta": 0.5 + torch.rand(n, seq, 1, dtype=DT)}
    return model, state, keys, values, queries, gates, params


def run(fn, model, state, k, v, q, gates, params, *, retention, bias, chunk, **kw):
    project, lag = RETENTIONS[retention]
    loss, grad, uses_params = BIASES[bias]
    common = {"bias_params": params if uses_params else None, "project": project, "lag_token": lag}
    if fn == "reference":
        return reference_memory(model, state, k, v, q, *gates, chunk_size=chunk, loss=loss, **common)
    return miras_chunked_memory(
        model, state, k, v, q, *gates, chunk_size=chunk, output_grad=grad, **common, **kw
    )


def assert_states_close(a: MemoryState, b: MemoryState, tol=TOL):
    pairs = zip(
        a.weights + a.momentum + a.chunk_weights, b.weights + b.momentum + b.chunk_weights, strict=True
    )
    for x, y in pairs:
        torch.testing.assert_close(x, y, **tol)
    assert (a.accumulator is None) == (b.accumulator is None)
    for x, y in zip(a.accumulator or (), b.accumulator or (), strict=True):
        torch.testing.assert_close(x, y, **tol)
    assert (a.offset, a.tokens_seen) == (b.offset, b.tokens_seen)


def assert_materialised_grads_equal_the_dual_form(model, state, k, v, q, gates, wrt):
    """Gradients (of the outputs against fixed weights, plus the end weights' squares) with respect to
    ``wrt``: the materialised form with Eq. 12's output gradient equals autograd of the Titans dual form."""

    def grads(**kw):
        fn = chunked_memory if not kw else miras_chunked_memory
        y, s = fn(model, state, k, v, q, *gates, chunk_size=4, **kw)
        total = (y * torch.sin(torch.arange(y.numel(), dtype=DT)).reshape(y.shape)).sum()
        return torch.autograd.grad(total + sum((w * w).sum() for w in s.weights), wrt)

    got = grads(output_grad=associative_loss_output_grad, dual_form=False)
    for a, b in zip(got, grads(), strict=True):
        torch.testing.assert_close(a, b, **TOL)


# -- chunked == token loop ---------------------------------------------------------------------------------


@pytest.mark.equation("miras", 28)
@pytest.mark.parametrize("retention", list(RETENTIONS))
@pytest.mark.parametrize("bias", list(BIASES))
@pytest.mark.parametrize("norm", [False, True])
def test_chunk_size_one_is_the_exact_recurrence(retention, bias, norm):
    model, state, k, v, q, gates, params = make(retention=retention, norm=norm)
    ref = run("reference", model, state, k, v, q, gates, params, retention=retention, bias=bias, chunk=1)
    got = run("chunked", model, state, k, v, q, gates, params, retention=retention, bias=bias, chunk=1)
    torch.testing.assert_close(got[0], ref[0], **TOL)
    assert_states_close(got[1], ref[1])


@pytest.mark.equation("miras", 28)
@pytest.mark.equation("miras", 30)
@pytest.mark.parametrize("retention", list(RETENTIONS))
@pytest.mark.parametrize("bias", ["l2", "lp", "scaled"])
@pytest.mark.parametrize("chunk", [2, 4, 16])
@pytest.mark.parametrize("depth", [1, 2])
def test_chunked_equals_reference_with_chunk_semantics(retention, bias, chunk, depth):
    model, state, k, v, q, gates, params = make(depth=depth, seq=13, retention=retention)
    ref = run("reference", model, state, k, v, q, gates, params, retention=retention, bias=bias, chunk=chunk)
    got = run("chunked", model, state, k, v, q, gates, params, retention=retention, bias=bias, chunk=chunk)
    tol = LP_SOFTMAX_TOL if (bias, retention[:7]) == ("lp", "softmax") else TOL
    torch.testing.assert_close(got[0], ref[0], **tol)
    assert_states_close(got[1], ref[1], tol)


@pytest.mark.equation("miras", 28)
@pytest.mark.parametrize("retention", ["lq", "softmax-lag"])
def test_chunked_gradients_equal_reference_gradients(retention):
    model, state, k, v, q, gates, params = make(retention=retention, seq=9, norm=True)
    leaves = [k, v, q, *gates, *state.accumulator, *state.momentum]
    for leaf in leaves:
        leaf.requires_grad_(True)
    project = RETENTIONS[retention][0]

    def grads(fn):
        weights = tuple(project(a) for a in state.accumulator)
        start = MemoryState(weights, state.momentum, weights, accumulator=state.accumulator)
        y, s = run(fn, model, start, k, v, q, gates, params, retention=retention, bias="lp", chunk=4)
        total = (y * torch.cos(torch.arange(y.numel(), dtype=DT)).reshape(y.shape)).sum()
        total = total + sum((w * w).sum() for w in s.weights)
        return torch.autograd.grad(total, leaves + list(model.parameters()))

    for got, want in zip(grads("chunked"), grads("reference"), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-11)


@pytest.mark.equation("miras", 28)
def test_materialised_form_equals_the_titans_dual_form():
    # phi = id: the materialised per-token states and the dual form are two computations of one thing.
    model, state, k, v, q, gates, _ = make(norm=True, seq=19)
    want = chunked_memory(model, state, k, v, q, *gates, chunk_size=4)
    got = miras_chunked_memory(
        model, state, k, v, q, *gates, chunk_size=4, output_grad=associative_loss_output_grad, dual_form=False
    )
    torch.testing.assert_close(got[0], want[0], **TOL)
    assert_states_close(got[1], want[1])


@pytest.mark.equation("miras", 28)
def test_materialised_form_has_the_dual_forms_gradients_with_forgetting_to_m0():
    # the per-token read's hand-written backward, anchor (forget to M_0) included, against autograd of the
    # Titans dual form
    model, state, k, v, q, gates, _ = make(norm=True, seq=10)
    assert model.forget_to_initial
    leaves = [k, v, q, *gates, *state.weights, *state.momentum]
    for leaf in leaves:
        leaf.requires_grad_(True)

    assert_materialised_grads_equal_the_dual_form(
        model, state, k, v, q, gates, leaves + list(model.parameters())
    )


@pytest.mark.equation("miras", 28)
@pytest.mark.parametrize("retention", ["lq", "softmax-lag"])
@pytest.mark.parametrize("split", [1, 3, 4, 5, 10])
def test_state_continues_the_stream_at_any_split(retention, split):
    model, state, k, v, q, gates, params = make(retention=retention, seq=11)

    def call(st, sl):
        g = tuple(x[:, sl] for x in gates)
        return run("chunked", model, st, k[:, sl], v[:, sl], q[:, sl], g, params, retention=retention,
                   bias="lp", chunk=4)  # fmt: skip

    y_all, s_all = call(state, slice(None))
    y1, s1 = call(state, slice(0, split))
    y2, s2 = call(s1, slice(split, None))
    torch.testing.assert_close(torch.cat([y1, y2], dim=1), y_all, **TOL)
    assert_states_close(s2, s_all)


@pytest.mark.equation("miras", 28)
def test_a_sequence_shorter_than_a_chunk_still_updates_the_memory():
    model, state, k, v, q, gates, params = make(retention="lq", seq=3)
    _, new = run("chunked", model, state, k, v, q, gates, params, retention="lq", bias="lp", chunk=16)
    assert new.offset == 3
    assert all((a - b).abs().max() > 1e-3 for a, b in zip(new.weights, state.weights, strict=True))


def test_pieces_split_at_chunk_ends_and_after_the_lag_token():
    assert piece_sizes(0, 10, 4, lag_token=False) == [4, 4, 2]
    assert piece_sizes(0, 10, 4, lag_token=True) == [1, 3, 1, 3, 1, 1]
    assert piece_sizes(1, 6, 4, lag_token=True) == [3, 1, 2]
    assert piece_sizes(2, 3, 4, lag_token=False) == [2, 1]
    assert piece_sizes(0, 3, 1, lag_token=True) == [1, 1, 1]


# -- the paper's chunk formulas, by hand, for a linear memory (column convention W (d_v, d_k)) ----------


def linear_case(n=2, b=5, d=3, seed=1):
    torch.manual_seed(seed)
    model = MemoryMLP(d, depth=1).to(DT)  # a matrix memory: M(k) = k W_row = W k with W = W_row^T
    w_row = torch.randn(n, d, d, dtype=DT)
    keys, values = torch.randn(n, b, d, dtype=DT), torch.randn(n, b, d, dtype=DT)
    keep = 0.5 + 0.5 * torch.rand(n, b, dtype=DT)  # MIRAS' alpha_t: the kept fraction
    step = 0.2 * torch.rand(n, b, dtype=DT)  # MIRAS' eta_t
    return model, w_row, keys, values, keep, step


@pytest.mark.equation("miras", 29)
@pytest.mark.parametrize("p", [2.0, 3.0])
def test_chunk_end_state_is_eq_29_matmul_form(p):
    model, w_row, keys, values, keep, step = linear_case()
    state = MemoryState(weights=(w_row,), momentum=(torch.zeros_like(w_row),), chunk_weights=(w_row,))
    _, s = miras_chunked_memory(
        model, state, keys, values, None, 1 - keep, torch.zeros_like(keep), step,
        chunk_size=keys.shape[1], output_grad=lambda pr, t: lp_grad(pr, t, p),
    )  # fmt: skip
    for i in range(keys.shape[0]):
        w0, big_k, big_v = w_row[i].T, keys[i].T, values[i].T  # W_0 (d_v, d_k); K, V (d, b)
        beta = torch.cumprod(keep[i], 0)
        e_b, b_b = step[i], beta[-1] / beta  # E_b = [eta_1..eta_b], B_b = [beta_b / beta_i]
        r = w0 @ big_k - big_v
        summed = p * ((e_b * b_b)[None, :] * torch.sign(r) * r.abs() ** (p - 1)) @ big_k.T  # Eq. 29
        want = beta[-1] * w0 - summed  # Eq. 28 at t = b
        torch.testing.assert_close(s.weights[0][i].T, want, rtol=0, atol=1e-12)


def half_l2_grad(pred, target):  # Eq. 31's convention: l = 1/2 ||W k - v||^2
    return pred - target


@pytest.mark.equation("miras", 30)
@pytest.mark.equation("miras", 32)
def test_memora_chunk_is_the_lag_token_then_eq_32_in_log_space():
    model, w_row, keys, values, keep, step = linear_case(b=5)
    log_w = w_row  # the carried log-weights L_0; M_0 = softmax(L_0)
    m0 = torch.softmax(log_w, dim=-2)
    state = MemoryState(
        weights=(m0,), momentum=(torch.zeros_like(m0),), chunk_weights=(m0,), accumulator=(log_w,)
    )
    _, s = miras_chunked_memory(
        model, state, keys, values, None, 1 - keep, torch.zeros_like(keep), step,
        output_grad=half_l2_grad, project=lambda c: torch.softmax(c, dim=-2), lag_token=True, chunk_size=5,
    )  # fmt: skip
    for i in range(keys.shape[0]):
        # column convention: the simplex of an output unit's weights is a row of W (d_v, d_k)
        big_m0, big_l0 = m0[i].T, log_w[i].T
        k, v = keys[i].T, values[i].T
        # Eq. 30: the lag token, with the gradient (Eq. 31) at M_0
        g1 = torch.outer(big_m0 @ k[:, 0] - v[:, 0], k[:, 0])
        big_m1 = torch.softmax(keep[i, 0] * torch.log(big_m0) - step[i, 0] * g1, dim=-1)
        l1 = keep[i, 0] * big_l0 - step[i, 0] * g1  # the same step in log space
        torch.testing.assert_close(torch.softmax(l1, dim=-1), big_m1, rtol=0, atol=1e-14)
        # Eq. 32 for tokens 2..b, gradients at M_1, accumulated in log space
        beta = torch.cumprod(keep[i], 0)
        weights = step[i, 1:] * beta[-1] / beta[1:]
        summed = (weights[None, :] * (big_m1 @ k[:, 1:] - v[:, 1:])) @ k[:, 1:].T
        want_l = beta[-1] / beta[0] * l1 - summed
        torch.testing.assert_close(s.accumulator[0][i].T, want_l, rtol=0, atol=1e-12)
        torch.testing.assert_close(s.weights[0][i].T, torch.softmax(want_l, dim=-1), rtol=0, atol=1e-12)
        torch.testing.assert_close(s.weights[0][i].sum(dim=0), torch.ones(3, dtype=DT), rtol=0, atol=1e-12)


@pytest.mark.equation("miras", 28)
@pytest.mark.parametrize("retention", ["lq", "softmax-lag"])
def test_checkpointed_chunks_give_the_same_outputs_states_and_gradients(retention):
    model, state, k, v, q, gates, params = make(retention=retention, seq=13, norm=True)
    leaves = [k, v, *gates, *state.accumulator]
    for leaf in leaves:
        leaf.requires_grad_(True)
    project = RETENTIONS[retention][0]

    def results(group):
        weights = tuple(project(a) for a in state.accumulator)
        start = MemoryState(weights, state.momentum, weights, accumulator=state.accumulator)
        y, s = run("chunked", model, start, k, v, q, gates, params, retention=retention, bias="lp", chunk=4,
                   checkpoint_chunks=group)  # fmt: skip
        total = (y * y).sum() + sum((w * w).sum() for w in s.weights)
        return y, s, torch.autograd.grad(total, leaves + list(model.parameters()))

    y0, s0, g0 = results(0)
    for group in (1, 2):
        y, s, g = results(group)
        torch.testing.assert_close(y, y0, rtol=0, atol=0)
        assert_states_close(s, s0)
        for a, b in zip(g, g0, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize(("group", "calls"), [(0, 0), (4, 0), (1, 4), (2, 2)])
def test_the_materialised_form_checkpoints_groups_of_chunks_only_when_asked(group, calls, checkpoint_calls):
    """13 tokens of chunk 4: 4 pieces; groups of g pieces, the first group's backward pass looking for
    hidden tensors (the others run the same code)."""
    import neural_memory.miras.chunked as chunked

    seen = checkpoint_calls(chunked)
    model, state, k, v, q, gates, params = make(retention="lq", seq=13)
    k.requires_grad_(True)
    run(
        "chunked",
        model,
        state,
        k,
        v,
        q,
        gates,
        params,
        retention="lq",
        bias="lp",
        chunk=4,
        checkpoint_chunks=group,
    )
    assert seen == [True] + [False] * (calls - 1) if calls else seen == []


# -- Moneta's rescaling retention through the dual form ----------------------------------------------------
# phi(C) = C / ||C||_q^{q-2} scales each layer matrix by one number, so the chunked memory reads through the
# Titans dual form and materialises each token's accumulator only for its norm. The expectation is the token
# loop with this file's own lq_normalise (Eq. 24 as printed), not the retention under test.


def run_rescaled(model, state, k, v, q, gates, params, *, bias, chunk, q_exp=4.0, **kw):
    from neural_memory.miras.retention import LqNormalization

    _, grad, uses_params = BIASES[bias]
    return miras_chunked_memory(
        model, state, k, v, q, *gates, chunk_size=chunk, output_grad=grad,
        bias_params=params if uses_params else None, rescaling=LqNormalization(q_exp), **kw,
    )  # fmt: skip


def make_lq(q_exp, **kw):
    model, state, k, v, q, gates, params = make(retention="lq", **kw)
    weights = tuple(lq_normalise(a, q_exp) for a in state.accumulator)
    state = MemoryState(weights, state.momentum, weights, accumulator=state.accumulator)
    return model, state, k, v, q, gates, params


def reference_lq(model, state, k, v, q, gates, params, *, bias, chunk, q_exp=4.0):
    loss, _, uses_params = BIASES[bias]
    return reference_memory(
        model, state, k, v, q, *gates, chunk_size=chunk, loss=loss,
        bias_params=params if uses_params else None, project=lambda c: lq_normalise(c, q_exp),
    )  # fmt: skip


@pytest.mark.equation("miras", 24)
@pytest.mark.equation("miras", 28)
@pytest.mark.parametrize("q_exp", [2.0, 3.0, 4.0])
@pytest.mark.parametrize("chunk", [1, 4, 16])
@pytest.mark.parametrize(("depth", "norm"), [(1, False), (2, True)])
def test_rescaled_dual_read_equals_the_token_loop(q_exp, chunk, depth, norm):
    model, state, k, v, q, gates, params = make_lq(q_exp, depth=depth, seq=13, norm=norm)
    want = reference_lq(model, state, k, v, q, gates, params, bias="lp", chunk=chunk, q_exp=q_exp)
    got = run_rescaled(model, state, k, v, q, gates, params, bias="lp", chunk=chunk, q_exp=q_exp)
    torch.testing.assert_close(got[0], want[0], **TOL)
    assert_states_close(got[1], want[1])


@pytest.mark.equation("miras", 28)
def test_rescaled_gradients_equal_reference_gradients():
    model, state, k, v, q, gates, params = make_lq(4.0, seq=9, norm=True)
    leaves = [k, v, q, *gates, *state.accumulator, *state.momentum]
    for leaf in leaves:
        leaf.requires_grad_(True)

    def grads(fn):
        weights = tuple(lq_normalise(a) for a in state.accumulator)
        start = MemoryState(weights, state.momentum, weights, accumulator=state.accumulator)
        y, s = fn(model, start, k, v, q, gates, params, bias="scaled", chunk=4)
        total = (y * torch.cos(torch.arange(y.numel(), dtype=DT)).reshape(y.shape)).sum()
        total = total + sum((w * w).sum() for w in s.weights)
        return torch.autograd.grad(total, leaves + list(model.parameters()))

    for got, want in zip(grads(run_rescaled), grads(reference_lq), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-11)


@pytest.mark.equation("miras", 24)
def test_rescaled_norms_do_not_overflow_in_float32():
    # accumulators of 1e20: |C|^3 = 1e60 overflows float32, so the norm is taken of C over a bound of its
    # entries. q = 3 makes phi(C) = C / ||C||_3 of order one, so a wrong norm shows in the outputs.
    model, state, k, v, q, gates, _ = make_lq(3.0, seq=6, norm=True)
    big = tuple(1e20 * a for a in state.accumulator)
    weights = tuple(lq_normalise(a, 3.0) for a in big)
    start = MemoryState(weights, state.momentum, weights, accumulator=big)
    want, _ = reference_lq(model, start, k, v, q, gates, None, bias="l2", chunk=4, q_exp=3.0)

    def f32(xs):
        return tuple(x.float() for x in xs)

    start32 = MemoryState(f32(weights), f32(state.momentum), f32(weights), accumulator=f32(big))
    k32, v32, q32 = k.float(), v.float(), q.float()
    model32 = model.float()
    got, _ = run_rescaled(model32, start32, k32, v32, q32, f32(gates), None, bias="l2", chunk=4, q_exp=3.0)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)


def test_rescaling_and_project_are_exclusive():
    from neural_memory.miras.retention import LqNormalization

    model, state, k, v, q, gates, _ = make_lq(4.0)
    with pytest.raises(ValueError, match="rescaling"):
        miras_chunked_memory(
            model, state, k, v, q, *gates, chunk_size=4, output_grad=associative_loss_output_grad,
            project=lq_normalise, rescaling=LqNormalization(),
        )  # fmt: skip


@pytest.mark.equation("miras", 24)
@pytest.mark.parametrize("q_exp", [1.5, 2.0, 3.0, 4.0])
def test_token_norms_backward_equals_autograd_of_the_materialised_states(q_exp):
    # the hand-written backward of ||C_t||_q against autograd of C_t built entry by entry
    from neural_memory.miras.chunked import _token_norms
    from neural_memory.miras.retention import LqNormalization

    torch.manual_seed(3)
    n, b, d_in, d_out = 2, 5, 3, 4
    beta, s = torch.rand(n, b, dtype=DT), torch.randn(n, b, dtype=DT)
    q = torch.tril(torch.randn(n, b, b, dtype=DT))
    start, momentum = torch.randn(n, d_in, d_out, dtype=DT), torch.randn(n, d_in, d_out, dtype=DT)
    a, g = torch.randn(n, b, d_in, dtype=DT), torch.randn(n, b, d_out, dtype=DT)
    leaves = [beta, s, q, start, momentum, a, g]
    for leaf in leaves:
        leaf.requires_grad_(True)
    weights = torch.randn(n, b, dtype=DT)

    coefficients = {"beta": beta, "s": s, "Q": q}
    got = _token_norms(LqNormalization(q_exp), coefficients, start, momentum, a, g)[..., 0]
    want = by_hand_norms(beta, s, q, start, momentum, a, g, q_exp)
    torch.testing.assert_close(got, want, **TOL)
    got_grads = torch.autograd.grad((got * weights).sum(), leaves)
    want_grads = torch.autograd.grad((want * weights).sum(), leaves)
    for x, y in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(x, y, **TOL)


def test_token_norms_of_an_all_zero_accumulator_are_zero_with_zero_gradient():
    from neural_memory.miras.chunked import _token_norms
    from neural_memory.miras.retention import LqNormalization

    n, b, d = 1, 3, 2
    zeros = [torch.zeros(n, b, dtype=DT, requires_grad=True) for _ in range(2)]
    q = torch.zeros(n, b, b, dtype=DT, requires_grad=True)
    start, momentum = (torch.zeros(n, d, d, dtype=DT, requires_grad=True) for _ in range(2))
    a, g = (torch.zeros(n, b, d, dtype=DT, requires_grad=True) for _ in range(2))
    coefficients = {"beta": zeros[0], "s": zeros[1], "Q": q}
    norms = _token_norms(LqNormalization(4.0), coefficients, start, momentum, a, g)
    assert torch.equal(norms, torch.zeros_like(norms))
    for grad in torch.autograd.grad(norms.sum(), [*zeros, q, start, momentum, a, g]):
        assert torch.isfinite(grad).all() and torch.equal(grad, torch.zeros_like(grad))


# -- argument checks, defaults and which form runs ---------------------------------------------------------


def test_rescaling_and_project_together_raise_the_exact_message():
    from neural_memory.miras.retention import LqNormalization

    model, state, k, v, q, gates, _ = make_lq(4.0)
    with pytest.raises(
        ValueError, match=r"^give project or rescaling, not both \(rescaling's phi is its project\)$"
    ):
        miras_chunked_memory(
            model, state, k, v, q, *gates, chunk_size=4, output_grad=associative_loss_output_grad,
            project=lq_normalise, rescaling=LqNormalization(),
        )  # fmt: skip


@pytest.mark.parametrize("kind", ["no-attribute", "rescaling-false"])
def test_rescaling_refuses_a_retention_that_does_not_rescale(kind):
    # an object without a ``rescaling`` attribute, and a retention whose phi is not one number per matrix
    import re
    import types

    from neural_memory.miras.retention import KLSoftmax

    retention = types.SimpleNamespace(project=softmax_rows) if kind == "no-attribute" else KLSoftmax()
    model, state, k, v, q, gates, _ = make_lq(4.0)
    message = f"^rescaling must be a retention with rescaling = True, got {re.escape(repr(retention))}$"
    with pytest.raises(ValueError, match=message):
        miras_chunked_memory(
            model, state, k, v, q, *gates, chunk_size=4, output_grad=associative_loss_output_grad,
            rescaling=retention,
        )  # fmt: skip


def test_dual_form_for_a_non_linear_retention_raises_the_exact_message():
    model, state, k, v, q, gates, params = make(retention="softmax")
    with pytest.raises(
        ValueError, match=r"^dual_form=True needs project=None and lag_token=False \(a linear retention\)$"
    ):
        run("chunked", model, state, k, v, q, gates, params, retention="softmax", bias="l2", chunk=4,
            dual_form=True)  # fmt: skip


def test_the_materialised_form_refuses_a_chunk_read_with_the_exact_message():
    model, state, k, v, q, gates, params = make(retention="softmax")
    with pytest.raises(
        ValueError, match=r"^the materialised form reads every token with its own state: read='token' only$"
    ):
        run("chunked", model, state, k, v, q, gates, params, retention="softmax", bias="l2", chunk=4,
            read="chunk")  # fmt: skip


@pytest.mark.parametrize("dual_form", [None, True])
def test_a_linear_retention_reads_through_the_dual_form_with_its_read(dual_form):
    # read="chunk" exists only in the dual form: the default (None) must choose it for project=None, and
    # True must accept it; the expectation is the token loop reading M_{t'}
    model, state, k, v, q, gates, params = make(norm=True, seq=13)
    want = reference_memory(model, state, k, v, q, *gates, chunk_size=4, read="chunk")
    got = run("chunked", model, state, k, v, q, gates, params, retention="identity", bias="l2", chunk=4,
              read="chunk", dual_form=dual_form)  # fmt: skip
    torch.testing.assert_close(got[0], want[0], **TOL)
    assert_states_close(got[1], want[1])
    token = reference_memory(model, state, k, v, q, *gates, chunk_size=4)[0]
    assert (got[0] - token).abs().max() > 1e-3


@pytest.mark.parametrize(("retention", "module"), [("lq", "miras"), ("identity", "titans")])
@pytest.mark.parametrize(("group", "calls"), [(None, 0), (2, 2)])
def test_checkpointing_is_off_by_default_and_reaches_the_dual_form(
    retention, module, group, calls, checkpoint_calls
):
    # 13 tokens of chunk 4: 4 pieces; the materialised form (lq) checkpoints in miras.chunked, the dual form
    # (identity) in titans.chunked
    import neural_memory.miras.chunked as miras_chunked
    import neural_memory.titans.chunked as titans_chunked

    target = miras_chunked if module == "miras" else titans_chunked
    seen = checkpoint_calls(target)
    model, state, k, v, q, gates, params = make(retention=retention, seq=13)
    k.requires_grad_(True)
    kw = {} if group is None else {"checkpoint_chunks": group}
    run("chunked", model, state, k, v, q, gates, params, retention=retention, bias="lp", chunk=4, **kw)
    assert len(seen) == calls


def test_forgetting_to_m0_with_a_non_linear_retention_raises():
    model, state, k, v, q, gates, params = make(norm=True)
    assert model.forget_to_initial
    with pytest.raises(ValueError, match=r"^forget_to_initial needs a linear retention \(project=None\)$"):
        run("chunked", model, state, k, v, q, gates, params, retention="softmax", bias="l2", chunk=4)


def test_materialised_form_back_propagates_a_float32_memory_with_float64_streams():
    # M_0 (the anchor) is cast to the streams' dtype; the float32 parameters are exact in float64, so the
    # materialised form's gradients equal autograd of the Titans dual form
    model, state, k, v, q, gates, _ = make(norm=True, seq=10)
    model = model.float()
    leaves = [k, v, q, *state.weights]
    for leaf in leaves:
        leaf.requires_grad_(True)

    assert_materialised_grads_equal_the_dual_form(model, state, k, v, q, gates, leaves)


def test_rescaling_never_projects_a_per_token_accumulator():
    # the rescaling retention is read through the dual form: phi is applied only to chunk-end states
    # (N, d_in, d_out), never to a stack of per-token accumulators (N, b, d_in, d_out)
    from neural_memory.miras.retention import LqNormalization

    dims = []

    class Recording(LqNormalization):
        def project(self, acc):
            dims.append(acc.dim())
            return super().project(acc)

    model, state, k, v, q, gates, params = make_lq(4.0, seq=9)
    want = reference_lq(model, state, k, v, q, gates, params, bias="lp", chunk=4)
    got = miras_chunked_memory(
        model, state, k, v, q, *gates, chunk_size=4, output_grad=lp_grad, rescaling=Recording(4.0)
    )
    torch.testing.assert_close(got[0], want[0], **TOL)
    assert dims and set(dims) == {3}


def test_rescaled_write_only_call_gives_the_reading_calls_state():
    model, state, k, v, q, gates, params = make_lq(4.0, seq=9)
    want = reference_lq(model, state, k, v, q, gates, params, bias="lp", chunk=4)
    got = run_rescaled(model, state, k, v, None, gates, params, bias="lp", chunk=4)
    assert got[0] is None
    assert_states_close(got[1], want[1])


def by_hand_norms(beta, s, q, start, momentum, a, g, q_exp):
    # ||C_t||_q in float64, C_t = beta_t C' + s_t S' + sum_i Q_ti a_i^T g_i built entry by entry
    b = beta.shape[1]
    states = torch.stack([
        beta[:, t, None, None] * start + s[:, t, None, None] * momentum
        + sum(q[:, t, i, None, None] * a[:, i, :, None] * g[:, i, None, :] for i in range(b))
        for t in range(b)
    ], dim=1)  # fmt: skip
    return states.abs().pow(q_exp).sum(dim=(-2, -1)).pow(1 / q_exp)


@pytest.mark.equation("miras", 24)
@pytest.mark.parametrize("term", ["start", "momentum", "products"])
def test_token_norms_are_accurate_in_float32_at_any_scale(term):
    # row 0 of order 1e20 (|C|^3 = 1e60 overflows float32), row 1 of order 1e-20 (|C|^3 = 1e-60 underflows):
    # whichever term of C_t dominates, the bound must follow that row's and token's scale
    from neural_memory.miras.chunked import _token_norms
    from neural_memory.miras.retention import LqNormalization

    gen = torch.Generator().manual_seed(5)
    n, b, d_in, d_out = 2, 4, 3, 2
    scale = torch.tensor([1e20, 1e-20], dtype=DT)
    small = {"start": 1.0, "momentum": 1.0, "products": 1.0}
    small[term] = 1e6  # the dominant term, relative to the others (which are 1e-6 of the scale)
    factor = scale * 1e-6

    def rand(*shape):
        return torch.rand(*shape, generator=gen, dtype=DT) + 0.5

    beta, s = rand(n, b), rand(n, b)
    q = torch.tril(rand(n, b, b))
    start = rand(n, d_in, d_out) * (factor * small["start"])[:, None, None]
    momentum = rand(n, d_in, d_out) * (factor * small["momentum"])[:, None, None]
    root = (factor * small["products"]).sqrt()[:, None, None]
    a, g = rand(n, b, d_in) * root, rand(n, b, d_out) * root
    want = by_hand_norms(beta, s, q, start, momentum, a, g, 3.0)
    f32 = [x.float() for x in (beta, s, q, start, momentum, a, g)]
    coefficients = {"beta": f32[0], "s": f32[1], "Q": f32[2]}
    got = _token_norms(LqNormalization(3.0), coefficients, *f32[3:])[..., 0]
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=0)
