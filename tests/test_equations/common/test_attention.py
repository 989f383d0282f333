"""Attention background of Titans §2.1 (Eq. 1–7) and §3.3 (Eq. 20).

Expectations are hand-derived numbers, explicit loops written here in the test (independent of the
implementation), or PyTorch's own ``scaled_dot_product_attention``.
"""

import math
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import neural_memory.common.attention as attention_module
from neural_memory.common.attention import (
    causal_softmax_attention,
    elu_plus_one,
    ffn_as_attention,
    linear_attention,
    linear_attention_recurrent,
    linear_memory_read,
    linear_memory_write,
    masked_attention,
    qkv_projection,
    run_recurrence,
    windowed_attention,
)
from neural_memory.common.masks import window_mask_from_positions

F64 = torch.float64


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


# --------------------------------------------------------------------------------------------------
# Eq. 1 — Q = x W_Q, K = x W_K, V = x W_V
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("titans", 1)
def test_qkv_projection_is_row_times_weight_by_hand():
    x = torch.tensor([[1.0, 2.0]], dtype=F64)
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=F64)  # x W = [1+6, 2+8]; W x would be [5, 11]
    q, k, v = qkv_projection(x, w, 2 * w, torch.eye(2, dtype=F64))
    assert torch.equal(q, torch.tensor([[7.0, 10.0]], dtype=F64))
    assert torch.equal(k, torch.tensor([[14.0, 20.0]], dtype=F64))
    assert torch.equal(v, x)


@pytest.mark.equation("titans", 1)
def test_qkv_projection_identity_weights_and_shapes():
    x = _randn(2, 3, 5, 4)
    eye = torch.eye(4, dtype=F64)
    q, k, v = qkv_projection(x, eye, eye, eye)
    assert torch.equal(q, x) and torch.equal(k, x) and torch.equal(v, x)
    q, k, v = qkv_projection(x, _randn(4, 6, seed=1), _randn(4, 6, seed=2), _randn(4, 3, seed=3))
    assert q.shape == (2, 3, 5, 6) and k.shape == (2, 3, 5, 6) and v.shape == (2, 3, 5, 3)


@pytest.mark.equation("titans", 1)
@given(a=st.floats(-3, 3), b=st.floats(-3, 3), seed=st.integers(0, 1000))
def test_qkv_projection_is_linear_in_x(a, b, seed):
    x1, x2 = _randn(3, 4, seed=seed), _randn(3, 4, seed=seed + 1)
    ws = [_randn(4, 4, seed=seed + i) for i in (2, 3, 4)]
    combined = qkv_projection(a * x1 + b * x2, *ws)
    for out, o1, o2 in zip(combined, qkv_projection(x1, *ws), qkv_projection(x2, *ws), strict=True):
        torch.testing.assert_close(out, a * o1 + b * o2, rtol=0, atol=1e-12)


def test_qkv_projection_rejects_bad_shapes():
    x = _randn(3, 4)
    good = _randn(4, 4)
    with pytest.raises(ValueError, match="w_k must be 2-D"):
        qkv_projection(x, good, _randn(4), good)
    with pytest.raises(ValueError, match=r"w_v must have shape \(d_in=4, d_out\)"):
        qkv_projection(x, good, good, _randn(3, 4))
    with pytest.raises(ValueError, match="x must have at least 2 dims"):
        qkv_projection(_randn(4), good, good, good)
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor"):
        qkv_projection([[1.0]], good, good, good)  # type: ignore[arg-type]


def test_qkv_projection_errors_name_the_weight():
    """Each weight check reports the weight by name, and a 0-d weight gets the "must be 2-D" message."""
    x, good = _randn(3, 4), _randn(4, 4)
    assert _message(lambda: qkv_projection(x, _randn(3, 4), good, good)) == (
        ValueError,
        "w_q must have shape (d_in=4, d_out), got (3, 4)",
    )
    assert _message(lambda: qkv_projection(x, good, [[1.0]], good)) == (
        TypeError,
        "w_k must be a torch.Tensor, got list",
    )
    assert _message(lambda: qkv_projection(x, torch.tensor(1.0, dtype=F64), good, good)) == (
        ValueError,
        "w_q must be 2-D (d_in, d_out), got shape ()",
    )


# --------------------------------------------------------------------------------------------------
# masked_attention (the softmax attention every Titans attention branch uses)
# --------------------------------------------------------------------------------------------------


def _reference_attention(q, k, v, mask, scale):
    """Slow, explicit per-row softmax; written independently of the implementation."""
    lq, lk = q.shape[-2], k.shape[-2]
    out = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    for i in range(lq):
        visible = [j for j in range(lk) if mask[i, j]]
        logits = torch.stack([(q[..., i, :] * k[..., j, :]).sum(-1) * scale for j in visible], dim=-1)
        weights = torch.exp(logits - logits.max(dim=-1, keepdim=True).values)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        out[..., i, :] = sum(weights[..., n, None] * v[..., j, :] for n, j in enumerate(visible))
    return out


