"""NL §2 and §3.2: the training and meta-learning objectives and their minimiser (Eq. 4, 7, 22) —
``neural_memory.nl.training_objective``.

Expectations come from the normal equations, the least-squares associative memory, task optima averaged
by hand, or numbers worked by hand (in the comments). float64 throughout.
"""

import math

import pytest
import torch

from neural_memory.nl.associative_memory import L2RegressionObjective, associative_memory
from neural_memory.nl.training_objective import expected_loss, minimise_expected_loss

from .helpers import F64
from .helpers import randn as _randn

# --------------------------------------------------------------------------------------------------
# Eq. 22, 7, 4 — the training objective and its minimiser
# --------------------------------------------------------------------------------------------------


def _squared_error(phi: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * (phi @ x - y) ** 2


@pytest.mark.equation("nl", 22)
def test_expected_loss_by_hand():
    # φ = (1, 2); samples (x, y): ((1, 0), 0) -> ½·1 = 0.5; ((0, 1), 1) -> ½·1 = 0.5; ((1, 1), 0) -> ½·9 = 4.5
    samples = [
        (torch.tensor([1.0, 0.0], dtype=F64), torch.tensor(0.0, dtype=F64)),
        (torch.tensor([0.0, 1.0], dtype=F64), torch.tensor(1.0, dtype=F64)),
        (torch.tensor([1.0, 1.0], dtype=F64), torch.tensor(0.0, dtype=F64)),
    ]
    got = expected_loss(_squared_error, torch.tensor([1.0, 2.0], dtype=F64), samples)
    assert got.item() == pytest.approx(5.5 / 3, abs=1e-15)


@pytest.mark.equation("nl", 22)
def test_minimiser_of_the_expected_squared_error_solves_the_normal_equations():
    xs, ys = _randn(6, 3, seed=13), _randn(6, seed=14)
    expected = torch.linalg.solve(xs.T @ xs, xs.T @ ys)
    samples = list(zip(xs, ys, strict=True))
    got = minimise_expected_loss(_squared_error, torch.zeros(3, dtype=F64), samples, 0.5)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


@pytest.mark.equation("nl", 7)
def test_training_a_one_layer_mlp_gives_the_least_squares_associative_memory():
    # W* = argmin_W L(W; D_train) for a linear layer under the squared error is the Eq. 6 memory of the
    # (input, target) pairs: least squares, W* Xᵀ X = Yᵀ X
    xs, ys = _randn(8, 3, seed=15), _randn(8, 2, seed=16)
    loss = lambda w, x, y: 0.5 * ((w @ x - y) ** 2).sum()  # noqa: E731
    got = minimise_expected_loss(loss, torch.zeros(2, 3, dtype=F64), list(zip(xs, ys, strict=True)), 0.5)
    expected = torch.linalg.solve(xs.T @ xs, xs.T @ ys).T
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(got, associative_memory(L2RegressionObjective(), xs, ys), rtol=0, atol=1e-10)


@pytest.mark.equation("nl", 4)
def test_meta_objective_minimiser_is_the_mean_of_the_task_optima():
    # tasks T_i with ℓ(θ, T_i; Φ) = (θ_i(Φ) − c_i)², θ_i(Φ) = Φ after one inner step of lr 1/4 on
    # (θ − c_i)²: θ_i = Φ − ½(Φ − c_i) = (Φ + c_i)/2, ℓ = (Φ − c_i)²/4, so Φ* = mean(c_i) = 1.25
    centres = [(torch.tensor(c, dtype=F64),) for c in (-1.0, 0.5, 2.0, 3.5)]

    def task_loss(phi, c):
        theta = phi - 0.25 * 2 * (phi - c)  # the inner parameters θ adapted to the task
        return (theta - c) ** 2

    assert expected_loss(task_loss, torch.tensor(0.0, dtype=F64), centres).item() == pytest.approx(
        (1 + 0.25 + 4 + 12.25) / 16, abs=1e-15
    )
    got = minimise_expected_loss(task_loss, torch.tensor(0.0, dtype=F64), centres, 1.0)
    assert got.item() == pytest.approx(1.25, abs=1e-12)


@pytest.mark.equation("nl", 22)
def test_expected_loss_rejects_bad_input():
    phi = torch.zeros(2, dtype=F64)
    with pytest.raises(ValueError, match="samples must be a non-empty sequence"):
        expected_loss(_squared_error, phi, [])
    with pytest.raises(ValueError, match="loss_fn must return a scalar"):
        expected_loss(lambda p, x: p * x, phi, [(torch.ones(2, dtype=F64),)])
    with pytest.raises(TypeError, match="each sample must be a tuple"):
        expected_loss(_squared_error, phi, [torch.ones(2, dtype=F64)])


@pytest.mark.equation("nl", 22)
def test_minimiser_reports_when_it_does_not_converge():
    xs, ys = _randn(6, 3, seed=13), _randn(6, seed=14)
    samples = list(zip(xs, ys, strict=True))
    with pytest.raises(RuntimeError, match="did not converge in 3 steps"):
        minimise_expected_loss(_squared_error, torch.zeros(3, dtype=F64), samples, 0.5, max_steps=3)
    with pytest.raises(ValueError, match="tol must be in"):
        minimise_expected_loss(_squared_error, torch.zeros(3, dtype=F64), samples, 0.5, tol=0.0)
    with pytest.raises(TypeError, match="max_steps must be an int"):
        minimise_expected_loss(_squared_error, torch.zeros(3, dtype=F64), samples, 0.5, max_steps=2.5)


@pytest.mark.equation("nl", 22)
def test_expected_loss_messages_are_exact_and_a_non_sequence_is_refused_as_such():
    phi = torch.zeros(2, dtype=F64)
    refused = "samples must be a non-empty sequence of tuples"
    for samples in ([], torch.ones(2, 1, dtype=F64), iter([(torch.ones(2, dtype=F64),)])):
        with pytest.raises(ValueError) as caught:  # an iterator has no len(): refused before it is asked
            expected_loss(_squared_error, phi, samples)
        assert str(caught.value) == refused
    with pytest.raises(ValueError) as caught:
        expected_loss(lambda p, x: p * x, phi, [(torch.ones(2, dtype=F64),)])
    assert str(caught.value) == "loss_fn must return a scalar tensor"
    with pytest.raises(TypeError) as caught:
        expected_loss(_squared_error, phi, [[torch.ones(2, dtype=F64)]])
    assert str(caught.value) == "each sample must be a tuple of loss_fn arguments, got list"


@pytest.mark.equation("nl", 22)
def test_minimiser_stops_only_on_a_step_strictly_below_tol_and_runs_10000_steps_by_default():
    # the loss p * 1 has the constant gradient 1: every step moves by exactly lr = 2^-4, never less
    calls = []

    def linear(p):
        calls.append(1)
        return p.sum()

    lr = 2.0**-4
    with pytest.raises(RuntimeError, match="did not converge in 3 steps"):
        minimise_expected_loss(linear, torch.zeros(1, dtype=F64), [()], lr, max_steps=3, tol=lr)
    assert (
        minimise_expected_loss(linear, torch.zeros(1, dtype=F64), [()], lr, max_steps=3, tol=2 * lr).item()
        == -lr
    )
    calls.clear()
    with pytest.raises(RuntimeError, match="did not converge in 10000 steps"):
        minimise_expected_loss(linear, torch.zeros(1, dtype=F64), [()], lr)
    assert len(calls) == 10_000  # one loss per step, one sample


@pytest.mark.equation("nl", 22)
@pytest.mark.parametrize("tol", [True, math.inf, -1.0, "1e-3"])
def test_minimiser_refuses_a_tol_outside_zero_to_inf(tol):
    with pytest.raises(ValueError) as caught:
        minimise_expected_loss(
            _squared_error, torch.zeros(1, dtype=F64), [(torch.ones(1, dtype=F64), 1.0)], 0.1, tol=tol
        )
    assert str(caught.value) == f"tol must be in (0, inf), got {tol!r}"
