r"""The MIRAS framework's matrix-memory baselines as layers: linear attention, DeltaNet, Gated DeltaNet.

MIRAS §4 places these models in its framework (Table 1): a matrix memory :math:`\mathbf{S}` (``(d_v, d_k)``
per head, read as :math:`\mathbf{o}_t = \mathbf{S}_t\mathbf{q}_t` after the write at ``t``) with

* ``rule="linear"`` — linear attention, the dot-product bias without retention (Eq. 8 with
  :math:`\alpha = 1`; Titans Eq. 4-5):
  :math:`\mathbf{S}_t = \mathbf{S}_{t-1} + \mathbf{v}_t\mathbf{k}_t^\top`;
* ``rule="delta"`` — DeltaNet, the :math:`\ell_2` bias with one GD step (Eq. 9 with :math:`\alpha = 1`):
  :math:`\mathbf{S}_t = \mathbf{S}_{t-1}(\mathbf{I} - \beta_t\mathbf{k}_t\mathbf{k}_t^\top)
  + \beta_t\mathbf{v}_t\mathbf{k}_t^\top`;
* ``rule="gated-delta"`` — Gated DeltaNet, the same with a retention gate :math:`\alpha_t` (Eq. 9).

:class:`DeltaRuleLayer` wraps the memory in MIRAS' block (M-U33, shared with the Titans memory through
:class:`~neural_memory.common.memory_block.MemoryBlock`): q/k/v projections, a causal depthwise-separable
convolution (kernel 4) and SiLU after each, l2-normalised queries and keys, the memory, RMSNorm of the
read-out times ``SiLU(x W_g + b_g)``, and an output projection.

**Gates.** One scalar per token and head from a linear map of :math:`x_t`: the write strength
:math:`\beta_t = \sigma(x_t w_\beta + b_\beta) \in (0, 1)` (DeltaNet's choice; with unit keys
:math:`\mathbf{I} - \beta_t\mathbf{k}_t\mathbf{k}_t^\top` then has eigenvalues in :math:`[0, 1]`, a stable
recurrence), and the retention :math:`\alpha_t = \exp(-\min(\mathrm{softplus}(x_t w_\alpha + b_\alpha),
20))`: Gated DeltaNet's / Mamba2's :math:`\exp(-\Delta_t)` with :math:`\Delta_t = \mathrm{softplus}(\cdot)`
(their extra learned scale :math:`A` is folded into :math:`w_\alpha`). The cap of 20 keeps
:math:`\alpha_t \ge e^{-20} > 0` where the exponential would underflow to 0 (float32 beyond
:math:`\Delta \approx 104`), since the chunked form works with :math:`\log\alpha` and refuses
:math:`\alpha = 0`; forgetting all but :math:`2\cdot 10^{-9}` of the state is forgetting it. The decay
biases start at :math:`\Delta \in [10^{-3}, 10^{-1}]` log-spaced over the heads (:math:`\alpha \in [0.905,
0.999]`): several time scales, as Mamba2 initialises them.

**Fast and slow forms.** ``impl="chunked"`` (default) runs :func:`chunk_linear_attention` or
:func:`~neural_memory.common.delta_rule_chunked.chunk_delta_rule`; ``impl="reference"`` the token loops
:func:`recurrent_linear_attention` / :func:`~neural_memory.common.delta_rule_chunked.recurrent_delta_rule`.
Chunks start at each call's first token: both forms are exact, so a stream cut anywhere continues exactly
(up to rounding); the state is the memory and the convolution caches, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from neural_memory.common.delta_rule_chunked import _check_sequence, chunk_delta_rule, recurrent_delta_rule
from neural_memory.common.memory_block import MemoryBlock
from neural_memory.common.scan import linear_scan
from neural_memory.common.validation import check_int
from neural_memory.miras.framework import hebbian_step
from neural_memory.registry import implements

RULES = ("linear", "delta", "gated-delta")
IMPLS = ("chunked", "reference")


# --------------------------------------------------------------------------------------------------
# linear attention over a sequence: the token loop and the chunked form
# --------------------------------------------------------------------------------------------------


def _check_linear(q, k, v, log_alpha, initial_state, chunk_size) -> Tensor:
    """The checks of the delta-rule sequence functions (no write strength here) and of ``log_alpha``:
    ``(B, H, T)``, finite and ``<= 0``. Returns the initial state, zeros if None."""
    beta = q.new_ones(q.shape[:3]) if isinstance(q, Tensor) and q.dim() == 4 else None
    state = _check_sequence(q, k, v, beta, None, initial_state, chunk_size)
    if log_alpha is not None:
        if not isinstance(log_alpha, Tensor) or log_alpha.shape != q.shape[:3]:
            raise ValueError(
                f"log_alpha must have shape {tuple(q.shape[:3])}, got {getattr(log_alpha, 'shape', None)}"
            )
        # finite: alpha = 0 (log = -inf) would make the chunked form's differences of cumulative logs NaN
        if not bool((torch.isfinite(log_alpha) & (log_alpha <= 0)).all()):
            raise ValueError("log_alpha must be finite and <= 0 (alpha = exp(log_alpha) in (0, 1])")
    return state


@implements("titans", 4, 5)
def recurrent_linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    log_alpha: Tensor | None = None,
    chunk_size: int = 64,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Linear attention token by token (Titans v1, Eq. 4-5; MIRAS v1, Eq. 8 with :math:`\alpha = 1`).

    .. math::
        \mathbf{S}_t = \mathbf{S}_{t-1} + \mathbf{v}_t\mathbf{k}_t^{\top} \quad (4), \qquad
        \mathbf{o}_t = \mathbf{S}_t\mathbf{q}_t \quad (5)

    Add each key-value outer product to the matrix memory, then read it with the query. The reference: a
    Python loop of :func:`~neural_memory.miras.framework.hebbian_step`. Titans writes the memory as the
    transpose (``(d_k, d_v)``, :math:`\mathcal{M}_t = \mathcal{M}_{t-1} + K_t^\top V_t`, read
    :math:`Q_t\mathcal{M}_t`); same numbers.

    With ``log_alpha`` the memory decays first by one scalar per token and head,
    :math:`\mathbf{S}_t = \alpha_t\mathbf{S}_{t-1} + \mathbf{v}_t\mathbf{k}_t^{\top}`: MIRAS Eq. 8 with a
    per-token gate, the recurrence of Mamba2's SSD (:mod:`neural_memory.miras.mamba2`); ``None`` is
    :math:`\alpha \equiv 1`. The gate comes as its logarithm because the chunked form needs it there.

    Args:
        q, k: ``(B, H, T, d_k)``.
        v: ``(B, H, T, d_v)``.
        log_alpha: :math:`\log\alpha_t`, finite and ``<= 0``, ``(B, H, T)``; ``None`` for no decay.
        chunk_size: accepted (and validated) for a signature shared with :func:`chunk_linear_attention`.
        initial_state: ``S_0``, ``(B, H, d_v, d_k)``; zeros when ``None``.

    Returns:
        ``(o, S_T)``: outputs ``(B, H, T, d_v)`` and the final state ``(B, H, d_v, d_k)``.
    """
    state = _check_linear(q, k, v, log_alpha, initial_state, chunk_size)
    alphas = torch.exp(log_alpha).unbind(2) if log_alpha is not None else [1.0] * q.shape[2]
    outputs = []
    for q_t, k_t, v_t, alpha_t in zip(q.unbind(2), k.unbind(2), v.unbind(2), alphas, strict=True):
        state = hebbian_step(state, k_t, v_t, alpha_t)
        outputs.append((state @ q_t[..., None]).squeeze(-1))
    return torch.stack(outputs, dim=2), state


