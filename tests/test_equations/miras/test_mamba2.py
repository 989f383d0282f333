"""Mamba2 (Dao & Gu 2024, SSD), the selective state-space baseline: the recurrence and its block.

No equation markers: Mamba2 is a baseline, not a numbered equation of the three papers. Expectations come
from a two-token example worked by hand, from the recurrence written out here token by token (state
``S ∈ R^{N x P}`` per head, as Mamba2 writes it), from the Mamba2 block written out here from the layer's
weights, and from the existing linear-attention loop (Titans Eq. 4-5) when nothing decays.
"""

import copy
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from neural_memory.miras.baselines import DeltaRuleState, recurrent_linear_attention
from neural_memory.miras.mamba2 import Mamba2Layer, Mamba2State, ssd

F64 = torch.float64
IMPLS = ["chunked", "reference"]
DIM, HEADS, D_STATE = 8, 2, 3  # inner width 16 (expand 2): heads of 8 channels


def _ssd_inputs(batch=2, heads=3, length=11, p=4, n=5, seed=0, strong=False):
    """Random SSD inputs ``(x, Δ, A, B, C, D, S_0)``; Δ A up to 45 with ``strong`` (near-total forgetting)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, heads, length, p, dtype=F64, generator=g)
    delta = torch.rand(batch, heads, length, dtype=F64, generator=g) * (3.0 if strong else 0.5)
    A = 1.0 + torch.rand(heads, dtype=F64, generator=g) * (14.0 if strong else 2.0)
    B = torch.randn(batch, length, n, dtype=F64, generator=g)
    C = torch.randn(batch, length, n, dtype=F64, generator=g)
    D = torch.randn(heads, dtype=F64, generator=g)
    s0 = torch.randn(batch, heads, p, n, dtype=F64, generator=g)
    return x, delta, A, B, C, D, s0


def _mamba2_loop(x, delta, A, B, C, D, s0):
    """Mamba2's recurrence with its own orientation, S (N x P) per head: S = a S + B (Δ x)ᵀ, y = Sᵀ C + D x.

    Returns the outputs ``(batch, H, T, P)`` and the final state transposed to the layer's ``(P, N)``."""
    state = s0.transpose(-1, -2)  # (batch, H, N, P)
    outputs = []
    for t in range(x.shape[2]):
        a = torch.exp(-delta[:, :, t] * A)  # (batch, H)
        write = B[:, None, t, :, None] * (delta[:, :, t, None] * x[:, :, t])[:, :, None, :]  # B (Δ x)ᵀ
        state = a[..., None, None] * state + write
        y = (state * C[:, None, t, :, None]).sum(-2) + D[:, None] * x[:, :, t]  # Sᵀ C + D x
        outputs.append(y)
    return torch.stack(outputs, dim=2), state.transpose(-1, -2)


