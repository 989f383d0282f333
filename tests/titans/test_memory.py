"""NeuralMemory, the public module: fast == reference end to end, streaming, gradients, limits, robustness."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from neural_memory.titans import NeuralMemory
from neural_memory.titans.reference import per_token_gradients
from neural_memory.titans.update import surprise_update

DT = torch.float64
TOL = {"rtol": 0.0, "atol": 1e-10}


def pair(seed=0, **config):
    """The same NeuralMemory twice, chunk-parallel and token loop, float64."""
    torch.manual_seed(seed)
    fast = NeuralMemory(8, **{"heads": 2, "depth": 2, "chunk_size": 4, **config}).to(DT)
    slow = NeuralMemory(8, **{"heads": 2, "depth": 2, "chunk_size": 4, **config, "impl": "reference"}).to(DT)
    slow.load_state_dict(fast.state_dict())
    return fast, slow


def states_close(a, b):
    for x, y in zip(
        a.weights + a.momentum + a.chunk_weights, b.weights + b.momentum + b.chunk_weights, strict=True
    ):
        torch.testing.assert_close(x, y, **TOL)
    for name in a.conv:
        torch.testing.assert_close(a.conv[name], b.conv[name], **TOL)
    assert (a.offset, a.tokens_seen) == (b.offset, b.tokens_seen)


@pytest.mark.equation("titans", 16)
@pytest.mark.parametrize("chunk_size", [1, 3, 4])
@pytest.mark.parametrize("read", ["token", "chunk"])
def test_module_fast_equals_reference_outputs_states_and_gradients(chunk_size, read):
    fast, slow = pair(chunk_size=chunk_size, read=read)
    x = torch.randn(2, 10, 8, dtype=DT)
    results = []
    for module in (fast, slow):
        y, state = module(x)
        loss = (y**2).sum() + sum((w**2).sum() for w in state.weights) + sum(m.sum() for m in state.momentum)
        results.append((y, state, torch.autograd.grad(loss, list(module.parameters()))))
    torch.testing.assert_close(results[0][0], results[1][0], **TOL)
    states_close(results[0][1], results[1][1])
    for g_fast, g_slow in zip(results[0][2], results[1][2], strict=True):
        torch.testing.assert_close(g_fast, g_slow, **TOL)


def saved_for_backward(module, x):
    """Scalars autograd keeps for the backward pass of ``module(x)`` (what checkpointing must cut)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return sum(storages.values())


def test_checkpointing_gives_the_same_outputs_and_gradients_and_saves_less():
    plain, _ = pair(chunk_size=2)
    ckpt, _ = pair(chunk_size=2, checkpoint_chunks=2)
    x = torch.randn(2, 11, 8, dtype=DT)
    assert saved_for_backward(ckpt, x) < 0.5 * saved_for_backward(plain, x)
    grads = []
    for module in (plain, ckpt):
        y, state = module(x)
        loss = (y**2).sum() + sum((w**2).sum() for w in state.weights)
        grads.append((y, torch.autograd.grad(loss, list(module.parameters()))))
    torch.testing.assert_close(grads[0][0], grads[1][0], **TOL)
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.equation("titans", 13)
@pytest.mark.equation("titans", 14)
@settings(max_examples=12)
@given(cut=st.integers(0, 13), chunk_size=st.integers(1, 5))
def test_streaming_any_split_equals_one_call(cut, chunk_size):
    module, _ = pair(chunk_size=chunk_size)
    x = torch.randn(2, 13, 8, dtype=DT)
    whole, whole_state = module(x)
    first, mid = module(x[:, :cut])
    second, end = module(x[:, cut:], mid)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, **TOL)
    states_close(end, whole_state)


def test_single_tokens_equal_one_call_and_state_does_not_grow():
    module, _ = pair(chunk_size=4)
    x = torch.randn(1, 11, 8, dtype=DT)
    whole, _ = module(x)
    outs, state, sizes = [], None, set()
    for t in range(11):
        y, state = module(x[:, t : t + 1], state)
        outs.append(y)
        sizes.add(state.numel())
    torch.testing.assert_close(torch.cat(outs, dim=1), whole, **TOL)
    assert len(sizes) == 1


