"""NL Definition 1 / NSAM (Eq. 6, 19–20, 98–99) and the inner objectives optimizers are instances of.

Expectations come from sympy (small symbolic cases), the normal equations, autograd of objectives written
out here, or gradient descent iterated on the objective until it stops moving. Column-vector convention:
a memory is (d_v, d_k) and reads M k; keys (n, d_k), values (n, d_v).
"""

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from neural_memory.nl.associative_memory import (
    DotProductObjective,
    ElementwiseMomentumObjective,
    L2RegressionObjective,
    MatrixMomentumObjective,
    OrthogonalityObjective,
    associative_memory,
    gd_step,
    optimal_elementwise_momentum,
    optimal_matrix_momentum,
    proximal_step,
)

from .helpers import F64, tensors
from .helpers import autograd as _autograd
from .helpers import randn as _randn


def integer_tensors(*shape: int):
    """float64 tensors with small integer entries: exactly rank-deficient draws, no near-singular ones."""
    return arrays(np.float64, shape, elements=st.integers(-3, 3).map(float)).map(torch.from_numpy)


def _argmin_by_descent(loss_fn, start: torch.Tensor, lr: float, steps: int) -> torch.Tensor:
    """Gradient descent on ``loss_fn`` with autograd until it stops moving: the 'iterative definition'."""
    x = start.clone()
    for _ in range(steps):
        x = x - lr * _autograd(loss_fn, x)
    return x


def _sympy_matrix(name: str, rows: int, cols: int) -> sp.Matrix:
    return sp.Matrix(rows, cols, lambda i, j: sp.Symbol(f"{name}{i}{j}"))


def _sympy_sq(mat: sp.Matrix) -> sp.Expr:
    """Squared Frobenius norm of a sympy matrix (a polynomial, unlike ``norm()**2``)."""
    return sum(e**2 for e in mat)


def _sympy_argmin(objective: sp.Expr, unknown: sp.Matrix) -> sp.Matrix:
    """Stationary point of a strictly convex quadratic in the entries of ``unknown``."""
    entries = list(unknown)
    (solution,) = sp.solve([sp.diff(objective, e) for e in entries], entries, dict=True)
    return unknown.subs(solution)


# --------------------------------------------------------------------------------------------------
# Eq. 6 — the memory is the minimiser of its objective
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 6)
def test_l2_memory_is_the_least_squares_solution_of_the_normal_equations():
    keys, values = _randn(7, 3, seed=1), _randn(7, 2, seed=2)
    expected = torch.linalg.solve(keys.T @ keys, keys.T @ values).T  # M Kᵀ K = Vᵀ K
    got = associative_memory(L2RegressionObjective(), keys, values)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 6)
@given(keys=integer_tensors(5, 3), values=tensors(5, 2))
def test_l2_memory_is_stationary_for_any_keys(keys, values):
    # also rank-deficient keys (zeros and repeated rows): the min-norm solution is a minimiser
    memory = associative_memory(L2RegressionObjective(), keys, values)
    grad = _autograd(lambda m: 0.5 * ((keys @ m.T - values) ** 2).sum(), memory)
    torch.testing.assert_close(grad, torch.zeros_like(grad), rtol=0, atol=1e-8)


@pytest.mark.equation("nl", 6)
def test_unbounded_objective_has_no_memory():
    with pytest.raises(TypeError, match="no closed-form minimiser"):
        associative_memory(DotProductObjective(), _randn(2, 3), _randn(2, 2))


@pytest.mark.equation("nl", 6)
def test_the_refusal_of_an_unbounded_objective_names_its_class():
    with pytest.raises(TypeError) as caught:
        associative_memory(DotProductObjective(), _randn(2, 3), _randn(2, 2))
    assert str(caught.value) == "DotProductObjective has no closed-form minimiser (it may be unbounded)"


