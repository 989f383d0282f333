"""Titans MAL (Eq. 29–31) and Titans (LMM) (Eq. 29–30 without attention), against hand computations."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from neural_memory.titans.mag import SlidingWindowAttention
from neural_memory.titans.mal import LongTermMemoryLayer, MemoryAsLayer

from .hand_attention import hand_attention
from .on_meta import run_on_meta

DT = torch.float64
TOL = {"rtol": 0.0, "atol": 1e-10}


def plain_window_rule(n_query, window, *, first):
    """Eq. 31 by hand: the query at position p = first + i sees positions j with p - window < j <= p."""
    visible = torch.zeros(n_query, first + n_query, dtype=torch.bool)
    for i in range(n_query):
        for j in range(first + n_query):
            visible[i, j] = first + i - window < j <= first + i
    return visible


def make_mal(seed=0, **overrides):
    torch.manual_seed(seed)
    config = {"window": 3, "n_persistent": 2, "heads": 2, "memory": {"chunk_size": 2}, **overrides}
    mal = MemoryAsLayer(8, **config).to(DT)
    with torch.no_grad():
        mal.persistent.tokens.normal_()
    return mal


@pytest.mark.equation("titans", 31)
def test_plain_window_visibility_elementwise():
    # no always-visible prefix: d o_i / d y_j != 0 exactly for i - window < j <= i
    torch.manual_seed(0)
    attn = SlidingWindowAttention(4, heads=2, window=3, block_size=2).to(DT)
    y = torch.randn(1, 7, 4, dtype=DT)
    jac = torch.autograd.functional.jacobian(lambda a: attn(a)[0], y)
    depends = jac[0, :, :, 0].abs().sum(dim=(1, 3)) > 0
    assert torch.equal(depends, plain_window_rule(7, 3, first=0))


@pytest.mark.equation("titans", 29)
@pytest.mark.equation("titans", 30)
@pytest.mark.equation("titans", 31)
@pytest.mark.parametrize("window", [1, 3, 20])
def test_mal_equals_memory_then_plain_window_attention_over_prefixed_input(window):
    mal = make_mal(window=window)
    x = torch.randn(2, 9, 8, dtype=DT)
    out, state = mal(x)
    n_p = 2
    x_tilde = torch.cat([mal.persistent.tokens.expand(2, -1, -1), x], dim=1)  # Eq. 29
    y = mal.memory(x_tilde)[0]  # Eq. 30, all N_p + N rows
    for b in range(2):
        # Eq. 31: the prefix rows are ordinary positions 0..N_p-1 of a plain sliding window; rows dropped
        expected = hand_attention(
            mal.attention.proj, y[b, n_p:], y[b], plain_window_rule(9, window, first=n_p)
        )
        torch.testing.assert_close(out[b], expected, **TOL)
    assert state.attention.seen == n_p + 9
    assert state.attention.keys.shape[2] == min(window - 1, n_p + 9)


@pytest.mark.equation("titans", 29)
@pytest.mark.equation("titans", 30)
def test_lmm_is_the_memory_over_the_prefixed_input_with_prefix_rows_dropped():
    torch.manual_seed(0)
    lmm = LongTermMemoryLayer(8, n_persistent=3, memory={"chunk_size": 2, "heads": 2}).to(DT)
    with torch.no_grad():
        lmm.persistent.tokens.normal_()
    x = torch.randn(2, 7, 8, dtype=DT)
    out, state = lmm(x)
    expected = lmm.memory(torch.cat([lmm.persistent.tokens.expand(2, -1, -1), x], dim=1))[0][:, 3:]
    torch.testing.assert_close(out, expected, **TOL)
    assert state.tokens_seen == 3 + 7


@pytest.mark.equation("titans", 30)
@settings(max_examples=10)
@given(t=st.integers(0, 8), seed=st.integers(0, 2**16))
def test_memory_layer_is_causal(t, seed):
    torch.manual_seed(0)
    lmm = LongTermMemoryLayer(4, n_persistent=2, memory={"chunk_size": 3}).to(DT)
    x = torch.randn(1, 9, 4, dtype=DT)
    changed = x.clone()
    changed[:, t + 1 :] = torch.randn(1, 8 - t, 4, dtype=DT, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(lmm(changed)[0][:, : t + 1], lmm(x)[0][:, : t + 1], **TOL)


@pytest.mark.equation("titans", 29)
def test_persistent_tokens_get_gradients_through_the_memory():
    mal = make_mal(window=1)  # window 1: each token sees only itself, so P reaches o only via the memory
    out, _ = mal(torch.randn(1, 5, 8, dtype=DT))
    out.sum().backward()
    assert mal.persistent.tokens.grad.abs().sum() > 0


def test_zero_persistent_tokens_start_from_the_initial_memory():
    torch.manual_seed(0)
    lmm = LongTermMemoryLayer(8, n_persistent=0).to(DT)
    x = torch.randn(1, 5, 8, dtype=DT)
    torch.testing.assert_close(lmm(x)[0], lmm.memory(x)[0], **TOL)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"window": 0}, ValueError, "window must be an int >= 1"),
        ({"heads": 0}, ValueError, "heads must be an int >= 1"),
        ({"n_persistent": "4"}, TypeError, "n_persistent must be an int"),
    ],
)
def test_bad_configuration_raises(kwargs, error, match):
    torch.manual_seed(0)
    with pytest.raises(error, match=match):
        MemoryAsLayer(8, **{"window": 3, "n_persistent": 2, "heads": 2, **kwargs})


def test_bad_input_raises():
    with pytest.raises(ValueError, match=r"x must have shape \(batch, seq, 8\)"):
        make_mal()(torch.randn(3, 8, dtype=DT))


# -- construction, stream start and streaming ------------------------------------------------------------


@pytest.mark.parametrize("cls", [LongTermMemoryLayer, MemoryAsLayer])
def test_dim_must_be_a_positive_int_and_one_is_allowed(cls):
    extra = {"window": 3, "heads": 1} if cls is MemoryAsLayer else {}
    with pytest.raises(ValueError, match=r"^dim must be an int >= 1, got 0$"):
        cls(0, n_persistent=1, **extra)
    assert cls(1, n_persistent=1, **extra).dim == 1


@pytest.mark.parametrize("cls", [LongTermMemoryLayer, MemoryAsLayer])
def test_the_memory_settings_reach_the_memory(cls):
    extra = {"window": 3, "heads": 2} if cls is MemoryAsLayer else {}
    layer = cls(8, n_persistent=1, memory={"chunk_size": 3, "depth": 1}, **extra)
    assert layer.memory.chunk_size == 3 and layer.memory.memory.depth == 1


def test_stream_start_needs_a_positive_batch_size():
    lmm = LongTermMemoryLayer(8, n_persistent=2)
    with pytest.raises(ValueError, match=r"^batch_size must be an int >= 1, got 0$"):
        lmm.start(0)


@pytest.mark.parametrize("cls", [LongTermMemoryLayer, MemoryAsLayer])
def test_without_persistent_tokens_the_stream_starts_in_the_requested_dtype(cls):
    """No prefix to write: the start state is the memory's M_0 (and an empty window) cast to ``dtype``."""
    extra = {"window": 3, "heads": 2} if cls is MemoryAsLayer else {}
    layer = cls(8, n_persistent=0, **extra)  # float32 parameters
    state = layer.init_state(2, dtype=torch.bfloat16)
    memory = state if cls is LongTermMemoryLayer else state.memory
    assert {w.dtype for w in (*memory.weights, *memory.momentum)} == {torch.bfloat16}
    expected = tuple(w.to(torch.bfloat16) for w in layer.memory.memory.expand(2))
    for got, want in zip(memory.weights, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    if cls is MemoryAsLayer:
        assert state.attention.seen == 0 and state.attention.keys.shape == (2, 2, 0, 4)
        assert state.attention.keys.dtype == torch.bfloat16


def test_without_persistent_tokens_the_window_cache_is_made_on_the_requested_device():
    mal = MemoryAsLayer(8, window=3, n_persistent=0, heads=2).to("meta")
    state = mal.init_state(2, device="meta")
    assert state.attention.keys.device.type == "meta" and state.attention.values.device.type == "meta"


@pytest.mark.parametrize("cls", [LongTermMemoryLayer, MemoryAsLayer])
@pytest.mark.parametrize("cut", [0, 1, 3, 6])
def test_streaming_in_two_calls_equals_one_call(cls, cut):
    torch.manual_seed(0)
    extra = {"window": 3, "heads": 2} if cls is MemoryAsLayer else {}
    layer = cls(8, n_persistent=2, memory={"chunk_size": 2}, **extra).to(DT)
    with torch.no_grad():
        layer.persistent.tokens.normal_()
    x = torch.randn(2, 6, 8, dtype=DT)
    whole, whole_state = layer(x)
    first, state = layer(x[:, :cut])
    second, state = layer(x[:, cut:], state)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, **TOL)
    memory = (state, whole_state) if cls is LongTermMemoryLayer else (state.memory, whole_state.memory)
    for a, b in zip(memory[0].weights, memory[1].weights, strict=True):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("cls", [LongTermMemoryLayer, MemoryAsLayer])
