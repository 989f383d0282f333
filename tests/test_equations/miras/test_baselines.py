"""The MIRAS framework baselines as layers: linear attention, DeltaNet, Gated DeltaNet (MIRAS §4, Eq. 8-9).

State in the column convention, ``S`` of shape ``(B, H, d_v, d_k)`` read as ``o_t = S_t q_t`` after the write
at ``t``. Expectations come from the token loops (``impl="reference"``) or from loops written out here over
the Titans linear-memory functions (Eq. 4-5, whose memory is the transpose, ``(d_k, d_v)``). Linear attention
with a per-token decay (``log_alpha``: MIRAS Eq. 8's gate, Mamba2's SSD) is checked against the recurrence
written out with einsum.
"""

import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from neural_memory.common.attention import linear_memory_read, linear_memory_write
from neural_memory.miras import baselines
from neural_memory.miras.baselines import (
    DeltaRuleLayer,
    DeltaRuleState,
    chunk_linear_attention,
    recurrent_linear_attention,
    start_stream,
)

F64 = torch.float64
DIM, HEADS = 8, 2
RULES = ["linear", "delta", "gated-delta"]


def _layer(rule, *, seed=0, dtype=F64, **kwargs):
    torch.manual_seed(seed)
    return DeltaRuleLayer(DIM, **{"heads": HEADS, "rule": rule, **kwargs}).to(dtype)


def _pair(rule, chunk_size):
    """The chunked layer and its token-loop twin with the same parameters."""
    chunked = _layer(rule, chunk_size=chunk_size)
    reference = copy.deepcopy(chunked)
    reference.impl = "reference"
    return chunked, reference


