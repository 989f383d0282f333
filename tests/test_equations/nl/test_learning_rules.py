"""NL §5: the sequence-model learning rules (Eq. 21, 61–69) as associative memories.

Expectations come from token loops written out here, from autograd of objectives written out here, from
sympy, from a brute-force minimiser (gradient descent iterated until it stops moving) and from the shared
masks/attention code only where a test says so. float64 throughout. Column-vector convention for matrix
memories: ``M`` is ``(d_v, d_k)`` and reads ``M k``; sequences are ``(batch, seq, d)``.
"""

import math

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import neural_memory.nl.learning_rules as learning_rules_module
from neural_memory.common.attention import masked_attention, qkv_projection
from neural_memory.common.delta_rule import delta_rule_step
from neural_memory.nl.associative_memory import DotProductObjective, L2RegressionObjective, gd_step
from neural_memory.nl.learning_rules import (
    AdaTransformerBlock,
    OjaObjective,
    ada_transformer_block,
    delta_rule_rnn,
    delta_rule_rnn_chunked,
    hebbian_rnn,
    hebbian_rnn_parallel,
    nadaraya_watson,
    oja_rnn,
    oja_step,
    omega_rule,
    omega_rule_windowed,
    sliding_window_attention,
)

from .helpers import F64
from .helpers import autograd as _autograd
from .helpers import randn as _randn
from .helpers import small_tensors as tensors

B, T, DK, DV = 2, 7, 3, 4


def _rand(*shape: int, seed: int = 0, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    u = torch.rand(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed))
    return low + (high - low) * u


def _qkv(seed: int = 0):
    return _randn(B, T, DK, seed=seed), _randn(B, T, DK, seed=seed + 1), _randn(B, T, DV, seed=seed + 2)


def _close(got, expected, atol=1e-12):
    torch.testing.assert_close(got, expected, rtol=0, atol=atol)


# --------------------------------------------------------------------------------------------------
# Eq. 61 — row-convention projections
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 61)
def test_projections_multiply_each_token_row_on_the_right():
    x = _randn(B, T, 5, seed=1)
    w_q, w_k, w_v = _randn(5, DK, seed=2), _randn(5, DK, seed=3), _randn(5, DV, seed=4)
    q, k, v = qkv_projection(x, w_q, w_k, w_v)
    assert q.shape == (B, T, DK) and k.shape == (B, T, DK) and v.shape == (B, T, DV)
    for b in range(B):
        for t in range(T):
            row = x[b, t][None, :]  # x_t ∈ R^{1 × d_in}
            _close(k[b, t], (row @ w_k)[0])
            _close(v[b, t], (row @ w_v)[0])
            _close(q[b, t], (row @ w_q)[0])


# --------------------------------------------------------------------------------------------------
# Eq. 62–63 — attention is the locally weighted regression (Nadaraya–Watson) minimiser
# --------------------------------------------------------------------------------------------------


