"""The Continuum Memory System (NL v1, Eq. 70–74, N-U9, N-U11, N-U12).

Expectations come from MLP stacks and per-token SGD loops written out here (float64, one sequence at a time
with unbatched weights and autograd), never from the module under test. The module's chunk-parallel form is
also checked against its own token-by-token reference (outputs, final states, outer gradients).
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn
from torch.nn import functional as F

from neural_memory.models.lm import GatedMLP
from neural_memory.nl.cms import (
    CMSState,
    ContinuumMemory,
    cms_chain,
    cms_independent,
    continuum_memory_reference,
    mlp_block,
)

from .helpers import F64
from .helpers import randn as _randn

DIM, HIDDEN = 3, 4


def _cms(chunk_sizes, rates, seed=0, **kwargs) -> ContinuumMemory:
    torch.manual_seed(seed)
    return ContinuumMemory(DIM, chunk_sizes, rates=rates, hidden=HIDDEN, **kwargs).double()


def _swiglu(a: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """A SwiGLU MLP in the row convention, written out: (silu(a Wg) * a Wu) Wd."""
    return (F.silu(a @ gate) * (a @ up)) @ down


def _initial(cms: ContinuumMemory) -> list[list[torch.Tensor]]:
    """θ_0 of every level as detached float64 copies ``[gate, up, down]``."""
    return [
        [level.gate.detach().clone(), level.up.detach().clone(), level.down.detach().clone()]
        for level in cms.levels
    ]


def _square_loss(targets: torch.Tensor):
    """Per-token task loss ½‖y_t − target_t‖², indexed by stream position."""
    return lambda y, start: 0.5 * ((y - targets[:, start : start + y.shape[1]]) ** 2).sum(-1)


def _token_grads(weights, a, target):
    """∇ of ½‖MLP(a) − target‖² w.r.t. one level's weights, at those weights (autograd, one token)."""
    leaves = [w.clone().requires_grad_(True) for w in weights]
    loss = 0.5 * ((_swiglu(a, *leaves) - target) ** 2).sum()
    return torch.autograd.grad(loss, leaves)


def _states_close(got, expected, atol=1e-12, rtol=0.0):
    for level_got, level_exp in zip(got, expected, strict=True):
        for g, e in zip(level_got, level_exp, strict=True):
            torch.testing.assert_close(g, e, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------------------------------
# Eq. 70 — the forward chain; with all rates 0 a plain MLP stack; N-U12 ad-hoc stacking
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 70)
def test_zero_rates_is_a_plain_mlp_stack():
    cms = _cms((8, 4, 2), rates=0.0)
    x = _randn(2, 11, DIM, seed=1)
    expected = x
    for gate, up, down in _initial(cms):
        expected = _swiglu(expected, gate, up, down)
    y, state = cms(x, loss_fn=_square_loss(_randn(2, 11, DIM, seed=2)))
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-12)
    for level_state, level_init in zip(state.weights, _initial(cms), strict=True):
        for w, w0 in zip(level_state, level_init, strict=True):
            assert torch.equal(w, w0.expand_as(w))


@pytest.mark.equation("nl", 70)
def test_residual_chain_adds_each_block_to_its_input():
    cms = _cms((2, 1), rates=0.0, residual=True)
    x = _randn(1, 5, DIM, seed=3)
    expected = x
    for gate, up, down in _initial(cms):
        expected = expected + _swiglu(expected, gate, up, down)
    torch.testing.assert_close(cms(x)[0], expected, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 70)
def test_normalised_chain_is_pre_norm_input_and_rms_normalised_branch_by_hand():
    # Hope's stabilised level (docs/errata.md, NL Eq. 94–97): a ← a + rms(MLP(a / rms(a)))
    cms = _cms((2, 1), rates=0.0, residual=True, pre_norm=True, out_norm=True)
    x = 3.0 * _randn(2, 5, DIM, seed=5)
    expected = x
    for gate, up, down in _initial(cms):
        n = expected / torch.sqrt((expected**2).mean(-1, keepdim=True))
        z = _swiglu(n, gate, up, down)
        expected = expected + z / torch.sqrt((z**2).mean(-1, keepdim=True))
    y, pairs = cms_chain(
        x,
        [tuple(w.expand(2, *w.shape) for w in lvl) for lvl in _initial(cms)],
        residual=True,
        pre_norm=True,
        out_norm=True,
    )
    torch.testing.assert_close(cms(x)[0], expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-12)
    for _, out in pairs:  # the reconstruction signal reads the normalised branch: unit RMS per token
        torch.testing.assert_close((out**2).mean(-1), torch.ones(2, 5, dtype=F64), rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 70)
def test_cms_chain_function_applies_the_levels_in_order():
    x = _randn(2, 3, DIM, seed=4)
    levels = [
        tuple(_randn(2, *shape, seed=10 * i + j) for j, shape in enumerate([(DIM, 5), (DIM, 5), (5, DIM)]))
        for i in range(3)
    ]
    y, pairs = cms_chain(x, levels)
    expected, expected_pairs = x, []
    for gate, up, down in levels:
        out = torch.stack([_swiglu(expected[b], gate[b], up[b], down[b]) for b in range(2)])
        expected_pairs.append((expected, out))
        expected = out
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-12)
    for (a, g), (a_exp, g_exp) in zip(pairs, expected_pairs, strict=True):  # (input, block output) per level
        torch.testing.assert_close(a, a_exp, rtol=0, atol=1e-12)
        torch.testing.assert_close(g, g_exp, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 70)
def test_one_level_from_a_pretrained_ffn_is_that_ffn():
    # N-U12 and "a Transformer FFN when k = 1": copy the project's SwiGLU FFN into a one-level CMS
    torch.manual_seed(5)
    ffn = GatedMLP(DIM, 7).double()
    cms = ContinuumMemory.from_mlps([ffn], (4,), rates=0.0)
    x = _randn(2, 6, DIM, seed=6)
    torch.testing.assert_close(cms(x)[0], ffn(x), rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 70)
def test_ad_hoc_stacking_copies_the_pretrained_weights_and_keeps_them_at_zero_rate():
    torch.manual_seed(7)
    ffns = [GatedMLP(DIM, 5).double() for _ in range(3)]
    cms = ContinuumMemory.from_mlps(ffns, (4, 2, 1), rates=0.0)
    ffns[0].gate.weight.data.add_(1.0)  # a copy: editing the source afterwards changes nothing
    torch.manual_seed(7)
    pristine = [GatedMLP(DIM, 5).double() for _ in range(3)]
    x = _randn(1, 9, DIM, seed=8)
    expected = x
    for ffn in pristine:
        expected = ffn(expected)
    torch.testing.assert_close(cms(x)[0], expected, rtol=0, atol=1e-12)


