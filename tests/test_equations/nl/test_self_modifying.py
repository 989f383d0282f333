"""Self-modifying Titans (NL v1, Eq. 76–93).

Expectations come from formulas written out here in the column convention of the catalog (a matrix memory
``M (d_out, d_in)`` read as ``M z``, explicit identity matrices, one sequence at a time), from autograd of
losses written here, and from NL part 1's ``dgd_step``; the chunk-parallel module is also checked against
its own token-by-token reference (outputs, final states, outer gradients). float64 throughout.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from neural_memory.common.delta_rule_chunked import chunk_delta_rule
from neural_memory.nl.optimizers import dgd_effective_lr, dgd_step
from neural_memory.nl.self_modifying import (
    ALPHA_MIN,
    SelfModifyingTitans,
    chunk_recurrence,
    inner_loss,
    layer_factors,
    memory_read,
    residual_memory,
    self_modifying_reference,
    self_modifying_step,
)

from .helpers import F64
from .helpers import randn as _randn
from .helpers import small_tensors as tensors

DIM, HIDDEN = 4, 3


def _module(seed=0, **kwargs) -> SelfModifyingTitans:
    torch.manual_seed(seed)
    return SelfModifyingTitans(DIM, hidden=HIDDEN, **kwargs).double()


def _silu(z: torch.Tensor) -> torch.Tensor:
    return z / (1 + torch.exp(-z))


def _unit(z: torch.Tensor) -> torch.Tensor:
    return z / torch.sqrt((z * z).sum())


# --------------------------------------------------------------------------------------------------
# An independent loop: self-modifying Titans with matrix memories, written out in the column convention
# --------------------------------------------------------------------------------------------------


def _hand_loop(module: SelfModifyingTitans, x: torch.Tensor, rule: str = "dgd", chunks: dict | None = None):
    """Eq. 83–88 (Eq. 90's chunk snapshots) for linear memories, one sequence at a time, ``M z`` reads.
    ``chunks``: the chunk size of every memory given by hand (default: the module's ``chunk_of``)."""
    chunk_of = module.chunk_of if chunks is None else chunks.__getitem__
    eye = torch.eye(DIM, dtype=F64)
    w_q = module.to_q.weight.detach()
    (w_eta, b_eta), (w_alpha, b_alpha) = (
        (r.weight.detach()[0], r.bias.detach()[0]) for r in (module.eta_readout, module.alpha_readout)
    )
    outputs, finals = [], []
    for b in range(x.shape[0]):
        mem = {n: module.initial[f"{n}_0"].detach().T.clone() for n in module.names}
        snap, ys = dict(mem), []
        for t in range(x.shape[1]):
            snap = {n: mem[n] if t % chunk_of(n) == 0 else snap[n] for n in module.names}
            x_t = x[b, t]
            k, v, q = _unit(snap["k"] @ x_t), snap["v"] @ x_t, _unit(w_q @ x_t)
            eta = torch.sigmoid(w_eta @ (snap["eta"] @ x_t) + b_eta)
            alpha = torch.sigmoid(w_alpha @ (snap["alpha"] @ x_t) + b_alpha)
            ys.append(snap["memory"] @ q)  # Eq. 83: read before the write
            for n in module.names:
                v_hat = snap[n] @ v  # Eq. 84
                grad = torch.outer(snap[n] @ k - v_hat, k)  # ∇ ½‖M k − v̂‖², Eq. 93
                decay = alpha * eye - (eta * torch.outer(k, k) if rule == "dgd" else 0)
                mem[n] = mem[n] @ decay - eta * grad  # Eq. 88
        outputs.append(torch.stack(ys))
        finals.append({n: m.T for n, m in mem.items()})  # back to the module's row convention
    return torch.stack(outputs), {n: torch.stack([f[n] for f in finals]) for n in module.names}


def _assert_matches_the_loop(got, want):
    """``(y, state)`` of the module against ``(y, states)`` of :func:`_hand_loop` (every memory's state)."""
    (y, state), (want_y, want_states) = got, want
    torch.testing.assert_close(y, want_y, rtol=1e-12, atol=1e-12)
    assert set(want_states) == set(state.current)
    for name, want_state in want_states.items():
        torch.testing.assert_close(state.current[name][0], want_state, rtol=1e-11, atol=1e-12)


@pytest.mark.equation("nl", 83)
@pytest.mark.equation("nl", 84)
@pytest.mark.equation("nl", 90)
@pytest.mark.parametrize(("chunk", "other"), [(1, 1), (3, 3), (2, 4), (4, 2)])
def test_chunked_module_with_matrix_memories_equals_the_loop_written_out(chunk, other):
    module = _module(memory="linear", chunk_size=chunk, other_chunk_size=other)
    x = _randn(2, 9, DIM, seed=1, scale=0.5)
    _assert_matches_the_loop(module(x), _hand_loop(module, x))


@pytest.mark.equation("nl", 86)
@pytest.mark.equation("nl", 87)
@pytest.mark.equation("nl", 88)
@pytest.mark.parametrize("rule", ["dgd", "gd"])
def test_token_by_token_reference_with_matrix_memories_equals_the_loop_written_out(rule):
    module = _module(memory="linear", rule=rule)
    x = _randn(2, 7, DIM, seed=2, scale=0.5)
    _assert_matches_the_loop(self_modifying_reference(module, x), _hand_loop(module, x, rule))


# --------------------------------------------------------------------------------------------------
# Chunk-parallel form == token-by-token reference: outputs, states, outer gradients (Eq. 90)
# --------------------------------------------------------------------------------------------------


def _run(module, x, fn):
    y, state = fn(module, x)
    loss = (y * y).sum() + sum((w * w).sum() for ws in state.current.values() for w in ws)
    return y, state, torch.autograd.grad(loss, [x, *module.parameters()])


@pytest.mark.equation("nl", 90)
@pytest.mark.parametrize("memory", ["residual_mlp", "linear"])
@pytest.mark.parametrize(("chunk", "other"), [(1, 1), (3, 3), (4, 2)])
@pytest.mark.parametrize("options", [{}, {"adaptive_q": True, "objective": "dot"}, {"values": "shared"}])
def test_chunked_equals_reference_outputs_states_and_gradients(memory, chunk, other, options):
    module = _module(memory=memory, chunk_size=chunk, other_chunk_size=other, **options)
    x = _randn(2, 8, DIM, seed=3, scale=0.5).requires_grad_(True)
    y_c, s_c, g_c = _run(module, x, lambda m, z: m(z))
    y_r, s_r, g_r = _run(module, x, self_modifying_reference)
    torch.testing.assert_close(y_c, y_r, rtol=1e-10, atol=1e-12)
    for name in module.names:
        for a, b in zip(s_c.current[name], s_r.current[name], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for a, b in zip(g_c, g_r, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-11)


@pytest.mark.equation("nl", 90)
@pytest.mark.parametrize("split", [1, 3, 5, 7])
def test_one_call_equals_two_calls_at_any_split(split):
    module = _module(chunk_size=2, other_chunk_size=4)
    x = _randn(2, 9, DIM, seed=4, scale=0.5)
    y, state = module(x)
    y1, s1 = module(x[:, :split])
    y2, s2 = module(x[:, split:], s1)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, rtol=1e-12, atol=1e-13)
    for name in module.names:
        for a, b in zip(s2.current[name], state.current[name], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)
    assert s2.numel() == state.numel() == s1.numel()


@pytest.mark.equation("nl", 83)
def test_output_reads_the_memory_before_the_write_and_is_causal():
    module = _module()
    x = _randn(1, 6, DIM, seed=5, scale=0.5)
    y, _ = module(x)
    x2 = x.clone()
    x2[:, 4:] += 1.0
    y2, _ = module(x2)
    torch.testing.assert_close(y2[:, :4], y[:, :4], rtol=0, atol=0)
    # y_5 = M_memory,4(q_5): the state after four tokens, read with the fifth query
    _, s4 = module(x[:, :4])
    q = torch.nn.functional.normalize(x[:, 4:5] @ module.to_q.weight.T, dim=-1)
    w_in, w_out = s4.current["memory"]
    torch.testing.assert_close(y[:, 4:5], q + _silu(q @ w_in) @ w_out, rtol=1e-13, atol=1e-14)


# --------------------------------------------------------------------------------------------------
# Eq. 88 and NL part 1's DGD; Eq. 92–93 for a matrix memory
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 88)
@pytest.mark.equation("nl", 96)
@given(w=tensors(3, 4), k=tensors(4), lss=tensors(3), lr=st.floats(0.0, 3.0))
@settings(max_examples=40, deadline=None)
def test_dgd_inside_with_alpha_one_is_nl_part_one_dgd(w, k, lss, lr):
    # Eq. 88 with α = 1 and the step η' = η/(1 + η‖k‖²) is NL Eq. 57's DGD (column convention there)
    eta = dgd_effective_lr(lr, k)
    row = w.T[None]  # the module's row convention, (N=1, d_in, d_out)
    (got,) = self_modifying_step(
        (row,), (torch.outer(k, lss)[None],), k[None], eta[None], torch.ones(1, dtype=F64)
    )
    torch.testing.assert_close(got[0].T, dgd_step(w, k, lss, lr), rtol=1e-12, atol=1e-12)


@pytest.mark.equation("nl", 88)
def test_decay_term_erases_the_response_along_a_unit_key():
    k = _unit(_randn(4, seed=6))
    w = _randn(1, 4, 3, seed=7)
    (got,) = self_modifying_step((w,), (torch.zeros_like(w),), k[None], torch.ones(1, dtype=F64),
                                 torch.ones(1, dtype=F64))  # fmt: skip
    torch.testing.assert_close(k @ got[0], torch.zeros(3, dtype=F64), rtol=0, atol=1e-15)
    (decayed,) = self_modifying_step((w,), (torch.zeros_like(w),), k[None], torch.zeros(1, dtype=F64),
                                     torch.full((1,), 0.7, dtype=F64))  # fmt: skip
    torch.testing.assert_close(decayed, 0.7 * w, rtol=0, atol=0)


@pytest.mark.equation("nl", 88)
def test_residual_memory_step_decays_the_first_layer_along_the_key_and_the_second_by_alpha():
    w_in, w_out = _randn(1, DIM, HIDDEN, seed=8), _randn(1, HIDDEN, DIM, seed=9)
    g_in, g_out = _randn(1, DIM, HIDDEN, seed=10), _randn(1, HIDDEN, DIM, seed=11)
    k, eta, alpha = _unit(_randn(DIM, seed=12)), 0.3, 0.9
    got = self_modifying_step((w_in, w_out), (g_in, g_out), k[None], torch.tensor([eta], dtype=F64),
                              torch.tensor([alpha], dtype=F64))  # fmt: skip
    # column convention: W_2 = w_inᵀ (h, d) reads k, so Eq. 88's M(αI − ηkkᵀ) multiplies it on the right
    eye = torch.eye(DIM, dtype=F64)
    want_in = (w_in[0].T @ (alpha * eye - eta * torch.outer(k, k)) - eta * g_in[0].T).T
    torch.testing.assert_close(got[0][0], want_in, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(got[1][0], alpha * w_out[0] - eta * g_out[0], rtol=1e-13, atol=1e-14)


@pytest.mark.equation("nl", 92)
def test_dot_objective_step_adds_eta_v_k_and_without_decay_is_hebbian():
    m0, keys, vals = _randn(3, 4, seed=13), _randn(5, 4, seed=14), _randn(5, 3, seed=15)
    w = m0.T[None].clone()
    etas = [0.1, 0.2, 0.05, 0.3, 0.15]
    for k, v, eta in zip(keys, vals, etas, strict=True):
        grads = tuple(
            a.transpose(-1, -2) @ g for a, g in layer_factors((w,), k[None, None], v[None, None], "dot")
        )
        eta_t, one = torch.tensor([eta], dtype=F64), torch.ones(1, dtype=F64)
        (w,) = self_modifying_step((w,), grads, k[None], eta_t, one, rule="gd")
    # consistent sign: ∇(−⟨M k, v⟩) = −v kᵀ, so the step adds +η v kᵀ: linear attention's accumulation
    want = m0 + sum(eta * torch.outer(v, k) for k, v, eta in zip(keys, vals, etas, strict=True))
    torch.testing.assert_close(w[0].T, want, rtol=1e-13, atol=1e-13)


@pytest.mark.equation("nl", 93)
@pytest.mark.parametrize("rule", ["dgd", "gd"])
def test_chunk_recurrence_equals_the_loop_with_chunk_start_gradients(rule):
    n, d_out = 6, 3
    m_snap, m_start = _randn(d_out, DIM, seed=16), _randn(d_out, DIM, seed=17)
    keys = torch.nn.functional.normalize(_randn(n, DIM, seed=18), dim=-1)
    v_hat = _randn(n, d_out, seed=19)
    eta = torch.tensor([0.1, 0.4, 0.2, 0.05, 0.3, 0.25], dtype=F64)
    alpha = torch.tensor([0.9, 0.99, 0.8, 0.95, 0.97, 0.85], dtype=F64)
    m, eye = m_start.clone(), torch.eye(DIM, dtype=F64)
    for t in range(n):  # Eq. 93 written out, the error at the chunk-start memory
        decay = alpha[t] * eye - (eta[t] * torch.outer(keys[t], keys[t]) if rule == "dgd" else 0)
        m = m @ decay - eta[t] * torch.outer(m_snap @ keys[t] - v_hat[t], keys[t])
    factors = layer_factors((m_snap.T[None],), keys[None], v_hat[None])
    (got,) = chunk_recurrence((m_start.T[None],), factors, keys[None], eta[None], alpha[None], rule)
    torch.testing.assert_close(got[0].T, m, rtol=1e-12, atol=1e-13)
    w = m_start.T[None]
    for t in range(n):
        grad = factors[0][0][:, t, :, None] @ factors[0][1][:, t, None, :]
        (w,) = self_modifying_step((w,), (grad,), keys[None, t], eta[None, t], alpha[None, t], rule)
    torch.testing.assert_close(w[0].T, m, rtol=1e-12, atol=1e-13)


@pytest.mark.equation("nl", 93)
def test_chunk_recurrence_first_layer_is_the_gated_delta_rule_of_chunk_delta_rule():
    # the docstring's reading: S_t = S_{t-1}(α_t I − η_t k kᵀ) − η_t g kᵀ is Gated DeltaNet with β = η/α and
    # values −α g; chunk_recurrence writes out its one-chunk WY/UT form (no division by α), which must give
    # the general routine's final state, also with a retention at the floor
    n, d_out = 7, 3
    keys = torch.nn.functional.normalize(_randn(2, n, DIM, seed=40), dim=-1)
    g, w = _randn(2, n, d_out, seed=41), _randn(2, DIM, d_out, seed=42)
    eta = torch.rand(2, n, dtype=F64, generator=torch.Generator().manual_seed(43))
    alpha = 0.5 + 0.5 * torch.rand(2, n, dtype=F64, generator=torch.Generator().manual_seed(44))
    alpha[1, 3] = ALPHA_MIN
    (got,) = chunk_recurrence((w,), [(keys, g)], keys, eta, alpha)
    _, end = chunk_delta_rule(
        keys[:, None], keys[:, None], -(alpha[..., None] * g)[:, None], (eta / alpha)[:, None],
        alpha=alpha[:, None], chunk_size=4, initial_state=w.transpose(-1, -2)[:, None],
    )  # fmt: skip
    torch.testing.assert_close(got, end[:, 0].transpose(-1, -2), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# The memories (Eq. 89/91), the read (Eq. 78/82), the objective (Eq. 77, 80, 81, 85)
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 89)
@pytest.mark.equation("nl", 91)
@given(z=tensors(2, DIM), w_in=tensors(DIM, HIDDEN), w_out=tensors(HIDDEN, DIM))
@settings(max_examples=30, deadline=None)
def test_residual_memory_is_input_plus_mlp_and_identity_without_second_layer(z, w_in, w_out):
    got = residual_memory(z[None], w_in[None], w_out[None])[0]
    want = torch.stack([row + w_out.T @ _silu(w_in.T @ row) for row in z])  # z + W_1 σ(W_2 z)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(residual_memory(z[None], w_in[None], torch.zeros_like(w_out)[None])[0], z,
                               rtol=0, atol=0)  # fmt: skip


@pytest.mark.equation("nl", 89)
def test_residual_memory_jacobian_is_identity_plus_w1_dsigma_w2():
    z, w_in, w_out = _randn(DIM, seed=20), _randn(DIM, HIDDEN, seed=21), _randn(HIDDEN, DIM, seed=22)
    jac = torch.autograd.functional.jacobian(
        lambda u: residual_memory(u[None, None], w_in[None], w_out[None])[0, 0], z
    )
    pre = w_in.T @ z
    s = torch.sigmoid(pre)
    want = torch.eye(DIM, dtype=F64) + w_out.T @ torch.diag(s * (1 + pre * (1 - s))) @ w_in.T
    torch.testing.assert_close(jac, want, rtol=1e-12, atol=1e-12)


@pytest.mark.equation("nl", 78)
@pytest.mark.equation("nl", 82)
def test_memory_read_is_m_q_for_a_matrix_and_the_mlp_for_a_deep_memory():
    m, q = _randn(3, DIM, seed=23), _randn(5, DIM, seed=24)
    torch.testing.assert_close(memory_read((m.T[None],), q[None])[0], torch.stack([m @ r for r in q]),
                               rtol=1e-13, atol=1e-14)  # fmt: skip
    w_in, w_out = _randn(DIM, HIDDEN, seed=25), _randn(HIDDEN, DIM, seed=26)
    want = torch.stack([r + w_out.T @ _silu(w_in.T @ r) for r in q])
    torch.testing.assert_close(
        memory_read((w_in[None], w_out[None]), q[None])[0], want, rtol=1e-12, atol=1e-13
    )


@pytest.mark.equation("nl", 80)
@pytest.mark.equation("nl", 81)
@pytest.mark.equation("nl", 85)
@pytest.mark.parametrize("memory", ["linear", "residual_mlp"])
def test_inner_loss_value_and_the_closed_form_gradients_are_autograd_of_it(memory):
    module = _module(memory=memory)
    weights = tuple(w.detach().clone() for w in module.init_state(1, dtype=F64).current["memory"])
    k, v_hat = _unit(_randn(DIM, seed=27)), _randn(DIM, seed=28)
    pred = memory_read(weights, k[None, None])[0, 0]
    torch.testing.assert_close(inner_loss(pred, v_hat), 0.5 * ((pred - v_hat) ** 2).sum(), rtol=1e-14, atol=0)
    torch.testing.assert_close(inner_loss(pred, v_hat, "dot"), -(pred @ v_hat), rtol=1e-14, atol=0)
    for objective in ("l2", "dot"):
        leaves = tuple(w.clone().requires_grad_(True) for w in weights)
        value = inner_loss(memory_read(leaves, k[None, None]), v_hat[None, None], objective).sum()
        want = torch.autograd.grad(value, leaves)
        factors = layer_factors(weights, k[None, None], v_hat[None, None], objective)
        for (a, g), w in zip(factors, want, strict=True):
            torch.testing.assert_close(a.transpose(-1, -2) @ g, w, rtol=1e-12, atol=1e-13)


@pytest.mark.equation("nl", 77)
@pytest.mark.equation("nl", 81)
def test_a_small_update_decreases_the_inner_objective():
    module = _module()
    weights = tuple(w.detach().clone() for w in module.init_state(1, dtype=F64).current["memory"])
    k, v = _unit(_randn(1, DIM, seed=29)), _randn(1, DIM, seed=30)
    before = inner_loss(memory_read(weights, k[:, None]), v[:, None]).sum()
    grads = tuple(a.transpose(-1, -2) @ g for a, g in layer_factors(weights, k[:, None], v[:, None]))
    after_w = self_modifying_step(
        weights, grads, k, torch.full((1,), 1e-3, dtype=F64), torch.ones(1, dtype=F64)
    )
    assert inner_loss(memory_read(after_w, k[:, None]), v[:, None]).sum() < before


# --------------------------------------------------------------------------------------------------
# The intermediate designs: static projections (Eq. 76), shared values (Eq. 79), generated values (Eq. 84)
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 76)
def test_static_projections_are_linear_maps_and_sigmoid_gates():
    module = _module(self_modifying=False)
    x = _randn(2, 5, DIM, seed=31)
    got = module.static_projections(x)
    for name, linear in (("k", module.to_k), ("q", module.to_q)):
        want = torch.stack([torch.stack([_unit(linear.weight @ r) for r in seq]) for seq in x])
        torch.testing.assert_close(got[name], want, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(got["v"], x @ module.to_v.weight.T, rtol=1e-13, atol=1e-14)
    for name, readout in (("eta", module.eta_readout), ("alpha", module.alpha_readout)):
        want = 1 / (1 + torch.exp(-(x @ readout.weight[0] + readout.bias[0])))
        torch.testing.assert_close(got[name], want, rtol=1e-13, atol=1e-14)
        assert got[name].shape == (2, 5) and ((got[name] > 0) & (got[name] < 1)).all()
    assert module.names == ("memory",)


def _freeze_inner_learning(module: SelfModifyingTitans) -> None:
    with torch.no_grad():  # η = σ(-1e4) = 0 and α = σ(1e4) = 1 exactly: nothing learns in context
        for readout, bias in ((module.eta_readout, -1e4), (module.alpha_readout, 1e4)):
            readout.weight.zero_()
            readout.bias.fill_(bias)


@pytest.mark.equation("nl", 79)
def test_with_zero_inner_rates_the_adaptive_projections_stay_their_initial_maps():
    module = _module(values="shared", chunk_size=2)
    _freeze_inner_learning(module)
    x = _randn(2, 7, DIM, seed=32)
    _, state = module(x)
    start = module.init_state(2, dtype=F64)
    for name in module.names:
        for a, b in zip(state.current[name], start.current[name], strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    w_in, w_out = (w.detach() for w in start.current["k"])
    k_late = module.generate(x[:, 6:], state.current)["k"]
    want = torch.nn.functional.normalize(x[:, 6:] + _silu(x[:, 6:] @ w_in) @ w_out, dim=-1)
    torch.testing.assert_close(k_late, want, rtol=1e-13, atol=1e-14)


@pytest.mark.equation("nl", 84)
@pytest.mark.equation("nl", 87)
def test_with_zero_second_layers_generated_values_are_the_shared_value():
    # W_1 = 0 makes every M(v) = v, so after one chunk the generated-value run (Eq. 84) and the shared-value
    # run (Eq. 79-82) hold the same memories; the token loop (Eq. 87) agrees
    x = _randn(2, 3, DIM, seed=33, scale=0.5)
    states = []
    for values in ("generated", "shared"):
        module = _module(values=values, chunk_size=3)
        with torch.no_grad():
            for name in module.names:
                module.initial[f"{name}_1"].zero_()
        states += [module(x)[1], self_modifying_reference(module, x)[1]]
    for name in module.names:
        for state in states[1:]:
            for a, b in zip(state.current[name], states[0].current[name], strict=True):
                torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-14)
        assert not torch.equal(states[0].current[name][1], torch.zeros_like(states[0].current[name][1]))


@pytest.mark.equation("nl", 90)
@pytest.mark.parametrize("memory", ["residual_mlp", "linear"])
def test_alpha_floor_keeps_the_float32_chunk_form_finite_and_equal_to_the_reference(memory):
    # σ(-200) underflows to exactly 0 in float32; the chunk form divides by α (β = η/α of the gated delta
    # rule), so without the floor ALPHA_MIN it fails (β = inf) while the token loop would not
    torch.manual_seed(0)
    module = SelfModifyingTitans(DIM, hidden=HIDDEN, memory=memory, chunk_size=3)
    with torch.no_grad():
        module.alpha_readout.weight.zero_()
        module.alpha_readout.bias.fill_(-200.0)
    assert torch.sigmoid(torch.tensor(-200.0)).item() == 0.0
    x = 0.5 * torch.randn(2, 7, DIM, generator=torch.Generator().manual_seed(1))
    alpha = module.generate(x, module.init_state(2).current)["alpha"]
    assert torch.equal(alpha, torch.full((2, 7), ALPHA_MIN))
    y, state = module(x)
    y_ref, state_ref = self_modifying_reference(module, x)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)  # float32 round-off
    for name in module.names:
        for a, b in zip(state.current[name], state_ref.current[name], strict=True):
            assert torch.isfinite(a).all()
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# Bad configurations and inputs
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"chunk_size": 2, "other_chunk_size": 3}, "divide"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"memory": "deep"}, "memory"),
        ({"objective": "l1"}, "objective"),
        ({"rule": "adam"}, "rule"),
        ({"values": "none"}, "values"),
        ({"activation": "relu"}, "activation"),
        ({"hidden": 0}, "hidden"),
    ],
)
def test_bad_configurations_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SelfModifyingTitans(DIM, **kwargs)


