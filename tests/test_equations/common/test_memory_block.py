"""The block around a sequence memory (Titans §4.4): projections, convolutions, heads, output norm and gate.

MemoryBlock is a helper, not a claim: the equation markers sit on the tests of the memories built on it
(``NeuralMemory``, ``DeltaRuleLayer``). These tests pin its parts one by one on a bare subclass, with
weights set by hand and expectations written out here (SiLU as ``x σ(x)``, RMSNorm as
``y / sqrt(mean(y²) + eps)``, heads as column blocks).
"""

from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

from neural_memory.common.conv import CausalDepthwiseSeparableConv
from neural_memory.common.memory_block import MemoryBlock

DT = torch.float64


@dataclass(frozen=True)
class State:
    """The least a subclass's state needs: the convolution caches by name."""

    conv: dict[str, torch.Tensor] = field(default_factory=dict)


class Block(MemoryBlock):
    def __init__(self, dim=4, heads=2, *, qk_norm=True, conv_kernel=0, output_norm=True, output_gate=True):
        super().__init__()
        self._init_projections(dim, heads, qk_norm=qk_norm, conv_kernel=conv_kernel)
        self._init_output(dim, output_norm=output_norm, output_gate=output_gate)


def silu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def identity_projections(block: Block) -> None:
    with torch.no_grad():
        for lin in (block.to_q, block.to_k, block.to_v):
            lin.weight.copy_(torch.eye(block.dim, dtype=DT))


# --------------------------------------------------------------------------------------------------
# construction
# --------------------------------------------------------------------------------------------------


def test_projections_are_bias_free_square_maps_with_a_convolution_each():
    block = Block(dim=6, heads=3, qk_norm=False, conv_kernel=4)
    assert (block.dim, block.heads, block.head_dim, block.qk_norm) == (6, 3, 2, False)
    for lin in (block.to_q, block.to_k, block.to_v):
        assert isinstance(lin, nn.Linear) and lin.weight.shape == (6, 6) and lin.bias is None
    assert sorted(block.convs) == ["k", "q", "v"]
    for conv in block.convs.values():
        assert isinstance(conv, CausalDepthwiseSeparableConv)
        assert (conv.channels, conv.kernel_size) == (6, 4)
    assert Block(qk_norm=True).qk_norm is True


def test_conv_kernel_zero_means_no_convolutions():
    assert len(Block(conv_kernel=0).convs) == 0
    assert len(Block(conv_kernel=1).convs) == 3  # kernel 1: a convolution with an empty cache


@pytest.mark.parametrize("output_norm", [True, False])
@pytest.mark.parametrize("output_gate", [True, False])
def test_output_parts(output_norm, output_gate):
    block = Block(dim=4, output_norm=output_norm, output_gate=output_gate)
    if output_norm:
        assert isinstance(block.out_norm, nn.RMSNorm) and block.out_norm.normalized_shape == (4,)
    else:
        assert isinstance(block.out_norm, nn.Identity)
    if output_gate:
        assert isinstance(block.to_gate, nn.Linear) and block.to_gate.weight.shape == (4, 4)
        assert block.to_gate.bias is not None and block.to_gate.bias.shape == (4,)
    else:
        assert block.to_gate is None
    assert block.to_out.weight.shape == (4, 4) and block.to_out.bias is None


def test_empty_conv_caches_by_name_with_dtype_and_device():
    caches = Block(dim=4, conv_kernel=3).empty_conv_caches(2, device="meta", dtype=torch.bfloat16)
    assert sorted(caches) == ["k", "q", "v"]
    for cache in caches.values():
        assert (cache.shape, cache.dtype, cache.device.type) == ((2, 2, 4), torch.bfloat16, "meta")
    assert Block(conv_kernel=0).empty_conv_caches(2) == {}


# --------------------------------------------------------------------------------------------------
# heads
# --------------------------------------------------------------------------------------------------


def test_split_heads_by_hand():
    # 2 examples, 2 tokens, dim 4 = 2 heads of 2: head h is columns 2h, 2h + 1; rows are (example, head)
    block = Block(dim=4, heads=2)
    t = torch.arange(16, dtype=DT).reshape(2, 2, 4)
    expected = torch.tensor(
        [
            [[0, 1], [4, 5]],  # example 0, head 0
            [[2, 3], [6, 7]],  # example 0, head 1
            [[8, 9], [12, 13]],  # example 1, head 0
            [[10, 11], [14, 15]],  # example 1, head 1
        ],
        dtype=DT,
    )
    assert torch.equal(block._split_heads(t), expected)
    assert torch.equal(block._merge_heads(expected, 2), t)


# --------------------------------------------------------------------------------------------------
# projections
# --------------------------------------------------------------------------------------------------


def _x() -> torch.Tensor:
    return torch.tensor([[[3.0, 4.0, -1.0, 2.0], [0.5, -2.0, 1.0, 1.0]]], dtype=DT)  # (1, 2, 4)


