r"""DeltaNet and Gated DeltaNet over a sequence: the token recurrence and its chunk-parallel (WY / UT) form.

Both compute, for every head, the delta rule with an optional scalar decay per token (Titans v1 Eq. 34;
MIRAS v1 Eq. 9 in its corrected form, docs/errata.md A2):

.. math::
    \mathbf{S}_t = \alpha_t\mathbf{S}_{t-1}\big(\mathbf{I} - \beta_t\mathbf{k}_t\mathbf{k}_t^{\top}\big)
    + \beta_t\mathbf{v}_t\mathbf{k}_t^{\top}, \qquad \mathbf{o}_t = \mathbf{S}_t\mathbf{q}_t

Column convention as :mod:`neural_memory.common.delta_rule`: the state ``S`` is ``(B, H, d_v, d_k)`` and the
read at ``t`` uses the state *after* the write at ``t``. (flash-linear-attention keeps the transpose,
``(d_k, d_v)`` read as ``qᵀS``; same numbers.)

The chunked form (Yang et al. 2024, "Parallelizing linear transformers with the delta rule over sequence
length"; Gated DeltaNet for the decays). Within a chunk of ``b`` tokens starting from ``S_0``, with the
cumulative decays ``γ_r = α_1⋯α_r``, the state is ``S_r = γ_r S_0 + Σ_{i≤r} (γ_r/γ_i) u_i k_iᵀ`` for
pseudo-values ``u_r = β_r (v_r − α_r S_{r−1} k_r)``. Stacking them as rows gives a unit lower-triangular
system, solved once per chunk for all chunks at once:

.. math::
    (\mathbf{I} + \mathbf{A})\,\mathbf{U} = \mathrm{diag}(\beta)\mathbf{V}
    - \mathrm{diag}(\beta\gamma)\mathbf{K}\mathbf{S}_0^{\top}, \qquad
    A_{ri} = \beta_r\tfrac{\gamma_r}{\gamma_i}\mathbf{k}_r^{\top}\mathbf{k}_i \ (i < r)

i.e. with ``T = (I + A)^{-1} diag(β)``: ``U = T V − W S_0ᵀ``, ``W = T diag(γ) K``. Then, per chunk,
``O = diag(γ) Q S_0ᵀ + (Q Kᵀ ⊙ Γ)_{tril} U`` and ``S_b = γ_b S_0 + Uᵀ diag(γ_b/γ) K`` with
``Γ_{ri} = γ_r/γ_i``: matmuls, and a loop over chunks (not tokens) for the state.
"""

from __future__ import annotations

import torch

from neural_memory.common.delta_rule import delta_rule_step
from neural_memory.common.validation import check_int
from neural_memory.registry import implements


def _check_sequence(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    alpha: torch.Tensor | None,
    initial_state: torch.Tensor | None,
    chunk_size: int,
) -> torch.Tensor:
    """Validate the shared arguments; return the initial state (zeros when None)."""
    check_int("chunk_size", chunk_size)
    if not isinstance(q, torch.Tensor) or q.dim() != 4:
        raise ValueError(f"q must have shape (B, H, T, d_k), got {getattr(q, 'shape', type(q).__name__)}")
    n_b, n_h, n_t, d_k = q.shape
    if not isinstance(k, torch.Tensor) or k.shape != q.shape:
        raise ValueError(f"k must have shape {tuple(q.shape)} (as q), got {getattr(k, 'shape', None)}")
    if not isinstance(v, torch.Tensor) or v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must have shape ({n_b}, {n_h}, {n_t}, d_v), got {getattr(v, 'shape', None)}")
    gate_shape = q.shape[:3]
    if not isinstance(beta, torch.Tensor) or beta.shape != gate_shape:
        raise ValueError(f"beta must have shape {tuple(gate_shape)}, got {getattr(beta, 'shape', None)}")
    if not bool(torch.isfinite(beta).all() and (beta >= 0).all()):
        raise ValueError("beta must be finite and >= 0")
    if alpha is not None:
        if not isinstance(alpha, torch.Tensor) or alpha.shape != gate_shape:
            raise ValueError(
                f"alpha must have shape {tuple(gate_shape)}, got {getattr(alpha, 'shape', None)}"
            )
        # alpha = 0 is excluded: the chunked form works with log-decays (ratios of cumulative products)
        if not bool(((alpha > 0) & (alpha <= 1)).all()):
            raise ValueError("alpha must be in (0, 1]")
    state_shape = (n_b, n_h, v.shape[-1], d_k)
    if initial_state is None:
        return q.new_zeros(state_shape)
    if not isinstance(initial_state, torch.Tensor) or initial_state.shape != state_shape:
        raise ValueError(
            f"initial_state must have shape {state_shape} = (B, H, d_v, d_k), "
            f"got {getattr(initial_state, 'shape', None)}"
        )
    return initial_state


