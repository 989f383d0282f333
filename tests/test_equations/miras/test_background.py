"""MIRAS §2 background (Eq. 1–2): the Transformer's projections and causal softmax attention.

They are Titans Eq. 1–2 again, computed by ``neural_memory.common.attention``; these tests check the
MIRAS catalog's claims. Expectations are hand numbers and running means written out here.
"""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from neural_memory.common.attention import causal_softmax_attention, qkv_projection

F64 = torch.float64


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


def tensors(*shape: int, bound: float = 3.0):
    return arrays(np.float64, shape, elements=st.floats(-bound, bound)).map(torch.from_numpy)


# --------------------------------------------------------------------------------------------------
# Eq. 1 — Q = x W_Q, K = x W_K, V = x W_V
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("miras", 1)
def test_projections_have_n_rows_of_the_weight_width():
    x = _randn(5, 4)
    q, k, v = qkv_projection(x, _randn(4, 4, seed=1), _randn(4, 4, seed=2), _randn(4, 4, seed=3))
    assert q.shape == k.shape == v.shape == (5, 4)


@pytest.mark.equation("miras", 1)
def test_projections_multiply_tokens_on_the_right_by_hand():
    x = torch.tensor([[1.0, -1.0]], dtype=F64)
    w = torch.tensor([[2.0, 0.0], [1.0, 3.0]], dtype=F64)  # x W = [2 - 1, 0 - 3]
    q, k, v = qkv_projection(x, w, -w, torch.zeros(2, 2, dtype=F64))
    assert torch.equal(q, torch.tensor([[1.0, -3.0]], dtype=F64))
    assert torch.equal(k, torch.tensor([[-1.0, 3.0]], dtype=F64))
    assert torch.equal(v, torch.zeros(1, 2, dtype=F64))


@pytest.mark.equation("miras", 1)
@given(x1=tensors(3, 4), x2=tensors(3, 4), w=tensors(4, 4))
def test_projections_are_additive_in_x(x1, x2, w):
    both = qkv_projection(x1 + x2, w, 2 * w, -w)
    for out, o1, o2 in zip(
        both, qkv_projection(x1, w, 2 * w, -w), qkv_projection(x2, w, 2 * w, -w), strict=True
    ):
        torch.testing.assert_close(out, o1 + o2, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# Eq. 2 — causal softmax attention
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("miras", 2)
@given(q=tensors(4, 3), k=tensors(4, 3), v=tensors(4, 2))
def test_first_output_is_the_first_value(q, k, v):
    torch.testing.assert_close(causal_softmax_attention(q, k, v)[0], v[0], rtol=0, atol=1e-12)


@pytest.mark.equation("miras", 2)
def test_changing_a_later_token_leaves_earlier_outputs_unchanged():
    q, k, v = _randn(6, 3, seed=1), _randn(6, 3, seed=2), _randn(6, 2, seed=3)
    y = causal_softmax_attention(q, k, v)
    k2, v2 = k.clone(), v.clone()
    k2[4], v2[4] = _randn(3, seed=4), _randn(2, seed=5)
    y2 = causal_softmax_attention(q, k2, v2)
    assert torch.equal(y[:4], y2[:4])
    assert not torch.allclose(y[4], y2[4])


@pytest.mark.equation("miras", 2)
@given(k=tensors(5, 3), v=tensors(5, 2))
def test_zero_query_gives_the_running_mean_of_the_values(k, v):
    # q_i = 0: every score is 0, so the weights are uniform over tokens 1..i
    y = causal_softmax_attention(torch.zeros(5, 3, dtype=F64), k, v)
    running_mean = torch.stack([v[: i + 1].sum(0) / (i + 1) for i in range(5)])
    torch.testing.assert_close(y, running_mean, rtol=0, atol=1e-12)
