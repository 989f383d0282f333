"""NL optimizers: momentum, preconditioning, Newton–Schulz and Muon, Appendix B, M3, DGD and Appendix C.

Expectations come from torch.optim (SGD, RMSprop, Adam, Adagrad, AdamW, Muon) step for step, from
sympy, from hand-unrolled recurrences written out here, from singular value decompositions, or from
gradient descent iterated on an objective until it stops moving. float64 unless a test is about
torch.optim.Muon's float32/bfloat16 arithmetic.
"""

import copy
import math

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.optim._muon import _zeropower_via_newtonschulz

from neural_memory.nl.associative_memory import (
    DotProductObjective,
    L2RegressionObjective,
    OrthogonalityObjective,
    gd_step,
)
from neural_memory.nl.optimizers import (
    M3,
    NS_CUBIC,
    NS_QUINTIC,
    DeepMomentumGD,
    DeltaGradientDescent,
    DeltaMomentum,
    ElementwiseMomentum,
    FeatureMapMomentum,
    MatrixMomentum,
    MomentumGD,
    Muon,
    NonlinearOutputMomentum,
    dgd_appendix_c_form,
    dgd_effective_lr,
    dgd_explicit_solution,
    dgd_first_order_residual,
    dgd_normal_equations,
    dgd_step,
    generalized_momentum_step,
    newton_schulz,
    newton_schulz_step,
    preconditioned_gd_step,
    preconditioned_momentum_step,
    sherman_morrison_inverse,
)

from .helpers import F64, tensors
from .helpers import autograd as _autograd
from .helpers import param as _param
from .helpers import randn as _randn
from .helpers import run_with_grads as _run
from .helpers import run_with_grads as _run_with_grads
from .helpers import same_steps as _same_steps


def _grad_stream(shape, steps, seed, dtype=F64):
    return [[_randn(*shape, seed=seed + s, dtype=dtype)] for s in range(steps)]


def _ns_reference(g: torch.Tensor, steps: int, coefficients) -> torch.Tensor:
    """Newton–Schulz written out: X = g/‖g‖_F, then X ← aX + b(XXᵀ)X + c(XXᵀ)²X."""
    a, b, c = coefficients
    x = g / g.norm()
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + b * gram @ x + c * gram @ gram @ x
    return x


# --------------------------------------------------------------------------------------------------
# Eq. 10–11, 33 — momentum
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 11)
def test_undecayed_momentum_holds_the_sum_of_scaled_gradients():
    # Eq. 11 with a learning rate that changes every step: m^(11)_t = Σ η_s g_s; we store m = −m^(11)
    w = _param(_randn(2, 3, seed=1))
    opt = MomentumGD([w], lr=0.5, alpha=1.0)
    grads, lrs = [_randn(2, 3, seed=10 + s) for s in range(3)], [0.5, 0.25, 2.0]
    for g, lr in zip(grads, lrs, strict=True):
        opt.param_groups[0]["lr"] = lr
        w.grad = g.clone()
        opt.step()
    expected = sum(lr * g for g, lr in zip(grads, lrs, strict=True))
    torch.testing.assert_close(-opt.state[w]["momentum"], expected, rtol=0, atol=1e-14)


@pytest.mark.equation("nl", 10)
def test_weight_moves_by_minus_each_eq11_accumulator():
    # W_3 = W_0 − m_1 − m_2 − m_3, m_t = Σ_{s≤t} η g_s  →  W_3 = W_0 − η(3 g_1 + 2 g_2 + g_3)
    w0 = _randn(3, 2, seed=2)
    w = _param(w0)
    grads = [_randn(3, 2, seed=20 + s) for s in range(3)]
    _run_with_grads(MomentumGD([w], lr=0.1, alpha=1.0), [w], [[g] for g in grads])
    expected = w0 - 0.1 * (3 * grads[0] + 2 * grads[1] + grads[2])
    torch.testing.assert_close(w.detach(), expected, rtol=0, atol=1e-14)


@pytest.mark.equation("nl", 33)
@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.9, 1.0])
def test_momentum_equals_torch_sgd_step_for_step(alpha):
    w0 = _randn(3, 4, seed=3)
    ours, ref = _param(w0), _param(w0)
    grads = _grad_stream((3, 4), 6, seed=30)
    sgd = torch.optim.SGD([ref], lr=0.07, momentum=alpha, dampening=0)
    _same_steps(MomentumGD([ours], lr=0.07, alpha=alpha), sgd, [ours], [ref], grads, atol=1e-14)


@pytest.mark.equation("nl", 33)
def test_momentum_supports_a_closure_and_param_groups():
    a, b = _param(torch.ones(2, dtype=F64)), _param(torch.ones(2, dtype=F64))
    opt = MomentumGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1, alpha=0.0)

    def closure():
        opt.zero_grad()
        loss = (a**2).sum() + (b**2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == 4.0
    torch.testing.assert_close(a.detach(), torch.full((2,), 0.8, dtype=F64), rtol=0, atol=1e-15)
    torch.testing.assert_close(b.detach(), torch.zeros(2, dtype=F64), rtol=0, atol=1e-15)


@pytest.mark.equation("nl", 33)
def test_momentum_rejects_bad_hyperparameters():
    w = [_param(torch.zeros(2))]
    with pytest.raises(ValueError, match=r"lr must be a finite float >= 0"):
        MomentumGD(w, lr=-0.1)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        MomentumGD(w, alpha=1.5)


# --------------------------------------------------------------------------------------------------
# Eq. 35, 37 — generalised momentum; Eq. 38–39, 47 — preconditioning
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 35)
@pytest.mark.equation("nl", 37)
def test_generalized_momentum_with_the_dot_product_objective_is_torch_sgd_momentum():
    # a linear layer y = W x̂ on a batch; the momentum's key is x̂, its value δ = ∇_y L
    w0, x_hat, target = _randn(2, 3, seed=4), _randn(5, 3, seed=5), _randn(5, 2, seed=6)
    ref = _param(w0)
    sgd = torch.optim.SGD([ref], lr=0.1, momentum=0.8)
    w, m = w0.clone(), torch.zeros_like(w0)
    for _ in range(3):
        sgd.zero_grad()
        (0.5 * ((x_hat @ ref.T - target) ** 2).sum()).backward()
        sgd.step()
        delta = x_hat @ w.T - target  # ∇_y of the same loss, one row per sample
        w, m = generalized_momentum_step(w, m, DotProductObjective(), x_hat, delta, lr=0.1, alpha=0.8)
    torch.testing.assert_close(w, ref.detach(), rtol=0, atol=1e-13)


@pytest.mark.equation("nl", 37)
def test_generalized_momentum_with_a_regression_objective_by_hand():
    # m' = α m − η (m x̂ − v) x̂ᵀ, W' = W + m'
    w, m, x_hat, v = _randn(2, 3, seed=7), _randn(2, 3, seed=8), _randn(3, seed=9), _randn(2, seed=10)
    new_w, new_m = generalized_momentum_step(w, m, L2RegressionObjective(), x_hat[None], v[None], 0.3, 0.9)
    expected_m = 0.9 * m - 0.3 * torch.outer(m @ x_hat - v, x_hat)
    torch.testing.assert_close(new_m, expected_m, rtol=0, atol=1e-14)
    torch.testing.assert_close(new_w, w + expected_m, rtol=0, atol=1e-14)


@pytest.mark.equation("nl", 38)
def test_identity_preconditioner_is_sgd_and_a_diagonal_one_divides_the_rows():
    w, g = _randn(2, 3, seed=11), _randn(2, 3, seed=12)
    torch.testing.assert_close(preconditioned_gd_step(w, g, torch.eye(2, dtype=F64), 0.2), w - 0.2 * g)
    p = torch.diag(torch.tensor([2.0, 4.0], dtype=F64))
    expected = w - 0.2 * g / torch.tensor([[2.0], [4.0]], dtype=F64)
    torch.testing.assert_close(preconditioned_gd_step(w, g, p, 0.2), expected, rtol=0, atol=1e-15)


@pytest.mark.equation("nl", 38)
def test_rms_preconditioner_is_torch_rmsprop_first_step():
    w0, g = _randn(3, 3, seed=13), _randn(3, 3, seed=14)
    ref = _param(w0)
    ref.grad = g.clone()
    torch.optim.RMSprop([ref], lr=0.01, alpha=0.99, eps=1e-8).step()
    rms = lambda grad: grad / ((0.01 * grad**2).sqrt() + 1e-8)  # noqa: E731  v_1 = (1 − 0.99) g²
    torch.testing.assert_close(preconditioned_gd_step(w0, g, rms, 0.01), ref.detach(), rtol=0, atol=1e-14)


@pytest.mark.equation("nl", 39)
def test_newton_schulz_as_the_preconditioner_map_is_torch_muon_without_momentum():
    w0, g = _randn(3, 5, seed=15), _randn(3, 5, seed=16)
    ref = _param(w0)
    ref.grad = g.clone()
    torch.optim.Muon([ref], lr=0.05, momentum=0.0, nesterov=False, weight_decay=0.0).step()
    ns = lambda grad: newton_schulz(grad, dtype=torch.bfloat16).to(grad.dtype)  # noqa: E731
    torch.testing.assert_close(preconditioned_gd_step(w0, g, ns, 0.05), ref.detach(), rtol=0, atol=1e-15)


@pytest.mark.equation("nl", 47)
def test_preconditioned_momentum_with_identity_is_torch_sgd_momentum():
    w0 = _randn(2, 4, seed=17)
    ref = _param(w0)
    sgd = torch.optim.SGD([ref], lr=0.1, momentum=0.9)
    w, m = w0.clone(), torch.zeros_like(w0)
    for (g,) in _grad_stream((2, 4), 4, seed=170):
        ref.grad = g.clone()
        sgd.step()
        w, m = preconditioned_momentum_step(w, m, g, torch.eye(2, dtype=F64), 0.1, alpha=0.9)
    torch.testing.assert_close(w, ref.detach(), rtol=0, atol=1e-14)


@pytest.mark.equation("nl", 47)
def test_preconditioned_momentum_is_one_gd_step_on_the_eq46_objective():
    # min_m ⟨m ∇Lᵀ, P⟩ (Eq. 46): gradient P ∇L; α = 1 is the printed display
    w, m, g, p = _randn(2, 3, seed=18), _randn(2, 3, seed=19), _randn(2, 3, seed=20), _randn(2, 2, seed=21)
    expected_m = m - 0.4 * _autograd(lambda mm: (mm @ g.T * p).sum(), m)
    new_w, new_m = preconditioned_momentum_step(w, m, g, p, 0.4)
    torch.testing.assert_close(new_m, expected_m, rtol=0, atol=1e-14)
    torch.testing.assert_close(new_w, w + expected_m, rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match=r"must be \(d_out, d_out\)"):
        preconditioned_momentum_step(w, m, g, _randn(3, 3), 0.4)


# --------------------------------------------------------------------------------------------------
# Eq. 44 — Newton–Schulz
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 44)
def test_cubic_newton_schulz_step_is_one_gd_step_on_the_orthogonality_objective():
    g = _randn(4, 3, seed=22)
    by_hand = 1.5 * g - 0.5 * g @ g.T @ g
    descent = gd_step(OrthogonalityObjective(), g, g, None, 0.25)  # from O_0 = g, ζ = 1/4
    torch.testing.assert_close(newton_schulz_step(g, NS_CUBIC), by_hand, rtol=0, atol=1e-12)
    torch.testing.assert_close(descent, by_hand, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 44)
def test_eq44_bracket_is_the_gradient_of_the_anchored_objective_by_sympy():
    o, g = sp.Matrix(2, 2, sp.symbols("o0:4")), sp.Matrix(2, 2, sp.symbols("g0:4"))
    eye = sp.eye(2)
    objective = sum(e**2 for e in (o - g)) / 2 + sum(e**2 for e in (o.T * o - eye)) / 2
    gradient = sp.Matrix(2, 2, lambda i, j: sp.diff(objective, o[i, j]))
    assert sp.simplify(gradient - (o - g + 2 * o * (o.T * o - eye))) == sp.zeros(2, 2)
    first_step = (o - gradient / 4).subs(dict(zip(o, g, strict=True)))
    assert sp.simplify(first_step - (sp.Rational(3, 2) * g - g * g.T * g / 2)) == sp.zeros(2, 2)
    values = [0.5, -1.0, 0.25, 2.0]
    numeric = torch.tensor(np.array(first_step.subs(dict(zip(g, values, strict=True))), dtype=np.float64))
    got = newton_schulz_step(torch.tensor(values, dtype=F64).reshape(2, 2), NS_CUBIC)
    torch.testing.assert_close(got, numeric, rtol=0, atol=1e-14)