# --------------------------------------------------------------------------------------------------
# Eq. 9, 13, 34 — the dot-product memory: GD and momentum
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 9)
def test_dot_product_memory_with_the_output_gradient_is_a_gd_step_on_a_linear_layer():
    # a linear layer y = W x under any loss: GD is the dot-product memory with key x, value ∇_y L
    w, x, target = _randn(3, 4, seed=1), _randn(4, seed=2), _randn(3, seed=3)
    loss = lambda weight: torch.logsumexp(weight @ x, 0) - (weight @ x) @ target  # noqa: E731
    lss = _autograd(lambda y: torch.logsumexp(y, 0) - y @ target, w @ x)
    got = DotProductObjective().proximal_step(w, x[None], lss[None], 0.3)
    torch.testing.assert_close(got, w - 0.3 * _autograd(loss, w), rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 9)
def test_dot_product_proximal_step_equals_the_sympy_argmin():
    w_t, w, x, u = (
        _sympy_matrix("a", 2, 2),
        _sympy_matrix("w", 2, 2),
        _sympy_matrix("x", 2, 1),
        _sympy_matrix("u", 2, 1),
    )
    eta = sp.Symbol("eta", positive=True)
    objective = (u.T * w * x)[0] + _sympy_sq(w - w_t) / (2 * eta)
    expected = _sympy_argmin(sp.expand(objective), w)
    numbers = dict(zip(list(w_t) + list(x) + list(u), [0.5, -1, 2, 0.25, 1.5, -2, 3, 0.75], strict=True))
    numbers[eta] = sp.Rational(1, 4)
    expected_t = torch.tensor(np.array(expected.subs(numbers), dtype=np.float64))
    got = DotProductObjective().proximal_step(
        torch.tensor([[0.5, -1.0], [2.0, 0.25]], dtype=F64),
        torch.tensor([[1.5, -2.0]], dtype=F64),
        torch.tensor([[3.0, 0.75]], dtype=F64),
        0.25,
    )
    torch.testing.assert_close(got, expected_t, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 13)
def test_momentum_is_the_dot_product_memory_of_the_negative_output_gradient():
    # Eq. 13: argmin −⟨m x, ∇_y L⟩ + ‖m − m_t‖²/(2η) = m_t + η ∇_y L xᵀ (Eq. 11)
    m_t, x, lss = _randn(3, 4, seed=1), _randn(4, seed=2), _randn(3, seed=3)
    got = DotProductObjective().proximal_step(m_t, x[None], -lss[None], 0.2)
    torch.testing.assert_close(got, m_t + 0.2 * torch.outer(lss, x), rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 13)
@given(m=tensors(3, 4), x=tensors(4), lss=tensors(3))
def test_both_forms_of_eq13_have_the_same_gradient(m, x, lss):
    # −⟨m, ∇_W L⟩ with ∇_W L = ∇_y L xᵀ, and −⟨m x, ∇_y L⟩: equal gradients in m
    weight_form = _autograd(lambda mm: -(mm * torch.outer(lss, x)).sum(), m)
    output_form = DotProductObjective().grad(m, x[None], -lss[None])
    torch.testing.assert_close(output_form, weight_form, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 34)
def test_one_gd_step_on_the_momentum_objective_is_eq33_with_alpha_one():
    m_t, x_hat, delta = _randn(3, 4, seed=4), _randn(4, seed=5), _randn(3, seed=6)
    got = gd_step(DotProductObjective(), m_t, x_hat[None], delta[None], 0.1)
    torch.testing.assert_close(got, m_t - 0.1 * torch.outer(delta, x_hat), rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 34)
