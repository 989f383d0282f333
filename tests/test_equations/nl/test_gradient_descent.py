"""NL §2: SGD (Eq. 1, 23), GD as a proximal step (Eq. 2), FTRL (Eq. 3) and GD with the output-space
surprise (Eq. 8) — ``neural_memory.nl.gradient_descent``.

Expectations come from sympy argmins, autograd of losses written out here, GD unrolled in the test, or numbers
worked by hand (in the comments). float64 throughout.
"""

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given
from hypothesis import strategies as st

from neural_memory.nl.gradient_descent import ftrl_iterate, output_surprise_step, sgd_step

from .helpers import F64, tensors
from .helpers import autograd as _autograd
from .helpers import randn as _randn


def _sympy_matrix(name: str, rows: int, cols: int) -> sp.Matrix:
    return sp.Matrix(rows, cols, lambda i, j: sp.Symbol(f"{name}{i}{j}"))


def _sympy_argmin(objective: sp.Expr, unknown: sp.Matrix) -> sp.Matrix:
    entries = list(unknown)
    (solution,) = sp.solve([sp.diff(objective, e) for e in entries], entries, dict=True)
    return unknown.subs(solution)


def _to_torch(mat: sp.Matrix) -> torch.Tensor:
    return torch.tensor(np.array(mat.evalf(30), dtype=np.float64))


# --------------------------------------------------------------------------------------------------
# Eq. 1 / 23 — the SGD step
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 1)
def test_sgd_step_on_the_squared_error_is_w_minus_lr_error_outer_x():
    # L = ½‖W x − y‖²: ∇_W L = (W x − y) xᵀ (catalog, Eq. 1 check)
    w, x, y = _randn(3, 4, seed=1), _randn(4, seed=2), _randn(3, seed=3)
    got = sgd_step(lambda weight: 0.5 * ((weight @ x - y) ** 2).sum(), w, 0.1)
    torch.testing.assert_close(got, w - 0.1 * torch.outer(w @ x - y, x), rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 1)
def test_sgd_step_by_hand_on_a_scalar():
    # L(w) = (2w − 1)², w = 1: ∇ = 4(2w − 1) = 4, step 0.05 -> 1 − 0.2 = 0.8
    got = sgd_step(lambda w: (2 * w - 1) ** 2, torch.tensor(1.0, dtype=F64), 0.05)
    assert got.item() == pytest.approx(0.8, abs=1e-15)


@pytest.mark.equation("nl", 1)
@given(w=tensors(2, 3), x=tensors(3), y=tensors(2))
def test_small_sgd_step_does_not_increase_the_loss(w, x, y):
    loss = lambda weight: 0.5 * ((weight @ x - y) ** 2).sum()  # noqa: E731
    # smoothness constant of this loss is ‖x‖²: a step below 1/‖x‖² cannot increase it
    lr = 0.5 / (1.0 + float(x @ x))
    assert loss(sgd_step(loss, w, lr)) <= loss(w) + 1e-12


@pytest.mark.equation("nl", 23)
def test_sgd_on_the_generic_objective_steps_every_parameter_tensor():
    # Φ = (W, b) of an affine model under L(Φ; x, y) = ½‖W x + b − y‖²: ∇_W = r xᵀ, ∇_b = r, r = W x + b − y
    w, b, x, y = _randn(2, 3, seed=4), _randn(2, seed=5), _randn(3, seed=6), _randn(2, seed=7)
    new_w, new_b = sgd_step(lambda w_, b_: 0.5 * ((w_ @ x + b_ - y) ** 2).sum(), (w, b), 0.2)
    r = w @ x + b - y
    torch.testing.assert_close(new_w, w - 0.2 * torch.outer(r, x), rtol=0, atol=1e-12)
    torch.testing.assert_close(new_b, b - 0.2 * r, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 1)
def test_sgd_step_rejects_bad_input():
    w = _randn(2, 2)
    loss = lambda weight: (weight**2).sum()  # noqa: E731
    for bad in (0.0, -0.1, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="lr must be a finite float > 0"):
            sgd_step(loss, w, bad)
    with pytest.raises(ValueError, match="loss_fn must return a scalar"):
        sgd_step(lambda weight: weight**2, w, 0.1)
    with pytest.raises(TypeError, match="params must be a tensor or a sequence of tensors"):
        sgd_step(loss, [w, 3.0], 0.1)


