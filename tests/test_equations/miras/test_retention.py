"""MIRAS retention gates (§5.2–5.3): Eq. 18–24, 27, Variant 4, Bregman, sigmoid Bregman, Yaad's gates,
and the accumulator-plus-projection objects the generic memory consumes.

Every closed form is compared with an independent minimiser written here: a damped Newton method with
autograd Hessians (smooth problems; the simplex through the chart ``W = c·softmax([z, 0])``), or a
coordinatewise bisection on the autograd derivative (separable problems with an ℓ₁ term). Objectives are
typed in from the paper (with the A1 index corrections), never taken from the code under test.
"""

import math
import re

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from neural_memory.miras.retention import (
    ElasticNet,
    KLSoftmax,
    LqNormalization,
    Retention,
    SigmoidBregman,
    WeightDecay,
    bregman_step,
    elastic_net_ftrl,
    elastic_net_step,
    f_divergence_step,
    kl_retention_step,
    lq_ftrl_weights,
    memora_log_step,
    memora_step,
    moneta_normalize,
    moneta_step,
    sigmoid_bregman_step,
    soft_threshold,
    yaad_gates,
)

F64 = torch.float64


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _positive(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed)) + 0.05


def _kl_g(y: torch.Tensor) -> torch.Tensor:
    """g = (f')⁻¹ for f(τ) = τ ln τ: f'(τ) = 1 + ln τ, so g(y) = e^{y-1}."""
    return torch.exp(y - 1)


def _softplus(y: torch.Tensor) -> torch.Tensor:
    """log(1 + e^y) without torch's switch to y above 20 (which drops e^{-y} ~ 2e-9)."""
    return torch.logaddexp(y, torch.zeros_like(y))


