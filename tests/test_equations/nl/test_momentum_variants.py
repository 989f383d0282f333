"""NL §4.4 momentum variants: values (Eq. 46), Delta momentum (Eq. 48–49), Deep Momentum GD (Eq. 50),
higher-order feature maps (Eq. 51) and a non-linear output (Eq. 52).

Expectations come from recurrences written out here by hand, torch.optim.SGD, our Muon (itself pinned to
torch.optim.Muon), autograd of the inner objectives written out here, and hand-derived gradients of the
memory MLP. float64 throughout.
"""

import copy

import pytest
import torch
from hypothesis import given

from neural_memory.nl.associative_memory import DotProductObjective, gd_step
from neural_memory.nl.optimizers import (
    NS_QUINTIC,
    DeepMomentumGD,
    DeltaMomentum,
    FeatureMapMomentum,
    MomentumGD,
    Muon,
    NonlinearOutputMomentum,
    gradient_value_pairs,
    newton_schulz,
    value_momentum_objective,
)

from .helpers import F64
from .helpers import param as _param
from .helpers import randn as _randn
from .helpers import run_with_grads as _run
from .helpers import same_steps as _same_steps
from .helpers import small_tensors as tensors


def _stream(shape, steps, seed, scale=1.0):
    return [[scale * _randn(*shape, seed=seed + s)] for s in range(steps)]


def _round_trip(make, shape=(3, 4), steps=(3, 4)):
    """Run, save, run more; resume a copy from the save; the two must agree bit for bit."""
    w = _param(_randn(*shape, seed=90))
    grads = _stream(shape, sum(steps), seed=91, scale=0.3)
    opt = make([w])
    _run(opt, [w], grads[: steps[0]])
    saved_w, saved_opt = w.detach().clone(), copy.deepcopy(opt.state_dict())
    _run(opt, [w], grads[steps[0] :])
    resumed = _param(saved_w)
    resumed_opt = make([resumed])
    resumed_opt.load_state_dict(saved_opt)
    _run(resumed_opt, [resumed], grads[steps[0] :])
    assert torch.equal(w.detach(), resumed.detach())


# --------------------------------------------------------------------------------------------------
# Eq. 46 — momentum with values: min_m ⟨m ∇Lᵀ, P⟩
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 46)
@given(m=tensors(3, 4), g=tensors(3, 4), p=tensors(3, 3))
def test_value_pairs_make_the_dot_product_memory_equal_to_eq46(m, g, p):
    keys, values = gradient_value_pairs(g, p)
    direct = torch.trace((m @ g.T).T @ p)  # ⟨m gᵀ, P⟩ = tr((m gᵀ)ᵀ P)
    got = DotProductObjective().loss(m, keys, values)
    assert abs(got.item() - direct.item()) < 1e-10
    assert abs(value_momentum_objective(m, g, p).item() - direct.item()) < 1e-10


@pytest.mark.equation("nl", 46)
def test_eq46_gradient_in_m_is_p_times_the_gradient():
    m, g, p = _randn(3, 4, seed=1), _randn(3, 4, seed=2), _randn(3, 3, seed=3)
    mv = m.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(torch.trace((mv @ g.T).T @ p), mv)
    torch.testing.assert_close(auto, p @ g, rtol=0, atol=1e-13)
    (ours,) = torch.autograd.grad(value_momentum_objective(mv, g, p), mv)
    torch.testing.assert_close(ours, p @ g, rtol=0, atol=1e-13)
    keys, values = gradient_value_pairs(g, p)
    torch.testing.assert_close(gd_step(DotProductObjective(), m, keys, values, 0.5), m - 0.5 * p @ g)


def test_gradient_value_pairs_rejects_bad_shapes():  # a helper's input check: no equation marker
    with pytest.raises(ValueError, match=r"value must be \(d_out, d_out\) = \(3, 3\)"):
        gradient_value_pairs(torch.zeros(3, 4), torch.zeros(4, 4))
    with pytest.raises(ValueError, match=r"grad must be a matrix \(d_out, d_in\)"):
        gradient_value_pairs(torch.zeros(3), torch.zeros(3, 3))


