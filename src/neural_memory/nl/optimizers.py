r"""Optimizers as associative memories of gradients (NL v1, §4.1–4.5, §7.2, Appendices B–C).

Each optimizer is a ``torch.optim.Optimizer`` (param groups, ``state_dict``/``load_state_dict``,
closures) whose update is the solution of an inner objective of :mod:`neural_memory.nl.associative_memory`:

* :class:`MomentumGD` — momentum, a dot-product memory of gradients (Eq. 10–11, 33); the generalised and
  preconditioned forms as functions (Eq. 35, 37, 38–39, 47);
* :func:`newton_schulz` and :class:`Muon` — Muon's orthogonalised momentum (Eq. 42), Newton–Schulz as
  gradient descent on the orthogonality objective (Eq. 43–44);
* :class:`ElementwiseMomentum` and :class:`MatrixMomentum` — Appendix B's optimal momenta: GD with
  momentum, Adam and AdaGrad as minimisers of Eq. 101 / 106 (Eq. 102–111);
* :class:`M3` — Multi-scale Momentum Muon, Algorithm 1 and Eq. 75;
* §4.4's momentum variants — values (Eq. 46), :class:`DeltaMomentum` (Eq. 48–49), :class:`DeepMomentumGD`
  (Eq. 50), :class:`FeatureMapMomentum` (Eq. 51), :class:`NonlinearOutputMomentum` (Eq. 52);
* :class:`DeltaGradientDescent` — the exact proximal step on the L2 objective (Eq. 56–57) with
  Appendix C's derivation (Eq. 114–121) as functions.

Paper defects and the decisions taken are in ``docs/errata.md`` (NL section). Weights are
``(d_out, d_in)`` matrices, inputs ``x`` are ``(d_in,)`` and the layer computes ``y = W x``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from neural_memory.common.validation import check_int
from neural_memory.nl.associative_memory import (
    DotProductObjective,
    InnerObjective,
    optimal_elementwise_momentum,
)
from neural_memory.registry import implements

Params = Iterable[Tensor] | Iterable[dict[str, Any]]


# --------------------------------------------------------------------------------------------------
# Hyper-parameter checks: a ValueError naming the argument and its range
# --------------------------------------------------------------------------------------------------


def _is_real(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def _check_nonneg(name: str, value: float) -> float:
    if not _is_real(value) or value < 0:
        raise ValueError(f"{name} must be a finite float >= 0, got {value!r}")
    return float(value)


def _check_positive(name: str, value: float) -> float:
    if not _is_real(value) or value <= 0:
        raise ValueError(f"{name} must be a finite float > 0, got {value!r}")
    return float(value)


def _check_unit(name: str, value: float, *, one: bool = False) -> float:
    """``value`` in [0, 1), or in [0, 1] with ``one=True``."""
    if not _is_real(value) or value < 0 or value > 1 or (value == 1 and not one):
        raise ValueError(f"{name} must be in [0, {'1]' if one else '1)'}, got {value!r}")
    return float(value)


def _check_weight(name: str, value: float) -> float:
    if not _is_real(value) or not 0 < value <= 1:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return float(value)


def _check_coefficients(coefficients: tuple[float, float, float]) -> tuple[float, float, float]:
    if len(coefficients) != 3 or not all(_is_real(c) for c in coefficients):
        raise ValueError(f"ns_coefficients must be three finite floats (a, b, c), got {coefficients!r}")
    return tuple(float(c) for c in coefficients)  # type: ignore[return-value]


def _closure_loss(closure: Callable[[], Tensor] | None) -> Tensor | None:
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def _grads(optimizer: Optimizer, group: dict[str, Any]) -> Iterable[tuple[Tensor, Tensor, dict]]:
    """(param, grad, state) for the group's parameters that have a dense gradient."""
    for p in group["params"]:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            raise RuntimeError(f"{type(optimizer).__name__} does not support sparse gradients")
        yield p, p.grad, optimizer.state[p]


# --------------------------------------------------------------------------------------------------
# Momentum: Eq. 10–13, 33, 35, 37; preconditioning: Eq. 38–39, 47
# --------------------------------------------------------------------------------------------------


@implements("nl", 10, 11, 33)
class MomentumGD(Optimizer):
    r"""Gradient descent with momentum, a memory of past gradients (NL v1, Eq. 10–11, 33).

    .. math::
        W_{t+1} = W_t - \mathbf{m}_{t+1}, \qquad
        \mathbf{m}_{t+1} = \mathbf{m}_t + \eta_{t+1}\nabla_W\mathcal{L}(W_t; \mathbf{x}_{t+1})
        \qquad (10, 11)

        W_{\ell_{t+1}} = W_{\ell_t} + \mathbf{m}_{\ell_{t+1}}, \qquad
        \mathbf{m}_{\ell_{t+1}} = \alpha_{\ell,t+1}\mathbf{m}_{\ell_t}
            - \eta_{\ell,t+1}\nabla_{W_{\ell_t}}\mathcal{L}(W_{\ell_t}; \mathbf{x}_{t+1}) \qquad (33)

    The momentum is a decayed sum of past gradients and the weight moves by it. We keep Eq. 33's sign
    (``m`` holds negative gradients); Eq. 10–11 are ``alpha = 1`` with :math:`\mathbf m_{(11)} = -\mathbf m`.
    Equal to ``torch.optim.SGD(momentum=alpha, dampening=0)`` with the buffer :math:`b = -\mathbf m/\eta`.

    Args:
        params: parameters or param groups.
        lr: η >= 0. The paper gives no value; 1e-3 as ``torch.optim.SGD``.
        alpha: momentum decay α in [0, 1] (1 is Eq. 11's undecayed sum); 0.9, the value of §4.3's example.

    State per parameter: ``momentum`` (m), shaped like the parameter.
    """

    def __init__(self, params: Params, lr: float = 1e-3, alpha: float = 0.9) -> None:
        defaults = {"lr": _check_nonneg("lr", lr), "alpha": _check_unit("alpha", alpha, one=True)}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = _closure_loss(closure)
        for group in self.param_groups:
            for p, grad, state in _grads(self, group):
                if "momentum" not in state:
                    state["momentum"] = torch.zeros_like(p)
                m = state["momentum"]
                m.mul_(group["alpha"]).sub_(grad, alpha=group["lr"])
                p.add_(m)
        return loss


@implements("nl", 35, 37)
def generalized_momentum_step(
    weight: Tensor,
    momentum: Tensor,
    objective: InnerObjective,
    keys: Tensor,
    values: Tensor,
    lr: float,
    alpha: float = 1.0,
) -> tuple[Tensor, Tensor]:
    r"""Momentum as any associative memory of gradients (NL v1, Eq. 35, 37).

    .. math::
        W_{\ell_{t+1}} = W_{\ell_t} + \mathbf{m}_{\ell_{t+1}} \qquad (35)

        \min_{\mathbf m}\ \tilde{\mathcal{L}}(\mathbf{m};\ \hat{\mathbf{x}}_{\ell-1}, -\boldsymbol\delta_\ell)
            \qquad (37)

    The momentum takes one decayed gradient step on its own objective with the layer input as key, then
    the weight moves by it: :math:`\mathbf m \leftarrow \alpha\mathbf m - \eta\nabla_{\mathbf m}
    \tilde{\mathcal L}`. With :class:`~neural_memory.nl.associative_memory.DotProductObjective` and
    values :math:`\boldsymbol\delta` (the paper's value :math:`-\boldsymbol\delta` under the Hebbian sign
    of Eq. 13) this is Eq. 33; a regression objective gives a Delta-rule momentum.

    Args:
        weight: W, ``(d_out, d_in)``.
        momentum: m, ``(d_out, d_in)``.
        objective: the momentum's inner objective.
        keys: layer inputs x̂, ``(n, d_in)``; values: ``(n, d_out)``, as the objective expects.
        lr: η >= 0; alpha: decay in [0, 1].

    Returns:
        ``(W_{t+1}, m_{t+1})``.
    """
    alpha, lr = _check_unit("alpha", alpha, one=True), _check_nonneg("lr", lr)
    new_momentum = alpha * momentum - lr * objective.grad(momentum, keys, values)
    return weight + new_momentum, new_momentum


def _apply_preconditioner(
    precondition: Tensor | Callable[[Tensor], Tensor], grad: Tensor, solve: bool
) -> Tensor:
    if callable(precondition):
        return precondition(grad)
    if precondition.dim() != 2 or precondition.shape != (grad.shape[0], grad.shape[0]):
        raise ValueError(f"a matrix preconditioner must be (d_out, d_out) = {(grad.shape[0],) * 2}")
    return torch.linalg.solve(precondition, grad) if solve else precondition @ grad


