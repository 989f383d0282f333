r"""The Continuum Memory System (NL v1, §7.1, Eq. 70–74; N-U9, N-U11, N-U12).

A CMS replaces a Transformer's single feed-forward block by ``k`` MLP blocks ("levels"), each with its own
update period: level :math:`\ell` keeps its parameters fixed for :math:`C^{(\ell)}` tokens, sums its error
signal over those tokens, and applies the sum at the chunk's end (Eq. 71). The blocks are chained (Eq. 70;
the *Sequential* CMS of Eq. 73, the default, and the *Nested* CMS of Eq. 72, whose faster levels restart from
their initial state at every chunk end of the next slower level, N-U11) or run side by side and summed with
learnable weights (the *Independent* CMS of Eq. 74).

**The error signal** :math:`f(\theta; x_t)` of Eq. 71. The paper names only "the error component of an
arbitrary optimizer (e.g. :math:`\nabla\mathcal L(\theta^{(f_\ell)}_t; x_t)` in gradient descent)" with
:math:`\mathcal L` the task loss; it gives no local objective for a level. Two choices, the constructor's
``signal``:

* ``"task"`` (default, the paper's reading): :math:`f = \nabla_{\theta^{(\ell)}}\mathcal L_t`, the gradient
  of a per-token loss of the CMS *output* that the caller supplies (``loss_fn``: next-token loss through an
  LM head, a regression target, ...). It reaches every level through the chain.
* ``"reconstruction"`` (local, needs no caller): each level is an auto-associative memory of its own
  input (NL Eq. 6 with keys = values), :math:`\mathcal L^{(\ell)}_t = \tfrac12\|\mathrm{MLP}^{(\ell)}(a_t)
  - a_t\|_2^2` with :math:`a_t` the level's input; with ``residual=True`` it is the block (the branch, not
  :math:`a + \mathrm{MLP}(a)`) that reconstructs its input. A level's signal never depends on the levels
  after it.

**Chunk boundaries and the window.** Tokens are numbered :math:`i = 1, 2, \dots` along the stream; level
:math:`\ell` updates after token :math:`i` when :math:`i \equiv 0 \pmod{C^{(\ell)}}`. The printed sum runs
over :math:`t = i - C .. i`, :math:`C + 1` terms, so the last token of the previous chunk (with its gradient
at the previous parameters) would be counted twice. ``window="chunk"`` (default) sums the :math:`C` tokens
since the last update; ``window="printed"`` adds that extra term (docs/errata.md, NL Eq. 71).

**Parallel form.** The chunk sizes must divide one another (§7.1 assumes :math:`C^{(\ell)}` divisible by
:math:`C^{(\ell-1)}`), so no level changes inside a span of :math:`C_{\min}` tokens aligned on the stream.
The module runs each such span in one batched pass: forward through all levels, then the gradient of the
span's summed loss at the frozen parameters, which is the sum of the per-token gradients. A slower level
adds the spans of its chunk to its accumulator and applies it at its chunk end. With one level the span is
the level's chunk. The chain variants with the ``"reconstruction"`` signal go further: a level's signal
depends only on its input and its own weights, so each level runs over the whole call before the next one,
in spans of its own chunk (the slow levels in fewer, longer passes). :func:`continuum_memory_reference` is
the token-by-token loop beside it.

**State** (:class:`CMSState`): every level's current parameters, the accumulated gradient of its partial
chunk, and the stream position (which fixes each level's position inside its chunk). Its size does not
depend on the length of the stream, and one call equals two calls at any split point.

**Outer loop.** The initial parameters :math:`\theta^{(\ell)}_0` (and the Independent CMS's mixing weights)
are ``nn.Parameter`` s. Under grad mode the inner gradients are taken with ``create_graph=True``, so the
outer gradient flows through the inner updates (as in Titans' memory); under ``torch.no_grad`` the levels
still learn, without a graph, to the same values: each inner gradient is the partial one of Eq. 71, taken at
a fresh alias of the level's weights (:func:`_inner_leaf`), not through the other levels' earlier updates.

Shapes: inputs and outputs ``(batch, T, dim)``; every sequence of the batch owns its copy of the level
parameters, ``(batch, d_in, d_out)`` per weight (row convention, ``h = a W``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from neural_memory.common.validation import check_int
from neural_memory.registry import implements

Weights = tuple[
    Tensor, ...
]  # one level: (gate, up, down) for SwiGLU or (up, down), each (batch, d_in, d_out)
LossFn = Callable[[Tensor, int], Tensor]  # (y (B, n, dim), stream position of y's first token) -> (B, n)

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"silu": F.silu, "gelu": F.gelu}
VARIANTS = ("sequential", "nested", "independent")
SIGNALS = ("task", "reconstruction")
WINDOWS = ("chunk", "printed")


def mlp_block(a: Tensor, weights: Weights, activation: str = "silu") -> Tensor:
    """One MLP block: ``(σ(a W_g) ⊙ a W_u) W_d`` (SwiGLU, three weights) or ``σ(a W_u) W_d`` (two weights).

    ``a (batch, n, d_in)``, each weight ``(batch, d_in, d_out)``; returns ``(batch, n, d_out)``.
    """
    act = ACTIVATIONS[activation]
    if len(weights) == 3:
        gate, up, down = weights
        return (act(a @ gate) * (a @ up)) @ down
    up, down = weights
    return act(a @ up) @ down


@implements("nl", 70)
def cms_chain(
    x: Tensor,
    levels: Sequence[Weights],
    *,
    activation: str = "silu",
    residual: bool = False,
    pre_norm: bool = False,
    out_norm: bool = False,
) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
    r"""The CMS forward chain (NL v1, Eq. 70).

    .. math::
        \mathbf{y}_t = \text{MLP}^{(f_k)}(\text{MLP}^{(f_{k-1})}(\cdots \text{MLP}^{(f_1)}(\mathbf{x}_t)))
        \qquad (70)

    Each block reads the previous block's output; ``residual=True`` adds each block to its input,
    :math:`a_\ell = a_{\ell-1} + \mathrm{MLP}^{(\ell)}(a_{\ell-1})` (the paper omits normalisations and
    residuals from the formula). ``pre_norm=True`` feeds each block the RMS-normalised input
    :math:`\bar a = a/\mathrm{rms}(a)` (no gain), :math:`a_\ell = a_{\ell-1} +
    \mathrm{MLP}^{(\ell)}(\bar a_{\ell-1})`, as the language model pre-norms the feed-forward block a level
    replaces (Hope, docs/errata.md NL Eq. 94–97). ``out_norm=True`` RMS-normalises each block's output
    (no gain) before the residual sum, :math:`a_\ell = a_{\ell-1} + \mathrm{rms\_norm}(\mathrm{MLP}^{(\ell)}
    (\bar a_{\ell-1}))`, the residual-norm read-out of the later Titans text: the reconstruction loss is then
    invariant to the scale of :math:`W_u` and :math:`W_d`, so a too-long inner step enlarges them and
    shortens the next one instead of diverging. Levels apply in the order given: the paper's level 1 is the
    slowest (Eq. 73's prose), so pass the slowest level first to follow it.

    Args:
        x: ``(batch, n, dim)``.
        levels: per level, its weights (see :func:`mlp_block`), each ``(batch, d_in, d_out)``.
        activation: ``"silu"`` or ``"gelu"``.
        residual: add each block's output to its input.
        pre_norm: RMS-normalise each block's input.
        out_norm: RMS-normalise each block's output.

    Returns:
        ``y (batch, n, dim)`` and, per level, ``(block input, block output)`` (the input after the pre-norm,
        the output after the out-norm and without the residual), which the reconstruction signal uses.
    """
    pairs, a = [], x
    for weights in levels:
        block_in, out = _chain_block(a, weights, activation, pre_norm, out_norm)
        pairs.append((block_in, out))
        a = a + out if residual else out
    return a, pairs


def _chain_block(
    a: Tensor, weights: Weights, activation: str, pre_norm: bool, out_norm: bool
) -> tuple[Tensor, Tensor]:
    """One level of :func:`cms_chain` without the residual: ``(block input, block output)``."""
    block_in = F.rms_norm(a, a.shape[-1:]) if pre_norm else a
    out = mlp_block(block_in, weights, activation)
    if out_norm:
        out = F.rms_norm(out, out.shape[-1:])
    return block_in, out


@implements("nl", 74)
def cms_independent(
    x: Tensor, levels: Sequence[Weights], mix: Tensor, *, activation: str = "silu", residual: bool = False
) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
    r"""The Independent (head-wise) CMS with a weighted-sum aggregator (NL v1, Eq. 74).

    .. math::
        \boldsymbol{y}_t = \text{Agg}\left(\text{MLP}^{(f_k)}(\boldsymbol{x}_t),
            \text{MLP}^{(f_{k-1})}(\boldsymbol{x}_t), \cdots, \text{MLP}^{(f_1)}(\boldsymbol{x}_t)\right)
        \qquad (74)

    Every block reads the same input; :math:`\mathrm{Agg}` is the weighted sum
    :math:`\sum_\ell w_\ell\,\mathrm{MLP}^{(\ell)}(x_t)` (plus :math:`x_t` with ``residual=True``). The paper
    leaves Agg open; the catalog suggests this one.

    Args:
        x: ``(batch, n, dim)``.
        levels: per level, its weights, each ``(batch, d_in, d_out)``.
        mix: the aggregation weights :math:`w`, ``(k,)``.
        activation, residual: as in :func:`cms_chain`.

    Returns:
        ``y (batch, n, dim)`` and, per level, ``(x, block output)``.
    """
    if mix.shape != (len(levels),):
        raise ValueError(f"mix must be ({len(levels)},), got {tuple(mix.shape)}")
    pairs = [(x, mlp_block(x, weights, activation)) for weights in levels]
    y = sum(w * out for w, (_, out) in zip(mix, pairs, strict=True))
    return (x + y if residual else y), pairs


@dataclass(frozen=True)
class CMSState:
    """Streaming state of a :class:`ContinuumMemory` after ``position`` tokens.

    Attributes:
        weights: per level, its current parameters :math:`\\theta^{(\\ell)}`, each ``(batch, d_in, d_out)``.
        grads: per level, the gradients summed over its partial chunk (not yet applied), same shapes.
        position: tokens seen since the start of the stream; level ℓ is ``position % C^(ℓ)`` tokens into
            its chunk.
    """

    weights: tuple[Weights, ...]
    grads: tuple[Weights, ...]
    position: int = 0

    def detach(self) -> CMSState:
        """The same state cut from the autograd graph (truncated back-propagation between calls)."""
        cut = lambda levels: tuple(tuple(w.detach() for w in level) for level in levels)  # noqa: E731
        return replace(self, weights=cut(self.weights), grads=cut(self.grads))

    def numel(self) -> int:
        """Number of scalars held; constant along a stream."""
        return sum(w.numel() for levels in (self.weights, self.grads) for level in levels for w in level)


class _Level(nn.Module):
    """The initial parameters θ_0 of one level, row convention, drawn N(0, 1/d_in)."""

    def __init__(self, dim: int, hidden: int, gated: bool):
        super().__init__()
        names = ("gate", "up", "down") if gated else ("up", "down")
        for name in names:
            d_in, d_out = (hidden, dim) if name == "down" else (dim, hidden)
            self.register_parameter(name, nn.Parameter(torch.randn(d_in, d_out) / math.sqrt(d_in)))
        self.names = names

    def weights(self) -> Weights:
        return tuple(getattr(self, name) for name in self.names)


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _check_chunk_sizes(chunk_sizes: object) -> tuple[int, ...]:
    if not isinstance(chunk_sizes, Sequence) or isinstance(chunk_sizes, str) or len(chunk_sizes) < 1:
        raise ValueError(f"chunk_sizes must be a sequence of >= 1 ints (one per level), got {chunk_sizes!r}")
    sizes = tuple(check_int(f"chunk_sizes[{i}]", c) for i, c in enumerate(chunk_sizes))
    ordered = sorted(set(sizes))
    for small, large in itertools.pairwise(ordered):
        if large % small:
            raise ValueError(
                f"chunk_sizes must divide one another (NL §7.1: C^(l) divisible by C^(l-1)); {small} does "
                f"not divide {large} in {sizes}"
            )
    return sizes


def _check_rates(rates: object, levels: int) -> tuple[float, ...]:
    values = [rates] * levels if isinstance(rates, int | float) and not isinstance(rates, bool) else rates
    if not isinstance(values, Sequence) or len(values) != levels:
        raise ValueError(f"rates must be a float or {levels} floats (one per level), got {rates!r}")
    for i, rate in enumerate(values):
        ok = (
            isinstance(rate, int | float) and not isinstance(rate, bool) and math.isfinite(rate) and rate >= 0
        )
        if not ok:
            raise ValueError(f"rates[{i}] must be a finite float >= 0, got {rate!r}")
    return tuple(float(r) for r in values)


@implements("nl", 70, 71, 72, 73, 74)
class ContinuumMemory(nn.Module):
    r"""The Continuum Memory System with chunked level updates (NL v1, Eq. 70–74; N-U9, N-U11, N-U12).

    .. math::
        \theta_{i+1}^{(f_{\ell})} = \theta_i^{(f_{\ell})} - \begin{cases}
            \sum_{t=i-C^{(\ell)}}^{i} \eta_t^{(\ell)} f(\theta_t^{(f_{\ell})}; x_t)
                & \text{if } i \equiv 0 \pmod{C^{(\ell)}},\\
            0 & \text{otherwise.} \end{cases} \qquad (71)

        \boldsymbol{\theta}_0^{(f_{s+1})} = \underset{\Phi}{\arg\min}\
            \mathbb{E}_{\mathcal{T} \sim C^{(s)}} \left[ \ell(\Theta, \mathcal{T}; \Phi) \right] \qquad (72)

        \boldsymbol{\theta}_0^{(f_s)} = \underset{\Phi}{\arg\min}\
            \mathbb{E}_{\mathcal{T} \sim C^{(1)}} \Big[ \ell(\Theta, \mathcal{T}; \Phi) \Big] \qquad (73)

    Level ℓ keeps its parameters for :math:`C^{(\ell)}` tokens, then steps by its rate times the error
    signal summed over them (the module docstring says which signal, which window and how the chunk is
    computed in parallel). The rate :math:`\eta^{(\ell)}` is constant per level (the paper gives no
    schedule). :math:`C^{(\ell)} = \max_i C^{(i)} / f_\ell` (N-U9): we take the chunk sizes, not the
    frequencies, as the configuration.

    Where the initial states are learned (the constructor's ``variant``):

    * ``"sequential"`` (Eq. 73, default): the levels are never reset along a stream, so a "task" is the
      whole context; every :math:`\theta^{(\ell)}_0` is an ``nn.Parameter`` the outer loop trains, through
      the inner updates, on those tasks — Eq. 73's argmin.
    * ``"nested"`` (Eq. 72): a level restarts from :math:`\theta_0` after
      :math:`\lceil C^{(s)}/C^{(s+1)}\rceil` of its updates (N-U11), i.e. at every chunk end of its parent,
      the next slower level (the smallest chunk size larger than its own; the slowest levels have no parent
      and never restart). The update due at that token is discarded with the rest of the episode. Each
      episode is a task of length :math:`C^{(s)}`, and the outer loop trains :math:`\theta_0` on them —
      Eq. 72's argmin, solved by the outer optimizer instead of a test-time meta-update by level s
      (docs/errata.md, NL Eq. 72).
    * ``"independent"`` (Eq. 74): the levels read the same input and are summed with learnable weights
      ``mix`` (initialised to ``1/k``), see :func:`cms_independent`.

    Args:
        dim: input and output width.
        chunk_sizes: :math:`C^{(\ell)}` per level, in the order the chain applies them, ints ``>= 1`` that
            divide one another once sorted; ``len(chunk_sizes)`` is the number of levels, ``>= 1``.
        rates: :math:`\eta^{(\ell)} >= 0`, one float for all levels or one per level; 0 freezes a level.
        hidden: the blocks' hidden width (default ``4 * dim``).
        variant: ``"sequential"``, ``"nested"`` or ``"independent"``.
        signal: ``"task"`` (gradient of the caller's per-token loss of the output) or ``"reconstruction"``
            (each level's local :math:`\tfrac12\|\mathrm{MLP}(a) - a\|^2`).
        window: ``"chunk"`` (the C tokens since the last update) or ``"printed"`` (Eq. 71's C + 1 terms).
        gated: SwiGLU blocks like the language model's FFN (default) or plain ``σ(a W_u) W_d``.
        activation: ``"silu"`` (default) or ``"gelu"``.
        residual: add each block to its input.
        pre_norm: RMS-normalise each block's input (chain variants only, see :func:`cms_chain`).
        out_norm: RMS-normalise each block's output before the residual sum (chain variants only, see
            :func:`cms_chain`); Hope's levels use it (docs/errata.md, NL Eq. 94–97).
    """

    def __init__(
        self,
        dim: int,
        chunk_sizes: Sequence[int],
        *,
        rates: float | Sequence[float],
        hidden: int | None = None,
        variant: str = "sequential",
        signal: str = "task",
        window: str = "chunk",
        gated: bool = True,
        activation: str = "silu",
        residual: bool = False,
        pre_norm: bool = False,
        out_norm: bool = False,
    ):
        super().__init__()
        self.dim = check_int("dim", dim)
        self.hidden = check_int("hidden", 4 * dim if hidden is None else hidden)
        self.chunk_sizes = _check_chunk_sizes(chunk_sizes)
        self.rates = _check_rates(rates, len(self.chunk_sizes))
        self.variant = _check_choice("variant", variant, VARIANTS)
        self.signal = _check_choice("signal", signal, SIGNALS)
        self.window = _check_choice("window", window, WINDOWS)
        self.activation = _check_choice("activation", activation, tuple(ACTIVATIONS))
        self.residual, self.pre_norm, self.out_norm = bool(residual), bool(pre_norm), bool(out_norm)
        for name in ("pre_norm", "out_norm"):
            if getattr(self, name) and variant == "independent":
                raise ValueError(
                    f"{name} applies to the chain variants ('sequential', 'nested'), not 'independent'"
                )
        self.levels = nn.ModuleList(_Level(self.dim, self.hidden, bool(gated)) for _ in self.chunk_sizes)
        k = len(self.chunk_sizes)
        self.mix = nn.Parameter(torch.full((k,), 1.0 / k)) if variant == "independent" else None

    @property
    def reset_periods(self) -> tuple[int | None, ...]:
        """Per level, the period after which it restarts from θ_0 (Nested CMS, N-U11), or None."""
        if self.variant != "nested":
            return (None,) * len(self.chunk_sizes)
        return tuple(min((c for c in self.chunk_sizes if c > own), default=None) for own in self.chunk_sizes)

    @classmethod
    def from_mlps(
        cls,
        mlps: Sequence[nn.Module],
        chunk_sizes: Sequence[int],
        *,
        rates: float | Sequence[float],
        **kwargs,
    ) -> ContinuumMemory:
        """Ad-hoc level stacking (NL §7.3, N-U12): a CMS whose θ_0 are copies of pretrained MLPs.

        ``mlps`` are SwiGLU FFNs with bias-free ``gate``/``up``/``down`` linear maps (the language model's
        :class:`~neural_memory.models.lm.GatedMLP`) or ``nn.Sequential(Linear, SiLU|GELU, Linear)`` without
        biases, all of one kind and shape; level ℓ starts from ``mlps[ℓ]``. With rates 0 the CMS computes
        the pretrained stack exactly. Other keyword arguments go to the constructor.
        """
        parsed = [_parse_mlp(m) for m in mlps]
        if len(parsed) != len(chunk_sizes):
            raise ValueError(f"chunk_sizes must have one entry per MLP ({len(parsed)}), got {chunk_sizes!r}")
        if len({(len(w), act, tuple(w[-1].shape)) for w, act in parsed}) != 1:
            raise ValueError("mlps must all be of one kind, activation and shape")
        weights, activation = parsed[0]
        dim, hidden = weights[-1].shape[1], weights[-1].shape[0]
        cms = cls(
            dim,
            chunk_sizes,
            rates=rates,
            hidden=hidden,
            gated=len(weights) == 3,
            activation=activation,
            **kwargs,
        )
        cms.to(dtype=weights[0].dtype, device=weights[0].device)
        with torch.no_grad():
            for level, (source, _) in zip(cms.levels, parsed, strict=True):
                for param, w in zip(level.weights(), source, strict=True):
                    param.copy_(w)
        return cms

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> CMSState:
        """The state at the start of a stream: every level at θ_0, nothing accumulated, position 0."""
        check_int("batch_size", batch_size)
        weights = tuple(self._initial(level, batch_size, device, dtype) for level in range(len(self.levels)))
        grads = tuple(tuple(torch.zeros_like(w) for w in level) for level in weights)
        return CMSState(weights=weights, grads=grads, position=0)

    def _initial(self, level: int, batch: int, device=None, dtype=None) -> Weights:
        # a view of θ_0 per sequence: the outer gradient of every copy flows back to the one parameter
        return tuple(
            p.to(device=device, dtype=dtype).expand(batch, *p.shape) for p in self.levels[level].weights()
        )

    def _read(self, x: Tensor, weights: Sequence[Weights]) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        if self.variant == "independent":
            return cms_independent(
                x, weights, self.mix.to(x.dtype), activation=self.activation, residual=self.residual
            )
        return cms_chain(
            x,
            weights,
            activation=self.activation,
            residual=self.residual,
            pre_norm=self.pre_norm,
            out_norm=self.out_norm,
        )

    def forward(self, x: Tensor, state: CMSState | None = None, *, loss_fn: LossFn | None = None):
        """Run ``x (batch, T, dim)`` from ``state`` (a fresh stream if None); returns ``(y, new_state)``.

        ``loss_fn(y, start)`` gives the per-token task loss, ``(batch, n)``, of the outputs ``y (batch, n,
        dim)`` whose first token is at stream position ``start`` (tokens before it); it must be a sum of
        per-token terms, each depending only on its own output. Required when ``signal="task"`` and a rate is
        positive, unused otherwise.
        """
        state = self._check_call(x, state, loss_fn)
        if self.signal == "reconstruction" and self.variant != "independent":
            return self._forward_levels(x, state)
        step = min(self.chunk_sizes)  # no level changes inside a stream-aligned span of `step` tokens
        outputs, t = [], 0
        while t < x.shape[1]:
            n = min(step - (state.position % step), x.shape[1] - t)
            y, state = self._span(x[:, t : t + n], state, loss_fn)
            outputs.append(y)
            t += n
        return (torch.cat(outputs, 1) if outputs else x.new_empty(x.shape[0], 0, self.dim)), state

    def _check_call(self, x: object, state: CMSState | None, loss_fn: LossFn | None) -> CMSState:
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be (batch, T, dim={self.dim}), got {shape}")
        if self.signal == "task" and any(self.rates) and loss_fn is None:
            raise ValueError(
                "loss_fn is required when signal='task' and a rate is > 0 (it gives f in Eq. 71)"
            )
        if state is None:
            return self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        if state.weights[0][0].shape[0] != x.shape[0]:
            raise ValueError(f"state holds batch {state.weights[0][0].shape[0]}, x has batch {x.shape[0]}")
        return state

    def _learning(self) -> list[int]:
        return [level for level, rate in enumerate(self.rates) if rate > 0]

    def _forward_levels(self, x: Tensor, state: CMSState) -> tuple[Tensor, CMSState]:
        """The chain with the reconstruction signal, one level at a time over the whole call.

        A level's reconstruction loss reaches only its own weights and reads only its input, the previous
        level's output, which does not depend on the levels after it. So level ℓ can run over all of
        ``x``'s tokens before level ℓ + 1 starts, in spans of its *own* chunk (stream-aligned), instead of
        every level in spans of the smallest chunk as :meth:`_span` does: at chunk sizes (64, 16) the slow
        level takes 1/4 of the calls (forward, autograd.grad with create_graph, and their backward). The
        weights a token sees, the per-token gradients and the chunk-end rule (:meth:`_level_end`, shared
        with :meth:`_chunk_ends`) are those of :meth:`_span`; only the summation order of a level's
        accumulated gradient differs (one sum over a long span instead of several short ones).
        """
        if x.shape[1] == 0:
            return x.new_empty(x.shape[0], 0, self.dim), state
        weights, grads, a = list(state.weights), list(state.grads), x
        for level, chunk in enumerate(self.chunk_sizes):
            outs, t = [], 0
            while t < x.shape[1]:
                start = state.position + t
                n = min(chunk - start % chunk, x.shape[1] - t)  # to the level's next chunk end
                out, summed, last = self._level_span(a[:, t : t + n], weights[level], level, start + n)
                if summed is not None:
                    grads[level] = tuple(acc + g for acc, g in zip(grads[level], summed, strict=True))
                weights[level], grads[level] = self._level_end(
                    level, weights[level], grads[level], start + n, last
                )
                outs.append(out)
                t += n
            out = torch.cat(outs, 1) if len(outs) > 1 else outs[0]
            a = a + out if self.residual else out
        position = state.position + x.shape[1]
        return a, CMSState(weights=tuple(weights), grads=tuple(grads), position=position)

    def _level_span(
        self, a: Tensor, weights: Weights, level: int, end: int
    ) -> tuple[Tensor, Weights | None, Weights | None]:
        """Level ``level`` on a span of its input ``a`` at fixed ``weights``, ending at stream position
        ``end``: its output (without the residual), its reconstruction gradient summed over the span (None
        when it does not learn) and, for ``window="printed"`` at its chunk end, the last token's gradient."""
        grad_mode = torch.is_grad_enabled()
        if self.rates[level] == 0:
            return _chain_block(a, weights, self.activation, self.pre_norm, self.out_norm)[1], None, None
        with torch.enable_grad():
            leaves = tuple(_inner_leaf(w, grad_mode) for w in weights)
            block_in, out = _chain_block(a, leaves, self.activation, self.pre_norm, self.out_norm)
            token_losses = 0.5 * ((out - block_in) ** 2).sum(-1)
            summed = torch.autograd.grad(
                token_losses.sum(), leaves, create_graph=grad_mode, retain_graph=True
            )
            last = None
            if self.window == "printed" and end % self.chunk_sizes[level] == 0:
                last = torch.autograd.grad(
                    token_losses[:, -1:].sum(), leaves, create_graph=grad_mode, retain_graph=True
                )
        return (out if grad_mode else out.detach()), summed, last

    def _span(self, x: Tensor, state: CMSState, loss_fn: LossFn | None) -> tuple[Tensor, CMSState]:
        """``n`` tokens during which no level changes: one batched pass, then the chunk-end updates."""
        grad_mode, learning = torch.is_grad_enabled(), self._learning()
        end = state.position + x.shape[1]
        with torch.enable_grad() if learning else nullcontext():
            weights = [
                tuple(_inner_leaf(w, grad_mode) for w in lvl) if level in learning else lvl
                for level, lvl in enumerate(state.weights)
            ]
            y, pairs = self._read(x, weights)
            ending = [
                lvl for lvl in learning if self.window == "printed" and end % self.chunk_sizes[lvl] == 0
            ]
            token_losses = self._token_losses(y, pairs, state.position, loss_fn)
            summed = self._grads(token_losses, weights, learning, slice(None), grad_mode)
            last = self._grads(token_losses, weights, ending, slice(-1, None), grad_mode)
        if not grad_mode:
            y = y.detach()
        grads = tuple(
            tuple(a + g for a, g in zip(acc, summed[level], strict=True)) if level in summed else acc
            for level, acc in enumerate(state.grads)
        )
        return y, self._chunk_ends(replace(state, grads=grads, position=end), last)

    def _token_losses(
        self, y: Tensor, pairs: list[tuple[Tensor, Tensor]], start: int, loss_fn: LossFn | None
    ) -> list[Tensor] | Tensor | None:
        """Per-token losses ``(batch, n)``: one tensor (task signal) or one per level (reconstruction)."""
        if not self._learning():
            return None
        if self.signal == "reconstruction":
            return [0.5 * ((out - a) ** 2).sum(-1) for a, out in pairs]
        losses = loss_fn(y, start)
        if not isinstance(losses, Tensor) or losses.shape != y.shape[:2]:
            shape = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
            raise ValueError(
                f"loss_fn must return per-token losses of shape {tuple(y.shape[:2])}, got {shape}"
            )
        return losses

    def _grads(self, token_losses, weights, levels: list[int], tokens: slice, grad_mode: bool):
        """Per level in ``levels``: the gradient of its loss summed over ``tokens``, at the frozen weights."""
        if not levels:
            return {}
        # task: one loss for all levels. Reconstruction reaches here only for the independent variant (forward
        # runs a chain level by level, _forward_levels): every level reads x, so a level's loss reaches only
        # its own weights and one call on the summed losses gives each level its own gradient. (In a chain a
        # level's loss also reaches the levels before it through its input: there they could not be summed.)
        loss = (
            token_losses[:, tokens].sum()
            if self.signal == "task"
            else sum(token_losses[level][:, tokens].sum() for level in levels)
        )
        flat = [w for level in levels for w in weights[level]]
        grads = iter(torch.autograd.grad(loss, flat, create_graph=grad_mode, retain_graph=True))
        return {level: tuple(next(grads) for _ in weights[level]) for level in levels}

    def _chunk_ends(self, state: CMSState, last: dict[int, Weights]) -> CMSState:
        """Apply Eq. 71 to every level whose chunk ends at ``state.position`` (and N-U11's restarts)."""
        levels = [
            self._level_end(level, w, g, state.position, last.get(level))
            for level, (w, g) in enumerate(zip(state.weights, state.grads, strict=True))
        ]
        return replace(state, weights=tuple(w for w, _ in levels), grads=tuple(g for _, g in levels))

    def _level_end(
        self, level: int, weights: Weights, grads: Weights, end: int, last: Weights | None
    ) -> tuple[Weights, Weights]:
        """Level ``level``'s weights and accumulator after stream position ``end``: Eq. 71's step at its chunk
        end (the accumulator restarts empty, or at the chunk's last gradient for ``window="printed"``), or
        the Nested CMS restart from θ_0 at its parent's chunk end; unchanged elsewhere."""
        chunk, rate, reset = self.chunk_sizes[level], self.rates[level], self.reset_periods[level]
        if reset is not None and end % reset == 0:
            like = weights[0]
            return self._initial(level, like.shape[0], like.device, like.dtype), tuple(
                torch.zeros_like(g) for g in grads
            )
        if rate > 0 and end % chunk == 0:
            stepped = tuple(w - rate * g for w, g in zip(weights, grads, strict=True))
            # "printed": the chunk's last token opens the next sum too (t = i - C .. i)
            return stepped, last or tuple(torch.zeros_like(g) for g in grads)
        return weights, grads


def _inner_leaf(w: Tensor, grad_mode: bool) -> Tensor:
    """The point at which a level's inner gradient is taken: a fresh alias of its weight ``w``.

    Eq. 71 steps a level by the gradient in its own parameters, the other levels held at their current
    values. In grad mode the weights carry the graph of their earlier updates, and a faster level's updates
    ran through the slower level's weights: differentiating at ``w`` itself would add that path (a total
    derivative). A ``view`` is a new node of the graph, downstream of nothing but ``w``, so the gradient
    at it is the partial one, while the outer gradient still flows through it to ``w``. Without grad mode
    (or without a graph) a detached leaf.
    """
    return w.view_as(w) if grad_mode and w.requires_grad else w.detach().requires_grad_(True)


def _parse_mlp(mlp: nn.Module) -> tuple[Weights, str]:
    """The row-convention weights of a pretrained MLP and its activation (see ContinuumMemory.from_mlps)."""
    if all(isinstance(getattr(mlp, name, None), nn.Linear) for name in ("gate", "up", "down")):
        linears, activation = [mlp.gate, mlp.up, mlp.down], "silu"
    elif (
        isinstance(mlp, nn.Sequential)
        and len(mlp) == 3
        and isinstance(mlp[0], nn.Linear)
        and isinstance(mlp[2], nn.Linear)
        and (isinstance(mlp[1], nn.SiLU) or (isinstance(mlp[1], nn.GELU) and mlp[1].approximate == "none"))
    ):
        linears, activation = [mlp[0], mlp[2]], "silu" if isinstance(mlp[1], nn.SiLU) else "gelu"
    else:
        raise TypeError(
            "mlps must be SwiGLU FFNs with gate/up/down nn.Linear maps or nn.Sequential(Linear, SiLU|GELU, "
            f"Linear), got {type(mlp).__name__}"
        )
    if any(linear.bias is not None for linear in linears):
        raise ValueError("mlps must be bias-free (a CMS block has no bias)")
    return tuple(linear.weight.detach().T for linear in linears), activation


@implements("nl", 71, 72)
def continuum_memory_reference(
    cms: ContinuumMemory, x: Tensor, state: CMSState | None = None, *, loss_fn: LossFn | None = None
) -> tuple[Tensor, CMSState]:
    r"""Token-by-token reference of :class:`ContinuumMemory` (NL v1, Eq. 71–72): slow, obviously right.

    .. math::
        \theta_{i+1}^{(f_{\ell})} = \theta_i^{(f_{\ell})} - \begin{cases}
            \sum_{t=i-C^{(\ell)}}^{i} \eta_t^{(\ell)} f(\theta_t^{(f_{\ell})}; x_t)
                & \text{if } i \equiv 0 \pmod{C^{(\ell)}},\\
            0 & \text{otherwise.} \end{cases} \qquad (71)

    For every token: run it through the levels at their current parameters, take each learning level's
    gradient of that token's loss alone, add it to the level's accumulator; then, for every level whose
    chunk ends at this token, apply the accumulator (or, for the Nested CMS, restart the level from θ_0 at
    its parent's chunk end). Same arguments, state and results as ``cms(x, state, loss_fn=loss_fn)``.
    """
    state = cms._check_call(x, state, loss_fn)
    grad_mode, learning = torch.is_grad_enabled(), cms._learning()
    outputs = []
    for t in range(x.shape[1]):
        weights, acc, last = list(state.weights), list(state.grads), {}
        with torch.enable_grad() if learning else nullcontext():
            leaves = [tuple(_inner_leaf(w, grad_mode) for w in level) for level in weights]
            y, pairs = cms._read(x[:, t : t + 1], leaves)
            for level in learning:
                if cms.signal == "task":
                    loss = loss_fn(y, state.position)
                else:
                    a, out = pairs[level]
                    loss = 0.5 * ((out - a) ** 2).sum(-1)
                grads = torch.autograd.grad(
                    loss.sum(), leaves[level], create_graph=grad_mode, retain_graph=True
                )
                acc[level] = tuple(a + g for a, g in zip(acc[level], grads, strict=True))
                last[level] = grads
        outputs.append(y if grad_mode else y.detach())
        position = state.position + 1
        printed = {
            lvl: g
            for lvl, g in last.items()
            if cms.window == "printed" and position % cms.chunk_sizes[lvl] == 0
        }
        state = cms._chunk_ends(
            CMSState(weights=tuple(weights), grads=tuple(acc), position=position), printed
        )
    return (torch.cat(outputs, 1) if outputs else x.new_empty(x.shape[0], 0, cms.dim)), state


__all__ = [
    "CMSState",
    "ContinuumMemory",
    "cms_chain",
    "cms_independent",
    "continuum_memory_reference",
    "mlp_block",
]
