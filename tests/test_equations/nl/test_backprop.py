"""NL §4.1 and §4.5: backprop as associative memories (Eq. 29–32, 54–55, 58) and Generalized GD (Eq. 59–60).

Expectations come from autograd on the whole network written out here (torch.nn or plain tensors),
torch.optim.SGD, sympy, and gradient descent iterated on the printed objectives with autograd.
float64 throughout.
"""

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given
from hypothesis import strategies as st

from neural_memory.nl.associative_memory import DotProductObjective, L2RegressionObjective
from neural_memory.nl.backprop import (
    backprop,
    backprop_gd_step,
    generalized_gd_step,
    layer_gd_step,
    self_referential_step,
    self_referential_value,
)
from neural_memory.nl.optimizers import dgd_step

from .helpers import F64
from .helpers import randn as _randn
from .helpers import small_tensors as tensors


def _mlp(seed: int = 0):
    """A 3-layer MLP 4 → 5 → 3 → 2 with tanh, softplus and identity, and a batch of 6 inputs."""
    sizes = [4, 5, 3, 2]
    weights = [_randn(sizes[i + 1], sizes[i], seed=seed + i) for i in range(3)]
    biases = [_randn(sizes[i + 1], seed=seed + 10 + i) for i in range(3)]
    activations = [torch.tanh, torch.nn.functional.softplus, lambda z: z]
    return weights, biases, activations, _randn(6, 4, seed=seed + 20), _randn(6, 2, seed=seed + 21)


def _mse(target):
    return lambda out: 0.5 * ((out - target) ** 2).sum()


def _autograd_grads(weights, biases, activations, x, loss_fn):
    params = [t.clone().requires_grad_(True) for t in [*weights, *biases]]
    h = x
    for w, b, phi in zip(params[:3], params[3:], activations, strict=True):
        h = phi(h @ w.T + b)
    return torch.autograd.grad(loss_fn(h), params)


# --------------------------------------------------------------------------------------------------
# Eq. 29 — ∂L/∂W_ℓ = δ_ℓ x̂_{ℓ-1}ᵀ, δ_ℓ = J_φ(z_ℓ)ᵀ (W_{ℓ+1}ᵀ δ_{ℓ+1})
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 29)
def test_backprop_recursion_gives_autograd_gradients_for_every_layer():
    weights, biases, activations, x, target = _mlp()
    trace = backprop(weights, biases, activations, x, _mse(target))
    expected = _autograd_grads(weights, biases, activations, x, _mse(target))
    for got, want in zip([*trace.weight_grads, *trace.bias_grads], expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 29)
def test_each_weight_gradient_is_the_outer_product_of_local_surprise_and_layer_input():
    weights, biases, activations, x, target = _mlp(seed=3)
    trace = backprop(weights, biases, activations, x, _mse(target))
    for ell in range(3):
        outer = sum(torch.outer(trace.deltas[ell][n], trace.inputs[ell][n]) for n in range(6))
        torch.testing.assert_close(trace.weight_grads[ell], outer, rtol=0, atol=1e-12)
    # the δ recursion written out for the middle layer: δ₂ = softplus'(z₂) ⊙ (W₃ᵀ δ₃), softplus' = sigmoid
    z2 = trace.inputs[1] @ weights[1].T + biases[1]
    expected = torch.sigmoid(z2) * (trace.deltas[2] @ weights[2])
    torch.testing.assert_close(trace.deltas[1], expected, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 29)
def test_backprop_handles_a_row_wise_nonlinearity_with_a_full_jacobian():
    # softmax mixes a row: J_φ is not diagonal
    weights, biases, _, x, target = _mlp(seed=5)
    activations = [lambda z: torch.softmax(z, -1), torch.tanh, lambda z: z]
    trace = backprop(weights, biases, activations, x, _mse(target))
    expected = _autograd_grads(weights, biases, activations, x, _mse(target))
    for got, want in zip(trace.weight_grads, expected[:3], strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 29)