def test_masked_attention_matches_explicit_loop_with_batch_and_heads():
    q, k, v = _randn(2, 3, 4, 5, seed=1), _randn(2, 3, 6, 5, seed=2), _randn(2, 3, 6, 2, seed=3)
    mask = torch.tensor(
        [[1, 0, 1, 0, 0, 1], [0, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1]], dtype=torch.bool
    )
    got = masked_attention(q, k, v, mask)
    assert got.shape == (2, 3, 4, 2) and got.dtype == F64
    torch.testing.assert_close(got, _reference_attention(q, k, v, mask, 1 / math.sqrt(5)), rtol=0, atol=1e-12)
    got_scaled = masked_attention(q, k, v, mask, scale=0.3)
    torch.testing.assert_close(got_scaled, _reference_attention(q, k, v, mask, 0.3), rtol=0, atol=1e-12)


def test_masked_attention_without_mask_sees_every_key():
    q, k, v = _randn(3, 4, seed=1), _randn(5, 4, seed=2), _randn(5, 2, seed=3)
    full = torch.ones(3, 5, dtype=torch.bool)
    torch.testing.assert_close(
        masked_attention(q, k, v), _reference_attention(q, k, v, full, 0.5), rtol=0, atol=1e-12
    )


def test_masked_attention_accepts_per_batch_masks():
    q, k, v = _randn(2, 3, 4, seed=1), _randn(2, 3, 4, seed=2), _randn(2, 3, 4, seed=3)
    masks = torch.tensor(
        [[[1, 0, 0], [1, 1, 0], [1, 1, 1]], [[1, 1, 1], [0, 1, 0], [0, 0, 1]]], dtype=torch.bool
    )
    got = masked_attention(q, k, v, masks)
    for b in range(2):
        torch.testing.assert_close(
            got[b], _reference_attention(q[b], k[b], v[b], masks[b], 0.5), rtol=0, atol=1e-12
        )


def test_masked_attention_rejects_rows_with_no_visible_key():
    q = k = v = _randn(3, 4)
    mask = torch.tensor([[1, 0, 0], [0, 0, 0], [1, 1, 1]], dtype=torch.bool)
    with pytest.raises(ValueError, match="no visible key"):
        masked_attention(q, k, v, mask)


def test_masked_attention_rejects_bad_inputs():
    q = k = v = _randn(3, 4)
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        masked_attention(q, k, v, torch.ones(3, 3))
    with pytest.raises(ValueError, match=r"mask of shape \(2, 3\) does not broadcast"):
        masked_attention(q, k, v, torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="q and k must share the last dim"):
        masked_attention(q, _randn(3, 5), v)
    with pytest.raises(ValueError, match="k and v must have the same number of keys"):
        masked_attention(q, k, _randn(2, 4))
    with pytest.raises(ValueError, match="q must have at least 2 dims"):
        masked_attention(_randn(4), k, v)
    with pytest.raises(ValueError, match="scale must be a finite number > 0"):
        masked_attention(q, k, v, scale=0.0)
    with pytest.raises(TypeError, match=r"v must be a torch\.Tensor"):
        masked_attention(q, k, 1.0)  # type: ignore[arg-type]


def _message(call) -> tuple[type[Exception], str]:
    with pytest.raises((TypeError, ValueError)) as excinfo:
        call()
    return excinfo.type, str(excinfo.value)


def test_masked_attention_errors_name_the_argument_and_the_numbers():
    q, k, v = _randn(3, 4), _randn(3, 4), _randn(3, 4)
    assert _message(lambda: masked_attention(q, k, 1.0)) == (TypeError, "v must be a torch.Tensor, got float")
    assert _message(lambda: masked_attention(q, _randn(4), v)) == (
        ValueError,
        "k must have at least 2 dims, got shape (4,)",
    )
    assert _message(lambda: masked_attention(q, [[1.0]], v)) == (
        TypeError,
        "k must be a torch.Tensor, got list",
    )
    # 3-D q and k with every axis a different length: the message reports the last dims, 4 and 5
    q3, k3, v3 = _randn(2, 3, 4), _randn(2, 6, 5), _randn(2, 6, 1)
    assert _message(lambda: masked_attention(q3, k3, v3)) == (
        ValueError,
        "q and k must share the last dim (d_k), got 4 and 5",
    )
    assert _message(lambda: masked_attention(q, k, v, torch.ones(3, 3))) == (
        TypeError,
        "mask must be a bool tensor (True = may attend)",
    )
    empty_row = torch.tensor([[1, 0, 0], [0, 0, 0], [1, 1, 1]], dtype=torch.bool)
    assert _message(lambda: masked_attention(q, k, v, empty_row)) == (
        ValueError,
        "mask leaves a query with no visible key; every row needs at least one True",
    )


