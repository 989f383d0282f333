"""Self-modifying Titans (NL v1, Eq. 76–93).

Expectations come from formulas written out here in the column convention of the catalog (a matrix memory
``M (d_out, d_in)`` read as ``M z``, explicit identity matrices, one sequence at a time), from autograd of
losses written here, and from NL part 1's ``dgd_step``; the chunk-parallel module is also checked against
its own token-by-token reference (outputs, final states, outer gradients). float64 throughout.
"""

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


def _hand_loop(module: SelfModifyingTitans, x: torch.Tensor, rule: str = "dgd"):
    """Eq. 83–88 (Eq. 90's chunk snapshots) for linear memories, one sequence at a time, ``M z`` reads."""
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
            snap = {n: mem[n] if t % module.chunk_of(n) == 0 else snap[n] for n in module.names}
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


@pytest.mark.equation("nl", 83)
@pytest.mark.equation("nl", 84)
@pytest.mark.equation("nl", 90)
@pytest.mark.parametrize(("chunk", "other"), [(1, 1), (3, 3), (2, 4), (4, 2)])
def test_chunked_module_with_matrix_memories_equals_the_loop_written_out(chunk, other):
    module = _module(memory="linear", chunk_size=chunk, other_chunk_size=other)
    x = _randn(2, 9, DIM, seed=1, scale=0.5)
    want_y, want_states = _hand_loop(module, x)
    y, state = module(x)
    torch.testing.assert_close(y, want_y, rtol=1e-12, atol=1e-12)
    for name in module.names:
        torch.testing.assert_close(state.current[name][0], want_states[name], rtol=1e-11, atol=1e-12)


@pytest.mark.equation("nl", 86)
@pytest.mark.equation("nl", 87)
@pytest.mark.equation("nl", 88)
@pytest.mark.parametrize("rule", ["dgd", "gd"])
def test_token_by_token_reference_with_matrix_memories_equals_the_loop_written_out(rule):
    module = _module(memory="linear", rule=rule)
    x = _randn(2, 7, DIM, seed=2, scale=0.5)
    want_y, want_states = _hand_loop(module, x, rule)
    y, state = self_modifying_reference(module, x)
    torch.testing.assert_close(y, want_y, rtol=1e-12, atol=1e-12)
    for name in module.names:
        torch.testing.assert_close(state.current[name][0], want_states[name], rtol=1e-11, atol=1e-12)


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
