"""``torch.compile`` of a chunk loop's per-chunk step, on request (``compile_chunks=True``).

The chunk-parallel memories run their chunks in sequence, each chunk a few dozen small operators forward
and as many backward (hand-written passes, closed-form back-propagation, the read-out's LayerNorm). At the
language models' sizes (dim 128, chunk 16) the step is bound by the number of operators, not by their
arithmetic (``benchmarks/README.md``): the dispatch, autograd bookkeeping and Python around each call
cost more than the matmul inside. Compiling the *step*, not the loop (compiling the whole module unrolls
the chunk loop: 9 minutes at 4K tokens when issue 14 was filed), gives one small graph, forward and
backward fused by inductor and reused by every chunk and every call; a new graph is compiled only for a
new setting (no gradients, another dtype) and once for pieces of other lengths (see :func:`chunk_step`).

The arithmetic is the same, in another order: results agree with the eager step to rounding
(``tests/test_integration/test_compiled_chunk_step.py``, float64), not bit for bit. Off by default: the
first call compiles for tens of seconds, which pays off over a training run, not over a test.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

F = TypeVar("F", bound=Callable)

_COMPILED: dict[Callable, Callable] = {}


def _find_cpp_compiler() -> object:
    """Inductor's C++ compiler for CPU code; raises when there is none."""
    from torch._inductor.cpp_builder import get_cpp_compiler

    return get_cpp_compiler()


def has_cpp_compiler() -> bool:
    """Whether ``torch.compile`` finds the C++ compiler it needs to generate CPU kernels."""
    try:
        _find_cpp_compiler()
    except Exception:  # inductor raises several kinds, all meaning "none usable"
        return False
    return True


def check_compile_chunks(compile_chunks: object) -> None:
    """Refuse anything but a bool for ``compile_chunks`` (a string such as ``"no"`` would read as true)."""
    if not isinstance(compile_chunks, bool):
        raise TypeError(f"compile_chunks must be a bool, got {type(compile_chunks).__name__}")


def chunk_step(step: F, compile_chunks: bool, *, memory_budget: float | None = None) -> F:
    """The per-chunk ``step`` a chunk loop calls: ``step`` itself, or compiled when ``compile_chunks``.

    The compiled function is made once per process and step function and shared by every memory, so each
    graph is compiled once (and cached on disk by inductor across processes). Shapes follow torch's
    default: the first graph is specialised to its piece length, and a second length (a call that starts
    or ends inside a chunk) compiles one graph for every length, so a memory needs a few graphs, not one
    per length. Called while a larger step is being compiled (MAC's segment step contains the memory's
    chunk loop), it returns ``step`` itself, traced into that graph rather than compiled on its own.

    ``memory_budget`` (in (0, 1]) is the compiled backward's activation memory budget (functorch's
    ``activation_memory_budget``, set while the step runs, so while it compiles): a step whose hand-written
    backward recomputes large intermediates instead of keeping them (MIRAS' per-token accumulators) passes
    a small one, or the compiled graph keeps them (Moneta at seq 1024, dim 256: 4.8 GB against 0.7 GB
    eager; with a budget of 0.05, 0.95 GB). One budget per step function: the first call's.
    """
    if not compile_chunks or torch.compiler.is_compiling():
        return step
    if step not in _COMPILED:
        if not has_cpp_compiler():
            raise RuntimeError(
                "compile_chunks=True needs a C++ compiler (torch.compile's CPU code generation, inductor): "
                "none found; install g++ or clang++, or set compile_chunks=False"
            )
        compiled = torch.compile(step)
        _COMPILED[step] = compiled if memory_budget is None else _within_budget(compiled, memory_budget)
    return _COMPILED[step]  # type: ignore[return-value]


def _within_budget(compiled: F, memory_budget: float) -> F:
    """``compiled`` run (and so compiled, and compiled again for a new shape) under the memory budget."""
    from torch._functorch import config as functorch_config

    def run(*args, **kwargs):
        with functorch_config.patch(activation_memory_budget=memory_budget):
            return compiled(*args, **kwargs)

    return run  # type: ignore[return-value]


def uses_compiled_steps(model: nn.Module) -> bool:
    """Whether a memory inside ``model`` compiles its chunk step (``compile_chunks=True``)."""
    return any(getattr(module, "compile_chunks", False) is True for module in model.modules())


def settle_after_compiling() -> None:
    """After a call that compiled: collect the garbage, then freeze what is alive (``gc.freeze``).

    Compiling leaves a large heap of live Python objects (graphs, guards, generated code). Python's
    cyclic collector traverses every tracked object at each full collection, and a training step creates
    enough short-lived objects to trigger some: measured on ``titans-lmm`` at 4K tokens (one thread),
    steps of 1.22 to 1.77 s instead of 1.23 to 1.38 s. Frozen objects are skipped by the collector (and
    freed as usual when their reference count drops). The training loop calls this after its first step
    and its first evaluation, the calls that compile (:func:`neural_memory.training.train`).
    """
    gc.collect()
    gc.freeze()