@pytest.mark.equation("nl", 23)
def test_sgd_step_leaves_a_parameter_the_loss_does_not_use_unchanged():
    # Φ = (w, b), L(w, b) = (2w − 1)² ignores b: ∂L/∂w = 4(2w − 1) = 4 at w = 1, step 0.05 -> 0.8; ∂L/∂b = 0
    w, b = torch.tensor(1.0, dtype=F64), torch.tensor([3.0, -2.0], dtype=F64)
    new_w, new_b = sgd_step(lambda w_, b_: (2 * w_ - 1) ** 2, (w, b), 0.05)
    assert new_w.item() == pytest.approx(0.8, abs=1e-15)
    torch.testing.assert_close(new_b, torch.tensor([3.0, -2.0], dtype=F64), rtol=0, atol=0)
    assert not new_w.requires_grad and not new_b.requires_grad


@pytest.mark.equation("nl", 1)
def test_sgd_step_error_messages_are_exact():
    w = _randn(2, 2)
    with pytest.raises(ValueError) as caught:
        sgd_step(lambda weight: weight**2, w, 0.1)
    assert str(caught.value) == "loss_fn must return a scalar tensor"
    for bad_params in ([w, 3.0], [], torch.ones(2, dtype=torch.int64)):
        with pytest.raises(TypeError) as caught:
            sgd_step(lambda *ps: sum(p.sum() for p in ps), bad_params, 0.1)
        assert str(caught.value) == "params must be a tensor or a sequence of tensors (floating point)"


# --------------------------------------------------------------------------------------------------
# Eq. 2 — GD is the argmin of the linearised loss plus a proximal term
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 2)
def test_sgd_step_is_the_sympy_argmin_of_the_linearised_proximal_objective():
    # argmin_W ⟨∇L(W_t), W⟩ + ‖W − W_t‖²/(2η) on a 2×2 weight, L = ½‖W x − y‖²
    w_t = torch.tensor([[0.5, -1.0], [2.0, 0.25]], dtype=F64)
    x, y = torch.tensor([1.5, -2.0], dtype=F64), torch.tensor([3.0, 0.75], dtype=F64)
    grad = sp.Matrix((w_t @ x - y).numpy().tolist()) * sp.Matrix([x.numpy().tolist()])  # (W x − y) xᵀ
    w = _sympy_matrix("w", 2, 2)
    eta = sp.Rational(1, 4)
    w_t_s = sp.Matrix(w_t.numpy().tolist())
    objective = sum(g * e for g, e in zip(grad, w, strict=True)) + sum(e**2 for e in w - w_t_s) / (2 * eta)
    expected = _to_torch(_sympy_argmin(sp.expand(objective), w))
    got = sgd_step(lambda weight: 0.5 * ((weight @ x - y) ** 2).sum(), w_t, 0.25)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 2)
@given(w=tensors(2, 3), x=tensors(3), y=tensors(2), eta=st.floats(0.01, 2.0))
def test_sgd_step_satisfies_the_first_order_condition_of_eq_2(w, x, y, eta):
    loss = lambda weight: torch.logsumexp(weight @ x, 0) - (weight @ x) @ y  # noqa: E731
    new = sgd_step(loss, w, eta)
    # ∇ + (W − W_t)/η = 0 at the minimiser of the (strictly convex) Eq. 2 objective
    residual = _autograd(loss, w) + (new - w) / eta
    torch.testing.assert_close(residual, torch.zeros_like(w), rtol=0, atol=1e-9)


# --------------------------------------------------------------------------------------------------
# Eq. 3 — FTRL: the argmin of the summed linearised losses is the unrolled GD iterate
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 3)
def test_ftrl_iterate_equals_unrolled_gd_with_gradients_at_the_iterates():
    xs, ys = _randn(5, 3, seed=8), _randn(5, 2, seed=9)
    w1, eta = _randn(2, 3, seed=10), 0.05
    w, grads = w1.clone(), []
    for x, y in zip(xs, ys, strict=True):  # plain GD written out: W_{s+1} = W_s − η (W_s x_s − y_s) x_sᵀ
        g = torch.outer(w @ x - y, x)
        grads.append(g)
        w = w - eta * g
    got = ftrl_iterate(w1, torch.stack(grads), eta)
    torch.testing.assert_close(got, w, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 3)
