"""MIRAS v1 §5.1 and §5.3: attentional biases (Eq. 10, 13, 17, M-U5, M-U10..M-U15) and the linear-memory
steps they give (Eq. 11, 12, 14, 15, 16, 25, 26).

Column-vector convention: W is (d_v, d_k), the memory reads W k, the residual is r = W k - v. Expected
values are hand numbers, the printed matrix forms written out with their indicator masks, torch.autograd
of the printed loss, or a brute-force maximum over directions on the sphere (Eq. 17).
"""

import itertools
import math
from typing import ClassVar

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from neural_memory.miras.attentional_bias import (
    AttentionalBias,
    DotProductBias,
    HuberBias,
    L2Bias,
    LpBias,
    ValueShiftBias,
    YaadBias,
    huber,
    huber_coordinate_step,
    huber_norm_step,
    linear_bias_grad,
    linear_bias_step,
    lp_step,
    moneta_gradient,
    yaad_bias_step,
    yaad_step,
)
from neural_memory.titans.associative_loss import associative_loss, associative_loss_output_grad

F64 = torch.float64


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _t(*values) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def _floats(lo: float, hi: float):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False)


@st.composite
def _pairs(draw, lo: float = -5.0, hi: float = 5.0):
    """(pred, target), two float64 tensors of the same shape (n, d)."""
    n, d = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    pred = draw(arrays(np.float64, (n, d), elements=_floats(lo, hi)))
    target = draw(arrays(np.float64, (n, d), elements=_floats(lo, hi)))
    return torch.from_numpy(pred), torch.from_numpy(target)


@st.composite
def _memories(draw, lo: float = -2.0, hi: float = 2.0):
    """(W, k, v) of a linear memory: W (d_v, d_k), k (d_k,), v (d_v,)."""
    d_v, d_k = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    w = draw(arrays(np.float64, (d_v, d_k), elements=_floats(lo, hi)))
    k = draw(arrays(np.float64, (d_k,), elements=_floats(lo, hi)))
    v = draw(arrays(np.float64, (d_v,), elements=_floats(lo, hi)))
    return torch.from_numpy(w), torch.from_numpy(k), torch.from_numpy(v)


def _autograd_w(loss_of_residual, w: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """d/dW of loss(W k - v) by torch.autograd: the printed gradient, independent of the code under test."""
    w = w.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_of_residual(w @ k - v), w)
    return grad


def _autograd_pred(bias: AttentionalBias, pred, target, **params) -> torch.Tensor:
    x = pred.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(bias.loss(x, target, **params).sum(), x)
    return grad


def _close(got, expected, tol=1e-12):
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol)


# --------------------------------------------------------------------------------------------------
# The interface: token params, shapes, the l2 bias that is Titans Eq. 12, the Hebbian bias of M-U5
# --------------------------------------------------------------------------------------------------


def test_l2_bias_is_bit_for_bit_the_titans_output_grad():
    pred, target = _randn(2, 3, 5, seed=1), _randn(2, 3, 5, seed=2)
    assert torch.equal(L2Bias().output_grad(pred, target), associative_loss_output_grad(pred, target))
    assert torch.equal(L2Bias().loss(pred, target), associative_loss(pred, target))


def test_l2_bias_scale_half_is_the_eq31_convention():
    pred, target = _t(1.0, 2.0), _t(0.0, 4.0)
    # ½ ((1-0)^2 + (2-4)^2) = 2.5, gradient r = (1, -2)
    assert L2Bias(scale=0.5).loss(pred, target).item() == 2.5
    assert torch.equal(L2Bias(scale=0.5).output_grad(pred, target), _t(1.0, -2.0))


def test_dot_product_bias_by_hand():
    # M-U5: -2 <pred, target> = -2 (1*3 + 2*(-1)) = -2, gradient -2 target
    pred, target = _t(1.0, 2.0), _t(3.0, -1.0)
    assert DotProductBias().loss(pred, target).item() == -2.0
    assert torch.equal(DotProductBias().output_grad(pred, target), _t(-6.0, 2.0))


def test_token_params_are_declared():
    assert L2Bias.token_params == ()
    assert LpBias.token_params == ()
    assert DotProductBias.token_params == ()
    assert ValueShiftBias.token_params == ()
    assert HuberBias.token_params == ("delta",)
    assert YaadBias.token_params == ("delta",)


def test_missing_and_extra_token_params_raise():
    pred, target = _randn(3, seed=1), _randn(3, seed=2)
    with pytest.raises(TypeError, match="missing token parameter 'delta'"):
        HuberBias().output_grad(pred, target)
    with pytest.raises(TypeError, match="unexpected token parameter 'delta'"):
        L2Bias().loss(pred, target, delta=_t(1.0))
    with pytest.raises(TypeError, match="unexpected token parameter 'beta'"):
        YaadBias().loss(pred, target, delta=_t(1.0), beta=_t(1.0))


def test_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match="pred and target must have the same shape"):
        L2Bias().loss(_randn(2, 3), _randn(2, 4))
    with pytest.raises(ValueError, match=r"delta of shape \(4,\) does not broadcast"):
        HuberBias().loss(_randn(2, 3), _randn(2, 3), delta=torch.ones(4, dtype=F64))
    # Yaad and norm-Huber compare a norm with delta: one delta per token, (..., 1)
    with pytest.raises(ValueError, match=r"delta must be one scalar per token, shape \(\.\.\., 1\)"):
        YaadBias().loss(_randn(2, 3), _randn(2, 3), delta=torch.ones(2, 3, dtype=F64))
    with pytest.raises(ValueError, match=r"delta must be one scalar per token"):
        HuberBias(mode="norm").output_grad(_randn(2, 3), _randn(2, 3), delta=torch.ones(3, dtype=F64))
    with pytest.raises(TypeError, match="pred must be a tensor"):
        L2Bias().loss([1.0], _t(1.0))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
@pytest.mark.parametrize("bias", [HuberBias(), HuberBias(mode="norm"), YaadBias()], ids=repr)
def test_delta_must_be_finite_and_positive(bias, bad):
    with pytest.raises(ValueError, match="delta must be finite and > 0"):
        bias.output_grad(_randn(2, 3), _randn(2, 3), delta=torch.full((2, 1), bad, dtype=F64))
    with pytest.raises(ValueError, match="delta must be finite and > 0"):
        bias.loss(_randn(2, 3), _randn(2, 3), delta=bad)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: LpBias(p=0.5), "p must be finite and >= 1"),
        (lambda: LpBias(p=float("nan")), "p must be finite and >= 1"),
        (lambda: LpBias(p=float("inf")), "p must be finite and >= 1"),
        (lambda: LpBias(eps=0.0), "eps must be finite and > 0"),
        (lambda: LpBias(eps=float("nan")), "eps must be finite and > 0"),
        (lambda: LpBias(sharpness=-1.0), "sharpness must be finite and > 0"),
        (lambda: LpBias(sharpness=float("nan")), "sharpness must be finite and > 0"),
        (lambda: L2Bias(scale=0.0), "scale must be finite and > 0"),
        (lambda: L2Bias(scale=float("nan")), "scale must be finite and > 0"),
        (lambda: ValueShiftBias(radius=-0.1), "radius must be finite and >= 0"),
        (lambda: ValueShiftBias(radius=float("nan")), "radius must be finite and >= 0"),
        (lambda: HuberBias(mode="coordinates"), "mode must be 'coordinate' or 'norm'"),
    ],
)
def test_invalid_hyper_parameters_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_non_numbers_raise_type_errors():
    with pytest.raises(TypeError, match="p must be a real number"):
        LpBias(p="3")
    with pytest.raises(TypeError, match="smooth must be a bool"):
        LpBias(smooth=1)
    with pytest.raises(TypeError, match="radius must be a real number"):
        ValueShiftBias(radius=True)