@implements("titans", 4, 5)
def chunk_linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    log_alpha: Tensor | None = None,
    chunk_size: int = 64,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Linear attention in chunks (Titans v1, Eq. 4-5; MIRAS v1, Eq. 8 with :math:`\alpha = 1`).

    .. math::
        \mathbf{S}_t = \mathbf{S}_{t-1} + \mathbf{v}_t\mathbf{k}_t^{\top} \quad (4), \qquad
        \mathbf{o}_t = \mathbf{S}_t\mathbf{q}_t \quad (5)

    The numbers of :func:`recurrent_linear_attention`, a chunk of ``b`` tokens at a time: with the state
    :math:`\mathbf{S}_0` at the chunk's start, the chunk's outputs are
    :math:`\mathbf{O} = \mathbf{Q}\mathbf{S}_0^\top + \mathrm{tril}(\mathbf{Q}\mathbf{K}^\top)\mathbf{V}`
    (the causal mask includes the diagonal: the read follows the write) and the next start is
    :math:`\mathbf{S}_0 + \mathbf{V}^\top\mathbf{K}`. The chunk starts are a cumulative sum, so nothing
    loops. The last chunk is padded with zero keys and values, which add nothing.

    With ``log_alpha`` (the per-token decay of :func:`recurrent_linear_attention`; Mamba2's SSD), the
    cumulative decays :math:`\gamma_r = \alpha_1\cdots\alpha_r` within a chunk weight every term:
    :math:`\mathbf{O} = \mathrm{diag}(\gamma)\mathbf{Q}\mathbf{S}_0^\top
    + (\mathbf{Q}\mathbf{K}^\top \odot \Gamma)\mathbf{V}` with :math:`\Gamma_{ri} = \gamma_r/\gamma_i`
    for :math:`i \le r` and 0 above, and the next start is :math:`\gamma_b\mathbf{S}_0
    + \mathbf{V}^\top\mathrm{diag}(\gamma_b/\gamma)\mathbf{K}`, a scalar-gated recurrence over the
    chunks run by the associative scan :func:`~neural_memory.common.scan.linear_scan`. The ratios are
    differences of cumulative logs, masked before the exponential, so nothing divides or overflows;
    padding tokens have :math:`\log\alpha = 0`.

    Args:
        q, k: ``(B, H, T, d_k)``.
        v: ``(B, H, T, d_v)``.
        log_alpha: :math:`\log\alpha_t`, finite and ``<= 0``, ``(B, H, T)``; ``None`` for no decay.
        chunk_size: tokens per chunk ``b >= 1``.
        initial_state: ``S_0``, ``(B, H, d_v, d_k)``; zeros when ``None``.

    Returns:
        ``(o, S_T)``: outputs ``(B, H, T, d_v)`` and the final state ``(B, H, d_v, d_k)``.
    """
    state = _check_linear(q, k, v, log_alpha, initial_state, chunk_size)
    n_b, n_h, n_t, d_k = q.shape
    d_v, b = v.shape[-1], chunk_size
    pad = (-n_t) % b
    n_c = (n_t + pad) // b

    def chunks(x: Tensor) -> Tensor:  # (B, H, T, d) -> (B, H, N, b, d), zero-padded
        return nn.functional.pad(x, (0, 0, 0, pad)).reshape(n_b, n_h, n_c, b, x.shape[-1])

    qc, kc, vc = chunks(q), chunks(k), chunks(v)
    state_t = state.transpose(-1, -2)[:, :, None]  # the states are kept transposed, (d_k, d_v)
    if log_alpha is None:
        intra = (qc @ kc.transpose(-1, -2)).tril() @ vc  # (B, H, N, b, d_v)
        writes = kc.transpose(-1, -2) @ vc  # each chunk adds Kᵀ V, (B, H, N, d_k, d_v)
        totals = state_t + writes.cumsum(dim=2)  # state after each chunk
    else:
        g = chunks(log_alpha[..., None]).squeeze(-1).cumsum(dim=-1)  # log γ_r within each chunk, (B, H, N, b)
        causal = torch.ones(b, b, dtype=torch.bool, device=q.device).tril()
        log_ratio = torch.where(causal, g[..., :, None] - g[..., None, :], torch.zeros((), dtype=g.dtype))
        # (Q Kᵀ ⊙ Γ) V; tril, not a multiply by the mask, drops the future scores (an overflowed one, inf,
        # times 0 would be NaN), and Γ = exp(0) = 1 above the diagonal
        intra = ((qc @ kc.transpose(-1, -2)).tril() * torch.exp(log_ratio)) @ vc
        writes = (torch.exp(g[..., -1:] - g)[..., None] * kc).transpose(-1, -2) @ vc  # Kᵀ diag(γ_b/γ) V
        # S_c = γ_b S_{c-1} + W_c over the chunks: prefix products of γ_b and the scanned writes
        decay, acc = linear_scan(torch.exp(g[..., -1]), writes.flatten(-2))
        totals = decay[..., None, None] * state_t + acc.unflatten(-1, (d_k, d_v))
        qc = torch.exp(g)[..., None] * qc  # diag(γ) Q reads the chunk's start
    starts = torch.cat([state_t, totals[:, :, :-1]], dim=2)
    o = (qc @ starts + intra).reshape(n_b, n_h, n_c * b, d_v)[:, :, :n_t]
    return o, totals[:, :, -1].transpose(-1, -2)


# --------------------------------------------------------------------------------------------------
# the layer
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeltaRuleState:
    """State of a :class:`DeltaRuleLayer`: what a stream needs to continue; its size is fixed by the model.

    Attributes:
        memory: the matrix memory :math:`\\mathbf{S}_t`, ``(B, H, d_v, d_k)``.
        conv: convolution caches of the projections (``"q"``, ``"k"``, ``"v"``), ``(B, kernel - 1, dim)``.
    """

    memory: Tensor
    conv: dict[str, Tensor] = field(default_factory=dict)

    def detach(self) -> DeltaRuleState:
        """The same state cut from the autograd graph (truncated back-propagation between calls)."""
        return replace(
            self, memory=self.memory.detach(), conv={name: c.detach() for name, c in self.conv.items()}
        )

    def numel(self) -> int:
        """Number of scalars held; constant along a stream."""
        return self.memory.numel() + sum(c.numel() for c in self.conv.values())


def start_stream(layer: nn.Module, x: Tensor, state, state_type: type):
    """``state`` (``layer``'s zero state if ``None``), after checking ``x (B, T, layer.dim)`` against it."""
    if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != layer.dim:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must have shape (batch, seq, {layer.dim}), got {shape}")
    if state is None:
        return layer.init_state(x.shape[0], device=x.device, dtype=x.dtype)
    if not isinstance(state, state_type):
        raise TypeError(f"state must be a {state_type.__name__} or None, got {type(state).__name__}")
    if state.memory.shape[0] != x.shape[0]:
        raise ValueError(f"state is for batch {state.memory.shape[0]}, x has batch {x.shape[0]}")
    return state


class DeltaRuleLayer(MemoryBlock):
    """Linear attention / DeltaNet / Gated DeltaNet in MIRAS' block (module docstring).

    ``forward(x (B, T, dim), state) -> (y (B, T, dim), state)``, the mixer protocol of
    :mod:`neural_memory.models.lm`.

    Args:
        dim: model width, split into ``heads`` memories of ``dim // heads``.
        heads: number of memory heads.
        rule: ``"linear"``, ``"delta"`` or ``"gated-delta"``.
        chunk_size: tokens per chunk of the chunked form, ``>= 1``.
        conv_kernel: kernel of the convolutions after the q/k/v projections, ``>= 0`` (0 disables).
        qk_norm: l2-normalise queries and keys.
        output_norm: RMS-normalise the read-out; output_gate: gate it with ``SiLU(x W_g + b_g)``.
        impl: ``"chunked"`` (fast) or ``"reference"`` (token loop; for tests).
    """

    MAX_DECAY = 20.0  # cap of Δ_t = -log α_t: α_t >= exp(-20) > 0 even where exp would underflow

    def __init__(
        self,
        dim: int,
        *,
        heads: int = 4,
        rule: str = "delta",
        chunk_size: int = 64,
        conv_kernel: int = 4,
        qk_norm: bool = True,
        output_norm: bool = True,
        output_gate: bool = True,
        impl: str = "chunked",
    ):
        super().__init__()
        _validate(dim, heads, rule, chunk_size, conv_kernel, impl)
        self.rule, self.chunk_size, self.impl = rule, chunk_size, impl
        self._init_projections(dim, heads, qk_norm=qk_norm, conv_kernel=conv_kernel)
        self.to_beta = nn.Linear(dim, heads) if rule != "linear" else None
        self.to_decay = nn.Linear(dim, heads) if rule == "gated-delta" else None
        if self.to_decay is not None:
            with torch.no_grad():  # softplus⁻¹(Δ) for Δ log-spaced in [1e-3, 1e-1]: α from 0.999 to 0.905
                delta = torch.logspace(-3, -1, heads, dtype=torch.float64)
                self.to_decay.bias.copy_(torch.log(torch.expm1(delta)))
        self._init_output(dim, output_norm=output_norm, output_gate=output_gate)

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> DeltaRuleState:
        """Zero memory and zero convolution caches: the state before the first token."""
        memory = torch.zeros(batch_size, self.heads, self.head_dim, self.head_dim, device=device, dtype=dtype)
        return DeltaRuleState(memory, self.empty_conv_caches(batch_size, device=device, dtype=dtype))

    def gates(self, x: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """``x (B, T, dim)`` → ``(β, α)``, each ``(B, heads, T)``; ``None`` for a gate the rule lacks."""
        beta = alpha = None
        if self.to_beta is not None:
            beta = torch.sigmoid(self.to_beta(x)).transpose(1, 2)
        if self.to_decay is not None:
            decay = nn.functional.softplus(self.to_decay(x)).clamp(max=self.MAX_DECAY)
            alpha = torch.exp(-decay).transpose(1, 2)
        return beta, alpha

    def forward(self, x: Tensor, state: DeltaRuleState | None = None) -> tuple[Tensor, DeltaRuleState]:
        """Write every token and read it with its query: ``(B, T, dim)`` → same, and the new state."""
        state = self._start(x, state)
        (k, v, q), state = self._project_all(x, state, "kvq")
        batch, length = x.shape[:2]
        k, v, q = (t.reshape(batch, self.heads, length, self.head_dim) for t in (k, v, q))
        o, memory = self._mix(x, q, k, v, state.memory)
        y = o.reshape(batch * self.heads, length, self.head_dim)
        return self._output(y, x), replace(state, memory=memory)

    def _mix(self, x: Tensor, q: Tensor, k: Tensor, v: Tensor, memory: Tensor) -> tuple[Tensor, Tensor]:
        common = {"chunk_size": self.chunk_size, "initial_state": memory}
        reference = self.impl == "reference"
        if self.rule == "linear":
            fn = recurrent_linear_attention if reference else chunk_linear_attention
            return fn(q, k, v, **common)
        beta, alpha = self.gates(x)
        fn = recurrent_delta_rule if reference else chunk_delta_rule
        return fn(q, k, v, beta, alpha=alpha, **common)

    def _start(self, x: Tensor, state: DeltaRuleState | None) -> DeltaRuleState:
        return start_stream(self, x, state, DeltaRuleState)


def _validate(dim, heads, rule, chunk_size, conv_kernel, impl) -> None:
    check_int("dim", dim)
    check_int("heads", heads)
    check_int("chunk_size", chunk_size)
    check_int("conv_kernel", conv_kernel, 0)
    if dim % heads:
        raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")


__all__ = [
    "DeltaRuleLayer",
    "DeltaRuleState",
    "chunk_linear_attention",
    "recurrent_linear_attention",
]