def test_masked_attention_mask_broadcasts_against_the_batch_of_q_and_of_k():
    # q with batch 2 and k, v with batch 1 (and the other way round): a per-batch mask of batch 2 fits
    masks = torch.tensor(
        [[[1, 0, 0], [1, 1, 0], [1, 1, 1]], [[1, 1, 1], [0, 1, 0], [0, 0, 1]]], dtype=torch.bool
    )
    two, one = _randn(2, 3, 4, seed=1), _randn(1, 3, 4, seed=2)
    v_two, v_one = _randn(2, 3, 2, seed=3), _randn(1, 3, 2, seed=4)
    got = masked_attention(two, one, v_one, masks)
    flipped = masked_attention(one, two, v_two, masks)
    for b in range(2):
        expected = _reference_attention(two[b], one[0], v_one[0], masks[b], 0.5)
        torch.testing.assert_close(got[b], expected, rtol=0, atol=1e-12)
        expected = _reference_attention(one[0], two[b], v_two[b], masks[b], 0.5)
        torch.testing.assert_close(flipped[b], expected, rtol=0, atol=1e-12)


def test_masked_attention_checks_each_query_row_not_each_key_column():
    q = k = v = _randn(1, 3, 4)
    # every key column is seen by some query, but query 1 sees nothing: rejected
    empty_row = torch.tensor([[[1, 1, 0], [0, 0, 0], [0, 0, 1]]], dtype=torch.bool)
    with pytest.raises(ValueError, match="no visible key"):
        masked_attention(q, k, v, empty_row)
    # every query sees key 0, nobody sees keys 1 and 2: fine, all weight on key 0
    one_column = torch.tensor([[[1, 0, 0], [1, 0, 0], [1, 0, 0]]], dtype=torch.bool)
    torch.testing.assert_close(
        masked_attention(q, k, v, one_column), v[:, :1].expand(1, 3, 4), rtol=0, atol=0
    )


# --------------------------------------------------------------------------------------------------
# Eq. 2 — causal softmax attention
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("titans", 2)
def test_causal_attention_two_tokens_by_hand():
    # d = 1, scale 1: y_2 weights exp(q_2 k_j) = [1, 3] -> [1/4, 3/4]; y_2 = 4/4 + 3*8/4 = 7.
    q = torch.tensor([[5.0], [1.0]], dtype=F64)
    k = torch.tensor([[0.0], [math.log(3.0)]], dtype=F64)
    v = torch.tensor([[4.0], [8.0]], dtype=F64)
    y = causal_softmax_attention(q, k, v, scale=1.0)
    torch.testing.assert_close(y, torch.tensor([[4.0], [7.0]], dtype=F64), rtol=0, atol=1e-12)


@pytest.mark.equation("titans", 2)
def test_causal_attention_first_output_is_first_value():
    q, k, v = _randn(2, 3, 6, 4, seed=1), _randn(2, 3, 6, 4, seed=2), _randn(2, 3, 6, 5, seed=3)
    y = causal_softmax_attention(q, k, v)
    assert torch.equal(y[..., 0, :], v[..., 0, :])


@pytest.mark.equation("titans", 2)
def test_causal_attention_weights_are_a_causal_distribution():
    # with V = I the output rows are the attention weights themselves
    n, d = 6, 4
    q, k = _randn(n, d, seed=1), _randn(n, d, seed=2)
    weights = causal_softmax_attention(q, k, torch.eye(n, dtype=F64))
    assert (weights >= 0).all()
    assert not weights.triu(1).any()
    torch.testing.assert_close(weights.sum(-1), torch.ones(n, dtype=F64), rtol=0, atol=1e-12)
    i = 3  # one row against Eq. 2 written out
    logits = torch.tensor([float(q[i] @ k[j]) / math.sqrt(d) for j in range(i + 1)], dtype=F64)
    torch.testing.assert_close(
        weights[i, : i + 1], torch.exp(logits) / torch.exp(logits).sum(), rtol=0, atol=1e-12
    )


@pytest.mark.equation("titans", 2)
@pytest.mark.parametrize("scale", [None, 0.25])
def test_causal_attention_equals_sdpa_is_causal(scale):
    q, k, v = _randn(2, 3, 7, 4, seed=1), _randn(2, 3, 7, 4, seed=2), _randn(2, 3, 7, 5, seed=3)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    torch.testing.assert_close(causal_softmax_attention(q, k, v, scale=scale), expected, rtol=0, atol=1e-12)


@pytest.mark.equation("titans", 2)
@given(n=st.integers(2, 8), cut=st.integers(0, 7), seed=st.integers(0, 10_000))
def test_causal_attention_future_never_changes_the_past(n, cut, seed):
    cut = min(cut, n - 2)  # positions <= cut are the past; something after it changes
    q, k, v = _randn(n, 3, seed=seed), _randn(n, 3, seed=seed + 1), _randn(n, 2, seed=seed + 2)
    noise = [_randn(n - cut - 1, d, seed=seed + 3 + i) for i, d in enumerate((3, 3, 2))]
    q2, k2, v2 = (t.clone() for t in (q, k, v))
    for t, e in zip((q2, k2, v2), noise, strict=True):
        t[cut + 1 :] += e
    before = causal_softmax_attention(q, k, v)
    after = causal_softmax_attention(q2, k2, v2)
    assert torch.equal(before[: cut + 1], after[: cut + 1])