@implements("titans", 34)
@implements("miras", 9)
def recurrent_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    *,
    alpha: torch.Tensor | None = None,
    chunk_size: int = 64,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""DeltaNet / Gated DeltaNet token by token (Titans v1, Eq. 34; MIRAS v1, Eq. 9 corrected).

    .. math::
        \mathbf{S}_t = \alpha_t\mathbf{S}_{t-1}\big(\mathbf{I} - \beta_t\mathbf{k}_t\mathbf{k}_t^{\top}\big)
        + \beta_t\mathbf{v}_t\mathbf{k}_t^{\top}, \qquad \mathbf{o}_t = \mathbf{S}_t\mathbf{q}_t

    The reference: decay the state, then one :func:`~neural_memory.common.delta_rule.delta_rule_step`
    per token, then read. Slow (a Python loop over ``T``) and obviously right.

    Args:
        q, k: ``(B, H, T, d_k)``.
        v: ``(B, H, T, d_v)``.
        beta: write strength ``β_t >= 0``, ``(B, H, T)``.
        alpha: decay ``α_t ∈ (0, 1]``, ``(B, H, T)``; ``None`` is DeltaNet (``α ≡ 1``).
        chunk_size: accepted (and validated) for a signature shared with :func:`chunk_delta_rule`; unused.
        initial_state: ``S_0``, ``(B, H, d_v, d_k)``; zeros when ``None``.

    Returns:
        ``(o, S_T)``: outputs ``(B, H, T, d_v)`` and the final state ``(B, H, d_v, d_k)``.
    """
    state = _check_sequence(q, k, v, beta, alpha, initial_state, chunk_size)
    outputs = []
    for t in range(q.shape[2]):
        if alpha is not None:
            state = alpha[:, :, t, None, None] * state
        state = delta_rule_step(state, k[:, :, t], v[:, :, t], beta[:, :, t])
        outputs.append((state @ q[:, :, t, :, None]).squeeze(-1))
    return torch.stack(outputs, dim=2), state


def _pad_time(x: torch.Tensor, pad: int, value: float = 0.0) -> torch.Tensor:
    """Append ``pad`` steps along dim 2 (the time axis)."""
    if pad == 0:
        return x
    shape = (*x.shape[:2], pad, *x.shape[3:])
    return torch.cat([x, x.new_full(shape, value)], dim=2)


@implements("titans", 34)
@implements("miras", 9)
def chunk_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    *,
    alpha: torch.Tensor | None = None,
    chunk_size: int = 64,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""DeltaNet / Gated DeltaNet in chunks, WY / UT form (Titans v1, Eq. 34; MIRAS v1, Eq. 9 corrected).

    .. math::
        \mathbf{S}_t = \alpha_t\mathbf{S}_{t-1}\big(\mathbf{I} - \beta_t\mathbf{k}_t\mathbf{k}_t^{\top}\big)
        + \beta_t\mathbf{v}_t\mathbf{k}_t^{\top}, \qquad \mathbf{o}_t = \mathbf{S}_t\mathbf{q}_t

    The same numbers as :func:`recurrent_delta_rule`, computed a chunk at a time: one triangular solve per
    chunk (``(I + A)^{-1}``, the UT transform), matmuls for the intra-chunk outputs and a loop over chunks
    for the state (module docstring). ``T`` need not be a multiple of ``chunk_size``: the last chunk is
    padded with ``β = 0, α = 1`` tokens, which leave the state alone.

    Args:
        q, k: ``(B, H, T, d_k)``.
        v: ``(B, H, T, d_v)``.
        beta: write strength ``β_t >= 0``, ``(B, H, T)``.
        alpha: decay ``α_t ∈ (0, 1]``, ``(B, H, T)``; ``None`` is DeltaNet. (``α = 0`` is refused: the
            decays are handled as differences of cumulative logs.)
        chunk_size: tokens per chunk ``b >= 1``.
        initial_state: ``S_0``, ``(B, H, d_v, d_k)``; zeros when ``None``.

    Returns:
        ``(o, S_T)``: outputs ``(B, H, T, d_v)`` and the final state ``(B, H, d_v, d_k)``.
    """
    state = _check_sequence(q, k, v, beta, alpha, initial_state, chunk_size)
    n_b, n_h, n_t, _ = q.shape
    b = chunk_size
    pad = (-n_t) % b
    n_c = (n_t + pad) // b

    def chunks(x: torch.Tensor) -> torch.Tensor:  # (B, H, T + pad, ...) -> (B, H, N, b, ...)
        return x.reshape(n_b, n_h, n_c, b, *x.shape[3:])

    qc, kc, vc = (chunks(_pad_time(x, pad)) for x in (q, k, v))
    betac = chunks(_pad_time(beta, pad))
    log_alpha = torch.zeros_like(beta) if alpha is None else torch.log(alpha)
    g = chunks(_pad_time(log_alpha, pad)).cumsum(dim=-1)  # log γ_r within each chunk, (B, H, N, b)

    # Γ_{ri} = γ_r / γ_i for i <= r, 0 above; mask before exp (exp of the upper part may overflow)
    causal = torch.ones(b, b, dtype=torch.bool, device=q.device).tril()
    log_ratio = torch.where(causal, g[..., :, None] - g[..., None, :], torch.zeros((), dtype=g.dtype))
    decay = torch.exp(log_ratio) * causal
    gamma = torch.exp(g)

    # UT transform: (I + A) [U', W] = [diag(β) V, diag(β γ) K], A strictly lower triangular
    a = (betac[..., :, None] * (kc @ kc.transpose(-1, -2)) * decay).tril(-1)
    eye = torch.eye(b, dtype=q.dtype, device=q.device)
    rhs = torch.cat([betac[..., None] * vc, (betac * gamma)[..., None] * kc], dim=-1)
    solved = torch.linalg.solve_triangular(a + eye, rhs, upper=False, unitriangular=True)
    u_free, w = solved[..., : v.shape[-1]], solved[..., v.shape[-1] :]  # U' = T V, W = T diag(γ) K

    scores = (qc @ kc.transpose(-1, -2)) * decay  # (Q Kᵀ ⊙ Γ), lower triangular incl. the diagonal
    q_decayed = gamma[..., None] * qc  # diag(γ) Q
    k_to_end = torch.exp(g[..., -1:] - g)[..., None] * kc  # diag(γ_b / γ) K
    gamma_end = gamma[..., -1, None, None]  # γ_b per chunk, (B, H, N, 1, 1)

    outputs = []
    for c in range(n_c):  # the only sequential part: the state from chunk to chunk
        s_t = state.transpose(-1, -2)  # (B, H, d_k, d_v)
        u = u_free[:, :, c] - w[:, :, c] @ s_t  # pseudo-values U = U' - W S_0ᵀ, (B, H, b, d_v)
        outputs.append(q_decayed[:, :, c] @ s_t + scores[:, :, c] @ u)
        state = gamma_end[:, :, c] * state + u.transpose(-1, -2) @ k_to_end[:, :, c]
    o = torch.cat(outputs, dim=2)[:, :, :n_t]
    return o, state


__all__ = ["chunk_delta_rule", "recurrent_delta_rule"]
