"""Boolean attention masks (True = may attend) for Titans' attention branches (Eq. 2, 23, 27, 31).

The masks are helpers, not claims: the equation markers sit on the tests of the code that claims each
equation (``causal_softmax_attention``, ``MemoryAsContext``, ``SlidingWindowAttention``, ``MemoryAsLayer``),
which fail when that code attends to the wrong positions.

Expected masks are written out by hand as literal tensors; hypothesis checks the structural properties
(window >= n is causal, the prefix is always visible, nothing from the future is visible).
"""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from neural_memory.common.masks import (
    block_causal_mask,
    causal_mask,
    mac_mask,
    sliding_window_mask,
    window_mask_from_positions,
)


def _bool(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.bool)


# --------------------------------------------------------------------------------------------------
# causal_mask (Eq. 2: y_i sums over j <= i)
# --------------------------------------------------------------------------------------------------


def test_causal_mask_by_hand():
    expected = _bool([[1, 0, 0], [1, 1, 0], [1, 1, 1]])
    got = causal_mask(3)
    assert got.dtype == torch.bool
    assert torch.equal(got, expected)


def test_causal_mask_rejects_bad_length():
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        causal_mask(0)
    with pytest.raises(TypeError, match="n must be an int"):
        causal_mask(2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="n must be an int"):
        causal_mask(True)  # type: ignore[arg-type]


def test_masks_honour_device():
    assert causal_mask(2, device="cpu").device.type == "cpu"
    assert sliding_window_mask(3, 1, prefix=1, device=torch.device("cpu")).device.type == "cpu"
    assert block_causal_mask(3, 2, device="cpu").device.type == "cpu"
    assert mac_mask(1, 1, 1, device="cpu").device.type == "cpu"


def test_masks_are_built_on_the_requested_device():
    # The meta device stands in for an accelerator: a part built on the CPU would not combine with it
    # (or the mask would come back on the CPU).
    meta = torch.device("meta")
    assert causal_mask(3, device="meta").device == meta
    assert sliding_window_mask(3, 2, prefix=1, device="meta").device == meta
    assert block_causal_mask(5, 2, device="meta").device == meta
    assert mac_mask(1, 2, 2, device="meta").device == meta
    assert mac_mask(1, 2, 2, causal_memory=True, device="meta").device == meta
    pos = torch.arange(3, device="meta")
    for prefix_keys in (0, 2):
        mask = window_mask_from_positions(pos, pos, 2, prefix_keys=prefix_keys)
        assert mask.device == meta and mask.shape == (3, prefix_keys + 3) and mask.dtype == torch.bool


def _error(call) -> tuple[type[Exception], str]:
    with pytest.raises((TypeError, ValueError)) as excinfo:
        call()
    return excinfo.type, str(excinfo.value)


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        # n too small, also where the prefix would still leave a non-empty mask
        (lambda: causal_mask(-1), (ValueError, "n must be an int >= 1, got -1")),
        (lambda: sliding_window_mask(0, 2, prefix=1), (ValueError, "n must be an int >= 1, got 0")),
        (lambda: sliding_window_mask(2.0, 2), (TypeError, "n must be an int >= 1, got float")),
        (lambda: sliding_window_mask(3, 0), (ValueError, "window must be an int >= 1, got 0")),
        (lambda: sliding_window_mask(3, 2, prefix=-1), (ValueError, "prefix must be an int >= 0, got -1")),
        (lambda: block_causal_mask(0, 2), (ValueError, "n must be an int >= 1, got 0")),
        (lambda: block_causal_mask(-1, 2), (ValueError, "n must be an int >= 1, got -1")),
        (lambda: block_causal_mask("3", 2), (TypeError, "n must be an int >= 1, got str")),
        (lambda: block_causal_mask(4, 0), (ValueError, "block must be an int >= 1, got 0")),
        (lambda: mac_mask(1, 2, 0), (ValueError, "n_segment must be an int >= 1, got 0")),
        (lambda: mac_mask(1, 2, -1), (ValueError, "n_segment must be an int >= 1, got -1")),
        (
            lambda: window_mask_from_positions(torch.arange(3), torch.arange(3), 0),
            (ValueError, "window must be an int >= 1, got 0"),
        ),
    ],
    ids=[
        "causal-n",
        "sliding-n-with-prefix",
        "sliding-n-float",
        "sliding-window",
        "sliding-prefix",
        "block-n-0",
        "block-n-negative",
        "block-n-str",
        "block-block",
        "mac-segment-0",
        "mac-segment-negative",
        "positions-window",
    ],
)
def test_mask_arguments_out_of_range_get_the_exact_message(call, expected):
    assert _error(call) == expected