def _plain_mlps(activation, seed):
    """Two bias-free ``Linear(DIM, 6), activation, Linear(6, DIM)`` stacks, float64."""
    torch.manual_seed(seed)
    return [
        nn.Sequential(nn.Linear(DIM, 6, bias=False), activation(), nn.Linear(6, DIM, bias=False)).double()
        for _ in range(2)
    ]


@pytest.mark.equation("nl", 70)
def test_ad_hoc_stacking_of_plain_two_layer_mlps():
    mlps = _plain_mlps(nn.GELU, seed=9)
    cms = ContinuumMemory.from_mlps(mlps, (2, 1), rates=0.0)
    x = _randn(2, 4, DIM, seed=10)
    torch.testing.assert_close(cms(x)[0], mlps[1](mlps[0](x)), rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 70)
def test_ad_hoc_stacking_rejects_what_it_cannot_copy():
    with pytest.raises(TypeError, match="mlps"):
        ContinuumMemory.from_mlps([nn.Linear(DIM, DIM)], (1,), rates=0.0)
    with pytest.raises(ValueError, match="bias"):
        ContinuumMemory.from_mlps(
            [nn.Sequential(nn.Linear(DIM, 4), nn.GELU(), nn.Linear(4, DIM))], (1,), rates=0.0
        )
    with pytest.raises(ValueError, match="chunk_sizes"):
        ContinuumMemory.from_mlps([GatedMLP(DIM, 4)], (2, 1), rates=0.0)


# --------------------------------------------------------------------------------------------------
# Eq. 71 — the chunked update
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 71)
@pytest.mark.parametrize("signal", ["task", "reconstruction"])
def test_a_level_changes_only_at_multiples_of_its_chunk(signal):
    chunks, steps = (12, 4, 1), 50
    cms = _cms(chunks, rates=(0.05, 0.05, 0.05), signal=signal)
    x, targets = _randn(1, steps, DIM, seed=11), _randn(1, steps, DIM, seed=12)
    loss_fn = _square_loss(targets) if signal == "task" else None
    state, history = cms.init_state(1, dtype=F64), []
    with torch.no_grad():
        for t in range(steps):
            _, state = cms(x[:, t : t + 1], state, loss_fn=loss_fn)
            history.append(state.weights)
    before = [tuple(w.expand(1, *w.shape) for w in level) for level in _initial(cms)]
    for level, chunk in enumerate(chunks):
        updates = 0
        for i in range(1, steps + 1):
            old, new = (before if i == 1 else history[i - 2])[level], history[i - 1][level]
            changed = not all(torch.equal(a, b) for a, b in zip(old, new, strict=True))
            assert changed == (i % chunk == 0), (level, i)
            updates += changed
        assert updates == steps // chunk


@pytest.mark.equation("nl", 71)
def test_chunk_size_one_is_per_token_sgd():
    cms = _cms((1,), rates=0.1)
    x, targets = _randn(2, 7, DIM, seed=13), _randn(2, 7, DIM, seed=14)
    y, state = cms(x, loss_fn=_square_loss(targets))
    for b in range(2):
        weights = _initial(cms)[0]
        for t in range(7):
            out = _swiglu(x[b, t], *weights)
            torch.testing.assert_close(y[b, t], out, rtol=0, atol=1e-12)
            grads = _token_grads(weights, x[b, t], targets[b, t])
            weights = [w - 0.1 * g for w, g in zip(weights, grads, strict=True)]
        for got, exp in zip(state.weights[0], weights, strict=True):
            torch.testing.assert_close(got[b], exp, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 71)
def test_chunked_update_is_the_sum_of_per_token_gradients_at_the_frozen_parameters():
    chunk, steps, rate = 4, 10, 0.05
    cms = _cms((chunk,), rates=rate)
    x, targets = _randn(2, steps, DIM, seed=15), _randn(2, steps, DIM, seed=16)
    y, state = cms(x, loss_fn=_square_loss(targets))
    for b in range(2):
        weights, acc = _initial(cms)[0], None
        for t in range(steps):
            torch.testing.assert_close(y[b, t], _swiglu(x[b, t], *weights), rtol=0, atol=1e-12)
            grads = _token_grads(weights, x[b, t], targets[b, t])
            acc = grads if acc is None else [a + g for a, g in zip(acc, grads, strict=True)]
            if (t + 1) % chunk == 0:
                weights, acc = [w - rate * a for w, a in zip(weights, acc, strict=True)], None
        for got, exp in zip(state.weights[0], weights, strict=True):
            torch.testing.assert_close(got[b], exp, rtol=0, atol=1e-12)
        for got, exp in zip(state.grads[0], acc, strict=True):  # the partial chunk (tokens 9, 10)
            torch.testing.assert_close(got[b], exp, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 71)
def test_printed_window_counts_the_previous_chunks_last_token_again():
    # Eq. 71 as printed sums t = i − C .. i: C + 1 terms, the previous chunk end (at the old θ) included
    chunk, steps, rate = 3, 9, 0.15
    cms = _cms((chunk,), rates=rate, window="printed")
    x, targets = _randn(1, steps, DIM, seed=17), _randn(1, steps, DIM, seed=18)
    _, state = cms(x, loss_fn=_square_loss(targets))
    weights, per_token = _initial(cms)[0], {}
    for t in range(1, steps + 1):
        per_token[t] = _token_grads(weights, x[0, t - 1], targets[0, t - 1])
        if t % chunk == 0:
            window = [per_token[s] for s in range(t - chunk, t + 1) if s >= 1]
            assert len(window) == (chunk if t == chunk else chunk + 1)
            total = [sum(g[j] for g in window) for j in range(3)]
            weights = [w - rate * g for w, g in zip(weights, total, strict=True)]
    for got, exp in zip(state.weights[0], weights, strict=True):
        torch.testing.assert_close(got[0], exp, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 71)
