"""Titans MAG (Eq. 26–28) and the sliding-window attention of Eq. 27 / 31, against hand computations."""

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from neural_memory.titans.mag import (
    AttentionProjections,
    MemoryAsGate,
    SlidingWindowAttention,
    WindowCache,
    memory_config,
)

from .hand_attention import hand_attention
from .on_meta import run_on_meta, tensors_in

DT = torch.float64
TOL = {"rtol": 0.0, "atol": 1e-10}
EPS = 1e-6  # the RMSNorm eps MAG documents


def window_rule(n_query, n_prefix, window, *, first=0):
    """Hand rule of Eq. 27: query i sees every prefix key and sequence keys j with i - window < j <= i."""
    visible = torch.zeros(n_query, n_prefix + first + n_query, dtype=torch.bool)
    for i in range(n_query):
        visible[i, :n_prefix] = True
        for j in range(first + n_query):
            visible[i, n_prefix + j] = first + i - window < j <= first + i
    return visible


def rms(x, gamma):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + EPS) * gamma


def make_mag(seed=0, **overrides):
    torch.manual_seed(seed)
    config = {"window": 3, "n_persistent": 2, "heads": 2, "memory": {"chunk_size": 2}, **overrides}
    mag = MemoryAsGate(8, **config).to(DT)
    with torch.no_grad():  # non-trivial per-channel norm weights and persistent tokens
        mag.norm_attention.weight.uniform_(0.5, 1.5)
        mag.norm_memory.weight.uniform_(0.5, 1.5)
        mag.persistent.tokens.normal_()
    return mag


# -- Eq. 27: sliding window with an always-visible prefix --------------------------------------------------


@pytest.mark.equation("titans", 27)
@pytest.mark.parametrize("block_size", [2, 128])
def test_window_and_prefix_visibility_elementwise(block_size):
    # d y_i / d x_j is exactly 0 for every key hidden by the mask, and non-zero for every visible one
    torch.manual_seed(0)
    attn = SlidingWindowAttention(4, heads=2, window=3, block_size=block_size).to(DT)
    n, n_p = 7, 2
    x = torch.randn(1, n, 4, dtype=DT)
    prefix = torch.randn(1, n_p, 4, dtype=DT)
    jac_x, jac_p = torch.autograd.functional.jacobian(lambda a, p: attn(a, prefix=p)[0], (x, prefix))
    depends_on_x = jac_x[0, :, :, 0].abs().sum(dim=(1, 3)) > 0  # (query i, key j)
    depends_on_p = jac_p[0, :, :, 0].abs().sum(dim=(1, 3)) > 0
    expected = window_rule(n, n_p, 3)
    assert torch.equal(depends_on_p, expected[:, :n_p])
    assert torch.equal(depends_on_x, expected[:, n_p:])


