"""The Titans LM kinds (titans/models.py): each builder makes its architecture with the documented defaults.

The expected defaults are the table of the module's docstring (heads 4, N_p 4, C 64, window 64, memory depth
2, chunk 16, one memory head), written out here, not read from the code.
"""

import pytest

from neural_memory.models.registry import build_mixer, get_kind
from neural_memory.titans.mac import MemoryAsContext
from neural_memory.titans.mag import MemoryAsGate
from neural_memory.titans.mal import LongTermMemoryLayer, MemoryAsLayer
from neural_memory.titans.models import build_lmm, build_mac, build_mag, build_mal, memory_kwargs

DOC_MEMORY = {"memory_depth": 2, "memory_chunk_size": 16, "memory_heads": 1}
DOC_DEFAULTS = {
    "titans-mac": {"heads": 4, "n_persistent": 4, "segment_len": 64, **DOC_MEMORY},
    "titans-mag": {"heads": 4, "n_persistent": 4, "window": 64, **DOC_MEMORY},
    "titans-mal": {"heads": 4, "n_persistent": 4, "window": 64, **DOC_MEMORY},
    "titans-lmm": {"n_persistent": 4, **DOC_MEMORY},
}


def memory_of(mixer):
    return mixer.layer.memory if isinstance(mixer, MemoryAsLayer) else mixer.memory


def described(mixer) -> dict:
    """What a mixer was built with, read from the modules it holds."""
    memory = memory_of(mixer)
    out = {
        "memory_depth": memory.memory.depth,
        "memory_chunk_size": memory.chunk_size,
        "memory_heads": memory.memory.heads,
    }
    if isinstance(mixer, MemoryAsContext):
        out |= {"heads": mixer.attention.heads, "n_persistent": mixer.persistent.n_persistent}
        out["segment_len"] = mixer.segment_len
    elif isinstance(mixer, MemoryAsGate):
        out |= {"heads": mixer.attention.proj.heads, "n_persistent": mixer.persistent.n_persistent}
        out["window"] = mixer.attention.window
    elif isinstance(mixer, MemoryAsLayer):
        out |= {"heads": mixer.attention.proj.heads, "n_persistent": mixer.layer.persistent.n_persistent}
        out["window"] = mixer.attention.window
    else:
        out["n_persistent"] = mixer.persistent.n_persistent
    return out


BUILDERS = {
    "titans-mac": (build_mac, MemoryAsContext),
    "titans-mag": (build_mag, MemoryAsGate),
    "titans-mal": (build_mal, MemoryAsLayer),
    "titans-lmm": (build_lmm, LongTermMemoryLayer),
}


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_builders_default_to_the_documented_sizes(kind):
    builder, cls = BUILDERS[kind]
    mixer = builder(dim=16, layer_index=0)
    assert type(mixer) is cls
    assert described(mixer) == DOC_DEFAULTS[kind]


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_registered_kinds_carry_the_documented_defaults(kind):
    assert dict(get_kind(kind).defaults) == DOC_DEFAULTS[kind]
    assert described(build_mixer(kind, dim=16, layer_index=0)) == DOC_DEFAULTS[kind]
    assert get_kind(kind).description.startswith("Titans")


OTHER = {"memory_depth": 1, "memory_chunk_size": 4, "memory_heads": 2, "n_persistent": 3}
OTHER_BY_KIND = {
    "titans-mac": {"heads": 2, "segment_len": 8, **OTHER},
    "titans-mag": {"heads": 2, "window": 8, **OTHER},
    "titans-mal": {"heads": 2, "window": 8, **OTHER},
    "titans-lmm": OTHER,
}


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_builders_pass_every_setting_on(kind):
    builder, _ = BUILDERS[kind]
    config = OTHER_BY_KIND[kind]
    mixer = builder(dim=16, layer_index=0, **config, memory={"theta_max": 0.05})
    assert described(mixer) == config
    assert memory_of(mixer).gates.theta_max == 0.05


def test_mac_without_memory():
    assert build_mac(dim=16, layer_index=0, use_memory=False).memory is None
    assert build_mac(dim=16, layer_index=0).use_memory is True


def test_memory_kwargs_merges_the_flat_keys_and_the_dict():
    assert memory_kwargs(3, 8, 2, None) == {"depth": 3, "chunk_size": 8, "heads": 2}
    assert memory_kwargs(3, 8, 2, {"read": "chunk"}) == {
        "depth": 3,
        "chunk_size": 8,
        "heads": 2,
        "read": "chunk",
    }


def test_memory_kwargs_refuses_a_non_dict_and_clashing_keys():
    with pytest.raises(
        TypeError, match=r"memory must be a dict of NeuralMemory keyword arguments or None, got list"
    ):
        memory_kwargs(2, 16, 1, [("depth", 3)])
    with pytest.raises(
        ValueError, match=r"set chunk_size, depth with the memory_\* keys, not inside memory="
    ):
        memory_kwargs(2, 16, 1, {"depth": 3, "chunk_size": 4, "read": "token"})