def test_reconstruction_signal_is_each_levels_local_autoassociative_gradient():
    # level ℓ learns ½‖MLP_ℓ(a) − a‖² on its own input a; the downstream level's loss does not reach it
    chunks, steps, rate = (2, 1), 4, 0.1
    cms = _cms(chunks, rates=rate, signal="reconstruction")
    x = _randn(1, steps, DIM, seed=19)
    y, state = cms(x)
    weights, acc = _initial(cms), [None, None]
    for t in range(1, steps + 1):
        a = x[0, t - 1]
        for level in range(2):
            grads = _token_grads(weights[level], a, a)
            acc[level] = (
                grads if acc[level] is None else [p + g for p, g in zip(acc[level], grads, strict=True)]
            )
            a = _swiglu(a, *weights[level])
        torch.testing.assert_close(y[0, t - 1], a, rtol=0, atol=1e-12)
        for level, chunk in enumerate(chunks):
            if t % chunk == 0:
                weights[level] = [w - rate * g for w, g in zip(weights[level], acc[level], strict=True)]
                acc[level] = None
    _states_close([[w[0] for w in level] for level in state.weights], weights)


def _outer_setup(variant, signal, window):
    # "<variant>-normalised": Hope's residual levels with pre-norm input and RMS-normalised branch
    variant, normalised = variant.removesuffix("-normalised"), variant.endswith("-normalised")
    norms = {"residual": True, "pre_norm": True, "out_norm": True} if normalised else {}
    cms = _cms(
        (8, 4, 2) if variant != "independent" else (2, 8, 4),
        rates=(0.02, 0.05, 0.01),
        variant=variant,
        signal=signal,
        window=window,
        seed=20,
        **norms,
    )
    head = nn.Parameter(_randn(DIM, DIM, seed=21))
    targets = _randn(2, 14, DIM, seed=22)
    loss_fn = (
        (lambda y, start: 0.5 * ((y @ head - targets[:, start : start + y.shape[1]]) ** 2).sum(-1))
        if signal == "task"
        else None
    )
    x = (0.5 * _randn(2, 14, DIM, seed=23)).requires_grad_(True)
    return cms, head, loss_fn, x


@pytest.mark.equation("nl", 71)
@pytest.mark.equation("nl", 72)
@pytest.mark.equation("nl", 73)
@pytest.mark.equation("nl", 74)
@pytest.mark.parametrize(
    "variant,signal,window",
    [
        ("sequential", "task", "chunk"),
        ("sequential", "reconstruction", "printed"),
        ("nested", "task", "printed"),
        ("nested", "reconstruction", "chunk"),
        ("independent", "task", "chunk"),
        ("independent", "reconstruction", "printed"),
        ("sequential-normalised", "reconstruction", "chunk"),
        ("nested-normalised", "task", "chunk"),
        ("nested-normalised", "reconstruction", "printed"),
    ],
)
def test_chunk_parallel_form_equals_the_token_by_token_reference(variant, signal, window):
    cms, head, loss_fn, x = _outer_setup(variant, signal, window)
    outer = [x, head, *cms.parameters()]
    results = []
    for run in (cms.forward, lambda *a, **k: continuum_memory_reference(cms, *a, **k)):
        y, state = run(x[:, :5], loss_fn=loss_fn)
        y2, state = run(x[:, 5:], state, loss_fn=loss_fn)
        y = torch.cat([y, y2], 1)
        final = sum((w**2).sum() for level in state.weights for w in level)
        objective = (y**2).sum() + final + sum((g**2).sum() for level in state.grads for g in level)
        grads = torch.autograd.grad(objective, outer, allow_unused=True)
        results.append((y, state, grads))
    (y_par, s_par, g_par), (y_ref, s_ref, g_ref) = results
    # the RMS norm of a small branch output amplifies float64 rounding of the batched matmuls a little
    atol, rtol = (1e-11, 1e-10) if variant.endswith("-normalised") else (1e-12, 0.0)
    torch.testing.assert_close(y_par, y_ref, rtol=rtol, atol=atol)
    _states_close(s_par.weights, s_ref.weights, atol=atol, rtol=rtol)
    _states_close(s_par.grads, s_ref.grads, atol=atol, rtol=rtol)
    assert s_par.position == s_ref.position == 14
    for got, exp in zip(g_par, g_ref, strict=True):
        assert (got is None) == (exp is None)
        if got is not None:
            torch.testing.assert_close(got, exp, rtol=max(rtol * 10, 1e-12), atol=1e-10)


def _array(shape):
    return arrays(np.float64, shape, elements=st.floats(-1, 1)).map(torch.from_numpy)


@pytest.mark.equation("nl", 71)
@settings(max_examples=15, deadline=None)
@given(
    x=_array((1, 13, DIM)),
    targets=_array((1, 13, DIM)),
    split=st.integers(0, 13),
    variant=st.sampled_from(["sequential", "nested", "independent"]),
    signal=st.sampled_from(["task", "reconstruction"]),
)
def test_two_calls_at_any_split_equal_one_call(x, targets, split, variant, signal):
    # the state carries each level's partial chunk: its accumulated gradient and the stream position (the
    # reconstruction signal of a chain runs level by level, each level in spans of its own chunk)
    cms = _cms((8, 4, 2), rates=(0.01, 0.02, 0.005), window="printed", variant=variant, signal=signal)
    loss_fn = _square_loss(targets)
    with torch.no_grad():
        y_one, s_one = cms(x, loss_fn=loss_fn)
        y_a, s_mid = cms(x[:, :split], loss_fn=loss_fn)
        y_b, s_two = cms(x[:, split:], s_mid, loss_fn=loss_fn)
    torch.testing.assert_close(torch.cat([y_a, y_b], 1), y_one, rtol=0, atol=1e-12)
    _states_close(s_two.weights, s_one.weights)
    _states_close(s_two.grads, s_one.grads)
    assert s_mid.position == split and s_two.position == 13


@pytest.mark.equation("nl", 71)
def test_state_size_does_not_depend_on_the_length():
    cms = _cms((8, 2), rates=0.1, signal="reconstruction")
    with torch.no_grad():
        sizes = {cms(_randn(2, n, DIM, seed=n))[1].numel() for n in (1, 7, 40)}
    assert len(sizes) == 1
    _, state = cms(_randn(2, 5, DIM, seed=34))  # with a graph: detach() cuts it, keeps the values
    cut = state.detach()
    assert cut.position == state.position and cut.numel() == state.numel()
    for level, level_cut in zip(state.weights + state.grads, cut.weights + cut.grads, strict=True):
        for w, c in zip(level, level_cut, strict=True):
            assert w.requires_grad and not c.requires_grad and torch.equal(w, c)


# --------------------------------------------------------------------------------------------------
# Eq. 72 / 73 — Nested and Sequential CMS: where the initial states are learned
# --------------------------------------------------------------------------------------------------


