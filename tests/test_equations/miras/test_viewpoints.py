"""MIRAS §3 and Appendix B: online regression seen as GD, as FTRL and as learning-retaining (Eq. 4–7,
FTRL-VP, LR-VP, Eq. 33–36, Prop. 3.2).

Column-vector convention of ``common/delta_rule.py``: the memory W is (d_v, d_k) and reads W k; a stream
is ``keys (T, d_k)``, ``values (T, d_v)``, one row per token (the catalog's K = keys.T, V = values.T).
The loss per token is ½‖W k − v‖² (the ½ convention, docs/errata.md). Expectations come from hand
numbers, sympy, the normal equations, explicit loops written here, and Newton's method with an autograd
Hessian written here (:func:`_newton`), never from the code under test.
"""

import math

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from neural_memory.miras.viewpoints import (
    bregman_divergence,
    bregman_retaining_iterates,
    bregman_retention,
    bregman_step_objective,
    exact,
    ftrl_gradient,
    ftrl_iterates,
    ftrl_objective,
    implicit_regression_step,
    learning_retaining_iterates,
    learning_retaining_step,
    linearised,
    linearised_ftrl,
    linearised_ftrl_iterates,
    local_global_retention,
    memory_gd_step,
    online_gd,
    pair_loss,
    proximal_retention,
    reduced_bregman_step_objective,
    ridge_ftrl,
)
from neural_memory.nl.associative_memory import (
    DotProductObjective,
    L2RegressionObjective,
    associative_memory,
)

F64 = torch.float64
L2 = L2RegressionObjective()


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


def tensors(*shape: int, bound: float = 2.0):
    """float64 tensors of the given shape with bounded elements."""
    return arrays(np.float64, shape, elements=st.floats(-bound, bound)).map(torch.from_numpy)


def integer_tensors(*shape: int):
    """float64 tensors with small integer entries: exactly rank-deficient draws, no near-singular ones."""
    return arrays(np.float64, shape, elements=st.integers(-3, 3).map(float)).map(torch.from_numpy)


def _newton(objective, start: torch.Tensor, max_steps: int = 100) -> torch.Tensor:
    """Argmin of a smooth strictly convex objective of a matrix: Newton with an autograd Hessian."""
    shape = start.shape

    def flat(x):
        return objective(x.reshape(shape))

    x = start.reshape(-1).clone()
    for _ in range(max_steps):
        step = torch.linalg.solve(torch.func.hessian(flat)(x), torch.func.grad(flat)(x))
        x = x - step
        if float(step.abs().max()) <= 1e-14 * (1 + float(x.abs().max())):
            return x.reshape(shape)
    raise AssertionError("Newton did not converge")


def _half_sq(w, k, v):
    return 0.5 * ((w @ k - v) ** 2).sum()


def _regression_grad(w, k, v):
    """∇_W ½‖W k − v‖² = (W k − v) kᵀ, by hand."""
    return torch.outer(w @ k - v, k)


def _half_norm(w):
    return 0.5 * (w**2).sum()


def _quartic(w):
    """A strictly convex, non-quadratic regulariser R(W) = ½‖W‖² + Σ W⁴/4; ∇R = W + W³."""
    return 0.5 * (w**2).sum() + 0.25 * (w**4).sum()


def _ridge(keys, values, eta):
    """FTRL with exact ½-losses and R = ½‖W‖², from its normal equations W (KᵀK + I/η) = VᵀK."""
    system = keys.T @ keys + torch.eye(keys.shape[1], dtype=F64) / eta
    return torch.linalg.solve(system, keys.T @ values).T


def _gd_loop(w0, keys, values, eta):
    """Eq. 5 applied token by token, written out: the list W_0, W_1, ..., W_T."""
    out = [w0]
    for k, v in zip(keys, values, strict=True):
        out.append(out[-1] - eta * _regression_grad(out[-1], k, v))
    return torch.stack(out)


def _losses(keys, values):
    return [pair_loss(L2, k, v) for k, v in zip(keys, values, strict=True)]


def _stream(t=4, d_k=3, d_v=2, seed=0):
    return _randn(t, d_k, seed=seed), _randn(t, d_v, seed=seed + 100)


# --------------------------------------------------------------------------------------------------
# Eq. 4 — the memory is the argmin of its attentional bias (Definition 3.1)
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("miras", 4)
@given(keys=integer_tensors(6, 3), values=tensors(6, 2))
def test_least_squares_memory_is_v_times_the_pseudo_inverse_of_k(keys, values):
    big_k, big_v = keys.T, values.T  # the catalog's K (d_k, n) and V (d_v, n)
    expected = big_v @ torch.linalg.pinv(big_k)
    torch.testing.assert_close(associative_memory(L2, keys, values), expected, rtol=0, atol=1e-10)


