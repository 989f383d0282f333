"""The MIRAS framework baselines as LM kinds: ``linear-attention``, ``deltanet``, ``gated-deltanet`` and
``mamba2``.

In the first three, each block's mixer is a :class:`~neural_memory.miras.baselines.DeltaRuleLayer` — MIRAS'
block (M-U33: q/k/v projections, a depthwise-separable convolution of kernel 4 after each, l2-normalised
queries and keys, the memory, output normalisation and a linear gate) around a matrix memory written by
linear attention (MIRAS Eq. 8, :math:`\\alpha = 1`), DeltaNet (Eq. 9, :math:`\\alpha = 1`) or Gated DeltaNet
(Eq. 9) — stacked by :func:`neural_memory.models.registry.build_lm` in the Llama-style wrapper of
:mod:`neural_memory.models.lm`. The defaults are small, for CPU experiments:

================  =======  ===========================================================================
key               default  meaning
================  =======  ===========================================================================
``heads``         4        independent matrix memories of ``dim // heads``; must divide ``dim``
``chunk_size``    64       chunk of the chunk-parallel form (a speed knob: the result does not depend on
                           it beyond rounding)
``conv_kernel``   4        kernel of the convolutions after the q/k/v projections (M-U33); 0 disables
``impl``          chunked  ``"reference"`` runs the token loop instead (slow; for tests)
================  =======  ===========================================================================

``mamba2`` is Mamba2 (Dao & Gu 2024, SSD; MIRAS Table 1's per-token-gated row of Eq. 8) in its own block,
:class:`~neural_memory.miras.mamba2.Mamba2Layer`: one input projection, a depthwise convolution of kernel 4
on x, B and C, the selective state-space recurrence, a gated RMSNorm and an output projection. Its keys:

================  =======  ===========================================================================
key               default  meaning
================  =======  ===========================================================================
``heads``         4        heads of ``expand * dim // heads`` channels; must divide ``expand * dim``
``d_state``       64       state size N per head (length of B and C); the state is ``heads x P x N``
``expand``        2        inner width ``expand * dim`` of x and the gate z (Mamba2's)
``chunk_size``    64       chunk of the chunk-parallel form (a speed knob, as above)
``conv_kernel``   4        kernel of the depthwise convolution on x, B, C; 0 disables
``impl``          chunked  ``"reference"`` runs the token loop instead (slow; for tests)
================  =======  ===========================================================================
"""

from __future__ import annotations

from torch import nn

from neural_memory.miras.baselines import DeltaRuleLayer
from neural_memory.miras.mamba2 import Mamba2Layer
from neural_memory.models.registry import register_kind

BASELINE_DEFAULTS = {"heads": 4, "chunk_size": 64, "conv_kernel": 4}
MAMBA2_DEFAULTS = {"heads": 4, "d_state": 64, "expand": 2, "chunk_size": 64, "conv_kernel": 4}


# The builders are plain functions that do all their work when a model is built (none at import), so
# that a test building a model runs every line of them.


def build_linear_attention(
    *, dim: int, layer_index: int, heads: int = 4, chunk_size: int = 64, conv_kernel: int = 4,
    impl: str = "chunked",
) -> nn.Module:  # fmt: skip
    """Builder of kind ``linear-attention``: a :class:`DeltaRuleLayer` with ``rule="linear"``."""
    return DeltaRuleLayer(
        dim, heads=heads, rule="linear", chunk_size=chunk_size, conv_kernel=conv_kernel, impl=impl
    )


def build_deltanet(
    *, dim: int, layer_index: int, heads: int = 4, chunk_size: int = 64, conv_kernel: int = 4,
    impl: str = "chunked",
) -> nn.Module:  # fmt: skip
    """Builder of kind ``deltanet``: a :class:`DeltaRuleLayer` with ``rule="delta"``."""
    return DeltaRuleLayer(
        dim, heads=heads, rule="delta", chunk_size=chunk_size, conv_kernel=conv_kernel, impl=impl
    )


def build_gated_deltanet(
    *, dim: int, layer_index: int, heads: int = 4, chunk_size: int = 64, conv_kernel: int = 4,
    impl: str = "chunked",
) -> nn.Module:  # fmt: skip
    """Builder of kind ``gated-deltanet``: a :class:`DeltaRuleLayer` with ``rule="gated-delta"``."""
    return DeltaRuleLayer(
        dim, heads=heads, rule="gated-delta", chunk_size=chunk_size, conv_kernel=conv_kernel, impl=impl
    )


def build_mamba2(
    *,
    dim: int,
    layer_index: int,
    heads: int = 4,
    d_state: int = 64,
    expand: int = 2,
    chunk_size: int = 64,
    conv_kernel: int = 4,
    impl: str = "chunked",
) -> nn.Module:
    """Builder of kind ``mamba2``: a :class:`Mamba2Layer`."""
    return Mamba2Layer(
        dim,
        heads=heads,
        d_state=d_state,
        expand=expand,
        chunk_size=chunk_size,
        conv_kernel=conv_kernel,
        impl=impl,
    )


register_kind(
    "linear-attention", build_linear_attention, defaults=BASELINE_DEFAULTS,
    description="linear attention: S += v k^T, o = S q (MIRAS Eq. 8 with alpha = 1; Titans Eq. 4-5)",
)  # fmt: skip
register_kind(
    "deltanet", build_deltanet, defaults=BASELINE_DEFAULTS,
    description="DeltaNet: delta rule with a learned write strength beta_t (MIRAS Eq. 9, alpha = 1)",
)  # fmt: skip
register_kind(
    "gated-deltanet", build_gated_deltanet, defaults=BASELINE_DEFAULTS,
    description="Gated DeltaNet: delta rule with beta_t and a retention gate alpha_t (MIRAS Eq. 9)",
)  # fmt: skip

register_kind(
    "mamba2", build_mamba2, defaults=MAMBA2_DEFAULTS,
    description="Mamba2 (SSD) baseline: S = exp(-dt A) S + B (dt x)^T, y = S^T C + D x (MIRAS Eq. 8 form)",
)  # fmt: skip

__all__ = ["build_deltanet", "build_gated_deltanet", "build_linear_attention", "build_mamba2"]
