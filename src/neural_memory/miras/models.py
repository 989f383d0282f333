"""The MIRAS models as LM kinds: ``moneta``, ``yaad``, ``memora`` (MIRAS §5.3, M-U33).

Each block's mixer is a :class:`~neural_memory.miras.memory.MirasMemory` — M-U33's block: q/k/v
projections, a depthwise-separable convolution of kernel 4 after each, l2-normalised queries and keys, the
memory, output normalisation and a linear gate — stacked by :func:`neural_memory.models.registry.build_lm`
in the Llama-style wrapper (SwiGLU MLP, RMSNorm) of :mod:`neural_memory.models.lm`.

The hybrids ``moneta-h``, ``yaad-h``, ``memora-h`` (v1 Table 2's "-H" rows; M-U33: "Samba-style, with a
MIRAS layer followed by sliding-window attention") alternate the blocks: even layers mix with the MIRAS
memory, odd layers with sliding-window attention with RoPE
(:func:`~neural_memory.models.transformer.sliding_window_mixer`), each block with its own MLP, as Samba
alternates Mamba and SWA. The paper gives no window; ours is the sliding-window baseline's, 64
(``window``), with ``heads`` attention heads.

v1 gives Table 5's sizes only for the 170M-780M models; the defaults below are small, for CPU experiments:

=====================  =======  =====================================================================
key                    default  meaning
=====================  =======  =====================================================================
``memory_depth``       2        memory MLP layers (M-U25: 2, residual LayerNorm read-out)
``memory_chunk_size``  16       chunk ``b`` of the parallel form (§6: 16 or 64)
``memory_heads``       4        independent memories (Table 5: 16 heads at width 768)
``memory``             None     any other :class:`~neural_memory.miras.memory.MirasMemory` kwargs
``window``, ``heads``  64, 4    the hybrids' sliding-window attention layers
=====================  =======  =====================================================================
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from neural_memory.miras.memory import memora, moneta, yaad
from neural_memory.models.registry import register_kind
from neural_memory.models.transformer import sliding_window_mixer
from neural_memory.titans.models import memory_kwargs

MIRAS_DEFAULTS = {"memory_depth": 2, "memory_chunk_size": 16, "memory_heads": 4}
HYBRID_DEFAULTS = {**MIRAS_DEFAULTS, "heads": 4, "window": 64}

# The builders are plain functions that do all their work when a model is built (none at import), so
# that a test building a model runs every line of them.


def miras_layer(
    preset: Callable[..., nn.Module],
    *,
    dim: int,
    memory_depth: int,
    memory_chunk_size: int,
    memory_heads: int,
    memory: dict | None,
) -> nn.Module:
    """The MIRAS memory block ``preset(dim, ...)`` (:func:`~neural_memory.miras.memory.moneta`, ``yaad``
    or ``memora``) with the flat ``memory_*`` sizes plus any other ``memory`` kwargs."""
    return preset(dim, **memory_kwargs(memory_depth, memory_chunk_size, memory_heads, memory))


def hybrid_layer(
    preset: Callable[..., nn.Module],
    *,
    dim: int,
    layer_index: int,
    heads: int,
    window: int,
    **memory_sizes,
) -> nn.Module:
    """Layer ``layer_index`` of a Samba-style hybrid (M-U33): the MIRAS memory at even layers, then
    sliding-window attention with RoPE at odd ones (Samba's order: the memory layer first)."""
    if layer_index % 2:
        return sliding_window_mixer(dim=dim, layer_index=layer_index, heads=heads, window=window)
    return miras_layer(preset, dim=dim, **memory_sizes)


def _sizes(memory_depth: int, memory_chunk_size: int, memory_heads: int) -> dict[str, int]:
    return {
        "memory_depth": memory_depth,
        "memory_chunk_size": memory_chunk_size,
        "memory_heads": memory_heads,
    }


def build_moneta(
    *, dim: int, layer_index: int, memory_depth: int = 2, memory_chunk_size: int = 16, memory_heads: int = 4,
    memory: dict | None = None,
) -> nn.Module:  # fmt: skip
    """Builder of kind ``moneta`` (:func:`~neural_memory.miras.memory.moneta`)."""
    return miras_layer(
        moneta, dim=dim, memory=memory, **_sizes(memory_depth, memory_chunk_size, memory_heads)
    )


def build_yaad(
    *, dim: int, layer_index: int, memory_depth: int = 2, memory_chunk_size: int = 16, memory_heads: int = 4,
    memory: dict | None = None,
) -> nn.Module:  # fmt: skip
    """Builder of kind ``yaad`` (:func:`~neural_memory.miras.memory.yaad`)."""
    return miras_layer(yaad, dim=dim, memory=memory, **_sizes(memory_depth, memory_chunk_size, memory_heads))


def build_memora(
    *, dim: int, layer_index: int, memory_depth: int = 2, memory_chunk_size: int = 16, memory_heads: int = 4,
    memory: dict | None = None,
) -> nn.Module:  # fmt: skip
    """Builder of kind ``memora`` (:func:`~neural_memory.miras.memory.memora`)."""
    return miras_layer(
        memora, dim=dim, memory=memory, **_sizes(memory_depth, memory_chunk_size, memory_heads)
    )


def build_moneta_h(
    *, dim: int, layer_index: int, memory_depth: int = 2, memory_chunk_size: int = 16, memory_heads: int = 4,
    memory: dict | None = None, heads: int = 4, window: int = 64,
) -> nn.Module:  # fmt: skip
    """Builder of kind ``moneta-h``: :func:`~neural_memory.miras.memory.moneta` at even layers,
    sliding-window attention at odd layers (MIRAS M-U33's Samba-style hybrid)."""
    sizes = _sizes(memory_depth, memory_chunk_size, memory_heads)
    return hybrid_layer(
        moneta, dim=dim, layer_index=layer_index, heads=heads, window=window, memory=memory, **sizes
    )


def build_yaad_h(
    *, dim: int, layer_index: int, memory_depth: int = 2, memory_chunk_size: int = 16, memory_heads: int = 4,
    memory: dict | None = None, heads: int = 4, window: int = 64,
) -> nn.Module:  # fmt: skip
    """Builder of kind ``yaad-h``: :func:`~neural_memory.miras.memory.yaad` at even layers,
    sliding-window attention at odd layers (MIRAS M-U33's Samba-style hybrid)."""
    sizes = _sizes(memory_depth, memory_chunk_size, memory_heads)
    return hybrid_layer(
        yaad, dim=dim, layer_index=layer_index, heads=heads, window=window, memory=memory, **sizes
    )


def build_memora_h(
    *, dim: int, layer_index: int, memory_depth: int = 2, memory_chunk_size: int = 16, memory_heads: int = 4,
    memory: dict | None = None, heads: int = 4, window: int = 64,
) -> nn.Module:  # fmt: skip
    """Builder of kind ``memora-h``: :func:`~neural_memory.miras.memory.memora` at even layers,
    sliding-window attention at odd layers (MIRAS M-U33's Samba-style hybrid)."""
    sizes = _sizes(memory_depth, memory_chunk_size, memory_heads)
    return hybrid_layer(
        memora, dim=dim, layer_index=layer_index, heads=heads, window=window, memory=memory, **sizes
    )


register_kind(
    "moneta", build_moneta, defaults=MIRAS_DEFAULTS,
    description="MIRAS Moneta: l_p attentional bias (p=3), l_q retention (q=4) (Eq. 24-25)",
)  # fmt: skip
register_kind(
    "yaad", build_yaad, defaults=MIRAS_DEFAULTS,
    description="MIRAS Yaad: Huber-type l2/l1 bias with a learned threshold, weight decay (Eq. 26)",
)  # fmt: skip
register_kind(
    "memora", build_memora, defaults=MIRAS_DEFAULTS,
    description="MIRAS Memora: l2 bias, KL retention: softmax weights on the simplex (Eq. 27)",
)  # fmt: skip
for _name, _build in (("moneta-h", build_moneta_h), ("yaad-h", build_yaad_h), ("memora-h", build_memora_h)):
    register_kind(
        _name, _build, defaults=HYBRID_DEFAULTS, min_depth=2,
        description=f"MIRAS {_name[:-2].capitalize()}-H: its memory and sliding-window attention in "
        "alternating layers (Samba-style, M-U33)",
    )  # fmt: skip

__all__ = [
    "build_memora", "build_memora_h", "build_moneta", "build_moneta_h", "build_yaad", "build_yaad_h",
    "hybrid_layer", "miras_layer",
]  # fmt: skip