# --------------------------------------------------------------------------------------------------
# Eq. 48–49 — Delta momentum: m ← m(αI − ζ gᵀg) − η P g, W ← W + m
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 48)
@pytest.mark.equation("nl", 49)
def test_delta_momentum_two_steps_by_hand():
    w0, eta, alpha, zeta = _randn(3, 4, seed=10), 0.1, 0.9, 0.5
    g1, g2 = 0.5 * _randn(3, 4, seed=11), 0.5 * _randn(3, 4, seed=12)
    p = _param(w0)
    opt = DeltaMomentum([p], lr=eta, alpha=alpha, delta_lr=zeta)
    _run(opt, [p], [[g1], [g2]])
    eye = torch.eye(4, dtype=F64)
    m1 = -eta * g1  # m₀ = 0
    m2 = m1 @ (alpha * eye - zeta * g2.T @ g2) - eta * g2
    torch.testing.assert_close(opt.state[p]["momentum"], m2, rtol=0, atol=1e-14)
    torch.testing.assert_close(p.detach(), w0 + m1 + m2, rtol=0, atol=1e-14)


@pytest.mark.equation("nl", 49)
def test_delta_momentum_with_a_matrix_value_by_hand():
    w0, p_mat, g1, g2 = (
        _randn(2, 3, seed=13),
        _randn(2, 2, seed=14),
        _randn(2, 3, seed=15),
        _randn(2, 3, seed=16),
    )
    p = _param(w0)
    opt = DeltaMomentum([p], lr=0.2, alpha=0.7, precondition=p_mat)
    _run(opt, [p], [[g1], [g2]])
    m1 = -0.2 * p_mat @ g1
    m2 = m1 @ (0.7 * torch.eye(3, dtype=F64) - g2.T @ g2) - 0.2 * p_mat @ g2
    torch.testing.assert_close(p.detach(), w0 + m1 + m2, rtol=0, atol=1e-14)


@pytest.mark.equation("nl", 49)
def test_delta_momentum_is_one_unit_gd_step_on_its_inner_objective():
    # J(m) = ζ/2 ‖m gᵀ + (η/ζ) P‖² + (1 − α)/2 ‖m‖²  (regress m gᵀ onto −ηP/ζ, plus the decay), step 1
    m0, g, p_mat = _randn(3, 4, seed=17), 0.7 * _randn(3, 4, seed=18), _randn(3, 3, seed=19)
    eta, alpha, zeta = 0.3, 0.8, 0.6
    mv = m0.clone().requires_grad_(True)
    objective = zeta / 2 * ((mv @ g.T + eta / zeta * p_mat) ** 2).sum() + (1 - alpha) / 2 * (mv**2).sum()
    (grad,) = torch.autograd.grad(objective, mv)
    w = _param(torch.zeros(3, 4, dtype=F64))
    opt = DeltaMomentum([w], lr=eta, alpha=alpha, delta_lr=zeta, precondition=p_mat)
    opt.state[w]["momentum"] = m0.clone()
    w.grad = g.clone()
    opt.step()
    torch.testing.assert_close(opt.state[w]["momentum"], m0 - grad, rtol=0, atol=1e-13)


@pytest.mark.equation("nl", 49)
@given(m=tensors(3, 4), g=tensors(2, 4), coeffs=tensors(2))
def test_delta_momentum_keeps_directions_orthogonal_to_the_gradient_rows(m, g, coeffs):
    # v ⟂ rows of g (the gradient is (3, 4) with rows in a 2-D subspace): m' v = α m v, the decay is
    # state-dependent only along the current gradient's row space
    g_full = torch.cat([g, (coeffs @ g)[None]])  # (3, 4), rank <= 2
    basis = torch.linalg.svd(g_full).Vh[-1]  # a unit vector ⟂ every row (rank <= 2 < 4)
    assert (g_full @ basis).abs().max() < 1e-9
    w = _param(torch.zeros(3, 4, dtype=F64))
    opt = DeltaMomentum([w], lr=0.4, alpha=0.9)
    opt.state[w]["momentum"] = m.clone()
    w.grad = g_full.clone()
    opt.step()
    torch.testing.assert_close(opt.state[w]["momentum"] @ basis, 0.9 * m @ basis, rtol=0, atol=1e-10)