def _descend_weighted_regression(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Brute force: GD on Σ_i w_i ‖v_i − m‖² from 0 until it stops moving; weights (L,), values (L, d)."""
    m = torch.zeros(values.shape[-1], dtype=F64)
    lr = 0.5 / float(weights.sum())  # the Hessian is 2 Σ w I: this step converges geometrically
    for _ in range(200):
        m = m - lr * _autograd(lambda mm: (weights[:, None] * (values - mm) ** 2).sum(), m)
    return m


@pytest.mark.equation("nl", 62)
def test_softmax_attention_output_is_the_minimiser_of_the_exp_weighted_regression():
    q, k, v = _randn(3, DK, seed=1), _randn(5, DK, seed=2), _randn(5, DV, seed=3)
    got = masked_attention(q, k, v)
    similarity = torch.exp(q @ k.T / math.sqrt(DK))  # s(k_i, q) = exp(qᵀk_i / √d)
    for i in range(3):
        _close(got[i], _descend_weighted_regression(similarity[i], v), atol=1e-10)
    _close(nadaraya_watson(similarity, v), got)


@pytest.mark.equation("nl", 62)
@given(
    weights=arrays(np.float64, (2, 5), elements=st.floats(0.01, 5.0)).map(torch.from_numpy), v=tensors(5, 3)
)
def test_nadaraya_watson_is_stationary_for_the_weighted_objective(weights, v):
    m = nadaraya_watson(weights, v)
    for i in range(2):
        grad = _autograd(lambda mm, w=weights[i]: (w[:, None] * (v - mm) ** 2).sum(), m[i])
        _close(grad, torch.zeros_like(grad), atol=1e-9)


@pytest.mark.equation("nl", 62)
def test_nadaraya_watson_by_sympy():
    s, m = sp.symbols("s0:3", positive=True), sp.Symbol("m")
    vals = (sp.Rational(1), sp.Rational(-2), sp.Rational(5, 2))
    objective = sum(si * (vi - m) ** 2 for si, vi in zip(s, vals, strict=True))
    (argmin,) = sp.solve(sp.diff(objective, m), m)
    numbers = dict(zip(s, (sp.Rational(1, 2), sp.Rational(3), sp.Rational(7, 4)), strict=True))
    expected = float(argmin.subs(numbers))
    got = nadaraya_watson(
        torch.tensor([[0.5, 3.0, 1.75]], dtype=F64), torch.tensor([[1.0], [-2.0], [2.5]], dtype=F64)
    )
    assert abs(float(got[0, 0]) - expected) < 1e-14


@pytest.mark.equation("nl", 62)
def test_nadaraya_watson_rejects_bad_weights():
    with pytest.raises(ValueError, match="similarity must be >= 0"):
        nadaraya_watson(torch.tensor([[1.0, -1.0]], dtype=F64), _randn(2, 3))
    with pytest.raises(ValueError, match="at least one positive"):
        nadaraya_watson(torch.zeros(1, 2, dtype=F64), _randn(2, 3))
    with pytest.raises(ValueError, match=r"values must be \(\.\.\., L=2, d_v\)"):
        nadaraya_watson(torch.ones(1, 2, dtype=F64), _randn(3, 3))


@pytest.mark.equation("nl", 63)
@pytest.mark.parametrize("window", [1, 3, 7, 20])
def test_sliding_window_attention_is_the_window_regression_minimiser(window):
    q, k, v = _qkv(seed=4)
    got = sliding_window_attention(q, k, v, window)
    assert got.shape == (B, T, DV)
    for b in range(B):
        for t in range(T):
            lo = max(0, t - window + 1)  # tokens i = t − c + 1 .. t (fewer at the start)
            weights = torch.exp(k[b, lo : t + 1] @ q[b, t] / math.sqrt(DK))  # s(k_i, q_t)
            _close(got[b, t], _descend_weighted_regression(weights, v[b, lo : t + 1]), atol=1e-10)


@pytest.mark.equation("nl", 63)
def test_sliding_window_attention_rejects_a_bad_window():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="window must be an int >= 1"):
        sliding_window_attention(q, k, v, 0)
    with pytest.raises(ValueError, match="same number of queries and keys"):
        sliding_window_attention(q[:, :3], k, v, 2)


# --------------------------------------------------------------------------------------------------
# Eq. 64 — Hebbian RNN (linear attention with decay)
# --------------------------------------------------------------------------------------------------


def _hebbian_loop(q, k, v, eta, alpha, m0, phi=lambda x: x):
    """M_t = α_t M_{t−1} + η_t v_t φ(k_t)ᵀ, y_t = M_t φ(q_t), written out."""
    m, ys = m0.clone(), []
    for t in range(q.shape[1]):
        m = alpha[:, t, None, None] * m + eta[:, t, None, None] * torch.einsum(
            "bi,bj->bij", v[:, t], phi(k[:, t])
        )
        ys.append(torch.einsum("bij,bj->bi", m, phi(q[:, t])))
    return torch.stack(ys, 1), m


@pytest.mark.equation("nl", 64)
@pytest.mark.parametrize("form", ["reference", "parallel"])
def test_hebbian_rnn_equals_the_loop(form):
    q, k, v = _qkv(seed=5)
    eta, alpha, m0 = _rand(B, T, seed=8), _rand(B, T, seed=9, low=0.5), _randn(B, DV, DK, seed=10)
    fn = hebbian_rnn if form == "reference" else hebbian_rnn_parallel
    y, m = fn(q, k, v, eta=eta, alpha=alpha, feature_map=torch.tanh, initial_state=m0)
    y_ref, m_ref = _hebbian_loop(q, k, v, eta, alpha, m0, torch.tanh)
    _close(y, y_ref)
    _close(m, m_ref)


@pytest.mark.equation("nl", 64)
@given(
    alpha=arrays(np.float64, (1, 6), elements=st.floats(0.0, 1.0)).map(torch.from_numpy),
    eta=arrays(np.float64, (1, 6), elements=st.floats(0.0, 2.0)).map(torch.from_numpy),
    q=tensors(1, 6, 2),
    k=tensors(1, 6, 2),
    v=tensors(1, 6, 3),
)
def test_hebbian_parallel_form_equals_the_recurrence_for_any_gates(alpha, eta, q, k, v):
    # gates exactly 0 and 1 included: the parallel form must not divide by cumulative products
    y, m = hebbian_rnn(q, k, v, eta=eta, alpha=alpha)
    y_p, m_p = hebbian_rnn_parallel(q, k, v, eta=eta, alpha=alpha)
    _close(y_p, y, atol=1e-10)
    _close(m_p, m, atol=1e-10)


@pytest.mark.equation("nl", 64)
def test_hebbian_step_is_a_gd_step_on_the_negative_dot_product():
    # Eq. 64: α M − η ∇(−⟨M k, v⟩) = α M + η v kᵀ; the dot-product objective of Eq. 9/17 with value −v
    q, k, v = _randn(1, 1, DK, seed=1), _randn(1, 1, DK, seed=2), _randn(1, 1, DV, seed=3)
    m0 = _randn(1, DV, DK, seed=4)
    _, m = hebbian_rnn(q, k, v, eta=0.3, alpha=0.8, initial_state=m0)
    grad = _autograd(lambda mm: -(mm @ k[0, 0]) @ v[0, 0], m0[0])
    _close(grad, -torch.outer(v[0, 0], k[0, 0]))
    _close(m[0], 0.8 * m0[0] - 0.3 * grad)
    _close(m[0], gd_step(DotProductObjective(), 0.8 * m0[0], k[0], -v[0], 0.3))


@pytest.mark.equation("nl", 64)
def test_hebbian_with_unit_gates_is_unnormalised_linear_attention():
    # α = η = 1, φ = id: Eq. 15–16, y_t = Σ_{s≤t} v_s (k_sᵀ q_t)
    q, k, v = _qkv(seed=6)
    y, _ = hebbian_rnn_parallel(q, k, v)
    expected = ((q @ k.transpose(1, 2)).tril()) @ v
    _close(y, expected)


@pytest.mark.equation("nl", 64)
def test_hebbian_rejects_bad_gates():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        hebbian_rnn(q, k, v, alpha=1.5)
    with pytest.raises(ValueError, match=r"eta must be in \[0, inf\)"):
        hebbian_rnn_parallel(q, k, v, eta=-0.1)
    with pytest.raises(ValueError, match="does not broadcast"):
        hebbian_rnn(q, k, v, eta=torch.ones(B, T + 1, dtype=F64))
    with pytest.raises(ValueError, match=r"initial_state must have shape \(2, 4, 3\)"):
        hebbian_rnn(q, k, v, initial_state=torch.zeros(B, DK, DV, dtype=F64))
    with pytest.raises(ValueError, match=r"k must have shape \(batch, seq, d_k\)"):
        hebbian_rnn(q, k[..., :2], v)
    with pytest.raises(ValueError, match="feature_map changed the shape"):
        hebbian_rnn(q, k, v, feature_map=lambda x: x[..., :1])


# --------------------------------------------------------------------------------------------------
# Eq. 65 — delta rule
# --------------------------------------------------------------------------------------------------


def _delta_loop(q, k, v, eta, m0):
    """M_t = M_{t−1} − η_t (M_{t−1} k_t − v_t) k_tᵀ, y_t = M_t q_t, written out."""
    m, ys = m0.clone(), []
    for t in range(q.shape[1]):
        err = torch.einsum("bij,bj->bi", m, k[:, t]) - v[:, t]
        m = m - eta[:, t, None, None] * torch.einsum("bi,bj->bij", err, k[:, t])
        ys.append(torch.einsum("bij,bj->bi", m, q[:, t]))
    return torch.stack(ys, 1), m


@pytest.mark.equation("nl", 65)
@pytest.mark.parametrize("chunk_size", [None, 1, 3, 16])
def test_delta_rule_rnn_equals_the_loop(chunk_size):
    q, k, v = _qkv(seed=11)
    eta, m0 = _rand(B, T, seed=12), _randn(B, DV, DK, seed=13)
    if chunk_size is None:
        y, m = delta_rule_rnn(q, k, v, eta=eta, initial_state=m0)
    else:
        y, m = delta_rule_rnn_chunked(q, k, v, eta=eta, initial_state=m0, chunk_size=chunk_size)
    y_ref, m_ref = _delta_loop(q, k, v, eta, m0)
    _close(y, y_ref)
    _close(m, m_ref)


@pytest.mark.equation("nl", 65)
@given(m0=tensors(DV, DK), k=tensors(DK), v=tensors(DV), eta=st.floats(0.0, 2.0))
def test_delta_step_is_one_gd_step_on_the_half_l2_objective(m0, k, v, eta):
    _, m = delta_rule_rnn(k[None, None], k[None, None], v[None, None], eta=eta, initial_state=m0[None])
    grad = _autograd(lambda mm: 0.5 * ((mm @ k - v) ** 2).sum(), m0)  # ∇ = (M k − v) kᵀ
    _close(m[0], m0 - eta * grad, atol=1e-10)
    _close(m[0], gd_step(L2RegressionObjective(), m0, k[None], v[None], eta), atol=1e-10)
    # the right-multiplied closed form of the catalog: M (I − η k kᵀ) + η v kᵀ
    _close(
        m[0], m0 @ (torch.eye(DK, dtype=F64) - eta * torch.outer(k, k)) + eta * torch.outer(v, k), atol=1e-10
    )


@pytest.mark.equation("nl", 65)
def test_printed_left_multiplied_delta_rule_is_not_the_gd_step():
    # square memory so the printed (I − η k kᵀ) M type-checks: it still is not the GD step
    m0, k, v = _randn(3, 3, seed=1), _randn(3, seed=2), _randn(3, seed=3)
    _, m = delta_rule_rnn(k[None, None], k[None, None], v[None, None], eta=0.5, initial_state=m0[None])
    printed = (torch.eye(3, dtype=F64) - 0.5 * torch.outer(k, k)) @ m0 + 0.5 * torch.outer(v, k)
    assert (m[0] - printed).abs().max() > 1e-3
    _close(m[0], m0 - 0.5 * torch.outer(m0 @ k - v, k))


@pytest.mark.equation("nl", 65)
def test_delta_rule_with_a_unit_key_and_unit_step_stores_the_pair_exactly():
    k = _randn(1, 1, DK, seed=3)
    k = k / k.norm()
    v, m0 = _randn(1, 1, DV, seed=4), _randn(1, DV, DK, seed=5)
    y, m = delta_rule_rnn(k, k, v, eta=1.0, initial_state=m0)
    _close(m[0] @ k[0, 0], v[0, 0])
    _close(y[0, 0], v[0, 0])


@pytest.mark.equation("nl", 65)
def test_delta_rule_rejects_bad_steps():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"eta must be in \[0, inf\)"):
        delta_rule_rnn(q, k, v, eta=-1.0)
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1"):
        delta_rule_rnn_chunked(q, k, v, eta=0.5, chunk_size=0)


# --------------------------------------------------------------------------------------------------
# Eq. 66–67 — Oja's rule and its reading as a GD step
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 66)
def test_oja_rnn_equals_the_loop():
    q, k, v = _qkv(seed=14)
    eta, alpha, m0 = _rand(B, T, seed=15, high=0.3), _rand(B, T, seed=16, low=0.5), _randn(B, DV, DK, seed=17)
    y, m = oja_rnn(q, k, v, eta=eta, alpha=alpha, feature_map=torch.tanh, initial_state=m0)
    mm, ys = m0.clone(), []
    for t in range(T):
        vt, kt = v[:, t], torch.tanh(k[:, t])
        mtv = torch.einsum("bij,bi->bj", mm, vt)  # (M_{t−1}ᵀ v_t), read as a row: v_tᵀ M_{t−1}
        mm = alpha[:, t, None, None] * mm + eta[:, t, None, None] * torch.einsum("bi,bj->bij", vt, kt - mtv)
        ys.append(torch.einsum("bij,bj->bi", mm, torch.tanh(q[:, t])))
    _close(y, torch.stack(ys, 1))
    _close(m, mm)


@pytest.mark.equation("nl", 66)
def test_oja_step_matches_a_hand_computed_example():
    # M = [[1, 2]], k = (1, 0), v = (2): M + η v (kᵀ − vᵀ M) = [1, 2] + 0.5·2·([1, 0] − [2, 4]) = [0, −2]
    m = torch.tensor([[1.0, 2.0]], dtype=F64)
    got = oja_step(m, torch.tensor([1.0, 0.0], dtype=F64), torch.tensor([2.0], dtype=F64), 0.5)
    _close(got, torch.tensor([[0.0, -2.0]], dtype=F64))
    got_decayed = oja_step(
        m, torch.tensor([1.0, 0.0], dtype=F64), torch.tensor([2.0], dtype=F64), 0.5, alpha=0.5
    )
    _close(got_decayed, torch.tensor([[-0.5, -3.0]], dtype=F64))


@pytest.mark.equation("nl", 66)
def test_oja_with_unit_decay_is_the_delta_rule_on_the_transposed_memory():
    # M (d_v, d_k): Mᵀ_t = Mᵀ − η (Mᵀ v − k) vᵀ, DeltaNet with key v and value k
    m0, k, v = _randn(DV, DK, seed=1), _randn(DK, seed=2), _randn(DV, seed=3)
    _close(oja_step(m0, k, v, 0.4).T, delta_rule_step(m0.T, v, k, 0.4))


@pytest.mark.equation("nl", 66)
def test_oja_on_a_fixed_value_direction_converges_to_the_unit_principal_vector():
    # Oja's classic property, for a vector memory (d_v = 1) with value y = M k: ‖M‖ → 1 along the top
    # principal direction of the keys. Keys with covariance diag(4, 1): the limit is ±e_1.
    gen = torch.Generator().manual_seed(0)
    keys = torch.randn(4000, 2, dtype=F64, generator=gen) * torch.tensor([2.0, 1.0], dtype=F64)
    m = torch.tensor([[0.3, 0.3]], dtype=F64)
    for key in keys:
        m = oja_step(m, key, m @ key, 0.005)
    assert abs(abs(float(m[0, 0])) - 1.0) < 0.05 and abs(float(m[0, 1])) < 0.1


@pytest.mark.equation("nl", 67)
@given(m0=tensors(DV, DK), k=tensors(DK), v=tensors(DV), eta=st.floats(0.0, 2.0))
def test_oja_is_a_gd_step_with_half_the_rate_on_the_eq67_objective(m0, k, v, eta):
    objective = OjaObjective()
    # L̃ = −2⟨M k, v⟩ + ‖Mᵀ v‖², written out here; its gradient 2 v vᵀ M − 2 v kᵀ
    grad = _autograd(lambda mm: -2 * (mm @ k) @ v + ((mm.T @ v) ** 2).sum(), m0)
    _close(objective.grad(m0, k[None], v[None]), grad, atol=1e-10)
    _close(oja_step(m0, k, v, eta), gd_step(objective, m0, k[None], v[None], eta / 2), atol=1e-10)
    _close(oja_step(m0, k, v, eta), m0 - eta / 2 * grad, atol=1e-10)


@pytest.mark.equation("nl", 67)
def test_oja_objective_by_sympy():
    m = sp.Matrix(2, 2, lambda i, j: sp.Symbol(f"m{i}{j}"))
    k, v = sp.Matrix([1, -2]), sp.Matrix([sp.Rational(1, 2), 3])
    objective = -2 * (v.T * m * k)[0] + sum(e**2 for e in m.T * v)
    grad = sp.Matrix(2, 2, lambda i, j: sp.diff(objective, m[i, j]))
    numbers = dict(zip(list(m), [0.5, -1.0, 2.0, 0.25], strict=True))
    expected = torch.tensor(np.array(grad.subs(numbers), dtype=np.float64))
    m_t = torch.tensor([[0.5, -1.0], [2.0, 0.25]], dtype=F64)
    k_t, v_t = torch.tensor([[1.0, -2.0]], dtype=F64), torch.tensor([[0.5, 3.0]], dtype=F64)
    _close(OjaObjective().grad(m_t, k_t, v_t), expected)
    assert abs(float(OjaObjective().loss(m_t, k_t, v_t)) - float(objective.subs(numbers))) < 1e-12


@pytest.mark.equation("nl", 67)
def test_oja_objective_sums_over_pairs_and_checks_shapes():
    m0, keys, values = _randn(DV, DK, seed=1), _randn(5, DK, seed=2), _randn(5, DV, seed=3)
    objective = OjaObjective()
    expected = sum(objective.grad(m0, keys[i : i + 1], values[i : i + 1]) for i in range(5))
    _close(objective.grad(m0, keys, values), expected)
    with pytest.raises(ValueError, match=r"values must be \(n=5, d_v=4\)"):
        objective.grad(m0, keys, values[:, :2])


@pytest.mark.equation("nl", 66)
def test_oja_rejects_bad_gates():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        oja_rnn(q, k, v, eta=0.1, alpha=-0.5)
    with pytest.raises(ValueError, match=r"eta must be in \[0, inf\)"):
        oja_step(_randn(DV, DK), _randn(DK), _randn(DV), float("nan"))


# --------------------------------------------------------------------------------------------------
# Eq. 68 — the Omega rule
# --------------------------------------------------------------------------------------------------


def _omega_loop(q, k, v, window, gamma, alpha, m0, objective):
    """M_t = α_t M_{t−1} − Σ_{i=t−c+1}^{t} γ_{t,i} ∇ℓ(M_{t−1}; k_i, v_i) with autograd of ℓ written here."""

    def loss(mm, key, val):
        if objective == "l2":
            return 0.5 * ((mm @ key - val) ** 2).sum()
        return -(mm @ key) @ val

    m, ys = m0.clone(), []
    for t in range(q.shape[1]):
        new = []
        for b in range(q.shape[0]):
            step = torch.zeros_like(m[b])
            for lag in range(min(window, t + 1)):
                i = t - lag
                step = step + gamma[b, t, lag] * _autograd(
                    lambda mm, i=i, b=b: loss(mm, k[b, i], v[b, i]), m[b]
                )
            new.append(alpha[b, t] * m[b] - step)
        m = torch.stack(new)
        ys.append(torch.einsum("bij,bj->bi", m, q[:, t]))
    return torch.stack(ys, 1), m


@pytest.mark.equation("nl", 68)
@pytest.mark.parametrize("objective", ["l2", "dot"])
@pytest.mark.parametrize("form", ["reference", "windowed"])
@pytest.mark.parametrize("window", [1, 3, 9])
def test_omega_rule_equals_gd_on_the_window_objective(objective, form, window):
    q, k, v = _qkv(seed=20)
    gamma = _rand(B, T, window, seed=21, high=0.3)
    alpha, m0 = _rand(B, T, seed=22, low=0.5), _randn(B, DV, DK, seed=23)
    fn = omega_rule if form == "reference" else omega_rule_windowed
    y, m = fn(q, k, v, window=window, gamma=gamma, alpha=alpha, objective=objective, initial_state=m0)
    y_ref, m_ref = _omega_loop(q, k, v, window, gamma, alpha, m0, objective)
    _close(y, y_ref)
    _close(m, m_ref)


@pytest.mark.equation("nl", 68)
@pytest.mark.equation("nl", 65)
@pytest.mark.parametrize("form", ["reference", "windowed"])
def test_omega_rule_with_a_window_of_one_is_the_delta_rule(form):
    q, k, v = _qkv(seed=24)
    eta, m0 = _rand(B, T, seed=25), _randn(B, DV, DK, seed=26)
    fn = omega_rule if form == "reference" else omega_rule_windowed
    y, m = fn(q, k, v, window=1, gamma=eta[..., None], initial_state=m0)
    y_d, m_d = delta_rule_rnn(q, k, v, eta=eta, initial_state=m0)
    _close(y, y_d)
    _close(m, m_d)


@pytest.mark.equation("nl", 68)
@pytest.mark.equation("nl", 64)
@pytest.mark.parametrize("form", ["reference", "windowed"])
def test_omega_rule_with_the_dot_product_and_a_window_of_one_is_hebbian(form):
    q, k, v = _qkv(seed=27)
    eta, alpha = _rand(B, T, seed=28), _rand(B, T, seed=29)
    fn = omega_rule if form == "reference" else omega_rule_windowed
    y, m = fn(q, k, v, window=1, gamma=eta[..., None], alpha=alpha, objective="dot", feature_map=torch.tanh)
    y_h, m_h = hebbian_rnn(q, k, v, eta=eta, alpha=alpha, feature_map=torch.tanh)
    _close(y, y_h)
    _close(m, m_h)


@pytest.mark.equation("nl", 68)
@given(
    gamma=arrays(np.float64, (1, 5, 2), elements=st.floats(0.0, 0.5)).map(torch.from_numpy),
    alpha=arrays(np.float64, (1, 5), elements=st.floats(0.0, 1.0)).map(torch.from_numpy),
    q=tensors(1, 5, 2),
    k=tensors(1, 5, 2),
    v=tensors(1, 5, 3),
)
def test_omega_windowed_form_equals_the_reference_for_any_weights(gamma, alpha, q, k, v):
    y, m = omega_rule(q, k, v, window=2, gamma=gamma, alpha=alpha)
    y_w, m_w = omega_rule_windowed(q, k, v, window=2, gamma=gamma, alpha=alpha)
    _close(y_w, y, atol=1e-10)
    _close(m_w, m, atol=1e-10)


@pytest.mark.equation("nl", 68)
def test_omega_rule_rejects_bad_arguments():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="window must be an int >= 1"):
        omega_rule(q, k, v, window=0, gamma=0.1)
    with pytest.raises(ValueError, match=r"gamma must be in \[0, inf\)"):
        omega_rule_windowed(q, k, v, window=2, gamma=-0.1)
    with pytest.raises(ValueError, match=r"gamma of shape \(2, 7, 3\) does not broadcast to \(2, 7, 2\)"):
        omega_rule(q, k, v, window=2, gamma=torch.ones(B, T, 3, dtype=F64))
    with pytest.raises(ValueError, match="objective must be 'l2' or 'dot'"):
        omega_rule(q, k, v, window=2, gamma=0.1, objective="huber")


# --------------------------------------------------------------------------------------------------
# Eq. 21, 69 — AdaTransformer (Linear Attention++): the in-context-updated last weight
# --------------------------------------------------------------------------------------------------


def _ada_loop(x, w_q, w_k, w_v, w0, eta=1.0, scale=None):
    """k, v, q = x W; y_attn = causal softmax attention with score scale ``scale`` (default 1/√d_k);
    W_t = W_{t−1} + η v_tᵀ k_t; y_t = y_attn,t W_t."""
    k, v, q = x @ w_k, x @ w_v, x @ w_q
    out, finals = [], []
    for b in range(x.shape[0]):
        w, ys = w0.clone(), []
        for t in range(x.shape[1]):
            logits = k[b, : t + 1] @ q[b, t]
            scores = torch.exp(logits / math.sqrt(k.shape[-1]) if scale is None else scale * logits)
            y_attn = (scores[:, None] * v[b, : t + 1]).sum(0) / scores.sum()
            w = w + eta * torch.outer(v[b, t], k[b, t])
            ys.append(y_attn @ w)
        out.append(torch.stack(ys))
        finals.append(w)
    return torch.stack(out), torch.stack(finals)


def _ada_weights(seed=30, d_in=5):
    return _randn(d_in, DK, seed=seed), _randn(d_in, DK, seed=seed + 1), _randn(d_in, DV, seed=seed + 2)


@pytest.mark.equation("nl", 69)
@pytest.mark.equation("nl", 21)
@pytest.mark.parametrize("impl", ["recurrent", "parallel"])
def test_ada_transformer_block_equals_the_loop(impl):
    x, (w_q, w_k, w_v), w0 = _randn(B, T, 5, seed=33), _ada_weights(), _randn(DV, DK, seed=34)
    y, w = ada_transformer_block(x, w_q, w_k, w_v, w0, impl=impl)
    y_ref, w_ref = _ada_loop(x, w_q, w_k, w_v, w0)
    assert y.shape == (B, T, DK) and w.shape == (B, DV, DK)
    _close(y, y_ref)
    _close(w, w_ref)


@pytest.mark.equation("nl", 21)
@pytest.mark.parametrize("impl", ["recurrent", "parallel"])
def test_ada_transformer_without_updates_is_the_transformer_block(impl):
    # Eq. 21 off (η = 0): y_block = y_attn W_MLP with W_MLP = W_LinAttn,0 (N-U4)
    x, (w_q, w_k, w_v), w0 = _randn(B, T, 5, seed=35), _ada_weights(seed=36), _randn(DV, DK, seed=37)
    y, w = ada_transformer_block(x, w_q, w_k, w_v, w0, eta=0.0, impl=impl)
    q, k, v = x @ w_q, x @ w_k, x @ w_v
    scores = (q @ k.transpose(1, 2) / math.sqrt(DK)).masked_fill(
        ~torch.ones(T, T, dtype=torch.bool).tril(), -math.inf
    )
    _close(y, torch.softmax(scores, -1) @ v @ w0)
    _close(w, w0.expand(B, DV, DK))


@pytest.mark.equation("nl", 21)
def test_in_context_weight_is_the_initial_weight_plus_the_value_key_outer_products():
    x, (w_q, w_k, w_v), w0 = _randn(1, T, 5, seed=38), _ada_weights(seed=39), _randn(DV, DK, seed=40)
    _, w = ada_transformer_block(x, w_q, w_k, w_v, w0)
    k, v = x[0] @ w_k, x[0] @ w_v
    _close(w[0], w0 + v.T @ k)  # Σ_t v_t ⊗ k_t


@pytest.mark.equation("nl", 69)
def test_ada_transformer_module_meta_learns_its_initial_weight():
    torch.manual_seed(0)
    block = AdaTransformerBlock(5, d_k=DK, d_v=DV).double()
    x = _randn(B, T, 5, seed=41)
    y, w = block(x)
    y_ref, w_ref = _ada_loop(
        x, block.w_q.detach(), block.w_k.detach(), block.w_v.detach(), block.w_lin_init.detach()
    )
    _close(y.detach(), y_ref)
    _close(w.detach(), w_ref)
    y.square().sum().backward()
    assert block.w_lin_init.grad is not None and block.w_lin_init.grad.abs().sum() > 0
    assert block.w_k.grad.abs().sum() > 0  # the keys reach the loss through the in-context weight too


@pytest.mark.equation("nl", 69)
def test_ada_transformer_rejects_bad_arguments():
    x, (w_q, w_k, w_v), w0 = _randn(B, T, 5), _ada_weights(), _randn(DV, DK)
    with pytest.raises(ValueError, match=r"w_lin_init must have shape \(d_v=4, d_k=3\)"):
        ada_transformer_block(x, w_q, w_k, w_v, w0.T)
    with pytest.raises(ValueError, match="impl must be one of"):
        ada_transformer_block(x, w_q, w_k, w_v, w0, impl="fast")
    with pytest.raises(ValueError, match=r"eta must be in \[0, inf\)"):
        ada_transformer_block(x, w_q, w_k, w_v, w0, eta=-1.0)
    with pytest.raises(ValueError, match="d_in must be an int >= 1"):
        AdaTransformerBlock(0)


# --------------------------------------------------------------------------------------------------
# Shared checks, defaults, dtypes and devices of the recurrent rules (Eq. 64–68)
# --------------------------------------------------------------------------------------------------


def _raises_exactly(message, fn, *args, **kwargs):
    with pytest.raises(ValueError) as caught:
        fn(*args, **kwargs)
    assert str(caught.value) == message


@pytest.mark.equation("nl", 64)
def test_sequence_checks_give_exact_messages():
    q, k, v = _qkv()
    shape = "(batch, seq, d_k)"
    _raises_exactly(f"q must have shape {shape}, got torch.Size([7, 3])", hebbian_rnn, q[0], k, v)
    _raises_exactly(f"q must have shape {shape}, got list", hebbian_rnn, [[0.0]], k, v)
    k_msg = f"k must have shape {shape} = (2, 7, 3) like q, got "
    _raises_exactly(k_msg + "torch.Size([2, 7, 2])", hebbian_rnn, q, k[..., :2], v)
    _raises_exactly(k_msg + "None", hebbian_rnn, q, [[0.0]], v)
    v_msg = "v must have shape (batch, seq, d_v) = (2, 7, d_v), got "
    _raises_exactly(v_msg + "torch.Size([2, 5, 4])", hebbian_rnn, q, k, v[:, :5])  # 3-d, wrong seq
    _raises_exactly(v_msg + "torch.Size([2, 7])", hebbian_rnn, q, k, v[..., 0])  # right (batch, seq), 2-d
    _raises_exactly(v_msg + "None", hebbian_rnn, q, k, [[0.0]])


@pytest.mark.equation("nl", 64)
def test_initial_state_and_feature_map_checks_give_exact_messages():
    q, k, v = _qkv()
    state_msg = "initial_state must have shape (2, 4, 3) = (batch, d_v, d_k), got "
    wrong = torch.zeros(B, DK, DV, dtype=F64)
    _raises_exactly(state_msg + "torch.Size([2, 3, 4])", hebbian_rnn, q, k, v, initial_state=wrong)
    _raises_exactly(state_msg + "list", hebbian_rnn, q, k, v, initial_state=[[0.0]])

    def keys_only(x):  # changes the shape of k alone: one bad output is enough to refuse
        return x[..., :1] if x is k else x

    _raises_exactly(
        "feature_map changed the shape of q or k; it must act element-wise",
        hebbian_rnn,
        q,
        k,
        v,
        feature_map=keys_only,
    )


@pytest.mark.equation("nl", 64)
def test_hebbian_rnn_default_write_strength_is_one():
    q, k, v = _qkv(seed=50)
    alpha = _rand(B, T, seed=51, low=0.5)
    y, m = hebbian_rnn(q, k, v, alpha=alpha)  # η defaults to 1, M_0 to zeros
    y_ref, m_ref = _hebbian_loop(
        q, k, v, torch.ones(B, T, dtype=F64), alpha, torch.zeros(B, DV, DK, dtype=F64)
    )
    _close(y, y_ref)
    _close(m, m_ref)


@pytest.mark.equation("nl", 64)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_hebbian_parallel_form_keeps_a_low_precision_dtype(dtype):
    q, k, v = _qkv(seed=52)
    eta, alpha = _rand(B, T, seed=53), _rand(B, T, seed=54, low=0.5)
    y, m = hebbian_rnn_parallel(
        q.to(dtype), k.to(dtype), v.to(dtype), eta=eta.to(dtype), alpha=alpha.to(dtype)
    )
    assert y.dtype == dtype and m.dtype == dtype
    # the loop in float64 on the same (rounded) inputs; the tolerance is that of the half formats
    cast = [x.to(dtype).to(F64) for x in (q, k, v, eta, alpha)]
    y_ref, m_ref = _hebbian_loop(*cast, torch.zeros(B, DV, DK, dtype=F64))
    torch.testing.assert_close(y.to(F64), y_ref, rtol=0.05, atol=0.1)
    torch.testing.assert_close(m.to(F64), m_ref, rtol=0.05, atol=0.1)


@pytest.mark.equation("nl", 64)
@pytest.mark.equation("nl", 68)
def test_parallel_forms_run_on_the_meta_device_for_shape_inference():
    # meta tensors carry shapes and no data: the zero M_0 and the scan's identity must be made there too
    q, k, v = (torch.empty(B, T, d, dtype=F64, device="meta") for d in (DK, DK, DV))
    y, m = hebbian_rnn_parallel(q, k, v, eta=0.5, alpha=0.5)
    assert y.device.type == "meta" and y.shape == (B, T, DV)
    assert m.device.type == "meta" and m.shape == (B, DV, DK)
    y, m = omega_rule_windowed(q, k, v, window=2, gamma=0.5)
    assert y.device.type == "meta" and y.shape == (B, T, DV)
    assert m.device.type == "meta" and m.shape == (B, DV, DK)


@pytest.mark.equation("nl", 65)
@pytest.mark.parametrize("form", ["reference", "chunked"])
def test_delta_rule_applies_the_feature_map_from_a_zero_float64_state(form):
    q, k, v = _qkv(seed=55)
    eta = _rand(B, T, seed=56)
    if form == "reference":
        y, m = delta_rule_rnn(q, k, v, eta=eta, feature_map=torch.tanh)
    else:
        y, m = delta_rule_rnn_chunked(q, k, v, eta=eta, feature_map=torch.tanh, chunk_size=3)
    assert y.dtype == F64 and m.dtype == F64
    y_ref, m_ref = _delta_loop(torch.tanh(q), torch.tanh(k), v, eta, torch.zeros(B, DV, DK, dtype=F64))
    _close(y, y_ref)
    _close(m, m_ref)


@pytest.mark.equation("nl", 65)
def test_delta_rule_chunked_default_chunk_size_is_64():
    # 70 tokens: chunks of 64 + 6 by default; the chunking changes the rounding, not the numbers
    q, k, v = _randn(1, 70, DK, seed=57), _randn(1, 70, DK, seed=58), _randn(1, 70, DV, seed=59)
    eta = _rand(1, 70, seed=60, high=0.3)
    y, m = delta_rule_rnn_chunked(q, k, v, eta=eta)
    y_ref, m_ref = _delta_loop(q, k, v, eta, torch.zeros(1, DV, DK, dtype=F64))
    _close(y, y_ref, atol=1e-10)
    _close(m, m_ref, atol=1e-10)
    y_64, m_64 = delta_rule_rnn_chunked(q, k, v, eta=eta, chunk_size=64)
    assert torch.equal(y, y_64) and torch.equal(m, m_64)


def _oja_loop(q, k, v, eta, alpha, m0):
    """M_t = α_t M_{t−1} + η_t v_t (k_tᵀ − v_tᵀ M_{t−1}), y_t = M_t q_t, written out."""
    m, ys = m0.clone(), []
    for t in range(q.shape[1]):
        back = torch.einsum("bi,bij->bj", v[:, t], m)  # v_tᵀ M_{t−1}
        m = alpha[:, t, None, None] * m + eta[:, t, None, None] * torch.einsum(
            "bi,bj->bij", v[:, t], k[:, t] - back
        )
        ys.append(torch.einsum("bij,bj->bi", m, q[:, t]))
    return torch.stack(ys, 1), m


@pytest.mark.equation("nl", 66)
def test_oja_rnn_default_decay_is_one():
    q, k, v = _qkv(seed=61)
    eta = _rand(B, T, seed=62, high=0.2)
    y, m = oja_rnn(q, k, v, eta=eta)  # α defaults to 1, M_0 to zeros
    y_ref, m_ref = _oja_loop(q, k, v, eta, torch.ones(B, T, dtype=F64), torch.zeros(B, DV, DK, dtype=F64))
    _close(y, y_ref)
    _close(m, m_ref)


@pytest.mark.equation("nl", 66)
def test_oja_step_refuses_a_decay_above_one():
    m, k, v = _randn(DV, DK, seed=63), _randn(DK, seed=64), _randn(DV, seed=65)
    _raises_exactly("alpha must be in [0, 1], got 1.5", oja_step, m, k, v, 0.1, alpha=1.5)


@pytest.mark.equation("nl", 68)
@pytest.mark.parametrize("form", ["reference", "windowed"])
def test_omega_rule_refuses_a_decay_above_one(form):
    q, k, v = _qkv()
    fn = omega_rule if form == "reference" else omega_rule_windowed
    _raises_exactly("alpha must be in [0, 1], got 1.5", fn, q, k, v, window=2, gamma=0.1, alpha=1.5)


# --------------------------------------------------------------------------------------------------
# Eq. 62, 63, 69: exact messages, batched similarities, score scales, which implementation runs, the
# Ada block's defaults, widths and initial scales
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# Eq. 62 — nadaraya_watson
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 62)
def test_nadaraya_watson_weighted_mean_over_a_batch_of_query_blocks():
    # similarity (batch=2, L_q=3, L=4), values (2, 4, 5): the mean is over the last axis (the L keys)
    similarity = torch.rand(2, 3, 4, dtype=F64, generator=torch.Generator().manual_seed(50)) + 0.1
    values = _randn(2, 4, 5, seed=51)
    got = nadaraya_watson(similarity, values)
    assert got.shape == (2, 3, 5)
    for b in range(2):
        for i in range(3):
            total = sum(float(similarity[b, i, j]) for j in range(4))
            expected = sum(similarity[b, i, j] * values[b, j] for j in range(4)) / total
            _close(got[b, i], expected)


@pytest.mark.equation("nl", 62)
def test_nadaraya_watson_exact_messages_for_bad_shapes_and_weights():
    ok_values = _randn(3, 2, seed=52)
    _raises_exactly(
        "similarity must be (..., L_q, L), got torch.Size([3])",
        nadaraya_watson,
        torch.ones(3, dtype=F64),
        ok_values,
    )
    _raises_exactly("similarity must be (..., L_q, L), got None", nadaraya_watson, [[1.0, 2.0]], ok_values)
    _raises_exactly(
        "values must be (..., L=3, d_v), got torch.Size([3])",
        nadaraya_watson,
        torch.ones(1, 3, dtype=F64),
        torch.ones(3, dtype=F64),
    )
    _raises_exactly(
        "values must be (..., L=2, d_v), got torch.Size([3, 2])",
        nadaraya_watson,
        torch.ones(1, 2, dtype=F64),
        ok_values,
    )
    _raises_exactly(
        "values must be (..., L=2, d_v), got None",
        nadaraya_watson,
        torch.ones(1, 2, dtype=F64),
        [[1.0], [2.0]],
    )
    _raises_exactly(
        "similarity must be >= 0 and finite",
        nadaraya_watson,
        torch.tensor([[1.0, -1.0, 0.5]], dtype=F64),
        ok_values,
    )
    _raises_exactly(
        "every query needs at least one positive similarity (else the minimiser is any M)",
        nadaraya_watson,
        torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]], dtype=F64),
        ok_values,
    )


# --------------------------------------------------------------------------------------------------
# Eq. 63 — sliding_window_attention
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 63)
def test_sliding_window_attention_uses_the_given_score_scale():
    q, k, v = _randn(B, T, DK, seed=53), _randn(B, T, DK, seed=54), _randn(B, T, DV, seed=55)
    window, scale = 3, 0.3  # 0.3 ≠ 1/√3 ≈ 0.577, the default
    got = sliding_window_attention(q, k, v, window, scale=scale)
    for b in range(B):
        for t in range(T):
            lo = max(0, t - window + 1)
            weights = torch.exp(scale * (k[b, lo : t + 1] @ q[b, t]))  # s(k_i, q_t) = exp(0.3 q_tᵀk_i)
            _close(got[b, t], (weights[:, None] * v[b, lo : t + 1]).sum(0) / weights.sum())


@pytest.mark.equation("nl", 63)
def test_sliding_window_attention_checks_the_window_before_the_shapes():
    q, k, v = _randn(B, T, DK, seed=56), _randn(B, T, DK, seed=57), _randn(B, T, DV, seed=58)
    # both the window and the query count are wrong: the window is named first
    _raises_exactly("window must be an int >= 1, got 0", sliding_window_attention, q[:, :3], k, v, 0)


@pytest.mark.equation("nl", 63)
def test_sliding_window_attention_builds_its_mask_on_the_device_of_q(monkeypatch):
    calls, original = [], learning_rules_module.sliding_window_mask

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(learning_rules_module, "sliding_window_mask", spy)
    q, k, v = _randn(1, 4, DK, seed=59), _randn(1, 4, DK, seed=60), _randn(1, 4, DV, seed=61)
    sliding_window_attention(q, k, v, 2)
    assert len(calls) == 1
    assert calls[0][0] == (4, 2) and calls[0][1] == {"device": q.device}


# --------------------------------------------------------------------------------------------------
# Eq. 21, 69 — ada_transformer_block and AdaTransformerBlock
# --------------------------------------------------------------------------------------------------


def _ada_args(seed):
    x = _randn(B, T, 5, seed=seed)
    w_q, w_k, w_v = _randn(5, DK, seed=seed + 1), _randn(5, DK, seed=seed + 2), _randn(5, DV, seed=seed + 3)
    return x, w_q, w_k, w_v, _randn(DV, DK, seed=seed + 4)


def _spy_hebbian(monkeypatch):
    calls = []
    for name in ("hebbian_rnn", "hebbian_rnn_parallel"):
        original = getattr(learning_rules_module, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(learning_rules_module, name, spy)
    return calls


@pytest.mark.equation("nl", 69)
@pytest.mark.parametrize("impl", ["recurrent", "parallel"])
def test_ada_block_uses_the_given_attention_scale(impl):
    x, w_q, w_k, w_v, w0 = _ada_args(70)
    y, w = ada_transformer_block(x, w_q, w_k, w_v, w0, scale=0.2, impl=impl)  # default would be 1/√3
    y_ref, w_ref = _ada_loop(x, w_q, w_k, w_v, w0, scale=0.2)
    _close(y, y_ref)
    _close(w, w_ref)


@pytest.mark.equation("nl", 69)
@pytest.mark.parametrize(
    ("impl", "expected"), [("recurrent", "hebbian_rnn"), ("parallel", "hebbian_rnn_parallel")]
)
def test_ada_block_impl_selects_the_hebbian_implementation(monkeypatch, impl, expected):
    calls = _spy_hebbian(monkeypatch)
    x, w_q, w_k, w_v, w0 = _ada_args(75)
    y, _ = ada_transformer_block(x, w_q, w_k, w_v, w0, impl=impl)
    assert calls == [expected]
    _close(y, _ada_loop(x, w_q, w_k, w_v, w0)[0])


@pytest.mark.equation("nl", 69)
def test_ada_block_exact_messages_for_bad_inputs_and_initial_weights():
    x, w_q, w_k, w_v, w0 = _ada_args(80)
    _raises_exactly(
        "x must have shape (batch, seq, d_in), got torch.Size([7, 5])",
        ada_transformer_block,
        x[0],
        w_q,
        w_k,
        w_v,
        w0,
    )
    _raises_exactly(
        "x must have shape (batch, seq, d_in), got list",
        ada_transformer_block,
        x.tolist(),
        w_q,
        w_k,
        w_v,
        w0,
    )
    _raises_exactly(
        "w_lin_init must have shape (d_v=4, d_k=3), got torch.Size([3, 4])",
        ada_transformer_block,
        x,
        w_q,
        w_k,
        w_v,
        w0.T,
    )
    _raises_exactly(
        "w_lin_init must have shape (d_v=4, d_k=3), got list",
        ada_transformer_block,
        x,
        w_q,
        w_k,
        w_v,
        w0.tolist(),
    )


@pytest.mark.equation("nl", 69)
def test_ada_module_widths_default_to_d_in_and_follow_d_k_d_v():
    torch.manual_seed(1)
    square = AdaTransformerBlock(5)
    assert square.w_q.shape == (5, 5) and square.w_k.shape == (5, 5)
    assert square.w_v.shape == (5, 5) and square.w_lin_init.shape == (5, 5)
    wide = AdaTransformerBlock(5, d_k=3, d_v=4)
    assert wide.w_q.shape == (5, 3) and wide.w_k.shape == (5, 3)
    assert wide.w_v.shape == (5, 4) and wide.w_lin_init.shape == (4, 3)
    only_v = AdaTransformerBlock(5, d_v=2)
    assert only_v.w_k.shape == (5, 5) and only_v.w_v.shape == (5, 2) and only_v.w_lin_init.shape == (2, 5)
    only_k = AdaTransformerBlock(5, d_k=2)
    assert only_k.w_k.shape == (5, 2) and only_k.w_v.shape == (5, 5) and only_k.w_lin_init.shape == (5, 2)


@pytest.mark.equation("nl", 69)
def test_ada_module_initial_parameters_have_fan_in_scales():
    # W_q, W_k, W_v ~ N(0, 1/d_in) and W_LinAttn,0 ~ N(0, 1/d_v): RMS 1/8 and 1/√80 ≈ 0.112
    torch.manual_seed(2)
    block = AdaTransformerBlock(64, d_k=48, d_v=80)
    for weight, std in (
        (block.w_q, 64**-0.5),
        (block.w_k, 64**-0.5),
        (block.w_v, 64**-0.5),
        (block.w_lin_init, 80**-0.5),
    ):
        rms = float(weight.detach().square().mean().sqrt())
        assert abs(rms / std - 1) < 0.1, (tuple(weight.shape), rms, std)


@pytest.mark.equation("nl", 69)
def test_ada_module_forward_passes_its_write_strength():
    torch.manual_seed(3)
    block = AdaTransformerBlock(5, d_k=DK, d_v=DV, eta=0.25).double()
    x = _randn(B, T, 5, seed=85)
    y, w = block(x)
    params = (block.w_q, block.w_k, block.w_v, block.w_lin_init)
    y_ref, w_ref = _ada_loop(x, *(p.detach() for p in params), eta=0.25)
    _close(y.detach(), y_ref)
    _close(w.detach(), w_ref)


@pytest.mark.equation("nl", 69)
@pytest.mark.parametrize(
    ("impl", "expected"), [("recurrent", "hebbian_rnn"), ("parallel", "hebbian_rnn_parallel")]
)
def test_ada_module_forward_passes_its_impl(monkeypatch, impl, expected):
    calls = _spy_hebbian(monkeypatch)
    torch.manual_seed(4)
    block = AdaTransformerBlock(5, d_k=DK, d_v=DV, impl=impl).double()
    block(_randn(1, 4, 5, seed=86))
    assert calls == [expected]


@pytest.mark.equation("nl", 69)
def test_ada_module_exact_messages_for_bad_arguments():
    _raises_exactly("d_k must be an int >= 1, got 0", AdaTransformerBlock, 5, d_k=0)
    _raises_exactly("d_v must be an int >= 1, got 0", AdaTransformerBlock, 5, d_v=0)
    _raises_exactly(
        "impl must be one of ('recurrent', 'parallel'), got 'fast'", AdaTransformerBlock, 5, impl="fast"
    )
    _raises_exactly("eta must be in [0, inf), got -1.0", AdaTransformerBlock, 5, eta=-1.0)