def _slice_softmax(z: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Softmax over several dims, written out: exp(z - max) / sum."""
    e = torch.exp(z - z.amax(dim=dims, keepdim=True))
    return e / e.sum(dim=dims, keepdim=True)


def _lq(x: torch.Tensor, q: float) -> torch.Tensor:
    """Entrywise q-norm of the whole tensor, as printed: (Σ|x|^q)^{1/q}."""
    return (x.abs() ** q).sum() ** (1.0 / q)


def newton_minimise(fun, x0: torch.Tensor, iters: int = 200) -> torch.Tensor:
    """Damped Newton with autograd gradient and Hessian; Armijo backtracking outside the quadratic regime.

    Falls back to steepest descent where the Hessian is not positive definite. The caller asserts the
    gradient at the result.
    """
    x = x0.clone()
    for _ in range(iters):
        grad = torch.autograd.functional.jacobian(fun, x)
        if grad.abs().max() <= 1e-15:
            break
        hess = torch.autograd.functional.hessian(fun, x)
        _, info = torch.linalg.cholesky_ex(hess)
        step = -torch.linalg.solve(hess, grad) if info == 0 else -grad
        decrement = float(-(step @ grad))
        t = 1.0
        if decrement > 1e-12:  # far from the minimum: backtrack until a sufficient decrease
            f0 = float(fun(x))
            while not float(fun(x + t * step)) <= f0 - 0.25 * t * decrement and t > 1e-14:
                t /= 2
        x = x + t * step
    return x


def assert_stationary(fun, x: torch.Tensor, tol: float = 1e-10) -> None:
    grad = torch.autograd.functional.jacobian(fun, x)
    assert float(grad.abs().max()) < tol, f"minimiser did not converge, |grad| = {float(grad.abs().max())}"


def simplex_argmin(objective, n: int, c: float) -> torch.Tensor:
    """argmin of a convex ``objective(W)`` over {W ∈ Rⁿ: ΣW = c, W > 0}.

    Eliminates the last entry, W = (x, c − Σx): an affine chart, so the problem in x stays convex and
    damped Newton converges from the centre; points outside the simplex give NaN and are backtracked.
    """

    def chart(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, (c - x.sum())[None]])

    def in_x(x):
        return objective(chart(x))

    x = newton_minimise(in_x, torch.full((n - 1,), c / n, dtype=F64))
    assert_stationary(in_x, x)
    return chart(x)


def separable_argmin(fun, like: torch.Tensor, bound: float = 1e3) -> torch.Tensor:
    """Coordinatewise argmin of a separable convex ``fun`` (a sum over entries), by bisection on the sign of
    its autograd (sub)derivative; exact to rounding in 200 halvings of [-bound, 1.0037·bound]."""
    lo = torch.full_like(like, -bound)
    hi = torch.full_like(like, 1.0037 * bound)  # asymmetric: midpoints never land on the kink at 0
    for _ in range(200):
        mid = ((lo + hi) / 2).requires_grad_(True)
        (d,) = torch.autograd.grad(fun(mid), mid)
        mid = mid.detach()
        lo, hi = torch.where(d > 0, lo, mid), torch.where(d > 0, mid, hi)
    return (lo + hi) / 2


def _finite_arrays(shape, low=-1e4, high=1e4):
    return arrays(np.float64, shape, elements=st.floats(low, high, allow_nan=False, allow_infinity=False))


# --------------------------------------------------------------------------------------------------
# Eq. 18 — f-divergence retention: W_t = W_{t-1} ⊙ g(−ζ_t − η_t ∇ℓ), ζ_t such that ‖W_t‖₁ = c
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("miras", 18)
@pytest.mark.parametrize("dim", [None, -1, (-2, -1), 0])
def test_f_divergence_with_kl_is_the_scaled_softmax(dim):
    w, grad, eta, c = _positive(3, 4, seed=1), _randn(3, 4, seed=2), 0.7, 2.5
    dims = {None: (0, 1), -1: (1,), (-2, -1): (0, 1), 0: (0,)}[dim]
    expected = c * _slice_softmax(torch.log(w) - eta * grad, dims)
    got = f_divergence_step(w, grad, eta, _kl_g, c=c, dim=dim)
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-14)


@pytest.mark.equation("miras", 18)
def test_f_divergence_with_kl_is_the_constrained_argmin():
    # min_W <W, η∇ℓ> + Σ W' f(W/W') on the scaled simplex, f(τ) = τ ln τ (the f-divergence of M-U17)
    w_prev = torch.tensor([0.2, 0.5, 1.3], dtype=F64)
    grad, eta, c = torch.tensor([0.4, -1.0, 0.3], dtype=F64), 0.8, 2.0

    def objective(w):
        return eta * (w * grad).sum() + (w_prev * (w / w_prev) * torch.log(w / w_prev)).sum()

    expected = simplex_argmin(objective, 3, c)
    torch.testing.assert_close(f_divergence_step(w_prev, grad, eta, _kl_g, c=c), expected, rtol=0, atol=1e-10)


@pytest.mark.equation("miras", 18)
@given(
    w=arrays(np.float64, 5, elements=st.floats(0.01, 10.0)),
    grad=_finite_arrays(5, -5.0, 5.0),
    eta=st.floats(0.0, 3.0),
    c=st.floats(0.1, 10.0),
)
def test_f_divergence_with_softplus_g_meets_its_kkt_conditions(w, grad, eta, c):
    # g = softplus is increasing onto (0, ∞); f' = g⁻¹(τ) = log(e^τ − 1) (M-U17's construction).
    # Stationarity of <W, η∇ℓ> + Σ W' f(W/W') + ζ(ΣW − c): f'(W_t/W') + η∇ℓ = −ζ, the same for all entries.
    w, grad = torch.from_numpy(w), torch.from_numpy(grad)
    got = f_divergence_step(w, grad, eta, _softplus, c=c)
    minus_zeta = torch.log(torch.expm1(got / w)) + eta * grad
    assert float(minus_zeta.max() - minus_zeta.min()) < 1e-9
    assert abs(float(got.sum()) - c) < 1e-12 * c
    assert bool((got > 0).all())


@pytest.mark.equation("miras", 18)
@pytest.mark.equation("miras", 20)
@given(
    w=arrays(np.float64, (2, 4), elements=st.floats(1e-3, 1e4)),
    grad=_finite_arrays((2, 4)),
    eta=st.floats(0.0, 1e4),
    c=st.floats(1e-3, 1e4),
)
def test_f_divergence_stays_on_the_simplex_for_large_inputs(w, grad, eta, c):
    # η∇ℓ up to 1e8: ζ itself is ~1e8 there, so the slice sum is only exact if ζ is solved relative to
    # the slice's smallest η∇ℓ
    got = f_divergence_step(torch.from_numpy(w), torch.from_numpy(grad), eta, _kl_g, c=c, dim=-1)
    assert bool(torch.isfinite(got).all()) and bool((got >= 0).all())
    torch.testing.assert_close(got.sum(dim=-1), torch.full((2,), c, dtype=F64), rtol=1e-12, atol=0)


@pytest.mark.equation("miras", 18)
def test_f_divergence_zero_gradient_keeps_a_point_of_the_simplex():
    w = torch.tensor([[0.1, 0.3], [0.6, 1.0]], dtype=F64)  # sums to c = 2
    got = f_divergence_step(w, torch.zeros_like(w), 0.5, _softplus, c=2.0)
    torch.testing.assert_close(got, w, rtol=0, atol=1e-13)


@pytest.mark.equation("miras", 18)
def test_f_divergence_zero_entries_stay_zero_and_slices_are_separate():
    w = torch.tensor([[0.0, 1.0, 3.0], [2.0, 2.0, 0.0]], dtype=F64)
    grad = _randn(2, 3, seed=4)
    got = f_divergence_step(w, grad, 1.0, _kl_g, c=1.0, dim=-1)
    assert got[0, 0] == 0 and got[1, 2] == 0
    for row in range(2):
        expected = f_divergence_step(w[row], grad[row], 1.0, _kl_g, c=1.0)
        torch.testing.assert_close(got[row], expected, rtol=0, atol=1e-15)


def test_f_divergence_rejects_bad_arguments():
    w, grad = _positive(3), _randn(3)
    with pytest.raises(ValueError, match="W must be >= 0"):
        f_divergence_step(-w, grad, 0.1, _kl_g)
    with pytest.raises(ValueError, match="c must be > 0"):
        f_divergence_step(w, grad, 0.1, _kl_g, c=0.0)
    with pytest.raises(ValueError, match="eta must be in"):
        f_divergence_step(w, grad, -0.1, _kl_g)
    with pytest.raises(TypeError, match="g must be callable"):
        f_divergence_step(w, grad, 0.1, "exp")
    with pytest.raises(ValueError, match="grad must have the shape"):
        f_divergence_step(w, grad[:2], 0.1, _kl_g)
    with pytest.raises(ValueError, match="no ζ"):  # σ < 1: three entries of W ≤ 1 can never reach c = 10
        f_divergence_step(torch.full((3,), 0.5, dtype=F64), grad, 0.1, torch.sigmoid, c=10.0)
    with pytest.raises(ValueError, match="g must be >= 0"):  # g(y) = y leaves the simplex
        f_divergence_step(w, torch.tensor([50.0, 0.0, 0.0], dtype=F64), 1.0, lambda y: y)
    with pytest.raises(ValueError, match="dim"):
        f_divergence_step(w, grad, 0.1, _kl_g, dim=3)


# --------------------------------------------------------------------------------------------------
# Eq. 19–21 — KL local + entropy global retention on the scaled simplex
# --------------------------------------------------------------------------------------------------


def _eq19_objective(w_prev, grad, eta, alpha):
    """Eq. 19 with the A1 correction: the KL term is against W_{t-1}, not W_t."""

    def objective(w):
        linear = ((w - w_prev) * grad).sum()
        local = (w * torch.log(w / w_prev)).sum() / eta
        glob = (w * torch.log(w)).sum() / alpha
        return linear + local + glob

    return objective


@pytest.mark.equation("miras", 19)
@pytest.mark.equation("miras", 20)
@pytest.mark.equation("miras", 21)
@pytest.mark.parametrize(
    ("n", "eta", "alpha", "c", "seed"),
    [(2, 0.5, 2.0, 1.0, 0), (3, 1.5, 0.3, 2.0, 1), (4, 0.2, 5.0, 0.7, 2), (4, 3.0, 1.0, 4.0, 3)],
)
def test_kl_retention_is_the_argmin_of_eq19_on_the_eq20_simplex(n, eta, alpha, c, seed):
    w_prev = c * torch.softmax(_randn(n, seed=seed), dim=0)
    grad = _randn(n, seed=seed + 10)
    expected = simplex_argmin(_eq19_objective(w_prev, grad, eta, alpha), n, c)
    got = kl_retention_step(w_prev, grad, eta, alpha, c=c)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


@pytest.mark.equation("miras", 21)
def test_kl_retention_lambda_and_eta_prime_by_hand():
    # η = α = 1: λ = (1/1)/(1/1 + 1/1) = 1/2, η' = 1/2; W' = (1/4, 3/4), ∇ℓ = (1, 0), c = 3
    # logits: ½ log ¼ − ½ = log ½ − ½ and ½ log ¾ = log √¾
    a, b = 0.5 * math.exp(-0.5), math.sqrt(0.75)
    expected = torch.tensor([3 * a / (a + b), 3 * b / (a + b)], dtype=F64)
    got = kl_retention_step(
        torch.tensor([0.25, 0.75], dtype=F64), torch.tensor([1.0, 0.0], dtype=F64), 1.0, 1.0, c=3.0
    )
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-14)


@pytest.mark.equation("miras", 21)
def test_kl_retention_without_global_retention_is_exponentiated_gradient():
    # α → ∞: λ → 0 and η' → η, so W_t = c·softmax(log W' − η∇ℓ)
    w, grad, eta, c = _positive(2, 5, seed=3), _randn(2, 5, seed=4), 0.9, 1.5
    expected = c * _slice_softmax(torch.log(w) - eta * grad, (1,))
    torch.testing.assert_close(
        kl_retention_step(w, grad, eta, math.inf, c=c, dim=-1), expected, rtol=0, atol=1e-14
    )


@pytest.mark.equation("miras", 21)
@given(
    w=arrays(np.float64, (2, 3), elements=st.floats(0.01, 10.0)),
    grad=_finite_arrays((2, 3), -10.0, 10.0),
    shift=st.floats(-10.0, 10.0),
    eta=st.floats(0.01, 10.0),
    alpha=st.floats(0.01, 10.0),
)
def test_kl_retention_is_invariant_to_a_constant_added_to_the_gradient(w, grad, shift, eta, alpha):
    w, grad = torch.from_numpy(w), torch.from_numpy(grad)
    base = kl_retention_step(w, grad, eta, alpha, c=2.0)
    shifted = kl_retention_step(w, grad + shift, eta, alpha, c=2.0)
    torch.testing.assert_close(shifted, base, rtol=1e-12, atol=1e-14)


@pytest.mark.equation("miras", 20)
@pytest.mark.equation("miras", 21)
@given(
    w=arrays(np.float64, (3, 4), elements=st.floats(1e-6, 1e4)),
    grad=_finite_arrays((3, 4)),
    eta=st.floats(0.0, 1e4),
    alpha=st.floats(1e-4, 1e4),
    c=st.floats(1e-3, 1e4),
    dim=st.sampled_from([None, -1, -2]),
)
def test_kl_retention_stays_on_the_simplex_for_large_inputs(w, grad, eta, alpha, c, dim):
    got = kl_retention_step(torch.from_numpy(w), torch.from_numpy(grad), eta, alpha, c=c, dim=dim)
    assert bool(torch.isfinite(got).all()) and bool((got >= 0).all())
    sums = got.sum() if dim is None else got.sum(dim=dim)
    torch.testing.assert_close(sums, torch.full_like(sums, c), rtol=1e-12, atol=0)


@pytest.mark.equation("miras", 19)
@given(
    w=arrays(np.float64, 4, elements=st.floats(0.01, 10.0)),
    other=arrays(np.float64, 4, elements=st.floats(0.01, 10.0)),
    grad=_finite_arrays(4, -10.0, 10.0),
    eta=st.floats(0.01, 10.0),
    alpha=st.floats(0.01, 10.0),
    eps=st.floats(1e-4, 1.0),
)
def test_kl_retention_step_decreases_the_eq19_objective(w, other, grad, eta, alpha, eps):
    w, other, grad = torch.from_numpy(w), torch.from_numpy(other), torch.from_numpy(grad)
    w_prev, other = w / w.sum(), other / other.sum()  # both on the simplex with c = 1
    objective = _eq19_objective(w_prev, grad, eta, alpha)
    new = kl_retention_step(w_prev, grad, eta, alpha)
    tol = 1e-12 * (1 + abs(float(objective(new))))
    assert float(objective(new)) <= float(objective(w_prev)) + tol
    assert float(objective(new)) <= float(objective((1 - eps) * new + eps * other)) + tol


def test_kl_retention_rejects_bad_arguments():
    w, grad = _positive(3), _randn(3)
    with pytest.raises(ValueError, match="W must be > 0"):
        kl_retention_step(torch.tensor([0.0, 1.0, 1.0], dtype=F64), grad, 0.1, 1.0)
    with pytest.raises(ValueError, match="alpha must be in"):
        kl_retention_step(w, grad, 0.1, 0.0)
    with pytest.raises(ValueError, match="alpha must be in"):
        kl_retention_step(w, grad, 0.1, -1.0)
    with pytest.raises(ValueError, match="eta must be in"):
        kl_retention_step(w, grad, -0.1, 1.0)
    with pytest.raises(ValueError, match="c must be > 0"):
        kl_retention_step(w, grad, 0.1, 1.0, c=-1.0)
    with pytest.raises(ValueError, match="eta of shape"):
        kl_retention_step(w, grad, torch.ones(2, dtype=F64), 1.0)


# --------------------------------------------------------------------------------------------------
# Eq. 27 — Memora: W_t = Softmax(α_t log W_{t-1} − η_t ∇ℓ)
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("miras", 27)
@pytest.mark.parametrize(
    ("alpha", "eta", "seed"), [(1.0, 0.5, 0), (0.6, 1.2, 1), (0.0, 0.8, 2), (0.95, 3.0, 3)]
)
def test_memora_is_the_argmin_of_its_kl_plus_entropy_retention(alpha, eta, seed):
    # Eq. 21 with α_27 = 1 − λ and η_27 = η', times η': the retention is α KL(W‖W') + (1 − α) Σ W log W
    w_prev = torch.softmax(_randn(4, seed=seed), dim=0)
    grad = _randn(4, seed=seed + 10)

    def objective(w):
        kl = (w * torch.log(w / w_prev)).sum()
        return eta * ((w - w_prev) * grad).sum() + alpha * kl + (1 - alpha) * (w * torch.log(w)).sum()

    expected = simplex_argmin(objective, 4, 1.0)
    torch.testing.assert_close(memora_step(w_prev, grad, eta, alpha), expected, rtol=0, atol=1e-10)


@pytest.mark.equation("miras", 27)
@given(
    w=arrays(np.float64, 4, elements=st.floats(0.01, 10.0)),
    other=arrays(np.float64, 4, elements=st.floats(0.01, 10.0)),
    grad=_finite_arrays(4, -10.0, 10.0),
    eta=st.floats(0.0, 10.0),
    alpha=st.floats(0.0, 1.0),
    eps=st.floats(1e-4, 1.0),
)
def test_memora_step_decreases_its_objective(w, other, grad, eta, alpha, eps):
    w, other, grad = torch.from_numpy(w), torch.from_numpy(other), torch.from_numpy(grad)
    w_prev, other = w / w.sum(), other / other.sum()

    def objective(x):
        kl = (x * torch.log(x / w_prev)).sum()
        return eta * ((x - w_prev) * grad).sum() + alpha * kl + (1 - alpha) * (x * torch.log(x)).sum()

    new = memora_step(w_prev, grad, eta, alpha)
    tol = 1e-12 * (1 + abs(float(objective(new))))
    assert float(objective(new)) <= float(objective(w_prev)) + tol
    assert float(objective(new)) <= float(objective((1 - eps) * new + eps * other)) + tol


@pytest.mark.equation("miras", 21)
@pytest.mark.equation("miras", 27)
def test_memora_is_eq21_with_alpha_one_minus_lambda_and_c_one():
    w, grad, eta, alpha = _positive(3, 3, seed=5), _randn(3, 3, seed=6), 0.4, 1.7
    lam = (1 / alpha) / (1 / alpha + 1 / eta)
    eta_prime = 1 / (1 / alpha + 1 / eta)
    torch.testing.assert_close(
        memora_step(w, grad, eta_prime, 1 - lam, dim=-2),
        kl_retention_step(w, grad, eta, alpha, c=1.0, dim=-2),
        rtol=0,
        atol=1e-14,
    )


@pytest.mark.equation("miras", 27)
def test_memora_alpha_one_and_zero_gradient_keeps_a_simplex_point():
    w = torch.softmax(_randn(2, 6, seed=7), dim=-1)
    torch.testing.assert_close(memora_step(w, torch.zeros_like(w), 0.3, 1.0, dim=-1), w, rtol=0, atol=1e-15)


@pytest.mark.equation("miras", 27)
def test_memora_zero_gradient_pulls_towards_uniform_as_powers_of_alpha():
    # n steps with ∇ℓ = 0: W_n ∝ W_0^{α^n} (the entropy pull), written out here
    w0, alpha = torch.tensor([0.7, 0.2, 0.1], dtype=F64), 0.5
    w = w0
    for _ in range(3):
        w = memora_step(w, torch.zeros(3, dtype=F64), 1.0, alpha)
    expected = w0**0.125 / (w0**0.125).sum()
    torch.testing.assert_close(w, expected, rtol=0, atol=1e-15)


@pytest.mark.equation("miras", 20)
@pytest.mark.equation("miras", 27)
@given(
    w=arrays(np.float64, (3, 4), elements=st.floats(1e-6, 1e4)),
    grad=_finite_arrays((3, 4)),
    eta=st.floats(0.0, 1e4),
    alpha=st.floats(0.0, 1.0),
    dim=st.sampled_from([None, -1, -2, (-2, -1)]),
)
def test_memora_stays_on_the_simplex_for_large_inputs(w, grad, eta, alpha, dim):
    got = memora_step(torch.from_numpy(w), torch.from_numpy(grad), eta, alpha, dim=dim)
    assert bool(torch.isfinite(got).all()) and bool((got >= 0).all())
    sums = got.sum() if dim in (None, (-2, -1)) else got.sum(dim=dim)
    torch.testing.assert_close(sums, torch.ones_like(sums), rtol=0, atol=1e-12)


@pytest.mark.equation("miras", 27)
@given(
    logits=_finite_arrays((3, 4), -50.0, 50.0),
    grad=_finite_arrays((3, 4), -50.0, 50.0),
    eta=st.floats(0.0, 5.0),
    alpha=st.floats(0.0, 1.0),
)
def test_memora_can_carry_log_weights_because_the_log_sum_exp_is_a_slice_constant(logits, grad, eta, alpha):
    # softmax(α log softmax(L) − ηg) = softmax(αL − α·lse(L) − ηg) = softmax(αL − ηg): the same W
    logits, grad = torch.from_numpy(logits), torch.from_numpy(grad)
    weights = _slice_softmax(logits, (0,))
    via_weights = _slice_softmax(alpha * torch.log(weights) - eta * grad, (0,))
    via_logits = _slice_softmax(alpha * logits - eta * grad, (0,))
    torch.testing.assert_close(via_weights, via_logits, rtol=1e-10, atol=1e-14)
    new_logits = memora_log_step(logits, grad, eta, alpha)
    torch.testing.assert_close(new_logits, alpha * logits - eta * grad, rtol=0, atol=0)
    torch.testing.assert_close(_slice_softmax(new_logits, (0,)), via_weights, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(
        memora_step(weights, grad, eta, alpha, dim=0), via_weights, rtol=1e-10, atol=1e-14
    )


def test_memora_rejects_bad_arguments():
    w, grad = _positive(2, 3), _randn(2, 3)
    with pytest.raises(ValueError, match="W must be > 0"):
        memora_step(-w, grad, 0.1, 0.5)
    with pytest.raises(ValueError, match="alpha must be in"):
        memora_step(w, grad, 0.1, 1.5)
    with pytest.raises(ValueError, match="alpha must be in"):
        memora_step(w, grad, 0.1, -0.1)
    with pytest.raises(ValueError, match="eta must be in"):
        memora_step(w, grad, -0.1, 0.5)
    with pytest.raises(ValueError, match="W must be finite"):
        memora_step(torch.full((2, 3), math.inf, dtype=F64), grad, 0.1, 0.5)
    with pytest.raises(ValueError, match="alpha must be in"):
        memora_log_step(w, grad, 0.1, 2.0)
    with pytest.raises(TypeError, match="L must be a floating-point tensor"):
        memora_log_step([1.0], grad, 0.1, 0.5)


# --------------------------------------------------------------------------------------------------
# Eq. 22 — elastic net, learning-retaining view: W_t = S_γ(λ W_{t-1} − ζ ∇ℓ)
# --------------------------------------------------------------------------------------------------


def _elastic_net_objective(w_prev, grad, eta, beta, alpha):
    """ℓ̃ + (1/η)·½‖W − W'‖² + (1/(2β))‖W‖² + (1/α)‖W‖₁ (M-U20)."""

    def objective(w):
        return (
            ((w - w_prev) * grad).sum()
            + ((w - w_prev) ** 2).sum() / (2 * eta)
            + (w**2).sum() / (2 * beta)
            + w.abs().sum() / alpha
        )

    return objective


def test_soft_threshold_by_hand():
    z = torch.tensor([-3.0, -0.5, 0.0, 0.5, 1.0, 3.0], dtype=F64)
    assert torch.equal(soft_threshold(z, 1.0), torch.tensor([-2.0, 0.0, 0.0, 0.0, 0.0, 2.0], dtype=F64))
    assert torch.equal(soft_threshold(z, 0.0), z)


@pytest.mark.equation("miras", 22)
@pytest.mark.parametrize(
    ("eta", "beta", "alpha", "seed"), [(0.5, 2.0, 1.0, 0), (1.3, 0.4, 0.5, 1), (0.1, 10.0, 0.2, 2)]
)
def test_elastic_net_step_is_the_coordinatewise_prox(eta, beta, alpha, seed):
    w_prev, grad = 2 * _randn(4, 5, seed=seed), 3 * _randn(4, 5, seed=seed + 10)
    expected = separable_argmin(_elastic_net_objective(w_prev, grad, eta, beta, alpha), w_prev)
    got = elastic_net_step(w_prev, grad, eta, beta, alpha)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-11)
    assert bool((got == 0).any())  # the hard-forgetting branch is exercised


