r"""The data-dependent gates of the long-term memory: forget :math:`\alpha_t`, surprise decay :math:`\eta_t`,
surprise step :math:`\theta_t` (Titans §3.1).

The paper says the three are data-dependent functions of :math:`x_t`, token-wise, with
:math:`\alpha_t \in [0, 1]` — and gives no formula (catalog T-U4). Our parameterisation, one scalar per
token and head (``docs/errata.md``):

.. math::
    \alpha_t = \sigma(x_t w_\alpha + b_\alpha), \quad \eta_t = \sigma(x_t w_\eta + b_\eta), \quad
    \theta_t = \theta_{\max}\,\sigma(x_t w_\theta + b_\theta).

The sigmoid enforces the ranges by construction; :math:`\theta_{\max}` (default 0.02) bounds the inner
learning rate, where the paper only asks :math:`\theta_t \ge 0`. The bound is what keeps long streams
finite: a chunk of ``b`` tokens takes ``b`` gradient steps at the same frozen weights (Eq. 16), and SiLU keys
are far from isotropic, so the summed step grows like ``b``; with :math:`\theta_{\max} = 1` a 64K-token
stream diverges at chunk size 1, 16 and 64, with 0.02 it stays finite at all three
(``tests/test_equations/titans/test_memory.py::test_65k_tokens_float32_stay_finite_and_bounded``).
The biases start the memory slow to forget (:math:`\alpha \approx 0.0025`), with long momentum
(:math:`\eta \approx 0.88`) and a moderate step (:math:`\theta \approx 0.12\,\theta_{\max}`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from neural_memory.titans.update import check_gates


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


class MemoryGates(nn.Module):
    """Token-wise gates per head from a linear map of :math:`x_t`.

    Args:
        dim: input width.
        heads: one gate triple per head.
        momentum: if False, :math:`\\eta \\equiv 0` (the "w/o momentum" ablation: Eq. 8 / Eq. 16).
        weight_decay: if False, :math:`\\alpha \\equiv 0` (the "w/o weight decay" ablation: Eq. 9).
        theta_max: upper bound of :math:`\\theta_t`.
        init: initial ``(alpha, eta, theta / theta_max)`` at zero input, each in (0, 1).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        momentum: bool = True,
        weight_decay: bool = True,
        theta_max: float = 0.02,
        init: tuple[float, float, float] = (0.0025, 0.88, 0.12),
    ):
        super().__init__()
        if theta_max <= 0:
            raise ValueError(f"theta_max must be > 0, got {theta_max}")
        if not all(0 < p < 1 for p in init):
            raise ValueError(f"init gates must be in (0, 1), got {init}")
        self.heads, self.theta_max = heads, theta_max
        self.momentum, self.weight_decay = momentum, weight_decay
        self.proj = nn.Linear(dim, 3 * heads)
        nn.init.normal_(self.proj.weight, std=0.02)
        with torch.no_grad():
            self.proj.bias.copy_(torch.tensor([_logit(p) for p in init]).repeat_interleave(heads))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``x (B, T, dim)`` → ``alpha, eta, theta``, each ``(B * heads, T)``."""
        b, t, _ = x.shape
        logits = self.proj(x).reshape(b, t, 3, self.heads).permute(2, 0, 3, 1).reshape(3, b * self.heads, t)
        gates = torch.sigmoid(logits)
        alpha = gates[0] if self.weight_decay else torch.zeros_like(gates[0])
        eta = gates[1] if self.momentum else torch.zeros_like(gates[1])
        return alpha, eta, self.theta_max * gates[2]


class FixedGates(nn.Module):
    """Constant gates, for tests and ablations that pin :math:`\\alpha, \\eta, \\theta`."""

    def __init__(self, heads: int, alpha: float, eta: float, theta: float):
        super().__init__()
        check_gates(*(torch.tensor([float(g)]) for g in (alpha, eta, theta)))
        self.heads = heads
        self.values = (float(alpha), float(eta), float(theta))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``x (B, T, dim)`` → three constant ``(B * heads, T)`` tensors."""
        shape = (x.shape[0] * self.heads, x.shape[1])
        alpha, eta, theta = (torch.full(shape, v, dtype=x.dtype, device=x.device) for v in self.values)
        return alpha, eta, theta
