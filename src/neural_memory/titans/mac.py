r"""Titans MAC — Memory as a Context (Titans v1, §4.1, Eq. 21–25, Fig. 3a).

The sequence is cut into segments of ``C`` tokens. For segment :math:`S^{(t)}`:

1. Eq. 21 — read the long-term memory (no write) with the segment's queries: :math:`h_t`, one row per token;
2. Eq. 22 — build the extended segment :math:`[P \,\|\, h_t \,\|\, S^{(t)}]`;
3. Eq. 23 — causal attention inside it; nothing is attended across segments (T-U11);
4. Eq. 24–25 — write the attention output :math:`y_t` into the memory and gate :math:`y_t` with the
   read-out of the updated memory.

**Decisions where v1 is silent or non-causal (docs/errata.md, "Titans Eq. 21–25").**

* Rows of :math:`y_t`: only the ``C`` rows aligned with the segment are kept, written (Eq. 24) and returned.
  :math:`N_l = C` (one retrieved token per segment token).
* Causal mask over :math:`h_t`: :math:`h_j` is read with the query of token ``j``, so a segment query ``i``
  sees the persistent tokens, :math:`h_{\le i}` and :math:`S_{\le i}` only
  (:func:`~neural_memory.common.masks.mac_mask` with ``causal_memory=True``); Fig. 3a's full causal window
  would show :math:`h_{j>i}`, i.e. future tokens.
* Eq. 24–25 as printed write the whole segment's :math:`y_t` first and then read every row with
  :math:`\mathcal{M}_t`: output ``i`` would depend on tokens ``> i`` of its segment, which an LM cannot do.
  We write and read token by token (``NeuralMemory.forward(y)``: write :math:`y_i`, then read with the query
  of :math:`y_i`), so :math:`o_i` uses the memory after :math:`y_{\le i}`; at the segment end this is exactly
  :math:`\mathcal{M}_t` of Eq. 24, which the next segment's Eq. 21 reads.
* ⊗ is :math:`o = y \odot \sigma(\mathcal{M}^*_t(y))`, an element-wise sigmoid gate (as MAG's T-U10).
* The memory's short convolutions restart at every segment (both the retrieval queries of Eq. 21 and the
  keys/values/queries of the attention output), so segments interact only through the memory weights and
  momentum.

Streaming: the state holds the running memory state, the memory state at the current segment's start (for
Eq. 21), and the current segment's tokens and retrieved tokens so far — at most ``2 C`` rows, never more.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from neural_memory.common.checkpoint import checkpoint_chunks_group
from neural_memory.common.compiled import chunk_step
from neural_memory.common.masks import mac_mask
from neural_memory.registry import implements
from neural_memory.titans.chunked import checkpoint_group
from neural_memory.titans.mag import AttentionProjections, memory_config
from neural_memory.titans.memory import NeuralMemory
from neural_memory.titans.persistent import PersistentMemory, check_int, check_sequence
from neural_memory.titans.state import MemoryState


@dataclass(frozen=True)
class MACState:
    """Streaming state of :class:`MemoryAsContext`.

    Attributes:
        memory: the running memory, after writing the attention outputs of every token so far (None
            without memory).
        retrieval: the memory at the current segment's start, with the convolution cache of the retrieval
            queries (None between segments or without memory).
        memory_tokens: :math:`h_t` rows of the current segment so far, ``(B, offset, dim)``.
        segment_tokens: the current segment's input rows so far, ``(B, offset, dim)``.
        offset: tokens of the current segment already processed, ``0 <= offset < C``.
    """

    memory: MemoryState | None
    retrieval: MemoryState | None
    memory_tokens: Tensor
    segment_tokens: Tensor
    offset: int = 0

    def detach(self) -> MACState:
        return MACState(
            memory=None if self.memory is None else self.memory.detach(),
            retrieval=None if self.retrieval is None else self.retrieval.detach(),
            memory_tokens=self.memory_tokens.detach(),
            segment_tokens=self.segment_tokens.detach(),
            offset=self.offset,
        )

    def numel(self) -> int:
        states = [s.numel() for s in (self.memory, self.retrieval) if s is not None]
        return sum(states) + self.memory_tokens.numel() + self.segment_tokens.numel()


@implements("titans", 21, 22, 23, 24, 25)
class MemoryAsContext(nn.Module):
    r"""Titans MAC: the memory's read-out is context for segment attention (Titans v1, Eq. 21–25).

    .. math::
        h_t = \mathcal{M}^{*}_{t-1}(\mathbf{q}_t) \qquad (21)

        \tilde{\mathsf{S}}^{(t)} = \left[p_1 \; \dots \; p_{N_p}\right] \,\|\, h_t \,\|\,
        \mathsf{S}^{(t)} \qquad (22)

        y_t = \mathrm{Attn}\left(\tilde{\mathsf{S}}^{(t)}\right) \qquad (23)

        \mathcal{M}_t = \mathcal{M}_{t-1}(y_t) \qquad (24)

        o_t = y_t \otimes \mathcal{M}^{*}_t(y_t) \qquad (25)

    Each segment looks up the history in the long-term memory, attends over persistent tokens, that history
    and itself, then stores its attention output in the memory and is gated by what the memory returns.
    The causal reading of Eq. 23–25, the rows kept and ⊗ are documented in the module docstring and in
    docs/errata.md. ``use_memory=False`` drops :math:`h_t` and the gate: plain segment-wise causal
    attention with the persistent prefix.

    Args:
        dim: model width.
        segment_len: ``C >= 1`` (not given in v1).
        n_persistent: ``N_p >= 0``.
        heads: attention heads (dividing ``dim``).
        memory: keyword arguments of :class:`~neural_memory.titans.memory.NeuralMemory` (``dim`` excluded);
            its ``checkpoint_chunks`` applies to the chunks of a whole call, in whole segments, and its
            ``compile_chunks=True`` compiles MAC's whole segment step (Eq. 21–25 for one segment: retrieval,
            attention, memory write and gate; the memory's chunk loop, ``C / chunk_size`` chunks, is traced
            into that graph), so that the per-segment work outside the memory is compiled too.
        use_memory: False disables the memory branch (Eq. 21, 24, 25).

    Shapes:
        ``forward(x (B, T, dim), state) -> (o (B, T, dim), MACState)``.
    """

    def __init__(
        self,
        dim: int,
        *,
        segment_len: int,
        n_persistent: int,
        heads: int,
        memory: dict | None = None,
        use_memory: bool = True,
    ):
        super().__init__()
        self.dim = check_int("dim", dim, 1)
        self.segment_len = check_int("segment_len", segment_len, 1)
        if not isinstance(use_memory, bool):
            raise TypeError(f"use_memory must be a bool, got {type(use_memory).__name__}")
        self.use_memory = use_memory
        self.persistent = PersistentMemory(n_persistent, dim)
        self.attention = AttentionProjections(dim, heads)
        self.memory = NeuralMemory(dim, **memory_config(memory)) if use_memory else None
        self.n_memory = segment_len if use_memory else 0  # N_l = C

    # -- state -----------------------------------------------------------------------------------------------

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> MACState:
        """Stream start: :math:`\\mathcal{M}_0`, no segment in progress."""
        check_int("batch_size", batch_size, 1)
        memory = None
        if self.memory is not None:
            memory = self.memory.init_state(batch_size, device=device, dtype=dtype)
        return self._between_segments(memory, batch_size, device=device, dtype=dtype)

    def _between_segments(self, memory, batch_size: int, *, device, dtype) -> MACState:
        empty = torch.zeros(batch_size, 0, self.dim, device=device, dtype=dtype)
        return MACState(memory=memory, retrieval=None, memory_tokens=empty, segment_tokens=empty, offset=0)

    def _start_segment(self, state: MACState, batch_size: int, device, dtype) -> MACState:
        if self.memory is None:
            return state
        # the short convolutions restart per segment: segments meet only through the memory weights
        fresh = {
            name: conv.empty_cache(batch_size, device=device, dtype=dtype)
            for name, conv in self.memory.convs.items()
        }
        memory = replace(state.memory, conv=fresh)
        return replace(state, memory=memory, retrieval=memory)

    # -- the equations -----------------------------------------------------------------------------------

    def extended_mask(self, *, device=None) -> Tensor:
        """Attention mask of the segment queries over ``[P | h_t | S^(t)]``: ``(C, N_p + N_l + C)`` bool."""
        full = mac_mask(
            self.persistent.n_persistent,
            self.n_memory,
            self.segment_len,
            causal_memory=self.use_memory,
            device=device,
        )
        return full[self.persistent.n_persistent + self.n_memory :]

    @implements("titans", 21)
    def retrieve_history(self, segment: Tensor, retrieval: MemoryState) -> tuple[Tensor, MemoryState]:
        r"""Read the memory of the previous segments with the segment's queries (Titans v1, Eq. 21).

        .. math::
            h_t = \mathcal{M}^{*}_{t-1}(\mathbf{q}_t), \qquad \mathbf{q}_t = \mathsf{S}^{(t)} W_Q \qquad (21)

        A forward pass of the memory without weight change; one retrieved row per segment row (``N_l = C``).

        Args:
            segment: rows of :math:`S^{(t)}`, ``(B, n, dim)``.
            retrieval: memory state :math:`\mathcal{M}_{t-1}` (with the retrieval-query convolution cache).

        Returns:
            ``(h (B, n, dim), retrieval state with the advanced convolution cache)``.
        """
        return self.memory.retrieve(segment, retrieval)

    @implements("titans", 22)
    def extended_segment(self, persistent: Tensor, history: Tensor, segment: Tensor) -> Tensor:
        r"""The attention input of MAC (Titans v1, Eq. 22).

        .. math::
            \tilde{\mathsf{S}}^{(t)} = \left[p_1 \; p_2 \; \dots \; p_{N_p}\right] \,\|\, h_t \,\|\,
            \mathsf{S}^{(t)} \qquad (22)

        Args:
            persistent: ``(B, N_p, dim)``.
            history: :math:`h_t`, ``(B, n_h, dim)``.
            segment: ``(B, n_s, dim)``.

        Returns:
            ``(B, N_p + n_h + n_s, dim)``, in that order.
        """
        return torch.cat([persistent, history, segment], dim=1)

    @implements("titans", 23)
    def segment_attention(self, queries: Tensor, extended: Tensor, start: int) -> Tensor:
        r"""Causal attention of segment rows over the extended segment (Titans v1, Eq. 23, T-U11).

        .. math::
            y_t = \mathrm{Attn}\left(\tilde{\mathsf{S}}^{(t)}\right) \qquad (23)

        Only the rows of the segment tokens are computed (the persistent and memory rows of :math:`y_t` are
        not used, docs/errata.md). Query ``i`` of the segment sees the persistent tokens, :math:`h_{\le i}`
        and :math:`S_{\le i}` (:meth:`extended_mask`).

        Args:
            queries: segment rows ``start .. start + n - 1``, ``(B, n, dim)``.
            extended: ``[P | h_{< start + n} | S_{< start + n}]``, ``(B, N_p + n_h + start + n, dim)`` with
                ``n_h = start + n`` (memory on) or ``0`` (memory off).
            start: position of the first query row inside its segment.

        Returns:
            ``y`` for the query rows, ``(B, n, dim)``.
        """
        n_p, stop = self.persistent.n_persistent, start + queries.shape[1]
        device = queries.device
        mask = self.extended_mask(device=device)[start:stop]
        columns = [torch.arange(n_p, device=device)]
        if self.use_memory:
            columns.append(n_p + torch.arange(stop, device=device))
        columns.append(n_p + self.n_memory + torch.arange(stop, device=device))
        mask = mask[:, torch.cat(columns)]
        k, v = self.attention.keys_values(extended)
        return self.attention.attend(self.attention.queries(queries), k, v, mask)

    @implements("titans", 24, 25)
    def memory_output(self, y: Tensor, memory: MemoryState) -> tuple[Tensor, MemoryState]:
        r"""Write the attention output into the memory and gate it with the read-out (Titans v1, Eq. 24–25).

        .. math::
            \mathcal{M}_t = \mathcal{M}_{t-1}(y_t) \qquad (24) \qquad\qquad
            o_t = y_t \otimes \mathcal{M}^{*}_t(y_t) \qquad (25)

        Causal reading (docs/errata.md): row ``i`` is written, then read with its own query, so
        :math:`o_i = y_i \odot \sigma(\mathcal{M}_{(i)}(y_i))` with :math:`\mathcal{M}_{(i)}` the memory
        after :math:`y_{\le i}`; after the last row the state is Eq. 24's :math:`\mathcal{M}_t`. ⊗ is a
        sigmoid gate.

        Args:
            y: attention output rows, ``(B, n, dim)``; memory: the running memory state.

        Returns:
            ``(o (B, n, dim), memory state after writing y)``.
        """
        read, memory = self.memory(y, memory)
        return y * torch.sigmoid(read), memory

    # -- forward ---------------------------------------------------------------------------------------------

    def forward(self, x: Tensor, state: MACState | None = None) -> tuple[Tensor, MACState]:
        check_sequence(x, self.dim)
        if state is None:
            state = self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        bounds = self._piece_bounds(state.offset, x.shape[1])
        group = self._pieces_per_checkpoint(len(bounds), x.shape[1])
        # one split, not a slice per piece: each slice's backward writes a zero-filled gradient of the whole
        # call (quadratic in its length); the split's backward concatenates the pieces' gradients once
        all_pieces = torch.split(x, [end - start for start, end in bounds], dim=1)
        outputs = []
        for first in range(0, len(bounds), group):
            pieces = list(all_pieces[first : first + group])
            if group < len(bounds):  # keep the state every `group` pieces, recompute the rest in backward
                ys, state = checkpoint_chunks_group(_run_pieces, self, pieces, state, check_hidden=first == 0)
            else:
                ys, state = _run_pieces(self, pieces, state)
            outputs.extend(ys)
        if not outputs:
            return x.new_zeros(x.shape), state
        return torch.cat(outputs, dim=1), state

    def _piece_bounds(self, offset: int, length: int) -> list[tuple[int, int]]:
        """``(start, end)`` of each piece of a call: the rest of the current segment, then whole segments."""
        bounds, position = [], 0
        while position < length:
            take = min(self.segment_len - offset, length - position)
            bounds.append((position, position + take))
            position, offset = position + take, 0
        return bounds

    def _pieces_per_checkpoint(self, n_pieces: int, length: int) -> int:
        """Segment pieces per checkpointed group; ``n_pieces`` (no checkpointing) when it is off.

        The memory is written one segment per call, so its own ``checkpoint_chunks`` (applied per call)
        never sees more than ``C / chunk_size`` chunks. MAC applies the setting to the chunks of the whole
        call instead, in whole segments: with ``"auto"`` at 16K tokens (chunk 16, ``C = 64``) the state is
        kept every 8 segments (32 chunks) and everything in between (attention included) is recomputed.
        """
        if self.memory is None:
            return max(n_pieces, 1)
        chunk = self.memory.chunk_size
        n_chunks = -(-length // chunk)
        group_chunks = checkpoint_group(self.memory.checkpoint_chunks, n_chunks)
        if group_chunks >= n_chunks:
            return max(n_pieces, 1)
        return max(1, group_chunks * chunk // self.segment_len)

    def _piece(self, x: Tensor, state: MACState) -> tuple[Tensor, MACState]:
        """Rows ``offset .. offset + n - 1`` of one segment (``offset + n <= C``)."""
        batch, device, dtype = x.shape[0], x.device, x.dtype
        if state.offset == 0:
            state = self._start_segment(state, batch, device, dtype)
        retrieval, history = state.retrieval, state.memory_tokens
        if self.use_memory:
            h, retrieval = self.retrieve_history(x, retrieval)  # Eq. 21
            history = torch.cat([history, h], dim=1)
        segment = torch.cat([state.segment_tokens, x], dim=1)
        persistent = self.persistent.expand(batch).to(dtype=dtype)
        extended = self.extended_segment(persistent, history, segment)  # Eq. 22
        y = self.segment_attention(x, extended, state.offset)  # Eq. 23
        memory = state.memory
        out = y
        if self.use_memory:
            out, memory = self.memory_output(y, memory)  # Eq. 24-25
        offset = state.offset + x.shape[1]
        if offset == self.segment_len:
            return out, self._between_segments(memory, batch, device=device, dtype=dtype)
        return out, MACState(
            memory=memory, retrieval=retrieval, memory_tokens=history, segment_tokens=segment, offset=offset
        )


# A pytree node, so that checkpointing (neural_memory.common.checkpoint) sees the tensors inside the state.
pytree.register_dataclass(MACState)


def _run_pieces(mac: MemoryAsContext, pieces: list[Tensor], state: MACState) -> tuple[list[Tensor], MACState]:
    """Consecutive pieces through :meth:`MemoryAsContext._piece`; the unit that MAC checkpoints."""
    step = chunk_step(_segment_piece, mac.memory is not None and mac.memory.compile_chunks)
    outputs = []
    for piece in pieces:
        out, state = step(mac, piece, state)
        outputs.append(out)
    return outputs, state


def _segment_piece(mac: MemoryAsContext, piece: Tensor, state: MACState) -> tuple[Tensor, MACState]:
    """:meth:`MemoryAsContext._piece` as a function of the module: the step that ``compile_chunks=True``
    compiles (:func:`~neural_memory.common.compiled.chunk_step`; one graph shared by every MAC layer)."""
    return mac._piece(piece, state)


__all__ = ["MACState", "MemoryAsContext"]
