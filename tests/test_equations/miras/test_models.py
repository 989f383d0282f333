"""The MIRAS LM kinds (miras/models.py): moneta, yaad, memora and their Samba-style "-H" hybrids.

Each builder makes its preset (Moneta: l_p bias p=3 + l_q retention q=4; Yaad: Huber-type bias + weight decay;
Memora: l2 bias of scale 1/2 + KL retention) with the sizes of the module docstring's table (memory depth 2,
chunk 16, 4 memory heads; the hybrids' attention: 4 heads, window 64), written out here, not read from the
code; the overrides and the ``memory`` dict reach the memory; bad keys raise; the hybrids put the MIRAS
memory at even layers and sliding-window attention with RoPE at odd ones; the registry holds
their defaults and descriptions.
"""

import pytest

from neural_memory.miras.attentional_bias import L2Bias, LpBias, YaadBias
from neural_memory.miras.memory import MirasMemory
from neural_memory.miras.models import (
    build_memora,
    build_memora_h,
    build_moneta,
    build_moneta_h,
    build_yaad,
    build_yaad_h,
)
from neural_memory.miras.retention import KLSoftmax, LqNormalization, WeightDecay
from neural_memory.models.registry import build_mixer, get_kind
from neural_memory.models.transformer import CausalSelfAttention

DIM = 8
DOC_MEMORY = {"memory_depth": 2, "memory_chunk_size": 16, "memory_heads": 4}
DOC_ATTENTION = {"heads": 4, "window": 64}
PLAIN = {"moneta": build_moneta, "yaad": build_yaad, "memora": build_memora}
HYBRID = {"moneta-h": build_moneta_h, "yaad-h": build_yaad_h, "memora-h": build_memora_h}
PRESET = {"moneta": "moneta", "yaad": "yaad", "memora": "memora"} | {f"{k}-h": k for k in PLAIN}


def described(memory) -> dict:
    """The sizes a MIRAS memory was built with, read from the modules it holds."""
    assert type(memory) is MirasMemory
    return {
        "memory_depth": memory.memory.depth,
        "memory_chunk_size": memory.chunk_size,
        "memory_heads": memory.memory.heads,
    }


def check_preset(memory, preset: str) -> None:
    """The attentional bias and retention of the preset (MIRAS Eq. 24-27), and plain GD (§5.3)."""
    assert memory.algorithm == "gd"
    if preset == "moneta":  # Eq. 24-25: l_p bias with p = 3, l_q retention with q = 4
        assert type(memory.bias) is LpBias and memory.bias.p == 3.0
        assert type(memory.retention) is LqNormalization and memory.retention.q == 4.0
    elif preset == "yaad":  # Eq. 26: Huber-type bias, weight decay
        assert type(memory.bias) is YaadBias and type(memory.retention) is WeightDecay
    else:  # Eq. 27: l2 bias 1/2 ||.||^2, KL retention
        assert type(memory.bias) is L2Bias and memory.bias.scale == 0.5
        assert type(memory.retention) is KLSoftmax


def attention_of(mixer) -> dict:
    assert type(mixer) is CausalSelfAttention
    assert mixer.rope is True
    return {"heads": mixer.heads, "window": mixer.window}


@pytest.mark.parametrize("kind", sorted(PLAIN))
def test_plain_builders_default_to_the_documented_sizes_and_preset(kind):
    memory = PLAIN[kind](dim=DIM, layer_index=0)
    assert described(memory) == DOC_MEMORY
    assert memory.dim == DIM
    check_preset(memory, kind)


@pytest.mark.parametrize("kind", sorted(PLAIN))
def test_plain_builders_build_the_same_block_at_every_layer(kind):
    for layer_index in (1, 2, 3):
        memory = PLAIN[kind](dim=DIM, layer_index=layer_index)
        assert described(memory) == DOC_MEMORY
        check_preset(memory, kind)


@pytest.mark.parametrize("kind", sorted(PLAIN))
def test_plain_builders_pass_every_setting_on(kind):
    config = {"memory_depth": 1, "memory_chunk_size": 4, "memory_heads": 2}
    memory = PLAIN[kind](dim=DIM, layer_index=0, **config, memory={"theta_max": 0.05})
    assert described(memory) == config
    assert memory.gates.theta_max == 0.05
    check_preset(memory, kind)
    # each size alone, the others at their defaults
    for key, value in config.items():
        assert described(PLAIN[kind](dim=DIM, layer_index=0, **{key: value})) == DOC_MEMORY | {key: value}


@pytest.mark.parametrize("kind", sorted(HYBRID))
def test_hybrids_alternate_the_miras_memory_and_sliding_window_attention(kind):
    # MIRAS M-U33 (Samba order): layer 0, 2, 4 the MIRAS memory, layer 1, 3, 5 sliding-window attention
    for layer_index in range(6):
        mixer = HYBRID[kind](dim=DIM, layer_index=layer_index)
        if layer_index % 2 == 0:
            assert described(mixer) == DOC_MEMORY
            check_preset(mixer, PRESET[kind])
        else:
            assert attention_of(mixer) == DOC_ATTENTION
            assert mixer.dim == DIM


