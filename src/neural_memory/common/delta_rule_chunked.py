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
system, the same for all chunks at once:

.. math::
    (\mathbf{I} + \mathbf{A})\,\mathbf{U} = \mathrm{diag}(\beta)\mathbf{V}
    - \mathrm{diag}(\beta\gamma)\mathbf{K}\mathbf{S}_0^{\top}, \qquad
    A_{ri} = \beta_r\tfrac{\gamma_r}{\gamma_i}\mathbf{k}_r^{\top}\mathbf{k}_i \ (i < r)

i.e. with ``T = (I + A)^{-1} diag(β)``: ``U = U' − W S_0ᵀ``, ``U' = T V``, ``W = T diag(γ) K`` (DeltaNet:
``W = T K``). Then ``O = diag(γ) Q S_0ᵀ + (Q Kᵀ ⊙ Γ)_{tril} U`` and ``S_b = γ_b S_0 + Uᵀ diag(γ_b/γ) K``
with ``Γ_{ri} = γ_r/γ_i``. Everything but the chunk-to-chunk state (two small products per chunk) is a
batched matmul over all chunks.

``(I + A)^{-1}`` is computed by blockwise doubling with matmuls (:func:`_unit_lower_inverse`) instead of
``torch.linalg.solve_triangular``: on CPU the batched triangular solve is several times slower per flop
than a batched matmul, forward and backward, and the solve dominated the chunked time at d = 64.
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
    # unbind, not x[:, :, t]: one backward node per tensor instead of a full-size zero gradient per token
    steps = zip(q.unbind(2), k.unbind(2), v.unbind(2), beta.unbind(2), strict=True)
    alphas = alpha.unbind(2) if alpha is not None else [None] * q.shape[2]
    outputs = []
    for (q_t, k_t, v_t, beta_t), alpha_t in zip(steps, alphas, strict=True):
        if alpha_t is not None:
            state = alpha_t[:, :, None, None] * state
        state = delta_rule_step(state, k_t, v_t, beta_t)
        outputs.append((state @ q_t[..., None]).squeeze(-1))
    return torch.stack(outputs, dim=2), state


def _pad_time(x: torch.Tensor, pad: int, value: float = 0.0) -> torch.Tensor:
    """Append ``pad`` steps along dim 2 (the time axis)."""
    if pad == 0:
        return x
    shape = (*x.shape[:2], pad, *x.shape[3:])
    return torch.cat([x, x.new_full(shape, value)], dim=2)


def _unit_lower_inverse(lower: torch.Tensor) -> torch.Tensor:
    """Inverse of unit lower-triangular matrices ``(..., b, b)`` by blockwise doubling.

    ``inv([[L11, 0], [L21, L22]]) = [[X11, 0], [-X22 L21 X11, X22]]``, from 1x1 diagonal blocks up, all
    blocks of a level at once: ``log2 b`` levels of batched matmuls, which on CPU beat a batched
    ``torch.linalg.solve_triangular`` (one small triangular solve per matrix) forward and backward.
    ``b`` is padded to a power of two with an identity block, which does not change the leading block.
    """
    b = lower.shape[-1]
    size = 1 << (b - 1).bit_length()
    if size != b:
        lower = torch.nn.functional.pad(lower, (0, size - b, 0, size - b))
        lower = lower + torch.diag(torch.cat([lower.new_zeros(b), lower.new_ones(size - b)]))
    inverse = lower.new_ones(*lower.shape[:-2], size, 1, 1)  # the inverses of the 1x1 diagonal blocks
    half = 1
    while half < size:
        n_blocks = size // (2 * half)
        blocks = lower.reshape(*lower.shape[:-2], n_blocks, 2 * half, n_blocks, 2 * half)
        blocks = blocks.diagonal(dim1=-4, dim2=-2).movedim(-1, -3)  # (..., n_blocks, 2 half, 2 half)
        first, second = inverse[..., 0::2, :, :], inverse[..., 1::2, :, :]
        corner = -(second @ blocks[..., half:, :half] @ first)
        top = torch.cat([first, torch.zeros_like(first)], dim=-1)
        inverse = torch.cat([top, torch.cat([corner, second], dim=-1)], dim=-2)
        half *= 2
    return inverse[..., 0, :b, :b]