@implements("nl", 38, 39)
def preconditioned_gd_step(
    weight: Tensor, grad: Tensor, precondition: Tensor | Callable[[Tensor], Tensor], lr: float
) -> Tensor:
    r"""Preconditioned gradient descent (NL v1, Eq. 38–39).

    .. math::
        W_{\ell_{t+1}} = W_{\ell_t} - \eta_{t+1} P_{t+1}^{-1} g_{\ell_{t+1}} \qquad (38)

        W_{\ell_{t+1}} = W_{\ell_t} - \eta_{t+1} P_{t+1}^{-1}(g_{\ell_{t+1}}) \qquad (39)

    Move against the gradient expressed in the preconditioner's coordinates: a matrix ``P`` is inverted
    (Eq. 38); a callable is the map :math:`g \mapsto P^{-1}(g)` itself (Eq. 39; Newton–Schulz gives Muon
    without momentum, ``g / (sqrt(v) + eps)`` RMSProp).

    Args:
        weight: W, ``(d_out, d_in)``; grad: g, same shape.
        precondition: ``P`` ``(d_out, d_out)``, positive definite, or a callable ``g -> P⁻¹(g)``.
        lr: η >= 0.

    Returns:
        ``W_{t+1}``, ``(d_out, d_in)``.
    """
    return weight - _check_nonneg("lr", lr) * _apply_preconditioner(precondition, grad, solve=True)


@implements("nl", 47)
def preconditioned_momentum_step(
    weight: Tensor,
    momentum: Tensor,
    grad: Tensor,
    precondition: Tensor | Callable[[Tensor], Tensor],
    lr: float,
    alpha: float = 1.0,
) -> tuple[Tensor, Tensor]:
    r"""Preconditioned momentum, momentum with values (NL v1, Eq. 47).

    .. math::
        W_{i+1} = W_i + \mathbf{m}_{i+1}, \qquad
        \mathbf{m}_{i+1} = \alpha_{i+1}\mathbf{m}_i - \eta_i\mathbf{P}_i\nabla\mathcal{L}(W_i; \mathbf{x}_i)
        \qquad (47)

    One GD step on the momentum's objective :math:`\langle\mathbf m\nabla\mathcal L^\top, \mathbf P\rangle`
    (Eq. 46) with the forget gate α the prose adds (α = 1 is the printed display; docs/errata.md,
    NL Eq. 47).

    Args:
        weight, momentum, grad: ``(d_out, d_in)``.
        precondition: ``P`` ``(d_out, d_out)`` (multiplied, not inverted) or a callable ``g -> P g``.
        lr: η >= 0; alpha: forget gate in [0, 1].

    Returns:
        ``(W_{i+1}, m_{i+1})``.
    """
    alpha, lr = _check_unit("alpha", alpha, one=True), _check_nonneg("lr", lr)
    new_momentum = alpha * momentum - lr * _apply_preconditioner(precondition, grad, solve=False)
    return weight + new_momentum, new_momentum


# --------------------------------------------------------------------------------------------------
# Newton–Schulz and Muon: Eq. 42–44
# --------------------------------------------------------------------------------------------------

NS_CUBIC: tuple[float, float, float] = (1.5, -0.5, 0.0)  # Eq. 44 with ζ = 1/4
NS_QUINTIC: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)  # Muon's, as in torch.optim.Muon


@implements("nl", 44)
def newton_schulz_step(x: Tensor, coefficients: tuple[float, float, float] = NS_CUBIC) -> Tensor:
    r"""One Newton–Schulz step: one GD step on the orthogonality objective (NL v1, Eq. 44).

    .. math::
        O_{i+1} = O_i - \zeta_{i+1}\nabla_{O_i}\tilde{\mathcal{L}}(O_i; g_t)
            = O_i - \zeta_{i+1}\big(O_i - g_t + 2O_i(O_i^\top O_i - I)\big) \qquad (44)

    From the anchor (:math:`O_i = g_t`) with :math:`\zeta = 1/4` the step is the cubic
    :math:`\tfrac32 X - \tfrac12 XX^\top X`. We evaluate the odd polynomial
    :math:`aX + b(XX^\top)X + c(XX^\top)^2X`: ``NS_CUBIC`` is Eq. 44, ``NS_QUINTIC`` the coefficients
    Muon uses in practice (same operation order as ``torch.optim.Muon``). Iterating re-anchors at the
    current iterate (docs/errata.md, NL Eq. 43–44).

    Args:
        x: ``X``, ``(m, n)``.
        coefficients: ``(a, b, c)``.

    Returns:
        The next iterate, ``(m, n)``.
    """
    a, b, c = _check_coefficients(coefficients)
    gram = x @ x.T
    update = b * gram if c == 0 else torch.addmm(gram, gram, gram, beta=b, alpha=c)
    return torch.addmm(x, update, x, beta=a)


def newton_schulz(
    g: Tensor,
    steps: int = 5,
    coefficients: tuple[float, float, float] = NS_QUINTIC,
    eps: float = 1e-7,
    dtype: torch.dtype | None = None,
) -> Tensor:
    r"""``steps`` Newton–Schulz steps from :math:`g/\|g\|_F` (the :math:`\mathrm{NewtonSchulz}_k` of Eq. 42).

    Scaling by the Frobenius norm puts every singular value in (0, 1]; each step maps a singular value
    σ to :math:`a\sigma + b\sigma^3 + c\sigma^5` and keeps the singular vectors, so the cubic converges
    to the polar factor :math:`UV^\top` and Muon's quintic to :math:`US'V^\top` with :math:`S'` near 1.
    A tall matrix is transposed first, as ``torch.optim.Muon`` does.

    Args:
        g: ``(m, n)``.
        steps: number of steps >= 1.
        coefficients: ``(a, b, c)``, see :func:`newton_schulz_step`.
        eps: floor of the norm, > 0.
        dtype: compute dtype (``torch.bfloat16`` as ``torch.optim.Muon``); ``None`` keeps ``g``'s.

    Returns:
        ``(m, n)``, in ``dtype``.
    """
    check_int("ns_steps", steps)
    if g.dim() != 2:
        raise ValueError(f"Newton-Schulz needs a matrix (m, n), got shape {tuple(g.shape)}")
    x = g.to(dtype=dtype or g.dtype, copy=True)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    x.div_(x.norm().clamp(min=_check_positive("eps", eps)))
    for _ in range(steps):
        x = newton_schulz_step(x, coefficients)
    return x.T if tall else x


def _muon_lr_ratio(adjust_lr_fn: str | None, shape: torch.Size) -> float:
    """torch.optim.Muon's shape scaling: ``original`` √max(1, A/B), ``match_rms_adamw`` 0.2 √max(A, B)."""
    rows, cols = shape[:2]
    if adjust_lr_fn in (None, "original"):
        return math.sqrt(max(1.0, rows / cols))
    return 0.2 * math.sqrt(max(rows, cols))


