r"""Mamba2 (Dao & Gu 2024, SSD) as a layer: the selective state-space baseline.

Per head :math:`h` the state is a matrix :math:`\mathbf{S} \in \mathbb{R}^{N \times P}` (``d_state x
head_dim``), decayed by one scalar per token and written with the discretised input
:math:`\bar{\mathbf{B}}_t\mathbf{x}_t = \Delta_t\mathbf{B}_t\mathbf{x}_t`:

.. math::
    \Delta_t = \mathrm{softplus}(\mathbf{u}_t\mathbf{w}_\Delta + b_\Delta), \qquad
    a_t = \exp(-\Delta_t A_h), \qquad A_h = \exp(A^{\log}_h) > 0

    \mathbf{S}_t = a_t\,\mathbf{S}_{t-1} + \mathbf{B}_t\,(\Delta_t\mathbf{x}_t)^{\top}, \qquad
    \mathbf{y}_t = \mathbf{S}_t^{\top}\mathbf{C}_t + D_h\,\mathbf{x}_t

with :math:`\mathbf{u}_t` the layer's input, :math:`\mathbf{B}_t, \mathbf{C}_t \in \mathbb{R}^N` shared by all
heads (one group) and :math:`\mathbf{x}_t \in \mathbb{R}^P` the head's slice of the convolved x projection
(all three computed from :math:`\mathbf{u}_{\le t}`, below). This is MIRAS Eq. 8 with a per-token
gate (:func:`~neural_memory.miras.framework.hebbian_step`, MIRAS Table 1's Mamba2 row): linear attention
with keys :math:`\mathbf{B}_t`, queries :math:`\mathbf{C}_t`, values :math:`\Delta_t\mathbf{x}_t` and decay
:math:`\alpha_t = a_t`, so :func:`ssd` runs
:func:`~neural_memory.miras.baselines.chunk_linear_attention` (chunked) or
:func:`~neural_memory.miras.baselines.recurrent_linear_attention` (token loop) with
``log_alpha`` :math:`= -\Delta_t A_h`. The memory is kept as :math:`\mathbf{S}^{\top}`, ``(P, N)``: linear
attention's ``(d_v, d_k)`` and the layout of ``mamba_ssm``'s ``ssm_state`` ``(batch, heads, head_dim,
d_state)``.

:class:`Mamba2Layer` is Mamba2's block around it: one input projection to
:math:`(\mathbf{z}, \mathbf{x}, \mathbf{B}, \mathbf{C}, \Delta)` (inner width ``E = expand * dim`` for
:math:`\mathbf{z}` and :math:`\mathbf{x}`), a causal depthwise convolution (kernel 4, with bias, no
pointwise map) and SiLU on :math:`(\mathbf{x}, \mathbf{B}, \mathbf{C})`, the recurrence above, the gated
RMSNorm :math:`\mathrm{RMSNorm}(\mathbf{y} \odot \mathrm{SiLU}(\mathbf{z}))` over the inner width, and the
output projection. Initialisation as in Mamba2: :math:`A_h` uniform in ``[1, 16]``, :math:`D_h = 1`,
:math:`b_\Delta = \mathrm{softplus}^{-1}(\Delta)` with :math:`\Delta \in [10^{-3}, 10^{-1}]` (log-spaced over
the heads here, drawn at random log-uniformly there). It is a baseline: nothing here claims a numbered
equation of the three papers.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from neural_memory.common.conv import CausalDepthwiseSeparableConv
from neural_memory.common.validation import check_int
from neural_memory.miras.baselines import (
    IMPLS,
    DeltaRuleState,
    chunk_linear_attention,
    recurrent_linear_attention,
    start_stream,
)

A_INIT_RANGE = (1.0, 16.0)  # Mamba2's A_init_range
DELTA_INIT_RANGE = (1e-3, 1e-1)  # Mamba2's (dt_min, dt_max)
NORM_EPS = 1e-5  # Mamba2's gated RMSNorm


def _described(value) -> str:
    """A tensor's shape as ``(2, 3)``, or a non-tensor's type name, for error messages."""
    return str(tuple(value.shape)) if isinstance(value, Tensor) else type(value).__name__


def _check_ssd(x, delta, A, B, C, D, impl) -> None:
    """Shapes and ranges of :func:`ssd`'s arguments; the linear-attention functions check the state."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f"x must have shape (batch, heads, T, P), got {_described(x)}")
    n_b, n_h, n_t, _ = x.shape
    if not isinstance(delta, Tensor) or delta.shape != (n_b, n_h, n_t):
        raise ValueError(f"delta must have shape {(n_b, n_h, n_t)}, got {_described(delta)}")
    for name, value in (("A", A), ("D", D)):
        if not isinstance(value, Tensor) or value.shape != (n_h,):
            raise ValueError(f"{name} must have shape ({n_h},), got {_described(value)}")
    if not isinstance(B, Tensor) or B.dim() != 3 or B.shape[:2] != (n_b, n_t):
        raise ValueError(f"B must have shape ({n_b}, {n_t}, N), got {_described(B)}")
    if not isinstance(C, Tensor) or C.shape != B.shape:
        raise ValueError(f"C must have shape {tuple(B.shape)} (as B), got {_described(C)}")
    for name, value in (("delta", delta), ("A", A)):
        if not bool((torch.isfinite(value) & (value >= 0)).all()):
            raise ValueError(f"{name} must be finite and >= 0")


