"""The Titans architectures as LM kinds: ``titans-mac``, ``titans-mag``, ``titans-mal``, ``titans-lmm``.

Each builder returns one mixer (``forward(x, state) -> (y, state)``, see :mod:`neural_memory.models.lm`);
:func:`neural_memory.models.registry.build_lm` stacks ``depth`` of them. v1 gives none of these sizes
(catalog ambiguity 9); the defaults below are small and chosen for CPU experiments:

========================  =======  ====================================================================
key                       default  meaning
========================  =======  ====================================================================
``heads``                 4        attention heads (MAC/MAG/MAL); must divide ``dim``
``n_persistent``          4        persistent tokens ``N_p`` (Eq. 19); 0 = "w/o Persistent Memory"
``segment_len``           64       MAC segment ``C`` (Eq. 21–25); also ``N_l = C`` memory tokens
``window``                64       MAG/MAL sliding window (Eq. 27, 31)
``memory_depth``          2        memory MLP layers ``L_M`` (1 = linear memory)
``memory_chunk_size``     16       chunk ``b`` of the parallel memory update (Eq. 16)
``memory_heads``          1        independent memory heads
``memory``                None     any other :class:`~neural_memory.titans.memory.NeuralMemory` kwargs
========================  =======  ====================================================================
"""

from __future__ import annotations

from torch import nn

from neural_memory.models.registry import register_kind
from neural_memory.titans.mac import MemoryAsContext
from neural_memory.titans.mag import MemoryAsGate
from neural_memory.titans.mal import LongTermMemoryLayer, MemoryAsLayer

MEMORY_DEFAULTS = {"memory_depth": 2, "memory_chunk_size": 16, "memory_heads": 1}
ATTENTION_DEFAULTS = {"heads": 4, "n_persistent": 4}


def memory_kwargs(
    memory_depth: int, memory_chunk_size: int, memory_heads: int, memory: dict | None
) -> dict[str, object]:
    """NeuralMemory keyword arguments from the flat ``memory_*`` keys plus the ``memory`` dict."""
    extra = {} if memory is None else memory
    if not isinstance(extra, dict):
        raise TypeError(
            f"memory must be a dict of NeuralMemory keyword arguments or None, got {type(extra).__name__}"
        )
    flat = {"depth": memory_depth, "chunk_size": memory_chunk_size, "heads": memory_heads}
    clash = sorted(set(flat) & set(extra))
    if clash:
        raise ValueError(f"set {', '.join(clash)} with the memory_* keys, not inside memory={extra!r}")
    return {**flat, **extra}


def build_mac(
    *,
    dim: int,
    layer_index: int,
    heads: int = 4,
    n_persistent: int = 4,
    segment_len: int = 64,
    use_memory: bool = True,
    memory_depth: int = 2,
    memory_chunk_size: int = 16,
    memory_heads: int = 1,
    memory: dict | None = None,
) -> nn.Module:
    """Builder of kind ``titans-mac`` (:class:`~neural_memory.titans.mac.MemoryAsContext`)."""
    return MemoryAsContext(
        dim,
        segment_len=segment_len,
        n_persistent=n_persistent,
        heads=heads,
        use_memory=use_memory,
        memory=memory_kwargs(memory_depth, memory_chunk_size, memory_heads, memory),
    )


def build_mag(
    *,
    dim: int,
    layer_index: int,
    heads: int = 4,
    n_persistent: int = 4,
    window: int = 64,
    memory_depth: int = 2,
    memory_chunk_size: int = 16,
    memory_heads: int = 1,
    memory: dict | None = None,
) -> nn.Module:
    """Builder of kind ``titans-mag`` (:class:`~neural_memory.titans.mag.MemoryAsGate`)."""
    return MemoryAsGate(
        dim,
        window=window,
        n_persistent=n_persistent,
        heads=heads,
        memory=memory_kwargs(memory_depth, memory_chunk_size, memory_heads, memory),
    )


def build_mal(
    *,
    dim: int,
    layer_index: int,
    heads: int = 4,
    n_persistent: int = 4,
    window: int = 64,
    memory_depth: int = 2,
    memory_chunk_size: int = 16,
    memory_heads: int = 1,
    memory: dict | None = None,
) -> nn.Module:
    """Builder of kind ``titans-mal`` (:class:`~neural_memory.titans.mal.MemoryAsLayer`)."""
    return MemoryAsLayer(
        dim,
        window=window,
        n_persistent=n_persistent,
        heads=heads,
        memory=memory_kwargs(memory_depth, memory_chunk_size, memory_heads, memory),
    )


def build_lmm(
    *,
    dim: int,
    layer_index: int,
    n_persistent: int = 4,
    memory_depth: int = 2,
    memory_chunk_size: int = 16,
    memory_heads: int = 1,
    memory: dict | None = None,
) -> nn.Module:
    """Builder of kind ``titans-lmm`` (:class:`~neural_memory.titans.mal.LongTermMemoryLayer`)."""
    return LongTermMemoryLayer(
        dim,
        n_persistent=n_persistent,
        memory=memory_kwargs(memory_depth, memory_chunk_size, memory_heads, memory),
    )


register_kind(
    "titans-mac",
    build_mac,
    defaults={**ATTENTION_DEFAULTS, "segment_len": 64, **MEMORY_DEFAULTS},
    description="Titans MAC: memory read-out as context of segment attention (Eq. 21-25)",
)
register_kind(
    "titans-mag",
    build_mag,
    defaults={**ATTENTION_DEFAULTS, "window": 64, **MEMORY_DEFAULTS},
    description="Titans MAG: sliding-window attention gated by the memory (Eq. 26-28)",
)
register_kind(
    "titans-mal",
    build_mal,
    defaults={**ATTENTION_DEFAULTS, "window": 64, **MEMORY_DEFAULTS},
    description="Titans MAL: memory layer then sliding-window attention (Eq. 29-31)",
)
register_kind(
    "titans-lmm",
    build_lmm,
    defaults={"n_persistent": 4, **MEMORY_DEFAULTS},
    description="Titans (LMM): the neural memory alone, with persistent tokens (Eq. 29-30)",
)

__all__ = ["build_lmm", "build_mac", "build_mag", "build_mal", "memory_kwargs"]