class _UnitLowerInverse(torch.autograd.Function):
    """``(I + A)⁻¹`` for strictly lower-triangular ``A``, with the backward written out so that autograd
    does not trace the doubling steps: ``dT = −T dA T`` gives ``∂A = −tril(Tᵀ G Tᵀ, −1)``. Once
    differentiable."""

    @staticmethod
    def forward(ctx, strict_lower: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        eye = torch.eye(strict_lower.shape[-1], dtype=strict_lower.dtype, device=strict_lower.device)
        inverse = _unit_lower_inverse(strict_lower + eye)
        ctx.save_for_backward(inverse)
        return inverse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (inverse,) = ctx.saved_tensors
        inverse_t = inverse.transpose(-1, -2)
        return -(inverse_t @ grad @ inverse_t).tril(-1)


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

    The same numbers as :func:`recurrent_delta_rule`, computed a chunk at a time: one unit
    lower-triangular inverse per chunk (``T = (I + A)^{-1} diag(β)``, the UT transform), ``W = T K``,
    ``U = T V``, matmuls for the intra-chunk outputs and a loop over chunks (not tokens) for the state
    (module docstring). ``T`` need not be a multiple of ``chunk_size``: the last chunk is
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
    n_b, n_h, n_t, d_k = q.shape
    d_v, b = v.shape[-1], chunk_size
    pad = (-n_t) % b
    n_c = (n_t + pad) // b

    def chunks(x: torch.Tensor) -> torch.Tensor:  # (B, H, T, ...) -> (B * H, N, b, ...), padded
        return _pad_time(x, pad).reshape(n_b * n_h, n_c, b, *x.shape[3:])

    qc, kc, vc, betac = (chunks(x) for x in (q, k, v, beta))
    kk = kc @ kc.transpose(-1, -2)
    qk = qc @ kc.transpose(-1, -2)
    if alpha is None:  # DeltaNet: every γ is 1, skip the decay masks
        a = (betac[..., :, None] * kk).tril(-1)
        scores = qk.tril()  # Q Kᵀ, causal incl. the diagonal
        q_start, k_start, k_end, gamma_end = qc, kc, kc, None
    else:
        g = chunks(torch.log(alpha)).cumsum(dim=-1)  # log γ_r within each chunk, (B * H, N, b)
        # Γ_{ri} = γ_r / γ_i for i <= r, 0 above; mask before exp (exp of the upper part may overflow)
        causal = torch.ones(b, b, dtype=torch.bool, device=q.device).tril()
        log_ratio = torch.where(causal, g[..., :, None] - g[..., None, :], torch.zeros((), dtype=g.dtype))
        decay = torch.exp(log_ratio) * causal
        a = (betac[..., :, None] * kk * decay).tril(-1)
        scores = qk * decay  # Q Kᵀ ⊙ Γ
        gamma = torch.exp(g)[..., None]
        q_start, k_start = gamma * qc, gamma * kc  # diag(γ) Q, diag(γ) K
        k_end = torch.exp(g[..., -1:] - g)[..., None] * kc  # diag(γ_b / γ) K
        gamma_end = torch.exp(g[..., -1, None, None]).unbind(1)  # γ_b per chunk

    # UT transform: T = (I + A)⁻¹ diag(β), A strictly lower triangular; U' = T V, W = T diag(γ) K
    t_mat = _UnitLowerInverse.apply(a) * betac[..., None, :]
    u_free, w = t_mat @ vc, t_mat @ k_start

    # the only sequential part, chunk to chunk: U = U' - W S_0ᵀ, S_bᵀ = γ_b S_0ᵀ + K_endᵀ U (kept transposed,
    # (d_k, d_v), so that both products take it as it is)
    state_t = state.reshape(n_b * n_h, d_v, d_k).transpose(-1, -2)
    starts, pseudo_values = [], []
    for c, (u_free_c, w_c, k_c) in enumerate(
        zip(u_free.unbind(1), w.unbind(1), k_end.unbind(1), strict=True)
    ):
        starts.append(state_t)
        u_c = torch.baddbmm(u_free_c, w_c, state_t, alpha=-1.0)
        pseudo_values.append(u_c)
        decayed = state_t if gamma_end is None else gamma_end[c] * state_t
        state_t = torch.baddbmm(decayed, k_c.transpose(-1, -2), u_c)

    # outputs of every chunk at once: O = diag(γ) Q S_0ᵀ + (Q Kᵀ ⊙ Γ) U
    o = q_start @ torch.stack(starts, dim=1) + scores @ torch.stack(pseudo_values, dim=1)
    o = o.reshape(n_b, n_h, n_c * b, d_v)[:, :, :n_t]
    return o, state_t.transpose(-1, -2).reshape(n_b, n_h, d_v, d_k)


__all__ = ["chunk_delta_rule", "recurrent_delta_rule"]