def ssd(
    x: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor,
    *,
    impl: str = "chunked",
    chunk_size: int = 64,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Mamba2's selective state-space recurrence over a sequence (Mamba2, Dao & Gu 2024, SSD).

    .. math::
        \mathbf{S}_t = e^{-\Delta_t A_h}\,\mathbf{S}_{t-1} + \mathbf{B}_t\,(\Delta_t\mathbf{x}_t)^{\top},
        \qquad \mathbf{y}_t = \mathbf{S}_t^{\top}\mathbf{C}_t + D_h\,\mathbf{x}_t

    Decay the state, write the discretised input, read it with :math:`\mathbf{C}_t` and add the skip
    :math:`D_h\mathbf{x}_t`: gated linear attention with ``q = C``, ``k = B``, ``v = Δ x`` and
    ``log α = -Δ A`` (module docstring). ``A = 0`` is allowed here (no decay: linear attention).

    Args:
        x: inputs per head, ``(batch, H, T, P)``.
        delta: step sizes :math:`\Delta_t \ge 0`, ``(batch, H, T)``.
        A: decay rates :math:`A_h \ge 0`, ``(H,)``.
        B, C: input and output maps, ``(batch, T, N)``, shared by the heads.
        D: skip weights, ``(H,)``.
        impl: ``"chunked"`` (:func:`~neural_memory.miras.baselines.chunk_linear_attention`) or ``"reference"``
            (the token loop :func:`~neural_memory.miras.baselines.recurrent_linear_attention`).
        chunk_size: tokens per chunk of the chunked form, ``>= 1``.
        initial_state: :math:`\mathbf{S}_0^{\top}`, ``(batch, H, P, N)``; zeros when ``None``.

    Returns:
        ``(y, S_T^T)``: outputs ``(batch, H, T, P)`` and the final state ``(batch, H, P, N)``.
    """
    _check_ssd(x, delta, A, B, C, D, impl)
    n_h = x.shape[1]
    q = C[:, None].expand(-1, n_h, -1, -1)
    k = B[:, None].expand(-1, n_h, -1, -1)
    fn = chunk_linear_attention if impl == "chunked" else recurrent_linear_attention
    o, state = fn(
        q,
        k,
        delta[..., None] * x,
        log_alpha=-delta * A[:, None],
        chunk_size=chunk_size,
        initial_state=initial_state,
    )
    return o + D[:, None, None] * x, state


class Mamba2State(DeltaRuleState):
    """State of a :class:`Mamba2Layer`; its size is fixed by the model.

    Attributes:
        memory: :math:`\\mathbf{S}_t^{\\top}` per head, ``(B, H, head_dim, d_state)``.
        conv: the convolution cache of :math:`(\\mathbf{x}, \\mathbf{B}, \\mathbf{C})`, ``{"xbc": (B, kernel
            - 1, expand * dim + 2 * d_state)}`` (empty without the convolution).
    """


class Mamba2Layer(nn.Module):
    """Mamba2's block (module docstring): ``forward(x (B, T, dim), state) -> (y (B, T, dim), state)``, the
    mixer protocol of :mod:`neural_memory.models.lm`.

    Args:
        dim: model width.
        heads: number of heads; must divide the inner width ``expand * dim`` into heads of ``head_dim``.
        d_state: state size ``N`` per head (the length of B and C), ``>= 1``.
        expand: inner width ``E = expand * dim`` of x and z, ``>= 1``.
        chunk_size: tokens per chunk of the chunked form, ``>= 1``.
        conv_kernel: kernel of the causal depthwise convolution on (x, B, C), ``>= 0`` (0 disables).
        impl: ``"chunked"`` (fast) or ``"reference"`` (token loop; for tests).
    """

    def __init__(
        self,
        dim: int,
        *,
        heads: int = 4,
        d_state: int = 64,
        expand: int = 2,
        chunk_size: int = 64,
        conv_kernel: int = 4,
        impl: str = "chunked",
    ):
        super().__init__()
        _validate(dim, heads, d_state, expand, chunk_size, conv_kernel, impl)
        self.dim, self.heads, self.d_state = dim, heads, d_state
        self.inner = expand * dim
        self.head_dim = self.inner // heads
        self.chunk_size, self.impl = chunk_size, impl
        # z, x (inner each), B, C (d_state each), Δ (one per head); bias-free as in Mamba2
        self.in_proj = nn.Linear(dim, 2 * self.inner + 2 * d_state + heads, bias=False)
        channels = self.inner + 2 * d_state
        self.conv = (
            CausalDepthwiseSeparableConv(channels, conv_kernel, pointwise=False) if conv_kernel > 0 else None
        )
        with torch.no_grad():
            low, high = (math.log10(bound) for bound in DELTA_INIT_RANGE)
            delta = torch.logspace(low, high, heads, dtype=torch.float64)  # softplus⁻¹ below
            self.dt_bias = nn.Parameter(torch.log(torch.expm1(delta)).to(torch.get_default_dtype()))
            self.A_log = nn.Parameter(torch.empty(heads).uniform_(*A_INIT_RANGE).log())
        self.D = nn.Parameter(torch.ones(heads))
        self.norm = nn.RMSNorm(self.inner, eps=NORM_EPS)
        self.out_proj = nn.Linear(self.inner, dim, bias=False)

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> Mamba2State:
        """Zero state and zero convolution cache: the state before the first token."""
        memory = torch.zeros(batch_size, self.heads, self.head_dim, self.d_state, device=device, dtype=dtype)
        conv = {}
        if self.conv is not None:
            conv["xbc"] = self.conv.empty_cache(batch_size, device=device, dtype=dtype)
        return Mamba2State(memory, conv)

    def forward(self, x: Tensor, state: Mamba2State | None = None) -> tuple[Tensor, Mamba2State]:
        """Run the recurrence over ``x (B, T, dim)``: the output ``(B, T, dim)`` and the new state."""
        state = self._start(x, state)
        batch, length, _ = x.shape
        z, xbc, dt = self.in_proj(x).split([self.inner, self.inner + 2 * self.d_state, self.heads], dim=-1)
        conv = dict(state.conv)
        if self.conv is not None:
            xbc, conv["xbc"] = self.conv(xbc, state.conv["xbc"])
        xs, b, c = nn.functional.silu(xbc).split([self.inner, self.d_state, self.d_state], dim=-1)
        delta = nn.functional.softplus(dt + self.dt_bias).transpose(1, 2)  # (B, H, T)
        heads = xs.reshape(batch, length, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, P)
        y, memory = ssd(
            heads,
            delta,
            torch.exp(self.A_log),
            b,
            c,
            self.D,
            impl=self.impl,
            chunk_size=self.chunk_size,
            initial_state=state.memory,
        )
        y = y.transpose(1, 2).reshape(batch, length, self.inner)
        return self.out_proj(self.norm(y * nn.functional.silu(z))), Mamba2State(memory, conv)

    def _start(self, x: Tensor, state: Mamba2State | None) -> Mamba2State:
        return start_stream(self, x, state, Mamba2State)


def _validate(dim, heads, d_state, expand, chunk_size, conv_kernel, impl) -> None:
    check_int("dim", dim)
    check_int("heads", heads)
    check_int("d_state", d_state)
    check_int("expand", expand)
    check_int("chunk_size", chunk_size)
    check_int("conv_kernel", conv_kernel, 0)
    if (expand * dim) % heads:
        raise ValueError(f"expand * dim ({expand * dim}) must be divisible by heads ({heads})")
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")


__all__ = ["Mamba2Layer", "Mamba2State", "ssd"]