@pytest.mark.parametrize("n_persistent", [0, 2])
def test_every_tensor_of_output_and_state_stays_on_the_input_device(cls, n_persistent, monkeypatch):
    """``meta`` stands in for CUDA (on_meta.py): a window cache or state started on the default device
    would land on the CPU beside the inputs."""
    torch.manual_seed(0)
    config = {"n_persistent": n_persistent, "memory": {"chunk_size": 2, "impl": "reference"}}
    if cls is MemoryAsLayer:
        config.update(window=3, heads=2)
    run_on_meta(cls(8, **config).to(DT), monkeypatch)


@pytest.mark.parametrize("cls", [LongTermMemoryLayer, MemoryAsLayer])
@pytest.mark.parametrize("n_persistent", [0, 2])
def test_a_stream_starts_in_the_input_dtype_under_autocast(cls, n_persistent):
    """A float32 layer reading bf16 tokens under autocast: the memory (and window cache) start in bf16."""
    torch.manual_seed(0)
    config = {"n_persistent": n_persistent, "memory": {"chunk_size": 2}}
    if cls is MemoryAsLayer:
        config.update(window=3, heads=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, state = cls(8, **config)(torch.randn(2, 5, 8, dtype=torch.bfloat16))
    memory = state.memory if cls is MemoryAsLayer else state
    assert {w.dtype for w in (*memory.weights, *memory.momentum)} == {torch.bfloat16}
    if cls is MemoryAsLayer:
        assert state.attention.keys.dtype == torch.bfloat16
