"""The MIRAS baseline LM kinds (miras/baseline_models.py): linear-attention, deltanet, gated-deltanet, mamba2.

Each builder makes its block with the defaults of the module docstring's tables (DeltaRuleLayer: 4 heads,
chunk 64, conv kernel 4, chunked; Mamba2Layer: 4 heads, d_state 64, expand 2, chunk 64, conv kernel 4,
chunked), written out here, not read from the code, with its rule (linear / delta / gated-delta); every
override reaches the block; bad keys and values raise; the registry holds their defaults and
descriptions.
"""

import pytest

from neural_memory.miras.baseline_models import (
    build_deltanet,
    build_gated_deltanet,
    build_linear_attention,
    build_mamba2,
)
from neural_memory.miras.baselines import DeltaRuleLayer
from neural_memory.miras.mamba2 import Mamba2Layer
from neural_memory.models.registry import build_mixer, get_kind

DIM = 8
DELTA = {
    "linear-attention": build_linear_attention,
    "deltanet": build_deltanet,
    "gated-deltanet": build_gated_deltanet,
}
RULE = {"linear-attention": "linear", "deltanet": "delta", "gated-deltanet": "gated-delta"}
DOC_DELTA = {"heads": 4, "chunk_size": 64, "conv_kernel": 4, "impl": "chunked"}
DOC_MAMBA2 = {"heads": 4, "d_state": 64, "expand": 2, "chunk_size": 64, "conv_kernel": 4, "impl": "chunked"}


def described_delta(layer, kind: str) -> dict:
    """What a DeltaRuleLayer was built with, read from its attributes and submodules."""
    assert type(layer) is DeltaRuleLayer
    assert layer.dim == DIM and layer.rule == RULE[kind]
    # the rule's gates: beta for the delta rules, alpha (decay) for Gated DeltaNet only (MIRAS Eq. 8-9)
    assert (layer.to_beta is None) == (kind == "linear-attention")
    assert (layer.to_decay is None) == (kind != "gated-deltanet")
    kernels = {name: conv.kernel_size for name, conv in layer.convs.items()}
    kernel = kernels.get("q", 0)
    assert kernels == ({name: kernel for name in "qkv"} if kernel else {})
    return {"heads": layer.heads, "chunk_size": layer.chunk_size, "conv_kernel": kernel, "impl": layer.impl}


def described_mamba2(layer) -> dict:
    """What a Mamba2Layer was built with, read from its attributes and submodules."""
    assert type(layer) is Mamba2Layer
    assert layer.dim == DIM and layer.out_proj.out_features == DIM
    expand, rest = divmod(layer.inner, DIM)
    assert rest == 0
    return {
        "heads": layer.heads,
        "d_state": layer.d_state,
        "expand": expand,
        "chunk_size": layer.chunk_size,
        "conv_kernel": 0 if layer.conv is None else layer.conv.kernel_size,
        "impl": layer.impl,
    }


@pytest.mark.parametrize("kind", sorted(DELTA))
def test_delta_rule_builders_default_to_the_documented_sizes(kind):
    for layer_index in (0, 1, 2):
        layer = DELTA[kind](dim=DIM, layer_index=layer_index)
        assert described_delta(layer, kind) == DOC_DELTA
        assert layer.head_dim == 2  # dim 8 / 4 heads


@pytest.mark.parametrize("kind", sorted(DELTA))
def test_delta_rule_builders_pass_every_setting_on(kind):
    config = {"heads": 2, "chunk_size": 5, "conv_kernel": 2, "impl": "reference"}
    assert described_delta(DELTA[kind](dim=DIM, layer_index=0, **config), kind) == config
    for key, value in config.items():  # each key alone, the others at their defaults
        assert described_delta(DELTA[kind](dim=DIM, layer_index=0, **{key: value}), kind) == DOC_DELTA | {
            key: value
        }
    assert described_delta(DELTA[kind](dim=DIM, layer_index=0, conv_kernel=0), kind)["conv_kernel"] == 0


def test_mamba2_builder_defaults_to_the_documented_sizes():
    for layer_index in (0, 1, 2):
        layer = build_mamba2(dim=DIM, layer_index=layer_index)
        assert described_mamba2(layer) == DOC_MAMBA2
        assert layer.head_dim == 4  # expand 2 * dim 8 / 4 heads
        assert layer.in_proj.out_features == 2 * 16 + 2 * 64 + 4  # z, x, B, C, dt