def test_window_mask_from_positions_has_no_prefix_keys_by_default():
    # queries and keys at 0, 1, 2, window 2: each query sees itself and the key before it
    expected = _bool([[1, 0, 0], [1, 1, 0], [0, 1, 1]])
    assert torch.equal(window_mask_from_positions(torch.arange(3), torch.arange(3), 2), expected)


# --------------------------------------------------------------------------------------------------
# sliding_window_mask (Eq. 27 SW-Attn* with persistent prefix; Eq. 31 plain SW-Attn)
# --------------------------------------------------------------------------------------------------


def test_sliding_window_mask_without_prefix_by_hand():
    expected = _bool(
        [
            [1, 0, 0, 0],
            [1, 1, 0, 0],
            [0, 1, 1, 0],
            [0, 0, 1, 1],
        ]
    )
    assert torch.equal(sliding_window_mask(4, 2), expected)


def test_sliding_window_mask_with_prefix_by_hand():
    # 2 persistent positions (causal among themselves, blind to the sequence), then 3 tokens, window 2.
    expected = _bool(
        [
            [1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0],
            [1, 1, 0, 1, 1],
        ]
    )
    assert torch.equal(sliding_window_mask(3, 2, prefix=2), expected)


def test_sliding_window_of_one_sees_only_itself_and_prefix():
    expected = _bool(
        [
            [1, 0, 0, 0],
            [1, 1, 0, 0],
            [1, 0, 1, 0],
            [1, 0, 0, 1],
        ]
    )
    assert torch.equal(sliding_window_mask(3, 1, prefix=1), expected)


def test_sliding_window_mask_rejects_bad_arguments():
    with pytest.raises(ValueError, match="window must be an int >= 1"):
        sliding_window_mask(3, 0)
    with pytest.raises(ValueError, match="prefix must be an int >= 0"):
        sliding_window_mask(3, 2, prefix=-1)
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        sliding_window_mask(0, 2)


@given(n=st.integers(1, 12), extra=st.integers(0, 5), prefix=st.integers(0, 4))
def test_window_at_least_n_is_causal(n, extra, prefix):
    assert torch.equal(sliding_window_mask(n, n + extra, prefix=prefix), causal_mask(prefix + n))


@given(n=st.integers(1, 12), window=st.integers(1, 14), prefix=st.integers(0, 4))
def test_sliding_window_structure(n, window, prefix):
    mask = sliding_window_mask(n, window, prefix=prefix)
    assert mask.shape == (prefix + n, prefix + n)
    # nothing from the future, ever
    assert not (mask & ~causal_mask(prefix + n)).any()
    # every sequence query sees the whole persistent prefix
    assert mask[prefix:, :prefix].all()
    # ... and exactly min(window, i + 1) sequence keys, the most recent ones
    for i in range(n):
        row = mask[prefix + i, prefix:]
        visible = torch.nonzero(row).flatten().tolist()
        assert visible == list(range(max(0, i - window + 1), i + 1))
    # persistent rows never see sequence tokens
    assert not mask[:prefix, prefix:].any()


# --------------------------------------------------------------------------------------------------
# window_mask_from_positions: the streaming (KV-cache) form of the same mask
# --------------------------------------------------------------------------------------------------


def test_window_mask_from_positions_by_hand():
    mask = window_mask_from_positions(torch.tensor([5, 6]), torch.tensor([3, 4, 5, 6]), 2, prefix_keys=1)
    expected = _bool(
        [
            [1, 0, 1, 1, 0],
            [1, 0, 0, 1, 1],
        ]
    )
    assert torch.equal(mask, expected)


@given(n=st.integers(1, 12), window=st.integers(1, 14), prefix=st.integers(0, 3))
def test_positions_mask_equals_full_sequence_mask(n, window, prefix):
    pos = torch.arange(n)
    from_positions = window_mask_from_positions(pos, pos, window, prefix_keys=prefix)
    assert torch.equal(from_positions, sliding_window_mask(n, window, prefix=prefix)[prefix:])


@given(
    n=st.integers(2, 16),
    window=st.integers(1, 6),
    prefix=st.integers(0, 3),
    n_new=st.integers(1, 4),
    data=st.data(),
)
def test_positions_mask_for_a_kv_cache_equals_rows_of_the_full_mask(n, window, prefix, n_new, data):
    # The cache holds keys [start, n); the n_new newest tokens are queries. The cache must reach back
    # far enough for the oldest query's window.
    n_new = min(n_new, n)
    first_query = n - n_new
    start = data.draw(st.integers(0, max(0, first_query - window + 1)))
    query_pos = torch.arange(first_query, n)
    key_pos = torch.arange(start, n)
    cache_mask = window_mask_from_positions(query_pos, key_pos, window, prefix_keys=prefix)

    full = sliding_window_mask(n, window, prefix=prefix)
    rows = full[prefix + first_query : prefix + n]
    expected = torch.cat([rows[:, :prefix], rows[:, prefix + start :]], dim=1)
    assert torch.equal(cache_mask, expected)