def test_bad_inputs_raise():
    module = _module()
    with pytest.raises(ValueError, match="x must be"):
        module(torch.zeros(2, 3, DIM + 1, dtype=F64))
    with pytest.raises(ValueError, match="batch"):
        module(torch.zeros(3, 2, DIM, dtype=F64), module.init_state(2, dtype=F64))
    with pytest.raises(ValueError, match="objective"):
        inner_loss(torch.zeros(3), torch.zeros(3), "huber")
    with pytest.raises(ValueError, match="rule"):
        self_modifying_step((torch.zeros(1, 2, 2),), (torch.zeros(1, 2, 2),), torch.zeros(1, 2),
                            torch.zeros(1), torch.ones(1), rule="sgd")  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"dim": 0}, ValueError, "dim must be an int >= 1, got 0"),
        ({"hidden": 0}, ValueError, "hidden must be an int >= 1, got 0"),
        ({"memory": "deep"}, ValueError, "memory must be one of ('residual_mlp', 'linear'), got 'deep'"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be an int >= 1, got 0"),
        # 0 is read as "not given" (other_chunk_size or chunk_size), so the check sees -1 / a float
        ({"other_chunk_size": -1}, ValueError, "other_chunk_size must be an int >= 1, got -1"),
        ({"other_chunk_size": 2.0}, TypeError, "other_chunk_size must be an int >= 1, got float"),
        (
            {"chunk_size": 2, "other_chunk_size": 3},
            ValueError,
            "chunk_size (2) and other_chunk_size (3) must divide one another",
        ),
        ({"values": "none"}, ValueError, "values must be one of ('generated', 'shared'), got 'none'"),
        ({"objective": "l1"}, ValueError, "objective must be one of ('l2', 'dot'), got 'l1'"),
        ({"rule": "adam"}, ValueError, "rule must be one of ('dgd', 'gd'), got 'adam'"),
        ({"activation": "relu"}, ValueError, "activation must be one of ('silu', 'gelu'), got 'relu'"),
    ],
)
def test_bad_configurations_raise_the_exact_message(kwargs, error, message):
    kwargs = {"dim": DIM, **kwargs}
    with pytest.raises(error) as caught:
        SelfModifyingTitans(**kwargs)
    assert str(caught.value) == message