def test_biases_are_frozen():
    with pytest.raises(AttributeError):
        LpBias().p = 2.0


_ALL = [
    (L2Bias(), {}),
    (L2Bias(scale=0.5), {}),
    (DotProductBias(), {}),
    (LpBias(), {}),
    (LpBias(p=1.0), {}),
    (LpBias(smooth=True), {}),
    (HuberBias(), {"delta": 0.7}),
    (HuberBias(mode="norm"), {"delta": 0.7}),
    (YaadBias(), {"delta": 0.7}),
    (ValueShiftBias(radius=0.5), {}),
]


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize(("bias", "params"), _ALL, ids=[repr(b) for b, _ in _ALL])
def test_outputs_are_finite_for_inputs_up_to_1e4(bias, params, dtype):
    pred = (1e4 * torch.tensor([[1.0, -1.0, 0.5], [0.0, 0.0, 0.0], [1e-3, -1.0, 1.0]])).to(dtype)
    target = (1e4 * torch.tensor([[-1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, -1.0]])).to(dtype)
    params = {name: torch.tensor(value, dtype=dtype) for name, value in params.items()}
    loss, grad = bias.loss(pred, target, **params), bias.output_grad(pred, target, **params)
    assert loss.shape == (3,) and grad.shape == (3, 3)
    assert loss.dtype == dtype and grad.dtype == dtype
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()


# --------------------------------------------------------------------------------------------------
# Eq. 10 — l_p attentional bias ||M(k) - v||_p^p
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("miras", 10)
def test_lp_loss_by_hand():
    # r = (1, -2): |1|^3 + |-2|^3 = 9; gradient 3 Sign(r)|r|^2 = (3, -12)
    pred, target = _t(2.0, 0.0), _t(1.0, 2.0)
    assert LpBias(p=3.0).loss(pred, target).item() == 9.0
    assert torch.equal(LpBias(p=3.0).output_grad(pred, target), _t(3.0, -12.0))


@pytest.mark.equation("miras", 10)
@given(pair=_pairs())
def test_lp_with_p2_is_squared_l2_and_p1_is_l1(pair):
    pred, target = pair
    r = pred - target
    _close(LpBias(p=2.0).loss(pred, target), (r * r).sum(-1))
    _close(LpBias(p=2.0).output_grad(pred, target), 2 * r)
    _close(LpBias(p=1.0).loss(pred, target), r.abs().sum(-1))


@pytest.mark.equation("miras", 10)
@given(pair=_pairs(), c=_floats(-4.0, 4.0), p=_floats(1.0, 5.0))
def test_lp_loss_is_homogeneous_of_degree_p(pair, c, p):
    r = pair[0] - pair[1]
    zero = torch.zeros_like(r)
    bias = LpBias(p=p)
    _close(bias.loss(c * r, zero), abs(c) ** p * bias.loss(r, zero), tol=1e-10)


@pytest.mark.equation("miras", 10)
@given(pair=_pairs(), p=_floats(1.0, 5.0))
def test_lp_output_grad_equals_autograd(pair, p):
    pred, target = pair
    bias = LpBias(p=p)
    _close(bias.output_grad(pred, target), _autograd_pred(bias, pred, target))


@pytest.mark.equation("miras", 10)
def test_lp_zero_residual_has_zero_gradient_even_at_p1():
    # Sign(0) = 0, so the l1 gradient of an exact recall is 0 (not 0 * 0^0 = NaN)
    x = _t(0.5, -1.0)
    for p in (1.0, 1.5, 3.0):
        assert torch.equal(LpBias(p=p).output_grad(x, x), torch.zeros(2, dtype=F64))


# --------------------------------------------------------------------------------------------------
# Eq. 11 — l_p gradient step W_t = W_{t-1} - p η (Sign(r) ⊙ |r|^{p-1}) k^T
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("miras", 11)
@given(mem=_memories(), p=_floats(1.1, 5.0), eta=_floats(0.0, 2.0))
def test_lp_step_equals_a_gradient_step_on_the_lp_loss(mem, p, eta):
    w, k, v = mem
    assume(bool(((w @ k - v).abs() > 1e-6).all()))  # the l_p loss is differentiable: no zero residual
    expected = w - eta * _autograd_w(lambda r: (r.abs() ** p).sum(), w, k, v)
    _close(lp_step(w, k, v, eta, p=p), expected, tol=1e-10)


@pytest.mark.equation("miras", 11)
def test_lp_step_equals_the_printed_form():
    # A1: the printed right-hand side "W_t" is W_{t-1}; the residual is read at W_{t-1}
    w, k, v, eta, p = _randn(3, 4, seed=1), _randn(4, seed=2), _randn(3, seed=3), 0.3, 3.0
    r = w @ k - v
    printed = w - p * eta * torch.outer(torch.sign(r) * r.abs() ** (p - 1), k)
    _close(lp_step(w, k, v, eta, p=p), printed)


@pytest.mark.equation("miras", 11)
@given(mem=_memories(), eta=_floats(0.0, 2.0))
def test_lp_step_with_p2_is_the_delta_rule_with_factor_2(mem, eta):
    w, k, v = mem
    _close(lp_step(w, k, v, eta, p=2.0), w - 2 * eta * torch.outer(w @ k - v, k))


@pytest.mark.equation("miras", 11)
def test_lp_step_update_is_rank_one_with_row_space_k():
    w, k, v = _randn(4, 3, seed=4), _randn(3, seed=5), _randn(4, seed=6)
    delta_w = lp_step(w, k, v, 0.7, p=3.0) - w
    assert torch.linalg.matrix_rank(delta_w).item() == 1
    # every row is a multiple of k^T: projecting the rows off k leaves nothing
    off_k = delta_w - torch.outer(delta_w @ k, k) / (k @ k)
    _close(off_k, torch.zeros_like(off_k))


@pytest.mark.equation("miras", 11)
def test_lp_step_batched_with_per_example_eta():
    w, k, v = _randn(2, 3, 4, seed=7), _randn(2, 4, seed=8), _randn(2, 3, seed=9)
    eta = _t(0.5, 0.0)
    got = lp_step(w, k, v, eta, p=2.5)
    for b in range(2):
        r = w[b] @ k[b] - v[b]
        expected = w[b] - 2.5 * float(eta[b]) * torch.outer(torch.sign(r) * r.abs() ** 1.5, k[b])
        _close(got[b], expected)
    assert torch.equal(got[1], w[1])  # η = 0 leaves the memory alone


