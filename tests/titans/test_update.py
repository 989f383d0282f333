"""Titans Eq. 8-10, 13-14: surprise, momentum and forgetting, one step at a time, checked by hand."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

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
    w, s = torch.randn(2, 3, 3, dtype=DT), torch.randn(2, 3, 3, dtype=DT)
    (out,) = momentum_memory_update((w,), (s,))
    torch.testing.assert_close(out, w + s, rtol=0, atol=0)
    (same,) = momentum_memory_update((w,), (torch.zeros_like(s),))
    assert torch.equal(same, w)


@pytest.mark.equation("titans", 9)
@pytest.mark.equation("titans", 13)
def test_forgetting_with_alpha_zero_is_eq9():
    w, s = torch.randn(2, 3, 3, dtype=DT), torch.randn(2, 3, 3, dtype=DT)
    (a,) = forgetting_update((w,), (s,), torch.zeros(2, dtype=DT))
    (b,) = momentum_memory_update((w,), (s,))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.equation("titans", 13)
@given(alpha=gate)
def test_alpha_one_erases_the_past(alpha):
    w, s = torch.randn(1, 2, 2, dtype=DT), torch.randn(1, 2, 2, dtype=DT)
    (erased,) = forgetting_update((w,), (s,), t(1.0))
    torch.testing.assert_close(erased, s, rtol=0, atol=0)
    (decayed,) = forgetting_update((w,), (torch.zeros_like(s),), t(alpha))
    torch.testing.assert_close(decayed, (1 - alpha) * w, rtol=0, atol=1e-15)


@pytest.mark.equation("titans", 10)
@pytest.mark.equation("titans", 14)
def test_momentum_geometric_sum():
    # Catalog Eq. 10 check (b): one gradient g at step 1, zero afterwards, alpha = 0:
    # M_t - M_0 = -theta g (1 - eta^t) / (1 - eta).
    eta, theta, steps = 0.6, 0.25, 7
    g = torch.randn(1, 2, 2, dtype=DT)
    w0 = torch.randn(1, 2, 2, dtype=DT)
    w, s = (w0,), (torch.zeros_like(w0),)
    for step in range(steps):
        grad = g if step == 0 else torch.zeros_like(g)
        s = surprise_momentum(s, (grad,), t(eta), t(theta))
        w = momentum_memory_update(w, s)
    expected = w0 - theta * g * (1 - eta**steps) / (1 - eta)
    torch.testing.assert_close(w[0], expected, rtol=0, atol=1e-13)


@pytest.mark.equation("titans", 10)
def test_eta_zero_momentum_is_the_momentary_surprise():
    s_prev, g = torch.randn(1, 2, 2, dtype=DT), torch.randn(1, 2, 2, dtype=DT)
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
