"""Titans MAC (Eq. 21–25): masks, segment-wise attention, retrieval, causal write/read, by hand."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from neural_memory.titans.mac import MemoryAsContext

from . import hand_memory as hand
from .hand_attention import hand_attention
from .on_meta import run_on_meta, tensors_in

DT = torch.float64
TOL = {"rtol": 0.0, "atol": 1e-10}
FROZEN = {"gates": "fixed", "fixed_gates": (0.0, 0.5, 0.0)}  # alpha = theta = 0: the memory never changes


def make_mac(seed=0, memory=None, **overrides):
    torch.manual_seed(seed)
    config = {"segment_len": 4, "n_persistent": 2, "heads": 2, "memory": {"chunk_size": 2, **(memory or {})}}
    mac = MemoryAsContext(8, **{**config, **overrides}).to(DT)
    with torch.no_grad():
        mac.persistent.tokens.normal_()
        if mac.memory is not None:  # the RMSNorm gain starts at ones; make it visible
            mac.memory.out_norm.weight.uniform_(0.5, 1.5)
    return mac


def visible(n, n_p):
    """Segment query i of n sees every persistent row, h_{<=i} and S_{<=i}: ``(n, N_p + 2 n)`` bool."""
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    return torch.cat([torch.ones(n, n_p, dtype=torch.bool), causal, causal], 1)


def spy(module, name):
    """Record every result of ``module.<name>`` (the method still runs)."""
    records, original = [], getattr(module, name)

    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        records.append(result)
        return result

    setattr(module, name, wrapper)
    return records


# -- Eq. 22-23: the extended segment and its mask -----------------------------------------------------------


@pytest.mark.equation("titans", 22)
@pytest.mark.equation("titans", 23)
def test_extended_mask_elementwise_small_case():
    mac = make_mac(segment_len=3, n_persistent=2)
    #            P  P | h1 h2 h3 | s1 s2 s3   (segment query i sees P, h_{<=i}, s_{<=i})
    expected = [
        [1, 1, 1, 0, 0, 1, 0, 0],
        [1, 1, 1, 1, 0, 1, 1, 0],
        [1, 1, 1, 1, 1, 1, 1, 1],
    ]
    assert torch.equal(mac.extended_mask(), torch.tensor(expected, dtype=torch.bool))
    no_memory = make_mac(segment_len=3, n_persistent=2, use_memory=False)
    expected = [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]  # P P | s1 s2 s3
    assert torch.equal(no_memory.extended_mask(), torch.tensor(expected, dtype=torch.bool))


@pytest.mark.equation("titans", 22)
def test_extended_segment_is_persistent_then_history_then_segment_in_every_segment():
    # frozen memory: h of every segment is the hand read of M_0 with that segment's queries
    mac = make_mac(memory=FROZEN)
    extended = spy(mac, "extended_segment")
    x = torch.randn(1, 12, 8, dtype=DT)
    mac(x)
    m0 = hand.initial_weights(mac.memory)
    assert len(extended) == 3
    for t, s_tilde in enumerate(extended):
        assert s_tilde.shape == (1, 2 + 4 + 4, 8)
        assert torch.equal(s_tilde[0, :2], mac.persistent.tokens.detach())  # same P in every segment
        torch.testing.assert_close(
            s_tilde[0, 2:6], hand.retrieve(mac.memory, m0, x[0, 4 * t : 4 * t + 4]), **TOL
        )
        assert torch.equal(s_tilde[:, 6:], x[:, 4 * t : 4 * t + 4])


@pytest.mark.equation("titans", 22)
@pytest.mark.equation("titans", 23)
@pytest.mark.parametrize("pieces", [(8,), (3, 2, 3), (1,) * 8])
def test_segment_attention_with_memory_by_hand_over_persistent_history_and_segment(pieces):
    # Frozen memory (alpha = theta = 0): M stays M_0, so h of every segment (Eq. 21) and the read-out of the
    # gate (Eq. 25) are hand reads of M_0. Eq. 22-23 by hand: query i attends over [P | h | S] and sees all of
    # P, h_{<=i} and S_{<=i}. The input arrives in `pieces` (streaming inside a segment).
    mac = make_mac(memory=FROZEN)
    x = torch.randn(2, 8, 8, dtype=DT)
    outs, state, start = [], None, 0
    for n in pieces:
        out, state = mac(x[:, start : start + n], state)
        outs.append(out)
        start += n
    out = torch.cat(outs, dim=1)
    m0, p = hand.initial_weights(mac.memory), mac.persistent.tokens
    for b in range(2):
        for start in (0, 4):
            segment = x[b, start : start + 4]
            h = hand.retrieve(mac.memory, m0, segment)
            y = hand_attention(mac.attention, segment, torch.cat([p, h, segment]), visible(4, 2))
            expected = y * torch.sigmoid(hand.retrieve(mac.memory, m0, y))
            torch.testing.assert_close(out[b, start : start + 4], expected, **TOL)


@pytest.mark.equation("titans", 23)
def test_without_memory_mac_is_segmentwise_causal_attention_with_prefix():
    mac = make_mac(segment_len=4, n_persistent=2, use_memory=False)
    x = torch.randn(2, 10, 8, dtype=DT)  # segments of 4, 4, 2
    out, _ = mac(x)
    p = mac.persistent.tokens
    for b in range(2):
        for start in range(0, 10, 4):
            seg = x[b, start : start + 4]
            n = seg.shape[0]
            visible = torch.cat(
                [torch.ones(n, 2, dtype=torch.bool), torch.ones(n, n, dtype=torch.bool).tril()], 1
            )
            expected = hand_attention(mac.attention, seg, torch.cat([p, seg]), visible)
            torch.testing.assert_close(out[b, start : start + n], expected, **TOL)


@pytest.mark.equation("titans", 23)
@pytest.mark.parametrize("memory", [FROZEN, {}])
def test_no_attention_across_segments(memory):
    # theta = alpha = 0: the memory is constant, so changing segment 1 must not change segments 2 and 3.
    # With a learning memory (positive control) the change does reach later segments, through M only.
    mac = make_mac(memory=memory)
    x = torch.randn(1, 12, 8, dtype=DT)
    changed = x.clone()
    changed[:, :4] += torch.randn(1, 4, 8, dtype=DT)
    out, changed_out = mac(x)[0], mac(changed)[0]
    later_equal = torch.allclose(out[:, 4:], changed_out[:, 4:], rtol=0, atol=1e-12)
    assert later_equal == (memory is FROZEN)
    assert not torch.allclose(out[:, :4], changed_out[:, :4])


# -- Eq. 21: retrieval --------------------------------------------------------------------------------


@pytest.mark.equation("titans", 21)
def test_first_history_depends_only_on_m0_and_first_segment():
    mac = make_mac()
    x = torch.randn(1, 12, 8, dtype=DT)
    changed = x.clone()
    changed[:, 4:] = torch.randn(1, 8, 8, dtype=DT)
    first = spy(mac, "retrieve_history")
    mac(x)
    mac(changed)
    h1, h1_changed = first[0][0], first[3][0]
    assert h1.shape == (1, 4, 8)  # one retrieved row per segment row (N_l = C)
    torch.testing.assert_close(h1, h1_changed, **TOL)
    # and it is exactly the read of M_0 with the segment's queries (by hand)
    torch.testing.assert_close(
        h1[0], hand.retrieve(mac.memory, hand.initial_weights(mac.memory), x[0, :4]), **TOL
    )
    with torch.no_grad():  # it does depend on M_0
        mac.memory.memory.initial_weights[0].mul_(2.0)
    mac(x)
    assert not torch.allclose(first[-3][0], h1)


@pytest.mark.equation("titans", 21)
@pytest.mark.equation("titans", 24)
@pytest.mark.equation("titans", 25)
def test_segments_by_hand_write_attention_output_read_updated_memory():
    # The whole MAC by hand with a learning linear memory (depth 1, chunk 2, fixed gates, two heads):
    # Eq. 21: h = the segment's queries read M_{t-1}; Eq. 22-23: attention over [P | h | S];
    # Eq. 24: the attention output y (not the segment) is written, token by token (Eq. 13-14);
    # Eq. 25, causal reading: y_i's query reads the memory after y_{<=i}; o = y * sigmoid(read-out).
    alpha, eta, theta = 0.1, 0.6, 0.4
    mac = make_mac(memory={"depth": 1, "heads": 2, "gates": "fixed", "fixed_gates": (alpha, eta, theta)})
    x = torch.randn(2, 8, 8, dtype=DT)
    out, state = mac(x)
    memory, p = mac.memory, mac.persistent.tokens
    for b in range(2):
        w = [layers[0] for layers in hand.initial_weights(memory)]  # per head, M_0 (4, 4)
        s = [torch.zeros_like(wh) for wh in w]
        for start in (0, 4):
            segment = x[b, start : start + 4]
            h = hand.retrieve(memory, [[wh] for wh in w], segment)
            y = hand_attention(mac.attention, segment, torch.cat([p, h, segment]), visible(4, 2))
            keys, values, queries = (hand.project(memory, name, y) for name in "kvq")
            reads = []
            for head in range(2):
                gates = ([alpha] * 4, [eta] * 4, [theta] * 4)
                after, _, s[head] = hand.linear_memory_loop(
                    w[head], s[head], keys[head], values[head], *gates, chunk_size=2
                )
                reads.append(torch.stack([queries[head][i] @ after[i] for i in range(4)]))
                assert not torch.allclose(after[-1], w[head], atol=1e-3)  # the memory learns
                w[head] = after[-1]
            expected = y * torch.sigmoid(hand.output(memory, reads, y))
            torch.testing.assert_close(out[b, start : start + 4], expected, **TOL)
        for head in range(2):
            torch.testing.assert_close(state.memory.weights[0][b * 2 + head], w[head], **TOL)
            torch.testing.assert_close(state.memory.momentum[0][b * 2 + head], s[head], **TOL)


@pytest.mark.equation("titans", 24)
def test_frozen_memory_does_not_change_across_segments():
    mac = make_mac(memory=FROZEN)
    _, state = mac(torch.randn(1, 12, 8, dtype=DT))
    for got, want in zip(state.memory.weights, mac.memory.memory.initial_weights, strict=True):
        torch.testing.assert_close(got, want.detach(), rtol=0, atol=0)


@pytest.mark.equation("titans", 25)
@settings(max_examples=10)
@given(t=st.integers(0, 10), seed=st.integers(0, 2**16))
def test_outputs_are_causal_inside_and_across_segments(t, seed):
    mac = make_mac(memory={"chunk_size": 3})
    x = torch.randn(1, 11, 8, dtype=DT)
    changed = x.clone()
    changed[:, t + 1 :] = torch.randn(1, 10 - t, 8, dtype=DT, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(mac(changed)[0][:, : t + 1], mac(x)[0][:, : t + 1], **TOL)


def test_state_between_segments_holds_no_tokens():
    mac = make_mac()
    _, state = mac(torch.randn(1, 8, 8, dtype=DT))
    assert (state.offset, state.segment_tokens.shape[1], state.memory_tokens.shape[1]) == (0, 0, 0)
    assert state.retrieval is None
    _, state = mac(torch.randn(1, 3, 8, dtype=DT), state)
    assert (state.offset, state.segment_tokens.shape[1], state.memory_tokens.shape[1]) == (3, 3, 3)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"segment_len": 0}, ValueError, "segment_len must be an int >= 1"),
        ({"use_memory": 1}, TypeError, "use_memory must be a bool"),
        ({"heads": 3}, ValueError, "heads must divide dim"),
        ({"memory": "deep"}, TypeError, "memory must be a dict"),
    ],
)
def test_bad_configuration_raises(kwargs, error, match):
    torch.manual_seed(0)
    with pytest.raises(error, match=match):
        MemoryAsContext(8, **{"segment_len": 4, "n_persistent": 2, "heads": 2, **kwargs})


def test_bad_input_raises():
    with pytest.raises(ValueError, match=r"x must have shape \(batch, seq, 8\)"):
        make_mac()(torch.randn(1, 4, 6, dtype=DT))


# -- construction, states and streaming ---------------------------------------------------------------------


def test_mac_construction_by_hand():
    with pytest.raises(ValueError, match=r"^dim must be an int >= 1, got 0$"):
        MemoryAsContext(0, segment_len=4, n_persistent=1, heads=1)
    assert MemoryAsContext(1, segment_len=1, n_persistent=1, heads=1).dim == 1
    with pytest.raises(TypeError, match=r"^use_memory must be a bool, got int$"):
        MemoryAsContext(8, segment_len=4, n_persistent=1, heads=2, use_memory=1)
    mac = MemoryAsContext(8, segment_len=4, n_persistent=3, heads=2, memory={"chunk_size": 3, "depth": 1})
    assert (mac.segment_len, mac.n_memory, mac.persistent.n_persistent, mac.attention.heads) == (4, 4, 3, 2)
    assert mac.memory.chunk_size == 3 and mac.memory.memory.depth == 1
    plain = MemoryAsContext(8, segment_len=4, n_persistent=3, heads=2, use_memory=False)
    assert plain.memory is None and plain.n_memory == 0 and plain.use_memory is False


def test_mac_stream_start_needs_a_positive_batch_size():
    with pytest.raises(ValueError, match=r"^batch_size must be an int >= 1, got 0$"):
        make_mac().init_state(0)


@pytest.mark.parametrize("use_memory", [True, False])
def test_mac_stream_starts_empty_in_the_requested_dtype_and_device(use_memory):
    mac = MemoryAsContext(8, segment_len=4, n_persistent=2, heads=2, use_memory=use_memory)
    state = mac.init_state(3, dtype=torch.bfloat16)
    assert state.offset == 0 and state.retrieval is None
    for rows in (state.memory_tokens, state.segment_tokens):
        assert rows.shape == (3, 0, 8) and rows.dtype == torch.bfloat16
    if use_memory:
        assert {w.dtype for w in state.memory.weights} == {torch.bfloat16}
        assert state.memory.tokens_seen == 0
    else:
        assert state.memory is None
    # a module on the CPU asked for a state elsewhere: every tensor of the state goes there
    on_meta = mac.init_state(3, device="meta")
    assert {t.device.type for t in tensors_in(on_meta)} == {"meta"}


def test_mac_state_counts_and_detaches_its_tensors():
    mac = make_mac()
    x = torch.randn(1, 6, 8, dtype=DT, requires_grad=True)
    _, state = mac(x)  # one segment of 4 and 2 rows of the next
    assert state.offset == 2
    expected = (
        state.memory.numel()
        + state.retrieval.numel()
        + state.memory_tokens.numel()
        + state.segment_tokens.numel()
    )
    assert state.numel() == expected and state.memory_tokens.numel() == 2 * 8
    detached = state.detach()
    assert detached.offset == 2
    assert not detached.memory_tokens.requires_grad and not detached.segment_tokens.requires_grad
    assert all(not w.requires_grad for w in (*detached.memory.weights, *detached.retrieval.weights))
    torch.testing.assert_close(detached.segment_tokens, state.segment_tokens.detach(), rtol=0, atol=0)
    _, between = make_mac(use_memory=False)(x[:, :4])
    assert between.detach().memory is None and between.numel() == 0


def test_mac_on_an_empty_sequence_returns_nothing_and_keeps_the_state():
    mac = make_mac()
    state = mac.init_state(2)
    out, after = mac(torch.randn(2, 0, 8, dtype=DT), state)
    assert out.shape == (2, 0, 8)
    assert after is state


@pytest.mark.parametrize("use_memory", [True, False])
@pytest.mark.parametrize("cut", [0, 1, 4, 6, 9])
def test_mac_streaming_in_two_calls_equals_one_call(cut, use_memory):
    mac = make_mac(use_memory=use_memory)
    x = torch.randn(2, 9, 8, dtype=DT)
    whole, whole_state = mac(x)
    first, state = mac(x[:, :cut])
    second, state = mac(x[:, cut:], state)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, **TOL)
    assert state.offset == whole_state.offset == 1
    if use_memory:
        for a, b in zip(state.memory.weights, whole_state.memory.weights, strict=True):
            torch.testing.assert_close(a, b, **TOL)


def test_mac_in_bfloat16_keeps_every_output_and_state_tensor_in_bfloat16():
    """Caches and token buffers made between segments follow the input's dtype (no silent promotion)."""
    torch.manual_seed(0)
    mac = MemoryAsContext(8, segment_len=4, n_persistent=2, heads=2, memory={"chunk_size": 2}).to(
        torch.bfloat16
    )
    x = torch.randn(1, 8, 8).to(torch.bfloat16)  # two whole segments: the state is between segments
    out, state = mac(x)
    assert out.dtype == torch.bfloat16
    assert state.memory_tokens.dtype == state.segment_tokens.dtype == torch.bfloat16
    out, state = mac(x[:, :3], state)  # inside a segment: the retrieval state and its caches
    assert out.dtype == torch.bfloat16
    assert {c.dtype for c in state.retrieval.conv.values()} == {torch.bfloat16}
    assert {c.dtype for c in state.memory.conv.values()} == {torch.bfloat16}


