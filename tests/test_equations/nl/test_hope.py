"""Hope (NL v1, Eq. 94–97): self-modifying Titans followed by the CMS chain.

The block is recomputed here from its parts: the convolution, the token-by-token self-modifying Titans
reference (Eq. 86–88, verified in test_self_modifying.py), the read-out ``W_O RMSNorm(o)`` and the CMS chain
written out token by token (SwiGLU blocks, each level's reconstruction gradient by autograd of a loss written
here, applied at its chunk ends). float64 throughout.
"""

import pytest
import torch
from torch.nn import functional as F

from neural_memory.cli import main
from neural_memory.common.conv import CausalDepthwiseSeparableConv
from neural_memory.models.transformer import CausalSelfAttention, KVCache
from neural_memory.nl.cms import CMSState
from neural_memory.nl.hope import HopeBlock, HopeState
from neural_memory.nl.self_modifying import SelfModifyingState, SelfModifyingTitans, self_modifying_reference

from .helpers import F64

DIM = 4


def _block(seed=0, **kwargs) -> HopeBlock:
    torch.manual_seed(seed)
    config = {
        "cms_chunk_sizes": (4, 2),
        "cms_rates": 0.02,
        "cms_hidden": 6,
        "chunk_size": 2,
        "memory_hidden": 3,
    }
    return HopeBlock(DIM, **{**config, **kwargs}).double()


