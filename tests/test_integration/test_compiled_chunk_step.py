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
from neural_memory.nl import self_modifying
from neural_memory.nl.self_modifying import SelfModifyingTitans
from neural_memory.titans import mac as titans_mac
from neural_memory.titans.memory import NeuralMemory

DT = torch.float64

needs_compiler = pytest.mark.skipif(
    not compiled.has_cpp_compiler(), reason="torch.compile on CPU needs a C++ compiler"
)


def two_calls(module, x, cut=6, final=lambda state: state.weights):
    """Run ``x`` in two calls cut at ``cut`` (inside a chunk); returns outputs, final state, grads.

    The loss weighs every output and the ``final`` state tensors, so the state's gradient path is checked
    too."""
    module.zero_grad(set_to_none=True)
    inputs = x.clone().requires_grad_(True)
    y1, state = module(inputs[:, :cut])
    y2, state = module(inputs[:, cut:], state)
    y = torch.cat([y1, y2], dim=1)
    loss = (y * torch.linspace(-1, 1, y.shape[-1], dtype=DT)).sum() + sum(w.sum() for w in final(state))
    loss.backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}
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


def hope_weights(front):
    """Every memory's current and chunk-start weights of a self-modifying Titans state, in one list."""
    return lambda state: [w for d in (state.current, state.snapshot) for name in front.names for w in d[name]]


@needs_compiler
def test_the_compiled_self_modifying_span_is_the_eager_one():
    # Hope's front end (q, k, v normalised); the memories' chunk sizes differ (4 and 2), so spans end at the
    # other memories' chunk ends while the main memory is mid-chunk: snapshot and current state differ
    eager, fast = paired(
        SelfModifyingTitans, dim=8, hidden=16, chunk_size=4, other_chunk_size=2, qk_norm=True, v_norm=True
    )
    x = torch.randn(2, 11, 8, dtype=DT, generator=torch.Generator().manual_seed(3))
    y_e, s_e, gx_e, g_e = two_calls(eager, x, cut=5, final=hope_weights(eager))
    y_f, s_f, gx_f, g_f = two_calls(fast, x, cut=5, final=hope_weights(fast))
    assert self_modifying._span_update in compiled._COMPILED  # the spans went through torch.compile
    torch.testing.assert_close(y_f, y_e, rtol=1e-10, atol=1e-12)
    assert s_f.position == s_e.position == 11
    weights_f, weights_e = hope_weights(fast)(s_f), hope_weights(eager)(s_e)
    assert len(weights_f) == len(weights_e) == 20
    for got, want in zip(weights_f, weights_e, strict=True):
        torch.testing.assert_close(got.detach(), want.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gx_f, gx_e, rtol=1e-10, atol=1e-12)
    assert g_f.keys() == g_e.keys() and len(g_e) > 10
    for name in g_e:
        torch.testing.assert_close(g_f[name], g_e[name], rtol=1e-10, atol=1e-12, msg=name)


@needs_compiler
@pytest.mark.parametrize("checkpoint_chunks", [0, 2])
def test_the_compiled_mac_segment_step_is_the_eager_one(checkpoint_chunks):
    # the whole segment (retrieval, attention, memory write and gate) is one compiled step; with
    # checkpointing it also runs without gradients and again inside the backward pass
    def build(**extra):
        torch.manual_seed(0)
        memory = {"chunk_size": 2, "depth": 2, "expansion": 2, "checkpoint_chunks": checkpoint_chunks}
        config = {"segment_len": 4, "n_persistent": 2, "heads": 2}
        return titans_mac.MemoryAsContext(8, **config, memory={**memory, **extra}).to(DT)

    eager, fast = build(), build(compile_chunks=True)
    x = torch.randn(2, 13, 8, dtype=DT, generator=torch.Generator().manual_seed(4))
    # the cut falls inside a segment and inside a chunk
    runs = [two_calls(mac, x, final=lambda state: state.memory.weights) for mac in (eager, fast)]
    assert titans_mac._segment_piece in compiled._COMPILED
    (y_e, s_e, gx_e, g_e), (y_f, s_f, gx_f, g_f) = runs
    torch.testing.assert_close(y_f, y_e, rtol=1e-10, atol=1e-12)
    for got, want in zip(
        s_f.memory.weights + s_f.memory.momentum, s_e.memory.weights + s_e.memory.momentum, strict=True
    ):
        torch.testing.assert_close(got.detach(), want.detach(), rtol=1e-10, atol=1e-12)
    tokens_f, tokens_e = s_f.segment_tokens.detach(), s_e.segment_tokens.detach()
    torch.testing.assert_close(tokens_f, tokens_e, rtol=1e-10, atol=1e-12)
    assert s_f.offset == s_e.offset == 1
    torch.testing.assert_close(gx_f, gx_e, rtol=1e-10, atol=1e-12)
    assert g_f.keys() == g_e.keys() and len(g_e) > 10
    for name in g_e:
        torch.testing.assert_close(g_f[name], g_e[name], rtol=1e-10, atol=1e-12, msg=name)
