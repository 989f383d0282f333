"""The carried state of the memory (``titans/state.py``): advancing, detaching and counting it.

No equation of its own, but every streaming guarantee (a split stream equals one call, the state does not
grow, truncated back-propagation between calls) rests on these four methods, so each is checked by hand.
"""

import torch

from neural_memory.titans.state import MemoryState


def tensors(*shape, requires_grad=True, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*shape, generator=g, requires_grad=requires_grad) for _ in range(n))


def make(accumulator=False):
    return MemoryState(
        weights=tensors(2, 3, 4),
        momentum=tensors(2, 3, 4, seed=1),
        chunk_weights=tensors(2, 3, 4, seed=2),
        offset=1,
        tokens_seen=5,
        conv={"q": torch.randn(1, 3, 6, requires_grad=True), "k": torch.randn(1, 3, 6)},
        accumulator=tensors(2, 3, 4, seed=3) if accumulator else None,
    )


def test_default_state_starts_at_token_zero_with_no_caches():
    w = tensors(1, 2, 2)
    state = MemoryState(weights=w, momentum=w, chunk_weights=w)
    assert (state.offset, state.tokens_seen, state.conv, state.accumulator) == (0, 0, {}, None)


def test_advanced_adds_the_tokens_and_replaces_everything_it_is_given():
    state = make()
    w, m, c, acc = tensors(2, 3, 4, seed=7), tensors(2, 3, 4, seed=8), tensors(2, 3, 4, seed=9), tensors(1)
    later = state.advanced(3, w, m, c, offset=4, accumulator=acc)
    assert later.tokens_seen == 8 and later.offset == 4
    assert later.weights is w and later.momentum is m and later.chunk_weights is c
    assert later.accumulator is acc
    assert later.conv is state.conv  # caches are the projections' business, not the recurrence's
    assert state.tokens_seen == 5 and state.offset == 1  # frozen: the old state is untouched


def test_advanced_without_an_accumulator_drops_it():
    later = make(accumulator=True).advanced(0, *tensors(1, n=3), offset=0)
    assert later.accumulator is None and later.tokens_seen == 5


def test_carried_is_the_accumulator_when_there_is_one_else_the_weights():
    plain, miras = make(), make(accumulator=True)
    assert plain.carried is plain.weights
    assert miras.carried is miras.accumulator


def test_detach_cuts_every_tensor_from_the_graph_and_keeps_the_values():
    for state in (make(), make(accumulator=True)):
        cut = state.detach()
        fields = ("weights", "momentum", "chunk_weights") + (("accumulator",) if state.accumulator else ())
        for name in fields:
            for before, after in zip(getattr(state, name), getattr(cut, name), strict=True):
                assert before.requires_grad and not after.requires_grad, name
                assert torch.equal(before, after), name
        assert set(cut.conv) == {"q", "k"}
        assert not cut.conv["q"].requires_grad and torch.equal(cut.conv["q"], state.conv["q"])
        assert (cut.offset, cut.tokens_seen) == (state.offset, state.tokens_seen)
    assert make().detach().accumulator is None


def test_numel_counts_weights_momentum_chunk_start_caches_and_accumulator_by_hand():
    # 3 tuples of 2 tensors of 2*3*4 = 24, two caches of 1*3*6 = 18
    assert make().numel() == 3 * 2 * 24 + 2 * 18
    assert make(accumulator=True).numel() == 4 * 2 * 24 + 2 * 18
