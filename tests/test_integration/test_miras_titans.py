"""Cross-paper identities: MIRAS generalises Titans, and its configurations are the models it names.

* MIRAS with (MLP, l2 bias, weight-decay retention, GD + momentum) *is* the Titans memory, bit for bit:
  outputs, states and gradients;
* Moneta with p = q = 2 is the l2 / weight-decay memory; Yaad with delta -> infinity is l2, with delta -> 0
  the l1 rule; Memora's states stay on the simplex;
* the dot-product bias without retention is linear attention (Titans Eq. 4-5), the l2 bias without
  retention and momentum is DeltaNet (Titans Eq. 34).
"""

import pytest
import torch

from neural_memory.common.attention import linear_memory_read, linear_memory_write
from neural_memory.common.delta_rule import delta_rule_step, longhorn_step
from neural_memory.miras.attentional_bias import DotProductBias, HuberBias, L2Bias, LpBias, YaadBias
from neural_memory.miras.chunked import miras_chunked_memory
from neural_memory.miras.framework import delta_retention_step, hebbian_step, ttt_linear_step
from neural_memory.miras.memory import MirasMemory, memora, moneta, yaad
from neural_memory.miras.retention import KLSoftmax, LqNormalization, WeightDecay
from neural_memory.titans.memory import NeuralMemory
from neural_memory.titans.memory_model import MemoryMLP
from neural_memory.titans.state import MemoryState

DT = torch.float64
DIM, HEADS = 8, 2


def paired(seed=0, **kwargs):
    torch.manual_seed(seed)
    titans = NeuralMemory(DIM, heads=HEADS, chunk_size=4, **kwargs).to(DT)
    miras = MirasMemory(DIM, heads=HEADS, chunk_size=4, bias=L2Bias(), retention=WeightDecay(), **kwargs)
    miras = miras.to(DT)
    miras.load_state_dict(titans.state_dict())
    return titans, miras


def all_tensors(state: MemoryState):
    return [*state.weights, *state.momentum, *state.chunk_weights, *state.conv.values()]