@given(m=tensors(2, 3), keys=tensors(4, 3), values=tensors(4, 2))
def test_dot_product_gradient_equals_autograd(m, keys, values):
    objective = DotProductObjective()
    expected = _autograd(lambda mm: objective.loss(mm, keys, values), m)
    torch.testing.assert_close(objective.grad(m, keys, values), expected, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# Eq. 19–20, 41 — one GD step = argmin of the linearised objective plus the proximal term
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 20)
def test_gd_step_is_the_argmin_of_the_linearised_objective_by_sympy():
    # L2 objective ½‖Φ k − v‖², Φ 1×2: linearise at θ_t, add ‖Φ − θ_t‖²/(2η), solve with sympy
    phi, theta = _sympy_matrix("p", 1, 2), sp.Matrix([[sp.Rational(1, 2), -2]])
    k, v, eta = sp.Matrix([3, sp.Rational(-1, 4)]), sp.Matrix([[1]]), sp.Rational(1, 5)
    grad_at_theta = (theta * k - v) * k.T
    linearised = (grad_at_theta * (phi - theta).T)[0] + ((phi - theta) * (phi - theta).T)[0] / (2 * eta)
    expected = torch.tensor(np.array(_sympy_argmin(linearised, phi), dtype=np.float64))
    got = gd_step(
        L2RegressionObjective(),
        torch.tensor([[0.5, -2.0]], dtype=F64),
        torch.tensor([[3.0, -0.25]], dtype=F64),
        torch.tensor([[1.0]], dtype=F64),
        0.2,
    )
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 19)
def test_gd_step_is_the_proximal_step_of_the_output_space_linearisation():
    # Eq. 19: argmin ⟨Φ x, ∇_y L(θ_t)⟩ + ‖Φ − θ_t‖²/(2η) for a level whose objective is L2 regression
    theta, keys, values = _randn(2, 3, seed=7), _randn(5, 3, seed=8), _randn(5, 2, seed=9)
    lss = keys @ theta.T - values  # ∇_y of ½‖y − v‖² at y = θ k, one row per pair
    expected = DotProductObjective().proximal_step(theta, keys, lss, 0.05)
    got = gd_step(L2RegressionObjective(), theta, keys, values, 0.05)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 41)
def test_learning_a_linear_preconditioner_by_gd_is_the_delta_rule():
    # P_{t+1} = P_t − ζ ∇_P ½‖P ĝ − g‖² = P_t − ζ (P ĝ − g) ĝᵀ
    p, g_hat, g = _randn(3, 3, seed=10), _randn(3, seed=11), _randn(3, seed=12)
    got = gd_step(L2RegressionObjective(), p, g_hat[None], g[None], 0.3)
    torch.testing.assert_close(got, p - 0.3 * torch.outer(p @ g_hat - g, g_hat), rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 19)
def test_gd_step_rejects_a_negative_step():
    with pytest.raises(ValueError, match="lr must be a finite float >= 0"):
        gd_step(DotProductObjective(), _randn(2, 2), _randn(1, 2), _randn(1, 2), -0.1)


@pytest.mark.equation("nl", 19)
def test_gd_step_refuses_a_bool_step():
    # bool is an int subclass: True must not pass as the step 1.0
    with pytest.raises(ValueError) as caught:
        gd_step(DotProductObjective(), _randn(2, 2), _randn(1, 2), _randn(1, 2), True)
    assert str(caught.value) == "lr must be a finite float >= 0, got True"


# --------------------------------------------------------------------------------------------------
# Eq. 56, 98–99 — the exact proximal step
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 98)
def test_proximal_step_on_a_quadratic_equals_the_sympy_argmin():
    phi, theta = _sympy_matrix("p", 2, 2), sp.Matrix([[1, -1], [sp.Rational(1, 2), 2]])
    k, v, eta = sp.Matrix([2, 1]), sp.Matrix([-1, sp.Rational(3, 2)]), sp.Rational(2, 3)
    objective = _sympy_sq(phi * k - v) / 2 + _sympy_sq(phi - theta) / (2 * eta)
    expected = torch.tensor(np.array(_sympy_argmin(sp.expand(objective), phi), dtype=np.float64))
    theta_t = torch.tensor([[1.0, -1.0], [0.5, 2.0]], dtype=F64)
    got = proximal_step(
        L2RegressionObjective(),
        theta_t,
        torch.tensor([[2.0, 1.0]], dtype=F64),
        torch.tensor([[-1.0, 1.5]], dtype=F64),
        2 / 3,
    )
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 99)
def test_proximal_step_equals_descent_iterated_to_convergence():
    theta, keys, values = _randn(3, 4, seed=13), _randn(6, 4, seed=14), _randn(6, 3, seed=15)
    eta = 0.1
    objective = lambda m: 0.5 * ((keys @ m.T - values) ** 2).sum() + ((m - theta) ** 2).sum() / (2 * eta)  # noqa: E731
    curvature = torch.linalg.eigvalsh(keys.T @ keys).max().item() + 1 / eta
    expected = _argmin_by_descent(objective, theta, 1 / curvature, 400)
    got = proximal_step(L2RegressionObjective(), theta, keys, values, eta)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


