r"""The framework table's recurrences, token by token (MIRAS v1 §2 Eq. 3, §4 Eq. 8-9, Table 1).

Column convention, as :mod:`neural_memory.common.delta_rule`: a memory ``M`` has shape ``(..., d_v, d_k)``,
reads a key as ``M k`` and writes with the outer product ``v kᵀ``. Every function is one step, batched over
the leading dimensions ``(...)``; a sequence is a loop over them (the obviously-right reference).

Decays (``A``, ``alpha``) come in three forms, chosen by ``diagonal``:

* ``None``: a scalar per memory, a float or a tensor broadcastable to the batch shape ``(...)``;
* ``"row"``: ``Diag(a) M``, ``a`` of shape ``(..., d_v)`` — a decay per value channel, Table 1's printed
  ``Diag(α_t) M``;
* ``"col"``: ``M Diag(a)``, ``a`` of shape ``(..., d_k)`` — a decay per key channel, which is what GLA,
  HGRN2 and RWKV-7 do in their own papers (they write the memory transposed, ``(d_k, d_v)``; see
  docs/errata.md, MIRAS Table 1).

Table 1 rows and where they live: LA, RetNet, lightning attention, Mamba2, GLA — :func:`hebbian_step`
(Eq. 8); DeltaNet, Gated DeltaNet, RWKV-7-style — :func:`delta_retention_step` (Eq. 9); Longhorn —
:func:`neural_memory.common.delta_rule.longhorn_step` (Titans Eq. 35; as a memory,
``MirasMemory(algorithm="implicit-gd")``); TTT-Linear, HGRN2, DFW — below.
"""

from __future__ import annotations

import torch

from neural_memory.common.delta_rule import _check_memory, delta_rule_step
from neural_memory.registry import implements

_DIAGONALS = (None, "row", "col")


def _coefficient(
    name: str,
    value: float | torch.Tensor,
    M: torch.Tensor,
    diagonal: str | None = None,
    low: float | None = None,
    high: float | None = None,
    hint: bool = True,
) -> torch.Tensor:
    """``value`` validated and shaped to multiply ``M`` elementwise: ``(..., 1, 1)``, ``(..., d_v, 1)`` or
    ``(..., 1, d_k)`` for ``diagonal`` None, "row" or "col". Always finite; within [low, high] if given."""
    if diagonal not in _DIAGONALS:
        raise ValueError(f"diagonal must be None, 'row' or 'col', got {diagonal!r}")
    if isinstance(value, bool) or not isinstance(value, int | float | torch.Tensor):
        raise TypeError(f"{name} must be a float or a tensor, got {type(value).__name__}")
    a = torch.as_tensor(value, dtype=M.dtype, device=M.device)
    in_range = torch.isfinite(a).all()
    if low is not None:
        in_range = in_range & (a >= low).all()
    if high is not None:
        in_range = in_range & (a <= high).all()
    if not bool(in_range):
        if low is not None and high is not None:
            wanted = f"in [{low:g}, {high:g}]"
        else:
            wanted = "finite" + (f" and >= {low:g}" if low is not None else "")
        shown = value if not isinstance(value, torch.Tensor) or value.numel() <= 8 else "a tensor outside it"
        raise ValueError(f"{name} must be {wanted}, got {shown}")
    batch = M.shape[:-2]
    if diagonal is None:
        try:
            fits = torch.broadcast_shapes(a.shape, batch) == batch
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(f"{name} of shape {tuple(a.shape)} does not broadcast to {tuple(batch)}")
        return a[..., None, None]
    axis, size = ("d_v", M.shape[-2]) if diagonal == "row" else ("d_k", M.shape[-1])
    try:
        fits = a.dim() >= 1 and a.shape[-1] == size and torch.broadcast_shapes(a.shape[:-1], batch) == batch
    except RuntimeError:
        fits = False
    if not fits:
        where = f" with diagonal={diagonal!r}" if hint else ""
        raise ValueError(f"{name} must have shape (..., {axis}={size}){where}, got {tuple(a.shape)}")
    return a[..., :, None] if diagonal == "row" else a[..., None, :]