def test_mac_on_an_empty_first_call_starts_its_state_in_the_input_dtype_and_device():
    mac = make_mac()
    _, state = mac(torch.zeros(2, 0, 8, dtype=DT))
    assert state.memory_tokens.dtype == state.segment_tokens.dtype == DT
    assert {w.dtype for w in state.memory.weights} == {DT}
    _, on_meta = make_mac().to("meta")(torch.zeros(2, 0, 8, dtype=DT, device="meta"))
    assert on_meta.memory_tokens.device.type == "meta" and on_meta.segment_tokens.device.type == "meta"


def test_extended_mask_is_made_on_the_requested_device():
    mask = make_mac().extended_mask(device="meta")
    assert mask.device.type == "meta" and mask.shape == (4, 2 + 4 + 4)


@pytest.mark.parametrize("use_memory", [True, False])
def test_mac_keeps_every_tensor_of_output_and_state_on_the_input_device(use_memory, monkeypatch):
    """Over a segment boundary (seq 5, segment 4, two calls); ``meta`` stands in for CUDA (on_meta.py)."""
    run_on_meta(make_mac(memory={"impl": "reference"}, use_memory=use_memory), monkeypatch)


# -- checkpointing: the memory's checkpoint_chunks applied to whole segments ------------------------------


@pytest.mark.parametrize(
    ("offset", "length", "bounds"),
    [
        (0, 9, [(0, 4), (4, 8), (8, 9)]),
        (3, 9, [(0, 1), (1, 5), (5, 9)]),
        (1, 2, [(0, 2)]),
        (0, 0, []),
    ],
)
def test_a_call_is_cut_into_the_rest_of_the_segment_then_whole_segments(offset, length, bounds):
    assert make_mac()._piece_bounds(offset, length) == bounds