@implements("nl", 42)
class Muon(Optimizer):
    r"""Muon: momentum orthogonalised by Newton–Schulz (NL v1, Eq. 42).

    .. math::
        W_{\ell_{t+1}} = W_{\ell_t} + \mathrm{NewtonSchulz}_k(\mathbf{m}_{\ell_{t+1}}), \qquad
        \mathbf{m}_{\ell_{t+1}} = \alpha_{\ell,t+1}\mathbf{m}_{\ell_t}
            - \eta_{\ell,t+1}\nabla_{W_{\ell_t}}\mathcal{L}(W_{\ell_t}; \mathbf{x}_{t+1}) \qquad (42)

    Preconditioned momentum whose preconditioner maps the momentum to the nearest (semi-)orthogonal
    matrix. Newton–Schulz normalises its input, so η of Eq. 42 only sets the sign: Eq. 42 is
    ``lr = 1, nesterov=False, weight_decay=0`` here. Defaults and options are those of
    ``torch.optim.Muon`` (EMA buffer ``b ← μ b + (1 − μ) g``, Nesterov, decoupled weight decay, the
    quintic in bfloat16, ``adjust_lr_fn``), so that the two agree step for step; ``ns_dtype=None``
    computes Newton–Schulz in the parameter's dtype (docs/errata.md, NL Eq. 42).

    Args:
        params: 2-D parameters only (``ValueError`` otherwise; use :class:`M3`, which falls back to AdamW).
        lr: >= 0. weight_decay: decoupled, >= 0. momentum: μ in [0, 1). nesterov: use ``g + μ(b − g)``.
        ns_coefficients: ``(a, b, c)``. eps: norm floor > 0. ns_steps: >= 1.
        adjust_lr_fn: ``None``/``"original"`` or ``"match_rms_adamw"``. ns_dtype: compute dtype or None.

    State per parameter: ``momentum_buffer``.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = NS_QUINTIC,
        eps: float = 1e-7,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = None,
        ns_dtype: torch.dtype | None = torch.bfloat16,
    ) -> None:
        if adjust_lr_fn not in (None, "original", "match_rms_adamw"):
            raise ValueError(
                f"adjust_lr_fn must be None, 'original' or 'match_rms_adamw', got {adjust_lr_fn!r}"
            )
        defaults = {
            "lr": _check_nonneg("lr", lr),
            "weight_decay": _check_nonneg("weight_decay", weight_decay),
            "momentum": _check_unit("momentum", momentum),
            "nesterov": bool(nesterov),
            "ns_coefficients": _check_coefficients(ns_coefficients),
            "eps": _check_positive("eps", eps),
            "ns_steps": check_int("ns_steps", ns_steps),
            "adjust_lr_fn": adjust_lr_fn,
            "ns_dtype": ns_dtype,
        }
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() != 2:
                    raise ValueError(f"Muon needs 2-D parameters, got shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = _closure_loss(closure)
        for group in self.param_groups:
            mu = group["momentum"]
            for p, grad, state in _grads(self, group):
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(grad)
                buf = state["momentum_buffer"]
                buf.lerp_(grad, 1 - mu)
                update = grad.lerp(buf, mu) if group["nesterov"] else buf
                ortho = newton_schulz(
                    update, group["ns_steps"], group["ns_coefficients"], group["eps"], group["ns_dtype"]
                )
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(ortho, alpha=-group["lr"] * _muon_lr_ratio(group["adjust_lr_fn"], p.shape))
        return loss


# --------------------------------------------------------------------------------------------------
# Appendix B: element-wise and matrix optimal momentum, Eq. 102–111
# --------------------------------------------------------------------------------------------------


def _check_decays(decay1: float, decay2: float, bias_correction: bool) -> tuple[float, float]:
    d1, d2 = _check_unit("decay1", decay1, one=True), _check_unit("decay2", decay2, one=True)
    if bias_correction and (d1 == 1 or d2 == 1):
        raise ValueError("bias_correction needs decay1 and decay2 in [0, 1) (an EMA, not a sum)")
    return d1, d2


@implements("nl", 102, 103, 104, 105)
class ElementwiseMomentum(Optimizer):
    r"""Appendix B's optimal element-wise momentum: GD with momentum, Adam, AdaGrad (NL v1, Eq. 102–105).

    .. math::
        W_{\ell_{i+1}} = W_{\ell_i}
            - \eta_i\big[(\boldsymbol H_{\ell,i} + \lambda_\ell\boldsymbol I)^{-1}\big]\odot
            \tilde{\boldsymbol M}_{\ell,i+1}\odot P_{\ell_t} \qquad (103)

        P = \boldsymbol H/\beta_2:\quad W_{i+1} = W_i - \frac{\eta_t}{\beta_2}\tilde{\boldsymbol M}_{i+1}
            \qquad (104)

        P = \boldsymbol H^{1/2}/\sqrt{\beta_2}:\quad W_{i+1} \approx W_i - \frac{\eta_t}{\sqrt{\beta_2}}
            \frac{\tilde{\boldsymbol M}_i}{\boldsymbol H_i^{1/2} + \varepsilon} \qquad (105)

    The momentum that best maps every past gradient to the property ``P`` (Eq. 101), with the
    accumulators of Eq. 102, :math:`\tilde M \leftarrow d_1\tilde M + \beta_1 g` and
    :math:`H \leftarrow d_2 H + \beta_2 g^{\odot 2}` (``d = 1``: the paper's sums; both include the
    current gradient). ``preconditioner="momentum"`` is Eq. 104 (``lam > 0`` keeps the general Eq. 103),
    ``"adam"`` Eq. 105. The paper's Eq. 104 prints :math:`\eta\beta_2`; the algebra gives
    :math:`\eta/\beta_2` (docs/errata.md). Reductions, exact step for step: ``"momentum"``,
    ``beta1 = 1``, ``decay1 = μ`` is ``SGD(lr/beta2, momentum=μ, dampening=0)``; ``"adam"`` with
    ``decay1 = 0``, ``beta1 = beta2 = decay2 = 1`` is ``Adagrad(lr, eps)``; ``"adam"`` with
    ``beta = 1 − decay`` and ``bias_correction`` is ``Adam(lr/√beta2, (decay1, decay2), eps)``.

    Args:
        params: parameters or groups. lr: η >= 0 (1e-3; the paper gives none).
        beta1, beta2: weights of the new gradient in (0, 1]; 1, where Eq. 102 is the exact minimiser.
        preconditioner: ``"adam"`` (Eq. 105) or ``"momentum"`` (Eq. 104).
        eps: ε > 0 of Eq. 105. lam: λ >= 0, ``"momentum"`` only.
        decay1, decay2: accumulator decays in [0, 1] (1: the paper's sums).
        bias_correction: divide by ``1 − decay^t`` (needs decays < 1), as Adam.

    State per parameter: ``step``, ``m_tilde`` (M̃), ``h`` (H).
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        beta1: float = 1.0,
        beta2: float = 1.0,
        preconditioner: str = "adam",
        eps: float = 1e-8,
        lam: float = 0.0,
        decay1: float = 1.0,
        decay2: float = 1.0,
        bias_correction: bool = False,
    ) -> None:
        if preconditioner not in ("adam", "momentum"):
            raise ValueError(f"preconditioner must be 'adam' or 'momentum', got {preconditioner!r}")
        if preconditioner == "adam" and lam != 0:
            raise ValueError("lam must be 0 with preconditioner='adam' (Eq. 105's eps replaces it)")
        d1, d2 = _check_decays(decay1, decay2, bias_correction)
        defaults = {
            "lr": _check_nonneg("lr", lr),
            "beta1": _check_weight("beta1", beta1),
            "beta2": _check_weight("beta2", beta2),
            "preconditioner": preconditioner,
            "eps": _check_positive("eps", eps),
            "lam": _check_nonneg("lam", lam),
            "decay1": d1,
            "decay2": d2,
            "bias_correction": bool(bias_correction),
        }
        super().__init__(params, defaults)

    @staticmethod
    def _direction(group: dict[str, Any], m_tilde: Tensor, h: Tensor) -> Tensor:
        if group["preconditioner"] == "adam":
            return m_tilde / (math.sqrt(group["beta2"]) * (h.sqrt() + group["eps"]))
        if group["lam"] == 0:
            return m_tilde / group["beta2"]  # Eq. 104: H⁻¹ ⊙ M̃ ⊙ H/β₂, the H cancels exactly
        return optimal_elementwise_momentum(h / group["beta2"], m_tilde, h, group["lam"])

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = _closure_loss(closure)
        for group in self.param_groups:
            for p, grad, state in _grads(self, group):
                if not state:
                    state.update(step=0, m_tilde=torch.zeros_like(p), h=torch.zeros_like(p))
                state["step"] += 1
                state["m_tilde"].mul_(group["decay1"]).add_(grad, alpha=group["beta1"])
                state["h"].mul_(group["decay2"]).addcmul_(grad, grad, value=group["beta2"])
                m_tilde, h = state["m_tilde"], state["h"]
                if group["bias_correction"]:
                    m_tilde = m_tilde / (1 - group["decay1"] ** state["step"])
                    h = h / (1 - group["decay2"] ** state["step"])
                p.sub_(self._direction(group, m_tilde, h), alpha=group["lr"])
        return loss


def _as_columns(t: Tensor) -> Tensor:
    """A parameter as a ``(d, q)`` matrix: rows stay rows, vectors become one column."""
    return t.reshape(t.shape[0] if t.dim() else 1, -1)