def test_ftrl_iterate_is_the_sympy_argmin_of_the_ftrl_objective():
    # argmin_W ⟨Σ_s g_s, W⟩ + ‖W − W_1‖²/(2η) with symbolic gradients, 2×2
    w, w1 = _sympy_matrix("w", 2, 2), _sympy_matrix("a", 2, 2)
    g1, g2 = _sympy_matrix("g", 2, 2), _sympy_matrix("h", 2, 2)
    eta = sp.Symbol("eta", positive=True)
    total = g1 + g2
    objective = sum(t * e for t, e in zip(total, w, strict=True)) + sum(e**2 for e in w - w1) / (2 * eta)
    expected = _sympy_argmin(sp.expand(objective), w)
    values = [0.5, -1, 2, 0.25, 1.5, -2, 3, 0.75, -0.5, 1, 0.125, 4]
    numbers = dict(zip(list(w1) + list(g1) + list(g2), values, strict=True))
    numbers[eta] = sp.Rational(3, 10)
    got = ftrl_iterate(
        torch.tensor(values[:4], dtype=F64).reshape(2, 2),
        torch.tensor(values[4:], dtype=F64).reshape(2, 2, 2),
        0.3,
    )
    torch.testing.assert_close(got, _to_torch(expected.subs(numbers)), rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 3)
def test_ftrl_iterate_rejects_bad_input():
    with pytest.raises(ValueError, match=r"gradients must be \(t, 2, 2\)"):
        ftrl_iterate(_randn(2, 2), _randn(3, 2, 3), 0.1)
    with pytest.raises(ValueError, match="lr must be a finite float > 0"):
        ftrl_iterate(_randn(2, 2), _randn(3, 2, 2), -1.0)


# --------------------------------------------------------------------------------------------------
# Eq. 8 — GD on a linear layer with the output-space surprise
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 8)
@pytest.mark.parametrize(
    "loss_of_y",
    [
        pytest.param(lambda y: 0.5 * (y**2).sum(), id="mse"),
        pytest.param(lambda y: torch.logsumexp(y, 0) - y[1], id="cross-entropy"),
        pytest.param(lambda y: torch.tanh(y).prod(), id="non-convex"),
    ],
)
def test_output_surprise_step_equals_autograd_gd_on_the_weight(loss_of_y):
    w, x = _randn(3, 4, seed=11), _randn(4, seed=12)
    surprise = _autograd(loss_of_y, w @ x)  # ∇_y L at y = W x
    expected = w - 0.3 * _autograd(lambda weight: loss_of_y(weight @ x), w)
    got = output_surprise_step(w, x, surprise, 0.3)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 8)
@given(w=tensors(2, 3), xs=tensors(4, 3), targets=tensors(4, 2), lr=st.floats(0.0, 2.0))
def test_output_surprise_step_on_a_batch_sums_the_outer_products(w, xs, targets, lr):
    # mini-batch: ∇_W Σ_i L_i = Σ_i (∇_{y_i} L_i) x_iᵀ
    loss = lambda weight: 0.5 * ((xs @ weight.T - targets) ** 2).sum()  # noqa: E731
    surprise = xs @ w.T - targets  # (n, d_out)
    got = output_surprise_step(w, xs, surprise, lr)
    torch.testing.assert_close(got, w - lr * _autograd(loss, w), rtol=0, atol=1e-9)


@pytest.mark.equation("nl", 8)
def test_output_surprise_step_rejects_bad_input():
    with pytest.raises(ValueError, match=r"x must be \(d_in=4,\) or \(n, d_in=4\)"):
        output_surprise_step(_randn(3, 4), _randn(5), _randn(3), 0.1)
    with pytest.raises(ValueError, match=r"surprise must be \(d_out=3,\)"):
        output_surprise_step(_randn(3, 4), _randn(4), _randn(2), 0.1)
    with pytest.raises(ValueError, match="lr must be a finite float >= 0"):
        output_surprise_step(_randn(3, 4), _randn(4), _randn(3), -0.1)


@pytest.mark.equation("nl", 8)
def test_output_surprise_step_error_messages_are_exact():
    with pytest.raises(ValueError) as caught:
        output_surprise_step(_randn(3), _randn(4), _randn(3), 0.1)
    assert str(caught.value) == "weight must be (d_out, d_in), got shape (3,)"
    with pytest.raises(ValueError) as caught:
        output_surprise_step(_randn(3, 4), _randn(5), _randn(3), 0.1)
    assert str(caught.value) == "x must be (d_in=4,) or (n, d_in=4), got shape (5,)"
    with pytest.raises(ValueError) as caught:
        output_surprise_step(_randn(3, 4), _randn(4), _randn(2), 0.1)
    assert str(caught.value) == "surprise must be (d_out=3,), got shape (2,)"
    # a batch of n = 5 samples (n != d_in = 4): the message names n, the batch size
    with pytest.raises(ValueError) as caught:
        output_surprise_step(_randn(3, 4), _randn(5, 4), _randn(5, 2), 0.1)
    assert str(caught.value) == "surprise must be (n=5, d_out=3), got shape (5, 2)"