@pytest.mark.equation("titans", 27)
@settings(max_examples=15)
@given(
    n=st.integers(1, 9),
    window=st.integers(1, 10),
    n_p=st.integers(0, 3),
    block=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_sliding_window_attention_equals_hand_softmax(n, window, n_p, block, seed):
    torch.manual_seed(seed)
    attn = SlidingWindowAttention(4, heads=2, window=window, block_size=block).to(DT)
    x = torch.randn(2, n, 4, dtype=DT)
    prefix = torch.randn(2, n_p, 4, dtype=DT) if n_p else None
    y, _ = attn(x, prefix=prefix)
    for b in range(2):
        keys = x[b] if prefix is None else torch.cat([prefix[b], x[b]])
        expected = hand_attention(attn.proj, x[b], keys, window_rule(n, n_p, window))
        torch.testing.assert_close(y[b], expected, **TOL)


@pytest.mark.equation("titans", 27)
@settings(max_examples=15)
@given(cuts=st.lists(st.integers(0, 11), max_size=3), window=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_sliding_window_cache_streams_exactly(cuts, window, seed):
    torch.manual_seed(seed)
    attn = SlidingWindowAttention(4, heads=1, window=window, block_size=2).to(DT)
    x = torch.randn(1, 11, 4, dtype=DT)
    prefix = torch.randn(1, 2, 4, dtype=DT)
    whole, _ = attn(x, prefix=prefix)
    bounds = [0, *sorted(cuts), 11]
    cache, parts = None, []
    for lo, hi in itertools.pairwise(bounds):
        part, cache = attn(x[:, lo:hi], cache, prefix=prefix)
        parts.append(part)
        assert cache.keys.shape[2] <= window - 1  # bounded cache
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, **TOL)
    assert cache.seen == 11


@pytest.mark.equation("titans", 27)
def test_window_at_least_the_length_is_full_causal_attention_with_prefix():
    torch.manual_seed(1)
    attn = SlidingWindowAttention(4, heads=2, window=50).to(DT)
    x, prefix = torch.randn(1, 6, 4, dtype=DT), torch.randn(1, 2, 4, dtype=DT)
    y, _ = attn(x, prefix=prefix)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    visible = torch.cat([torch.ones(6, 2, dtype=torch.bool), causal], dim=1)
    torch.testing.assert_close(
        y[0], hand_attention(attn.proj, x[0], torch.cat([prefix[0], x[0]]), visible), **TOL
    )


# -- Eq. 28: the gate ----------------------------------------------------------------------------------------


@pytest.mark.equation("titans", 28)
def test_gate_is_rmsnorm_times_sigmoid_of_rmsnorm_by_hand():
    mag = make_mag()
    y, m = torch.randn(2, 5, 8, dtype=DT) * 3, torch.randn(2, 5, 8, dtype=DT) * 0.1
    g1, g2 = mag.norm_attention.weight, mag.norm_memory.weight
    expected = rms(y, g1) * torch.sigmoid(rms(m, g2))
    torch.testing.assert_close(mag.gate(y, m), expected, **TOL)


@pytest.mark.equation("titans", 28)
def test_gate_stays_finite_for_huge_inputs():
    mag = make_mag()
    out = mag.gate(torch.full((1, 2, 8), 1e150, dtype=DT), torch.full((1, 2, 8), -1e150, dtype=DT))
    assert torch.isfinite(out).all()


# -- Eq. 26–28 end to end ------------------------------------------------------------------------------------


@pytest.mark.equation("titans", 26)
@pytest.mark.equation("titans", 27)
@pytest.mark.equation("titans", 28)
def test_mag_equals_hand_combination_of_both_branches_over_prefixed_input():
    mag = make_mag()
    x = torch.randn(2, 9, 8, dtype=DT)
    out, _ = mag(x)
    n_p = 2
    p = mag.persistent.tokens
    x_tilde = torch.cat([p.expand(2, -1, -1), x], dim=1)  # Eq. 26
    m = mag.memory(x_tilde)[0][:, n_p:]  # the memory branch over x~, prefix rows dropped
    for b in range(2):
        y = hand_attention(mag.attention.proj, x[b], x_tilde[b], window_rule(9, n_p, 3))  # Eq. 27
        expected = rms(y, mag.norm_attention.weight) * torch.sigmoid(rms(m[b], mag.norm_memory.weight))
        torch.testing.assert_close(out[b], expected, **TOL)


@pytest.mark.equation("titans", 26)
def test_persistent_tokens_get_gradients_and_no_test_time_change():
    mag = make_mag(memory={"chunk_size": 2, "gates": "fixed", "fixed_gates": (0.1, 0.5, 0.5)})
    before = mag.persistent.tokens.detach().clone()
    out, state = mag(torch.randn(2, 9, 8, dtype=DT))
    assert torch.equal(mag.persistent.tokens, before)  # the inner loop (memory writes) leaves P alone
    out.sum().backward()
    assert mag.persistent.tokens.grad.abs().sum() > 0
    assert state.memory.tokens_seen == 2 + 9  # the prefix was written once, at stream start


@pytest.mark.equation("titans", 26)
def test_prefix_is_written_into_memory_once_per_stream():
    mag = make_mag()
    _, s1 = mag(torch.randn(1, 4, 8, dtype=DT))
    _, s2 = mag(torch.randn(1, 3, 8, dtype=DT), s1)
    assert (s1.memory.tokens_seen, s2.memory.tokens_seen) == (6, 9)
    assert (s1.attention.seen, s2.attention.seen) == (4, 7)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"window": 0}, ValueError, "window must be an int >= 1"),
        ({"heads": 3}, ValueError, "heads must divide dim"),
        ({"n_persistent": -2}, ValueError, "n_persistent must be an int >= 0"),
        ({"memory": [("depth", 2)]}, TypeError, "memory must be a dict"),
        ({"memory": {"dim": 4}}, ValueError, "must not set 'dim'"),
    ],
)
def test_bad_configuration_raises(kwargs, error, match):
    torch.manual_seed(0)
    config = {"window": 3, "n_persistent": 2, "heads": 2, **kwargs}
    with pytest.raises(error, match=match):
        MemoryAsGate(8, **config)