def test_backprop_rejects_bad_input():
    weights, biases, activations, x, target = _mlp()
    with pytest.raises(ValueError, match="weights, biases and activations must have the same length"):
        backprop(weights, biases[:2], activations, x, _mse(target))
    with pytest.raises(ValueError, match=r"x must be \(n, d_0=4\)"):
        backprop(weights, biases, activations, x[:, :3], _mse(target))
    with pytest.raises(ValueError, match=r"weights\[1\] must be \(d_2, d_1=5\)"):
        backprop([weights[0], weights[2], weights[2]], biases, activations, x, _mse(target))


@pytest.mark.equation("nl", 29)
def test_backprop_rejects_bad_input_with_exact_messages():
    weights, biases, activations, x, target = _mlp()
    loss = _mse(target)
    with pytest.raises(ValueError) as caught:
        backprop(weights, biases[:2], activations, x, loss)
    assert str(caught.value) == "weights, biases and activations must have the same length >= 1, got 3, 2, 3"
    # a 3-d x whose second size still matches d_0 = 4 is refused by its dimension alone
    with pytest.raises(ValueError) as caught:
        backprop(weights, biases, activations, x[:, :, None], loss)
    assert str(caught.value) == "x must be (n, d_0=4), got shape (6, 4, 1)"
    # a first weight that is not a matrix is named as such (x is fine), 1-d or 3-d
    with pytest.raises(ValueError) as caught:
        backprop([torch.zeros(4, dtype=F64), *weights[1:]], biases, activations, x, loss)
    assert str(caught.value) == "weights[0] must be (d_1, d_0), got (4,)"
    with pytest.raises(ValueError) as caught:
        backprop([torch.zeros(5, 4, 2, dtype=F64), *weights[1:]], biases, activations, x, loss)
    assert str(caught.value) == "weights[0] must be (d_1, d_0), got (5, 4, 2)"
    # W₂ is (3, 5): its bias must be (3,), not (5,)
    with pytest.raises(ValueError) as caught:
        backprop(weights, [biases[0], torch.zeros(5, dtype=F64), biases[2]], activations, x, loss)
    assert str(caught.value) == "biases[1] must be (d_2=3,), got (5,)"


@pytest.mark.equation("nl", 29)
def test_backprop_of_a_single_linear_layer_by_hand():
    # L = ½‖x Wᵀ + b − t‖², φ = id: δ = x Wᵀ + b − t, ∂L/∂W = Σ_n δ_n x_nᵀ, ∂L/∂b = Σ_n δ_n
    w, b, x, target = _randn(2, 3, seed=60), _randn(2, seed=61), _randn(4, 3, seed=62), _randn(4, 2, seed=63)
    trace = backprop([w], [b], [lambda z: z], x, _mse(target))
    delta = x @ w.T + b - target
    torch.testing.assert_close(trace.deltas[0], delta, rtol=0, atol=1e-13)
    outer = sum(torch.outer(delta[n], x[n]) for n in range(4))
    torch.testing.assert_close(trace.weight_grads[0], outer, rtol=0, atol=1e-13)
    torch.testing.assert_close(trace.bias_grads[0], delta.sum(0), rtol=0, atol=1e-13)


# --------------------------------------------------------------------------------------------------
# Eq. 30–32, 55 — a layer's GD step as the dot-product memory with key x̂ and value δ
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 30)
def test_layer_gd_step_with_the_local_error_is_w_minus_lr_autograd_grad():
    weights, biases, activations, x, target = _mlp(seed=7)
    trace = backprop(weights, biases, activations, x, _mse(target))
    expected = _autograd_grads(weights, biases, activations, x, _mse(target))
    for ell in range(3):
        got = layer_gd_step(weights[ell], trace.inputs[ell], trace.deltas[ell], lr=0.3)
        torch.testing.assert_close(got, weights[ell] - 0.3 * expected[ell], rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 31)