# --------------------------------------------------------------------------------------------------
# the recurrence: by hand, written out, without decay, chunked == token loop
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("chunk_size", [1, 2, 4])
def test_two_tokens_with_a_one_dimensional_state_by_hand(impl, chunk_size):
    # One head, P = N = 1, A = ln 2 (so a_t = 2^(-Δ_t)), D = 1/2, S_0 = 4.
    # t = 1: x = 2,  Δ = 1, B = 3, C = 1:   a = 1/2, S_1 = 4/2 + 3 * (1 * 2) = 8,     y_1 = 1 * 8 + 2/2 = 9
    # t = 2: x = -3, Δ = 2, B = 1, C = -2:  a = 1/4, S_2 = 8/4 + 1 * (2 * -3) = -4,  y_2 = -2 * -4 - 3/2 = 6.5
    x = torch.tensor([2.0, -3.0], dtype=F64).reshape(1, 1, 2, 1)
    delta = torch.tensor([[[1.0, 2.0]]], dtype=F64)
    A = torch.tensor([math.log(2.0)], dtype=F64)
    B = torch.tensor([3.0, 1.0], dtype=F64).reshape(1, 2, 1)
    C = torch.tensor([1.0, -2.0], dtype=F64).reshape(1, 2, 1)
    D = torch.tensor([0.5], dtype=F64)
    s0 = torch.full((1, 1, 1, 1), 4.0, dtype=F64)
    y, state = ssd(x, delta, A, B, C, D, impl=impl, chunk_size=chunk_size, initial_state=s0)
    torch.testing.assert_close(y.flatten(), torch.tensor([9.0, 6.5], dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(state.flatten(), torch.tensor([-4.0], dtype=F64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("strong", [False, True], ids=["mild-decay", "strong-decay"])
def test_ssd_is_the_mamba2_recurrence_written_out(impl, strong):
    inputs = _ssd_inputs(seed=1, strong=strong)
    *args, s0 = inputs
    y, state = ssd(*args, impl=impl, chunk_size=4, initial_state=s0)
    y_ref, state_ref = _mamba2_loop(*inputs)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(state, state_ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shared", [True, False], ids=["B=C", "B!=C"])
def test_without_decay_ssd_is_linear_attention(impl, shared):
    # A = 0: a_t = 1, so S_t = S_{t-1} + B_t (Δ_t x_t)ᵀ is linear attention with k = B, q = C, v = Δ x
    x, delta, _, B, C, D, s0 = _ssd_inputs(seed=2)
    if shared:
        C = B
    A = torch.zeros(x.shape[1], dtype=F64)
    y, state = ssd(x, delta, A, B, C, D, impl=impl, chunk_size=3, initial_state=s0)
    heads = x.shape[1]
    q, k = (t[:, None].expand(-1, heads, -1, -1) for t in (C, B))
    o, state_ref = recurrent_linear_attention(q, k, delta[..., None] * x, initial_state=s0)
    torch.testing.assert_close(y, o + D[:, None, None] * x, rtol=0, atol=1e-12)
    torch.testing.assert_close(state, state_ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("chunk_size", "length"), [(1, 11), (3, 11), (16, 11), (4, 8)], ids=["b1", "b3", "b16>T", "b4|T"]
)
def test_chunked_ssd_equals_the_token_loop_with_gradients(chunk_size, length):
    inputs = _ssd_inputs(length=length, seed=3)
    g = torch.Generator().manual_seed(4)
    y_cot = torch.randn(2, 3, length, 4, dtype=F64, generator=g)
    s_cot = torch.randn(2, 3, 4, 5, dtype=F64, generator=g)

    def run(impl):
        leaves = [t.clone().requires_grad_(True) for t in inputs]
        *args, s0 = leaves
        y, state = ssd(*args, impl=impl, chunk_size=chunk_size, initial_state=s0)
        grads = torch.autograd.grad((y * y_cot).sum() + (state * s_cot).sum(), leaves)
        return y, state, grads

    (y, state, grads), (y_ref, state_ref, grads_ref) = run("chunked"), run("reference")
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(state, state_ref, rtol=0, atol=1e-10)
    assert len(grads) == 7  # x, Δ, A, B, C, D, S_0
    for got, expected in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def test_ssd_starts_from_zeros():
    *args, _ = _ssd_inputs(seed=5)
    y, state = ssd(*args, chunk_size=4)
    y_ref, state_ref = _mamba2_loop(*args, torch.zeros(2, 3, 4, 5, dtype=F64))
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(state, state_ref, rtol=0, atol=1e-12)


def _replace(inputs, index, value):
    return [value if i == index else t for i, t in enumerate(inputs)]


@pytest.mark.parametrize(
    ("index", "make", "match"),
    [
        (1, lambda t: -t, "delta must be finite and >= 0"),
        (1, lambda t: t[..., :-1], r"delta must have shape \(2, 3, 11\)"),
        (2, lambda t: -t, "A must be finite and >= 0"),
        (2, lambda t: t.clone().fill_(math.inf), "A must be finite and >= 0"),
        (2, lambda t: t[:2], r"A must have shape \(3,\)"),
        (5, lambda t: t[None], r"D must have shape \(3,\)"),
        (3, lambda t: t[:, :-1], r"B must have shape \(2, 11, N\)"),
        (4, lambda t: t[..., :-1], r"C must have shape \(2, 11, 5\) \(as B\)"),
        (0, lambda t: t[0], r"x must have shape \(batch, heads, T, P\)"),
    ],
)
def test_bad_ssd_arguments_raise(index, make, match):
    *args, _ = _ssd_inputs(seed=6)
    with pytest.raises(ValueError, match=match):
        ssd(*_replace(args, index, make(args[index])))


def test_bad_ssd_impl_and_state_raise():
    *args, s0 = _ssd_inputs(seed=6)
    with pytest.raises(ValueError, match="impl must be one of"):
        ssd(*args, impl="fast")
    with pytest.raises(ValueError, match="initial_state must have shape"):
        ssd(*args, initial_state=s0.transpose(-1, -2))  # Mamba2's (N, P) orientation: we keep (P, N)


@pytest.mark.parametrize(
    ("index", "make", "message"),
    [
        (0, lambda t: t[0], "x must have shape (batch, heads, T, P), got (3, 11, 4)"),
        (0, lambda t: t.tolist(), "x must have shape (batch, heads, T, P), got list"),
        (1, lambda t: t[..., :-1], "delta must have shape (2, 3, 11), got (2, 3, 10)"),
        (1, lambda t: 0.5, "delta must have shape (2, 3, 11), got float"),
        (2, lambda t: t[:2], "A must have shape (3,), got (2,)"),
        (2, lambda t: 1.0, "A must have shape (3,), got float"),
        (5, lambda t: t[None], "D must have shape (3,), got (1, 3)"),
        (5, lambda t: t.tolist(), "D must have shape (3,), got list"),
        (3, lambda t: t[:, :-1], "B must have shape (2, 11, N), got (2, 10, 5)"),
        (3, lambda t: t[..., 0], "B must have shape (2, 11, N), got (2, 11)"),  # (batch, T) right
        (3, lambda t: t.tolist(), "B must have shape (2, 11, N), got list"),
        (4, lambda t: t[..., :-1], "C must have shape (2, 11, 5) (as B), got (2, 11, 4)"),
        (4, lambda t: "C", "C must have shape (2, 11, 5) (as B), got str"),
    ],
)
def test_bad_ssd_arguments_raise_the_exact_message(index, make, message):
    # the message shows the shape given, or the type's name of a non-tensor
    *args, _ = _ssd_inputs(seed=6)
    with pytest.raises(ValueError) as caught:
        ssd(*_replace(args, index, make(args[index])))
    assert str(caught.value) == message


def _spy(monkeypatch, name):
    """Record the keyword arguments of every call to the mamba2 module's ``name``, then run it."""
    import neural_memory.miras.mamba2 as mamba2_module

    calls, original = [], getattr(mamba2_module, name)

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(mamba2_module, name, spy)
    return calls


@pytest.mark.parametrize(
    ("kwargs", "runs", "chunk_size"),
    [
        ({}, "chunk_linear_attention", 64),  # the defaults: chunked, 64 tokens per chunk
        ({"impl": "chunked", "chunk_size": 4}, "chunk_linear_attention", 4),
        ({"impl": "reference", "chunk_size": 3}, "recurrent_linear_attention", 3),
    ],
)
def test_ssd_runs_the_asked_impl_with_the_asked_chunk_size(monkeypatch, kwargs, runs, chunk_size):
    chunked = _spy(monkeypatch, "chunk_linear_attention")
    reference = _spy(monkeypatch, "recurrent_linear_attention")
    *args, _ = _ssd_inputs(seed=7)
    ssd(*args, **kwargs)
    called, other = (chunked, reference) if runs == "chunk_linear_attention" else (reference, chunked)
    assert len(called) == 1 and not other
    assert called[0]["chunk_size"] == chunk_size


# --------------------------------------------------------------------------------------------------
# the block
# --------------------------------------------------------------------------------------------------


def _layer(*, seed=0, dtype=F64, perturb=True, **kwargs):
    """A float64 layer; ``perturb`` moves every parameter off its initial value (D = 1, norm gain 1, ...)."""
    torch.manual_seed(seed)
    layer = Mamba2Layer(DIM, **{"heads": HEADS, "d_state": D_STATE, **kwargs}).to(dtype)
    if perturb:
        with torch.no_grad():
            for p in layer.parameters():
                p.add_(0.3 * torch.randn_like(p))
    return layer


def _pair(chunk_size):
    """The chunked layer and its token-loop twin with the same parameters."""
    chunked = _layer(chunk_size=chunk_size)
    reference = copy.deepcopy(chunked)
    reference.impl = "reference"
    return chunked, reference


def _x(batch, length, seed=1, dtype=F64):
    return torch.randn(batch, length, DIM, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def _block_written_out(layer, x):
    """Mamba2's block token by token from the layer's weights, from a zero state (conv taps as in
    tests/test_equations/common/test_conv.py: tap K - 1 is the current token)."""
    e, n, h, p = layer.inner, layer.d_state, layer.heads, layer.head_dim
    w_in = layer.in_proj.weight  # rows: z (E), x (E), B (N), C (N), Δ (H)
    taps, tap_bias = layer.conv.depthwise.weight[:, 0, :], layer.conv.depthwise.bias  # (E + 2N, K), (E + 2N,)
    kernel = taps.shape[1]
    A, state = torch.exp(layer.A_log), x.new_zeros(x.shape[0], h, n, p)  # S: (N, P) per head
    raw = x @ w_in.T
    outputs = []
    for t in range(x.shape[1]):
        z, dt = raw[:, t, :e], raw[:, t, 2 * e + 2 * n :]
        xbc = tap_bias.expand(x.shape[0], -1)
        for j in range(kernel):
            source = t - (kernel - 1 - j)
            if source >= 0:  # earlier inputs are the zeros of an empty cache
                xbc = xbc + taps[:, j] * raw[:, source, e : 2 * e + 2 * n]
        xbc = xbc * torch.sigmoid(xbc)  # SiLU
        xt, b, c = xbc[:, :e].reshape(-1, h, p), xbc[:, e : e + n], xbc[:, e + n :]
        delta = torch.log1p(torch.exp(dt + layer.dt_bias))  # softplus, (batch, H)
        write = b[:, None, :, None] * (delta[..., None] * xt)[:, :, None, :]  # B (Δ x)ᵀ, (batch, H, N, P)
        state = torch.exp(-delta * A)[..., None, None] * state + write
        y = (state * c[:, None, :, None]).sum(-2) + layer.D[:, None] * xt  # Sᵀ C + D x, (batch, H, P)
        gated = y.reshape(-1, e) * z * torch.sigmoid(z)  # y ⊙ SiLU(z), then RMSNorm with gain
        normed = gated / torch.sqrt((gated**2).mean(-1, keepdim=True) + 1e-5) * layer.norm.weight
        outputs.append(normed @ layer.out_proj.weight.T)
    return torch.stack(outputs, dim=1), state.transpose(-1, -2)


@pytest.mark.parametrize("impl", IMPLS)
def test_layer_is_the_mamba2_block_written_out(impl):
    layer = _layer(chunk_size=4, impl=impl)
    x = _x(2, 9, seed=11)
    y, state = layer(x)
    y_ref, memory_ref = _block_written_out(layer, x)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(state.memory, memory_ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize(("chunk_size", "lengths"), [(1, (10, 7)), (3, (10, 7)), (16, (10, 7)), (5, (10, 5))])
def test_chunked_layer_equals_the_reference_layer(chunk_size, lengths):
    # two calls: the second starts from a non-zero state; 16 > T, 3 does not divide T, 5 does
    chunked, reference = _pair(chunk_size)
    x1, x2 = _x(2, lengths[0], seed=1), _x(2, lengths[1], seed=2)
    cot = torch.randn(2, lengths[1], DIM, dtype=F64, generator=torch.Generator().manual_seed(3))
    results = []
    for layer in (chunked, reference):
        x = x2.clone().requires_grad_(True)
        y1, state = layer(x1)
        y2, state = layer(x, state)
        loss = (y2 * cot).sum() + (y1**2).sum() + (state.memory**2).sum()
        grads = torch.autograd.grad(loss, [x, *layer.parameters()])
        results.append((y1, y2, state, grads))
    (y1, y2, state, grads), (y1_ref, y2_ref, state_ref, grads_ref) = results
    torch.testing.assert_close(y1, y1_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(y2, y2_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(state.memory, state_ref.memory, rtol=0, atol=1e-10)
    assert state.conv.keys() == state_ref.conv.keys() == {"xbc"}
    torch.testing.assert_close(state.conv["xbc"], state_ref.conv["xbc"], rtol=0, atol=0)
    names = [name for name, _ in chunked.named_parameters()]
    assert {"in_proj.weight", "conv.depthwise.weight", "dt_bias", "A_log", "D", "norm.weight"} <= set(names)
    assert len(grads) == 1 + len(names)
    for got, expected in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def test_initialisation_follows_mamba2():
    layer = Mamba2Layer(DIM, heads=4, d_state=D_STATE)
    # Δ = softplus(b_Δ) log-spaced over the heads in [1e-3, 1e-1] (float32 parameters: float32 rounding)
    delta = nn.functional.softplus(layer.dt_bias.double())
    torch.testing.assert_close(delta, torch.logspace(-3, -1, 4, dtype=F64), rtol=1e-6, atol=0)
    A = torch.exp(layer.A_log)
    assert bool(((A >= 1) & (A <= 16)).all()) and A.unique().numel() == 4
    assert torch.equal(layer.D, torch.ones(4))
    assert layer.in_proj.bias is None and layer.out_proj.bias is None
    assert layer.in_proj.weight.shape == (2 * 16 + 2 * D_STATE + 4, DIM)
    assert isinstance(layer.conv.pointwise, nn.Identity) and layer.conv.channels == 16 + 2 * D_STATE


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_strong_decay_stays_finite_and_equals_the_reference(dtype):
    # Δ ≈ 1e4: a_t = exp(-Δ A) underflows to 0 (every token forgets the past); the chunked form works with
    # log a_t = -Δ A and must neither produce NaN (−inf − −inf) nor differ from the loop that multiplies by 0
    chunked, _ = _pair(4)
    with torch.no_grad():
        chunked.dt_bias.fill_(1e4)
    chunked = chunked.to(dtype)
    reference = copy.deepcopy(chunked)
    reference.impl = "reference"
    x = _x(2, 9, seed=12, dtype=dtype).requires_grad_(True)
    (y, state), (y_ref, state_ref) = chunked(x), reference(x)
    assert bool(torch.isfinite(y).all())
    tol = 1e-10 if dtype == F64 else 1e-5
    torch.testing.assert_close(y, y_ref, rtol=tol, atol=tol)
    torch.testing.assert_close(state.memory, state_ref.memory, rtol=tol, atol=tol)
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert bool(torch.isfinite(grad).all())


@given(cut=st.integers(1, 12))
def test_layer_streams_exactly_at_any_split(cut):
    layer = _layer(chunk_size=4)
    x = _x(2, 13, seed=9)
    whole, state = layer(x)
    first, mid = layer(x[:, :cut])
    second, end = layer(x[:, cut:], mid)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, rtol=0, atol=1e-12)
    torch.testing.assert_close(end.memory, state.memory, rtol=0, atol=1e-12)
    # the cache holds projected inputs: the projection of a shorter call may round differently (1 ulp)
    torch.testing.assert_close(end.conv["xbc"], state.conv["xbc"], rtol=0, atol=1e-12)


def test_state_is_fixed_size_detachable_and_not_mutated():
    layer = _layer()
    x = _x(1, 9, seed=10)
    _, state = layer(x[:, :4])
    assert isinstance(state, Mamba2State)
    assert state.memory.shape == (1, HEADS, 2 * DIM // HEADS, D_STATE)  # (B, H, P, N)
    before = [state.memory.clone(), state.conv["xbc"].clone()]
    y, later = layer(x[:, 4:], state)
    assert later.numel() == state.numel() == state.memory.numel() + 3 * (2 * DIM + 2 * D_STATE)  # kernel - 1
    for old, now in zip(before, [state.memory, state.conv["xbc"]], strict=True):
        assert torch.equal(old, now)  # the given state is left alone
    detached = state.detach()
    assert isinstance(detached, Mamba2State)
    assert state.memory.requires_grad and not detached.memory.requires_grad
    assert not detached.conv["xbc"].requires_grad
    torch.testing.assert_close(layer(x[:, 4:], detached)[0], y, rtol=0, atol=0)


def test_without_convolution_the_state_has_no_cache():
    layer = _layer(conv_kernel=0)
    assert layer.conv is None
    _, state = layer(_x(1, 5))
    assert state.conv == {} and state.numel() == state.memory.numel()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"d_state": 0}, ValueError, "d_state must be an int >= 1, got 0"),
        ({"d_state": -2}, ValueError, "d_state must be an int >= 1, got -2"),
        ({"heads": 3}, ValueError, r"expand \* dim \(16\) must be divisible by heads \(3\)"),
        ({"heads": 5, "expand": 1}, ValueError, r"expand \* dim \(8\) must be divisible by heads \(5\)"),
        ({"impl": "fast"}, ValueError, "impl must be one of"),
        ({"expand": 0}, ValueError, "expand must be an int >= 1"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be an int >= 1"),
        ({"conv_kernel": -1}, ValueError, "conv_kernel must be an int >= 0"),
        ({"heads": 2.0}, TypeError, "heads must be an int"),
    ],
)
def test_bad_layer_arguments_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        Mamba2Layer(DIM, **{"heads": HEADS, "d_state": D_STATE, **kwargs})


def test_bad_layer_inputs_raise():
    layer = _layer()
    with pytest.raises(ValueError, match=r"x must have shape \(batch, seq, 8\)"):
        layer(torch.zeros(1, 3, 5, dtype=F64))
    _, state = layer(_x(2, 3))
    with pytest.raises(ValueError, match="state is for batch 2, x has batch 1"):
        layer(_x(1, 3), state)
    with pytest.raises(TypeError, match="state must be a Mamba2State or None"):
        layer(_x(2, 3), DeltaRuleState(state.memory, state.conv))


@pytest.mark.parametrize(
    ("impl", "runs"), [("chunked", "chunk_linear_attention"), ("reference", "recurrent_linear_attention")]
)
def test_layer_runs_its_impl_with_its_chunk_size(monkeypatch, impl, runs):
    chunked = _spy(monkeypatch, "chunk_linear_attention")
    reference = _spy(monkeypatch, "recurrent_linear_attention")
    _layer(chunk_size=3, impl=impl)(_x(1, 5))
    called, other = (chunked, reference) if runs == "chunk_linear_attention" else (reference, chunked)
    assert len(called) == 1 and not other
    assert called[0]["chunk_size"] == 3


def test_layer_defaults():
    layer = Mamba2Layer(DIM)  # heads 4, d_state 64, expand 2, chunk 64, kernel 4, chunked
    assert (layer.heads, layer.d_state, layer.inner, layer.head_dim) == (4, 64, 16, 4)
    assert (layer.chunk_size, layer.impl, layer.conv.kernel_size) == (64, "chunked", 4)


def test_dt_bias_is_the_float64_inverse_softplus_rounded_once():
    # b_Δ,i = softplus⁻¹(Δ_i) = log(expm1(Δ_i)), Δ_i = 10^(-3 + 2 i / (H - 1)), computed in float64 and
    # rounded to the default float32 once (float32 throughout is off by an ulp for 3 of the 16 heads)
    heads = 16
    layer = Mamba2Layer(DIM, heads=heads, d_state=D_STATE)
    expected = [math.log(math.expm1(10 ** (-3 + 2 * i / (heads - 1)))) for i in range(heads)]
    assert layer.dt_bias.dtype == torch.float32
    assert torch.equal(layer.dt_bias, torch.tensor(expected, dtype=torch.float32))


@pytest.mark.parametrize("conv_kernel", [4, 1])
def test_init_state_is_zeros_of_the_asked_size_dtype_and_device(conv_kernel):
    layer = _layer(conv_kernel=conv_kernel)  # kernel 1 still convolves (a per-channel scale and bias)
    assert layer.conv is not None
    channels = 2 * DIM + 2 * D_STATE  # x (E = 16), B and C (N = 3 each)
    state = layer.init_state(3)
    assert isinstance(state, Mamba2State) and state.conv.keys() == {"xbc"}
    assert state.memory.dtype == state.conv["xbc"].dtype == torch.float32  # the default dtype
    assert torch.equal(state.memory, torch.zeros(3, HEADS, 2 * DIM // HEADS, D_STATE))  # (B, H, P, N)
    assert torch.equal(state.conv["xbc"], torch.zeros(3, conv_kernel - 1, channels))
    meta = layer.init_state(2, device="meta", dtype=F64)
    for tensor, shape in (
        (meta.memory, (2, HEADS, 8, D_STATE)),
        (meta.conv["xbc"], (2, conv_kernel - 1, 22)),
    ):
        assert tensor.shape == shape and tensor.dtype == F64 and tensor.device.type == "meta"


@pytest.mark.parametrize(
    ("dim", "kwargs", "error", "message"),
    [
        (0, {}, ValueError, "dim must be an int >= 1, got 0"),
        (8.0, {}, TypeError, "dim must be an int >= 1, got float"),
        (DIM, {"heads": 0}, ValueError, "heads must be an int >= 1, got 0"),
        (DIM, {"heads": 3}, ValueError, "expand * dim (16) must be divisible by heads (3)"),
        (DIM, {"impl": "fast"}, ValueError, "impl must be one of ('chunked', 'reference'), got 'fast'"),
    ],
)
def test_bad_layer_arguments_raise_the_exact_message(dim, kwargs, error, message):
    with pytest.raises(error) as caught:
        Mamba2Layer(dim, **{"heads": HEADS, "d_state": D_STATE, **kwargs})
    assert str(caught.value) == message