@pytest.mark.equation("nl", 99)
def test_proximal_step_of_the_linear_objective_is_the_gd_step():
    theta, keys, values = _randn(3, 4, seed=16), _randn(2, 4, seed=17), _randn(2, 3, seed=18)
    got = proximal_step(DotProductObjective(), theta, keys, values, 0.7)
    torch.testing.assert_close(got, theta - 0.7 * values.T @ keys, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 99)
def test_objective_without_a_closed_form_proximal_step_is_refused():
    with pytest.raises(TypeError, match="no closed-form proximal step"):
        proximal_step(OrthogonalityObjective(), _randn(2, 2), _randn(2, 2), None, 0.1)


@pytest.mark.equation("nl", 99)
def test_the_refusal_of_a_missing_proximal_step_names_the_class():
    with pytest.raises(TypeError) as caught:
        proximal_step(OrthogonalityObjective(), _randn(2, 2), _randn(2, 2), None, 0.1)
    assert str(caught.value) == "OrthogonalityObjective has no closed-form proximal step"


@pytest.mark.equation("nl", 56)
@given(w=tensors(3, 4), x=tensors(4), u=tensors(3), eta=st.floats(0.01, 10.0))
def test_dgd_objective_step_satisfies_its_first_order_condition(w, x, u, eta):
    # (W* x − u) xᵀ + (W* − W_t)/η = 0
    new = L2RegressionObjective().proximal_step(w, x[None], u[None], eta)
    residual = torch.outer(new @ x - u, x) + (new - w) / eta
    torch.testing.assert_close(residual, torch.zeros_like(residual), rtol=0, atol=1e-9)


@pytest.mark.equation("nl", 56)
@given(m=tensors(2, 3), keys=tensors(4, 3), values=tensors(4, 2))
def test_l2_gradient_equals_autograd(m, keys, values):
    objective = L2RegressionObjective()
    expected = _autograd(lambda mm: objective.loss(mm, keys, values), m)
    torch.testing.assert_close(objective.grad(m, keys, values), expected, rtol=0, atol=1e-10)


@pytest.mark.equation("nl", 56)
def test_pairs_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match=r"keys must be \(n, d_k=3\)"):
        L2RegressionObjective().loss(_randn(2, 3), _randn(4, 2), _randn(4, 2))
    with pytest.raises(ValueError, match=r"values must be \(n=4, d_v=2\)"):
        L2RegressionObjective().loss(_randn(2, 3), _randn(4, 3), _randn(4, 3))


@pytest.mark.equation("nl", 56)
def test_a_memory_that_is_not_a_matrix_is_refused():
    with pytest.raises(ValueError) as caught:
        L2RegressionObjective().loss(_randn(3), _randn(4, 3), _randn(4, 2))
    assert str(caught.value) == "memory must be (d_v, d_k), got shape (3,)"


@pytest.mark.equation("nl", 56)
def test_dgd_proximal_step_keeps_the_dtype_and_device_of_the_memory():
    # the identity of M (η KᵀK + I) must follow the memory: bfloat16 stays bfloat16, meta stays meta
    bf16 = torch.bfloat16
    memory = torch.zeros(2, 3, dtype=bf16, device="meta")
    keys = torch.zeros(4, 3, dtype=bf16, device="meta")
    values = torch.zeros(4, 2, dtype=bf16, device="meta")
    got = L2RegressionObjective().proximal_step(memory, keys, values, 0.5)
    assert (got.shape, got.dtype, got.device.type) == ((2, 3), bf16, "meta")


# --------------------------------------------------------------------------------------------------
# Eq. 101–102 — element-wise momentum objective and its minimiser
# --------------------------------------------------------------------------------------------------


def _eq101_loss(m, grads, p, lam):
    return sum(((m * g - p) ** 2).sum() for g in grads) + lam * (m**2).sum()


@pytest.mark.equation("nl", 101)
@given(grads=tensors(4, 2, 3), p=tensors(2, 3), lam=st.floats(0.1, 5.0))
def test_elementwise_minimiser_is_stationary(grads, p, lam):
    m_star = associative_memory(ElementwiseMomentumObjective(lam), grads, p)
    grad = _autograd(lambda m: _eq101_loss(m, grads, p, lam), m_star)
    torch.testing.assert_close(grad, torch.zeros_like(grad), rtol=0, atol=1e-9)


