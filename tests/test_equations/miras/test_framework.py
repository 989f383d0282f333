"""MIRAS v1 §2 Eq. 3, §4 Eq. 8 and Eq. 9, and the Table 1 rows TTT-Linear, HGRN2 and DFW, as recurrences.

Column convention (as ``common/delta_rule.py``): the memory M is ``(d_v, d_k)`` and reads a key as ``M k``.
Expectations are hand numbers, closed forms written out here (cumulative sums and products), autograd of
the objective a step claims to minimise, or sympy.
"""

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from neural_memory.common.delta_rule import delta_rule_step
from neural_memory.miras.framework import (
    delta_retention_step,
    dfw_step,
    hebbian_step,
    hgrn2_step,
    linear_rnn_step,
    ttt_linear_step,
)

F64 = torch.float64


def _t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


def tensors(*shape: int, bound: float = 3.0):
    """float64 tensors of the given shape with bounded elements."""
    return arrays(np.float64, shape, elements=st.floats(-bound, bound)).map(torch.from_numpy)


def gates(*shape: int):
    """float64 tensors with entries in [0, 1]."""
    return arrays(np.float64, shape, elements=st.floats(0.0, 1.0)).map(torch.from_numpy)


def _gd_step_on_half_loss(m: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eta: float) -> torch.Tensor:
    """m - eta * grad of ½‖m k − v‖², the gradient by autograd."""
    w = m.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(0.5 * ((w @ k - v) ** 2).sum(), w)
    return m - eta * grad


# --------------------------------------------------------------------------------------------------
# Eq. 3 — generic linear RNN: M_t = A_t * M_{t-1} + v_t k_tᵀ
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("miras", 3)
def test_linear_rnn_scalar_decay_two_steps_by_hand():
    m0 = _t([[1.0, 2.0], [3.0, 4.0]])
    # A = 0.5, k = (1, 0), v = (2, -1): 0.5 M0 + [[2, 0], [-1, 0]]
    m1 = linear_rnn_step(m0, _t([1.0, 0.0]), _t([2.0, -1.0]), 0.5)
    assert torch.equal(m1, _t([[2.5, 1.0], [0.5, 2.0]]))
    # A = 2 (Eq. 3 puts no range on A), k = (1, 1), v = (0, 1): 2 M1 + [[0, 0], [1, 1]]
    m2 = linear_rnn_step(m1, _t([1.0, 1.0]), _t([0.0, 1.0]), 2.0)
    assert torch.equal(m2, _t([[5.0, 2.0], [2.0, 5.0]]))


@pytest.mark.equation("miras", 3)
def test_linear_rnn_row_diagonal_decay_by_hand():
    m0 = _t([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])  # d_v = 3, d_k = 2
    k, v = _t([1.0, -1.0]), _t([1.0, 2.0, 3.0])
    # Diag(1, 0.5, 0) M0 = [[1, 2], [1.5, 2], [0, 0]], plus v kᵀ = [[1, -1], [2, -2], [3, -3]]
    got = linear_rnn_step(m0, k, v, _t([1.0, 0.5, 0.0]), diagonal="row")
    assert torch.equal(got, _t([[2.0, 1.0], [3.5, 0.0], [3.0, -3.0]]))


