"""``neural_memory.common.compiled``: the per-chunk step compiled only on request and once per function,
``compile_chunks`` refused unless a bool, and a clear error without a C++ compiler.

That the compiled step computes what the eager one does is in
``tests/test_integration/test_compiled_chunk_step.py`` (it compiles, which takes tens of seconds).
"""

from __future__ import annotations

import re

import pytest
import torch

from neural_memory.common import compiled
from neural_memory.miras import chunked as miras_chunked
from neural_memory.miras.memory import memora, moneta, yaad
from neural_memory.nl import self_modifying
from neural_memory.nl.hope import HopeBlock
from neural_memory.titans import chunked as titans_chunked
from neural_memory.titans import mac as titans_mac
from neural_memory.titans.associative_loss import associative_loss_output_grad
from neural_memory.titans.memory import NeuralMemory


def fake_compile(monkeypatch):
    """torch.compile replaced by a recorder (a real compile takes seconds: see test_compiled_chunk_step)."""
    calls = []

    def compile_(fn, **options):
        calls.append((fn, options))
        return ("compiled", fn)

    monkeypatch.setattr(compiled.torch, "compile", compile_)
    monkeypatch.setattr(compiled, "_COMPILED", {})
    monkeypatch.setattr(compiled, "_find_cpp_compiler", lambda: "g++")
    return calls


def record_compiled_calls(monkeypatch, record):
    """torch.compile replaced by a pass-through that calls ``record(fn, args)`` before every call."""

    def compile_(fn, **options):
        def counted(*args, **kwargs):
            record(fn, args)
            return fn(*args, **kwargs)

        return counted

    monkeypatch.setattr(compiled.torch, "compile", compile_)
    monkeypatch.setattr(compiled, "_COMPILED", {})
    monkeypatch.setattr(compiled, "_find_cpp_compiler", lambda: "g++")


def test_the_step_is_compiled_once_per_function_and_only_on_request(monkeypatch):
    calls = fake_compile(monkeypatch)

    def step(x):
        return x + 1

    def other(x):
        return x - 1

    assert compiled.chunk_step(step, False) is step and calls == []
    assert compiled.chunk_step(step, True) == ("compiled", step)
    assert compiled.chunk_step(step, True) == ("compiled", step)
    assert compiled.chunk_step(other, True) == ("compiled", other)
    assert [fn for fn, _ in calls] == [step, other]  # once per function, with torch's default options
    assert all(options == {} for _, options in calls)


def test_a_memory_budget_holds_while_the_compiled_step_runs_and_compiles(monkeypatch):
    from torch._functorch import config as functorch_config

    seen = []
    monkeypatch.setattr(compiled, "_COMPILED", {})
    monkeypatch.setattr(compiled, "_find_cpp_compiler", lambda: "g++")
    monkeypatch.setattr(
        compiled.torch,
        "compile",
        lambda fn, **options: lambda x: seen.append(functorch_config.activation_memory_budget) or fn(x),
    )

    def step(x):
        return x + 1

    def other(x):
        return x - 1

    default = functorch_config.activation_memory_budget
    assert compiled.chunk_step(step, True, memory_budget=0.05)(1) == 2
    assert compiled.chunk_step(other, True)(1) == 0
    assert seen == [0.05, default] and functorch_config.activation_memory_budget == default
    # the MIRAS chunk loop asks for its budget, the Titans one for none
    calls = []
    monkeypatch.setattr(compiled, "chunk_step", lambda step, on, **kw: calls.append(kw) or step)
    monkeypatch.setattr(miras_chunked, "chunk_step", compiled.chunk_step)
    monkeypatch.setattr(titans_chunked, "chunk_step", compiled.chunk_step)
    x = torch.randn(1, 4, 8)
    moneta(8, chunk_size=2)(x)
    NeuralMemory(8, chunk_size=2)(x)
    assert calls == [{"memory_budget": 0.05}, {}] and miras_chunked.MEMORY_BUDGET == 0.05


def test_has_cpp_compiler_asks_inductor(monkeypatch):
    monkeypatch.setattr(compiled, "_find_cpp_compiler", lambda: "g++")
    assert compiled.has_cpp_compiler() is True

    def none_found():
        raise RuntimeError("Failed to find a working C++ compiler")

    monkeypatch.setattr(compiled, "_find_cpp_compiler", none_found)
    assert compiled.has_cpp_compiler() is False