# --------------------------------------------------------------------------------------------------
# Eq. 12 — p = 1, "value-less" memory W_t = W_{t-1} - η Sign(r) k^T
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("miras", 12)
def test_sign_step_by_hand():
    # W = [[1, 0], [0, 1]], k = (1, 2), v = (3, 0): r = (-2, 2), η = 0.5
    # ΔW = -0.5 [[-1, -2], [1, 2]]
    w, k, v = torch.eye(2, dtype=F64), _t(1.0, 2.0), _t(3.0, 0.0)
    expected = torch.tensor([[1.5, 1.0], [-0.5, 0.0]], dtype=F64)
    assert torch.equal(lp_step(w, k, v, 0.5, p=1.0), expected)


@pytest.mark.equation("miras", 12)
@given(mem=_memories(), scales=arrays(np.float64, (4,), elements=_floats(0.01, 100.0)))
def test_sign_step_depends_only_on_the_sign_pattern(mem, scales):
    w, k, v = mem
    assume(float(k @ k) > 1e-3)
    r = w @ k - v
    r_new = r * torch.from_numpy(scales[: r.shape[0]])  # same signs, different magnitudes
    w_new = w + torch.outer(r_new - r, k) / (k @ k)  # a memory whose residual is r_new
    _close(w_new @ k - v, r_new, tol=1e-9)
    _close(lp_step(w_new, k, v, 0.4, p=1.0) - w_new, lp_step(w, k, v, 0.4, p=1.0) - w, tol=1e-12)


@pytest.mark.equation("miras", 12)
def test_sign_step_rows_are_plus_minus_eta_k_or_zero():
    w, k = _randn(3, 4, seed=10), _randn(4, seed=11)
    v = w @ k + _t(1.5, 0.0, -0.2)  # r = (-1.5, 0, 0.2): an exact zero in the middle
    delta_w = lp_step(w, k, v, 0.25, p=1.0) - w
    _close(delta_w[0], 0.25 * k)
    assert torch.equal(delta_w[1], torch.zeros(4, dtype=F64))
    _close(delta_w[2], -0.25 * k)


# --------------------------------------------------------------------------------------------------
# Eq. 13 — Huber function
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("miras", 13)
def test_huber_by_hand():
    # ½ 0.5^2 = 0.125; 1 (3 - ½) = 2.5; 0.5 (2 - 0.25) = 0.875; at |a| = δ both branches give ½ δ^2
    a = _t(0.5, 3.0, -2.0, 1.0)
    delta = _t(1.0, 1.0, 0.5, 1.0)
    assert torch.equal(huber(a, delta), _t(0.125, 2.5, 0.875, 0.5))
    assert huber(_t(-4.0), 2.0).item() == 6.0


@pytest.mark.equation("miras", 13)
@given(delta=_floats(0.01, 100.0))
def test_huber_and_its_derivative_are_continuous_at_delta(delta):
    inside = torch.tensor([delta], dtype=F64)
    outside = torch.nextafter(inside, torch.tensor(math.inf, dtype=F64))
    for side in (1.0, -1.0):
        a = torch.cat([side * inside, side * outside]).requires_grad_(True)
        h = huber(a, delta)
        (dh,) = torch.autograd.grad(h.sum(), a)
        _close(h[0], h[1], tol=1e-12 * max(1.0, delta**2))
        _close(dh[0], dh[1], tol=1e-12 * max(1.0, delta))
        assert dh[1].item() == side * delta  # H'(a) = δ sign(a) beyond δ


@pytest.mark.equation("miras", 13)
@given(a=arrays(np.float64, (5,), elements=_floats(-1e3, 1e3)))
def test_huber_with_a_huge_delta_is_half_the_square(a):
    a = torch.from_numpy(a)
    delta = 1e6 * (1.0 + float(a.abs().max()))
    assert torch.equal(huber(a, delta), 0.5 * a**2)


@pytest.mark.equation("miras", 13)
@given(a=arrays(np.float64, (5,), elements=_floats(-1e3, 1e3)), delta=_floats(1e-3, 1e3))
def test_huber_is_at_most_half_the_square(a, delta):
    a = torch.from_numpy(a)
    assert bool((huber(a, delta) <= 0.5 * a**2).all())


def test_huber_rejects_bad_delta():
    with pytest.raises(ValueError, match="delta must be finite and > 0"):
        huber(_t(1.0), 0.0)
    with pytest.raises(ValueError, match="delta must be finite and > 0"):
        huber(_t(1.0), _t(float("nan")))
    with pytest.raises(TypeError, match="a must be a tensor"):
        huber(1.0, 1.0)


# --------------------------------------------------------------------------------------------------
# Eq. 14 — coordinate-wise Huber (M-U11): loss Σ_j H(r_j)
# --------------------------------------------------------------------------------------------------


def _printed_eq14(w, k, v, eta, delta):
    """Eq. 14 as printed (k^T in the second term read as k_t^T, A1), masks I(.) 1^T written out."""
    r = w @ k - v
    ones = torch.ones_like(k)
    inner = torch.outer(r, k) * torch.outer((r.abs() <= delta).to(F64), ones)
    outer = torch.outer(delta * torch.sign(r), k) * torch.outer((r.abs() > delta).to(F64), ones)
    return w - eta * (inner + outer)


@pytest.mark.equation("miras", 14)
def test_coordinate_huber_step_equals_the_printed_form():
    w, k = _randn(4, 3, seed=12), _randn(3, seed=13)
    v = w @ k - _t(0.2, -3.0, 0.9, 5.0)  # r = (0.2, -3, 0.9, 5): two coordinates inside δ = 1, two outside
    _close(huber_coordinate_step(w, k, v, 0.3, delta=1.0), _printed_eq14(w, k, v, 0.3, 1.0))


@pytest.mark.equation("miras", 14)
def test_coordinate_huber_step_with_per_channel_delta():
    w, k = _randn(3, 2, seed=14), _randn(2, seed=15)
    v = w @ k - _t(0.5, 0.5, -2.0)
    delta = _t(0.4, 1.0, 3.0)  # channel 0 clipped, channels 1 and 2 not
    _close(huber_coordinate_step(w, k, v, 0.5, delta=delta), _printed_eq14(w, k, v, 0.5, delta))


@pytest.mark.equation("miras", 14)
@given(mem=_memories(), eta=_floats(0.0, 2.0), delta=_floats(0.05, 3.0))
def test_coordinate_huber_step_equals_autograd_of_the_summed_huber_loss(mem, eta, delta):
    w, k, v = mem

    def loss(r):  # Eq. 13 written out, summed over coordinates
        return torch.where(r.abs() <= delta, 0.5 * r**2, delta * (r.abs() - 0.5 * delta)).sum()

    expected = w - eta * _autograd_w(loss, w, k, v)
    _close(huber_coordinate_step(w, k, v, eta, delta=delta), expected)


@pytest.mark.equation("miras", 14)
def test_coordinate_huber_step_is_delta_rule_inside_and_delta_times_sign_rule_outside():
    w, k = _randn(3, 4, seed=16), _randn(4, seed=17)
    v_small = w @ k - _t(0.1, -0.3, 0.2)
    _close(huber_coordinate_step(w, k, v_small, 0.6, delta=0.5), w - 0.6 * torch.outer(w @ k - v_small, k))
    v_big = w @ k - _t(2.0, -3.0, 1.0)
    sign_step = lp_step(w, k, v_big, 0.6, p=1.0)
    _close(huber_coordinate_step(w, k, v_big, 0.6, delta=0.5), w + 0.5 * (sign_step - w))


