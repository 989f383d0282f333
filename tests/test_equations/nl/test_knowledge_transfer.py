"""NL §3.3 knowledge transfer between levels: the linear transformer as a two-level forward pass (Eq. 26)
and transfer through a meta-learned initial state, MAML (Eq. 28).

Expectations: linear attention's own outputs (Eq. 14–16), numbers worked by hand, autograd against the
hand-derived MAML gradient, sympy, and the normal equations of the meta-objective. float64.
"""

import pytest
import sympy as sp
import torch
from hypothesis import given

from neural_memory.nl.gradient_descent import sgd_step
from neural_memory.nl.knowledge_transfer import (
    adapted_memory_loss,
    meta_learned_initialisation,
    two_level_forward,
)
from neural_memory.nl.linear_attention import linear_attention

from .helpers import F64, tensors
from .helpers import randn as _randn


def _scalar_context(k: float, v: float) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([[k]], dtype=F64), torch.tensor([[v]], dtype=F64)


# --------------------------------------------------------------------------------------------------
# Eq. 26 — the linear transformer is a fast memory reading a slow memory's output
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 26)
def test_two_level_forward_by_hand():
    # M = [[1, 2]], W_q = [[1, 0, 1], [0, 1, 0]], x = (1, 2, 3): q = (4, 2), y = 4 + 4 = 8
    memory = torch.tensor([[1.0, 2.0]], dtype=F64)
    w_q = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dtype=F64)
    got = two_level_forward(memory, w_q, torch.tensor([1.0, 2.0, 3.0], dtype=F64))
    torch.testing.assert_close(got, torch.tensor([8.0], dtype=F64), rtol=0, atol=0)


@pytest.mark.equation("nl", 26)
@given(x=tensors(5, 4))
def test_linear_attention_output_is_the_two_level_forward_pass(x):
    # y_t = M_t q_t (Eq. 16) = M_t [W_q x_t]: the token-updated memory applied to the slow projection's output
    w_k, w_v, w_q = _randn(3, 4, seed=1), _randn(2, 4, seed=2), _randn(3, 4, seed=3)
    y, states = linear_attention(x, w_k, w_v, w_q)
    torch.testing.assert_close(two_level_forward(states, w_q, x), y, rtol=0, atol=1e-10)


@pytest.mark.equation("nl", 26)
def test_two_level_forward_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"slow_weight must be \(d_k=2, d_in\)"):
        two_level_forward(_randn(3, 2), _randn(3, 4), _randn(4))
    with pytest.raises(ValueError, match=r"x must be \(d_in=4,\) or \(L, d_in=4\)"):
        two_level_forward(_randn(3, 2), _randn(2, 4), _randn(5))
    with pytest.raises(ValueError, match=r"fast_memory must be \(L=5, d_v, d_k\) or \(d_v, d_k\)"):
        two_level_forward(_randn(4, 3, 2), _randn(2, 4), _randn(5, 4))


# --------------------------------------------------------------------------------------------------
# Eq. 28 — knowledge transfer through the initial state (MAML)
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 28)
@pytest.mark.parametrize(("steps", "expected"), [(0, 0.5), (1, 0.18), (2, 0.0648)])
def test_adapted_memory_loss_by_hand(steps, expected):
    # Φ = 1, k = 2, v = 1, inner lr 0.1, inner loss ½(M k − v)², gradient (M k − v) k:
    # 0 steps: ½(2 − 1)² = 0.5; M_1 = 1 − 0.1·2 = 0.8, ½(0.6)² = 0.18; M_2 = 0.8 − 0.1·1.2 = 0.68, ½(0.36)²
    keys, values = _scalar_context(2.0, 1.0)
    got = adapted_memory_loss(torch.tensor([[1.0]], dtype=F64), keys, values, 0.1, steps)
    assert got.item() == pytest.approx(expected, abs=1e-15)


@pytest.mark.equation("nl", 28)
def test_outer_step_differentiates_through_the_inner_step():
    # one inner step: M' = Φ A + α Vᵀ K with A = I − α KᵀK; ℓ = ½‖K M'ᵀ − V‖²;
    # ∇_Φ ℓ = (M' KᵀK − Vᵀ K) A (second-order MAML: the inner step is differentiated)
    phi, keys, values, alpha = _randn(2, 3, seed=4), _randn(4, 3, seed=5), _randn(4, 2, seed=6), 0.1
    gram = keys.T @ keys
    a = torch.eye(3, dtype=F64) - alpha * gram
    adapted = phi @ a + alpha * values.T @ keys
    expected = phi - 0.5 * (adapted @ gram - values.T @ keys) @ a
    got = sgd_step(lambda p: adapted_memory_loss(p, keys, values, alpha, 1), phi, 0.5)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 28)