@pytest.mark.equation("nl", 44)
def test_enough_cubic_steps_give_the_polar_factor():
    g = _randn(6, 4, seed=23) + 2 * torch.eye(6, 4, dtype=F64)  # well conditioned
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    got = newton_schulz(g, steps=40, coefficients=NS_CUBIC, dtype=None)
    torch.testing.assert_close(got, u @ vh, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 44)
def test_iterating_the_printed_eq44_stops_at_the_anchored_minimiser_not_the_polar_factor():
    # O_{i+1} = O_i − ζ ∇L(O_i; g) with the anchor g fixed: a GD on ½‖O − g‖² + ½‖OᵀO − I‖², whose
    # minimiser is not orthogonal; Newton–Schulz re-anchors at each iterate (docs/errata.md)
    g = 0.4 * (_randn(5, 3, seed=24) + 2 * torch.eye(5, 3, dtype=F64))
    g = g / g.norm()
    o = g.clone()
    for _ in range(500):
        o = gd_step(OrthogonalityObjective(), o, g, None, 0.05)
    gap = lambda x: (x.T @ x - torch.eye(3, dtype=F64)).norm()  # noqa: E731
    assert gap(o) > 0.05
    assert gap(newton_schulz(g, steps=30, coefficients=NS_CUBIC, dtype=None)) < 1e-10


def _conditioned(seed: int, rows: int, cols: int, ratio: float) -> torch.Tensor:
    """A random matrix with singular values spread over [1, ratio] (log-uniform)."""
    u, _ = torch.linalg.qr(_randn(rows, rows, seed=seed))
    v, _ = torch.linalg.qr(_randn(cols, cols, seed=seed + 1))
    k = min(rows, cols)
    s = torch.logspace(0, np.log10(ratio), k, dtype=F64)
    return u[:, :k] @ torch.diag(s) @ v[:, :k].T


@pytest.mark.equation("nl", 44)
@given(seed=st.integers(0, 10_000), rows=st.integers(2, 6), cols=st.integers(2, 6), steps=st.integers(1, 6))
def test_newton_schulz_maps_each_singular_value_by_the_scalar_polynomial(seed, rows, cols, steps):
    g = _conditioned(seed, rows, cols, 20.0)
    u, s, vh = torch.linalg.svd(g, full_matrices=False)
    sigma = s / g.norm()
    a, b, c = NS_QUINTIC
    for _ in range(steps):
        sigma = a * sigma + b * sigma**3 + c * sigma**5
    expected = u @ torch.diag(sigma) @ vh
    got = newton_schulz(g, steps=steps, coefficients=NS_QUINTIC, dtype=None)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def _quintic_band(lowest: float) -> tuple[float, float]:
    """Range of five quintic steps over σ ∈ [lowest, 1], on a dense grid (scalar, independent of the code)."""
    s = np.geomspace(lowest, 1.0, 200_001)
    a, b, c = NS_QUINTIC
    for _ in range(5):
        s = a * s + b * s**3 + c * s**5
    return float(s.min()), float(s.max())


@pytest.mark.equation("nl", 44)
@given(seed=st.integers(0, 10_000), rows=st.integers(2, 8), cols=st.integers(2, 8))
def test_quintic_singular_values_stay_in_the_band_the_iteration_guarantees(seed, rows, cols):
    # σ_min/‖g‖_F ≥ 1/(20·√8) > 0.01 for these matrices; over [0.01, 1] five steps land in [0.68, 1.14]
    low, high = _quintic_band(0.01)
    assert 0.68 < low < 0.69 and 1.13 < high < 1.14
    s = torch.linalg.svdvals(newton_schulz(_conditioned(seed, rows, cols, 20.0), dtype=None))
    assert bool((s >= low - 1e-9).all()) and bool((s <= high + 1e-9).all())


@pytest.mark.equation("nl", 44)
def test_newton_schulz_rejects_bad_input():
    with pytest.raises(ValueError, match="ns_steps must be an int >= 1"):
        newton_schulz(_randn(2, 2), steps=0)
    with pytest.raises(ValueError, match=r"needs a matrix \(m, n\)"):
        newton_schulz(_randn(3))
    with pytest.raises(ValueError, match="ns_coefficients must be three finite floats"):
        newton_schulz_step(_randn(2, 2), (1.0, 2.0))


# --------------------------------------------------------------------------------------------------
# Eq. 42 — Muon
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 42)
@pytest.mark.parametrize("shape", [(4, 6), (6, 4), (5, 5)])
@pytest.mark.parametrize(
    "options",
    [{}, {"nesterov": False, "weight_decay": 0.0}, {"adjust_lr_fn": "match_rms_adamw", "momentum": 0.5}],
)
def test_muon_equals_torch_muon_step_for_step_in_float32(shape, options):
    w0 = _randn(*shape, seed=25, dtype=torch.float32)
    ours, ref = _param(w0), _param(w0)
    grads = _grad_stream(shape, 6, seed=250, dtype=torch.float32)
    reference = torch.optim.Muon([ref], lr=0.02, **options)
    _same_steps(Muon([ours], lr=0.02, **options), reference, [ours], [ref], grads, atol=1e-7)


@pytest.mark.equation("nl", 42)
def test_muon_is_eq42_with_unit_step():
    # m_{t+1} = α m_t − η g,  W_{t+1} = W_t + NS_5(m_{t+1}); Newton–Schulz normalises, so η only signs
    w0, alpha, eta = _randn(4, 4, seed=26), 0.8, 0.3
    p = _param(w0)
    opt = Muon([p], lr=1.0, momentum=alpha, nesterov=False, weight_decay=0.0, ns_dtype=None)
    w, m = w0.clone(), torch.zeros_like(w0)
    for (g,) in _grad_stream((4, 4), 4, seed=260):
        m = alpha * m - eta * g
        w = w + _ns_reference(m, 5, NS_QUINTIC)
        p.grad = g.clone()
        opt.step()
    torch.testing.assert_close(p.detach(), w, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 42)
def test_muon_rejects_bad_hyperparameters_and_non_matrices():
    w = [_param(torch.zeros(2, 2))]
    for kwargs, message in [
        ({"lr": -1.0}, "lr must be a finite float >= 0"),
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
        ({"ns_steps": 0}, "ns_steps must be an int >= 1"),
        ({"eps": 0.0}, "eps must be a finite float > 0"),
        ({"adjust_lr_fn": "bigger"}, "adjust_lr_fn must be"),
    ]:
        with pytest.raises(ValueError, match=message):
            Muon(w, **kwargs)
    with pytest.raises(ValueError, match="Muon needs 2-D parameters"):
        Muon([_param(torch.zeros(3))])


# --------------------------------------------------------------------------------------------------
# Appendix B, Eq. 102–105 — element-wise optimal momentum
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 102)
def test_elementwise_accumulators_follow_eq102():
    w = _param(_randn(2, 3, seed=27))
    opt = ElementwiseMomentum([w], beta1=0.5, beta2=0.25)
    grads = _grad_stream((2, 3), 3, seed=270)
    _run_with_grads(opt, [w], grads)
    total, squares = sum(g for (g,) in grads), sum(g**2 for (g,) in grads)
    torch.testing.assert_close(opt.state[w]["m_tilde"], 0.5 * total, rtol=0, atol=1e-14)
    torch.testing.assert_close(opt.state[w]["h"], 0.25 * squares, rtol=0, atol=1e-14)


@pytest.mark.equation("nl", 103)
def test_weight_step_with_the_ridge_optimal_momentum_by_hand():
    # one step, β = 1, P = H = g², λ: m* = g² · g / (g² + λ), W_1 = W_0 − η m*
    w0, g = _randn(3, 2, seed=28), _randn(3, 2, seed=29)
    w = _param(w0)
    _run_with_grads(ElementwiseMomentum([w], lr=0.1, preconditioner="momentum", lam=0.5), [w], [[g]])
    torch.testing.assert_close(w.detach(), w0 - 0.1 * g**3 / (g**2 + 0.5), rtol=0, atol=1e-14)


@pytest.mark.equation("nl", 104)
@pytest.mark.parametrize("decay1", [1.0, 0.9])
def test_p_equal_sum_of_squares_is_torch_sgd_momentum_with_lr_over_beta2(decay1):
    # η/β₂, not the printed ηβ₂: with β₂ = 0.5 the two differ by a factor 4
    w0 = _randn(3, 3, seed=30)
    ours, ref = _param(w0), _param(w0)
    opt = ElementwiseMomentum([ours], lr=0.05, beta2=0.5, preconditioner="momentum", decay1=decay1)
    sgd = torch.optim.SGD([ref], lr=0.05 / 0.5, momentum=decay1, dampening=0)
    _same_steps(opt, sgd, [ours], [ref], _grad_stream((3, 3), 5, seed=300), atol=1e-13)


@pytest.mark.equation("nl", 105)
def test_sum_form_adam_two_steps_by_hand():
    # W_2 = W_1 − (η/√β₂) β₁(g₁ + g₂) / (√(β₂(g₁² + g₂²)) + ε)
    w0 = _randn(2, 2, seed=31)
    w = _param(w0)
    (g1,), (g2,) = grads = _grad_stream((2, 2), 2, seed=310)
    _run_with_grads(ElementwiseMomentum([w], lr=0.1, beta1=0.5, beta2=0.25, eps=1e-3), [w], grads)
    step = lambda m, h: 0.1 / 0.5 * 0.5 * m / ((0.25 * h).sqrt() + 1e-3)  # noqa: E731
    expected = w0 - step(g1, g1**2) - step(g1 + g2, g1**2 + g2**2)
    torch.testing.assert_close(w.detach(), expected, rtol=0, atol=1e-14)


@pytest.mark.equation("nl", 105)
def test_adam_preconditioner_with_emas_and_bias_correction_is_torch_adam():
    w0 = _randn(3, 4, seed=32)
    ours, ref = _param(w0), _param(w0)
    b1, b2, lr = 0.9, 0.99, 0.01
    opt = ElementwiseMomentum(
        [ours],
        lr=lr * (1 - b2) ** 0.5,
        beta1=1 - b1,
        beta2=1 - b2,
        decay1=b1,
        decay2=b2,
        bias_correction=True,
    )
    adam = torch.optim.Adam([ref], lr=lr, betas=(b1, b2), eps=1e-8)
    _same_steps(opt, adam, [ours], [ref], _grad_stream((3, 4), 6, seed=320), atol=1e-13)


@pytest.mark.equation("nl", 105)
def test_adam_preconditioner_without_momentum_is_torch_adagrad():
    w0 = _randn(4, 2, seed=33)
    ours, ref = _param(w0), _param(w0)
    opt = ElementwiseMomentum([ours], lr=0.1, decay1=0.0, eps=1e-10)
    adagrad = torch.optim.Adagrad([ref], lr=0.1, eps=1e-10)
    _same_steps(opt, adagrad, [ours], [ref], _grad_stream((4, 2), 6, seed=330), atol=1e-14)


