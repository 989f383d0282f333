"""NeuralMemory, the public module: fast == reference end to end, streaming, gradients, limits, robustness."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from neural_memory.titans import NeuralMemory
from neural_memory.titans.gates import MemoryGates
from neural_memory.titans.reference import per_token_gradients
from neural_memory.titans.update import surprise_update

from . import hand_memory as hand

DT = torch.float64
TOL = {"rtol": 0.0, "atol": 1e-10}


def pair(seed=0, **config):
    """The same NeuralMemory twice, chunk-parallel and token loop, float64."""
    torch.manual_seed(seed)
    fast = NeuralMemory(8, **{"heads": 2, "depth": 2, "chunk_size": 4, **config}).to(DT)
    slow = NeuralMemory(8, **{"heads": 2, "depth": 2, "chunk_size": 4, **config, "impl": "reference"}).to(DT)
    slow.load_state_dict(fast.state_dict())
    return fast, slow


def every_option_on(seed=0, **config):
    """Conv, SiLU, l2-normalised q/k, RMSNorm and the output gate all on; two heads; random norm gain."""
    torch.manual_seed(seed)
    module = NeuralMemory(
        8,
        **{
            "heads": 2,
            "depth": 2,
            "chunk_size": 2,
            "conv_kernel": 3,
            "qk_norm": True,
            "output_norm": True,
            "output_gate": True,
            **config,
        },
    ).to(DT)
    with torch.no_grad():  # the RMSNorm gain starts at ones; make it visible
        module.out_norm.weight.uniform_(0.5, 1.5)
    return module


def rows(t, heads, b, h):
    """Row of sequence ``b``, head ``h`` in a ``(B * heads, ...)`` tensor: heads vary fastest."""
    return t[b * heads + h]


def head_weights(weights, heads, b, h):
    """Per-layer weights of sequence ``b``, head ``h`` from a state's ``(B * heads, d_in, d_out)`` tensors."""
    return [w[b * heads + h] for w in weights]


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


def same_outputs_and_gradients(a, b, x, grad_tol=TOL):
    """Two modules with the same weights give the same outputs and outer gradients on ``x`` (float64)."""
    results = []
    for module in (a, b):
        y, state = module(x)
        loss = (y**2).sum() + sum((w**2).sum() for w in state.weights)
        results.append((y, torch.autograd.grad(loss, list(module.parameters()))))
    torch.testing.assert_close(results[0][0], results[1][0], **TOL)
    for ga, gb in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(ga, gb, **grad_tol)


def test_checkpointing_gives_the_same_outputs_and_gradients_and_saves_less():
    plain, _ = pair(chunk_size=2)
    ckpt, _ = pair(chunk_size=2, checkpoint_chunks=2)
    x = torch.randn(2, 11, 8, dtype=DT)
    assert saved_for_backward(ckpt, x) < 0.5 * saved_for_backward(plain, x)
    same_outputs_and_gradients(plain, ckpt, x)


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
    # y = W_o M*(q) with q = SiLU(x W_Q), read with the current weights (hand MLP per head)
    for b in range(2):
        weights = [head_weights(state.weights, 2, b, h) for h in range(2)]
        torch.testing.assert_close(y[b], hand.retrieve(module, weights, x[b, :3]), **TOL)
    y2, _ = module.retrieve(x[:, :3], state)
    assert torch.equal(y, y2)


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
    for b in range(2):
        for h in range(2):
            features = slice(4 * h, 4 * h + 4)
            torch.testing.assert_close(rows(k, 2, b, h), silu(x[b] @ module.to_k.weight[features].T), **TOL)
            torch.testing.assert_close(rows(v, 2, b, h), silu(x[b] @ module.to_v.weight[features].T), **TOL)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    y, _ = module(x)
    for n, p in module.named_parameters():  # the inner loop never touches outer-loop parameters
        assert torch.equal(p, before[n]), n
    y.sum().backward()
    for p in (module.to_k.weight, module.to_v.weight, module.to_q.weight, *module.memory.initial_weights):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert module.gates.proj.weight.grad.abs().sum() > 0


