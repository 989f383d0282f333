"""Titans Eq. 8-10, 13-14: surprise, momentum and forgetting, one step at a time, checked by hand."""

import re

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from neural_memory.titans.update import (
    check_gates,
    forgetting_update,
    momentum_memory_update,
    surprise_momentum,
    surprise_update,
)

DT = torch.float64
gate = st.floats(0.0, 1.0)


def t(*xs):
    return torch.tensor(xs, dtype=DT)


def tensors(*shape):
    """float64 tensors of the given shape with bounded elements."""
    return arrays(np.float64, shape, elements=st.floats(-4, 4)).map(torch.from_numpy)


@pytest.mark.equation("titans", 8)
def test_surprise_update_recalls_a_value_in_one_step():
    # Linear memory M(k) = k W (row convention), M_0 = 0, Eq. 12 loss: grad = 2 k^T (k W - v) = -2 k^T v,
    # so M_1 = 2 theta k^T v and k M_1 = 2 theta |k|^2 v; theta = 1 / (2 |k|^2) recalls v exactly.
    k = t(1.0, 2.0)[None]
    v = t(3.0, -1.0)[None]
    w0 = torch.zeros(1, 2, 2, dtype=DT)
    grad = 2 * k.T @ (k @ w0[0] - v)
    theta = 1 / (2 * k.pow(2).sum())
    (w1,) = surprise_update((w0,), (grad[None],), theta.reshape(1))
    torch.testing.assert_close(k @ w1[0], v, rtol=0, atol=1e-12)


@pytest.mark.equation("titans", 9)
def test_momentum_memory_update_adds_the_surprise():
    # two sequences, numbers chosen so that every sum is exact in binary:
    # [[1, -2], [0.5, 3]] + [[0.25, 1], [-0.5, -3]] = [[1.25, -1], [0, 0]]
    # [[0, 4], [-1, 2]]   + [[0.75, -4], [1, 0.5]]  = [[0.75, 0], [0, 2.5]]
    w = torch.tensor([[[1.0, -2.0], [0.5, 3.0]], [[0.0, 4.0], [-1.0, 2.0]]], dtype=DT)
    s = torch.tensor([[[0.25, 1.0], [-0.5, -3.0]], [[0.75, -4.0], [1.0, 0.5]]], dtype=DT)
    expected = torch.tensor([[[1.25, -1.0], [0.0, 0.0]], [[0.75, 0.0], [0.0, 2.5]]], dtype=DT)
    (out,) = momentum_memory_update((w,), (s,))
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.equation("titans", 9)
@pytest.mark.equation("titans", 10)
def test_eq9_two_steps_scalar_memory_by_sympy():
    # Scalar memory M(k) = w k, loss (w k - v)^2, gradient 2 k (w k - v); Eq. 10, then Eq. 9 (no forgetting).
    # w0 = 1/2, (k1, v1) = (2, 3), theta1 = 1/8: g1 = 2*2*(1 - 3) = -8, S1 = 1, M1 = 3/2;
    # (k2, v2) = (-1, 1/2), eta2 = 1/2, theta2 = 1/4: g2 = 2*(-1)*(-3/2 - 1/2) = 4, S2 = 1/2 - 1 = -1/2,
    # M2 = 3/2 - 1/2 = 1.
    w0, k1, v1, th1, k2, v2, e2, th2 = sp.symbols("w0 k1 v1 theta1 k2 v2 eta2 theta2")
    s1 = -th1 * 2 * k1 * (w0 * k1 - v1)  # S_0 = 0
    m1 = w0 + s1
    s2 = e2 * s1 - th2 * 2 * k2 * (m1 * k2 - v2)
    m2 = m1 + s2
    numbers = {w0: sp.Rational(1, 2), k1: 2, v1: 3, th1: sp.Rational(1, 8)}
    numbers |= {k2: -1, v2: sp.Rational(1, 2), e2: sp.Rational(1, 2), th2: sp.Rational(1, 4)}
    assert (m1.subs(numbers), s2.subs(numbers), m2.subs(numbers)) == (
        sp.Rational(3, 2),
        sp.Rational(-1, 2),
        1,
    )

    w, s = (torch.full((1, 1, 1), 0.5, dtype=DT),), (torch.zeros(1, 1, 1, dtype=DT),)
    got = []
    for k, v, e, th in [(2.0, 3.0, 0.0, 0.125), (-1.0, 0.5, 0.5, 0.25)]:
        grad = 2 * k * (w[0] * k - v)
        s = surprise_momentum(s, (grad,), t(e), t(th))
        w = momentum_memory_update(w, s)
        got.append(w[0].item())
    assert got == [float(m1.subs(numbers)), float(m2.subs(numbers))]


@pytest.mark.equation("titans", 9)
@pytest.mark.equation("titans", 13)
@given(w=tensors(2, 3, 3), s=tensors(2, 3, 3))
def test_forgetting_with_alpha_zero_is_eq9(w, s):
    (a,) = forgetting_update((w,), (s,), torch.zeros(2, dtype=DT))
    (b,) = momentum_memory_update((w,), (s,))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.equation("titans", 13)
@given(alpha=gate, w=tensors(1, 2, 2), s=tensors(1, 2, 2))
def test_alpha_one_erases_the_past(alpha, w, s):
    (erased,) = forgetting_update((w,), (s,), t(1.0))
    torch.testing.assert_close(erased, s, rtol=0, atol=0)
    (decayed,) = forgetting_update((w,), (torch.zeros_like(s),), t(alpha))
    torch.testing.assert_close(decayed, (1 - alpha) * w, rtol=0, atol=1e-15)


