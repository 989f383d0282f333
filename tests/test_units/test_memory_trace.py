"""Instrumentation of the Titans memory (``neural_memory.memory_trace``): the recorded numbers are those of
the real recurrence, the recording changes nothing, and the forgetting probe behaves as forgetting should."""

from __future__ import annotations

import pytest
import torch

from neural_memory.memory_trace import (
    forgetting_probe,
    probe_config,
    titans_memories,
    trace_memory,
    trace_model,
)
from neural_memory.miras.memory import yaad
from neural_memory.models import build_lm
from neural_memory.titans.memory import NeuralMemory
from neural_memory.titans.reference import reference_memory

F64 = torch.float64
EXACT = {"rtol": 1e-12, "atol": 1e-12}


def _memory(**kwargs) -> NeuralMemory:
    torch.manual_seed(0)
    return NeuralMemory(8, heads=2, **kwargs).double()


def _inputs(x: torch.Tensor, memory: NeuralMemory):
    keys, values, _ = memory.keys_values(x, memory.init_state(x.shape[0], dtype=F64))
    return (t.detach() for t in (keys, values, *memory.gates(x)))


def _row_norm(tensors) -> torch.Tensor:
    return torch.sqrt(sum(t.flatten(1).pow(2).sum(1) for t in tensors))


def _check_token(trace, t, grads, momentum, previous, weights, initial, gates):
    theta = gates[2]
    torch.testing.assert_close(trace.grad_norm[t], _row_norm(grads), **EXACT)
    torch.testing.assert_close(trace.surprise_norm[t], theta * _row_norm(grads), **EXACT)
    torch.testing.assert_close(trace.momentum_norm[t], _row_norm(momentum), **EXACT)
    for layer, (w, w_prev, w0) in enumerate(zip(weights, previous, initial, strict=True)):
        torch.testing.assert_close(trace.weight_norm[t, :, layer], _row_norm([w]), **EXACT)
        torch.testing.assert_close(trace.content_norm[t, :, layer], _row_norm([w - w0]), **EXACT)
        torch.testing.assert_close(trace.row_update[layer][t], (w - w_prev).norm(dim=-1), **EXACT)
    for recorded, gate in zip((trace.alpha, trace.eta, trace.theta), gates, strict=True):
        torch.testing.assert_close(recorded[t], gate, **EXACT)


def test_linear_memory_records_eq_13_14_computed_by_hand_for_two_tokens():
    # depth 1, no read-out norm: M(k) = k M, grad of ||k M - v||^2 is 2 k^T (k M - v); Eq. 13 decays towards 0
    memory = _memory(depth=1, chunk_size=1)
    x = torch.randn(1, 2, 8, dtype=F64)
    trace, _ = trace_memory(memory, x)
    keys, values, alpha, eta, theta = _inputs(x, memory)
    initial = memory.memory.initial_weights[0].detach()  # (heads, 4, 4): one memory per head
    weights, momentum = initial, torch.zeros_like(initial)
    for t in range(2):
        k, v = keys[:, t], values[:, t]
        grad = 2 * k[:, :, None] * (torch.einsum("ni,nij->nj", k, weights) - v)[:, None, :]
        new_momentum = eta[:, t, None, None] * momentum - theta[:, t, None, None] * grad  # Eq. 14
        new_weights = (1 - alpha[:, t, None, None]) * weights + new_momentum  # Eq. 13
        gates = (alpha[:, t], eta[:, t], theta[:, t])
        _check_token(trace, t, [grad], [new_momentum], [weights], [new_weights], [initial], gates)
        weights, momentum = new_weights, new_momentum
    torch.testing.assert_close(trace.weights[0], weights, **EXACT)
    torch.testing.assert_close(trace.momentum[0], momentum, **EXACT)
    assert trace.position.tolist() == [0, 1]


def test_deep_memory_records_the_recurrence_towards_m0_computed_with_autograd():
    # depth 2, LayerNorm read-out: M_t - M_0 = (1 - alpha)(M_{t-1} - M_0) + S_t (errata "Titans Eq. 13")
    memory = _memory(depth=2, expansion=2, chunk_size=1)
    x = torch.randn(1, 3, 8, dtype=F64)
    trace, _ = trace_memory(memory, x)
    keys, values, alpha, eta, theta = _inputs(x, memory)
    initial = tuple(w.detach() for w in memory.memory.expand(1))
    weights, momentum = initial, tuple(torch.zeros_like(w) for w in initial)
    for t in range(3):
        leaves = tuple(w.clone().requires_grad_() for w in weights)
        pred = memory.memory.recall(leaves, keys[:, t : t + 1])
        grads = torch.autograd.grad((pred - values[:, t : t + 1]).pow(2).sum(), leaves)  # rows independent
        a, e, th = (g[:, t, None, None] for g in (alpha, eta, theta))
        new_momentum = tuple(e * s - th * g for s, g in zip(momentum, grads, strict=True))
        new_weights = tuple(
            w0 + (1 - a) * (w - w0) + s for w, w0, s in zip(weights, initial, new_momentum, strict=True)
        )
        gates = (alpha[:, t], eta[:, t], theta[:, t])
        _check_token(trace, t, grads, new_momentum, weights, new_weights, initial, gates)
        weights, momentum = new_weights, new_momentum
    for recorded, expected in zip(trace.weights, weights, strict=True):
        torch.testing.assert_close(recorded, expected, **EXACT)


