"""The slow token loop's own rules (titans/reference.py), each checked by hand.

The loop itself (Eq. 13-15) is checked against hand-written recurrences in ``test_chunked.py`` and
``test_memory.py``; here are the two helpers it shares with MIRAS' materialised memory: the retention map
:math:`\\mathcal{M} = \\phi(C)` and which token of a chunk takes its gradient at the current weights.
"""

import pytest
import torch

from neural_memory.titans.memory_model import MemoryMLP
from neural_memory.titans.reference import anchors_gradient, per_token_gradients, project_weights

DT = torch.float64


def test_project_weights_without_a_map_returns_the_same_tensors():
    acc = (torch.randn(2, 3), torch.randn(3, 2))
    assert project_weights(None, acc) is acc


def test_project_weights_maps_each_layer_on_its_own():
    acc = (torch.tensor([[1.0, -2.0]]), torch.tensor([[3.0], [4.0]]))
    mapped = project_weights(lambda c: c * c.abs().sum(), acc)  # a map that sees only its own layer
    assert isinstance(mapped, tuple) and len(mapped) == 2
    torch.testing.assert_close(mapped[0], torch.tensor([[3.0, -6.0]]), rtol=0, atol=0)
    torch.testing.assert_close(mapped[1], torch.tensor([[21.0], [28.0]]), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("offset", "lag_token", "anchors"),
    [
        (0, False, True),  # the chunk's first token: gradient at M_{t'}
        (1, False, False),
        (2, False, False),
        (0, True, True),
        (1, True, True),  # Memora's lag token: the second token anchors at the weights after the first
        (2, True, False),
        (3, True, False),
    ],
)
def test_anchors_gradient_truth_table(offset, lag_token, anchors):
    assert anchors_gradient(offset, lag_token) is anchors


def linear_memory(n=3, dim=4, seed=0):
    """A depth-1 memory without read-out norm: recall is k W, so grad_W l = k^T (dl/dpred)."""
    torch.manual_seed(seed)
    model = MemoryMLP(dim, depth=1, residual_norm=False).to(DT)
    weights = tuple(w + 0.3 * torch.randn_like(w) for w in model.expand(n))
    key, value = torch.randn(n, dim, dtype=DT), torch.randn(n, dim, dtype=DT)
    return model, weights, key, value


