"""The MIRAS memory module and its presets (Moneta Eq. 24-25, Yaad Eq. 26, Memora Eq. 27), by hand.

Each preset, with a linear memory (``depth=1``, no read-out norm), fixed gates and one head, is run through
the module and compared with its recurrence written out here token by token in the row convention of
:class:`~neural_memory.titans.memory_model.MemoryMLP` (``M(k) = k W``, so :math:`\\nabla_W \\ell = k^\\top
\\partial\\ell/\\partial\\mathcal{M}`). The projections are the module's own (they are Titans Eq. 11,
verified elsewhere); everything after them is recomputed here.
"""

import math

import pytest
import torch

from neural_memory.miras.attentional_bias import L2Bias, LpBias, YaadBias
from neural_memory.miras.memory import ChannelStepGate, DeltaGate, MirasMemory, memora, moneta, yaad
from neural_memory.miras.retention import ElasticNet, KLSoftmax, SigmoidBregman, WeightDecay

DT = torch.float64
DIM = 4
KEEP, STEP = 0.9, 0.05  # MIRAS' alpha_t (kept fraction) and eta_t


def linear(preset, chunk=1, **kwargs):
    torch.manual_seed(0)
    config = {"depth": 1, "residual_norm": False, "heads": 1, "chunk_size": chunk, "conv_kernel": 0,
              "gates": "fixed", "fixed_gates": (1 - KEEP, 0.0, STEP)}  # fmt: skip
    return preset(DIM, **{**config, **kwargs}).to(DT)


def streams(module, x):
    state = module.init_state(x.shape[0], dtype=DT)
    keys, values, state = module.keys_values(x, state)
    queries, _ = module.queries(x, state)
    return keys, values, queries


def by_hand(module, x, write, read=lambda c: c):
    """Run ``C <- write(C, k, v, W)``, ``W = read(C)``, ``y = q W`` token by token; the module's output."""
    keys, values, queries = streams(module, x)
    acc = module.memory.initial_weights[0].detach()[0]  # C_0, (d, d)
    weights, outputs = read(acc), []
    for t in range(x.shape[1]):
        k, v, q = keys[0, t], values[0, t], queries[0, t]
        acc = write(acc, k, v, weights)
        weights = read(acc)
        outputs.append(q @ weights)
    return module._output(torch.stack(outputs)[None], x), weights


def smooth_lp_grad(r, p=3.0, eps=1e-6, sharpness=1e3):  # Remark 5 (M-U10): Sign ~ tanh, |x| ~ sqrt(x^2+eps)
    return p * torch.tanh(sharpness * r) * (r * r + eps) ** ((p - 1) / 2)


@pytest.mark.equation("miras", 24)
@pytest.mark.equation("miras", 25)
def test_moneta_is_its_recurrence_by_hand():
    module = linear(moneta)
    x = torch.randn(1, 9, DIM, dtype=DT)

    def write(a, k, v, w):  # Eq. 24-25: A <- alpha A - eta p (Sign(r) |r|^{p-1}) k^T, r at W_{t-1}
        return KEEP * a - STEP * torch.outer(k, smooth_lp_grad(k @ w - v))

    def read(a, q=4.0):  # W = A / ||A||_q^{q-2}, entrywise norm of the layer
        return a / a.abs().pow(q).sum().pow(1 / q) ** (q - 2)

    want, w_last = by_hand(module, x, write, read)
    got, state = module(x)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state.weights[0][0], w_last, rtol=1e-12, atol=1e-12)