@pytest.mark.equation("miras", 22)
def test_elastic_net_without_l1_is_decayed_gradient_descent():
    # α → ∞: γ = 0, W = λW' − ζ∇ℓ with λ = β/(β+η), ζ = ηλ
    w, grad, eta, beta = _randn(3, 3, seed=1), _randn(3, 3, seed=2), 0.3, 1.2
    lam = beta / (beta + eta)
    expected = lam * w - eta * lam * grad
    torch.testing.assert_close(elastic_net_step(w, grad, eta, beta, math.inf), expected, rtol=0, atol=1e-15)


@pytest.mark.equation("miras", 22)
def test_elastic_net_step_by_hand():
    # η = 1, β = 1, α = 2: λ = ½, ζ = ½, γ = 1/(2·2) = ¼; z = ½W' − ½∇ℓ
    w = torch.tensor([1.0, 0.2, -2.0], dtype=F64)
    grad = torch.tensor([0.0, 0.0, 1.0], dtype=F64)  # z = (0.5, 0.1, −1.5)
    expected = torch.tensor([0.25, 0.0, -1.25], dtype=F64)
    torch.testing.assert_close(elastic_net_step(w, grad, 1.0, 1.0, 2.0), expected, rtol=0, atol=1e-15)


@pytest.mark.equation("miras", 22)
@given(
    w=_finite_arrays(6, -10.0, 10.0),
    grad=_finite_arrays(6, -10.0, 10.0),
    direction=_finite_arrays(6, -1.0, 1.0),
    eta=st.floats(0.01, 10.0),
    beta=st.floats(0.01, 10.0),
    alpha=st.floats(0.01, 10.0),
    eps=st.floats(1e-6, 1.0),
)
def test_elastic_net_step_decreases_its_objective(w, grad, direction, eta, beta, alpha, eps):
    w, grad, direction = torch.from_numpy(w), torch.from_numpy(grad), torch.from_numpy(direction)
    objective = _elastic_net_objective(w, grad, eta, beta, alpha)
    new = elastic_net_step(w, grad, eta, beta, alpha)
    tol = 1e-12 * (1 + abs(float(objective(new))))
    assert float(objective(new)) <= float(objective(w)) + tol
    assert float(objective(new)) <= float(objective(new + eps * direction)) + tol


