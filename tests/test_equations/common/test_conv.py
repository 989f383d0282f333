"""The causal depthwise-separable convolution of the memory's projections (Titans §4.4), checked by hand.

The expected outputs are written with an explicit loop over time and taps from the module's own weight
tensors: ``nn.Conv1d`` cross-correlates, so on the input left-padded with ``K - 1`` zeros tap ``j`` of
output ``t`` multiplies input ``t - (K - 1 - j)``; tap ``K - 1`` is the current token.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from neural_memory.common.conv import CausalDepthwiseSeparableConv

DT = torch.float64
TOL = {"rtol": 0.0, "atol": 1e-12}


def make_conv(channels=3, kernel_size=3, seed=0):
    torch.manual_seed(seed)
    return CausalDepthwiseSeparableConv(channels, kernel_size).to(DT)


def sequences(batch=2, seq=7, channels=3):
    """Input tensors ``(batch, seq, channels)`` of bounded float64 elements."""
    return arrays(np.float64, (batch, seq, channels), elements=st.floats(-3, 3)).map(torch.from_numpy)


def depthwise_by_hand(conv, x):
    """``x (B, T, C)`` → the depthwise taps plus bias, one output row at a time."""
    k = conv.kernel_size
    weight, bias = conv.depthwise.weight[:, 0, :], conv.depthwise.bias  # (C, K), (C,)
    rows = []
    for t in range(x.shape[1]):
        acc = bias.expand(x.shape[0], -1)
        for j in range(k):
            source = t - (k - 1 - j)
            if source >= 0:  # earlier positions are the zeros of an empty cache
                acc = acc + weight[:, j] * x[:, source]
        rows.append(acc)
    return torch.stack(rows, dim=1)


def test_depthwise_taps_by_hand_on_a_unit_impulse():
    # channel c of an impulse at t = 1 shows the taps in reverse order (bias added): out[1 + m] = b + w[K-1-m]
    conv = make_conv(channels=2, kernel_size=3)
    x = torch.zeros(1, 5, 2, dtype=DT)
    x[0, 1] = torch.tensor([1.0, -2.0], dtype=DT)
    y, _ = conv(x)
    w, b = conv.depthwise.weight[:, 0, :], conv.depthwise.bias
    depthwise = b.repeat(5, 1)
    for m in range(3):
        depthwise[1 + m] = b + x[0, 1] * w[:, 2 - m]
    expected = depthwise @ conv.pointwise.weight.T + conv.pointwise.bias
    torch.testing.assert_close(y[0], expected, **TOL)


@given(x=sequences())
def test_output_is_the_depthwise_loop_then_the_pointwise_mix(x):
    conv = make_conv()
    y, _ = conv(x)
    expected = depthwise_by_hand(conv, x) @ conv.pointwise.weight.T + conv.pointwise.bias
    torch.testing.assert_close(y, expected, **TOL)


@given(x=sequences())
def test_without_the_pointwise_map_the_output_is_the_depthwise_loop(x):
    # Mamba2's convolution: depthwise taps and bias only, no channel mixing and no pointwise parameters
    torch.manual_seed(0)
    conv = CausalDepthwiseSeparableConv(3, 3, pointwise=False).to(DT)
    assert sum(p.numel() for p in conv.parameters()) == 3 * 3 + 3
    y, cache = conv(x)
    torch.testing.assert_close(y, depthwise_by_hand(conv, x), **TOL)
    torch.testing.assert_close(cache, x[:, -2:], rtol=0, atol=0)


def test_pointwise_mix_crosses_channels_and_depthwise_does_not():
    # zero the depthwise weights except channel 0's current-token tap: every output channel still moves with
    # input channel 0 (pointwise), and input channel 1 changes nothing (depthwise is per channel)
    conv = make_conv(channels=2, kernel_size=2)
    with torch.no_grad():
        conv.depthwise.weight.zero_()
        conv.depthwise.weight[0, 0, 1] = 2.0
        conv.depthwise.bias.zero_()
    x = torch.tensor([[[1.0, 5.0], [3.0, -7.0]]], dtype=DT)
    y, _ = conv(x)
    # depthwise output is (2 x_t[0], 0); pointwise: y_t = (2 x_t[0]) W_p[:, 0] + b_p
    wp, bp = conv.pointwise.weight, conv.pointwise.bias
    expected = torch.stack([2.0 * x[0, t, 0] * wp[:, 0] + bp for t in range(2)])
    torch.testing.assert_close(y[0], expected, **TOL)


@settings(max_examples=15)
@given(x=sequences(), change=sequences(), t=st.integers(0, 6))
def test_output_t_does_not_depend_on_inputs_after_t(x, change, t):
    conv = make_conv()
    changed = x.clone()
    changed[:, t + 1 :] = change[:, t + 1 :]
    torch.testing.assert_close(conv(changed)[0][:, : t + 1], conv(x)[0][:, : t + 1], rtol=0, atol=0)


def test_output_t_depends_on_the_kernel_size_minus_one_inputs_before_it():
    # positive control of causality: input 2 reaches outputs 2, 3, 4 (kernel 3) and nothing else
    conv = make_conv()
    x = torch.zeros(1, 7, 3, dtype=DT)
    bumped = x.clone()
    bumped[0, 2] = 1.0
    moved = (conv(bumped)[0] - conv(x)[0]).abs().sum(-1)[0] > 0
    assert moved.tolist() == [False, False, True, True, True, False, False]


@pytest.mark.parametrize("kernel_size", [1, 2, 4])
@settings(max_examples=10)
@given(x=sequences(seq=9), cut=st.integers(0, 9))
def test_cache_continues_a_stream_exactly(kernel_size, x, cut):
    conv = make_conv(kernel_size=kernel_size)
    whole, whole_cache = conv(x)
    first, cache = conv(x[:, :cut])
    second, end_cache = conv(x[:, cut:], cache)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, **TOL)
    torch.testing.assert_close(end_cache, whole_cache, rtol=0, atol=0)


def test_cache_is_the_last_kernel_minus_one_inputs_zero_padded():
    conv = make_conv(kernel_size=4)
    x = torch.arange(12, dtype=DT).reshape(1, 4, 3)
    assert conv.empty_cache(2, dtype=DT).shape == (2, 3, 3)
    _, cache = conv(x[:, :2])
    torch.testing.assert_close(cache[0], torch.cat([torch.zeros(1, 3, dtype=DT), x[0, :2]]), rtol=0, atol=0)
    _, cache = conv(x)
    torch.testing.assert_close(cache[0], x[0, 1:], rtol=0, atol=0)


def test_empty_input_keeps_the_cache():
    conv = make_conv()
    cache = torch.ones(1, 2, 3, dtype=DT)
    y, same = conv(torch.zeros(1, 0, 3, dtype=DT), cache)
    assert y.shape == (1, 0, 3)
    assert torch.equal(same, cache)


@pytest.mark.parametrize(
    ("channels", "kernel_size", "match"),
    [(0, 2, "channels must be >= 1"), (2, 0, "kernel_size must be >= 1")],
)
def test_bad_construction_raises(channels, kernel_size, match):
    with pytest.raises(ValueError, match=match):
        CausalDepthwiseSeparableConv(channels, kernel_size)


def test_bad_input_raises():
    with pytest.raises(ValueError, match=r"x must have shape \(batch, seq, 3\)"):
        make_conv()(torch.zeros(1, 4, 2, dtype=DT))


def test_a_single_channel_by_hand():
    # C = 1, K = 2: depthwise taps (3, 5) (previous, current), bias 1; pointwise weight 2, bias -1.
    # x = (1, 2): depthwise out_0 = 5*1 + 3*0 + 1 = 6, out_1 = 5*2 + 3*1 + 1 = 14; y = 2 out - 1 = (11, 27)
    conv = make_conv(channels=1, kernel_size=2)
    with torch.no_grad():
        conv.depthwise.weight.copy_(torch.tensor([[[3.0, 5.0]]], dtype=DT))
        conv.depthwise.bias.fill_(1.0)
        conv.pointwise.weight.fill_(2.0)
        conv.pointwise.bias.fill_(-1.0)
    y, cache = conv(torch.tensor([[[1.0], [2.0]]], dtype=DT))
    assert torch.equal(y, torch.tensor([[[11.0], [27.0]]], dtype=DT))
    assert torch.equal(cache, torch.tensor([[[2.0]]], dtype=DT))


def test_empty_cache_has_the_requested_dtype_and_device():
    conv = make_conv(kernel_size=4)
    cache = conv.empty_cache(2, device="meta", dtype=torch.bfloat16)
    assert (cache.shape, cache.dtype, cache.device.type) == ((2, 3, 3), torch.bfloat16, "meta")
    assert conv.empty_cache(1).dtype == torch.get_default_dtype()


def test_the_implicit_cache_follows_the_input_dtype():
    # bfloat16 weights and input: a float32 zero cache would promote the padded input to float32, which the
    # bfloat16 convolution refuses
    conv = make_conv(kernel_size=3).to(torch.bfloat16)
    y, cache = conv(torch.ones(2, 4, 3, dtype=torch.bfloat16))
    assert (y.dtype, cache.dtype) == (torch.bfloat16, torch.bfloat16)
    assert cache.shape == (2, 2, 3) and torch.equal(cache, torch.ones(2, 2, 3, dtype=torch.bfloat16))


def test_the_implicit_cache_follows_the_input_device():
    # The meta device stands in for an accelerator: a CPU cache would not concatenate with the input.
    conv = make_conv(kernel_size=3).to("meta")
    y, cache = conv(torch.zeros(2, 5, 3, device="meta", dtype=DT))
    assert (y.device.type, y.shape) == ("meta", (2, 5, 3))
    assert (cache.device.type, cache.shape) == ("meta", (2, 2, 3))


@pytest.mark.parametrize("kernel_size", [1, 2, 4])
def test_gradients_match_the_hand_loop(kernel_size):
    # the taps are shifted multiply-adds, not nn.Conv1d's kernel: input, tap, bias and cache gradients must
    # still be the hand loop's (float64, the loop run on the padded input so the cache gets a gradient too)
    conv = make_conv(kernel_size=kernel_size)
    x = torch.randn(2, 6, 3, dtype=DT, requires_grad=True)
    cache = torch.randn(2, kernel_size - 1, 3, dtype=DT, requires_grad=True)
    weight = torch.randn(2, 6, 3, dtype=DT)
    params = [x, cache, conv.depthwise.weight, conv.depthwise.bias]
    got = torch.autograd.grad((conv(x, cache)[0] * weight).sum(), params)
    padded = torch.cat([cache, x], dim=1)
    depthwise = depthwise_by_hand(conv, padded)[:, kernel_size - 1 :]
    hand = depthwise @ conv.pointwise.weight.T + conv.pointwise.bias
    expected = torch.autograd.grad((hand * weight).sum(), params)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, **TOL)