@pytest.mark.equation("nl", 105)
def test_elementwise_momentum_rejects_bad_hyperparameters():
    w = [_param(torch.zeros(2))]
    for kwargs, message in [
        ({"lr": -1.0}, "lr must be a finite float >= 0"),
        ({"beta1": 0.0}, r"beta1 must be in \(0, 1\]"),
        ({"beta2": 1.5}, r"beta2 must be in \(0, 1\]"),
        ({"decay1": 1.2}, r"decay1 must be in \[0, 1\]"),
        ({"bias_correction": True}, "bias_correction needs decay1 and decay2 in"),
        ({"preconditioner": "shampoo"}, "preconditioner must be 'adam' or 'momentum'"),
        ({"lam": 0.1}, "lam must be 0 with preconditioner='adam'"),
        ({"eps": 0.0}, "eps must be a finite float > 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            ElementwiseMomentum(w, **kwargs)


# --------------------------------------------------------------------------------------------------
# Appendix B, Eq. 109–111 — matrix momentum (full-matrix AdaGrad with momentum)
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 109)
@pytest.mark.equation("nl", 110)
def test_matrix_accumulators_follow_eq109_and_eq110():
    w = _param(_randn(3, 2, seed=34))
    opt = MatrixMomentum([w], beta1=0.5, beta2=0.25)
    grads = _grad_stream((3, 2), 4, seed=340)
    _run_with_grads(opt, [w], grads)
    stacked = torch.cat([g for (g,) in grads], dim=1)  # (3, 8): Σ g gᵀ = stacked stackedᵀ
    torch.testing.assert_close(opt.state[w]["m_tilde"], 0.5 * sum(g for (g,) in grads), rtol=0, atol=1e-14)
    torch.testing.assert_close(opt.state[w]["h"], 0.25 * stacked @ stacked.T, rtol=0, atol=1e-13)


def _inverse_root_by_svd(h: torch.Tensor, eps: float) -> torch.Tensor:
    u, s, _ = torch.linalg.svd(h)  # h symmetric PSD: h = U diag(s) Uᵀ
    return u @ torch.diag(1 / (s.sqrt() + eps)) @ u.T


@pytest.mark.equation("nl", 111)
def test_matrix_momentum_is_full_matrix_adagrad_with_momentum():
    w0 = _randn(4, seed=35)
    w = _param(w0)
    grads = _grad_stream((4,), 5, seed=350)
    _run_with_grads(MatrixMomentum([w], lr=0.1, beta1=0.5, beta2=0.25, eps=1e-6), [w], grads)
    expected, m, h = w0.clone(), torch.zeros(4, dtype=F64), torch.zeros(4, 4, dtype=F64)
    for (g,) in grads:
        m, h = m + 0.5 * g, h + 0.25 * torch.outer(g, g)
        expected = expected - 0.1 / 0.25**0.5 * _inverse_root_by_svd(h, 1e-6) @ m
    torch.testing.assert_close(w.detach(), expected, rtol=0, atol=1e-10)


@pytest.mark.equation("nl", 111)
def test_matrix_momentum_with_a_diagonal_h_and_no_momentum_is_torch_adagrad():
    # one coordinate per gradient: Σ g gᵀ stays diagonal, so the matrix form is element-wise AdaGrad
    w0 = _randn(3, seed=36)
    ours, ref = _param(w0), _param(w0)
    scale = torch.tensor([2.0, -0.5, 1.5], dtype=F64)
    grads = [
        [torch.zeros(3, dtype=F64).index_fill(0, torch.tensor([s % 3]), scale[s % 3] * (s + 1))]
        for s in range(6)
    ]
    opt = MatrixMomentum([ours], lr=0.1, decay1=0.0, eps=1e-10)
    _same_steps(opt, torch.optim.Adagrad([ref], lr=0.1, eps=1e-10), [ours], [ref], grads, atol=1e-14)


@pytest.mark.equation("nl", 111)
def test_matrix_momentum_rejects_bad_hyperparameters():
    for kwargs, message in [
        ({"lr": -1.0}, "lr must be"),
        ({"beta2": 0.0}, r"beta2 must be in \(0, 1\]"),
        ({"decay2": -0.1}, r"decay2 must be in \[0, 1\]"),
    ]:
        with pytest.raises(ValueError, match=message):
            MatrixMomentum([_param(torch.zeros(2))], **kwargs)


# --------------------------------------------------------------------------------------------------
# Eq. 75, Algorithm 1 — M3
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 75)
@pytest.mark.parametrize(("dtype", "atol"), [(F64, 1e-15), (torch.float32, 1e-7)])
def test_m3_with_the_slow_level_off_and_one_ema_momentum_is_torch_muon(dtype, atol):
    # α = 0 (no slow level), β₂ = 0 and ε = 1 (V ≡ 0, denominator 1), M1 an EMA with weight 1 − μ
    w0 = _randn(4, 6, seed=37, dtype=dtype)
    ours, ref = _param(w0), _param(w0)
    m3 = M3(
        [ours],
        lr=0.02,
        beta1=0.05,
        beta2=0.0,
        alpha=0.0,
        eps=1.0,
        decays=(0.95, 1.0, 1.0),
        ns_dtype=torch.bfloat16,
    )
    muon = torch.optim.Muon([ref], lr=0.02, momentum=0.95, nesterov=False, weight_decay=0.0)
    _same_steps(m3, muon, [ours], [ref], _grad_stream((4, 6), 8, seed=370, dtype=dtype), atol=atol)


@pytest.mark.equation("nl", 75)
def test_m3_without_orthogonalisation_at_alpha_zero_is_the_sum_form_adam_of_eq105():
    w0 = _randn(3, 4, seed=38)
    ours, other = _param(w0), _param(w0)
    grads = _grad_stream((3, 4), 6, seed=380)
    m3 = M3([ours], lr=0.1, beta1=0.5, beta2=0.25, alpha=0.0, eps=1e-3, orthogonalize=False)
    # Eq. 105's η/√β₂ against Algorithm 1's η: the same step with η_105 = η √β₂
    eq105 = ElementwiseMomentum([other], lr=0.1 * 0.25**0.5, beta1=0.5, beta2=0.25, eps=1e-3)
    by_hand, m, v = w0.clone(), torch.zeros_like(w0), torch.zeros_like(w0)
    for (g,), after in zip(grads, _run_with_grads(m3, [ours], grads), strict=True):
        m, v = m + 0.5 * g, v + 0.25 * g**2
        by_hand = by_hand - 0.1 * m / (v.sqrt() + 1e-3)
        torch.testing.assert_close(after[0], by_hand, rtol=0, atol=1e-13)
    _run_with_grads(eq105, [other], grads)
    torch.testing.assert_close(other.detach(), by_hand, rtol=0, atol=1e-13)


@pytest.mark.equation("nl", 75)
def test_m3_step_by_hand_with_both_levels():
    # K = 2: steps 1–2 use O2 = 0; after step 2, M2 = β₃(g₁ + g₂); step 3 uses O2 = NS(M2)
    w0 = _randn(3, 5, seed=39)
    w = _param(w0)
    grads = _grad_stream((3, 5), 3, seed=390)
    opt = M3([w], lr=0.05, beta1=0.9, beta2=0.5, beta3=0.7, alpha=0.6, eps=1e-2, slow_period=2)
    history = _run_with_grads(opt, [w], grads)
    expected, m1, v, o2 = w0.clone(), torch.zeros_like(w0), torch.zeros_like(w0), torch.zeros_like(w0)
    for t, (g,) in enumerate(grads, start=1):
        m1, v = m1 + 0.9 * g, v + 0.5 * g**2
        expected = expected - 0.05 * (_ns_reference(m1, 5, NS_QUINTIC) + 0.6 * o2) / (v.sqrt() + 1e-2)
        torch.testing.assert_close(history[t - 1][0], expected, rtol=0, atol=1e-12)
        if t == 2:
            o2 = _ns_reference(0.7 * (grads[0][0] + grads[1][0]), 5, NS_QUINTIC)


@pytest.mark.equation("nl", 75)
def test_m3_slow_momentum_changes_only_on_multiples_of_the_period():
    w = _param(_randn(4, 3, seed=40))
    opt = M3([w], slow_period=3, beta3=0.5, decays=(1.0, 1.0, 0.0))  # d3 = 0: M2 is the last block's sum
    grads = _grad_stream((4, 3), 10, seed=400)
    previous = torch.zeros(4, 3, dtype=F64)
    for t, (g,) in enumerate(grads, start=1):
        _run_with_grads(opt, [w], [[g]])
        changed = not torch.equal(opt.state[w]["m2"], previous)
        assert changed == (t % 3 == 0), t
        if changed:  # exactly the 3 gradients since the last update (Eq. 75's bounds hold 4)
            block = sum(gg for (gg,) in grads[t - 3 : t])
            torch.testing.assert_close(opt.state[w]["m2"], 0.5 * block, rtol=0, atol=1e-14)
        previous = opt.state[w]["m2"].clone()


@pytest.mark.equation("nl", 75)
def test_m3_denominator_is_root_v_plus_eps():
    # a gradient entry that stays 0 has V = 0: it steps by lr · O / ε (√(V + ε) would give lr · O / √ε)
    w0 = torch.zeros(2, 3, dtype=F64)
    w = _param(w0)
    g = torch.tensor([[1.0, 0.0, 2.0], [0.5, -1.0, 0.0]], dtype=F64)
    _run_with_grads(M3([w], lr=1e-4, eps=1e-2, ns_dtype=None), [w], [[g]])
    expected = -1e-4 * _ns_reference(0.9 * g, 5, NS_QUINTIC) / ((0.999 * g**2).sqrt() + 1e-2)
    torch.testing.assert_close(w.detach(), expected, rtol=0, atol=1e-15)


def _quadratic(seed: int):
    a = _randn(6, 6, seed=seed)
    a = a @ a.T / 6 + 0.5 * torch.eye(6, dtype=F64)
    target = _randn(6, 4, seed=seed + 1)
    w = _param(torch.zeros(6, 4, dtype=F64))
    return w, lambda: 0.5 * ((w - target) * (a @ (w - target))).sum()


def _least_squares(seed: int):
    x, w_true = _randn(32, 5, seed=seed), _randn(3, 5, seed=seed + 1)
    y = x @ w_true.T
    w = _param(torch.zeros(3, 5, dtype=F64))
    return w, lambda: 0.5 * ((x @ w.T - y) ** 2).mean()


def _train(problem, steps, schedule=False, **options):
    w, loss = problem
    opt = M3([w], **options)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1 - t / steps) if schedule else None
    start = loss().item()
    for _ in range(steps):
        opt.zero_grad()
        loss().backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
    return loss().item() / start


EMA = {"decays": (0.9, 0.999, 0.9), "beta1": 0.1, "beta2": 0.001, "beta3": 0.1}


@pytest.mark.equation("nl", 75)
@pytest.mark.parametrize("lr", [0.01, 0.03, 0.1])
@pytest.mark.parametrize("make_problem", [_quadratic, _least_squares])
def test_m3_with_ema_levels_converges_across_a_learning_rate_sweep(make_problem, lr):
    # measured: 1e-5 … 5e-4 of the starting loss after 1000 steps with a linear decay to 0. With
    # eps = 1e-8 the least-squares run diverges (71x … 7900x): an entry whose gradient is small next to
    # its row and column still gets an O(1) Newton–Schulz entry, divided by √V ≈ |g| (docs/errata.md)
    assert _train(make_problem(50), 1000, schedule=True, lr=lr, eps=1e-3, **EMA) < 1e-2


@pytest.mark.equation("nl", 75)
@pytest.mark.parametrize("lr", [0.01, 0.03, 0.1])
def test_m3_with_the_printed_sums_keeps_oscillating_on_a_quadratic(lr):
    # M1 = β₁ Σ g never forgets (an undamped heavy ball), so the printed recurrences stall well above the
    # optimum at every rate of the sweep (docs/errata.md, NL Algorithm 1): the reason for `decays`
    assert _train(_quadratic(50), 1000, schedule=True, lr=lr) > 1e-2