@pytest.mark.equation("nl", 49)
def test_delta_momentum_scales_the_top_gradient_direction_by_alpha_minus_sigma_squared():
    # the decay factor αI − ζ gᵀg has eigenvalue α − ζσ₁² on g's top right singular vector v₁, so with the
    # printed ζ = 1 the momentum flips and grows along v₁ once σ₁² > 1 + α (docs/errata.md, NL Eq. 48–49)
    m0, g = _randn(3, 4, seed=25), 2.0 * _randn(3, 4, seed=26)
    _, sigma, vh = torch.linalg.svd(g)
    v1 = vh[0]
    w = _param(torch.zeros(3, 4, dtype=F64))
    opt = DeltaMomentum([w], lr=0.1, alpha=0.9)
    opt.state[w]["momentum"] = m0.clone()
    w.grad = g.clone()
    opt.step()
    expected = (0.9 - sigma[0] ** 2) * (m0 @ v1) - 0.1 * g @ v1
    torch.testing.assert_close(opt.state[w]["momentum"] @ v1, expected, rtol=0, atol=1e-12)
    assert sigma[0] ** 2 > 1.9  # this draw is in the growing regime: |α − σ₁²| > 1


@pytest.mark.equation("nl", 49)
@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.9])
def test_delta_momentum_without_the_correction_is_momentum_gd_and_torch_sgd(alpha):
    w0, grads = _randn(3, 4, seed=20), _stream((3, 4), 6, seed=21)
    ours, mom, ref = _param(w0), _param(w0), _param(w0)
    delta = DeltaMomentum([ours], lr=0.07, alpha=alpha, delta_lr=0.0)
    _same_steps(delta, MomentumGD([mom], lr=0.07, alpha=alpha), [ours], [mom], grads, atol=0)
    ours = _param(w0)
    delta = DeltaMomentum([ours], lr=0.07, alpha=alpha, delta_lr=0.0)
    sgd = torch.optim.SGD([ref], lr=0.07, momentum=alpha, dampening=0)
    _same_steps(delta, sgd, [ours], [ref], grads, atol=1e-14)


@pytest.mark.equation("nl", 49)
def test_delta_momentum_treats_a_vector_as_one_column():
    # a bias (d,) is (d, 1): gᵀg = ‖g‖², m ← m(α − ζ‖g‖²) − η g
    b0, g1, g2 = _randn(3, seed=22), _randn(3, seed=23), _randn(3, seed=24)
    b = _param(b0)
    _run(DeltaMomentum([b], lr=0.1, alpha=0.9, delta_lr=0.5), [b], [[g1], [g2]])
    m1 = -0.1 * g1
    m2 = m1 * (0.9 - 0.5 * (g2 @ g2)) - 0.1 * g2
    torch.testing.assert_close(b.detach(), b0 + m1 + m2, rtol=0, atol=1e-14)


@pytest.mark.equation("nl", 49)
def test_delta_momentum_state_dict_round_trip_and_closure():
    _round_trip(lambda ps: DeltaMomentum(ps, lr=0.05, alpha=0.9, delta_lr=0.5))
    w = _param(torch.ones(2, 2, dtype=F64))
    opt = DeltaMomentum([w], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == 4.0
    torch.testing.assert_close(w.detach(), torch.full((2, 2), 0.8, dtype=F64), rtol=0, atol=1e-15)


@pytest.mark.equation("nl", 49)
def test_delta_momentum_on_a_transposed_parameter_equals_the_contiguous_one():
    # a non-contiguous parameter (a transposed view) keeps a contiguous state and steps the same
    base = _randn(4, 3, seed=27)
    leaf = _param(base)
    strided, contiguous = leaf.T, _param(base.T.contiguous())
    grads = _stream((3, 4), 2, seed=28, scale=0.5)
    ours = DeltaMomentum([contiguous], lr=0.1, alpha=0.9, delta_lr=0.5)
    _run(ours, [contiguous], grads)
    with torch.no_grad():
        other = torch.nn.Parameter(strided.detach())  # shares the transposed strides
    assert not other.is_contiguous()
    _run(DeltaMomentum([other], lr=0.1, alpha=0.9, delta_lr=0.5), [other], grads)
    torch.testing.assert_close(other.detach(), contiguous.detach(), rtol=0, atol=1e-14)


@pytest.mark.equation("nl", 49)
def test_delta_momentum_rejects_bad_hyperparameters():
    w = [_param(torch.zeros(2, 2))]
    for kwargs, message in [
        ({"lr": -0.1}, "lr must be a finite float >= 0"),
        ({"alpha": 1.5}, r"alpha must be in \[0, 1\]"),
        ({"delta_lr": -1.0}, "delta_lr must be a finite float >= 0"),
        ({"precondition": "identity"}, "precondition must be None, a callable or a"),
    ]:
        with pytest.raises(ValueError, match=message):
            DeltaMomentum(w, **kwargs)


# --------------------------------------------------------------------------------------------------
# Eq. 50 — Deep Momentum GD: θ ← αθ − η∇_θ L⁽²⁾, W ← W + m_θ
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 50)
@pytest.mark.parametrize("alpha", [0.0, 0.9, 1.0])
def test_dmgd_with_a_linear_memory_and_the_dot_product_objective_is_momentum_gd(alpha):
    w0, grads = _randn(3, 4, seed=30), _stream((3, 4), 5, seed=31)
    ours, ref = _param(w0), _param(w0)
    dmgd = DeepMomentumGD([ours], lr=0.05, alpha=alpha, hidden=0)
    sgd = torch.optim.SGD([ref], lr=0.05, momentum=alpha, dampening=0)
    _same_steps(dmgd, sgd, [ours], [ref], grads, atol=1e-14)