@pytest.mark.parametrize(
    ("setting", "pieces", "length", "group"),
    [
        (0, 7, 27, 7),  # off
        (0, 1, 3, 1),  # off, one piece: one group of one
        (2, 7, 27, 1),  # 2 chunks of 2 tokens = 1 segment of 4
        (4, 7, 27, 2),  # 4 chunks = 2 segments
        (1, 7, 27, 1),  # half a segment still keeps one per segment
        (14, 7, 27, 7),  # one group covers the call: no checkpointing
        (13, 7, 27, 6),  # 27 tokens are ceil(27 / 2) = 14 chunks, so 13 is not the whole call
        ("auto", 257, 1026, 11),  # 513 chunks > 512: groups of ceil(sqrt(513)) = 23 chunks -> 11 segments ...
        ("auto", 257, 1025, 11),  # ... 1025 tokens are 513 chunks (the last one partial) ...
        ("auto", 256, 1024, 256),  # ... 512 chunks: every state kept
    ],
)
def test_segments_per_checkpoint_follow_the_memorys_setting_over_the_whole_call(
    setting, pieces, length, group
):
    mac = make_mac(memory={"checkpoint_chunks": setting})
    assert mac._pieces_per_checkpoint(pieces, length) == group
    with torch.no_grad():  # nothing kept for a backward pass, so nothing to checkpoint
        assert mac._pieces_per_checkpoint(pieces, length) == pieces
    assert make_mac(use_memory=False)._pieces_per_checkpoint(pieces, length) == pieces


