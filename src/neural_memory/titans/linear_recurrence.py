r"""Titans with a linear memory as a matrix recurrence (Titans v1, Appendix C, Eq. 32–33).

With a single-matrix memory and the ½-loss of Appendix C, the LMM update of Eq. 13–14 has a closed form:
no autograd, one outer product per token. It connects Titans to the delta-rule family: with no momentum
and no forgetting it is DeltaNet (Eq. 34, :func:`neural_memory.common.delta_rule.delta_rule_step`).
"""

from __future__ import annotations

import torch

from neural_memory.registry import implements

Gate = float | torch.Tensor


def _check_shapes(M: torch.Tensor, S: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if not isinstance(M, torch.Tensor) or M.dim() < 2:
        raise ValueError(f"M must be (..., d_v, d_k), got {getattr(M, 'shape', type(M).__name__)}")
    if not isinstance(S, torch.Tensor) or S.shape != M.shape:
        raise ValueError(
            f"S must have the same shape as M {tuple(M.shape)}, got {getattr(S, 'shape', type(S).__name__)}"
        )
    d_v, d_k = M.shape[-2:]
    for name, t, d in (("k", k, d_k), ("v", v, d_v)):
        if not isinstance(t, torch.Tensor) or t.dim() < 1 or t.shape[-1] != d:
            dim_name = "d_k" if name == "k" else "d_v"
            raise ValueError(
                f"{name} must have shape (..., {dim_name}={d}), got {getattr(t, 'shape', type(t).__name__)}"
            )


def _gate(name: str, value: Gate, M: torch.Tensor, upper: float | None) -> torch.Tensor:
    """A gate as a tensor that multiplies ``(..., d_v, d_k)``: one scalar per token or one per row (diag)."""
    batch, d_v = tuple(M.shape[:-2]), M.shape[-2]
    if isinstance(value, bool) or not isinstance(value, int | float | torch.Tensor):
        raise TypeError(f"{name} must be a float or a tensor, got {type(value).__name__}")
    gate = torch.as_tensor(value, dtype=M.dtype)  # checked where it is, then moved to M's device
    if gate.dim() == 0:
        shaped = gate
    elif tuple(gate.shape) == batch:
        shaped = gate[..., None, None]
    elif tuple(gate.shape) == (*batch, d_v):
        shaped = gate[..., :, None]  # diag(gate) acting on the rows of M
    else:
        raise ValueError(
            f"{name} must be a float, a tensor of shape {batch} or {(*batch, d_v)} (one per row of M), "
            f"got {tuple(gate.shape)}"
        )
    finite_nonneg = bool(torch.isfinite(gate).all() and (gate >= 0).all())
    if upper is None and not finite_nonneg:
        raise ValueError(f"{name} must be >= 0 and finite, got {value}")
    if upper is not None and not (finite_nonneg and (gate <= upper).all()):
        raise ValueError(f"{name} must be in [0, {upper:g}], got {value}")
    return shaped.to(device=M.device)


@implements("titans", 32, 33)
def linear_lmm_step(
    M: torch.Tensor,
    S: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    alpha: Gate,
    eta: Gate,
    theta: Gate,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""One step of the linear-memory LMM recurrence (Titans v1, Appendix C, Eq. 32–33, as corrected).

    .. math::
        \mathcal{M}_t = \mathrm{diag}(1-\alpha_t)\mathcal{M}_{t-1} + S_t \qquad (32)

        S_t = \mathrm{diag}(\eta_t)S_{t-1} - \mathrm{diag}(\theta_t)\left(\mathcal{M}_{t-1}\mathbf{k}_t^{\top}
        \mathbf{k}_t - \mathbf{v}_t^{\top}\mathbf{k}_t\right) \qquad (33)

    Decay the momentum by ``η``, subtract ``θ`` times the gradient of the read-out error at the old
    memory, then forget a fraction ``α`` of the old memory and add the momentum.

    Conventions and corrections (docs/errata.md):

    * Eq. 32 prints ``M_t`` on both sides; the right-hand side is ``M_{t−1}``.
    * ``k_t, v_t`` are the paper's row vectors (here ``(..., d)`` tensors) but ``M`` reads a key as the
      column product ``M k_tᵀ``: the bracket ``(M kᵀ − vᵀ) k`` is exactly ``∇_M ½‖M k_tᵀ − v_tᵀ‖²``, not the
      gradient of the row read ``½‖k_t M − v_t‖²``.
    * The ½-loss of Appendix C differs from Eq. 12's ``‖M(k) − v‖²`` by a factor 2: this step with ``θ``
      equals Eq. 13–14 with ``θ_Eq12 = θ / 2`` (T-U14).
    * ``diag(·)`` gates act on the rows (output channels) of ``M``; scalar gates per token are the
      paper's Eq. 13–14. With ``η = α = 0`` this is DeltaNet (Eq. 34); with ``η = 0, α > 0`` it differs
      from Gated DeltaNet's ``(1−α) M (I − θ kᵀk) + θ vᵀk`` by ``−αθ (M kᵀ) k``, so the paper's
      "equivalent to Gated DeltaNet" holds only up to reparameterisation.

    Args:
        M: ``M_{t−1}``, ``(..., d_v, d_k)``.
        S: ``S_{t−1}``, same shape as ``M``.
        k: key ``k_t``, ``(..., d_k)``.
        v: value ``v_t``, ``(..., d_v)``.
        alpha: forget gate in ``[0, 1]``; a float, a tensor ``()`` or ``(...)`` (one per token) or
            ``(..., d_v)`` (one per row, the diagonal of ``diag(1 − α)``). Same for ``eta``.
        eta: momentum decay in ``[0, 1]``.
        theta: step size ``>= 0``.

    Returns:
        ``(M_t, S_t)``, each ``(..., d_v, d_k)``.
    """
    _check_shapes(M, S, k, v)
    alpha_, eta_, theta_ = (
        _gate("alpha", alpha, M, 1.0),
        _gate("eta", eta, M, 1.0),
        _gate("theta", theta, M, None),
    )
    error = (M @ k[..., :, None]).squeeze(-1) - v  # (..., d_v): M kᵀ − vᵀ, the read-out error
    bracket = error[..., :, None] * k[..., None, :]  # (..., d_v, d_k): M kᵀk − vᵀk
    S_t = eta_ * S - theta_ * bracket
    M_t = (1 - alpha_) * M + S_t
    return M_t, S_t


__all__ = ["linear_lmm_step"]
