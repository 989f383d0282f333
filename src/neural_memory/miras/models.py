"""The MIRAS models as LM kinds: ``moneta``, ``yaad``, ``memora`` (MIRAS §5.3, M-U33).

Each block's mixer is a :class:`~neural_memory.miras.memory.MirasMemory` — M-U33's block: q/k/v
projections, a depthwise-separable convolution of kernel 4 after each, l2-normalised queries and keys, the
memory, output normalisation and a linear gate — stacked by :func:`neural_memory.models.registry.build_lm`
in the Llama-style wrapper (SwiGLU MLP, RMSNorm) of :mod:`neural_memory.models.lm`. The hybrid "-H" models
(a MIRAS layer followed by sliding-window attention) are not built here. v1 gives Table 5's sizes only for
the 170M-780M models; the defaults below are small, for CPU experiments:

=====================  =======  =====================================================================
key                    default  meaning
=====================  =======  =====================================================================
``memory_depth``       2        memory MLP layers (M-U25: 2, residual LayerNorm read-out)
``memory_chunk_size``  16       chunk ``b`` of the parallel form (§6: 16 or 64)
``memory_heads``       4        independent memories (Table 5: 16 heads at width 768)
``memory``             None     any other :class:`~neural_memory.miras.memory.MirasMemory` kwargs
=====================  =======  =====================================================================
"""

from __future__ import annotations

from torch import nn

from neural_memory.miras.memory import memora, moneta, yaad
from neural_memory.models.registry import register_kind
from neural_memory.titans.models import memory_kwargs

MIRAS_DEFAULTS = {"memory_depth": 2, "memory_chunk_size": 16, "memory_heads": 4}


def _builder(preset, kind: str):
    def build(
        *,
        dim: int,
        layer_index: int,
        memory_depth: int = 2,
        memory_chunk_size: int = 16,
        memory_heads: int = 4,
        memory: dict | None = None,
    ) -> nn.Module:
        return preset(dim, **memory_kwargs(memory_depth, memory_chunk_size, memory_heads, memory))

    build.__name__ = build.__qualname__ = f"build_{kind}"
    build.__doc__ = f"Builder of kind ``{kind}`` (:func:`~neural_memory.miras.memory.{preset.__name__}`)."
    return build


build_moneta = _builder(moneta, "moneta")
build_yaad = _builder(yaad, "yaad")
build_memora = _builder(memora, "memora")

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

__all__ = ["build_memora", "build_moneta", "build_yaad"]