def test_bad_input_raises():
    mag = make_mag()
    with pytest.raises(ValueError, match=r"x must have shape \(batch, seq, 8\)"):
        mag(torch.randn(2, 4, 5, dtype=DT))


# -- construction, states and streaming ---------------------------------------------------------------------


def test_memory_config_is_a_copy_of_the_dict_or_empty():
    given = {"chunk_size": 2}
    config = memory_config(given)
    assert config == given and config is not given
    assert memory_config(None) == {}
    with pytest.raises(
        TypeError, match=r"^memory must be a dict of NeuralMemory keyword arguments or None, got list$"
    ):
        memory_config([("depth", 2)])
    with pytest.raises(
        ValueError, match=r"^memory config must not set 'dim'; the memory always has the mixer's"
    ):
        memory_config({"dim": 4})


def test_attention_projections_shapes_and_errors():
    proj = AttentionProjections(8, 2)
    assert (proj.dim, proj.heads, proj.head_dim) == (8, 2, 4)
    for layer in (proj.to_q, proj.to_k, proj.to_v, proj.to_out):
        assert layer.weight.shape == (8, 8) and layer.bias is None
    assert AttentionProjections(1, 1).head_dim == 1
    with pytest.raises(ValueError, match=r"^dim must be an int >= 1, got 0$"):
        AttentionProjections(0, 1)
    with pytest.raises(ValueError, match=r"^heads must be an int >= 1, got 0$"):
        AttentionProjections(8, 0)
    with pytest.raises(ValueError, match=r"^heads must divide dim, got dim=8, heads=3$"):
        AttentionProjections(8, 3)


def test_attention_projections_split_and_merge_heads_by_hand():
    torch.manual_seed(0)
    proj = AttentionProjections(4, 2).to(DT)
    x = torch.randn(1, 3, 4, dtype=DT)
    q = proj.queries(x)
    assert q.shape == (1, 2, 3, 2)
    full = x @ proj.to_q.weight.T
    torch.testing.assert_close(q[0, 1], full[0, :, 2:], **TOL)  # head 1 holds channels 2..3
    k, v = proj.keys_values(x)
    torch.testing.assert_close(k[0, 0], (x @ proj.to_k.weight.T)[0, :, :2], **TOL)
    torch.testing.assert_close(v[0, 1], (x @ proj.to_v.weight.T)[0, :, 2:], **TOL)


def test_caches_count_and_detach_their_tensors():
    keys = torch.randn(2, 2, 3, 4, requires_grad=True)
    cache = WindowCache(keys=keys * 1, values=keys[:, :, :1] * 2, seen=5)
    assert cache.numel() == 48 + 16
    detached = cache.detach()
    assert not detached.keys.requires_grad and not detached.values.requires_grad and detached.seen == 5
    torch.testing.assert_close(detached.values, cache.values.detach(), rtol=0, atol=0)
    mag = make_mag()
    _, state = mag(torch.randn(1, 4, 8, dtype=DT))
    assert state.numel() == state.memory.numel() + state.attention.numel()
    assert state.memory.numel() > 0 and state.attention.numel() == 2 * 1 * 2 * 2 * 4  # window - 1 = 2 rows
    detached = state.detach()
    assert all(not w.requires_grad for w in detached.memory.weights)
    assert not detached.attention.keys.requires_grad
    assert detached.attention.seen == state.attention.seen


def test_mag_dim_must_be_a_positive_int_and_the_memory_gets_its_settings():
    with pytest.raises(ValueError, match=r"^dim must be an int >= 1, got 0$"):
        MemoryAsGate(0, window=3, n_persistent=1, heads=1)
    assert MemoryAsGate(1, window=3, n_persistent=1, heads=1).dim == 1
    mag = MemoryAsGate(8, window=3, n_persistent=1, heads=2, memory={"chunk_size": 3, "depth": 1})
    assert mag.memory.chunk_size == 3 and mag.memory.memory.depth == 1
    assert mag.norm_attention.eps == EPS and mag.norm_memory.eps == EPS


@pytest.mark.parametrize("n_persistent", [0, 2])  # without a prefix, MAG's own check is the only one
def test_mag_stream_start_needs_a_positive_batch_size(n_persistent):
    with pytest.raises(ValueError, match=r"^batch_size must be an int >= 1, got 0$"):
        make_mag(n_persistent=n_persistent).init_state(0)