@pytest.mark.equation("nl", 101)
@given(m=tensors(2, 3), grads=tensors(4, 2, 3), p=tensors(2, 3), lam=st.floats(0.0, 5.0))
def test_elementwise_gradient_equals_autograd(m, grads, p, lam):
    objective = ElementwiseMomentumObjective(lam)
    expected = _autograd(lambda mm: _eq101_loss(mm, grads, p, lam), m)
    torch.testing.assert_close(objective.grad(m, grads, p), expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(objective.loss(m, grads, p), _eq101_loss(m, grads, p, lam), rtol=0, atol=1e-10)


@pytest.mark.equation("nl", 101)
def test_elementwise_minimiser_needs_curvature_everywhere():
    grads = torch.zeros(3, 2, dtype=F64)
    with pytest.raises(ValueError, match="use lam > 0"):
        associative_memory(ElementwiseMomentumObjective(0.0), grads, torch.ones(2, dtype=F64))
    with pytest.raises(ValueError, match="lam must be a finite float >= 0"):
        ElementwiseMomentumObjective(-1.0)


@pytest.mark.equation("nl", 101)
def test_elementwise_objective_defaults_to_no_ridge():
    # m = (1, 2), g₁ = (1, 0), g₂ = (1, 1), P = (2, 1): m⊙g₁ − P = (−1, −1), m⊙g₂ − P = (−1, 1) → 4
    m, p = torch.tensor([1.0, 2.0], dtype=F64), torch.tensor([2.0, 1.0], dtype=F64)
    grads = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=F64)
    assert ElementwiseMomentumObjective().loss(m, grads, p).item() == 4.0
    # with λ = 0.5: 4 + 0.5 · ‖m‖² = 4 + 0.5 · 5 = 6.5
    assert ElementwiseMomentumObjective(0.5).loss(m, grads, p).item() == 6.5


@pytest.mark.equation("nl", 101)
def test_elementwise_objective_refuses_a_bool_ridge():
    with pytest.raises(ValueError) as caught:
        ElementwiseMomentumObjective(True)
    assert str(caught.value) == "lam must be a finite float >= 0, got True"


def assert_grad_refuses(objective, memory, cases, message):
    """``objective.grad`` refuses each ``(keys, values, shapes)`` case with ``message.format(shapes)``."""
    for keys, values, got_shapes in cases:
        with pytest.raises(ValueError) as caught:
            objective.grad(memory, keys, values)
        assert str(caught.value) == message.format(got_shapes)


@pytest.mark.equation("nl", 101)
def test_elementwise_objective_refuses_mismatched_pairs_with_exact_messages():
    objective, m = ElementwiseMomentumObjective(), torch.zeros(2, 3, dtype=F64)
    cases = [
        (torch.zeros(4, 3, 2, dtype=F64), torch.zeros(2, 3, dtype=F64), "(4, 3, 2) and (2, 3)"),
        (torch.zeros(4, 2, 3, dtype=F64), torch.zeros(3, 2, dtype=F64), "(4, 2, 3) and (3, 2)"),
        (torch.zeros(4, 2, 3, dtype=F64), None, "(4, 2, 3) and None"),
    ]
    assert_grad_refuses(objective, m, cases, "keys must be (n, *(2, 3)) and values (2, 3), got {}")


@pytest.mark.equation("nl", 101)
def test_elementwise_minimiser_refusal_message_is_exact():
    with pytest.raises(ValueError) as caught:
        ElementwiseMomentumObjective().minimiser(torch.zeros(3, 2, dtype=F64), torch.ones(2, dtype=F64))
    assert str(caught.value) == (
        "the minimiser is not unique where every gradient is 0 and lam = 0: use lam > 0"
    )


@pytest.mark.equation("nl", 102)
def test_optimal_elementwise_momentum_with_unit_betas_minimises_eq101():
    grads, p, lam = _randn(5, 3, 2, seed=20), _randn(3, 2, seed=21), 0.3
    m_star = optimal_elementwise_momentum(p, grads.sum(0), (grads**2).sum(0), lam)
    grad = _autograd(lambda m: _eq101_loss(m, grads, p, lam), m_star)
    torch.testing.assert_close(grad, torch.zeros_like(grad), rtol=0, atol=1e-10)