def test_bad_inputs_raise_the_exact_message():
    module = _module()
    for bad, shown in (
        (torch.zeros(2, 3, DIM + 1, dtype=F64), "(2, 3, 5)"),  # wrong width
        (torch.zeros(3, DIM, dtype=F64), "(3, 4)"),  # right width, but no time axis
        ([[0.0] * DIM], "list"),  # not a tensor
    ):
        with pytest.raises(ValueError) as caught:
            module(bad)
        assert str(caught.value) == f"x must be (batch, T, dim=4), got {shown}"
    for bad_batch, error, message in (
        (0, ValueError, "batch_size must be an int >= 1, got 0"),
        (2.0, TypeError, "batch_size must be an int >= 1, got float"),
    ):
        with pytest.raises(error) as caught:
            module.init_state(bad_batch)
        assert str(caught.value) == message


@pytest.mark.parametrize("memory", ["linear", "residual_mlp"])
def test_batch_mismatch_message_names_both_batches_and_a_matching_state_is_accepted(memory):
    # a linear memory has one weight per state: the batch is read from the first (and only) one
    module = _module(memory=memory)
    x = _randn(2, 5, DIM, seed=50, scale=0.5)
    with pytest.raises(ValueError) as caught:
        module(torch.zeros(3, 5, DIM, dtype=F64), module.init_state(2, dtype=F64))
    assert str(caught.value) == "state holds batch 2, x has 3"
    y, state = module(x)
    y1, s1 = module(x[:, :2])
    y2, s2 = module(x[:, 2:], s1)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, rtol=1e-12, atol=1e-13)
    assert s2.position == state.position == 5


