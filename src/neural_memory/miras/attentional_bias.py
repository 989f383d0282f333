r"""Attentional biases: the inner losses a MIRAS memory minimises at test time (MIRAS v1, §5.1 and §5.3).

An attentional bias :math:`\mathcal{L}(\mathcal{M}(k_t); v_t)` scores how well the memory recalls ``v_t``
from ``k_t``. Everything downstream only needs its gradient with respect to the memory's *output*
(:meth:`AttentionalBias.output_grad`); the chain rule through the memory network is done by the memory.
The biases are frozen dataclasses; per-token hyper-parameters (the Huber/Yaad threshold :math:`\delta_t`)
are passed as keyword tensors named in :attr:`AttentionalBias.token_params`.

For a linear memory (column convention of :mod:`neural_memory.common.delta_rule`: ``W`` is
``(..., d_v, d_k)`` and reads ``W k``) the gradient of the loss with respect to ``W`` is the outer product
of the output gradient with ``k``; :func:`linear_bias_step` is that gradient step, written once, and the
paper's named update rules (Eq. 11, 12, 14, 15, 16, 25, 26) are thin functions on top of it.

Conventions (docs/errata.md, MIRAS Eq. 11, 16, 25 and §5.1): ``r = M(k) - v``; the ℓ₂ bias of Titans
(:class:`L2Bias` default) has no ½, the Huber and Yaad biases use ``ℓ₂ = ½‖r‖²`` and ``ℓ₁ = ‖r‖₁``.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from neural_memory.common.validation import check_range
from neural_memory.registry import implements

# --------------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------------


def _real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def _check_positive(name: str, value: object) -> float:
    number = _real(name, value)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value}")
    return number


def _describe(t: Tensor) -> str:
    return (
        f"{t.item()}" if t.numel() == 1 else f"a tensor with values in [{t.min().item()}, {t.max().item()}]"
    )


def _check_tensor(name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(value).__name__}")
    return value


def _check_delta(name: str, value: object, like: Tensor, per_token: bool) -> Tensor:
    """A threshold as a tensor broadcastable to ``like`` (``(..., 1)`` if ``per_token``), finite and > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float | Tensor):
        raise TypeError(f"{name} must be a float or a tensor, got {type(value).__name__}")
    delta = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if not bool(torch.isfinite(delta).all() and (delta > 0).all()):
        raise ValueError(f"{name} must be finite and > 0, got {_describe(delta)}")
    if per_token and delta.dim() >= 1 and delta.shape[-1] != 1:
        raise ValueError(
            f"{name} must be one scalar per token, shape (..., 1), got {tuple(delta.shape)} "
            "(docs/errata.md, MIRAS Eq. 16: the switch compares a norm with it)"
        )
    try:
        fits = torch.broadcast_shapes(delta.shape, like.shape) == like.shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(f"{name} of shape {tuple(delta.shape)} does not broadcast to {tuple(like.shape)}")
    return delta


def _check_gate(name: str, value: object, like: Tensor, upper: float | None) -> Tensor:
    """A gate as a tensor broadcastable to the batch shape of the memory ``like``; in [0, upper]."""
    high = math.inf if upper is None else upper
    return check_range(name, value, like, shape=like.shape[:-2], high=high)


def _norm(r: Tensor) -> Tensor:
    """``‖r‖₂`` over the last axis, kept as ``(..., 1)`` (overflow-safe for large residuals)."""
    return torch.linalg.vector_norm(r, dim=-1, keepdim=True)


# --------------------------------------------------------------------------------------------------
# the Huber function
# --------------------------------------------------------------------------------------------------


def _huber(a: Tensor, delta: Tensor) -> Tensor:
    return torch.where(a.abs() <= delta, 0.5 * a * a, delta * (a.abs() - 0.5 * delta))


def _huber_grad(a: Tensor, delta: Tensor) -> Tensor:
    """``H'(a)``: ``a`` inside the threshold, ``δ Sign(a)`` outside, i.e. ``a`` clipped to ``[-δ, δ]``."""
    return torch.minimum(torch.maximum(a, -delta), delta)


