"""Titans Appendix C, Eq. 32–33: the LMM with a linear memory as a matrix recurrence.

Convention under test: k, v are the paper's row vectors (stored as (..., d) tensors), M is (d_v, d_k) and
reads a key as the column product M kᵀ, so the bracket M kᵀk − vᵀk is ∇_M ½‖M kᵀ − vᵀ‖².
Expectations come from hand arithmetic, autograd on the ½-loss and on Eq. 12's loss, and the DeltaNet /
Gated DeltaNet formulas written out here.
"""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from neural_memory.common.delta_rule import delta_rule_step
from neural_memory.titans.linear_recurrence import linear_lmm_step

F64 = torch.float64


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _scalar(x: float) -> torch.Tensor:
    return torch.tensor([[x]], dtype=F64)


def _vec(x: float) -> torch.Tensor:
    return torch.tensor([x], dtype=F64)


@pytest.mark.equation("titans", 32)
@pytest.mark.equation("titans", 33)
def test_two_scalar_steps_by_hand():
    # step 1: M0 = 1, S0 = 0.1, k = 2, v = 1, α = 0.1, η = 0.9, θ = 0.2
    #   bracket = (1*2 - 1)*2 = 2 ; S1 = 0.9*0.1 - 0.2*2 = -0.31 ; M1 = 0.9*1 - 0.31 = 0.59
    m1, s1 = linear_lmm_step(_scalar(1.0), _scalar(0.1), _vec(2.0), _vec(1.0), 0.1, 0.9, 0.2)
    torch.testing.assert_close(s1, _scalar(-0.31), rtol=0, atol=1e-15)
    torch.testing.assert_close(m1, _scalar(0.59), rtol=0, atol=1e-15)
    # step 2: k = 1, v = 0, α = 0, η = 0.5, θ = 0.5
    #   bracket = 0.59 ; S2 = 0.5*(-0.31) - 0.5*0.59 = -0.45 ; M2 = 0.59 - 0.45 = 0.14
    m2, s2 = linear_lmm_step(m1, s1, _vec(1.0), _vec(0.0), 0.0, 0.5, 0.5)
    torch.testing.assert_close(s2, _scalar(-0.45), rtol=0, atol=1e-15)
    torch.testing.assert_close(m2, _scalar(0.14), rtol=0, atol=1e-15)


