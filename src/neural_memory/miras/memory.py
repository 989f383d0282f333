r"""The MIRAS memory: architecture × attentional bias × retention gate × learning algorithm (MIRAS §3, §5.3).

:class:`MirasMemory` is the Titans long-term memory (:class:`~neural_memory.titans.memory.NeuralMemory`:
projections, short convolutions, l2-normalised queries and keys, output normalisation and gate, the state
that continues a stream at any split point) with its four choices open:

* **architecture** — the memory network :class:`~neural_memory.titans.memory_model.MemoryMLP` (``depth=1``:
  a matrix; ``depth=2`` with ``residual_norm``: MIRAS' :math:`x + \mathrm{LN}(W_1\sigma(W_2 x))`, M-U25);
* **attentional bias** — the inner loss, an :class:`~neural_memory.miras.attentional_bias.AttentionalBias`;
* **retention** — a :class:`~neural_memory.miras.retention.Retention`: how the state is kept (a linear
  accumulator :math:`C` decayed by :math:`1-\alpha_t`, read through :math:`\mathcal{M} = \phi(C)`);
* **algorithm** — gradient descent, with Titans' momentum (``algorithm="gd-momentum"``, the default) or
  without (``"gd"``), or the implicit step of a linear ℓ₂ memory (``"implicit-gd"``: Longhorn).

With (MLP, :math:`\ell_2`, weight decay, GD + momentum) it *is* the Titans memory, bit for bit
(``tests/test_integration/test_miras_titans.py``). The presets are the paper's three models:
:func:`moneta` (Eq. 24-25), :func:`yaad` (Eq. 26), :func:`memora` (Eq. 27).

**Gates** (M-U32 says channel-wise, through a rank-32/64 bottleneck, with no activations or ranges). Ours are
Titans' (:mod:`neural_memory.titans.gates`): one scalar per token and head, from a linear map of
:math:`x_t` and a sigmoid — the forget rate :math:`1-\alpha_t` (MIRAS writes the kept fraction
:math:`\alpha_t`), the step :math:`\eta_t = \theta_{\max}\sigma(\cdot)` (Titans' :math:`\theta_t`), and
for the Huber-type biases :math:`\delta_t = \mathrm{softplus}(\cdot)`, one per token and head (catalog A8:
the switch compares a norm against it). ``channel_step=True`` adds the paper's channel-wise step: a
rank-32 gate :math:`c_t \in (0, 2)^d` (1 at initialisation) multiplies the step channel by channel
(:class:`ChannelStepGate`). See ``docs/errata.md``, "MIRAS §5.4 (M-U32): the gates".
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import Tensor, nn

from neural_memory.common.validation import check_int
from neural_memory.miras.attentional_bias import AttentionalBias, L2Bias, LpBias, YaadBias
from neural_memory.miras.chunked import miras_chunked_memory
from neural_memory.miras.retention import KLSoftmax, LqNormalization, Retention, WeightDecay
from neural_memory.registry import implements
from neural_memory.titans.memory import NeuralMemory
from neural_memory.titans.reference import reference_memory
from neural_memory.titans.state import MemoryState
from neural_memory.titans.update import check_gates


class DeltaGate(nn.Module):
    r"""The threshold :math:`\delta_t = \delta_{\min} + \mathrm{softplus}(x_t w_\delta + b_\delta)`, per token
    and head.

    :math:`\delta_{\min} = 10^{-6}` keeps :math:`\delta_t > 0` where the softplus underflows to 0 (large
    inputs in float32), since the Huber-type biases need a positive threshold.

    Args:
        dim: input width; heads: one threshold per head.
        init: :math:`\delta` at zero input (default: set by the caller, e.g. :math:`\sqrt{d_{head}}`, the
            size of a residual between unrelated unit-scale vectors), ``> 2e-6``.
    """

    FLOOR = 1e-6

    def __init__(self, dim: int, heads: int, init: float):
        super().__init__()
        if not init > 2 * self.FLOOR:
            raise ValueError(f"init (the initial delta) must be > {2 * self.FLOOR}, got {init}")
        self.heads = heads
        self.proj = nn.Linear(dim, heads)
        nn.init.normal_(self.proj.weight, std=0.02)
        target = init - self.FLOOR
        with torch.no_grad():  # softplus^{-1}(init - floor)
            self.proj.bias.fill_(target + math.log(-math.expm1(-target)))

    def forward(self, x: Tensor) -> Tensor:
        """``x (B, T, dim)`` → ``delta (B * heads, T, 1)``."""
        b, t, _ = x.shape
        delta = self.FLOOR + nn.functional.softplus(self.proj(x))
        return delta.reshape(b, t, self.heads).permute(0, 2, 1).reshape(b * self.heads, t, 1)


class ChannelStepGate(nn.Module):
    r"""MIRAS §5.4's channel-wise step (M-U32): :math:`c_t = 2\sigma(W_u W_d x_t + b_u) \in (0, 2)^d`.

    One factor per value channel and token from a rank-``rank`` map :math:`\mathbb{R}^d \to
    \mathbb{R}^{k} \to \mathbb{R}^d` (the paper's low-rank projection, :math:`k \in \{32, 64\}`). The
    write's step becomes :math:`\theta_t c_t`: the attentional bias's output gradient is scaled channel by
    channel, so for a linear memory output channel :math:`j` learns at rate :math:`\theta_t c_{t,j}`.
    :math:`W_u = 0, b_u = 0` at initialisation, so :math:`c_t = 1` and the memory starts exactly as with the
    scalar step (docs/errata.md, "MIRAS §5.4 (M-U32): the gates").

    Args:
        dim: model width (the gate's input and output); rank: ``k >= 1``.
    """

    def __init__(self, dim: int, rank: int):
        super().__init__()
        self.down = nn.Linear(dim, check_int("channel_rank", rank), bias=False)
        self.up = nn.Linear(rank, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``x (B, T, dim)`` → ``c (B, T, dim)`` in (0, 2)."""
        return 2 * torch.sigmoid(self.up(self.down(x)))


def _channel_scaled(output_grad, pred: Tensor, target: Tensor, channel_step: Tensor, **params) -> Tensor:
    """The bias's output gradient times the channel step ``c_t``, ``(..., d)``."""
    return channel_step * output_grad(pred, target, **params)


# name -> Titans' momentum (Eq. 14) on or off. "implicit-gd": the implicit (proximal) step
# W_t = W_{t-1} - theta_t grad l(W_t), in closed form for a linear memory and the l2 bias (Longhorn).
ALGORITHMS = {"gd": False, "gd-momentum": True, "implicit-gd": False}


def _algorithm_momentum(algorithm: str | None, momentum: bool | None) -> bool:
    if algorithm is None:
        return True if momentum is None else bool(momentum)
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {sorted(ALGORITHMS)}, got {algorithm!r}")
    if momentum is not None and bool(momentum) != ALGORITHMS[algorithm]:
        raise ValueError(f"momentum={momentum} contradicts algorithm={algorithm!r}")
    return ALGORITHMS[algorithm]


class MirasMemory(NeuralMemory):
    """A MIRAS memory layer: ``forward(x (B, T, dim), state) -> (y (B, T, dim), state)``.

    Args:
        dim: model width, split into ``heads`` memories.
        bias: the attentional bias (default :math:`\\ell_2`, Titans Eq. 12).
        retention: the retention gate (default weight decay, Titans Eq. 13).
        algorithm: the learning rule, ``"gd"`` (MIRAS' presets), ``"gd-momentum"`` (Titans, Eq. 14; the
            default; ``momentum`` is the same choice as a flag) or ``"implicit-gd"``: the implicit step
            :math:`W_t = W_{t-1} - \\theta_t\\nabla\\ell(W_t)`, which for a linear memory and the ℓ₂ bias
            :math:`c\\|Wk - v\\|^2` is GD with the step :math:`\\theta_t / (1 + 2c\\,\\theta_t\\|k_t\\|^2)`
            (Table 1's Longhorn row, Titans Eq. 35; with decay, the step is taken from the undecayed
            :math:`W_{t-1}`, the order of our weight decay).
        momentum: GD with Titans' momentum (Eq. 14) instead of plain GD (default True).
        delta_init: initial Huber/Yaad threshold; ``None`` = :math:`\\sqrt{d_{head}}`.
        channel_step: multiply the scalar step by a learned channel-wise factor (:class:`ChannelStepGate`,
            MIRAS §5.4); off by default (Titans' scalar gates).
        channel_rank: the rank of that gate's map, ``>= 1`` (32).
        **kwargs: everything else :class:`~neural_memory.titans.memory.NeuralMemory` takes (``depth``,
            ``chunk_size``, ``heads``, ``expansion``, ``activation``, ``residual_norm``, ``weight_decay``,
            ``theta_max``, ``gates``, ``fixed_gates``, ``impl``, ``checkpoint_chunks``,
            ``compile_chunks``, ...). ``read`` must stay ``"token"`` for a non-linear retention.
    """

    def __init__(
        self,
        dim: int,
        *,
        bias: AttentionalBias | None = None,
        retention: Retention | None = None,
        algorithm: str | None = None,
        momentum: bool | None = None,
        delta_init: float | None = None,
        channel_step: bool = False,
        channel_rank: int = 32,
        **kwargs,
    ):
        momentum = _algorithm_momentum(algorithm, momentum)
        retention = WeightDecay() if retention is None else retention
        if not isinstance(retention, WeightDecay):  # the memory is read through phi(C): no M_0 to return to
            if kwargs.get("forget_to_initial"):
                raise ValueError("forget_to_initial needs the weight-decay retention (Titans Eq. 13)")
            kwargs["forget_to_initial"] = False
        super().__init__(dim, momentum=momentum, **kwargs)
        self.algorithm = algorithm or ("gd-momentum" if momentum else "gd")
        bias = L2Bias() if bias is None else bias
        if not isinstance(bias, AttentionalBias):
            raise TypeError(f"bias must be an AttentionalBias, got {type(bias).__name__}")
        if not isinstance(retention, Retention):
            raise TypeError(f"retention must be a Retention, got {type(retention).__name__}")
        self.bias, self.retention = bias, retention
        self.linear_retention = isinstance(retention, WeightDecay)
        if not self.linear_retention and self.read != "token":
            raise ValueError("a non-linear retention reads every token with its own state: read='token' only")
        unknown = set(bias.token_params) - {"delta"}
        if unknown:
            raise ValueError(f"no gate produces the bias parameters {sorted(unknown)}")
        self.delta_gate = None
        if "delta" in bias.token_params:
            init = math.sqrt(self.head_dim) if delta_init is None else delta_init
            self.delta_gate = DeltaGate(dim, self.heads, init)
        linear_l2 = self.memory.depth == 1 and not self.memory.residual_norm and isinstance(bias, L2Bias)
        if self.algorithm == "implicit-gd" and not (linear_l2 and not channel_step):
            raise ValueError(
                "algorithm='implicit-gd' has a closed form only here: it needs a linear memory (depth=1, "
                "residual_norm=False), the L2Bias and the scalar step (channel_step=False), got "
                f"depth={self.memory.depth}, residual_norm={self.memory.residual_norm}, "
                f"bias={type(bias).__name__}, channel_step={channel_step}"
            )
        check_int("channel_rank", channel_rank)
        self.channel_gate = ChannelStepGate(dim, channel_rank) if channel_step else None

    def _phi(self):
        return None if self.linear_retention else self.retention.project

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> MemoryState:
        """:math:`C_0` (learned: the memory network's initial weights), :math:`\\mathcal{M}_0 = \\phi(C_0)`.

        For :class:`~neural_memory.miras.retention.WeightDecay` the weights are their own accumulator.
        """
        state = super().init_state(batch_size, device=device, dtype=dtype)
        if self.linear_retention:
            return state
        acc = state.weights
        weights = tuple(self.retention.project(a) for a in acc)
        return MemoryState(
            weights=weights, momentum=state.momentum, chunk_weights=weights, conv=state.conv, accumulator=acc
        )

    def _write(self, x, keys, values, queries, state):
        alpha, eta, theta = self.gates(x)
        if self.algorithm == "implicit-gd":  # Sherman-Morrison: the implicit step is an explicit, shorter one
            theta = theta / (1 + 2 * self.bias.scale * theta * keys.pow(2).sum(dim=-1))
        params = {} if self.delta_gate is None else {"delta": self.delta_gate(x)}
        if not torch.compiler.is_compiling():  # once per call; the memory loops use the unchecked forms
            check_gates(alpha.detach(), eta.detach(), theta.detach())
            self.bias.check_params(values, **params)
        output_grad = self.bias.raw_output_grad
        if self.channel_gate is not None:  # (B * heads, T, head_dim), like the values
            params = {**params, "channel_step": self._split_heads(self.channel_gate(x))}
            output_grad = partial(_channel_scaled, output_grad)
        args = (self.memory, state, keys, values, queries, alpha, eta, theta)
        common = {"bias_params": params, "project": self._phi(), "lag_token": self.retention.lag_token}
        if self.impl == "reference":
            # autograd of the loss, unless the bias's gradient is a surrogate of it (smooth l_p) or is
            # scaled channel by channel
            exact = self.bias.exact_gradient and self.channel_gate is None
            inner = {"loss": self.bias.raw_loss} if exact else {"output_grad": output_grad}
            return reference_memory(*args, chunk_size=self.chunk_size, read=self.read, **inner, **common)
        if self.retention.rescaling:  # Moneta: the same semantics, read through the dual form
            common = {**common, "project": None, "rescaling": self.retention}
        return miras_chunked_memory(
            *args, chunk_size=self.chunk_size, read=self.read, checkpoint_chunks=self.checkpoint_chunks,
            compile_chunks=self.compile_chunks, output_grad=output_grad, **common,
        )  # fmt: skip


# -- the paper's three models (§5.3; defaults of §6 and Table 5 where given) -------------------------------

PRESET_DEFAULTS = {"depth": 2, "expansion": 4, "activation": "gelu", "residual_norm": True, "algorithm": "gd"}


def _preset(kwargs: dict) -> dict:
    """The presets' defaults under the caller's overrides (``momentum=`` alone replaces the algorithm)."""
    config = {**PRESET_DEFAULTS, **kwargs}
    if "momentum" in kwargs and "algorithm" not in kwargs:
        del config["algorithm"]
    return config


@implements("miras", 24, 25)
def moneta(dim: int, *, p: float = 3.0, q: float = 4.0, **kwargs) -> MirasMemory:
    r"""Moneta (MIRAS v1, Eq. 24-25): :math:`\ell_p` attentional bias, :math:`\ell_q` retention, GD.

    .. math::
        A_t = \alpha_t A_{t-1} - \eta_t\nabla\ell_p(W_{t-1}; \mathbf{k}_t, \mathbf{v}_t), \qquad
        W_t = \frac{A_t}{\|A_t\|_q^{q-2}} \qquad (24) \\
        \nabla\ell_p(W_{t-1}; \mathbf{k}_t, \mathbf{v}_t)
            = p\,\big(\mathrm{Sign}(W\mathbf{k}_t - \mathbf{v}_t)
            \odot |W\mathbf{k}_t - \mathbf{v}_t|^{p-1}\big)\mathbf{k}_t^\top \qquad (25)

    A memory whose inner loss punishes large errors more (p = 3) and whose weights are kept on an
    :math:`\ell_q` sphere-like scale. The printed :math:`W_{i-1}` reads :math:`W_{t-1}` and the :math:`\eta_t`
    printed inside Eq. 25's gradient is applied once (catalog A1, A4); Sign and :math:`|\cdot|` are the smooth
    surrogates of Remark 5 (M-U10). Defaults (p, q) = (3, 4), a 2-layer GELU MLP with expansion 4 and the
    residual LayerNorm read-out (M-U25).

    Args:
        dim: model width; p: bias exponent >= 1; q: retention exponent >= 1;
        **kwargs: overrides for :class:`MirasMemory`.
    """
    config = _preset(kwargs)
    return MirasMemory(dim, bias=LpBias(p=p, smooth=True), retention=LqNormalization(q=q), **config)


@implements("miras", 26)
def yaad(dim: int, **kwargs) -> MirasMemory:
    r"""Yaad (MIRAS v1, Eq. 26): the Huber-type :math:`\ell_2`/:math:`\ell_1` switch with weight decay, GD.

    .. math::
        W_t = \alpha_t W_{t-1} - \begin{cases} \eta_t\nabla\ell_2(W_{t-1}; \mathbf{k}_t, \mathbf{v}_t) &
            \|\mathcal{M}(\mathbf{k}_t) - \mathbf{v}_t\| \le \delta_t \\ \eta_t\delta_t\nabla\ell_1(W_{t-1};
            \mathbf{k}_t, \mathbf{v}_t) & \text{otherwise} \end{cases} \qquad (26)

    Learn like the squared loss on ordinary tokens and with a bounded step on outliers; :math:`\delta_t` is
    a gate (:class:`DeltaGate`). Constants :math:`\ell_2 = \tfrac12\|r\|_2^2`,
    :math:`\ell_1 = \|r\|_1/\sqrt{d_v}` (per head), so no step is longer than
    :math:`\min(\|r\|_2, \delta_t)` (:class:`YaadBias`; docs/errata.md, MIRAS Eq. 16).

    Args:
        dim: model width; **kwargs: overrides for :class:`MirasMemory`.
    """
    config = _preset(kwargs)
    return MirasMemory(dim, bias=YaadBias(), retention=WeightDecay(), **config)


@implements("miras", 27)
def memora(dim: int, **kwargs) -> MirasMemory:
    r"""Memora (MIRAS v1, Eq. 27): :math:`\ell_2` attentional bias, KL retention: a softmax update, GD.

    .. math::
        W_t = \mathrm{Softmax}\big(\alpha_t\log(W_{t-1}) - \eta_t\nabla\ell_2(W_{t-1};
            \mathbf{k}_t, \mathbf{v}_t)\big) \qquad (27)

    Weights live on the probability simplex (each output unit's incoming weights, catalog A7); the state
    carries the log-weights, so the update is linear in them and :math:`\log` of a weight is never taken.
    :math:`\ell_2 = \tfrac12\|\cdot\|^2` (Eq. 31's convention); the lag token of Eq. 30 in chunks.

    Args:
        dim: model width; **kwargs: overrides for :class:`MirasMemory`.
    """
    config = _preset(kwargs)
    return MirasMemory(dim, bias=L2Bias(scale=0.5), retention=KLSoftmax(), **config)