@pytest.mark.equation("miras", 14)
@given(mem=_memories(), eta=_floats(0.0, 2.0), delta=_floats(0.05, 3.0))
def test_coordinate_huber_row_norms_are_eta_min_r_delta_norm_k(mem, eta, delta):
    w, k, v = mem
    r = w @ k - v
    rows = (huber_coordinate_step(w, k, v, eta, delta=delta) - w).norm(dim=-1)
    expected = eta * torch.clamp(r.abs(), max=delta) * k.norm()
    _close(rows, expected, tol=1e-12)


# --------------------------------------------------------------------------------------------------
# Eq. 15 — norm-based Huber (M-U12): loss H(||r||_2)
# --------------------------------------------------------------------------------------------------


def _printed_eq15(w, k, v, eta, delta):
    r = w @ k - v
    if r.norm() <= delta:
        return w - eta * torch.outer(r, k)
    return w - eta * delta * torch.outer(r / r.norm(), k)


@pytest.mark.equation("miras", 15)
@pytest.mark.parametrize("delta", [0.5, 10.0])
def test_norm_huber_step_equals_the_printed_form_in_both_branches(delta):
    w, k, v = _randn(3, 4, seed=18), _randn(4, seed=19), _randn(3, seed=20)
    assert (w @ k - v).norm() > 0.5 and (w @ k - v).norm() < 10.0  # one branch each
    _close(huber_norm_step(w, k, v, 0.4, delta=delta), _printed_eq15(w, k, v, 0.4, delta))


@pytest.mark.equation("miras", 15)
@given(mem=_memories(), eta=_floats(0.0, 2.0), delta=_floats(0.05, 3.0))
def test_norm_huber_step_equals_autograd_of_huber_of_the_norm(mem, eta, delta):
    w, k, v = mem
    assume(float((w @ k - v).norm()) > 1e-6)

    def loss(r):
        n = r.norm()
        return 0.5 * n**2 if n <= delta else delta * (n - 0.5 * delta)

    expected = w - eta * _autograd_w(loss, w, k, v)
    _close(huber_norm_step(w, k, v, eta, delta=delta), expected)


@pytest.mark.equation("miras", 15)
@given(mem=_memories(), eta=_floats(0.0, 2.0), delta=_floats(0.05, 3.0))
def test_norm_huber_outer_branch_clips_the_update_norm_to_eta_delta_norm_k(mem, eta, delta):
    w, k, v = mem
    assume(float((w @ k - v).norm()) > delta)
    step = huber_norm_step(w, k, v, eta, delta=delta) - w
    _close(torch.linalg.matrix_norm(step), eta * delta * k.norm())


@pytest.mark.equation("miras", 15)
@given(mem=_memories(), eta=_floats(0.0, 2.0))
def test_norm_huber_with_a_huge_delta_is_the_delta_rule(mem, eta):
    w, k, v = mem
    _close(huber_norm_step(w, k, v, eta, delta=1e8), w - eta * torch.outer(w @ k - v, k))


# --------------------------------------------------------------------------------------------------
# Eq. 16 — Yaad's l2/l1 switch; ℓ₂ = ½||r||², ℓ₁ = ||r||₁ / √d_v (errata: the constants)
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("miras", 16)
def test_yaad_switch_by_hand():
    # scalar memory W = 2, k = 1, v = 5: r = -3, η = 0.5
    w, k, v = torch.tensor([[2.0]], dtype=F64), _t(1.0), _t(5.0)
    # δ = 10 >= |r|: l2 branch, ∇ℓ₂ = r k = -3, W' = 2 + 1.5
    assert torch.equal(yaad_bias_step(w, k, v, 0.5, delta=10.0), torch.tensor([[3.5]], dtype=F64))
    # δ = 1 < |r|: l1 branch, δ ∇ℓ₁ = 1 * Sign(-3) * 1 = -1, W' = 2 + 0.5
    assert torch.equal(yaad_bias_step(w, k, v, 0.5, delta=1.0), torch.tensor([[2.5]], dtype=F64))


@pytest.mark.equation("miras", 16)
def test_yaad_l1_step_is_scaled_by_one_over_root_d_by_hand():
    # d_v = 4, W = 0, k = 1, v = (3, -4, 1, 2): r = -v, ||r|| = √30 ≈ 5.48, η = 0.5
    w, k, v = torch.zeros(4, 1, dtype=F64), _t(1.0), _t(3.0, -4.0, 1.0, 2.0)
    # δ = 10 >= ||r||: l2 branch, W' = -η r = η v
    assert torch.equal(yaad_bias_step(w, k, v, 0.5, delta=10.0), 0.5 * v[:, None])
    # δ = 1 < ||r||: l1 branch, δ Sign(r) / √4 = (-1/2, 1/2, -1/2, -1/2), W' = -η times that
    expected = torch.tensor([[0.25], [-0.25], [0.25], [0.25]], dtype=F64)
    assert torch.equal(yaad_bias_step(w, k, v, 0.5, delta=1.0), expected)


@pytest.mark.equation("miras", 16)
def test_yaad_switch_picks_the_branch_per_token_from_the_residual_norm():
    # three tokens (batch of memories), residual norms 0.5, 5 and 2, thresholds 1, 1 and 3
    w, k = _randn(3, 2, 3, seed=21), _randn(3, 3, seed=22)
    r = torch.tensor([[0.3, -0.4], [3.0, 4.0], [0.0, -2.0]], dtype=F64)
    v = (w @ k[..., None]).squeeze(-1) - r
    delta = _t(1.0, 1.0, 3.0)
    eta = _t(0.5, 0.2, 0.9)
    got = yaad_bias_step(w, k, v, eta, delta=delta[:, None])
    l2 = [w[i] - eta[i] * torch.outer(r[i], k[i]) for i in range(3)]
    l1 = [w[i] - eta[i] * delta[i] * torch.outer(torch.sign(r[i]), k[i]) / 2**0.5 for i in range(3)]
    _close(got[0], l2[0])
    _close(got[1], l1[1])
    _close(got[2], l2[2])


@pytest.mark.equation("miras", 16)
@given(mem=_memories(), eta=_floats(0.0, 2.0))
def test_yaad_switch_with_a_huge_delta_is_l2_gradient_descent(mem, eta):
    w, k, v = mem
    expected = w - eta * _autograd_w(lambda r: 0.5 * (r * r).sum(), w, k, v)
    _close(yaad_bias_step(w, k, v, eta, delta=1e8), expected)