@pytest.mark.equation("titans", 10)
@pytest.mark.equation("titans", 14)
@given(g=tensors(1, 2, 2), w0=tensors(1, 2, 2))
def test_momentum_geometric_sum(g, w0):
    # Catalog Eq. 10 check (b): one gradient g at step 1, zero afterwards, alpha = 0:
    # M_t - M_0 = -theta g (1 - eta^t) / (1 - eta).
    eta, theta, steps = 0.6, 0.25, 7
    w, s = (w0,), (torch.zeros_like(w0),)
    for step in range(steps):
        grad = g if step == 0 else torch.zeros_like(g)
        s = surprise_momentum(s, (grad,), t(eta), t(theta))
        w = momentum_memory_update(w, s)
    expected = w0 - theta * g * (1 - eta**steps) / (1 - eta)
    torch.testing.assert_close(w[0], expected, rtol=0, atol=1e-13)


@pytest.mark.equation("titans", 10)
@given(s_prev=tensors(1, 2, 2), g=tensors(1, 2, 2))
def test_eta_zero_momentum_is_the_momentary_surprise(s_prev, g):
    (s,) = surprise_momentum((s_prev,), (g,), t(0.0), t(0.3))
    torch.testing.assert_close(s, -0.3 * g, rtol=0, atol=0)
    (kept,) = surprise_momentum((s_prev,), (torch.zeros_like(g),), t(1.0), t(0.3))
    torch.testing.assert_close(kept, s_prev, rtol=0, atol=0)


@pytest.mark.equation("titans", 13)
@pytest.mark.equation("titans", 14)
def test_two_steps_scalar_memory_by_hand():
    # Catalog Eq. 14 check (a): M(k) = w k, loss (w k - v)^2, all numbers written out.
    w0, k1, v1, k2, v2 = 0.5, 2.0, 1.0, -1.0, 3.0
    a1, e1, th1, a2, e2, th2 = 0.1, 0.9, 0.2, 0.3, 0.5, 0.05
    g1 = 2 * (w0 * k1 - v1) * k1  # = 0
    s1 = e1 * 0 - th1 * g1
    w1 = (1 - a1) * w0 + s1
    g2 = 2 * (w1 * k2 - v2) * k2
    s2 = e2 * s1 - th2 * g2
    w2 = (1 - a2) * w1 + s2
    w, s = (torch.full((1, 1, 1), w0, dtype=DT),), (torch.zeros(1, 1, 1, dtype=DT),)
    for k, v, a, e, th in [(k1, v1, a1, e1, th1), (k2, v2, a2, e2, th2)]:
        grad = 2 * (w[0] * k - v) * k
        s = surprise_momentum(s, (grad,), t(e), t(th))
        w = forgetting_update(w, s, t(a))
    assert w[0].item() == pytest.approx(w2, abs=1e-14)
    assert s[0].item() == pytest.approx(s2, abs=1e-14)


def test_gates_out_of_range_raise():
    ok = torch.full((2, 3), 0.5)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        check_gates(ok + 1, ok, ok)
    with pytest.raises(ValueError, match=r"eta must be in \[0, 1\]"):
        check_gates(ok, -ok, ok)
    with pytest.raises(ValueError, match="theta must be >= 0"):
        check_gates(ok, ok, -ok)
    with pytest.raises(ValueError, match="NaN"):
        check_gates(ok * float("nan"), ok, ok)
    with pytest.raises(ValueError, match="same shape"):
        check_gates(ok, ok[:, :2], ok)


def test_check_gates_accepts_the_closed_ends_of_the_ranges():
    one, zero = t(1.0, 1.0), t(0.0, 0.0)
    check_gates(one, one, zero)  # alpha = 1 forgets everything, eta = 1 keeps all momentum, theta = 0
    check_gates(zero, zero, t(1e6, 1e6))  # theta has no upper bound


@pytest.mark.parametrize(
    ("alpha", "eta", "theta", "message"),
    [
        ((1.5,), (0.5,), (0.5,), "alpha must be in [0, 1] (forget gate)"),
        ((0.5,), (1.5,), (0.5,), "eta must be in [0, 1] (surprise decay)"),
        ((0.5,), (-0.5,), (0.5,), "eta must be in [0, 1] (surprise decay)"),
        ((0.5,), (0.5,), (-0.5,), "theta must be >= 0 (surprise step size)"),
        ((float("nan"),), (0.5,), (0.5,), "alpha contains NaN or Inf"),
        ((0.5,), (float("inf"),), (0.5,), "eta contains NaN or Inf"),
        ((0.5,), (0.5,), (float("-inf"),), "theta contains NaN or Inf"),
        ((0.5,), (0.5, 0.5), (0.5,), "alpha, eta and theta must have the same shape, got (1,), (2,), (1,)"),
    ],
)
def test_check_gates_names_the_offending_gate_and_its_range(alpha, eta, theta, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        check_gates(t(*alpha), t(*eta), t(*theta))


def test_layer_tuples_of_different_lengths_are_refused():
    """One tensor per memory layer in each argument: a missing layer is an error, never a silently
    shorter memory."""
    two, one = (torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)), (torch.zeros(1, 2, 2),)
    gate = torch.full((1,), 0.5)
    calls = (
        lambda a, b: surprise_update(a, b, gate),
        lambda a, b: surprise_momentum(a, b, gate, gate),
        momentum_memory_update,
        lambda a, b: forgetting_update(a, b, gate),
    )
    for call in calls:
        for a, b in ((two, one), (one, two)):
            with pytest.raises(ValueError, match="zip"):
                call(a, b)