def _memory_output(state):
    return state["linear"] + state["w2"] @ torch.tanh(state["w1"] + state["b1"][:, None])


@pytest.mark.equation("nl", 50)
def test_dmgd_step_is_one_decayed_gd_step_of_the_memory_mlp_by_hand():
    # memory m_θ(k) = A k + W₂ tanh(W₁ k + b₁) read at the basis keys: F = A + W₂ tanh(W₁ + b₁1ᵀ);
    # L⁽²⁾ = ⟨F, u⟩, so ∇A = u, ∇W₂ = u Hᵀ, ∇W₁ = (W₂ᵀu) ⊙ (1 − H²), ∇b₁ = Σ_columns ∇W₁
    w0, g1, g2 = _randn(3, 4, seed=32), _randn(3, 4, seed=33), _randn(3, 4, seed=34)
    eta, alpha = 0.1, 0.9
    p = _param(w0)
    opt = DeepMomentumGD([p], lr=eta, alpha=alpha, hidden=5)
    _run(opt, [p], [[g1]])
    s1 = {k: v.clone() for k, v in opt.state[p].items() if isinstance(v, torch.Tensor)}
    w1 = p.detach().clone()
    assert s1["w2"].abs().max() > 0  # after one step every part of the memory is live
    _run(opt, [p], [[g2]])
    h = torch.tanh(s1["w1"] + s1["b1"][:, None])  # (5, 4)
    grad_w1 = (s1["w2"].T @ g2) * (1 - h**2)
    expected = {
        "linear": alpha * s1["linear"] - eta * g2,
        "w2": alpha * s1["w2"] - eta * g2 @ h.T,
        "w1": alpha * s1["w1"] - eta * grad_w1,
        "b1": alpha * s1["b1"] - eta * grad_w1.sum(1),
    }
    for name, value in expected.items():
        torch.testing.assert_close(opt.state[p][name], value, rtol=0, atol=1e-14)
    torch.testing.assert_close(p.detach(), w1 + _memory_output(expected), rtol=0, atol=1e-14)


@pytest.mark.equation("nl", 50)
def test_dmgd_inner_step_is_autograd_of_the_dot_product_memory_objective():
    # the same step with the objective written as DotProductObjective over the basis keys, by autograd
    w0, g1, g2 = _randn(2, 3, seed=35), _randn(2, 3, seed=36), _randn(2, 3, seed=37)
    p = _param(w0)
    opt = DeepMomentumGD([p], lr=0.2, alpha=0.8, hidden=4, activation="silu")
    _run(opt, [p], [[g1]])
    names = ["linear", "w1", "b1", "w2"]
    theta = [opt.state[p][n].clone().requires_grad_(True) for n in names]
    output = theta[0] + theta[3] @ torch.nn.functional.silu(theta[1] + theta[2][:, None])
    keys = torch.eye(3, dtype=F64)
    grads = torch.autograd.grad(DotProductObjective().loss(output, keys, g2.T), theta)
    _run(opt, [p], [[g2]])
    for n, t, g in zip(names, theta, grads, strict=True):
        torch.testing.assert_close(opt.state[p][n], 0.8 * t.detach() - 0.2 * g, rtol=0, atol=1e-14)


