"""The Nested Learning LM kinds (nl/models.py): hope and hope-attention.

Each builder makes a HopeBlock with the defaults of the module docstring's table (CMS chunk sizes (64, 16),
CMS rate 1e-3 per level, main-memory chunk 16 with the other memories' chunk equal to it, 4 attention heads
for hope-attention), written out here, not read from the code: ``hope`` has the self-modifying Titans front
end, ``hope-attention`` causal softmax attention with RoPE; every override and the ``hope`` dict reach the
block; bad keys and values raise; the registry carries the kinds' defaults and descriptions.
"""

import pytest

from neural_memory.models.registry import build_mixer, get_kind
from neural_memory.models.transformer import CausalSelfAttention
from neural_memory.nl.hope import HopeBlock
from neural_memory.nl.models import build_hope, build_hope_attention
from neural_memory.nl.self_modifying import SelfModifyingTitans

DIM = 8
DOC_HOPE = {"cms_chunk_sizes": (64, 16), "cms_rates": (1e-3, 1e-3), "chunk_size": 16, "other_chunk_size": 16}
DOC_ATTENTION = {"cms_chunk_sizes": (64, 16), "cms_rates": (1e-3, 1e-3), "heads": 4}


def described_hope(block) -> dict:
    """What a Hope block was built with, read from its submodules."""
    assert type(block) is HopeBlock and block.attention is False
    assert block.dim == DIM and type(block.front) is SelfModifyingTitans
    return {
        "cms_chunk_sizes": block.cms.chunk_sizes,
        "cms_rates": block.cms.rates,
        "chunk_size": block.front.chunk_size,
        "other_chunk_size": block.front.other_chunk_size,
    }


def described_attention(block) -> dict:
    """What a Hope-Attention block was built with, read from its submodules."""
    assert type(block) is HopeBlock and block.attention is True
    assert block.dim == DIM and block.conv is None
    front = block.front
    assert type(front) is CausalSelfAttention and front.rope is True and front.window is None
    return {"cms_chunk_sizes": block.cms.chunk_sizes, "cms_rates": block.cms.rates, "heads": front.heads}


def test_hope_builder_defaults_to_the_documented_sizes():
    for layer_index in (0, 1, 2):
        block = build_hope(dim=DIM, layer_index=layer_index)
        assert described_hope(block) == DOC_HOPE
        # HopeBlock's own defaults: CMS hidden 4 * dim, memory hidden dim, convolution kernel 4 (N-U16)
        assert block.cms.hidden == 32 and block.front.hidden == 8 and block.conv.kernel_size == 4


def test_hope_builder_passes_every_setting_on():
    config = {"cms_chunk_sizes": (4, 2), "cms_rates": (0.5, 0.25), "chunk_size": 4, "other_chunk_size": 8}
    assert described_hope(build_hope(dim=DIM, layer_index=0, **config)) == config
    for key, value in config.items():  # each key alone, the others at their defaults
        if key == "chunk_size":  # other_chunk_size follows chunk_size when unset
            expected = DOC_HOPE | {"chunk_size": 4, "other_chunk_size": 4}
        else:
            expected = DOC_HOPE | {key: value}
        assert described_hope(build_hope(dim=DIM, layer_index=0, **{key: value})) == expected
    # one rate for every level; a list of chunk sizes
    got = described_hope(build_hope(dim=DIM, layer_index=0, cms_rates=0.005, cms_chunk_sizes=[8, 4, 2]))
    assert got["cms_rates"] == (0.005, 0.005, 0.005) and got["cms_chunk_sizes"] == (8, 4, 2)


def test_hope_builder_passes_the_hope_dict_on():
    block = build_hope(dim=DIM, layer_index=0, hope={"conv_kernel": 2, "cms_hidden": 12, "memory_hidden": 6})
    assert block.conv.kernel_size == 2 and block.cms.hidden == 12 and block.front.hidden == 6
    assert described_hope(block) == DOC_HOPE
    assert build_hope(dim=DIM, layer_index=0, hope={"conv_kernel": 0}).conv is None
    assert build_hope(dim=DIM, layer_index=0, hope={}).conv.kernel_size == 4


def test_hope_attention_builder_defaults_to_the_documented_sizes():
    for layer_index in (0, 1, 2):
        block = build_hope_attention(dim=DIM, layer_index=layer_index)
        assert described_attention(block) == DOC_ATTENTION
        assert block.cms.hidden == 32


def test_hope_attention_builder_passes_every_setting_on():
    config = {"cms_chunk_sizes": (4, 2), "cms_rates": (0.5, 0.25), "heads": 2}
    assert described_attention(build_hope_attention(dim=DIM, layer_index=0, **config)) == config
    for key, value in config.items():  # each key alone, the others at their defaults
        block = build_hope_attention(dim=DIM, layer_index=0, **{key: value})
        assert described_attention(block) == DOC_ATTENTION | {key: value}
    block = build_hope_attention(dim=DIM, layer_index=0, hope={"cms_hidden": 12})
    assert block.cms.hidden == 12 and described_attention(block) == DOC_ATTENTION
    assert build_hope_attention(dim=DIM, layer_index=0, hope={}).cms.hidden == 32