def _weights_per_step(cms, steps, seed):
    x = _randn(1, steps, DIM, seed=seed)
    state, history = cms.init_state(1, dtype=F64), []
    with torch.no_grad():
        for t in range(steps):
            _, state = cms(x[:, t : t + 1], state)
            history.append([[w[0].clone() for w in level] for level in state.weights])
    return history


@pytest.mark.equation("nl", 72)
def test_nested_level_returns_to_its_initial_value_at_its_parents_chunk_ends():
    # N-U11: block s+1 is reset after ⌈C^(s)/C^(s+1)⌉ = 8/2 of its steps, i.e. every 8 tokens
    cms = _cms((8, 2, 1), rates=0.1, variant="nested", signal="reconstruction")
    history, initial = _weights_per_step(cms, 24, seed=24), _initial(cms)
    for t in range(1, 25):
        at_init = [
            all(torch.equal(w, w0) for w, w0 in zip(history[t - 1][lvl], initial[lvl], strict=True))
            for lvl in range(3)
        ]
        assert at_init[0] == (t < 8)  # the slowest level has no parent: it leaves θ_0 at t = 8 for good
        # between restarts a level leaves θ_0 at its first own update: at θ_0 iff t mod parent < own chunk
        assert at_init[1] == (t % 8 < 2), t
        assert at_init[2] == (t % 2 < 1), t


@pytest.mark.equation("nl", 72)
def test_nested_parent_is_the_next_slower_level_whatever_the_chain_order():
    cms = _cms((1, 8, 2), rates=0.1, variant="nested", signal="reconstruction")
    assert cms.reset_periods == (2, None, 8)


@pytest.mark.equation("nl", 73)
def test_sequential_levels_leave_their_initial_state_at_their_first_update_and_never_return():
    chunks = (8, 2, 1)
    cms = _cms(chunks, rates=0.02, signal="reconstruction")
    history, initial = _weights_per_step(cms, 16, seed=25), _initial(cms)
    for t in range(1, 17):
        for lvl, chunk in enumerate(chunks):
            at_init = all(torch.equal(w, w0) for w, w0 in zip(history[t - 1][lvl], initial[lvl], strict=True))
            assert at_init == (t < chunk), (t, lvl)


@pytest.mark.equation("nl", 73)
def test_outer_gradient_of_every_initial_state_runs_through_the_inner_updates():
    # Eq. 73: θ_0 of every level is learned by the outer loop; its gradient must include the path through
    # the inner updates (create_graph). Compare autograd with central finite differences of the last output.
    cms = _cms((4, 2, 1), rates=(0.05, 0.05, 0.05), signal="reconstruction", seed=31)
    x, probe = 0.5 * _randn(1, 9, DIM, seed=32), _randn(DIM, seed=33)
    last_output = lambda: cms(x)[0][0, -1] @ probe  # noqa: E731
    grads = torch.autograd.grad(last_output(), list(cms.parameters()))
    eps = 1e-6
    for param, grad in zip(cms.parameters(), grads, strict=True):
        index = (param.shape[0] - 1, 1)
        with torch.no_grad():
            param[index] += eps
            up = last_output()
            param[index] -= 2 * eps
            down = last_output()
            param[index] += eps
        assert abs(float(grad[index]) - float(up - down) / (2 * eps)) < 1e-7
        assert float(grad.abs().sum()) > 0


# --------------------------------------------------------------------------------------------------
# Eq. 74 — Independent (head-wise) CMS
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 74)
def test_independent_with_one_hot_weights_is_a_single_mlp():
    cms = _cms((4, 2, 1), rates=0.0, variant="independent")
    with torch.no_grad():
        cms.mix.copy_(torch.tensor([0.0, 1.0, 0.0], dtype=F64))
    x = _randn(2, 5, DIM, seed=27)
    torch.testing.assert_close(cms(x)[0], _swiglu(x, *_initial(cms)[1]), rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 74)
def test_independent_levels_permute_with_their_weights():
    x = _randn(2, 3, DIM, seed=28)
    levels = [
        tuple(_randn(2, *shape, seed=10 * i + j) for j, shape in enumerate([(DIM, 5), (DIM, 5), (5, DIM)]))
        for i in range(3)
    ]
    mix = _randn(3, seed=29)
    y, _ = cms_independent(x, levels, mix)
    perm = [2, 0, 1]
    torch.testing.assert_close(
        cms_independent(x, [levels[i] for i in perm], mix[perm])[0], y, rtol=0, atol=1e-12
    )
    expected = sum(
        mix[i] * torch.stack([_swiglu(x[b], *(w[b] for w in levels[i])) for b in range(2)]) for i in range(3)
    )
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 74)
def test_independent_mix_starts_as_the_mean():
    cms = _cms((2, 1), rates=0.0, variant="independent")
    x = _randn(1, 4, DIM, seed=30)
    expected = 0.5 * (_swiglu(x, *_initial(cms)[0]) + _swiglu(x, *_initial(cms)[1]))
    torch.testing.assert_close(cms(x)[0], expected, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# Bad configurations and inputs
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 71)
@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"chunk_sizes": ()}, "chunk_sizes"),
        ({"chunk_sizes": (4, 0)}, "chunk_sizes"),
        ({"chunk_sizes": (4, 2.0)}, "chunk_sizes"),
        ({"chunk_sizes": (6, 4)}, "divide"),
        ({"chunk_sizes": (8, 3, 1)}, "divide"),
        ({"rates": -0.1}, "rates"),
        ({"rates": (0.1, float("nan"))}, "rates"),
        ({"rates": (0.1, 0.1, 0.1)}, "rates"),
        ({"variant": "parallel"}, "variant"),
        ({"signal": "mse"}, "signal"),
        ({"window": "open"}, "window"),
        ({"activation": "relu"}, "activation"),
        ({"dim": 0}, "dim"),
        ({"hidden": 0}, "hidden"),
        ({"variant": "independent", "pre_norm": True}, "pre_norm applies to the chain variants"),
        ({"variant": "independent", "out_norm": True}, "out_norm applies to the chain variants"),
    ],
)
def test_bad_configurations_raise(kwargs, match):
    config = {"dim": DIM, "chunk_sizes": (4, 2), "rates": 0.1, **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        ContinuumMemory(config.pop("dim"), config.pop("chunk_sizes"), **config)


@pytest.mark.equation("nl", 71)
def test_bad_inputs_raise():
    cms = _cms((2, 1), rates=0.1)
    with pytest.raises(ValueError, match="loss_fn"):
        cms(_randn(1, 3, DIM))
    with pytest.raises(ValueError, match="x must be"):
        cms(_randn(3, DIM))
    with pytest.raises(ValueError, match="loss_fn must return"):
        cms(_randn(1, 3, DIM), loss_fn=lambda y, start: y.sum())
    with pytest.raises(ValueError, match="state"):
        cms(_randn(2, 3, DIM), cms.init_state(1, dtype=F64), loss_fn=_square_loss(_randn(2, 3, DIM)))


# --------------------------------------------------------------------------------------------------
# Exact messages, dtypes and devices, plain levels, graphs and views
# --------------------------------------------------------------------------------------------------


def _gelu_swiglu(a: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """The SwiGLU MLP with GELU in place of SiLU, written out: (gelu(a Wg) * a Wu) Wd."""
    return (F.gelu(a @ gate) * (a @ up)) @ down


@pytest.mark.equation("nl", 70)
def test_plain_levels_hold_an_up_and_a_down_map():
    # gated=False: σ(a W_u) W_d with W_u (dim, hidden), W_d (hidden, dim), registered as `up` and `down`
    cms = _cms((2,), rates=0.0, gated=False)
    shapes = {name: tuple(p.shape) for name, p in cms.named_parameters()}
    assert shapes == {"levels.0.up": (DIM, HIDDEN), "levels.0.down": (HIDDEN, DIM)}
    up, down = cms.levels[0].up.detach(), cms.levels[0].down.detach()
    x = _randn(2, 5, DIM, seed=40)
    torch.testing.assert_close(cms(x)[0], F.silu(x @ up) @ down, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 71)
@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"dim": 0}, "dim must be an int >= 1, got 0"),
        ({"hidden": 0}, "hidden must be an int >= 1, got 0"),
        (
            {"variant": "parallel"},
            "variant must be one of ('sequential', 'nested', 'independent'), got 'parallel'",
        ),
        ({"signal": "mse"}, "signal must be one of ('task', 'reconstruction'), got 'mse'"),
        ({"window": "open"}, "window must be one of ('chunk', 'printed'), got 'open'"),
        ({"activation": "relu"}, "activation must be one of ('silu', 'gelu'), got 'relu'"),
    ],
)
def test_bad_configurations_name_the_argument_exactly(kwargs, message):
    config = {"dim": DIM, "chunk_sizes": (4, 2), "rates": 0.1, **kwargs}
    with pytest.raises(ValueError) as caught:
        ContinuumMemory(config.pop("dim"), config.pop("chunk_sizes"), **config)
    assert str(caught.value) == message