@implements("nl", 109, 110, 111)
class MatrixMomentum(Optimizer):
    r"""Appendix B's matrix momentum: full-matrix AdaGrad with momentum (NL v1, Eq. 109–111).

    .. math::
        \tilde M_{\ell,i+1} = \tilde M_{\ell,i} + \beta_1 g_{\ell_{i+1}}^\top \qquad (109)

        H_{\ell,i+1} = H_{\ell,i} + \beta_2 g_{\ell_{i+1}} g_{\ell_{i+1}}^\top \qquad (110)

        W_{\ell_{i+1}} = W_{\ell_i} - \eta_t\big[(H_{\ell,i} + \lambda_\ell I)^{-1}\big]
            \underbrace{P_{\ell_t}}_{H^{1/2}/\sqrt{\beta_2}}\tilde M_{\ell,i}
            \;\approx\; W_{\ell_i} - \frac{\eta_t}{\sqrt{\beta_2}} H_{\ell,i}^{-1/2}\tilde M_{\ell,i}
            \qquad (111)

    Each parameter is a ``(d, q)`` matrix of columns (a vector is one column, so it is full-matrix
    AdaGrad over all its entries); :math:`H` is the ``(d, d)`` sum of outer products of the gradients and
    the step is :math:`\eta(H^{1/2} + \varepsilon I)^{-1}\tilde M/\sqrt{\beta_2}`, the matrix form of
    Eq. 105's ε. We accumulate :math:`\tilde M` parameter-shaped (the transpose of Eq. 109's
    :math:`g^\top`) and drop the stray "+" of the printed Eq. 111 (docs/errata.md, NL Eq. 106–111). With
    ``decay1 = 0`` and a diagonal ``H`` it is ``torch.optim.Adagrad``.

    Args:
        params: parameters or groups. lr: η >= 0 (1e-3). beta1, beta2: weights in (0, 1] (1).
        eps: ε > 0 (1e-8). decay1, decay2: accumulator decays in [0, 1] (1: the paper's sums).

    State per parameter: ``step``, ``m_tilde`` ``(d, q)``, ``h`` ``(d, d)``.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        beta1: float = 1.0,
        beta2: float = 1.0,
        eps: float = 1e-8,
        decay1: float = 1.0,
        decay2: float = 1.0,
    ) -> None:
        d1, d2 = _check_decays(decay1, decay2, False)
        defaults = {
            "lr": _check_nonneg("lr", lr),
            "beta1": _check_weight("beta1", beta1),
            "beta2": _check_weight("beta2", beta2),
            "eps": _check_positive("eps", eps),
            "decay1": d1,
            "decay2": d2,
        }
        super().__init__(params, defaults)

    @staticmethod
    def _inverse_root_times(h: Tensor, m_tilde: Tensor, eps: float) -> Tensor:
        """``(H^{1/2} + ε I)⁻¹ M̃`` through the eigendecomposition of the symmetric PSD ``H``."""
        evals, evecs = torch.linalg.eigh(h)
        scale = 1 / (evals.clamp(min=0).sqrt() + eps)
        return evecs @ (scale[:, None] * (evecs.T @ m_tilde))

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = _closure_loss(closure)
        for group in self.param_groups:
            for p, grad, state in _grads(self, group):
                g = _as_columns(grad)
                if not state:
                    d = g.shape[0]
                    state.update(step=0, m_tilde=torch.zeros_like(g), h=g.new_zeros(d, d))
                state["step"] += 1
                state["m_tilde"].mul_(group["decay1"]).add_(g, alpha=group["beta1"])
                state["h"].mul_(group["decay2"]).addmm_(g, g.T, alpha=group["beta2"])
                direction = self._inverse_root_times(state["h"], state["m_tilde"], group["eps"])
                p.sub_(direction.reshape(p.shape), alpha=group["lr"] / math.sqrt(group["beta2"]))
        return loss


# --------------------------------------------------------------------------------------------------
# M3: Multi-scale Momentum Muon, Algorithm 1 and Eq. 75
# --------------------------------------------------------------------------------------------------


def _adamw_fallback(p: Tensor, grad: Tensor, state: dict, group: dict[str, Any]) -> None:
    """AdamW (decoupled weight decay, bias-corrected moments) for M3's non-matrix parameters."""
    beta1, beta2 = group["adamw_betas"]
    if not state:
        state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
    state["step"] += 1
    lr, step = group["adamw_lr"], state["step"]
    p.mul_(1 - lr * group["adamw_weight_decay"])
    state["exp_avg"].lerp_(grad, 1 - beta1)
    state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    denom = (state["exp_avg_sq"].sqrt() / math.sqrt(1 - beta2**step)).add_(group["adamw_eps"])
    p.addcdiv_(state["exp_avg"], denom, value=-lr / (1 - beta1**step))