@pytest.mark.equation("nl", 55)
def test_layer_gd_step_is_the_argmin_of_the_dot_product_objective_by_sympy():
    # argmin_W ⟨W x̂, δ⟩ + ‖W − W_t‖²/(2η) for a symbolic 2×2 W, one key/value pair
    w_sym = sp.Matrix(2, 2, sp.symbols("w0:4"))
    wt, xh, dl, eta = (
        sp.Matrix([[1, -2], [3, 0.5]]),
        sp.Matrix([2, -1]),
        sp.Matrix([0.25, 3]),
        sp.Rational(1, 3),
    )
    objective = (w_sym * xh).dot(dl) + sum((w_sym - wt).applyfunc(lambda e: e**2)) / (2 * eta)
    solution = sp.solve([sp.diff(objective, s) for s in w_sym], list(w_sym))
    expected = torch.tensor([[float(solution[s]) for s in w_sym[i, :]] for i in range(2)], dtype=F64)
    to_t = lambda m: torch.tensor(np.array(m.tolist(), dtype=np.float64))  # noqa: E731
    got = layer_gd_step(to_t(wt), to_t(xh.T), to_t(dl.T), lr=1 / 3)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 31)
@pytest.mark.equation("nl", 55)
@given(w=tensors(3, 4), key=tensors(2, 4), value=tensors(2, 3), lr=st.floats(0.01, 2.0))
def test_layer_gd_step_minimises_the_proximal_dot_product_objective(w, key, value, lr):
    # the objective is strictly convex; its gradient at the step must vanish
    got = layer_gd_step(w, key, value, lr).clone().requires_grad_(True)
    objective = (value * (key @ got.T)).sum() + ((got - w) ** 2).sum() / (2 * lr)
    (grad,) = torch.autograd.grad(objective, got)
    assert grad.abs().max().item() < 1e-12


@pytest.mark.equation("nl", 32)
def test_backprop_gd_step_is_one_torch_sgd_step_on_the_network():
    weights, biases, activations, x, target = _mlp(seed=9)
    params = [torch.nn.Parameter(t.clone()) for t in [*weights, *biases]]
    sgd = torch.optim.SGD(params, lr=0.05)
    h = x
    for w, b, phi in zip(params[:3], params[3:], activations, strict=True):
        h = phi(h @ w.T + b)
    _mse(target)(h).backward()
    sgd.step()
    new_weights, new_biases = backprop_gd_step(weights, biases, activations, x, _mse(target), lr=0.05)
    for got, want in zip([*new_weights, *new_biases], params, strict=True):
        torch.testing.assert_close(got, want.detach(), rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 30)
def test_layer_gd_step_rejects_bad_input():
    with pytest.raises(ValueError, match="lr must be a finite float >= 0"):
        layer_gd_step(torch.zeros(2, 3), torch.zeros(1, 3), torch.zeros(1, 2), lr=-1.0)
    with pytest.raises(ValueError, match=r"keys must be \(n, d_k=3\)"):
        layer_gd_step(torch.zeros(2, 3), torch.zeros(1, 2), torch.zeros(1, 2), lr=1.0)


# --------------------------------------------------------------------------------------------------
# Eq. 54, 58 — W + η v ⊗ x with the self-generated value v = −∇_y L(W x)
# --------------------------------------------------------------------------------------------------


def _softplus_loss(target):
    # non-quadratic in y, so the value changes with W beyond an affine dependence
    return lambda y: torch.nn.functional.softplus(y * target).sum()


@pytest.mark.equation("nl", 54)
@pytest.mark.equation("nl", 58)
def test_self_referential_step_is_gd_on_the_linear_layer():
    w, x, target = _randn(3, 4, seed=30), _randn(5, 4, seed=31), _randn(5, 3, seed=32)
    loss = _softplus_loss(target)
    wv = w.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(x @ wv.T), wv)
    torch.testing.assert_close(self_referential_step(w, x, loss, lr=0.2), w - 0.2 * grad, rtol=0, atol=1e-13)


