"""NL linear attention and fast weights: the vanilla fast-weight programmer (Eq. 5), the projections,
recurrence and read-out (Eq. 14–16), and the recurrence as one GD step on a dot-product objective (Eq. 17–18).

Expectations: the causal-masked parallel form written in the test, the unrolled sum of decayed outer
products, sympy argmins, autograd, and hand-worked numbers. Column convention: memory (d_v, d_k), read M q.
"""

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from neural_memory.miras.baselines import recurrent_linear_attention
from neural_memory.nl.associative_memory import DotProductObjective, gd_step
from neural_memory.nl.linear_attention import (
    fast_weight_programmer,
    linear_attention,
    linear_attention_projections,
    linear_attention_read,
    linear_attention_write,
)

from .helpers import F64, tensors
from .helpers import randn as _randn


def _weights(d_in: int = 4, d_k: int = 3, d_v: int = 2, seed: int = 0):
    return _randn(d_k, d_in, seed=seed), _randn(d_v, d_in, seed=seed + 1), _randn(d_k, d_in, seed=seed + 2)


# --------------------------------------------------------------------------------------------------
# Eq. 5 — the vanilla fast-weight programmer
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 5)
def test_fast_weight_programmer_by_hand():
    # d_k = d_v = 1, φ = id: M_1 = 0.5·0 + 2·1 = 2, y_1 = 2·1 = 2; M_2 = 0.5·2 + 1·3 = 4, y_2 = 4·(−1) = −4
    q = torch.tensor([[1.0], [-1.0]], dtype=F64)
    k = torch.tensor([[1.0], [3.0]], dtype=F64)
    v = torch.tensor([[2.0], [1.0]], dtype=F64)
    y, state = fast_weight_programmer(q, k, v, alpha=0.5)
    torch.testing.assert_close(y, torch.tensor([[2.0], [-4.0]], dtype=F64), rtol=0, atol=0)
    torch.testing.assert_close(state, torch.tensor([[4.0]], dtype=F64), rtol=0, atol=0)


@pytest.mark.equation("nl", 5)
@given(
    q=tensors(5, 3), k=tensors(5, 3), v=tensors(5, 2), alpha=arrays(np.float64, 5, elements=st.floats(0, 1))
)
def test_fast_weight_programmer_equals_the_unrolled_decayed_sum(q, k, v, alpha):
    alpha = torch.from_numpy(alpha)
    phi = torch.nn.functional.elu  # any element-wise map; elu + 1 is the usual positive one
    y, state = fast_weight_programmer(q, k, v, alpha=alpha, feature_map=phi)
    for t in range(5):
        # M_t = Σ_{s<=t} (Π_{r=s+1}^{t} α_r) v_s φ(k_s)ᵀ, y_t = M_t φ(q_t)
        m_t = sum(alpha[s + 1 : t + 1].prod() * torch.outer(v[s], phi(k[s])) for s in range(t + 1))
        torch.testing.assert_close(y[t], m_t @ phi(q[t]), rtol=0, atol=1e-10)
    torch.testing.assert_close(state, m_t, rtol=0, atol=1e-10)


@pytest.mark.equation("nl", 5)
def test_fast_weight_programmer_first_state_has_rank_one_and_decays_its_initial_state():
    q, k, v = _randn(1, 4, seed=1), _randn(1, 4, seed=2), _randn(1, 3, seed=3)
    _, state = fast_weight_programmer(q, k, v, alpha=0.7)
    assert int(torch.linalg.matrix_rank(state)) == 1
    m0 = _randn(3, 4, seed=4)
    _, from_m0 = fast_weight_programmer(q, k, v, alpha=0.7, initial_state=m0)
    torch.testing.assert_close(from_m0, 0.7 * m0 + torch.outer(v[0], k[0]), rtol=0, atol=1e-14)