@pytest.mark.equation("nl", 75)
def test_m3_state_dict_round_trip_resumes_bit_for_bit():
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3).double()
    x, y = _randn(8, 4, seed=41), _randn(8, 3, seed=42)
    make = lambda params: M3(params, lr=0.01, slow_period=2, **EMA)  # noqa: E731

    def run(model, opt, steps):
        for _ in range(steps):
            opt.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            opt.step()

    opt = make(layer.parameters())
    run(layer, opt, 3)
    saved_model, saved_opt = copy.deepcopy(layer.state_dict()), copy.deepcopy(opt.state_dict())
    run(layer, opt, 4)
    resumed = torch.nn.Linear(4, 3).double()
    resumed.load_state_dict(saved_model)
    resumed_opt = make(resumed.parameters())
    resumed_opt.load_state_dict(saved_opt)
    run(resumed, resumed_opt, 4)
    for a, b in zip(layer.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.equation("nl", 75)
def test_m3_updates_non_matrix_parameters_with_adamw():
    torch.manual_seed(1)
    norm = torch.nn.LayerNorm(5).double()
    bias = _param(_randn(3, seed=43))
    ref_norm, ref_bias = copy.deepcopy(norm), _param(bias.detach())
    opt = M3([*norm.parameters(), bias], adamw_lr=0.01, adamw_betas=(0.8, 0.95), adamw_weight_decay=0.1)
    ref = torch.optim.AdamW([*ref_norm.parameters(), ref_bias], lr=0.01, betas=(0.8, 0.95), weight_decay=0.1)
    grads = [[_randn(5, seed=44 + s), _randn(5, seed=54 + s), _randn(3, seed=64 + s)] for s in range(4)]
    ours_params, ref_params = [*norm.parameters(), bias], [*ref_norm.parameters(), ref_bias]
    _same_steps(opt, ref, ours_params, ref_params, grads, atol=1e-14)


@pytest.mark.equation("nl", 75)
def test_m3_rejects_bad_hyperparameters():
    w = [_param(torch.zeros(2, 2))]
    for kwargs, message in [
        ({"lr": -1e-3}, "lr must be a finite float >= 0"),
        ({"beta1": 1.0}, r"beta1 must be in \[0, 1\)"),
        ({"beta2": -0.1}, r"beta2 must be in \[0, 1\)"),
        ({"beta3": 2.0}, r"beta3 must be in \[0, 1\)"),
        ({"alpha": 1.0}, r"alpha must be in \[0, 1\)"),
        ({"slow_period": 0}, "slow_period must be an int >= 1"),
        ({"ns_steps": 0}, "ns_steps must be an int >= 1"),
        ({"eps": 0.0}, "eps must be a finite float > 0"),
        ({"decays": (1.0, 1.0)}, "decays must be 3 floats"),
        ({"decays": (1.0, 1.1, 1.0)}, r"decays\[1\] must be in \[0, 1\]"),
        ({"adamw_betas": (0.9, 1.0)}, r"adamw_betas\[1\] must be in \[0, 1\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            M3(w, **kwargs)


# --------------------------------------------------------------------------------------------------
# Eq. 56–57 — Delta Gradient Descent
# --------------------------------------------------------------------------------------------------


def _eq56_by_normal_equations(w, x, u, eta):
    """argmin ½‖W x − u‖² + ‖W − W_t‖²/(2η): W (x xᵀ + I/η) = u xᵀ + W_t/η (the catalog's form)."""
    system = torch.outer(x, x) + torch.eye(x.shape[0], dtype=F64) / eta
    return torch.linalg.solve(system, (torch.outer(u, x) + w / eta).T).T


@pytest.mark.equation("nl", 57)
@given(
    w=tensors(3, 4),
    direction=tensors(4).filter(lambda v: v.norm() > 0.1),
    lss=tensors(3),
    norm=st.floats(0.25, 4.0),
    eta=st.floats(0.01, 5.0),
)
def test_dgd_closed_form_is_the_exact_argmin_of_eq56_for_any_input_norm(w, direction, lss, norm, eta):
    x = norm * direction / direction.norm()
    expected = _eq56_by_normal_equations(w, x, -lss, eta)
    torch.testing.assert_close(dgd_step(w, x, lss, eta), expected, rtol=0, atol=1e-10)


@pytest.mark.equation("nl", 57)
def test_dgd_closed_form_equals_descent_iterated_on_eq56():
    w, x, lss, eta = _randn(3, 5, seed=45), _randn(5, seed=46), _randn(3, seed=47), 0.5
    objective = lambda m: 0.5 * ((m @ x + lss) ** 2).sum() + ((m - w) ** 2).sum() / (2 * eta)  # noqa: E731
    iterate = w.clone()
    step = 1 / ((x @ x).item() + 1 / eta)
    for _ in range(300):
        iterate = iterate - step * _autograd(objective, iterate)
    torch.testing.assert_close(dgd_step(w, x, lss, eta), iterate, rtol=0, atol=1e-10)


@pytest.mark.equation("nl", 57)
@pytest.mark.equation("nl", 116)
@given(w=tensors(2, 3), x=tensors(3), lss=tensors(2), eta=st.floats(0.01, 5.0))
def test_dgd_closed_form_equals_appendix_c_explicit_solution(w, x, lss, eta):
    # Appendix C: prox weight η_C = 1/η, regression target u = −∇_y L
    got = dgd_step(w, x, lss, eta)
    torch.testing.assert_close(got, dgd_explicit_solution(w, x, -lss, 1 / eta), rtol=0, atol=1e-9)


@pytest.mark.equation("nl", 57)
def test_printed_step_eta_over_one_plus_eta_is_exact_only_for_unit_inputs():
    w, lss, eta = _randn(3, 4, seed=48), _randn(3, seed=49), 0.7
    direction = _randn(4, seed=50)
    printed_eta = eta / (1 + eta)

    def printed(x):
        return w @ (torch.eye(4, dtype=F64) - printed_eta * torch.outer(x, x)) - printed_eta * torch.outer(
            lss, x
        )

    unit, double = direction / direction.norm(), 2 * direction / direction.norm()
    torch.testing.assert_close(dgd_step(w, unit, lss, eta), printed(unit), rtol=0, atol=1e-14)
    torch.testing.assert_close(dgd_step(w, double, lss, eta), _eq56_by_normal_equations(w, double, -lss, eta))
    assert (printed(double) - _eq56_by_normal_equations(w, double, -lss, eta)).abs().max() > 1e-2
    assert dgd_effective_lr(eta, double).item() == pytest.approx(eta / (1 + 4 * eta), abs=1e-15)


@pytest.mark.equation("nl", 57)
def test_dgd_is_gd_with_the_shrunk_step_when_the_correction_vanishes():
    # W_t x = 0: the decay term W (I − η' x xᵀ) leaves W unchanged and DGD is GD with step η'
    x = torch.tensor([1.0, 2.0, 0.0], dtype=F64)
    w = torch.tensor([[2.0, -1.0, 3.0], [0.0, 0.0, 1.0]], dtype=F64)  # W x = 0
    lss, eta = torch.tensor([0.5, -1.0], dtype=F64), 0.4
    eta_prime = eta / (1 + eta * 5.0)
    torch.testing.assert_close(
        dgd_step(w, x, lss, eta), w - eta_prime * torch.outer(lss, x), rtol=0, atol=1e-15
    )


@pytest.mark.equation("nl", 57)
def test_dgd_step_rejects_bad_shapes_and_steps():
    with pytest.raises(ValueError, match=r"x must be \(d_in=3,\)"):
        dgd_step(_randn(2, 3), _randn(2), _randn(2), 0.1)
    with pytest.raises(ValueError, match="lr must be a finite float >= 0"):
        dgd_step(_randn(2, 3), _randn(3), _randn(2), -0.1)


def _tracked_linear(seed: int, bias: bool = True):
    torch.manual_seed(seed)
    layer = torch.nn.Linear(4, 3, bias=bias).double()
    opt = DeltaGradientDescent(layer.parameters(), lr=0.3)
    opt.track(layer)
    return layer, opt


@pytest.mark.equation("nl", 56)
@pytest.mark.equation("nl", 57)
def test_dgd_optimizer_on_one_input_is_the_closed_form_for_weight_and_bias():
    layer, opt = _tracked_linear(0)
    w0, b0 = layer.weight.detach().clone(), layer.bias.detach().clone()
    x, target = _randn(4, seed=51), _randn(3, seed=52)
    loss = lambda y: torch.logsumexp(y, 0) - y @ target  # noqa: E731
    lss = _autograd(loss, layer(x).detach())
    opt.zero_grad()
    loss(layer(x)).backward()
    opt.step()
    torch.testing.assert_close(layer.weight.detach(), dgd_step(w0, x, lss, 0.3), rtol=0, atol=1e-14)
    # the bias is a weight column with the constant input 1
    expected_bias = dgd_step(b0[:, None], torch.ones(1, dtype=F64), lss, 0.3)[:, 0]
    torch.testing.assert_close(layer.bias.detach(), expected_bias, rtol=0, atol=1e-14)


@pytest.mark.equation("nl", 56)
def test_dgd_optimizer_on_a_batch_is_the_proximal_step_of_the_summed_objective():
    layer, opt = _tracked_linear(1, bias=False)
    w0 = layer.weight.detach().clone()
    x, y = _randn(6, 4, seed=53), _randn(6, 3, seed=54)
    opt.zero_grad()
    (0.5 * ((layer(x) - y) ** 2).sum()).backward()
    opt.step()
    u = -(x @ w0.T - y)  # u_j = −∇_{y_j} L
    objective = lambda m: 0.5 * ((x @ m.T - u) ** 2).sum() + ((m - w0) ** 2).sum() / (2 * 0.3)  # noqa: E731
    iterate, step = w0.clone(), 1 / (torch.linalg.eigvalsh(x.T @ x).max().item() + 1 / 0.3)
    for _ in range(600):
        iterate = iterate - step * _autograd(objective, iterate)
    torch.testing.assert_close(layer.weight.detach(), iterate, rtol=0, atol=1e-10)


@pytest.mark.equation("nl", 56)
def test_dgd_optimizer_with_the_mean_gram_is_the_proximal_step_of_the_per_token_mean_objective():
    # gram="mean": the loss is the mean of per-token losses ℓ_j = ½‖W x_j − y_j‖², and the step is the argmin
    # of (1/N) Σ_j ½‖W x_j − u_j‖² + ‖W − W_t‖²/(2η), u_j = −∇_{y_j} ℓ_j: Eq. 56 averaged over the N tokens.
    torch.manual_seed(2)
    layer = torch.nn.Linear(4, 3, bias=False).double()
    opt = DeltaGradientDescent(layer.parameters(), lr=0.3, gram="mean")
    opt.track(layer)
    w0 = layer.weight.detach().clone()
    x, y = _randn(6, 4, seed=57), _randn(6, 3, seed=58)
    opt.zero_grad()
    (0.5 * ((layer(x) - y) ** 2).sum(-1)).mean().backward()
    opt.step()
    u = -(x @ w0.T - y)
    objective = lambda m: 0.5 * ((x @ m.T - u) ** 2).sum(-1).mean() + ((m - w0) ** 2).sum() / 0.6  # noqa: E731
    iterate, step = w0.clone(), 1 / (torch.linalg.eigvalsh(x.T @ x / 6).max().item() + 1 / 0.3)
    for _ in range(600):
        iterate = iterate - step * _autograd(objective, iterate)
    torch.testing.assert_close(layer.weight.detach(), iterate, rtol=0, atol=1e-10)


@pytest.mark.equation("nl", 56)
def test_dgd_mean_gram_on_one_input_is_the_sum_and_bad_gram_is_refused():
    # N = 1: the mean is the sum (Eq. 57's single-input step); a bias sees the constant input 1 per token
    x, target = _randn(4, seed=59), _randn(3, seed=60)
    results = []
    for gram in ("sum", "mean"):
        torch.manual_seed(3)
        layer = torch.nn.Linear(4, 3).double()
        opt = DeltaGradientDescent(layer.parameters(), lr=0.3, gram=gram)
        opt.track(layer)
        opt.zero_grad()
        (0.5 * ((layer(x) - target) ** 2).sum()).backward()
        opt.step()
        results.append([p.detach().clone() for p in layer.parameters()])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="gram must be 'sum' or 'mean'"):
        DeltaGradientDescent(torch.nn.Linear(2, 2).parameters(), gram="max")


@pytest.mark.equation("nl", 56)
def test_dgd_optimizer_never_skips_an_untracked_parameter():
    layer = torch.nn.Linear(3, 2).double()
    free = _param(torch.ones(2, dtype=F64))
    opt = DeltaGradientDescent([{"params": layer.parameters()}, {"params": [free], "delta": False}], lr=0.1)
    layer(_randn(3, seed=55)).sum().backward()
    free.grad = torch.ones(2, dtype=F64)
    with pytest.raises(ValueError, match="no recorded input"):
        opt.step()
    opt.track(layer)
    with torch.no_grad():
        layer(_randn(3, seed=56))  # not recorded: no gradient flows
    with pytest.raises(ValueError, match="no recorded input"):
        opt.step()
    with pytest.raises(TypeError, match=r"track needs an nn\.Linear"):
        opt.track(torch.nn.ReLU())


@pytest.mark.equation("nl", 56)
def test_dgd_group_without_keys_takes_the_plain_gd_step():
    free = _param(torch.tensor([1.0, -2.0], dtype=F64))
    opt = DeltaGradientDescent([{"params": [free], "delta": False}], lr=0.25)
    free.grad = torch.tensor([4.0, 0.5], dtype=F64)
    opt.step()
    torch.testing.assert_close(free.detach(), torch.tensor([0.0, -2.125], dtype=F64), rtol=0, atol=0)


# --------------------------------------------------------------------------------------------------
# Appendix C, Eq. 114–121 — the derivation of DGD's closed form (η: prox weight, g: target)
# --------------------------------------------------------------------------------------------------


def _unit_scaled(direction: torch.Tensor, norm: float) -> torch.Tensor:
    return norm * direction / direction.norm()


@pytest.mark.equation("nl", 114)
def test_first_order_condition_vanishes_at_the_explicit_solution_and_at_eq56s_argmin():
    w, x, g, eta = _randn(3, 4, seed=57), _randn(4, seed=58), _randn(3, seed=59), 0.8
    solution = _eq56_by_normal_equations(w, x, g, 1 / eta)  # Eq. 56 with η → 1/η and u = g
    residual = dgd_first_order_residual(solution, w, x, g, eta)
    torch.testing.assert_close(residual, torch.zeros_like(residual), rtol=0, atol=1e-12)
    assert dgd_first_order_residual(w, w, x, g, eta).abs().max() > 1e-3


@pytest.mark.equation("nl", 115)
@given(w_next=tensors(2, 3), w=tensors(2, 3), x=tensors(3), g=tensors(2), eta=st.floats(0.01, 5.0))
def test_normal_equations_are_half_the_first_order_condition(w_next, w, x, g, eta):
    system, rhs = dgd_normal_equations(w, x, g, eta)
    residual = dgd_first_order_residual(w_next, w, x, g, eta)
    torch.testing.assert_close(w_next @ system - rhs, residual / 2, rtol=0, atol=1e-10)


@pytest.mark.equation("nl", 116)
def test_explicit_solution_by_sympy():
    w, x, g, eta = (
        sp.Matrix([[1, -2]]),
        sp.Matrix([3, sp.Rational(1, 2)]),
        sp.Matrix([[2]]),
        sp.Rational(3, 4),
    )
    unknown = sp.Matrix(1, 2, sp.symbols("a0:2"))
    objective = sum(e**2 for e in (unknown * x - g)) + eta * sum(e**2 for e in (unknown - w))
    solution = sp.solve([sp.diff(objective, e) for e in unknown], list(unknown), dict=True)[0]
    expected = torch.tensor(np.array(unknown.subs(solution), dtype=np.float64))
    got = dgd_explicit_solution(
        torch.tensor([[1.0, -2.0]], dtype=F64),
        torch.tensor([3.0, 0.5], dtype=F64),
        torch.tensor([2.0], dtype=F64),
        0.75,
    )
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-14)


@pytest.mark.equation("nl", 117)
@given(
    direction=tensors(4).filter(lambda v: v.norm() > 0.1), norm=st.floats(0.1, 5.0), eta=st.floats(0.01, 5.0)
)
def test_sherman_morrison_inverse_is_the_inverse(direction, norm, eta):
    x = _unit_scaled(direction, norm)
    product = sherman_morrison_inverse(x, eta) @ (torch.outer(x, x) + eta * torch.eye(4, dtype=F64))
    torch.testing.assert_close(product, torch.eye(4, dtype=F64), rtol=0, atol=1e-10)


@pytest.mark.equation("nl", 118)
@pytest.mark.equation("nl", 119)
@pytest.mark.equation("nl", 120)
@pytest.mark.equation("nl", 121)
@pytest.mark.parametrize("form", ["substituted", "expanded", "collected", "final"])
@given(
    w=tensors(2, 3),
    direction=tensors(3).filter(lambda v: v.norm() > 0.1),
    g=tensors(2),
    norm=st.floats(0.1, 4.0),
    eta=st.floats(0.05, 5.0),
)
def test_every_appendix_c_form_equals_the_explicit_solution(form, w, direction, g, norm, eta):
    x = _unit_scaled(direction, norm)
    expected = dgd_explicit_solution(w, x, g, eta)
    torch.testing.assert_close(dgd_appendix_c_form(w, x, g, eta, form), expected, rtol=0, atol=1e-9)


@pytest.mark.equation("nl", 120)
def test_printed_eq120_with_lambda_for_lambda_squared_is_wrong_off_unit_norm():
    w, g, eta = _randn(2, 3, seed=60), _randn(2, seed=61), 0.6
    x = _unit_scaled(_randn(3, seed=62), 2.0)
    lam = 2.0
    decayed = w @ (torch.eye(3, dtype=F64) - torch.outer(x, x) / (lam**2 + eta))
    printed = decayed - (lam / (lam**2 * eta + eta**2) - 1 / eta) * torch.outer(g, x)
    expected = dgd_explicit_solution(w, x, g, eta)
    assert (printed - expected).abs().max() > 1e-2
    torch.testing.assert_close(dgd_appendix_c_form(w, x, g, eta, "collected"), expected, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 121)
def test_final_form_is_dgd_in_eq56s_convention():
    w, x, lss, eta = _randn(3, 4, seed=63), _randn(4, seed=64), _randn(3, seed=65), 0.45
    got = dgd_appendix_c_form(w, x, -lss, 1 / eta, "final")
    torch.testing.assert_close(got, dgd_step(w, x, lss, eta), rtol=0, atol=1e-13)
    with pytest.raises(ValueError, match="form must be"):
        dgd_appendix_c_form(w, x, lss, eta, "printed")


# --------------------------------------------------------------------------------------------------
# Every optimizer: state_dict round trip, closure
# --------------------------------------------------------------------------------------------------

FACTORIES = {
    "momentum": lambda ps: MomentumGD(ps, lr=0.05),
    "muon": lambda ps: Muon(ps, lr=0.05),
    "elementwise": lambda ps: ElementwiseMomentum(ps, lr=0.05),
    "matrix": lambda ps: MatrixMomentum(ps, lr=0.05),
    "m3": lambda ps: M3(ps, lr=0.01, slow_period=2),
}


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_state_dict_round_trip_resumes_bit_for_bit(name):
    w0 = _randn(3, 4, seed=66)
    grads = _grad_stream((3, 4), 6, seed=660)
    w = _param(w0)
    opt = FACTORIES[name]([w])
    _run_with_grads(opt, [w], grads[:3])
    saved_w, saved_state = w.detach().clone(), copy.deepcopy(opt.state_dict())
    final = _run_with_grads(opt, [w], grads[3:])[-1][0]
    resumed = _param(saved_w)
    resumed_opt = FACTORIES[name]([resumed])
    resumed_opt.load_state_dict(saved_state)
    assert torch.equal(_run_with_grads(resumed_opt, [resumed], grads[3:])[-1][0], final)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_step_with_a_closure_returns_its_loss_and_moves_downhill(name):
    w = _param(_randn(3, 4, seed=67))
    opt = FACTORIES[name]([w])

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    first = opt.step(closure)
    assert first.item() == pytest.approx((_randn(3, 4, seed=67) ** 2).sum().item())
    assert (w**2).sum().item() < first.item()


def _raises(message: str, factory, *args, **kwargs) -> None:
    with pytest.raises(ValueError) as caught:
        factory(*args, **kwargs)
    assert str(caught.value) == message


# --------------------------------------------------------------------------------------------------
# Eq. 33 — MomentumGD's defaults (lr = 1e-3, alpha = 0.9)
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 33)
def test_momentum_defaults_are_lr_1e3_and_alpha_0_9():
    # m_1 = −1e-3 g_1, W_1 = W_0 + m_1;  m_2 = 0.9 m_1 − 1e-3 g_2, W_2 = W_1 + m_2
    w0 = _randn(2, 3, seed=101)
    w = _param(w0)
    (g1,), (g2,) = grads = _grad_stream((2, 3), 2, seed=1010)
    _run_with_grads(MomentumGD([w]), [w], grads)
    m1 = -1e-3 * g1
    m2 = 0.9 * m1 - 1e-3 * g2
    torch.testing.assert_close(w.detach(), w0 + m1 + m2, rtol=0, atol=1e-15)