@pytest.mark.equation("nl", 102)
def test_optimal_elementwise_momentum_scales_with_beta1_over_beta2():
    # M̃ = β₁ Σ g, H = β₂ Σ g², λ = 0: m* = (β₁/β₂) P Σ g / Σ g²; one element by hand:
    # g = (1, −2), P = 3: Σ g = −1, Σ g² = 5, β₁ = 0.5, β₂ = 0.25 → m* = 2 · 3 · (−1)/5 = −1.2
    got = optimal_elementwise_momentum(
        torch.tensor([3.0], dtype=F64), torch.tensor([-0.5], dtype=F64), torch.tensor([1.25], dtype=F64)
    )
    torch.testing.assert_close(got, torch.tensor([-1.2], dtype=F64), rtol=0, atol=1e-15)


@pytest.mark.equation("nl", 102)
def test_optimal_elementwise_momentum_refuses_zero_curvature():
    # H = (0, 1), λ = 0: the first element has H + λ = 0 (a gradient that was always 0)
    with pytest.raises(ValueError) as caught:
        optimal_elementwise_momentum(
            torch.ones(2, dtype=F64), torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
        )
    assert str(caught.value) == "h + lam must be > 0 everywhere (use lam > 0 where a gradient was always 0)"


# --------------------------------------------------------------------------------------------------
# Eq. 106–107 — matrix momentum objective and its minimiser (inverse on the right)
# --------------------------------------------------------------------------------------------------


def _eq106_loss(m, grads, p, lam):
    return sum(((m @ g - p) ** 2).sum() for g in grads) + lam * (m**2).sum()


@pytest.mark.equation("nl", 106)
@given(grads=tensors(4, 3, 2), p=tensors(2, 2), lam=st.floats(0.1, 5.0))
def test_matrix_minimiser_is_stationary(grads, p, lam):
    m_star = associative_memory(MatrixMomentumObjective(lam), grads, p)
    grad = _autograd(lambda m: _eq106_loss(m, grads, p, lam), m_star)
    torch.testing.assert_close(grad, torch.zeros_like(grad), rtol=0, atol=1e-8)


@pytest.mark.equation("nl", 106)
@given(m=tensors(2, 3), grads=tensors(4, 3, 2), p=tensors(2, 2), lam=st.floats(0.0, 5.0))
def test_matrix_gradient_equals_autograd(m, grads, p, lam):
    objective = MatrixMomentumObjective(lam)
    expected = _autograd(lambda mm: _eq106_loss(mm, grads, p, lam), m)
    torch.testing.assert_close(objective.grad(m, grads, p), expected, rtol=0, atol=1e-10)


@pytest.mark.equation("nl", 107)
def _hand_matrix_case():
    """g₁ = (1, 0)ᵀ, g₂ = (1, 1)ᵀ as (n=2, d=2, q=1) keys."""
    return torch.tensor([[[1.0], [0.0]], [[1.0], [1.0]]], dtype=F64)


@pytest.mark.equation("nl", 106)
def test_matrix_objective_loss_by_hand():
    # m = (1 2), P = (2): m g₁ − P = 1 − 2 = −1, m g₂ − P = 3 − 2 = 1 → Σ‖·‖² = 2; ‖m‖² = 1 + 4 = 5
    m, p = torch.tensor([[1.0, 2.0]], dtype=F64), torch.tensor([[2.0]], dtype=F64)
    grads = _hand_matrix_case()
    assert MatrixMomentumObjective(0.5).loss(m, grads, p).item() == 4.5  # 2 + 0.5 · 5
    assert MatrixMomentumObjective().loss(m, grads, p).item() == 2.0  # default λ = 0


@pytest.mark.equation("nl", 106)
def test_matrix_memory_with_more_rows_than_columns_of_p_by_hand():
    # P (p=2, q=1) = (2, 1)ᵀ: M̃ = Σ gᵀ = (2 1), H = Σ g gᵀ = [[2, 1], [1, 1]], H⁻¹ = [[1, −1], [−1, 2]]
    # m* = P M̃ H⁻¹ = [[4, 2], [2, 1]] H⁻¹ = [[2, 0], [1, 0]]; it maps g₁, g₂ to P exactly (loss 0)
    p = torch.tensor([[2.0], [1.0]], dtype=F64)
    got = associative_memory(MatrixMomentumObjective(), _hand_matrix_case(), p)
    torch.testing.assert_close(got, torch.tensor([[2.0, 0.0], [1.0, 0.0]], dtype=F64), rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 106)
