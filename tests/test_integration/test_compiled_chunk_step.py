"""``compile_chunks=True``: the chunk loops' per-chunk step under ``torch.compile`` computes what the eager
step computes (outputs, carried state, gradients; float64), and the option is refused where it cannot work.

One compiled graph per piece length and setting; a cold compile of these small graphs takes tens of
seconds, so the tests share one memory per family and compare whole calls.
"""

from __future__ import annotations

import pytest
import torch

from neural_memory.common import compiled
from neural_memory.miras.memory import memora, moneta
from neural_memory.titans.memory import NeuralMemory

DT = torch.float64

needs_compiler = pytest.mark.skipif(
    not compiled.has_cpp_compiler(), reason="torch.compile on CPU needs a C++ compiler"
)


def two_calls(memory, x):
    """Write ``x`` in two calls whose cut falls inside a chunk; returns outputs, final state, grads."""
    memory.zero_grad(set_to_none=True)
    inputs = x.clone().requires_grad_(True)
    y1, state = memory(inputs[:, :6])
    y2, state = memory(inputs[:, 6:], state)
    y = torch.cat([y1, y2], dim=1)
    # a loss that weighs every output and the final weights, so the state's gradient path is checked too
    loss = (y * torch.linspace(-1, 1, y.shape[-1], dtype=DT)).sum() + sum(w.sum() for w in state.weights)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in memory.named_parameters() if p.grad is not None}
    return y.detach(), state, inputs.grad.clone(), grads


def assert_same_runs(eager, fast):
    (y_e, s_e, gx_e, g_e), (y_f, s_f, gx_f, g_f) = eager, fast
    torch.testing.assert_close(y_f, y_e, rtol=1e-10, atol=1e-12)
    for got, want in zip(s_f.weights + s_f.momentum, s_e.weights + s_e.momentum, strict=True):
        torch.testing.assert_close(got.detach(), want.detach(), rtol=1e-10, atol=1e-12)
    assert (s_f.offset, s_f.tokens_seen) == (s_e.offset, s_e.tokens_seen)
    torch.testing.assert_close(gx_f, gx_e, rtol=1e-10, atol=1e-12)
    assert g_f.keys() == g_e.keys() and len(g_e) > 5
    for name in g_e:
        torch.testing.assert_close(g_f[name], g_e[name], rtol=1e-10, atol=1e-12, msg=name)


def paired(factory, **kwargs):
    torch.manual_seed(0)
    eager = factory(**kwargs).to(DT)
    fast = factory(**kwargs, compile_chunks=True).to(DT)
    fast.load_state_dict(eager.state_dict())
    return eager, fast


@needs_compiler
@pytest.mark.parametrize("checkpoint_chunks", [0, 2])
def test_the_compiled_titans_chunk_step_is_the_eager_one(checkpoint_chunks):
    # with checkpointing the compiled step also runs without gradients and again inside the backward pass
    eager, fast = paired(
        NeuralMemory, dim=8, depth=2, chunk_size=4, expansion=2, checkpoint_chunks=checkpoint_chunks
    )
    x = torch.randn(2, 13, 8, dtype=DT, generator=torch.Generator().manual_seed(1))
    assert_same_runs(two_calls(eager, x), two_calls(fast, x))
    # and without gradients (evaluation): the same outputs
    with torch.no_grad():
        torch.testing.assert_close(fast(x)[0], eager(x)[0], rtol=1e-10, atol=1e-12)


@needs_compiler
@pytest.mark.parametrize("factory", [moneta, memora], ids=["moneta-rescaled", "memora-materialised"])
def test_the_compiled_miras_chunk_step_is_the_eager_one(factory):
    eager, fast = paired(factory, dim=8, depth=2, chunk_size=4, expansion=2)
    x = torch.randn(2, 13, 8, dtype=DT, generator=torch.Generator().manual_seed(2))
    assert_same_runs(two_calls(eager, x), two_calls(fast, x))