@pytest.mark.equation("titans", 11)
def test_keys_values_by_hand_projection_conv_silu_then_l2_norm_of_keys():
    module = every_option_on()
    x = torch.randn(2, 6, 8, dtype=DT)
    k, v, _ = module.keys_values(x, module.init_state(2, dtype=DT))
    for b in range(2):
        keys, values = hand.project(module, "k", x[b]), hand.project(module, "v", x[b])
        for h in range(2):
            torch.testing.assert_close(rows(k, 2, b, h), keys[h], rtol=0, atol=1e-12)
            torch.testing.assert_close(rows(v, 2, b, h), values[h], rtol=0, atol=1e-12)
    # the options are not no-ops: unit-norm keys, values of other norms
    torch.testing.assert_close(k.norm(dim=-1), torch.ones(4, 6, dtype=DT), rtol=0, atol=1e-12)
    assert (v.norm(dim=-1) - 1).abs().min() > 1e-3


def test_queries_by_hand_projection_conv_silu_then_l2_norm():
    module = every_option_on()
    x = torch.randn(2, 6, 8, dtype=DT)
    q, _ = module.queries(x, module.init_state(2, dtype=DT))
    for b in range(2):
        queries = hand.project(module, "q", x[b])
        for h in range(2):
            torch.testing.assert_close(rows(q, 2, b, h), queries[h], rtol=0, atol=1e-12)


@pytest.mark.equation("titans", 15)
def test_retrieve_by_hand_output_rmsnorm_times_silu_gate_then_output_projection():
    module = every_option_on()
    x = torch.randn(2, 6, 8, dtype=DT)
    y, _ = module.retrieve(x)
    for b in range(2):
        torch.testing.assert_close(
            y[b], hand.retrieve(module, hand.initial_weights(module), x[b]), rtol=0, atol=1e-12
        )