@pytest.mark.equation("miras", 4)
def test_gradient_descent_on_the_attentional_bias_converges_to_the_argmin():
    keys, values = _stream(t=8, seed=3)
    lr = 1.0 / float(torch.linalg.eigvalsh(keys.T @ keys).max())
    w = torch.zeros(2, 3, dtype=F64)
    for _ in range(3000):  # full-batch GD on Σ ½‖W k_i − v_i‖², gradient by hand
        w = w - lr * sum(_regression_grad(w, k, v) for k, v in zip(keys, values, strict=True))
    torch.testing.assert_close(associative_memory(L2, keys, values), w, rtol=0, atol=1e-10)


# --------------------------------------------------------------------------------------------------
# Eq. 5 — one GD step on the loss of the latest token (M-U1: ℓ(W; k, v) = L(M(W; k), v))
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("miras", 5)
def test_gd_step_scalar_by_hand():
    # W = 2, k = 1, v = 5, η = 0.5: ∇ = (2 − 5)·1 = −3, W' = 2 + 1.5 = 3.5
    got = memory_gd_step(
        L2, torch.tensor([[2.0]], dtype=F64), torch.ones(1, dtype=F64), 5 * torch.ones(1, dtype=F64), 0.5
    )
    assert torch.equal(got, torch.tensor([[3.5]], dtype=F64))


@pytest.mark.equation("miras", 5)
@given(w=tensors(2, 3), k=tensors(3), v=tensors(2), eta=st.floats(0, 2))
def test_gd_step_is_w_minus_eta_residual_times_key(w, k, v, eta):
    expected = w - eta * torch.outer(w @ k - v, k)
    torch.testing.assert_close(memory_gd_step(L2, w, k, v, eta), expected, rtol=0, atol=1e-12)


@pytest.mark.equation("miras", 5)
@pytest.mark.parametrize(
    ("objective", "written"),
    [(L2, _half_sq), (DotProductObjective(), lambda w, k, v: (w @ k) @ v)],
    ids=["l2", "dot"],
)
def test_gd_step_follows_autograd_of_the_per_token_loss(objective, written):
    w, k, v = _randn(2, 3, seed=1), _randn(3, seed=2), _randn(2, seed=3)
    loss = pair_loss(objective, k, v)  # M-U1: the objective on the single pair (k, v)
    torch.testing.assert_close(loss(w), written(w, k, v), rtol=0, atol=1e-12)
    x = w.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(x), x)
    torch.testing.assert_close(memory_gd_step(objective, w, k, v, 0.3), w - 0.3 * grad, rtol=0, atol=1e-12)


@pytest.mark.equation("miras", 5)
def test_gd_step_with_zero_step_leaves_the_memory_unchanged():
    w = _randn(2, 3)
    assert torch.equal(memory_gd_step(L2, w, _randn(3, seed=1), _randn(2, seed=2), 0.0), w)


def test_gd_step_rejects_bad_input():
    w, k, v = _randn(2, 3), _randn(3), _randn(2)
    with pytest.raises(ValueError, match=r"k must be \(d_k=3,\)"):
        memory_gd_step(L2, w, _randn(2), v, 0.1)
    with pytest.raises(ValueError, match=r"v must be \(d_v=2,\)"):
        memory_gd_step(L2, w, k, _randn(1, 2), 0.1)
    with pytest.raises(ValueError, match=r"w_prev must be a \(d_v, d_k\) matrix"):
        memory_gd_step(L2, _randn(3), k, v, 0.1)
    with pytest.raises(ValueError, match="eta must be a finite float >= 0"):
        memory_gd_step(L2, w, k, v, -0.1)
    with pytest.raises(TypeError, match="objective must be an InnerObjective"):
        memory_gd_step(_half_sq, w, k, v, 0.1)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# Eq. 6 — online GD over the loss sequence ℓ(W; k_1, v_1), ℓ(W; k_2, v_2), ...
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("miras", 6)
@given(w0=tensors(2, 3), keys=tensors(5, 3), values=tensors(5, 2), eta=st.floats(0, 0.5))
def test_online_gd_equals_an_explicit_loop_in_stream_order(w0, keys, values, eta):
    got = online_gd(L2, w0, keys, values, eta)
    torch.testing.assert_close(got, _gd_loop(w0, keys, values, eta), rtol=0, atol=1e-12)


@pytest.mark.equation("miras", 6)
def test_online_gd_depends_on_the_order_of_the_stream_and_is_not_a_batch_step():
    keys, values = _stream(t=5, seed=4)
    w0, eta = _randn(2, 3, seed=5), 0.3
    forward = online_gd(L2, w0, keys, values, eta)[-1]
    backward = online_gd(L2, w0, keys.flip(0), values.flip(0), eta)[-1]
    batch = w0 - eta * sum(_regression_grad(w0, k, v) for k, v in zip(keys, values, strict=True))
    assert (forward - backward).abs().max() > 1e-3
    assert (forward - batch).abs().max() > 1e-3