def test_causal_attention_needs_square_attention():
    with pytest.raises(ValueError, match="same number of queries and keys"):
        causal_softmax_attention(_randn(3, 4), _randn(4, 4), _randn(4, 4))


@pytest.mark.equation("titans", 2)
def test_causal_attention_builds_its_mask_on_the_device_of_q(monkeypatch):
    """The causal mask is made on q's device; ``meta`` stands in for an accelerator (as in on_meta.py)."""
    monkeypatch.setattr(attention_module, "_check_mask", lambda *args: None)  # it reads values: not on meta
    q = torch.empty(2, 3, 4, dtype=F64, device="meta")
    y = causal_softmax_attention(q, q, q)  # a CPU mask would not combine with meta tensors
    assert (y.device.type, y.shape) == ("meta", (2, 3, 4))


# --------------------------------------------------------------------------------------------------
# Eq. 3 — kernelised (linear) attention
# --------------------------------------------------------------------------------------------------


def test_elu_plus_one_by_hand():
    x = torch.tensor([-1.0, 0.0, 2.0], dtype=F64)
    torch.testing.assert_close(elu_plus_one(x), torch.tensor([math.exp(-1.0), 1.0, 3.0], dtype=F64))


def _linear_attention_loop(q, k, v, phi):
    """Eq. 3, middle expression: weights phi(Q_i)^T phi(K_j) / sum_l phi(Q_i)^T phi(K_l), j <= i."""
    fq, fk = phi(q), phi(k)
    ys = []
    for i in range(q.shape[-2]):
        scores = [(fq[..., i, :] * fk[..., j, :]).sum(-1) for j in range(i + 1)]
        total = sum(scores)
        ys.append(sum(s[..., None] / total[..., None] * v[..., j, :] for j, s in enumerate(scores)))
    return torch.stack(ys, dim=-2)