@pytest.mark.equation("nl", 71)
def test_init_state_rejects_a_bad_batch_size_by_name():
    cms = _cms((2, 1), rates=0.1)
    with pytest.raises(ValueError) as caught:
        cms.init_state(0)
    assert str(caught.value) == "batch_size must be an int >= 1, got 0"
    with pytest.raises(TypeError) as caught:
        cms.init_state(1.0)
    assert str(caught.value) == "batch_size must be an int >= 1, got float"


@pytest.mark.equation("nl", 71)
def test_bad_inputs_raise_exact_messages():
    cms = _cms((4,), rates=0.1)
    loss_fn = _square_loss(_randn(2, 5, DIM, seed=41))
    with pytest.raises(ValueError) as caught:
        cms([[0.0] * DIM], loss_fn=loss_fn)
    assert str(caught.value) == "x must be (batch, T, dim=3), got list"
    with pytest.raises(ValueError) as caught:
        cms(_randn(3, DIM), loss_fn=loss_fn)
    assert str(caught.value) == "x must be (batch, T, dim=3), got (3, 3)"
    with pytest.raises(ValueError) as caught:
        cms(_randn(1, 3, DIM))
    assert (
        str(caught.value) == "loss_fn is required when signal='task' and a rate is > 0 (it gives f in Eq. 71)"
    )
    with pytest.raises(ValueError) as caught:
        cms(_randn(1, 3, DIM), loss_fn=lambda y, start: y.sum())
    assert str(caught.value) == "loss_fn must return per-token losses of shape (1, 3), got ()"
    with pytest.raises(ValueError) as caught:
        cms(_randn(1, 3, DIM), loss_fn=lambda y, start: 0.0)
    assert str(caught.value) == "loss_fn must return per-token losses of shape (1, 3), got float"
    with pytest.raises(ValueError) as caught:  # 5 tokens, batch 2: the message names the batches
        cms(_randn(2, 5, DIM), cms.init_state(1, dtype=F64), loss_fn=loss_fn)
    assert str(caught.value) == "state holds batch 1, x has batch 2"


@pytest.mark.equation("nl", 71)
def test_state_batch_check_reads_the_first_weight():
    # a hand-made state whose first weight has batch 1 (the others batch 2) does not fit x of batch 2
    cms = _cms((2,), rates=0.0)
    gate, up, down = _initial(cms)[0]
    weights = ((gate.expand(1, *gate.shape), up.expand(2, *up.shape), down.expand(2, *down.shape)),)
    state = CMSState(weights=weights, grads=(tuple(torch.zeros_like(w) for w in weights[0]),))
    with pytest.raises(ValueError) as caught:
        cms(_randn(2, 3, DIM, seed=42), state)
    assert str(caught.value) == "state holds batch 1, x has batch 2"


@pytest.mark.equation("nl", 74)
def test_independent_residual_gelu_levels_by_hand():
    cms = _cms((2, 1), rates=0.0, variant="independent", residual=True, activation="gelu")
    x = _randn(2, 5, DIM, seed=43)
    (g0, u0, d0), (g1, u1, d1) = _initial(cms)
    expected = x + 0.5 * _gelu_swiglu(x, g0, u0, d0) + 0.5 * _gelu_swiglu(x, g1, u1, d1)
    torch.testing.assert_close(cms(x)[0], expected, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 72)
def test_state_takes_the_dtype_of_x_also_after_a_nested_restart():
    # θ_0 in float32, x in float64: the state (fresh and after each restart from θ_0) is float64
    torch.manual_seed(44)
    cms = ContinuumMemory(DIM, (4, 2), rates=0.0, hidden=HIDDEN, variant="nested")
    x = _randn(2, 9, DIM, seed=45)
    expected = x
    for level in cms.levels:
        expected = _swiglu(expected, *(p.detach().double() for p in (level.gate, level.up, level.down)))
    y, state = cms(x)
    assert y.dtype == F64
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-12)
    assert all(w.dtype == F64 for level in state.weights + state.grads for w in level)