def test_a_fresh_state_takes_the_dtype_and_device_of_x():
    module = _module()  # float64 parameters
    state = module.check_input(torch.zeros(2, 3, DIM, dtype=torch.float32), None)
    assert state.position == 0
    for d in (state.current, state.snapshot):
        for ws in d.values():
            assert all(w.dtype == torch.float32 and w.shape[0] == 2 for w in ws)
    meta = module.check_input(torch.zeros(2, 3, DIM, dtype=F64, device="meta"), None)
    for ws in meta.current.values():
        assert all(w.device.type == "meta" and w.dtype == F64 for w in ws)


@pytest.mark.equation("nl", 90)
@pytest.mark.parametrize(("chunk", "other"), [(4, 1), (1, 3), (2, 4)])
def test_main_memory_uses_chunk_size_and_the_others_other_chunk_size(chunk, other):
    module = _module(memory="linear", chunk_size=chunk, other_chunk_size=other)
    assert module.chunk_of("memory") == chunk
    assert all(module.chunk_of(n) == other for n in ("k", "v", "eta", "alpha"))
    x = _randn(2, 9, DIM, seed=51, scale=0.5)
    chunks = {n: other for n in module.names} | {"memory": chunk}
    _assert_matches_the_loop(module(x), _hand_loop(module, x, chunks=chunks))