@pytest.mark.equation("miras", 26)
def test_yaad_is_its_recurrence_by_hand():
    module = linear(yaad, delta_init=0.6)
    x = 3 * torch.randn(1, 12, DIM, dtype=DT)  # large enough that some residuals pass the threshold
    with torch.no_grad():
        module.delta_gate.proj.weight.zero_()  # the same delta_t for every token
    delta = module.delta_gate(x)[0, 0, 0].item()
    assert math.isclose(delta, 0.6, rel_tol=1e-6)
    branches = []

    def write(w, k, v, _):  # Eq. 26 with l2 = 1/2 ||r||^2 and l1 = ||r||_1 / sqrt(d)
        r = k @ w - v
        inside = bool(r.norm() <= delta)
        branches.append(inside)
        g = r if inside else delta * torch.sign(r) / math.sqrt(DIM)
        return KEEP * w - STEP * torch.outer(k, g)

    want, _ = by_hand(module, x, write)
    got, _ = module(x)
    assert any(branches) and not all(branches)  # both branches are exercised
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.equation("miras", 27)
def test_memora_is_its_recurrence_by_hand():
    module = linear(memora)
    x = torch.randn(1, 9, DIM, dtype=DT)

    def write(log_w, k, v, w):  # Eq. 27: W <- Softmax(alpha log W - eta (W k - v) k^T), here in log space
        return KEEP * torch.log(w) - STEP * torch.outer(k, k @ w - v)

    want, w_last = by_hand(module, x, write, lambda c: torch.softmax(c, dim=0))
    got, state = module(x)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state.weights[0][0], w_last, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(w_last.sum(dim=0), torch.ones(DIM, dtype=DT), rtol=0, atol=1e-12)


@pytest.mark.equation("miras", 28)
@pytest.mark.parametrize("preset", [moneta, yaad, memora])
def test_every_preset_chunked_equals_its_token_loop_with_gradients(preset):
    torch.manual_seed(1)
    fast = preset(8, heads=2, chunk_size=4).to(DT)
    slow = preset(8, heads=2, chunk_size=4, impl="reference").to(DT)
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(2, 10, 8, dtype=DT)
    results = []
    for module in (fast, slow):
        y, state = module(x)
        loss = (y * y).sum() + sum((w * w).sum() for w in state.weights)
        results.append((y, torch.autograd.grad(loss, list(module.parameters()))))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-11, atol=1e-11)
    for a, b in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("preset", [moneta, yaad, memora])
def test_presets_stay_finite_on_inputs_up_to_1e4(preset):
    torch.manual_seed(2)
    module = preset(8, heads=2)
    x = 1e4 * torch.randn(2, 40, 8)
    y, state = module(x)
    assert torch.isfinite(y).all()
    assert all(torch.isfinite(w).all() for w in state.weights)


@pytest.mark.parametrize("preset", [moneta, yaad, memora])
def test_presets_have_the_papers_memory(preset):
    module = preset(16, heads=2)
    assert module.memory.depth == 2 and module.memory.residual_norm  # M-U25: x + LN(W1 sigma(W2 x))
    assert module.memory.activation == "gelu"
    assert module.memory.initial_weights[0].shape == (2, 8, 32)  # expansion 4
    assert not module.gates.momentum  # plain GD (Table 1)


def test_memora_state_carries_the_log_weights():
    module = memora(8, heads=2)
    state = module.init_state(3)
    for acc, w in zip(state.accumulator, state.weights, strict=True):
        torch.testing.assert_close(w, torch.softmax(acc, dim=-2))


def test_invalid_choices_raise():
    with pytest.raises(ValueError, match="p"):
        moneta(8, p=0.5)
    with pytest.raises(ValueError, match="q"):
        moneta(8, q=0.0)
    with pytest.raises(ValueError, match="init"):
        yaad(8, delta_init=-1.0)
    with pytest.raises(ValueError, match="read"):
        MirasMemory(8, retention=KLSoftmax(), read="chunk")


def test_yaad_threshold_starts_at_the_residual_scale():
    delta = yaad(16, heads=4).delta_gate(torch.zeros(1, 3, 16))  # sqrt(head_dim) = 2 at zero input
    assert delta.shape == (4, 3, 1)
    assert all(math.isclose(d, 2.0, rel_tol=1e-6) for d in delta.flatten().tolist())