def test_registered_kinds_carry_the_documented_defaults():
    hope, attention = get_kind("hope"), get_kind("hope-attention")
    assert hope.builder is build_hope and attention.builder is build_hope_attention
    assert dict(hope.defaults) == {"cms_chunk_sizes": (64, 16), "cms_rates": 1e-3, "chunk_size": 16}
    assert dict(attention.defaults) == {"cms_chunk_sizes": (64, 16), "cms_rates": 1e-3, "heads": 4}
    assert hope.min_depth == attention.min_depth == 1
    assert described_hope(build_mixer("hope", dim=DIM, layer_index=0)) == DOC_HOPE
    assert described_attention(build_mixer("hope-attention", dim=DIM, layer_index=0)) == DOC_ATTENTION
    assert hope.description.startswith("NL Hope: self-modifying Titans") and "(Eq. 94-97)" in hope.description
    assert attention.description.startswith("NL Hope-Attention: causal softmax attention + CMS chain")


def test_builder_names_and_docstrings():
    assert build_hope.__name__ == "build_hope" and "``hope``" in build_hope.__doc__
    assert build_hope_attention.__name__ == "build_hope_attention"
    assert "``hope-attention``" in build_hope_attention.__doc__


def test_hope_builder_refuses_bad_keys_and_values():
    with pytest.raises(TypeError) as caught:
        build_mixer("hope", dim=DIM, layer_index=0, heads=2)
    assert str(caught.value) == (
        "unknown config keys for kind 'hope': heads; accepted: chunk_size, cms_chunk_sizes, cms_rates, hope, "
        "other_chunk_size, mlp_mult, tie_embeddings, embedding_std"
    )
    # a key the builder sets itself is refused by name, not with Python's "multiple values" error
    with pytest.raises(ValueError) as caught:
        build_hope(dim=DIM, layer_index=0, hope={"chunk_size": 4, "conv_kernel": 2})
    assert str(caught.value) == (
        "set chunk_size with the builder's own keys, not inside hope={'chunk_size': 4, 'conv_kernel': 2}"
    )
    with pytest.raises(TypeError) as caught:
        build_hope(dim=DIM, layer_index=0, hope=[("conv_kernel", 2)])
    assert str(caught.value) == "hope must be a dict of HopeBlock keyword arguments or None, got list"
    with pytest.raises(TypeError, match="got an unexpected keyword argument 'bogus'"):
        build_hope(dim=DIM, layer_index=0, hope={"bogus": 4})
    with pytest.raises(ValueError) as caught:
        build_hope(dim=DIM, layer_index=0, chunk_size=4, other_chunk_size=6)
    assert str(caught.value) == "chunk_size (4) and other_chunk_size (6) must divide one another"
    with pytest.raises(ValueError) as caught:
        build_hope(dim=DIM, layer_index=0, cms_rates=(0.1, 0.2, 0.3))
    assert str(caught.value) == "rates must be a float or 2 floats (one per level), got (0.1, 0.2, 0.3)"


def test_hope_attention_builder_refuses_bad_keys_and_values():
    with pytest.raises(TypeError) as caught:
        build_mixer("hope-attention", dim=DIM, layer_index=0, chunk_size=4)
    assert str(caught.value) == (
        "unknown config keys for kind 'hope-attention': chunk_size; accepted: cms_chunk_sizes, cms_rates, "
        "heads, hope, mlp_mult, tie_embeddings, embedding_std"
    )
    with pytest.raises(ValueError) as caught:
        build_hope_attention(dim=DIM, layer_index=0, hope={"attention": False, "heads": 2})
    assert str(caught.value) == (
        "set attention, heads with the builder's own keys, not inside hope={'attention': False, 'heads': 2}"
    )
    with pytest.raises(ValueError) as caught:
        build_hope_attention(dim=DIM, layer_index=0, heads=3)
    assert str(caught.value) == "heads must divide dim, got dim=8, heads=3"


@pytest.mark.parametrize(
    ("builder", "taken"),
    [
        (build_hope, ("cms_chunk_sizes", "cms_rates", "chunk_size", "other_chunk_size")),
        (build_hope_attention, ("cms_chunk_sizes", "cms_rates", "attention", "heads")),
    ],
)
def test_each_key_the_builder_sets_is_refused_inside_hope(builder, taken):
    for key in taken:
        with pytest.raises(ValueError) as caught:
            builder(dim=DIM, layer_index=0, hope={key: 1})
        assert str(caught.value) == f"set {key} with the builder's own keys, not inside hope={{'{key}': 1}}"