@implements("nl", 75)
class M3(Optimizer):
    r"""M3, Multi-scale Momentum Muon (NL v1, §7.2, Eq. 75 and Algorithm 1 as the catalog rebuilds it).

    .. math::
        M^{(1)}_t = M^{(1)}_{t-1} + \beta_1 g_t, \qquad
        M^{(2)}_t = M^{(2)}_t - \beta_2\begin{cases}\sum_{i=t-\hat C}^{t} g_i & t \equiv 0 \pmod{\hat C}\\
            0 & \text{otherwise}\end{cases} \qquad (75)

    Algorithm 1, per step :math:`t` (slow period :math:`f = \hat C`)::

        M1 ← d1·M1 + β1·g_t            V ← d2·V + β2·g_t²          O1 ← NewtonSchulz_T(M1)
        Θ  ← Θ − η (O1 + α·O2) / (√V + ε)
        if t ≡ 0 (mod f):  M2 ← d3·M2 + β3·Σ(g since the last slow update);  O2 ← NewtonSchulz_T(M2)

    A fast momentum (every step) and a slow one (every ``slow_period`` steps, held fixed in between),
    both orthogonalised, combined and divided element-wise by the root of the accumulated squared
    gradients. Decisions (docs/errata.md, NL Eq. 75 and Algorithm 1): Eq. 75's second line is read as
    :math:`M^{(2)} \leftarrow M^{(2)} + \beta_3\sum_{i=t-\hat C+1}^{t} g_i` (plus, not minus; β₃ as in
    Algorithm 1; the :math:`\hat C` gradients since the last update, not :math:`\hat C + 1`); the
    denominator is :math:`\sqrt{V} + \varepsilon` (Adam's, App. B Eq. 105); the decays ``d`` default to
    1, the printed sums (``< 1`` gives EMAs); Newton–Schulz is Muon's quintic with ``ns_steps = 5``.
    Measured (errata): the printed sums do not settle on a convex quadratic (``decays < 1`` do), and
    with a tiny ``eps`` an entry whose gradient is small next to its row and column steps by about
    ``lr · O / (|g| + eps)`` — a gradient entry that stays 0 steps by ``lr · O / eps``.
    ``neural-memory train --optimizer m3`` therefore uses the EMA reading with ``eps = 0.1``
    (``neural_memory.training_optimizers.M3_TRAINING_OPTIONS``); the defaults here stay the printed sums.

    Parameters that are not matrices (biases, norms) are updated by AdamW with the ``adamw_*``
    hyper-parameters (the paper is silent; Muon's usual fallback). The paper gives no hyper-parameter
    values: the defaults are ours.

    Args:
        params: parameters or groups.
        lr: η >= 0 (1e-3).
        beta1, beta2, beta3: fast-momentum, second-moment and slow-momentum weights in [0, 1)
            (0.9, 0.999, 0.9).
        alpha: weight α of the slow momentum in [0, 1) (0.5).
        eps: ε > 0 (1e-8).
        slow_period: f >= 1 (10).
        ns_steps: T >= 1 (5). ns_coefficients: ``(a, b, c)`` (Muon's quintic). ns_eps: norm floor (1e-7).
        ns_dtype: Newton–Schulz compute dtype; ``None`` keeps the parameter's.
        orthogonalize: ``False`` replaces Newton–Schulz by the identity (App. B's sum-form Adam at α = 0).
        decays: ``(d1, d2, d3)`` in [0, 1] (1, 1, 1).
        adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay: the fallback (torch.optim.AdamW's defaults).

    State per matrix: ``step``, ``m1``, ``v``, ``m2``, ``slow_grads`` (Σ g since the last slow update),
    ``o2`` (NewtonSchulz(M2), cached for the period).
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        beta3: float = 0.9,
        alpha: float = 0.5,
        eps: float = 1e-8,
        slow_period: int = 10,
        ns_steps: int = 5,
        ns_coefficients: tuple[float, float, float] = NS_QUINTIC,
        ns_eps: float = 1e-7,
        ns_dtype: torch.dtype | None = None,
        orthogonalize: bool = True,
        decays: tuple[float, float, float] = (1.0, 1.0, 1.0),
        adamw_lr: float = 1e-3,
        adamw_betas: tuple[float, float] = (0.9, 0.999),
        adamw_eps: float = 1e-8,
        adamw_weight_decay: float = 1e-2,
    ) -> None:
        if len(decays) != 3 or len(adamw_betas) != 2:
            raise ValueError(f"decays must be 3 floats and adamw_betas 2, got {decays!r}, {adamw_betas!r}")
        defaults = {
            "lr": _check_nonneg("lr", lr),
            **{
                name: _check_unit(name, v)
                for name, v in (("beta1", beta1), ("beta2", beta2), ("beta3", beta3))
            },
            "alpha": _check_unit("alpha", alpha),
            "eps": _check_positive("eps", eps),
            "slow_period": check_int("slow_period", slow_period),
            "ns_steps": check_int("ns_steps", ns_steps),
            "ns_coefficients": _check_coefficients(ns_coefficients),
            "ns_eps": _check_positive("ns_eps", ns_eps),
            "ns_dtype": ns_dtype,
            "orthogonalize": bool(orthogonalize),
            "decays": tuple(_check_unit(f"decays[{i}]", d, one=True) for i, d in enumerate(decays)),
            "adamw_lr": _check_nonneg("adamw_lr", adamw_lr),
            "adamw_betas": tuple(_check_unit(f"adamw_betas[{i}]", b) for i, b in enumerate(adamw_betas)),
            "adamw_eps": _check_positive("adamw_eps", adamw_eps),
            "adamw_weight_decay": _check_nonneg("adamw_weight_decay", adamw_weight_decay),
        }
        super().__init__(params, defaults)

    @staticmethod
    def _orthogonal(m: Tensor, group: dict[str, Any]) -> Tensor:
        if not group["orthogonalize"]:
            return m.clone()
        ortho = newton_schulz(
            m, group["ns_steps"], group["ns_coefficients"], group["ns_eps"], group["ns_dtype"]
        )
        return ortho.to(m.dtype)

    def _matrix_step(self, p: Tensor, grad: Tensor, state: dict, group: dict[str, Any]) -> None:
        d1, d2, d3 = group["decays"]
        if not state:
            zeros = [torch.zeros_like(p) for _ in range(5)]
            state.update(step=0, m1=zeros[0], v=zeros[1], m2=zeros[2], slow_grads=zeros[3], o2=zeros[4])
        state["m1"].mul_(d1).add_(grad, alpha=group["beta1"])
        state["v"].mul_(d2).addcmul_(grad, grad, value=group["beta2"])
        state["slow_grads"].add_(grad)
        combined = self._orthogonal(state["m1"], group).add_(state["o2"], alpha=group["alpha"])
        p.addcdiv_(combined, state["v"].sqrt().add_(group["eps"]), value=-group["lr"])
        state["step"] += 1
        if state["step"] % group["slow_period"] == 0:
            state["m2"].mul_(d3).add_(state["slow_grads"], alpha=group["beta3"])
            state["slow_grads"].zero_()
            state["o2"] = self._orthogonal(state["m2"], group).clone()

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = _closure_loss(closure)
        for group in self.param_groups:
            for p, grad, state in _grads(self, group):
                if p.dim() == 2:
                    self._matrix_step(p, grad, state, group)
                else:
                    _adamw_fallback(p, grad, state, group)
        return loss


# --------------------------------------------------------------------------------------------------
# Delta Gradient Descent: Eq. 56–57; Appendix C: Eq. 114–121
# --------------------------------------------------------------------------------------------------


def _check_dgd(weight: Tensor, x: Tensor, rhs: Tensor, rhs_name: str) -> None:
    if weight.dim() != 2:
        raise ValueError(f"weight must be (d_out, d_in), got shape {tuple(weight.shape)}")
    d_out, d_in = weight.shape
    if x.shape != (d_in,):
        raise ValueError(f"x must be (d_in={d_in},), got shape {tuple(x.shape)}")
    if rhs.shape != (d_out,):
        raise ValueError(f"{rhs_name} must be (d_out={d_out},), got shape {tuple(rhs.shape)}")


def dgd_effective_lr(lr: float, x: Tensor) -> Tensor:
    r"""DGD's step :math:`\eta' = \eta/(1 + \eta\|x\|^2)`; Eq. 57's prose prints :math:`\eta/(1+\eta)`.

    The printed value is exact only for :math:`\|x\|_2 = 1` (docs/errata.md, NL Eq. 57).
    """
    lr = _check_nonneg("lr", lr)
    return lr / (1 + lr * (x * x).sum())


@implements("nl", 57)
def dgd_step(weight: Tensor, x: Tensor, lss: Tensor, lr: float) -> Tensor:
    r"""One Delta Gradient Descent step, closed form for one input (NL v1, Eq. 57).

    .. math::
        W_{t+1} = W_t(\mathbf{I} - \eta'_t\mathbf{x}_t\mathbf{x}_t^\top) - \eta'_t\nabla_{y_t}
            \mathcal{L}(W_t; \mathbf{x}_t)\otimes\mathbf{x}_t, \qquad \|\mathbf x_t\|_2 = \lambda
            \qquad (57)

    The exact minimiser of Eq. 56 (regress ``W x`` onto the self-generated target
    :math:`u = -\nabla_y\mathcal L`, stay close to ``W_t``): GD with a decay of the weight along the
    current input. We use :math:`\eta' = \eta/(1 + \eta\lambda^2)` (Sherman–Morrison), exact for every
    :math:`\lambda`; the printed :math:`\eta/(1+\eta)` is the case :math:`\lambda = 1`
    (docs/errata.md, NL Eq. 57).

    Args:
        weight: ``W_t``, ``(d_out, d_in)``.
        x: the input ``x_t``, ``(d_in,)``.
        lss: the output gradient ``∇_y L(W_t; x_t)``, ``(d_out,)``.
        lr: η >= 0.

    Returns:
        ``W_{t+1}``, ``(d_out, d_in)``.
    """
    _check_dgd(weight, x, lss, "lss")
    eta = dgd_effective_lr(lr, x)
    return weight - eta * torch.outer(weight @ x + lss, x)


class _KeyRecorder:
    """Forward hook of a tracked ``nn.Linear``: sums the Gram matrix of its inputs into the state."""

    def __init__(self, optimizer: DeltaGradientDescent, module: nn.Linear) -> None:
        self.optimizer, self.module = optimizer, module

    def __call__(self, module: nn.Linear, args: tuple[Tensor, ...], output: Tensor) -> None:
        if not torch.is_grad_enabled():
            return
        x = args[0].detach().reshape(-1, module.in_features)
        self._add(module.weight, x.T @ x, x.shape[0])
        if module.bias is not None:
            self._add(module.bias, x.new_full((1, 1), float(x.shape[0])), x.shape[0])

    def _add(self, param: Tensor, gram: Tensor, rows: int) -> None:
        state = self.optimizer.state[param]
        state["key_gram"] = state["key_gram"] + gram if "key_gram" in state else gram
        state["key_rows"] = state.get("key_rows", 0) + rows


@implements("nl", 56, 57)
class DeltaGradientDescent(Optimizer):
    r"""Delta Gradient Descent as an optimizer for linear layers (NL v1, Eq. 56–57).

    .. math::
        W_{t+1} = \arg\min_{W}\ \frac12\|W\mathbf{x}_t - \mathbf{u}_t\|_2^2
            + \frac{1}{2\eta_t}\|W - W_t\|_2^2, \qquad \mathbf u_t = -\nabla_{y_t}\mathcal L \qquad (56)

    Each step is the exact proximal step of Eq. 56 summed over the inputs the layer saw since the last
    step: :math:`W_{t+1} = (W_t - \eta G)(I + \eta\sum_j x_jx_j^\top)^{-1}` with ``G = W.grad``; with a
    single input this is Eq. 57's closed form with :math:`\eta' = \eta/(1+\eta\|x\|^2)`. Inputs are
    recorded by forward hooks: call :meth:`track` on every ``nn.Linear`` whose parameters are in a group
    with ``delta=True`` (the default); a bias is a weight column with the constant input 1. Groups with
    ``delta=False`` take the plain GD step (Eq. 54: DGD without the correction). A parameter of a
    ``delta`` group without recorded inputs raises ``ValueError`` — it is never skipped. Inputs are
    recorded while gradients are enabled, from the last :meth:`zero_grad` (or step) to the step; hooks
    are not part of ``state_dict`` (call :meth:`track` again after loading).

    ``gram="mean"`` divides the Gram matrix by the number ``N`` of recorded inputs,
    :math:`W_{t+1} = (W_t - \eta G)(I + \tfrac{\eta}{N}\sum_j x_jx_j^\top)^{-1}`: the exact argmin of
    Eq. 56 averaged over the inputs, :math:`\frac1N\sum_j\tfrac12\|Wx_j - u_j\|^2
    + \frac{1}{2\eta}\|W - W_t\|^2` with :math:`u_j = -\nabla_{y_j}\ell_j`, for a loss that is the
    *mean* of per-input losses :math:`\ell_j` (``G`` is then the mean's gradient). With the default
    ``"sum"`` and a mean loss the correction is ``N`` times stronger relative to the gradient than
    Eq. 56's (docs/errata.md, NL Eq. 56–57 in the training loop). For one input both are Eq. 57.

    Args:
        params: parameters or groups (group options ``delta``, ``gram``).
        lr: η >= 0 (1e-2; the paper gives none).
        gram: ``"sum"`` (the summed objective, for a summed loss) or ``"mean"`` (for a mean loss).
    """

    def __init__(self, params: Params, lr: float = 1e-2, gram: str = "sum") -> None:
        if gram not in ("sum", "mean"):
            raise ValueError(f"gram must be 'sum' or 'mean', got {gram!r}")
        super().__init__(params, {"lr": _check_nonneg("lr", lr), "delta": True, "gram": gram})

    def track(self, module: nn.Linear) -> torch.utils.hooks.RemovableHandle:
        """Record the inputs of ``module`` (an ``nn.Linear`` whose parameters this optimizer holds)."""
        if not isinstance(module, nn.Linear):
            raise TypeError(f"track needs an nn.Linear, got {type(module).__name__}")
        return module.register_forward_hook(_KeyRecorder(self, module))

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients and the inputs recorded so far: a step uses the inputs since then."""
        super().zero_grad(set_to_none)
        for state in self.state.values():
            state.pop("key_gram", None)
            state.pop("key_rows", None)

    @staticmethod
    def _delta_step(p: Tensor, grad: Tensor, state: dict, lr: float, mean: bool) -> None:
        if "key_gram" not in state:
            raise ValueError(
                f"DeltaGradientDescent has no recorded input for a parameter of shape {tuple(p.shape)}: "
                "call track(module) on its nn.Linear, or put it in a group with delta=False"
            )
        gram, rows = state.pop("key_gram"), state.pop("key_rows")
        if mean:  # (1/N) Σ x xᵀ: the Gram of the per-token mean objective
            gram = gram / rows
        w, g = p.view(p.shape[0], -1), grad.view(p.shape[0], -1)  # a bias is one column
        if rows == 1:  # Eq. 57 (Sherman–Morrison): W − η'(W x xᵀ + G), η' = η/(1 + η‖x‖²)
            eta = lr / (1 + lr * gram.trace())
            w.sub_(eta * (w @ gram + g))
            return
        system = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device) + lr * gram
        w.copy_(torch.linalg.solve(system, (w - lr * g).T).T)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = _closure_loss(closure)
        for group in self.param_groups:
            for p, grad, state in _grads(self, group):
                if group["delta"]:
                    self._delta_step(p, grad, state, group["lr"], group.get("gram", "sum") == "mean")
                else:
                    p.sub_(grad, alpha=group["lr"])
        return loss


@implements("nl", 114)
def dgd_first_order_residual(w_next: Tensor, weight: Tensor, x: Tensor, target: Tensor, eta: float) -> Tensor:
    r"""Left-hand side of Appendix C's first-order condition (NL v1, Eq. 114).

    .. math::
        2(W_{t+1}\mathbf x_t - \nabla_{y_t}\mathcal L(W_t, \mathbf x_t))\mathbf x_t^\top
            + 2\eta_t(W_{t+1} - W_t) = 0 \qquad (114)

    Appendix C's convention: the objective is :math:`\|Wx - \text{target}\|^2 + \eta\|W - W_t\|^2`, so η
    is the *inverse* step of Eq. 56 and the printed target is :math:`+\nabla_y\mathcal L`; Eq. 56 is
    :math:`\eta \to 1/\eta`, target :math:`u = -\nabla_y\mathcal L` (docs/errata.md, NL Eq. 114–121).

    Args:
        w_next, weight: ``(d_out, d_in)``; x: ``(d_in,)``; target: ``(d_out,)``; eta: > 0.

    Returns:
        The residual, ``(d_out, d_in)``; zero exactly at the minimiser.
    """
    _check_dgd(weight, x, target, "target")
    return 2 * torch.outer(w_next @ x - target, x) + 2 * _check_positive("eta", eta) * (w_next - weight)


@implements("nl", 115)
def dgd_normal_equations(weight: Tensor, x: Tensor, target: Tensor, eta: float) -> tuple[Tensor, Tensor]:
    r"""Appendix C's linear system for :math:`W_{t+1}` (NL v1, Eq. 115).

    .. math::
        W_{t+1}(\mathbf x_t\mathbf x_t^\top + \eta_t I)
            = \nabla_{y_t}\mathcal L(W_t, \mathbf x_t)\mathbf x_t^\top + \eta_t W_t \qquad (115)

    Returns:
        ``(A, B)`` with ``W_{t+1} A = B``: ``A = x xᵀ + η I`` ``(d_in, d_in)``, ``B`` ``(d_out, d_in)``.
    """
    _check_dgd(weight, x, target, "target")
    eta = _check_positive("eta", eta)
    eye = torch.eye(x.shape[0], dtype=x.dtype, device=x.device)
    return torch.outer(x, x) + eta * eye, torch.outer(target, x) + eta * weight


@implements("nl", 116)
def dgd_explicit_solution(weight: Tensor, x: Tensor, target: Tensor, eta: float) -> Tensor:
    r"""Appendix C's explicit solution by a linear solve (NL v1, Eq. 116).

    .. math::
        W_{t+1} = (\nabla_{y_t}\mathcal L(W_t, \mathbf x_t)\mathbf x_t^\top + \eta_t W_t)
            (\mathbf x_t\mathbf x_t^\top + \eta_t I)^{-1} \qquad (116)

    Returns:
        ``W_{t+1}``, ``(d_out, d_in)``.
    """
    system, rhs = dgd_normal_equations(weight, x, target, eta)
    return torch.linalg.solve(system, rhs.T).T  # the system is symmetric


@implements("nl", 117)
def sherman_morrison_inverse(x: Tensor, eta: float) -> Tensor:
    r"""The inverse of :math:`xx^\top + \eta I` in closed form (NL v1, Eq. 117).

    .. math::
        (\mathbf x_t\mathbf x_t^\top + \eta_t I)^{-1}
            = \frac{1}{\eta_t}\Big(I - \frac{1}{\lambda^2 + \eta_t}\mathbf x_t\mathbf x_t^\top\Big),
        \qquad \lambda^2 = \|\mathbf x_t\|_2^2 \qquad (117)

    Args:
        x: ``(d,)``; eta: > 0.

    Returns:
        ``(d, d)``.
    """
    eta = _check_positive("eta", eta)
    eye = torch.eye(x.shape[0], dtype=x.dtype, device=x.device)
    return (eye - torch.outer(x, x) / ((x * x).sum() + eta)) / eta


@implements("nl", 118, 119, 120, 121)
def dgd_appendix_c_form(weight: Tensor, x: Tensor, target: Tensor, eta: float, form: str) -> Tensor:
    r"""The successive closed forms of Appendix C's DGD derivation (NL v1, Eq. 118–121).

    .. math::
        W_{t+1} = (g\,\mathbf x^\top + \eta W_t)\frac{1}{\eta}\Big(I - \frac{\mathbf x\mathbf x^\top}
            {\lambda^2 + \eta}\Big) \qquad (118)

        W_{t+1} = W_t\Big(I - \frac{\mathbf x\mathbf x^\top}{\lambda^2 + \eta}\Big)
            + \frac1\eta g\mathbf x^\top
            - \frac{1}{\lambda^2\eta + \eta^2} g\mathbf x^\top\mathbf x\mathbf x^\top \qquad (119)

        W_{t+1} = W_t\Big(I - \frac{\mathbf x\mathbf x^\top}{\lambda^2 + \eta}\Big)
            - \Big(\frac{\lambda}{\lambda^2\eta + \eta^2} - \frac1\eta\Big) g\mathbf x^\top \qquad (120)

        W_{t+1} = W_t(I - \alpha_t\mathbf x\mathbf x^\top) - \beta\,\nabla_{y_t}\mathcal L\,\mathbf x^\top
            \qquad (121)

    ``g`` is the regression target (``target``), :math:`\lambda^2 = \|x\|^2`. ``form`` selects
    ``"substituted"`` (118), ``"expanded"`` (119), ``"collected"`` (120 with :math:`\lambda^2` for the
    printed λ, giving :math:`+\frac{1}{\lambda^2+\eta}`) or ``"final"`` (121 with
    :math:`\alpha = \beta = 1/(\lambda^2 + \eta)` and ``target = −∇_y L``, the sign Eq. 121 prints).
    All four equal Eq. 116 (docs/errata.md, NL Eq. 114–121).

    Returns:
        ``W_{t+1}``, ``(d_out, d_in)``.
    """
    _check_dgd(weight, x, target, "target")
    eta = _check_positive("eta", eta)
    sq_norm, gx = (x * x).sum(), torch.outer(target, x)
    decayed = weight - torch.outer(weight @ x, x) / (sq_norm + eta)
    if form == "substituted":
        return (gx + eta * weight) @ sherman_morrison_inverse(x, eta)
    if form == "expanded":
        return decayed + gx / eta - (gx @ torch.outer(x, x)) / (sq_norm * eta + eta**2)
    if form == "collected":
        return decayed - (sq_norm / (sq_norm * eta + eta**2) - 1 / eta) * gx
    if form == "final":
        return decayed - torch.outer(-target, x) / (sq_norm + eta)
    raise ValueError(f"form must be 'substituted', 'expanded', 'collected' or 'final', got {form!r}")


# --------------------------------------------------------------------------------------------------
# §4.4 momentum variants: values (Eq. 46), Delta momentum (Eq. 48–49), Deep Momentum GD (Eq. 50),
# feature maps (Eq. 51), non-linear output (Eq. 52)
# --------------------------------------------------------------------------------------------------


def _as_matrix(t: Tensor) -> Tensor:
    """``t`` as ``(d_out, d_in)``: a matrix stays, higher ranks flatten, a vector is one column.

    A view for contiguous tensors (the optimizers' states are created contiguous and updated through
    it), a copy for a non-contiguous gradient.
    """
    return t.reshape(t.shape[0], -1) if t.dim() >= 2 else t.reshape(-1, 1)


def _contiguous_zeros(p: Tensor) -> Tensor:
    return torch.zeros_like(p, memory_format=torch.contiguous_format)


def _check_precondition(precondition: object) -> Tensor | Callable[[Tensor], Tensor] | None:
    if precondition is None or callable(precondition):
        return precondition
    if isinstance(precondition, Tensor) and precondition.dim() == 2:
        return precondition
    raise ValueError(
        f"precondition must be None, a callable or a (d_out, d_out) tensor, got {precondition!r}"
    )


def _value_times(precondition: Tensor | Callable[[Tensor], Tensor] | None, grad: Tensor) -> Tensor:
    """``P g`` on the matrix view (``P = I`` for ``None``)."""
    return grad if precondition is None else _apply_preconditioner(precondition, grad, solve=False)


def gradient_value_pairs(grad: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
    r"""Momentum with values as (key, value) pairs of a matrix memory (NL v1, Eq. 46).

    .. math::
        \min_{\mathbf m}\ \langle\mathbf m\,\nabla\mathcal L(W_i; \mathbf x_i)^\top, \mathbf P_i\rangle
            \qquad (46)

    :math:`\langle \mathbf m g^\top, P\rangle = \sum_j\langle \mathbf m g_j, P_{:,j}\rangle`: the keys are
    the rows :math:`g_j` of the gradient and the values the columns of ``P``, so Eq. 46 is
    :class:`~neural_memory.nl.associative_memory.DotProductObjective` on these pairs (gradient
    :math:`P g`, Eq. 47's step) and Eq. 49's regression is
    :class:`~neural_memory.nl.associative_memory.L2RegressionObjective` on them.

    Args:
        grad: g, ``(d_out, d_in)``. value: P, ``(d_out, d_out)``.

    Returns:
        ``(keys, values)``: ``g`` ``(d_out, d_in)`` and ``Pᵀ`` ``(d_out, d_out)``, for a memory ``m``
        shaped ``(d_out, d_in)``.
    """
    if grad.dim() != 2:
        raise ValueError(f"grad must be a matrix (d_out, d_in), got shape {tuple(grad.shape)}")
    if value.shape != (grad.shape[0], grad.shape[0]):
        raise ValueError(f"value must be (d_out, d_out) = {(grad.shape[0],) * 2}, got {tuple(value.shape)}")
    return grad, value.T


@implements("nl", 46)
def value_momentum_objective(momentum: Tensor, grad: Tensor, value: Tensor) -> Tensor:
    r"""The objective of momentum with values (NL v1, Eq. 46).

    .. math::
        \min_{\mathbf m}\ \langle\mathbf m\,\nabla\mathcal L(W_i; \mathbf x_i)^\top, \mathbf P_i\rangle
            \qquad (46)

    :class:`~neural_memory.nl.associative_memory.DotProductObjective` on :func:`gradient_value_pairs`; one
    GD step on it from :math:`\mathbf m_i` is Eq. 47's :math:`\mathbf m_i - \eta\mathbf P_i\nabla\mathcal L`.

    Args:
        momentum: m, ``(d_out, d_in)``. grad: ∇L, ``(d_out, d_in)``. value: P, ``(d_out, d_out)``.

    Returns:
        The scalar objective.
    """
    return DotProductObjective().loss(momentum, *gradient_value_pairs(grad, value))


@implements("nl", 48, 49)
class DeltaMomentum(Optimizer):
    r"""Delta momentum: a momentum that regresses instead of accumulating (NL v1, Eq. 48–49).

    .. math::
        W_{i+1} = W_i + \mathbf{m}_{i+1} \qquad (48)

        \mathbf{m}_{i+1} = \mathbf{m}_i\big(\alpha_{i+1} - \nabla\mathcal{L}(W_i; \mathbf{x}_i)^\top
            \nabla\mathcal{L}(W_i; \mathbf{x}_i)\big) - \eta_t\mathbf{P}_i\nabla\mathcal{L}(W_i; \mathbf{x}_i)
            \qquad (49)

    Before adding the new (preconditioned) gradient the momentum forgets what it holds along the
    current gradient's row space: :math:`\mathbf m(\alpha I - \zeta g^\top g)` leaves directions
    orthogonal to the rows of ``g`` decayed by α only. It is one unit step of gradient descent on
    :math:`\tfrac\zeta2\|\mathbf m g^\top + \tfrac\eta\zeta\mathbf P\|_F^2
    + \tfrac{1-\alpha}2\|\mathbf m\|_F^2`, the L2 regression of Eq. 49's prose with the value's sign of
    Eq. 47. Decisions (docs/errata.md, NL Eq. 48–49): arXiv v1's right multiplication
    :math:`\mathbf m(\alpha I - g^\top g)` (the NeurIPS version multiplies on the left,
    shape-inconsistent for non-square weights); the correction carries a step ``delta_lr`` = ζ, 1 as
    printed, 0 giving momentum GD (Eq. 47, ``MomentumGD``); a parameter of rank > 2 is flattened to
    ``(shape[0], -1)`` and a vector is one column (then :math:`g^\top g = \|g\|^2`). Stability: along the
    top right singular vector of ``g`` the factor is :math:`\alpha - \zeta\sigma_1^2`, so the momentum
    flips and grows once :math:`\zeta\sigma_1(g)^2 > 1 + \alpha`; with unnormalised gradients use a small
    ζ (with ζ = 1 the Eq. 53 toy diverges from the paper's start, where :math:`\|g\|^2 \approx 10^4`).

    Args:
        params: parameters or groups.
        lr: η >= 0 (1e-3; the paper gives none). alpha: α in [0, 1] (0.9).
        delta_lr: ζ >= 0, the step of the correction (1, the printed Eq. 49).
        precondition: ``P``: ``None`` (identity), a ``(d_out, d_out)`` matrix, or a callable ``g -> P g``;
            applied to the ``(d_out, d_in)`` view of the gradient.

    State per parameter: ``momentum`` (m), shaped like the parameter.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        alpha: float = 0.9,
        delta_lr: float = 1.0,
        precondition: Tensor | Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        defaults = {
            "lr": _check_nonneg("lr", lr),
            "alpha": _check_unit("alpha", alpha, one=True),
            "delta_lr": _check_nonneg("delta_lr", delta_lr),
            "precondition": _check_precondition(precondition),
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = _closure_loss(closure)
        for group in self.param_groups:
            for p, grad, state in _grads(self, group):
                if "momentum" not in state:
                    state["momentum"] = _contiguous_zeros(p)
                m, g = _as_matrix(state["momentum"]), _as_matrix(grad)
                correction = (m @ g.T) @ g if group["delta_lr"] else None  # m gᵀg, before m changes
                m.mul_(group["alpha"])
                if correction is not None:
                    m.sub_(correction, alpha=group["delta_lr"])
                m.sub_(_value_times(group["precondition"], g), alpha=group["lr"])
                p.add_(state["momentum"])
        return loss


@implements("nl", 51)
class FeatureMapMomentum(Optimizer):
    r"""Momentum over a feature map of the gradient (NL v1, Eq. 51).

    .. math::
        W_{i+1} = W_i + \mathbf{m}_{i+1}, \qquad
        \mathbf{m}_{i+1} = \alpha_{i+1}\mathbf{m}_i - \eta_t\mathbf{P}_i\,\phi(\nabla\mathcal{L}(W_i;
            \mathbf{x}_i)) \qquad (51)

    Momentum (Eq. 47) whose memory stores :math:`\phi(g)` instead of the gradient: one decayed GD step on
    Eq. 46 with the key :math:`\phi(g)`. ``φ`` must return a tensor shaped like the gradient (the paper's
    "higher-order" maps, e.g. ``g + g**3 / 3``; its dimension-raising maps would need a ``P`` that maps
    back, which the paper does not give). ``φ = id`` and ``P = I`` is ``MomentumGD``.

    Args:
        params: parameters or groups. lr: η >= 0 (1e-3). alpha: α in [0, 1] (0.9).
        feature_map: φ, a callable ``g -> φ(g)``, element-wise or not; ``None`` is the identity.
        precondition: ``P`` as :class:`DeltaMomentum`.

    State per parameter: ``momentum``.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        alpha: float = 0.9,
        feature_map: Callable[[Tensor], Tensor] | None = None,
        precondition: Tensor | Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if feature_map is not None and not callable(feature_map):
            raise TypeError(f"feature_map must be callable (g -> phi(g)) or None, got {feature_map!r}")
        defaults = {
            "lr": _check_nonneg("lr", lr),
            "alpha": _check_unit("alpha", alpha, one=True),
            "feature_map": feature_map,
            "precondition": _check_precondition(precondition),
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = _closure_loss(closure)
        for group in self.param_groups:
            phi = group["feature_map"]
            for p, grad, state in _grads(self, group):
                features = grad if phi is None else phi(grad)
                if features.shape != grad.shape:
                    raise ValueError(
                        f"feature_map must return the gradient's shape {tuple(grad.shape)}, "
                        f"got {tuple(features.shape)}"
                    )
                if "momentum" not in state:
                    state["momentum"] = _contiguous_zeros(p)
                m = _as_matrix(state["momentum"])
                m.mul_(group["alpha"]).sub_(
                    _value_times(group["precondition"], _as_matrix(features)), alpha=group["lr"]
                )
                p.add_(state["momentum"])
        return loss


_MEMORY_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "silu": nn.functional.silu,
    "relu": torch.relu,
    "identity": lambda z: z,
}
_MEMORY_PARTS = ("linear", "w1", "b1", "w2")


@implements("nl", 50)
class DeepMomentumGD(Optimizer):
    r"""Deep Momentum Gradient Descent: the momentum is an MLP trained by its own objective (NL v1, Eq. 50).

    .. math::
        W_{i+1} = W_i + \mathbf{m}_{i+1}(\mathbf{u}_i), \qquad
        \mathbf{m}_{i+1} = \alpha_{i+1}\mathbf{m}_i - \eta_t\nabla\mathcal{L}^{(2)}(\mathbf{m}_i;
            \mathbf{u}_i, \mathbf{1}) \qquad (50)

    Each parameter ``W`` ``(d_out, d_in)`` has a memory network
    :math:`\mathbf m_\theta:\mathbb R^{d_{in}}\to\mathbb R^{d_{out}}`,
    :math:`\mathbf m_\theta(k) = A k + W_2\,\sigma(W_1k + b_1)` (``hidden`` units; ``hidden = 0`` is the
    linear memory ``A``). Read at the constant keys — the basis vectors, the identity ``I`` — it gives a
    weight-shaped output :math:`F_\theta = A + W_2\sigma(W_1 + b_1\mathbf 1^\top)`. Each step takes one
    GD step, decayed by α, of all of θ on the inner objective with the gradient :math:`\mathbf u_i` as
    the value — ``"dot"``: :math:`\langle F_\theta, \mathbf u_i\rangle`
    (:class:`~neural_memory.nl.associative_memory.DotProductObjective` over the basis keys), ``"l2"``:
    :math:`\tfrac12\|F_\theta + \mathbf u_i\|_F^2` (regression onto :math:`-\mathbf u_i`) — then
    :math:`W \leftarrow W + \sigma_{out}(F_{\theta_{i+1}})` (``output_fn``, identity here; Eq. 52 is
    :class:`NonlinearOutputMomentum`). The linear memory with ``"dot"`` is momentum GD exactly, the
    reduction the paper states. Decisions (docs/errata.md, NL Eq. 50): the paper does not say how
    :math:`\mathbf m(\mathbf u_i)` acts on a matrix gradient; a memory fed the gradient as its *input*
    holds no history (its output would not contain the past gradients), so the gradient is the value and
    the constant ``1``/``I`` of Eq. 50/52 the key. ``A`` and ``W₂`` start at 0 (zero momentum), ``W₁``
    from ``init_scale · N(0, 1/d_in)`` drawn by a generator seeded with ``seed · 1_000_003 + i`` (``i``: the
    parameter's position among all groups, stable across save and resume),
    ``b₁`` at 0.
    A vector is one column, higher ranks flatten to ``(shape[0], -1)``.

    Args:
        params: parameters or groups.
        lr: η >= 0, the memory's step (1e-3; the paper gives none). alpha: α in [0, 1] (0.9).
        hidden: width >= 0 of the memory's hidden layer (16; 0 is linear).
        objective: ``"dot"`` or ``"l2"``. activation: σ of the memory, ``"tanh"``, ``"silu"``, ``"relu"``
            or ``"identity"``. init_scale: >= 0. seed: int, for ``W₁``.
        output_fn: a callable applied to the memory's output before the weight step, ``None`` identity.

    State per parameter: ``linear`` (A, ``(d_out, d_in)``), ``w1`` ``(hidden, d_in)``, ``b1``
    ``(hidden,)``, ``w2`` ``(d_out, hidden)``.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        alpha: float = 0.9,
        hidden: int = 16,
        objective: str = "dot",
        activation: str = "tanh",
        init_scale: float = 1.0,
        seed: int = 0,
        output_fn: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if objective not in ("dot", "l2"):
            raise ValueError(f"objective must be 'dot' or 'l2', got {objective!r}")
        if activation not in _MEMORY_ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_MEMORY_ACTIVATIONS)}, got {activation!r}")
        if output_fn is not None and not callable(output_fn):
            raise TypeError(
                f"output_fn must be callable (memory output -> update) or None, got {output_fn!r}"
            )
        defaults = {
            "lr": _check_nonneg("lr", lr),
            "alpha": _check_unit("alpha", alpha, one=True),
            "hidden": check_int("hidden", hidden, minimum=0),
            "objective": objective,
            "activation": activation,
            "init_scale": _check_nonneg("init_scale", init_scale),
            "seed": check_int("seed", seed, minimum=0),
            "output_fn": output_fn,
        }
        super().__init__(params, defaults)

    @staticmethod
    def _init_memory(p: Tensor, state: dict, group: dict[str, Any], index: int) -> None:
        d_out, d_in = _as_matrix(p).shape
        generator = torch.Generator().manual_seed(group["seed"] * 1_000_003 + index)
        w1 = torch.randn(group["hidden"], d_in, generator=generator, dtype=torch.float64)
        scale = group["init_scale"] / math.sqrt(d_in)
        state["w1"] = (scale * w1).to(dtype=p.dtype, device=p.device)
        state["linear"] = p.new_zeros(d_out, d_in)
        state["b1"] = p.new_zeros(group["hidden"])
        state["w2"] = p.new_zeros(d_out, group["hidden"])

    @staticmethod
    def _output(parts: list[Tensor], activation: str) -> Tensor:
        """``F = A + W₂ σ(W₁ + b₁ 1ᵀ)``, the memory read at the keys ``I``."""
        linear, w1, b1, w2 = parts
        return linear + w2 @ _MEMORY_ACTIVATIONS[activation](w1 + b1[:, None])

    def _memory_step(self, grad: Tensor, state: dict, group: dict[str, Any]) -> Tensor:
        u = _as_matrix(grad)
        with torch.enable_grad():
            parts = [state[name].detach().requires_grad_(True) for name in _MEMORY_PARTS]
            out = self._output(parts, group["activation"])
            # over the basis keys I: DotProductObjective is ⟨F, u⟩, L2RegressionObjective(−u) is ½‖F + u‖²
            inner = (out * u).sum() if group["objective"] == "dot" else 0.5 * ((out + u) ** 2).sum()
            grads = torch.autograd.grad(inner, parts)
        for name, g in zip(_MEMORY_PARTS, grads, strict=True):
            state[name].mul_(group["alpha"]).sub_(g, alpha=group["lr"])
        return self._output([state[name] for name in _MEMORY_PARTS], group["activation"])

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = _closure_loss(closure)
        # the memory's seed: the parameter's position among all groups, stable across save and resume
        position = {id(q): i for i, q in enumerate(q for g in self.param_groups for q in g["params"])}
        for group in self.param_groups:
            for p, grad, state in _grads(self, group):
                if "linear" not in state:
                    self._init_memory(p, state, group, position[id(p)])
                update = self._memory_step(grad, state, group)
                if group["output_fn"] is not None:
                    update = group["output_fn"](update)
                p.add_(update.view_as(p))
        return loss


class _NewtonSchulzOutput:
    """σ = Newton–Schulz in the input's dtype, a picklable callable (``state_dict`` keeps the groups)."""

    def __init__(self, steps: int, coefficients: tuple[float, float, float], eps: float) -> None:
        self.steps, self.coefficients, self.eps = steps, coefficients, eps

    def __call__(self, m: Tensor) -> Tensor:
        return newton_schulz(m, self.steps, self.coefficients, self.eps)


@implements("nl", 52)
class NonlinearOutputMomentum(DeepMomentumGD):
    r"""Momentum with a non-linear output; Muon for σ = Newton–Schulz (NL v1, Eq. 52).

    .. math::
        W_{i+1} = W_i + \sigma\big(\mathbf{m}_{i+1}(\mathbf{u}_i)\big), \qquad
        \mathbf{m}_{i+1} = \alpha_{i+1}\mathbf{m}_i - \eta_t\nabla\mathcal{L}^{(2)}(\mathbf{m}_i;
            \mathbf{u}_i, \mathbf{I}) \qquad (52)

    :class:`DeepMomentumGD` whose output passes through σ before the weight step. The defaults are the
    paper's special case: a linear memory (``hidden = 0``, so :math:`\mathbf m \leftarrow \alpha\mathbf m
    - \eta g`) and σ = :func:`newton_schulz` (Muon's quintic, ``ns_steps`` steps, in the parameter's
    dtype). Newton–Schulz normalises, so η only matters through the relative weight of old and new
    gradients and this equals :class:`Muon` with ``lr = 1``, no Nesterov, no weight decay, momentum α
    (docs/errata.md, NL Eq. 52). A vector is one column (Newton–Schulz then normalises it).

    Args:
        params, lr, alpha, hidden, objective, activation, init_scale, seed: as :class:`DeepMomentumGD`
            (``hidden`` defaults to 0 here).
        output_fn: σ, a callable; ``None`` is Newton–Schulz.
        ns_steps: >= 1, ns_coefficients: ``(a, b, c)``, ns_eps: > 0 — for the default σ.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        alpha: float = 0.9,
        hidden: int = 0,
        objective: str = "dot",
        activation: str = "tanh",
        init_scale: float = 1.0,
        seed: int = 0,
        output_fn: Callable[[Tensor], Tensor] | None = None,
        ns_steps: int = 5,
        ns_coefficients: tuple[float, float, float] = NS_QUINTIC,
        ns_eps: float = 1e-7,
    ) -> None:
        if output_fn is None:
            steps, coefficients = check_int("ns_steps", ns_steps), _check_coefficients(ns_coefficients)
            eps = _check_positive("ns_eps", ns_eps)
            output_fn = _NewtonSchulzOutput(steps, coefficients, eps)
        super().__init__(params, lr, alpha, hidden, objective, activation, init_scale, seed, output_fn)


__all__ = [
    "M3",
    "NS_CUBIC",
    "NS_QUINTIC",
    "DeepMomentumGD",
    "DeltaGradientDescent",
    "DeltaMomentum",
    "ElementwiseMomentum",
    "FeatureMapMomentum",
    "MatrixMomentum",
    "MomentumGD",
    "Muon",
    "NonlinearOutputMomentum",
    "dgd_appendix_c_form",
    "dgd_effective_lr",
    "dgd_explicit_solution",
    "dgd_first_order_residual",
    "dgd_normal_equations",
    "dgd_step",
    "generalized_momentum_step",
    "gradient_value_pairs",
    "newton_schulz",
    "newton_schulz_step",
    "preconditioned_gd_step",
    "preconditioned_momentum_step",
    "sherman_morrison_inverse",
    "value_momentum_objective",
]
