r"""The Titans neural long-term memory (LMM) as a PyTorch module (Titans §3.1-3.2, §4.4).

A sequence layer whose state is a neural network. For every token :math:`x_t`:

1. project keys, values and queries (Eq. 11 and :math:`q_t = x_t W_Q`), each followed by a causal
   depthwise-separable convolution and SiLU; keys and queries are l2-normalised (§4.4);
2. *write*: one step of gradient descent with momentum and forgetting on the associative loss
   :math:`\|\mathcal{M}(k_t) - v_t\|^2` (Eq. 12-14), with data-dependent gates :math:`\alpha_t, \eta_t,
   \theta_t` (:mod:`neural_memory.titans.gates`);
3. *read*: :math:`y_t = \mathcal{M}^*(q_t)`, a forward pass without weight change (Eq. 15);
4. output normalisation and a SiLU gate from :math:`x_t`, then a linear projection (§4.4).

Training uses the chunk-parallel form (:mod:`neural_memory.titans.chunked`); ``impl="reference"`` runs the
token loop (:mod:`neural_memory.titans.reference`) instead, for tests. The state returned by ``forward``
continues the stream exactly, for any split point (see :class:`~neural_memory.titans.state.MemoryState`).

**Which state answers the query of token t.** Eq. 15 leaves the index of :math:`\mathcal{M}^*` open. The
default ``read="token"`` answers :math:`q_t` with :math:`\mathcal{M}_t`, the memory *after* writing token
``t``: the LMM generalises linear attention, whose read :math:`y_t = Q_t\mathcal{M}_t` (Eq. 5) includes token
``t``, and it is causal because :math:`x_t` is known when :math:`y_t` is produced. Inside a chunk,
:math:`\mathcal{M}_t` is the weights after the chunk's first ``t - t'`` mini-batch steps (gradients at
:math:`\mathcal{M}_{t'}`, Eq. 16). ``read="chunk"`` answers every query of a chunk with the chunk's starting
weights :math:`\mathcal{M}_{t'}` — one plain forward pass, cheaper, but blind to the last up to
``chunk_size`` tokens. Both are tested against the token loop.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from neural_memory.common.compiled import check_compile_chunks
from neural_memory.common.memory_block import MemoryBlock
from neural_memory.registry import implements
from neural_memory.titans.chunked import checkpoint_group, chunked_memory
from neural_memory.titans.gates import FixedGates, MemoryGates
from neural_memory.titans.memory_model import MemoryMLP
from neural_memory.titans.reference import reference_memory
from neural_memory.titans.state import MemoryState
from neural_memory.titans.update import check_gates

READS = ("token", "chunk")
IMPLS = ("chunked", "reference")


class NeuralMemory(MemoryBlock):
    """Titans' long-term memory module: ``forward(x (B, T, dim), state) -> (y (B, T, dim), state)``.

    Args:
        dim: model width; split into ``heads`` independent memories of width ``dim // heads``.
        depth: layers of the memory MLP, :math:`L_M \\ge 1` (1 = linear, matrix-valued memory).
        chunk_size: tokens per chunk ``b`` of the parallel form (Eq. 16); 1 is the exact recurrence.
        heads: number of memory heads.
        expansion: hidden width of the memory MLP is ``expansion * dim // heads``.
        activation: non-linearity of the memory MLP, ``"silu"`` or ``"gelu"``.
        residual_norm: read the memory out as :math:`x + \\gamma\\odot\\mathrm{LN}(z) + \\beta` (the later
            version's residual block, which keeps the inner loop stable; ``docs/errata.md``); ``None``
            (default) means ``depth >= 2``.
        forget_to_initial: forgetting moves the weights towards the learned :math:`\\mathcal{M}_0`,
            :math:`\\mathcal{M}_t - \\mathcal{M}_0 = (1-\\alpha_t)(\\mathcal{M}_{t-1} - \\mathcal{M}_0)
            + S_t`, instead of towards zero (which makes the LayerNorm read-out's inner loop chaotic on long
            sequences; ``docs/errata.md``, "Titans Eq. 13"); ``None`` (default) means ``residual_norm``.
        momentum: keep the past surprise (Eq. 14); False sets :math:`\\eta \\equiv 0`.
        weight_decay: forget (Eq. 13); False sets :math:`\\alpha \\equiv 0`.
        qk_norm: l2-normalise queries and keys (§4.4).
        conv_kernel: kernel of the depthwise-separable convolutions after q/k/v projections; 0 disables.
        output_norm: RMS-normalise the read-out before the output gate (§4.4).
        output_gate: gate the read-out with ``SiLU(x W_g)`` (§4.4).
        read: ``"token"`` (query ``t`` reads :math:`\\mathcal{M}_t`) or ``"chunk"`` (reads the chunk start).
        gates: ``"learned"`` (data-dependent) or ``"fixed"`` (constants ``fixed_gates``).
        fixed_gates: ``(alpha, eta, theta)`` for ``gates="fixed"``.
        theta_max: bound of the learned step size :math:`\\theta_t`.
        impl: ``"chunked"`` (fast) or ``"reference"`` (token loop, slow; for tests).
        checkpoint_chunks: if > 0, keep chunk states for back-propagation only every this many chunks and
            recompute the rest (same gradients, less memory, one more forward pass of the memory); ``0``
            keeps every chunk's state; ``"auto"`` (default) keeps them all up to 512 chunks per call and one
            every :math:`\\lceil\\sqrt{n}\\rceil` beyond
            (:func:`~neural_memory.titans.chunked.checkpoint_group`), so they grow as :math:`\\sqrt{T}`,
            not :math:`T`, with the sequence length (``titans-lmm`` at 16K tokens: delta peak RSS 3.9 ->
            0.9 GB for 8 % more CPU time; ``benchmarks/README.md``). No second derivative through a
            checkpointed call (:mod:`~neural_memory.common.checkpoint`); set ``0`` for one.
        compile_chunks: run the chunked form's per-chunk step through ``torch.compile``
            (:mod:`~neural_memory.common.compiled`; needs a C++ compiler): the same arithmetic fused, equal
            to the eager step to rounding, after tens of seconds of compiling on the first call. Off by
            default; it pays off over a training run (``benchmarks/README.md``, "The per-chunk step
            compiled").
    """

    def __init__(
        self,
        dim: int,
        *,
        depth: int = 2,
        chunk_size: int = 16,
        heads: int = 1,
        expansion: int = 4,
        activation: str = "silu",
        residual_norm: bool | None = None,
        forget_to_initial: bool | None = None,
        momentum: bool = True,
        weight_decay: bool = True,
        qk_norm: bool = True,
        conv_kernel: int = 4,
        output_norm: bool = True,
        output_gate: bool = True,
        read: str = "token",
        gates: str = "learned",
        fixed_gates: tuple[float, float, float] | None = None,
        theta_max: float = 0.02,
        impl: str = "chunked",
        checkpoint_chunks: int | str = "auto",
        compile_chunks: bool = False,
    ):
        super().__init__()
        _validate(dim, depth, chunk_size, heads, conv_kernel, read, gates, fixed_gates, impl)
        checkpoint_group(checkpoint_chunks, 1)  # validates it
        check_compile_chunks(compile_chunks)
        if compile_chunks and impl != "chunked":
            raise ValueError(
                f"compile_chunks=True compiles the chunked form's step: needs impl='chunked', got {impl!r}"
            )
        self.chunk_size, self.read, self.impl = chunk_size, read, impl
        self.checkpoint_chunks, self.compile_chunks = checkpoint_chunks, compile_chunks
        # registration order (projections, memory, gates, output) fixes the random initialisation
        self._init_projections(dim, heads, qk_norm=qk_norm, conv_kernel=conv_kernel)
        self.memory = MemoryMLP(
            self.head_dim,
            depth=depth,
            expansion=expansion,
            heads=heads,
            activation=activation,
            residual_norm=residual_norm,
            forget_to_initial=forget_to_initial,
        )
        if gates == "learned":
            self.gates = MemoryGates(
                dim, heads, momentum=momentum, weight_decay=weight_decay, theta_max=theta_max
            )
        else:
            alpha, eta, theta = fixed_gates  # type: ignore[misc]
            self.gates = FixedGates(heads, alpha if weight_decay else 0.0, eta if momentum else 0.0, theta)
        self._init_output(dim, output_norm=output_norm, output_gate=output_gate)

    # -- state -----------------------------------------------------------------------------------------

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> MemoryState:
        """The state before the first token: :math:`\\mathcal{M}_0` (learned), zero momentum, empty caches."""
        weights = self.memory.expand(batch_size)
        if device is not None or dtype is not None:
            weights = tuple(w.to(device=device, dtype=dtype) for w in weights)
        conv = self.empty_conv_caches(batch_size, device=weights[0].device, dtype=weights[0].dtype)
        momentum = tuple(torch.zeros_like(w) for w in weights)
        return MemoryState(weights=weights, momentum=momentum, chunk_weights=weights, conv=conv)

    # -- projections (Eq. 11 and the query projection; the block's parts: neural_memory.common.memory_block)

    @implements("titans", 11)
    def keys_values(self, x: Tensor, state: MemoryState) -> tuple[Tensor, Tensor, MemoryState]:
        r"""Keys and values of the tokens to write (Titans v1, Eq. 11).

        .. math::
            \mathbf{k}_t = x_t W_K, \qquad \mathbf{v}_t = x_t W_V \qquad (11)

        followed by the §4.4 details: causal depthwise-separable convolution, SiLU, l2-normalised keys.

        Args:
            x: ``(B, T, dim)``; state: carries the convolution caches.

        Returns:
            ``keys, values`` of shape ``(B * heads, T, dim // heads)`` and the state with updated caches.
        """
        keys, caches = self._project("k", x, state)
        values, caches = self._project("v", x, replace(state, conv=caches))
        return keys, values, replace(state, conv=caches)

    def queries(self, x: Tensor, state: MemoryState) -> tuple[Tensor, MemoryState]:
        """:math:`q_t = x_t W_Q` (+ convolution, SiLU, l2 norm): ``(B * heads, T, dim // heads)``."""
        q, caches = self._project("q", x, state)
        return q, replace(state, conv=caches)

    # -- the three entry points ------------------------------------------------------------------------------

    def forward(self, x: Tensor, state: MemoryState | None = None) -> tuple[Tensor, MemoryState]:
        """Write every token (Eq. 11-14) and read it with its query (Eq. 15): ``(B, T, dim)`` → same."""
        state = self._start(x, state)
        keys, values, state = self.keys_values(x, state)
        q, state = self.queries(x, state)
        y, state = self._write(x, keys, values, q, state)
        return self._output(y, x), state

    @implements("titans", 15)
    def retrieve(self, x: Tensor, state: MemoryState | None = None) -> tuple[Tensor, MemoryState]:
        r"""Read the memory without changing it (Titans v1, Eq. 15).

        .. math::
            y_t = \mathcal{M}^{*}(\mathbf{q}_t) \qquad (15)

        Every query of ``x`` is answered by the current weights :math:`\mathcal{M}` of ``state`` (the
        memory after the last written token; MAC's :math:`\mathcal{M}^*_{t-1}(q_t)`, Eq. 21). The returned
        state differs from ``state`` only in the query convolution's cache.

        Args:
            x: ``(B, T, dim)``.

        Returns:
            ``(y (B, T, dim), state)``.
        """
        state = self._start(x, state)
        q, state = self.queries(x, state)
        y = self.memory.recall(state.weights, q)
        return self._output(y, x), state

    def update(self, x: Tensor, state: MemoryState | None = None) -> MemoryState:
        """Write the tokens of ``x`` (Eq. 11-14) without reading: the new state (MAC Eq. 24)."""
        state = self._start(x, state)
        keys, values, state = self.keys_values(x, state)
        _, state = self._write(x, keys, values, None, state)
        return state

    # -- internals -------------------------------------------------------------------------------------------

    def _start(self, x: Tensor, state: MemoryState | None) -> MemoryState:
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (batch, seq, {self.dim}), got {shape}")
        if state is None:
            return self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        if state.weights[0].shape[0] != x.shape[0] * self.heads:
            raise ValueError(
                f"state is for batch {state.weights[0].shape[0] // self.heads}, x has batch {x.shape[0]}"
            )
        return state

    def _write(self, x, keys, values, queries, state):
        alpha, eta, theta = self.gates(x)
        if not torch.compiler.is_compiling():  # learned gates are in range by construction; fixed ones too
            check_gates(alpha.detach(), eta.detach(), theta.detach())
        args = (self.memory, state, keys, values, queries, alpha, eta, theta)
        if self.impl == "reference":
            return reference_memory(*args, chunk_size=self.chunk_size, read=self.read)
        return chunked_memory(
            *args, chunk_size=self.chunk_size, read=self.read, checkpoint_chunks=self.checkpoint_chunks,
            compile_chunks=self.compile_chunks,
        )  # fmt: skip


def _validate(dim, depth, chunk_size, heads, conv_kernel, read, gates, fixed_gates, impl) -> None:
    for name, value, low in (
        ("dim", dim, 1),
        ("depth", depth, 1),
        ("chunk_size", chunk_size, 1),
        ("heads", heads, 1),
    ):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
    if dim % heads:
        raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
    if conv_kernel < 0:
        raise ValueError(f"conv_kernel must be >= 0 (0 disables the convolution), got {conv_kernel}")
    if read not in READS:
        raise ValueError(f"read must be one of {READS}, got {read!r}")
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if gates not in ("learned", "fixed"):
        raise ValueError(f"gates must be 'learned' or 'fixed', got {gates!r}")
    if gates == "fixed" and (fixed_gates is None or len(fixed_gates) != 3):
        raise ValueError("gates='fixed' needs fixed_gates=(alpha, eta, theta)")