def test_matrix_objective_refuses_mismatched_pairs_with_exact_messages():
    objective, m = MatrixMomentumObjective(), torch.zeros(2, 3, dtype=F64)
    cases = [
        (torch.zeros(4, 3, dtype=F64), torch.zeros(2, 1, dtype=F64), "(4, 3) and (2, 1)"),
        (torch.zeros(4, 2, 1, dtype=F64), torch.zeros(2, 1, dtype=F64), "(4, 2, 1) and (2, 1)"),
        (torch.zeros(4, 3, 1, dtype=F64), torch.zeros(2, 2, dtype=F64), "(4, 3, 1) and (2, 2)"),
        (torch.zeros(4, 3, 1, dtype=F64), None, "(4, 3, 1) and None"),
    ]
    assert_grad_refuses(objective, m, cases, "keys must be (n, d=3, q) and values (p=2, q), got {}")


@pytest.mark.equation("nl", 107)
def test_optimal_matrix_momentum_defaults_to_no_ridge_by_hand():
    # P = (2), M̃ = (2 1), H = [[2, 1], [1, 1]] (the hand case above): m* = (4 2) H⁻¹ = (2 0)
    h = torch.tensor([[2.0, 1.0], [1.0, 1.0]], dtype=F64)
    got = optimal_matrix_momentum(torch.tensor([[2.0]], dtype=F64), torch.tensor([[2.0, 1.0]], dtype=F64), h)
    torch.testing.assert_close(got, torch.tensor([[2.0, 0.0]], dtype=F64), rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 107)
def test_optimal_matrix_momentum_refusal_messages_are_exact():
    with pytest.raises(ValueError) as caught:  # h not square
        optimal_matrix_momentum(_randn(1, 1), _randn(1, 2), _randn(2, 3))
    assert str(caught.value) == "h must be (d, d) and m_tilde (q, d), got (2, 3), (1, 2)"
    with pytest.raises(ValueError) as caught:  # a vector m_tilde of the wrong length
        optimal_matrix_momentum(_randn(1, 1), _randn(2), _randn(3, 3))
    assert str(caught.value) == "h must be (d, d) and m_tilde (q, d), got (3, 3), (2,)"
    with pytest.raises(ValueError) as caught:  # a vector m_tilde of the right length is still not (q, d)
        optimal_matrix_momentum(_randn(1, 3), _randn(3), _randn(3, 3))
    assert str(caught.value) == "h must be (d, d) and m_tilde (q, d), got (3, 3), (3,)"


@pytest.mark.equation("nl", 107)
def test_optimal_matrix_momentum_keeps_the_device():
    p, m_tilde = torch.zeros(2, 1, dtype=F64, device="meta"), torch.zeros(1, 3, dtype=F64, device="meta")
    got = optimal_matrix_momentum(p, m_tilde, torch.zeros(3, 3, dtype=F64, device="meta"), 0.5)
    assert (got.shape, got.device.type) == ((2, 3), "meta")


@pytest.mark.equation("nl", 107)
def test_optimal_matrix_momentum_minimises_eq106_and_the_printed_left_inverse_does_not():
    # vector gradients (q = 1), β₁ = β₂ = 1: M̃ = Σ gᵀ (1, d), H = Σ g gᵀ (d, d)
    grads, p, lam = _randn(6, 4, 1, seed=22), _randn(3, 1, seed=23), 0.2
    m_tilde, h = grads.sum(0).T, (grads @ grads.mT).sum(0)
    m_star = optimal_matrix_momentum(p, m_tilde, h, lam)
    grad = _autograd(lambda m: _eq106_loss(m, grads, p, lam), m_star)
    torch.testing.assert_close(grad, torch.zeros_like(grad), rtol=0, atol=1e-10)
    # the printed order needs P M̃ to be square; with a (d, d) P (q = d) it is defined and wrong
    grads_sq, p_sq = _randn(6, 4, 4, seed=24), _randn(4, 4, seed=25)
    h_sq, m_sq = (grads_sq @ grads_sq.mT).sum(0), grads_sq.sum(0).T
    printed = torch.linalg.solve(h_sq + lam * torch.eye(4, dtype=F64), p_sq @ m_sq)
    printed_grad = _autograd(lambda m: _eq106_loss(m, grads_sq, p_sq, lam), printed)
    assert printed_grad.abs().max() > 1e-2
    ours = optimal_matrix_momentum(p_sq, m_sq, h_sq, lam)
    ours_grad = _autograd(lambda m: _eq106_loss(m, grads_sq, p_sq, lam), ours)
    torch.testing.assert_close(ours_grad, torch.zeros_like(ours_grad), rtol=0, atol=1e-9)