@pytest.mark.equation("miras", 6)
def test_online_gd_uses_step_t_at_token_t():
    keys, values = _stream(t=3, seed=6)
    w0, etas = _randn(2, 3, seed=7), torch.tensor([0.1, 0.0, 0.4], dtype=F64)
    w1 = w0 - 0.1 * _regression_grad(w0, keys[0], values[0])
    w3 = w1 - 0.4 * _regression_grad(w1, keys[2], values[2])  # η_2 = 0: W_2 = W_1
    expected = torch.stack([w0, w1, w1, w3])
    torch.testing.assert_close(online_gd(L2, w0, keys, values, etas), expected, rtol=0, atol=1e-12)


def test_online_gd_rejects_bad_input():
    keys, values = _stream(t=3)
    w0 = _randn(2, 3)
    with pytest.raises(ValueError, match=r"values must be \(T=3, d_v=2\)"):
        online_gd(L2, w0, keys, values[:2], 0.1)
    with pytest.raises(ValueError, match=r"keys must be \(T, d_k=3\)"):
        online_gd(L2, w0, keys[:, :2], values, 0.1)
    with pytest.raises(ValueError, match=r"eta must be a float or a \(T=3,\) tensor"):
        online_gd(L2, w0, keys, values, torch.ones(2, dtype=F64))
    with pytest.raises(ValueError, match="eta must be finite and >= 0"):
        online_gd(L2, w0, keys, values, torch.tensor([0.1, -0.1, 0.1], dtype=F64))


# --------------------------------------------------------------------------------------------------
# Eq. 7 — GD is FTRL on linearised losses with R = ‖W‖²/(2η), from W_0 = 0
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("miras", 7)
def test_linearised_ftrl_closed_form_is_the_sympy_argmin():
    eta = sp.Rational(1, 3)
    w = sp.Matrix(2, 2, lambda i, j: sp.Symbol(f"w{i}{j}"))
    grads = [sp.Matrix([[1, -2], [0, 3]]), sp.Matrix([[sp.Rational(1, 2), 1], [-1, 2]])]
    previous = [sp.zeros(2, 2), sp.Matrix([[3, 1], [-2, 5]])]  # any W_{i−1}: only constants depend on them
    objective = sum(sum((w - p).multiply_elementwise(g)) for p, g in zip(previous, grads, strict=True))
    objective += sum(e**2 for e in w) / (2 * eta)
    (solution,) = sp.solve([sp.diff(objective, e) for e in w], list(w), dict=True)
    expected = torch.tensor(np.array(w.subs(solution), dtype=np.float64))
    got = linearised_ftrl(torch.tensor(np.array(grads, dtype=np.float64)), 1 / 3)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.equation("miras", 7)
@given(keys=tensors(5, 3), values=tensors(5, 2), eta=st.floats(0.01, 0.5))
def test_linearised_ftrl_iterates_equal_gd_started_at_zero(keys, values, eta):
    expected = _gd_loop(torch.zeros(2, 3, dtype=F64), keys, values, eta)
    torch.testing.assert_close(linearised_ftrl_iterates(L2, keys, values, eta), expected, rtol=0, atol=1e-12)


@pytest.mark.equation("miras", 7)
def test_linearised_ftrl_iterates_differ_from_gd_started_elsewhere():
    # the precondition W_0 = 0 (= argmin ‖W‖²/(2η)) is needed: from W_0 ≠ 0 GD keeps W_0's trace
    keys, values = _stream(t=4, seed=8)
    gd = _gd_loop(_randn(2, 3, seed=9), keys, values, 0.2)
    ftrl = linearised_ftrl_iterates(L2, keys, values, 0.2)
    assert torch.equal(ftrl[0], torch.zeros(2, 3, dtype=F64))
    assert (gd[-1] - ftrl[-1]).abs().max() > 1e-3


def test_linearised_ftrl_rejects_bad_input():
    keys, values = _stream(t=3)
    with pytest.raises(TypeError, match="eta must be one constant float"):
        linearised_ftrl_iterates(L2, keys, values, torch.full((3,), 0.1, dtype=F64))
    with pytest.raises(ValueError, match="eta must be a finite float > 0"):
        linearised_ftrl(_randn(3, 2, 3), 0.0)
    with pytest.raises(ValueError, match=r"grads must be \(t, d_v, d_k\)"):
        linearised_ftrl(_randn(2, 3), 0.1)


# --------------------------------------------------------------------------------------------------
# FTRL-VP — W_t = argmin Σ_{i≤t} ℓ̂_i(W) + R(W)/η
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("miras", "FTRL-VP")
@given(keys=tensors(4, 3), values=tensors(4, 2), eta=st.floats(0.1, 2))
def test_ftrl_with_exact_quadratic_losses_is_ridge_regression(keys, values, eta):
    got = ftrl_iterates(
        [exact(loss) for loss in _losses(keys, values)], _half_norm, eta, _newton, _randn(2, 3)
    )
    expected = torch.stack([_ridge(keys[:t], values[:t], eta) for t in range(5)])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.equation("miras", "FTRL-VP")