@pytest.mark.equation("nl", 90)
def test_default_is_token_by_token():
    torch.manual_seed(0)
    module = SelfModifyingTitans(DIM, memory="linear").double()
    assert module.chunk_size == module.other_chunk_size == 1
    x = _randn(2, 5, DIM, seed=52, scale=0.5)
    _assert_matches_the_loop(module(x), _hand_loop(module, x, chunks=dict.fromkeys(module.names, 1)))


@pytest.mark.equation("nl", 90)
def test_chunked_gd_rule_has_no_key_decay_as_the_loop_written_out():
    module = _module(memory="linear", rule="gd", chunk_size=2, other_chunk_size=4)
    x = _randn(2, 9, DIM, seed=53, scale=0.5)
    _assert_matches_the_loop(module(x), _hand_loop(module, x, "gd"))


def _gelu(z: torch.Tensor) -> torch.Tensor:
    return 0.5 * z * (1 + torch.erf(z / math.sqrt(2)))


@pytest.mark.equation("nl", 89)
@pytest.mark.equation("nl", 90)
def test_gelu_residual_memories_token_by_token_equal_the_loop_written_out():
    module = _module(activation="gelu")
    x = _randn(2, 3, DIM, seed=54, scale=0.5)

    def mlp(z, w_in, w_out):  # Eq. 89 in the row convention, σ = exact GELU
        return z + _gelu(z @ w_in) @ w_out

    w_q = module.to_q.weight.detach()
    (w_eta, b_eta), (w_alpha, b_alpha) = (
        (r.weight.detach()[0], r.bias.detach()[0]) for r in (module.eta_readout, module.alpha_readout)
    )
    eye = torch.eye(DIM, dtype=F64)
    for b in range(x.shape[0]):
        mem = {n: tuple(module.initial[f"{n}_{i}"].detach().clone() for i in range(2)) for n in module.names}
        ys = []
        for t in range(x.shape[1]):
            x_t = x[b, t]
            k, v, q = _unit(mlp(x_t, *mem["k"])), mlp(x_t, *mem["v"]), _unit(w_q @ x_t)
            eta = torch.sigmoid(w_eta @ mlp(x_t, *mem["eta"]) + b_eta)
            alpha = torch.sigmoid(w_alpha @ mlp(x_t, *mem["alpha"]) + b_alpha)
            ys.append(mlp(q, *mem["memory"]))
            new = {}
            for n in module.names:
                v_hat = mlp(v, *mem[n])
                leaves = tuple(w.clone().requires_grad_(True) for w in mem[n])
                g_in, g_out = torch.autograd.grad(0.5 * ((mlp(k, *leaves) - v_hat) ** 2).sum(), leaves)
                w_in, w_out = mem[n]
                decay = alpha * eye - eta * torch.outer(k, k)
                new[n] = (decay @ w_in - eta * g_in, alpha * w_out - eta * g_out)
            mem = new
        y, state = module(x)
        torch.testing.assert_close(y[b], torch.stack(ys), rtol=1e-12, atol=1e-12)
        for n in module.names:
            for got, want in zip(state.current[n], mem[n], strict=True):
                torch.testing.assert_close(got[b], want, rtol=1e-11, atol=1e-12)


