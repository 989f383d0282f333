"""DeltaNet (Titans Eq. 34) and Longhorn (Titans Eq. 35), the online-regression baselines of Appendix C.

Column-vector convention: S is (d_v, d_k), the memory reads S k. Expectations are hand numbers, the
printed matrix forms written out here, autograd on the ½-loss, or a linear solve of Longhorn's implicit
equation.
"""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from neural_memory.common.delta_rule import delta_rule_step, longhorn_delta, longhorn_step

F64 = torch.float64


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------------
# Eq. 34 — DeltaNet: S_{t+1} = S_t (I - θ k kᵀ) + θ v kᵀ
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("titans", 34)
def test_delta_rule_scalar_by_hand():
    # S = 2, k = 1, v = 5, θ = 0.5: S' = 2 (1 - 0.5) + 0.5 * 5 = 3.5
    s = torch.tensor([[2.0]], dtype=F64)
    got = delta_rule_step(s, torch.tensor([1.0], dtype=F64), torch.tensor([5.0], dtype=F64), 0.5)
    assert torch.equal(got, torch.tensor([[3.5]], dtype=F64))


@pytest.mark.equation("titans", 34)
@given(seed=st.integers(0, 10_000), theta=st.floats(0.0, 3.0), d_v=st.integers(1, 4), d_k=st.integers(1, 4))
def test_delta_rule_equals_the_printed_matrix_form(seed, theta, d_v, d_k):
    s, k, v = _randn(d_v, d_k, seed=seed), _randn(d_k, seed=seed + 1), _randn(d_v, seed=seed + 2)
    printed = s @ (torch.eye(d_k, dtype=F64) - theta * torch.outer(k, k)) + theta * torch.outer(v, k)
    torch.testing.assert_close(delta_rule_step(s, k, v, theta), printed, rtol=0, atol=1e-12)


@pytest.mark.equation("titans", 34)
def test_delta_rule_is_a_gradient_step_on_the_half_loss():
    s, k, v = _randn(3, 4, seed=1), _randn(4, seed=2), _randn(3, seed=3)
    theta = 0.7
    w = s.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(0.5 * ((w @ k - v) ** 2).sum(), w)
    torch.testing.assert_close(delta_rule_step(s, k, v, theta), s - theta * grad, rtol=0, atol=1e-12)


@pytest.mark.equation("titans", 34)
def test_delta_rule_unit_key_and_unit_step_overwrites_the_value():
    s, v = _randn(3, 4, seed=1), _randn(3, seed=2)
    k = _randn(4, seed=3)
    k = k / k.norm()
    new = delta_rule_step(s, k, v, 1.0)
    torch.testing.assert_close(new @ k, v, rtol=0, atol=1e-12)


@pytest.mark.equation("titans", 34)
def test_delta_rule_batched_with_per_example_theta():
    s, k, v = _randn(2, 3, 3, 2, seed=1), _randn(2, 3, 2, seed=2), _randn(2, 3, 3, seed=3)
    theta = torch.tensor([[0.1, 0.5, 1.0], [0.0, 2.0, 0.3]], dtype=F64)
    got = delta_rule_step(s, k, v, theta)
    for b in range(2):
        for h in range(3):
            expected = delta_rule_step(s[b, h], k[b, h], v[b, h], float(theta[b, h]))
            torch.testing.assert_close(got[b, h], expected, rtol=0, atol=1e-12)
    assert torch.equal(got[1, 0], s[1, 0])  # θ = 0 leaves the memory alone


def test_delta_rule_rejects_bad_arguments():
    s, k, v = _randn(3, 2), _randn(2), _randn(3)
    with pytest.raises(ValueError, match="theta must be finite and >= 0"):
        delta_rule_step(s, k, v, -0.1)
    with pytest.raises(ValueError, match="theta must be finite and >= 0"):
        delta_rule_step(s, k, v, float("nan"))
    with pytest.raises(ValueError, match="theta must be finite and >= 0"):
        delta_rule_step(s, k, v, torch.tensor(float("inf"), dtype=F64))
    with pytest.raises(ValueError, match=r"k must have shape \(\.\.\., d_k=2\)"):
        delta_rule_step(s, _randn(3), v, 0.5)
    with pytest.raises(ValueError, match=r"v must have shape \(\.\.\., d_v=3\)"):
        delta_rule_step(s, k, _randn(2), 0.5)
    with pytest.raises(ValueError, match=r"S must be \(\.\.\., d_v, d_k\)"):
        delta_rule_step(_randn(3), k, v, 0.5)
    with pytest.raises(ValueError, match="theta of shape"):
        delta_rule_step(s, k, v, torch.ones(4, dtype=F64))
    with pytest.raises(TypeError, match="theta must be a float or a tensor"):
        delta_rule_step(s, k, v, "0.5")  # type: ignore[arg-type]