# --------------------------------------------------------------------------------------------------
# Eq. 44 — Newton–Schulz
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 44)
def test_newton_schulz_step_with_a_unit_quintic_coefficient_keeps_the_fifth_power_term():
    # (a, b, c) = (1.5, −0.5, 1): X ↦ 1.5 X − 0.5 (XXᵀ)X + (XXᵀ)²X, written out
    x = _randn(3, 4, seed=102, scale=0.5)
    gram = x @ x.T
    expected = 1.5 * x - 0.5 * gram @ x + gram @ gram @ x
    got = newton_schulz_step(x, (1.5, -0.5, 1.0))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-14)


@pytest.mark.equation("nl", 44)
def test_cubic_step_in_bfloat16_never_forms_the_overflowing_fifth_power():
    # X = diag(2^33, 1) in bfloat16: the cubic is σ ↦ 1.5σ − 0.5σ³, so (2^33, 1) ↦ (−2^98 + 1.5·2^33, 1)
    # and −2^98 + 1.5·2^33 rounds to −2^98 (8-bit mantissa). The unused (XXᵀ)² term would be
    # 2^132 > bfloat16's max ≈ 3.4e38: computing it (even times c = 0) gives inf · 0 = nan.
    x = torch.diag(torch.tensor([2.0**33, 1.0])).to(torch.bfloat16)
    got = newton_schulz_step(x, NS_CUBIC)
    expected = torch.diag(torch.tensor([-(2.0**98), 1.0])).to(torch.bfloat16)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, expected)


def test_newton_schulz_refuses_a_non_positive_eps_by_name():
    _raises("eps must be a finite float > 0, got 0.0", newton_schulz, _randn(2, 2, seed=103), eps=0.0)
    _raises("eps must be a finite float > 0, got -1e-07", newton_schulz, _randn(2, 2, seed=103), eps=-1e-7)


# --------------------------------------------------------------------------------------------------
# Eq. 42 — Muon: default lr, adjust_lr_fn="original", weight_decay's message
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 42)
def test_muon_default_lr_is_1e3():
    # defaults weight_decay 0.1, momentum μ = 0.95, Nesterov: b_1 = (1 − μ) g = 0.05 g,
    # update = g + μ(b_1 − g) = 0.0975 g;  square, so ratio √1:
    # W_1 = (1 − 1e-3 · 0.1) W_0 − 1e-3 · NS_5(0.0975 g)
    w0, g = _randn(4, 4, seed=104), _randn(4, 4, seed=1040)
    w = _param(w0)
    _run_with_grads(Muon([w], ns_dtype=None), [w], [[g]])
    expected = (1 - 1e-3 * 0.1) * w0 - 1e-3 * _ns_reference(0.0975 * g, 5, NS_QUINTIC)
    torch.testing.assert_close(w.detach(), expected, rtol=0, atol=1e-13)


@pytest.mark.equation("nl", 42)
@pytest.mark.parametrize("shape", [(6, 4), (4, 6)])
def test_muon_original_lr_adjustment_is_root_of_max_one_and_rows_over_cols(shape):
    # "original": lr · √max(1, A/B): (6, 4) → √1.5, (4, 6) → 1;  momentum 0, no Nesterov, no decay:
    # W_t = W_{t−1} − η · ratio · NS_5(g_t)
    ratio = {(6, 4): 1.5**0.5, (4, 6): 1.0}[shape]
    w0 = _randn(*shape, seed=105)
    w = _param(w0)
    opt = Muon(
        [w], lr=0.02, weight_decay=0.0, momentum=0.0, nesterov=False, adjust_lr_fn="original", ns_dtype=None
    )
    grads = _grad_stream(shape, 3, seed=1050)
    _run_with_grads(opt, [w], grads)
    expected = w0 - sum(0.02 * ratio * _ns_reference(g, 5, NS_QUINTIC) for (g,) in grads)
    torch.testing.assert_close(w.detach(), expected, rtol=0, atol=1e-13)


@pytest.mark.equation("nl", 42)
def test_muon_original_equals_torch_muon_original_in_float32():
    w0 = _randn(6, 4, seed=106, dtype=torch.float32)
    ours, ref = _param(w0), _param(w0)
    grads = _grad_stream((6, 4), 4, seed=1060, dtype=torch.float32)
    reference = torch.optim.Muon([ref], lr=0.02, adjust_lr_fn="original")
    _same_steps(Muon([ours], lr=0.02, adjust_lr_fn="original"), reference, [ours], [ref], grads, atol=1e-7)


@pytest.mark.equation("nl", 42)
def test_muon_refuses_a_negative_weight_decay_by_name():
    _raises(
        "weight_decay must be a finite float >= 0, got -0.1",
        Muon,
        [_param(torch.zeros(2, 2))],
        weight_decay=-0.1,
    )


# --------------------------------------------------------------------------------------------------
# Appendix B, Eq. 102–105 — ElementwiseMomentum
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 105)
def test_elementwise_defaults_are_sum_form_adam_with_lr_1e3_and_eps_1e8():
    # defaults: "adam", β₁ = β₂ = 1, decays 1, ε = 1e-8: W_1 = W_0 − 1e-3 g / (|g| + 1e-8)
    w0, g = _randn(3, 2, seed=107), _randn(3, 2, seed=1070)
    w = _param(w0)
    _run_with_grads(ElementwiseMomentum([w]), [w], [[g]])
    torch.testing.assert_close(w.detach(), w0 - 1e-3 * g / (g.abs() + 1e-8), rtol=0, atol=1e-15)


@pytest.mark.equation("nl", 105)
@pytest.mark.parametrize(("decay1", "decay2"), [(0.9, 1.0), (1.0, 0.9), (1.0, 1.0)])
def test_bias_correction_with_either_decay_equal_to_one_is_refused(decay1, decay2):
    _raises(
        "bias_correction needs decay1 and decay2 in [0, 1) (an EMA, not a sum)",
        ElementwiseMomentum,
        [_param(torch.zeros(2))],
        decay1=decay1,
        decay2=decay2,
        bias_correction=True,
    )


@pytest.mark.equation("nl", 105)
def test_elementwise_lam_messages_are_exact():
    w = [_param(torch.zeros(2))]
    _raises(
        "lam must be 0 with preconditioner='adam' (Eq. 105's eps replaces it)",
        ElementwiseMomentum,
        w,
        lam=0.1,
    )
    _raises(
        "lam must be a finite float >= 0, got -0.5",
        ElementwiseMomentum,
        w,
        preconditioner="momentum",
        lam=-0.5,
    )


@pytest.mark.equation("nl", 103)
def test_ridge_momentum_with_lam_one_by_hand():
    # one step, β₁ = β₂ = 1, λ = 1: M̃ = g, H = g², P = H/β₂ = g²;  m* = g · g² / (g² + 1)
    # e.g. g = 2: 8/5 = 1.6 (not M̃/β₂ = 2, the λ = 0 shortcut)
    w0 = _randn(2, 3, seed=108)
    g = torch.tensor([[2.0, -1.0, 0.5], [3.0, -2.0, 1.0]], dtype=F64)
    w = _param(w0)
    _run_with_grads(ElementwiseMomentum([w], lr=0.1, preconditioner="momentum", lam=1.0), [w], [[g]])
    assert g[0, 0] ** 3 / (g[0, 0] ** 2 + 1) == 1.6
    torch.testing.assert_close(w.detach(), w0 - 0.1 * g**3 / (g**2 + 1.0), rtol=0, atol=1e-15)