@pytest.mark.equation("nl", 58)
def test_self_referential_value_is_minus_the_output_gradient_by_hand():
    # L(y) = Σ softplus(y ⊙ t): ∂L/∂y = t ⊙ sigmoid(y ⊙ t)
    w, x, target = _randn(3, 4, seed=33), _randn(5, 4, seed=34), _randn(5, 3, seed=35)
    y = x @ w.T
    expected = -target * torch.sigmoid(y * target)
    got = self_referential_value(w, x, _softplus_loss(target))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-14)


@pytest.mark.equation("nl", 58)
def test_sequential_backprop_differs_from_values_precomputed_at_the_start():
    # "linear attention on gradients" stores values produced by W₀; backprop regenerates them from W_t
    w0, target = _randn(2, 3, seed=36), _randn(1, 2, seed=37)
    xs = [_randn(1, 3, seed=38 + s) for s in range(3)]
    loss = _softplus_loss(target)
    w, frozen = w0.clone(), w0.clone()
    for x in xs:
        w = self_referential_step(w, x, loss, lr=0.5)
        frozen = frozen + 0.5 * torch.outer(self_referential_value(w0, x, loss)[0], x[0])
    first = self_referential_step(w0, xs[0], loss, lr=0.5)
    torch.testing.assert_close(
        first, w0 + 0.5 * torch.outer(self_referential_value(w0, xs[0], loss)[0], xs[0][0])
    )
    assert (w - frozen).abs().max().item() > 1e-3


@pytest.mark.equation("nl", 58)
def test_self_referential_step_rejects_bad_input():
    with pytest.raises(ValueError, match=r"x must be \(n, d_in=3\)"):
        self_referential_step(torch.zeros(2, 3), torch.zeros(1, 2), lambda y: y.sum(), lr=0.1)
    with pytest.raises(ValueError, match="loss_fn must return a scalar"):
        self_referential_value(torch.zeros(2, 3), torch.zeros(1, 3), lambda y: y)


@pytest.mark.equation("nl", 58)
def test_self_referential_value_rejects_a_weight_that_is_not_a_matrix():
    with pytest.raises(ValueError) as caught:
        self_referential_value(torch.zeros(3), torch.zeros(1, 3), lambda y: y.sum())
    assert str(caught.value) == "weight must be (d_out, d_in), got shape (3,)"


# --------------------------------------------------------------------------------------------------
# Eq. 59–60 — Generalized Gradient Descent with a self-generated value
# --------------------------------------------------------------------------------------------------


def _minus_output_grad(loss_fn):
    return lambda w, x: self_referential_value(w, x, loss_fn)


@pytest.mark.equation("nl", 59)
@pytest.mark.equation("nl", 60)
def test_ggd_with_the_l2_objective_and_backprop_values_is_delta_gradient_descent():
    w, x, target = _randn(3, 4, seed=40), _randn(1, 4, seed=41), _randn(1, 3, seed=42)
    loss = _softplus_loss(target)
    got = generalized_gd_step(L2RegressionObjective(), [w], x, _minus_output_grad(loss), lrs=0.7)
    yv = (x @ w.T).requires_grad_(True)
    (lss,) = torch.autograd.grad(loss(yv), yv)
    torch.testing.assert_close(got, dgd_step(w, x[0], lss[0], 0.7), rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 59)
def test_ggd_with_the_dot_product_objective_is_gradient_descent():
    # L̃ = ⟨W x, −u⟩ with u = −∇_y L: the value handed to the dot-product objective is ∇_y L
    w, x, target = _randn(3, 4, seed=43), _randn(2, 4, seed=44), _randn(2, 3, seed=45)
    loss = _softplus_loss(target)
    got = generalized_gd_step(
        DotProductObjective(), [w], x, lambda m, k: -self_referential_value(m, k, loss), 0.3
    )
    wv = w.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(x @ wv.T), wv)
    torch.testing.assert_close(got, w - 0.3 * grad, rtol=0, atol=1e-13)