@pytest.mark.equation("titans", 3)
def test_linear_attention_equals_eq3_written_as_a_loop():
    q, k, v = _randn(2, 5, 3, seed=1), _randn(2, 5, 3, seed=2), _randn(2, 5, 4, seed=3)
    expected = _linear_attention_loop(q, k, v, elu_plus_one)
    torch.testing.assert_close(linear_attention(q, k, v), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(linear_attention_recurrent(q, k, v), expected, rtol=0, atol=1e-12)


@pytest.mark.equation("titans", 3)
def test_linear_attention_scalar_by_hand():
    # phi = id on positive numbers, d = 1, q_2 cancels:
    # y_2 = (q2 k1 v1 + q2 k2 v2) / (q2 k1 + q2 k2) = (1*2 + 3*4) / (1 + 3) = 3.5 ; y_1 = v_1 = 2
    q = torch.tensor([[2.0], [5.0]], dtype=F64)
    k = torch.tensor([[1.0], [3.0]], dtype=F64)
    v = torch.tensor([[2.0], [4.0]], dtype=F64)
    expected = torch.tensor([[2.0], [3.5]], dtype=F64)
    torch.testing.assert_close(linear_attention(q, k, v, feature_map=_identity), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        linear_attention_recurrent(q, k, v, feature_map=_identity), expected, rtol=0, atol=1e-12
    )


@pytest.mark.equation("titans", 3)
def test_linear_attention_weights_rows_sum_to_one():
    n = 6
    q, k = _randn(n, 3, seed=4), _randn(n, 3, seed=5)
    weights = linear_attention(q, k, torch.eye(n, dtype=F64))  # V = I exposes the weight matrix
    assert (weights >= 0).all()
    assert not weights.triu(1).any()
    torch.testing.assert_close(weights.sum(-1), torch.ones(n, dtype=F64), rtol=0, atol=1e-12)


@pytest.mark.equation("titans", 3)
@given(
    batch=st.integers(1, 2),
    n=st.integers(1, 9),
    d=st.integers(1, 4),
    d_v=st.integers(1, 3),
    normalize=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_linear_attention_parallel_equals_recurrent(batch, n, d, d_v, normalize, seed):
    q, k, v = (
        _randn(batch, n, d, seed=seed),
        _randn(batch, n, d, seed=seed + 1),
        _randn(batch, n, d_v, seed=seed + 2),
    )
    parallel = linear_attention(q, k, v, normalize=normalize)
    recurrent = linear_attention_recurrent(q, k, v, normalize=normalize)
    torch.testing.assert_close(parallel, recurrent, rtol=0, atol=1e-10)


@pytest.mark.equation("titans", 3)
def test_linear_attention_recurrent_with_batch_and_head_axes_equals_eq3_loop():
    """Two leading axes of different sizes, (batch=2, heads=3), give Eq. 3 per (batch, head)."""
    q, k, v = _randn(2, 3, 4, 2, seed=1), _randn(2, 3, 4, 2, seed=2), _randn(2, 3, 4, 5, seed=3)
    expected = _linear_attention_loop(q, k, v, elu_plus_one)
    torch.testing.assert_close(linear_attention_recurrent(q, k, v), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.equation("titans", 3)
def test_linear_attention_recurrent_keeps_a_low_precision_dtype():
    """bfloat16 in, bfloat16 out (the running sums start in the inputs' dtype, not the default float32)."""
    q, k, v = (_randn(5, 3, seed=s).to(torch.bfloat16) for s in (1, 2, 3))
    y = linear_attention_recurrent(q, k, v)
    assert y.dtype == torch.bfloat16
    expected = _linear_attention_loop(q.double(), k.double(), v.double(), elu_plus_one)
    torch.testing.assert_close(y.double(), expected, rtol=0.05, atol=0.05)  # bfloat16 has 8 mantissa bits


@pytest.mark.equation("titans", 3)
def test_linear_attention_recurrent_keeps_its_state_on_the_device_of_the_inputs():
    """Memory and normaliser sums are made on the inputs' device; ``meta`` stands in for an accelerator."""
    q = torch.empty(2, 3, 4, dtype=F64, device="meta")
    v = torch.empty(2, 3, 5, dtype=F64, device="meta")
    y = linear_attention_recurrent(q, q, v, normalize=False)  # normalize=True reads values: not on meta
    assert (y.device.type, y.shape) == ("meta", (2, 3, 5))


def test_linear_attention_rejects_a_zero_normaliser():
    q = torch.tensor([[1.0], [1.0]], dtype=F64)
    k = torch.tensor([[0.0], [1.0]], dtype=F64)  # phi = id: the first normaliser q_1 k_1 is 0
    v = torch.ones(2, 1, dtype=F64)
    with pytest.raises(ValueError, match="normaliser"):
        linear_attention(q, k, v, feature_map=_identity)
    with pytest.raises(ValueError, match="normaliser"):
        linear_attention_recurrent(q, k, v, feature_map=_identity)


def test_linear_attention_rejects_bad_shapes():
    with pytest.raises(ValueError, match="same number of queries and keys"):
        linear_attention(_randn(3, 2), _randn(4, 2), _randn(4, 2))
    with pytest.raises(ValueError, match="same number of queries and keys"):
        linear_attention_recurrent(_randn(3, 2), _randn(4, 2), _randn(4, 2))
    with pytest.raises(ValueError, match="feature_map changed the shape"):
        linear_attention(_randn(3, 2), _randn(3, 2), _randn(3, 2), feature_map=lambda x: x[..., :1])


def test_linear_attention_errors_are_exact():
    q = torch.tensor([[1.0], [1.0]], dtype=F64)
    k = torch.tensor([[0.0], [1.0]], dtype=F64)  # phi = id: the first normaliser q_1 k_1 is 0
    normaliser = (
        ValueError,
        "linear attention normaliser phi(Q_i)^T sum_{j<=i} phi(K_j) must be > 0; "
        "use a positive feature_map or normalize=False",
    )
    assert (
        _message(lambda: linear_attention(q, k, torch.ones(2, 1, dtype=F64), feature_map=_identity))
        == normaliser
    )
    shape = (ValueError, "feature_map changed the shape of q or k; it must act element-wise")
    x = _randn(3, 2)
    assert _message(lambda: linear_attention(x, x, x, feature_map=lambda t: t[..., :1])) == shape


def test_a_feature_map_that_changes_only_the_shape_of_q_is_caught():
    # q has a batch of 2 and k, v a batch of 1; keeping the first batch entry changes q's shape only
    q, k, v = _randn(2, 3, 2, seed=1), _randn(1, 3, 2, seed=2), _randn(1, 3, 2, seed=3)
    for attention in (linear_attention, linear_attention_recurrent):
        with pytest.raises(ValueError, match="feature_map changed the shape of q or k"):
            attention(q, k, v, feature_map=lambda t: t[:1])


# --------------------------------------------------------------------------------------------------
# Eq. 4–5 — linear-attention memory write and read
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("titans", 4)
def test_linear_memory_is_the_cumulative_sum_of_outer_products():
    n, d_k, d_v = 5, 3, 2
    k, v = _randn(2, n, d_k, seed=1), _randn(2, n, d_v, seed=2)
    memory = torch.zeros(2, d_k, d_v, dtype=F64)
    for t in range(n):
        previous = memory
        memory = linear_memory_write(memory, k[:, t], v[:, t])
        increment = memory - previous
        for b in range(2):
            assert torch.linalg.matrix_rank(increment[b]) == 1
        expected = sum(k[:, j, :, None] * v[:, j, None, :] for j in range(t + 1))
        torch.testing.assert_close(memory, expected, rtol=0, atol=1e-12)


@pytest.mark.equation("titans", 4)
@pytest.mark.equation("titans", 5)
def test_linear_memory_scalar_by_hand():
    # d = 1: M_1 = 1*5 = 5, y_1 = 2*5 = 10; M_2 = 5 + 3*7 = 26, y_2 = 2*26 = 52
    memory = torch.zeros(1, 1, dtype=F64)
    q = torch.tensor([2.0], dtype=F64)
    ys = []
    for k_t, v_t in ((1.0, 5.0), (3.0, 7.0)):
        memory = linear_memory_write(memory, torch.tensor([k_t], dtype=F64), torch.tensor([v_t], dtype=F64))
        ys.append(linear_memory_read(memory, q).item())
    assert ys == [10.0, 52.0]
    assert memory.item() == 26.0


@pytest.mark.equation("titans", 5)
def test_linear_memory_read_is_unnormalised_linear_attention():
    n, d_k, d_v = 6, 3, 4
    q, k, v = _randn(n, d_k, seed=1), _randn(n, d_k, seed=2), _randn(n, d_v, seed=3)
    memory = torch.zeros(d_k, d_v, dtype=F64)
    for t in range(n):
        memory = linear_memory_write(memory, k[t], v[t])
        expected = sum(float(q[t] @ k[j]) * v[j] for j in range(t + 1))  # y_t = sum_j (Q_t K_j^T) V_j
        torch.testing.assert_close(linear_memory_read(memory, q[t]), expected, rtol=0, atol=1e-12)


def test_linear_memory_rejects_bad_shapes():
    memory = torch.zeros(3, 2, dtype=F64)
    with pytest.raises(ValueError, match=r"k_t must have shape \(\.\.\., 3\)"):
        linear_memory_write(memory, _randn(2), _randn(2))
    with pytest.raises(ValueError, match=r"v_t must have shape \(\.\.\., 2\)"):
        linear_memory_write(memory, _randn(3), _randn(3))
    with pytest.raises(ValueError, match=r"q_t must have shape \(\.\.\., 3\)"):
        linear_memory_read(memory, _randn(2))
    with pytest.raises(ValueError, match="memory must have at least 2 dims"):
        linear_memory_read(torch.zeros(3), _randn(3))


def test_linear_memory_vector_errors_name_the_vector():
    memory = torch.zeros(3, 2, dtype=F64)
    scalar = torch.tensor(1.0, dtype=F64)
    assert _message(lambda: linear_memory_write(memory, scalar, _randn(2))) == (
        ValueError,
        "k_t must have at least 1 dims, got shape ()",
    )
    assert _message(lambda: linear_memory_read(memory, [1.0, 2.0, 3.0])) == (
        TypeError,
        "q_t must be a torch.Tensor, got list",
    )


# --------------------------------------------------------------------------------------------------
# Eq. 6–7 — generic recurrent memory: write (f) then read (g)
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("titans", 5)
def test_read_is_pure():
    memory = linear_memory_write(torch.zeros(3, 2, dtype=F64), _randn(3, seed=1), _randn(2, seed=2))
    snapshot = memory.clone()
    q = _randn(3, seed=3)
    first, second = linear_memory_read(memory, q), linear_memory_read(memory, q)
    assert torch.equal(first, second)
    assert torch.equal(memory, snapshot)


@pytest.mark.equation("titans", 6)
@pytest.mark.equation("titans", 7)
def test_run_recurrence_writes_before_reading():
    # write: M_t = M_{t-1} + x_t ; read: y_t = M_t. Reading after writing gives the inclusive cumsum.
    xs = torch.tensor([[1.0], [2.0], [4.0]], dtype=F64)
    ys, final = run_recurrence(lambda m, x: m + x, lambda m, x: m, torch.zeros(1, dtype=F64), xs)
    assert torch.equal(ys, torch.tensor([[1.0], [3.0], [7.0]], dtype=F64))
    assert torch.equal(final, torch.tensor([7.0], dtype=F64))


@pytest.mark.equation("titans", 6)
def test_write_is_the_only_way_the_state_changes():
    state = _randn(3, 2, seed=1)
    snapshot = state.clone()
    xs = _randn(4, 5, 3, seed=2)
    ys, final = run_recurrence(lambda m, x: m, lambda m, x: x @ m, state, xs)  # write = identity
    assert torch.equal(final, snapshot)
    assert torch.equal(state, snapshot)  # the caller's state is not mutated in place
    torch.testing.assert_close(ys, xs @ snapshot, rtol=0, atol=1e-12)


@pytest.mark.equation("titans", 6)
def test_run_recurrence_passes_tuple_states_through():
    def write(state, x):
        total, count = state
        return total + x, count + 1

    ys, (total, count) = run_recurrence(
        write, lambda s, x: s[0] / s[1], (torch.zeros(2, dtype=F64), 0), _randn(4, 2)
    )
    torch.testing.assert_close(ys[-1], total / 4, rtol=0, atol=0)  # running mean
    assert count == 4


@pytest.mark.equation("titans", 4)
@pytest.mark.equation("titans", 5)
@pytest.mark.equation("titans", 6)
@pytest.mark.equation("titans", 7)
def test_linear_attention_through_the_generic_recurrence():
    batch, n, d_in = 2, 6, 4
    x = _randn(batch, n, d_in, seed=1)
    w_q, w_k, w_v = _randn(d_in, 3, seed=2), _randn(d_in, 3, seed=3), _randn(d_in, 5, seed=4)

    def write(memory, x_t):
        return linear_memory_write(memory, x_t @ w_k, x_t @ w_v)

    def read(memory, x_t):
        return linear_memory_read(memory, x_t @ w_q)

    ys, _ = run_recurrence(write, read, torch.zeros(batch, 3, 5, dtype=F64), x)
    q, k, v = qkv_projection(x, w_q, w_k, w_v)
    expected = linear_attention(q, k, v, feature_map=_identity, normalize=False)
    torch.testing.assert_close(ys, expected, rtol=0, atol=1e-12)


def test_run_recurrence_rejects_bad_sequences():
    with pytest.raises(ValueError, match="xs must have at least 2 dims"):
        run_recurrence(lambda m, x: m, lambda m, x: m, 0.0, _randn(3))
    with pytest.raises(ValueError, match="xs must hold at least one token"):
        run_recurrence(lambda m, x: m, lambda m, x: m, 0.0, _randn(0, 3))
    with pytest.raises(TypeError, match=r"read must return a torch\.Tensor"):
        run_recurrence(lambda m, x: m, lambda m, x: 1.0, 0.0, _randn(2, 3))


def test_run_recurrence_errors_are_exact():
    """The empty-sequence and bad-read messages are exact and name the offending type of y_t."""
    assert _message(lambda: run_recurrence(lambda m, x: m, lambda m, x: m, 0.0, _randn(0, 3))) == (
        ValueError,
        "xs must hold at least one token (seq axis is -2)",
    )
    assert _message(lambda: run_recurrence(lambda m, x: m, lambda m, x: 1.0, 0.0, _randn(2, 3))) == (
        TypeError,
        "read must return a torch.Tensor, got float",
    )


# --------------------------------------------------------------------------------------------------
# Eq. 20 — FFN(x) = W_V Softmax(W_K x)
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("titans", 20)
def test_ffn_with_zero_keys_averages_the_value_slots():
    w_k = torch.zeros(3, 2, dtype=F64)
    w_v = torch.tensor([[1.0, 2.0, 6.0], [0.0, 3.0, -3.0]], dtype=F64)  # (d_out=2, m=3)
    x = torch.tensor([5.0, -7.0], dtype=F64)
    torch.testing.assert_close(ffn_as_attention(x, w_k, w_v), torch.tensor([3.0, 0.0], dtype=F64))


@pytest.mark.equation("titans", 20)
def test_ffn_is_single_query_attention_over_learned_slots():
    m, d_in, d_out = 7, 4, 3
    x, w_k, w_v = _randn(5, d_in, seed=1), _randn(m, d_in, seed=2), _randn(d_out, m, seed=3)
    got = ffn_as_attention(x, w_k, w_v)
    assert got.shape == (5, d_out)
    # keys = rows of W_K, values = columns of W_V, one query per input, no scaling, nothing masked
    expected = masked_attention(x[:, None, :], w_k, w_v.T, scale=1.0)[:, 0, :]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.equation("titans", 20)
@given(seed=st.integers(0, 10_000), m=st.integers(1, 6), temperature=st.floats(0.1, 20.0))
def test_ffn_output_is_a_convex_combination_of_value_columns(seed, m, temperature):
    d_in, d_out = 3, 4
    x = temperature * _randn(d_in, seed=seed)
    w_k, w_v = _randn(m, d_in, seed=seed + 1), _randn(d_out, m, seed=seed + 2)
    out = ffn_as_attention(x, w_k, w_v)
    logits = w_k @ x
    p = torch.exp(logits - logits.max())
    p = p / p.sum()
    torch.testing.assert_close(out, w_v @ p, rtol=0, atol=1e-12)
    tol = 1e-12
    assert (out >= w_v.min(dim=1).values - tol).all() and (out <= w_v.max(dim=1).values + tol).all()


def test_ffn_as_attention_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"w_k must have shape \(m, d_in=3\)"):
        ffn_as_attention(_randn(3), _randn(4, 2), _randn(2, 4))
    with pytest.raises(ValueError, match=r"w_v must have shape \(d_out, m=4\)"):
        ffn_as_attention(_randn(3), _randn(4, 3), _randn(2, 3))


def test_ffn_as_attention_errors_name_the_argument():
    """x, w_k and w_v each report their own name when they are not tensors of enough dims."""
    w_k, w_v = _randn(4, 3), _randn(2, 4)
    assert _message(lambda: ffn_as_attention([1.0, 2.0, 3.0], w_k, w_v)) == (
        TypeError,
        "x must be a torch.Tensor, got list",
    )
    assert _message(lambda: ffn_as_attention(_randn(3), _randn(3), w_v)) == (
        ValueError,
        "w_k must have at least 2 dims, got shape (3,)",
    )
    assert _message(lambda: ffn_as_attention(_randn(3), w_k, _randn(4))) == (
        ValueError,
        "w_v must have at least 2 dims, got shape (4,)",
    )


@pytest.mark.parametrize("normalize", [True, False])
def test_linear_attention_recurrent_of_an_empty_sequence_is_empty_like_the_parallel_form(normalize):
    """L = 0: both forms return the empty (..., 0, d_v) read (an empty stack raised before)."""
    from neural_memory.common.attention import linear_attention, linear_attention_recurrent

    q, k = torch.zeros(2, 0, 3, dtype=torch.float64), torch.zeros(1, 0, 3, dtype=torch.float64)
    v = torch.zeros(2, 0, 5, dtype=torch.float64)
    got = linear_attention_recurrent(q, k, v, normalize=normalize)
    want = linear_attention(q, k, v, normalize=normalize)
    assert got.shape == want.shape == (2, 0, 5)
    assert got.dtype == want.dtype == torch.float64


# --------------------------------------------------------------------------------------------------
# windowed_attention: the one-call sliding window (Titans SW-Attn, the SWA baseline)
# --------------------------------------------------------------------------------------------------


@given(
    n=st.integers(0, 9),
    cached=st.integers(0, 5),
    window=st.integers(1, 6),
    block=st.integers(1, 5),
    n_prefix=st.integers(0, 2),
    seed=st.integers(0, 2**16),
)
def test_windowed_attention_is_masked_attention_with_the_window_mask(
    n, cached, window, block, n_prefix, seed
):
    # the reference: every key at once under window_mask_from_positions (prefix keys in front)
    cached = min(cached, window - 1)
    q = _randn(2, 3, n, 4, seed=seed)
    keys, values = _randn(2, 3, cached + n, 4, seed=seed + 1), _randn(2, 3, cached + n, 4, seed=seed + 2)
    prefix = (_randn(2, 3, n_prefix, 4, seed=seed + 3), _randn(2, 3, n_prefix, 4, seed=seed + 4))
    got = windowed_attention(
        q, keys, values, window=window, block_size=block, prefix_kv=prefix if n_prefix else None
    )
    assert got.shape == q.shape
    if n == 0:
        return
    positions = torch.arange(cached + n) + 7  # a stream that started earlier
    mask = window_mask_from_positions(positions[cached:], positions, window, prefix_keys=n_prefix)
    expected = masked_attention(q, torch.cat([prefix[0], keys], 2), torch.cat([prefix[1], values], 2), mask)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


KEYS_MESSAGE = (
    "keys must be (2, 3, L + 5, 4) with 0 <= L <= window - 1 = 2 cached positions before the queries', got "
)
PREFIX_MESSAGE = "prefix_kv must be (keys, values) of one shape (2, 3, N_p, 4), got "
BAD_KEYS = [(2, 3, 8, 4), (2, 3, 4, 4), (2, 2, 6, 4), (1, 3, 6, 4), (2, 3, 6, 5), (1, 2, 3, 6, 4)]
BAD_PREFIX = [((2, 3, 1, 4), (2, 3, 2, 4)), ((2, 3, 1, 5),) * 2, ((2, 2, 1, 4),) * 2, ((3, 1, 4),) * 2]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"window": 0}, ValueError, "window must be an int >= 1, got 0"),
        ({"block_size": 0}, ValueError, "block_size must be an int >= 1, got 0"),
        ({"window": 2.0}, TypeError, "window must be an int >= 1, got float"),
        ({"q": [1.0]}, TypeError, "q must be a torch.Tensor, got list"),
        ({"keys": [1.0]}, TypeError, "keys must be a torch.Tensor, got list"),
        ({"values": _randn(2, 3, 6)}, ValueError, "values must have at least 4 dims, got shape (2, 3, 6)"),
        ({"q": _randn(3, 5, 4)}, ValueError, "q must have at least 4 dims, got shape (3, 5, 4)"),
        ({"q": _randn(1, 2, 3, 5, 4)}, ValueError, "q must be (batch, heads, T, d), got (1, 2, 3, 5, 4)"),
        *[({"keys": _randn(*shape)}, ValueError, f"{KEYS_MESSAGE}{shape}") for shape in BAD_KEYS],
        (
            {"values": _randn(2, 3, 6, 5)},
            ValueError,
            "values must have the keys' shape (2, 3, 6, 4), got (2, 3, 6, 5)",
        ),
        *[
            ({"prefix_kv": (_randn(*a), _randn(*b))}, ValueError, f"{PREFIX_MESSAGE}{a} and {b}")
            for a, b in BAD_PREFIX
        ],
    ],
)
def test_windowed_attention_rejects_bad_input(kwargs, error, message):
    # window 3: at most 2 cached keys before the 5 queries
    args = {"q": _randn(2, 3, 5, 4), "keys": _randn(2, 3, 6, 4), "values": _randn(2, 3, 6, 4)}
    args.update(window=3, block_size=2)
    args.update(kwargs)
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        windowed_attention(args.pop("q"), args.pop("keys"), args.pop("values"), **args)
