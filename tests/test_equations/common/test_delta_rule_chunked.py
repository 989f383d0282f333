"""Chunk-parallel (WY / UT) DeltaNet and Gated DeltaNet against the token-by-token recurrence.

State in the column convention, ``S`` of shape ``(B, H, d_v, d_k)``; the read at ``t`` is ``o_t = S_t q_t``,
after the write at ``t``. The recurrence the expectations come from is written out in this file
(:func:`_loop`), independently of both functions under test.
"""

import inspect

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from neural_memory.common import delta_rule_chunked
from neural_memory.common.delta_rule import delta_rule_step
from neural_memory.common.delta_rule_chunked import (
    _unit_lower_inverse,
    _UnitLowerInverse,
    chunk_delta_rule,
    recurrent_delta_rule,
)

F64 = torch.float64
B, H, D_K, D_V = 2, 3, 5, 4


def _inputs(T: int, seed: int = 0, gated: bool = True):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, D_K, dtype=F64, generator=g)
    k = torch.nn.functional.normalize(torch.randn(B, H, T, D_K, dtype=F64, generator=g), dim=-1)
    v = torch.randn(B, H, T, D_V, dtype=F64, generator=g)
    beta = torch.rand(B, H, T, dtype=F64, generator=g)
    alpha = 0.5 + 0.5 * torch.rand(B, H, T, dtype=F64, generator=g) if gated else None
    state = torch.randn(B, H, D_V, D_K, dtype=F64, generator=g)
    return q, k, v, beta, alpha, state


def _loop(q, k, v, beta, alpha, state):
    """The Gated DeltaNet recurrence written out: S ← α S; S ← S − β (S k − v) kᵀ; o = S q."""
    s, outputs = state.clone(), []
    for t in range(q.shape[2]):
        if alpha is not None:
            s = alpha[:, :, t, None, None] * s
        error = torch.einsum("bhvk,bhk->bhv", s, k[:, :, t]) - v[:, :, t]
        s = s - beta[:, :, t, None, None] * torch.einsum("bhv,bhk->bhvk", error, k[:, :, t])
        outputs.append(torch.einsum("bhvk,bhk->bhv", s, q[:, :, t]))
    return torch.stack(outputs, dim=2), s