@pytest.mark.equation("nl", 83)
def test_adaptive_q_makes_the_query_a_memory_read():
    module = _module(adaptive_q=True)
    assert module.names == ("k", "v", "q", "eta", "alpha", "memory")
    assert not hasattr(module, "to_q")
    x = _randn(2, 3, DIM, seed=55, scale=0.5)
    w_in, w_out = (module.initial[f"q_{i}"].detach() for i in range(2))
    q = module.generate(x, module.init_state(2, dtype=F64).current)["q"]
    want = torch.nn.functional.normalize(x + _silu(x @ w_in) @ w_out, dim=-1)
    torch.testing.assert_close(q, want, rtol=1e-13, atol=1e-14)


@pytest.mark.equation("nl", 76)
def test_gate_readouts_start_at_eta_sigmoid_minus_two_and_alpha_sigmoid_four():
    module = _module(self_modifying=False)
    assert module.eta_readout.bias.item() == -2.0 and module.alpha_readout.bias.item() == 4.0
    with torch.no_grad():
        module.eta_readout.weight.zero_()
        module.alpha_readout.weight.zero_()
    got = module.static_projections(_randn(1, 2, DIM, seed=56))
    torch.testing.assert_close(got["eta"], torch.full((1, 2), 1 / (1 + math.exp(2.0)), dtype=F64),
                               rtol=1e-14, atol=0)  # fmt: skip
    torch.testing.assert_close(got["alpha"], torch.full((1, 2), 1 / (1 + math.exp(-4.0)), dtype=F64),
                               rtol=1e-14, atol=0)  # fmt: skip


@pytest.mark.equation("nl", 76)
def test_without_qk_norm_keys_and_queries_are_not_normalised():
    module = _module(self_modifying=False, qk_norm=False)
    x = _randn(2, 3, DIM, seed=57)
    got = module.static_projections(x)
    torch.testing.assert_close(got["k"], x @ module.to_k.weight.T, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(got["q"], x @ module.to_q.weight.T, rtol=1e-13, atol=1e-14)
    assert module.to_k.bias is None and module.to_v.bias is None and module.to_q.bias is None


def _gelu(z: torch.Tensor) -> torch.Tensor:
    return 0.5 * z * (1 + torch.erf(z / math.sqrt(2.0)))  # the exact (erf) GELU


@pytest.mark.equation("nl", 82)
def test_memory_read_of_a_deep_memory_uses_the_given_activation():
    w_in, w_out = _randn(DIM, HIDDEN, seed=100), _randn(HIDDEN, DIM, seed=101)
    q = _randn(5, DIM, seed=102)
    want = torch.stack([r + w_out.T @ _gelu(w_in.T @ r) for r in q])  # z + W_1 gelu(W_2 z)
    got = memory_read((w_in[None], w_out[None]), q[None], "gelu")[0]
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-13)