@pytest.mark.equation("nl", 5)
def test_fast_weight_programmer_rejects_bad_input():
    q, k, v = _randn(3, 2), _randn(3, 2), _randn(3, 4)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        fast_weight_programmer(q, k, v, alpha=1.5)
    with pytest.raises(ValueError, match=r"alpha of shape \(2,\) does not broadcast to \(3,\)"):
        fast_weight_programmer(q, k, v, alpha=torch.tensor([0.5, 0.5], dtype=F64))
    with pytest.raises(ValueError, match="feature_map must act element-wise"):
        fast_weight_programmer(q, k, v, feature_map=lambda z: z.sum(-1))
    with pytest.raises(ValueError, match=r"v must be \(L=3, d_v\)"):
        fast_weight_programmer(q, k, v[:2])
    with pytest.raises(ValueError, match=r"k must be \(L=3, d_k=2\)"):
        fast_weight_programmer(q, _randn(3, 5), v)
    with pytest.raises(ValueError, match=r"initial_state must be \(d_v=4, d_k=2\)"):
        fast_weight_programmer(q, k, v, initial_state=_randn(2, 4))


@pytest.mark.equation("nl", 5)
def test_fast_weight_programmer_exact_error_messages():
    q, k, v = _randn(3, 2, seed=12), _randn(3, 2, seed=13), _randn(3, 4, seed=14)
    with pytest.raises(ValueError) as caught:
        fast_weight_programmer(q[0], k, v)
    assert str(caught.value) == "q must be (L, d_k), got shape (2,)"
    for alpha in (1.5, 2.5):
        with pytest.raises(ValueError) as caught:
            fast_weight_programmer(q, k, v, alpha=alpha)
        assert str(caught.value) == f"alpha must be in [0, 1], got {alpha}"
    # refused up front as a whole tensor, not at token 1 by the per-step gate check ("got 1.5")
    with pytest.raises(ValueError) as caught:
        fast_weight_programmer(q, k, v, alpha=torch.tensor([0.5, 1.5, 0.5], dtype=F64))
    assert str(caught.value) == "alpha must be in [0, 1], got a tensor with entries"
    message = "feature_map must act element-wise (it changed the shape of q or k)"
    with pytest.raises(ValueError) as caught:
        fast_weight_programmer(q, k, v, feature_map=lambda z: z.sum(-1))
    assert str(caught.value) == message
    # a map that changes the shape of only one of q, k is refused as well
    with pytest.raises(ValueError) as caught:
        fast_weight_programmer(q, k, v, feature_map=lambda z: z[:, :1] if z is q else z)
    assert str(caught.value) == message
    with pytest.raises(ValueError) as caught:
        fast_weight_programmer(q, k, v, feature_map=lambda z: z[:, :1] if z is k else z)
    assert str(caught.value) == message


# --------------------------------------------------------------------------------------------------
# Eq. 14 — projections
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 14)
def test_projections_are_the_column_convention_matrix_vector_products():
    x = _randn(5, 4, seed=5)
    w_k, w_v, w_q = _weights()
    k, v, q = linear_attention_projections(x, w_k, w_v, w_q)
    assert k.shape == (5, 3) and v.shape == (5, 2) and q.shape == (5, 3)
    for t in range(5):  # k_t = W_k x_t, v_t = W_v x_t, q_t = W_q x_t
        torch.testing.assert_close(k[t], torch.mv(w_k, x[t]), rtol=0, atol=1e-14)
        torch.testing.assert_close(v[t], torch.mv(w_v, x[t]), rtol=0, atol=1e-14)
        torch.testing.assert_close(q[t], torch.mv(w_q, x[t]), rtol=0, atol=1e-14)


@pytest.mark.equation("nl", 14)
def test_projections_reject_bad_shapes():
    x = _randn(5, 4)
    w_k, w_v, w_q = _weights()
    with pytest.raises(ValueError, match=r"x must be \(L, d_in=4\)"):
        linear_attention_projections(_randn(5, 3), w_k, w_v, w_q)
    with pytest.raises(ValueError, match=r"w_q must be \(d_k=3, d_in=4\)"):
        linear_attention_projections(x, w_k, w_v, _randn(2, 4))
    with pytest.raises(ValueError, match=r"w_v must be \(d_v, d_in=4\)"):
        linear_attention_projections(x, w_k, _randn(2, 5), w_q)


