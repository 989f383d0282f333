r"""The block around a sequence memory: projections in, normalisation and gate out (Titans §4.4, MIRAS M-U33).

Titans' long-term memory and the MIRAS models wrap their memory the same way, and so do the linear-attention
/ DeltaNet baselines of the MIRAS framework:

1. ``q, k, v = x W_Q, x W_K, x W_V``, each followed by a causal depthwise-separable convolution (with a
   streaming cache) and SiLU; queries and keys l2-normalised per head;
2. the memory (the subclass's business), on ``(batch * heads, T, dim // heads)`` tensors;
3. ``RMSNorm`` of the read-out, times ``SiLU(x W_g + b_g)``, then ``W_O``.

:class:`MemoryBlock` holds these parts. Subclasses call :meth:`~MemoryBlock._init_projections` and
:meth:`~MemoryBlock._init_output` in their ``__init__`` (in that order, with their own modules in between if
they like: the order fixes the parameters' registration and so their random initialisation). The state a
subclass carries needs only a ``conv`` attribute, a dict of the convolution caches by name.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from torch import Tensor, nn

from neural_memory.common.conv import CausalDepthwiseSeparableConv


class MemoryBlock(nn.Module):
    """Projections, convolutions, output normalisation and gate shared by the memory layers."""

    def _init_projections(self, dim: int, heads: int, *, qk_norm: bool, conv_kernel: int) -> None:
        """``to_q``, ``to_k``, ``to_v`` (bias-free) and a kernel-``conv_kernel`` convolution after each
        (none when ``conv_kernel == 0``); ``dim`` splits into ``heads`` of ``dim // heads``."""
        self.dim, self.heads, self.head_dim, self.qk_norm = dim, heads, dim // heads, qk_norm
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.convs = nn.ModuleDict()
        if conv_kernel > 0:
            self.convs.update({name: CausalDepthwiseSeparableConv(dim, conv_kernel) for name in "qkv"})

    def _init_output(self, dim: int, *, output_norm: bool, output_gate: bool) -> None:
        """``out_norm`` (RMSNorm or identity), ``to_gate`` (a linear map with bias, or None), ``to_out``."""
        self.out_norm = nn.RMSNorm(dim) if output_norm else nn.Identity()
        self.to_gate = nn.Linear(dim, dim) if output_gate else None
        self.to_out = nn.Linear(dim, dim, bias=False)

    def empty_conv_caches(self, batch_size: int, *, device=None, dtype=None) -> dict[str, Tensor]:
        """Zero caches of the convolutions, ``{"q"|"k"|"v": (batch, kernel - 1, dim)}``."""
        return {
            name: conv.empty_cache(batch_size, device=device, dtype=dtype)
            for name, conv in self.convs.items()
        }

    def _project(self, name: str, x: Tensor, state: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """Projection ``name`` of ``x`` (convolution, SiLU, l2 norm for q/k): ``(B * heads, T, head_dim)``,
        and the conv caches of ``state`` with the one of ``name`` advanced."""
        proj = {"q": self.to_q, "k": self.to_k, "v": self.to_v}[name](x)
        caches = dict(state.conv)
        if name in self.convs:
            proj, caches[name] = self.convs[name](proj, state.conv.get(name))
        proj = nn.functional.silu(proj)
        heads = self._split_heads(proj)
        if self.qk_norm and name in ("q", "k"):
            heads = nn.functional.normalize(heads, dim=-1)
        return heads, caches

    def _project_all(self, x: Tensor, state: Any, names: str = "kvq") -> tuple[list[Tensor], Any]:
        """The projections ``names`` in that order, and ``state`` with every conv cache advanced."""
        out = []
        for name in names:
            proj, caches = self._project(name, x, state)
            state = replace(state, conv=caches)
            out.append(proj)
        return out, state

    def _split_heads(self, t: Tensor) -> Tensor:
        b, n, _ = t.shape
        return (
            t.reshape(b, n, self.heads, self.head_dim)
            .transpose(1, 2)
            .reshape(b * self.heads, n, self.head_dim)
        )

    def _merge_heads(self, t: Tensor, batch: int) -> Tensor:
        _, n, d = t.shape
        return t.reshape(batch, self.heads, n, d).transpose(1, 2).reshape(batch, n, self.heads * d)

    def _output(self, y: Tensor, x: Tensor) -> Tensor:
        """``y (B * heads, T, head_dim)`` → ``(RMSNorm(y) ⊙ SiLU(x W_g + b_g)) W_O``, ``(B, T, dim)``."""
        out = self.out_norm(self._merge_heads(y, x.shape[0]))
        if self.to_gate is not None:
            out = out * nn.functional.silu(self.to_gate(x))
        return self.to_out(out)


__all__ = ["MemoryBlock"]