def _x(batch: int, length: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(batch, length, DIM, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _swiglu(a: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    return (F.silu(a @ gate) * (a @ up)) @ down


def _rms(a: torch.Tensor) -> torch.Tensor:
    return a / torch.sqrt((a * a).mean(-1, keepdim=True))


def _titans_read_out(block: HopeBlock, x: torch.Tensor) -> torch.Tensor:
    """Eq. 94–96 by the token-by-token reference, then ``W_O RMSNorm(o)``."""
    u, _ = block.conv(x)
    o, _ = self_modifying_reference(block.front, u)
    normed = _rms(o) * block.out_norm.weight
    return normed @ block.to_out.weight.T


def _cms_chain_by_hand(block: HopeBlock, o: torch.Tensor) -> torch.Tensor:
    """Eq. 97 with Eq. 71: token by token, one sequence at a time, levels slowest first."""
    cms = block.cms
    out = torch.empty_like(o)
    for b in range(o.shape[0]):
        levels = [[w.detach().clone() for w in level.weights()] for level in cms.levels]
        sums = [[torch.zeros_like(w) for w in level] for level in levels]
        for t in range(o.shape[1]):
            a = o[b, t]
            for ell, (weights, rate) in enumerate(zip(levels, cms.rates, strict=True)):
                with torch.enable_grad():
                    leaves = [w.clone().requires_grad_(True) for w in weights]
                    n = _rms(a)  # the level's input after the pre-norm
                    branch = _rms(_swiglu(n, *leaves))  # the branch's output, RMS-normalised
                    loss = 0.5 * ((branch - n) ** 2).sum()  # the level reconstructs its own input
                    grads = torch.autograd.grad(loss, leaves)
                sums[ell] = [s + g for s, g in zip(sums[ell], grads, strict=True)]
                a = a + branch.detach()
                if (t + 1) % cms.chunk_sizes[ell] == 0:
                    levels[ell] = [w - rate * s for w, s in zip(weights, sums[ell], strict=True)]
                    sums[ell] = [torch.zeros_like(s) for s in sums[ell]]
            out[b, t] = a
    return out


@pytest.mark.equation("nl", 94)
@pytest.mark.equation("nl", 97)
@pytest.mark.parametrize("other_chunk_size", [2, 4])
def test_block_is_self_modifying_titans_then_the_cms_chain_token_by_token(other_chunk_size):
    block = _block(other_chunk_size=other_chunk_size)
    x = _x(2, 9)
    with torch.no_grad():
        expected = _cms_chain_by_hand(block, _titans_read_out(block, x))
    got, _ = block(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


@pytest.mark.equation("nl", 97)
def test_zero_rates_and_one_level_is_self_modifying_titans_plus_ffn():
    block = _block(cms_chunk_sizes=(3,), cms_rates=0.0)
    x = _x(2, 7, seed=1)
    o = _titans_read_out(block, x)
    ffn = block.cms.levels[0]
    # a pre-norm residual SwiGLU FFN whose branch is RMS-normalised
    expected = o + _rms(_swiglu(_rms(o), ffn.gate, ffn.up, ffn.down))
    got, state = block(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(state.cms.weights[0][0][0], ffn.gate, rtol=0, atol=0)


@pytest.mark.equation("nl", 95)
def test_a_memory_with_zero_second_layer_regresses_the_shared_value():
    # catalog Eq. 84/95: W_{□,1} = 0 makes M_□(v) = v, so that memory's first chunk regresses v itself, as in
    # the shared-value design; M_k keeps its second layer (else k = v and every error vanishes), so its
    # self-generated value M_k(v) differs from v and so does its update
    generated, shared = _block(seed=2), _block(seed=2, titans={"values": "shared"})
    with torch.no_grad():
        for name in generated.front.names:
            if name != "k":
                generated.front.initial[f"{name}_1"].zero_()
    shared.load_state_dict(generated.state_dict())
    x = _x(2, 2, seed=2)  # one chunk (C = 2)
    _, state_gen = generated(x)
    _, state_shared = shared(x)
    for name in generated.front.names:
        gap = max(
            (a - b).abs().max().item()
            for a, b in zip(*(s.front.current[name] for s in (state_gen, state_shared)), strict=True)
        )
        assert gap > 1e-6 if name == "k" else gap < 1e-12, name


@pytest.mark.equation("nl", 95)
def test_self_generated_values_are_each_memorys_read_of_the_normalised_value():
    block = _block(seed=3)
    x = _x(1, 2, seed=3)
    front = block.front
    state = front.init_state(1, dtype=F64)
    u, _ = block.conv(x)
    gen = front.generate(u, state.snapshot)
    w_in, w_out = (front.initial["v_0"], front.initial["v_1"])
    v = u + F.silu(u @ w_in) @ w_out
    v = v / v.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(gen["v"], v, rtol=0, atol=1e-12)
    for name in front.names:
        a, b = front.initial[f"{name}_0"], front.initial[f"{name}_1"]
        expected = v + F.silu(v @ a) @ b  # v̂_□ = M_□(v) (Eq. 95), the residual MLP of Eq. 89
        torch.testing.assert_close(
            front.target(name, state.snapshot[name], gen["v"]), expected, rtol=0, atol=1e-12
        )
    block(x)  # the block runs with these targets (the equality above is its Eq. 95)


# --------------------------------------------------------------------------------------------------
# Stability: what the paper's normalisations bound (docs/errata.md, NL Eq. 94–97)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_self_modifying_memories_stay_bounded_on_a_long_stream(seed):
    # without v's normalisation v̂_v = M_v(M_v(x)) compounds the value memory's gain: every seed reached inf
    # within 300 tokens of unit-RMS input (float64, default initialisation; "beta must be finite" once the
    # gates read non-finite memories)
    torch.manual_seed(seed)
    block = HopeBlock(8, cms_chunk_sizes=(4,), cms_rates=0.0, chunk_size=3).double()
    x = F.rms_norm(_x(2, 300, seed=seed).repeat(1, 1, 2), (8,))
    state = None
    with torch.no_grad():
        for t in range(0, 300, 30):
            y, state = block.front(x[:, t : t + 30], state)  # Hope's self-modifying Titans
            largest = max(w.abs().max().item() for ws in state.current.values() for w in ws)
            assert torch.isfinite(y).all() and largest < 10.0


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_cms_levels_stay_bounded_whatever_the_scale_of_their_input(seed, scale):
    # each level reads its input RMS-normalised: the curvature of its reconstruction loss no longer grows with
    # the fourth power of the input's scale (SwiGLU), which took a level to NaN within a few chunks
    block = _block(seed=seed, cms_rates=0.05)
    x = _x(2, 64, seed=seed, scale=scale)
    with torch.no_grad():
        y, state = block.cms(x, None)
    largest = max(w.abs().max().item() for level in state.weights for w in level)
    assert torch.isfinite(y).all() and largest < 10.0


def _correlated(batch: int, length: int, dim: int, seed: int) -> torch.Tensor:
    """Tokens that share one direction, like a language model's hidden states: RMS ≈ 0.6, cosine ≈ 0.8."""
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(batch, 1, dim, generator=g, dtype=F64)
    return 0.5 * shared + 0.25 * torch.randn(batch, length, dim, generator=g, dtype=F64)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rate", [1e-3, 1e-2, 1.0])
def test_cms_levels_stay_finite_and_keep_learning_on_correlated_tokens_at_width_128(seed, rate):
    # the bug this pins: at width 128 the slow level (C = 64) summed 64 gradients that point the same way,
    # rate × C × curvature crossed GD's limit, and Hope's logits went non-finite within 384 tokens at the
    # default rate 1e-3 (weights 16 → 40 → 217 → inf). The RMS-normalised branch makes the reconstruction
    # loss invariant to the scale of W_down and W_up: a too-long step enlarges them and shortens the next one
    torch.manual_seed(seed)
    block = HopeBlock(128, cms_chunk_sizes=(64, 16), cms_rates=rate, chunk_size=16).double()
    x = _correlated(1, 1024, 128, seed)
    with torch.no_grad():
        y, state = block.cms(x, None)
        pairs = block.cms._read(x[:, -64:], state.weights)[1]
    assert torch.isfinite(y).all()
    assert all(torch.isfinite(w).all() for level in state.weights for w in level)
    # and the levels learned: the last chunk's reconstruction loss is far below the initial levels'
    initial = block.cms._read(x[:, -64:], block.cms.init_state(1).weights)[1]
    for (a, out), (a0, out0) in zip(pairs, initial, strict=True):
        assert ((out - a) ** 2).sum() < 0.5 * ((out0 - a0) ** 2).sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hope_language_model_at_width_128_is_finite_on_512_tokens_at_initialisation(seed):
    from neural_memory.models import build_lm

    torch.manual_seed(seed)
    model = build_lm("hope", vocab_size=256, dim=128, depth=2)
    tokens = torch.randint(0, 256, (1, 512), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        logits = model(tokens)
    logits = logits[0] if isinstance(logits, tuple) else logits
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cms_chunk_sizes": (4, 3)}, "chunk_sizes must divide one another"),
        ({"cms_chunk_sizes": ()}, "chunk_sizes must be a sequence of >= 1 ints"),
        ({"cms_rates": -0.1}, r"rates\[0\] must be a finite float >= 0"),
        ({"chunk_size": 2, "other_chunk_size": 3}, "must divide one another"),
        ({"conv_kernel": -1}, "conv_kernel"),
        ({"chunk_size": 0}, "chunk_size"),
    ],
)
def test_bad_configurations_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _block(**kwargs)


def test_bad_inputs_raise():
    block = _block()
    with pytest.raises(ValueError, match=r"x must be \(batch, T, dim=4\)"):
        block(_x(1, 3)[..., :3])
    with pytest.raises(ValueError, match=r"x must be \(batch, T, dim=4\)"):
        block([1.0])


def test_neural_memory_train_hope_runs_three_finite_steps(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(b"hello world, hello memory. " * 40)
    argv = ["train", "hope", "--text", str(corpus), "--steps", "3", "--out", str(tmp_path / "run")]
    argv += ["--seq-len", "16", "--batch-size", "2", "--dim", "8", "--depth", "1", "--no-progress"]
    argv += ["--config", "cms_chunk_sizes=(4,2)", "--config", "chunk_size=4"]
    assert main(argv) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    loss = float(summary.split("train_loss=")[1].split()[0])
    assert summary.startswith("kind=hope steps=3") and loss == loss and loss < 10.0


# --------------------------------------------------------------------------------------------------
# Construction: the documented defaults and where each setting goes
# --------------------------------------------------------------------------------------------------


def test_defaults_are_the_documented_ones():
    # docstring: conv window 4 (N-U16), memory hidden = dim, chunk 16 for every memory, q/k/v normalised,
    # one CMS level of chunk 16, rate 1e-3, hidden 4 * dim, reconstruction signal, residual pre/out-normed
    block = HopeBlock(8)
    assert block.dim == 8 and block.attention is False
    assert isinstance(block.conv, CausalDepthwiseSeparableConv)
    assert (block.conv.channels, block.conv.kernel_size) == (8, 4)
    front = block.front
    assert isinstance(front, SelfModifyingTitans)
    assert (front.dim, front.hidden, front.chunk_size, front.other_chunk_size) == (8, 8, 16, 16)
    assert front.qk_norm is True and front.v_norm is True
    assert tuple(block.out_norm.normalized_shape) == (8,)
    assert block.to_out.weight.shape == (8, 8) and block.to_out.bias is None
    cms = block.cms
    assert (cms.dim, cms.hidden, cms.chunk_sizes, cms.rates) == (8, 32, (16,), (1e-3,))
    assert (cms.signal, cms.variant, cms.residual, cms.pre_norm, cms.out_norm) == (
        "reconstruction",
        "sequential",
        True,
        True,
        True,
    )


def test_settings_reach_the_memories_the_cms_and_the_convolution():
    block = HopeBlock(4, cms_hidden=6, memory_hidden=3, chunk_size=2, other_chunk_size=4, conv_kernel=1)
    assert (block.front.hidden, block.front.chunk_size, block.front.other_chunk_size) == (3, 2, 4)
    assert all(block.front.initial[f"{name}_0"].shape == (4, 3) for name in block.front.names)
    assert block.cms.hidden == 6 and block.cms.levels[0].gate.shape == (4, 6)
    # a window of 1 is still a convolution (a per-channel scale, then the pointwise map); only 0 means none
    assert isinstance(block.conv, CausalDepthwiseSeparableConv) and block.conv.kernel_size == 1


def test_hope_always_normalises_q_k_and_v():
    # titans= cannot switch the normalisations off (Hope passes them itself), nor set what HopeBlock's own
    # arguments set: refused by name, not with Python's "multiple values for keyword argument"
    for name in ("qk_norm", "v_norm", "hidden", "chunk_size", "other_chunk_size"):
        with pytest.raises(ValueError) as caught:
            HopeBlock(4, titans={name: 1, "values": "shared"})
        assert str(caught.value) == (
            f"titans must not set {name}: HopeBlock sets qk_norm and v_norm itself and hidden, chunk_size, "
            "other_chunk_size from memory_hidden, chunk_size, other_chunk_size"
        )
    with pytest.raises(TypeError) as caught:
        HopeBlock(4, titans=[("values", "shared")])
    assert str(caught.value) == "titans must be a dict of SelfModifyingTitans kwargs or None, got list"


def test_bad_width_and_window_raise_naming_the_argument():
    with pytest.raises(ValueError) as caught:
        HopeBlock(0)
    assert str(caught.value) == "dim must be an int >= 1, got 0"
    with pytest.raises(ValueError) as caught:
        _block(conv_kernel=-1)
    assert str(caught.value) == "conv_kernel must be an int >= 0, got -1"


def test_bad_inputs_raise_naming_the_shape_or_type():
    block = _block()
    for x, shown in [(_x(1, 3)[..., :3], "(1, 3, 3)"), (_x(1, 3)[0], "(3, 4)"), ([1.0], "list")]:
        with pytest.raises(ValueError) as caught:
            block(x)
        assert str(caught.value) == f"x must be (batch, T, dim=4), got {shown}"


@pytest.mark.equation("nl", 94)
@pytest.mark.equation("nl", 97)
def test_window_zero_drops_the_convolution():
    block = _block(conv_kernel=0)
    assert block.conv is None
    x = _x(2, 5, seed=4)
    with torch.no_grad():
        o, _ = self_modifying_reference(block.front, x)  # the memories read x itself
        expected = _cms_chain_by_hand(block, (_rms(o) * block.out_norm.weight) @ block.to_out.weight.T)
    got, state = block(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)
    assert state.conv is None and block.init_state(2).conv is None


# --------------------------------------------------------------------------------------------------
# Hope-Attention (N-U16): causal softmax attention, then the CMS
# --------------------------------------------------------------------------------------------------


def test_hope_attention_defaults_to_four_heads_and_no_convolution():
    block = HopeBlock(8, attention=True)
    assert block.attention is True and isinstance(block.front, CausalSelfAttention)
    assert (block.front.dim, block.front.heads, block.front.rope) == (8, 4, True)
    assert block.conv is None and not hasattr(block, "to_out")


@pytest.mark.equation("nl", 97)
def test_hope_attention_is_attention_then_the_cms_chain_token_by_token():
    block = _block(attention=True, heads=2)
    assert isinstance(block.front, CausalSelfAttention) and block.front.heads == 2
    x = _x(2, 7, seed=5)
    with torch.no_grad():
        o, _ = block.front(x)  # the attention's own output (its W_O included), no extra read-out
        expected = _cms_chain_by_hand(block, o)
    got, state = block(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)
    assert state.conv is None and isinstance(state.front, KVCache) and state.front.position == 7


# --------------------------------------------------------------------------------------------------
# State: the start of a stream, streaming, detach
# --------------------------------------------------------------------------------------------------


def _state_tensors(state: HopeState) -> list[torch.Tensor]:
    """Every tensor a state holds, in a fixed order (front, convolution cache, CMS)."""
    front = state.front
    if isinstance(front, KVCache):
        tensors = [front.keys, front.values]
    else:
        tensors = [w for d in (front.current, front.snapshot) for name in sorted(d) for w in d[name]]
    if state.conv is not None:
        tensors.append(state.conv)
    return tensors + [w for part in (state.cms.weights, state.cms.grads) for level in part for w in level]


def test_init_state_is_every_memory_at_its_initial_weights_and_an_empty_cache():
    block = _block().float()  # float32 parameters; the state is asked for in float64
    state = block.init_state(3, dtype=F64)
    assert isinstance(state, HopeState) and isinstance(state.front, SelfModifyingState)
    assert state.front.position == 0 and state.cms.position == 0
    for name in block.front.names:
        for i, (now, start) in enumerate(
            zip(state.front.current[name], state.front.snapshot[name], strict=True)
        ):
            initial = block.front.initial[f"{name}_{i}"]
            assert now.shape == (3, *initial.shape) and now.dtype == F64
            torch.testing.assert_close(now, initial.double().expand(3, -1, -1), rtol=0, atol=0)
            torch.testing.assert_close(start, now, rtol=0, atol=0)
    torch.testing.assert_close(state.conv, torch.zeros(3, 3, DIM, dtype=F64), rtol=0, atol=0)
    assert isinstance(state.cms, CMSState) and len(state.cms.weights) == 2
    for level, weights, grads in zip(block.cms.levels, state.cms.weights, state.cms.grads, strict=True):
        for param, w, g in zip(level.weights(), weights, grads, strict=True):
            torch.testing.assert_close(w, param.double().expand(3, -1, -1), rtol=0, atol=0)
            torch.testing.assert_close(g, torch.zeros(3, *param.shape, dtype=F64), rtol=0, atol=0)
    # the device asked for reaches every part (meta: no data, only device, dtype and shape)
    on_meta = block.init_state(3, device="meta", dtype=F64)
    got = _state_tensors(on_meta)
    assert len(got) == len(_state_tensors(state))
    assert all(t.device.type == "meta" and t.dtype == F64 for t in got)
    assert on_meta.conv.shape == (3, 3, DIM)


def test_hope_attention_init_state_is_an_empty_kv_cache():
    block = _block(attention=True, heads=2)
    state = block.init_state(3, dtype=F64)
    assert state.conv is None and isinstance(state.front, KVCache) and state.front.position == 0
    assert state.front.keys.shape == (3, 2, 0, 2) and state.front.values.shape == (3, 2, 0, 2)
    on_meta = block.float().init_state(3, device="meta", dtype=F64)
    assert all(t.device.type == "meta" and t.dtype == F64 for t in _state_tensors(on_meta))


def test_a_fresh_state_follows_the_inputs_dtype_and_device():
    block = _block()
    y, state = block(_x(2, 0))  # an empty call: the state is the fresh one, in x's dtype
    assert y.shape == (2, 0, DIM) and y.dtype == F64
    assert all(t.dtype == F64 for t in _state_tensors(state))
    torch.testing.assert_close(state.conv, torch.zeros(2, 3, DIM, dtype=F64), rtol=0, atol=0)
    meta = _block().to("meta")
    y, state = meta(torch.empty(2, 5, DIM, device="meta", dtype=F64))
    assert y.device.type == "meta" and all(t.device.type == "meta" for t in _state_tensors(state))


@pytest.mark.equation("nl", 94)
@pytest.mark.equation("nl", 97)
@pytest.mark.parametrize("attention", [False, True])
@pytest.mark.parametrize("split", [1, 3, 6])
def test_one_call_equals_two_calls_at_any_split(attention, split):
    # the convolution cache, the memories (or the KV cache) and the CMS levels (weights, partial-chunk
    # gradients, position) all carry over: 9 tokens cross chunk ends of every memory and every level
    block = _block(attention=attention, heads=2)
    x = _x(2, 9, seed=6)
    whole, state = block(x)
    first, mid = block(x[:, :split])
    second, end = block(x[:, split:], mid)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, rtol=0, atol=1e-10)
    assert end.front.position == state.front.position == 9 and end.cms.position == 9
    for a, b in zip(_state_tensors(end), _state_tensors(state), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("kwargs", [{}, {"conv_kernel": 0}, {"attention": True, "heads": 2}])
def test_detach_keeps_the_values_and_cuts_the_graph(kwargs):
    block = _block(**kwargs)
    x = _x(2, 5, seed=7).requires_grad_(True)  # the convolution cache holds the last inputs: on the graph too
    _, state = block(x)
    held = _state_tensors(state)
    assert all(t.requires_grad for t in held)
    cut = state.detach()
    assert isinstance(cut, HopeState) and type(cut.front) is type(state.front)
    assert (cut.conv is None) == (state.conv is None) == ("conv_kernel" in kwargs or "attention" in kwargs)
    assert cut.front.position == 5 and cut.cms.position == 5
    kept = _state_tensors(cut)
    assert len(kept) == len(held)
    for a, b in zip(kept, held, strict=True):
        assert not a.requires_grad and a.grad_fn is None
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=0)