@pytest.mark.equation("nl", 59)
def test_ggd_with_several_retained_states_is_the_argmin_found_by_descent():
    # argmin ½‖W x − u‖² + Σ_i ‖W − W_i‖²/(2η_i), u generated at the newest state, by iterated GD
    states = [_randn(2, 3, seed=46 + i) for i in range(3)]
    x, lrs = _randn(2, 3, seed=50), [0.5, 1.0, 2.0]
    value_fn = lambda m, k: torch.tanh(k @ m.T)  # noqa: E731
    got = generalized_gd_step(L2RegressionObjective(), states, x, value_fn, lrs)
    u = torch.tanh(x @ states[-1].T)

    def objective(m):
        retention = sum(((m - s) ** 2).sum() / (2 * lr) for s, lr in zip(states, lrs, strict=True))
        return 0.5 * ((x @ m.T - u) ** 2).sum() + retention

    # the objective is quadratic: curvature between Σ 1/η_i and that plus λ_max(xᵀx); step 1/L
    step = 1 / (sum(1 / lr for lr in lrs) + torch.linalg.eigvalsh(x.T @ x).max().item())
    m = states[-1].clone()
    for _ in range(300):
        mv = m.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(objective(mv), mv)
        m = m - step * g
    torch.testing.assert_close(got, m, rtol=0, atol=1e-10)


@pytest.mark.equation("nl", 60)
def test_ggd_generates_the_value_from_the_newest_state():
    states, x, seen = [_randn(2, 3, seed=51), _randn(2, 3, seed=52)], _randn(1, 3, seed=53), []

    def value_fn(m, k):
        seen.append(m.clone())
        return k @ m.T

    generalized_gd_step(L2RegressionObjective(), states, x, value_fn, [1.0, 1.0])
    assert len(seen) == 1 and torch.equal(seen[0], states[-1])


@pytest.mark.equation("nl", 59)
def test_ggd_rejects_bad_input():
    w, x = torch.zeros(2, 3, dtype=F64), torch.zeros(1, 3, dtype=F64)
    value_fn = lambda m, k: k @ m.T  # noqa: E731
    with pytest.raises(ValueError, match="states must hold at least one weight"):
        generalized_gd_step(L2RegressionObjective(), [], x, value_fn, 1.0)
    with pytest.raises(ValueError, match=r"lrs must be > 0, one per state \(2\)"):
        generalized_gd_step(L2RegressionObjective(), [w, w], x, value_fn, [1.0])
    with pytest.raises(ValueError, match=r"lrs must be > 0"):
        generalized_gd_step(L2RegressionObjective(), [w], x, value_fn, 0.0)
    with pytest.raises(ValueError, match="every state must have the shape"):
        generalized_gd_step(L2RegressionObjective(), [w, torch.zeros(3, 2)], x, value_fn, 1.0)


@pytest.mark.equation("nl", 59)
def test_ggd_rejects_bad_input_with_exact_messages():
    w, x = torch.zeros(2, 3, dtype=F64), torch.zeros(1, 3, dtype=F64)
    value_fn = lambda m, k: k @ m.T  # noqa: E731
    with pytest.raises(ValueError) as caught:
        generalized_gd_step(L2RegressionObjective(), [], x, value_fn, 1.0)
    assert str(caught.value) == "states must hold at least one weight (the current W_t, newest last)"
    # a bool is an int to Python, but not a learning rate
    with pytest.raises(ValueError) as caught:
        generalized_gd_step(L2RegressionObjective(), [w], x, value_fn, True)
    assert str(caught.value) == "lrs must be > 0, one per state (1) or one float, got [True]"
    # η = ∞ is not a learning rate either (it would drop the state from the retention)
    with pytest.raises(ValueError) as caught:
        generalized_gd_step(L2RegressionObjective(), [w, w], x, value_fn, [1.0, float("inf")])
    assert str(caught.value) == "lrs must be > 0, one per state (2) or one float, got [1.0, inf]"
    # the message names W_t's shape (the last state), not that of another state
    with pytest.raises(ValueError) as caught:
        generalized_gd_step(L2RegressionObjective(), [w, torch.zeros(3, 2, dtype=F64), w], x, value_fn, 1.0)
    assert str(caught.value) == "every state must have the shape of W_t (2, 3)"