def _outer(v: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The write ``v kᵀ``, ``(..., d_v, d_k)``."""
    return v[..., :, None] * k[..., None, :]


@implements("miras", 3)
def linear_rnn_step(
    M: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    A: float | torch.Tensor = 1.0,
    *,
    diagonal: str | None = None,
) -> torch.Tensor:
    r"""One step of the generic linear-RNN memory (MIRAS v1, Eq. 3).

    .. math::
        \mathcal{M}_t = A_t * \mathcal{M}_{t-1} + \mathbf{v}_t\mathbf{k}_t^{\top} \qquad (3)

    Scale the old memory by ``A`` and add the new key-value outer product. The paper leaves ``∗`` open
    ("an arbitrary associative operator"); we take ``A_t`` a scalar or a diagonal matrix, as its text says,
    and ``∗`` the product: ``A M``, ``Diag(a) M`` (``diagonal="row"``) or ``M Diag(a)`` (``"col"``).
    ``A`` may be any finite real.

    Args:
        M: ``M_{t-1}``, ``(..., d_v, d_k)``.
        k: ``(..., d_k)``.
        v: ``(..., d_v)``.
        A: float or tensor of batch shape ``(...)``; ``(..., d_v)`` with ``diagonal="row"``; ``(..., d_k)``
            with ``diagonal="col"``.

    Returns:
        ``M_t``, ``(..., d_v, d_k)``.
    """
    _check_memory(M, k, v)
    a = _coefficient("A", A, M, diagonal)
    return a * M + _outer(v, k)


@implements("miras", 8)
def hebbian_step(
    M: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    alpha: float | torch.Tensor = 1.0,
    *,
    diagonal: str | None = None,
) -> torch.Tensor:
    r"""Hebbian / gated linear attention step (MIRAS v1, Eq. 8).

    .. math::
        \mathcal{M}_t = \alpha\,\mathcal{M}_{t-1} + \mathbf{v}_t\mathbf{k}_t^{\top} \qquad (8)

    The exact minimiser of the dot-product bias with ℓ₂ retention (M-U5),
    :math:`\arg\min_{\mathcal{M}} -2\langle \mathcal{M}\mathbf{k}_t, \mathbf{v}_t\rangle
    + \|\mathcal{M} - \alpha\mathcal{M}_{t-1}\|_F^2`: no step size appears. ``α = 1`` is linear attention,
    a constant ``α`` RetNet / lightning attention, a per-token ``α_t`` Mamba2, a per-channel ``Diag(α_t)``
    GLA (key channels, ``diagonal="col"``, as GLA's paper has it; docs/errata.md, MIRAS Eq. 8).

    Args:
        M: ``M_{t-1}``, ``(..., d_v, d_k)``.
        k: ``(..., d_k)``.
        v: ``(..., d_v)``.
        alpha: gate in [0, 1]; float or ``(...)``, or ``(..., d_v)`` / ``(..., d_k)`` with ``diagonal``
            ``"row"`` / ``"col"``.

    Returns:
        ``M_t``, ``(..., d_v, d_k)``.
    """
    _check_memory(M, k, v)
    a = _coefficient("alpha", alpha, M, diagonal, low=0.0, high=1.0)
    return a * M + _outer(v, k)


@implements("miras", 9)
def delta_retention_step(
    M: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: float | torch.Tensor,
    alpha: float | torch.Tensor = 1.0,
    *,
    diagonal: str | None = None,
) -> torch.Tensor:
    r"""Delta rule with retention (MIRAS v1, Eq. 9), in its corrected form.

    .. math::
        \mathcal{M}_t = \alpha\,\mathcal{M}_{t-1}\big(\mathbf{I} - \eta_t\mathbf{k}_t\mathbf{k}_t^{\top}\big)
        + \eta_t\,\mathbf{v}_t\mathbf{k}_t^{\top} \qquad (9)

    Retain ``α M`` (M-U6), then take one gradient step ``η`` on ``½‖M k − v‖²`` — exactly
    :func:`~neural_memory.common.delta_rule.delta_rule_step` (Titans Eq. 34) applied to ``α M``. ``α = 1``
    is DeltaNet, a per-token ``α_t`` Gated DeltaNet, a per-channel ``α_t`` RWKV-7-style.

    The paper prints :math:`\alpha(\mathbf{I} - \eta_t\mathbf{k}_t\mathbf{k}_t^{\top})\mathcal{M}_{t-1}
    + \mathbf{v}_t\mathbf{k}_t^{\top}`: the transition multiplies on the left and the write lacks
    ``η_t``. For a memory read as ``M k`` that is not a gradient step; we use the right-multiplied form with
    ``η`` on the write (docs/errata.md, MIRAS Eq. 9, A2). RWKV-7 itself adds its decay and its removal term
    inside one transition; "RWKV-7-style" here is the MIRAS reading, decay then delta step.

    Args:
        M: ``M_{t-1}``, ``(..., d_v, d_k)``.
        k: ``(..., d_k)``.
        v: ``(..., d_v)``.
        eta: step ``η_t >= 0`` (DeltaNet's β_t), float or tensor broadcastable to ``(...)``.
        alpha: retention gate in [0, 1]: float or ``(...)``; ``(..., d_v)`` / ``(..., d_k)`` with
            ``diagonal`` ``"row"`` / ``"col"``.

    Returns:
        ``M_t``, ``(..., d_v, d_k)``.
    """
    _check_memory(M, k, v)
    a = _coefficient("alpha", alpha, M, diagonal, low=0.0, high=1.0)
    _coefficient("eta", eta, M, low=0.0)
    return delta_rule_step(a * M, k, v, eta)


def ttt_linear_step(
    M: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eta: float | torch.Tensor
) -> torch.Tensor:
    r"""TTT-Linear's write, MIRAS v1 Table 1 row "TTT-Linear" (unnumbered).

    .. math::
        \mathcal{M}_t = \mathcal{M}_{t-1}
        - \eta\,\nabla\mathcal{L}(\mathcal{M}_{t-1}; \mathbf{k}_t, \mathbf{v}_t),
        \qquad \mathcal{L} = \tfrac12\|\mathcal{M}\mathbf{k}_t - \mathbf{v}_t\|^2

    Plain online gradient descent on the regression loss. For a linear memory with the ½ℓ₂ loss this is
    DeltaNet's step (Titans Eq. 34), which it reuses; TTT-Linear differs from DeltaNet in its features
    (views of ``x_t``, a LayerNorm residual, mini-batches), not in this recurrence. Table 1 writes
    ``∇𝓛(𝓜_{t−1}, x_t)``; we read ``x_t`` as the pair ``(k_t, v_t)`` and fix the constant ½ (docs/errata.md).

    Args:
        M: ``(..., d_v, d_k)``; k: ``(..., d_k)``; v: ``(..., d_v)``.
        eta: ``η >= 0``, float or tensor broadcastable to ``(...)``.

    Returns:
        ``M_t``, ``(..., d_v, d_k)``.
    """
    _check_memory(M, k, v)
    _coefficient("eta", eta, M, low=0.0)
    return delta_rule_step(M, k, v, eta)


def hgrn2_step(M: torch.Tensor, v: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    r"""HGRN2's state expansion, MIRAS v1 Table 1 row "HGRN2" (unnumbered), in the column convention.

    .. math::
        \mathcal{M}_t = \mathcal{M}_{t-1}\,\mathrm{Diag}(\boldsymbol\alpha_t)
        + \mathbf{v}_t(\mathbf{1} - \boldsymbol\alpha_t)^{\top}

    The forget gate doubles as the key: what a channel forgets, it rewrites with the new value. Table 1
    prints ``Diag(α_t) M + v (1 − α_t)ᵀ``, which mixes two conventions (``1 − α_t`` sits in the key slot but
    ``Diag(α_t)`` decays the value rows; it only type-checks when ``d_k = d_v``). HGRN2's paper decays
    the same channels it writes, so we decay the key columns (docs/errata.md, MIRAS Table 1).

    Args:
        M: ``M_{t-1}``, ``(..., d_v, d_k)``.
        v: ``(..., d_v)``.
        alpha: forget gate in [0, 1], ``(..., d_k)``.

    Returns:
        ``M_t``, ``(..., d_v, d_k)``.
    """
    if not isinstance(M, torch.Tensor) or M.dim() < 2:
        raise ValueError(f"M must be (..., d_v, d_k), got {getattr(M, 'shape', type(M).__name__)}")
    a = _coefficient("alpha", alpha, M, "col", low=0.0, high=1.0, hint=False)
    key = 1.0 - a[..., 0, :]
    _check_memory(M, key, v)
    return a * M + _outer(v, key)


def dfw_step(
    M: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, alpha: torch.Tensor, beta: torch.Tensor
) -> torch.Tensor:
    r"""Decaying fast weights, MIRAS v1 Table 1 row "DFW" (unnumbered).

    .. math::
        \mathcal{M}_t = (\boldsymbol\beta_t\boldsymbol\alpha_t^{\top}) \odot \mathcal{M}_{t-1}
        + \mathbf{v}_t\mathbf{k}_t^{\top}

    A rank-one decay mask: entry ``(i, j)`` keeps ``β_i α_j`` of itself — ``Diag(β) M Diag(α)``.
    ``β`` indexes the value rows, ``α`` the key columns (the only reading in which the outer product has
    ``M``'s shape; Table 1 does not say).

    Args:
        M: ``M_{t-1}``, ``(..., d_v, d_k)``.
        k: ``(..., d_k)``; v: ``(..., d_v)``.
        alpha: key-channel gate in [0, 1], ``(..., d_k)``.
        beta: value-channel gate in [0, 1], ``(..., d_v)``.

    Returns:
        ``M_t``, ``(..., d_v, d_k)``.
    """
    _check_memory(M, k, v)
    a = _coefficient("alpha", alpha, M, "col", low=0.0, high=1.0, hint=False)
    b = _coefficient("beta", beta, M, "row", low=0.0, high=1.0, hint=False)
    return (b * a) * M + _outer(v, k)


__all__ = [
    "delta_retention_step",
    "dfw_step",
    "hebbian_step",
    "hgrn2_step",
    "linear_rnn_step",
    "ttt_linear_step",
]