def test_window_mask_from_positions_rejects_bad_arguments():
    pos = torch.arange(3)
    with pytest.raises(TypeError, match="query_pos must be an integer tensor"):
        window_mask_from_positions(pos.double(), pos, 2)
    with pytest.raises(TypeError, match="key_pos must be an integer tensor"):
        window_mask_from_positions(pos, [0, 1, 2], 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="key_pos must be 1-D"):
        window_mask_from_positions(pos, pos[None], 2)
    with pytest.raises(ValueError, match="window must be an int >= 1"):
        window_mask_from_positions(pos, pos, 0)
    with pytest.raises(ValueError, match="prefix_keys must be an int >= 0"):
        window_mask_from_positions(pos, pos, 2, prefix_keys=-2)


# --------------------------------------------------------------------------------------------------
# MAC (Eq. 23, Fig. 3a / T-U11): full causal attention inside each extended window
# --------------------------------------------------------------------------------------------------


def test_block_causal_mask_by_hand():
    expected = _bool(
        [
            [1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [0, 0, 1, 0, 0],
            [0, 0, 1, 1, 0],
            [0, 0, 0, 0, 1],
        ]
    )
    assert torch.equal(block_causal_mask(5, 2), expected)


@given(n_blocks=st.integers(1, 4), block=st.integers(1, 5))
def test_block_causal_mask_is_causal_inside_blocks_and_blind_across(n_blocks, block):
    n = n_blocks * block
    mask = block_causal_mask(n, block)
    for b in range(n_blocks):
        sl = slice(b * block, (b + 1) * block)
        assert torch.equal(mask[sl, sl], causal_mask(block))
    same_block = torch.block_diag(*[torch.ones(block, block, dtype=torch.bool)] * n_blocks)
    assert not (mask & ~same_block).any()


def test_block_causal_mask_rejects_bad_block():
    with pytest.raises(ValueError, match="block must be an int >= 1"):
        block_causal_mask(4, 0)


def test_mac_mask_by_hand():
    # [p | h1 h2 | s1 s2]: full causal attention over the extended window, as in Fig. 3a.
    expected = _bool(
        [
            [1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0],
            [1, 1, 1, 1, 1],
        ]
    )
    assert torch.equal(mac_mask(1, 2, 2), expected)


def test_mac_mask_with_causal_memory_by_hand():
    # h_j is retrieved with segment token j's query, so segment query i may only see h_{<=i}.
    expected = _bool(
        [
            [1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0],
            [1, 1, 0, 1, 0],
            [1, 1, 1, 1, 1],
        ]
    )
    assert torch.equal(mac_mask(1, 2, 2, causal_memory=True), expected)


@given(n_p=st.integers(0, 4), n_l=st.integers(0, 4), c=st.integers(1, 6))
def test_mac_mask_properties(n_p, n_l, c):
    mask = mac_mask(n_p, n_l, c)
    n = n_p + n_l + c
    assert torch.equal(mask, causal_mask(n))
    segment_rows = mask[n_p + n_l :]
    assert segment_rows[:, : n_p + n_l].all()  # persistent and memory tokens visible to every query
    assert torch.equal(segment_rows[:, n_p + n_l :], causal_mask(c))


@given(n_p=st.integers(0, 4), c=st.integers(1, 6))
def test_mac_mask_causal_memory_properties(n_p, c):
    mask = mac_mask(n_p, c, c, causal_memory=True)
    assert not (mask & ~mac_mask(n_p, c, c)).any()  # never more visible than the plain MAC mask
    seg_rows = mask[n_p + c :]
    assert seg_rows[:, :n_p].all()
    assert torch.equal(seg_rows[:, n_p : n_p + c], causal_mask(c))  # h_j visible iff j <= i
    assert torch.equal(seg_rows[:, n_p + c :], causal_mask(c))


def test_mac_mask_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_persistent must be an int >= 0"):
        mac_mask(-1, 2, 2)
    with pytest.raises(ValueError, match="n_memory must be an int >= 0"):
        mac_mask(1, -1, 2)
    with pytest.raises(ValueError, match="n_segment must be an int >= 1"):
        mac_mask(1, 2, 0)
    with pytest.raises(ValueError, match="causal_memory=True needs n_memory == n_segment"):
        mac_mask(1, 3, 2, causal_memory=True)