@pytest.mark.equation("nl", 107)
def test_optimal_matrix_momentum_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match=r"h must be \(d, d\)"):
        optimal_matrix_momentum(_randn(2, 1), _randn(1, 3), _randn(2, 2))
    with pytest.raises(ValueError, match=r"p must be \(p, q=1\)"):
        optimal_matrix_momentum(_randn(2, 2), _randn(1, 3), _randn(3, 3))


# --------------------------------------------------------------------------------------------------
# Eq. 43 — orthogonality objective
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 43)
def test_orthogonality_objective_vanishes_on_orthonormal_columns():
    q, _ = torch.linalg.qr(_randn(5, 3, seed=26))
    assert OrthogonalityObjective(anchor=False).loss(q, _randn(5, 3, seed=27)).abs() < 1e-28
    assert OrthogonalityObjective().loss(q, q).abs() < 1e-28
    assert OrthogonalityObjective().loss(2 * q, 2 * q) > 1.0


@pytest.mark.equation("nl", 43)
@given(o=tensors(4, 3, bound=2.0), g=tensors(4, 3, bound=2.0), anchor=st.booleans())
def test_orthogonality_gradient_equals_autograd(o, g, anchor):
    objective = OrthogonalityObjective(anchor)
    expected = _autograd(lambda oo: objective.loss(oo, g), o)
    torch.testing.assert_close(objective.grad(o, g), expected, rtol=0, atol=1e-10)


@pytest.mark.equation("nl", 43)
def test_printed_eq43_is_twice_the_unanchored_objective():
    o = _randn(4, 3, seed=28)
    printed = ((o.T @ o - torch.eye(3, dtype=F64)) ** 2).sum()  # ‖OᵀO − I‖²_F as printed
    torch.testing.assert_close(
        2 * OrthogonalityObjective(anchor=False).loss(o, o), printed, rtol=1e-14, atol=0
    )


@pytest.mark.equation("nl", 43)
def test_orthogonality_objective_keeps_the_dtype_of_the_memory():
    # O = g = ones(3, 2): OᵀO − I = [[2, 3], [3, 2]] → ½ (4 + 9 + 9 + 4) = 13; 2 O (OᵀO − I) = 10 everywhere
    o = torch.ones(3, 2, dtype=torch.bfloat16)
    loss, grad = OrthogonalityObjective().loss(o, o), OrthogonalityObjective().grad(o, o)
    assert loss.dtype == grad.dtype == torch.bfloat16
    assert loss.item() == 13.0 and bool((grad == 10.0).all())


@pytest.mark.equation("nl", 43)
def test_orthogonality_objective_keeps_the_device_of_the_memory():
    o = torch.zeros(3, 2, dtype=F64, device="meta")
    for anchor in (True, False):
        objective = OrthogonalityObjective(anchor)
        assert objective.loss(o, o).device.type == objective.grad(o, o).device.type == "meta"


@pytest.mark.equation("nl", 43)
def test_orthogonality_objective_refuses_unequal_shapes():
    # (1, 2) would broadcast against (3, 2) in the anchor term: it must be refused, not broadcast
    with pytest.raises(ValueError) as caught:
        OrthogonalityObjective().loss(_randn(3, 2), _randn(1, 2))
    assert str(caught.value) == (
        "memory and keys must be equal (m, n) matrices, got torch.Size([3, 2]), torch.Size([1, 2])"
    )
