r"""One step of the long-term memory's learning rule (Titans §3.1, Eq. 8-10, 13-14).

The memory's weights :math:`\mathcal{M}` learn at test time by gradient descent on the associative loss
(Eq. 12). Three ingredients, each a line of the paper:

* *surprise* — the gradient of the loss on the current token (Eq. 8);
* *momentum* — surprise accumulates with a data-dependent decay :math:`\eta_t` (Eq. 10 = Eq. 14);
* *forgetting* — the old weights decay by :math:`1-\alpha_t` before the momentum is added (Eq. 13).

Weights, momenta and gradients are tuples with one ``(N, d_in, d_out)`` tensor per memory layer; gates are
``(N,)``, one scalar per sequence-and-head for the current token. These functions are what the slow token
loop of :mod:`neural_memory.titans.reference` applies; the chunk-parallel form
(:mod:`neural_memory.titans.chunked`) computes the same thing in closed form.
"""

from __future__ import annotations

import torch
from torch import Tensor

from neural_memory.registry import implements

Weights = tuple[Tensor, ...]


def _bcast(gate: Tensor, like: Tensor) -> Tensor:
    return gate.reshape(gate.shape + (1,) * (like.dim() - gate.dim()))


def check_gates(alpha: Tensor, eta: Tensor, theta: Tensor) -> None:
    """Reject gates outside the paper's ranges: alpha, eta in [0, 1], theta >= 0, all finite, same shape."""
    if not (alpha.shape == eta.shape == theta.shape):
        raise ValueError(
            "alpha, eta and theta must have the same shape, got "
            f"{tuple(alpha.shape)}, {tuple(eta.shape)}, {tuple(theta.shape)}"
        )
    for name, gate in (("alpha", alpha), ("eta", eta), ("theta", theta)):
        if torch.isnan(gate).any() or torch.isinf(gate).any():
            raise ValueError(f"{name} contains NaN or Inf")
    if (alpha < 0).any() or (alpha > 1).any():
        raise ValueError("alpha must be in [0, 1] (forget gate)")
    if (eta < 0).any() or (eta > 1).any():
        raise ValueError("eta must be in [0, 1] (surprise decay)")
    if (theta < 0).any():
        raise ValueError("theta must be >= 0 (surprise step size)")


@implements("titans", 8)
def surprise_update(weights: Weights, grads: Weights, theta: Tensor) -> Weights:
    r"""Plain online gradient descent on the associative loss (Titans v1, Eq. 8).

    .. math::
        \mathcal{M}_t = \mathcal{M}_{t-1} - \theta_t \nabla\ell(\mathcal{M}_{t-1}; x_t) \qquad (8)

    Move the memory against the momentary surprise (no momentum, no forgetting).

    Args:
        weights: :math:`\mathcal{M}_{t-1}`, one ``(N, d_in, d_out)`` tensor per layer.
        grads: :math:`\nabla\ell(\mathcal{M}_{t-1}; x_t)`, same shapes.
        theta: step size, ``(N,)``, >= 0.

    Returns:
        :math:`\mathcal{M}_t`, same shapes as ``weights``.
    """
    return tuple(w - _bcast(theta, w) * g for w, g in zip(weights, grads, strict=True))


@implements("titans", 10, 14)
def surprise_momentum(momentum: Weights, grads: Weights, eta: Tensor, theta: Tensor) -> Weights:
    r"""Past surprise decays, momentary surprise is added (Titans v1, Eq. 10 and its copy Eq. 14).

    .. math::
        S_t = \eta_t S_{t-1} - \theta_t \nabla\ell(\mathcal{M}_{t-1}; x_t) \qquad (10, 14)

    Momentum of the memory's gradient descent: :math:`\eta_t` decides how long a surprise keeps moving
    the memory after the token that caused it.

    Args:
        momentum: :math:`S_{t-1}`, one ``(N, d_in, d_out)`` tensor per layer.
        grads: :math:`\nabla\ell(\mathcal{M}_{t-1}; x_t)`, same shapes.
        eta: surprise decay ``(N,)`` in [0, 1]; theta: step size ``(N,)``, >= 0.

    Returns:
        :math:`S_t`, same shapes as ``momentum``.
    """
    return tuple(_bcast(eta, s) * s - _bcast(theta, s) * g for s, g in zip(momentum, grads, strict=True))


@implements("titans", 9)
def momentum_memory_update(weights: Weights, momentum: Weights) -> Weights:
    r"""Memory update with momentum and no forgetting (Titans v1, Eq. 9).

    .. math::
        \mathcal{M}_t = \mathcal{M}_{t-1} + S_t \qquad (9)

    Args:
        weights: :math:`\mathcal{M}_{t-1}`; momentum: :math:`S_t`; one ``(N, d_in, d_out)`` tensor per layer.

    Returns:
        :math:`\mathcal{M}_t`.
    """
    return tuple(w + s for w, s in zip(weights, momentum, strict=True))


@implements("titans", 13)
def forgetting_update(weights: Weights, momentum: Weights, alpha: Tensor) -> Weights:
    r"""Memory update with a forget gate (Titans v1, Eq. 13).

    .. math::
        \mathcal{M}_t = (1-\alpha_t)\,\mathcal{M}_{t-1} + S_t \qquad (13)

    Forget a fraction :math:`\alpha_t` of the old memory (data-dependent weight decay), then add the
    momentum :math:`S_t` of Eq. 14. :math:`\alpha_t = 0` is Eq. 9; :math:`\alpha_t = 1` erases the past.

    Args:
        weights: :math:`\mathcal{M}_{t-1}`; momentum: :math:`S_t`; one ``(N, d_in, d_out)`` tensor per layer.
        alpha: forget gate ``(N,)`` in [0, 1].

    Returns:
        :math:`\mathcal{M}_t`.
    """
    return tuple((1 - _bcast(alpha, w)) * w + s for w, s in zip(weights, momentum, strict=True))