@pytest.mark.parametrize(("value", "name"), [("yes", "str"), (1, "int"), (None, "NoneType")])
def test_compile_chunks_must_be_a_bool(value, name):
    message = f"^compile_chunks must be a bool, got {name}$"
    with pytest.raises(TypeError, match=message):
        compiled.check_compile_chunks(value)
    with pytest.raises(TypeError, match=message):
        NeuralMemory(8, compile_chunks=value)
    with pytest.raises(TypeError, match=message):
        moneta(dim=8, compile_chunks=value)
    with pytest.raises(TypeError, match=message):
        self_modifying.SelfModifyingTitans(8, compile_chunks=value)


def test_compile_chunks_needs_the_chunked_form():
    message = "compile_chunks=True compiles the chunked form's step: needs impl='chunked', got 'reference'"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        NeuralMemory(8, impl="reference", compile_chunks=True)
    assert NeuralMemory(8, impl="reference", compile_chunks=False).compile_chunks is False


def test_compile_chunks_without_a_cpp_compiler_says_so(monkeypatch):
    calls = fake_compile(monkeypatch)

    def no_compiler():
        raise RuntimeError("no compiler")

    monkeypatch.setattr(compiled, "_find_cpp_compiler", no_compiler)
    message = (
        "compile_chunks=True needs a C++ compiler (torch.compile's CPU code generation, inductor): none "
        "found; install g++ or clang++, or set compile_chunks=False"
    )
    with pytest.raises(RuntimeError, match=f"^{re.escape(message)}$"):
        compiled.chunk_step(lambda x: x, True)
    assert calls == []


