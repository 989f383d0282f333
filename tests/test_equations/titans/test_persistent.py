"""Titans Eq. 19 / 26 / 29: persistent memory tokens prepended to the sequence."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from neural_memory.titans.persistent import PersistentMemory

DT = torch.float64


def make(n_persistent=3, dim=4, seed=0):
    torch.manual_seed(seed)
    return PersistentMemory(n_persistent, dim, init_std=1.0).to(DT)


@pytest.mark.equation("titans", 19)
@pytest.mark.equation("titans", 26)
@pytest.mark.equation("titans", 29)
@given(
    n_persistent=st.integers(0, 4),
    batch=st.integers(1, 3),
    seq=st.integers(0, 5),
    seed=st.integers(0, 2**16),
)
def test_prepends_p_whatever_the_input(n_persistent, batch, seq, seed):
    module = make(n_persistent, dim=3)
    x = torch.randn(batch, seq, 3, dtype=DT, generator=torch.Generator().manual_seed(seed))
    out = module(x)
    assert out.shape == (batch, n_persistent + seq, 3)
    for b in range(batch):
        # first N_p rows are exactly P (input independent), the rest exactly x
        assert torch.equal(out[b, :n_persistent], module.tokens.detach())
        assert torch.equal(out[b, n_persistent:], x[b])


@pytest.mark.equation("titans", 19)
def test_p_receives_outer_loop_gradients_by_hand():
    # loss = sum(c * [P || x]) => dL/dP = sum_b c[b, :N_p] (hand derivation: the prefix is a copy of P)
    module = make(n_persistent=2, dim=3)
    x = torch.randn(4, 5, 3, dtype=DT)
    c = torch.randn(4, 7, 3, dtype=DT)
    (module(x) * c).sum().backward()
    torch.testing.assert_close(module.tokens.grad, c[:, :2].sum(0), rtol=0, atol=1e-12)


@pytest.mark.equation("titans", 19)
def test_zero_tokens_is_the_identity():
    module = make(n_persistent=0)
    x = torch.randn(2, 5, 4, dtype=DT)
    assert torch.equal(module(x), x)


def test_expand_is_a_view_of_p_per_sequence():
    module = make()
    expanded = module.expand(3)
    assert expanded.shape == (3, 3, 4)
    assert all(torch.equal(expanded[b], module.tokens) for b in range(3))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_persistent": -1, "dim": 4}, ValueError, "n_persistent must be an int >= 0"),
        ({"n_persistent": 2.0, "dim": 4}, TypeError, "n_persistent must be an int"),
        ({"n_persistent": 2, "dim": 0}, ValueError, "dim must be an int >= 1"),
        ({"n_persistent": 2, "dim": 4, "init_std": -1.0}, ValueError, "init_std must be a number >= 0"),
    ],
)
def test_bad_construction_raises(kwargs, error, match):
    with pytest.raises(error, match=match):
        PersistentMemory(**kwargs)


def test_bad_input_raises():
    module = make()
    with pytest.raises(ValueError, match=r"x must have shape \(batch, seq, 4\)"):
        module(torch.randn(2, 5, 3, dtype=DT))
    with pytest.raises(TypeError, match=r"^x must be a torch\.Tensor of shape \(batch, seq, 4\), got list$"):
        module([[1.0]])
    with pytest.raises(TypeError, match="floating-point"):
        module(torch.ones(1, 2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        module.expand(0)


@pytest.mark.equation("titans", 19)
@pytest.mark.parametrize("init_std", [0.02, 0.5])
def test_tokens_start_normal_with_the_requested_std(init_std):
    torch.manual_seed(0)
    kwargs = {} if init_std == 0.02 else {"init_std": init_std}  # 0.02 is the default
    tokens = PersistentMemory(64, 64, **kwargs).tokens.detach()  # 4096 draws: std within 5 %
    assert abs(tokens.std().item() / init_std - 1) < 0.05 and abs(tokens.mean().item()) < 0.1 * init_std
    assert torch.count_nonzero(PersistentMemory(4, 8, init_std=0).tokens) == 0  # 0 is allowed: zeros


@pytest.mark.equation("titans", 19)
def test_the_prefix_takes_the_inputs_dtype():
    memory = PersistentMemory(2, 4)
    x = torch.randn(3, 5, 4).to(torch.bfloat16)
    out = memory(x)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out[:, :2], memory.tokens.detach().to(torch.bfloat16).expand(3, -1, -1))


def test_the_prefix_moves_to_the_inputs_device():
    """A module on the CPU fed tokens elsewhere (``meta`` standing in for CUDA) prepends P there."""
    memory = PersistentMemory(2, 4)
    out = memory(torch.randn(3, 5, 4, device="meta"))
    assert out.device.type == "meta" and out.shape == (3, 7, 4)