@pytest.mark.parametrize("kind", sorted(HYBRID))
def test_hybrids_pass_every_setting_on(kind):
    sizes = {"memory_depth": 1, "memory_chunk_size": 4, "memory_heads": 2}
    attention = {"heads": 2, "window": 8}
    config = {**sizes, **attention, "memory": {"theta_max": 0.05}}
    for layer_index in (0, 2):
        memory = HYBRID[kind](dim=DIM, layer_index=layer_index, **config)
        assert described(memory) == sizes
        assert memory.gates.theta_max == 0.05
        check_preset(memory, PRESET[kind])
    for layer_index in (1, 3):
        assert attention_of(HYBRID[kind](dim=DIM, layer_index=layer_index, **config)) == attention
    # each key alone, the others at their defaults
    for key, value in sizes.items():
        got = described(HYBRID[kind](dim=DIM, layer_index=0, **{key: value}))
        assert got == DOC_MEMORY | {key: value}
    for key, value in attention.items():
        assert attention_of(HYBRID[kind](dim=DIM, layer_index=1, **{key: value})) == DOC_ATTENTION | {
            key: value
        }


@pytest.mark.parametrize("kind", sorted(PLAIN | HYBRID))
def test_registered_kinds_carry_the_documented_defaults(kind):
    spec = get_kind(kind)
    assert spec.builder is (PLAIN | HYBRID)[kind]
    expected = DOC_MEMORY | (DOC_ATTENTION if kind in HYBRID else {})
    assert dict(spec.defaults) == expected
    assert spec.min_depth == (2 if kind in HYBRID else 1)
    memory = build_mixer(kind, dim=DIM, layer_index=0)
    assert described(memory) == DOC_MEMORY
    check_preset(memory, PRESET[kind])
    if kind in HYBRID:
        assert attention_of(build_mixer(kind, dim=DIM, layer_index=1)) == DOC_ATTENTION


def test_registered_descriptions():
    assert get_kind("moneta").description.startswith("MIRAS Moneta: l_p attentional bias (p=3)")
    assert "(Eq. 24-25)" in get_kind("moneta").description
    assert get_kind("yaad").description.startswith("MIRAS Yaad: Huber-type")
    assert "(Eq. 26)" in get_kind("yaad").description
    assert get_kind("memora").description.startswith("MIRAS Memora: l2 bias, KL retention")
    assert "(Eq. 27)" in get_kind("memora").description
    for name in ("Moneta", "Yaad", "Memora"):
        assert get_kind(f"{name.lower()}-h").description == (
            f"MIRAS {name}-H: its memory and sliding-window attention in alternating layers "
            "(Samba-style, M-U33)"
        )


@pytest.mark.parametrize("kind", sorted(PLAIN | HYBRID))
def test_bad_keys_raise(kind):
    builder = (PLAIN | HYBRID)[kind]
    with pytest.raises(ValueError) as caught:
        builder(dim=DIM, layer_index=0, memory={"depth": 3, "read": "token"})
    assert (
        str(caught.value)
        == "set depth with the memory_* keys, not inside memory={'depth': 3, 'read': 'token'}"
    )
    with pytest.raises(TypeError) as caught:
        builder(dim=DIM, layer_index=0, memory=[("read", "token")])
    assert str(caught.value) == "memory must be a dict of NeuralMemory keyword arguments or None, got list"
    with pytest.raises(TypeError, match="unexpected keyword argument 'chunk_size'"):
        builder(dim=DIM, layer_index=0, chunk_size=4)
    accepted = "memory, memory_chunk_size, memory_depth, memory_heads"
    if kind in HYBRID:
        accepted = "heads, " + accepted + ", window"
    with pytest.raises(TypeError) as caught:
        build_mixer(kind, dim=DIM, layer_index=0, chunk_size=4)
    assert str(caught.value) == (
        f"unknown config keys for kind {kind!r}: chunk_size; "
        f"accepted: {accepted}, mlp_mult, tie_embeddings, embedding_std"
    )
    if kind not in HYBRID:
        with pytest.raises(TypeError, match="unexpected keyword argument 'window'"):
            builder(dim=DIM, layer_index=0, window=8)


@pytest.mark.parametrize("kind", sorted(HYBRID))
def test_hybrid_attention_layers_refuse_bad_sizes(kind):
    # heads must divide dim (CausalSelfAttention); the memory layers' heads are memory_heads
    with pytest.raises(ValueError) as caught:
        HYBRID[kind](dim=DIM, layer_index=1, heads=3)
    assert str(caught.value) == "heads must divide dim, got dim=8, heads=3"
    assert described(HYBRID[kind](dim=DIM, layer_index=0, heads=3)) == DOC_MEMORY