@pytest.mark.equation("miras", 16)
@given(mem=_memories(), eta=_floats(0.0, 2.0), delta=_floats(0.05, 3.0), c=_floats(1.0, 1e4))
def test_yaad_outer_branch_is_bounded_independent_of_the_residual(mem, eta, delta, c):
    w, k, v = mem
    r = w @ k - v
    assume(float(r.norm()) > delta)
    v_far = w @ k - c * r  # the same direction, c times further away
    step, step_far = (
        yaad_bias_step(w, k, v, eta, delta=delta) - w,
        yaad_bias_step(w, k, v_far, eta, delta=delta) - w,
    )
    bound = eta * delta * torch.sign(r).norm() / r.shape[-1] ** 0.5 * k.norm()
    # the step is read back as W' - W: allow the rounding of W' (one ulp of W), not of the bound
    assert torch.linalg.matrix_norm(step) <= bound * (1 + 1e-12) + 1e-15 * torch.linalg.matrix_norm(w)
    _close(step_far, step)


@pytest.mark.equation("miras", 16)
@given(a=arrays(np.float64, (4, 1), elements=_floats(-10.0, 10.0)), delta=_floats(0.05, 5.0))
def test_yaad_bias_in_one_dimension_is_the_huber_function(a, delta):
    # d = 1: ||r||_2 = |r|, so Yaad's switch and its loss are Eq. 13 — this fixes the ½ and the -½δ
    r = torch.from_numpy(a)
    zero = torch.zeros_like(r)
    expected = torch.where(r.abs() <= delta, 0.5 * r**2, delta * (r.abs() - 0.5 * delta))
    _close(YaadBias().loss(r, zero, delta=delta), expected[:, 0])
    _close(YaadBias().output_grad(r, zero, delta=delta), torch.clamp(r, -delta, delta))


@pytest.mark.equation("miras", 16)
@given(pair=_pairs(), delta=_floats(0.05, 5.0))
def test_yaad_step_is_never_longer_than_the_l2_step_nor_than_delta(pair, delta):
    # The outlier branch exists to take a smaller step than l2 would: ||∇|| <= min(||r||, δ), like the
    # Huber function's derivative. With ℓ₁ = ||r||₁ (no 1/√d) the step δ Sign(r) has norm up to δ√d, longer
    # than the l2 step whenever δ < ||r|| < δ√d: the overshoot that made Yaad's inner loop chaotic (errata).
    pred, target = pair
    r = pred - target
    grad = YaadBias().output_grad(pred, target, delta=delta)
    limit = torch.minimum(r.norm(dim=-1), torch.full_like(r[..., 0], delta))
    assert (grad.norm(dim=-1) <= limit * (1 + 1e-12)).all()
    # ...and at the switch the step's length is continuous: δ on both sides when no coordinate of r is 0
    assume(bool((r.abs() > 1e-6).all()))
    on_edge = delta * r / r.norm(dim=-1, keepdim=True)
    beyond = YaadBias().output_grad(on_edge * (1 + 1e-9), torch.zeros_like(r), delta=delta)
    _close(beyond.norm(dim=-1), torch.full_like(r[..., 0], delta))


@pytest.mark.equation("miras", 16)
@given(pair=_pairs(), delta=_floats(0.05, 5.0))
def test_yaad_output_grad_equals_autograd_of_its_piecewise_loss(pair, delta):
    pred, target = pair
    _close(
        YaadBias().output_grad(pred, target, delta=delta),
        _autograd_pred(YaadBias(), pred, target, delta=delta),
    )


# --------------------------------------------------------------------------------------------------
# Huber biases: output_grad against autograd of the loss
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("miras", 14)
@pytest.mark.equation("miras", 15)
@given(pair=_pairs(), deltas=arrays(np.float64, (3, 4), elements=_floats(0.05, 5.0)))
def test_huber_output_grads_equal_autograd_of_their_losses(pair, deltas):
    pred, target = pair
    n, d = pred.shape
    per_channel = torch.from_numpy(deltas[:n, :d])
    per_token = per_channel[:, :1]
    for bias, delta in (
        (HuberBias(), per_channel),
        (HuberBias(), per_token),
        (HuberBias(mode="norm"), per_token),
    ):
        _close(bias.output_grad(pred, target, delta=delta), _autograd_pred(bias, pred, target, delta=delta))


# --------------------------------------------------------------------------------------------------
# Eq. 17 — robustness to value shifts; closed form M-U14, update M-U15
# --------------------------------------------------------------------------------------------------


def _worst_shift_brute_force(r: torch.Tensor, radius: float, directions: torch.Tensor) -> torch.Tensor:
    """max over unit directions u of ½||r - Δu||² (pred - (v + δv) = r - δv with δv = Δu)."""
    return (0.5 * ((r[None, :] - radius * directions) ** 2).sum(-1)).max()


@pytest.mark.equation("miras", 17)
@given(r=arrays(np.float64, (2,), elements=_floats(-5.0, 5.0)), radius=_floats(0.0, 3.0))
def test_value_shift_closed_form_equals_the_brute_force_max_on_the_circle(r, radius):
    r = torch.from_numpy(r)
    angles = torch.arange(200_000, dtype=F64) * (2 * math.pi / 200_000)
    circle = torch.stack([angles.cos(), angles.sin()], dim=-1)
    brute = _worst_shift_brute_force(r, radius, circle)
    closed = ValueShiftBias(radius=radius).loss(r, torch.zeros_like(r))
    # the grid misses the worst direction by at most π/200000: 1 - cos <= 1.3e-10 of Δ||r||
    assert brute <= closed + 1e-12 * (1 + closed)
    assert closed - brute <= 2e-10 * (1 + radius * float(r.norm()))


@pytest.mark.equation("miras", 17)
def test_value_shift_closed_form_equals_the_brute_force_max_on_the_sphere():
    r, radius = _t(0.3, -1.2, 2.0), 0.8
    directions = _randn(400_000, 3, seed=23)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    brute = _worst_shift_brute_force(r, radius, directions)
    closed = ValueShiftBias(radius=radius).loss(r, torch.zeros_like(r))
    # random directions come within ~0.01 rad of the worst one: the max is reached from below, to 1e-4
    assert brute <= closed + 1e-12
    assert closed - brute < 1e-4 * closed
    # and the worst shift of M-U13, δv* = Δ (v - M(k)) / ||M(k) - v||, attains the closed form
    worst = -radius * r / r.norm()
    _close(0.5 * ((r - worst) ** 2).sum(), closed)


@pytest.mark.equation("miras", 17)
def test_value_shift_loss_by_hand():
    # r = (3, 4), Δ = 1: ½ (5 + 1)^2 = 18 = ½ 25 + 5 + ½; gradient r (1 + Δ/||r||) = (3.6, 4.8)
    pred, target = _t(4.0, 4.0), _t(1.0, 0.0)
    assert ValueShiftBias(radius=1.0).loss(pred, target).item() == 18.0
    _close(ValueShiftBias(radius=1.0).output_grad(pred, target), _t(3.6, 4.8))


@pytest.mark.equation("miras", 17)
@given(pair=_pairs())
def test_value_shift_with_zero_radius_is_half_squared_l2(pair):
    pred, target = pair
    r = pred - target
    _close(ValueShiftBias(radius=0.0).loss(pred, target), 0.5 * (r * r).sum(-1))
    _close(ValueShiftBias(radius=0.0).output_grad(pred, target), r)


@pytest.mark.equation("miras", 17)
@given(pair=_pairs(), radius=_floats(0.0, 3.0))
def test_value_shift_output_grad_equals_autograd_of_the_closed_form(pair, radius):
    pred, target = pair
    bias = ValueShiftBias(radius=radius)
    _close(bias.output_grad(pred, target), _autograd_pred(bias, pred, target))