@pytest.mark.parametrize("n_persistent", [0, 2])
def test_mag_stream_starts_in_the_requested_dtype(n_persistent):
    mag = MemoryAsGate(8, window=3, n_persistent=n_persistent, heads=2, memory={"chunk_size": 2})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        state = mag.init_state(2, dtype=torch.bfloat16)
    assert state.attention.keys.dtype == torch.bfloat16 and state.attention.seen == 0
    assert state.attention.keys.shape == (2, 2, 0, 4)
    assert {w.dtype for w in state.memory.weights} == {torch.bfloat16}
    assert state.memory.tokens_seen == n_persistent


@pytest.mark.parametrize("n_persistent", [0, 2])
def test_mag_window_cache_is_made_on_the_requested_device(n_persistent, monkeypatch):
    """Every tensor of the state goes to the requested device. Without a prefix a CPU module can start
    a state elsewhere; with one, the module writes the prefix, so it must be there too (value checks
    off on meta, as in on_meta.py)."""
    import neural_memory.titans.memory as memory

    monkeypatch.setattr(memory, "check_gates", lambda *args: None)
    torch.manual_seed(0)
    mag = MemoryAsGate(8, window=3, n_persistent=n_persistent, heads=2, memory={"impl": "reference"})
    state = (mag.to("meta") if n_persistent else mag).init_state(2, device="meta")
    assert {t.device.type for t in tensors_in(state)} == {"meta"}


@pytest.mark.parametrize("n_persistent", [0, 2])
def test_mag_keeps_every_tensor_of_output_and_state_on_the_input_device(n_persistent, monkeypatch):
    """``meta`` stands in for CUDA (on_meta.py); two calls, so the window cache is used."""
    run_on_meta(
        make_mag(n_persistent=n_persistent, memory={"chunk_size": 2, "impl": "reference"}), monkeypatch
    )


def test_sliding_window_attention_keeps_its_tensors_on_the_input_device(monkeypatch):
    torch.manual_seed(0)
    run_on_meta(SlidingWindowAttention(8, window=3, heads=2, block_size=2), monkeypatch)


def test_mag_and_its_attention_start_in_the_input_dtype_under_autocast():
    """A float32 module reading bf16 tokens under autocast: caches and memory start in bf16."""
    torch.manual_seed(0)
    mag = MemoryAsGate(8, window=3, n_persistent=2, heads=2, memory={"chunk_size": 2})
    attention = SlidingWindowAttention(8, window=3, heads=2)
    x = torch.randn(2, 5, 8, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, state = mag(x)
        _, cache = attention(x)
    assert state.attention.keys.dtype == cache.keys.dtype == torch.bfloat16
    assert {w.dtype for w in state.memory.weights} == {torch.bfloat16}


def test_block_size_is_kept_when_given_and_at_least_128_by_default():
    assert SlidingWindowAttention(8, window=3, heads=2, block_size=5).block_size == 5
    assert SlidingWindowAttention(8, window=3, heads=2).block_size == 128
    assert SlidingWindowAttention(8, window=300, heads=2).block_size == 300
    assert SlidingWindowAttention(8, window=3, heads=2, block_size=1).block_size == 1
    with pytest.raises(ValueError, match=r"^block_size must be an int >= 1, got 0$"):
        SlidingWindowAttention(8, window=3, heads=2, block_size=0)


def test_an_empty_call_returns_an_empty_output_of_the_batch():
    torch.manual_seed(0)
    attention = SlidingWindowAttention(8, window=3, heads=2)
    y, cache = attention(torch.randn(3, 0, 8))
    assert y.shape == (3, 0, 8) and cache.seen == 0


@pytest.mark.parametrize("cut", [0, 1, 4, 7])
def test_mag_streaming_in_two_calls_equals_one_call(cut):
    mag = make_mag()
    x = torch.randn(2, 7, 8, dtype=DT)
    whole, whole_state = mag(x)
    first, state = mag(x[:, :cut])
    second, state = mag(x[:, cut:], state)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, **TOL)
    for a, b in zip(state.memory.weights, whole_state.memory.weights, strict=True):
        torch.testing.assert_close(a, b, **TOL)
    torch.testing.assert_close(state.attention.keys, whole_state.attention.keys, **TOL)
