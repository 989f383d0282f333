r"""The associative-memory loss that the long-term memory minimises at test time (Titans Eq. 12).

The memory is trained *inside* the forward pass to map keys to values. Its loss is the squared error of
the recall, with no factor ½ (Appendix C uses ½; then every gradient below loses its factor 2).

This module is the "attentional bias" of MIRAS' vocabulary: MIRAS swaps this loss for l_p, Huber or
KL objectives. Everything downstream only needs the gradient with respect to the memory's *output*
(:func:`associative_loss_output_grad`); the chain rule through the memory network is done by
:class:`neural_memory.titans.memory_model.MemoryMLP`.
"""

from __future__ import annotations

from torch import Tensor

from neural_memory.registry import implements


def _check(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )


@implements("titans", 12)
def associative_loss(pred: Tensor, target: Tensor) -> Tensor:
    r"""Associative-memory loss (Titans v1, Eq. 12), one value per token.

    .. math::
        \ell(\mathcal{M}_{t-1}; x_t)
            = \left\|\mathcal{M}_{t-1}(\mathbf{k}_t) - \mathbf{v}_t\right\|_2^2 \qquad (12)

    How badly the memory recalls value ``v_t`` from key ``k_t``.

    Args:
        pred: the memory's recall :math:`\mathcal{M}_{t-1}(k_t)`, ``(..., d)``.
        target: the value :math:`v_t`, ``(..., d)``.

    Returns:
        ``(...,)`` squared l2 errors.
    """
    _check(pred, target)
    return (pred - target).pow(2).sum(dim=-1)


@implements("titans", 12)
def associative_loss_output_grad(pred: Tensor, target: Tensor) -> Tensor:
    r"""Gradient of Eq. 12 with respect to the memory output: :math:`2(\mathcal{M}(k_t) - v_t)`.

    Args:
        pred, target: ``(..., d)``.

    Returns:
        ``(..., d)``.
    """
    _check(pred, target)
    return 2.0 * (pred - target)