def test_meta_learned_initialisation_is_the_sympy_argmin_for_scalar_contexts():
    phi, alpha = sp.Symbol("phi"), sp.Rational(1, 10)
    contexts = [(2, 1), (1, -1), (sp.Rational(1, 2), 3)]
    expectation = sum(
        sp.Rational(1, 2) * ((phi * (1 - alpha * k**2) + alpha * v * k) * k - v) ** 2 for k, v in contexts
    ) / len(contexts)
    (expected,) = sp.solve(sp.diff(expectation, phi), phi)
    got = meta_learned_initialisation(
        torch.zeros(1, 1, dtype=F64), [_scalar_context(float(k), float(v)) for k, v in contexts], 0.1, 1.0
    )
    assert got.item() == pytest.approx(float(expected), abs=1e-11)


@pytest.mark.equation("nl", 28)
def test_meta_learned_initialisation_solves_the_meta_normal_equations():
    # Σ_c [(Φ A_c + α V_cᵀ K_c) G_c − V_cᵀ K_c] A_c = 0, G_c = K_cᵀ K_c, A_c = I − α G_c
    alpha = 0.1
    contexts = [(0.5 * _randn(4, 3, seed=10 + c), _randn(4, 2, seed=20 + c)) for c in range(3)]
    lhs = torch.zeros(3, 3, dtype=F64)
    rhs = torch.zeros(2, 3, dtype=F64)
    for keys, values in contexts:
        gram = keys.T @ keys
        a = torch.eye(3, dtype=F64) - alpha * gram
        lhs += a @ gram @ a
        rhs += (values.T @ keys - alpha * values.T @ keys @ gram) @ a
    expected = torch.linalg.solve(lhs, rhs.T).T  # lhs is symmetric
    got = meta_learned_initialisation(torch.zeros(2, 3, dtype=F64), contexts, alpha, 1.0)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


@pytest.mark.equation("nl", 28)
def test_without_inner_steps_the_initialisation_is_least_squares_on_all_contexts():
    contexts = [(_randn(4, 3, seed=30 + c), _randn(4, 2, seed=40 + c)) for c in range(3)]
    keys, values = torch.cat([k for k, _ in contexts]), torch.cat([v for _, v in contexts])
    expected = torch.linalg.solve(keys.T @ keys, keys.T @ values).T
    got = meta_learned_initialisation(torch.zeros(2, 3, dtype=F64), contexts, 0.1, 0.2, inner_steps=0)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


@pytest.mark.equation("nl", 28)
def test_maml_functions_reject_bad_input():
    phi, keys, values = _randn(2, 3), _randn(4, 3), _randn(4, 2)
    with pytest.raises(ValueError, match="lr must be a finite float >= 0"):
        adapted_memory_loss(phi, keys, values, -0.1)
    with pytest.raises(ValueError, match="inner_steps must be an int >= 0"):
        adapted_memory_loss(phi, keys, values, 0.1, -1)
    with pytest.raises(ValueError, match=r"keys must be \(n, d_k=3\)"):
        adapted_memory_loss(phi, _randn(4, 2), values, 0.1)
    with pytest.raises(ValueError, match="contexts must be a non-empty sequence of"):
        meta_learned_initialisation(phi, [], 0.1, 0.5)
    with pytest.raises(TypeError, match=r"each context must be a \(keys, values\) pair"):
        meta_learned_initialisation(phi, [keys], 0.1, 0.5)


@pytest.mark.equation("nl", 26)
def test_two_level_forward_exact_shape_messages():
    with pytest.raises(ValueError) as caught:
        two_level_forward(_randn(3), _randn(2, 4), _randn(4))
    assert str(caught.value) == "fast_memory must be (d_v, d_k) or (L, d_v, d_k), got (3,)"
    # one token (d_in = 5) read by per-token states: L is 1, not d_in
    with pytest.raises(ValueError) as caught:
        two_level_forward(_randn(4, 3, 2), _randn(2, 5), _randn(5))
    assert str(caught.value) == "fast_memory must be (L=1, d_v, d_k) or (d_v, d_k), got (4, 3, 2)"