@pytest.mark.parametrize("start", [0, 3])
def test_checkpointed_mac_gives_the_same_outputs_state_and_gradients_and_keeps_less(start):
    """Groups of one segment (checkpoint_chunks=2, chunk 2, C=4), from a segment's start and inside one."""
    results, kept = [], []
    for setting in (0, 2):
        mac = make_mac(memory={"checkpoint_chunks": setting})
        x = torch.randn(2, 27, 8, dtype=DT, generator=torch.Generator().manual_seed(5), requires_grad=True)
        _, state = mac(x[:, :start].detach())
        state = state if start else None
        storages = {}

        def pack(t, storages=storages):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y, end = mac(x, state)
        kept.append(sum(storages.values()))
        loss = (y**2).sum() + sum((w**2).sum() for w in end.memory.weights) + end.segment_tokens.sum()
        results.append((y, end, torch.autograd.grad(loss, [x, *mac.parameters()])))
    (y0, s0, g0), (y1, s1, g1) = results
    torch.testing.assert_close(y1, y0, rtol=0, atol=0)
    assert s1.offset == s0.offset == (start + 27) % 4
    for a, b in zip(
        s1.memory.weights + s1.memory.momentum, s0.memory.weights + s0.memory.momentum, strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(s1.segment_tokens, s0.segment_tokens, rtol=0, atol=0)
    for a, b in zip(g1, g0, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)
    assert kept[1] < 0.5 * kept[0]


@pytest.mark.parametrize(("setting", "calls"), [(0, 0), (28, 0), (2, 7), (4, 4)])
def test_mac_checkpoints_only_when_a_group_is_shorter_than_the_call(setting, calls, checkpoint_calls):
    """27 tokens from a segment's start: 7 pieces; groups of 1 piece (2 chunks) or 2 pieces (4 chunks)."""
    import neural_memory.titans.mac as mac_module

    seen = checkpoint_calls(mac_module)
    mac = make_mac(memory={"checkpoint_chunks": setting})
    mac(torch.randn(2, 27, 8, dtype=DT, requires_grad=True))
    assert seen == [True] + [False] * (calls - 1) if calls else seen == []