@pytest.mark.equation("nl", 50)
def test_dmgd_l2_objective_regresses_the_memory_onto_the_negative_gradient():
    # linear memory, L⁽²⁾ = ½‖F + u‖²: A ← αA − η(A + u)
    w0, grads = _randn(3, 2, seed=38), _stream((3, 2), 3, seed=39)
    p = _param(w0)
    _run(DeepMomentumGD([p], lr=0.3, alpha=0.9, hidden=0, objective="l2"), [p], grads)
    w, a = w0.clone(), torch.zeros(3, 2, dtype=F64)
    for (g,) in grads:
        a = 0.9 * a - 0.3 * (a + g)
        w = w + a
    torch.testing.assert_close(p.detach(), w, rtol=0, atol=1e-14)


@pytest.mark.equation("nl", 50)
def test_dmgd_updates_a_vector_parameter_and_round_trips_its_state():
    b = _param(_randn(4, seed=40))
    before = b.detach().clone()
    _run(DeepMomentumGD([b], lr=0.1, hidden=3), [b], _stream((4,), 2, seed=41))
    assert (b.detach() - before).abs().max() > 1e-3
    _round_trip(lambda ps: DeepMomentumGD(ps, lr=0.05, alpha=0.9, hidden=3, seed=7))


@pytest.mark.equation("nl", 50)
def test_dmgd_memory_initialisation_depends_only_on_the_seed():
    a, b = _param(torch.zeros(3, 2, dtype=F64)), _param(torch.zeros(3, 2, dtype=F64))
    g = [[_randn(3, 2, seed=42)]]
    opt_a, opt_b = DeepMomentumGD([a], hidden=3, seed=5), DeepMomentumGD([b], hidden=3, seed=5)
    _run(opt_a, [a], g)
    _run(opt_b, [b], g)
    assert torch.equal(opt_a.state[a]["w1"], opt_b.state[b]["w1"])


@pytest.mark.equation("nl", 50)
def test_dmgd_rejects_bad_hyperparameters():
    w = [_param(torch.zeros(2, 2))]
    for kwargs, message in [
        ({"lr": -0.1}, "lr must be a finite float >= 0"),
        ({"alpha": -0.1}, r"alpha must be in \[0, 1\]"),
        ({"hidden": -1}, "hidden must be an int >= 0"),
        ({"objective": "cosine"}, "objective must be 'dot' or 'l2'"),
        ({"activation": "gelu2"}, "activation must be one of"),
        ({"init_scale": -1.0}, "init_scale must be a finite float >= 0"),
        ({"seed": -1}, "seed must be an int >= 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            DeepMomentumGD(w, **kwargs)


# --------------------------------------------------------------------------------------------------
# Eq. 51 — m ← αm − η P φ(g)
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 51)
def test_feature_map_momentum_with_the_identity_is_torch_sgd_momentum():
    w0, grads = _randn(3, 4, seed=50), _stream((3, 4), 5, seed=51)
    ours, ref = _param(w0), _param(w0)
    sgd = torch.optim.SGD([ref], lr=0.05, momentum=0.9, dampening=0)
    _same_steps(FeatureMapMomentum([ours], lr=0.05, alpha=0.9), sgd, [ours], [ref], grads, atol=1e-14)


@pytest.mark.equation("nl", 51)
def test_feature_map_momentum_with_a_cubic_map_and_a_value_by_hand():
    w0, p_mat, grads = _randn(2, 3, seed=52), _randn(2, 2, seed=53), _stream((2, 3), 3, seed=54)
    p = _param(w0)
    cubic = lambda g: g + g**3 / 3  # noqa: E731
    _run(FeatureMapMomentum([p], lr=0.1, alpha=0.8, feature_map=cubic, precondition=p_mat), [p], grads)
    w, m = w0.clone(), torch.zeros(2, 3, dtype=F64)
    for (g,) in grads:
        m = 0.8 * m - 0.1 * p_mat @ (g + g**3 / 3)
        w = w + m
    torch.testing.assert_close(p.detach(), w, rtol=0, atol=1e-14)


@pytest.mark.equation("nl", 51)
def test_feature_map_momentum_is_one_gd_step_on_eq46_with_the_mapped_gradient_as_key():
    m0, g, p_mat = _randn(3, 4, seed=55), _randn(3, 4, seed=56), _randn(3, 3, seed=57)
    phi = torch.sin
    mv = m0.clone().requires_grad_(True)
    objective = torch.trace((mv @ phi(g).T).T @ p_mat) + (1 - 0.7) / (2 * 0.4) * (mv**2).sum()
    (grad,) = torch.autograd.grad(objective, mv)
    w = _param(torch.zeros(3, 4, dtype=F64))
    opt = FeatureMapMomentum([w], lr=0.4, alpha=0.7, feature_map=phi, precondition=p_mat)
    opt.state[w]["momentum"] = m0.clone()
    w.grad = g.clone()
    opt.step()
    torch.testing.assert_close(opt.state[w]["momentum"], m0 - 0.4 * grad, rtol=0, atol=1e-13)


@pytest.mark.equation("nl", 51)
def test_feature_map_momentum_round_trip_and_bad_hyperparameters():
    _round_trip(lambda ps: FeatureMapMomentum(ps, lr=0.05, alpha=0.9, feature_map=torch.tanh))
    w = [_param(torch.zeros(2, 2))]
    with pytest.raises(ValueError, match="lr must be a finite float >= 0"):
        FeatureMapMomentum(w, lr=-1.0)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        FeatureMapMomentum(w, alpha=2.0)
    with pytest.raises(TypeError, match="feature_map must be callable"):
        FeatureMapMomentum(w, feature_map=3)
    bad = FeatureMapMomentum(w, feature_map=lambda g: g.sum())
    w[0].grad = torch.ones(2, 2)
    with pytest.raises(ValueError, match=r"feature_map must return the gradient's shape \(2, 2\)"):
        bad.step()


# --------------------------------------------------------------------------------------------------
# Eq. 52 — W ← W + σ(m), Muon for σ = Newton–Schulz
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 52)
@pytest.mark.parametrize("shape", [(4, 6), (5, 5)])
def test_newton_schulz_output_with_a_linear_memory_is_muon(shape):
    # m = αm − ηg is −η/(1 − μ) times Muon's EMA buffer; NS is odd and normalises, so W + NS(m) = W − NS(b)
    w0, grads = _randn(*shape, seed=60), _stream(shape, 5, seed=61)
    ours, ref = _param(w0), _param(w0)
    eq52 = NonlinearOutputMomentum([ours], lr=0.05, alpha=0.9)
    muon = Muon([ref], lr=1.0, momentum=0.9, nesterov=False, weight_decay=0.0, ns_dtype=None)
    _same_steps(eq52, muon, [ours], [ref], grads, atol=1e-12)