@pytest.mark.equation("titans", 15)
def test_retrieve_does_not_change_the_memory_and_reads_current_weights():
    module, _ = pair(conv_kernel=0, output_norm=False, output_gate=False, qk_norm=False)
    x = torch.randn(2, 6, 8, dtype=DT)
    state = module.update(x)
    y, after = module.retrieve(x[:, :3], state)
    for a, b in zip(after.weights + after.momentum, state.weights + state.momentum, strict=True):
        assert torch.equal(a, b)
    # y = W_o M*(q) with q = SiLU(x W_Q), read with the current weights
    q = module._split_heads(torch.nn.functional.silu(module.to_q(x[:, :3])))
    expected = module.to_out(module._merge_heads(module.memory.recall(state.weights, q), 2))
    torch.testing.assert_close(y, expected, **TOL)
    y2, _ = module.retrieve(x[:, :3], state)
    assert torch.equal(y, y2)


@pytest.mark.equation("titans", 15)
def test_linear_memory_retrieval_is_q_times_w():
    module, _ = pair(depth=1, conv_kernel=0, output_norm=False, output_gate=False, qk_norm=False, heads=1)
    state = module.init_state(1, dtype=DT)
    q = torch.randn(1, 3, 8, dtype=DT)
    torch.testing.assert_close(module.memory.recall(state.weights, q), q @ state.weights[0], **TOL)


@pytest.mark.equation("titans", 11)
def test_keys_values_are_the_projections_and_outer_gradients_reach_them():
    module, _ = pair(conv_kernel=0, qk_norm=False)
    x = torch.randn(2, 5, 8, dtype=DT)
    k, v, _ = module.keys_values(x, module.init_state(2, dtype=DT))
    silu = torch.nn.functional.silu
    torch.testing.assert_close(k, module._split_heads(silu(x @ module.to_k.weight.T)), **TOL)
    torch.testing.assert_close(v, module._split_heads(silu(x @ module.to_v.weight.T)), **TOL)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    y, _ = module(x)
    for n, p in module.named_parameters():  # the inner loop never touches outer-loop parameters
        assert torch.equal(p, before[n]), n
    y.sum().backward()
    for p in (module.to_k.weight, module.to_v.weight, module.to_q.weight, *module.memory.initial_weights):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert module.gates.proj.weight.grad.abs().sum() > 0


@pytest.mark.equation("titans", 8)
def test_alpha_zero_eta_zero_is_plain_gradient_descent():
    # Eq. 8 through the whole module: fixed gates (0, 0, theta), chunk size 1, compared with a loop of
    # surprise_update steps whose gradients come from autograd.
    module, _ = pair(gates="fixed", fixed_gates=(0.0, 0.0, 0.3), chunk_size=1, conv_kernel=0)
    x = torch.randn(2, 5, 8, dtype=DT)
    _, state = module(x)
    keys, values, _ = module.keys_values(x, module.init_state(2, dtype=DT))
    weights = module.memory.expand(2)
    for t in range(5):
        grads = per_token_gradients(module.memory, weights, keys[:, t], values[:, t])
        weights = surprise_update(weights, grads, torch.full((4,), 0.3, dtype=DT))
    for a, b in zip(state.weights, weights, strict=True):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.equation("titans", 13)
def test_no_momentum_flag_is_eta_zero():
    a, _ = pair(gates="fixed", fixed_gates=(0.1, 0.0, 0.2))
    b, _ = pair(gates="fixed", fixed_gates=(0.1, 0.9, 0.2), momentum=False)
    x = torch.randn(1, 7, 8, dtype=DT)
    torch.testing.assert_close(a(x)[0], b(x)[0], **TOL)


def test_zero_step_size_never_changes_the_memory():
    module, _ = pair(gates="fixed", fixed_gates=(0.0, 0.5, 0.0))
    _, state = module(torch.randn(1, 9, 8, dtype=DT))
    for w, w0 in zip(state.weights, module.memory.expand(1), strict=True):
        torch.testing.assert_close(w, w0, rtol=0, atol=0)