@pytest.mark.equation("nl", 85)
def test_inner_loss_is_one_value_per_token_for_both_objectives():
    pred, target = _randn(2, 3, DIM, seed=103), _randn(2, 3, DIM, seed=104)
    l2, dot = inner_loss(pred, target, "l2"), inner_loss(pred, target, "dot")
    assert l2.shape == dot.shape == (2, 3)
    for b in range(2):
        for t in range(3):
            diff = pred[b, t] - target[b, t]
            torch.testing.assert_close(l2[b, t], 0.5 * (diff @ diff), rtol=1e-14, atol=0)
            torch.testing.assert_close(dot[b, t], -(pred[b, t] @ target[b, t]), rtol=1e-14, atol=0)


def test_bad_objective_and_rule_messages_are_exact():
    with pytest.raises(ValueError) as caught:
        inner_loss(torch.zeros(3), torch.zeros(3), "huber")
    assert str(caught.value) == "objective must be one of ('l2', 'dot'), got 'huber'"
    with pytest.raises(ValueError) as caught:
        self_modifying_step((torch.zeros(1, 2, 2),), (torch.zeros(1, 2, 2),), torch.zeros(1, 2),
                            torch.zeros(1), torch.ones(1), rule="sgd")  # fmt: skip
    assert str(caught.value) == "rule must be one of ('dgd', 'gd'), got 'sgd'"


def test_step_and_chunk_recurrence_refuse_fewer_gradients_than_layers():
    # two layers, one gradient: silently updating only the first layer would drop the second
    w_in, w_out = _randn(1, DIM, HIDDEN, seed=105), _randn(1, HIDDEN, DIM, seed=106)
    key, eta, alpha = (
        _unit(_randn(1, DIM, seed=107)),
        torch.full((1,), 0.1, dtype=F64),
        torch.ones(1, dtype=F64),
    )
    with pytest.raises(ValueError) as caught:
        self_modifying_step((w_in, w_out), (torch.zeros_like(w_in),), key, eta, alpha)
    assert str(caught.value) == "grads must hold one tensor per layer of weights (2), got 1"
    keys = _unit(_randn(1, 2, DIM, seed=108))
    factors = [(keys, _randn(1, 2, HIDDEN, seed=109))]
    with pytest.raises(ValueError) as caught:
        chunk_recurrence((w_in, w_out), factors, keys, eta.expand(1, 2), alpha.expand(1, 2))
    assert str(caught.value) == "factors must hold one (a, g) pair per layer of weights (2), got 1"


def test_chunk_recurrence_refuses_an_unknown_rule():
    # any rule but "dgd" used to run as plain GD
    w = _randn(1, DIM, DIM, seed=117)
    keys, gates = _unit(_randn(1, 2, DIM, seed=118)), torch.full((1, 2), 0.5, dtype=F64)
    with pytest.raises(ValueError) as caught:
        chunk_recurrence((w,), [(keys, _randn(1, 2, DIM, seed=119))], keys, gates, gates, "sgd")
    assert str(caught.value) == "rule must be one of ('dgd', 'gd'), got 'sgd'"


