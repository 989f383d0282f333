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
