r"""Delta-rule memories: DeltaNet (Titans Eq. 34) and Longhorn (Titans Eq. 35), Appendix C baselines.

Column-vector convention as in the paper's Appendix C: the memory ``S`` has shape ``(..., d_v, d_k)`` and
reads a key as ``S k``. Both rules are one step of online regression on ``L = ½‖S k − v‖²``: DeltaNet an
explicit gradient step, Longhorn an implicit (proximal) one.
"""

from __future__ import annotations

import torch

from neural_memory.registry import implements


def _check_memory(s: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if not isinstance(s, torch.Tensor) or s.dim() < 2:
        raise ValueError(f"S must be (..., d_v, d_k), got {getattr(s, 'shape', type(s).__name__)}")
    d_v, d_k = s.shape[-2:]
    if not isinstance(k, torch.Tensor) or k.dim() < 1 or k.shape[-1] != d_k:
        raise ValueError(f"k must have shape (..., d_k={d_k}), got {getattr(k, 'shape', type(k).__name__)}")
    if not isinstance(v, torch.Tensor) or v.dim() < 1 or v.shape[-1] != d_v:
        raise ValueError(f"v must have shape (..., d_v={d_v}), got {getattr(v, 'shape', type(v).__name__)}")


def _check_theta(theta: float | torch.Tensor, like: torch.Tensor, batch: torch.Size) -> torch.Tensor:
    """θ as a tensor of batch shape (broadcast), validated finite and >= 0."""
    if isinstance(theta, bool) or not isinstance(theta, int | float | torch.Tensor):
        raise TypeError(
            f"theta must be a float or a tensor of shape {tuple(batch)}, got {type(theta).__name__}"
        )
    theta_t = torch.as_tensor(theta, dtype=like.dtype)  # checked where it is, then moved to like's device
    if not bool(torch.isfinite(theta_t).all() and (theta_t >= 0).all()):
        raise ValueError(f"theta must be finite and >= 0, got {theta}")
    try:
        fits = torch.broadcast_shapes(theta_t.shape, batch) == batch
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(f"theta of shape {tuple(theta_t.shape)} does not broadcast to {tuple(batch)}")
    return theta_t.to(device=like.device)


@implements("titans", 34)
def delta_rule_step(
    S: torch.Tensor, k: torch.Tensor, v: torch.Tensor, theta: float | torch.Tensor
) -> torch.Tensor:
    r"""One DeltaNet step, online regression by gradient descent (Titans v1, Eq. 34).

    .. math::
        \mathbf{S}_{t+1} = \mathbf{S}_t - \theta_t\nabla\mathcal{L}
        = \mathbf{S}_t\left(\mathbf{I} - \theta_t\mathbf{k}_t\mathbf{k}_t^{\top}\right)
        + \theta_t\mathbf{v}_t\mathbf{k}_t^{\top} \qquad (34)

    Move the memory's read-out ``S k`` towards ``v`` by a step ``θ`` on ``L = ½‖S k − v‖²``; computed as
    ``S − θ (S k − v) kᵀ`` (``O(d_v d_k)``, no ``d_k × d_k`` matrix).

    Args:
        S: ``S_t``, ``(..., d_v, d_k)``.
        k: key ``k_t``, ``(..., d_k)`` (a column vector in the paper).
        v: value ``v_t``, ``(..., d_v)``.
        theta: step ``θ_t >= 0``, a float or a tensor broadcastable to the batch shape ``(...)``.

    Returns:
        ``S_{t+1}``, ``(..., d_v, d_k)``.
    """
    _check_memory(S, k, v)
    theta_t = _check_theta(theta, S, S.shape[:-2])
    error = (S @ k[..., :, None]).squeeze(-1) - v  # (..., d_v): S k - v
    return S - theta_t[..., None, None] * error[..., :, None] * k[..., None, :]


@implements("titans", 35)
def longhorn_delta(k: torch.Tensor, theta: float | torch.Tensor) -> torch.Tensor:
    r"""Longhorn's effective step, the :math:`\delta_t` of Titans v1, Eq. 35.

    .. math::
        \delta_t = \frac{\theta_t}{1 + \theta_t\mathbf{k}_t\mathbf{k}_t^{\top}} \qquad (35)

    Shrink the step ``θ`` by the key's squared norm, so that the implicit step never overshoots;
    :func:`longhorn_step` uses it. The paper prints ``k_t k_t^⊤`` (a matrix) in the denominator; a scalar
    step needs the squared norm ``k_t^⊤ k_t``, which is what we use (docs/errata.md, Titans Eq. 35).

    Args:
        k: ``(..., d_k)``.
        theta: ``θ_t >= 0``, float or tensor broadcastable to ``k.shape[:-1]``.

    Returns:
        ``δ_t``, shape ``broadcast(theta.shape, k.shape[:-1])``; ``0 <= δ_t <= θ_t``.
    """
    if not isinstance(k, torch.Tensor) or k.dim() < 1:
        raise ValueError(f"k must have shape (..., d_k), got {getattr(k, 'shape', type(k).__name__)}")
    theta_t = _check_theta(theta, k, k.shape[:-1])
    return theta_t / (1 + theta_t * (k * k).sum(dim=-1))


@implements("titans", 35)
def longhorn_step(
    S: torch.Tensor, k: torch.Tensor, v: torch.Tensor, theta: float | torch.Tensor
) -> torch.Tensor:
    r"""One Longhorn step, implicit online regression (Titans v1, Eq. 35).

    .. math::
        \mathbf{S}_{t+1} = \mathbf{S}_t\left(\mathbf{I} - \delta_t\mathbf{k}_t\mathbf{k}_t^{\top}\right)
        + \delta_t\mathbf{v}_t\mathbf{k}_t^{\top}, \qquad
        \delta_t = \frac{\theta_t}{1 + \theta_t\mathbf{k}_t^{\top}\mathbf{k}_t} \qquad (35)

    The closed-form solution of the implicit step ``S' = S − θ (S' k − v) kᵀ`` (gradient taken at the *new*
    state): a delta-rule step with the shrunken step ``δ``, which never overshoots (``δ ‖k‖² < 1``).
    The printed denominator ``1 + θ k kᵀ`` must be read as the scalar ``1 + θ kᵀk`` (docs/errata.md).

    Args:
        S: ``S_t``, ``(..., d_v, d_k)``.
        k: key, ``(..., d_k)``.
        v: value, ``(..., d_v)``.
        theta: ``θ_t >= 0`` (finite), float or tensor broadcastable to the batch shape.

    Returns:
        ``S_{t+1}``, ``(..., d_v, d_k)``.
    """
    _check_memory(S, k, v)
    return delta_rule_step(S, k, v, longhorn_delta(k, theta))


__all__ = ["delta_rule_step", "longhorn_delta", "longhorn_step"]