@pytest.mark.equation("nl", 14)
def test_projections_reject_a_non_matrix_w_k_with_its_shape():
    w_k, w_v, w_q = _weights()
    with pytest.raises(ValueError) as caught:
        linear_attention_projections(_randn(5, 4), w_k[0], w_v, w_q)
    assert str(caught.value) == "w_k must be (d_k, d_in), got shape (4,)"


# --------------------------------------------------------------------------------------------------
# Eq. 15–16 — recurrence and read-out
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 15)
def test_write_by_hand():
    # [[1, 2], [3, 4]] + (2, 0.5)ᵀ (1, −1) = [[3, 0], [3.5, 3.5]]
    memory = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=F64)
    got = linear_attention_write(
        memory, torch.tensor([1.0, -1.0], dtype=F64), torch.tensor([2.0, 0.5], dtype=F64)
    )
    torch.testing.assert_close(got, torch.tensor([[3.0, 0.0], [3.5, 3.5]], dtype=F64), rtol=0, atol=0)


@pytest.mark.equation("nl", 16)
def test_read_by_hand():
    # [[3, 0], [3.5, 3.5]] (2, −1)ᵀ = (6, 3.5)
    memory = torch.tensor([[3.0, 0.0], [3.5, 3.5]], dtype=F64)
    got = linear_attention_read(memory, torch.tensor([2.0, -1.0], dtype=F64))
    torch.testing.assert_close(got, torch.tensor([6.0, 3.5], dtype=F64), rtol=0, atol=0)


@pytest.mark.equation("nl", 14)
@pytest.mark.equation("nl", 15)
@pytest.mark.equation("nl", 16)
@given(x=tensors(6, 4))
def test_recurrent_output_equals_the_causal_parallel_form(x):
    w_k, w_v, w_q = _weights(seed=6)
    y, states = linear_attention(x, w_k, w_v, w_q)
    k, v, q = x @ w_k.T, x @ w_v.T, x @ w_q.T
    # y_t = Σ_{s<=t} v_s (k_sᵀ q_t): causal-masked (Q Kᵀ) V without softmax
    expected = (q @ k.T).tril() @ v
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-9)
    expected_states = torch.stack([v[: t + 1].T @ k[: t + 1] for t in range(6)])  # Σ_{s<=t} v_s k_sᵀ
    torch.testing.assert_close(states, expected_states, rtol=0, atol=1e-9)


@pytest.mark.equation("nl", 15)
@pytest.mark.equation("nl", 16)
def test_linear_attention_starts_from_the_initial_state_and_matches_the_miras_baseline():
    x, m0 = _randn(5, 4, seed=7), _randn(2, 3, seed=8)
    w_k, w_v, w_q = _weights(seed=9)
    y, states = linear_attention(x, w_k, w_v, w_q, initial_state=m0)
    k, v, q = x @ w_k.T, x @ w_v.T, x @ w_q.T
    torch.testing.assert_close(y, q @ m0.T + (q @ k.T).tril() @ v, rtol=0, atol=1e-12)
    # the MIRAS / Titans linear attention is the same recurrence, batched (B, H, T, d)
    y_miras, s_miras = recurrent_linear_attention(
        q[None, None], k[None, None], v[None, None], initial_state=m0[None, None]
    )
    torch.testing.assert_close(y, y_miras[0, 0], rtol=0, atol=1e-12)
    torch.testing.assert_close(states[-1], s_miras[0, 0], rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 15)
@pytest.mark.equation("nl", 16)
def test_write_and_read_reject_bad_shapes():
    memory = _randn(2, 3)
    with pytest.raises(ValueError, match=r"key must be \(d_k=3,\)"):
        linear_attention_write(memory, _randn(2), _randn(2))
    with pytest.raises(ValueError, match=r"value must be \(d_v=2,\)"):
        linear_attention_write(memory, _randn(3), _randn(3))
    with pytest.raises(ValueError, match=r"query must be \(d_k=3,\)"):
        linear_attention_read(memory, _randn(2))
    with pytest.raises(ValueError, match=r"memory must be \(d_v, d_k\)"):
        linear_attention_read(_randn(3), _randn(3))
    with pytest.raises(ValueError, match=r"initial_state must be \(d_v=2, d_k=3\)"):
        linear_attention(_randn(5, 4), *_weights(), initial_state=_randn(3, 2))