@pytest.mark.parametrize(
    "retention",
    [
        pytest.param(ElasticNet(threshold=0.01), marks=pytest.mark.equation("miras", 23), id="elastic-net"),
        pytest.param(SigmoidBregman(), id="sigmoid-bregman"),
        pytest.param(KLSoftmax(lag_token=False), id="softmax-without-lag"),
    ],
)
def test_any_retention_object_makes_a_memory_whose_chunks_equal_its_token_loop(retention):
    # The retention gate is a choice: elastic net in the FTRL view (Eq. 23, W = S(A)), the sigmoid
    # Bregman retention (M-U24, W = sigma(L)), Memora without its lag token.
    torch.manual_seed(3)
    kwargs = {"heads": 2, "chunk_size": 4, "momentum": False, "retention": retention}
    fast = MirasMemory(8, **kwargs).to(DT)
    slow = MirasMemory(8, impl="reference", **kwargs).to(DT)
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(2, 11, 8, dtype=DT)
    (y_fast, s_fast), (y_slow, s_slow) = fast(x), slow(x)
    torch.testing.assert_close(y_fast, y_slow, rtol=1e-11, atol=1e-11)
    for a, b in zip(s_fast.accumulator + s_fast.weights, s_slow.accumulator + s_slow.weights, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)
    for acc, w in zip(s_fast.accumulator, s_fast.weights, strict=True):
        torch.testing.assert_close(w, retention.project(acc), rtol=0, atol=0)


# --------------------------------------------------------------------------------------------------
# §5.4 (M-U32): channel-wise step eta_t in R^d (docs/errata.md, "MIRAS §5.4 gates")
# --------------------------------------------------------------------------------------------------


def _constant_channel_step(module, c):
    """Make the channel gate output the constant vector ``c`` (one entry per value channel) at every token."""
    gate = module.channel_gate
    with torch.no_grad():
        gate.down.weight.zero_()
        gate.up.weight.zero_()
        gate.up.bias.copy_(torch.logit(c / 2).repeat(module.heads))


def test_channel_step_is_a_per_output_channel_learning_rate_by_hand():
    # linear memory, l2 bias (1/2 ||r||^2): W <- keep W - step * k^T (c * r), i.e. row-convention column j of
    # W (output channel j) steps by step * c_j
    module = linear(MirasMemory, channel_step=True, momentum=False, bias=L2Bias(scale=0.5))
    c = torch.tensor([0.25, 0.5, 1.5, 1.75], dtype=DT)
    _constant_channel_step(module, c)
    x = torch.randn(1, 7, DIM, dtype=DT)

    def write(w, k, v, _):
        return KEEP * w - STEP * torch.outer(k, c * (k @ w - v))

    want, w_last = by_hand(module, x, write)
    got, state = module(x)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state.weights[0][0], w_last, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", ["chunked", "reference"])
def test_channel_step_starts_as_the_scalar_step_bit_for_bit(impl):
    torch.manual_seed(5)
    x = torch.randn(2, 11, 8, dtype=DT)
    plain = yaad(8, heads=2, chunk_size=4, impl=impl).to(DT)
    channel = yaad(8, heads=2, chunk_size=4, impl=impl, channel_step=True).to(DT)
    channel.load_state_dict(plain.state_dict(), strict=False)  # the channel gate keeps its own init
    y_plain, s_plain = plain(x)
    y_channel, s_channel = channel(x)
    assert torch.equal(y_plain, y_channel)
    assert all(torch.equal(a, b) for a, b in zip(s_plain.weights, s_channel.weights, strict=True))


