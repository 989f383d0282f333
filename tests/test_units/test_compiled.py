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
from neural_memory.titans import chunked as titans_chunked
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

    def compile_(fn, **options):
        def counted(*args, **kwargs):
            calls.append((fn, args[4][0].shape[1]))  # the step and its piece's length
            return fn(*args, **kwargs)

        return counted

    monkeypatch.setattr(compiled.torch, "compile", compile_)
    monkeypatch.setattr(compiled, "_COMPILED", {})
    monkeypatch.setattr(compiled, "_find_cpp_compiler", lambda: "g++")
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