@pytest.mark.equation("nl", 52)
def test_nonlinear_output_momentum_by_hand_with_tanh_and_newton_schulz():
    w0, grads = _randn(3, 4, seed=62), _stream((3, 4), 3, seed=63)
    for sigma, reference in [(torch.tanh, torch.tanh), (None, lambda m: newton_schulz(m, 5, NS_QUINTIC))]:
        p = _param(w0)
        _run(NonlinearOutputMomentum([p], lr=0.2, alpha=0.5, output_fn=sigma), [p], grads)
        w, m = w0.clone(), torch.zeros(3, 4, dtype=F64)
        for (g,) in grads:
            m = 0.5 * m - 0.2 * g
            w = w + reference(m)
        torch.testing.assert_close(p.detach(), w, rtol=0, atol=1e-13)


@pytest.mark.equation("nl", 52)
def test_nonlinear_output_momentum_with_a_deep_memory_applies_sigma_to_its_output():
    w0, g = _randn(3, 4, seed=64), _randn(3, 4, seed=65)
    deep, plain = _param(w0), _param(w0)
    opt = NonlinearOutputMomentum([deep], lr=0.1, alpha=0.9, hidden=3, output_fn=torch.tanh, seed=1)
    ref = DeepMomentumGD([plain], lr=0.1, alpha=0.9, hidden=3, seed=1)
    _run(opt, [deep], [[g]])
    _run(ref, [plain], [[g]])
    torch.testing.assert_close(deep.detach(), w0 + torch.tanh(plain.detach() - w0), rtol=0, atol=1e-14)


@pytest.mark.equation("nl", 52)
def test_nonlinear_output_momentum_round_trip_and_bad_hyperparameters():
    _round_trip(lambda ps: NonlinearOutputMomentum(ps, lr=0.05, alpha=0.9))
    w = [_param(torch.zeros(2, 2))]
    with pytest.raises(ValueError, match="ns_steps must be an int >= 1"):
        NonlinearOutputMomentum(w, ns_steps=0)
    with pytest.raises(TypeError, match="output_fn must be callable"):
        NonlinearOutputMomentum(w, output_fn="tanh")
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        NonlinearOutputMomentum(w, alpha=-0.5)