@pytest.mark.parametrize("chunk", [1, 4])
@pytest.mark.parametrize("preset", [yaad, moneta], ids=["yaad", "moneta"])
def test_channel_step_chunks_equal_the_token_loop_with_gradients(preset, chunk):
    torch.manual_seed(6)
    kwargs = {"heads": 2, "chunk_size": chunk, "channel_step": True}
    fast = preset(8, **kwargs).to(DT)
    slow = preset(8, impl="reference", **kwargs).to(DT)
    slow.load_state_dict(fast.state_dict())
    with torch.no_grad():  # a channel step that differs per token and channel
        fast.channel_gate.up.weight.normal_(std=0.5)
        slow.channel_gate.up.weight.copy_(fast.channel_gate.up.weight)
    x = torch.randn(2, 10, 8, dtype=DT, requires_grad=True)
    (y_fast, s_fast), (y_slow, s_slow) = fast(x), slow(x)
    torch.testing.assert_close(y_fast, y_slow, rtol=1e-10, atol=1e-10)
    for a, b in zip(s_fast.weights, s_slow.weights, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    g_fast = torch.autograd.grad(y_fast.square().sum(), [x, *fast.channel_gate.parameters()])
    g_slow = torch.autograd.grad(y_slow.square().sum(), [x, *slow.channel_gate.parameters()])
    for a, b in zip(g_fast, g_slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    assert g_fast[-1].abs().sum() > 0  # the outer loop learns the channel step


def test_channel_step_rejects_a_bad_rank():
    with pytest.raises(ValueError, match="channel_rank"):
        MirasMemory(8, channel_step=True, channel_rank=0)


# -- the learning algorithm as a named choice (MIRAS §3: the fourth of the four choices) --------------------


def test_algorithm_names_the_learning_rule_and_equals_the_momentum_flag():
    x = torch.randn(2, 9, 8, dtype=DT)
    for name, flag in (("gd", False), ("gd-momentum", True)):
        torch.manual_seed(0)
        named = MirasMemory(8, algorithm=name, chunk_size=4).to(DT)
        torch.manual_seed(0)
        flagged = MirasMemory(8, momentum=flag, chunk_size=4).to(DT)
        assert named.algorithm == name
        torch.testing.assert_close(named(x)[0], flagged(x)[0], rtol=0, atol=0)
    torch.manual_seed(0)
    plain = MirasMemory(8, algorithm="gd", chunk_size=4).to(DT)
    torch.manual_seed(0)
    with_momentum = MirasMemory(8, algorithm="gd-momentum", chunk_size=4).to(DT)
    assert (plain(x)[0] - with_momentum(x)[0]).abs().max() > 1e-6  # the two rules are different memories
    assert MirasMemory(8).algorithm == "gd-momentum"  # Titans' default


def test_algorithm_rejects_unknown_names_and_a_contradicting_momentum_flag():
    with pytest.raises(ValueError, match="algorithm must be one of"):
        MirasMemory(8, algorithm="adam")
    with pytest.raises(ValueError, match="contradicts"):
        MirasMemory(8, algorithm="gd", momentum=True)


def test_presets_run_plain_gd_and_take_either_override():
    assert moneta(8).algorithm == yaad(8).algorithm == memora(8).algorithm == "gd"  # MIRAS §5.3
    assert moneta(8, algorithm="gd-momentum").algorithm == "gd-momentum"
    assert memora(8, momentum=True).algorithm == "gd-momentum"


# -- constructor contracts: documented defaults, exact error messages, the gates' initialisation -----------


def test_memory_defaults_are_the_documented_ones():
    module = MirasMemory(8)
    assert module.channel_gate is None  # channel_step=False: Titans' scalar gates
    assert isinstance(module.bias, L2Bias) and isinstance(module.retention, WeightDecay)
    assert module.algorithm == "gd-momentum"
    assert MirasMemory(8, channel_step=True).channel_gate.down.out_features == 32  # channel_rank=32


def test_momentum_flag_alone_names_the_algorithm():
    assert MirasMemory(8, momentum=False).algorithm == "gd"
    assert MirasMemory(8, momentum=True).algorithm == "gd-momentum"


def test_presets_reject_a_momentum_flag_contradicting_an_explicit_algorithm():
    with pytest.raises(ValueError, match=r"^momentum=True contradicts algorithm='gd'$"):
        yaad(8, algorithm="gd", momentum=True)


def test_forget_to_initial_with_a_nonlinear_retention_raises_exactly():
    with pytest.raises(
        ValueError, match=r"^forget_to_initial needs the weight-decay retention \(Titans Eq\. 13\)$"
    ):
        MirasMemory(8, retention=KLSoftmax(), forget_to_initial=True)


def test_bias_and_retention_of_the_wrong_type_raise_exactly():
    with pytest.raises(TypeError, match=r"^bias must be an AttentionalBias, got str$"):
        MirasMemory(8, bias="l2")
    with pytest.raises(TypeError, match=r"^retention must be a Retention, got str$"):
        MirasMemory(8, retention="kl")


def test_nonlinear_retention_with_chunk_reads_raises_exactly():
    msg = r"^a non-linear retention reads every token with its own state: read='token' only$"
    with pytest.raises(ValueError, match=msg):
        MirasMemory(8, retention=KLSoftmax(), read="chunk")


class _TauBias(L2Bias):
    token_params = ("delta", "tau")  # no gate makes a "tau"


def test_a_bias_parameter_no_gate_produces_raises_exactly():
    with pytest.raises(ValueError, match=r"^no gate produces the bias parameters \['tau'\]$"):
        MirasMemory(8, bias=_TauBias())


def test_channel_rank_is_checked_by_name_with_or_without_the_channel_step():
    msg = r"^channel_rank must be an int >= 1, got 0$"
    with pytest.raises(ValueError, match=msg):
        MirasMemory(8, channel_rank=0)
    with pytest.raises(ValueError, match=msg):
        ChannelStepGate(8, 0)


def test_channel_gate_down_map_has_no_bias_and_starts_at_one():
    gate = ChannelStepGate(8, 3)
    assert gate.down.bias is None  # c_t = 2 sigma(W_u W_d x_t + b_u): the only bias is b_u
    assert gate.up.bias is not None
    torch.testing.assert_close(gate(torch.randn(2, 5, 8)), torch.ones(2, 5, 8), rtol=0, atol=0)


def test_delta_gate_init_bound_is_strict_and_exactly_reported():
    with pytest.raises(ValueError, match=r"^init \(the initial delta\) must be > 2e-06, got 2e-06$"):
        DeltaGate(4, 1, 2e-6)
    gate = DeltaGate(4, 1, 2.5e-6)  # just above 2 * FLOOR
    delta = gate(torch.zeros(1, 2, 4))
    assert all(math.isclose(d, 2.5e-6, rel_tol=1e-5) for d in delta.flatten().tolist())


def test_delta_gate_weights_start_small():
    torch.manual_seed(7)
    weight = DeltaGate(256, 16, 1.0).proj.weight  # N(0, 0.02^2): 4096 draws
    assert 0.018 < weight.std().item() < 0.022
    assert abs(weight.mean().item()) < 0.002


# -- implicit GD (Longhorn): the step theta / (1 + 2 c theta ||k||^2) ----------------------------------------


def test_implicit_gd_valid_configuration_builds():
    module = MirasMemory(8, algorithm="implicit-gd", depth=1, residual_norm=False, bias=L2Bias())
    assert module.algorithm == "implicit-gd"


def test_implicit_gd_rejects_each_missing_condition_exactly():
    def msg(depth, residual_norm, bias, channel_step):
        return (
            r"^algorithm='implicit-gd' has a closed form only here: it needs a linear memory \(depth=1, "
            r"residual_norm=False\), the L2Bias and the scalar step \(channel_step=False\), got "
            rf"depth={depth}, residual_norm={residual_norm}, bias={bias}, channel_step={channel_step}$"
        )

    with pytest.raises(ValueError, match=msg(2, False, "L2Bias", False)):
        MirasMemory(8, algorithm="implicit-gd", depth=2, residual_norm=False, bias=L2Bias())
    with pytest.raises(ValueError, match=msg(1, False, "YaadBias", False)):
        MirasMemory(8, algorithm="implicit-gd", depth=1, residual_norm=False, bias=YaadBias())
    with pytest.raises(ValueError, match=msg(1, True, "L2Bias", False)):
        MirasMemory(8, algorithm="implicit-gd", depth=1, residual_norm=True, bias=L2Bias())
    with pytest.raises(ValueError, match=msg(1, False, "L2Bias", True)):
        MirasMemory(
            8, algorithm="implicit-gd", depth=1, residual_norm=False, bias=L2Bias(), channel_step=True
        )


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_implicit_gd_is_gd_with_the_shortened_step_by_hand(scale):
    # unnormalised keys (qk_norm=False) so that ||k||^2 != 1; W <- keep W - theta' k^T 2c (k W - v)
    module = linear(MirasMemory, algorithm="implicit-gd", bias=L2Bias(scale=scale), qk_norm=False)
    x = torch.randn(1, 9, DIM, dtype=DT)

    def write(w, k, v, _):
        step = STEP / (1 + 2 * scale * STEP * (k @ k))
        return KEEP * w - step * torch.outer(k, 2 * scale * (k @ w - v))

    want, w_last = by_hand(module, x, write)
    got, state = module(x)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state.weights[0][0], w_last, rtol=1e-12, atol=1e-12)


# -- the write: checks, dispatch to the loops, the read mode -----------------------------------------------


def test_write_checks_the_gates():
    module = MirasMemory(8)
    with pytest.raises(ValueError, match=r"^alpha contains NaN or Inf$"):
        module(torch.full((1, 3, 8), math.nan))


def _spy(monkeypatch, name):
    import neural_memory.miras.memory as memory_module

    calls, original = [], getattr(memory_module, name)

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(memory_module, name, spy)
    return calls


@pytest.mark.parametrize(
    ("kwargs", "inner"),
    [
        ({}, "loss"),
        ({"channel_step": True}, "output_grad"),
        ({"bias": LpBias(p=3.0, smooth=True)}, "output_grad"),
    ],
)
def test_reference_impl_runs_the_token_loop_with_autograd_only_for_an_exact_unscaled_bias(
    monkeypatch, kwargs, inner
):
    reference, chunked = _spy(monkeypatch, "reference_memory"), _spy(monkeypatch, "miras_chunked_memory")
    MirasMemory(8, impl="reference", chunk_size=2, **kwargs)(torch.randn(1, 4, 8))
    assert len(reference) == 1 and not chunked
    assert inner in reference[0] and ({"loss", "output_grad"} - {inner}).isdisjoint(reference[0])


def test_chunked_impl_gets_the_read_mode_and_checkpointing(monkeypatch):
    reference, chunked = _spy(monkeypatch, "reference_memory"), _spy(monkeypatch, "miras_chunked_memory")
    MirasMemory(8, chunk_size=2, read="chunk", checkpoint_chunks=3)(torch.randn(1, 4, 8))
    assert not reference and len(chunked) == 1
    assert chunked[0]["read"] == "chunk" and chunked[0]["checkpoint_chunks"] == 3


@pytest.mark.parametrize("read", ["token", "chunk"])
def test_both_impls_read_as_asked(read):
    torch.manual_seed(8)
    fast = MirasMemory(8, heads=2, chunk_size=4, read=read).to(DT)
    slow = MirasMemory(8, heads=2, chunk_size=4, read=read, impl="reference").to(DT)
    slow.load_state_dict(fast.state_dict())
    other = MirasMemory(8, heads=2, chunk_size=4, read={"token": "chunk", "chunk": "token"}[read]).to(DT)
    other.load_state_dict(fast.state_dict())
    x = torch.randn(2, 10, 8, dtype=DT)
    y_fast, y_slow, y_other = fast(x)[0], slow(x)[0], other(x)[0]
    torch.testing.assert_close(y_fast, y_slow, rtol=1e-11, atol=1e-11)
    assert (y_fast - y_other).abs().max() > 1e-6  # the two reads are different


# -- init_state with a non-linear retention ----------------------------------------------------------------


def test_nonlinear_init_state_honours_device_and_dtype_and_keeps_every_part():
    module = memora(8, heads=2)  # conv_kernel 4: caches of (batch, 3, dim)
    state = module.init_state(3, device="meta", dtype=torch.float64)
    for t in (
        *state.weights,
        *state.accumulator,
        *state.chunk_weights,
        *state.momentum,
        *state.conv.values(),
    ):
        assert t.device.type == "meta" and t.dtype == torch.float64
    assert set(state.conv) == {"q", "k", "v"}
    assert all(c.shape == (3, 3, 8) for c in state.conv.values())
    state = module.init_state(3)
    assert all(torch.equal(a, b) for a, b in zip(state.chunk_weights, state.weights, strict=True))