@pytest.mark.parametrize(
    ("factory", "step", "pieces"),
    [
        (NeuralMemory, titans_chunked._chunk, [4, 4, 2]),
        (yaad, titans_chunked._chunk, [4, 4, 2]),  # MIRAS' dual form is the Titans chunk loop
        (moneta, miras_chunked._chunk, [4, 4, 2]),
        (memora, miras_chunked._chunk, [1, 3, 1, 3, 1, 1]),  # the lag token is a piece of its own
    ],
    ids=["titans", "yaad", "moneta", "memora"],
)
def test_compile_chunks_sends_every_piece_through_the_compiled_step(monkeypatch, factory, step, pieces):
    calls = []
    # the step and its piece's length
    record_compiled_calls(monkeypatch, lambda fn, args: calls.append((fn, args[4][0].shape[1])))
    x = torch.randn(1, 10, 8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    memory = factory(8, chunk_size=4, compile_chunks=True)
    assert memory.compile_chunks is True
    y, _ = memory(x)
    assert calls == [(step, n) for n in pieces]
    torch.manual_seed(0)
    eager = factory(8, chunk_size=4)
    assert eager.compile_chunks is False
    torch.testing.assert_close(eager(x)[0], y, rtol=0, atol=0)
    assert len(calls) == len(pieces)  # the eager memory does not go through it


def test_compile_chunks_sends_every_self_modifying_span_through_the_compiled_step(monkeypatch):
    spans = []
    # (module, x, snapshots, current states): the span's length and whether the states are the snapshots
    record_compiled_calls(
        monkeypatch, lambda fn, args: spans.append((fn, args[1].shape[1], args[2] is args[3]))
    )
    x = torch.randn(1, 10, 8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    # Hope's front end passes the option on; main memory chunk 4, the others 2
    front = HopeBlock(8, chunk_size=4, other_chunk_size=2, titans={"compile_chunks": True}).front
    assert front.compile_chunks is True and compiled.uses_compiled_steps(front)
    y, state = front(x[:, :3])
    y2, _ = front(x[:, 3:], state)
    step = self_modifying._span_update
    # spans end at every chunk end of any memory (every 2 tokens) and at the call boundary (3); mid-chunk
    # of the main memory (positions 2, 6), the current state is not the snapshot
    lengths = [2, 1, 1, 2, 2, 2]
    starts = [0, 2, 3, 4, 6, 8]
    assert spans == [(step, n, t % 4 == 0) for n, t in zip(lengths, starts, strict=True)]
    torch.manual_seed(0)
    eager = HopeBlock(8, chunk_size=4, other_chunk_size=2).front
    assert eager.compile_chunks is False and not compiled.uses_compiled_steps(eager)
    e, state = eager(x[:, :3])
    e2, _ = eager(x[:, 3:], state)
    torch.testing.assert_close(torch.cat([y, y2], 1), torch.cat([e, e2], 1), rtol=0, atol=0)
    assert len(spans) == len(lengths)  # the eager front end does not go through it


@pytest.mark.parametrize("checkpoint_chunks", [0, 2])
def test_mac_sends_every_segment_piece_through_one_compiled_step(monkeypatch, checkpoint_chunks):
    steps = []
    record_compiled_calls(
        monkeypatch,
        lambda fn, args: steps.append(
            (fn.__name__, args[1].shape[1] if fn is titans_mac._segment_piece else None)
        ),
    )
    x = torch.randn(1, 10, 8, generator=torch.Generator().manual_seed(0))
    memory = {"chunk_size": 2, "checkpoint_chunks": checkpoint_chunks}

    def build(**extra):
        torch.manual_seed(0)
        config = {"segment_len": 4, "n_persistent": 1, "heads": 2}
        return titans_mac.MemoryAsContext(8, **config, memory={**memory, **extra})

    mac = build(compile_chunks=True)
    y, state = mac(x[:, :3])
    y2, _ = mac(x[:, 3:], state)
    y_all = torch.cat([y, y2], 1)
    y_all.sum().backward()
    # segments of 4 cut at the call boundary: pieces 3 | 1, 4, 2; with checkpointing, the second call's
    # groups (one segment each: C / chunk = 2 chunks) run again in the backward pass, last first (the first
    # call, 2 chunks, is a single group: kept, not checkpointed)
    pieces = [3, 1, 4, 2]
    expected = pieces + ([2, 4, 1] if checkpoint_chunks else [])
    # outside a real compile, the memory's own chunk loop goes through its (fake) compiled step as well
    assert [n for name, n in steps if name == "_segment_piece"] == expected
    assert {name for name, _ in steps} == {"_segment_piece", "_chunk"}
    eager = build()
    e, state = eager(x[:, :3])
    e2, _ = eager(x[:, 3:], state)
    torch.testing.assert_close(y_all, torch.cat([e, e2], 1), rtol=0, atol=0)
    without_memory = titans_mac.MemoryAsContext(8, segment_len=4, n_persistent=1, heads=2, use_memory=False)
    steps.clear()
    without_memory(x)
    assert steps == []  # compile_chunks belongs to the memory: no memory, no compiled step


def test_inside_a_compiled_step_the_chunk_step_is_traced_not_compiled_again(monkeypatch):
    calls = fake_compile(monkeypatch)

    def step(x):
        return x + 1

    monkeypatch.setattr(compiled.torch.compiler, "is_compiling", lambda: True)
    assert compiled.chunk_step(step, True) is step and calls == []


def test_the_chunk_loops_run_eagerly_by_default(monkeypatch):
    calls = fake_compile(monkeypatch)
    torch.manual_seed(0)
    memory = NeuralMemory(8, chunk_size=4)
    rows, x = 1, torch.randn(1, 6, 8)
    state = memory.init_state(rows)
    keys, values, state = memory.keys_values(x, state)
    gates = [torch.full((rows, 6), value) for value in (0.1, 0.5, 0.05)]
    args = (memory.memory, state, keys, values, keys, *gates)
    titans_chunked.chunked_memory(*args, chunk_size=4)
    miras_chunked.miras_chunked_memory(*args, chunk_size=4, output_grad=associative_loss_output_grad)
    miras_chunked.miras_chunked_memory(
        *args, chunk_size=4, output_grad=associative_loss_output_grad, dual_form=False
    )
    assert calls == []


def test_uses_compiled_steps_finds_a_compiling_memory_anywhere_in_a_model():
    eager, compiling = NeuralMemory(8), NeuralMemory(8, compile_chunks=True)
    assert compiled.uses_compiled_steps(torch.nn.Sequential(torch.nn.Linear(8, 8), compiling))
    assert not compiled.uses_compiled_steps(torch.nn.Sequential(torch.nn.Linear(8, 8), eager))
    assert not compiled.uses_compiled_steps(torch.nn.Linear(8, 8))


def test_settling_collects_then_freezes_what_is_alive(monkeypatch):
    calls = []
    monkeypatch.setattr(compiled.gc, "collect", lambda: calls.append("collect"))
    monkeypatch.setattr(compiled.gc, "freeze", lambda: calls.append("freeze"))
    compiled.settle_after_compiling()
    assert calls == ["collect", "freeze"]