@pytest.mark.equation("miras", 3)
def test_linear_rnn_column_diagonal_decay_by_hand():
    m0 = _t([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    k, v = _t([1.0, -1.0]), _t([1.0, 2.0, 3.0])
    # M0 Diag(0.5, 1) = [[0.5, 2], [1.5, 4], [2.5, 6]], plus v kᵀ
    got = linear_rnn_step(m0, k, v, _t([0.5, 1.0]), diagonal="col")
    assert torch.equal(got, _t([[1.5, 1.0], [3.5, 2.0], [5.5, 3.0]]))


@pytest.mark.equation("miras", 3)
def test_linear_rnn_unit_decay_is_the_cumulative_sum_of_outer_products():
    ks, vs = _randn(2, 7, 4, seed=1), _randn(2, 7, 3, seed=2)  # batch 2, T = 7
    m = torch.zeros(2, 3, 4, dtype=F64)
    for t in range(7):
        m = linear_rnn_step(m, ks[:, t], vs[:, t], 1.0)
        expected = sum(torch.einsum("bv,bk->bvk", vs[:, i], ks[:, i]) for i in range(t + 1))
        torch.testing.assert_close(m, expected, rtol=0, atol=1e-12)


@pytest.mark.equation("miras", 3)
def test_linear_rnn_orthonormal_keys_recall_every_value():
    keys, _ = torch.linalg.qr(_randn(5, 5, seed=3))  # columns: orthonormal keys
    vs = _randn(5, 2, seed=4)
    m = torch.zeros(2, 5, dtype=F64)
    for j in range(5):
        m = linear_rnn_step(m, keys[:, j], vs[j], 1.0)
    for j in range(5):
        torch.testing.assert_close(m @ keys[:, j], vs[j], rtol=0, atol=1e-12)


@pytest.mark.equation("miras", 3)
@given(m=tensors(3, 2), k=tensors(2), v=tensors(3), a=st.floats(-2.0, 2.0))
def test_linear_rnn_equal_diagonal_entries_equal_the_scalar_decay(m, k, v, a):
    scalar = linear_rnn_step(m, k, v, a)
    torch.testing.assert_close(
        linear_rnn_step(m, k, v, torch.full((3,), a, dtype=F64), diagonal="row"), scalar
    )
    torch.testing.assert_close(
        linear_rnn_step(m, k, v, torch.full((2,), a, dtype=F64), diagonal="col"), scalar
    )
    torch.testing.assert_close(scalar, a * m + torch.outer(v, k), rtol=0, atol=1e-12)


@pytest.mark.equation("miras", 3)
def test_linear_rnn_batched_per_example_decay():
    m, k, v = _randn(2, 3, 3, 2, seed=5), _randn(2, 3, 2, seed=6), _randn(2, 3, 3, seed=7)
    a = _randn(2, 3, seed=8)
    got = linear_rnn_step(m, k, v, a)
    for b in range(2):
        for h in range(3):
            expected = float(a[b, h]) * m[b, h] + torch.outer(v[b, h], k[b, h])
            torch.testing.assert_close(got[b, h], expected, rtol=0, atol=1e-12)


def test_linear_rnn_rejects_bad_arguments():
    m, k, v = _randn(3, 2), _randn(2), _randn(3)
    with pytest.raises(ValueError, match="A must be finite"):
        linear_rnn_step(m, k, v, float("nan"))
    with pytest.raises(ValueError, match=r"A of shape \(2,\) does not broadcast"):
        linear_rnn_step(m, k, v, torch.ones(2, dtype=F64))
    with pytest.raises(ValueError, match=r"A must have shape \(\.\.\., d_v=3\) with diagonal='row'"):
        linear_rnn_step(m, k, v, torch.ones(2, dtype=F64), diagonal="row")
    with pytest.raises(ValueError, match=r"A must have shape \(\.\.\., d_k=2\) with diagonal='col'"):
        linear_rnn_step(m, k, v, torch.ones(3, dtype=F64), diagonal="col")
    with pytest.raises(ValueError, match="diagonal must be None, 'row' or 'col'"):
        linear_rnn_step(m, k, v, 1.0, diagonal="rows")
    with pytest.raises(TypeError, match="A must be a float or a tensor"):
        linear_rnn_step(m, k, v, "1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"k must have shape \(\.\.\., d_k=2\)"):
        linear_rnn_step(m, _randn(3), v, 1.0)


# --------------------------------------------------------------------------------------------------
# Eq. 8 — Hebbian / gated linear attention: M_t = α M_{t-1} + v_t k_tᵀ
# --------------------------------------------------------------------------------------------------


def _hebbian_objective(m, m_prev, k, v, alpha):
    """M-U5 written out: −2⟨M k, v⟩ + ‖M − α M′‖²_F."""
    return -2.0 * ((m @ k) * v).sum() + ((m - alpha * m_prev) ** 2).sum()


@pytest.mark.equation("miras", 8)
def test_hebbian_step_is_the_exact_argmin_by_sympy():
    a = sp.Symbol("alpha")
    mp = sp.Matrix(2, 3, sp.symbols("p0:6"))
    m = sp.Matrix(2, 3, sp.symbols("m0:6"))
    k, v = sp.Matrix(sp.symbols("k0:3")), sp.Matrix(sp.symbols("v0:2"))
    objective = -2 * (m * k).dot(v) + sum((m - a * mp).applyfunc(lambda x: x**2))
    solution = sp.solve([sp.diff(objective, x) for x in m], list(m), dict=True)
    assert len(solution) == 1  # the objective is strictly convex: one stationary point
    closed = m.subs(solution[0])
    assert sp.simplify(closed - (a * mp + v * k.T)) == sp.zeros(2, 3)
    # the symbolic minimiser, evaluated, is what hebbian_step returns
    values = {a: sp.Rational(3, 10)}
    values |= {s: sp.Rational(i - 2, 3) for i, s in enumerate(mp)}
    values |= {s: sp.Rational(i + 1, 2) for i, s in enumerate(k)}
    values |= {s: sp.Rational(1 - 2 * i, 5) for i, s in enumerate(v)}
    expected = torch.tensor(np.array(closed.subs(values), dtype=np.float64))
    got = hebbian_step(
        torch.tensor(np.array(mp.subs(values), dtype=np.float64)),
        torch.tensor([float(values[s]) for s in k], dtype=F64),
        torch.tensor([float(values[s]) for s in v], dtype=F64),
        0.3,
    )
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-15)


@pytest.mark.equation("miras", 8)
@given(m_prev=tensors(3, 2), k=tensors(2), v=tensors(3), d=tensors(3, 2), alpha=st.floats(0.0, 1.0))
def test_hebbian_step_zeroes_the_gradient_and_beats_every_perturbation(m_prev, k, v, d, alpha):
    best = hebbian_step(m_prev, k, v, alpha)
    w = best.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(_hebbian_objective(w, m_prev, k, v, alpha), w)
    assert grad.abs().max() < 1e-11
    # the objective is a quadratic with Hessian 2I: f(M* + D) - f(M*) = ‖D‖²_F exactly
    gap = _hebbian_objective(best + d, m_prev, k, v, alpha) - _hebbian_objective(best, m_prev, k, v, alpha)
    torch.testing.assert_close(gap, (d**2).sum(), rtol=1e-10, atol=1e-10)


@pytest.mark.equation("miras", 8)
def test_hebbian_alpha_one_is_linear_attention_a_cumulative_sum():
    ks, vs = _randn(6, 3, seed=1), _randn(6, 2, seed=2)
    m = torch.zeros(2, 3, dtype=F64)
    for t in range(6):
        m = hebbian_step(m, ks[t], vs[t])  # α defaults to 1: linear attention
    torch.testing.assert_close(m, vs.T @ ks, rtol=0, atol=1e-12)


@pytest.mark.equation("miras", 8)
def test_hebbian_constant_alpha_is_retnet_a_geometric_sum():
    ks, vs, alpha = _randn(6, 3, seed=3), _randn(6, 2, seed=4), 0.9
    m = torch.zeros(2, 3, dtype=F64)
    for t in range(6):
        m = hebbian_step(m, ks[t], vs[t], alpha)
    expected = sum(alpha ** (5 - i) * torch.outer(vs[i], ks[i]) for i in range(6))
    torch.testing.assert_close(m, expected, rtol=0, atol=1e-12)


@pytest.mark.equation("miras", 8)
def test_hebbian_data_dependent_alpha_is_mamba2_a_product_weighted_sum():
    ks, vs, alphas = _randn(2, 6, 3, seed=5), _randn(2, 6, 2, seed=6), _rand(2, 6, seed=7)
    m = torch.zeros(2, 2, 3, dtype=F64)
    for t in range(6):
        m = hebbian_step(m, ks[:, t], vs[:, t], alphas[:, t])  # one α_t per example
    for b in range(2):
        expected = sum(torch.prod(alphas[b, i + 1 :]) * torch.outer(vs[b, i], ks[b, i]) for i in range(6))
        torch.testing.assert_close(m[b], expected, rtol=0, atol=1e-12)


@pytest.mark.equation("miras", 8)
def test_hebbian_diagonal_alpha_is_gla_a_per_key_channel_decay():
    ks, vs, alphas = _randn(5, 3, seed=8), _randn(5, 2, seed=9), _rand(5, 3, seed=10)
    m = torch.zeros(2, 3, dtype=F64)
    for t in range(5):
        m = hebbian_step(m, ks[t], vs[t], alphas[t], diagonal="col")
    # GLA: each key channel j decays by its own product of gates
    expected = sum(torch.outer(vs[i], ks[i] * torch.prod(alphas[i + 1 :], dim=0)) for i in range(5))
    torch.testing.assert_close(m, expected, rtol=0, atol=1e-12)


def test_hebbian_rejects_gates_outside_the_unit_interval():
    m, k, v = _randn(3, 2), _randn(2), _randn(3)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        hebbian_step(m, k, v, 1.5)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        hebbian_step(m, k, v, _t([0.5, -0.1]), diagonal="col")


# --------------------------------------------------------------------------------------------------
# Eq. 9 (corrected, A2) — M_t = α M_{t-1}(I − η_t k kᵀ) + η_t v kᵀ
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("miras", 9)
@given(m=tensors(3, 2), k=tensors(2), v=tensors(3), eta=st.floats(0.0, 2.0), alpha=st.floats(0.0, 1.0))
def test_delta_retention_is_one_gd_step_from_the_retained_memory(m, k, v, eta, alpha):
    expected = _gd_step_on_half_loss(alpha * m, k, v, eta)
    torch.testing.assert_close(delta_retention_step(m, k, v, eta, alpha), expected, rtol=0, atol=1e-11)


@pytest.mark.equation("miras", 9)
def test_delta_retention_equals_its_matrix_form():
    m, k, v, eta, alpha = _randn(3, 4, seed=1), _randn(4, seed=2), _randn(3, seed=3), 0.3, 0.8
    matrix_form = alpha * m @ (torch.eye(4, dtype=F64) - eta * torch.outer(k, k)) + eta * torch.outer(v, k)
    torch.testing.assert_close(delta_retention_step(m, k, v, eta, alpha), matrix_form, rtol=0, atol=1e-12)


@pytest.mark.equation("miras", 9)
def test_delta_retention_unit_key_and_unit_step_stores_the_value():
    m, v, k = _randn(3, 4, seed=4), _randn(3, seed=5), _randn(4, seed=6)
    k = k / k.norm()
    torch.testing.assert_close(delta_retention_step(m, k, v, 1.0, 0.7) @ k, v, rtol=0, atol=1e-12)


@pytest.mark.equation("miras", 9)
@pytest.mark.equation("titans", 34)
@given(m=tensors(3, 2), k=tensors(2), v=tensors(3), eta=st.floats(0.0, 2.0))
def test_delta_retention_alpha_one_is_deltanet(m, k, v, eta):
    assert torch.equal(delta_retention_step(m, k, v, eta), delta_rule_step(m, k, v, eta))


@pytest.mark.equation("miras", 9)
def test_gated_deltanet_two_steps_by_hand():
    # scalar memory: step 1 M0 = 2, α = 0.5, η = 0.5, k = 1, v = 5: 1 (1 - 0.5) + 0.5 * 5 = 3
    m1 = delta_retention_step(_t([[2.0]]), _t([1.0]), _t([5.0]), 0.5, 0.5)
    assert torch.equal(m1, _t([[3.0]]))
    # step 2 α = 1, η = 0.25, k = 2, v = 1: 3 (1 - 0.25 * 4) + 0.25 * 1 * 2 = 0.5
    assert torch.equal(delta_retention_step(m1, _t([2.0]), _t([1.0]), 0.25, 1.0), _t([[0.5]]))


@pytest.mark.equation("miras", 9)
def test_rwkv7_style_diagonal_alpha_decays_then_takes_the_gd_step():
    m, k, v = _randn(3, 4, seed=7), _randn(4, seed=8), _randn(3, seed=9)
    eta, a_key, a_val = 0.4, _rand(4, seed=10), _rand(3, seed=11)
    proj = torch.eye(4, dtype=F64) - eta * torch.outer(k, k)
    by_key = m @ torch.diag(a_key) @ proj + eta * torch.outer(v, k)
    by_value = torch.diag(a_val) @ m @ proj + eta * torch.outer(v, k)
    torch.testing.assert_close(
        delta_retention_step(m, k, v, eta, a_key, diagonal="col"), by_key, rtol=0, atol=1e-12
    )
    torch.testing.assert_close(
        delta_retention_step(m, k, v, eta, a_val, diagonal="row"), by_value, rtol=0, atol=1e-12
    )


@pytest.mark.equation("miras", 9)
def test_printed_eq9_is_not_a_gd_step_a2():
    # printed: α (I − η k kᵀ) M + v kᵀ (left multiplication, no η on the write); needs d_v = d_k
    m, k, v, eta, alpha = _randn(3, 3, seed=12), _randn(3, seed=13), _randn(3, seed=14), 0.5, 0.9
    eye = torch.eye(3, dtype=F64)
    printed = alpha * (eye - eta * torch.outer(k, k)) @ m + torch.outer(v, k)
    gd = _gd_step_on_half_loss(alpha * m, k, v, eta)
    torch.testing.assert_close(delta_retention_step(m, k, v, eta, alpha), gd, rtol=0, atol=1e-12)
    assert (printed - gd).abs().max() > 0.1
    # with a unit key and η = 1 the corrected step stores v at k; the printed one does not
    k = k / k.norm()
    printed_unit = alpha * (eye - torch.outer(k, k)) @ m + torch.outer(v, k)
    assert (printed_unit @ k - v).abs().max() > 0.1
    torch.testing.assert_close(delta_retention_step(m, k, v, 1.0, alpha) @ k, v, rtol=0, atol=1e-12)


def test_delta_retention_rejects_bad_arguments():
    m, k, v = _randn(3, 2), _randn(2), _randn(3)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        delta_retention_step(m, k, v, 0.5, 1.2)
    with pytest.raises(ValueError, match="eta must be finite and >= 0"):
        delta_retention_step(m, k, v, -0.5, 1.0)
    with pytest.raises(ValueError, match="eta must be finite and >= 0"):
        delta_retention_step(m, k, v, float("inf"), 1.0)
    with pytest.raises(ValueError, match=r"v must have shape \(\.\.\., d_v=3\)"):
        delta_retention_step(m, k, _randn(2), 0.5)


# --------------------------------------------------------------------------------------------------
# Table 1 rows (unnumbered): TTT-Linear, HGRN2, DFW
# --------------------------------------------------------------------------------------------------


def test_ttt_linear_two_steps_by_hand():
    # scalar memory, ½(M k − v)²: step 1 M0 = 1, η = 0.5, k = 2, v = 1: grad (2 - 1) 2 = 2, M1 = 0
    m1 = ttt_linear_step(_t([[1.0]]), _t([2.0]), _t([1.0]), 0.5)
    assert torch.equal(m1, _t([[0.0]]))
    # step 2 η = 0.5, k = 1, v = 3: grad (0 - 3) 1 = -3, M2 = 1.5
    assert torch.equal(ttt_linear_step(m1, _t([1.0]), _t([3.0]), 0.5), _t([[1.5]]))


def test_ttt_linear_three_steps_are_gradient_steps_on_the_half_loss():
    ks, vs, etas = _randn(3, 4, seed=1), _randn(3, 2, seed=2), (0.1, 0.7, 0.3)
    m = expected = _randn(2, 4, seed=3)
    for t in range(3):
        m = ttt_linear_step(m, ks[t], vs[t], etas[t])
        expected = _gd_step_on_half_loss(expected, ks[t], vs[t], etas[t])
        torch.testing.assert_close(m, expected, rtol=0, atol=1e-12)


def test_hgrn2_two_steps_by_hand():
    m0 = torch.zeros(3, 2, dtype=F64)
    # step 1: α = (0.5, 0.25), v = (1, 2, 0): M1 = v (1 − α)ᵀ
    m1 = hgrn2_step(m0, _t([1.0, 2.0, 0.0]), _t([0.5, 0.25]))
    assert torch.equal(m1, _t([[0.5, 0.75], [1.0, 1.5], [0.0, 0.0]]))
    # step 2: α = (1, 0), v = (2, 0, -1): M1 Diag(1, 0) + v (0, 1)ᵀ
    m2 = hgrn2_step(m1, _t([2.0, 0.0, -1.0]), _t([1.0, 0.0]))
    assert torch.equal(m2, _t([[0.5, 2.0], [1.0, 0.0], [0.0, -1.0]]))


def test_hgrn2_is_the_transpose_of_its_own_paper_recurrence():
    # HGRN2 (Qin et al. 2024): h_t = Diag(f_t) h_{t-1} + (1 − f_t) i_tᵀ, h is (d_k, d_v), read o_t h_t
    fs, values = _rand(3, 4, seed=4), _randn(3, 2, seed=5)
    h, m = torch.zeros(4, 2, dtype=F64), torch.zeros(2, 4, dtype=F64)
    for t in range(3):
        h = torch.diag(fs[t]) @ h + torch.outer(1 - fs[t], values[t])
        m = hgrn2_step(m, values[t], fs[t])
    torch.testing.assert_close(m, h.T, rtol=0, atol=1e-12)


def test_dfw_two_steps_by_hand():
    m0 = _t([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]])  # d_v = 2, d_k = 3
    # step 1: β αᵀ = [[1, .5, 0], [.5, .25, 0]], ⊙ M0 = [[1, .5, 0], [1, .5, 0]], + (1, 0)(0, 0, 2)ᵀ
    m1 = dfw_step(m0, _t([0.0, 0.0, 2.0]), _t([1.0, 0.0]), alpha=_t([1.0, 0.5, 0.0]), beta=_t([1.0, 0.5]))
    assert torch.equal(m1, _t([[1.0, 0.5, 2.0], [1.0, 0.5, 0.0]]))
    # step 2: β αᵀ = [[.5, .5, .25], [1, 1, .5]], ⊙ M1 = [[.5, .25, .5], [1, .5, 0]], + (0, 1)(1, 0, 0)ᵀ
    m2 = dfw_step(m1, _t([1.0, 0.0, 0.0]), _t([0.0, 1.0]), alpha=_t([1.0, 1.0, 0.5]), beta=_t([0.5, 1.0]))
    assert torch.equal(m2, _t([[0.5, 0.25, 0.5], [2.0, 0.5, 0.0]]))


def test_table1_rows_reject_bad_gates():
    m, k, v = _randn(3, 2), _randn(2), _randn(3)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        hgrn2_step(m, v, _t([0.5, 1.5]))
    with pytest.raises(ValueError, match=r"alpha must have shape \(\.\.\., d_k=2\)"):
        hgrn2_step(m, v, _t([0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match=r"v must have shape \(\.\.\., d_v=3\)"):
        hgrn2_step(m, _randn(2), _t([0.5, 0.5]))
    with pytest.raises(ValueError, match=r"M must be \(\.\.\., d_v, d_k\)"):
        hgrn2_step(_randn(3), v, _t([0.5, 0.5]))
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\]"):
        dfw_step(m, k, v, alpha=_t([0.5, 0.5]), beta=_t([0.5, -1.0, 0.5]))
    with pytest.raises(ValueError, match=r"beta must have shape \(\.\.\., d_v=3\)"):
        dfw_step(m, k, v, alpha=_t([0.5, 0.5]), beta=_t([0.5, 0.5]))
    with pytest.raises(ValueError, match="eta must be finite and >= 0"):
        ttt_linear_step(m, k, v, -1.0)


# --------------------------------------------------------------------------------------------------
# Defaults, broadcasting, devices and the exact error messages of the shared coefficient check
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("miras", 3)
def test_linear_rnn_default_decay_is_one():
    """Without A, Eq. 3 keeps the old memory whole: M + v kᵀ."""
    m0 = _t([[1.0, 2.0], [3.0, 4.0]])
    # M0 + (2, -1)(1, 3)ᵀ = [[1 + 2, 2 + 6], [3 - 1, 4 - 3]]
    assert torch.equal(linear_rnn_step(m0, _t([1.0, 3.0]), _t([2.0, -1.0])), _t([[3.0, 8.0], [2.0, 1.0]]))


@pytest.mark.equation("miras", 3)
def test_linear_rnn_batched_column_decay_with_d_v_not_d_k():
    """A key-channel gate on a batched memory with d_v != d_k, shared over the batch or per example."""
    m, k, v = _randn(2, 3, 4, seed=20), _randn(2, 4, seed=21), _randn(2, 3, seed=22)
    shared, per_example = _rand(4, seed=23), _rand(2, 4, seed=24)
    got_shared = linear_rnn_step(m, k, v, shared, diagonal="col")
    got_each = linear_rnn_step(m, k, v, per_example, diagonal="col")
    for b in range(2):
        write = torch.outer(v[b], k[b])
        torch.testing.assert_close(got_shared[b], m[b] @ torch.diag(shared) + write, rtol=0, atol=1e-12)
        torch.testing.assert_close(got_each[b], m[b] @ torch.diag(per_example[b]) + write, rtol=0, atol=1e-12)


@pytest.mark.equation("miras", 3)
def test_linear_rnn_float_decay_stays_on_the_memory_device(monkeypatch):
    """A float A is made on M's device: on meta (an accelerator stand-in) the step runs and stays there."""
    real_bool = torch.Tensor.__bool__
    # meta tensors hold no values: the finiteness check cannot be read there, so it is taken as passed
    monkeypatch.setattr(torch.Tensor, "__bool__", lambda t: True if t.is_meta else real_bool(t))
    m = torch.zeros(2, 3, 4, dtype=F64, device="meta")
    k, v = torch.zeros(2, 4, dtype=F64, device="meta"), torch.zeros(2, 3, dtype=F64, device="meta")
    out = linear_rnn_step(m, k, v, 0.5)
    assert out.device.type == "meta"
    assert out.shape == (2, 3, 4)


def test_linear_rnn_error_messages_show_the_bad_value():
    """Messages name A and show the value, or a placeholder for tensors of more than 8 entries."""
    m, k, v = _randn(3, 2), _randn(2), _randn(3)
    with pytest.raises(TypeError, match=r"^A must be a float or a tensor, got str$"):
        linear_rnn_step(m, k, v, "1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^A must be finite, got nan$"):
        linear_rnn_step(m, k, v, float("nan"))
    eight = torch.full((8,), float("nan"), dtype=F64)
    with pytest.raises(ValueError, match=r"^A must be finite, got tensor\(\[nan, nan"):
        linear_rnn_step(m, k, v, eight)
    nine = torch.full((9,), float("nan"), dtype=F64)
    with pytest.raises(ValueError, match=r"^A must be finite, got a tensor outside it$"):
        linear_rnn_step(m, k, v, nine)


def test_linear_rnn_rejects_decays_that_do_not_broadcast_to_the_batch():
    """Decay shapes that fail to broadcast, or broadcast past the batch, raise ValueError naming A."""
    m, k, v = _randn(2, 3, 2, seed=1), _randn(2, 2, seed=2), _randn(2, 3, seed=3)
    with pytest.raises(ValueError, match=r"^A of shape \(3,\) does not broadcast to \(2,\)$"):
        linear_rnn_step(m, k, v, torch.ones(3, dtype=F64))
    with pytest.raises(
        ValueError, match=r"^A must have shape \(\.\.\., d_k=2\) with diagonal='col', got \(3, 2\)$"
    ):
        linear_rnn_step(m, k, v, torch.ones(3, 2, dtype=F64), diagonal="col")
    # unbatched memory, a gate with a leading batch dimension of 5: it would grow the memory to 5 copies
    with pytest.raises(
        ValueError, match=r"^A must have shape \(\.\.\., d_v=3\) with diagonal='row', got \(5, 3\)$"
    ):
        linear_rnn_step(m[0], k[0], v[0], torch.ones(5, 3, dtype=F64), diagonal="row")


def test_ttt_linear_rejects_a_negative_step_as_eta():
    """A negative η is refused by TTT-Linear itself, under its own name (not delta_rule_step's theta)."""
    m, k, v = _randn(3, 2), _randn(2), _randn(3)
    with pytest.raises(ValueError, match=r"^eta must be finite and >= 0, got -1\.0$"):
        ttt_linear_step(m, k, v, -1.0)


def test_hgrn2_error_messages_are_exact():
    """HGRN2 names M and alpha, shows M's shape or type, and gives no diagonal hint (it takes none)."""
    v = _randn(3)
    with pytest.raises(ValueError, match=r"^M must be \(\.\.\., d_v, d_k\), got torch\.Size\(\[3\]\)$"):
        hgrn2_step(_randn(3), v, _t([0.5, 0.5]))
    with pytest.raises(ValueError, match=r"^M must be \(\.\.\., d_v, d_k\), got list$"):
        hgrn2_step([[1.0, 2.0]], v, _t([0.5, 0.5]))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^alpha must have shape \(\.\.\., d_k=2\), got \(3,\)$"):
        hgrn2_step(_randn(3, 2), v, _t([0.5, 0.5, 0.5]))


def test_dfw_gates_must_lie_in_the_unit_interval_with_exact_messages():
    """DFW rejects α below 0 or above 1 and misshapen α, β, naming each gate without a diagonal hint."""
    m, k, v, beta = _randn(3, 2), _randn(2), _randn(3), _t([0.5, 0.5, 0.5])
    for bad in (_t([0.5, -0.5]), _t([0.5, 1.5])):
        with pytest.raises(ValueError, match=r"^alpha must be in \[0, 1\], got tensor\("):
            dfw_step(m, k, v, alpha=bad, beta=beta)
    with pytest.raises(ValueError, match=r"^alpha must have shape \(\.\.\., d_k=2\), got \(3,\)$"):
        dfw_step(m, k, v, alpha=_t([0.5, 0.5, 0.5]), beta=beta)
    with pytest.raises(ValueError, match=r"^beta must have shape \(\.\.\., d_v=3\), got \(2,\)$"):
        dfw_step(m, k, v, alpha=_t([0.5, 0.5]), beta=_t([0.5, 0.5]))