def test_per_token_gradients_hand_the_token_parameters_to_the_loss():
    model, weights, key, value = linear_memory()
    scale = torch.tensor([0.5, 2.0, -1.0], dtype=DT)

    def loss(pred, target, scale):
        return scale * ((pred - target) ** 2).sum()

    (got,) = per_token_gradients(model, weights, key, value, loss=loss, params={"scale": scale})
    pred = torch.einsum("nd,nde->ne", key, weights[0])
    expected = (2 * scale)[:, None, None] * key[:, :, None] * (pred - value)[:, None, :]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_per_token_gradients_pull_an_output_gradient_back_through_the_memory():
    model, weights, key, value = linear_memory()
    scale = torch.tensor([0.5, 2.0, -1.0], dtype=DT)

    def output_grad(pred, target, scale):  # the gradient of no closed-form loss is needed here
        return scale * (pred - target) ** 3

    (got,) = per_token_gradients(model, weights, key, value, params={"scale": scale}, output_grad=output_grad)
    pred = torch.einsum("nd,nde->ne", key, weights[0])
    expected = key[:, :, None] * (scale[:, None] * (pred - value) ** 3)[:, None, :]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_an_output_gradient_goes_through_the_readout_norm_like_its_loss():
    """With the LayerNorm read-out (its gain and bias per row), output_grad = dl/dpred gives grad l."""
    torch.manual_seed(1)
    model = MemoryMLP(4, depth=2, expansion=2, residual_norm=True).to(DT)
    with torch.no_grad():
        model.norm_weight.add_(0.5 * torch.randn_like(model.norm_weight))
        model.norm_bias.add_(0.5 * torch.randn_like(model.norm_bias))
    weights = tuple(w + 0.3 * torch.randn_like(w) for w in model.expand(3))
    key, value = torch.randn(3, 4, dtype=DT), torch.randn(3, 4, dtype=DT)
    by_loss = per_token_gradients(model, weights, key, value, loss=lambda p, t: ((p - t) ** 4).sum() / 4)
    by_grad = per_token_gradients(model, weights, key, value, output_grad=lambda p, t: (p - t) ** 3)
    plain = MemoryMLP(4, depth=2, expansion=2, residual_norm=True).to(DT)  # gain 1, bias 0
    without_norm = per_token_gradients(plain, weights, key, value, output_grad=lambda p, t: (p - t) ** 3)
    for a, b, c in zip(by_loss, by_grad, without_norm, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        assert (a - c).abs().max() > 1e-3  # the gain and bias matter, so dropping them would show


def test_an_output_gradient_uses_each_rows_own_readout_gain_with_two_heads():
    """Rows of different heads carry different gains and biases; the vjp path must read each row's own."""
    torch.manual_seed(2)
    model = MemoryMLP(4, depth=2, expansion=2, heads=2, residual_norm=True).to(DT)
    with torch.no_grad():
        model.norm_weight.add_(0.5 * torch.randn_like(model.norm_weight))
        model.norm_bias.add_(0.5 * torch.randn_like(model.norm_bias))
    weights = tuple(w + 0.3 * torch.randn_like(w) for w in model.expand(3))  # 6 rows: (sequence, head)
    key, value = torch.randn(6, 4, dtype=DT), torch.randn(6, 4, dtype=DT)
    by_loss = per_token_gradients(model, weights, key, value, loss=lambda p, t: ((p - t) ** 4).sum() / 4)
    by_grad = per_token_gradients(model, weights, key, value, output_grad=lambda p, t: (p - t) ** 3)
    for a, b in zip(by_loss, by_grad, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# -- reference_memory's own options ------------------------------------------------------------------------


def _memory_inputs(seq=5, n=2, dim=3, seed=0):
    from neural_memory.titans.state import MemoryState

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = MemoryMLP(dim, depth=2, expansion=2, residual_norm=False).double()
    w0 = model.expand(n)
    state = MemoryState(weights=w0, momentum=tuple(torch.zeros_like(w) for w in w0), chunk_weights=w0)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    keys = torch.nn.functional.normalize(r(n, seq, dim), dim=-1)
    gates = [0.2 * torch.rand(n, seq, generator=g, dtype=torch.float64) for _ in range(3)]
    return model, state, keys, r(n, seq, dim), r(n, seq, dim), *gates


def _close(a, b):
    (ya, sa), (yb, sb) = a, b
    torch.testing.assert_close(ya, yb, rtol=1e-12, atol=1e-12)
    for x, y in zip(sa.weights + sa.momentum, sb.weights + sb.momentum, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


def test_reference_memory_defaults_to_the_exact_recurrence():
    from neural_memory.titans.reference import reference_memory

    args = _memory_inputs()
    _close(reference_memory(*args), reference_memory(*args, chunk_size=1))
    chunked = reference_memory(*args, chunk_size=2)
    assert not torch.allclose(chunked[0], reference_memory(*args)[0])  # the default is not chunk 2


def test_a_scaled_loss_gradient_is_a_scaled_step_size_in_the_reference():
    """``output_grad`` (with per-token ``bias_params``) reaches every token's gradient: c_t times the l2
    gradient must equal the step theta_t -> c_t theta_t."""
    from neural_memory.titans.associative_loss import associative_loss_output_grad as l2_grad
    from neural_memory.titans.reference import reference_memory

    model, state, keys, values, queries, alpha, eta, theta = _memory_inputs()
    scale = 0.5 + torch.rand(theta.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    base = (model, state, keys, values, queries, alpha, eta)
    _close(
        reference_memory(*base, theta, output_grad=lambda p, t: 3.0 * l2_grad(p, t)),
        reference_memory(*base, 3.0 * theta),
    )
    _close(
        reference_memory(
            *base, theta, output_grad=lambda p, t, c: c * l2_grad(p, t), bias_params={"c": scale[..., None]}
        ),
        reference_memory(*base, scale * theta),
    )


def test_record_hands_over_every_tokens_step_in_order():
    from neural_memory.titans.reference import reference_memory

    model, state, keys, values, queries, alpha, eta, theta = _memory_inputs(seq=4)
    steps = []
    _, final = reference_memory(model, state, keys, values, queries, alpha, eta, theta, record=steps.append)
    assert [s.index for s in steps] == [0, 1, 2, 3]
    for t, step in enumerate(steps):
        for name, gate in (("alpha", alpha), ("eta", eta), ("theta", theta)):
            torch.testing.assert_close(getattr(step, name), gate[:, t], rtol=0, atol=0)
        before = state.weights if t == 0 else steps[t - 1].weights
        for prev, want in zip(step.previous, before, strict=True):
            torch.testing.assert_close(prev, want, rtol=0, atol=0)
        # Eq. 13-14 from the recorded pieces: S_t = eta S_{t-1} - theta grad, M_t = (1 - alpha) M_{t-1} + S_t
        s_before = state.momentum if t == 0 else steps[t - 1].momentum
        for s_prev, s, g, m_prev, m in zip(
            s_before, step.momentum, step.grads, step.previous, step.weights, strict=True
        ):
            a, e, th = (x[:, None, None] for x in (alpha[:, t], eta[:, t], theta[:, t]))
            torch.testing.assert_close(s, e * s_prev - th * g, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(m, (1 - a) * m_prev + s, rtol=1e-12, atol=1e-12)
    for w, want in zip(final.weights, steps[-1].weights, strict=True):
        torch.testing.assert_close(w, want, rtol=0, atol=0)


# -- the MIRAS options of the shared loop: a retention map phi with its accumulator, the lag token -----------


def _hand_loop(w0, c0, keys, values, queries, alpha, eta, theta, *, chunk=1, lag=False, phi=None):
    """Eq. 12-15 for a depth-1 memory written out without the library: pred = k W, grad = 2 k^T (k W - v),
    S_t = eta S - theta grad, C_t = (1 - alpha) C + S, W_t = phi(C_t), y_t = q_t W_t. The gradient is taken
    at the anchor: the chunk's start, and with the lag token also after the chunk's first token."""
    phi = phi or (lambda a: a)
    w, c, s, anchor = w0.clone(), c0.clone(), torch.zeros_like(w0), w0.clone()
    ys = []
    for t in range(keys.shape[1]):
        offset = t % chunk
        if offset == 0 or (lag and offset == 1):
            anchor = w
        k, v, q = keys[:, t], values[:, t], queries[:, t]
        pred = torch.einsum("nd,nde->ne", k, anchor)
        grad = 2 * k[:, :, None] * (pred - v)[:, None, :]
        s = eta[:, t, None, None] * s - theta[:, t, None, None] * grad
        c = (1 - alpha[:, t, None, None]) * c + s
        w = phi(c)
        ys.append(torch.einsum("nd,nde->ne", q, w))
    return torch.stack(ys, dim=1), w, c


def _phi(a):
    """A retention map that is not linear (a Moneta-like normalisation), per (sequence, head) row."""
    return a / (1 + a.pow(2).sum(dim=(-2, -1), keepdim=True).sqrt())


def _linear_inputs(seq=6, n=2, dim=3, seed=3):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=DT)

    model = MemoryMLP(dim, depth=1, residual_norm=False).to(DT)  # recall is k W: nothing else to learn
    keys = torch.nn.functional.normalize(r(n, seq, dim), dim=-1)
    gates = [0.1 + 0.3 * torch.rand(n, seq, generator=g, dtype=DT) for _ in range(3)]
    return model, r(n, dim, dim), keys, r(n, seq, dim), r(n, seq, dim), *gates


def test_a_retention_map_reads_the_memory_through_phi_of_the_accumulator():
    """MIRAS Algorithm A: C_t = (1 - alpha_t) C_{t-1} + S_t, M_t = phi(C_t); the state keeps C_T, phi(C_T)."""
    from neural_memory.titans.reference import reference_memory
    from neural_memory.titans.state import MemoryState

    model, c0, keys, values, queries, alpha, eta, theta = _linear_inputs()
    w0 = _phi(c0)
    state = MemoryState(
        weights=(w0,), momentum=(torch.zeros_like(w0),), chunk_weights=(w0,), accumulator=(c0,)
    )
    y, final = reference_memory(model, state, keys, values, queries, alpha, eta, theta, project=_phi)
    y_hand, w_hand, c_hand = _hand_loop(w0, c0, keys, values, queries, alpha, eta, theta, phi=_phi)
    torch.testing.assert_close(y, y_hand, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final.weights[0], w_hand, rtol=1e-12, atol=1e-12)
    assert final.accumulator is not None
    torch.testing.assert_close(final.accumulator[0], c_hand, rtol=1e-12, atol=1e-12)
    assert (c_hand - w_hand).abs().max() > 1e-2  # phi is not the identity here, so C and M differ


def test_without_a_retention_map_the_weights_are_their_own_accumulator():
    from neural_memory.titans.reference import reference_memory
    from neural_memory.titans.state import MemoryState

    model, w0, keys, values, queries, alpha, eta, theta = _linear_inputs()
    state = MemoryState(weights=(w0,), momentum=(torch.zeros_like(w0),), chunk_weights=(w0,))
    y, final = reference_memory(model, state, keys, values, queries, alpha, eta, theta)
    y_hand, w_hand, _ = _hand_loop(w0, w0, keys, values, queries, alpha, eta, theta)
    torch.testing.assert_close(y, y_hand, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final.weights[0], w_hand, rtol=1e-12, atol=1e-12)
    assert final.accumulator is None


def test_the_lag_token_moves_the_chunks_anchor_to_after_its_first_token():
    """MIRAS Eq. 30 (Memora): in a chunk of 3, token 1 and 2 take their gradient at M after token 0."""
    from neural_memory.titans.reference import reference_memory
    from neural_memory.titans.state import MemoryState

    model, w0, keys, values, queries, alpha, eta, theta = _linear_inputs(seq=7)
    state = MemoryState(weights=(w0,), momentum=(torch.zeros_like(w0),), chunk_weights=(w0,))
    args = (model, state, keys, values, queries, alpha, eta, theta)
    y, final = reference_memory(*args, chunk_size=3, lag_token=True)
    y_hand, w_hand, _ = _hand_loop(w0, w0, *args[2:], chunk=3, lag=True)
    torch.testing.assert_close(y, y_hand, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final.weights[0], w_hand, rtol=1e-12, atol=1e-12)
    y_plain, _, _ = _hand_loop(w0, w0, *args[2:], chunk=3, lag=False)
    assert (y_hand - y_plain).abs().max() > 1e-3  # the lag token changes the result here


def test_a_retention_map_and_forgetting_to_the_initial_weights_are_refused_together():
    from neural_memory.titans.reference import reference_memory
    from neural_memory.titans.state import MemoryState

    model, w0, keys, values, queries, alpha, eta, theta = _linear_inputs()
    model = MemoryMLP(3, depth=1, residual_norm=False, forget_to_initial=True).to(DT)
    state = MemoryState(
        weights=(w0,), momentum=(torch.zeros_like(w0),), chunk_weights=(w0,), accumulator=(w0,)
    )
    with pytest.raises(ValueError, match="forget_to_initial needs a linear retention"):
        reference_memory(model, state, keys, values, queries, alpha, eta, theta, project=_phi)


def test_the_initial_weights_forgetting_returns_to_take_the_inputs_dtype():
    """M_0 comes from the model's parameters (float64 here); the loop runs in the inputs' dtype (float32),
    so the anchor must be cast: a float64 anchor would promote the state to float64."""
    from neural_memory.titans.reference import reference_memory
    from neural_memory.titans.state import MemoryState

    model, _, keys, values, queries, alpha, eta, theta = _linear_inputs()
    model = MemoryMLP(3, depth=1, residual_norm=False, forget_to_initial=True).to(DT)
    w0 = model.expand(2)[0].float()
    state = MemoryState(weights=(w0,), momentum=(torch.zeros_like(w0),), chunk_weights=(w0,))
    inputs = [x.float() for x in (keys, values, queries, alpha, eta, theta)]
    y, final = reference_memory(model, state, *inputs)
    assert y.dtype == torch.float32
    assert final.weights[0].dtype == torch.float32 and final.momentum[0].dtype == torch.float32
    # and its value: Eq. 13 acts on the content C = W - M_0 (C_0 = 0), read as W = M_0 + C
    m0 = w0.double()
    y_hand, w_hand, _ = _hand_loop(
        m0, torch.zeros_like(m0), *(x.double() for x in inputs), phi=lambda c: m0 + c
    )
    torch.testing.assert_close(y.double(), y_hand, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(final.weights[0].double(), w_hand, rtol=1e-4, atol=1e-5)
