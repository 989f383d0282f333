r"""Parallel associative scan for first-order linear recurrences (Titans Eq. 18, catalog T-U5).

The momentum of Titans (Eq. 18) and the forgetting rule (Eq. 13) are both recurrences of the form

.. math::
    h_t = a_t\,h_{t-1} + b_t ,

with a scalar transition :math:`a_t` (the gate) and a vector input :math:`b_t`. Representing step ``t`` by
the pair :math:`(a_t, b_t)`, two consecutive steps compose with

.. math::
    (a_1, b_1) \bullet (a_2, b_2) = (a_2 a_1,\; a_2 b_1 + b_2),

which is associative, so all prefixes can be computed in :math:`\lceil\log_2 T\rceil` vectorised steps
(Hillis & Steele) instead of a loop of ``T`` steps. No logarithms or divisions are involved, so gates that
are exactly 0 or 1 are handled exactly (a log-space cumulative sum would produce ``-inf - -inf``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from neural_memory.registry import implements


def combine(first: tuple[Tensor, Tensor], second: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """The associative operator: apply step ``first`` then step ``second``.

    Args:
        first, second: pairs ``(a: (...,), b: (..., F))``.
    """
    a1, b1 = first
    a2, b2 = second
    return a2 * a1, a2[..., None] * b1 + b2


def _check(a: Tensor, b: Tensor) -> None:
    if a.dim() < 1 or b.dim() != a.dim() + 1 or b.shape[:-1] != a.shape:
        raise ValueError(
            "b must have shape (*a.shape, F) for a of shape (..., T); "
            f"got a {tuple(a.shape)}, b {tuple(b.shape)}"
        )


@implements("titans", 18)
def linear_scan(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    r"""Inclusive scan of :math:`h_t = a_t h_{t-1} + b_t` from :math:`h_0 = 0` (Titans v1, Eq. 18).

    .. math::
        S_t = \eta_t S_{t-1} - \theta_t u_t \qquad (18)

    is this recurrence with :math:`a_t = \eta_t` and :math:`b_t = -\theta_t u_t`.

    Args:
        a: transitions, ``(..., T)``.
        b: inputs, ``(..., T, F)``.

    Returns:
        ``(decay, acc)``: ``decay[..., t] = a_1 ... a_t`` (``(..., T)``) and ``acc[..., t, :]`` = the state
        after step ``t`` started from zero (``(..., T, F)``). The state from any ``h_0`` is
        ``decay[..., None] * h_0 + acc``.
    """
    _check(a, b)
    steps = a.shape[-1]
    offset = 1
    while offset < steps:
        # Step t absorbs the composed block that ends at t - offset (identity (1, 0) before the start).
        prev_a = torch.ones_like(a)
        prev_b = torch.zeros_like(b)
        prev_a[..., offset:] = a[..., :-offset]
        prev_b[..., offset:, :] = b[..., :-offset, :]
        a, b = combine((prev_a, prev_b), (a, b))
        offset *= 2
    return a, b


def linear_recurrence(a: Tensor, b: Tensor, initial: Tensor) -> Tensor:
    """All states :math:`h_1 \\dots h_T` of :math:`h_t = a_t h_{t-1} + b_t` from ``initial`` ``(..., F)``."""
    if initial.shape != b.shape[:-2] + b.shape[-1:]:
        raise ValueError(
            f"initial must have shape {tuple(b.shape[:-2] + b.shape[-1:])}, got {tuple(initial.shape)}"
        )
    decay, acc = linear_scan(a, b)
    return decay[..., None] * initial[..., None, :] + acc


def decay_matrix(a: Tensor) -> Tensor:
    r"""Ratios :math:`R_{tj} = \prod_{k=j+1}^{t} a_k` for :math:`j \le t`, zero above the diagonal.

    This is the impulse response of the recurrence: scanning the identity matrix as inputs gives, in row
    ``t``, how much of input ``j`` survives until step ``t``. It is the exact, division-free form of the
    ratios :math:`\beta_t/\beta_j` of Titans Eq. 16.

    Args:
        a: transitions, ``(..., T)``.

    Returns:
        ``(..., T, T)``.
    """
    steps = a.shape[-1]
    eye = torch.eye(steps, dtype=a.dtype, device=a.device).expand(*a.shape, steps)
    return linear_scan(a, eye)[1]