@pytest.mark.parametrize("seq", [1, 3, 7])
def test_short_and_trailing_partial_chunks_update_the_memory(seq):
    module, _ = pair(chunk_size=4)
    _, state = module(torch.randn(1, seq, 8, dtype=DT))
    assert state.tokens_seen == seq and state.offset == seq % 4
    changed = [
        not torch.allclose(w, w0) for w, w0 in zip(state.weights, module.memory.expand(1), strict=True)
    ]
    assert all(changed)


def test_gradcheck_end_to_end():
    torch.manual_seed(0)
    module = NeuralMemory(4, depth=2, heads=1, chunk_size=2, expansion=1, conv_kernel=2).to(DT)
    x = torch.randn(1, 3, 4, dtype=DT)
    params = dict(module.named_parameters())
    names = [
        "to_k.weight",
        "to_v.weight",
        "to_q.weight",
        "gates.proj.weight",
        "gates.proj.bias",
        "memory.initial_weights.0",
        "memory.initial_weights.1",
    ]

    def f(*tensors):
        overrides = dict(zip(names, tensors, strict=True))
        return torch.func.functional_call(module, {**params, **overrides}, (x,))[0]

    inputs = tuple(params[n].detach().clone().requires_grad_(True) for n in names)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6)


def test_same_seed_is_bit_identical():
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        module = NeuralMemory(16, heads=2)
        outs.append(module(torch.randn(2, 40, 16))[0])
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"depth": 0}, "depth"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"heads": 3}, "divisible by heads"),
        ({"read": "late"}, "read"),
        ({"impl": "fast"}, "impl"),
        ({"conv_kernel": -1}, "conv_kernel"),
        ({"checkpoint_chunks": -1}, "checkpoint_chunks"),
        ({"gates": "fixed"}, "fixed_gates"),
        ({"gates": "fixed", "fixed_gates": (1.5, 0.0, 0.1)}, "alpha"),
        ({"gates": "fixed", "fixed_gates": (0.0, 0.0, -0.1)}, "theta"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NeuralMemory(8, **kwargs)


def test_bad_inputs_raise():
    module = NeuralMemory(8)
    with pytest.raises(ValueError, match="x must have shape"):
        module(torch.randn(5, 8))
    with pytest.raises(ValueError, match="x must have shape"):
        module(torch.randn(1, 5, 7))
    _, state = module(torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match="batch"):
        module(torch.randn(3, 3, 8), state)
    with pytest.raises(TypeError, match="depth"):
        NeuralMemory(8, depth=2.0)


@pytest.mark.slow
def test_65k_tokens_float32_stay_finite_and_bounded():
    torch.manual_seed(0)
    module = NeuralMemory(64, chunk_size=64)
    state, peak = None, 0.0
    with torch.no_grad():
        for piece in torch.randn(1, 65_536, 64).split(8192, dim=1):
            y, state = module(piece, state)
            assert torch.isfinite(y).all()
            peak = max(peak, max(w.abs().max().item() for w in state.weights))
    assert state.tokens_seen == 65_536
    assert peak < 100.0, peak


@pytest.mark.equation("titans", 15)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_memory_memorizes_written_pairs(seed):
    # Issue 7's probe: write N = 16 random (unit key, value) pairs into a default NeuralMemory (dim 64) with
    # its initial gates (the gates' outputs at zero input) and read them back with the keys as queries
    # (Eq. 15). The recall error on the written pairs must be at most half that of the unwritten memory.
    torch.manual_seed(seed)
    module = NeuralMemory(64)
    keys = torch.nn.functional.normalize(torch.randn(1, 16, 64), dim=-1)
    values = torch.randn(1, 16, 64)
    state = module.init_state(1)
    with torch.no_grad():
        _, written = module._write(torch.zeros(1, 16, 64), keys, values, None, state)
        before = (module.memory.recall(state.weights, keys) - values).pow(2).sum(-1).mean()
        after = (module.memory.recall(written.weights, keys) - values).pow(2).sum(-1).mean()
    assert after < 0.5 * before, (after / before).item()
