"""The Transformer baseline (kind ``"transformer"``): RoPE, attention against a hand-written reference,
causality, streaming through the KV cache, learning, and bad input."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from neural_memory.models import build_lm
from neural_memory.models.transformer import CausalSelfAttention, KVCache, rotary_embedding

F64 = torch.float64


# ------------------------------------------------------------------------------------------------
# rotary position embedding
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0, 1, 2, 7, 1000])
def test_rope_in_two_dims_rotates_by_the_position(p):
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)[:, None, :]  # two vectors, seq 1
    out = rotary_embedding(x, torch.tensor([p]))
    expected = torch.tensor([[math.cos(p), math.sin(p)], [-math.sin(p), math.cos(p)]], dtype=F64)
    torch.testing.assert_close(out[:, 0], expected, rtol=0, atol=1e-12)


def test_rope_in_four_dims_pairs_i_with_i_plus_half():
    # base 100, d 4: theta = (100^0, 100^(-1/2)) = (1, 1/10); planes (x0, x2) and (x1, x3)
    x = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]], dtype=F64)
    p = 3
    a, b = p * 1.0, p * 0.1
    expected = torch.tensor(
        [
            1 * math.cos(a) - 3 * math.sin(a),
            2 * math.cos(b) - 4 * math.sin(b),
            3 * math.cos(a) + 1 * math.sin(a),
            4 * math.cos(b) + 2 * math.sin(b),
        ],
        dtype=F64,
    )
    torch.testing.assert_close(
        rotary_embedding(x, torch.tensor([p]), base=100.0)[0, 0], expected, rtol=0, atol=1e-12
    )


@given(m=st.integers(0, 500), n=st.integers(0, 500), shift=st.integers(-500, 500), seed=st.integers(0, 1000))
def test_rope_scores_depend_only_on_the_relative_position(m, n, shift, seed):
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, 1, 16, generator=gen, dtype=F64)

    def score(a, b):
        return (rotary_embedding(q, torch.tensor([a])) * rotary_embedding(k, torch.tensor([b]))).sum()

    torch.testing.assert_close(score(m, n), score(m + shift, n + shift), rtol=0, atol=1e-10)


def test_rope_changes_scores_with_the_distance():
    q = k = torch.ones(1, 8, dtype=F64)
    scores = [(rotary_embedding(q, torch.tensor([d])) * k).sum().item() for d in (0, 1, 2)]
    assert scores[0] == pytest.approx(8.0, abs=1e-12)
    assert abs(scores[1] - scores[0]) > 1e-3 and abs(scores[2] - scores[1]) > 1e-3


def test_rope_needs_an_even_width_and_matching_positions():
    with pytest.raises(ValueError, match="even last dim, got 3"):
        rotary_embedding(torch.zeros(2, 3), torch.arange(2))
    with pytest.raises(ValueError, match=r"positions must have shape \(2,\)"):
        rotary_embedding(torch.zeros(2, 4), torch.arange(3))


# ------------------------------------------------------------------------------------------------
# attention against an independent reference
# ------------------------------------------------------------------------------------------------


def reference_attention(
    layer: CausalSelfAttention, x: torch.Tensor, window: int | None = None
) -> torch.Tensor:
    """Token by token, head by head: explicit softmax over j <= i (and j > i - window); RoPE as complex
    multiplication."""
    b, n, dim = x.shape
    h, dh = layer.heads, layer.head_dim
    w_q, w_k, w_v = layer.to_qkv.weight.chunk(3, dim=0)
    out = torch.zeros(b, n, dim, dtype=x.dtype)
    for head in range(h):
        rows = slice(head * dh, (head + 1) * dh)
        q, k, v = x @ w_q[rows].T, x @ w_k[rows].T, x @ w_v[rows].T  # (b, n, dh)
        if layer.rope:
            q, k = _complex_rope(q, layer.rope_base), _complex_rope(k, layer.rope_base)
        for i in range(n):
            seen = range(i + 1) if window is None else range(max(0, i - window + 1), i + 1)
            scores = torch.stack([(q[:, i] * k[:, j]).sum(-1) for j in seen], -1) / math.sqrt(dh)
            weights = torch.exp(scores - scores.max(-1, keepdim=True).values)
            weights = weights / weights.sum(-1, keepdim=True)
            out[:, i, rows] = sum(weights[:, c, None] * v[:, j] for c, j in enumerate(seen))
    return out @ layer.to_out.weight.T


def _complex_rope(t: torch.Tensor, base: float) -> torch.Tensor:
    half = t.shape[-1] // 2
    z = torch.complex(t[..., :half], t[..., half:])
    theta = base ** (-2 * torch.arange(half, dtype=F64) / t.shape[-1])
    z = z * torch.polar(torch.ones_like(theta), torch.arange(t.shape[1], dtype=F64)[:, None] * theta)
    return torch.cat([z.real, z.imag], -1)


@pytest.mark.parametrize("rope", [False, True])
def test_attention_equals_the_reference(rope):
    torch.manual_seed(0)
    layer = CausalSelfAttention(12, heads=3, rope=rope, rope_base=50.0).double()
    x = torch.randn(2, 7, 12, dtype=F64)
    y, cache = layer(x)
    torch.testing.assert_close(y, reference_attention(layer, x), rtol=0, atol=1e-10)
    assert cache.position == 7


@pytest.mark.parametrize(("window", "block_size"), [(1, None), (3, 2), (3, 5), (4, 1), (20, None)])
def test_sliding_window_attention_equals_the_reference(window, block_size):
    # block sizes smaller than, equal to and larger than the window; window 20 > T is full attention
    torch.manual_seed(0)
    layer = CausalSelfAttention(12, heads=3, rope_base=50.0, window=window, block_size=block_size).double()
    x = torch.randn(2, 9, 12, dtype=F64)
    y, cache = layer(x)
    torch.testing.assert_close(y, reference_attention(layer, x, window), rtol=0, atol=1e-10)
    assert cache.position == 9 and cache.keys.shape[2] == min(window - 1, 9)


@given(cuts=st.lists(st.integers(1, 15), min_size=1, max_size=5, unique=True), window=st.integers(1, 6))
@settings(max_examples=25)
def test_sliding_window_streams_in_pieces_with_a_bounded_cache(cuts, window):
    torch.manual_seed(0)
    layer = CausalSelfAttention(8, heads=2, window=window, block_size=2).double()
    x = torch.randn(1, 16, 8, dtype=F64)
    whole, _ = layer(x)
    cache, pieces = None, []
    for start, stop in itertools.pairwise([0, *sorted(cuts), 16]):
        y, cache = layer(x[:, start:stop], cache)
        pieces.append(y)
        assert cache.keys.shape[2] == min(window - 1, stop)  # never more than window - 1 old keys
    torch.testing.assert_close(torch.cat(pieces, 1), whole, rtol=0, atol=1e-12)
    assert cache.position == 16


def test_a_token_outside_the_window_changes_nothing():
    # window 3: output 7 sees tokens 5, 6, 7; changing token 4 must leave it unchanged, token 5 must not
    torch.manual_seed(0)
    model = build_lm("swa", vocab_size=50, dim=16, depth=1, heads=2, window=3).double()
    tokens = torch.arange(10)[None]
    far, near = tokens.clone(), tokens.clone()
    far[0, 4], near[0, 5] = 33, 33
    base = model(tokens)[0][0, 7]
    torch.testing.assert_close(model(far)[0][0, 7], base, rtol=0, atol=0)
    assert (model(near)[0][0, 7] - base).abs().max() > 1e-6


def test_bad_window_arguments():
    with pytest.raises(ValueError, match="window must be an int >= 1"):
        CausalSelfAttention(8, window=0)
    with pytest.raises(ValueError, match="block_size must be an int >= 1"):
        CausalSelfAttention(8, window=2, block_size=0)


def _lm(depth=2, dtype=torch.float32, **config):
    torch.manual_seed(0)
    return build_lm("transformer", vocab_size=50, dim=16, depth=depth, heads=2, **config).to(dtype)


@given(t=st.integers(0, 10), seed=st.integers(0, 10_000))
def test_future_tokens_never_change_past_logits(t, seed):
    model = _lm(dtype=F64)
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 50, (2, 12), generator=gen)
    perturbed = tokens.clone()
    perturbed[:, t + 1 :] = torch.randint(0, 50, (2, 11 - t), generator=gen)
    before, _ = model(tokens)
    after, _ = model(perturbed)
    torch.testing.assert_close(after[:, : t + 1], before[:, : t + 1], rtol=0, atol=1e-12)


def test_a_future_token_does_change_later_logits():
    # guards the causality property against a model that ignores its context altogether
    model = _lm(dtype=F64)
    tokens = torch.arange(10)[None]
    perturbed = tokens.clone()
    perturbed[0, 4] = 33
    assert (model(tokens)[0][0, 5:] - model(perturbed)[0][0, 5:]).abs().max() > 1e-6


@given(cuts=st.lists(st.integers(1, 15), min_size=1, max_size=4, unique=True))
def test_streaming_in_pieces_equals_the_whole_sequence(cuts):
    model = _lm()
    tokens = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(3))
    whole, _ = model(tokens)
    state, pieces = None, []
    bounds = [0, *sorted(cuts), 16]
    for start, stop in itertools.pairwise(bounds):
        logits, state = model(tokens[:, start:stop], state)
        pieces.append(logits)
    torch.testing.assert_close(torch.cat(pieces, 1), whole, rtol=0, atol=1e-5)
    assert state.position == 16


def test_streaming_one_token_at_a_time_equals_the_whole_sequence():
    model = _lm(rope_base=100.0)
    tokens = torch.randint(0, 50, (3, 20), generator=torch.Generator().manual_seed(4))
    whole, _ = model(tokens)
    state, steps = None, []
    for i in range(20):
        logits, state = model(tokens[:, i : i + 1], state)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, 1), whole, rtol=0, atol=1e-5)


def test_kv_cache_grows_by_one_key_and_value_per_token():
    model = _lm()
    _, state = model(torch.ones(2, 5, dtype=torch.long))
    sizes = [sum(s.numel() for s in state.layers)]
    _, state = model(torch.ones(2, 3, dtype=torch.long), state)
    sizes.append(sum(s.numel() for s in state.layers))
    per_token = 2 * 2 * 16 * 2  # keys + values, batch 2, dim 16, depth 2
    assert sizes == [5 * per_token, 8 * per_token]
    assert isinstance(state.layers[0], KVCache) and state.layers[0].keys.shape == (2, 2, 8, 8)


def test_kv_cache_detach():
    torch.manual_seed(0)
    layer = CausalSelfAttention(8, heads=2)
    _, cache = layer(torch.randn(1, 3, 8))
    assert cache.keys.requires_grad and not cache.detach().keys.requires_grad


def test_a_tiny_transformer_overfits_a_fixed_batch():
    # 4 random byte strings of 33 tokens: memorisable only through the context; log(256) = 5.5 at start
    torch.manual_seed(0)
    model = build_lm("transformer", vocab_size=256, dim=32, depth=1, heads=2)
    tokens = torch.randint(0, 256, (4, 33), generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = model.loss(tokens).item()
    for _ in range(60):
        loss = model.loss(tokens)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert first > 5.0
    assert model.loss(tokens).item() < 0.1


def test_rope_off_has_the_same_parameters():
    assert sum(p.numel() for p in _lm(rope=False).parameters()) == sum(p.numel() for p in _lm().parameters())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dim": 10, "heads": 3}, ValueError, "heads must divide dim, got dim=10, heads=3"),
        ({"dim": 6, "heads": 2}, ValueError, r"rope needs an even head width dim // heads, got 3"),
        ({"dim": 8, "heads": 0}, ValueError, "heads must be an int >= 1"),
        ({"dim": 8, "rope_base": 1.0}, ValueError, "rope_base must be > 1"),
    ],
)
def test_bad_attention_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        CausalSelfAttention(kwargs.pop("dim"), **kwargs)


def test_odd_head_width_is_fine_without_rope():
    torch.manual_seed(0)
    y, _ = CausalSelfAttention(6, heads=2, rope=False)(torch.randn(1, 4, 6))
    assert y.shape == (1, 4, 6)


def test_bad_attention_input():
    torch.manual_seed(0)
    layer = CausalSelfAttention(8, heads=2)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, seq, 8\)"):
        layer(torch.randn(2, 3, 5))
    _, cache = layer(torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match="state holds batch 2, x has batch 1"):
        layer(torch.randn(1, 1, 8), cache)