@pytest.mark.equation("nl", 104)
def test_momentum_preconditioner_with_lam_zero_keeps_a_zero_gradient_entry_still():
    # λ = 0: the step is M̃/β₂ exactly; an entry whose gradient was always 0 (H = 0 there) does not move
    w0 = _randn(2, 2, seed=109)
    g = torch.tensor([[0.0, 1.5], [-2.0, 0.25]], dtype=F64)
    w = _param(w0)
    _run_with_grads(ElementwiseMomentum([w], lr=0.1, beta2=0.5, preconditioner="momentum"), [w], [[g]])
    torch.testing.assert_close(w.detach(), w0 - 0.1 * g / 0.5, rtol=0, atol=1e-15)
    assert w.detach()[0, 0] == w0[0, 0]


@pytest.mark.equation("nl", 103)
def test_ridge_momentum_property_is_h_over_beta2():
    # β₁ = 1, β₂ = 0.5, λ = 0.5, two steps: M̃_t = Σ g, H_t = 0.5 Σ g², P_t = H_t/β₂ = Σ g²,
    # m*_t = M̃_t · P_t / (H_t + λ);  W_2 = W_0 − η (m*_1 + m*_2)
    w0 = _randn(3, 2, seed=110)
    w = _param(w0)
    (g1,), (g2,) = grads = _grad_stream((3, 2), 2, seed=1100)
    opt = ElementwiseMomentum([w], lr=0.1, beta2=0.5, preconditioner="momentum", lam=0.5)
    _run_with_grads(opt, [w], grads)
    expected, m, s = w0.clone(), torch.zeros_like(w0), torch.zeros_like(w0)
    for g in (g1, g2):
        m, s = m + g, s + g**2
        expected = expected - 0.1 * m * s / (0.5 * s + 0.5)
    torch.testing.assert_close(w.detach(), expected, rtol=0, atol=1e-14)


# --------------------------------------------------------------------------------------------------
# Appendix B, Eq. 109–111 — MatrixMomentum
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 111)
def test_matrix_momentum_defaults_are_lr_1e3_and_eps_1e8():
    # one row (1, 4): H = g gᵀ is the 1×1 Σ g², so (H^{1/2} + ε)⁻¹ g = g/(|g| + ε);
    # W_1 = W_0 − 1e-3 g / (|g| + 1e-8)   (β₁ = β₂ = 1)
    w0, g = _randn(1, 4, seed=111), _randn(1, 4, seed=1110)
    w = _param(w0)
    _run_with_grads(MatrixMomentum([w]), [w], [[g]])
    torch.testing.assert_close(w.detach(), w0 - 1e-3 * g / (g.norm() + 1e-8), rtol=0, atol=1e-15)


@pytest.mark.equation("nl", 111)
def test_matrix_momentum_on_a_scalar_parameter_is_one_by_one_adagrad_with_momentum():
    # a 0-d parameter is a (1, 1) matrix: H_t = Σ g², M̃_t = Σ g, W_t = W_{t−1} − η M̃_t / (√H_t + ε)
    # g = (3, −4): W_1 = 1 − 0.1 · 3/(3 + 0.5) = 1 − 0.3/3.5;
    # W_2 = W_1 − 0.1 · (−1)/(5 + 0.5) = W_1 + 0.1/5.5
    w = _param(torch.tensor(1.0, dtype=F64))
    grads = [[torch.tensor(3.0, dtype=F64)], [torch.tensor(-4.0, dtype=F64)]]
    history = _run_with_grads(MatrixMomentum([w], lr=0.1, eps=0.5), [w], grads)
    assert w.shape == ()
    assert history[0][0].item() == pytest.approx(1 - 0.3 / 3.5, abs=1e-15)
    assert history[1][0].item() == pytest.approx(1 - 0.3 / 3.5 + 0.1 / 5.5, abs=1e-15)


@pytest.mark.equation("nl", 111)
def test_matrix_momentum_messages_name_the_argument():
    w = [_param(torch.zeros(2))]
    _raises("beta1 must be in (0, 1], got 0.0", MatrixMomentum, w, beta1=0.0)
    _raises("eps must be a finite float > 0, got 0.0", MatrixMomentum, w, eps=0.0)


# --------------------------------------------------------------------------------------------------
# Eq. 75, Algorithm 1 — M3
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 75)
def test_m3_defaults_lr_1e3_and_eps_1e8_on_the_first_step():
    # defaults β₁ = 0.9, β₂ = 0.999, decays 1, NS quintic ×5 in the parameter's dtype, O2 = 0 at first:
    # M1 = 0.9 g, V = 0.999 g²;  W_1 = W_0 − 1e-3 · NS_5(0.9 g) / (√(0.999 g²) + 1e-8)
    w0, g = _randn(3, 4, seed=112), _randn(3, 4, seed=1120)
    w = _param(w0)
    _run_with_grads(M3([w]), [w], [[g]])
    expected = w0 - 1e-3 * _ns_reference(0.9 * g, 5, NS_QUINTIC) / ((0.999 * g**2).sqrt() + 1e-8)
    torch.testing.assert_close(w.detach(), expected, rtol=0, atol=1e-13)


@pytest.mark.equation("nl", 75)
def test_m3_default_slow_period_is_ten():
    # M2 stays 0 for 9 steps; at step 10 it becomes β₃ Σ_{t≤10} g_t = 0.9 Σ g (d3 = 1)
    w = _param(_randn(3, 3, seed=113))
    opt = M3([w])
    grads = _grad_stream((3, 3), 10, seed=1130)
    _run_with_grads(opt, [w], grads[:9])
    assert torch.equal(opt.state[w]["m2"], torch.zeros(3, 3, dtype=F64))
    _run_with_grads(opt, [w], grads[9:])
    expected = 0.9 * sum(g for (g,) in grads)
    torch.testing.assert_close(opt.state[w]["m2"], expected, rtol=0, atol=1e-14)


@pytest.mark.equation("nl", 75)
def test_m3_step_counter_counts_up():
    w = _param(_randn(2, 3, seed=114))
    opt = M3([w], slow_period=2)
    for t, grads in enumerate(_grad_stream((2, 3), 3, seed=1140), start=1):
        _run_with_grads(opt, [w], [grads])
        assert opt.state[w]["step"] == t
        assert opt.state_dict()["state"][0]["step"] == t


@pytest.mark.equation("nl", 75)
def test_m3_adamw_fallback_defaults_are_torch_adamw_defaults():
    # adamw_lr 1e-3, adamw_betas (0.9, 0.999), adamw_eps 1e-8, adamw_weight_decay 1e-2 (written out here)
    b0 = _randn(5, seed=115)
    ours, ref = _param(b0), _param(b0)
    reference = torch.optim.AdamW([ref], lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)
    _same_steps(M3([ours]), reference, [ours], [ref], _grad_stream((5,), 3, seed=1150), atol=1e-15)


@pytest.mark.equation("nl", 75)
def test_m3_adamw_fallback_first_step_by_hand():
    # step 1: m̂ = g, v̂ = g² → b_1 = (1 − 1e-3 · 1e-2) b_0 − 1e-3 · g / (|g| + 1e-8)
    b0 = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    g = torch.tensor([0.5, 2.0, -1.0], dtype=F64)
    b = _param(b0)
    _run_with_grads(M3([b]), [b], [[g]])
    expected = (1 - 1e-5) * b0 - 1e-3 * g / (g.abs() + 1e-8)
    torch.testing.assert_close(b.detach(), expected, rtol=0, atol=1e-15)


@pytest.mark.equation("nl", 75)
def test_m3_messages_name_the_argument():
    w = [_param(torch.zeros(2, 2))]
    _raises("ns_eps must be a finite float > 0, got 0.0", M3, w, ns_eps=0.0)
    _raises("adamw_lr must be a finite float >= 0, got -1.0", M3, w, adamw_lr=-1.0)
    _raises("adamw_eps must be a finite float > 0, got 0.0", M3, w, adamw_eps=0.0)
    _raises("adamw_weight_decay must be a finite float >= 0, got -0.1", M3, w, adamw_weight_decay=-0.1)


@pytest.mark.equation("nl", 75)
def test_m3_bfloat16_newton_schulz_comes_back_in_the_parameters_dtype():
    # float32 parameter, Newton–Schulz in bfloat16 (torch.optim.Muon's routine as the reference), period 1:
    # step 1: M1 = M2 = 0.9 g₁ (β₁ = β₃ = 0.9), V = 0.999 g₁², O2 = 0;
    # step 2: M1 = 0.9(g₁ + g₂), V = 0.999(g₁² + g₂²), combined = O1 + 0.5 O2 summed in float32
    w0 = _randn(3, 4, seed=116, dtype=torch.float32)
    w = _param(w0)
    (g1,), (g2,) = grads = _grad_stream((3, 4), 2, seed=1160, dtype=torch.float32)
    opt = M3([w], lr=1.0, eps=1.0, slow_period=1, ns_dtype=torch.bfloat16)
    _run_with_grads(opt, [w], grads)

    def ns(m):
        return _zeropower_via_newtonschulz(m, NS_QUINTIC, 5, 1e-7).to(torch.float32)

    o2 = ns(0.9 * g1)
    assert opt.state[w]["o2"].dtype == torch.float32
    m1, v = 0.9 * g1 + 0.9 * g2, 0.999 * g1**2 + 0.999 * g2**2
    w1 = w0 - ns(0.9 * g1) / ((0.999 * g1**2).sqrt() + 1.0)
    expected = w1 - (ns(m1) + 0.5 * o2) / (v.sqrt() + 1.0)
    torch.testing.assert_close(w.detach(), expected, rtol=0, atol=1e-6)


def _message(call) -> str:
    with pytest.raises(ValueError) as caught:
        call()
    return str(caught.value)


# --------------------------------------------------------------------------------------------------
# Hyper-parameter checks; Eq. 33 — the gradients an optimizer steps on
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 38)
def test_learning_rate_refuses_bools_and_non_finite_numbers():
    w, g, eye = _randn(2, 3, seed=300), _randn(2, 3, seed=301), torch.eye(2, dtype=F64)
    for lr, shown in [(True, "True"), (math.inf, "inf"), (-math.inf, "-inf"), (math.nan, "nan")]:
        message = _message(lambda lr=lr: preconditioned_gd_step(w, g, eye, lr))
        assert message == f"lr must be a finite float >= 0, got {shown}"


@pytest.mark.equation("nl", 33)
def test_momentum_steps_the_parameters_after_one_without_gradient():
    # a has no gradient and stays; b: m = −0.5 g, b = b₀ − 0.5 g
    a, b = _param(_randn(2, seed=302)), _param(_randn(3, seed=303))
    a0, b0, g = a.detach().clone(), b.detach().clone(), _randn(3, seed=304)
    opt = MomentumGD([a, b], lr=0.5, alpha=0.9)
    b.grad = g.clone()
    opt.step()
    torch.testing.assert_close(a.detach(), a0, rtol=0, atol=0)
    torch.testing.assert_close(b.detach(), b0 - 0.5 * g, rtol=0, atol=1e-15)
    torch.testing.assert_close(opt.state[b]["momentum"], -0.5 * g, rtol=0, atol=1e-15)


@pytest.mark.equation("nl", 33)
def test_momentum_refuses_sparse_gradients_naming_the_optimizer():
    w = _param(torch.zeros(3, 2, dtype=F64))
    w.grad = torch.ones(3, 2, dtype=F64).to_sparse()
    with pytest.raises(RuntimeError) as caught:
        MomentumGD([w]).step()
    assert str(caught.value) == "MomentumGD does not support sparse gradients"


