"""Titans Eq. 12: the associative-memory (inner-loop) loss, and its gradient through the memory model."""

import pytest
import sympy as sp
import torch
from hypothesis import given
from hypothesis import strategies as st

from neural_memory.titans.associative_loss import associative_loss, associative_loss_output_grad
from neural_memory.titans.memory_model import MemoryMLP

DT = torch.float64


@pytest.mark.equation("titans", 12)
def test_loss_by_hand():
    pred = torch.tensor([[1.0, 2.0]], dtype=DT)
    target = torch.tensor([[0.0, 4.0]], dtype=DT)
    # (1-0)^2 + (2-4)^2 = 5, no 1/2 factor in Eq. 12
    torch.testing.assert_close(associative_loss(pred, target), torch.tensor([5.0], dtype=DT))
    torch.testing.assert_close(associative_loss_output_grad(pred, target), 2 * (pred - target))


@pytest.mark.equation("titans", 12)
@given(seed=st.integers(0, 1000))
def test_loss_is_zero_iff_recalled(seed):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(4, 3, generator=g, dtype=DT)
    assert torch.all(associative_loss(v, v) == 0)
    assert torch.all(associative_loss(v + 1e-3, v) > 0)


@pytest.mark.equation("titans", 12)
def test_linear_memory_gradient_matches_sympy():
    torch.manual_seed(0)
    # One-layer (linear) memory, row convention M(k) = k W, d = 2: derive dl/dW symbolically.
    w = sp.Matrix(2, 2, sp.symbols("w0:4"))
    k = sp.Matrix([[sp.Rational(1, 2), -2]])
    v = sp.Matrix([[3, sp.Rational(1, 3)]])
    r = k * w - v
    loss = (r * r.T)[0, 0]
    grad = sp.Matrix(2, 2, lambda i, j: sp.diff(loss, w[i, j]))
    w_val = {s: val for s, val in zip(w, [0.3, -1.2, 0.7, 2.0], strict=True)}
    expected = torch.tensor([[float(grad[i, j].subs(w_val)) for j in range(2)] for i in range(2)], dtype=DT)

    model = MemoryMLP(2, depth=1)
    weights = (torch.tensor([[0.3, -1.2], [0.7, 2.0]], dtype=DT)[None],)
    kt = torch.tensor([[[0.5, -2.0]]], dtype=DT)
    vt = torch.tensor([[[3.0, 1 / 3]]], dtype=DT)
    acts, grads = model.gradient_factors(weights, kt, vt)
    closed_form = acts[0][0].T @ grads[0][0]  # per-token gradient = a^T g
    torch.testing.assert_close(closed_form, expected, rtol=0, atol=1e-12)
    # and the 2 k^T (k W - v) closed form of the catalog
    torch.testing.assert_close(closed_form, 2 * kt[0].T @ (kt[0] @ weights[0][0] - vt[0]), rtol=0, atol=1e-12)


@pytest.mark.equation("titans", 12)
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("activation", ["silu", "gelu"])
@pytest.mark.parametrize("norm", [False, True])
def test_per_token_gradient_factors_equal_autograd(depth, activation, norm):
    torch.manual_seed(depth)
    model = MemoryMLP(4, depth=depth, expansion=2, activation=activation, residual_norm=norm).to(DT)
    if norm:
        with torch.no_grad():
            model.norm_weight.add_(0.3 * torch.randn_like(model.norm_weight))
    weights = tuple(w.detach().to(DT) + 0.1 * torch.randn(w.shape, dtype=DT) for w in model.expand(2))
    k = torch.randn(2, 5, 4, dtype=DT)
    v = torch.randn(2, 5, 4, dtype=DT)
    acts, grads = model.gradient_factors(weights, k, v)
    for n in range(2):
        for t in range(5):
            ws = [w[n].clone().requires_grad_(True) for w in weights]
            loss = associative_loss(
                model.recall(tuple(x[None] for x in ws), k[n, t][None, None])[0], v[n, t][None]
            )
            auto = torch.autograd.grad(loss.sum(), ws)
            for layer in range(depth):
                per_token = torch.outer(acts[layer][n, t], grads[layer][n, t])
                torch.testing.assert_close(per_token, auto[layer], rtol=0, atol=1e-12)


def test_memory_mlp_validates_arguments():
    with pytest.raises(ValueError, match="depth"):
        MemoryMLP(4, depth=0)
    with pytest.raises(ValueError, match="activation"):
        MemoryMLP(4, activation="tanhh")
    with pytest.raises(ValueError, match="dim"):
        MemoryMLP(0)
    with pytest.raises(ValueError, match="shape"):
        associative_loss(torch.zeros(2, 3), torch.zeros(2, 4))
