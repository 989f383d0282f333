r"""The memory network :math:`\mathcal{M}` of Titans: a linear map or an MLP whose weights are the state.

Titans §3.1 lets the long-term memory be any network; the paper uses MLPs with :math:`L_M \ge 1` layers
(``depth=1`` is the "Linear Memory" ablation of Table 5). v1 states no width, activation, residual or
normalisation; our choices (see ``docs/errata.md``): hidden width ``expansion * dim``, SiLU between layers
(the only non-linearity v1 names), no bias, and the initial weights :math:`\mathcal{M}_0` learned by the
outer loop, drawn :math:`\mathcal{N}(0, 1/d_{in})`.

**The residual block with LayerNorm** (``residual_norm=True``, the default for ``depth >= 2``). The later
(NeurIPS 2025) text of Titans and MIRAS write the deep memory as :math:`\mathcal{M}(x) = x +
\mathrm{LN}(W_1\sigma(W_2 x))`. We take it, with the LayerNorm's gain and bias :math:`\gamma, \beta`
learned by the outer loop (one pair per head) and not changed at test time:

.. math::
    \mathcal{M}(x) = x + \gamma \odot \frac{z - \mu(z)}{\sqrt{\mathrm{var}(z) + \epsilon}} + \beta,
    \qquad z = \sigma(\cdots\sigma(x W_1)\cdots) W_{L}.

It is what keeps the test-time inner loop stable (errata, "Titans §3.1"): without it the curvature of the
inner loss grows with the square of the weights, so a fixed step :math:`\theta_t` that is safe at
:math:`\mathcal{M}_0` diverges once the memory has grown to fit its values (seen as NaN in training); with
it the read-out is bounded, :math:`\|\mathcal{M}(x) - x - \beta\| \le \|\gamma\|_\infty\sqrt{d}`, and the
loss is invariant to the scale of :math:`W_L`, so a large step makes :math:`W_L` larger and the next step
smaller instead of blowing up.

**Forgetting returns to** :math:`\mathcal{M}_0` (``forget_to_initial``, on with the LayerNorm read-out).
That scale invariance has a cost: Eq. 13's decay towards zero then forgets nothing and only enlarges the
next step, until the inner loop is chaotic and the exact outer gradient explodes with the sequence length
(measured: 2e17 after 4096 tokens). So the decay acts on the content written on top of the learned
initial memory, :math:`\mathcal{M}_t - \mathcal{M}_0 = (1-\alpha_t)(\mathcal{M}_{t-1} - \mathcal{M}_0) +
S_t` (Eq. 13 itself when :math:`\mathcal{M}_0 = 0`; errata, "Titans Eq. 13"). :meth:`MemoryMLP.anchor`
gives :math:`\mathcal{M}_0` to the memory loops.

Weights are plain tensors passed around functionally, one ``(N, d_in, d_out)`` tensor per layer, where ``N``
is batch × heads: every sequence and head owns a private copy that the inner loop updates. Rows are tokens
(``z = h W``), as in the paper's :math:`k_t = x_t W_K`.

The per-token gradient of the inner loss with respect to layer ``l`` is an outer product
:math:`a_{l}^\top g_{l}` of the layer's input :math:`a_l` and the loss gradient at its output
:math:`g_l` (closed-form back-propagation through the MLP and the LayerNorm, no autograd). The
chunk-parallel memory never materialises these outer products; it only needs the factors
:math:`(a_l, g_l)`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from neural_memory.titans.associative_loss import associative_loss_output_grad

Weights = tuple[Tensor, ...]


LAYER_NORM_EPS = 1e-5

# the hidden activation by name; its derivative enters through :func:`scaled_act_grad`
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"silu": nn.functional.silu, "gelu": nn.functional.gelu}


class _SiluBackward(torch.autograd.Function):
    """``back * silu'(z)`` by torch's fused kernel, differentiable (torch's own has no derivative)."""

    @staticmethod
    def forward(ctx, back: Tensor, z: Tensor) -> Tensor:
        ctx.save_for_backward(back, z)
        return torch.ops.aten.silu_backward(back, z)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        back, z = ctx.saved_tensors
        grad_back = _SiluBackward.apply(grad_out, z) if ctx.needs_input_grad[0] else None
        grad_z = None
        if ctx.needs_input_grad[1]:  # silu''(z) = s (1 - s) (2 + z (1 - 2 s)), s = sigmoid(z)
            s = torch.sigmoid(z)
            grad_z = s * (1 - s) * (2 + z * (1 - 2 * s)) * back * grad_out
        return grad_back, grad_z


def scaled_act_grad(back: Tensor, z: Tensor, activation: str) -> Tensor:
    r"""Back-propagation through a hidden activation: :math:`\partial\ell/\partial z = b \odot \sigma'(z)`.

    The step of the closed-form MLP backward (:meth:`MemoryMLP.gradient_factors`) from a layer's input
    gradient ``back`` to its pre-activation ``z``, both ``(N, T, hidden)``. It is torch's own fused
    activation backward (one kernel), differentiable and keeping only ``back`` and ``z`` for the outer
    loop's back-propagation: autograd through ``back * act_grad(z)`` would also keep
    :math:`\mathrm{sigmoid}(z)`, its complement and the derivative, each as large as the chunk's hidden
    activations.
    """
    if activation == "silu":
        return _SiluBackward.apply(back, z)
    if activation == "gelu":
        return torch.ops.aten.gelu_backward(back, z)
    raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")


class MemoryMLP(nn.Module):
    r"""The memory network :math:`\mathcal{M}` (Titans §3.1): ``depth`` bias-free linear layers.

    Args:
        dim: key/value width per head ``d``.
        depth: number of layers :math:`L_M \ge 1`; 1 is a matrix-valued (linear) memory.
        expansion: hidden width is ``expansion * dim`` (used when ``depth >= 2``).
        heads: independent memories, one per head; the initial weights are ``(heads, d_in, d_out)``.
        activation: ``"silu"`` (default) or ``"gelu"``, applied between layers.
        residual_norm: read out :math:`x + \gamma \odot \mathrm{LN}(z) + \beta` instead of :math:`z`
            (see the module docstring); ``None`` (default) means ``depth >= 2``, so ``depth=1`` stays the
            matrix-valued memory of Eq. 17.
        forget_to_initial: forgetting (Eq. 13's :math:`\alpha_t`) pulls the weights towards the learned
            :math:`\mathcal{M}_0` instead of towards zero (see the module docstring); ``None`` (default)
            means ``residual_norm``.
    """

    def __init__(
        self,
        dim: int,
        *,
        depth: int = 2,
        expansion: int = 4,
        heads: int = 1,
        activation: str = "silu",
        residual_norm: bool | None = None,
        forget_to_initial: bool | None = None,
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
        if residual_norm is None:
            residual_norm = depth >= 2
        if not isinstance(residual_norm, bool):
            raise TypeError(f"residual_norm must be a bool or None, got {type(residual_norm).__name__}")
        if forget_to_initial is None:
            forget_to_initial = residual_norm
        if not isinstance(forget_to_initial, bool):
            raise TypeError(
                f"forget_to_initial must be a bool or None, got {type(forget_to_initial).__name__}"
            )
        self.dim, self.depth, self.heads, self.residual_norm = dim, depth, heads, residual_norm
        self.forget_to_initial = forget_to_initial
        self.activation = activation
        self.act = ACTIVATIONS[activation]
        hidden = expansion * dim
        widths = [dim] + [hidden] * (depth - 1) + [dim]
        self.initial_weights = nn.ParameterList(
            nn.Parameter(torch.randn(heads, d_in, d_out) / math.sqrt(d_in))
            for d_in, d_out in itertools.pairwise(widths)
        )
        if residual_norm:  # outer-loop parameters of the read-out, one (gain, bias) per head
            self.norm_weight = nn.Parameter(torch.ones(heads, dim))
            self.norm_bias = nn.Parameter(torch.zeros(heads, dim))

    def expand(self, batch_size: int) -> Weights:
        """:math:`\\mathcal{M}_0` for every (sequence, head): ``(batch_size * heads, d_in, d_out)`` per layer.

        The copies stay connected to the parameters, so the outer loss trains :math:`\\mathcal{M}_0`.
        """
        return tuple(
            w.unsqueeze(0).expand(batch_size, *w.shape).reshape(batch_size * self.heads, *w.shape[1:])
            for w in self.initial_weights
        )

    def anchor(self, rows: int, dtype: torch.dtype | None = None, project=None) -> Weights | None:
        r"""What forgetting pulls towards, for ``rows = batch * heads`` rows: :math:`\mathcal{M}_0` (as
        :meth:`expand`) when ``forget_to_initial``, else ``None`` (towards zero, Eq. 13 as printed).

        ``project`` is the memory loop's :math:`\phi` (a non-linear retention); the memory is then read
        through :math:`\phi(C)` and has no :math:`\mathcal{M}_0` to return to, so asking for both raises.
        """
        if not self.forget_to_initial:
            return None
        if project is not None:
            raise ValueError("forget_to_initial needs a linear retention (project=None)")
        if rows % self.heads:
            raise ValueError(f"rows must be a multiple of heads ({self.heads}), got {rows}")
        return tuple(w.to(dtype) for w in self.expand(rows // self.heads))

    def layers(self, x: Tensor, linear: Callable[[int, Tensor], Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """The one forward pass of the network, with its linear maps supplied by the caller.

        ``linear(layer, h)`` maps the layer's input ``h`` to its pre-activation: ``h @ W_l`` for a plain
        read, the chunk's dual form (each position through its own weights) in
        :func:`neural_memory.titans.chunked.chunked_memory`. Returns the inputs :math:`a_l` and
        pre-activations :math:`z_l` of every layer; the last :math:`z` is the network's output before the
        read-out (:meth:`readout`).
        """
        inputs, pre = [x], [linear(0, x)]
        for layer in range(1, self.depth):  # the activation sits between layers, not after the last
            inputs.append(self.act(pre[-1]))
            pre.append(linear(layer, inputs[-1]))
        return inputs, pre

    def recall(self, weights: Weights, x: Tensor, norm: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Forward pass :math:`\\mathcal{M}(x)` with the given weights: ``x (N, T, d) -> (N, T, d)``.

        ``norm`` overrides the read-out's ``(gain, bias)`` rows (see :meth:`norm_params`).
        """
        _, pre = self.layers(x, lambda layer, h: h @ weights[layer])
        return self.readout(x, pre[-1], norm)

    def norm_params(self, n: int) -> tuple[Tensor, Tensor]:
        """The read-out's LayerNorm gain and bias for ``n = batch * heads`` rows, each ``(n, 1, d)``."""
        if n % self.heads:
            raise ValueError(f"rows must be a multiple of heads ({self.heads}), got {n}")
        reps = n // self.heads
        gain = self.norm_weight.repeat(reps, 1)[:, None, :]
        return gain, self.norm_bias.repeat(reps, 1)[:, None, :]

    def readout(self, x: Tensor, z: Tensor, norm: tuple[Tensor, Tensor] | None = None) -> Tensor:
        r"""The memory's output from its input ``x`` and its last layer's output ``z``, both ``(N, T, d)``.

        :math:`z` itself, or with ``residual_norm`` :math:`x + \gamma\odot\hat z + \beta`,
        :math:`\hat z = (z - \mu)/\sqrt{\mathrm{var}(z) + \epsilon}` over the channels (biased variance).
        """
        if not self.residual_norm:
            return z
        gain, bias = self.norm_params(z.shape[0]) if norm is None else norm
        return x + gain * _standardize(z)[0] + bias

    def readout_backward(self, z: Tensor, grad_out: Tensor) -> Tensor:
        r"""Gradient at ``z`` from the gradient ``grad_out`` at the read-out (closed-form LayerNorm backward).

        .. math::
            \frac{\partial\ell}{\partial z} = \frac{1}{\sigma}\Big(g - \overline{g}
                - \hat z\,\overline{g \odot \hat z}\Big), \qquad g = \gamma \odot
                \frac{\partial\ell}{\partial \mathcal{M}(x)},

        bars being means over the channels. Shapes ``(N, T, d)``.
        """
        if not self.residual_norm:
            return grad_out
        gain, _ = self.norm_params(z.shape[0])
        z_hat, sigma = _standardize(z)
        g = gain * grad_out
        centred = g - g.mean(dim=-1, keepdim=True)
        return (centred - z_hat * (g * z_hat).mean(dim=-1, keepdim=True)) / sigma

    def gradient_factors(
        self,
        weights: Weights,
        keys: Tensor,
        values: Tensor,
        output_grad: Callable[[Tensor, Tensor], Tensor] = associative_loss_output_grad,
    ) -> tuple[list[Tensor], list[Tensor]]:
        r"""Per-token inner-loss gradients as factors: :math:`\nabla_{W_l}\ell_t = a_{l,t}^\top g_{l,t}`.

        Closed-form back-propagation of Eq. 12 (or another attentional bias, via ``output_grad``) through
        the read-out (:meth:`readout_backward`) and the MLP, for every token at once and at the same
        weights.

        Args:
            weights: one ``(N, d_in, d_out)`` tensor per layer.
            keys, values: ``(N, T, d)``.
            output_grad: gradient of the loss with respect to the memory output, ``(pred, target) -> grad``.

        Returns:
            ``(acts, grads)``: per layer, inputs ``(N, T, d_in)`` and output gradients ``(N, T, d_out)``.
        """
        acts, pre = self.layers(keys, lambda layer, h: h @ weights[layer])
        h = pre[-1]
        grads: list[Tensor] = [self.readout_backward(h, output_grad(self.readout(keys, h), values))]
        for layer in range(len(weights) - 1, 0, -1):
            back = grads[0] @ weights[layer].transpose(-1, -2)
            grads.insert(0, scaled_act_grad(back, pre[layer - 1], self.activation))
        return acts, grads


def _standardize(z: Tensor) -> tuple[Tensor, Tensor]:
    """LayerNorm without affine over the last dimension (biased variance, as ``nn.LayerNorm``).

    Returns ``(z_hat, sigma)``: the normalised ``z`` and ``sqrt(var + eps)``, ``(..., 1)``, which the
    closed-form backward needs too.
    """
    sigma = torch.sqrt(z.var(dim=-1, unbiased=False, keepdim=True) + LAYER_NORM_EPS)
    return (z - z.mean(dim=-1, keepdim=True)) / sigma, sigma