@pytest.mark.equation("titans", 33)
def test_bracket_is_the_gradient_of_the_half_loss_with_column_read():
    d_v, d_k = 3, 4
    m, s, k, v = _randn(d_v, d_k, seed=1), _randn(d_v, d_k, seed=2), _randn(d_k, seed=3), _randn(d_v, seed=4)
    w = m.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(0.5 * ((w @ k - v) ** 2).sum(), w)  # ½‖M kᵀ − vᵀ‖²
    # α = 0, η = 0, θ = 1: S_t = −bracket, M_t = M − bracket
    m_t, s_t = linear_lmm_step(m, s, k, v, 0.0, 0.0, 1.0)
    torch.testing.assert_close(s_t, -grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(m_t, m - grad, rtol=0, atol=1e-12)


@pytest.mark.equation("titans", 33)
def test_bracket_is_not_the_gradient_of_the_row_read_loss():
    d = 3
    m, k, v = _randn(d, d, seed=1), _randn(d, seed=2), _randn(d, seed=3)
    w = m.clone().requires_grad_(True)
    (row_grad,) = torch.autograd.grad(0.5 * ((k @ w - v) ** 2).sum(), w)  # ½‖k M − v‖²
    _, s_t = linear_lmm_step(m, torch.zeros(d, d, dtype=F64), k, v, 0.0, 0.0, 1.0)
    assert (s_t + row_grad).abs().max() > 1e-3


@pytest.mark.equation("titans", 32)
@pytest.mark.equation("titans", 33)
@pytest.mark.equation("titans", 34)
@given(seed=st.integers(0, 10_000), theta=st.floats(0.0, 2.0))
def test_no_momentum_no_forgetting_is_deltanet(seed, theta):
    m, s = _randn(3, 2, seed=seed), _randn(3, 2, seed=seed + 1)
    k, v = _randn(2, seed=seed + 2), _randn(3, seed=seed + 3)
    m_t, s_t = linear_lmm_step(m, s, k, v, 0.0, 0.0, theta)
    torch.testing.assert_close(m_t, delta_rule_step(m, k, v, theta), rtol=0, atol=1e-12)
    torch.testing.assert_close(s_t, m_t - m, rtol=0, atol=1e-12)


@pytest.mark.equation("titans", 32)
@pytest.mark.equation("titans", 33)
def test_forgetting_without_momentum_is_not_literally_gated_deltanet():
    m, k, v = _randn(3, 3, seed=1), _randn(3, seed=2), _randn(3, seed=3)
    alpha, theta = 0.3, 0.8
    m_t, _ = linear_lmm_step(m, torch.zeros(3, 3, dtype=F64), k, v, alpha, 0.0, theta)
    titans = (1 - alpha) * m - theta * torch.outer(m @ k - v, k)
    torch.testing.assert_close(m_t, titans, rtol=0, atol=1e-12)
    # Gated DeltaNet: α' S (I − β k kᵀ) + β v kᵀ with α' = 1 − α, β = θ
    eye = torch.eye(3, dtype=F64)
    gated_deltanet = (1 - alpha) * m @ (eye - theta * torch.outer(k, k)) + theta * torch.outer(v, k)
    difference = m_t - gated_deltanet
    # by hand: Titans − GDN = −θ M k kᵀ + (1 − α) θ M k kᵀ = −α θ (M k) kᵀ
    torch.testing.assert_close(difference, -alpha * theta * torch.outer(m @ k, k), rtol=0, atol=1e-12)
    assert difference.abs().max() > 1e-2


@pytest.mark.equation("titans", 32)
@pytest.mark.equation("titans", 33)
@given(
    seed=st.integers(0, 10_000),
    alpha=st.floats(0.0, 1.0),
    eta=st.floats(0.0, 1.0),
    theta_app_c=st.floats(0.0, 2.0),
)
def test_appendix_c_step_equals_eq13_14_with_half_theta(seed, alpha, eta, theta_app_c):
    # T-U14: Eq. 12 has no ½, so θ_Eq12 = θ_AppC / 2 gives the same step.
    d_v, d_k = 3, 2
    m, s = _randn(d_v, d_k, seed=seed), _randn(d_v, d_k, seed=seed + 1)
    k, v = _randn(d_k, seed=seed + 2), _randn(d_v, seed=seed + 3)
    w = m.clone().requires_grad_(True)
    (grad_eq12,) = torch.autograd.grad(((w @ k - v) ** 2).sum(), w)  # ∇ ‖M(k) − v‖², Eq. 12
    theta_eq12 = theta_app_c / 2
    s_expected = eta * s - theta_eq12 * grad_eq12  # Eq. 14
    m_expected = (1 - alpha) * m + s_expected  # Eq. 13
    m_t, s_t = linear_lmm_step(m, s, k, v, alpha, eta, theta_app_c)
    torch.testing.assert_close(s_t, s_expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(m_t, m_expected, rtol=0, atol=1e-12)


@pytest.mark.equation("titans", 32)
@given(seed=st.integers(0, 10_000), eta=st.floats(0.0, 1.0), theta=st.floats(0.0, 2.0))
def test_full_forgetting_keeps_only_the_momentum(seed, eta, theta):
    m, s = _randn(2, 3, seed=seed), _randn(2, 3, seed=seed + 1)
    k, v = _randn(3, seed=seed + 2), _randn(2, seed=seed + 3)
    m_t, s_t = linear_lmm_step(m, s, k, v, 1.0, eta, theta)
    assert torch.equal(m_t, s_t)


@pytest.mark.equation("titans", 32)
@pytest.mark.equation("titans", 33)
def test_per_row_gates_act_as_diagonal_matrices():
    d_v, d_k = 3, 2
    m, s = _randn(d_v, d_k, seed=1), _randn(d_v, d_k, seed=2)
    k, v = _randn(d_k, seed=3), _randn(d_v, seed=4)
    alpha = torch.tensor([0.0, 0.5, 0.9], dtype=F64)
    eta = torch.tensor([0.9, 0.1, 0.0], dtype=F64)
    theta = torch.tensor([0.3, 1.0, 2.0], dtype=F64)
    m_t, s_t = linear_lmm_step(m, s, k, v, alpha, eta, theta)
    bracket = torch.outer(m @ k - v, k)
    s_expected = torch.diag(eta) @ s - torch.diag(theta) @ bracket
    m_expected = torch.diag(1 - alpha) @ m + s_expected
    torch.testing.assert_close(s_t, s_expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(m_t, m_expected, rtol=0, atol=1e-12)


@pytest.mark.equation("titans", 32)
@pytest.mark.equation("titans", 33)
def test_batched_scalar_gates_match_single_examples():
    batch, d_v, d_k = 4, 3, 2
    m, s = _randn(batch, d_v, d_k, seed=1), _randn(batch, d_v, d_k, seed=2)
    k, v = _randn(batch, d_k, seed=3), _randn(batch, d_v, seed=4)
    alpha = torch.tensor([0.0, 0.2, 0.5, 1.0], dtype=F64)
    eta = torch.tensor([0.9, 0.5, 0.0, 0.3], dtype=F64)
    theta = torch.tensor([0.1, 0.0, 1.0, 0.7], dtype=F64)
    m_t, s_t = linear_lmm_step(m, s, k, v, alpha, eta, theta)
    for b in range(batch):
        one_m, one_s = linear_lmm_step(
            m[b], s[b], k[b], v[b], float(alpha[b]), float(eta[b]), float(theta[b])
        )
        torch.testing.assert_close(m_t[b], one_m, rtol=0, atol=1e-12)
        torch.testing.assert_close(s_t[b], one_s, rtol=0, atol=1e-12)


def test_linear_lmm_step_gradients_reach_inputs():
    m, s, k, v = _randn(2, 2, seed=1), _randn(2, 2, seed=2), _randn(2, seed=3), _randn(2, seed=4)
    theta = torch.tensor(0.5, dtype=F64, requires_grad=True)
    k = k.requires_grad_(True)
    m_t, _ = linear_lmm_step(m, s, k, v, 0.1, 0.9, theta)
    m_t.sum().backward()
    assert theta.grad is not None and k.grad is not None


def test_linear_lmm_step_rejects_bad_arguments():
    m, s, k, v = _randn(3, 2), _randn(3, 2), _randn(2), _randn(3)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        linear_lmm_step(m, s, k, v, 1.5, 0.5, 0.5)
    with pytest.raises(ValueError, match=r"eta must be in \[0, 1\]"):
        linear_lmm_step(m, s, k, v, 0.5, -0.1, 0.5)
    with pytest.raises(ValueError, match="theta must be >= 0"):
        linear_lmm_step(m, s, k, v, 0.5, 0.5, -1.0)
    with pytest.raises(ValueError, match="theta must be >= 0"):
        linear_lmm_step(m, s, k, v, 0.5, 0.5, float("nan"))
    with pytest.raises(ValueError, match=r"alpha must be a float, a tensor of shape \(\) or \(3,\)"):
        linear_lmm_step(m, s, k, v, torch.full((2,), 0.5, dtype=F64), 0.5, 0.5)
    with pytest.raises(ValueError, match="S must have the same shape as M"):
        linear_lmm_step(m, _randn(2, 3), k, v, 0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match=r"k must have shape \(\.\.\., d_k=2\)"):
        linear_lmm_step(m, s, _randn(3), v, 0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match=r"v must have shape \(\.\.\., d_v=3\)"):
        linear_lmm_step(m, s, k, _randn(2), 0.5, 0.5, 0.5)
    with pytest.raises(TypeError, match="eta must be a float or a tensor"):
        linear_lmm_step(m, s, k, v, 0.5, None, 0.5)  # type: ignore[arg-type]


def test_linear_lmm_step_errors_say_what_they_got():
    # a wrong shape is shown as the shape, a non-tensor as its type
    m, s, k, v = _randn(3, 2), _randn(3, 2), _randn(2), _randn(3)
    cases = [
        ((_randn(3), s, k, v), r"^M must be \(\.\.\., d_v, d_k\), got torch\.Size\(\[3\]\)$"),
        (([[0.0]], s, k, v), r"^M must be \(\.\.\., d_v, d_k\), got list$"),
        ((m, _randn(2, 3), k, v), r"^S must have the same shape as M \(3, 2\), got torch\.Size\(\[2, 3\]\)$"),
        ((m, "S", k, v), r"^S must have the same shape as M \(3, 2\), got str$"),
        ((m, s, _randn(3), v), r"^k must have shape \(\.\.\., d_k=2\), got torch\.Size\(\[3\]\)$"),
        ((m, s, (1.0, 2.0), v), r"^k must have shape \(\.\.\., d_k=2\), got tuple$"),
        (
            (m, s, torch.tensor(1.0, dtype=F64), v),
            r"^k must have shape \(\.\.\., d_k=2\), got torch\.Size\(\[\]\)$",
        ),
        ((m, s, k, "v"), r"^v must have shape \(\.\.\., d_v=3\), got str$"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            linear_lmm_step(*args, 0.5, 0.5, 0.5)
    with pytest.raises(TypeError, match=r"^eta must be a float or a tensor, got str$"):
        linear_lmm_step(m, s, k, v, 0.5, "0.5", 0.5)  # type: ignore[arg-type]


def test_gates_are_checked_where_they_are_and_move_to_the_memorys_device():
    """Per-row gates given on the CPU for a memory elsewhere (``meta`` standing in for CUDA) end up on
    the memory's device; their range check ran on the CPU, where the values can be read."""
    d_v, d_k = 3, 2
    m, s = torch.zeros(d_v, d_k, device="meta"), torch.zeros(d_v, d_k, device="meta")
    k, v = torch.zeros(d_k, device="meta"), torch.zeros(d_v, device="meta")
    rows = torch.tensor([0.1, 0.2, 0.3])
    m_t, s_t = linear_lmm_step(m, s, k, v, rows, rows, rows)
    assert m_t.device.type == s_t.device.type == "meta"
    m_t, s_t = linear_lmm_step(m, s, k, v, 0.1, 0.2, 0.3)
    assert m_t.device.type == s_t.device.type == "meta"