@pytest.mark.equation("miras", 17)
@given(mem=_memories(), eta=_floats(0.0, 2.0), radius=_floats(0.0, 3.0))
def test_value_shift_linear_step_equals_the_printed_update(mem, eta, radius):
    # M-U15: W_t = W_{t-1} - η [ r k^T + Δ r / ||r|| k^T ]
    w, k, v = mem
    r = w @ k - v
    assume(float(r.norm()) > 1e-6)
    printed = w - eta * (torch.outer(r, k) + radius * torch.outer(r / r.norm(), k))
    _close(linear_bias_step(w, k, v, eta, ValueShiftBias(radius=radius)), printed)


@pytest.mark.equation("miras", 17)
def test_value_shift_zero_residual_gives_a_zero_gradient_not_nan():
    # the cone ½(||r|| + Δ)² has no gradient at r = 0; we return its minimum-norm subgradient, 0
    x = _t(1.0, -2.0, 0.5)
    assert torch.equal(ValueShiftBias(radius=2.0).output_grad(x, x), torch.zeros(3, dtype=F64))
    assert ValueShiftBias(radius=2.0).loss(x, x).item() == 2.0


# --------------------------------------------------------------------------------------------------
# Eq. 25 — Moneta's gradient, η taken out once (A4); smooth surrogates of M-U10
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("miras", 25)
@given(mem=_memories(), p=_floats(1.1, 5.0), eta=_floats(0.1, 2.0))
def test_moneta_gradient_is_the_printed_form_over_eta_and_equals_autograd(mem, p, eta):
    w, k, v = mem
    r = w @ k - v
    assume(bool((r.abs() > 1e-6).all()))
    printed_over_eta = p * eta * torch.outer(torch.sign(r) * r.abs() ** (p - 1), k) / eta
    got = moneta_gradient(w, k, v, LpBias(p=p))
    _close(got, printed_over_eta, tol=1e-10)
    _close(got, _autograd_w(lambda res: (res.abs() ** p).sum(), w, k, v), tol=1e-10)


@pytest.mark.equation("miras", 25)
def test_moneta_smooth_gradient_is_the_surrogate_formula():
    # Sign(x) ≈ tanh(a x), |x| ≈ sqrt(x² + ε): p tanh(a r) (r² + ε)^{(p-1)/2} k^T
    w, k, v = _randn(3, 2, seed=24), _randn(2, seed=25), _randn(3, seed=26)
    r = w @ k - v
    bias = LpBias(p=3.0, smooth=True, eps=1e-4, sharpness=7.0)
    expected = torch.outer(3.0 * torch.tanh(7.0 * r) * (r**2 + 1e-4), k)
    _close(moneta_gradient(w, k, v, bias), expected)


@pytest.mark.equation("miras", 25)
@pytest.mark.parametrize("p", [1.0, 1.5, 3.0])
def test_moneta_smooth_gradient_tends_to_the_exact_one(p):
    w, k = _randn(4, 3, seed=27), _randn(3, seed=28)
    v = w @ k - _t(0.1, -0.5, 2.0, -3.0)  # residuals away from 0, where the exact gradient exists
    exact = moneta_gradient(w, k, v, LpBias(p=p))
    errors = [
        (moneta_gradient(w, k, v, LpBias(p=p, smooth=True, eps=eps, sharpness=a)) - exact).abs().max().item()
        for eps, a in ((1e-2, 10.0), (1e-4, 1e2), (1e-8, 1e4), (1e-12, 1e6))
    ]
    # never worse, strictly better overall (at p = 1 the tanh saturates to ±1 exactly: the error hits 0)
    assert all(later <= earlier for earlier, later in itertools.pairwise(errors))
    assert errors[-1] < errors[0] and errors[-1] < 1e-9


@pytest.mark.equation("miras", 25)
def test_moneta_smooth_loss_tends_to_the_exact_one():
    pred, target = _t(0.1, -0.5, 2.0), _t(0.0, 0.0, 0.0)
    exact = LpBias(p=3.0).loss(pred, target)
    gaps = [
        (LpBias(p=3.0, smooth=True, eps=eps).loss(pred, target) - exact).item() for eps in (1e-2, 1e-6, 1e-10)
    ]
    assert all(gap > 0 for gap in gaps)  # sqrt(x² + ε) > |x|
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-9


@pytest.mark.equation("miras", 25)
def test_smooth_surrogate_has_a_finite_derivative_at_zero_residual():
    # Remark 5's reason for the surrogates: for p < 2, d/dr |r|^{p-1} blows up at r = 0
    pred, target = torch.zeros(2, dtype=F64), torch.zeros(2, dtype=F64)
    for smooth, finite in ((False, False), (True, True)):
        x = pred.clone().requires_grad_(True)
        grad = LpBias(p=1.5, smooth=smooth).output_grad(x, target)
        (second,) = torch.autograd.grad(grad.sum(), x)
        assert bool(torch.isfinite(second).all()) is finite


def test_moneta_gradient_needs_an_lp_bias():
    w, k, v = _randn(2, 2), _randn(2), _randn(2)
    with pytest.raises(TypeError, match="bias must be an LpBias"):
        moneta_gradient(w, k, v, L2Bias())


# --------------------------------------------------------------------------------------------------
# Eq. 26 — Yaad recurrence W_t = α_t W_{t-1} - {η ∇ℓ₂ | η δ ∇ℓ₁}
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("miras", 26)
def test_yaad_step_by_hand():
    # W = 2, k = 1, v = 5, r = -3, η = 0.5, α = 0.5
    w, k, v = torch.tensor([[2.0]], dtype=F64), _t(1.0), _t(5.0)
    # δ = 1: 0.5 * 2 - 0.5 * 1 * Sign(-3) = 1.5;  δ = 10: 0.5 * 2 - 0.5 * (-3) = 2.5
    assert torch.equal(yaad_step(w, k, v, 0.5, 0.5, delta=1.0), torch.tensor([[1.5]], dtype=F64))
    assert torch.equal(yaad_step(w, k, v, 0.5, 0.5, delta=10.0), torch.tensor([[2.5]], dtype=F64))


@pytest.mark.equation("miras", 26)
@given(mem=_memories(), eta=_floats(0.0, 2.0))
def test_yaad_step_with_huge_delta_and_alpha_one_is_l2_gradient_descent(mem, eta):
    w, k, v = mem
    expected = w - eta * _autograd_w(lambda r: 0.5 * (r * r).sum(), w, k, v)
    _close(yaad_step(w, k, v, eta, 1.0, delta=1e8), expected)


@pytest.mark.equation("miras", 26)
@given(mem=_memories(), eta=_floats(0.0, 2.0), delta=_floats(0.05, 3.0))
def test_yaad_step_alpha_zero_wipes_the_memory_before_the_write(mem, eta, delta):
    w, k, v = mem
    # the write is still computed at W_{t-1} (the surprise of the old memory), only the old memory goes
    _close(yaad_step(w, k, v, eta, 0.0, delta=delta), yaad_step(w, k, v, eta, 1.0, delta=delta) - w)