@pytest.mark.equation("nl", 72)
def test_state_lives_on_the_device_of_x_also_after_a_nested_restart():
    # the meta device (shapes only): the state is built there and rebuilt there at every restart
    cms = _cms((4, 2), rates=0.0, variant="nested")
    x = torch.empty(2, 9, DIM, dtype=F64, device="meta")
    y, state = cms(x)
    assert y.device.type == "meta" and y.shape == (2, 9, DIM)
    assert all(w.device.type == "meta" for level in state.weights + state.grads for w in level)


@pytest.mark.equation("nl", 71)
def test_reconstruction_under_no_grad_returns_outputs_without_a_graph():
    # two tokens: one span per level (level 1's chunk ends at token 2), no concatenation of spans
    cms = _cms((4, 2), rates=0.1, signal="reconstruction")
    with torch.no_grad():
        y, state = cms(_randn(1, 2, DIM, seed=46))
    assert not torch.equal(state.weights[1][0], cms.levels[1].gate.detach().expand_as(state.weights[1][0]))
    assert y.grad_fn is None and not y.requires_grad
    assert not any(g.requires_grad for level in state.grads for g in level)


@pytest.mark.equation("nl", 70)
def test_frozen_cms_builds_no_graph_in_grad_mode():
    # rates 0 and θ_0 not trainable: nothing in the computation requires a gradient
    cms = _cms((2, 1), rates=0.0).requires_grad_(False)
    y, state = cms(_randn(1, 5, DIM, seed=47))
    assert y.grad_fn is None and not y.requires_grad
    assert not any(w.requires_grad for level in state.weights for w in level)


@pytest.mark.equation("nl", 71)
@pytest.mark.parametrize("signal", ["task", "reconstruction"])
def test_a_frozen_level_stays_a_shared_view_of_its_initial_state(signal):
    # rate 0: no step at the level's chunk ends, so its per-sequence weights stay views of θ_0 (no copy)
    cms = _cms((2, 1), rates=(0.0, 0.1), signal=signal)
    loss_fn = _square_loss(_randn(3, 6, DIM, seed=48)) if signal == "task" else None
    with torch.no_grad():
        _, state = cms(_randn(3, 6, DIM, seed=49), loss_fn=loss_fn)
    assert state.position == 6  # level 0's chunk ended at tokens 2, 4 and 6
    for w, p in zip(state.weights[0], cms.levels[0].weights(), strict=True):
        assert w.data_ptr() == p.data_ptr() and w.stride(0) == 0
        assert torch.equal(w, p.detach().expand_as(w))


# --------------------------------------------------------------------------------------------------
# the token-by-token reference (Eq. 71-72), the Independent CMS function (Eq. 74), the MLP block,
# stacking pretrained MLPs (N-U12), the chunk-size validation; grad mode = no_grad for several levels
# --------------------------------------------------------------------------------------------------

PARSE_ERROR = (
    "mlps must be SwiGLU FFNs with gate/up/down nn.Linear maps or nn.Sequential(Linear, SiLU|GELU, Linear), "
    "got {}"
)


def _ref_cms(chunk_sizes, rates, seed=0, **kwargs) -> ContinuumMemory:
    torch.manual_seed(seed)
    return ContinuumMemory(DIM, chunk_sizes, rates=rates, hidden=HIDDEN, **kwargs).double()


def _ref_swiglu(a, gate, up, down):
    """(silu(a Wg) * a Wu) Wd, row convention, written out."""
    return (F.silu(a @ gate) * (a @ up)) @ down


def _ref_levels(n_levels, shapes, batch, seed):
    """Per level, batched weights ``(batch, d_in, d_out)`` of the given shapes."""
    return [
        tuple(_randn(batch, *shape, seed=seed + 10 * i + j) for j, shape in enumerate(shapes))
        for i in range(n_levels)
    ]


def _ref_sgd_by_hand(cms, x, targets, chunks, rates):
    """Per-token SGD of a chain of SwiGLU levels on ½‖y_t − target_t‖², each level stepping by its rate times
    its gradient summed over its chunk (Eq. 71, window "chunk"). One sequence at a time, unbatched weights.
    Returns per sequence ``(outputs (T, dim), weights per level, accumulators per level)``."""
    results = []
    for b in range(x.shape[0]):
        weights = [[p.detach().clone() for p in (lvl.gate, lvl.up, lvl.down)] for lvl in cms.levels]
        acc = [[torch.zeros_like(w) for w in level] for level in weights]
        outputs = []
        for t in range(x.shape[1]):
            leaves = [[w.clone().requires_grad_(True) for w in level] for level in weights]
            out = x[b, t]
            for level in leaves:
                out = _ref_swiglu(out, *level)
            outputs.append(out.detach())
            loss = 0.5 * ((out - targets[b, t]) ** 2).sum()
            grads = torch.autograd.grad(loss, [w for level in leaves for w in level])
            for level in range(len(weights)):
                acc[level] = [
                    a + g for a, g in zip(acc[level], grads[3 * level : 3 * level + 3], strict=True)
                ]
                if (t + 1) % chunks[level] == 0:
                    weights[level] = [
                        w - rates[level] * a for w, a in zip(weights[level], acc[level], strict=True)
                    ]
                    acc[level] = [torch.zeros_like(a) for a in acc[level]]
        results.append((torch.stack(outputs), weights, acc))
    return results


def _ref_check_against_hand(y, state, expected):
    for b, (outputs, weights, acc) in enumerate(expected):
        torch.testing.assert_close(y[b], outputs, rtol=0, atol=1e-12)
        for got_levels, exp_levels in ((state.weights, weights), (state.grads, acc)):
            for got, exp in zip(got_levels, exp_levels, strict=True):
                for g, e in zip(got, exp, strict=True):
                    torch.testing.assert_close(g[b], e, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# Eq. 71–72 — the token-by-token reference
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 71)
def test_reference_learns_without_a_graph_under_no_grad():
    # two learning levels of a chain, task signal: each level's gradient runs through the shared forward,
    # so the graph must outlive the first level's gradient even without create_graph
    chunks, rates, steps = (2, 1), (0.1, 0.05), 5
    cms = _ref_cms(chunks, rates=rates, seed=40)
    x, targets = _randn(2, steps, DIM, seed=41), _randn(2, steps, DIM, seed=42)
    loss_fn = lambda y, start: 0.5 * ((y - targets[:, start : start + y.shape[1]]) ** 2).sum(-1)  # noqa: E731
    with torch.no_grad():
        y, state = continuum_memory_reference(cms, x, loss_fn=loss_fn)
    assert not y.requires_grad and y.grad_fn is None  # no graph kept under no_grad
    assert state.position == steps
    _ref_check_against_hand(y, state, _ref_sgd_by_hand(cms, x, targets, chunks, rates))