def test_elastic_net_rejects_bad_arguments():
    w, grad = _randn(3), _randn(3)
    with pytest.raises(ValueError, match="gamma must be in"):
        soft_threshold(w, -1.0)
    with pytest.raises(ValueError, match="beta must be in"):
        elastic_net_step(w, grad, 0.1, 0.0, 1.0)
    with pytest.raises(ValueError, match="alpha must be in"):
        elastic_net_step(w, grad, 0.1, 1.0, -1.0)
    with pytest.raises(ValueError, match="eta must be in"):
        elastic_net_step(w, grad, -0.1, 1.0, 1.0)
    with pytest.raises(ValueError, match="alpha must be in"):
        elastic_net_ftrl(w, grad, 0.1, 0.0)
    with pytest.raises(ValueError, match="grad must have the shape"):
        elastic_net_ftrl(w, grad[:1], 0.1, 1.0)


# --------------------------------------------------------------------------------------------------
# Eq. 23 — elastic net, FTRL view: A_t = A_{t-1} − η∇ℓ, W_t = S_{η/α}(A_t)  (exact for (1/(2η))‖W‖², A5)
# --------------------------------------------------------------------------------------------------


def _ftrl_elastic_objective(grads, eta, alpha, quadratic):
    """Σᵢ <W − W_{i−1}, ∇ℓᵢ> + quadratic·‖W‖² + (1/α)‖W‖₁; the W_{i−1} terms are constants, dropped."""
    total = sum(grads)

    def objective(w):
        return (w * total).sum() + quadratic * (w**2).sum() + w.abs().sum() / alpha

    return objective


@pytest.mark.equation("miras", 23)
def test_elastic_net_ftrl_is_the_ftrl_argmin_with_a_half_quadratic():
    eta, alpha = 0.4, 2.5
    grads = [_randn(3, 4, seed=s) for s in range(3)]
    acc = torch.zeros(3, 4, dtype=F64)  # A_0 = 0 (W_0 = 0)
    for g in grads:
        acc, w = elastic_net_ftrl(acc, g, eta, alpha)
    expected = separable_argmin(_ftrl_elastic_objective(grads, eta, alpha, 1 / (2 * eta)), acc)
    torch.testing.assert_close(w, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(acc, -eta * sum(grads), rtol=0, atol=1e-15)
    assert bool((w == 0).any())


@pytest.mark.equation("miras", 23)
def test_elastic_net_ftrl_is_not_the_argmin_of_the_printed_regulariser():
    # A5: with the printed (1/η)‖W‖² the argmin is S_{η/(2α)}(A/2), not S_{η/α}(A)
    eta, alpha = 0.4, 2.5
    grads = [_randn(3, 4, seed=s) for s in range(3)]
    acc = torch.zeros(3, 4, dtype=F64)
    for g in grads:
        acc, w = elastic_net_ftrl(acc, g, eta, alpha)
    printed = separable_argmin(_ftrl_elastic_objective(grads, eta, alpha, 1 / eta), acc)
    assert float((w - printed).abs().max()) > 0.1


@pytest.mark.equation("miras", 23)
def test_elastic_net_ftrl_without_l1_is_gradient_descent_from_zero():
    # α → ∞: W_t = A_t = −η Σ ∇ℓ_i, Eq. 7's closed form (and Eq. 5 iterated from W_0 = 0)
    grads = [_randn(2, 2, seed=s) for s in range(4)]
    acc = torch.zeros(2, 2, dtype=F64)
    gd = torch.zeros(2, 2, dtype=F64)
    for g in grads:
        acc, w = elastic_net_ftrl(acc, g, 0.3, math.inf)
        gd = gd - 0.3 * g
    torch.testing.assert_close(w, gd, rtol=0, atol=1e-15)


@pytest.mark.equation("miras", 23)
@given(
    grads=arrays(np.float64, (3, 5), elements=st.floats(-10.0, 10.0)),
    direction=_finite_arrays(5, -1.0, 1.0),
    eta=st.floats(0.01, 10.0),
    alpha=st.floats(0.01, 10.0),
    eps=st.floats(1e-6, 1.0),
)
def test_elastic_net_ftrl_decreases_its_objective(grads, direction, eta, alpha, eps):
    grads, direction = list(torch.from_numpy(grads)), torch.from_numpy(direction)
    acc = torch.zeros(5, dtype=F64)
    for g in grads:
        acc, w = elastic_net_ftrl(acc, g, eta, alpha)
    objective = _ftrl_elastic_objective(grads, eta, alpha, 1 / (2 * eta))
    tol = 1e-12 * (1 + abs(float(objective(w))))
    assert float(objective(w)) <= float(objective(torch.zeros(5, dtype=F64))) + tol
    assert float(objective(w)) <= float(objective(w + eps * direction)) + tol


# --------------------------------------------------------------------------------------------------
# Variant 4 (M-U22, unnumbered) — ℓ_q memory stability, 1 < q ≤ 2: exact form of A3
# --------------------------------------------------------------------------------------------------


def _variant4_argmin(grads, eta, q):
    """Brute-force argmin of Σᵢ <W, ∇ℓᵢ> + (1/(2η(q−1)))‖W‖_q² (M-U22)."""
    total = sum(grads).reshape(-1)

    def objective(w):
        return (w * total).sum() + (w.abs() ** q).sum() ** (2 / q) / (2 * eta * (q - 1))

    w = newton_minimise(objective, -eta * total)
    assert_stationary(objective, w)
    return w.reshape(grads[0].shape)


@pytest.mark.parametrize("q", [1.25, 1.5, 1.8, 2.0, 3.0])
def test_lq_ftrl_weights_are_the_ftrl_argmin(q):
    eta = 0.7
    grads = [_randn(2, 3, seed=s) for s in range(3)]
    acc = torch.zeros(2, 3, dtype=F64)
    for g in grads:  # the recursive accumulator A_t = A_{t−1} − η∇ℓ
        acc = acc - eta * g
    torch.testing.assert_close(lq_ftrl_weights(acc, q), _variant4_argmin(grads, eta, q), rtol=0, atol=1e-10)


@pytest.mark.parametrize(("q", "exact"), [(2.0, True), (1.5, False), (1.25, False)])
def test_lq_ftrl_printed_form_is_exact_only_at_q_two(q, exact):
    eta = 0.7
    grads = [_randn(2, 3, seed=s) for s in range(3)]
    acc = -eta * sum(grads)
    p = q / (q - 1)
    printed = acc / _lq(acc, p) ** (p - 2)
    error = float((printed - _variant4_argmin(grads, eta, q)).abs().max())
    assert (error < 1e-10) is exact


@given(
    acc=_finite_arrays(5, -10.0, 10.0),
    direction=_finite_arrays(5, -1.0, 1.0),
    q=st.floats(1.1, 2.0),
    eps=st.floats(1e-6, 1.0),
)
def test_lq_ftrl_weights_decrease_the_ftrl_objective(acc, direction, q, eps):
    # η·(FTRL objective) = −<W, A> + ‖W‖_q²/(2(q − 1)), A = −ηΣ∇ℓ
    acc, direction = torch.from_numpy(acc), torch.from_numpy(direction)

    def objective(w):
        return -(w * acc).sum() + _lq(w, q) ** 2 / (2 * (q - 1))

    w = lq_ftrl_weights(acc, q)
    tol = 1e-12 * (1 + abs(float(objective(w))))
    assert float(objective(w)) <= float(objective(torch.zeros(5, dtype=F64))) + tol
    assert float(objective(w)) <= float(objective(w + eps * direction)) + tol


def test_lq_ftrl_weights_by_hand_and_at_zero():
    # q = 3/2 → p = 3: W = ½ Sign(A)|A|²/‖A‖_3; A = (1, −2): ‖A‖_3 = 9^{1/3}
    got = lq_ftrl_weights(torch.tensor([1.0, -2.0], dtype=F64), 1.5)
    expected = 0.5 * torch.tensor([1.0, -4.0], dtype=F64) / 9 ** (1 / 3)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-15)
    assert torch.equal(lq_ftrl_weights(torch.zeros(2, 2, dtype=F64), 1.5), torch.zeros(2, 2, dtype=F64))


