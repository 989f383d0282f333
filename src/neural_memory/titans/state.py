"""The carried state of the long-term memory: what a stream needs to continue exactly where it stopped.

Chunk boundaries are fixed on the stream (every ``chunk_size`` tokens from its start), so a call may end in
the middle of a chunk. To continue that chunk exactly, the state keeps the weights at the chunk's start
(where the chunk's gradients are taken, Titans Eq. 16) beside the current weights and momentum, and how many
tokens of the chunk are already in. Everything here has a size fixed by the model, never by the stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from torch import Tensor
from torch.utils import _pytree as pytree

Weights = tuple[Tensor, ...]


@dataclass(frozen=True)
class MemoryState:
    """State of a :class:`~neural_memory.titans.memory.NeuralMemory` after ``tokens_seen`` tokens.

    Attributes:
        weights: current memory weights :math:`\\mathcal{M}_t`, one ``(batch*heads, d_in, d_out)`` per layer.
        momentum: current momentum :math:`S_t`, same shapes.
        chunk_weights: :math:`\\mathcal{M}_{t'}`, the weights at the start of the current chunk.
        offset: tokens of the current chunk already processed, ``0 <= offset < chunk_size``.
        tokens_seen: tokens written since the start of the stream.
        conv: convolution caches of the projections (``"q"``, ``"k"``, ``"v"``), ``(batch, kernel-1, dim)``.
        accumulator: for a MIRAS retention that is not linear in the gradients (Moneta's normalisation,
            Memora's softmax), the linear accumulator :math:`C_t` beside the weights
            :math:`\\mathcal{M}_t = \\phi(C_t)`; ``None`` when the weights are their own accumulator (Titans).
    """

    weights: Weights
    momentum: Weights
    chunk_weights: Weights
    offset: int = 0
    tokens_seen: int = 0
    conv: dict[str, Tensor] = field(default_factory=dict)
    accumulator: Weights | None = None

    @property
    def carried(self) -> Weights:
        """What the linear recurrence updates: the accumulator if there is one, else the weights."""
        return self.weights if self.accumulator is None else self.accumulator

    def advanced(
        self,
        tokens: int,
        weights: Weights,
        momentum: Weights,
        chunk_weights: Weights,
        offset: int,
        accumulator: Weights | None = None,
    ) -> MemoryState:
        """The state after ``tokens`` more tokens were written (convolution caches unchanged)."""
        return replace(
            self,
            weights=weights,
            momentum=momentum,
            chunk_weights=chunk_weights,
            offset=offset,
            tokens_seen=self.tokens_seen + tokens,
            accumulator=accumulator,
        )

    def detach(self) -> MemoryState:
        """The same state cut from the autograd graph (truncated back-propagation between calls)."""
        return replace(
            self,
            weights=tuple(w.detach() for w in self.weights),
            momentum=tuple(s.detach() for s in self.momentum),
            chunk_weights=tuple(w.detach() for w in self.chunk_weights),
            conv={name: c.detach() for name, c in self.conv.items()},
            accumulator=None if self.accumulator is None else tuple(a.detach() for a in self.accumulator),
        )

    def numel(self) -> int:
        """Number of scalars held; constant along a stream (tests check it does not grow)."""
        tensors = [*self.weights, *self.momentum, *self.chunk_weights, *self.conv.values()]
        tensors += list(self.accumulator or ())
        return sum(t.numel() for t in tensors)


# A pytree node (its fields are its children), so that checkpointing (neural_memory.common.checkpoint) sees
# the tensors inside a state passed to a checkpointed group.
pytree.register_dataclass(MemoryState)