@pytest.mark.equation("nl", 71)
def test_reference_learns_from_a_detached_state_in_grad_mode():
    # grad mode on, but the state's weights carry no graph (state.detach(), truncated back-propagation):
    # the inner gradient is still taken, at fresh leaves
    chunks, rates, steps = (2,), (0.1,), 5
    cms = _ref_cms(chunks, rates=rates, seed=43)
    x, targets = _randn(2, steps, DIM, seed=44), _randn(2, steps, DIM, seed=45)
    loss_fn = lambda y, start: 0.5 * ((y - targets[:, start : start + y.shape[1]]) ** 2).sum(-1)  # noqa: E731
    state = cms.init_state(2, dtype=F64).detach()
    assert not any(w.requires_grad for level in state.weights for w in level)
    y, state = continuum_memory_reference(cms, x, state, loss_fn=loss_fn)
    assert y.requires_grad  # grad mode: the output keeps its graph to the inner leaves
    _ref_check_against_hand(y.detach(), state.detach(), _ref_sgd_by_hand(cms, x, targets, chunks, rates))


@pytest.mark.equation("nl", 71)
def test_reference_of_an_empty_call_is_empty_and_keeps_the_state():
    cms = _ref_cms((2, 1), rates=0.1, signal="reconstruction")
    start = cms.init_state(2, dtype=F64)
    x = torch.zeros(2, 0, DIM, dtype=F64)
    y, state = continuum_memory_reference(cms, x, start)
    assert y.shape == (2, 0, DIM) and y.dtype == F64
    assert state is start


@pytest.mark.equation("nl", 71)
def test_reference_refuses_a_state_whose_accumulator_misses_a_weight():
    # a malformed CMSState (2 accumulated gradients for a 3-weight SwiGLU level) is not silently truncated,
    # even when no chunk ends inside the call
    cms = _ref_cms((4,), rates=0.1, signal="reconstruction")
    state = cms.init_state(1, dtype=F64)
    bad = CMSState(weights=state.weights, grads=(state.grads[0][:2],), position=0)
    with pytest.raises(ValueError) as caught:
        continuum_memory_reference(cms, _randn(1, 1, DIM, seed=46), bad)
    assert str(caught.value) == "zip() argument 2 is longer than argument 1"


# --------------------------------------------------------------------------------------------------
# Eq. 70 — the MLP block; N-U12 ad-hoc stacking of pretrained MLPs
# --------------------------------------------------------------------------------------------------


def test_mlp_block_defaults_to_silu_for_gated_and_plain_blocks():  # mlp_block claims no equation
    a = _randn(2, 3, DIM, seed=50)
    gate, up, down = _randn(2, DIM, 5, seed=51), _randn(2, DIM, 5, seed=52), _randn(2, 5, DIM, seed=53)
    gated = torch.stack([_ref_swiglu(a[b], gate[b], up[b], down[b]) for b in range(2)])
    torch.testing.assert_close(mlp_block(a, (gate, up, down)), gated, rtol=0, atol=1e-12)
    plain = torch.stack([(a[b] @ up[b]) * torch.sigmoid(a[b] @ up[b]) @ down[b] for b in range(2)])
    torch.testing.assert_close(mlp_block(a, (up, down)), plain, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 70)
def test_from_mlps_of_silu_sequentials_is_that_stack():
    mlps = _plain_mlps(nn.SiLU, seed=54)
    cms = ContinuumMemory.from_mlps(mlps, (2, 1), rates=0.0)
    assert cms.activation == "silu"
    x = _randn(2, 4, DIM, seed=55)
    expected = x
    for mlp in mlps:  # silu(a W1ᵀ) W2ᵀ, written out
        h = expected @ mlp[0].weight.detach().T
        expected = (h * torch.sigmoid(h)) @ mlp[2].weight.detach().T
    torch.testing.assert_close(cms(x)[0], expected, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 70)
def test_from_mlps_passes_other_keywords_to_the_constructor():
    torch.manual_seed(56)
    ffns = [GatedMLP(DIM, 5).double() for _ in range(2)]
    cms = ContinuumMemory.from_mlps(ffns, (2, 1), rates=0.0, residual=True, window="printed")
    assert cms.residual and cms.window == "printed"
    x = _randn(1, 4, DIM, seed=57)
    expected = x
    for ffn in ffns:  # a ← a + SwiGLU(a), the FFN's Linear maps transposed to the row convention
        g, u, d = (ffn.gate.weight.detach().T, ffn.up.weight.detach().T, ffn.down.weight.detach().T)
        expected = expected + _ref_swiglu(expected, g, u, d)
    torch.testing.assert_close(cms(x)[0], expected, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 70)
def test_from_mlps_takes_the_dtype_of_the_first_weight_and_copies_exactly():
    # float64 MLPs give a float64 CMS holding the exact weights (no round trip through float32)
    torch.manual_seed(58)
    ffn = GatedMLP(DIM, 5).double()
    cms = ContinuumMemory.from_mlps([ffn], (1,), rates=0.0)
    for param, linear in zip(cms.levels[0].weights(), (ffn.gate, ffn.up, ffn.down), strict=True):
        assert param.dtype == F64 and torch.equal(param, linear.weight.detach().T)
    # an MLP of mixed precision: the first weight (float64) sets the CMS's dtype, the float32 one is cast
    mlp = nn.Sequential(
        nn.Linear(DIM, 4, bias=False).double(), nn.SiLU(), nn.Linear(4, DIM, bias=False).float()
    )
    cms = ContinuumMemory.from_mlps([mlp], (1,), rates=0.0)
    up, down = cms.levels[0].weights()
    assert up.dtype == down.dtype == F64
    assert torch.equal(up, mlp[0].weight.detach().T)
    assert torch.equal(down, mlp[2].weight.detach().T.double())


@pytest.mark.equation("nl", 70)
def test_from_mlps_takes_the_device_of_the_first_weight():
    # on the meta device (no data): the CMS is built there, copying from a CPU weight into it is allowed
    for second_device in ("meta", "cpu"):
        mlp = nn.Sequential(
            nn.Linear(DIM, 4, bias=False, device="meta"),
            nn.GELU(),
            nn.Linear(4, DIM, bias=False, device=second_device),
        )
        cms = ContinuumMemory.from_mlps([mlp], (1,), rates=0.0)
        assert [p.device.type for p in cms.parameters()] == ["meta", "meta"], second_device