@given(acc=_finite_arrays((3, 3)), q=st.floats(1.01, 2.0))
def test_lq_ftrl_weights_finite_for_large_inputs(acc, q):
    assert bool(torch.isfinite(lq_ftrl_weights(torch.from_numpy(acc), q)).all())


def test_lq_ftrl_rejects_q_at_most_one():
    with pytest.raises(ValueError, match="q must be > 1"):
        lq_ftrl_weights(_randn(3), 1.0)


# --------------------------------------------------------------------------------------------------
# Eq. 24 — Moneta: A_t = α_t A_{t−1} − η_t∇ℓ, W_t = A_t / ‖A_t‖_q^{q−2}
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("miras", 24)
def test_moneta_normalize_by_hand():
    # q = 4: ‖(3, 4)‖_4 = 337^{1/4}, so W = A / 337^{1/2}
    acc = torch.tensor([[3.0, 4.0]], dtype=F64)
    torch.testing.assert_close(moneta_normalize(acc, 4.0), acc / math.sqrt(337), rtol=0, atol=1e-15)


@pytest.mark.equation("miras", 24)
def test_moneta_with_q_two_and_alpha_one_is_gradient_descent():
    acc, grad = _randn(3, 4, seed=1), _randn(3, 4, seed=2)
    new_acc, w = moneta_step(acc, grad, 0.3, 1.0, 2.0)
    torch.testing.assert_close(new_acc, acc - 0.3 * grad, rtol=0, atol=0)
    torch.testing.assert_close(w, new_acc, rtol=0, atol=1e-15)


@pytest.mark.equation("miras", 24)
@given(acc=_finite_arrays((3, 4)), q=st.floats(1.0, 6.0))
def test_moneta_weights_have_q_norm_of_the_accumulator_to_the_three_minus_q(acc, q):
    acc = torch.from_numpy(acc)
    assume(float(_lq(acc, q)) > 1e-3)
    w = moneta_normalize(acc, q)
    torch.testing.assert_close(_lq(w, q), _lq(acc, q) ** (3 - q), rtol=1e-12, atol=0)


@pytest.mark.equation("miras", 24)
def test_moneta_step_by_hand_with_channelwise_gates():
    # α per input row, η per output column (broadcast as (d_in, 1) and (1, d_out)); q = 3: W = A/‖A‖_3
    acc = torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=F64)
    grad = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=F64)
    alpha = torch.tensor([[0.5], [1.0]], dtype=F64)
    eta = torch.tensor([[1.0, 0.5]], dtype=F64)
    expected_acc = torch.tensor([[0.5 - 1.0, 1.0], [3.0, -1.0 - 1.0]], dtype=F64)
    norm3 = (0.5**3 + 1.0 + 27.0 + 8.0) ** (1 / 3)
    new_acc, w = moneta_step(acc, grad, eta, alpha, 3.0)
    torch.testing.assert_close(new_acc, expected_acc, rtol=0, atol=1e-15)
    torch.testing.assert_close(w, expected_acc / norm3, rtol=1e-14, atol=0)


@pytest.mark.equation("miras", 24)
def test_moneta_normalizes_each_layer_and_head_slice_separately():
    acc = _randn(5, 3, 4, seed=3)  # (N, d_in, d_out)
    got = moneta_normalize(acc, 4.0)
    for n in range(5):
        torch.testing.assert_close(got[n], acc[n] / _lq(acc[n], 4.0) ** 2, rtol=1e-14, atol=0)


@pytest.mark.equation("miras", 24)
@pytest.mark.parametrize("q", [1.0, 2.0, 3.0, 4.0, 6.0])
def test_moneta_zero_accumulator_gives_zero_weights_and_finite_gradients(q):
    acc = torch.zeros(2, 3, 4, dtype=F64, requires_grad=True)
    w = moneta_normalize(acc, q)
    assert torch.equal(w, torch.zeros_like(w))
    (grad,) = torch.autograd.grad((w * _randn(2, 3, 4)).sum(), acc)
    assert bool(torch.isfinite(grad).all())


@pytest.mark.equation("miras", 24)
@given(
    acc=_finite_arrays((3, 4)), grad=_finite_arrays((3, 4)), eta=st.floats(0.0, 1e4), q=st.floats(1.0, 8.0)
)
def test_moneta_step_finite_for_large_inputs(acc, grad, eta, q):
    new_acc, w = moneta_step(torch.from_numpy(acc), torch.from_numpy(grad), eta, 0.9, q)
    assert bool(torch.isfinite(new_acc).all()) and bool(torch.isfinite(w).all())


def test_moneta_rejects_bad_arguments():
    acc, grad = _randn(2, 3), _randn(2, 3)
    with pytest.raises(ValueError, match="q must be >= 1"):
        moneta_normalize(acc, 0.5)
    with pytest.raises(ValueError, match="alpha must be in"):
        moneta_step(acc, grad, 0.1, 1.1, 4.0)
    with pytest.raises(ValueError, match="eta must be in"):
        moneta_step(acc, grad, -0.1, 0.5, 4.0)
    with pytest.raises(ValueError, match="dim"):
        moneta_normalize(_randn(3), 4.0)  # a vector has no last two dims
    with pytest.raises(ValueError, match="eps must be > 0"):
        moneta_normalize(acc, 4.0, eps=0.0)


# --------------------------------------------------------------------------------------------------
# M-U23 / M-U24 (unnumbered) — Bregman retention and its sigmoid instance
# --------------------------------------------------------------------------------------------------


def _bregman_objective(w_prev, grad, eta, f, f_prime, corrected=True):
    """<W − W', ∇ℓ> + (1/η)(F(W) − F(W') − <F'(W'), W − W'>); the printed form has <W', W − W'> (A1)."""
    anchor = f_prime(w_prev) if corrected else w_prev

    def objective(w):
        divergence = f(w).sum() - f(w_prev).sum() - (anchor * (w - w_prev)).sum()
        return ((w - w_prev) * grad).sum() + divergence / eta

    return objective


@pytest.mark.parametrize("corrected", [True, False])
def test_bregman_step_is_the_argmin_only_with_the_corrected_divergence(corrected):
    # f = cosh: F' = sinh, g = asinh (both defined on all of R)
    w_prev, grad, eta = _randn(5, seed=1), _randn(5, seed=2), 0.6
    objective = _bregman_objective(w_prev, grad, eta, torch.cosh, torch.sinh, corrected)
    argmin = newton_minimise(objective, w_prev)
    assert_stationary(objective, argmin)
    error = float((bregman_step(w_prev, grad, eta, torch.sinh, torch.asinh) - argmin).abs().max())
    assert (error < 1e-10) is corrected


def test_bregman_with_half_square_is_gradient_descent():
    w, grad = _randn(3, 3, seed=1), _randn(3, 3, seed=2)
    got = bregman_step(w, grad, 0.4, lambda x: x, lambda x: x)
    torch.testing.assert_close(got, w - 0.4 * grad, rtol=0, atol=0)


@given(
    w=_finite_arrays(4, -3.0, 3.0),
    grad=_finite_arrays(4, -3.0, 3.0),
    direction=_finite_arrays(4, -1.0, 1.0),
    eta=st.floats(0.01, 3.0),
    eps=st.floats(1e-6, 1.0),
)
def test_bregman_step_decreases_its_objective(w, grad, direction, eta, eps):
    w, grad, direction = torch.from_numpy(w), torch.from_numpy(grad), torch.from_numpy(direction)
    objective = _bregman_objective(w, grad, eta, torch.cosh, torch.sinh)
    new = bregman_step(w, grad, eta, torch.sinh, torch.asinh)
    tol = 1e-12 * (1 + abs(float(objective(new))))
    assert float(objective(new)) <= float(objective(w)) + tol
    assert float(objective(new)) <= float(objective(new + eps * direction)) + tol


def _binary_entropy(w):
    """f(τ) = τ ln τ + (1 − τ) ln(1 − τ): f'(τ) = ln(τ/(1 − τ)) (M-U24)."""
    return w * torch.log(w) + (1 - w) * torch.log1p(-w)


def test_sigmoid_bregman_is_the_argmin_of_the_binary_entropy_bregman_retention():
    w_prev, grad, eta = torch.tensor([0.1, 0.5, 0.8, 0.97], dtype=F64), _randn(4, seed=3), 0.9
    objective = _bregman_objective(w_prev, grad, eta, _binary_entropy, torch.logit)

    def in_logits(u):  # chart W = σ(u) keeps the minimiser inside (0, 1)
        return objective(torch.sigmoid(u))

    u = newton_minimise(in_logits, torch.logit(w_prev))
    assert_stationary(in_logits, u)
    got = sigmoid_bregman_step(w_prev, grad, eta)
    torch.testing.assert_close(got, torch.sigmoid(u), rtol=0, atol=1e-10)
    torch.testing.assert_close(
        got, bregman_step(w_prev, grad, eta, torch.logit, torch.sigmoid), rtol=0, atol=1e-15
    )


@given(
    logits=_finite_arrays((2, 3), -20.0, 20.0),
    grad=_finite_arrays((2, 3), -10.0, 10.0),
    eta=st.floats(0.0, 1.0),
)
def test_sigmoid_bregman_entries_stay_in_the_open_unit_interval(logits, grad, eta):
    w = torch.sigmoid(torch.from_numpy(logits))
    got = sigmoid_bregman_step(w, torch.from_numpy(grad), eta)
    assert bool((got > 0).all()) and bool((got < 1).all())


