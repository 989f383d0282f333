r"""The training objective and its minimiser (NL v1, Eq. 4, 7, 22).

Every level of a nested system learns by minimising an expected loss: the model's parameters on the
training distribution (Eq. 22), a 1-layer MLP on its training set (Eq. 7), meta-parameters on a
distribution of tasks (Eq. 4, whose instance "initial state of a memory" is Eq. 28 in
:mod:`neural_memory.nl.knowledge_transfer`). The expectation is taken over a finite sample (the
empirical mean) and the argmin is found by full-batch gradient descent with
:func:`neural_memory.nl.gradient_descent.sgd_step` until the step stops moving.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch import Tensor

from neural_memory.common.validation import check_int
from neural_memory.nl.gradient_descent import sgd_step
from neural_memory.registry import implements


@implements("nl", 4, 22)
def expected_loss(loss_fn: Callable[..., Tensor], params: Tensor, samples: Sequence[tuple]) -> Tensor:
    r"""The empirical expected loss :math:`\frac1n\sum_i\mathcal L(\Phi; s_i)` (NL v1, Eq. 22 and 4).

    .. math::
        \mathbb{E}_{\mathbf{x}, \mathbf{y}\sim p(\mathcal{T})}\big[\mathcal{L}(\Phi; \mathbf{x},
            \mathbf{y})\big] \quad (22), \qquad
        \mathbb{E}_{\mathcal{T}_i\sim p(\mathcal{T})}\big[\ell(\theta, \mathcal{T}_i; \Phi)\big] \quad (4)

    The objective inside the argmin of Eq. 22 (samples are ``(x, y)`` pairs) and of Eq. 4 (samples are
    tasks; ``loss_fn`` adapts the inner parameters θ to the task and returns their loss), with the
    distribution replaced by the sample at hand.

    Args:
        loss_fn: ``loss_fn(params, *sample) -> scalar tensor``.
        params: ``Φ``, a tensor of any shape.
        samples: non-empty sequence of tuples, each unpacked into ``loss_fn``'s arguments after ``params``.

    Returns:
        The mean loss, a scalar tensor (differentiable in ``params``).
    """
    if isinstance(samples, Tensor) or not isinstance(samples, Sequence) or len(samples) == 0:
        raise ValueError("samples must be a non-empty sequence of tuples")
    total = None
    for sample in samples:
        if not isinstance(sample, tuple):
            raise TypeError(f"each sample must be a tuple of loss_fn arguments, got {type(sample).__name__}")
        loss = loss_fn(params, *sample)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError("loss_fn must return a scalar tensor")
        total = loss.reshape(()) if total is None else total + loss.reshape(())
    return total / len(samples)


@implements("nl", 4, 7, 22)
def minimise_expected_loss(
    loss_fn: Callable[..., Tensor],
    init: Tensor,
    samples: Sequence[tuple],
    lr: float,
    *,
    max_steps: int = 10_000,
    tol: float = 1e-13,
) -> Tensor:
    r"""The parameters that minimise the empirical expected loss (NL v1, Eq. 22, 7 and 4).

    .. math::
        \Phi^*_{\mathcal{T}} = \arg\min_{\Phi}\ \mathbb{E}_{\mathbf{x}, \mathbf{y}\sim p(\mathcal{T})}
            \big[\mathcal{L}(\Phi; \mathbf{x}, \mathbf{y})\big] \quad (22), \qquad
        W^* = \arg\min_W\ \mathcal{L}(W; \mathcal{D}_{\text{train}}) \quad (7), \qquad
        \Phi^* = \arg\min_{\Phi}\ \mathbb{E}_{\mathcal{T}_i\sim p(\mathcal{T})}\big[\ell(\theta,
            \mathcal{T}_i; \Phi)\big] \quad (4)

    Full-batch gradient descent on :func:`expected_loss` from ``init`` until every entry of a step is
    below ``tol``. That is a stationary point — the argmin when the expected loss is convex (least
    squares, Eq. 7 with a linear layer), a local minimum otherwise. The paper does not say how the argmin
    is found; GD is the learning rule the paper studies (docs/errata.md, NL Eq. 4, 7, 22).

    Args:
        loss_fn, samples: as in :func:`expected_loss`.
        init: the starting ``Φ``, any shape.
        lr: GD step ``> 0``; below ``2 / L`` for an ``L``-smooth expected loss.
        max_steps: at most this many steps (int >= 1).
        tol: stop when ``max |Φ_{k+1} − Φ_k| < tol`` (``tol > 0``).

    Returns:
        ``Φ*``, shaped like ``init``.

    Raises:
        RuntimeError: no convergence within ``max_steps`` (lower ``lr`` or raise ``max_steps``).
    """
    check_int("max_steps", max_steps)
    if isinstance(tol, bool) or not isinstance(tol, int | float) or not (0 < tol < math.inf):
        raise ValueError(f"tol must be in (0, inf), got {tol!r}")
    phi = init.detach()
    for _ in range(max_steps):
        new = sgd_step(lambda p: expected_loss(loss_fn, p, samples), phi, lr)
        moved = float((new - phi).abs().max())
        phi = new
        if moved < tol:
            return phi
    raise RuntimeError(f"minimise_expected_loss did not converge in {max_steps} steps (lr {lr})")


__all__ = ["expected_loss", "minimise_expected_loss"]
