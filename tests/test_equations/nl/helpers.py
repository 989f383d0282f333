"""Helpers shared by the NL equation tests: seeded float64 tensors, hypothesis tensor strategies, autograd
gradients, and feeding given gradients to an optimizer step by step."""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

F64 = torch.float64


def randn(*shape: int, seed: int = 0, dtype: torch.dtype = F64, scale: float = 1.0) -> torch.Tensor:
    """A seeded standard-normal tensor (its own generator: no global RNG), times ``scale``."""
    return scale * torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def tensors(*shape: int, bound: float = 3.0):
    """Hypothesis strategy: float64 tensors of ``shape``, elements in ``[-bound, bound]`` (they shrink)."""
    return arrays(np.float64, shape, elements=st.floats(-bound, bound)).map(torch.from_numpy)


small_tensors = partial(tensors, bound=2.0)


def autograd(loss_fn, at: torch.Tensor) -> torch.Tensor:
    """∇ of the scalar ``loss_fn(x)`` at ``x = at``, by autograd."""
    x = at.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_fn(x), x)
    return grad


def param(t: torch.Tensor) -> torch.nn.Parameter:
    return torch.nn.Parameter(t.clone())


def run_with_grads(optimizer, params, grads_per_step):
    """Feed given gradients, one list per step; returns the parameters after each step."""
    history = []
    for grads in grads_per_step:
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        optimizer.step()
        history.append([p.detach().clone() for p in params])
    return history


def same_steps(ours, reference, params_ours, params_ref, grads_per_step, atol):
    """Two optimizers fed the same gradients take the same steps (to ``atol``, rtol 0)."""
    for a, b in zip(
        run_with_grads(ours, params_ours, grads_per_step),
        run_with_grads(reference, params_ref, grads_per_step),
        strict=True,
    ):
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=0, atol=atol)