@given(keys=tensors(4, 3), values=tensors(4, 2), eta=st.floats(0.1, 2))
def test_ridge_closed_form_matches_the_normal_equations(keys, values, eta):
    torch.testing.assert_close(ridge_ftrl(keys, values, eta), _ridge(keys, values, eta), rtol=0, atol=1e-12)


@pytest.mark.equation("miras", "FTRL-VP")
@pytest.mark.equation("miras", 7)
def test_ftrl_with_linearised_losses_and_half_norm_is_gd_from_zero():
    keys, values = _stream(t=5, seed=10)
    surrogates = [linearised(loss) for loss in _losses(keys, values)]
    got = ftrl_iterates(surrogates, _half_norm, 0.3, _newton, _randn(2, 3, seed=11))
    torch.testing.assert_close(
        got, _gd_loop(torch.zeros(2, 3, dtype=F64), keys, values, 0.3), rtol=0, atol=1e-12
    )


@pytest.mark.equation("miras", "FTRL-VP")
def test_ftrl_objective_is_the_past_losses_plus_the_scaled_regulariser():
    keys, values = _stream(t=3, seed=12)
    w = _randn(2, 3, seed=13)
    written = sum(_half_sq(w, k, v) for k, v in zip(keys, values, strict=True)) + _quartic(w) / 0.4
    torch.testing.assert_close(
        ftrl_objective(_losses(keys, values), _quartic, 0.4)(w), written, rtol=0, atol=1e-12
    )