# --------------------------------------------------------------------------------------------------
# Eq. 35, 37 — generalised momentum; Eq. 38–39, 47 — preconditioning
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 35)
@pytest.mark.equation("nl", 37)
def test_generalized_momentum_default_alpha_is_one_the_undecayed_step():
    # α = 1 by default: m' = m − 0.25 (m k − v) kᵀ, W' = W + m'
    w = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=F64)
    m = torch.tensor([[0.5, -1.0], [2.0, 1.0]], dtype=F64)
    k, v = torch.tensor([1.0, 2.0], dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    # m k = (0.5 − 2, 2 + 2) = (−1.5, 4); m k − v = (−1.5, 3); (m k − v) kᵀ = [[−1.5, −3], [3, 6]]
    expected_m = torch.tensor([[0.5 + 0.375, -1.0 + 0.75], [2.0 - 0.75, 1.0 - 1.5]], dtype=F64)
    new_w, new_m = generalized_momentum_step(w, m, L2RegressionObjective(), k[None], v[None], lr=0.25)
    torch.testing.assert_close(new_m, expected_m, rtol=0, atol=1e-15)
    torch.testing.assert_close(new_w, w + expected_m, rtol=0, atol=1e-15)
    # α = 1 given explicitly is accepted and is the same step
    again_w, again_m = generalized_momentum_step(
        w, m, L2RegressionObjective(), k[None], v[None], lr=0.25, alpha=1.0
    )
    torch.testing.assert_close(again_m, expected_m, rtol=0, atol=1e-15)
    torch.testing.assert_close(again_w, w + expected_m, rtol=0, atol=1e-15)


@pytest.mark.equation("nl", 35)
@pytest.mark.equation("nl", 37)
def test_generalized_momentum_error_messages():
    w, k, v = _randn(2, 3, seed=305), _randn(1, 3, seed=306), _randn(1, 2, seed=307)
    objective = L2RegressionObjective()
    message = _message(lambda: generalized_momentum_step(w, w, objective, k, v, lr=0.1, alpha=1.5))
    assert message == "alpha must be in [0, 1], got 1.5"
    message = _message(lambda: generalized_momentum_step(w, w, objective, k, v, lr=-0.1, alpha=0.5))
    assert message == "lr must be a finite float >= 0, got -0.1"


@pytest.mark.equation("nl", 38)
def test_preconditioned_gd_error_messages():
    w, g = _randn(2, 3, seed=308), _randn(2, 3, seed=309)
    message = _message(lambda: preconditioned_gd_step(w, g, torch.eye(2, dtype=F64), -0.5))
    assert message == "lr must be a finite float >= 0, got -0.5"
    message = _message(lambda: preconditioned_gd_step(w, g, torch.eye(3, dtype=F64), 0.5))
    assert message == "a matrix preconditioner must be (d_out, d_out) = (2, 2)"


@pytest.mark.equation("nl", 47)
def test_preconditioned_momentum_error_messages():
    w, g, eye = _randn(2, 3, seed=310), _randn(2, 3, seed=311), torch.eye(2, dtype=F64)
    message = _message(lambda: preconditioned_momentum_step(w, w, g, eye, 0.1, alpha=1.25))
    assert message == "alpha must be in [0, 1], got 1.25"
    message = _message(lambda: preconditioned_momentum_step(w, w, g, eye, -2.0, alpha=0.5))
    assert message == "lr must be a finite float >= 0, got -2.0"


# --------------------------------------------------------------------------------------------------
# Eq. 57 and Appendix C, Eq. 114–121 — shape and step checks, dtype and device
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 57)
def test_dgd_step_error_messages():
    w, x = _randn(2, 3, seed=312), _randn(3, seed=313)
    message = _message(lambda: dgd_step(_randn(3, seed=314), x, _randn(2, seed=315), 0.1))
    assert message == "weight must be (d_out, d_in), got shape (3,)"
    message = _message(lambda: dgd_step(w, x, _randn(3, seed=316), 0.1))
    assert message == "lss must be (d_out=2,), got shape (3,)"


@pytest.mark.equation("nl", 114)
def test_first_order_residual_error_messages():
    w, x, g = _randn(2, 3, seed=317), _randn(3, seed=318), _randn(2, seed=319)
    message = _message(lambda: dgd_first_order_residual(w, w, x, _randn(4, seed=320), 0.5))
    assert message == "target must be (d_out=2,), got shape (4,)"
    message = _message(lambda: dgd_first_order_residual(w, w, x, g, 0.0))
    assert message == "eta must be a finite float > 0, got 0.0"


@pytest.mark.equation("nl", 115)
def test_normal_equations_error_messages():
    w, x, g = _randn(2, 3, seed=321), _randn(3, seed=322), _randn(2, seed=323)
    message = _message(lambda: dgd_normal_equations(w, x, _randn(1, seed=324), 0.5))
    assert message == "target must be (d_out=2,), got shape (1,)"
    message = _message(lambda: dgd_normal_equations(w, x, g, -1.0))
    assert message == "eta must be a finite float > 0, got -1.0"


@pytest.mark.equation("nl", 115)
def test_normal_equations_stay_on_the_inputs_device_under_another_default_device():
    # A = x xᵀ + η I, B = g xᵀ + η W with x = (1, 2), g = (3,), W = [[1, −1]], η = 0.5
    w = torch.tensor([[1.0, -1.0]], dtype=F64)
    x, g = torch.tensor([1.0, 2.0], dtype=F64), torch.tensor([3.0], dtype=F64)
    with torch.device("meta"):  # a user's torch.set_default_device must not move the identity
        system, rhs = dgd_normal_equations(w, x, g, 0.5)
    assert system.device == x.device and rhs.device == x.device
    torch.testing.assert_close(system, torch.tensor([[1.5, 2.0], [2.0, 4.5]], dtype=F64), rtol=0, atol=0)
    torch.testing.assert_close(rhs, torch.tensor([[3.5, 5.5]], dtype=F64), rtol=0, atol=0)


@pytest.mark.equation("nl", 117)
def test_sherman_morrison_inverse_refuses_a_non_positive_eta():
    assert _message(lambda: sherman_morrison_inverse(_randn(3, seed=325), 0.0)) == (
        "eta must be a finite float > 0, got 0.0"
    )


@pytest.mark.equation("nl", 117)
def test_sherman_morrison_inverse_keeps_the_inputs_dtype_and_device():
    # x = (1, 2), η = 0.5: λ² + η = 5.5, (I − x xᵀ/5.5)/0.5 = [[2 − 2/5.5, −4/5.5], [−4/5.5, 2 − 8/5.5]]
    expected = torch.tensor([[2 - 2 / 5.5, -4 / 5.5], [-4 / 5.5, 2 - 8 / 5.5]], dtype=F64)
    half = sherman_morrison_inverse(torch.tensor([1.0, 2.0], dtype=torch.float16), 0.5)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.double(), expected, rtol=0, atol=2e-3)
    x = torch.tensor([1.0, 2.0], dtype=F64)
    with torch.device("meta"):  # a user's torch.set_default_device must not move the identity
        got = sherman_morrison_inverse(x, 0.5)
    assert got.device == x.device and got.dtype == F64
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-15)


@pytest.mark.equation("nl", 118)
def test_appendix_c_form_error_messages():
    w, x, g = _randn(3, 2, seed=326), _randn(2, seed=327), _randn(3, seed=328)
    message = _message(lambda: dgd_appendix_c_form(w, x, _randn(2, seed=329), 0.5, "final"))
    assert message == "target must be (d_out=3,), got shape (2,)"
    message = _message(lambda: dgd_appendix_c_form(w, x, g, math.inf, "final"))
    assert message == "eta must be a finite float > 0, got inf"


# --------------------------------------------------------------------------------------------------
# Eq. 51 — the (d_out, d_in) view of the momentum state, preconditioner maps
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 51)
def test_feature_map_momentum_steps_a_scalar_parameter():
    # a 0-d parameter is a (1, 1) matrix: m₁ = −0.1·2 = −0.2, p₁ = 1.3;
    # m₂ = 0.5·(−0.2) − 0.1·(−4) = 0.3, p₂ = 1.6
    p = _param(torch.tensor(1.5, dtype=F64))
    opt = FeatureMapMomentum([p], lr=0.1, alpha=0.5)
    p.grad = torch.tensor(2.0, dtype=F64)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor(1.3, dtype=F64), rtol=0, atol=1e-15)
    p.grad = torch.tensor(-4.0, dtype=F64)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor(1.6, dtype=F64), rtol=0, atol=1e-15)
    torch.testing.assert_close(opt.state[p]["momentum"], torch.tensor(0.3, dtype=F64), rtol=0, atol=1e-15)


@pytest.mark.equation("nl", 51)
def test_feature_map_momentum_moves_a_non_contiguous_parameter():
    # a permuted rank-3 parameter: the momentum must be updated through its (d_out, -1) view,
    # m₁ = −0.2 g₁, p₁ = p₀ − 0.2 g₁; m₂ = 0.5 m₁ − 0.2 g₂, p₂ = p₁ + m₂
    p = torch.nn.Parameter(_randn(2, 2, 3, seed=330).permute(0, 2, 1))
    assert not p.is_contiguous()
    p0, g1, g2 = p.detach().clone(), _randn(2, 3, 2, seed=331), _randn(2, 3, 2, seed=332)
    opt = FeatureMapMomentum([p], lr=0.2, alpha=0.5)
    p.grad = g1.clone()
    opt.step()
    torch.testing.assert_close(p.detach(), p0 - 0.2 * g1, rtol=0, atol=1e-15)
    p.grad = g2.clone()
    opt.step()
    m2 = 0.5 * (-0.2 * g1) - 0.2 * g2
    torch.testing.assert_close(p.detach(), p0 - 0.2 * g1 + m2, rtol=0, atol=1e-14)
    torch.testing.assert_close(opt.state[p]["momentum"], m2, rtol=0, atol=1e-15)


@pytest.mark.equation("nl", 51)
def test_feature_map_momentum_accepts_a_callable_preconditioner():
    # P g = 3 g: m₁ = −0.1·3 g, p₁ = p₀ − 0.3 g
    p = _param(_randn(2, 3, seed=333))
    p0, g = p.detach().clone(), _randn(2, 3, seed=334)
    opt = FeatureMapMomentum([p], lr=0.1, alpha=0.9, precondition=lambda grad: 3 * grad)
    p.grad = g.clone()
    opt.step()
    torch.testing.assert_close(p.detach(), p0 - 0.3 * g, rtol=0, atol=1e-15)


def _proximal_residual(w_new, w0, grad, keys, lr, scale=1.0):
    """∇ of ⟨G, W⟩ + (scale/2) Σ_j ‖W x_j‖² + ‖W − W₀‖²/(2η) at ``w_new``, by autograd: zero at the argmin.

    Its stationary point is W(I + η·scale·Σ x xᵀ) = W₀ − ηG, the proximal step of Eq. 56 (u_j = −∇_{y_j}L
    makes −Σ u_j x_jᵀ = G), so the residual vanishes exactly at the optimizer's step.
    """
    objective = lambda m: (  # noqa: E731
        (grad * m).sum() + 0.5 * scale * ((keys @ m.T) ** 2).sum() + ((m - w0) ** 2).sum() / (2 * lr)
    )
    return _autograd(objective, w_new)


