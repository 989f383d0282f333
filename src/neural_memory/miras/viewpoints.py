r"""Three views of online regression: GD, FTRL and learning-retaining (MIRAS v1, §3 and Appendix B).

A linear memory :math:`W` learns a stream of pairs :math:`(k_t, v_t)`. MIRAS reads its update three ways:

* **GD** (Eq. 5–6): one gradient step on the loss of the latest token, token after token;
* **FTRL** (Eq. 7, "FTRL Viewpoint"): the minimiser of all past (approximated) losses plus a regulariser;
* **learning-retaining** ("Learning-Retaining Viewpoint", M-U2, M-U3): the minimiser of the latest loss
  plus a retention term that keeps the new memory near the old one.

Proposition 3.2 (Appendix B, Eq. 33–36, M-U4) ties the last two: with the Bregman divergence of
:math:`h_t = \sum_{i<t}\hat\ell_i + R/\eta` as retention, the learning-retaining iterates are the FTRL
iterates. Definition 3.1 (Eq. 4) is NL's :func:`neural_memory.nl.associative_memory.associative_memory`,
which claims it; the per-token objectives are NL's
:class:`~neural_memory.nl.associative_memory.InnerObjective`.

Conventions (docs/errata.md, MIRAS Eq. 5–7 and 34): column vectors as in ``common/delta_rule.py``, a
memory is ``(d_v, d_k)`` and reads ``W k``; a stream is ``keys (T, d_k)``, ``values (T, d_v)`` (the paper's
:math:`K = ` ``keys.T``); the ℓ₂ loss is :math:`\tfrac12\|Wk - v\|^2`. Exact argmins of general objectives
are delegated to a ``minimise(objective, start)`` callable the caller supplies (Newton for small
problems); gradients of the callables are taken with ``torch.func.grad``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from neural_memory.common.delta_rule import longhorn_step
from neural_memory.nl.associative_memory import InnerObjective, L2RegressionObjective, gd_step
from neural_memory.registry import implements

Loss = Callable[[Tensor], Tensor]  # W (d_v, d_k) -> scalar
Surrogate = Callable[[Tensor], Loss]  # W_{i-1} -> the approximation ℓ̂_i built there
Retention = Callable[[Tensor, Tensor], Tensor]  # (W, W_{t-1}) -> scalar
Minimiser = Callable[[Loss, Tensor], Tensor]  # (objective, start) -> argmin


# --------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------


def _check_step(eta: object, name: str = "eta", positive: bool = True) -> float:
    """One constant step: a finite float, > 0 (``positive``) or >= 0."""
    if isinstance(eta, bool) or not isinstance(eta, int | float):
        raise TypeError(f"{name} must be one constant float, got {type(eta).__name__}")
    bound_ok = eta > 0 if positive else eta >= 0
    if not (math.isfinite(eta) and bound_ok):
        raise ValueError(f"{name} must be a finite float {'>' if positive else '>='} 0, got {eta!r}")
    return float(eta)


def _check_callable(name: str, obj: object) -> None:
    if not callable(obj):
        raise TypeError(f"{name} must be callable, got {type(obj).__name__}")


def _check_losses(losses: Sequence[Callable]) -> list[Callable]:
    if isinstance(losses, Tensor) or not all(callable(loss) for loss in losses):
        raise TypeError("losses must be a sequence of callables W -> scalar")
    return list(losses)


def _check_matrix(name: str, w: object) -> Tensor:
    if not isinstance(w, Tensor) or w.dim() != 2:
        raise ValueError(f"{name} must be a (d_v, d_k) matrix, got {getattr(w, 'shape', type(w).__name__)}")
    return w


def _check_pair(w: Tensor, k: Tensor, v: Tensor) -> None:
    d_v, d_k = _check_matrix("w_prev", w).shape
    if not isinstance(k, Tensor) or k.shape != (d_k,):
        raise ValueError(f"k must be (d_k={d_k},), got {getattr(k, 'shape', type(k).__name__)}")
    if not isinstance(v, Tensor) or v.shape != (d_v,):
        raise ValueError(f"v must be (d_v={d_v},), got {getattr(v, 'shape', type(v).__name__)}")


def _check_stream(w: Tensor, keys: Tensor, values: Tensor) -> None:
    d_v, d_k = _check_matrix("w0", w).shape
    if keys.dim() != 2 or keys.shape[1] != d_k:
        raise ValueError(f"keys must be (T, d_k={d_k}), got {tuple(keys.shape)}")
    if values.shape != (keys.shape[0], d_v):
        raise ValueError(f"values must be (T={keys.shape[0]}, d_v={d_v}), got {tuple(values.shape)}")


def _check_objective(objective: object) -> None:
    if not isinstance(objective, InnerObjective):
        raise TypeError(f"objective must be an InnerObjective, got {type(objective).__name__}")


# --------------------------------------------------------------------------------------------------
# Eq. 5–6: online gradient descent
# --------------------------------------------------------------------------------------------------


@implements("miras", 5)
def pair_loss(objective: InnerObjective, k: Tensor, v: Tensor) -> Loss:
    r"""The loss of one token, as a function of the memory (MIRAS v1, M-U1, the :math:`\ell` of Eq. 5).

    .. math::
        \ell(W; \mathbf{k}_t, \mathbf{v}_t) := \mathcal{L}\big(\mathcal{M}(W; \mathbf{k}_t); \mathbf{v}_t\big)

    The attentional bias evaluated on the single pair ``(k, v)``.

    Args:
        objective: the attentional bias, an NL :class:`InnerObjective` (e.g. ``L2RegressionObjective``).
        k: ``(d_k,)``; v: ``(d_v,)``.

    Returns:
        ``W (d_v, d_k) -> scalar``.
    """
    _check_objective(objective)
    return lambda w: objective.loss(w, k[None], v[None])


@implements("miras", 5)
def memory_gd_step(objective: InnerObjective, w_prev: Tensor, k: Tensor, v: Tensor, eta: float) -> Tensor:
    r"""One gradient step of the memory on the latest token (MIRAS v1, Eq. 5).

    .. math::
        W_t = W_{t-1} - \eta_t\,\nabla\ell(W_{t-1}; \mathbf{k}_t, \mathbf{v}_t) \qquad (5)

    Move the memory down the gradient of the loss of token ``t``, taken at the old memory. For the ½-ℓ₂
    bias this is ``W − η (W k − v) kᵀ``, the delta rule. NL's :func:`gd_step` on one pair.

    Args:
        objective: the attentional bias (an :class:`InnerObjective` with a ``grad``).
        w_prev: ``W_{t−1}``, ``(d_v, d_k)``.
        k: ``(d_k,)``; v: ``(d_v,)``.
        eta: step ``η_t >= 0``.

    Returns:
        ``W_t``, ``(d_v, d_k)``.
    """
    _check_objective(objective)
    _check_pair(w_prev, k, v)
    return gd_step(objective, w_prev, k[None], v[None], _check_step(eta, positive=False))


def _steps(eta: float | Tensor, count: int) -> list[float]:
    """η as one float per token."""
    if isinstance(eta, Tensor):
        if eta.shape != (count,):
            raise ValueError(f"eta must be a float or a (T={count},) tensor, got shape {tuple(eta.shape)}")
        if not bool(torch.isfinite(eta).all() and (eta >= 0).all()):
            raise ValueError("eta must be finite and >= 0 at every token")
        return [float(e) for e in eta]
    return [_check_step(eta, positive=False)] * count


@implements("miras", 6)
def online_gd(
    objective: InnerObjective, w0: Tensor, keys: Tensor, values: Tensor, eta: float | Tensor
) -> Tensor:
    r"""Online gradient descent over the loss sequence of a stream (MIRAS v1, Eq. 6 with Eq. 5).

    .. math::
        \ell(W; \mathbf{k}_1, \mathbf{v}_1),\ \ell(W; \mathbf{k}_2, \mathbf{v}_2),\ \ldots,\
        \ell(W; \mathbf{k}_t, \mathbf{v}_t),\ \ldots \qquad (6)

    One Eq. 5 step per token, in stream order: each loss is seen once, at the memory the earlier tokens
    left (not one batch step on their sum).

    Args:
        objective: the attentional bias.
        w0: ``W_0``, ``(d_v, d_k)``.
        keys: ``(T, d_k)``; values: ``(T, d_v)``.
        eta: one step ``>= 0`` or per-token steps ``(T,)``.

    Returns:
        the iterates ``W_0 … W_T``, ``(T + 1, d_v, d_k)``.
    """
    _check_stream(w0, keys, values)
    iterates = [w0]
    for k, v, step in zip(keys, values, _steps(eta, keys.shape[0]), strict=True):
        iterates.append(memory_gd_step(objective, iterates[-1], k, v, step))
    return torch.stack(iterates)


# --------------------------------------------------------------------------------------------------
# Eq. 7 and FTRL-VP: follow the regularised leader
# --------------------------------------------------------------------------------------------------


@implements("miras", 7)
def linearised(loss: Loss) -> Surrogate:
    r"""The linearisation of a loss at the previous iterate (the summand of MIRAS v1, Eq. 7).

    .. math::
        \hat\ell_i(W) = \big\langle W - W_{i-1},\ \nabla\ell(W_{i-1}; \mathbf{k}_i, \mathbf{v}_i)\big\rangle

    Replace the loss by its tangent plane at ``W_{i−1}`` (constant term dropped: it does not move an argmin).

    Args:
        loss: ``W -> scalar``, differentiable (its gradient is taken with ``torch.func.grad``).

    Returns:
        ``W_{i−1} -> (W -> scalar)``.
    """
    _check_callable("loss", loss)

    def at(w_prev: Tensor) -> Loss:
        grad = torch.func.grad(loss)(w_prev)
        return lambda w: (grad * (w - w_prev)).sum()

    return at


def exact(loss: Loss) -> Surrogate:
    """The loss itself as its own approximation, whatever the previous iterate (``ℓ̂_i = ℓ_i``)."""
    _check_callable("loss", loss)
    return lambda w_prev: loss


@implements("miras", 7)
def linearised_ftrl(grads: Tensor, eta: float) -> Tensor:
    r"""The closed-form argmin of FTRL on linearised losses (MIRAS v1, Eq. 7).

    .. math::
        W_t = \arg\min_W \sum_{i=1}^{t}\big\langle W - W_{i-1},
            \nabla\ell(W_{i-1}; \mathbf{k}_i, \mathbf{v}_i)\big\rangle + \frac{1}{2\eta}\|W\|_2^2
            = -\eta\sum_{i=1}^{t}\nabla\ell(W_{i-1}; \mathbf{k}_i, \mathbf{v}_i) \qquad (7)

    Setting the gradient :math:`\sum_i g_i + W/\eta` to zero. The step must be one constant η: with
    :math:`1/(2\eta_t)` the argmin is :math:`-\eta_t\sum g_i`, not GD's :math:`-\sum\eta_i g_i`.

    Args:
        grads: the past gradients ``∇ℓ(W_{i−1}; k_i, v_i)``, ``(t, d_v, d_k)``.
        eta: constant step ``η > 0``.

    Returns:
        ``W_t``, ``(d_v, d_k)``.
    """
    eta = _check_step(eta)
    if not isinstance(grads, Tensor) or grads.dim() != 3:
        raise ValueError(f"grads must be (t, d_v, d_k), got {getattr(grads, 'shape', type(grads).__name__)}")
    return -eta * grads.sum(0)


@implements("miras", 7)
def linearised_ftrl_iterates(objective: InnerObjective, keys: Tensor, values: Tensor, eta: float) -> Tensor:
    r"""The Eq. 7 iterates along a stream: each one the closed-form FTRL argmin (MIRAS v1, Eq. 7).

    .. math::
        W_t = -\eta\sum_{i=1}^{t}\nabla\ell(W_{i-1}; \mathbf{k}_i, \mathbf{v}_i), \qquad W_0 = 0

    The gradient of token ``i`` is taken at the FTRL iterate ``W_{i−1}``. There is no ``W_0`` argument:
    the FTRL form starts at :math:`\arg\min\|W\|^2/(2\eta) = 0`, and it equals the Eq. 5 iterates only
    from that start and for a constant η (docs/errata.md, MIRAS Eq. 7).

    Args:
        objective: the attentional bias.
        keys: ``(T, d_k)``; values: ``(T, d_v)``.
        eta: one constant step ``η > 0``.

    Returns:
        ``W_0 … W_T``, ``(T + 1, d_v, d_k)``.
    """
    eta = _check_step(eta)
    _check_objective(objective)
    w0 = values.new_zeros(values.shape[-1], keys.shape[-1])
    _check_stream(w0, keys, values)
    grads, iterates = [], [w0]
    for k, v in zip(keys, values, strict=True):
        grads.append(objective.grad(iterates[-1], k[None], v[None]))
        iterates.append(linearised_ftrl(torch.stack(grads), eta))
    return torch.stack(iterates)


@implements("miras", "FTRL-VP")
def ftrl_objective(losses: Sequence[Loss], regulariser: Loss, eta: float) -> Loss:
    r"""The FTRL objective: past approximated losses plus the scaled regulariser (MIRAS v1, FTRL Viewpoint).

    .. math::
        \sum_{i=1}^{t}\widehat{\ell}_i(W; \mathbf{k}_i, \mathbf{v}_i)
            + \frac{1}{\eta_t}\mathcal{R}_t(W)

    The "attentional bias" over everything seen plus the "memory stability" term. Over the first ``t − 1``
    losses it is the :math:`h_t` of Prop. 3.2 (M-U4).

    Args:
        losses: the built approximations ``ℓ̂_1 … ℓ̂_t``, each ``W -> scalar``.
        regulariser: ``R``, ``W -> scalar``.
        eta: ``η > 0``.

    Returns:
        ``W -> scalar``.
    """
    losses = _check_losses(losses)
    _check_callable("regulariser", regulariser)
    eta = _check_step(eta)
    return lambda w: sum((loss(w) for loss in losses), regulariser(w) / eta)


@implements("miras", "FTRL-VP")
def ftrl_iterates(
    surrogates: Sequence[Surrogate], regulariser: Loss, eta: float, minimise: Minimiser, start: Tensor
) -> Tensor:
    r"""The FTRL iterates of a stream (MIRAS v1, FTRL Viewpoint).

    .. math::
        W_t = \arg\min_{W\in\mathcal W}\ \sum_{i=1}^{t}\widehat{\ell}_i(W; \mathbf{k}_i, \mathbf{v}_i)
            + \frac{1}{\eta_t}\mathcal{R}_t(W)

    Each approximation ``ℓ̂_i`` is built at the previous iterate ``W_{i−1}`` (which matters for
    linearised losses) and kept. ``W_0 = argmin R``; unconstrained (:math:`\mathcal W = \mathbb R^{d_v\times
    d_k}`); constant η and R, the setting of Prop. 3.2. With exact ½-ℓ₂ losses and ``R = ½‖W‖²`` this is
    ridge regression (:func:`ridge_ftrl`); with linearised losses it is Eq. 7.

    Args:
        surrogates: ``W_{i−1} -> ℓ̂_i``, one per token (see :func:`exact`, :func:`linearised`).
        regulariser: ``R``, strictly convex, ``W -> scalar``.
        eta: ``η > 0``.
        minimise: ``(objective, start) -> argmin``, started at the previous iterate.
        start: where to start the search for ``W_0``, ``(d_v, d_k)``.

    Returns:
        ``W_0 … W_T``, ``(T + 1, d_v, d_k)``.
    """
    _check_callable("minimise", minimise)
    w = minimise(ftrl_objective([], regulariser, eta), _check_matrix("start", start))
    built, iterates = [], [w]
    for surrogate in _check_losses(surrogates):
        built.append(surrogate(w))
        w = minimise(ftrl_objective(built, regulariser, eta), w)
        iterates.append(w)
    return torch.stack(iterates)


@implements("miras", "FTRL-VP")
def ridge_ftrl(keys: Tensor, values: Tensor, eta: float) -> Tensor:
    r"""FTRL with exact ½-ℓ₂ losses and ``R = ½‖W‖²`` in closed form: ridge regression (MIRAS v1, FTRL-VP).

    .. math::
        W_t = \arg\min_W \sum_{i=1}^{t}\tfrac12\|W\mathbf{k}_i - \mathbf{v}_i\|^2 + \frac{1}{2\eta}\|W\|^2
            = \Big(\sum_i \mathbf{v}_i\mathbf{k}_i^\top\Big)\Big(\sum_i\mathbf{k}_i\mathbf{k}_i^\top
            + \mathbf{I}/\eta\Big)^{-1}

    NL's exact proximal step of the ℓ₂ objective taken from ``W = 0``.

    Args:
        keys: ``(t, d_k)``; values: ``(t, d_v)``.
        eta: ``η > 0``.

    Returns:
        ``W_t``, ``(d_v, d_k)``.
    """
    eta = _check_step(eta)
    if keys.dim() != 2:
        raise ValueError(f"keys must be (t, d_k), got {tuple(keys.shape)}")
    if values.dim() != 2 or values.shape[0] != keys.shape[0]:
        raise ValueError(f"values must be (t={keys.shape[0]}, d_v), got {tuple(values.shape)}")
    zero = values.new_zeros(values.shape[1], keys.shape[1])
    return L2RegressionObjective().proximal_step(zero, keys, values, eta)


# --------------------------------------------------------------------------------------------------
# LR-VP: learn the latest token, retain the past
# --------------------------------------------------------------------------------------------------


@implements("miras", "LR-VP")
def local_global_retention(
    local: Retention, global_: Loss | None, eta: float, alpha: float = 1.0
) -> Retention:
    r"""A retention split into a local and a global part (MIRAS v1, M-U3, the Ret of LR-VP).

    .. math::
        \mathrm{Ret}_t(W, W_{t-1}) = \frac{1}{\eta_t}\mathcal{D}_t(W, W_{t-1})
            + \frac{1}{\alpha_t}\mathcal{G}_t(W)

    Stay near the previous memory (local premetric ``D``) and keep the memory small (global ``G``).

    Args:
        local: ``D(W, W') -> scalar``.
        global_: ``G(W) -> scalar``, or ``None`` for no global term.
        eta: ``η > 0``; alpha: ``α > 0`` (unused without ``global_``).

    Returns:
        ``Ret(W, W') -> scalar``.
    """
    _check_callable("local", local)
    eta = _check_step(eta)
    if global_ is None:
        return lambda w, w_prev: local(w, w_prev) / eta
    _check_callable("global_", global_)
    alpha = _check_step(alpha, "alpha")
    return lambda w, w_prev: local(w, w_prev) / eta + global_(w) / alpha


def _half_squared_distance(w: Tensor, w_prev: Tensor) -> Tensor:
    return 0.5 * ((w - w_prev) ** 2).sum()


@implements("miras", "LR-VP")
def proximal_retention(eta: float) -> Retention:
    r"""The proximal retention that makes learning-retaining GD (MIRAS v1, M-U2).

    .. math::
        \mathrm{Ret}_t(W, W_{t-1}) = \frac{1}{2\eta_t}\|W - W_{t-1}\|_2^2

    Args:
        eta: ``η > 0``.

    Returns:
        ``Ret(W, W') -> scalar``.
    """
    return local_global_retention(_half_squared_distance, None, eta)


@implements("miras", "LR-VP")
def learning_retaining_step(loss: Loss, retention: Retention, w_prev: Tensor, minimise: Minimiser) -> Tensor:
    r"""One learning-retaining step (MIRAS v1, Learning-Retaining Viewpoint).

    .. math::
        W_t = \arg\min_{W\in\mathcal W}\ \underbrace{\widetilde{\ell}_t(W; \mathbf{k}_t,
            \mathbf{v}_t)}_{\text{Attentional Bias}}
            + \underbrace{\mathrm{Ret}_t(W, W_{t-1})}_{\text{Retention}}

    Fit the latest token, paying a retention price for leaving ``W_{t−1}``. Linearised ℓ̃ with
    :func:`proximal_retention` gives Eq. 5; the exact ½-ℓ₂ loss gives :func:`implicit_regression_step`.

    Args:
        loss: ``ℓ̃_t``, ``W -> scalar``.
        retention: ``Ret_t(W, W') -> scalar``.
        w_prev: ``W_{t−1}``, ``(d_v, d_k)``, also where the search starts.
        minimise: ``(objective, start) -> argmin``.

    Returns:
        ``W_t``, ``(d_v, d_k)``.
    """
    for name, obj in (("loss", loss), ("retention", retention), ("minimise", minimise)):
        _check_callable(name, obj)
    _check_matrix("w_prev", w_prev)
    return minimise(lambda w: loss(w) + retention(w, w_prev), w_prev)


@implements("miras", "LR-VP")
def learning_retaining_iterates(
    surrogates: Sequence[Surrogate], retention: Retention, w0: Tensor, minimise: Minimiser
) -> Tensor:
    r"""The learning-retaining iterates of a stream with one retention (MIRAS v1, LR-VP).

    .. math::
        W_t = \arg\min_W\ \widetilde{\ell}_t(W; \mathbf{k}_t, \mathbf{v}_t) + \mathrm{Ret}(W, W_{t-1}),
            \quad t = 1 \ldots T

    Args:
        surrogates: ``W_{t−1} -> ℓ̃_t``, one per token.
        retention: ``Ret(W, W') -> scalar``, the same at every step.
        w0: ``W_0``, ``(d_v, d_k)``.
        minimise: ``(objective, start) -> argmin``.

    Returns:
        ``W_0 … W_T``, ``(T + 1, d_v, d_k)``.
    """
    iterates = [_check_matrix("w0", w0)]
    for surrogate in _check_losses(surrogates):
        iterates.append(learning_retaining_step(surrogate(iterates[-1]), retention, iterates[-1], minimise))
    return torch.stack(iterates)


@implements("miras", "LR-VP")
def implicit_regression_step(w_prev: Tensor, k: Tensor, v: Tensor, eta: float) -> Tensor:
    r"""The learning-retaining step with the exact ½-ℓ₂ loss and proximal retention (MIRAS v1, LR-VP).

    .. math::
        W_t = \arg\min_W \tfrac12\|W\mathbf{k}_t - \mathbf{v}_t\|^2 + \frac{1}{2\eta}\|W - W_{t-1}\|^2
            = W_{t-1} - \frac{\eta\,(W_{t-1}\mathbf{k}_t - \mathbf{v}_t)\mathbf{k}_t^\top}
            {1 + \eta\,\mathbf{k}_t^\top\mathbf{k}_t}

    The implicit (gradient at the new state) regression step, which is Longhorn's rule
    (:func:`neural_memory.common.delta_rule.longhorn_step` with ``θ = η``).

    Args:
        w_prev: ``(d_v, d_k)``; k: ``(d_k,)``; v: ``(d_v,)``; eta: ``η >= 0``.

    Returns:
        ``W_t``, ``(d_v, d_k)``.
    """
    _check_pair(w_prev, k, v)
    return longhorn_step(w_prev, k, v, _check_step(eta, positive=False))


# --------------------------------------------------------------------------------------------------
# Prop. 3.2 and Appendix B (Eq. 33–36, M-U4): Bregman retention turns learning-retaining into FTRL
# --------------------------------------------------------------------------------------------------


@implements("miras", 34)
def bregman_divergence(h: Loss, grad_h: Callable[[Tensor], Tensor], w: Tensor, w_prev: Tensor) -> Tensor:
    r"""The Bregman divergence of ``h`` (MIRAS v1, M-U4, the retention of Eq. 34).

    .. math::
        D_h(W, W') = h(W) - h(W') - \langle\nabla h(W'), W - W'\rangle

    How far ``h`` at ``W`` lies above its tangent plane at ``W'``; ``>= 0`` for convex ``h``.

    Args:
        h: ``W -> scalar``; grad_h: ``W -> ∇h(W)``, shaped like ``W``.
        w, w_prev: ``W`` and ``W'``, same shape.

    Returns:
        a scalar tensor.
    """
    _check_callable("h", h)
    _check_callable("grad_h", grad_h)
    if w.shape != w_prev.shape:
        raise ValueError(
            f"w and w_prev must have the same shape, got {tuple(w.shape)} and {tuple(w_prev.shape)}"
        )
    return h(w) - h(w_prev) - (grad_h(w_prev) * (w - w_prev)).sum()


@implements("miras", 34)
def bregman_retention(past: Sequence[Loss], regulariser: Loss, eta: float) -> Retention:
    r"""Prop. 3.2's retention, the Bregman divergence of :math:`h_t` (MIRAS v1, M-U4, Eq. 34).

    .. math::
        h_t(W) = \sum_{i=1}^{t-1}\widehat{\ell}_i(W; \mathbf{k}_i, \mathbf{v}_i) + \frac{1}{\eta}R(W),
        \qquad \mathrm{Ret}_t(W, W') = D_{h_t}(W, W')

    Args:
        past: the built ``ℓ̂_1 … ℓ̂_{t−1}``; regulariser: ``R``; eta: ``η > 0``.

    Returns:
        ``Ret_t(W, W') -> scalar``.
    """
    h = ftrl_objective(past, regulariser, eta)
    grad_h = torch.func.grad(h)
    return lambda w, w_prev: bregman_divergence(h, grad_h, w, w_prev)


@implements("miras", 34)
def bregman_step_objective(
    loss_t: Loss, past: Sequence[Loss], regulariser: Loss, eta: float, w_prev: Tensor
) -> Loss:
    r"""The learning-retaining objective with Bregman retention, written out (MIRAS v1, Eq. 34).

    .. math::
        \widetilde{W}_t = \arg\min_W\ \widehat{\ell}_t(W) + \sum_{i=1}^{t-1}\widehat{\ell}_i(W)
            + \frac1\eta R(W) - \sum_{i=1}^{t-1}\widehat{\ell}_i(\widetilde W_{t-1})
            - \frac1\eta R(\widetilde W_{t-1})
            - \Big\langle\sum_{i=1}^{t-1}\nabla\widehat{\ell}_i(\widetilde W_{t-1})
            + \frac1\eta\nabla R(\widetilde W_{t-1}),\ W - \widetilde W_{t-1}\Big\rangle \qquad (34)

    :math:`\hat\ell_t + D_{h_t}(\cdot, \widetilde W_{t-1})`: the FTRL objective plus an affine function
    of ``W`` that is constant when Eq. 36 holds at ``W̃_{t−1}``. The display is rebuilt from a garbled
    extraction (docs/errata.md, MIRAS Eq. 34).

    Args:
        loss_t: ``ℓ̂_t``; past: ``ℓ̂_1 … ℓ̂_{t−1}``; regulariser: ``R``; eta: ``η > 0``.
        w_prev: ``W̃_{t−1}``, ``(d_v, d_k)``.

    Returns:
        ``W -> scalar``.
    """
    _check_callable("loss_t", loss_t)
    retention = bregman_retention(past, regulariser, eta)
    return lambda w: loss_t(w) + retention(w, w_prev)


@implements("miras", 35)
def reduced_bregman_step_objective(
    loss_t: Loss, past: Sequence[Loss], regulariser: Loss, eta: float, w_hat_prev: Tensor
) -> Loss:
    r"""Eq. 34 with constants dropped and :math:`\widetilde W_{t-1} = \widehat W_{t-1}` (MIRAS v1, Eq. 35).

    .. math::
        \widetilde{W}_t = \arg\min_W\ \widehat{\ell}_t(W) + \sum_{i=1}^{t-1}\widehat{\ell}_i(W)
            + \frac1\eta R(W) - \Big\langle\sum_{i=1}^{t-1}\nabla\widehat{\ell}_i(\widehat W_{t-1})
            + \frac1\eta\nabla R(\widehat W_{t-1}),\ W - \widehat W_{t-1}\Big\rangle \qquad (35)

    It differs from Eq. 34 by :math:`-h_t(\widehat W_{t-1})`, a constant, so the argmin is the same.

    Args:
        loss_t: ``ℓ̂_t``; past: ``ℓ̂_1 … ℓ̂_{t−1}``; regulariser: ``R``; eta: ``η > 0``.
        w_hat_prev: ``Ŵ_{t−1}``, ``(d_v, d_k)``.

    Returns:
        ``W -> scalar``.
    """
    _check_callable("loss_t", loss_t)
    past = _check_losses(past)
    objective = ftrl_objective([*past, loss_t], regulariser, eta)
    slope = ftrl_gradient(past, regulariser, eta, _check_matrix("w_hat_prev", w_hat_prev))
    return lambda w: objective(w) - (slope * (w - w_hat_prev)).sum()


@implements("miras", 36)
def ftrl_gradient(past: Sequence[Loss], regulariser: Loss, eta: float, w: Tensor) -> Tensor:
    r"""The gradient of the FTRL objective over the past, :math:`\nabla h_t` (MIRAS v1, Eq. 36).

    .. math::
        \sum_{i=1}^{t-1}\nabla\widehat{\ell}_i(\widehat W_{t-1}; \mathbf{k}_i, \mathbf{v}_i)
            + \frac1\eta\nabla R(\widehat W_{t-1}) = 0 \qquad (36)

    Zero at the FTRL iterate ``Ŵ_{t−1}`` (its first-order optimality condition), which is what makes the
    Bregman retention's linear term vanish in Prop. 3.2. The hat on :math:`W_{t-1}` is lost in the
    extraction and restored here.

    Args:
        past: ``ℓ̂_1 … ℓ̂_{t−1}``; regulariser: ``R``; eta: ``η > 0``.
        w: where to take the gradient, ``(d_v, d_k)``.

    Returns:
        ``∇h_t(W)``, ``(d_v, d_k)``.
    """
    return torch.func.grad(ftrl_objective(past, regulariser, eta))(w)


@implements("miras", 33)
def bregman_retaining_iterates(
    surrogates: Sequence[Surrogate], regulariser: Loss, eta: float, minimise: Minimiser, start: Tensor
) -> Tensor:
    r"""Learning-retaining iterates with ``Ret_t = D_{h_t}``, the FTRL iterates (MIRAS v1, Prop. 3.2, Eq. 33).

    .. math::
        \widetilde W_t = \arg\min_W\ \widehat{\ell}_t(W) + D_{h_t}(W, \widetilde W_{t-1}),
        \qquad \widetilde{W}_{t-1} = \widehat{W}_{t-1} \qquad (33)

    Prop. 3.2: with constant η, strictly convex ``R`` and no constraint, these equal
    :func:`ftrl_iterates` at every ``t`` (Eq. 33 is the induction hypothesis, Eq. 34–36 the step). Both
    start at ``W_0 = argmin R``: there ``∇h_1 = ∇R/η`` vanishes, the base case of Eq. 36.

    Args:
        surrogates: ``W_{t−1} -> ℓ̂_t``, one per token; regulariser: ``R``; eta: ``η > 0``.
        minimise: ``(objective, start) -> argmin``; start: where to search for ``W_0``, ``(d_v, d_k)``.

    Returns:
        ``W̃_0 … W̃_T``, ``(T + 1, d_v, d_k)``.
    """
    _check_callable("minimise", minimise)
    w = minimise(ftrl_objective([], regulariser, eta), _check_matrix("start", start))
    built, iterates = [], [w]
    for surrogate in _check_losses(surrogates):
        loss_t = surrogate(w)
        w = learning_retaining_step(loss_t, bregman_retention(built, regulariser, eta), w, minimise)
        built.append(loss_t)
        iterates.append(w)
    return torch.stack(iterates)


__all__ = [
    "Loss",
    "Minimiser",
    "Retention",
    "Surrogate",
    "bregman_divergence",
    "bregman_retaining_iterates",
    "bregman_retention",
    "bregman_step_objective",
    "exact",
    "ftrl_gradient",
    "ftrl_iterates",
    "ftrl_objective",
    "implicit_regression_step",
    "learning_retaining_iterates",
    "learning_retaining_step",
    "linearised",
    "linearised_ftrl",
    "linearised_ftrl_iterates",
    "local_global_retention",
    "memory_gd_step",
    "online_gd",
    "pair_loss",
    "proximal_retention",
    "reduced_bregman_step_objective",
    "ridge_ftrl",
]
