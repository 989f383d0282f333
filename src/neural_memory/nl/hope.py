r"""Hope: self-modifying Titans followed by a Continuum Memory System (NL v1, §8.3, Eq. 94–97; N-U16).

One Hope block (the catalog's §5 block diagram):

.. code-block:: text

    x (B, T, d) -> causal depthwise-separable conv, window 4            (N-U16, on the memories' input)
                -> self-modifying Titans: q = x W_q, k = M_k(x), v = M_v(x) (all l2-normalised), η, α;
                   o = M_memory(q); every memory regresses its own M(v) by DGD   (Eq. 94–96)
                -> RMSNorm, W_O                                           (the Titans block's read-out)
                -> CMS chain, slowest level first, a_l = a_{l-1} + rms_norm(MLP_l(rms_norm(a_{l-1}))) (Eq. 97)

**Hope-Attention** (N-U16) replaces the self-modifying Titans by causal softmax attention (with RoPE) and
keeps the CMS.

Decisions (docs/errata.md, NL Eq. 94–97): the convolution acts once on the input of the memories (so
``k = M_k(conv(x))``), not on each generated projection; the CMS levels learn with the local
``"reconstruction"`` signal (each level an auto-associative memory of its input), because the task loss
(next-token loss) is not available inside a layer of the language model while it streams; residual
connections around each CMS block (the paper leaves them out of the formula). Normalisations the paper
does not print keep the block bounded: v is l2-normalised like q and k (it is also every memory's input for
its self-generated value, and unnormalised :math:`\hat v_v = \mathcal M_v(\mathcal M_v(x))` compounds the
value memory's gain); each CMS level reads its RMS-normalised input (the pre-norm of the FFN it replaces;
the curvature of its reconstruction step would otherwise grow with the input's scale); and each level's
branch output is RMS-normalised before the residual sum (the residual-norm read-out of the later Titans
text), which makes the reconstruction loss invariant to the scale of :math:`W_u, W_d`: a slow level sums
:math:`C` gradients that point the same way on correlated tokens, and without it width 128 at the default
rate went non-finite within 384 tokens.
In the language model the block is a mixer, so the wrapper's own SwiGLU FFN still follows it.

State (:class:`HopeState`): the front end's state (self-modifying memories or the KV cache), the
convolution cache and the CMS state (each level's weights and partial-chunk gradient): one call equals two
calls at any split point; its size is independent of the stream length for ``hope``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from torch import Tensor, nn

from neural_memory.common.conv import CausalDepthwiseSeparableConv
from neural_memory.common.validation import check_int
from neural_memory.models.transformer import CausalSelfAttention
from neural_memory.nl.cms import CMSState, ContinuumMemory
from neural_memory.nl.self_modifying import SelfModifyingTitans
from neural_memory.registry import implements


@dataclass(frozen=True)
class HopeState:
    """Streaming state of a :class:`HopeBlock`.

    Attributes:
        front: the self-modifying Titans state (``hope``) or the attention's KV cache (``hope-attention``).
        conv: the convolution cache ``(batch, kernel - 1, dim)``, or None (no convolution).
        cms: the CMS state.
    """

    front: Any
    conv: Tensor | None
    cms: CMSState

    def detach(self) -> HopeState:
        """The same state cut from the autograd graph."""
        conv = None if self.conv is None else self.conv.detach()
        return replace(self, front=self.front.detach(), conv=conv, cms=self.cms.detach())


_SET_BY_HOPE = ("qk_norm", "v_norm", "hidden", "chunk_size", "other_chunk_size")


def _front_kwargs(titans: dict | None) -> dict:
    """The extra :class:`SelfModifyingTitans` kwargs, refusing those HopeBlock sets itself."""
    if titans is not None and not isinstance(titans, dict):
        raise TypeError(
            f"titans must be a dict of SelfModifyingTitans kwargs or None, got {type(titans).__name__}"
        )
    extra = {} if titans is None else dict(titans)
    for name in _SET_BY_HOPE:
        if name in extra:
            raise ValueError(
                f"titans must not set {name}: HopeBlock sets qk_norm and v_norm itself and hidden, "
                "chunk_size, other_chunk_size from memory_hidden, chunk_size, other_chunk_size"
            )
    return extra


@implements("nl", 94, 95, 97)
class HopeBlock(nn.Module):
    r"""A Hope block: self-modifying Titans, then the CMS chain (NL v1, Eq. 94–97).

    .. math::
        \mathbf{o}_t = \mathcal{M}_{\text{memory},t-1}\left(\mathbf{q}_t\right), \quad
            \mathbf{k}_t = \mathcal{M}_{k,t-1}\left(\mathbf{x}_t\right), \quad
            \mathbf{v}_t = \mathcal{M}_{v,t-1}\left(\mathbf{x}_t\right), \quad
            \eta_t = \mathcal{M}_{\eta,t-1}\left(\mathbf{x}_t\right), \quad
            \alpha_t = \mathcal{M}_{\alpha,t-1}\left(\mathbf{x}_t\right) \qquad (94)

        \hat{\mathbf v}_{\square,t}=\mathcal M_{\square,t-1}(\mathbf v_t) \qquad (95)

        \mathbf{y}_t = \text{MLP}^{(f_k)}(\text{MLP}^{(f_{k-1})}(\cdots \text{MLP}^{(f_1)}(\mathbf{o}_t)))
            \qquad (97)

    The memories generate the token's projections and answer its query; each then regresses its own
    self-generated value by DGD with weight decay (Eq. 96 = Eq. 88,
    :func:`~neural_memory.nl.self_modifying.self_modifying_step`); the read-out passes through the CMS
    levels. With ``attention=True`` (Hope-Attention, N-U16) the front end is causal softmax attention.
    The module docstring lists the normalisation and convolution details.

    Args:
        dim: model width.
        cms_chunk_sizes: :math:`C^{(\ell)}` per CMS level, slowest first; ``>= 1`` level, dividing each other.
        cms_rates: CMS learning rates :math:`\eta^{(\ell)} \ge 0` (one float or one per level).
        cms_hidden: CMS blocks' hidden width (default ``4 * dim``).
        chunk_size, other_chunk_size: chunk sizes of the main memory and of the other memories (Eq. 90).
        memory_hidden: hidden width of the residual memory MLPs (default ``dim``).
        conv_kernel: window of the causal convolution (4, N-U16; 0 = none).
        attention: Hope-Attention instead of Hope.
        heads: attention heads (Hope-Attention only).
        titans: further :class:`~neural_memory.nl.self_modifying.SelfModifyingTitans` keyword arguments
            (not ``qk_norm``, ``v_norm``, ``hidden``, ``chunk_size``, ``other_chunk_size``: set above).

    Shapes:
        ``forward(x (B, T, dim), state | None) -> (y (B, T, dim), HopeState)``.
    """

    def __init__(
        self,
        dim: int,
        *,
        cms_chunk_sizes: Sequence[int] = (16,),
        cms_rates: float | Sequence[float] = 1e-3,
        cms_hidden: int | None = None,
        chunk_size: int = 16,
        other_chunk_size: int | None = None,
        memory_hidden: int | None = None,
        conv_kernel: int = 4,
        attention: bool = False,
        heads: int = 4,
        titans: dict | None = None,
    ):
        super().__init__()
        self.dim = check_int("dim", dim)
        self.attention = bool(attention)
        conv_kernel = check_int("conv_kernel", conv_kernel, minimum=0)
        if self.attention:
            self.front = CausalSelfAttention(dim, heads=heads)
            self.conv = None
        else:
            self.conv = CausalDepthwiseSeparableConv(dim, conv_kernel) if conv_kernel > 0 else None
            self.front = SelfModifyingTitans(
                dim,
                hidden=memory_hidden,
                chunk_size=chunk_size,
                other_chunk_size=other_chunk_size,
                qk_norm=True,
                v_norm=True,
                **_front_kwargs(titans),
            )
            self.out_norm = nn.RMSNorm(dim)
            self.to_out = nn.Linear(dim, dim, bias=False)
        self.cms = ContinuumMemory(
            dim,
            cms_chunk_sizes,
            rates=cms_rates,
            hidden=cms_hidden,
            signal="reconstruction",
            residual=True,
            pre_norm=True,
            out_norm=True,
        )

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> HopeState:
        """The state at the start of a stream."""
        front = self.front.init_state(batch_size, device=device, dtype=dtype)
        conv = None if self.conv is None else self.conv.empty_cache(batch_size, device=device, dtype=dtype)
        return HopeState(front, conv, self.cms.init_state(batch_size, device=device, dtype=dtype))

    def front_end(self, x: Tensor, state: HopeState) -> tuple[Tensor, HopeState]:
        """Eq. 94–96 (or attention): ``o (B, T, dim)`` and the state with the front end advanced."""
        if self.attention:
            o, front = self.front(x, state.front)
            return o, replace(state, front=front)
        conv = state.conv
        if self.conv is not None:
            x, conv = self.conv(x, conv)
        o, front = self.front(x, state.front)
        return self.to_out(self.out_norm(o)), replace(state, front=front, conv=conv)

    def forward(self, x: Tensor, state: HopeState | None = None) -> tuple[Tensor, HopeState]:
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be (batch, T, dim={self.dim}), got {shape}")
        if state is None:
            state = self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        o, state = self.front_end(x, state)
        y, cms = self.cms(o, state.cms)  # Eq. 97
        return y, replace(state, cms=cms)


__all__ = ["HopeBlock", "HopeState"]