# --------------------------------------------------------------------------------------------------
# Eq. 56–57 — DeltaGradientDescent: recorded inputs, zero_grad, defaults, messages, dtype and device
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 56)
def test_dgd_sums_the_inputs_of_several_forwards_into_one_proximal_step():
    # two forwards of one input each before the step: Σ_j x_j x_jᵀ has rank 2 and N = 2, so the step is
    # the solve W(I + η(x₁x₁ᵀ + x₂x₂ᵀ)) = W₀ − ηG; the bias sees the input 1 twice: c = (b₀ − ηg_b)/(1 + 2η)
    torch.manual_seed(4)
    layer = torch.nn.Linear(4, 3).double()
    opt = DeltaGradientDescent(layer.parameters(), lr=0.3)
    opt.track(layer)
    w0, b0 = layer.weight.detach().clone(), layer.bias.detach().clone()
    x1, x2, y1, y2 = _randn(4, seed=70), _randn(4, seed=71), _randn(3, seed=72), _randn(3, seed=73)
    opt.zero_grad()
    loss = 0.5 * ((layer(x1) - y1) ** 2).sum() + 0.5 * ((layer(x2) - y2) ** 2).sum()
    loss.backward()
    g_w, g_b = layer.weight.grad.clone(), layer.bias.grad.clone()
    opt.step()
    keys = torch.stack([x1, x2])
    residual = _proximal_residual(layer.weight.detach(), w0, g_w, keys, 0.3)
    torch.testing.assert_close(residual, torch.zeros(3, 4, dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(layer.bias.detach(), (b0 - 0.3 * g_b) / 1.6, rtol=0, atol=1e-14)
    # the rank-1 Sherman–Morrison step with ‖x₁‖² + ‖x₂‖² would not solve this system
    trace = (keys**2).sum()
    rank_one = w0 - 0.3 / (1 + 0.3 * trace) * (w0 @ keys.T @ keys + g_w)
    assert (rank_one - layer.weight.detach()).abs().max() > 1e-3


@pytest.mark.equation("nl", 56)
def test_dgd_zero_grad_clears_the_gradients_and_the_recorded_inputs():
    # gram="mean": inputs recorded before zero_grad must not count, neither in Σ x xᵀ nor in N
    torch.manual_seed(5)
    layer = torch.nn.Linear(4, 3, bias=False).double()
    free = _param(torch.tensor([1.0, -2.0], dtype=F64))
    opt = DeltaGradientDescent(
        [{"params": layer.parameters()}, {"params": [free], "delta": False}], lr=0.3, gram="mean"
    )
    opt.track(layer)
    layer(_randn(3, 4, seed=74)).sum().backward()  # recorded: three inputs, then forgotten
    free.grad = torch.ones(2, dtype=F64)
    opt.zero_grad()
    assert layer.weight.grad is None and free.grad is None  # set_to_none=True by default
    x, y = _randn(2, 4, seed=75), _randn(2, 3, seed=76)
    w0 = layer.weight.detach().clone()
    (0.5 * ((layer(x) - y) ** 2).sum(-1)).mean().backward()
    free.grad = torch.tensor([4.0, 0.5], dtype=F64)
    g_w = layer.weight.grad.clone()
    opt.step()
    # mean objective over the N = 2 inputs seen since zero_grad: W(I + (η/2) Σ x xᵀ) = W₀ − ηG
    residual = _proximal_residual(layer.weight.detach(), w0, g_w, x, 0.3, scale=0.5)
    torch.testing.assert_close(residual, torch.zeros(3, 4, dtype=F64), rtol=0, atol=1e-12)
    # plain GD for the delta=False group: [1 − 0.3·4, −2 − 0.3·0.5] = [−0.2, −2.15]
    torch.testing.assert_close(free.detach(), torch.tensor([-0.2, -2.15], dtype=F64), rtol=0, atol=1e-15)
    # after the step nothing is recorded: zero_grad still works, and explicit set_to_none=False zeros
    layer(x).sum().backward()
    opt.zero_grad(set_to_none=False)
    assert torch.equal(layer.weight.grad, torch.zeros(3, 4, dtype=F64))
    opt.zero_grad()
    assert layer.weight.grad is None
    assert all("key_gram" not in s and "key_rows" not in s for s in opt.state.values())


@pytest.mark.equation("nl", 56)
def test_dgd_default_learning_rate_is_one_hundredth():
    free = _param(torch.tensor([1.0, -2.0], dtype=F64))
    opt = DeltaGradientDescent([{"params": [free], "delta": False}])
    free.grad = torch.tensor([4.0, 0.5], dtype=F64)
    opt.step()
    # [1 − 0.01·4, −2 − 0.01·0.5] = [0.96, −2.005]
    torch.testing.assert_close(free.detach(), torch.tensor([0.96, -2.005], dtype=F64), rtol=0, atol=1e-15)


@pytest.mark.equation("nl", 56)
def test_dgd_error_messages_in_full():
    layer = torch.nn.Linear(3, 2).double()
    opt = DeltaGradientDescent(layer.parameters(), lr=0.1)
    layer(_randn(3, seed=77)).sum().backward()
    with pytest.raises(ValueError) as caught:
        opt.step()
    assert str(caught.value) == (
        "DeltaGradientDescent has no recorded input for a parameter of shape (2, 3): "
        "call track(module) on its nn.Linear, or put it in a group with delta=False"
    )
    with pytest.raises(TypeError) as type_caught:
        opt.track(torch.nn.ReLU())
    assert str(type_caught.value) == "track needs an nn.Linear, got ReLU"
    with pytest.raises(ValueError) as caught:
        DeltaGradientDescent(layer.parameters(), lr=-0.5)
    assert str(caught.value) == "lr must be a finite float >= 0, got -0.5"


@pytest.mark.equation("nl", 56)
def test_dgd_batch_step_keeps_a_float32_layer_under_a_float64_default_dtype():
    # the identity of I + ηΣ x xᵀ takes the Gram matrix's dtype, not the global default
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        layer = torch.nn.Linear(4, 3, bias=False, dtype=torch.float32)
        with torch.no_grad():
            layer.weight.copy_(_randn(3, 4, seed=78, dtype=torch.float32))
        opt = DeltaGradientDescent(layer.parameters(), lr=0.3)
        opt.track(layer)
        w0 = layer.weight.detach().double()
        x, y = _randn(2, 4, seed=79, dtype=torch.float32), _randn(2, 3, seed=80, dtype=torch.float32)
        opt.zero_grad()
        (0.5 * ((layer(x) - y) ** 2).sum()).backward()
        g_w = layer.weight.grad.double()
        opt.step()
    finally:
        torch.set_default_dtype(previous)
    assert layer.weight.dtype == torch.float32
    residual = _proximal_residual(layer.weight.detach().double(), w0, g_w, x.double(), 0.3)
    torch.testing.assert_close(residual, torch.zeros(3, 4, dtype=F64), rtol=0, atol=1e-5)


@pytest.mark.equation("nl", 56)
def test_dgd_batch_step_builds_its_system_on_the_parameters_device():
    # a layer off the CPU (the meta device stands in for an accelerator): the solve stays on its device
    layer = torch.nn.Linear(4, 3, device="meta", dtype=F64)
    opt = DeltaGradientDescent(layer.parameters(), lr=0.3)
    opt.track(layer)
    opt.zero_grad()
    layer(torch.zeros(2, 4, device="meta", dtype=F64)).sum().backward()
    opt.step()
    assert layer.weight.device.type == "meta" and layer.bias.device.type == "meta"
    assert layer.weight.shape == (3, 4)


# --------------------------------------------------------------------------------------------------
# Eq. 48–52 — default learning rates and decay
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 49)
def test_delta_momentum_default_learning_rate_is_one_thousandth():
    # first step from m = 0: the correction m gᵀg vanishes, m₁ = −0.001 g
    w0, g = _randn(3, 4, seed=81), _randn(3, 4, seed=82)
    p = _param(w0)
    _run(DeltaMomentum([p]), [p], [[g]])
    torch.testing.assert_close(p.detach(), w0 - 0.001 * g, rtol=0, atol=1e-15)


@pytest.mark.equation("nl", 51)
def test_feature_map_momentum_default_learning_rate_is_one_thousandth():
    w0, g = _randn(3, 4, seed=83), _randn(3, 4, seed=84)
    p = _param(w0)
    _run(FeatureMapMomentum([p]), [p], [[g]])
    torch.testing.assert_close(p.detach(), w0 - 0.001 * g, rtol=0, atol=1e-15)


@pytest.mark.equation("nl", 52)
def test_nonlinear_output_momentum_default_learning_rate_and_decay():
    # σ = identity and the default linear memory: m₁ = −0.001 g₁, m₂ = 0.9 m₁ − 0.001 g₂, W = W₀ + m₁ + m₂
    w0, g1, g2 = _randn(3, 4, seed=85), _randn(3, 4, seed=86), _randn(3, 4, seed=87)
    p = _param(w0)
    _run(NonlinearOutputMomentum([p], output_fn=lambda m: m), [p], [[g1], [g2]])
    m1 = -0.001 * g1
    m2 = 0.9 * m1 - 0.001 * g2
    torch.testing.assert_close(p.detach(), w0 + m1 + m2, rtol=0, atol=1e-15)


@pytest.mark.equation("nl", 50)
def test_dmgd_default_learning_rate_with_a_linear_memory():
    w0, g1, g2 = _randn(3, 4, seed=88), _randn(3, 4, seed=89), _randn(3, 4, seed=90)
    p = _param(w0)
    _run(DeepMomentumGD([p], hidden=0), [p], [[g1], [g2]])
    m1 = -0.001 * g1
    m2 = 0.9 * m1 - 0.001 * g2
    torch.testing.assert_close(p.detach(), w0 + m1 + m2, rtol=0, atol=1e-15)


# --------------------------------------------------------------------------------------------------
# Eq. 50 — the memory's W₁: init_scale · N(0, 1/d_in), float64 draw seeded by seed · 1 000 003 + position
# --------------------------------------------------------------------------------------------------


def _w1_draw(hidden: int, d_in: int, seed: int, init_scale: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return init_scale / math.sqrt(d_in) * torch.randn(hidden, d_in, generator=generator, dtype=F64)


@pytest.mark.equation("nl", 50)
def test_dmgd_default_memory_has_sixteen_hidden_units_drawn_from_seed_zero():
    # α = 1 and W₂ = 0 at the first step: ∇W₁ = (W₂ᵀu) ⊙ (1 − H²) = 0, so W₁ keeps its initial draw
    p = _param(_randn(3, 4, seed=91))
    opt = DeepMomentumGD([p], alpha=1.0)
    _run(opt, [p], [[_randn(3, 4, seed=92)]])
    assert opt.state[p]["w1"].shape == (16, 4)
    torch.testing.assert_close(opt.state[p]["w1"], _w1_draw(16, 4, seed=0), rtol=0, atol=0)


@pytest.mark.equation("nl", 52)
def test_nonlinear_output_momentum_default_seed_is_zero():
    p = _param(_randn(3, 9, seed=93))
    opt = NonlinearOutputMomentum([p], alpha=1.0, hidden=2, output_fn=torch.tanh)
    _run(opt, [p], [[_randn(3, 9, seed=94)]])
    torch.testing.assert_close(opt.state[p]["w1"], _w1_draw(2, 9, seed=0), rtol=0, atol=0)


@pytest.mark.equation("nl", 50)
def test_dmgd_memory_initialisation_per_parameter_position_seed_and_scale():
    # three parameters over two groups, positions 0, 1, 2; d_in = 4, 9 and 1 (a vector is one column);
    # scale init_scale/√d_in = 0.375, 0.25, 0.75 — the float64 draw of seed·1 000 003 + position
    shapes = [(3, 4), (2, 9), (5,)]
    params = [_param(_randn(*s, seed=95 + i)) for i, s in enumerate(shapes)]
    opt = DeepMomentumGD(
        [{"params": params[:2]}, {"params": params[2:]}], alpha=1.0, hidden=3, init_scale=0.75, seed=2
    )
    _run(opt, params, [[_randn(*s, seed=98 + i) for i, s in enumerate(shapes)]])
    for position, (p, d_in) in enumerate(zip(params, [4, 9, 1], strict=True)):
        expected = _w1_draw(3, d_in, seed=2 * 1_000_003 + position, init_scale=0.75)
        torch.testing.assert_close(opt.state[p]["w1"], expected, rtol=0, atol=1e-15)


@pytest.mark.equation("nl", 50)
def test_dmgd_memory_of_a_float32_parameter_is_float32():
    # W₁ is drawn in float64 then cast to the parameter's dtype; the step runs in float32 throughout
    w0, g = _randn(3, 4, seed=101, dtype=torch.float32), _randn(3, 4, seed=102, dtype=torch.float32)
    p = _param(w0)
    opt = DeepMomentumGD([p], lr=0.1, alpha=1.0, hidden=3)
    _run(opt, [p], [[g]])
    assert all(opt.state[p][n].dtype == torch.float32 for n in ("linear", "w1", "b1", "w2"))
    torch.testing.assert_close(opt.state[p]["w1"], _w1_draw(3, 4, seed=0).float(), rtol=0, atol=0)
    # step 1 by hand: A = −ηu, W₂ = −ηu Hᵀ with H = tanh(W₁), b₁ = 0; W ← W₀ + A + W₂ H
    h = torch.tanh(_w1_draw(3, 4, seed=0))
    update = -0.1 * g.double() - 0.1 * g.double() @ h.T @ h
    torch.testing.assert_close(p.detach().double(), w0.double() + update, rtol=0, atol=1e-5)


@pytest.mark.equation("nl", 50)
def test_dmgd_memory_lives_on_the_parameters_device():
    # a parameter off the CPU (meta stands in for an accelerator): W₁, drawn on the CPU, is moved to it
    p = torch.nn.Parameter(torch.zeros(3, 4, device="meta", dtype=F64))
    opt = DeepMomentumGD([p], hidden=3)
    p.grad = torch.zeros(3, 4, device="meta", dtype=F64)
    opt.step()
    assert all(opt.state[p][n].device.type == "meta" for n in ("linear", "w1", "b1", "w2"))


# --------------------------------------------------------------------------------------------------
# Eq. 52 — the Newton–Schulz output: its norm floor and its message
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 52)
def test_newton_schulz_output_divides_by_the_norm_floored_at_ns_eps():
    # ‖m‖ < ns_eps = 10: X₀ = m/10 (not m/‖m‖), one cubic step X₁ = 1.5 X₀ − 0.5 X₀X₀ᵀX₀, W = W₀ + X₁
    w0, g = _randn(3, 4, seed=103), _randn(3, 4, seed=104)
    p = _param(w0)
    opt = NonlinearOutputMomentum([p], lr=0.1, alpha=0.5, ns_steps=1, ns_coefficients=NS_CUBIC, ns_eps=10.0)
    _run(opt, [p], [[g]])
    m = -0.1 * g
    assert m.norm() < 10
    x0 = m / 10
    x1 = 1.5 * x0 - 0.5 * x0 @ x0.T @ x0
    torch.testing.assert_close(p.detach(), w0 + x1, rtol=0, atol=1e-15)


@pytest.mark.equation("nl", 52)
def test_nonlinear_output_momentum_ns_eps_message_in_full():
    with pytest.raises(ValueError) as caught:
        NonlinearOutputMomentum([_param(torch.zeros(2, 2))], ns_eps=0.0)
    assert str(caught.value) == "ns_eps must be a finite float > 0, got 0.0"