@pytest.mark.equation("nl", 28)
def test_adapted_memory_loss_defaults_to_one_inner_step():
    # Φ = 1, k = 2, v = 1, α = 0.1: one step gives M_1 = 0.8, ½(0.8·2 − 1)² = 0.18 (two steps would be 0.0648)
    keys, values = _scalar_context(2.0, 1.0)
    got = adapted_memory_loss(torch.tensor([[1.0]], dtype=F64), keys, values, 0.1)
    assert got.item() == pytest.approx(0.18, abs=1e-15)


@pytest.mark.equation("nl", 28)
def test_meta_learned_initialisation_honours_the_stopping_rule():
    # no inner step, one context k = v = 1 from Φ = 0, outer lr 0.5: mean loss ½(Φ − 1)², gradient Φ − 1;
    # Φ: 0 → 0.5 → 0.75 → 0.875, the steps move 0.5, 0.25, 0.125
    context = [_scalar_context(1.0, 1.0)]
    start = torch.zeros(1, 1, dtype=F64)
    got = meta_learned_initialisation(start, context, 0.1, 0.5, inner_steps=0, tol=0.2)
    assert got.item() == 0.875  # stops on the first move below 0.2 (the third)
    got = meta_learned_initialisation(start, context, 0.1, 0.5, inner_steps=0, max_steps=3, tol=0.2)
    assert got.item() == 0.875
    with pytest.raises(RuntimeError) as caught:
        meta_learned_initialisation(start, context, 0.1, 0.5, inner_steps=0, max_steps=2, tol=0.2)
    assert str(caught.value) == "minimise_expected_loss did not converge in 2 steps (lr 0.5)"


@pytest.mark.equation("nl", 28)
def test_meta_learned_initialisation_default_stopping_rule(monkeypatch):
    # the defaults are documented as the outer descent's own (at most 10 000 steps, tol 1e-13); a run out
    # of steps would take 10 000 outer steps, so the stopping rule handed to the descent is recorded
    import neural_memory.nl.knowledge_transfer as knowledge_transfer
    from neural_memory.nl.training_objective import minimise_expected_loss

    seen = {}

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return minimise_expected_loss(*args, **kwargs)

    monkeypatch.setattr(knowledge_transfer, "minimise_expected_loss", spy)
    got = meta_learned_initialisation(torch.zeros(1, 1, dtype=F64), [_scalar_context(1.0, 1.0)], 0.1, 0.5, 0)
    assert seen == {"max_steps": 10_000, "tol": 1e-13}
    assert got.item() == pytest.approx(1.0, abs=1e-12)  # argmin of ½(Φ − 1)²


@pytest.mark.equation("nl", 28)
def test_meta_learned_initialisation_exact_input_errors():
    phi, keys, values = _randn(2, 3), _randn(4, 3), _randn(4, 2)
    message = "contexts must be a non-empty sequence of (keys, values) pairs"
    with pytest.raises(ValueError) as caught:
        meta_learned_initialisation(phi, [], 0.1, 0.5)
    assert str(caught.value) == message
    with pytest.raises(ValueError) as caught:  # an iterator is not a sequence (and has no len)
        meta_learned_initialisation(phi, iter([(keys, values)]), 0.1, 0.5)
    assert str(caught.value) == message
    with pytest.raises(ValueError) as caught:  # nor is a set, even a non-empty one
        meta_learned_initialisation(phi, {(keys, values)}, 0.1, 0.5)
    assert str(caught.value) == message
    with pytest.raises(TypeError) as caught:
        meta_learned_initialisation(phi, [keys], 0.1, 0.5)
    assert str(caught.value) == "each context must be a (keys, values) pair, got Tensor"
    with pytest.raises(TypeError) as caught:  # a pair must be a tuple, not a list of two
        meta_learned_initialisation(phi, [[keys, values]], 0.1, 0.5)
    assert str(caught.value) == "each context must be a (keys, values) pair, got list"
    with pytest.raises(TypeError) as caught:
        meta_learned_initialisation(phi, [(keys, values, values)], 0.1, 0.5)
    assert str(caught.value) == "each context must be a (keys, values) pair, got tuple"
    with pytest.raises(ValueError) as caught:
        meta_learned_initialisation(phi, [(keys, values)], 0.1, 0.5, inner_steps=-1)
    assert str(caught.value) == "inner_steps must be an int >= 0, got -1"
    with pytest.raises(TypeError) as caught:
        meta_learned_initialisation(phi, [(keys, values)], 0.1, 0.5, inner_steps=1.0)
    assert str(caught.value) == "inner_steps must be an int >= 0, got float"
