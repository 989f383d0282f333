"""The two callers of :func:`neural_memory.common.attention.windowed_attention`: Titans' SW-Attn (MAG, MAL)
and the sliding-window Transformer baseline. Their outputs are checked against hand-written softmax
attention in ``tests/test_equations/titans/test_mag.py`` and ``tests/test_integration/test_transformer.py``;
here, that both attend all their query blocks in one call over windows of bounded size."""

from __future__ import annotations

import pytest
import torch

from neural_memory.models.transformer import CausalSelfAttention
from neural_memory.titans.mag import SlidingWindowAttention

LAYERS = {
    "titans-sw-attn": lambda: SlidingWindowAttention(8, window=3, heads=2, block_size=4),
    "swa-baseline": lambda: CausalSelfAttention(8, heads=2, window=3, block_size=4),
}


@pytest.mark.parametrize("layer", list(LAYERS))
def test_each_query_block_reads_only_the_keys_its_window_can_reach(layer, monkeypatch):
    """Memory and time per block are O(block + window), not O(position): every block of ``block`` queries
    is given a window of ``block + window - 1`` key rows (padded at the stream's start and end), whatever
    the stream's length, and all blocks go to one attention call (a loop of per-block slices made the
    backward pass write a zero-filled whole-sequence gradient per block)."""
    torch.manual_seed(0)
    attention = LAYERS[layer]()
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def recorded(q, k, v, attn_mask=None, **kwargs):
        calls.append((tuple(q.shape), tuple(k.shape), attn_mask.sum(-1).flatten().tolist()))
        return sdpa(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recorded)
    _, cache = attention(torch.randn(1, 10, 8))  # blocks 0-3, 4-7, 8-9 (+ 2 padded queries)
    # per block: 4 queries, 2 + 4 keys; a query sees itself and the 2 before it (fewer at the start)
    assert calls == [((3, 2, 4, 4), (3, 2, 6, 4), [1, 2, 3, 3] + [3] * 8)]
    calls.clear()
    attention(torch.randn(1, 5, 8), cache)  # 2 cached keys; blocks 0-3, 4 (+ 3 padded queries)
    assert calls == [((2, 2, 4, 4), (2, 2, 6, 4), [3] * 8)]
    calls.clear()
    attention(torch.randn(2, 1000, 8))
    assert [(q, k) for q, k, _ in calls] == [((2 * 250, 2, 4, 4), (2 * 250, 2, 6, 4))]
