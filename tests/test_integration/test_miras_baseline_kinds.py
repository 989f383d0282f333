"""The MIRAS framework baselines as LM kinds (linear-attention, deltanet, gated-deltanet, mamba2): causality,
streaming, bounded state, training, sizes.

No equation markers: the recurrences are verified by tests/test_equations/miras/test_baselines.py,
tests/test_equations/common/test_delta_rule_chunked.py and tests/test_equations/miras/test_mamba2.py; these
are the properties every kind has.
"""

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from neural_memory.miras.baselines import DeltaRuleLayer
from neural_memory.miras.mamba2 import Mamba2Layer
from neural_memory.models.lm import count_parameters
from neural_memory.models.registry import available_kinds, build_lm, get_kind

from .lm_state import state_numel, tensors_in, tokens

VOCAB, DIM = 16, 8
DELTA_RULE_KINDS = ["linear-attention", "deltanet", "gated-deltanet"]
KINDS = [*DELTA_RULE_KINDS, "mamba2"]
CONFIG = {"heads": 2, "chunk_size": 3}  # chunks of 3: the cuts below fall inside chunks
CONFIGS = {**dict.fromkeys(DELTA_RULE_KINDS, CONFIG), "mamba2": {**CONFIG, "d_state": 4}}


def make_lm(kind, *, dtype=torch.float64, seed=0, depth=2, **overrides):
    torch.manual_seed(seed)
    return build_lm(kind, vocab_size=VOCAB, dim=DIM, depth=depth, **{**CONFIGS[kind], **overrides}).to(dtype)


def test_the_kinds_are_registered_with_documented_defaults():
    assert set(KINDS) <= set(available_kinds())
    for kind in DELTA_RULE_KINDS:
        assert get_kind(kind).defaults == {"heads": 4, "chunk_size": 64, "conv_kernel": 4}
    rules = {kind: make_lm(kind, depth=1).blocks[0].mixer.rule for kind in DELTA_RULE_KINDS}
    assert rules == {"linear-attention": "linear", "deltanet": "delta", "gated-deltanet": "gated-delta"}
    defaults = {"heads": 4, "d_state": 64, "expand": 2, "chunk_size": 64, "conv_kernel": 4}
    assert get_kind("mamba2").defaults == defaults
    assert isinstance(make_lm("mamba2", depth=1).blocks[0].mixer, Mamba2Layer)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=6)
@given(t=st.integers(0, 12), seed=st.integers(0, 2**16))
def test_lm_is_causal(kind, t, seed):
    # perturbing the tokens after t never changes the logits at positions <= t
    lm = make_lm(kind)
    x = tokens(1, 14)
    changed = x.clone()
    changed[:, t + 1 :] = tokens(1, 13 - t, seed=seed + 1)
    torch.testing.assert_close(lm(changed)[0][:, : t + 1], lm(x)[0][:, : t + 1], rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "cuts", [[5], [2, 3, 9], list(range(1, 14))], ids=["one-cut", "three-cuts", "per-token"]
)
def test_streaming_equals_one_call_float32(kind, cuts):
    lm = make_lm(kind, dtype=torch.float32)
    x = tokens(2, 14)
    whole, _ = lm(x)
    bounds, state, parts = [0, *cuts, 14], None, []
    for lo, hi in itertools.pairwise(bounds):
        logits, state = lm(x[:, lo:hi], state)
        parts.append(logits)
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_state_size_does_not_grow_with_the_stream(kind):
    lm = make_lm(kind, dtype=torch.float32, depth=1)
    x = tokens(1, 50)
    sizes, state = [], None
    with torch.no_grad():
        for i in range(50):
            _, state = lm(x[:, i : i + 1], state)
            sizes.append(state_numel(state.layers))
    assert len(set(sizes)) == 1  # the matrix memory and the conv caches, from the first token on


