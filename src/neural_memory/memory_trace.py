r"""Instrumentation of the Titans memory: what its update does, token by token and head by head.

Nothing here re-implements the update. :func:`trace_memory` writes a sequence through the module's own
projections and gates and the token loop :func:`~neural_memory.titans.reference.reference_memory` (Titans
Eq. 13-14, with the module's chunk size as in Eq. 16), whose ``record`` callback hands over every token's
gradient, momentum and weights; the recorder only takes norms of them:

* the gradient :math:`\|\nabla\ell(\mathcal{M}_{t'}; x_t)\|` and the momentary surprise
  :math:`\|\theta_t\nabla\ell(\mathcal{M}_{t'}; x_t)\|` (:math:`t' = t-1` at chunk size 1, else the chunk's
  start), the momentum :math:`\|S_t\|`, and the gates :math:`\alpha_t, \eta_t, \theta_t`;
* per memory layer: :math:`\|\mathcal{M}_t\|`, the distance :math:`\|\mathcal{M}_t - \mathcal{M}_0\|` from
  the learned initial weights, and the change of every row, :math:`\|(\mathcal{M}_t - \mathcal{M}_{t-1})_i\|`.

All norms are Frobenius norms over one (sequence, head) row ``N`` of the state (over all layers together for
the gradient, the surprise and the momentum). :func:`trace_model` does this for a
:class:`~neural_memory.titans.memory.NeuralMemory` inside a language model: forward hooks capture each call
of the module during an ordinary forward pass (its input and its state before and after), and every call is
replayed through :func:`trace_memory`; the largest difference between the replayed and the module's own
weights and momentum is reported, so a trace that is not the module's computation shows.

:func:`forgetting_probe` measures what the forget gate does to old associations: key-value pairs written
into a fresh memory with fixed gates, then distractors, then the first pairs read back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

from neural_memory.titans.associative_loss import associative_loss
from neural_memory.titans.memory import NeuralMemory
from neural_memory.titans.memory_model import Weights
from neural_memory.titans.reference import TokenStep, reference_memory
from neural_memory.titans.state import MemoryState


@dataclass(frozen=True)
class MemoryTrace:
    r"""Per-token records of a memory's writes; ``T`` tokens, ``N = batch * heads`` rows, ``L`` layers.

    Attributes:
        position: ``(T,)`` index of each token in the memory's stream (tokens written before it).
        grad_norm: ``(T, N)`` :math:`\|\nabla\ell\|` over all layers.
        surprise_norm: ``(T, N)`` :math:`\|\theta_t \nabla\ell\|`, the momentary surprise of Eq. 14.
        momentum_norm: ``(T, N)`` :math:`\|S_t\|` after the token.
        alpha, eta, theta: ``(T, N)`` the gates.
        weight_norm: ``(T, N, L)`` :math:`\|\mathcal{M}_t\|` per layer after the token.
        content_norm: ``(T, N, L)`` :math:`\|\mathcal{M}_t - \mathcal{M}_0\|` per layer.
        row_update: per layer ``(T, N, d_in)``: :math:`\|(\mathcal{M}_t - \mathcal{M}_{t-1})_i\|`, row i.
        weights, momentum: the state after the last token, one ``(N, d_in, d_out)`` tensor per layer.
    """

    position: Tensor
    grad_norm: Tensor
    surprise_norm: Tensor
    momentum_norm: Tensor
    alpha: Tensor
    eta: Tensor
    theta: Tensor
    weight_norm: Tensor
    content_norm: Tensor
    row_update: tuple[Tensor, ...]
    weights: Weights
    momentum: Weights

    @property
    def tokens(self) -> int:
        return self.position.shape[0]

    @staticmethod
    def cat(traces: Sequence[MemoryTrace]) -> MemoryTrace:
        """Successive traces of one stream as one (the final state is the last trace's)."""
        if not traces:
            raise ValueError("traces must hold at least one trace")
        joined = {}
        for f in fields(MemoryTrace):
            parts = [getattr(t, f.name) for t in traces]
            if f.name in ("weights", "momentum"):
                joined[f.name] = parts[-1]
            elif f.name == "row_update":
                joined[f.name] = tuple(torch.cat(layer) for layer in zip(*parts, strict=True))
            else:
                joined[f.name] = torch.cat(parts)
        return MemoryTrace(**joined)


def _norm(tensors: Sequence[Tensor]) -> Tensor:
    """Frobenius norm of each row ``N`` over all of ``tensors`` (each ``(N, ...)``): ``(N,)``."""
    return torch.sqrt(sum(t.flatten(1).pow(2).sum(1) for t in tensors))


class _Recorder:
    """The ``record`` callback of :func:`reference_memory`: keeps norms, never the tensors themselves."""

    def __init__(self, initial: Weights):
        self.initial = initial
        self.rows: dict[str, list[Tensor]] = {f.name: [] for f in fields(MemoryTrace)}
        self.row_update: list[list[Tensor]] = [[] for _ in initial]

    def __call__(self, step: TokenStep) -> None:
        with torch.no_grad():
            grad = _norm(step.grads)
            self.rows["grad_norm"].append(grad)
            self.rows["surprise_norm"].append(step.theta * grad)  # theta >= 0: ||theta g|| = theta ||g||
            self.rows["momentum_norm"].append(_norm(step.momentum))
            for name in ("alpha", "eta", "theta"):
                self.rows[name].append(getattr(step, name).detach().clone())
            self.rows["weight_norm"].append(torch.stack([_norm([w]) for w in step.weights], -1))
            content = [_norm([w - w0]) for w, w0 in zip(step.weights, self.initial, strict=True)]
            self.rows["content_norm"].append(torch.stack(content, -1))
            for layer, (new, old) in enumerate(zip(step.weights, step.previous, strict=True)):
                self.row_update[layer].append((new - old).norm(dim=-1))

    def trace(self, start: int, state: MemoryState) -> MemoryTrace:
        tokens = len(self.rows["grad_norm"])
        stacked = {k: torch.stack(v) for k, v in self.rows.items() if v}
        return MemoryTrace(
            position=torch.arange(start, start + tokens),
            row_update=tuple(torch.stack(layer) for layer in self.row_update),
            weights=tuple(w.detach() for w in state.weights),
            momentum=tuple(s.detach() for s in state.momentum),
            **stacked,
        )


def check_titans_memory(memory: nn.Module) -> NeuralMemory:
    """``memory`` if it is a Titans :class:`NeuralMemory` (its subclasses run other update rules)."""
    if type(memory) is not NeuralMemory:
        raise TypeError(
            f"memory must be a Titans NeuralMemory (not a subclass such as MirasMemory), got "
            f"{type(memory).__name__}"
        )
    return memory


def trace_memory(
    memory: NeuralMemory, x: Tensor, state: MemoryState | None = None
) -> tuple[MemoryTrace, MemoryState]:
    """Write ``x (B, T, dim)`` into ``memory`` token by token, recording every token (see the module doc).

    The keys, values and gates are the module's own (:meth:`NeuralMemory.keys_values`, ``memory.gates``);
    the update is :func:`reference_memory` at the module's ``chunk_size``. The returned state is the one
    :meth:`NeuralMemory.update` returns (up to rounding when the module runs the chunk-parallel form).

    Returns:
        ``(trace, state after x)``; ``N = B * heads`` rows.
    """
    check_titans_memory(memory)
    if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[1] < 1 or x.shape[-1] != memory.dim:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must have shape (batch, seq >= 1, {memory.dim}), got {shape}")
    if state is None:
        state = memory.init_state(x.shape[0], device=x.device, dtype=x.dtype)
    with torch.no_grad():
        keys, values, state = memory.keys_values(x, state)
        alpha, eta, theta = memory.gates(x)
        recorder = _Recorder(tuple(w.to(x.dtype) for w in memory.memory.expand(x.shape[0])))
        start = state.tokens_seen
        _, state = reference_memory(
            memory.memory, state, keys, values, None, alpha, eta, theta,
            chunk_size=memory.chunk_size, record=recorder,
        )  # fmt: skip
    return recorder.trace(start, state), state


def titans_memories(model: nn.Module) -> list[NeuralMemory]:
    """The Titans :class:`NeuralMemory` modules of ``model``, in ``model.modules()`` order."""
    return [m for m in model.modules() if type(m) is NeuralMemory]


@dataclass(frozen=True)
class ModelTrace:
    """:func:`trace_model`'s result.

    Attributes:
        trace: every token the memory wrote during the forward pass, in order.
        calls: how many times the model called the memory (MAC: once per segment; MAG/MAL/LMM: the
            persistent prefix, then the sequence).
        replay_error: largest absolute difference between the replayed and the module's own weights and
            momentum after each call.
        memories: how many Titans memories the model has; index: the one traced.
    """

    trace: MemoryTrace
    calls: int
    replay_error: float
    memories: int
    index: int


def trace_model(model: nn.Module, tokens: Tensor, index: int = 0) -> ModelTrace:
    """Run ``model(tokens)`` once and trace its ``index``-th Titans memory (see the module docstring).

    Args:
        model: a language model (``model(tokens)``) holding at least one :class:`NeuralMemory`.
        tokens: its input, e.g. ``(1, T)`` byte ids.
        index: which memory, in :func:`titans_memories` order (0 = the first block's).
    """
    memories = titans_memories(model)
    if not memories:
        raise ValueError(
            f"{type(model).__name__} has no Titans NeuralMemory (the kinds titans-mac, titans-mag, "
            "titans-mal and titans-lmm have one per block)"
        )
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(memories):
        raise ValueError(f"index must be an int in [0, {len(memories) - 1}], got {index!r}")
    memory = memories[index]
    calls: list[tuple[Tensor, MemoryState | None, MemoryState]] = []

    def capture(module, args, kwargs, output):
        x = args[0] if args else kwargs["x"]
        state = args[1] if len(args) > 1 else kwargs.get("state")
        calls.append((x.detach(), state, output[1]))

    handle = memory.register_forward_hook(capture, with_kwargs=True)
    try:
        with torch.no_grad():
            model(tokens)
    finally:
        handle.remove()
    traces, error = [], 0.0
    for x, state, own in calls:
        trace, replayed = trace_memory(memory, x, state)
        pairs = zip((*replayed.weights, *replayed.momentum), (*own.weights, *own.momentum), strict=True)
        error = max(error, *((a - b).abs().max().item() for a, b in pairs))
        traces.append(trace)
    return ModelTrace(MemoryTrace.cat(traces), len(calls), error, len(memories), index)


# ------------------------------------------------------------------------------------------------
# the forgetting probe
# ------------------------------------------------------------------------------------------------


def probe_config(memory: NeuralMemory) -> dict:
    """The memory network of one head of ``memory`` as :func:`forgetting_probe` keyword arguments."""
    mlp = check_titans_memory(memory).memory
    hidden = mlp.initial_weights[0].shape[-1]
    return {
        "dim": mlp.dim,
        "depth": mlp.depth,
        "expansion": hidden // mlp.dim if mlp.depth > 1 else 1,
        "activation": mlp.activation,
        "residual_norm": mlp.residual_norm,
        "forget_to_initial": mlp.forget_to_initial,
    }


def forgetting_probe(
    alphas: Sequence[float] = (0.0, 0.01, 0.05, 0.2),
    *,
    n_pairs: int = 16,
    n_distractors: int = 16,
    samples: int = 16,
    dim: int = 16,
    depth: int = 2,
    expansion: int = 4,
    activation: str = "silu",
    residual_norm: bool | None = None,
    forget_to_initial: bool | None = None,
    eta: float = 0.0,
    theta: float | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    r"""Recall of old pairs after more writes, for each forget rate :math:`\alpha` (Titans Eq. 13).

    A fresh one-head :class:`NeuralMemory` with fixed gates :math:`(\alpha, \eta, \theta)` writes
    ``n_pairs`` random pairs (unit keys, as the module's l2-normalised keys; values
    :math:`\mathcal{N}(0, I)`), then ``n_distractors`` more, token by token (chunk size 1: Eq. 13-14
    exactly), into ``samples`` independent streams at once. Then the first pairs are read back. The error of
    pair i is Eq. 12's :math:`\|\mathcal{M}(k_i) - v_i\|^2` averaged over the streams, divided by the same
    average for the unwritten memory :math:`\mathcal{M}_0`: below 1 the memory still holds something of the
    pair. Every :math:`\alpha` starts from the same :math:`\mathcal{M}_0` (drawn from ``seed``) and sees the
    same pairs.

    ``theta=None`` is 0.005 for the LayerNorm read-out (``residual_norm``) and 0.1 for a plain one. The two
    read-outs answer a step on very different scales: a linear memory with unit keys keeps only a fraction
    :math:`(1-2\theta)^2` of a pair's error per write, so it needs about 0.1; the LayerNorm divides the
    gradient by the small spread of the fresh memory's output, and from 0.02 up its pairs overwrite each
    other more than :math:`\alpha` forgets, so that the oldest pair's error stops growing with
    :math:`\alpha` (measured with this probe at widths 16-64 and depths 2-3).

    Returns:
        ``{"age": (n_pairs,)`` tokens written after each pair, ``"relative_error": (len(alphas), n_pairs)``
        in float64, and the settings ``n_pairs, n_distractors, samples, eta, theta}`` (theta resolved).
    """
    counts = (("n_pairs", n_pairs, 1), ("n_distractors", n_distractors, 0), ("samples", samples, 1))
    for name, value, low in counts:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if residual_norm is None:
        residual_norm = depth >= 2
    if theta is None:
        theta = 0.005 if residual_norm else 0.1
    total = n_pairs + n_distractors
    generator = torch.Generator().manual_seed(seed)
    shape = (samples, total, dim)
    keys = nn.functional.normalize(torch.randn(shape, generator=generator, dtype=torch.float64), dim=-1)
    values = torch.randn(shape, generator=generator, dtype=torch.float64)
    old_keys, old_values = keys[:, :n_pairs], values[:, :n_pairs]
    errors = []
    for alpha in alphas:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the same M_0 for every alpha
            memory = NeuralMemory(
                dim, depth=depth, expansion=expansion, activation=activation, residual_norm=residual_norm,
                forget_to_initial=forget_to_initial, chunk_size=1, gates="fixed",
                fixed_gates=(alpha, eta, theta),
            ).double()  # fmt: skip
        with torch.no_grad():
            gates = memory.gates(keys)  # fixed gates: constants of the input's shape
            start = memory.init_state(samples, dtype=torch.float64)
            _, end = reference_memory(memory.memory, start, keys, values, None, *gates, chunk_size=1)
            written = associative_loss(memory.memory.recall(end.weights, old_keys), old_values)
            unwritten = associative_loss(memory.memory.recall(start.weights, old_keys), old_values)
        errors.append(written.mean(0) / unwritten.mean(0))
    age = torch.arange(total - 1, n_distractors - 1, -1)
    settings = {
        "n_pairs": n_pairs,
        "n_distractors": n_distractors,
        "samples": samples,
        "eta": eta,
        "theta": theta,
    }
    return {"age": age, "relative_error": torch.stack(errors), **settings}


__all__ = [
    "MemoryTrace",
    "ModelTrace",
    "check_titans_memory",
    "forgetting_probe",
    "probe_config",
    "titans_memories",
    "trace_memory",
    "trace_model",
]