@pytest.mark.equation("titans", 11)
def test_streamed_keys_values_continue_the_convolution_cache():
    # the hand convolution runs over the whole sequence; the module gets it in two calls
    module = every_option_on()
    x = torch.randn(1, 7, 8, dtype=DT)
    k1, v1, state = module.keys_values(x[:, :3], module.init_state(1, dtype=DT))
    k2, v2, _ = module.keys_values(x[:, 3:], state)
    keys, values = hand.project(module, "k", x[0]), hand.project(module, "v", x[0])
    for h in range(2):
        torch.testing.assert_close(torch.cat([k1[h], k2[h]]), keys[h], rtol=0, atol=1e-12)
        torch.testing.assert_close(torch.cat([v1[h], v2[h]]), values[h], rtol=0, atol=1e-12)


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
        ({"dim": 0}, r"^dim must be >= 1, got 0$"),
        ({"depth": 0}, r"^depth must be >= 1, got 0$"),
        ({"chunk_size": 0}, r"^chunk_size must be >= 1, got 0$"),
        ({"heads": 0}, r"^heads must be >= 1, got 0$"),
        ({"heads": 3}, r"^dim \(8\) must be divisible by heads \(3\)$"),
        ({"read": "late"}, r"^read must be one of \('token', 'chunk'\), got 'late'$"),
        ({"impl": "fast"}, r"^impl must be one of \('chunked', 'reference'\), got 'fast'$"),
        ({"conv_kernel": -1}, r"^conv_kernel must be >= 0 \(0 disables the convolution\), got -1$"),
        ({"checkpoint_chunks": -1}, r"^checkpoint_chunks must be 'auto' or >= 0 \(0 disables it\), got -1$"),
        ({"gates": "learnt"}, r"^gates must be 'learned' or 'fixed', got 'learnt'$"),
        ({"gates": "fixed"}, r"^gates='fixed' needs fixed_gates=\(alpha, eta, theta\)$"),
        (
            {"gates": "fixed", "fixed_gates": (0.1, 0.2)},
            r"^gates='fixed' needs fixed_gates=\(alpha, eta, theta\)$",
        ),
        ({"gates": "fixed", "fixed_gates": (1.5, 0.0, 0.1)}, "alpha"),
        ({"gates": "fixed", "fixed_gates": (0.0, 0.0, -0.1)}, "theta"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    torch.manual_seed(0)
    kwargs = {"dim": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        NeuralMemory(kwargs.pop("dim"), **kwargs)


@pytest.mark.parametrize("name", ["dim", "depth", "chunk_size", "heads"])
@pytest.mark.parametrize("value", ["2", 2.0, True])
def test_sizes_must_be_ints(name, value):
    kwargs = {"dim": 8, name: value}
    with pytest.raises(TypeError, match=rf"^{name} must be an int, got {type(value).__name__}$"):
        NeuralMemory(kwargs.pop("dim"), **kwargs)


def test_the_smallest_sizes_are_allowed():
    module = NeuralMemory(1, depth=1, chunk_size=1, heads=1, conv_kernel=0)
    assert module(torch.randn(1, 3, 1))[0].shape == (1, 3, 1)


def test_init_state_is_m0_with_zero_momentum_in_the_requested_dtype_and_device():
    torch.manual_seed(0)
    module = NeuralMemory(8, heads=2)
    state = module.init_state(3, dtype=torch.bfloat16)
    m0 = module.memory.expand(3)
    for w, s, c, w0 in zip(state.weights, state.momentum, state.chunk_weights, m0, strict=True):
        assert w.dtype == s.dtype == c.dtype == torch.bfloat16 and w.shape == w0.shape
        torch.testing.assert_close(w, w0.to(torch.bfloat16), rtol=0, atol=0)
        assert not s.any()
    assert {c.dtype for c in state.conv.values()} == {torch.bfloat16}
    assert state.tokens_seen == 0 and state.offset == 0
    plain = module.init_state(3)
    assert {w.dtype for w in plain.weights} == {torch.float32}
    # a module on the CPU asked for a state elsewhere: every tensor of the state goes there
    on_meta = module.init_state(3, device="meta")
    tensors = (*on_meta.weights, *on_meta.momentum, *on_meta.chunk_weights, *on_meta.conv.values())
    assert {t.device.type for t in tensors} == {"meta"}
    assert {t.dtype for t in tensors} == {torch.float32}


def test_update_writes_like_forward_without_reading():
    module, _ = pair(chunk_size=3)
    x = torch.randn(2, 7, 8, dtype=DT)
    _, by_forward = module(x)
    by_update = module.update(x)
    for a, b in zip(
        by_update.weights + by_update.momentum, by_forward.weights + by_forward.momentum, strict=True
    ):
        torch.testing.assert_close(a, b, **TOL)
    for name in ("k", "v"):  # the write advances the key and value convolutions; no query is read
        torch.testing.assert_close(by_update.conv[name], by_forward.conv[name], **TOL)
    assert not by_update.conv["q"].any()
    assert by_update.tokens_seen == 7


def test_bad_inputs_raise():
    torch.manual_seed(0)
    module = NeuralMemory(8)
    # the exact message: a later layer's own shape error must not stand in for this one
    for call in (module, module.update, module.retrieve):
        with pytest.raises(ValueError, match=r"^x must have shape \(batch, seq, 8\), got \(5, 8\)$"):
            call(torch.randn(5, 8))
        with pytest.raises(ValueError, match=r"^x must have shape \(batch, seq, 8\), got \(1, 5, 7\)$"):
            call(torch.randn(1, 5, 7))
    with pytest.raises(ValueError, match=r"^x must have shape \(batch, seq, 8\), got list$"):
        module([[0.0] * 8])
    _, state = module(torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match=r"^state is for batch 2, x has batch 3$"):
        module(torch.randn(3, 4, 8), state)  # seq 4 != batch 3: the message names the batch
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


# -- learned gates (gates.py): order (alpha, eta, theta), head layout, the ablation flags --------------------


def gates_by_hand(gates, x, b, h, t):
    """``(alpha, eta, theta)`` of sequence b, head h, token t by hand; gate g is output ``g * heads + h``."""
    outputs = [g * gates.heads + h for g in range(3)]
    logits = [x[b, t] @ gates.proj.weight[j] + gates.proj.bias[j] for j in outputs]
    alpha, eta, theta = (1 / (1 + torch.exp(-z)) for z in logits)
    return alpha, eta, gates.theta_max * theta


def gates_with_biases(logits, *, dim=4, **flags):
    """MemoryGates with a zero weight and the bias set to ``logits[g][h]`` (gate g, head h), float64."""
    torch.manual_seed(0)
    gates = MemoryGates(dim, len(logits[0]), theta_max=0.5, **flags).to(DT)
    with torch.no_grad():
        gates.proj.weight.zero_()
        gates.proj.bias.copy_(torch.tensor(logits, dtype=DT).reshape(-1))  # index g * heads + h
    return gates


def test_gates_are_returned_as_alpha_eta_theta():
    # zero weight: every token's gates are the sigmoids of the biases, three distinct logits
    gates = gates_with_biases([[-3.0], [0.5], [2.0]])
    alpha, eta, theta = gates(torch.randn(2, 5, 4, dtype=DT, generator=torch.Generator().manual_seed(1)))
    exact = {"rtol": 0.0, "atol": 0.0}
    torch.testing.assert_close(alpha, torch.sigmoid(torch.full((2, 5), -3.0, dtype=DT)), **exact)
    torch.testing.assert_close(eta, torch.sigmoid(torch.full((2, 5), 0.5, dtype=DT)), **exact)
    torch.testing.assert_close(theta, 0.5 * torch.sigmoid(torch.full((2, 5), 2.0, dtype=DT)), **exact)


def test_gates_rows_are_sequence_major_head_minor():
    # two heads, six distinct logits: row b * heads + h holds head h of sequence b
    logits = [[-3.0, -1.0], [0.5, 1.5], [2.0, -2.0]]
    gates = gates_with_biases(logits)
    alpha, eta, theta = gates(torch.zeros(3, 4, 4, dtype=DT))
    for b in range(3):
        for h in range(2):
            for gate, got in enumerate((alpha, eta, theta)):
                scale = 0.5 if gate == 2 else 1.0
                want = scale / (1 + torch.exp(torch.tensor(-logits[gate][h], dtype=DT)))
                torch.testing.assert_close(got[b * 2 + h], want.expand(4), rtol=0, atol=1e-15)


def test_gates_by_hand_from_the_linear_map_of_each_token():
    torch.manual_seed(0)
    gates = MemoryGates(4, 2, theta_max=0.5).to(DT)
    x = torch.randn(2, 3, 4, dtype=DT)
    alpha, eta, theta = gates(x)
    for b in range(2):
        for h in range(2):
            for t in range(3):
                want = gates_by_hand(gates, x, b, h, t)
                got = (alpha[b * 2 + h, t], eta[b * 2 + h, t], theta[b * 2 + h, t])
                for g, w in zip(got, want, strict=True):
                    torch.testing.assert_close(g, w, rtol=0, atol=1e-15)


@pytest.mark.parametrize("off", [0, 1], ids=["weight_decay_false_alpha", "momentum_false_eta"])
def test_a_disabled_gate_is_exactly_zero_and_the_others_keep_their_values(off):
    torch.manual_seed(0)
    flags = {"weight_decay": off != 0, "momentum": off != 1}
    gates = MemoryGates(4, 2, theta_max=0.5, **flags).to(DT)
    x = torch.randn(2, 3, 4, dtype=DT)
    got = gates(x)  # (alpha, eta, theta)
    assert torch.equal(got[off], torch.zeros(4, 3, dtype=DT))
    for b, h, t in ((0, 0, 0), (0, 1, 2), (1, 0, 1), (1, 1, 2)):
        want = gates_by_hand(gates, x, b, h, t)
        for kept in {0, 1, 2} - {off}:
            torch.testing.assert_close(got[kept][b * 2 + h, t], want[kept], rtol=0, atol=1e-15)


@pytest.mark.parametrize("gates", ["learned", "fixed"])
def test_neural_memory_flags_reach_the_gates(gates):
    torch.manual_seed(0)
    config = {"gates": gates, "fixed_gates": (0.3, 0.6, 0.1)} if gates == "fixed" else {}
    x = torch.randn(2, 3, 8, dtype=DT)
    no_decay = NeuralMemory(8, heads=2, weight_decay=False, **config).to(DT)
    no_momentum = NeuralMemory(8, heads=2, momentum=False, **config).to(DT)
    assert torch.equal(no_decay.gates(x)[0], torch.zeros(4, 3, dtype=DT))
    assert torch.equal(no_momentum.gates(x)[1], torch.zeros(4, 3, dtype=DT))
    assert (no_decay.gates(x)[1] > 0).all() and (no_momentum.gates(x)[0] > 0).all()


def test_without_weight_decay_the_memory_follows_eq9_by_hand():
    # linear memory, chunk size 1, learned gates, weight_decay=False: M_t = M_{t-1} + S_t (Eq. 9) with
    # S_t = eta_t S_{t-1} - theta_t 2 k_t^T (k_t M_{t-1} - v_t) (Eq. 10), keys, values and gates by hand
    torch.manual_seed(0)
    module = NeuralMemory(8, depth=1, heads=2, chunk_size=1, weight_decay=False).to(DT)
    with torch.no_grad():  # steps large enough to move the memory visibly
        module.gates.proj.bias[4:].fill_(2.0)
    x = torch.randn(2, 5, 8, dtype=DT)
    _, state = module(x)
    for b in range(2):
        keys, values = hand.project(module, "k", x[b]), hand.project(module, "v", x[b])
        for h in range(2):
            gates = [gates_by_hand(module.gates, x, b, h, t) for t in range(5)]
            eta, theta = [g[1] for g in gates], [g[2] for g in gates]
            w0 = module.memory.initial_weights[0][h]
            weights, _, momentum = hand.linear_memory_loop(
                w0, torch.zeros_like(w0), keys[h], values[h], [0.0] * 5, eta, theta, chunk_size=1
            )
            torch.testing.assert_close(state.weights[0][b * 2 + h], weights[-1], rtol=0, atol=1e-12)
            torch.testing.assert_close(state.momentum[0][b * 2 + h], momentum, rtol=0, atol=1e-12)
            assert not torch.allclose(weights[-1], w0, atol=1e-3)


def test_auto_checkpointing_starts_past_512_chunks_and_changes_nothing_but_memory():
    """checkpoint_chunks="auto" (the default) keeps every chunk state up to 512 chunks, then one every
    ceil(sqrt(n))."""
    torch.manual_seed(0)
    config = {"heads": 1, "depth": 2, "chunk_size": 1, "expansion": 1, "conv_kernel": 0}
    auto = NeuralMemory(2, **config).to(DT)  # the default
    plain = NeuralMemory(2, **config, checkpoint_chunks=0).to(DT)  # every state kept
    plain.load_state_dict(auto.state_dict())
    short, long = torch.randn(1, 512, 2, dtype=DT), torch.randn(1, 600, 2, dtype=DT)
    assert saved_for_backward(auto, short) == saved_for_backward(plain, short)
    assert saved_for_backward(auto, long) < 0.5 * saved_for_backward(plain, long)
    # 600 steps of chunk 1 grow some gradients to ~1e10; the checkpointed backward sums a gradient's
    # contributions in another order, so they agree to rounding (1 ulp), relative to their size.
    same_outputs_and_gradients(plain, auto, long, grad_tol={"rtol": 1e-13, "atol": 1e-10})


def test_defaults_are_the_documented_ones():
    """NeuralMemory(dim) as its docstring documents it (§4.4 on, learned gates, chunk 16, token read)."""
    torch.manual_seed(0)
    module = NeuralMemory(8)
    mlp = module.memory
    assert (mlp.depth, mlp.heads, mlp.activation) == (2, 1, "silu")
    assert [tuple(w.shape) for w in mlp.initial_weights] == [(1, 8, 32), (1, 32, 8)]  # expansion 4
    assert mlp.residual_norm is True and mlp.forget_to_initial is True  # None -> depth >= 2 -> on
    assert (module.chunk_size, module.read, module.impl, module.checkpoint_chunks) == (
        16,
        "token",
        "chunked",
        "auto",
    )
    assert module.qk_norm is True
    assert {name: conv.kernel_size for name, conv in module.convs.items()} == {"q": 4, "k": 4, "v": 4}
    assert isinstance(module.out_norm, torch.nn.RMSNorm) and module.to_gate is not None
    assert isinstance(module.gates, MemoryGates)


def test_memory_model_settings_are_passed_on():
    torch.manual_seed(0)
    module = NeuralMemory(
        8, depth=3, expansion=2, activation="gelu", residual_norm=False, forget_to_initial=True
    )
    mlp = module.memory
    assert (mlp.depth, mlp.activation) == (3, "gelu")
    assert [tuple(w.shape) for w in mlp.initial_weights] == [(1, 8, 16), (1, 16, 16), (1, 16, 8)]
    # each given explicitly against what None would choose (residual_norm: depth >= 2; forget: residual)
    assert mlp.residual_norm is False and mlp.forget_to_initial is True
    other = NeuralMemory(8, depth=2, residual_norm=True, forget_to_initial=False, output_gate=False)
    assert other.memory.residual_norm is True and other.memory.forget_to_initial is False
    assert other.to_gate is None
    assert NeuralMemory(8, output_gate=True).to_gate is not None


def test_update_continues_from_the_given_state():
    module, _ = pair(chunk_size=3)
    x = torch.randn(2, 7, 8, dtype=DT)
    streamed = module.update(x[:, 4:], module.update(x[:, :4]))
    whole = module.update(x)
    for a, b in zip(streamed.weights + streamed.momentum, whole.weights + whole.momentum, strict=True):
        torch.testing.assert_close(a, b, **TOL)
    assert streamed.tokens_seen == 7


def test_non_finite_input_is_refused_by_the_gate_check():
    """A NaN token makes its gates NaN; the write refuses them instead of returning NaN memories."""
    torch.manual_seed(0)
    module = NeuralMemory(8)
    x = torch.randn(1, 4, 8)
    x[0, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="contains NaN or Inf"):
        module(x)


@pytest.mark.parametrize("impl", ["reference", "chunked"])
def test_impl_chooses_the_token_loop_or_the_chunked_form(impl, monkeypatch):
    """The two give equal results (tested above), so only a spy tells which one ran."""
    import neural_memory.titans.memory as memory_module

    calls = []
    for name in ("reference_memory", "chunked_memory"):
        original = getattr(memory_module, name)
        monkeypatch.setattr(
            memory_module, name, lambda *a, _o=original, _n=name, **k: calls.append(_n) or _o(*a, **k)
        )
    torch.manual_seed(0)
    NeuralMemory(8, chunk_size=2, impl=impl)(torch.randn(1, 3, 8))
    assert calls == [f"{impl}_memory"]


def test_a_state_starts_in_the_input_dtype_under_autocast():
    """Under autocast a float32 module reads bf16 tokens: the state it starts is bf16 like them."""
    torch.manual_seed(0)
    module = NeuralMemory(8, chunk_size=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, state = module(torch.randn(1, 3, 8, dtype=torch.bfloat16))
    assert {w.dtype for w in (*state.weights, *state.momentum)} == {torch.bfloat16}
    assert {c.dtype for c in state.conv.values()} == {torch.bfloat16}


def test_every_tensor_of_output_and_state_stays_on_the_input_device(monkeypatch):
    """A tensor started with the default device would land on the CPU beside CUDA inputs; on a
    CPU-only machine the ``meta`` device stands in for CUDA (data checks, which need values, are off)."""
    from .on_meta import run_on_meta

    torch.manual_seed(0)
    run_on_meta(NeuralMemory(8, chunk_size=2, impl="reference"), monkeypatch)