@pytest.mark.parametrize("name", ["q", "k", "v"])
def test_project_is_silu_then_heads_and_l2_norm_for_queries_and_keys(name):
    block = Block(dim=4, heads=2, qk_norm=True).to(DT)
    identity_projections(block)
    x = _x()
    heads, caches = block._project(name, x, State())
    expected = block._split_heads(silu(x))  # split checked by hand above
    if name in "qk":
        expected = expected / expected.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(heads, expected, rtol=0, atol=1e-14)
    assert caches == {}


def test_project_without_qk_norm_leaves_queries_and_keys_unnormalised():
    block = Block(dim=4, heads=2, qk_norm=False).to(DT)
    identity_projections(block)
    for name in "qk":
        heads, _ = block._project(name, _x(), State())
        torch.testing.assert_close(heads, block._split_heads(silu(_x())), rtol=0, atol=1e-14)


def test_project_uses_its_own_weight():
    block = Block(dim=4, heads=2, qk_norm=False).to(DT)
    with torch.no_grad():
        block.to_q.weight.copy_(torch.eye(4, dtype=DT))
        block.to_k.weight.copy_(2 * torch.eye(4, dtype=DT))
        block.to_v.weight.copy_(3 * torch.eye(4, dtype=DT))
    x = _x()
    for name, scale in (("q", 1), ("k", 2), ("v", 3)):
        heads, _ = block._project(name, x, State())
        torch.testing.assert_close(heads, block._split_heads(silu(scale * x)), rtol=0, atol=1e-14)


def test_project_runs_the_convolution_and_advances_only_its_cache():
    block = Block(dim=4, heads=2, qk_norm=False, conv_kernel=2).to(DT)
    identity_projections(block)
    x = _x()
    old = {name: torch.full((1, 1, 4), float(i), dtype=DT) for i, name in enumerate("qkv")}
    state = State(conv=dict(old))
    heads, caches = block._project("k", x, state)
    conv_out, conv_cache = block.convs["k"](x, old["k"])
    torch.testing.assert_close(heads, block._split_heads(silu(conv_out)), rtol=0, atol=1e-14)
    assert torch.equal(caches["k"], conv_cache) and torch.equal(caches["k"], x[:, -1:])  # last input
    assert caches["q"] is old["q"] and caches["v"] is old["v"]
    assert state.conv["k"] is old["k"]  # the state passed in is not modified


def test_project_all_keeps_the_order_and_advances_every_cache():
    block = Block(dim=4, heads=2, qk_norm=False, conv_kernel=3).to(DT)
    identity_projections(block)
    with torch.no_grad():
        block.to_k.weight.mul_(2.0)
        block.to_v.weight.mul_(3.0)
    x = _x()
    state = State(conv=block.empty_conv_caches(1, dtype=DT))
    (k, v, q), new_state = block._project_all(x, state)
    for got, name in ((k, "k"), (v, "v"), (q, "q")):
        expected, _ = block._project(name, x, state)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert sorted(new_state.conv) == ["k", "q", "v"]
    for name, scale in (("q", 1.0), ("k", 2.0), ("v", 3.0)):
        torch.testing.assert_close(new_state.conv[name], scale * x, rtol=0, atol=0)  # the last 2 inputs
    (only_v,), partial = block._project_all(x, state, names="v")
    torch.testing.assert_close(only_v, v, rtol=0, atol=0)
    assert torch.equal(partial.conv["q"], state.conv["q"])
    assert torch.equal(partial.conv["v"], 3.0 * x)


# --------------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------------


def test_output_is_rmsnorm_times_silu_gate_then_w_o_by_hand():
    block = Block(dim=2, heads=1).to(DT)
    with torch.no_grad():
        block.to_gate.weight.copy_(torch.eye(2, dtype=DT))
        block.to_gate.bias.copy_(torch.tensor([1.0, -1.0], dtype=DT))
        block.to_out.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=DT))
    y = torch.tensor([[[3.0, 4.0]]], dtype=DT)  # (B * heads = 1, T = 1, head_dim = 2)
    x = torch.tensor([[[0.0, 2.0]]], dtype=DT)
    eps = torch.finfo(DT).eps
    normed = torch.tensor([3.0, 4.0], dtype=DT) / (12.5 + eps) ** 0.5  # mean of 9 and 16 is 12.5
    gate = silu(torch.tensor([1.0, 1.0], dtype=DT))  # x W_g + b_g = (0 + 1, 2 - 1)
    out = normed * gate
    expected = torch.stack([out[0], out[0] + out[1]])  # W_O rows (1, 0) and (1, 1)
    torch.testing.assert_close(block._output(y, x), expected.reshape(1, 1, 2), rtol=0, atol=1e-14)


def test_output_without_norm_and_gate_is_w_o_of_the_merged_heads():
    block = Block(dim=4, heads=2, output_norm=False, output_gate=False).to(DT)
    with torch.no_grad():
        block.to_out.weight.copy_(2 * torch.eye(4, dtype=DT))
    y = torch.arange(4, dtype=DT).reshape(2, 1, 2)  # heads (0, 1) and (2, 3) of one token
    expected = torch.tensor([[[0.0, 2.0, 4.0, 6.0]]], dtype=DT)
    torch.testing.assert_close(block._output(y, torch.zeros(1, 1, 4, dtype=DT)), expected, rtol=0, atol=0)
