r"""The memory network :math:`\mathcal{M}` of Titans: a linear map or an MLP whose weights are the state.

Titans §3.1 lets the long-term memory be any network; the paper uses MLPs with :math:`L_M \ge 1` layers
(``depth=1`` is the "Linear Memory" ablation of Table 5). Width, activation, residuals and normalisation
are not stated in v1; our choices (see ``docs/errata.md``): hidden width ``expansion * dim``, SiLU between
layers (the only non-linearity the paper names), no bias, no residual, no normalisation, and the initial
weights :math:`\mathcal{M}_0` learned by the outer loop, drawn :math:`\mathcal{N}(0, 1/d_{in})`.

Weights are plain tensors passed around functionally, one ``(N, d_in, d_out)`` tensor per layer, where ``N``
is batch × heads: every sequence and head owns a private copy that the inner loop updates. Rows are tokens
(``z = h W``), as in the paper's :math:`k_t = x_t W_K`.

The per-token gradient of the inner loss with respect to layer ``l`` is an outer product
:math:`a_{l}^\top g_{l}` of the layer's input :math:`a_l` and the loss gradient at its output
:math:`g_l` (closed-form back-propagation, no autograd). The chunk-parallel memory never materialises these
outer products; it only needs the factors :math:`(a_l, g_l)`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from neural_memory.titans.associative_loss import associative_loss_output_grad

Weights = tuple[Tensor, ...]


def _silu_grad(z: Tensor) -> Tensor:
    s = torch.sigmoid(z)
    return s * (1 + z * (1 - s))


def _gelu_grad(z: Tensor) -> Tensor:
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2.0)))
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return cdf + z * pdf


ACTIVATIONS: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]] = {
    "silu": (nn.functional.silu, _silu_grad),
    "gelu": (nn.functional.gelu, _gelu_grad),
}


class MemoryMLP(nn.Module):
    """The memory network :math:`\\mathcal{M}` (Titans §3.1): ``depth`` bias-free linear layers.

    Args:
        dim: key/value width per head ``d``.
        depth: number of layers :math:`L_M \\ge 1`; 1 is a matrix-valued (linear) memory.
        expansion: hidden width is ``expansion * dim`` (used when ``depth >= 2``).
        heads: independent memories, one per head; the initial weights are ``(heads, d_in, d_out)``.
        activation: ``"silu"`` (default) or ``"gelu"``, applied between layers.
    """

    def __init__(
        self, dim: int, *, depth: int = 2, expansion: int = 4, heads: int = 1, activation: str = "silu"
    ):
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1 (L_M >= 1), got {depth}")
        if expansion < 1:
            raise ValueError(f"expansion must be >= 1, got {expansion}")
        if heads < 1:
            raise ValueError(f"heads must be >= 1, got {heads}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.dim, self.depth, self.heads = dim, depth, heads
        self.activation = activation
        self.act, self.act_grad = ACTIVATIONS[activation]
        hidden = expansion * dim
        widths = [dim] + [hidden] * (depth - 1) + [dim]
        self.initial_weights = nn.ParameterList(
            nn.Parameter(torch.randn(heads, d_in, d_out) / math.sqrt(d_in))
            for d_in, d_out in itertools.pairwise(widths)
        )

    def expand(self, batch_size: int) -> Weights:
        """:math:`\\mathcal{M}_0` for every (sequence, head): ``(batch_size * heads, d_in, d_out)`` per layer.

        The copies stay connected to the parameters, so the outer loss trains :math:`\\mathcal{M}_0`.
        """
        return tuple(
            w.unsqueeze(0).expand(batch_size, *w.shape).reshape(batch_size * self.heads, *w.shape[1:])
            for w in self.initial_weights
        )

    def recall(self, weights: Weights, x: Tensor) -> Tensor:
        """Forward pass :math:`\\mathcal{M}(x)` with the given weights: ``x (N, T, d) -> (N, T, d)``."""
        h = x
        for layer, w in enumerate(weights):
            h = h @ w
            if layer < len(weights) - 1:
                h = self.act(h)
        return h

    def gradient_factors(
        self,
        weights: Weights,
        keys: Tensor,
        values: Tensor,
        output_grad: Callable[[Tensor, Tensor], Tensor] = associative_loss_output_grad,
    ) -> tuple[list[Tensor], list[Tensor]]:
        r"""Per-token inner-loss gradients as factors: :math:`\nabla_{W_l}\ell_t = a_{l,t}^\top g_{l,t}`.

        Closed-form back-propagation of Eq. 12 (or another attentional bias, via ``output_grad``) through
        the MLP, for every token at once and at the same weights.

        Args:
            weights: one ``(N, d_in, d_out)`` tensor per layer.
            keys, values: ``(N, T, d)``.
            output_grad: gradient of the loss with respect to the memory output, ``(pred, target) -> grad``.

        Returns:
            ``(acts, grads)``: per layer, inputs ``(N, T, d_in)`` and output gradients ``(N, T, d_out)``.
        """
        acts, pre = [], []
        h = keys
        for layer, w in enumerate(weights):
            acts.append(h)
            z = h @ w
            pre.append(z)
            h = self.act(z) if layer < len(weights) - 1 else z
        grads: list[Tensor] = [output_grad(h, values)]
        for layer in range(len(weights) - 1, 0, -1):
            back = grads[0] @ weights[layer].transpose(-1, -2)
            grads.insert(0, back * self.act_grad(pre[layer - 1]))
        return acts, grads