def test_mamba2_builder_passes_every_setting_on():
    config = {"heads": 8, "d_state": 5, "expand": 3, "chunk_size": 7, "conv_kernel": 2, "impl": "reference"}
    assert described_mamba2(build_mamba2(dim=DIM, layer_index=0, **config)) == config
    for key, value in config.items():  # each key alone, the others at their defaults
        assert described_mamba2(build_mamba2(dim=DIM, layer_index=0, **{key: value})) == DOC_MAMBA2 | {
            key: value
        }
    assert build_mamba2(dim=DIM, layer_index=0, conv_kernel=0).conv is None


@pytest.mark.parametrize("kind", sorted(DELTA))
def test_registered_delta_rule_kinds_carry_the_documented_defaults(kind):
    spec = get_kind(kind)
    assert spec.builder is DELTA[kind]
    assert dict(spec.defaults) == {"heads": 4, "chunk_size": 64, "conv_kernel": 4}
    assert spec.min_depth == 1
    assert described_delta(build_mixer(kind, dim=DIM, layer_index=0), kind) == DOC_DELTA


def test_registered_mamba2_kind_carries_the_documented_defaults():
    spec = get_kind("mamba2")
    assert spec.builder is build_mamba2
    assert dict(spec.defaults) == {"heads": 4, "d_state": 64, "expand": 2, "chunk_size": 64, "conv_kernel": 4}
    assert described_mamba2(build_mixer("mamba2", dim=DIM, layer_index=0)) == DOC_MAMBA2


def test_registered_descriptions():
    assert get_kind("linear-attention").description.startswith("linear attention: S += v k^T, o = S q")
    assert "MIRAS Eq. 8 with alpha = 1" in get_kind("linear-attention").description
    assert get_kind("deltanet").description.startswith("DeltaNet: delta rule with a learned write strength")
    assert "(MIRAS Eq. 9, alpha = 1)" in get_kind("deltanet").description
    assert get_kind("gated-deltanet").description.startswith("Gated DeltaNet: delta rule with beta_t and")
    assert "(MIRAS Eq. 9)" in get_kind("gated-deltanet").description
    assert get_kind("mamba2").description.startswith("Mamba2 (SSD) baseline")


@pytest.mark.parametrize("kind", sorted(DELTA))
def test_delta_rule_builders_refuse_bad_keys_and_values(kind):
    with pytest.raises(TypeError) as caught:
        build_mixer(kind, dim=DIM, layer_index=0, d_state=4)
    assert str(caught.value) == (
        f"unknown config keys for kind {kind!r}: d_state; "
        "accepted: chunk_size, conv_kernel, heads, impl, mlp_mult, tie_embeddings, embedding_std"
    )
    with pytest.raises(TypeError, match="unexpected keyword argument 'rule'"):
        DELTA[kind](dim=DIM, layer_index=0, rule="delta")
    with pytest.raises(ValueError) as caught:
        DELTA[kind](dim=DIM, layer_index=0, heads=3)
    assert str(caught.value) == "dim (8) must be divisible by heads (3)"
    with pytest.raises(ValueError) as caught:
        DELTA[kind](dim=DIM, layer_index=0, impl="fast")
    assert str(caught.value) == "impl must be one of ('chunked', 'reference'), got 'fast'"


def test_mamba2_builder_refuses_bad_keys_and_values():
    with pytest.raises(TypeError) as caught:
        build_mixer("mamba2", dim=DIM, layer_index=0, rule="delta")
    assert str(caught.value) == (
        "unknown config keys for kind 'mamba2': rule; "
        "accepted: chunk_size, conv_kernel, d_state, expand, heads, impl, "
        "mlp_mult, tie_embeddings, embedding_std"
    )
    with pytest.raises(ValueError) as caught:
        build_mamba2(dim=DIM, layer_index=0, heads=3)
    assert str(caught.value) == "expand * dim (16) must be divisible by heads (3)"
    with pytest.raises(ValueError) as caught:
        build_mamba2(dim=DIM, layer_index=0, impl="fast")
    assert str(caught.value) == "impl must be one of ('chunked', 'reference'), got 'fast'"