def _message(excinfo: pytest.ExceptionInfo) -> str:
    return str(excinfo.value)


@pytest.mark.parametrize(
    ("s", "k", "v", "expected"),
    [
        (_randn(3), _randn(2), _randn(3), "S must be (..., d_v, d_k), got torch.Size([3])"),
        ([[1.0, 2.0]], _randn(2), _randn(1), "S must be (..., d_v, d_k), got list"),
        (_randn(3, 2), _randn(3), _randn(3), "k must have shape (..., d_k=2), got torch.Size([3])"),
        (_randn(3, 2), torch.tensor(1.0), _randn(3), "k must have shape (..., d_k=2), got torch.Size([])"),
        (_randn(3, 2), [1.0, 2.0], _randn(3), "k must have shape (..., d_k=2), got list"),
        (_randn(3, 2), _randn(2), _randn(2), "v must have shape (..., d_v=3), got torch.Size([2])"),
        (_randn(3, 2), _randn(2), torch.tensor(1.0), "v must have shape (..., d_v=3), got torch.Size([])"),
        (_randn(3, 2), _randn(2), (1.0, 2.0, 3.0), "v must have shape (..., d_v=3), got tuple"),
    ],
    ids=["S-1d", "S-list", "k-wrong-dk", "k-0d", "k-list", "v-wrong-dv", "v-0d", "v-tuple"],
)
@pytest.mark.parametrize("step", [delta_rule_step, longhorn_step], ids=["deltanet", "longhorn"])
def test_bad_memory_key_or_value_gets_the_exact_message(step, s, k, v, expected):
    # The message names the argument, the expected shape (with d_k, d_v read off S) and what was passed:
    # the shape of a tensor, the type name of anything else.
    with pytest.raises(ValueError) as excinfo:
        step(s, k, v, 0.5)  # type: ignore[arg-type]
    assert _message(excinfo) == expected


def test_theta_of_the_wrong_type_names_the_batch_shape_and_the_type():
    s, k, v = _randn(2, 3, 2), _randn(2, 2), _randn(2, 3)
    with pytest.raises(TypeError) as excinfo:
        delta_rule_step(s, k, v, "0.5")  # type: ignore[arg-type]
    assert _message(excinfo) == "theta must be a float or a tensor of shape (2,), got str"
    with pytest.raises(TypeError) as excinfo:
        longhorn_delta(k, True)  # type: ignore[arg-type]
    assert _message(excinfo) == "theta must be a float or a tensor of shape (2,), got bool"


def test_theta_that_does_not_broadcast_to_the_batch_names_both_shapes():
    s, k, v = _randn(3, 2, 2), _randn(3, 2), _randn(3, 2)
    for theta in (torch.ones(4, dtype=F64), torch.ones(3, 1, dtype=F64)):
        # (4,) vs (3,) cannot broadcast at all; (3, 1) broadcasts with (3,) but to (3, 3), not the batch
        with pytest.raises(ValueError) as excinfo:
            delta_rule_step(s, k, v, theta)
        assert _message(excinfo) == f"theta of shape {tuple(theta.shape)} does not broadcast to (3,)"


def test_theta_is_checked_where_it_is_and_moves_to_the_states_device():
    """θ given as a float or a CPU tensor for a state elsewhere (``meta`` standing in for CUDA): the
    check reads it on the CPU, the step runs on the state's device."""
    s, k, v = (torch.zeros(*shape, device="meta") for shape in ((2, 3, 2), (2, 2), (2, 3)))
    for theta in (0.5, torch.tensor([0.5, 0.25])):
        assert delta_rule_step(s, k, v, theta).device.type == "meta"
        assert longhorn_delta(k, theta).device.type == "meta"


@pytest.mark.equation("titans", 34)
def test_delta_rule_scalar_theta_is_shared_by_a_batch_by_hand():
    # two 1 x 1 memories, θ = 0.5 for both:
    #   S = 2, k = 1, v = 5: S k - v = -3, S' = 2 - 0.5 * (-3) * 1 = 3.5
    #   S = 1, k = 2, v = 1: S k - v =  1, S' = 1 - 0.5 *   1  * 2 = 0
    s = torch.tensor([[[2.0]], [[1.0]]], dtype=F64)
    k = torch.tensor([[1.0], [2.0]], dtype=F64)
    v = torch.tensor([[5.0], [1.0]], dtype=F64)
    expected = torch.tensor([[[3.5]], [[0.0]]], dtype=F64)
    assert torch.equal(delta_rule_step(s, k, v, 0.5), expected)
    # a per-head θ of shape (2,) broadcasts over a leading batch axis of 1
    theta = torch.full((2,), 0.5, dtype=F64)
    assert torch.equal(delta_rule_step(s[None], k[None], v[None], theta), expected[None])


