"""The parallel associative scan of a first-order linear recurrence (Titans Eq. 18, T-U5)."""

import re

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from neural_memory.common.scan import combine, decay_matrix, linear_recurrence, linear_scan

DT = torch.float64


def loop_recurrence(a, b, h0):
    """h_t = a_t h_{t-1} + b_t, written as the plain loop it is."""
    h, out = h0, []
    for t in range(a.shape[-1]):
        h = a[..., t, None] * h + b[..., t, :]
        out.append(h)
    return torch.stack(out, dim=-2)


@pytest.mark.equation("titans", 18)
@given(
    length=st.integers(1, 40),
    seed=st.integers(0, 10_000),
    special=st.sampled_from(["random", "zeros", "ones", "mixed"]),
)
def test_scan_equals_loop(length, seed, special):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(3, length, generator=g, dtype=DT)
    if special == "zeros":
        a.zero_()
    elif special == "ones":
        a.fill_(1.0)
    elif special == "mixed":  # gates exactly at 0 and 1 in the middle of the sequence
        a[:, ::3] = 0.0
        a[:, 1::3] = 1.0
    b = torch.randn(3, length, 5, generator=g, dtype=DT)
    h0 = torch.randn(3, 5, generator=g, dtype=DT)
    torch.testing.assert_close(linear_recurrence(a, b, h0), loop_recurrence(a, b, h0), rtol=0, atol=1e-12)


@given(seed=st.integers(0, 10_000))
def test_combine_is_associative(seed):
    g = torch.Generator().manual_seed(seed)
    pairs = [
        (torch.rand(2, generator=g, dtype=DT), torch.randn(2, 3, generator=g, dtype=DT)) for _ in range(3)
    ]
    left = combine(combine(pairs[0], pairs[1]), pairs[2])
    right = combine(pairs[0], combine(pairs[1], pairs[2]))
    for x, y in zip(left, right, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-14)


@pytest.mark.equation("titans", 18)
@given(
    u=arrays(np.float64, (6, 4), elements=st.floats(-4, 4)).map(torch.from_numpy),
    s0=arrays(np.float64, (4,), elements=st.floats(-4, 4)).map(torch.from_numpy),
)
def test_constant_gates_give_the_lti_closed_form(u, s0):
    # T-U7: constant eta, theta => S_t = eta^t S_0 - theta * sum_i eta^(t-i) u_i
    eta, theta, n = 0.7, 0.3, 6
    s = linear_recurrence(torch.full((n,), eta, dtype=DT), -theta * u, s0)
    for t in range(1, n + 1):
        expected = eta**t * s0 - theta * sum(eta ** (t - i) * u[i - 1] for i in range(1, t + 1))
        torch.testing.assert_close(s[t - 1], expected, rtol=0, atol=1e-12)


def test_linear_scan_returns_cumulative_decay_and_input():
    a = torch.tensor([0.5, 0.0, 2.0], dtype=DT)
    b = torch.tensor([[1.0], [3.0], [5.0]], dtype=DT)
    decay, acc = linear_scan(a, b)
    torch.testing.assert_close(decay, torch.tensor([0.5, 0.0, 0.0], dtype=DT))
    # h1 = 1, h2 = 0*1 + 3 = 3, h3 = 2*3 + 5 = 11
    torch.testing.assert_close(acc, torch.tensor([[1.0], [3.0], [11.0]], dtype=DT))


def test_decay_matrix_by_hand():
    a = torch.tensor([0.5, 0.0, 2.0], dtype=DT)
    # R[t, j] = prod_{k=j+1}^{t} a_k for j <= t, 0 above the diagonal
    expected = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 2.0, 1.0]], dtype=DT)
    torch.testing.assert_close(decay_matrix(a), expected, rtol=0, atol=0)


def test_bad_shapes_raise():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="b"):
        linear_scan(torch.rand(2, 3), torch.rand(2, 4, 1))
    with pytest.raises(ValueError, match="initial"):
        linear_recurrence(torch.rand(2, 3), torch.rand(2, 3, 1), torch.rand(2, 5))


@pytest.mark.parametrize(
    ("a_shape", "b_shape"),
    [
        ((), (1,)),  # a without a time axis
        ((2, 3), (2, 3)),  # b without a feature axis
        ((2, 3), (2, 3, 4, 1)),  # b with one axis too many
        ((2, 3), (2, 4, 1)),  # time axes differ
    ],
)
def test_each_bad_scan_shape_raises_with_both_shapes_named(a_shape, b_shape):
    a, b = torch.zeros(a_shape, dtype=DT), torch.zeros(b_shape, dtype=DT)
    message = (
        r"^b must have shape \(\*a\.shape, F\) for a of shape \(\.\.\., T\); "
        rf"got a {re.escape(str(a_shape))}, b {re.escape(str(b_shape))}$"
    )
    with pytest.raises(ValueError, match=message):
        linear_scan(a, b)


def test_bad_initial_state_shape_names_the_expected_shape():
    a, b = torch.zeros(2, 3, dtype=DT), torch.zeros(2, 3, 4, dtype=DT)
    with pytest.raises(ValueError, match=r"^initial must have shape \(2, 4\), got \(2, 3\)$"):
        linear_recurrence(a, b, torch.zeros(2, 3, dtype=DT))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_decay_matrix_keeps_the_dtype_of_the_gates(dtype):
    # Powers of two: exact in every dtype, so only the identity's dtype can make the result differ.
    a = torch.tensor([0.5, 0.25, 2.0], dtype=dtype)
    expected = torch.tensor([[1.0, 0.0, 0.0], [0.25, 1.0, 0.0], [0.5, 2.0, 1.0]], dtype=dtype)
    torch.testing.assert_close(decay_matrix(a), expected, rtol=0, atol=0)


def test_decay_matrix_stays_on_the_device_of_the_gates():
    # The meta device stands in for an accelerator: an identity built on the CPU would not combine with it.
    out = decay_matrix(torch.ones(2, 3, device="meta"))
    assert out.device.type == "meta" and out.shape == (2, 3, 3)