@pytest.mark.parametrize("kind", KINDS)
def test_detached_state_continues_the_stream_identically(kind):
    lm = make_lm(kind, dtype=torch.float32, depth=1)
    x = tokens(1, 9)
    _, state = lm(x[:, :5])
    expected, _ = lm(x[:, 5:], state)
    detached = state.detach()
    got, _ = lm(x[:, 5:], detached)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert not any(t.requires_grad for t in tensors_in(detached.layers))
    assert state_numel(detached.layers) == state_numel(state.layers)


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_lm_overfits_a_fixed_batch(kind):
    # 2 x 24 random targets over 16 symbols: chance is ln 16 = 2.77 nats; we ask < 0.1 after 80 Adam steps
    # (measured over seeds 1-3: 0.06-0.23 at 40 steps, 0.04-0.13 at 60, 0.03-0.05 at 80; no attention here;
    # mamba2: 0.03 at 40 steps for seeds 1-3)
    lm = make_lm(kind, dtype=torch.float32, depth=1, seed=1)
    batch = tokens(2, 25, seed=3)
    optimiser = torch.optim.Adam(lm.parameters(), lr=3e-2)
    first = None
    for _ in range(80):
        loss = lm.loss(batch)
        first = loss.item() if first is None else first
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert first > 2.0
    assert lm.loss(batch).item() < 0.1


@pytest.mark.parametrize("kind", KINDS)
def test_parameter_counts_by_hand(kind):
    d, h, kernel = DIM, CONFIG["heads"], 4
    conv = d * kernel + d + d * d + d  # depthwise taps + bias, pointwise weight + bias
    block = 3 * d * d + 3 * conv + d + (d * d + d) + d * d  # W_Q,K,V, convs, RMSNorm, gate (bias), W_O
    gates = {"linear-attention": 0, "deltanet": d * h + h, "gated-deltanet": 2 * (d * h + h)}
    e, n = 2 * d, CONFIGS["mamba2"]["d_state"]  # Mamba2: inner width expand * d, state size N
    mamba2 = d * (2 * e + 2 * n + h) + (e + 2 * n) * (kernel + 1) + 3 * h + e + e * d
    # W_in (z, x, B, C, Δ), depthwise conv on x, B, C (taps + bias), Δ bias, A_log, D, gated RMSNorm, W_out
    mixer = mamba2 if kind == "mamba2" else block + gates[kind]
    counts = count_parameters(make_lm(kind, depth=2))
    assert counts["mixer"] == 2 * mixer
    per_block = mixer + 3 * d * 4 * d + 2 * d  # mixer + SwiGLU (gate, up, down) + two RMSNorms
    assert counts["total"] == 2 * VOCAB * d + 2 * per_block + d  # embedding, untied head, final RMSNorm


def test_builder_rejects_unknown_keys_and_passes_impl():
    with pytest.raises(TypeError, match="unknown config keys for kind 'deltanet': memory_heads"):
        build_lm("deltanet", vocab_size=VOCAB, dim=DIM, depth=1, memory_heads=2)
    lm = build_lm("gated-deltanet", vocab_size=VOCAB, dim=DIM, depth=1, heads=2, impl="reference")
    mixer = lm.blocks[0].mixer
    assert isinstance(mixer, DeltaRuleLayer) and mixer.impl == "reference" and mixer.heads == 2
    with pytest.raises(TypeError, match="unknown config keys for kind 'mamba2': rule"):
        build_lm("mamba2", vocab_size=VOCAB, dim=DIM, depth=1, rule="delta")
    config = {"heads": 8, "d_state": 5, "expand": 3, "chunk_size": 7, "conv_kernel": 2, "impl": "reference"}
    mixer = build_lm("mamba2", vocab_size=VOCAB, dim=DIM, depth=1, **config).blocks[0].mixer
    assert isinstance(mixer, Mamba2Layer)
    got = (mixer.heads, mixer.d_state, mixer.inner, mixer.chunk_size, mixer.conv.kernel_size, mixer.impl)
    assert got == (8, 5, 3 * DIM, 7, 2, "reference")