@pytest.mark.equation("nl", 70)
def test_from_mlps_error_messages():
    with pytest.raises(TypeError) as caught:
        ContinuumMemory.from_mlps([nn.Linear(DIM, DIM)], (1,), rates=0.0)
    assert str(caught.value) == PARSE_ERROR.format("Linear")
    # only the exact GELU maps to the block's "gelu"; the tanh approximation is another function
    tanh_gelu = nn.Sequential(
        nn.Linear(DIM, 4, bias=False), nn.GELU(approximate="tanh"), nn.Linear(4, DIM, bias=False)
    )
    with pytest.raises(TypeError) as caught:
        ContinuumMemory.from_mlps([tanh_gelu], (1,), rates=0.0)
    assert str(caught.value) == PARSE_ERROR.format("Sequential")
    with pytest.raises(ValueError) as caught:
        ContinuumMemory.from_mlps(
            [nn.Sequential(nn.Linear(DIM, 4), nn.SiLU(), nn.Linear(4, DIM))], (1,), rates=0.0
        )
    assert str(caught.value) == "mlps must be bias-free (a CMS block has no bias)"
    with pytest.raises(ValueError) as caught:
        ContinuumMemory.from_mlps([GatedMLP(DIM, 4), GatedMLP(DIM, 5)], (2, 1), rates=0.0)
    assert str(caught.value) == "mlps must all be of one kind, activation and shape"


@pytest.mark.equation("nl", 71)
def test_chunk_sizes_must_be_a_non_string_sequence():
    message = "chunk_sizes must be a sequence of >= 1 ints (one per level), got {}"
    for chunk_sizes, shown in ((4, "4"), ({4, 2}, "{2, 4}"), ("42", "'42'"), ((), "()")):
        with pytest.raises(ValueError) as caught:
            ContinuumMemory(DIM, chunk_sizes, rates=0.1)
        assert str(caught.value) == message.format(shown)


# --------------------------------------------------------------------------------------------------
# Eq. 74 — the Independent CMS function
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 74)
def test_cms_independent_rejects_a_mix_of_the_wrong_shape():
    x = _randn(1, 2, DIM, seed=60)
    levels = _ref_levels(2, [(DIM, 5), (DIM, 5), (5, DIM)], 1, seed=61)
    for mix, shown in ((_randn(3, seed=62), "(3,)"), (torch.tensor(1.0, dtype=F64), "()")):
        with pytest.raises(ValueError) as caught:
            cms_independent(x, levels, mix)
        assert str(caught.value) == f"mix must be (2,), got {shown}"


@pytest.mark.equation("nl", 74)
def test_cms_independent_gelu_residual_is_x_plus_the_weighted_sum_by_hand():
    x = _randn(2, 3, DIM, seed=63)
    levels = _ref_levels(2, [(DIM, 5), (5, DIM)], 2, seed=64)  # plain σ(a W_u) W_d blocks
    mix = torch.tensor([0.7, -1.3], dtype=F64)

    def gelu(z):  # the exact GELU, z Φ(z)
        return 0.5 * z * (1 + torch.erf(z / 2**0.5))

    outs = [torch.stack([gelu(x[b] @ up[b]) @ down[b] for b in range(2)]) for up, down in levels]
    weighted = 0.7 * outs[0] - 1.3 * outs[1]
    y, pairs = cms_independent(x, levels, mix, activation="gelu", residual=True)
    torch.testing.assert_close(y, x + weighted, rtol=0, atol=1e-12)
    for (a, out), expected in zip(pairs, outs, strict=True):  # every level reads x
        assert a is x
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    y, _ = cms_independent(x, levels, mix, activation="gelu")  # without the residual: the sum alone
    torch.testing.assert_close(y, weighted, rtol=0, atol=1e-12)


@pytest.mark.equation("nl", 71)
@pytest.mark.parametrize("run", ["module", "reference"])
def test_grad_mode_steps_each_level_by_its_partial_gradient(run):
    # Eq. 71: a level steps by the gradient of the loss in its own parameters, the other levels held at
    # their current values. In grad mode the fast level's current weights carry the graph of their updates,
    # which ran through the slow level's weights: differentiating at those very tensors would add that path
    # (a total derivative). The values must be the no_grad ones, the hand loop's (partial derivatives).
    chunks, rates, steps = (2, 1), (0.1, 0.05), 5
    cms = _ref_cms(chunks, rates=rates, seed=40)
    x, targets = _randn(2, steps, DIM, seed=41), _randn(2, steps, DIM, seed=42)
    loss_fn = lambda y, start: 0.5 * ((y - targets[:, start : start + y.shape[1]]) ** 2).sum(-1)  # noqa: E731
    if run == "module":
        y, state = cms(x, loss_fn=loss_fn)
    else:
        y, state = continuum_memory_reference(cms, x, loss_fn=loss_fn)
    assert y.requires_grad  # the outer graph is kept
    _ref_check_against_hand(y.detach(), state.detach(), _ref_sgd_by_hand(cms, x, targets, chunks, rates))
    y.sum().backward()  # and it reaches both levels' initial parameters
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in cms.parameters())


@pytest.mark.equation("nl", 71)
@pytest.mark.equation("nl", 74)
@pytest.mark.parametrize("run", ["module", "reference"])
def test_grad_mode_equals_no_grad_for_the_independent_cms(run):
    # the same rule for the Independent CMS (Eq. 74), whose levels all read x and are mixed at the end
    chunks, rates, steps = (2, 1), (0.1, 0.05), 4
    cms = _ref_cms(chunks, rates=rates, seed=43, variant="independent")
    x, targets = _randn(1, steps, DIM, seed=44), _randn(1, steps, DIM, seed=45)
    loss_fn = lambda y, start: 0.5 * ((y - targets[:, start : start + y.shape[1]]) ** 2).sum(-1)  # noqa: E731
    call = cms if run == "module" else lambda *a, **k: continuum_memory_reference(cms, *a, **k)
    with torch.no_grad():
        y0, s0 = call(x, loss_fn=loss_fn)
    y1, s1 = call(x, loss_fn=loss_fn)
    torch.testing.assert_close(y1.detach(), y0, rtol=0, atol=1e-13)
    for got, want in zip(s1.detach().weights, s0.weights, strict=True):
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=0, atol=1e-13)