@pytest.mark.equation("nl", 15)
@pytest.mark.equation("nl", 16)
def test_write_and_read_error_messages_show_the_bad_shape():
    memory = _randn(2, 3, seed=15)
    cases = [
        (lambda: linear_attention_read(_randn(3), _randn(3)), "memory must be (d_v, d_k), got shape (3,)"),
        (
            lambda: linear_attention_write(_randn(2, 3, 1), _randn(3), _randn(2)),
            "memory must be (d_v, d_k), got shape (2, 3, 1)",
        ),
        # not a tensor: no shape attribute, shown as ()
        (lambda: linear_attention_read([[1.0, 2.0]], _randn(2)), "memory must be (d_v, d_k), got shape ()"),
        (
            lambda: linear_attention_write(memory, _randn(3, 1), _randn(2)),
            "key must be (d_k=3,), got shape (3, 1)",
        ),
        (
            lambda: linear_attention_write(memory, _randn(3), _randn(4)),
            "value must be (d_v=2,), got shape (4,)",
        ),
        (lambda: linear_attention_read(memory, _randn(2)), "query must be (d_k=3,), got shape (2,)"),
        (lambda: linear_attention_read(memory, [1.0, 2.0, 3.0]), "query must be (d_k=3,), got shape ()"),
        (
            lambda: linear_attention_write(memory, _randn(3), [1.0, 2.0]),
            "value must be (d_v=2,), got shape ()",
        ),
    ]
    for call, message in cases:
        with pytest.raises(ValueError) as caught:
            call()
        assert str(caught.value) == message


# --------------------------------------------------------------------------------------------------
# Eq. 17–18 — the write is one GD step on −⟨M k, v⟩
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 17)
def test_write_is_the_sympy_argmin_of_the_dot_product_proximal_objective():
    m = sp.Matrix(2, 2, lambda i, j: sp.Symbol(f"m{i}{j}"))
    m_t = sp.Matrix([[0.5, -1], [2, 0.25]]).applyfunc(sp.nsimplify)
    k, v = sp.Matrix([sp.Rational(3, 2), -2]), sp.Matrix([3, sp.Rational(3, 4)])
    objective = -(v.T * m * k)[0] + sum(e**2 for e in m - m_t) / 2
    entries = list(m)
    (solution,) = sp.solve([sp.diff(objective, e) for e in entries], entries, dict=True)
    expected = torch.tensor(np.array(m.subs(solution), dtype=np.float64))
    got = linear_attention_write(
        torch.tensor([[0.5, -1.0], [2.0, 0.25]], dtype=F64),
        torch.tensor([1.5, -2.0], dtype=F64),
        torch.tensor([3.0, 0.75], dtype=F64),
    )
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 18)
@given(m=tensors(2, 3), k=tensors(3), v=tensors(2))
def test_write_is_m_minus_the_autograd_gradient_of_minus_dot_product(m, k, v):
    at = m.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(-(v @ (at @ k)), at)  # ∇ of −⟨M k, v⟩ = −v kᵀ
    torch.testing.assert_close(grad, -torch.outer(v, k), rtol=0, atol=1e-12)
    torch.testing.assert_close(linear_attention_write(m, k, v), m - grad, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 18)
def test_gd_steps_on_the_dot_product_objective_give_the_recurrence_states():
    # one gd_step of lr 1 on ⟨M k, −v⟩ (DotProductObjective with value −v) per token = Eq. 15's state
    x = _randn(6, 4, seed=10)
    w_k, w_v, w_q = _weights(seed=11)
    _, states = linear_attention(x, w_k, w_v, w_q)
    memory = torch.zeros(2, 3, dtype=F64)
    for t in range(6):
        k_t, v_t = w_k @ x[t], w_v @ x[t]
        memory = gd_step(DotProductObjective(), memory, k_t[None], -v_t[None], 1.0)
        torch.testing.assert_close(memory, states[t], rtol=0, atol=1e-12)