@implements("miras", 13)
def huber(a: Tensor, delta: float | Tensor) -> Tensor:
    r"""The Huber function (MIRAS v1, Eq. 13), elementwise.

    .. math::
        \mathcal{H}(a) = \begin{cases} \tfrac12 a^2 & \text{if } |a| \le \delta \\
        \delta\left(|a| - \tfrac12\delta\right) & \text{if } |a| > \delta \end{cases} \qquad (13)

    Quadratic near zero, linear (slope ``δ``) in the tails: an ℓ₂ loss that stops growing fast for
    outliers. ``H`` and ``H'`` are continuous at ``|a| = δ``.

    Args:
        a: ``(...)``, any shape.
        delta: threshold ``δ > 0`` (finite), a float or a tensor broadcastable to ``a``.

    Returns:
        ``H(a)``, same shape as ``a``.
    """
    a = _check_tensor("a", a)
    return _huber(a, _check_delta("delta", delta, a, per_token=False))


# --------------------------------------------------------------------------------------------------
# the attentional biases
# --------------------------------------------------------------------------------------------------


class AttentionalBias(abc.ABC):
    r"""An inner loss :math:`\mathcal{L}(\mathcal{M}(k_t); v_t)` and its gradient with respect to the output.

    Subclasses are frozen dataclasses that validate their hyper-parameters in ``__post_init__`` and
    implement :meth:`_loss` and :meth:`_output_grad`. Per-token tensors the loss needs (e.g. Huber's
    ``δ_t``) are named in :attr:`token_params` and passed as keywords, broadcastable to ``pred``:
    ``(..., 1)`` is one scalar per token (and head), ``(..., d)`` one per channel where the equation is
    coordinate-wise. Missing or extra keywords raise ``TypeError``.
    """

    token_params: ClassVar[tuple[str, ...]] = ()

    def loss(self, pred: Tensor, target: Tensor, **params: float | Tensor) -> Tensor:
        """The loss per token: ``pred``, ``target`` ``(..., d)`` -> ``(...,)``."""
        return self._loss(pred, target, **self._check(pred, target, params))

    def output_grad(self, pred: Tensor, target: Tensor, **params: float | Tensor) -> Tensor:
        """``∂ loss / ∂ pred``, ``(..., d)``, one token at a time (no sum over tokens is differentiated)."""
        return self._output_grad(pred, target, **self._check(pred, target, params))

    @property
    def exact_gradient(self) -> bool:
        """Whether :meth:`output_grad` is the exact gradient of :meth:`loss` (not a surrogate)."""
        return True

    def check_params(self, like: Tensor, **params: float | Tensor) -> None:
        """Validate token parameters for outputs shaped like ``like``, ``(..., d)``, once, outside
        ``torch.func`` transforms."""
        self._check(like, like, params)

    def raw_loss(self, pred: Tensor, target: Tensor, **params: Tensor) -> Tensor:
        """:meth:`loss` without the input checks, for ``torch.func`` transforms (which refuse their
        data-dependent control flow); call :meth:`check_params` once outside."""
        return self._loss(pred, target, **params)

    def raw_output_grad(self, pred: Tensor, target: Tensor, **params: Tensor) -> Tensor:
        """:meth:`output_grad` without the input checks (see :meth:`raw_loss`)."""
        return self._output_grad(pred, target, **params)

    def _per_token_params(self) -> bool:
        """Whether every token param must be one scalar per token, ``(..., 1)``."""
        return False

    def _check(self, pred: Tensor, target: Tensor, params: dict[str, float | Tensor]) -> dict[str, Tensor]:
        pred, target = _check_tensor("pred", pred), _check_tensor("target", target)
        if pred.shape != target.shape or pred.dim() < 1:
            raise ValueError(
                f"pred and target must have the same shape (..., d), got {tuple(pred.shape)} "
                f"and {tuple(target.shape)}"
            )
        for name in self.token_params:
            if name not in params:
                raise TypeError(f"{type(self).__name__} is missing token parameter {name!r}")
        for name in params:
            if name not in self.token_params:
                raise TypeError(
                    f"{type(self).__name__} got an unexpected token parameter {name!r} "
                    f"(it takes {self.token_params or 'none'})"
                )
        per_token = self._per_token_params()
        return {name: _check_delta(name, value, pred, per_token) for name, value in params.items()}

    @abc.abstractmethod
    def _loss(self, pred: Tensor, target: Tensor, **params: Tensor) -> Tensor: ...

    @abc.abstractmethod
    def _output_grad(self, pred: Tensor, target: Tensor, **params: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class L2Bias(AttentionalBias):
    r"""Squared ℓ₂ bias :math:`c\,\|\mathcal{M}(k_t) - v_t\|_2^2` (Titans Eq. 12, MIRAS M-U6/M-U9).

    ``scale = 1`` is Titans Eq. 12 (no ½; ``output_grad`` is then bit for bit
    :func:`neural_memory.titans.associative_loss.associative_loss_output_grad`); ``scale = 0.5`` is the
    ½‖·‖² that MIRAS Eq. 31 implies.

    Args:
        scale: ``c > 0`` (finite).
    """

    scale: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", _check_positive("scale", self.scale))

    def _loss(self, pred: Tensor, target: Tensor) -> Tensor:
        return self.scale * (pred - target).pow(2).sum(dim=-1)

    def _output_grad(self, pred: Tensor, target: Tensor) -> Tensor:
        return (2.0 * self.scale) * (pred - target)


@dataclass(frozen=True)
class DotProductBias(AttentionalBias):
    r"""Hebbian bias :math:`-2\langle\mathcal{M}(k_t), v_t\rangle` (MIRAS M-U5, behind Eq. 8).

    Rewards alignment of the recall with the value; its gradient ``-2 v_t`` does not depend on the memory.
    """

    def _loss(self, pred: Tensor, target: Tensor) -> Tensor:
        return -2.0 * (pred * target).sum(dim=-1)

    def _output_grad(self, pred: Tensor, target: Tensor) -> Tensor:
        return -2.0 * target


@implements("miras", 10, 25)
@dataclass(frozen=True)
class LpBias(AttentionalBias):
    r"""ℓ_p attentional bias (MIRAS v1, Eq. 10), with the smooth surrogates of Remark 5 (M-U10, Eq. 25).

    .. math::
        \mathcal{L}(\mathcal{M}(W, k_t); v_t) = \|\mathcal{M}(k_t) - v_t\|_p^p \qquad (10)

        \nabla_{\mathcal{M}}\mathcal{L} = p\,\mathrm{Sign}(r)\odot|r|^{p-1}, \qquad r = \mathcal{M}(k_t) - v_t

    ``p = 2`` is the squared ℓ₂ loss, ``p = 1`` the ℓ₁ loss (then ``Sign(0) = 0``: an exact recall has a
    zero gradient). With ``smooth=True`` (Remark 5) ``Sign(x) ≈ tanh(sharpness·x)`` and
    ``|x| ≈ sqrt(x² + eps)``: the loss is ``Σ (r² + eps)^{p/2}`` and the output gradient
    ``p tanh(sharpness·r) (r² + eps)^{(p-1)/2}``, the surrogate of Eq. 25. That surrogate gradient is not
    the exact gradient of the smoothed loss (no closed-form loss has it); both tend to the exact ones as
    ``eps → 0`` and ``sharpness → ∞``.

    Args:
        p: exponent, finite, ``p >= 1`` (Moneta uses 3).
        smooth: use the surrogates (default ``False``: the exact Eq. 10; the Moneta preset may turn it on).
        eps: ``ε > 0`` of ``sqrt(x² + ε)``; the paper's ``1e-6``.
        sharpness: ``α > 0`` of ``tanh(α x)``; the paper gives none (A14). Default ``1e3 = 1/sqrt(1e-6)``:
            both surrogates then bend on the same scale ``sqrt(ε)`` (docs/errata.md, MIRAS Eq. 25).
    """

    p: float = 3.0
    smooth: bool = False
    eps: float = 1e-6
    sharpness: float = 1e3

    def __post_init__(self) -> None:
        p = _real("p", self.p)
        if not (math.isfinite(p) and p >= 1):
            raise ValueError(f"p must be finite and >= 1, got {self.p}")
        if not isinstance(self.smooth, bool):
            raise TypeError(f"smooth must be a bool, got {type(self.smooth).__name__}")
        object.__setattr__(self, "p", p)
        object.__setattr__(self, "eps", _check_positive("eps", self.eps))
        object.__setattr__(self, "sharpness", _check_positive("sharpness", self.sharpness))

    @property
    def exact_gradient(self) -> bool:
        return not self.smooth

    def _abs(self, r: Tensor) -> Tensor:
        return torch.sqrt(r * r + self.eps) if self.smooth else r.abs()

    def _sign(self, r: Tensor) -> Tensor:
        return torch.tanh(self.sharpness * r) if self.smooth else torch.sign(r)

    def _loss(self, pred: Tensor, target: Tensor) -> Tensor:
        return self._abs(pred - target).pow(self.p).sum(dim=-1)

    def _output_grad(self, pred: Tensor, target: Tensor) -> Tensor:
        r = pred - target
        # |r|^{p-1} with p = 1 is |r|^0 = 1 (torch: 0^0 = 1), so the ℓ₁ gradient is Sign(r), 0 at r = 0
        return self.p * self._sign(r) * self._abs(r).pow(self.p - 1)


@implements("miras", 14, 15)
@dataclass(frozen=True)
class HuberBias(AttentionalBias):
    r"""Huber attentional bias, coordinate-wise (M-U11, Eq. 14) or on the residual norm (M-U12, Eq. 15).

    .. math::
        \ell_{\text{coordinate}} = \sum_j \mathcal{H}(r_j), \qquad
        \nabla_{\mathcal{M}} = r \odot \mathbb{I}(|r| \le \delta_t) + \delta_t\,\mathrm{Sign}(r)\odot
        \mathbb{I}(|r| > \delta_t)

        \ell_{\text{norm}} = \mathcal{H}(\|r\|_2), \qquad
        \nabla_{\mathcal{M}} = \begin{cases} r & \|r\|_2 \le \delta_t \\
        \delta_t\, r / \|r\|_2 & \text{otherwise} \end{cases}

    with :math:`\mathcal{H}` of Eq. 13 and ``r = M(k_t) - v_t``. Coordinate mode clips every coordinate of
    the residual to ``[-δ, δ]``; norm mode clips the residual's length to ``δ``.

    Token param ``delta`` (``δ_t > 0``): ``(..., 1)`` or, in coordinate mode, ``(..., d)`` per channel;
    norm mode compares one norm per token, so it needs ``(..., 1)``.

    Args:
        mode: ``"coordinate"`` (Eq. 14) or ``"norm"`` (Eq. 15).
    """

    mode: Literal["coordinate", "norm"] = "coordinate"
    token_params: ClassVar[tuple[str, ...]] = ("delta",)

    def __post_init__(self) -> None:
        if self.mode not in ("coordinate", "norm"):
            raise ValueError(f"mode must be 'coordinate' or 'norm', got {self.mode!r}")

    def _per_token_params(self) -> bool:
        return self.mode == "norm"

    def _loss(self, pred: Tensor, target: Tensor, delta: Tensor) -> Tensor:
        r = pred - target
        if self.mode == "coordinate":
            return _huber(r, delta).sum(dim=-1)
        return _huber(_norm(r), delta).squeeze(-1)

    def _output_grad(self, pred: Tensor, target: Tensor, delta: Tensor) -> Tensor:
        r = pred - target
        if self.mode == "coordinate":
            return _huber_grad(r, delta)
        # r · δ / max(‖r‖, δ): r itself inside (δ/δ = 1 exactly), δ r/‖r‖ outside; never divides by 0
        return r * (delta / torch.maximum(_norm(r), delta))


@implements("miras", 16, 26)
@dataclass(frozen=True)
class YaadBias(AttentionalBias):
    r"""Yaad's ℓ₂/ℓ₁ switch (MIRAS v1, Eq. 16, the bias of the Yaad recurrence Eq. 26).

    .. math::
        \nabla_{\mathcal{M}} = \begin{cases} \nabla\ell_2 = r & \text{if } \|r\|_2 \le \delta_t \\
        \delta_t\,\nabla\ell_1 = \delta_t\,\mathrm{Sign}(r)/\sqrt{d_v} & \text{otherwise} \end{cases}
        \qquad \ell_2 = \tfrac12\|r\|_2^2,\ \ell_1 = \|r\|_1/\sqrt{d_v}

    Small errors are learned with the ℓ₂ gradient, large ones (outliers) with a bounded ℓ₁ step whose size
    does not grow with the error. The switch is per token on the residual's ℓ₂ norm, so ``δ_t`` is one
    scalar per token (and head), shape ``(..., 1)`` (A8; docs/errata.md, MIRAS Eq. 16). The ℓ₂/ℓ₁
    constants (½ and ``1/√d_v``; the paper fixes none) are ours: with them a one-channel memory is exactly
    the Huber loss of Eq. 13, and the step is never longer than ``min(‖r‖₂, δ_t)``, its length continuous
    at the switch. With ``ℓ₁ = ‖r‖₁`` the outlier step ``δ_t Sign(r)`` would be up to ``√d_v`` times longer
    than the ℓ₂ step it replaces, which made a deep Yaad memory's inner loop chaotic (outer gradient 2e12
    after 2048 tokens; errata).

    :meth:`loss` is the piecewise value ``½‖r‖²`` if ``‖r‖ <= δ`` else ``δ(‖r‖₁/√d_v - ½δ)``, whose gradient
    is the switch; for ``d > 1`` it is not continuous at ``‖r‖ = δ`` (Eq. 16 is not the gradient of one
    loss).

    Token param ``delta``: ``δ_t > 0``, ``(..., 1)``.
    """

    token_params: ClassVar[tuple[str, ...]] = ("delta",)

    def _per_token_params(self) -> bool:
        return True

    def _loss(self, pred: Tensor, target: Tensor, delta: Tensor) -> Tensor:
        r = pred - target
        l2 = 0.5 * (r * r).sum(dim=-1, keepdim=True)
        l1 = delta * (r.abs().sum(dim=-1, keepdim=True) / math.sqrt(r.shape[-1]) - 0.5 * delta)
        return torch.where(_norm(r) <= delta, l2, l1).squeeze(-1)

    def _output_grad(self, pred: Tensor, target: Tensor, delta: Tensor) -> Tensor:
        r = pred - target
        return torch.where(_norm(r) <= delta, r, delta / math.sqrt(r.shape[-1]) * torch.sign(r))


@implements("miras", 17)
@dataclass(frozen=True)
class ValueShiftBias(AttentionalBias):
    r"""Loss robust to value shifts (MIRAS v1, Eq. 17), in the closed form M-U14 with gradient M-U15.

    .. math::
        \mathcal{L} = \max_{\|\delta v_t\|_2 \le \Delta} \tfrac12
        \|\mathcal{M}(W, k_t) - (v_t + \delta v_t)\|_2^2
        = \tfrac12\|r\|_2^2 + \Delta\|r\|_2 + \tfrac12\Delta^2 = \tfrac12(\|r\|_2 + \Delta)^2 \qquad (17)

        \nabla_{\mathcal{M}}\mathcal{L} = r + \Delta\, r / \|r\|_2

    The worst shift of the value within a ball of radius ``Δ`` pushes it straight away from the recall
    (M-U13). At ``r = 0`` the loss is a cone (no gradient when ``Δ > 0``); ``output_grad`` returns the
    minimum-norm subgradient, ``0`` (the division is masked, so no NaN), which is also what autograd of the
    closed form gives there.

    Args:
        radius: ``Δ >= 0`` (finite); ``0`` gives ``½‖r‖²``.
    """

    radius: float = 1.0

    def __post_init__(self) -> None:
        radius = _real("radius", self.radius)
        if not (math.isfinite(radius) and radius >= 0):
            raise ValueError(f"radius must be finite and >= 0, got {self.radius}")
        object.__setattr__(self, "radius", radius)

    def _loss(self, pred: Tensor, target: Tensor) -> Tensor:
        return 0.5 * (_norm(pred - target).squeeze(-1) + self.radius) ** 2

    def _output_grad(self, pred: Tensor, target: Tensor) -> Tensor:
        r = pred - target
        n = _norm(r)
        unit = r / torch.where(n > 0, n, torch.ones_like(n))  # r/‖r‖, and 0 (not 0/0) where r = 0
        return r + self.radius * unit


# --------------------------------------------------------------------------------------------------
# linear (matrix) memory: the gradient step, once, and the paper's named update rules
# --------------------------------------------------------------------------------------------------


def _check_linear_memory(W: Tensor, k: Tensor, v: Tensor) -> None:
    if not isinstance(W, Tensor) or W.dim() < 2:
        raise ValueError(f"W must be (..., d_v, d_k), got {getattr(W, 'shape', type(W).__name__)}")
    d_v, d_k = W.shape[-2:]
    if not isinstance(k, Tensor) or k.dim() < 1 or k.shape[-1] != d_k:
        raise ValueError(f"k must have shape (..., d_k={d_k}), got {getattr(k, 'shape', type(k).__name__)}")
    if not isinstance(v, Tensor) or v.dim() < 1 or v.shape[-1] != d_v:
        raise ValueError(f"v must have shape (..., d_v={d_v}), got {getattr(v, 'shape', type(v).__name__)}")


@implements("miras", 31)
def linear_bias_grad(
    W: Tensor, k: Tensor, v: Tensor, bias: AttentionalBias, **params: float | Tensor
) -> Tensor:
    r"""Gradient of an attentional bias for the linear memory :math:`\mathcal{M}(W, k) = W k`.

    .. math::
        \nabla_W \mathcal{L}(W k_t; v_t) = \big(\nabla_{\mathcal{M}}\mathcal{L}\big)\, k_t^{\top}

    With ``L2Bias(scale=0.5)`` at the lag state :math:`W_1` this is MIRAS v1 Eq. 31,
    :math:`\nabla\ell(W_1; \mathbf{k}_t, \mathbf{v}_t) = (W_1\mathbf{k}_t - \mathbf{v}_t)\mathbf{k}_t^\top`
    (which fixes the :math:`\ell_2` convention of Memora's chunks to :math:`\tfrac12\|\cdot\|^2`).

    Args:
        W: ``(..., d_v, d_k)``; k: ``(..., d_k)``; v: ``(..., d_v)``.
        bias: an :class:`AttentionalBias`; ``params`` its token params, broadcastable to ``(..., d_v)``.

    Returns:
        ``(..., d_v, d_k)``, rank one per token.
    """
    _check_linear_memory(W, k, v)
    if not isinstance(bias, AttentionalBias):
        raise TypeError(f"bias must be an AttentionalBias, got {type(bias).__name__}")
    pred = (W @ k[..., :, None]).squeeze(-1)  # (..., d_v): W k
    out = bias.output_grad(pred, v, **params)
    return out[..., :, None] * k[..., None, :]


def linear_bias_step(
    W: Tensor, k: Tensor, v: Tensor, eta: float | Tensor, bias: AttentionalBias, **params: float | Tensor
) -> Tensor:
    r"""One gradient step of an attentional bias on a linear memory (§5.1, the pattern of Eq. 11-16).

    .. math::
        W_t = W_{t-1} - \eta_t\,\big(\nabla_{\mathcal{M}}\mathcal{L}(W_{t-1} k_t; v_t)\big)\,k_t^{\top}

    Args:
        W: ``W_{t-1}``, ``(..., d_v, d_k)``.
        k: key, ``(..., d_k)``; v: value, ``(..., d_v)``.
        eta: step ``η_t >= 0`` (finite), a float or a tensor broadcastable to the batch shape ``(...)``.
        bias: the attentional bias; ``params`` its token params.

    Returns:
        ``W_t``, ``(..., d_v, d_k)``.
    """
    grad = linear_bias_grad(W, k, v, bias, **params)
    return W - _check_gate("eta", eta, W, upper=None)[..., None, None] * grad


@implements("miras", 11, 12)
def lp_step(W: Tensor, k: Tensor, v: Tensor, eta: float | Tensor, p: float) -> Tensor:
    r"""ℓ_p gradient step of a matrix memory (MIRAS v1, Eq. 11; ``p = 1`` is Eq. 12).

    .. math::
        W_t = W_{t-1} - p\,\eta_t\big(\mathrm{Sign}(W_{t-1}k_t - v_t)\odot|W_{t-1}k_t - v_t|^{p-1}\big)
        k_t^{\top} \qquad (11)

        W_t = W_{t-1} - \eta_t\,\mathrm{Sign}(W_{t-1}k_t - v_t)\,k_t^{\top} \qquad (12,\ p = 1)

    Gradient descent on ``‖W k - v‖_p^p``. The paper prints ``W_t`` on the right-hand side of both; it is
    ``W_{t-1}`` (A1; docs/errata.md, MIRAS Eq. 11-12). With ``p = 1`` only the sign pattern of the residual
    matters ("value-less" memory); a coordinate with zero residual is not written.

    Args:
        W: ``(..., d_v, d_k)``; k: ``(..., d_k)``; v: ``(..., d_v)``.
        eta: ``η_t >= 0``, float or tensor broadcastable to the batch shape.
        p: ``p >= 1``.

    Returns:
        ``W_t``, ``(..., d_v, d_k)``.
    """
    return linear_bias_step(W, k, v, eta, LpBias(p=p))


@implements("miras", 14)
def huber_coordinate_step(
    W: Tensor, k: Tensor, v: Tensor, eta: float | Tensor, delta: float | Tensor
) -> Tensor:
    r"""Coordinate-wise Huber step of a matrix memory (MIRAS v1, Eq. 14).

    .. math::
        W_t = W_{t-1} - \eta_t\Big[\big((Wk_t - v_t)k_t^{\top}\big)\odot\mathbb{I}(|Wk_t - v_t| \le
        \delta_t)\mathbf{1}^{\top} + \big(\delta_t\,\mathrm{Sign}(Wk_t - v_t)k_t^{\top}\big)\odot
        \mathbb{I}(|Wk_t - v_t| > \delta_t)\mathbf{1}^{\top}\Big] \qquad (14)

    Each row of the memory takes a delta-rule step if its residual coordinate is within ``δ`` and a
    ``δ``-sized sign step otherwise. ``W`` in the residual is ``W_{t-1}``; the printed second term's
    ``k^⊤`` is ``k_t^⊤`` (A1; docs/errata.md, MIRAS Eq. 14).

    Args:
        W: ``(..., d_v, d_k)``; k: ``(..., d_k)``; v: ``(..., d_v)``.
        eta: ``η_t >= 0``, float or tensor broadcastable to the batch shape.
        delta: ``δ_t > 0``, float or tensor broadcastable to ``(..., d_v)`` (``(..., 1)`` or per row).

    Returns:
        ``W_t``, ``(..., d_v, d_k)``.
    """
    return linear_bias_step(W, k, v, eta, HuberBias(mode="coordinate"), delta=delta)


@implements("miras", 15)
def huber_norm_step(W: Tensor, k: Tensor, v: Tensor, eta: float | Tensor, delta: float | Tensor) -> Tensor:
    r"""Norm-based Huber step of a matrix memory (MIRAS v1, Eq. 15).

    .. math::
        W_t = W_{t-1} - \eta_t\begin{cases} (W_{t-1}k_t - v_t)k_t^{\top} & \text{if }
        \|W_{t-1}k_t - v_t\|_2 \le \delta_t \\ \delta_t\,\dfrac{W_{t-1}k_t - v_t}{\|W_{t-1}k_t - v_t\|_2}
        k_t^{\top} & \text{otherwise} \end{cases} \qquad (15)

    Gradient descent on ``H(‖W k - v‖)``: a delta-rule step whose residual is clipped to length ``δ``.

    Args:
        W: ``(..., d_v, d_k)``; k: ``(..., d_k)``; v: ``(..., d_v)``.
        eta: ``η_t >= 0``, float or tensor broadcastable to the batch shape.
        delta: ``δ_t > 0``, float or tensor ``(..., 1)``.

    Returns:
        ``W_t``, ``(..., d_v, d_k)``.
    """
    return linear_bias_step(W, k, v, eta, HuberBias(mode="norm"), delta=delta)


@implements("miras", 16)
def yaad_bias_step(W: Tensor, k: Tensor, v: Tensor, eta: float | Tensor, delta: float | Tensor) -> Tensor:
    r"""Yaad's "smooth mixture" step, ℓ₂ or ℓ₁ per token (MIRAS v1, Eq. 16).

    .. math::
        W_t = W_{t-1} - \begin{cases} \eta_t\,\nabla\ell_2(W_{t-1}; k_t, v_t) & \text{if }
        \|\mathcal{M}(k_t) - v_t\| \le \delta_t \\ \eta_t\,\delta_t\,\nabla\ell_1(W_{t-1}; k_t, v_t) &
        \text{otherwise} \end{cases} \qquad (16)

    With ``ℓ₂ = ½‖r‖²`` and ``ℓ₁ = ‖r‖₁/√d_v`` (our constants; docs/errata.md, MIRAS Eq. 16) the two
    gradients are ``r k^⊤`` and ``Sign(r) k^⊤/√d_v``, so the outlier step is never longer than the ℓ₂ step;
    ``δ_t`` is one scalar per token (A8).

    Args:
        W: ``(..., d_v, d_k)``; k: ``(..., d_k)``; v: ``(..., d_v)``.
        eta: ``η_t >= 0``, float or tensor broadcastable to the batch shape.
        delta: ``δ_t > 0``, float or tensor ``(..., 1)``.

    Returns:
        ``W_t``, ``(..., d_v, d_k)``.
    """
    return linear_bias_step(W, k, v, eta, YaadBias(), delta=delta)


@implements("miras", 25)
def moneta_gradient(W: Tensor, k: Tensor, v: Tensor, bias: LpBias) -> Tensor:
    r"""Moneta's inner gradient for a matrix memory, without the step size (MIRAS v1, Eq. 25).

    .. math::
        \nabla\ell(W_{t-1}; k_t, v_t) = p\,\eta_t\big(\mathrm{Sign}(Wk_t - v_t)\odot
        |Wk_t - v_t|^{p-1}\big)k_t^{\top} \qquad (25,\ \text{as printed})

    The printed right-hand side has ``η_t`` inside the "gradient", and Eq. 24 multiplies by ``η_t``
    again; we return the gradient itself, ``p (Sign(r) ⊙ |r|^{p-1}) k^⊤``, and the recurrence applies
    ``η_t`` once (A4; docs/errata.md, MIRAS Eq. 25). With ``bias.smooth`` the surrogates of Remark 5 are
    used (``tanh(α r)`` and ``sqrt(r² + ε)``).

    Args:
        W: ``W_{t-1}``, ``(..., d_v, d_k)``; k: ``(..., d_k)``; v: ``(..., d_v)``.
        bias: the :class:`LpBias` (``p``, ``smooth``, ``eps``, ``sharpness``).

    Returns:
        ``(..., d_v, d_k)``.
    """
    if not isinstance(bias, LpBias):
        raise TypeError(f"bias must be an LpBias, got {type(bias).__name__}")
    return linear_bias_grad(W, k, v, bias)


@implements("miras", 26)
def yaad_step(
    W: Tensor, k: Tensor, v: Tensor, eta: float | Tensor, alpha: float | Tensor, delta: float | Tensor
) -> Tensor:
    r"""One step of the Yaad recurrence, linear memory (MIRAS v1, Eq. 26).

    .. math::
        W_t = \alpha_t W_{t-1} - \begin{cases} \eta_t\,\nabla\ell_2(W_{t-1}; k_t, v_t) & \text{if }
        \|\mathcal{M}(k_t) - v_t\| \le \delta_t \\ \eta_t\,\delta_t\,\nabla\ell_1(W_{t-1}; k_t, v_t) &
        \text{otherwise} \end{cases} \qquad (26)

    Decay the memory by the retention gate ``α_t``, then write with Yaad's switch (Eq. 16) evaluated at the
    *undecayed* ``W_{t-1}``: ``α_t = 0`` erases the old memory but the write still measures its surprise.
    ``α_t`` is read as its own learned gate in ``[0, 1]`` (A6); here one scalar per batch element. The
    constants are :class:`YaadBias`'s: ``ℓ₂ = ½‖r‖²``, ``ℓ₁ = ‖r‖₁/√d_v``.

    Args:
        W: ``W_{t-1}``, ``(..., d_v, d_k)``; k: ``(..., d_k)``; v: ``(..., d_v)``.
        eta: ``η_t >= 0``, float or tensor broadcastable to the batch shape.
        alpha: ``α_t ∈ [0, 1]``, float or tensor broadcastable to the batch shape.
        delta: ``δ_t > 0``, float or tensor ``(..., 1)``.

    Returns:
        ``W_t``, ``(..., d_v, d_k)``.
    """
    _check_linear_memory(W, k, v)
    alpha_t = _check_gate("alpha", alpha, W, upper=1.0)
    eta_t = _check_gate("eta", eta, W, upper=None)
    write = linear_bias_grad(W, k, v, YaadBias(), delta=delta)
    return alpha_t[..., None, None] * W - eta_t[..., None, None] * write


__all__ = [
    "AttentionalBias",
    "DotProductBias",
    "HuberBias",
    "L2Bias",
    "LpBias",
    "ValueShiftBias",
    "YaadBias",
    "huber",
    "huber_coordinate_step",
    "huber_norm_step",
    "linear_bias_grad",
    "linear_bias_step",
    "lp_step",
    "moneta_gradient",
    "yaad_bias_step",
    "yaad_step",
]