def _x(batch, length, seed=1, dtype=F64):
    return torch.randn(batch, length, DIM, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def _titans_loop(q, k, v, state):
    """Linear attention token by token with the Titans functions: M (d_k, d_v) = Sᵀ, M += k vᵀ, o = qᵀ M."""
    memory, outputs = state.transpose(-1, -2), []
    for t in range(q.shape[2]):
        memory = linear_memory_write(memory, k[:, :, t], v[:, :, t])
        outputs.append(linear_memory_read(memory, q[:, :, t]))
    return torch.stack(outputs, dim=2), memory.transpose(-1, -2)


def _qkv(batch, heads, length, d_k, d_v, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, length, d_k, dtype=F64, generator=g)
    k = torch.randn(batch, heads, length, d_k, dtype=F64, generator=g)
    v = torch.randn(batch, heads, length, d_v, dtype=F64, generator=g)
    state = torch.randn(batch, heads, d_v, d_k, dtype=F64, generator=g)
    return q, k, v, state


# --------------------------------------------------------------------------------------------------
# linear attention: chunked and token loop against Titans Eq. 4-5 written out
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("titans", 4)
@pytest.mark.equation("titans", 5)
@pytest.mark.parametrize("chunk_size", [1, 3, 16])
def test_linear_attention_equals_a_loop_over_the_titans_memory(chunk_size):
    q, k, v, state = _qkv(2, 3, 23, 5, 4, seed=2)  # 23: not a multiple of 3 or 16
    o_ref, final_ref = _titans_loop(q, k, v, state)
    for fn in (chunk_linear_attention, recurrent_linear_attention):
        o, final = fn(q, k, v, chunk_size=chunk_size, initial_state=state)
        torch.testing.assert_close(o, o_ref, rtol=0, atol=1e-10)
        torch.testing.assert_close(final, final_ref, rtol=0, atol=1e-10)


@pytest.mark.equation("titans", 4)
@pytest.mark.equation("titans", 5)
@given(
    data=arrays(np.float64, (4, 1, 7, 3), elements=st.floats(-2, 2)),
    state=arrays(np.float64, (1, 1, 3, 3), elements=st.floats(-2, 2)),
    chunk_size=st.integers(1, 8),
)
def test_chunked_linear_attention_is_the_titans_recurrence_for_any_inputs(data, state, chunk_size):
    q, k, v = (torch.from_numpy(a)[None] for a in data[:3])  # (1, 1, 7, 3) each
    s0 = torch.from_numpy(state)
    o, final = chunk_linear_attention(q, k, v, chunk_size=chunk_size, initial_state=s0)
    o_ref, final_ref = _titans_loop(q, k, v, s0)
    torch.testing.assert_close(o, o_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(final, final_ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("chunk_size", [1, 4, 64])
def test_chunked_linear_attention_gradients_equal_the_token_loop(chunk_size):
    inputs = _qkv(2, 2, 13, 3, 4, seed=3)
    g = torch.Generator().manual_seed(4)
    o_cot, s_cot = (
        torch.randn(2, 2, 13, 4, dtype=F64, generator=g),
        torch.randn(2, 2, 4, 3, dtype=F64, generator=g),
    )

    def grads(fn):
        q, k, v, state = (t.clone().requires_grad_(True) for t in inputs)
        o, final = fn(q, k, v, chunk_size=chunk_size, initial_state=state)
        return torch.autograd.grad((o * o_cot).sum() + (final * s_cot).sum(), [q, k, v, state])

    for got, expected in zip(grads(chunk_linear_attention), grads(recurrent_linear_attention), strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def test_linear_attention_starts_from_zeros():
    q, k, v, _ = _qkv(1, 2, 5, 3, 2, seed=5)
    o, final = chunk_linear_attention(q, k, v, chunk_size=2)
    o_ref, final_ref = _titans_loop(q, k, v, torch.zeros(1, 2, 2, 3, dtype=F64))
    torch.testing.assert_close(o, o_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(final, final_ref, rtol=0, atol=1e-12)


def test_linear_attention_bad_shapes_raise():
    q, k, v, state = _qkv(1, 2, 5, 3, 2)
    with pytest.raises(ValueError, match="k must have shape"):
        chunk_linear_attention(q, k[..., :2], v)
    with pytest.raises(ValueError, match="initial_state must have shape"):
        recurrent_linear_attention(q, k, v, initial_state=state[..., :2])
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1"):
        chunk_linear_attention(q, k, v, chunk_size=0)


# --------------------------------------------------------------------------------------------------
# linear attention with a per-token decay (MIRAS Eq. 8's gate; Mamba2's SSD): chunked and token loop
# against the recurrence written out
# --------------------------------------------------------------------------------------------------


def _log_alpha(batch, heads, length, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return -scale * torch.rand(batch, heads, length, dtype=F64, generator=g)


def _decayed_loop(q, k, v, log_alpha, state):
    """S_t = α_t S_{t-1} + v_t k_tᵀ, o_t = S_t q_t, written out with einsum (no library code)."""
    outputs = []
    for t in range(q.shape[2]):
        alpha = torch.exp(log_alpha[:, :, t])[..., None, None]
        state = alpha * state + torch.einsum("bhv,bhk->bhvk", v[:, :, t], k[:, :, t])
        outputs.append(torch.einsum("bhvk,bhk->bhv", state, q[:, :, t]))
    return torch.stack(outputs, dim=2), state


@pytest.mark.parametrize("chunk_size", [1, 3, 16, 32])
def test_decayed_linear_attention_equals_the_recurrence_written_out(chunk_size):
    q, k, v, state = _qkv(2, 3, 23, 5, 4, seed=6)  # 23: not a multiple of 3 or 16, shorter than 32
    log_alpha = _log_alpha(2, 3, 23, seed=7)
    o_ref, final_ref = _decayed_loop(q, k, v, log_alpha, state)
    for fn in (chunk_linear_attention, recurrent_linear_attention):
        o, final = fn(q, k, v, log_alpha=log_alpha, chunk_size=chunk_size, initial_state=state)
        torch.testing.assert_close(o, o_ref, rtol=0, atol=1e-10)
        torch.testing.assert_close(final, final_ref, rtol=0, atol=1e-10)


@given(
    data=arrays(np.float64, (3, 1, 1, 9, 3), elements=st.floats(-2, 2)),
    log_alpha=arrays(np.float64, (1, 1, 9), elements=st.floats(-30, 0)),
    chunk_size=st.integers(1, 10),
)
def test_chunked_decayed_linear_attention_is_the_recurrence_for_any_inputs(data, log_alpha, chunk_size):
    q, k, v = (torch.from_numpy(a) for a in data)  # (1, 1, 9, 3) each
    s0 = torch.ones(1, 1, 3, 3, dtype=F64)
    la = torch.from_numpy(log_alpha)
    o, final = chunk_linear_attention(q, k, v, log_alpha=la, chunk_size=chunk_size, initial_state=s0)
    o_ref, final_ref = _decayed_loop(q, k, v, la, s0)
    torch.testing.assert_close(o, o_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(final, final_ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("fn", [chunk_linear_attention, recurrent_linear_attention])
def test_decayed_linear_attention_ignores_a_future_score_that_overflows(fn):
    # float32: q_1 k_2 = 2^66 * 2^66 = 2^132 overflows to inf, but token 1 never reads key 2 (causal), so
    # the outputs are finite. By hand (d = 1, alpha_1 = 1, alpha_2 = 1/2):
    # o_1 = v_1 k_1 q_1 = 3; o_2 = (v_1 k_1 / 2 + v_2 k_2) q_2 = 3 * 2^-133 + 5, which rounds to 5;
    # S_2 = 3 * 2^-67 + 5 * 2^66, which rounds to 5 * 2^66.
    big = 2.0**66
    q = torch.tensor([big, 1 / big]).reshape(1, 1, 2, 1)
    k = torch.tensor([1 / big, big]).reshape(1, 1, 2, 1)
    v = torch.tensor([3.0, 5.0]).reshape(1, 1, 2, 1)
    log_alpha = torch.tensor([0.0, math.log(0.5)]).reshape(1, 1, 2)
    o, final = fn(q, k, v, log_alpha=log_alpha, chunk_size=2)
    assert torch.equal(o, torch.tensor([3.0, 5.0]).reshape(1, 1, 2, 1))
    assert torch.equal(final, torch.tensor(5 * big).reshape(1, 1, 1, 1))


@pytest.mark.parametrize("chunk_size", [1, 4, 64])
def test_chunked_decayed_linear_attention_gradients_equal_the_token_loop(chunk_size):
    inputs = (*_qkv(2, 2, 13, 3, 4, seed=8), _log_alpha(2, 2, 13, seed=9))
    g = torch.Generator().manual_seed(10)
    o_cot = torch.randn(2, 2, 13, 4, dtype=F64, generator=g)
    s_cot = torch.randn(2, 2, 4, 3, dtype=F64, generator=g)

    def grads(fn):
        q, k, v, state, log_alpha = (t.clone().requires_grad_(True) for t in inputs)
        o, final = fn(q, k, v, log_alpha=log_alpha, chunk_size=chunk_size, initial_state=state)
        loss = (o * o_cot).sum() + (final * s_cot).sum()
        return torch.autograd.grad(loss, [q, k, v, state, log_alpha])

    for got, expected in zip(grads(chunk_linear_attention), grads(recurrent_linear_attention), strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("fn", [chunk_linear_attention, recurrent_linear_attention])
def test_zero_log_decay_is_plain_linear_attention(fn):
    q, k, v, state = _qkv(1, 2, 9, 3, 2, seed=11)
    o, final = fn(q, k, v, log_alpha=torch.zeros(1, 2, 9, dtype=F64), chunk_size=4, initial_state=state)
    o_ref, final_ref = _titans_loop(q, k, v, state)
    torch.testing.assert_close(o, o_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(final, final_ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("fn", [chunk_linear_attention, recurrent_linear_attention])
@pytest.mark.parametrize(
    ("value", "match"),
    [
        (torch.full((1, 2, 5), 0.1, dtype=F64), "log_alpha must be finite and <= 0"),
        (torch.full((1, 2, 5), -math.inf, dtype=F64), "log_alpha must be finite and <= 0"),
        (torch.full((1, 2, 5), math.nan, dtype=F64), "log_alpha must be finite and <= 0"),
        (torch.zeros(1, 2, 4, dtype=F64), r"log_alpha must have shape \(1, 2, 5\)"),
    ],
    ids=["positive", "minus-inf", "nan", "shape"],
)
def test_bad_log_decay_raises(fn, value, match):
    q, k, v, _ = _qkv(1, 2, 5, 3, 2)
    with pytest.raises(ValueError, match=match):
        fn(q, k, v, log_alpha=value)


# --------------------------------------------------------------------------------------------------
# the layer: chunked == token loop (outputs, states, gradients), gates, state
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("chunk_size", [1, 3, 64])
def test_chunked_layer_equals_the_reference_layer(rule, chunk_size):
    chunked, reference = _pair(rule, chunk_size)
    x1, x2 = _x(2, 10, seed=1), _x(2, 7, seed=2)  # two calls: the second starts from a non-zero state
    cot = torch.randn(2, 7, DIM, dtype=F64, generator=torch.Generator().manual_seed(3))
    results = []
    for layer in (chunked, reference):
        x = x2.clone().requires_grad_(True)
        y1, state = layer(x1)
        y2, state = layer(x, state)
        loss = (y2 * cot).sum() + (y1**2).sum() + (state.memory**2).sum()
        grads = torch.autograd.grad(loss, [x, *layer.parameters()])
        results.append((y1, y2, state, grads))
    (y1, y2, state, grads), (y1_ref, y2_ref, state_ref, grads_ref) = results
    torch.testing.assert_close(y1, y1_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(y2, y2_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(state.memory, state_ref.memory, rtol=0, atol=1e-10)
    assert state.conv.keys() == state_ref.conv.keys() == {"q", "k", "v"}
    for name in state.conv:
        torch.testing.assert_close(state.conv[name], state_ref.conv[name], rtol=0, atol=0)
    assert len(grads) == 1 + len(list(chunked.parameters()))
    for got, expected in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("chunk_size", [1, 5, 64])
def test_gated_rule_with_alpha_one_is_the_delta_rule(chunk_size):
    gated = _layer("gated-delta", chunk_size=chunk_size)
    delta = _layer("delta", chunk_size=chunk_size, seed=7)
    with torch.no_grad():  # softplus(-1000) = 0 in float64: alpha = exp(-0) = 1 exactly, for every token
        gated.to_decay.weight.zero_()
        gated.to_decay.bias.fill_(-1000.0)
    missing = delta.load_state_dict(gated.state_dict(), strict=False)
    assert missing.missing_keys == [] and missing.unexpected_keys == ["to_decay.weight", "to_decay.bias"]
    x = _x(2, 19, seed=8)
    _, alpha = gated.gates(x)
    assert bool((alpha == 1).all())
    (y, state), (y_ref, state_ref) = gated(x), delta(x)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(state.memory, state_ref.memory, rtol=0, atol=1e-12)


def test_linear_rule_ignores_gates():
    layer = _layer("linear")
    assert layer.to_beta is None and layer.to_decay is None
    beta, alpha = layer.gates(_x(1, 4))
    assert beta is None and alpha is None


@given(x=arrays(np.float64, (2, 5, DIM), elements=st.floats(-1e3, 1e3)))
def test_gates_stay_in_range(x):
    layer = _layer("gated-delta")
    beta, alpha = layer.gates(torch.from_numpy(x))
    assert beta.shape == alpha.shape == (2, HEADS, 5)
    assert bool(((beta >= 0) & (beta <= 1)).all())
    # alpha in (0, 1]: at least exp(-MAX_DECAY), so that chunk_delta_rule can take its log
    assert bool(((alpha >= np.exp(-DeltaRuleLayer.MAX_DECAY) * (1 - 1e-12)) & (alpha <= 1)).all())


def test_decay_floor_keeps_float32_alpha_positive():
    layer = _layer("gated-delta", dtype=torch.float32)
    with torch.no_grad():
        layer.to_decay.bias.fill_(1e4)  # softplus = 1e4: exp(-1e4) would underflow to alpha = 0
    x = _x(1, 6, dtype=torch.float32)
    _, alpha = layer.gates(x)
    torch.testing.assert_close(alpha, torch.full_like(alpha, np.exp(-DeltaRuleLayer.MAX_DECAY)))
    y, _ = layer(x)
    assert bool(torch.isfinite(y).all())


def test_decay_gates_start_between_0_9_and_0_999():
    layer = _layer("gated-delta", heads=4, seed=0)
    with torch.no_grad():
        layer.to_decay.weight.zero_()
    _, alpha = layer.gates(_x(1, 1))
    a = alpha[0, :, 0]
    # the biases are initialised in float32 (then cast): float32 rounding, not 1e-12
    torch.testing.assert_close(a, torch.exp(-torch.logspace(-3, -1, 4, dtype=F64)), rtol=0, atol=1e-7)


@pytest.mark.parametrize("rule", RULES)
@given(cut=st.integers(1, 12))
def test_layer_streams_exactly_at_any_split(rule, cut):
    layer = _layer(rule, chunk_size=4)
    x = _x(2, 13, seed=9)
    whole, state = layer(x)
    first, mid = layer(x[:, :cut])
    second, end = layer(x[:, cut:], mid)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, rtol=0, atol=1e-12)
    torch.testing.assert_close(end.memory, state.memory, rtol=0, atol=1e-12)


@pytest.mark.parametrize("rule", RULES)
def test_state_is_fixed_size_detachable_and_not_mutated(rule):
    layer = _layer(rule)
    x = _x(1, 9, seed=10)
    _, state = layer(x[:, :4])
    assert isinstance(state, DeltaRuleState)
    assert state.memory.shape == (1, HEADS, DIM // HEADS, DIM // HEADS)
    before = [state.memory.clone(), *(c.clone() for c in state.conv.values())]
    y, later = layer(x[:, 4:], state)
    assert later.numel() == state.numel() == state.memory.numel() + 3 * 3 * DIM  # 3 caches of kernel - 1 rows
    for old, now in zip(before, [state.memory, *state.conv.values()], strict=True):
        assert torch.equal(old, now)  # the given state is left alone
    detached = state.detach()
    assert state.memory.requires_grad and not detached.memory.requires_grad
    assert not any(c.requires_grad for c in detached.conv.values())
    torch.testing.assert_close(layer(x[:, 4:], detached)[0], y, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"rule": "mamba"}, ValueError, "rule must be one of"),
        ({"impl": "fast"}, ValueError, "impl must be one of"),
        ({"heads": 3}, ValueError, r"dim \(8\) must be divisible by heads \(3\)"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be an int >= 1"),
        ({"heads": 2.0}, TypeError, "heads must be an int"),
        ({"conv_kernel": -1}, ValueError, "conv_kernel must be an int >= 0"),
    ],
)
def test_bad_layer_arguments_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        DeltaRuleLayer(DIM, **{"heads": HEADS, **kwargs})


def test_bad_layer_inputs_raise():
    layer = _layer("delta")
    with pytest.raises(ValueError, match=r"x must have shape \(batch, seq, 8\)"):
        layer(torch.zeros(1, 3, 5, dtype=F64))
    _, state = layer(_x(2, 3))
    with pytest.raises(ValueError, match="state is for batch 2, x has batch 1"):
        layer(_x(1, 3), state)
    with pytest.raises(TypeError, match="state must be a DeltaRuleState or None"):
        layer(_x(2, 3), {"memory": state.memory})


def test_without_convolution_the_state_has_no_caches():
    layer = _layer("delta", conv_kernel=0)
    _, state = layer(_x(1, 5))
    assert state.conv == {} and state.numel() == state.memory.numel()


# --------------------------------------------------------------------------------------------------
# exact error messages, defaults, the zero state, and which sequence function each impl runs
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("titans", 4)
@pytest.mark.equation("titans", 5)
@pytest.mark.parametrize("fn", [chunk_linear_attention, recurrent_linear_attention])
def test_linear_attention_refuses_a_query_that_is_not_a_tensor(fn):
    _, k, v, _ = _qkv(1, 2, 5, 3, 2)
    with pytest.raises(ValueError) as caught:
        fn(
            [[0.0, 1.0]], k, v
        )  # a list: refused by the shape check, not an AttributeError on .dim()/.new_ones
    assert str(caught.value) == "q must have shape (B, H, T, d_k), got list"


@pytest.mark.equation("titans", 4)
@pytest.mark.equation("titans", 5)
@pytest.mark.parametrize("fn", [chunk_linear_attention, recurrent_linear_attention])
@pytest.mark.parametrize("case", ["shape", "not-a-tensor", "positive"])
def test_bad_log_decay_messages_are_exact(fn, case):
    q, k, v, _ = _qkv(1, 2, 5, 3, 2)
    value, message = {
        "shape": (
            torch.zeros(1, 2, 4, dtype=F64),
            "log_alpha must have shape (1, 2, 5), got torch.Size([1, 2, 4])",
        ),
        "not-a-tensor": (-0.5, "log_alpha must have shape (1, 2, 5), got None"),
        "positive": (
            torch.full((1, 2, 5), 0.1, dtype=F64),
            "log_alpha must be finite and <= 0 (alpha = exp(log_alpha) in (0, 1])",
        ),
    }[case]
    with pytest.raises(ValueError) as caught:
        fn(q, k, v, log_alpha=value)
    assert str(caught.value) == message


@pytest.mark.equation("titans", 4)
@pytest.mark.equation("titans", 5)
def test_a_future_product_that_overflows_in_the_default_chunks_is_never_used():
    # Token 0's query and token 64's key are huge: their product (1e400) overflows, but no read ever uses it
    # (64 > 0 is in the future of token 0), whether the two tokens share a chunk or not.
    q, k, v = (torch.full((1, 1, 65, 1), 0.5, dtype=F64) for _ in range(3))
    q[0, 0, 0, 0] = k[0, 0, 64, 0] = 1e200
    log_alpha = torch.full((1, 1, 65), -0.1, dtype=F64)
    o, final = chunk_linear_attention(q, k, v, log_alpha=log_alpha)
    o_ref, final_ref = _decayed_loop(q, k, v, log_alpha, torch.zeros(1, 1, 1, 1, dtype=F64))
    assert o[0, 0, 0, 0].item() == 2.5e199  # S_1 = v_1 k_1 = 0.25, o_1 = 0.25 * 1e200
    torch.testing.assert_close(o, o_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final, final_ref, rtol=1e-12, atol=0)


@pytest.mark.parametrize("log_decay", [False, True])
def test_default_chunks_hold_64_tokens(log_decay):
    # The chunk size changes only the rounding: in float32 over 130 tokens the default call must be bit for
    # bit the call with chunk_size=64, and chunks of 65 (checked to round differently) must not be.
    g = torch.Generator().manual_seed(40)
    q, k, v = (torch.randn(1, 2, 130, 8, generator=g) for _ in range(3))
    la = -torch.rand(1, 2, 130, generator=g) if log_decay else None
    o, final = chunk_linear_attention(q, k, v, log_alpha=la)
    o_64, final_64 = chunk_linear_attention(q, k, v, log_alpha=la, chunk_size=64)
    o_65, _ = chunk_linear_attention(q, k, v, log_alpha=la, chunk_size=65)
    assert torch.equal(o, o_64) and torch.equal(final, final_64)
    assert not torch.equal(o, o_65)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_decayed_linear_attention_runs_on_the_inputs_device():
    q, k, v, state = (t.cuda() for t in _qkv(1, 2, 7, 3, 2, seed=12))
    log_alpha = _log_alpha(1, 2, 7, seed=13).cuda()
    o, final = chunk_linear_attention(q, k, v, log_alpha=log_alpha, chunk_size=3, initial_state=state)
    o_ref, final_ref = _decayed_loop(q, k, v, log_alpha, state)
    torch.testing.assert_close(o, o_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(final, final_ref, rtol=0, atol=1e-10)


def test_layer_defaults():
    torch.manual_seed(0)
    layer = DeltaRuleLayer(8)  # 4 heads of 2, the delta rule, chunks of 64, q/k l2-normalised, RMSNorm, gate
    assert (layer.heads, layer.head_dim, layer.rule, layer.chunk_size, layer.impl) == (
        4,
        2,
        "delta",
        64,
        "chunked",
    )
    assert isinstance(layer.out_norm, torch.nn.RMSNorm)
    assert isinstance(layer.to_gate, torch.nn.Linear)
    assert set(layer.convs) == {"q", "k", "v"} and layer.convs["q"].kernel_size == 4
    x = torch.randn(1, 5, 8, generator=torch.Generator().manual_seed(1))
    for name in "qk":
        heads, _ = layer._project(name, x, layer.init_state(1))
        torch.testing.assert_close(heads.norm(dim=-1), torch.ones(4, 5))


def test_decay_biases_are_the_inverse_softplus_of_log_spaced_steps_rounded_once():
    torch.manual_seed(0)
    layer = DeltaRuleLayer(16, heads=8, rule="gated-delta")  # float32 parameters
    # Δ_h = 10^(-3 + 2h/7), bias_h = softplus⁻¹(Δ_h) = log(e^Δ_h - 1), in float64, then rounded to float32
    expected = [math.log(math.expm1(10 ** (-3 + 2 * h / 7))) for h in range(8)]
    assert torch.equal(layer.to_decay.bias, torch.tensor(expected, dtype=F64).float())


def test_init_state_is_zero_memory_and_zero_caches():
    layer = _layer("delta")
    state = layer.init_state(3, dtype=F64)
    assert isinstance(state, DeltaRuleState)
    assert state.memory.dtype == F64
    assert torch.equal(state.memory, torch.zeros(3, HEADS, DIM // HEADS, DIM // HEADS, dtype=F64))
    assert state.conv.keys() == {"q", "k", "v"}
    for cache in state.conv.values():
        assert cache.dtype == F64  # the requested dtype, not the default float32
        assert torch.equal(cache, torch.zeros(3, 3, DIM, dtype=F64))  # kernel 4: 3 past rows
    on_meta = layer.init_state(2, device="meta", dtype=F64)
    assert on_meta.memory.device.type == "meta" and on_meta.memory.dtype == F64
    assert all(c.device.type == "meta" and c.dtype == F64 for c in on_meta.conv.values())


def test_start_stream_makes_the_zero_state_on_the_inputs_device_and_dtype():
    layer = _layer("delta", dtype=torch.float32)
    state = start_stream(layer, torch.empty(2, 5, DIM, dtype=F64, device="meta"), None, DeltaRuleState)
    assert state.memory.shape == (2, HEADS, DIM // HEADS, DIM // HEADS)
    for t in (state.memory, *state.conv.values()):
        assert t.device.type == "meta" and t.dtype == F64


def test_bad_layer_input_messages_are_exact():
    layer = _layer("delta")
    cases = [
        (torch.zeros(1, 3, 5, dtype=F64), "x must have shape (batch, seq, 8), got (1, 3, 5)"),
        (torch.zeros(3, DIM, dtype=F64), "x must have shape (batch, seq, 8), got (3, 8)"),  # right width, 2-D
        ([[0.0] * DIM], "x must have shape (batch, seq, 8), got list"),
    ]
    for x, message in cases:
        with pytest.raises(ValueError) as caught:
            layer(x)
        assert str(caught.value) == message
    _, state = layer(_x(3, 2))  # batch 3 (not HEADS = 2, so the message must show the batch dimension)
    with pytest.raises(ValueError) as caught:
        layer(_x(1, 2), state)
    assert str(caught.value) == "state is for batch 3, x has batch 1"
    with pytest.raises(TypeError) as caught:
        layer(_x(3, 2), {"memory": state.memory})
    assert str(caught.value) == "state must be a DeltaRuleState or None, got dict"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"dim": 0}, ValueError, "dim must be an int >= 1, got 0"),
        ({"dim": 8.0}, TypeError, "dim must be an int >= 1, got float"),
    ],
)
def test_bad_layer_width_messages_are_exact(kwargs, error, message):
    with pytest.raises(error) as caught:
        DeltaRuleLayer(**kwargs, heads=1)
    assert str(caught.value) == message


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("impl", ["chunked", "reference"])
def test_impl_picks_the_chunked_form_or_the_token_loop(rule, impl, monkeypatch):
    called = []

    def spy(name):
        real = getattr(baselines, name)

        def wrapper(*args, **kwargs):
            called.append(name)
            return real(*args, **kwargs)

        return wrapper

    names = [
        "chunk_linear_attention",
        "recurrent_linear_attention",
        "chunk_delta_rule",
        "recurrent_delta_rule",
    ]
    for name in names:
        monkeypatch.setattr(baselines, name, spy(name))
    layer = _layer(rule, impl=impl)
    layer(_x(1, 3))
    family = "linear_attention" if rule == "linear" else "delta_rule"
    assert called == [f"{'chunk' if impl == 'chunked' else 'recurrent'}_{family}"]