def test_the_trace_ends_in_the_modules_own_state_and_continues_a_stream():
    memory = _memory(depth=2, chunk_size=4)  # the chunk-parallel form, Eq. 16 chunks of 4
    x = torch.randn(2, 10, 8, dtype=F64)
    trace, state = trace_memory(memory, x)
    own = memory.update(x)
    for ours, theirs in zip((*state.weights, *state.momentum), (*own.weights, *own.momentum), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
    assert trace.grad_norm.shape == (10, 4) and trace.row_update[1].shape == (10, 4, 16)
    more = torch.randn(2, 5, 8, dtype=F64)
    trace2, state2 = trace_memory(memory, more, state)
    own2 = memory.update(more, own)
    assert trace2.position.tolist() == list(range(10, 15))
    for ours, theirs in zip(state2.weights, own2.weights, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


def test_recording_changes_nothing_in_the_reference_loop():
    memory = _memory(depth=2, chunk_size=3)
    x = torch.randn(1, 7, 8, dtype=F64)
    keys, values, alpha, eta, theta = _inputs(x, memory)
    args = (memory.memory, memory.init_state(1, dtype=F64), keys, values, keys, alpha, eta, theta)
    steps = []
    y_plain, plain = reference_memory(*args, chunk_size=3)
    y_recorded, recorded = reference_memory(*args, chunk_size=3, record=steps.append)
    assert torch.equal(y_plain, y_recorded)
    assert all(torch.equal(a, b) for a, b in zip(plain.weights, recorded.weights, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(plain.momentum, recorded.momentum, strict=True))
    assert [s.index for s in steps] == list(range(7))
    assert all(torch.equal(a, b) for a, b in zip(steps[-1].weights, plain.weights, strict=True))


def _last_state_of(memory: NeuralMemory) -> tuple[list, object]:
    captured: list = []
    return captured, memory.register_forward_hook(lambda m, args, out: captured.append(out[1]))


@pytest.mark.parametrize(
    ("kind", "config", "calls", "tokens"),
    [
        ("titans-mac", {"heads": 2, "segment_len": 8}, 3, 20),  # segments 8, 8, 4
        ("titans-mag", {"heads": 2, "n_persistent": 4}, 2, 24),  # the persistent prefix, then the sequence
    ],
)
def test_trace_model_traces_the_memory_the_model_ran(kind, config, calls, tokens):
    torch.manual_seed(0)
    model = build_lm(kind, vocab_size=256, dim=16, depth=2, memory_chunk_size=4, **config).double()
    memory = titans_memories(model)[1]
    captured, handle = _last_state_of(memory)
    traced = trace_model(model, torch.randint(0, 256, (1, 20)), index=1)
    handle.remove()
    assert (traced.calls, traced.trace.tokens, traced.memories, traced.index) == (calls, tokens, 2, 1)
    assert traced.replay_error < 1e-12
    for ours, theirs in zip(traced.trace.weights, captured[-1].weights, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_models_without_a_titans_memory_and_bad_indices_are_refused():
    tokens = torch.randint(0, 256, (1, 4))
    for kind, config in (("transformer", {"heads": 2}), ("yaad", {})):
        with pytest.raises(ValueError, match="has no Titans NeuralMemory"):
            trace_model(build_lm(kind, vocab_size=256, dim=16, depth=1, **config), tokens)
    model = build_lm("titans-lmm", vocab_size=256, dim=16, depth=1)
    with pytest.raises(ValueError, match=r"index must be an int in \[0, 0\], got 1"):
        trace_model(model, tokens, index=1)
    with pytest.raises(TypeError, match="not a subclass such as MirasMemory"):
        trace_memory(yaad(16), torch.randn(1, 3, 16))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, seq >= 1, 8\)"):
        trace_memory(_memory(), torch.randn(1, 0, 8, dtype=F64))


# ------------------------------------------------------------------------------------------------
# the forgetting probe
# ------------------------------------------------------------------------------------------------

MEMORIES = {"linear": {"depth": 1}, "deep": {"depth": 2}}  # plain read-out; LayerNorm read-out, forget to M_0
SEEDS = (0, 1, 2)


@pytest.mark.parametrize("memory", MEMORIES)
def test_written_pairs_are_recalled_better_than_by_the_unwritten_memory(memory):
    for seed in SEEDS:
        probe = forgetting_probe((0.0,), n_distractors=0, seed=seed, **MEMORIES[memory])
        assert probe["relative_error"].shape == (1, 16)
        assert (probe["relative_error"] < 1).all(), (seed, probe["relative_error"])


@pytest.mark.parametrize("memory", MEMORIES)
def test_a_larger_forget_rate_loses_more_of_the_oldest_pair(memory):
    for seed in SEEDS:
        probe = forgetting_probe((0.0, 0.01, 0.05, 0.2), seed=seed, **MEMORIES[memory])
        oldest = probe["relative_error"][:, 0]
        assert probe["age"][0] == 31 and probe["age"][-1] == 16
        assert (oldest[1:] > oldest[:-1]).all(), (seed, oldest)


def test_a_zero_step_writes_nothing():
    probe = forgetting_probe((0.0, 0.5), theta=0.0, n_pairs=3, n_distractors=2, samples=2)
    torch.testing.assert_close(probe["relative_error"], torch.ones(2, 3, dtype=F64), rtol=0, atol=1e-15)


def test_probe_config_is_one_head_of_the_memory_and_bad_counts_are_refused():
    memory = NeuralMemory(32, heads=2, depth=2, expansion=3, activation="gelu")
    assert probe_config(memory) == {
        "dim": 16,
        "depth": 2,
        "expansion": 3,
        "activation": "gelu",
        "residual_norm": True,
        "forget_to_initial": True,
    }
    with pytest.raises(ValueError, match="n_pairs must be an int >= 1, got 0"):
        forgetting_probe(n_pairs=0)
    with pytest.raises(ValueError, match="samples must be an int >= 1"):
        forgetting_probe(samples=0)
