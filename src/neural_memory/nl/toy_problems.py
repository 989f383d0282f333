r"""NL §4.3–4.4 toy problems: orthogonal continual-learning tasks (Eq. 45), time-varying curvature (Eq. 53).

Small, closed-form objectives used to compare optimizers' memory of past gradients (the benchmark
``benchmarks/nl_optimizers.py`` runs them). Both are plain functions of tensors in any floating dtype.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from neural_memory.common.validation import check_int
from neural_memory.registry import implements

CURVATURE_TOY_START: tuple[float, float] = (-3.5, 2.0)  # (r₀, θ₀), the start point of the paper's Fig. 4


def _check_real(name: str, value: float, *, nonneg: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if not ok or (nonneg and value < 0):
        raise ValueError(f"{name} must be a finite float{' >= 0' if nonneg else ''}, got {value!r}")
    return float(value)


def _split(point: Tensor) -> tuple[Tensor, Tensor]:
    if point.dim() < 1 or point.shape[-1] != 2:
        raise ValueError(f"point must have a last dimension of 2 (r, theta), got shape {tuple(point.shape)}")
    return point[..., 0], point[..., 1]


@implements("nl", 53)
def curvature_toy(point: Tensor, k: float = 10.0, alpha: float = 0.5, omega: float = 2.0) -> Tensor:
    r"""The toy objective with a curvature that changes along the path (NL v1, Eq. 53, Fig. 4).

    .. math::
        \psi(r, \theta) = r^2 + k\,(r - \theta + \alpha\sin(\omega r))^2 \qquad (53)

    A valley :math:`\theta = r + \alpha\sin(\omega r)` whose direction wiggles with ``r``, leading to the
    unique minimum 0 at the origin. The paper starts at :data:`CURVATURE_TOY_START` ``(−3.5, 2)`` and does
    not state ``k, α, ω`` (its figure is unreadable); the defaults ``k = 10, α = 0.5, ω = 2`` are ours
    (docs/errata.md, NL Eq. 53).

    Args:
        point: ``(..., 2)``, the last dimension ``(r, θ)``.
        k: valley stiffness >= 0. alpha: wiggle amplitude. omega: wiggle frequency.

    Returns:
        ψ, shape ``(...)``.
    """
    k, alpha, omega = (
        _check_real("k", k, nonneg=True),
        _check_real("alpha", alpha),
        _check_real("omega", omega),
    )
    r, theta = _split(point)
    return r**2 + k * (r - theta + alpha * torch.sin(omega * r)) ** 2


def curvature_toy_grad(point: Tensor, k: float = 10.0, alpha: float = 0.5, omega: float = 2.0) -> Tensor:
    r"""The gradient of Eq. 53 in closed form, :math:`(\partial_r\psi, \partial_\theta\psi)`.

    .. math::
        \partial_r\psi = 2r + 2k\,e\,(1 + \alpha\omega\cos(\omega r)), \quad
        \partial_\theta\psi = -2k\,e, \qquad e = r - \theta + \alpha\sin(\omega r)

    Args and shapes as :func:`curvature_toy`; returns ``(..., 2)``.
    """
    k, alpha, omega = (
        _check_real("k", k, nonneg=True),
        _check_real("alpha", alpha),
        _check_real("omega", omega),
    )
    r, theta = _split(point)
    error = r - theta + alpha * torch.sin(omega * r)
    d_r = 2 * r + 2 * k * error * (1 + alpha * omega * torch.cos(omega * r))
    return torch.stack((d_r, -2 * k * error), dim=-1)


@implements("nl", 45)
def continual_task_loss(weight: Tensor, x: Tensor, y: Tensor) -> Tensor:
    r"""One task's regression loss in the continual-learning example (NL v1, Eq. 45).

    .. math::
        \mathcal{L}_i(W) = \mathbb{E}_{(\mathbf{x}, \mathbf{y})\sim\mathcal{D}_i}
            \big[(W^\top\mathbf{x} - \mathbf{y})^2\big] \qquad (45)

    The expectation is the mean over the task's samples of the squared error summed over outputs.

    Args:
        weight: W, ``(d_in, d_out)`` (Eq. 45's row convention, the model is :math:`W^\top x`).
        x: inputs ``(n, d_in)``; y: targets ``(n, d_out)``.

    Returns:
        The scalar loss.
    """
    if weight.dim() != 2:
        raise ValueError(f"weight must be (d_in, d_out), got shape {tuple(weight.shape)}")
    d_in, d_out = weight.shape
    if x.dim() != 2 or x.shape[1] != d_in:
        raise ValueError(f"x must be (n, d_in={d_in}), got shape {tuple(x.shape)}")
    if y.shape != (x.shape[0], d_out):
        raise ValueError(f"y must be (n={x.shape[0]}, d_out={d_out}), got shape {tuple(y.shape)}")
    return ((x @ weight - y) ** 2).sum(-1).mean()


def orthogonal_tasks(
    num_tasks: int,
    dim: int,
    d_out: int = 1,
    samples: int = 8,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> tuple[list[tuple[Tensor, Tensor]], Tensor]:
    r"""Tasks whose gradients lie along mutually orthogonal directions (the data of NL v1, Eq. 45).

    Task ``i`` draws inputs :math:`x = s\,u_i` (a random scalar ``s`` per sample) along its own unit
    direction :math:`u_i` and targets from a random linear teacher, so :math:`\nabla_W\mathcal L_i
    = 2\,\mathbb E[x (W^\top x - y)^\top]` has every column along :math:`u_i`: learning task ``i`` moves W
    only in a direction orthogonal to all other tasks'.

    Args:
        num_tasks: T, 1 <= T <= dim. dim: d_in. d_out: outputs. samples: n per task.
        generator: random source. dtype: floating dtype.

    Returns:
        ``(tasks, directions)``: ``tasks[i] = (x (n, dim), y (n, d_out))`` and ``directions`` ``(T, dim)``
        with orthonormal rows u_i.
    """
    check_int("num_tasks", num_tasks)
    check_int("dim", dim)
    check_int("d_out", d_out)
    check_int("samples", samples)
    if num_tasks > dim:
        raise ValueError(f"num_tasks must be <= dim={dim} (orthogonal directions), got {num_tasks}")
    gaussian = torch.randn(dim, num_tasks, dtype=dtype, generator=generator)
    directions = torch.linalg.qr(gaussian).Q.T  # (T, dim), orthonormal rows
    teacher = torch.randn(dim, d_out, dtype=dtype, generator=generator)
    tasks = []
    for u in directions:
        x = torch.randn(samples, 1, dtype=dtype, generator=generator) * u  # (n, dim), along u
        tasks.append((x, x @ teacher))
    return tasks, directions


__all__ = [
    "CURVATURE_TOY_START",
    "continual_task_loss",
    "curvature_toy",
    "curvature_toy_grad",
    "orthogonal_tasks",
]