def test_bregman_rejects_bad_arguments():
    w, grad = _randn(3), _randn(3)
    with pytest.raises(ValueError, match=r"W must be in \(0, 1\)"):
        sigmoid_bregman_step(torch.tensor([0.5, 1.0], dtype=F64), grad[:2], 0.1)
    with pytest.raises(ValueError, match="eta must be in"):
        sigmoid_bregman_step(torch.full((3,), 0.5, dtype=F64), grad, -1.0)
    with pytest.raises(TypeError, match="f_prime must be callable"):
        bregman_step(w, grad, 0.1, None, torch.asinh)
    with pytest.raises(ValueError, match="outside the domain"):  # log of negative entries
        bregman_step(-w.abs() - 0.1, grad, 0.1, torch.log, torch.exp)


# --------------------------------------------------------------------------------------------------
# M-U27 / A6 (unnumbered) — Yaad's retention (1/(2θ))‖W − W'‖² + (1/β)‖W‖² gives α and the step
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("theta", "beta"), [(0.5, 2.0), (1.0, 0.1), (3.0, 7.0)])
def test_yaad_gates_come_from_minimising_the_printed_retention(theta, beta):
    w_prev, grad = _randn(6, seed=1), _randn(6, seed=2)

    def objective(w):
        linear = ((w - w_prev) * grad).sum()
        return linear + ((w - w_prev) ** 2).sum() / (2 * theta) + (w**2).sum() / beta

    argmin = newton_minimise(objective, w_prev)
    assert_stationary(objective, argmin)
    alpha, step = yaad_gates(theta, beta)
    torch.testing.assert_close(alpha * w_prev - step * grad, argmin, rtol=0, atol=1e-12)


@given(
    w=_finite_arrays(4, -10.0, 10.0),
    grad=_finite_arrays(4, -10.0, 10.0),
    direction=_finite_arrays(4, -1.0, 1.0),
    theta=st.floats(0.01, 10.0),
    beta=st.floats(0.01, 10.0),
    eps=st.floats(1e-6, 1.0),
)
def test_yaad_step_decreases_its_objective(w, grad, direction, theta, beta, eps):
    w, grad, direction = torch.from_numpy(w), torch.from_numpy(grad), torch.from_numpy(direction)

    def objective(x):
        return ((x - w) * grad).sum() + ((x - w) ** 2).sum() / (2 * theta) + (x**2).sum() / beta

    alpha, step = yaad_gates(theta, beta)
    new = alpha * w - step * grad
    tol = 1e-12 * (1 + abs(float(objective(new))))
    assert float(objective(new)) <= float(objective(w)) + tol
    assert float(objective(new)) <= float(objective(new + eps * direction)) + tol


def test_yaad_gates_by_hand():
    # θ = 1, β = 2: α = 2/(2 + 2) = ½, step = 1·2/(2 + 2) = ½; β = ∞: no global retention, α = 1
    alpha, step = yaad_gates(1.0, 2.0)
    assert float(alpha) == 0.5 and float(step) == 0.5
    alpha, step = yaad_gates(torch.tensor([0.0, 0.3], dtype=F64), math.inf)
    torch.testing.assert_close(alpha, torch.ones(2, dtype=F64), rtol=0, atol=0)
    torch.testing.assert_close(step, torch.tensor([0.0, 0.3], dtype=F64), rtol=0, atol=0)


def test_yaad_gates_reject_bad_arguments():
    with pytest.raises(ValueError, match="theta must be in"):
        yaad_gates(-0.1, 1.0)
    with pytest.raises(ValueError, match="beta must be in"):
        yaad_gates(0.1, 0.0)


# --------------------------------------------------------------------------------------------------
# Part 2 — retentions as accumulator + projection (the objects the generic memory consumes)
# --------------------------------------------------------------------------------------------------


def _accumulator_step(acc, grad, step, decay):
    """The generic memory's linear accumulator update: C ← decay·C − step·∇ℓ."""
    return decay * acc - step * grad


def test_weight_decay_projection_is_the_identity_and_gives_yaads_step():
    acc, grad = _randn(2, 3, 4, seed=1), _randn(2, 3, 4, seed=2)
    retention = WeightDecay()
    assert torch.equal(retention.project(acc), acc) and retention.lag_token is False
    alpha, step = yaad_gates(0.5, 2.0)
    new = retention.project(_accumulator_step(acc, grad, step, alpha))
    # Yaad's argmin (A6), written out: (W' − θ∇ℓ)/(1 + 2θ/β)
    torch.testing.assert_close(new, (acc - 0.5 * grad) / (1 + 2 * 0.5 / 2.0), rtol=0, atol=1e-14)


@pytest.mark.equation("miras", 27)
def test_kl_softmax_projection_of_a_log_step_equals_memora_step():
    logits, grad, eta, alpha = _randn(2, 3, 4, seed=1), _randn(2, 3, 4, seed=2), 0.6, 0.8
    retention = KLSoftmax()
    assert retention.lag_token is True and retention.c == 1.0 and retention.dim == -2
    got = retention.project(memora_log_step(logits, grad, eta, alpha))
    expected = memora_step(retention.project(logits), grad, eta, alpha, dim=-2)
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(got.sum(dim=-2), torch.ones(2, 4, dtype=F64), rtol=0, atol=1e-14)


@pytest.mark.equation("miras", 21)
@pytest.mark.equation("miras", 27)
def test_kl_softmax_projection_with_mass_c_equals_eq21():
    # Eq. 21 ↔ accumulator: decay = 1 − λ, step = η'
    logits, grad, eta, alpha, c = _randn(2, 3, 4, seed=3), _randn(2, 3, 4, seed=4), 0.5, 2.0, 2.5
    lam = (1 / alpha) / (1 / alpha + 1 / eta)
    eta_prime = 1 / (1 / alpha + 1 / eta)
    retention = KLSoftmax(c=c, lag_token=False)
    assert retention.lag_token is False
    got = retention.project(_accumulator_step(logits, grad, eta_prime, 1 - lam))
    expected = kl_retention_step(retention.project(logits), grad, eta, alpha, c=c, dim=-2)
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-15)


@pytest.mark.equation("miras", 24)
def test_lq_normalization_projection_of_an_accumulator_step_equals_moneta_step():
    acc, grad = _randn(2, 3, 4, seed=1), _randn(2, 3, 4, seed=2)
    retention = LqNormalization()
    assert retention.q == 4.0 and retention.lag_token is False
    got = retention.project(_accumulator_step(acc, grad, 0.3, 0.9))
    torch.testing.assert_close(got, moneta_step(acc, grad, 0.3, 0.9, 4.0)[1], rtol=0, atol=1e-15)


@pytest.mark.equation("miras", 23)
def test_elastic_net_projection_of_an_accumulator_step_equals_the_ftrl_step():
    # threshold = η/α with decay ≡ 1 (Eq. 23's accumulator is not decayed)
    acc, grad, eta, alpha = _randn(2, 3, 4, seed=1), _randn(2, 3, 4, seed=2), 0.4, 0.8
    retention = ElasticNet(threshold=eta / alpha)
    got = retention.project(_accumulator_step(acc, grad, eta, 1.0))
    torch.testing.assert_close(got, elastic_net_ftrl(acc, grad, eta, alpha)[1], rtol=0, atol=1e-15)


def test_sigmoid_bregman_projection_of_a_logit_step_equals_the_sigmoid_bregman_step():
    logits, grad = _randn(2, 3, 4, seed=1), _randn(2, 3, 4, seed=2)
    retention = SigmoidBregman()
    got = retention.project(_accumulator_step(logits, grad, 0.7, 1.0))
    expected = sigmoid_bregman_step(retention.project(logits), grad, 0.7)
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-15)


# Built inside the test, not at collection: a constructor that raises must fail this test, not the collection.
_STACK_RETENTIONS = {
    "WeightDecay()": lambda: WeightDecay(),
    "LqNormalization(q=3.0)": lambda: LqNormalization(3.0),
    "KLSoftmax(c=2.0)": lambda: KLSoftmax(c=2.0),
    "KLSoftmax(dim=-1)": lambda: KLSoftmax(dim=-1),
    "ElasticNet(threshold=0.3)": lambda: ElasticNet(0.3),
    "SigmoidBregman()": lambda: SigmoidBregman(),
}


@pytest.mark.parametrize("name", sorted(_STACK_RETENTIONS))
def test_projection_acts_on_each_layer_matrix_of_a_stack(name):
    retention = _STACK_RETENTIONS[name]()
    acc = _randn(3, 2, 4, 5, seed=9)  # (N, b, d_in, d_out)
    got = retention.project(acc)
    assert isinstance(retention, Retention) and got.shape == acc.shape
    for n in range(3):
        for b in range(2):
            expected = retention.project(acc[n, b][None])[0]
            torch.testing.assert_close(got[n, b], expected, rtol=0, atol=1e-15)


def test_retentions_reject_bad_hyperparameters():
    with pytest.raises(ValueError, match="q must be >= 1"):
        LqNormalization(q=0.5)
    with pytest.raises(ValueError, match="c must be > 0"):
        KLSoftmax(c=0.0)
    with pytest.raises(ValueError, match="dim must be"):
        KLSoftmax(dim=0)
    with pytest.raises(ValueError, match="threshold must be"):
        ElasticNet(threshold=-0.1)
    with pytest.raises(ValueError, match="acc must be"):
        KLSoftmax().project(_randn(4))
    with pytest.raises(TypeError):
        Retention()