def test_ftrl_rejects_bad_input():
    surrogates = [exact(loss) for loss in _losses(*_stream(t=2))]
    start = _randn(2, 3)
    with pytest.raises(TypeError, match="minimise must be callable"):
        ftrl_iterates(surrogates, _half_norm, 0.1, None, start)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="regulariser must be callable"):
        ftrl_objective([], 1.0, 0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eta must be a finite float > 0"):
        ftrl_iterates(surrogates, _half_norm, -1.0, _newton, start)
    with pytest.raises(ValueError, match=r"values must be \(t=2, d_v\)"):
        ridge_ftrl(_randn(2, 3), _randn(3, 2), 0.1)


# --------------------------------------------------------------------------------------------------
# LR-VP — W_t = argmin ℓ̃_t(W) + Ret_t(W, W_{t−1}) (M-U2, M-U3)
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("miras", "LR-VP")
@given(w=tensors(2, 3), k=tensors(3), v=tensors(2), eta=st.floats(0.05, 2))
def test_linearised_loss_with_proximal_retention_is_one_gd_step(w, k, v, eta):
    # M-U2: argmin ⟨W − W', ∇ℓ(W')⟩ + ‖W − W'‖²/(2η) = W' − η∇ℓ(W')
    got = learning_retaining_step(linearised(pair_loss(L2, k, v))(w), proximal_retention(eta), w, _newton)
    torch.testing.assert_close(got, w - eta * _regression_grad(w, k, v), rtol=0, atol=1e-12)


@pytest.mark.equation("miras", "LR-VP")
@given(w=tensors(2, 3), k=tensors(3), v=tensors(2), eta=st.floats(0.05, 2))
def test_exact_loss_with_proximal_retention_is_the_implicit_longhorn_step(w, k, v, eta):
    expected = w - eta * torch.outer(w @ k - v, k) / (1 + eta * (k @ k))
    got = learning_retaining_step(pair_loss(L2, k, v), proximal_retention(eta), w, _newton)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(implicit_regression_step(w, k, v, eta), expected, rtol=0, atol=1e-12)


@pytest.mark.equation("miras", "LR-VP")
@given(w=tensors(2, 3), k=tensors(3), v=tensors(2), eta=st.floats(0, 2))
def test_implicit_step_solves_its_implicit_equation(w, k, v, eta):
    # the gradient at the new state: W' = W − η (W' k − v) kᵀ
    new = implicit_regression_step(w, k, v, eta)
    torch.testing.assert_close(new, w - eta * _regression_grad(new, k, v), rtol=0, atol=1e-12)


@pytest.mark.equation("miras", "LR-VP")
def test_local_global_retention_with_a_linearised_loss_is_gd_with_weight_decay():
    # ⟨W − W', g⟩ + ‖W − W'‖²/(2η) + ‖W‖²/(2α): W (1/η + 1/α) = W'/η − g  ⇒  W = α/(α+η) (W' − η g)
    w, k, v, eta, alpha = _randn(2, 3, seed=14), _randn(3, seed=15), _randn(2, seed=16), 0.4, 1.5
    retention = local_global_retention(lambda a, b: 0.5 * ((a - b) ** 2).sum(), _half_norm, eta, alpha)
    got = learning_retaining_step(linearised(pair_loss(L2, k, v))(w), retention, w, _newton)
    expected = alpha / (alpha + eta) * (w - eta * _regression_grad(w, k, v))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    a, b = _randn(2, 3, seed=17), _randn(2, 3, seed=18)  # the split itself, by hand
    written = 0.5 * ((a - b) ** 2).sum() / eta + _half_norm(a) / alpha
    torch.testing.assert_close(retention(a, b), written, rtol=0, atol=1e-12)


@pytest.mark.equation("miras", "LR-VP")
def test_learning_retaining_iterates_with_a_linearised_loss_are_the_gd_loop():
    keys, values = _stream(t=4, seed=19)
    w0 = _randn(2, 3, seed=20)  # no W_0 = 0 precondition here: the retention is centred at W_{t−1}
    surrogates = [linearised(loss) for loss in _losses(keys, values)]
    got = learning_retaining_iterates(surrogates, proximal_retention(0.3), w0, _newton)
    torch.testing.assert_close(got, _gd_loop(w0, keys, values, 0.3), rtol=0, atol=1e-12)


def test_learning_retaining_rejects_bad_input():
    w = _randn(2, 3)
    with pytest.raises(TypeError, match="retention must be callable"):
        learning_retaining_step(_half_norm, 0.5, w, _newton)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alpha must be a finite float > 0"):
        local_global_retention(lambda a, b: 0.0, _half_norm, 0.1, 0.0)
    with pytest.raises(ValueError, match="eta must be a finite float > 0"):
        proximal_retention(0.0)
    with pytest.raises(ValueError, match="eta must be a finite float >= 0"):
        implicit_regression_step(w, _randn(3), _randn(2), -1.0)


# --------------------------------------------------------------------------------------------------
# Prop. 3.2 and Eq. 33 — learning-retaining with Bregman retention = FTRL, at every t
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("miras", 33)
@given(keys=tensors(4, 3), values=tensors(4, 2), eta=st.floats(0.1, 2))
def test_bregman_retaining_iterates_are_the_ridge_ftrl_iterates(keys, values, eta):
    surrogates = [exact(loss) for loss in _losses(keys, values)]
    got = bregman_retaining_iterates(surrogates, _half_norm, eta, _newton, _randn(2, 3))
    expected = torch.stack([_ridge(keys[:t], values[:t], eta) for t in range(5)])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.equation("miras", 33)
@pytest.mark.parametrize("kind", [exact, linearised], ids=["exact", "linearised"])
def test_bregman_retaining_iterates_equal_ftrl_for_a_non_quadratic_regulariser(kind):
    keys, values = _stream(t=4, seed=21)
    eta = 0.7
    surrogates = [kind(loss) for loss in _losses(keys, values)]
    retaining = bregman_retaining_iterates(surrogates, _quartic, eta, _newton, _randn(2, 3, seed=22))
    ftrl = ftrl_iterates(surrogates, _quartic, eta, _newton, _randn(2, 3, seed=23))
    torch.testing.assert_close(retaining, ftrl, rtol=0, atol=1e-12)
    torch.testing.assert_close(retaining[0], torch.zeros(2, 3, dtype=F64), rtol=0, atol=1e-12)  # argmin R
    if kind is exact:  # and both are the FTRL minimisers: Σ (Ŵ k_i − v_i) k_iᵀ + (Ŵ + Ŵ³)/η = 0
        for t in range(5):
            w = ftrl[t]
            grad = sum((_regression_grad(w, k, v) for k, v in zip(keys[:t], values[:t], strict=True)), w * 0)
            torch.testing.assert_close(grad + (w + w**3) / eta, w * 0, rtol=0, atol=1e-12)


@pytest.mark.equation("miras", 33)
def test_bregman_retaining_with_linearised_losses_and_half_norm_is_gd_from_zero():
    keys, values = _stream(t=4, seed=24)
    surrogates = [linearised(loss) for loss in _losses(keys, values)]
    got = bregman_retaining_iterates(surrogates, _half_norm, 0.25, _newton, _randn(2, 3))
    torch.testing.assert_close(
        got, _gd_loop(torch.zeros(2, 3, dtype=F64), keys, values, 0.25), rtol=0, atol=1e-12
    )


# --------------------------------------------------------------------------------------------------
# Eq. 34 — the learning-retaining step with Ret_t = D_{h_t} written out
# --------------------------------------------------------------------------------------------------


def _h_grad_quartic(w, keys, values, eta):
    """∇h_t(W) = Σ (W k_i − v_i) k_iᵀ + (W + W³)/η, by hand."""
    return (
        sum((_regression_grad(w, k, v) for k, v in zip(keys, values, strict=True)), w * 0) + (w + w**3) / eta
    )


@pytest.mark.equation("miras", 34)
def test_bregman_step_objective_is_the_printed_expansion():
    keys, values = _stream(t=3, seed=25)
    losses, eta = _losses(keys, values), 0.6
    w_prev, w = _randn(2, 3, seed=26), _randn(2, 3, seed=27)
    past_k, past_v = keys[:2], values[:2]
    printed = (
        _half_sq(w, keys[2], values[2])
        + sum(_half_sq(w, k, v) for k, v in zip(past_k, past_v, strict=True))
        + _quartic(w) / eta
        - sum(_half_sq(w_prev, k, v) for k, v in zip(past_k, past_v, strict=True))
        - _quartic(w_prev) / eta
        - (_h_grad_quartic(w_prev, past_k, past_v, eta) * (w - w_prev)).sum()
    )
    got = bregman_step_objective(losses[2], losses[:2], _quartic, eta, w_prev)(w)
    torch.testing.assert_close(got, printed, rtol=0, atol=1e-12)


@pytest.mark.equation("miras", 34)
@given(a=tensors(2, 3), b=tensors(2, 3))
def test_bregman_step_objective_minus_ftrl_objective_is_affine_with_slope_minus_grad_h(a, b):
    keys, values = _stream(t=3, seed=28)
    losses, eta, w_prev = _losses(keys, values), 0.6, _randn(2, 3, seed=29)
    objective = bregman_step_objective(losses[2], losses[:2], _quartic, eta, w_prev)

    def gap(w):  # Eq. 34 minus the FTRL objective Σ_{i≤t} ℓ_i + R/η, the latter written here
        return (
            objective(w)
            - sum(_half_sq(w, k, v) for k, v in zip(keys, values, strict=True))
            - _quartic(w) / eta
        )

    slope = -_h_grad_quartic(w_prev, keys[:2], values[:2], eta)
    torch.testing.assert_close(gap(a) - gap(b), (slope * (a - b)).sum(), rtol=0, atol=1e-10)


@pytest.mark.equation("miras", 34)
def test_bregman_step_objective_minus_ftrl_objective_is_constant_at_the_ftrl_iterate():
    keys, values = _stream(t=3, seed=30)
    losses, eta = _losses(keys, values), 0.6
    w_hat = _ridge(keys[:2], values[:2], eta)  # Ŵ_{t−1}: Eq. 36 holds there
    objective = bregman_step_objective(losses[2], losses[:2], _half_norm, eta, w_hat)
    gaps = [
        objective(w) - sum(_half_sq(w, k, v) for k, v in zip(keys, values, strict=True)) - _half_norm(w) / eta
        for w in (_randn(2, 3, seed=s) for s in (31, 32, 33))
    ]
    torch.testing.assert_close(gaps[1], gaps[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(gaps[2], gaps[0], rtol=0, atol=1e-12)


@pytest.mark.equation("miras", 34)
@given(w=tensors(2, 3), w_prev=tensors(2, 3))
def test_bregman_divergence_of_the_quartic_regulariser_by_hand(w, w_prev):
    got = bregman_divergence(_quartic, lambda x: x + x**3, w, w_prev)
    written = _quartic(w) - _quartic(w_prev) - ((w_prev + w_prev**3) * (w - w_prev)).sum()
    torch.testing.assert_close(got, written, rtol=0, atol=1e-10)
    assert float(got) >= -1e-12  # convex h: D_h >= 0
    half = bregman_divergence(_half_norm, lambda x: x, w, w_prev)
    torch.testing.assert_close(half, 0.5 * ((w - w_prev) ** 2).sum(), rtol=0, atol=1e-12)


@pytest.mark.equation("miras", 34)
def test_bregman_retention_is_the_divergence_of_h_t():
    keys, values = _stream(t=2, seed=34)
    eta, w, w_prev = 0.6, _randn(2, 3, seed=35), _randn(2, 3, seed=36)

    def h(x):
        return sum(_half_sq(x, k, v) for k, v in zip(keys, values, strict=True)) + _quartic(x) / eta

    written = h(w) - h(w_prev) - (_h_grad_quartic(w_prev, keys, values, eta) * (w - w_prev)).sum()
    got = bregman_retention(_losses(keys, values), _quartic, eta)(w, w_prev)
    torch.testing.assert_close(got, written, rtol=0, atol=1e-12)


def test_bregman_divergence_rejects_bad_input():
    with pytest.raises(ValueError, match=r"w and w_prev must have the same shape"):
        bregman_divergence(_half_norm, lambda x: x, _randn(2, 3), _randn(3, 2))
    with pytest.raises(TypeError, match="grad_h must be callable"):
        bregman_divergence(_half_norm, None, _randn(2, 3), _randn(2, 3))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="loss_t must be callable"):
        bregman_step_objective(None, [], _half_norm, 0.1, _randn(2, 3))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# Eq. 35 — constants dropped and W̃_{t−1} = Ŵ_{t−1} used: the same argmin as Eq. 34
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("miras", 35)
def test_reduced_objective_has_the_argmin_of_eq_34():
    keys, values = _stream(t=3, seed=37)
    losses, eta = _losses(keys, values), 0.6

    def h(x):
        return sum(_half_sq(x, k, v) for k, v in zip(keys[:2], values[:2], strict=True)) + _quartic(x) / eta

    w_hat = _newton(h, _randn(2, 3, seed=38))  # Ŵ_{t−1}
    full = bregman_step_objective(losses[2], losses[:2], _quartic, eta, w_hat)
    reduced = reduced_bregman_step_objective(losses[2], losses[:2], _quartic, eta, w_hat)
    torch.testing.assert_close(_newton(reduced, w_hat), _newton(full, w_hat), rtol=0, atol=1e-12)


@pytest.mark.equation("miras", 35)
@given(w=tensors(2, 3), w_prev=tensors(2, 3))
def test_reduced_objective_drops_exactly_the_constant_minus_h_t(w, w_prev):
    # with the same point in both, Eq. 34 − Eq. 35 = −Σ_{i<t} ℓ̂_i(W̃) − R(W̃)/η for every W
    keys, values = _stream(t=3, seed=39)
    losses, eta = _losses(keys, values), 0.6
    full = bregman_step_objective(losses[2], losses[:2], _quartic, eta, w_prev)(w)
    reduced = reduced_bregman_step_objective(losses[2], losses[:2], _quartic, eta, w_prev)(w)
    h_prev = (
        sum(_half_sq(w_prev, k, v) for k, v in zip(keys[:2], values[:2], strict=True))
        + _quartic(w_prev) / eta
    )
    torch.testing.assert_close(full - reduced, -h_prev, rtol=1e-12, atol=1e-10)


# --------------------------------------------------------------------------------------------------
# Eq. 36 — first-order optimality of the previous FTRL iterate
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("miras", 36)
@given(keys=tensors(3, 3), values=tensors(3, 2), eta=st.floats(0.1, 2))
def test_ftrl_gradient_vanishes_at_the_ridge_iterate(keys, values, eta):
    got = ftrl_gradient(_losses(keys, values), _half_norm, eta, _ridge(keys, values, eta))
    torch.testing.assert_close(got, torch.zeros(2, 3, dtype=F64), rtol=0, atol=1e-10)


@pytest.mark.equation("miras", 36)
@given(w=tensors(2, 3))
def test_ftrl_gradient_is_the_hand_gradient(w):
    keys, values = _stream(t=3, seed=40)
    got = ftrl_gradient(_losses(keys, values), _quartic, 0.6, w)
    torch.testing.assert_close(got, _h_grad_quartic(w, keys, values, 0.6), rtol=0, atol=1e-10)


@pytest.mark.equation("miras", 36)
def test_ftrl_gradient_vanishes_at_the_non_quadratic_ftrl_iterate_only():
    keys, values = _stream(t=3, seed=41)
    losses, eta = _losses(keys, values), 0.6
    w_hat = _newton(lambda x: sum(loss(x) for loss in losses) + _quartic(x) / eta, _randn(2, 3, seed=42))
    torch.testing.assert_close(ftrl_gradient(losses, _quartic, eta, w_hat), w_hat * 0, rtol=0, atol=1e-12)
    assert (
        float(ftrl_gradient(losses[:2], _quartic, eta, w_hat).abs().max()) > 1e-3
    )  # not a minimiser of h_{t}


def test_ftrl_gradient_rejects_bad_input():
    with pytest.raises(ValueError, match="eta must be a finite float > 0"):
        ftrl_gradient([], _half_norm, math.inf, _randn(2, 3))
    with pytest.raises(TypeError, match=r"losses must be a sequence of callables"):
        ftrl_gradient([1.0], _half_norm, 0.1, _randn(2, 3))  # type: ignore[list-item]


# --------------------------------------------------------------------------------------------------
# exact error messages and documented defaults
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("miras", 7)
def test_linearised_loss_is_the_tangent_plane_at_the_previous_iterate_by_hand():
    # W' = [[2]], k = [3], v = [1]: ∇ℓ(W') = (2·3 − 1)·3 = 15, so ℓ̂(W) = 15 (W − 2); at W = 1: −15
    loss = pair_loss(L2, torch.tensor([3.0], dtype=F64), torch.tensor([1.0], dtype=F64))
    got = linearised(loss)(torch.tensor([[2.0]], dtype=F64))(torch.tensor([[1.0]], dtype=F64))
    assert float(got) == -15.0


@pytest.mark.equation("miras", "LR-VP")
def test_local_global_retention_alpha_defaults_to_one():
    # (3 − 1)² / 0.5 + ½·3² / 1 = 8 + 4.5
    retention = local_global_retention(lambda a, b: ((a - b) ** 2).sum(), _half_norm, 0.5)
    got = retention(torch.tensor([[3.0]], dtype=F64), torch.tensor([[1.0]], dtype=F64))
    assert float(got) == 12.5


def test_type_errors_name_the_type_of_the_bad_argument():
    with pytest.raises(TypeError, match=r"^loss must be callable, got int$"):
        exact(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^eta must be one constant float, got str$"):
        linearised_ftrl(_randn(1, 2, 3), "0.1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^objective must be an InnerObjective, got int$"):
        pair_loss(3, _randn(3), _randn(2))  # type: ignore[arg-type]


def test_callable_checks_name_the_argument():
    w = _randn(2, 3)
    surrogates = [exact(loss) for loss in _losses(*_stream(t=2))]
    with pytest.raises(TypeError, match=r"^loss must be callable, got int$"):
        linearised(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^h must be callable, got int$"):
        bregman_divergence(3, lambda x: x, w, w)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^minimise must be callable, got int$"):
        bregman_retaining_iterates(surrogates, _half_norm, 0.1, 3, w)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^local must be callable, got int$"):
        local_global_retention(3, None, 0.1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^global_ must be callable, got int$"):
        local_global_retention(lambda a, b: 0.0, 3, 0.1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^loss_t must be callable, got int$"):
        reduced_bregman_step_objective(3, [], _half_norm, 0.1, w)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^loss must be callable, got int$"):
        learning_retaining_step(3, proximal_retention(0.1), w, _newton)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^minimise must be callable, got int$"):
        learning_retaining_step(_half_norm, proximal_retention(0.1), w, 3)  # type: ignore[arg-type]


def test_matrix_checks_name_the_argument_and_its_shape():
    surrogates = [exact(loss) for loss in _losses(*_stream(t=2))]
    keys, values = _stream(t=2)
    vector = _randn(3)

    def message(name):
        return rf"^{name} must be a \(d_v, d_k\) matrix, got torch\.Size\(\[3\]\)$"

    with pytest.raises(ValueError, match=message("start")):
        ftrl_iterates(surrogates, _half_norm, 0.1, _newton, vector)
    with pytest.raises(ValueError, match=message("start")):
        bregman_retaining_iterates(surrogates, _half_norm, 0.1, _newton, vector)
    with pytest.raises(ValueError, match=message("w0")):
        learning_retaining_iterates(surrogates, proximal_retention(0.1), vector, _newton)
    with pytest.raises(ValueError, match=message("w0")):
        online_gd(L2, vector, keys, values, 0.1)
    with pytest.raises(ValueError, match=message("w_prev")):
        learning_retaining_step(_half_norm, proximal_retention(0.1), vector, _newton)
    with pytest.raises(ValueError, match=message("w_hat_prev")):
        reduced_bregman_step_objective(_half_norm, [], _half_norm, 0.1, vector)
    with pytest.raises(ValueError, match=r"^w_prev must be a \(d_v, d_k\) matrix, got list$"):
        learning_retaining_step(_half_norm, proximal_retention(0.1), [[1.0]], _newton)  # type: ignore[arg-type]


def test_pair_checks_report_the_shape_or_type_of_k_and_v():
    w, k, v = _randn(2, 3), _randn(3), _randn(2)
    with pytest.raises(ValueError, match=r"^k must be \(d_k=3,\), got torch\.Size\(\[2\]\)$"):
        memory_gd_step(L2, w, _randn(2), v, 0.1)
    with pytest.raises(ValueError, match=r"^k must be \(d_k=3,\), got list$"):
        memory_gd_step(L2, w, [0.0, 0.0, 0.0], v, 0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^v must be \(d_v=2,\), got torch\.Size\(\[3\]\)$"):
        memory_gd_step(L2, w, k, _randn(3), 0.1)
    with pytest.raises(ValueError, match=r"^v must be \(d_v=2,\), got list$"):
        memory_gd_step(L2, w, k, [0.0, 0.0], 0.1)  # type: ignore[arg-type]


def test_linearised_ftrl_reports_the_shape_or_type_of_bad_grads():
    with pytest.raises(ValueError, match=r"^grads must be \(t, d_v, d_k\), got torch\.Size\(\[2, 3\]\)$"):
        linearised_ftrl(_randn(2, 3), 0.1)
    with pytest.raises(ValueError, match=r"^grads must be \(t, d_v, d_k\), got list$"):
        linearised_ftrl([[0.0]], 0.1)  # type: ignore[arg-type]


def test_stream_checks_report_the_expected_and_given_shapes():
    keys, values = _stream(t=4)
    with pytest.raises(ValueError, match=r"^values must be \(T=4, d_v=2\), got \(3, 2\)$"):
        online_gd(L2, _randn(2, 3), keys, values[:3], 0.1)
    with pytest.raises(ValueError, match=r"^eta must be finite and >= 0 at every token$"):
        online_gd(L2, _randn(2, 3), keys, values, torch.tensor([0.1, -0.1, 0.1, 0.1], dtype=F64))
    # a vector stream is reported by the shape check, not by an IndexError building W_0
    with pytest.raises(ValueError, match=r"^values must be \(T=4, d_v=4\), got \(4,\)$"):
        linearised_ftrl_iterates(L2, keys, values[:, 0], 0.1)
    with pytest.raises(ValueError, match=r"^keys must be \(T, d_k=4\), got \(4,\)$"):
        linearised_ftrl_iterates(L2, keys[:, 0], values, 0.1)
    with pytest.raises(ValueError, match=r"^keys must be \(t, d_k\), got \(4,\)$"):
        ridge_ftrl(keys[:, 0], values, 0.1)


def test_losses_check_message():
    with pytest.raises(TypeError, match=r"^losses must be a sequence of callables W -> scalar$"):
        ftrl_objective([1.0], _half_norm, 0.1)  # type: ignore[list-item]
