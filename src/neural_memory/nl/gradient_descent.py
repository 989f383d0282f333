r"""Gradient descent as the learning rule Nested Learning starts from (NL v1, §2 and §3.1: Eq. 1–3, 8, 23).

The SGD step (Eq. 1, and Eq. 23 on a generic parameter set), the same step read as the minimiser of the
linearised loss plus a proximal term (Eq. 2), its follow-the-regularised-leader form (Eq. 3), and GD on
a linear layer written with the surprise in the output space (Eq. 8) — the starting point of the reading
"a linear layer trained by GD is an associative memory of its inputs and output gradients" (Eq. 9,
:class:`neural_memory.nl.associative_memory.DotProductObjective`).

Shapes follow the NL catalog's column convention: a weight is ``(d_out, d_in)`` and maps ``x`` to
``y = W x``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from neural_memory.nl.associative_memory import DotProductObjective, gd_step
from neural_memory.registry import implements


def _check_positive_lr(lr: float) -> float:
    """Eq. 1–3 divide by η (the proximal term ``1/(2η)``): η must be a finite number > 0."""
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not (0 < lr < math.inf):
        raise ValueError(f"lr must be a finite float > 0, got {lr!r}")
    return float(lr)


def _as_tensors(params: Tensor | Sequence[Tensor]) -> tuple[Tensor, ...]:
    tensors = (params,) if isinstance(params, Tensor) else tuple(params)
    if not tensors or not all(isinstance(p, Tensor) and p.is_floating_point() for p in tensors):
        raise TypeError("params must be a tensor or a sequence of tensors (floating point)")
    return tensors


@implements("nl", 1, 2, 23)
def sgd_step(
    loss_fn: Callable[..., Tensor], params: Tensor | Sequence[Tensor], lr: float
) -> Tensor | tuple[Tensor, ...]:
    r"""One (stochastic) gradient-descent step on a loss (NL v1, Eq. 1, 2 and 23).

    .. math::
        W_{t+1} = W_t - \eta_t \nabla_{W_t}\mathcal{L}(W_t; \mathbf{x}_t) \qquad (1)

        W_{t+1} = \arg\min_{W}\Big\{\langle \nabla_{W}\mathcal{L}(W_t; \mathbf{x}_t), W\rangle
            + \frac{1}{2\eta_t}\|W - W_t\|_2^2\Big\} \qquad (2)

        \Phi_{t+1} = \Phi_t - \eta_{t+1}\nabla_{\Phi_t}\mathcal{L}(\Phi_t; \mathbf{x}_{t+1},
            \mathbf{y}_{t+1}) \qquad (23)

    Move every parameter against its gradient. Eq. 2 is the same point: the linearised loss plus the
    proximal term is a strictly convex quadratic whose stationarity condition
    :math:`\nabla\mathcal L + (W - W_t)/\eta = 0` is Eq. 1. The sample :math:`\mathbf x_t` (or the pair
    :math:`(\mathbf x, \mathbf y)` of Eq. 23) is whatever ``loss_fn`` closes over.

    Args:
        loss_fn: ``loss_fn(*params) -> scalar tensor``, the loss on the current sample.
        params: ``W_t`` (a tensor of any shape) or the parameter set ``Φ_t`` (a sequence of tensors).
        lr: the step ``η > 0``.

    Returns:
        ``W_{t+1}`` shaped like ``params`` (a tuple for a sequence), detached from the graph.
    """
    lr = _check_positive_lr(lr)
    leaves = tuple(p.detach().clone().requires_grad_(True) for p in _as_tensors(params))
    with torch.enable_grad():
        loss = loss_fn(*leaves)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError("loss_fn must return a scalar tensor")
        grads = torch.autograd.grad(loss.reshape(()), leaves, allow_unused=True)
    stepped = tuple(
        p.detach() - lr * g if g is not None else p.detach() for p, g in zip(leaves, grads, strict=True)
    )
    return stepped[0] if isinstance(params, Tensor) else stepped


@implements("nl", 3)
def ftrl_iterate(initial: Tensor, gradients: Tensor, lr: float) -> Tensor:
    r"""The follow-the-regularised-leader iterate (NL v1, Eq. 3; its solution N-U2).

    .. math::
        W_{t+1} = \arg\min_{W}\Big\{\Big\langle \sum_{s=1}^{t}\nabla\mathcal{L}(W_s; \mathbf{x}_s),
            W\Big\rangle + \frac{1}{2\eta}\|W - W_1\|_2^2\Big\}
            = W_1 - \eta\sum_{s=1}^{t}\nabla\mathcal{L}(W_s; \mathbf{x}_s) \qquad (3)

    Against the sum of all past linearised losses, anchored at the start: the closed-form minimiser.
    With the gradients taken at the GD iterates and a constant step, it is the GD iterate after ``t``
    steps.

    Args:
        initial: ``W_1``, any shape ``S``.
        gradients: the past gradients ``∇L(W_s; x_s)``, ``(t, *S)``.
        lr: the constant step ``η > 0``.

    Returns:
        ``W_{t+1}``, shape ``S``.
    """
    lr = _check_positive_lr(lr)
    if gradients.dim() != initial.dim() + 1 or gradients.shape[1:] != initial.shape:
        shape = ", ".join(str(n) for n in initial.shape)
        raise ValueError(f"gradients must be (t, {shape}), got shape {tuple(gradients.shape)}")
    return initial - lr * gradients.sum(0)


@implements("nl", 8)
def output_surprise_step(weight: Tensor, x: Tensor, surprise: Tensor, lr: float) -> Tensor:
    r"""GD on a linear layer written with the surprise in its output (NL v1, Eq. 8).

    .. math::
        W_{t+1} = W_t - \eta_{t+1}\nabla_W\mathcal{L}(W_t; \mathbf{x}_{t+1})
            = W_t - \eta_{t+1}\nabla_{y_{t+1}}\mathcal{L}(W_t; \mathbf{x}_{t+1})\otimes\mathbf{x}_{t+1}
            \qquad (8)

    For :math:`y = W x` the chain rule gives :math:`\nabla_W\mathcal L = (\nabla_y\mathcal L)\,x^\top`
    for any loss of ``y``, so the weight gradient needs only the local surprise signal
    :math:`\nabla_y\mathcal L` (LSS) and the input. Computed as one step of the dot-product memory
    (:class:`~neural_memory.nl.associative_memory.DotProductObjective`) with key ``x`` and value the
    surprise, Eq. 9's reading. A batch of ``n`` samples sums their outer products.

    Args:
        weight: ``W_t``, ``(d_out, d_in)``.
        x: the input, ``(d_in,)``, or a batch ``(n, d_in)``.
        surprise: ``∇_y L`` at ``y = W_t x``, ``(d_out,)``, or ``(n, d_out)``.
        lr: the step ``η >= 0``.

    Returns:
        ``W_{t+1}``, ``(d_out, d_in)``.
    """
    if weight.dim() != 2:
        raise ValueError(f"weight must be (d_out, d_in), got shape {tuple(weight.shape)}")
    d_out, d_in = weight.shape
    if x.dim() not in (1, 2) or x.shape[-1] != d_in:
        raise ValueError(f"x must be (d_in={d_in},) or (n, d_in={d_in}), got shape {tuple(x.shape)}")
    keys = x.reshape(-1, d_in)
    if surprise.shape != (*x.shape[:-1], d_out):
        want = f"(d_out={d_out},)" if x.dim() == 1 else f"(n={x.shape[0]}, d_out={d_out})"
        raise ValueError(f"surprise must be {want}, got shape {tuple(surprise.shape)}")
    return gd_step(DotProductObjective(), weight, keys, surprise.reshape(-1, d_out), lr)


__all__ = ["ftrl_iterate", "output_surprise_step", "sgd_step"]