# --------------------------------------------------------------------------------------------------
# No NaN/Inf for inputs up to 1e4 (one property over every step function)
# --------------------------------------------------------------------------------------------------


@given(
    w=_finite_arrays((2, 3)),
    grad=_finite_arrays((2, 3)),
    eta=st.floats(0.0, 1e4),
    alpha=st.floats(1e-4, 1e4),
    beta=st.floats(1e-4, 1e4),
)
def test_steps_are_finite_for_inputs_up_to_1e4(w, grad, eta, alpha, beta):
    w, grad = torch.from_numpy(w), torch.from_numpy(grad)
    positive = w.abs() + 1e-6
    outputs = [
        f_divergence_step(positive, grad, eta, _kl_g, c=3.0),
        kl_retention_step(positive, grad, eta, alpha),
        memora_step(positive, grad, eta, min(alpha, 1.0)),
        memora_log_step(w, grad, eta, min(alpha, 1.0)),
        elastic_net_step(w, grad, eta, beta, alpha),
        *elastic_net_ftrl(w, grad, eta, alpha),
        lq_ftrl_weights(w, 1.5),
        *moneta_step(w, grad, eta, min(alpha, 1.0), 4.0),
        bregman_step(w / 1e3, grad, eta, torch.sinh, torch.asinh),
        sigmoid_bregman_step(torch.sigmoid(w / 1e3), grad, eta),
        *yaad_gates(eta, beta),
        KLSoftmax().project(w),
        SigmoidBregman().project(w),
    ]
    for out in outputs:
        assert bool(torch.isfinite(out).all())


# -- Moneta's projection keeps only its input for back-propagation ---------------------------------------


def _printed_eq24(acc: torch.Tensor, q: float) -> torch.Tensor:  # A / ||A||_q^{q-2}, typed from the paper
    return acc / acc.abs().pow(q).sum(dim=(-2, -1), keepdim=True).pow((q - 2) / q)


@pytest.mark.equation("miras", 24)
@pytest.mark.parametrize("q", [1.5, 2.0, 3.0, 4.0])
def test_lq_projection_gradient_equals_autograd_of_eq24_as_printed(q):
    acc = _randn(3, 2, 4, 5, seed=4).requires_grad_(True)
    upstream = _randn(3, 2, 4, 5, seed=5)
    got = LqNormalization(q).project(acc)
    want = _printed_eq24(acc, q)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-13)
    (g_got,) = torch.autograd.grad((got * upstream).sum(), acc)
    (g_want,) = torch.autograd.grad((want * upstream).sum(), acc)
    torch.testing.assert_close(g_got, g_want, rtol=1e-11, atol=1e-12)


def test_lq_projection_of_a_zero_or_huge_matrix_has_finite_gradients():
    zero = torch.zeros(1, 3, 3, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(LqNormalization(4.0).project(zero).sum(), zero)
    assert torch.isfinite(grad).all()
    huge = (1e15 * _randn(1, 3, 3, seed=2)).float().requires_grad_(True)  # |A|^3 overflows float32
    out = LqNormalization(3.0).project(huge)
    (grad,) = torch.autograd.grad((out * out).sum(), huge)
    huge64 = huge.detach().double().requires_grad_(True)
    want = _printed_eq24(huge64, 3.0)
    (grad_want,) = torch.autograd.grad((want * want).sum(), huge64)
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    torch.testing.assert_close(grad.double(), grad_want, rtol=1e-4, atol=1e-22)


# -- exact error messages, boundaries and defaults (mutation testing) ---------------------------------


def _bad_dims_call(dim):
    return lambda: lq_ftrl_weights(_randn(2, 3), 1.5, dim=dim)


_W3, _G3 = _positive(3), _randn(3, seed=1)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: KLSoftmax().project(_randn(4)),
            ValueError,
            "acc must be a tensor (..., d_in, d_out) with at least 2 dims, got (4,)",
        ),
        (
            lambda: WeightDecay().project([1.0]),
            ValueError,
            "acc must be a tensor (..., d_in, d_out) with at least 2 dims, got list",
        ),
        (
            lambda: elastic_net_step(_W3, [1.0], 0.1, 1.0, 1.0),
            TypeError,
            "grad must be a floating-point tensor, got list",
        ),
        (
            lambda: elastic_net_step(_W3, torch.ones(3, dtype=torch.int64), 0.1, 1.0, 1.0),
            TypeError,
            "grad must be a floating-point tensor, got torch.int64",
        ),
        (
            lambda: kl_retention_step(torch.tensor([0.0, 1.0], dtype=F64), _G3[:2], 0.1, 1.0),
            ValueError,
            "W must be > 0: the update takes log W (initialise on the open simplex)",
        ),
        (lambda: moneta_normalize(_randn(2, 3), True), ValueError, "q must be >= 1, got True"),
        (lambda: moneta_normalize(_randn(2, 3), math.inf), ValueError, "q must be >= 1, got inf"),
        (lambda: soft_threshold([1.0], 0.1), TypeError, "z must be a floating-point tensor, got list"),
        (
            lambda: soft_threshold(torch.ones(2, dtype=torch.int64), 0.1),
            TypeError,
            "z must be a floating-point tensor, got torch.int64",
        ),
        (
            lambda: lq_ftrl_weights(torch.tensor(1.0, dtype=F64), 1.5),
            ValueError,
            "dim: the tensor must have at least one dim",
        ),
        (_bad_dims_call(True), ValueError, "dim must be an int or a tuple of ints in [-2, 2), got True"),
        (_bad_dims_call(2), ValueError, "dim must be an int or a tuple of ints in [-2, 2), got 2"),
        (_bad_dims_call((0, -2)), ValueError, "dim must not repeat a dim, got (0, -2)"),
        (lambda: KLSoftmax(c=True), ValueError, "c must be > 0 and finite, got True"),
        (lambda: KLSoftmax(c=math.inf), ValueError, "c must be > 0 and finite, got inf"),
        (lambda: ElasticNet(True), ValueError, "threshold must be a float in [0, inf), got True"),
        (lambda: ElasticNet(math.inf), ValueError, "threshold must be a float in [0, inf), got inf"),
        (
            lambda: bregman_step(_W3, _G3, 0.1, torch.sinh, None),
            TypeError,
            "g must be callable (elementwise), got NoneType",
        ),
        (
            lambda: bregman_step(_W3, _G3, 0.1, "sinh", torch.asinh),
            TypeError,
            "f_prime must be callable (elementwise), got str",
        ),
        (
            lambda: bregman_step(_W3, _G3, -1.0, torch.sinh, torch.asinh),
            ValueError,
            "eta must be in [0, inf), got -1.0",
        ),
        (
            lambda: bregman_step(-_W3, _G3, 0.1, torch.log, torch.exp),
            ValueError,
            "W is outside the domain of f_prime (f_prime(W) is NaN)",
        ),
        (
            lambda: elastic_net_ftrl([1.0], _G3, 0.1, 1.0),
            TypeError,
            "A_prev must be a floating-point tensor, got list",
        ),
        (
            lambda: elastic_net_ftrl(_W3, _G3[:1], 0.1, 1.0),
            ValueError,
            "grad must have the shape of A_prev (3,), got (1,)",
        ),
        (lambda: elastic_net_ftrl(_W3, _G3, -1.0, 1.0), ValueError, "eta must be in [0, inf), got -1.0"),
        (lambda: elastic_net_step(_W3, _G3, 0.1, 1.0, 0.0), ValueError, "alpha must be in (0, inf], got 0.0"),
        (
            lambda: f_divergence_step(-_W3, _G3, 0.1, _kl_g),
            ValueError,
            "W must be >= 0 (a point of the scaled simplex, Eq. 20)",
        ),
        (
            lambda: f_divergence_step(_W3, _G3, 0.1, "exp"),
            TypeError,
            "g must be callable (g = (f')^-1, elementwise), got str",
        ),
        (
            lambda: f_divergence_step(_W3, torch.tensor([50.0, 0.0, 0.0], dtype=F64), 1.0, lambda y: y),
            ValueError,
            "g must be >= 0 on the reached arguments (g = (f')^-1 maps into the domain of f)",
        ),
        (lambda: lq_ftrl_weights([1.0], 1.5), TypeError, "A must be a floating-point tensor, got list"),
        (lambda: memora_log_step(_W3, _G3, -1.0, 0.5), ValueError, "eta must be in [0, inf), got -1.0"),
        (lambda: moneta_normalize([1.0], 4.0), TypeError, "A must be a floating-point tensor, got list"),
        (
            lambda: moneta_step([1.0], _G3, 0.1, 0.5, 4.0),
            TypeError,
            "A_prev must be a floating-point tensor, got list",
        ),
        (
            lambda: moneta_step(_randn(2, 3), _G3, 0.1, 0.5, 4.0),
            ValueError,
            "grad must have the shape of A_prev (2, 3), got (3,)",
        ),
        (
            lambda: sigmoid_bregman_step(torch.tensor([0.0, 0.5], dtype=F64), _G3[:2], 0.1),
            ValueError,
            "W must be in (0, 1) (the sigmoid-Bregman update takes its logit)",
        ),
        (
            lambda: KLSoftmax(dim=1),
            ValueError,
            "dim must be -1, -2 or (-2, -1) (a slice of the last two dims), got 1",
        ),
        (
            lambda: KLSoftmax(dim=(-3, -1)),
            ValueError,
            "dim must be -1, -2 or (-2, -1) (a slice of the last two dims), got (-3, -1)",
        ),
        (
            lambda: KLSoftmax(dim=(2, -1)),
            ValueError,
            "dim must be -1, -2 or (-2, -1) (a slice of the last two dims), got (2, -1)",
        ),
        (
            lambda: KLSoftmax(dim=(-2, 1)),
            ValueError,
            "dim must be -1, -2 or (-2, -1) (a slice of the last two dims), got (-2, 1)",
        ),
        (
            lambda: KLSoftmax(dim=(-2, -2)),
            ValueError,
            "dim must be -1, -2 or (-2, -1) (a slice of the last two dims), got (-2, -2)",
        ),
    ],
)
def test_errors_are_exact(call, error, message):
    """Each bad argument raises its own full message, naming the argument and the value."""
    with pytest.raises(error, match="^" + re.escape(message) + "$"):
        call()