@pytest.mark.equation("miras", 26)
def test_yaad_step_bounds_the_write_of_an_outlier_token():
    w, k = _randn(4, 3, 5, seed=29), _randn(4, 5, seed=30)
    r = 0.1 * _randn(4, 3, seed=31)
    r[2] = _t(1e4, -3e3, 5e3)  # the outlier
    v = (w @ k[..., None]).squeeze(-1) - r
    eta, alpha, delta = _t(0.5, 0.5, 0.5, 0.5), _t(0.9, 1.0, 0.8, 0.95), torch.full((4, 1), 1.0, dtype=F64)
    writes = alpha[:, None, None] * w - yaad_step(w, k, v, eta, alpha, delta=delta)
    bound = eta * delta[:, 0] * torch.sign(r).norm(dim=-1) / 3**0.5 * k.norm(dim=-1)
    assert torch.linalg.matrix_norm(writes)[2] <= bound[2] * (1 + 1e-12)
    for i in (0, 1, 3):  # the small residuals take the l2 branch
        _close(writes[i], eta[i] * torch.outer(r[i], k[i]))


@pytest.mark.equation("miras", 26)
@pytest.mark.parametrize(
    ("eta", "alpha", "match"),
    [
        (-0.1, 0.5, r"eta must be in \[0, inf\)"),
        (float("nan"), 0.5, r"eta must be in \[0, inf\)"),
        (0.1, 1.5, r"alpha must be in \[0, 1\]"),
        (0.1, -0.1, r"alpha must be in \[0, 1\]"),
        (0.1, float("nan"), r"alpha must be in \[0, 1\]"),
    ],
)
def test_yaad_step_rejects_bad_gates(eta, alpha, match):
    with pytest.raises(ValueError, match=match):
        yaad_step(_randn(2, 3), _randn(3), _randn(2), eta, alpha, delta=1.0)


# --------------------------------------------------------------------------------------------------
# The generic step
# --------------------------------------------------------------------------------------------------


@given(mem=_memories(), eta=_floats(0.0, 2.0))
def test_linear_bias_step_with_half_l2_is_the_deltanet_step(mem, eta):
    w, k, v = mem
    _close(linear_bias_step(w, k, v, eta, L2Bias(scale=0.5)), w - eta * torch.outer(w @ k - v, k))


def test_linear_bias_step_rejects_bad_arguments():
    w, k, v = _randn(3, 2), _randn(2), _randn(3)
    with pytest.raises(ValueError, match=r"eta must be in \[0, inf\)"):
        linear_bias_step(w, k, v, -1.0, L2Bias())
    with pytest.raises(ValueError, match="k must have shape"):
        linear_bias_step(w, _randn(3), v, 0.1, L2Bias())
    with pytest.raises(TypeError, match="bias must be an AttentionalBias"):
        linear_bias_step(w, k, v, 0.1, lambda p, t: p - t)
    with pytest.raises(TypeError, match="missing token parameter 'delta'"):
        linear_bias_step(w, k, v, 0.1, YaadBias())


@pytest.mark.equation("miras", 14)
@pytest.mark.equation("miras", 16)
def test_thresholds_stay_differentiable_for_the_outer_loop():
    # δ_t is learned (§5.4): d/dδ of the clipped gradient δ Sign(r) is Sign(r) where r is clipped, else 0
    pred, target = _t(3.0, -0.2, -5.0), _t(0.0, 0.0, 0.0)
    for bias in (HuberBias(), YaadBias()):
        delta = torch.tensor([1.0], dtype=F64, requires_grad=True)
        (d_delta,) = torch.autograd.grad(
            (bias.output_grad(pred, target, delta=delta) * _t(1.0, 2.0, 3.0)).sum(), delta
        )
        # Huber clips coordinates 0 and 2 (1·1 + 3·(-1)); Yaad's ‖r‖ > δ clips all three, (1 - 2 - 3) / √3
        expected = -2.0 if isinstance(bias, HuberBias) else -4.0 / math.sqrt(3.0)
        assert math.isclose(d_delta.item(), expected, rel_tol=1e-15)


@pytest.mark.equation("miras", 31)
@given(
    w=arrays(np.float64, (3, 4), elements=st.floats(-3, 3)),
    k=arrays(np.float64, (4,), elements=st.floats(-3, 3)),
    v=arrays(np.float64, (3,), elements=st.floats(-3, 3)),
)
def test_eq31_l2_gradient_at_the_lag_state_is_the_outer_product_and_autograd(w, k, v):
    w1, k, v = (torch.tensor(a) for a in (w, k, v))
    got = linear_bias_grad(w1, k, v, L2Bias(scale=0.5))
    torch.testing.assert_close(got, torch.outer(w1 @ k - v, k), rtol=0, atol=1e-12)  # Eq. 31 as printed
    w_leaf = w1.clone().requires_grad_(True)
    (0.5 * (w_leaf @ k - v).pow(2).sum()).backward()
    torch.testing.assert_close(got, w_leaf.grad, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# Exact error messages, float hyper-parameters, boundaries and devices
# --------------------------------------------------------------------------------------------------

_W, _K, _V = _randn(3, 2, seed=40), _randn(2, seed=41), _randn(3, seed=42)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: huber(1.0, 1.0), TypeError, "a must be a tensor, got float"),
        (lambda: L2Bias().loss([1.0], _t(1.0)), TypeError, "pred must be a tensor, got list"),
        (lambda: L2Bias().loss(_t(1.0), [1.0]), TypeError, "target must be a tensor, got list"),
        (lambda: L2Bias(scale="1"), TypeError, "scale must be a real number, got str"),
        (lambda: LpBias(p="3"), TypeError, "p must be a real number, got str"),
        (lambda: LpBias(smooth=1), TypeError, "smooth must be a bool, got int"),
        (lambda: huber(_t(1.0), "1"), TypeError, "delta must be a float or a tensor, got str"),
        (lambda: huber(_t(1.0), True), TypeError, "delta must be a float or a tensor, got bool"),
        (lambda: linear_bias_grad(_W, _K, _V, "l2"), TypeError, "bias must be an AttentionalBias, got str"),
        (lambda: moneta_gradient(_W, _K, _V, L2Bias()), TypeError, "bias must be an LpBias, got L2Bias"),
        (
            lambda: HuberBias().loss(_t(1.0), _t(2.0)),
            TypeError,
            "HuberBias is missing token parameter 'delta'",
        ),
        (
            lambda: L2Bias().loss(_t(1.0), _t(2.0), delta=1.0),
            TypeError,
            "L2Bias got an unexpected token parameter 'delta' (it takes none)",
        ),
        (
            lambda: YaadBias().loss(_t(1.0), _t(2.0), delta=1.0, beta=1.0),
            TypeError,
            "YaadBias got an unexpected token parameter 'beta' (it takes ('delta',))",
        ),
        (lambda: huber(_t(1.0), 0.0), ValueError, "delta must be finite and > 0, got 0.0"),
        (
            lambda: huber(_t(1.0, 2.0), _t(1.0, -1.0)),
            ValueError,
            "delta must be finite and > 0, got a tensor with values in [-1.0, 1.0]",
        ),
        (
            lambda: YaadBias().loss(_randn(2, 3), _randn(2, 3), delta=torch.ones(2, 3, dtype=F64)),
            ValueError,
            "delta must be one scalar per token, shape (..., 1), got (2, 3) "
            "(docs/errata.md, MIRAS Eq. 16: the switch compares a norm with it)",
        ),
    ],
)
def test_error_messages_are_exact(call, error, message):
    """Every check raises its documented exception with the exact message (name, type or value shown)."""
    with pytest.raises(error) as excinfo:
        call()
    assert type(excinfo.value) is error
    assert str(excinfo.value) == message


