"""NL toy problems: continual learning with orthogonal tasks (Eq. 45) and the time-varying curvature (Eq. 53).

Expectations come from hand computation, autograd of the formula written out here, and an independent
heavy-ball loop.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from neural_memory.nl.optimizers import MomentumGD
from neural_memory.nl.toy_problems import (
    CURVATURE_TOY_START,
    continual_task_loss,
    curvature_toy,
    curvature_toy_grad,
    orthogonal_tasks,
)

from .helpers import F64
from .helpers import randn as _randn

# --------------------------------------------------------------------------------------------------
# Eq. 53 — ψ(r, θ) = r² + k (r − θ + α sin(ω r))²
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 53)
def test_curvature_toy_value_at_the_paper_start_by_hand():
    # r = −3.5, θ = 2, k = 10, α = 0.5, ω = 2: r − θ + α sin(ω r) = −5.5 + 0.5 sin(−7)
    point = torch.tensor(CURVATURE_TOY_START, dtype=F64)
    inner = -5.5 + 0.5 * math.sin(-7.0)
    expected = 12.25 + 10 * inner**2
    got = curvature_toy(point, k=10.0, alpha=0.5, omega=2.0)
    assert abs(got.item() - expected) < 1e-12
    assert CURVATURE_TOY_START == (-3.5, 2.0)


@pytest.mark.equation("nl", 53)
def test_curvature_toy_evaluates_a_batch_of_points_row_by_row():
    points = _randn(4, 2, seed=1)
    got = curvature_toy(points, k=3.0, alpha=0.7, omega=1.5)
    for i in range(4):
        r, theta = points[i].tolist()
        expected = r**2 + 3.0 * (r - theta + 0.7 * math.sin(1.5 * r)) ** 2
        assert abs(got[i].item() - expected) < 1e-12


@pytest.mark.equation("nl", 53)
@given(
    point=arrays(np.float64, (2,), elements=st.floats(-5, 5)).map(torch.from_numpy),
    k=st.floats(0.0, 20.0),
    alpha=st.floats(-2.0, 2.0),
    omega=st.floats(0.0, 5.0),
)
def test_curvature_toy_grad_is_autograd_of_the_printed_formula(point, k, alpha, omega):
    x = point.clone().requires_grad_(True)
    r, theta = x[0], x[1]
    printed = r**2 + k * (r - theta + alpha * torch.sin(omega * r)) ** 2
    printed.backward()
    got = curvature_toy_grad(point, k=k, alpha=alpha, omega=omega)
    torch.testing.assert_close(got, x.grad, rtol=1e-12, atol=1e-10)
    # and the objective itself is the printed formula, so the gradient is that of curvature_toy
    value = curvature_toy(point, k=k, alpha=alpha, omega=omega)
    torch.testing.assert_close(value, printed.detach(), rtol=1e-12, atol=1e-10)


@pytest.mark.equation("nl", 53)
@given(
    point=arrays(np.float64, (2,), elements=st.floats(-5, 5)).map(torch.from_numpy),
    k=st.floats(0.0, 20.0),
    alpha=st.floats(-2.0, 2.0),
)
def test_curvature_toy_is_at_least_r_squared_and_zero_at_the_origin(point, k, alpha):
    assert curvature_toy(point, k=k, alpha=alpha).item() >= point[0].item() ** 2 - 1e-12
    assert curvature_toy(torch.zeros(2, dtype=F64), k=k, alpha=alpha).item() == 0.0


@pytest.mark.equation("nl", 53)
def test_curvature_toy_rejects_bad_input():
    with pytest.raises(ValueError, match=r"point must have a last dimension of 2 \(r, theta\)"):
        curvature_toy(torch.zeros(3))
    with pytest.raises(ValueError, match="k must be a finite float >= 0"):
        curvature_toy(torch.zeros(2), k=-1.0)
    with pytest.raises(ValueError, match="omega must be a finite float"):
        curvature_toy_grad(torch.zeros(2), omega=float("nan"))


# --------------------------------------------------------------------------------------------------
# Eq. 45 — continual learning with orthogonal tasks
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 45)
def test_continual_task_loss_by_hand():
    # W (2, 1): Wᵀx = 2·1 + (−1)·3 = −1 and 2·0 + (−1)·1 = −1; targets 1 and −3 → errors −2, 2 → mean 4
    w = torch.tensor([[2.0], [-1.0]], dtype=F64)
    x = torch.tensor([[1.0, 3.0], [0.0, 1.0]], dtype=F64)
    y = torch.tensor([[1.0], [-3.0]], dtype=F64)
    assert continual_task_loss(w, x, y).item() == 4.0


@pytest.mark.equation("nl", 45)
def test_orthogonal_tasks_have_gradients_along_their_own_orthonormal_directions():
    tasks, directions = orthogonal_tasks(
        3, dim=5, d_out=2, samples=6, generator=torch.Generator().manual_seed(2)
    )
    torch.testing.assert_close(directions @ directions.T, torch.eye(3, dtype=F64), rtol=0, atol=1e-12)
    w = _randn(5, 2, seed=3)
    for i, (x, y) in enumerate(tasks):
        assert x.shape == (6, 5) and y.shape == (6, 2)
        wv = w.clone().requires_grad_(True)
        continual_task_loss(wv, x, y).backward()
        # every column of the gradient lies along u_i: removing that component leaves nothing
        residual = wv.grad - torch.outer(directions[i], directions[i] @ wv.grad)
        assert residual.abs().max().item() < 1e-12
        assert wv.grad.abs().max().item() > 1e-3


@pytest.mark.equation("nl", 45)
def test_heavy_ball_forgets_the_previous_task_direction_as_alpha_to_the_n():
    # after the switch every new gradient is ⟂ u_0: the momentum's u_0-component is multiplied by α per step
    tasks, directions = orthogonal_tasks(
        2, dim=4, d_out=1, samples=5, generator=torch.Generator().manual_seed(4)
    )
    w = torch.nn.Parameter(_randn(4, 1, seed=5))
    alpha = 0.9
    opt = MomentumGD([w], lr=0.05, alpha=alpha)

    def train(task, steps):
        for _ in range(steps):
            opt.zero_grad()
            continual_task_loss(w, *task).backward()
            opt.step()

    train(tasks[0], 10)
    before = directions[0] @ opt.state[w]["momentum"]
    train(tasks[1], 7)
    after = directions[0] @ opt.state[w]["momentum"]
    assert before.abs().item() > 1e-3
    torch.testing.assert_close(after, alpha**7 * before, rtol=0, atol=1e-13)


@pytest.mark.equation("nl", 45)
def test_orthogonal_tasks_rejects_bad_input():
    with pytest.raises(ValueError, match=r"num_tasks must be <= dim"):
        orthogonal_tasks(4, dim=3)
    with pytest.raises(ValueError, match=r"num_tasks must be an int >= 1"):
        orthogonal_tasks(0, dim=3)
    with pytest.raises(ValueError, match=r"x must be \(n, d_in=2\)"):
        continual_task_loss(torch.zeros(2, 1), torch.zeros(3, 3), torch.zeros(3, 1))


# --------------------------------------------------------------------------------------------------
# Defaults, exact messages, batch layout and the random draws
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 53)
def test_curvature_toy_and_its_grad_use_the_documented_defaults():
    # k = 10, α = 0.5, ω = 2 at (r, θ) = (−3.5, 2): e = −5.5 + 0.5 sin(−7)
    # ψ = 12.25 + 10 e², ∂_r ψ = −7 + 20 e (1 + 0.5·2 cos(−7)), ∂_θ ψ = −20 e
    point = torch.tensor(CURVATURE_TOY_START, dtype=F64)
    e = -5.5 + 0.5 * math.sin(-7.0)
    assert abs(curvature_toy(point).item() - (12.25 + 10 * e**2)) < 1e-12
    grad = curvature_toy_grad(point)
    assert abs(grad[0].item() - (-7.0 + 20 * e * (1 + math.cos(-7.0)))) < 1e-12
    assert abs(grad[1].item() - (-20 * e)) < 1e-12


def test_curvature_toy_grad_of_a_batch_has_the_pair_in_the_last_dimension():
    points = _randn(4, 2, seed=6)
    grad = curvature_toy_grad(points, k=2.0, alpha=0.3, omega=1.2)
    assert grad.shape == (4, 2)
    for i in range(4):
        r, theta = points[i].tolist()
        e = r - theta + 0.3 * math.sin(1.2 * r)
        assert abs(grad[i, 0].item() - (2 * r + 4 * e * (1 + 0.36 * math.cos(1.2 * r)))) < 1e-12
        assert abs(grad[i, 1].item() - (-4 * e)) < 1e-12


@pytest.mark.parametrize(
    "fn_name",
    # only curvature_toy claims Eq. 53: its gradient's helper runs none of that code
    [pytest.param("curvature_toy", marks=pytest.mark.equation("nl", 53)), "curvature_toy_grad"],
)
def test_curvature_toy_exact_messages(fn_name):
    fn = {"curvature_toy": curvature_toy, "curvature_toy_grad": curvature_toy_grad}[fn_name]
    point = torch.zeros(2, dtype=F64)
    with pytest.raises(ValueError) as caught:
        fn(point, k=-1.0)
    assert str(caught.value) == "k must be a finite float >= 0, got -1.0"
    with pytest.raises(ValueError) as caught:
        fn(point, alpha=float("nan"))
    assert str(caught.value) == "alpha must be a finite float, got nan"
    with pytest.raises(ValueError) as caught:
        fn(point, omega=float("inf"))
    assert str(caught.value) == "omega must be a finite float, got inf"


@pytest.mark.equation("nl", 45)
def test_continual_task_loss_exact_messages():
    with pytest.raises(ValueError) as caught:
        continual_task_loss(torch.zeros(2), torch.zeros(3, 2), torch.zeros(3, 1))
    assert str(caught.value) == "weight must be (d_in, d_out), got shape (2,)"
    # n = 3 differs from d_in = 2, so the message must name x's row count
    with pytest.raises(ValueError) as caught:
        continual_task_loss(torch.zeros(2, 1), torch.zeros(3, 2), torch.zeros(3, 2))
    assert str(caught.value) == "y must be (n=3, d_out=1), got shape (3, 2)"


def test_orthogonal_tasks_exact_messages_and_num_tasks_equal_to_dim():
    for kwargs, name in (
        ({"dim": 0}, "dim"),
        ({"dim": 3, "d_out": 0}, "d_out"),
        ({"dim": 3, "samples": 0}, "samples"),
    ):
        with pytest.raises(ValueError) as caught:
            orthogonal_tasks(1, **kwargs)
        assert str(caught.value) == f"{name} must be an int >= 1, got 0"
    # T = dim is allowed: a full orthonormal basis
    tasks, directions = orthogonal_tasks(3, dim=3, generator=torch.Generator().manual_seed(7))
    assert len(tasks) == 3
    torch.testing.assert_close(directions @ directions.T, torch.eye(3, dtype=F64), rtol=0, atol=1e-12)


def test_orthogonal_tasks_draws_from_the_generator_in_order_with_default_sizes():
    # defaults d_out = 1, samples = 8, dtype float64; draws: gaussian (dim, T), teacher (dim, d_out),
    # then one (samples, 1) scale column per task — all float64 from the given generator
    torch.manual_seed(123)  # the global RNG must not be used: a different seed from the generator's
    dim, num_tasks = 4, 2
    tasks, directions = orthogonal_tasks(num_tasks, dim, generator=torch.Generator().manual_seed(8))
    gen = torch.Generator().manual_seed(8)
    gaussian = torch.randn(dim, num_tasks, dtype=F64, generator=gen)
    # Gram–Schmidt of the gaussian columns: the QR directions up to the sign of each row
    basis = []
    for j in range(num_tasks):
        v = gaussian[:, j].clone()
        for b in basis:
            v = v - (b @ v) * b
        basis.append(v / v.norm())
    for i in range(num_tasks):
        sign = torch.sign(directions[i] @ basis[i])
        torch.testing.assert_close(directions[i], sign * basis[i], rtol=0, atol=1e-12)
    teacher = torch.randn(dim, 1, dtype=F64, generator=gen)
    for i, (x, y) in enumerate(tasks):
        assert x.dtype == F64 and y.dtype == F64
        assert x.shape == (8, dim) and y.shape == (8, 1)
        scale = torch.randn(8, 1, dtype=F64, generator=gen)
        torch.testing.assert_close(x, scale * directions[i], rtol=0, atol=1e-15)
        torch.testing.assert_close(y, x @ teacher, rtol=0, atol=1e-14)