# --------------------------------------------------------------------------------------------------
# Eq. 35 — Longhorn: S_{t+1} = S_t (I - δ k kᵀ) + δ v kᵀ, δ = θ / (1 + θ kᵀk)
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("titans", 35)
def test_longhorn_delta_by_hand():
    k = torch.tensor([1.0, 1.0], dtype=F64)  # kᵀk = 2, θ = 1: δ = 1 / 3
    torch.testing.assert_close(longhorn_delta(k, 1.0), torch.tensor(1.0 / 3.0, dtype=F64), rtol=0, atol=1e-15)


@pytest.mark.equation("titans", 35)
@given(seed=st.integers(0, 10_000), theta=st.floats(0.0, 50.0), d_v=st.integers(1, 4), d_k=st.integers(1, 4))
def test_longhorn_solves_its_implicit_equation(seed, theta, d_v, d_k):
    s, k, v = _randn(d_v, d_k, seed=seed), _randn(d_k, seed=seed + 1), _randn(d_v, seed=seed + 2)
    new = longhorn_step(s, k, v, theta)
    residual = new - (s - theta * torch.outer(new @ k - v, k))  # S' = S - θ (S'k - v) kᵀ
    assert residual.abs().max() < 1e-11 * (1 + theta)
    # same S' from solving S' (I + θ k kᵀ) = S + θ v kᵀ directly
    lhs = torch.eye(d_k, dtype=F64) + theta * torch.outer(k, k)
    rhs = s + theta * torch.outer(v, k)
    solved = torch.linalg.solve(lhs, rhs.T).T  # lhs is symmetric
    torch.testing.assert_close(new, solved, rtol=0, atol=1e-11)


@pytest.mark.equation("titans", 35)
@given(seed=st.integers(0, 10_000), theta=st.floats(1e-3, 1e3))
def test_longhorn_step_is_smaller_than_theta(seed, theta):
    k = _randn(3, seed=seed)
    assert 0 < longhorn_delta(k, theta) < theta


@pytest.mark.equation("titans", 35)
def test_longhorn_large_theta_tends_to_exact_overwrite():
    s, k, v = _randn(3, 4, seed=1), _randn(4, seed=2), _randn(3, seed=3)
    theta = 1e12
    delta = longhorn_delta(k, theta)
    torch.testing.assert_close(delta, 1 / (k @ k), rtol=1e-10, atol=0)  # δ -> 1/‖k‖²
    torch.testing.assert_close(longhorn_step(s, k, v, theta) @ k, v, rtol=0, atol=1e-9)


@pytest.mark.equation("titans", 35)
def test_longhorn_batched_delta_per_example():
    k = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=F64)
    theta = torch.tensor([2.0, 1.0], dtype=F64)
    expected = torch.tensor([2.0 / 3.0, 1.0 / 3.0], dtype=F64)  # 2/(1+2), 1/(1+2)
    torch.testing.assert_close(longhorn_delta(k, theta), expected, rtol=0, atol=1e-15)


def test_longhorn_rejects_bad_arguments():
    s, k, v = _randn(3, 2), _randn(2), _randn(3)
    with pytest.raises(ValueError, match="theta must be finite and >= 0"):
        longhorn_step(s, k, v, -1.0)
    with pytest.raises(ValueError, match="theta must be finite and >= 0"):
        longhorn_delta(k, float("inf"))
    with pytest.raises(ValueError, match=r"k must have shape \(\.\.\., d_k=2\)"):
        longhorn_step(s, _randn(4), v, 1.0)


def test_longhorn_delta_refuses_a_key_that_is_not_a_vector_and_says_what_it_got():
    with pytest.raises(ValueError) as excinfo:
        longhorn_delta(torch.tensor(2.0, dtype=F64), 0.5)
    assert _message(excinfo) == "k must have shape (..., d_k), got torch.Size([])"
    with pytest.raises(ValueError) as excinfo:
        longhorn_delta([1.0, 2.0], 0.5)  # type: ignore[arg-type]
    assert _message(excinfo) == "k must have shape (..., d_k), got list"


def test_longhorn_delta_keeps_every_batch_axis():
    """k of shape (2, 3, d): one step per (2, 3) position, theta broadcast over both batch axes."""
    k = torch.arange(12.0, dtype=F64).reshape(2, 3, 2)
    theta = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], dtype=F64)
    expected = theta / (1 + theta * (k * k).sum(-1))
    torch.testing.assert_close(longhorn_delta(k, theta), expected, rtol=0, atol=1e-15)