@pytest.mark.parametrize("impl", ["chunked", "reference"])
@pytest.mark.parametrize("depth", [1, 2])
def test_miras_l2_weight_decay_momentum_is_the_titans_memory_bit_for_bit(impl, depth):
    titans, miras = paired(depth=depth, impl=impl)
    assert set(titans.state_dict()) == set(miras.state_dict())  # nothing extra to learn
    x = torch.randn(2, 11, DIM, dtype=DT, requires_grad=True)
    results = []
    for module in (titans, miras):
        y1, s1 = module(x[:, :6])
        y2, s2 = module(x[:, 6:], s1)
        y = torch.cat([y1, y2], dim=1)
        loss = (y * y).sum() + sum((w * w).sum() for w in s2.weights)
        grads = torch.autograd.grad(loss, [x, *module.parameters()])
        results.append((y, s2, grads))
    (y_t, s_t, g_t), (y_m, s_m, g_m) = results
    assert torch.equal(y_t, y_m)
    assert s_m.accumulator is None
    for a, b in zip(all_tensors(s_t), all_tensors(s_m), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(g_t, g_m, strict=True):
        assert torch.equal(a, b)


def fixed(module_fn, **kwargs):
    torch.manual_seed(0)
    common = {"heads": HEADS, "chunk_size": 4, "gates": "fixed", "conv_kernel": 0}
    return module_fn(DIM, **{**common, **kwargs}).to(DT)


@pytest.mark.equation("miras", 24)
def test_moneta_with_p_and_q_two_is_the_l2_weight_decay_memory():
    gates = (0.05, 0.0, 0.01)
    lp = fixed(moneta, p=2.0, q=2.0, fixed_gates=gates)
    lp.bias = LpBias(p=2.0, smooth=False)  # the exact |r|^2, as l2 is
    # Moneta's l_q retention shrinks towards zero: with q = 2 it is Eq. 13 as printed (forget_to_initial off)
    l2 = fixed(MirasMemory, bias=L2Bias(), retention=WeightDecay(), momentum=False, fixed_gates=gates,
               depth=2, activation="gelu", residual_norm=True, forget_to_initial=False)  # fmt: skip
    l2.load_state_dict(lp.state_dict())
    x = torch.randn(2, 10, DIM, dtype=DT)
    (y_lp, s_lp), (y_l2, s_l2) = lp(x), l2(x)
    torch.testing.assert_close(y_lp, y_l2, rtol=1e-12, atol=1e-12)
    for a, b in zip(s_lp.weights, s_l2.weights, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.equation("miras", 26)
def test_yaad_with_a_huge_threshold_is_the_l2_memory():
    gates = (0.05, 0.0, 0.01)
    huge = fixed(yaad, fixed_gates=gates, delta_init=1e6)
    l2 = fixed(MirasMemory, bias=L2Bias(scale=0.5), retention=WeightDecay(), momentum=False,
               fixed_gates=gates, depth=2, activation="gelu", residual_norm=True)  # fmt: skip
    state = {k: v for k, v in huge.state_dict().items() if not k.startswith("delta_gate")}
    l2.load_state_dict(state)
    x = torch.randn(2, 10, DIM, dtype=DT)
    torch.testing.assert_close(huge(x)[0], l2(x)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.equation("miras", 26)
def test_yaad_with_a_tiny_threshold_takes_delta_scaled_l1_steps():
    # delta -> 0: every token is an outlier, the step is eta * delta * Sign(r) k^T / sqrt(d): the l1 rule with
    # step eta * delta / sqrt(d). Linear memory, one head, so the comparison is the l1 recurrence written out.
    torch.manual_seed(1)
    n, t, d = 2, 7, 4
    model = MemoryMLP(d, depth=1).to(DT)
    w0 = torch.randn(n, d, d, dtype=DT)
    k, v = torch.randn(n, t, d, dtype=DT), torch.randn(n, t, d, dtype=DT)
    keep, step, delta = 0.9, 0.1, 1e-3
    state = MemoryState(weights=(w0,), momentum=(torch.zeros_like(w0),), chunk_weights=(w0,))
    full = lambda value: torch.full((n, t), value, dtype=DT)  # noqa: E731
    gates = (full(1 - keep), full(0.0), full(step))
    params = {"delta": torch.full((n, t, 1), delta, dtype=DT)}
    _, s = miras_chunked_memory(model, state, k, v, None, *gates, output_grad=YaadBias().output_grad,
                                bias_params=params, chunk_size=1)  # fmt: skip
    w = w0
    for i in range(t):
        r = (k[:, i, None, :] @ w)[:, 0] - v[:, i]
        w = keep * w - step * delta / d**0.5 * k[:, i, :, None] * torch.sign(r)[:, None, :]
    torch.testing.assert_close(s.weights[0], w, rtol=0, atol=1e-14)


@pytest.mark.equation("miras", 27)
@pytest.mark.parametrize("chunk", [1, 4])
def test_memora_states_stay_on_the_simplex(chunk):
    module = fixed(memora, fixed_gates=(0.1, 0.0, 0.05), chunk_size=chunk)
    x = 30 * torch.randn(2, 13, DIM, dtype=DT)
    _, state = module(x)
    for w in (*state.weights, *state.chunk_weights):
        assert (w > 0).all()
        torch.testing.assert_close(w.sum(dim=-2), torch.ones_like(w.sum(dim=-2)), rtol=0, atol=1e-12)


@pytest.mark.equation("titans", 4)
@pytest.mark.equation("titans", 5)
def test_dot_product_bias_without_retention_is_linear_attention():
    # -2 <k W, v> has gradient -2 k^T v: one GD step of size theta writes 2 theta k^T v, Eq. 4 scaled.
    torch.manual_seed(2)
    n, t, d, theta = 2, 6, 3, 0.25
    model = MemoryMLP(d, depth=1).to(DT)
    w0 = torch.zeros(n, d, d, dtype=DT)
    k, v, q = (torch.randn(n, t, d, dtype=DT) for _ in range(3))
    state = MemoryState(weights=(w0,), momentum=(torch.zeros_like(w0),), chunk_weights=(w0,))
    gates = (torch.zeros(n, t, dtype=DT), torch.zeros(n, t, dtype=DT), torch.full((n, t), theta, dtype=DT))
    y, _ = miras_chunked_memory(model, state, k, v, q, *gates, output_grad=DotProductBias().output_grad,
                                chunk_size=4)  # fmt: skip
    memory, want = w0, []
    for i in range(t):
        memory = linear_memory_write(memory, 2 * theta * k[:, i], v[:, i])
        want.append(linear_memory_read(memory, q[:, i]))
    torch.testing.assert_close(y, torch.stack(want, dim=1), rtol=0, atol=1e-12)


@pytest.mark.equation("titans", 34)
def test_l2_bias_without_retention_or_momentum_is_deltanet():
    torch.manual_seed(3)
    n, t, d = 2, 9, 4
    model = MemoryMLP(d, depth=1).to(DT)
    w0 = torch.randn(n, d, d, dtype=DT)
    k = torch.nn.functional.normalize(torch.randn(n, t, d, dtype=DT), dim=-1)
    v = torch.randn(n, t, d, dtype=DT)
    beta = torch.rand(n, t, dtype=DT)
    state = MemoryState(weights=(w0,), momentum=(torch.zeros_like(w0),), chunk_weights=(w0,))
    gates = (torch.zeros(n, t, dtype=DT), torch.zeros(n, t, dtype=DT), beta)
    _, s = miras_chunked_memory(model, state, k, v, None, *gates, output_grad=L2Bias(scale=0.5).output_grad,
                                chunk_size=1)  # fmt: skip
    memory = w0.transpose(-1, -2)  # DeltaNet's S (d_v, d_k) reads S k
    for i in range(t):
        memory = delta_rule_step(memory, k[:, i], v[:, i], beta[:, i])
    torch.testing.assert_close(s.weights[0].transpose(-1, -2), memory, rtol=0, atol=1e-12)


def linear_stream(seed, n=2, t=9, d=4):
    torch.manual_seed(seed)
    model = MemoryMLP(d, depth=1).to(DT)
    w0 = torch.randn(n, d, d, dtype=DT)
    k = torch.nn.functional.normalize(torch.randn(n, t, d, dtype=DT), dim=-1)
    v, q = torch.randn(n, t, d, dtype=DT), torch.randn(n, t, d, dtype=DT)
    state = MemoryState(weights=(w0,), momentum=(torch.zeros_like(w0),), chunk_weights=(w0,))
    return model, w0, k, v, q, state


@pytest.mark.equation("miras", 8)
@pytest.mark.parametrize("chunk", [1, 4])
def test_dot_product_bias_with_weight_decay_is_gated_linear_attention(chunk):
    # Table 1's RetNet / Mamba2 rows: M_t = alpha_t M_{t-1} + v_t k_t^T (Eq. 8), with the write scaled by
    # the step: the dot-product gradient -2 k^T v does not depend on M, so chunking changes nothing.
    model, w0, k, v, q, state = linear_stream(4)
    n, t, _ = k.shape
    keep, step = 0.5 + 0.5 * torch.rand(n, t, dtype=DT), 0.3 * torch.rand(n, t, dtype=DT)
    gates = (1 - keep, torch.zeros(n, t, dtype=DT), step)
    y, s = miras_chunked_memory(model, state, k, v, q, *gates, output_grad=DotProductBias().output_grad,
                                chunk_size=chunk)  # fmt: skip
    memory, want = w0.transpose(-1, -2), []  # column convention (d_v, d_k)
    for i in range(t):
        memory = hebbian_step(memory, k[:, i], 2 * step[:, i, None] * v[:, i], keep[:, i])
        want.append((memory @ q[:, i, :, None])[..., 0])
    torch.testing.assert_close(y, torch.stack(want, dim=1), rtol=0, atol=1e-12)
    torch.testing.assert_close(s.weights[0].transpose(-1, -2), memory, rtol=0, atol=1e-12)


@pytest.mark.equation("miras", 9)
def test_l2_bias_with_weight_decay_is_eq26s_order_and_gated_deltanet_only_without_decay():
    # Our weight decay keeps (1 - a) M_{t-1} and steps with the gradient at M_{t-1} (Titans Eq. 13, Yaad
    # Eq. 26); Gated DeltaNet (Eq. 9, corrected) steps with the gradient at the retained alpha M_{t-1}.
    # The two agree when nothing decays (DeltaNet) and differ by eta (1 - alpha) M k k^T otherwise.
    model, w0, k, v, _, state = linear_stream(5)
    n, t, _ = k.shape
    keep, beta = 0.5 + 0.5 * torch.rand(n, t, dtype=DT), torch.rand(n, t, dtype=DT)
    for decays in (False, True):
        kept = keep if decays else torch.ones_like(keep)
        gates = (1 - kept, torch.zeros(n, t, dtype=DT), beta)
        _, s = miras_chunked_memory(model, state, k, v, None, *gates,
                                    output_grad=L2Bias(scale=0.5).output_grad, chunk_size=1)  # fmt: skip
        ours = gdn = w0.transpose(-1, -2)
        for i in range(t):
            residual = (ours @ k[:, i, :, None])[..., 0] - v[:, i]
            ours = (
                kept[:, i, None, None] * ours
                - beta[:, i, None, None] * residual[..., None] * k[:, i, None, :]
            )
            gdn = delta_retention_step(gdn, k[:, i], v[:, i], beta[:, i], kept[:, i])
        torch.testing.assert_close(s.weights[0].transpose(-1, -2), ours, rtol=0, atol=1e-12)
        assert torch.allclose(ours, gdn, rtol=0, atol=1e-12) is not decays


def test_miras_memory_refuses_foreign_objects():
    with pytest.raises(TypeError, match="bias"):
        MirasMemory(DIM, bias="l2")
    with pytest.raises(TypeError, match="retention"):
        MirasMemory(DIM, retention=0.5)
    with pytest.raises(ValueError, match="read"):
        MirasMemory(DIM, retention=KLSoftmax(), read="chunk")
    with pytest.raises(ValueError, match="read"):
        MirasMemory(DIM, retention=LqNormalization(q=4.0), read="chunk")


def test_a_non_linear_retention_refuses_forget_to_initial():
    # Moneta and Memora read phi(C): there is no M_0 for forgetting to return to, so the flag is off by
    # default there and asking for it is an error, not a silent no-op.
    assert not moneta(DIM).memory.forget_to_initial
    assert yaad(DIM).memory.forget_to_initial  # weight decay: the Titans rule
    with pytest.raises(ValueError, match="forget_to_initial"):
        moneta(DIM, forget_to_initial=True)


@pytest.mark.parametrize("loop", ["chunked", "reference"])
def test_the_memory_loops_refuse_an_anchor_with_a_projection(loop):
    from neural_memory.titans.memory_model import MemoryMLP
    from neural_memory.titans.reference import reference_memory
    from neural_memory.titans.state import MemoryState

    model = MemoryMLP(4)  # LayerNorm read-out: forget_to_initial on
    w0 = model.expand(1)
    state = MemoryState(weights=w0, momentum=tuple(torch.zeros_like(w) for w in w0), chunk_weights=w0)
    x, gate = torch.randn(1, 3, 4), torch.full((1, 3), 0.1)
    run = miras_chunked_memory if loop == "chunked" else reference_memory
    extra = {"output_grad": L2Bias().raw_output_grad} if loop == "chunked" else {}
    extra["project"] = LqNormalization(q=4).project
    with pytest.raises(ValueError, match="forget_to_initial"):
        run(model, state, x, x, x, gate, gate, gate, chunk_size=2, **extra)


# -- the framework table's online-regression rows as MirasMemory configurations -------------------------


def linear_memory(algorithm, theta, chunk=1):
    return fixed(MirasMemory, bias=L2Bias(scale=0.5), retention=WeightDecay(), algorithm=algorithm, depth=1,
                 residual_norm=False, fixed_gates=(0.0, 0.0, theta), chunk_size=chunk)  # fmt: skip


def written(memory, x):
    """The memory's final weights (column convention) and the keys and values it wrote."""
    start = memory.init_state(x.shape[0])
    keys, values, _ = memory.keys_values(x, start)
    _, state = memory(x, start)
    return start.weights[0].transpose(-1, -2), state.weights[0].transpose(-1, -2), keys, values


@pytest.mark.equation("titans", 35)
@pytest.mark.parametrize("theta", [0.3, 5.0])
def test_implicit_gd_with_the_l2_bias_is_longhorn(theta):
    # Table 1's Longhorn row: implicit online regression, S' = S - theta (S' k - v) k^T, closed form Eq. 35
    torch.manual_seed(1)
    x = torch.randn(2, 7, DIM, dtype=DT)
    w0, got, k, v = written(linear_memory("implicit-gd", theta), x)
    memory = w0
    for i in range(x.shape[1]):
        memory = longhorn_step(memory, k[:, i], v[:, i], theta)
    torch.testing.assert_close(got, memory, rtol=0, atol=1e-12)
    # the explicit step with the same theta is DeltaNet (TTT-Linear's write), a different memory
    _, explicit, _, _ = written(linear_memory("gd", theta), x)
    want = w0
    for i in range(x.shape[1]):
        want = ttt_linear_step(want, k[:, i], v[:, i], theta)
    torch.testing.assert_close(explicit, want, rtol=0, atol=1e-12)
    assert (explicit - got).abs().max() > 1e-3


def test_implicit_gd_needs_a_linear_memory_and_the_l2_bias():
    with pytest.raises(ValueError, match=r"implicit-gd.*needs a linear memory"):
        MirasMemory(DIM, algorithm="implicit-gd")  # depth 2
    with pytest.raises(ValueError, match=r"implicit-gd.*needs a linear memory"):
        MirasMemory(DIM, algorithm="implicit-gd", depth=1, residual_norm=False, bias=HuberBias())
    with pytest.raises(ValueError, match=r"implicit-gd.*needs a linear memory"):  # a per-channel step
        MirasMemory(
            DIM, algorithm="implicit-gd", depth=1, residual_norm=False, bias=L2Bias(), channel_step=True
        )