@pytest.mark.parametrize("rule", ["dgd", "gd"])
def test_step_and_chunk_recurrence_refuse_keys_and_gates_of_the_wrong_shape(rule):
    # a (N, n, 1) alpha under rule="gd" broadcast into a state of the wrong rank without an error
    w = _randn(2, DIM, DIM, seed=110)
    key, gate = _unit(_randn(2, DIM, seed=111)), torch.full((2,), 0.5, dtype=F64)
    keys, gates = _unit(_randn(2, 3, DIM, seed=112)), torch.full((2, 3), 0.5, dtype=F64)
    factors = [(keys, _randn(2, 3, DIM, seed=113))]

    def step(k=key, e=gate, a=gate):
        return self_modifying_step((w,), (torch.zeros_like(w),), k, e, a, rule)

    def chunk(k=keys, e=gates, a=gates):
        return chunk_recurrence((w,), factors, k, e, a, rule)

    cases = [
        (
            lambda: step(k=keys),
            "key must be (N, d) with N = 2 and d = 4 (weights[0] is (N, d, d_out)), got (2, 3, 4)",
        ),
        (
            lambda: step(k=key[:, :3]),
            "key must be (N, d) with N = 2 and d = 4 (weights[0] is (N, d, d_out)), got (2, 3)",
        ),
        (
            lambda: step(k=key[:1]),
            "key must be (N, d) with N = 2 and d = 4 (weights[0] is (N, d, d_out)), got (1, 4)",
        ),
        (lambda: step(e=gates), "eta must have the key's shape without d, (2,), got (2, 3)"),
        (lambda: step(a=gate[:1]), "alpha must have the key's shape without d, (2,), got (1,)"),
        (
            lambda: chunk(k=key),
            "key must be (N, n, d) with N = 2 and d = 4 (weights[0] is (N, d, d_out)), got (2, 4)",
        ),
        (
            lambda: chunk(a=gates[..., None]),
            "alpha must have the key's shape without d, (2, 3), got (2, 3, 1)",
        ),
        (lambda: chunk(e=gates[:, :2]), "eta must have the key's shape without d, (2, 3), got (2, 2)"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError) as caught:
            call()
        assert str(caught.value) == message


@pytest.mark.equation("nl", 93)
def test_chunk_recurrence_under_dgd_refuses_a_retention_that_is_not_positive():
    # the DGD chunk end takes log α (cumulative products as sums of logs): α = 0 would give nan
    w = _randn(1, DIM, DIM, seed=114)
    keys, eta = _unit(_randn(1, 2, DIM, seed=115)), torch.full((1, 2), 0.5, dtype=F64)
    factors = [(keys, _randn(1, 2, DIM, seed=116))]
    alpha = torch.tensor([[1.0, 0.0]], dtype=F64)
    with pytest.raises(ValueError) as caught:
        chunk_recurrence((w,), factors, keys, eta, alpha, "dgd")
    assert str(caught.value) == "alpha must be > 0 under rule='dgd', got a minimum of 0"
    # plain GD multiplies by α and accepts 0: the state forgets everything before the second token
    out = chunk_recurrence((w,), factors, keys, eta, alpha, "gd")[0]
    a2, g2 = factors[0][0][0, 1], factors[0][1][0, 1]
    torch.testing.assert_close(out[0], -0.5 * torch.outer(a2, g2), rtol=0, atol=1e-15)


@pytest.mark.equation("nl", 93)
def test_chunk_form_gradients_stay_finite_and_equal_the_loop_at_a_vanishing_retention():
    # Any α > 0 is allowed. With α_t α_{t+1} = 1e-320 the ratios above the diagonal (1/(α_t α_{t+1}))
    # overflow; the chunk form must mask them before exp, or their zero gradient becomes 0 · inf = nan.
    n, d_out = 4, 3
    keys = torch.nn.functional.normalize(_randn(1, n, DIM, seed=110), dim=-1)
    g, w0 = _randn(1, n, d_out, seed=111), _randn(1, DIM, d_out, seed=112)
    alpha = torch.tensor([[0.9, 1e-160, 1e-160, 0.8]], dtype=F64)
    probe = _randn(DIM, d_out, seed=113)
    eta = torch.tensor([[0.3, 0.2, 0.4, 0.1]], dtype=F64, requires_grad=True)
    w = w0[0]
    for t in range(n):  # row convention: W_t = (α_t I − η_t k kᵀ) W_{t-1} − η_t k g_tᵀ
        k = keys[0, t]
        w = alpha[0, t] * w - eta[0, t] * torch.outer(k, k @ w) - eta[0, t] * torch.outer(k, g[0, t])
    (want,) = torch.autograd.grad((w * probe).sum(), eta)
    (got_w,) = chunk_recurrence((w0,), [(keys, g)], keys, eta, alpha)
    (got,) = torch.autograd.grad((got_w[0] * probe).sum(), eta)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got_w[0], w.detach(), rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# self_modifying=False: static projections (Eq. 76), only the main memory learns (Eq. 77–78, 81)
# --------------------------------------------------------------------------------------------------


def _static_loop(module: SelfModifyingTitans, x: torch.Tensor):
    """Eq. 76 projections and one matrix memory ``M z`` (column convention), chunk snapshots of Eq. 90."""
    eye = torch.eye(DIM, dtype=F64)
    w_k, w_v, w_q = (lin.weight.detach() for lin in (module.to_k, module.to_v, module.to_q))
    (w_eta, b_eta), (w_alpha, b_alpha) = (
        (r.weight.detach()[0], r.bias.detach()[0]) for r in (module.eta_readout, module.alpha_readout)
    )
    outputs, finals = [], []
    for b in range(x.shape[0]):
        mem = module.initial["memory_0"].detach().T.clone()
        snap, ys = mem, []
        for t in range(x.shape[1]):
            snap = mem if t % module.chunk_size == 0 else snap
            x_t = x[b, t]
            k, v, q = _unit(w_k @ x_t), w_v @ x_t, _unit(w_q @ x_t)
            eta = torch.sigmoid(w_eta @ x_t + b_eta)
            alpha = torch.sigmoid(w_alpha @ x_t + b_alpha)
            ys.append(snap @ q)
            grad = torch.outer(snap @ k - snap @ v, k)  # ∇ ½‖M k − M v‖² at the snapshot (v̂ = M(v))
            mem = mem @ (alpha * eye - eta * torch.outer(k, k)) - eta * grad
        outputs.append(torch.stack(ys))
        finals.append(mem.T)
    return torch.stack(outputs), torch.stack(finals)


@pytest.mark.equation("nl", 76)
@pytest.mark.parametrize("chunk", [1, 3])
def test_static_projection_module_and_its_reference_equal_the_loop_written_out(chunk):
    module = _module(memory="linear", self_modifying=False, chunk_size=chunk)
    x = _randn(2, 7, DIM, seed=114, scale=0.5)
    want_y, want_w = _static_loop(module, x)
    for fn in (lambda m, z: m(z), self_modifying_reference):
        y, state = fn(module, x)
        assert tuple(state.current) == ("memory",)
        torch.testing.assert_close(y, want_y, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(state.current["memory"][0], want_w, rtol=1e-11, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# The token reference (Eq. 86–88) as a stream: given state, position, empty input
# --------------------------------------------------------------------------------------------------


@pytest.mark.equation("nl", 86)
@pytest.mark.equation("nl", 88)
def test_reference_continues_from_a_given_state_and_counts_positions():
    module = _module(chunk_size=3)
    x = _randn(2, 7, DIM, seed=115, scale=0.5)
    y, state = self_modifying_reference(module, x)
    assert state.position == 7
    y1, s1 = self_modifying_reference(module, x[:, :1])
    assert s1.position == 1
    y2, s2 = self_modifying_reference(module, x[:, 1:], s1)
    assert s2.position == 7
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, rtol=1e-12, atol=1e-13)
    # the chunked module picks the stream up at position 1 (mid-chunk) from the reference's state
    y3, s3 = module(x[:, 1:], s1)
    torch.testing.assert_close(y3, y2, rtol=1e-10, atol=1e-12)
    for name in module.names:
        for a, b, c in zip(s2.current[name], s3.current[name], state.current[name], strict=True):
            torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-13)
            torch.testing.assert_close(b, c, rtol=1e-10, atol=1e-12)


@pytest.mark.equation("nl", 86)
def test_reference_on_an_empty_sequence_returns_an_empty_output_and_the_start_state():
    module = _module()
    y, state = self_modifying_reference(module, torch.zeros(2, 0, DIM, dtype=F64))
    assert y.shape == (2, 0, DIM) and y.dtype == F64
    assert state.position == 0
    start = module.init_state(2, dtype=F64)
    for name in module.names:
        for a, b in zip(state.current[name], start.current[name], strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_other_chunk_size_zero_is_refused_not_read_as_unset():
    with pytest.raises(ValueError) as caught:
        SelfModifyingTitans(DIM, chunk_size=4, other_chunk_size=0)
    assert str(caught.value) == "other_chunk_size must be an int >= 1, got 0"
    assert SelfModifyingTitans(DIM, chunk_size=4).other_chunk_size == 4  # None: the default, chunk_size