# --------------------------------------------------------------------------------------------------
# the recurrence itself
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("titans", 34)
@pytest.mark.equation("miras", 9)
@pytest.mark.parametrize("gated", [False, True])
def test_recurrent_equals_the_written_out_loop(gated):
    q, k, v, beta, alpha, state = _inputs(11, seed=1, gated=gated)
    o, final = recurrent_delta_rule(q, k, v, beta, alpha=alpha, initial_state=state)
    o_ref, final_ref = _loop(q, k, v, beta, alpha, state)
    torch.testing.assert_close(o, o_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(final, final_ref, rtol=0, atol=1e-12)


@pytest.mark.equation("titans", 34)
def test_recurrent_one_token_is_one_delta_rule_step():
    q, k, v, beta, _, state = _inputs(1, seed=2)
    o, final = recurrent_delta_rule(q, k, v, beta, initial_state=state)
    expected = delta_rule_step(state, k[:, :, 0], v[:, :, 0], beta[:, :, 0])
    torch.testing.assert_close(final, expected, rtol=0, atol=1e-14)
    torch.testing.assert_close(
        o[:, :, 0], torch.einsum("bhvk,bhk->bhv", expected, q[:, :, 0]), rtol=0, atol=1e-14
    )


# --------------------------------------------------------------------------------------------------
# chunked == recurrent
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("titans", 34)
@pytest.mark.equation("miras", 9)
@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 3, 16])
def test_chunked_equals_recurrent_outputs_and_final_state(chunk_size, gated):
    q, k, v, beta, alpha, state = _inputs(37, seed=3, gated=gated)  # 37: not a multiple of 3 or 16
    o, final = chunk_delta_rule(q, k, v, beta, alpha=alpha, chunk_size=chunk_size, initial_state=state)
    o_ref, final_ref = _loop(q, k, v, beta, alpha, state)
    torch.testing.assert_close(o, o_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(final, final_ref, rtol=0, atol=1e-10)
    o_rec, final_rec = recurrent_delta_rule(q, k, v, beta, alpha=alpha, initial_state=state)
    torch.testing.assert_close(o, o_rec, rtol=0, atol=1e-10)
    torch.testing.assert_close(final, final_rec, rtol=0, atol=1e-10)


@pytest.mark.equation("titans", 34)
@pytest.mark.equation("miras", 9)
@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 3, 16])
def test_chunked_gradients_equal_recurrent_gradients(chunk_size, gated):
    inputs = _inputs(21, seed=4, gated=gated)
    g = torch.Generator().manual_seed(5)
    o_cot = torch.randn(B, H, 21, D_V, dtype=F64, generator=g)
    s_cot = torch.randn(B, H, D_V, D_K, dtype=F64, generator=g)

    def grads(fn, **kwargs):
        leaves = [x.clone().requires_grad_(True) if x is not None else None for x in inputs]
        q, k, v, beta, alpha, state = leaves
        o, final = fn(q, k, v, beta, alpha=alpha, initial_state=state, **kwargs)
        loss = (o * o_cot).sum() + (final * s_cot).sum()
        return torch.autograd.grad(loss, [x for x in leaves if x is not None])

    chunked = grads(chunk_delta_rule, chunk_size=chunk_size)
    recurrent = grads(recurrent_delta_rule)
    assert len(chunked) == (6 if gated else 5)  # q, k, v, beta, (alpha,) initial state
    for got, expected in zip(chunked, recurrent, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


@pytest.mark.equation("titans", 34)
@pytest.mark.equation("miras", 9)
def test_chunked_state_passed_across_a_split_equals_one_call():
    q, k, v, beta, alpha, state = _inputs(37, seed=6)
    o, final = chunk_delta_rule(q, k, v, beta, alpha=alpha, chunk_size=8, initial_state=state)
    cut = 19  # inside a chunk of either call
    o1, mid = chunk_delta_rule(
        q[:, :, :cut],
        k[:, :, :cut],
        v[:, :, :cut],
        beta[:, :, :cut],
        alpha=alpha[:, :, :cut],
        chunk_size=8,
        initial_state=state,
    )
    o2, end = chunk_delta_rule(
        q[:, :, cut:],
        k[:, :, cut:],
        v[:, :, cut:],
        beta[:, :, cut:],
        alpha=alpha[:, :, cut:],
        chunk_size=8,
        initial_state=mid,
    )
    torch.testing.assert_close(torch.cat([o1, o2], dim=2), o, rtol=0, atol=1e-10)
    torch.testing.assert_close(end, final, rtol=0, atol=1e-10)


@pytest.mark.equation("titans", 34)
@pytest.mark.equation("miras", 9)
@pytest.mark.parametrize("fn", [chunk_delta_rule, recurrent_delta_rule])
def test_alpha_identically_one_is_deltanet(fn):
    q, k, v, beta, _, state = _inputs(13, seed=7)
    ones = torch.ones(B, H, 13, dtype=F64)
    o, final = fn(q, k, v, beta, alpha=ones, chunk_size=4, initial_state=state)
    o_ref, final_ref = _loop(q, k, v, beta, None, state)
    torch.testing.assert_close(o, o_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(final, final_ref, rtol=0, atol=1e-10)


@pytest.mark.equation("titans", 34)
@pytest.mark.parametrize("fn", [chunk_delta_rule, recurrent_delta_rule])
def test_beta_zero_leaves_the_state_unchanged(fn):
    q, k, v, _, _, state = _inputs(10, seed=8)
    zeros = torch.zeros(B, H, 10, dtype=F64)
    o, final = fn(q, k, v, zeros, chunk_size=4, initial_state=state)
    torch.testing.assert_close(final, state, rtol=0, atol=1e-14)
    torch.testing.assert_close(o, torch.einsum("bhvk,bhtk->bhtv", state, q), rtol=0, atol=1e-13)


@pytest.mark.equation("titans", 34)
def test_no_initial_state_means_zeros():
    q, k, v, beta, _, _ = _inputs(9, seed=9)
    zero = torch.zeros(B, H, D_V, D_K, dtype=F64)
    for fn in (chunk_delta_rule, recurrent_delta_rule):
        o, final = fn(q, k, v, beta, chunk_size=4)
        o_ref, final_ref = _loop(q, k, v, beta, None, zero)
        torch.testing.assert_close(o, o_ref, rtol=0, atol=1e-12)
        torch.testing.assert_close(final, final_ref, rtol=0, atol=1e-12)


@pytest.mark.equation("titans", 34)
@pytest.mark.equation("miras", 9)
@given(
    data=st.data(),
    T=st.integers(1, 9),
    chunk_size=st.integers(1, 5),
)
def test_chunked_equals_the_loop_on_drawn_tensors(data, T, chunk_size):
    def draw(shape, lo, hi):
        return torch.from_numpy(data.draw(arrays(np.float64, shape, elements=st.floats(lo, hi))))

    q, k, v = draw((1, 1, T, 3), -2, 2), draw((1, 1, T, 3), -0.5, 0.5), draw((1, 1, T, 2), -2, 2)
    beta, alpha = draw((1, 1, T), 0, 1), draw((1, 1, T), 0.05, 1)
    state = draw((1, 1, 2, 3), -2, 2)
    o, final = chunk_delta_rule(q, k, v, beta, alpha=alpha, chunk_size=chunk_size, initial_state=state)
    o_ref, final_ref = _loop(q, k, v, beta, alpha, state)
    torch.testing.assert_close(o, o_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(final, final_ref, rtol=0, atol=1e-10)


# --------------------------------------------------------------------------------------------------
# the UT transform's inverse (a helper, checked against torch's triangular solve)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 5, 16, 64])
def test_unit_lower_inverse_equals_a_triangular_solve(size):
    g = torch.Generator().manual_seed(size)
    # entries of the size the delta rule makes (β kᵢᵀkⱼ with unit keys); larger ones make L ill-conditioned
    lower = (0.3 * torch.randn(3, size, size, dtype=F64, generator=g)).tril(-1) + torch.eye(size, dtype=F64)
    eye = torch.eye(size, dtype=F64).expand(3, size, size)
    expected = torch.linalg.solve_triangular(lower, eye, upper=False, unitriangular=True)
    torch.testing.assert_close(_unit_lower_inverse(lower), expected, rtol=1e-12, atol=1e-12)


def test_unit_lower_inverse_backward_passes_gradcheck():
    strict = (0.5 * torch.randn(2, 6, 6, dtype=F64, generator=torch.Generator().manual_seed(0))).tril(-1)
    assert torch.autograd.gradcheck(_UnitLowerInverse.apply, (strict.requires_grad_(True),))


# --------------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [chunk_delta_rule, recurrent_delta_rule])
def test_rejects_bad_arguments(fn):
    q, k, v, beta, alpha, state = _inputs(6, seed=10)
    with pytest.raises(ValueError, match=r"q must have shape \(B, H, T, d_k\)"):
        fn(q[0], k, v, beta)
    with pytest.raises(ValueError, match=r"k must have shape \(2, 3, 6, 5\)"):
        fn(q, k[:, :, :5], v, beta)
    with pytest.raises(ValueError, match=r"v must have shape \(2, 3, 6, d_v\)"):
        fn(q, k, v[:, :2], beta)
    with pytest.raises(ValueError, match=r"beta must have shape \(2, 3, 6\)"):
        fn(q, k, v, beta[..., :5])
    with pytest.raises(ValueError, match="beta must be finite and >= 0"):
        fn(q, k, v, -beta)
    with pytest.raises(ValueError, match=r"alpha must have shape \(2, 3, 6\)"):
        fn(q, k, v, beta, alpha=alpha[0])
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\]"):
        fn(q, k, v, beta, alpha=torch.zeros_like(alpha))
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\]"):
        fn(q, k, v, beta, alpha=alpha + 1)
    with pytest.raises(ValueError, match=r"initial_state must have shape \(2, 3, 4, 5\)"):
        fn(q, k, v, beta, initial_state=state.transpose(-1, -2))
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1"):
        fn(q, k, v, beta, chunk_size=0)
    with pytest.raises(TypeError, match="chunk_size must be an int >= 1"):
        fn(q, k, v, beta, chunk_size=2.0)


def _bad_argument_cases():
    q, k, v, beta, alpha, state = _inputs(6, seed=10)
    ok = {"q": q, "k": k, "v": v, "beta": beta, "alpha": alpha, "initial_state": state}
    cases = {
        "q-3d": ({"q": q[0]}, "q must have shape (B, H, T, d_k), got torch.Size([3, 6, 5])"),
        "q-list": ({"q": [[1.0]]}, "q must have shape (B, H, T, d_k), got list"),
        "k-shape": (
            {"k": k[:, :, :5]},
            "k must have shape (2, 3, 6, 5) (as q), got torch.Size([2, 3, 5, 5])",
        ),
        "k-list": ({"k": [1.0]}, "k must have shape (2, 3, 6, 5) (as q), got None"),
        "v-shape": ({"v": v[:, :2]}, "v must have shape (2, 3, 6, d_v), got torch.Size([2, 2, 6, 4])"),
        "v-list": ({"v": [1.0]}, "v must have shape (2, 3, 6, d_v), got None"),
        "beta-shape": ({"beta": beta[..., :5]}, "beta must have shape (2, 3, 6), got torch.Size([2, 3, 5])"),
        "beta-list": ({"beta": [0.5]}, "beta must have shape (2, 3, 6), got None"),
        "beta-negative": ({"beta": -beta}, "beta must be finite and >= 0"),
        "alpha-shape": ({"alpha": alpha[0]}, "alpha must have shape (2, 3, 6), got torch.Size([3, 6])"),
        "alpha-list": ({"alpha": [0.5]}, "alpha must have shape (2, 3, 6), got None"),
        "alpha-zero": ({"alpha": torch.zeros_like(alpha)}, "alpha must be in (0, 1]"),
        "state-shape": (
            {"initial_state": state.transpose(-1, -2)},
            "initial_state must have shape (2, 3, 4, 5) = (B, H, d_v, d_k), got torch.Size([2, 3, 5, 4])",
        ),
        "state-list": (
            {"initial_state": [0.0]},
            "initial_state must have shape (2, 3, 4, 5) = (B, H, d_v, d_k), got None",
        ),
    }
    return [pytest.param({**ok, **change}, message, id=name) for name, (change, message) in cases.items()]


@pytest.mark.parametrize(("arguments", "expected"), _bad_argument_cases())
@pytest.mark.parametrize("fn", [chunk_delta_rule, recurrent_delta_rule])
def test_bad_arguments_get_the_exact_message(fn, arguments, expected):
    # a tensor of the wrong shape is shown by its shape; anything else by its type name (q) or None
    a = dict(arguments)
    with pytest.raises(ValueError) as excinfo:
        fn(a.pop("q"), a.pop("k"), a.pop("v"), a.pop("beta"), **a)
    assert str(excinfo.value) == expected


def test_unit_lower_inverse_stays_on_the_device_of_its_input():
    # The meta device stands in for an accelerator: an identity built on the CPU would not add to it.
    inverse = _UnitLowerInverse.apply(torch.zeros(2, 3, 3, device="meta"))
    assert (inverse.device.type, inverse.shape) == ("meta", (2, 3, 3))


@pytest.mark.parametrize("gated", [False, True])
def test_chunked_keeps_a_low_precision_dtype(gated):
    # bfloat16 in, bfloat16 out, close to the float64 loop at bfloat16's precision (8 bits of mantissa)
    q, k, v, beta, alpha, state = _inputs(7, seed=5, gated=gated)
    low = [x.to(torch.bfloat16) if x is not None else None for x in (q, k, v, beta, alpha, state)]
    o, s = chunk_delta_rule(low[0], low[1], low[2], low[3], alpha=low[4], chunk_size=4, initial_state=low[5])
    assert (o.dtype, s.dtype) == (torch.bfloat16, torch.bfloat16)
    expected_o, expected_s = _loop(*(x.double() if x is not None else None for x in low))
    torch.testing.assert_close(o.double(), expected_o, rtol=0.05, atol=0.05)
    torch.testing.assert_close(s.double(), expected_s, rtol=0.05, atol=0.05)


@pytest.mark.equation("titans", 34)
@pytest.mark.equation("miras", 9)
@pytest.mark.parametrize("gated", [False, True])
def test_chunks_are_64_tokens_by_default(gated):
    """By default tokens 0..63 are one chunk: their outputs never see token 64, not even a NaN there."""
    q, k, v, beta, alpha, state = _inputs(65, seed=12, gated=gated)
    v[:, :, 64] = float("nan")  # inside one chunk, the UT transform's zeros times NaN reach the earlier rows
    o, _ = chunk_delta_rule(q, k, v, beta, alpha=alpha, initial_state=state)
    first = (x[:, :, :64] if x is not None else None for x in (q, k, v, beta, alpha))
    o_ref, _ = _loop(*first, state)
    torch.testing.assert_close(o[:, :, :64], o_ref, rtol=0, atol=1e-10)
    assert o[:, :, 64].isnan().all()


@pytest.mark.parametrize("gated", [False, True])
def test_chunked_builds_its_masks_on_the_device_of_its_inputs(monkeypatch, gated):
    """The causal decay mask is made on the inputs' device, not the default one (meta for an accelerator)."""
    # meta tensors hold no values, so the value checks (finite, >= 0) are stubbed: return initial_state
    monkeypatch.setattr(delta_rule_chunked, "_check_sequence", lambda *args: args[5])
    q, k, v, beta, alpha, state = (
        x.to("meta") if x is not None else None for x in _inputs(7, seed=11, gated=gated)
    )
    o, final = chunk_delta_rule(q, k, v, beta, alpha=alpha, chunk_size=4, initial_state=state)
    assert (o.device.type, o.shape) == ("meta", (B, H, 7, D_V))
    assert (final.device.type, final.shape) == ("meta", (B, H, D_V, D_K))


def test_chunk_size_defaults_to_64_in_the_shared_signature():
    """chunk_size defaults to 64; recurrent_delta_rule has chunk_delta_rule's signature (its docstring)."""
    chunked = inspect.signature(chunk_delta_rule)
    assert chunked.parameters["chunk_size"].default == 64
    assert inspect.signature(recurrent_delta_rule) == chunked