@pytest.mark.equation("miras", 27)
def test_kl_softmax_projection_over_one_or_both_last_dims_by_hand():
    """KLSoftmax(dim) is c·exp(L)/Σexp(L) over the named slice of each layer matrix."""
    acc = _randn(2, 3, 4, seed=5)
    e = torch.exp(acc)
    both = KLSoftmax(c=2.0, dim=(-2, -1)).project(acc)
    torch.testing.assert_close(both, 2.0 * e / e.sum(dim=(1, 2), keepdim=True), rtol=1e-14, atol=0)
    rows = KLSoftmax(dim=-1).project(acc)
    torch.testing.assert_close(rows, e / e.sum(dim=2, keepdim=True), rtol=1e-14, atol=0)


@pytest.mark.equation("miras", 23)
def test_elastic_net_with_threshold_zero_is_the_identity():
    """Threshold 0 is allowed and soft-thresholds nothing."""
    acc = _randn(2, 3, seed=6)
    retention = ElasticNet(0.0)
    assert retention.threshold == 0.0
    torch.testing.assert_close(retention.project(acc), acc, rtol=0, atol=0)


def test_retention_repr_lists_its_fields():
    """repr is the class name and its instance fields."""
    assert repr(KLSoftmax(c=2.0, dim=-1, lag_token=False)) == "KLSoftmax(c=2.0, dim=-1, lag_token=False)"
    assert repr(ElasticNet(0.5)) == "ElasticNet(threshold=0.5)"
    assert repr(WeightDecay()) == "WeightDecay()"


@pytest.mark.parametrize("q", [3.0, 4.0, 5.0])
def test_lq_matrix_norm_grad_by_hand_and_zero_where_the_norm_is_zero(q):
    """∂‖C‖_q/∂C = Sign(C)|C|^{q−1}/‖C‖_q^{q−1}; 0 where the given norm is 0."""
    retention = LqNormalization(q)
    acc = torch.tensor([[[1.0, -2.0], [0.5, 3.0]]], dtype=F64)
    norm = (acc.abs() ** q).sum() ** (1 / q)
    got = retention.matrix_norm_grad(acc.clone(), norm.reshape(1, 1, 1))
    torch.testing.assert_close(
        got, torch.sign(acc) * acc.abs() ** (q - 1) / norm ** (q - 1), rtol=1e-14, atol=0
    )
    zero = retention.matrix_norm_grad(acc.clone(), torch.zeros(1, 1, 1, dtype=F64))
    assert torch.equal(zero, torch.zeros_like(acc))


def test_lq_matrix_norm_bounded_skips_the_max_scaling():
    """bounded=True is the plain (Σ|C|^q)^{1/q} (overflows for huge entries); the default rescales."""
    retention = LqNormalization(3.0)
    acc = torch.full((1, 2, 2), 1e200, dtype=F64)
    assert torch.isinf(retention.matrix_norm(acc, bounded=True)).all()
    torch.testing.assert_close(
        retention.matrix_norm(acc), torch.full((1, 1, 1), 4 ** (1 / 3) * 1e200, dtype=F64), rtol=1e-15, atol=0
    )


def test_lq_ftrl_weights_scale_each_slice_by_its_own_max():
    """A tiny slice next to a huge one keeps its exact weights (no shared scale underflows it)."""
    # q = 4/3 → p = 4: W = (1/3)·Sign(A)|A|³/‖A‖_4² per row
    acc = torch.tensor([[3e-100, 4e-100], [1e100, 0.0]], dtype=F64)
    got = lq_ftrl_weights(acc, 4 / 3, dim=-1)
    expected = torch.tensor(
        [[27e-100 / (3 * math.sqrt(337)), 64e-100 / (3 * math.sqrt(337))], [1e100 / 3, 0.0]], dtype=F64
    )
    torch.testing.assert_close(got, expected, rtol=1e-14, atol=0)


@pytest.mark.equation("miras", 24)
def test_moneta_normalize_default_eps_leaves_small_norms_alone():
    """The default eps (1e-12) does not clamp a norm of 1e-3: W = A/‖A‖_4²."""
    acc = torch.tensor([[3e-3, 4e-3]], dtype=F64)
    torch.testing.assert_close(moneta_normalize(acc, 4.0), acc / (math.sqrt(337) * 1e-6), rtol=1e-14, atol=0)


@pytest.mark.equation("miras", 24)
def test_moneta_step_normalises_over_the_given_dim():
    """moneta_step(dim=-1) normalises each row: W = A/‖A_row‖_q^{q−2}."""
    acc = torch.tensor([[3.0, 4.0], [1.0, 0.0]], dtype=F64)
    _, w = moneta_step(acc, torch.zeros_like(acc), 0.1, 1.0, 4.0, dim=-1)
    expected = torch.tensor([[3 / math.sqrt(337), 4 / math.sqrt(337)], [1.0, 0.0]], dtype=F64)
    torch.testing.assert_close(w, expected, rtol=1e-14, atol=0)


@pytest.mark.equation("miras", 22)
def test_elastic_net_step_with_infinite_beta_has_no_decay():
    """β = ∞: λ = 1, ζ = η, γ = η/α; W = S_{η/α}(W − η∇ℓ) by hand."""
    w = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    grad = torch.tensor([1.0, 1.0, -1.0], dtype=F64)
    got = elastic_net_step(w, grad, 0.5, math.inf, 2.0)
    torch.testing.assert_close(got, torch.tensor([0.25, -2.25, 0.75], dtype=F64), rtol=0, atol=1e-15)


@pytest.mark.equation("miras", 18)
def test_f_divergence_default_mass_is_one():
    """Without c the slice sums to 1: KL gives w·e^{−η∇ℓ}/Σ."""
    w = torch.tensor([0.2, 0.3, 0.5], dtype=F64)
    grad = torch.tensor([1.0, 0.0, -1.0], dtype=F64)
    e = w * torch.exp(-0.5 * grad)
    torch.testing.assert_close(f_divergence_step(w, grad, 0.5, _kl_g), e / e.sum(), rtol=1e-14, atol=0)


@pytest.mark.equation("miras", 18)
def test_f_divergence_ignores_the_gradient_of_zero_entries():
    """A huge gradient on a zero entry does not cost precision on the live entries."""
    w = torch.tensor([0.0, 0.25, 0.75], dtype=F64)
    grad = torch.tensor([-1e8, 0.0, 1.0], dtype=F64)
    live = torch.tensor([0.0, 0.25, 0.75 * math.exp(-1)], dtype=F64)
    got = f_divergence_step(w, grad, 1.0, _kl_g)
    torch.testing.assert_close(got, live / live.sum(), rtol=1e-14, atol=0)


@pytest.mark.parametrize("c", [2.0, 0.5])
def test_f_divergence_gives_up_on_a_shift_beyond_two_to_the_64(c):
    """g(y) = exp(y/2⁷⁰) needs |ξ| = 2⁷⁰·ln 2 > 2⁶⁴: the bracket search stops and says so."""
    with pytest.raises(
        ValueError,
        match="^"
        + re.escape(
            f"no ζ makes a slice sum to c = {c:g}: the range of g cannot reach it (or a slice of W is all 0)"
        )
        + "$",
    ):
        f_divergence_step(
            torch.ones(1, dtype=F64), torch.zeros(1, dtype=F64), 1.0, lambda y: torch.exp(y * 2.0**-70), c=c
        )


def test_yaad_gates_keep_the_dtype_and_device_of_a_tensor_gate(monkeypatch):
    """A float32 or meta gate gives float32 or meta gates (no float64 / CPU tensor made)."""
    alpha, step = yaad_gates(torch.tensor([1.0, 0.5]), 2.0)
    assert alpha.dtype == step.dtype == torch.float32
    torch.testing.assert_close(alpha, torch.tensor([0.5, 2 / 3]), rtol=1e-6, atol=0)
    import neural_memory.miras.retention as retention

    monkeypatch.setattr(
        retention,
        "check_range",
        lambda name, value, like, **kw: torch.as_tensor(value, dtype=like.dtype, device=like.device),
    )
    alpha, step = yaad_gates(torch.ones(2, device="meta"), 2.0)
    assert alpha.device.type == step.device.type == "meta"