@pytest.mark.parametrize(
    ("w", "k", "v", "message"),
    [
        (_randn(3), _K, _V, "W must be (..., d_v, d_k), got torch.Size([3])"),
        ([[1.0]], _K, _V, "W must be (..., d_v, d_k), got list"),
        (_W, _randn(3), _V, "k must have shape (..., d_k=2), got torch.Size([3])"),
        (_W, torch.tensor(1.0, dtype=F64), _V, "k must have shape (..., d_k=2), got torch.Size([])"),
        (_W, [1.0, 2.0], _V, "k must have shape (..., d_k=2), got list"),
        (_W, _K, _randn(2), "v must have shape (..., d_v=3), got torch.Size([2])"),
        (_W, _K, torch.tensor(1.0, dtype=F64), "v must have shape (..., d_v=3), got torch.Size([])"),
        (_W, _K, "v", "v must have shape (..., d_v=3), got str"),
    ],
)
def test_linear_memory_shape_errors_are_exact(w, k, v, message):
    """A bad W, k or v (wrong rank, wrong width, not a tensor) raises ValueError naming its shape or type."""
    with pytest.raises(ValueError) as excinfo:
        linear_bias_grad(w, k, v, L2Bias())
    assert type(excinfo.value) is ValueError
    assert str(excinfo.value) == message


@pytest.mark.parametrize(
    ("make", "field", "value"),
    [
        (lambda: L2Bias(scale=2), "scale", 2.0),
        (lambda: LpBias(p=3), "p", 3.0),
        (lambda: LpBias(eps=1), "eps", 1.0),
        (lambda: LpBias(sharpness=7), "sharpness", 7.0),
        (lambda: ValueShiftBias(radius=1), "radius", 1.0),
    ],
)
def test_integer_hyper_parameters_are_stored_as_floats(make, field, value):
    """An int hyper-parameter is validated and stored back on the field as a Python float."""
    stored = getattr(make(), field)
    assert type(stored) is float
    assert stored == value


def test_a_bias_without_its_own_rule_takes_per_channel_token_params():
    """By default a token param may be (..., d), one per channel (only Yaad and norm-Huber need (..., 1))."""

    class ChannelScaledL2(AttentionalBias):
        token_params: ClassVar[tuple[str, ...]] = ("c",)

        def _loss(self, pred, target, c):
            return (c * (pred - target) ** 2).sum(-1)

        def _output_grad(self, pred, target, c):
            return 2 * c * (pred - target)

    pred, target, c = _t(1.0, 2.0, 3.0), _t(0.0, 0.0, 1.0), _t(1.0, 0.5, 2.0)
    # 2 c r with r = (1, 2, 2): (2, 2, 8); loss Σ c r² = 1 + 2 + 8 = 11
    assert torch.equal(ChannelScaledL2().output_grad(pred, target, c=c), _t(2.0, 2.0, 8.0))
    assert ChannelScaledL2().loss(pred, target, c=c).item() == 11.0


def _huber_by_hand(x: float, d: float) -> float:
    return 0.5 * x * x if abs(x) <= d else d * (abs(x) - 0.5 * d)


@pytest.mark.equation("miras", 14)
@pytest.mark.equation("miras", 15)
def test_huber_bias_losses_reduce_only_the_last_axis_of_a_3d_batch():
    """On (2, 3, 4) inputs both Huber losses are (2, 3): Σ_j H(r_j) and H(||r||), written out per token."""
    pred, target = 2.0 * _randn(2, 3, 4, seed=43), _randn(2, 3, 4, seed=44)
    r = (pred - target).tolist()
    coordinate = [[sum(_huber_by_hand(x, 1.0) for x in tok) for tok in row] for row in r]
    norms = [[math.sqrt(sum(x * x for x in tok)) for tok in row] for row in r]
    norm = [[_huber_by_hand(n, 4.0) for n in row] for row in norms]
    # both branches are hit: 8 of 24 coordinates within δ = 1, 3 of 6 norms within δ = 4
    assert sum(abs(x) <= 1.0 for row in r for tok in row for x in tok) == 8
    assert sum(n <= 4.0 for row in norms for n in row) == 3
    _close(HuberBias().loss(pred, target, delta=1.0), torch.tensor(coordinate, dtype=F64))
    delta = torch.full((2, 3, 1), 4.0, dtype=F64)
    _close(HuberBias(mode="norm").loss(pred, target, delta=delta), torch.tensor(norm, dtype=F64))


@pytest.mark.equation("miras", 13)
def test_huber_at_the_threshold_is_on_the_quadratic_piece():
    """Eq. 13's first case is |a| <= δ: at |a| = δ exactly the second derivative is 1 (quadratic), not 0."""
    a = _t(0.5, -0.5).requires_grad_(True)
    (dh,) = torch.autograd.grad(huber(a, 0.5).sum(), a, create_graph=True)
    (d2h,) = torch.autograd.grad(dh.sum(), a)
    assert torch.equal(dh.detach(), _t(0.5, -0.5))
    assert torch.equal(d2h, _t(1.0, 1.0))


@pytest.mark.equation("miras", 16)
def test_yaad_at_norm_equal_to_delta_takes_the_l2_branch():
    """Eq. 16's first case is ||r|| <= δ: at ||r|| = δ = 5 (r = (3, 4)) loss ½||r||² = 12.5 and gradient r."""
    pred, target = _t(3.0, 4.0), _t(0.0, 0.0)
    assert torch.linalg.vector_norm(pred).item() == 5.0
    # the l1 branch would give 5 (7/√2 - 2.5) ≈ 12.25 and 5/√2 (1, 1)
    assert YaadBias().loss(pred, target, delta=5.0).item() == 12.5
    assert torch.equal(YaadBias().output_grad(pred, target, delta=5.0), _t(3.0, 4.0))


@pytest.mark.equation("miras", 13)
def test_huber_moves_a_cpu_delta_to_the_input_device(monkeypatch):
    """A CPU delta tensor is moved to a's device: on meta (an accelerator stand-in) huber stays there."""
    real_bool = torch.Tensor.__bool__
    # meta tensors hold no values: the finiteness check cannot be read there, so it is taken as passed
    monkeypatch.setattr(torch.Tensor, "__bool__", lambda t: True if t.is_meta else real_bool(t))
    a = torch.zeros(2, 3, dtype=F64, device="meta")
    out = huber(a, _t(0.5, 1.0, 2.0))
    assert out.device.type == "meta" and out.shape == (2, 3)
    grad = HuberBias().output_grad(a, a, delta=_t(0.5, 1.0, 2.0))
    assert grad.device.type == "meta" and grad.shape == (2, 3)
