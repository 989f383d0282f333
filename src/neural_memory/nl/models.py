"""The Nested Learning models as LM kinds: ``hope`` and ``hope-attention`` (NL §8.3, Eq. 94–97, N-U16).

Each block's mixer is a :class:`~neural_memory.nl.hope.HopeBlock` — self-modifying Titans (or causal softmax
attention for ``hope-attention``) followed by the CMS chain — stacked by
:func:`neural_memory.models.registry.build_lm` in the Llama-style wrapper of :mod:`neural_memory.models.lm`
(which adds its own SwiGLU FFN after every mixer). The paper gives no chunk sizes or level counts for its LM
runs; the defaults below are small, for CPU experiments:

====================  ========  ===================================================================
key                   default   meaning
====================  ========  ===================================================================
``cms_chunk_sizes``   (64, 16)  CMS level chunk sizes :math:`C^{(\\ell)}`, slowest first (two levels)
``cms_rates``         1e-3      CMS learning rate per level (reconstruction signal)
``chunk_size``        16        chunk of the main memory :math:`C_{memory}` (Eq. 90)
``other_chunk_size``  None      chunk of the other memories (None = ``chunk_size``)
``heads``             4         attention heads (``hope-attention`` only)
``hope``              None      any other :class:`~neural_memory.nl.hope.HopeBlock` keyword arguments
====================  ========  ===================================================================
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from neural_memory.models.registry import register_kind
from neural_memory.nl.hope import HopeBlock

HOPE_DEFAULTS = {"cms_chunk_sizes": (64, 16), "cms_rates": 1e-3, "chunk_size": 16}


def hope_kwargs(hope: dict | None, taken: tuple[str, ...]) -> dict:
    """Further HopeBlock kwargs from ``hope``, refusing the keys the builder sets itself (``taken``)."""
    if hope is not None and not isinstance(hope, dict):
        raise TypeError(
            f"hope must be a dict of HopeBlock keyword arguments or None, got {type(hope).__name__}"
        )
    extra = {} if hope is None else dict(hope)
    clash = sorted(set(extra) & set(taken))
    if clash:
        raise ValueError(f"set {', '.join(clash)} with the builder's own keys, not inside hope={extra!r}")
    return extra


def build_hope(
    *,
    dim: int,
    layer_index: int,
    cms_chunk_sizes: Sequence[int] = (64, 16),
    cms_rates: float | Sequence[float] = 1e-3,
    chunk_size: int = 16,
    other_chunk_size: int | None = None,
    hope: dict | None = None,
) -> nn.Module:
    """Builder of kind ``hope`` (:class:`~neural_memory.nl.hope.HopeBlock`, every layer alike)."""
    return HopeBlock(
        dim,
        cms_chunk_sizes=tuple(cms_chunk_sizes),
        cms_rates=cms_rates,
        chunk_size=chunk_size,
        other_chunk_size=other_chunk_size,
        **hope_kwargs(hope, ("cms_chunk_sizes", "cms_rates", "chunk_size", "other_chunk_size")),
    )


def build_hope_attention(
    *,
    dim: int,
    layer_index: int,
    cms_chunk_sizes: Sequence[int] = (64, 16),
    cms_rates: float | Sequence[float] = 1e-3,
    heads: int = 4,
    hope: dict | None = None,
) -> nn.Module:
    """Builder of kind ``hope-attention`` (softmax attention + CMS, N-U16)."""
    return HopeBlock(
        dim, cms_chunk_sizes=tuple(cms_chunk_sizes), cms_rates=cms_rates, attention=True, heads=heads,
        **hope_kwargs(hope, ("cms_chunk_sizes", "cms_rates", "attention", "heads")),
    )  # fmt: skip


register_kind(
    "hope", build_hope, defaults=HOPE_DEFAULTS,
    description="NL Hope: self-modifying Titans (DGD, self-generated values) + CMS chain (Eq. 94-97)",
)  # fmt: skip
register_kind(
    "hope-attention", build_hope_attention,
    defaults={"cms_chunk_sizes": (64, 16), "cms_rates": 1e-3, "heads": 4},
    description="NL Hope-Attention: causal softmax attention + CMS chain (N-U16)",
)  # fmt: skip

__all__ = ["build_hope", "build_hope_attention"]
