r"""MIRAS retention gates (MIRAS v1, §5.2–5.3): how a memory forgets while it learns.

In the learning-retaining view (MIRAS v1, "(Learning-Retaining Viewpoint)") one memory step is

.. math::
    W_t = \arg\min_{W}\ \langle W - W_{t-1}, \nabla\ell(W_{t-1})\rangle + \mathrm{Ret}_t(W, W_{t-1}),

and each choice of the retention :math:`\mathrm{Ret}_t` gives one closed-form update below: KL/entropy on a
scaled simplex (Eq. 18–21, Memora's Eq. 27), elastic net (Eq. 22–23), ℓ_q stability (Variant 4, Moneta's
Eq. 24), Bregman divergences (M-U23, M-U24) and Yaad's ℓ₂ pair (M-U27).

Part 2 of the module recasts each of them as what the generic memory runs: a *linear accumulator*
:math:`C_t = a_t C_{t-1} - s_t\nabla\ell` (exactly Titans' weight update) and a projection
:math:`W = \varphi(C)` that the memory reads and differentiates (:class:`Retention`).

Shapes: the one-step functions take tensors of any shape; where an equation normalises (the simplex of
Eq. 20, the norms of Eq. 24 and Variant 4) the slice is given by ``dim``. Gates (``eta``, ``alpha`` ...)
are floats or tensors that broadcast to the weights' shape (channel-wise gates of M-U32).
Where the paper is wrong or silent, see ``docs/errata.md`` (MIRAS Eq. 19, 23, 24, 27, Variant 4,
Bregman, Yaad).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable

import torch
from torch import Tensor

from neural_memory.common.validation import check_range
from neural_memory.registry import implements

Dims = int | tuple[int, ...] | None

# ζ of Eq. 18 by bisection: the bracket doubles at most this often (|ξ| < 2^64), then this many halvings
# take a 2^65-wide bracket below one float64 ulp.
_MAX_EXPANSIONS = 64
_BISECTION_STEPS = 200


# --------------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------------


def _check_tensor(name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        kind = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"{name} must be a floating-point tensor, got {kind}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite")
    return x


def _check_pair(w: Tensor, grad: Tensor, w_name: str = "W") -> None:
    _check_tensor(w_name, w)
    _check_tensor("grad", grad)
    if grad.shape != w.shape:
        raise ValueError(f"grad must have the shape of {w_name} {tuple(w.shape)}, got {tuple(grad.shape)}")


def _positive_float(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (0 < value < math.inf):
        raise ValueError(f"{name} must be > 0 and finite, got {value!r}")
    return float(value)


def _check_q(q: float, *, minimum: float, strict: bool) -> float:
    ok = isinstance(q, int | float) and not isinstance(q, bool) and math.isfinite(q)
    if not ok or (q <= minimum if strict else q < minimum):
        raise ValueError(f"q must be {'>' if strict else '>='} {minimum:g}, got {q!r}")
    return float(q)


def _dims(dim: Dims, ndim: int) -> tuple[int, ...]:
    """``dim`` (None = every dim) as a sorted tuple of non-negative dims of an ``ndim`` tensor."""
    if ndim == 0:
        raise ValueError("dim: the tensor must have at least one dim")
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    if not dims or any(isinstance(d, bool) or not isinstance(d, int) or not -ndim <= d < ndim for d in dims):
        raise ValueError(f"dim must be an int or a tuple of ints in [-{ndim}, {ndim}), got {dim!r}")
    normal = sorted(d % ndim for d in dims)
    if len(set(normal)) != len(normal):
        raise ValueError(f"dim must not repeat a dim, got {dim!r}")
    return tuple(normal)


def _softmax(z: Tensor, dims: tuple[int, ...]) -> Tensor:
    """Softmax over several dims at once (a slice of Eq. 20).

    Divides by the sum instead of subtracting a log-sum-exp: with logits of size 1e4 the rounding of
    ``lse`` would move the slice sum by ~1e-12, the division keeps it at a few ulp.
    """
    e = torch.exp(z - z.amax(dim=dims, keepdim=True).detach())  # exact shift: softmax is shift invariant
    return e / e.sum(dim=dims, keepdim=True)


def _unscaled_lq_norm(x: Tensor, q: float, dims: tuple[int, ...]) -> Tensor:
    """Entrywise :math:`\\|x\\|_q` over ``dims`` (kept), for entries too small for |x|^q to overflow."""
    if q == 4:  # (sum x^4)^(1/4) = ||x^2||_2^(1/2): the 2-norm is a fast reduction, the general q-norm a pow
        squared = torch.linalg.vector_norm(x.square(), ord=2, dim=dims, keepdim=True)
        positive = squared > 0  # sqrt's gradient at 0 is inf: an all-zero slice gets norm 0, gradient 0
        return torch.where(positive, torch.where(positive, squared, 1.0).sqrt(), 0.0)
    return torch.linalg.vector_norm(x, ord=q, dim=dims, keepdim=True)


def _lq_norm(x: Tensor, q: float, dims: tuple[int, ...]) -> Tensor:
    r"""Entrywise :math:`\|x\|_q` over ``dims`` (kept); scaled by the slice's max so |x|^q never overflows.

    The scale is detached: :math:`s\|x/s\|_q = \|x\|_q` for every :math:`s > 0`, so its gradient is zero.
    """
    top = x.detach().abs().amax(dim=dims, keepdim=True)
    safe = torch.where(top > 0, top, torch.ones_like(top))  # an all-zero slice has norm 0, not 0/0
    return safe * _unscaled_lq_norm(x / safe, q, dims)


# --------------------------------------------------------------------------------------------------
# Eq. 18 — f-divergence retention on the scaled simplex
# --------------------------------------------------------------------------------------------------


def _solve_decreasing(mass: Callable[[Tensor], Tensor], c: float, like: Tensor) -> Tensor:
    """The ξ (one per slice, shape of ``like``) with ``mass(ξ) = c``, for ``mass`` decreasing in ξ."""
    lo, hi = -torch.ones_like(like), torch.ones_like(like)
    for _ in range(_MAX_EXPANSIONS):
        lo_ok, hi_ok = mass(lo) >= c, mass(hi) <= c
        if bool(lo_ok.all() and hi_ok.all()):
            break
        lo, hi = torch.where(lo_ok, lo, 2 * lo), torch.where(hi_ok, hi, 2 * hi)
    else:
        raise ValueError(
            f"no ζ makes a slice sum to c = {c:g}: the range of g cannot reach it (or a slice of W is all 0)"
        )
    for _ in range(_BISECTION_STEPS):
        mid = (lo + hi) / 2
        too_much = mass(mid) > c
        lo, hi = torch.where(too_much, mid, lo), torch.where(too_much, hi, mid)
    return (lo + hi) / 2


@implements("miras", 18, 20)
def f_divergence_step(
    W: Tensor,
    grad: Tensor,
    eta: float | Tensor,
    g: Callable[[Tensor], Tensor],
    c: float = 1.0,
    dim: Dims = None,
) -> Tensor:
    r"""One f-divergence retention step on the scaled simplex (MIRAS v1, Eq. 18).

    .. math::
        W_t = W_{t-1}\odot g\big(-\zeta_t-\eta_t\,\nabla\ell(W_{t-1};\mathbf{k}_t,\mathbf{v}_t)\big),
        \qquad \textstyle\sum W_t = c \qquad (18)

    The minimiser of :math:`\langle W, \eta\nabla\ell\rangle + \sum W'f(W/W')` on
    :math:`\{\sum W = c,\ W \ge 0\}`: reweight every entry by :math:`g = (f')^{-1}` of its (shifted)
    gradient, with the shift :math:`\zeta_t` (the constraint's multiplier) found by bisection per slice.
    For :math:`f(\tau) = \tau\ln\tau`, :math:`g(y) = e^{y-1}` and this is
    :math:`c\,\mathrm{softmax}(\log W_{t-1} - \eta\nabla\ell)`.

    Numerics: we solve for :math:`\xi = \zeta + \min_{W>0}\eta\nabla\ell` (an O(1) number) instead of ζ,
    so that large gradients do not cost precision in the slice sum. Zero entries of ``W`` stay zero.

    Args:
        W: :math:`W_{t-1} \ge 0`, any shape; each slice over ``dim`` must have a positive entry.
        grad: :math:`\nabla\ell(W_{t-1})`, same shape.
        eta: :math:`\eta_t \ge 0`, float or tensor broadcastable to ``W``.
        g: :math:`(f')^{-1}`, an increasing elementwise map onto (a subset of) :math:`[0, \infty)`.
        c: the mass :math:`c > 0` of Eq. 20.
        dim: the normalised slice (int or tuple); ``None`` (default) = all entries, as Eq. 20 prints it.

    Returns:
        :math:`W_t`, shape of ``W``; every slice sums to ``c``.
    """
    _check_pair(W, grad)
    if bool((W < 0).any()):
        raise ValueError("W must be >= 0 (a point of the scaled simplex, Eq. 20)")
    if not callable(g):
        raise TypeError(f"g must be callable (g = (f')^-1, elementwise), got {type(g).__name__}")
    eta_t = check_range("eta", eta, W)
    c = _positive_float("c", c)
    dims = _dims(dim, W.dim())
    live = W > 0
    step = torch.broadcast_to(eta_t * grad, W.shape)  # η∇ℓ
    big = torch.full_like(step, math.inf)
    shift = torch.where(live, step, big).amin(dim=dims, keepdim=True)
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))  # all-zero slice: no ζ
    u = step - shift  # >= 0 on the live entries, 0 for the smallest one

    def reweighted(xi: Tensor) -> Tensor:  # W ⊙ g(−ξ − u), with 0 (not 0·inf) where W = 0
        return torch.where(live, W * g(-xi - u), torch.zeros_like(W))

    xi = _solve_decreasing(lambda x: reweighted(x).sum(dim=dims, keepdim=True), c, shift)
    out = reweighted(xi)
    if bool((out < 0).any()):
        raise ValueError("g must be >= 0 on the reached arguments (g = (f')^-1 maps into the domain of f)")
    return out


# --------------------------------------------------------------------------------------------------
# Eq. 19–21 — KL local + entropy global retention; Eq. 27 — Memora
# --------------------------------------------------------------------------------------------------


def _check_positive_weights(W: Tensor) -> None:
    if bool((W <= 0).any()):
        raise ValueError("W must be > 0: the update takes log W (initialise on the open simplex)")


@implements("miras", 19, 20, 21)
def kl_retention_step(
    W: Tensor,
    grad: Tensor,
    eta: float | Tensor,
    alpha: float | Tensor,
    c: float = 1.0,
    dim: Dims = None,
) -> Tensor:
    r"""KL local + entropy global retention on the scaled simplex (MIRAS v1, Eq. 19–21).

    .. math::
        W_t=\arg\min_{W}\ \langle W-W_{t-1},\nabla\ell\rangle
            +\frac{1}{\eta_t}\sum_{jl}W_{jl}\log\frac{W_{jl}}{(W_{t-1})_{jl}}
            +\frac{1}{\alpha_t}\sum_{jl}W_{jl}\log W_{jl}
            \quad\text{s.t.}\quad \sum_{jl}W_{jl}=c,\ W_{jl}\ge 0 \qquad (19,\ 20)

        W_t = c\;\mathrm{Softmax}\big((1-\lambda_t)\log W_{t-1}-\eta'_t\,\nabla\ell\big),\quad
        \lambda_t=\frac{1/\alpha_t}{1/\alpha_t+1/\eta_t},\quad \eta'_t=\frac{1}{1/\alpha_t+1/\eta_t}
        \qquad (21)

    Exponentiated gradient that is also pulled towards the uniform distribution: ``λ`` is how much of
    ``log W`` is forgotten. Eq. 19 prints :math:`(W_t)_{jl}` in the KL term; it is :math:`(W_{t-1})_{jl}`
    (A1, docs/errata.md "MIRAS Eq. 19").

    Args:
        W: :math:`W_{t-1} > 0`, any shape.
        grad: :math:`\nabla\ell(W_{t-1})`, same shape.
        eta: :math:`\eta_t \ge 0` (0 = no step), float or tensor broadcastable to ``W``.
        alpha: :math:`\alpha_t \in (0, \infty]` (``inf`` = no global retention, λ = 0).
        c: mass :math:`c > 0`.
        dim: the normalised slice; ``None`` (default) = all entries, as Eq. 20 prints it.

    Returns:
        :math:`W_t`, shape of ``W``; each slice sums to ``c``.
    """
    _check_pair(W, grad)
    _check_positive_weights(W)
    eta_t = check_range("eta", eta, W)
    alpha_t = check_range("alpha", alpha, W, low_open=True, allow_inf=True)
    c = _positive_float("c", c)
    dims = _dims(dim, W.dim())
    # reciprocals keep the limits exact: α = ∞ gives λ = 0, η' = η; η = 0 gives λ = 0, η' = 0
    inv_alpha, inv_eta = 1 / alpha_t, 1 / eta_t
    total = inv_alpha + inv_eta
    lam, eta_prime = inv_alpha / total, 1 / total
    return c * _softmax((1 - lam) * torch.log(W) - eta_prime * grad, dims)


@implements("miras", 20, 27)
def memora_step(
    W: Tensor, grad: Tensor, eta: float | Tensor, alpha: float | Tensor, dim: Dims = None
) -> Tensor:
    r"""Memora's update, ℓ₂ bias + KL retention (MIRAS v1, Eq. 27).

    .. math::
        W_t=\mathrm{Softmax}\big(\alpha_t\log(W_{t-1})-\eta_t\,\nabla\ell_2(W_{t-1};\mathbf{k}_t,\mathbf{v}_t)\big)
        \qquad (27)

    Eq. 21 with :math:`c = 1`, :math:`\alpha_t = 1-\lambda_t` and :math:`\eta_t = \eta'_t`: the
    minimiser of :math:`\eta\langle W-W',\nabla\ell\rangle + \alpha\,\mathrm{KL}(W\|W') +
    (1-\alpha)\sum W\log W` on the simplex. The paper leaves the softmax slice open (A7): ``dim``.

    Args:
        W: :math:`W_{t-1} > 0` (``ValueError`` otherwise: log W), any shape.
        grad: :math:`\nabla\ell(W_{t-1})`, same shape.
        eta: :math:`\eta_t \ge 0`, float or tensor broadcastable to ``W``.
        alpha: :math:`\alpha_t \in [0, 1]` (1 = no global retention).
        dim: the normalised slice; ``None`` (default) = all entries.

    Returns:
        :math:`W_t`, shape of ``W``; each slice sums to 1.
    """
    _check_pair(W, grad)
    _check_positive_weights(W)
    eta_t = check_range("eta", eta, W)
    alpha_t = check_range("alpha", alpha, W, high=1.0)
    return _softmax(alpha_t * torch.log(W) - eta_t * grad, _dims(dim, W.dim()))


@implements("miras", 27)
def memora_log_step(L: Tensor, grad: Tensor, eta: float | Tensor, alpha: float | Tensor) -> Tensor:
    r"""Memora's update (MIRAS v1, Eq. 27) in log space: :math:`L_t = \alpha_t L_{t-1} - \eta_t\nabla\ell`.

    .. math::
        \mathrm{Softmax}\big(\alpha_t\log\mathrm{Softmax}(L_{t-1}) - \eta_t\nabla\ell\big)
        = \mathrm{Softmax}\big(\alpha_t L_{t-1} - \eta_t\nabla\ell\big)

    because :math:`\log\mathrm{Softmax}(L) = L - \mathrm{lse}(L)` and the log-sum-exp is constant on the
    normalised slice, which the outer softmax removes. So a memory can keep the logits ``L`` (a linear
    accumulator, no log of tiny weights) and read :math:`W = \mathrm{Softmax}(L)` — on any slice.

    Args:
        L: logits :math:`L_{t-1}` with :math:`W_{t-1} = \mathrm{Softmax}(L_{t-1})`, any shape.
        grad: :math:`\nabla\ell` with respect to the weights :math:`W_{t-1}`, same shape.
        eta: :math:`\eta_t \ge 0`; alpha: :math:`\alpha_t \in [0, 1]`; floats or broadcastable tensors.

    Returns:
        :math:`L_t`, shape of ``L``.
    """
    _check_pair(L, grad, "L")
    eta_t = check_range("eta", eta, L)
    alpha_t = check_range("alpha", alpha, L, high=1.0)
    return alpha_t * L - eta_t * grad


# --------------------------------------------------------------------------------------------------
# Eq. 22–23 — elastic net
# --------------------------------------------------------------------------------------------------


def _soft_threshold(z: Tensor, gamma: float | Tensor) -> Tensor:
    return torch.sign(z) * torch.clamp_min(z.abs() - gamma, 0.0)


def soft_threshold(z: Tensor, gamma: float | Tensor) -> Tensor:
    r"""Soft threshold of Eq. 22–23, :math:`\mathcal{S}_\gamma(z) = \mathrm{sign}(z)\max\{0, |z|-\gamma\}`.

    Args:
        z: any shape.
        gamma: threshold :math:`\gamma \ge 0`, float or tensor broadcastable to ``z``.

    Returns:
        shape of ``z``; entries with :math:`|z| \le \gamma` are exactly 0.
    """
    _check_tensor("z", z)
    return _soft_threshold(z, check_range("gamma", gamma, z))


@implements("miras", 22)
def elastic_net_step(
    W: Tensor, grad: Tensor, eta: float | Tensor, beta: float | Tensor, alpha: float | Tensor
) -> Tensor:
    r"""Elastic-net retention, learning-retaining view (MIRAS v1, Eq. 22).

    .. math::
        W_t=\mathcal{S}_{\gamma}\big(\lambda W_{t-1}
            -\zeta\,\nabla\ell(W_{t-1};\mathbf{k}_t,\mathbf{v}_t)\big),
        \quad \gamma=\frac{\eta\beta}{\alpha(\eta+\beta)},\quad \lambda=\frac{\beta}{\beta+\eta},\quad
        \zeta=\eta\lambda \qquad (22)

    The proximal step of :math:`\langle W-W',\nabla\ell\rangle + \frac{1}{2\eta}\|W-W'\|^2 +
    \frac{1}{2\beta}\|W\|^2 + \frac1\alpha\|W\|_1`: decay (soft forgetting, λ), step, then zero every
    entry smaller than γ (hard forgetting). Computed as λ = 1/(1+η/β), γ = ζ/α so that β = ∞ or α = ∞
    give their limits.

    Args:
        W: :math:`W_{t-1}`, any shape.
        grad: :math:`\nabla\ell(W_{t-1})`, same shape.
        eta: :math:`\eta \ge 0`; beta, alpha: in :math:`(0, \infty]`; floats or broadcastable tensors.

    Returns:
        :math:`W_t`, shape of ``W``.
    """
    _check_pair(W, grad)
    eta_t = check_range("eta", eta, W)
    beta_t = check_range("beta", beta, W, low_open=True, allow_inf=True)
    alpha_t = check_range("alpha", alpha, W, low_open=True, allow_inf=True)
    lam = 1 / (1 + eta_t / beta_t)
    zeta = eta_t * lam
    return _soft_threshold(lam * W - zeta * grad, zeta / alpha_t)


@implements("miras", 23)
def elastic_net_ftrl(
    A_prev: Tensor, grad: Tensor, eta: float | Tensor, alpha: float | Tensor
) -> tuple[Tensor, Tensor]:
    r"""Elastic net in the FTRL view (MIRAS v1, Eq. 23).

    .. math::
        A_t=A_{t-1}-\eta\,\nabla\ell(W_{t-1};\mathbf{k}_t,\mathbf{v}_t),\qquad
        W_t=\mathcal{S}_{\eta/\alpha}(A_t) \qquad (23)

    Accumulate the scaled gradients and read the weights through a soft threshold. This is the exact
    FTRL minimiser (from :math:`A_0 = W_0 = 0`) for the regulariser
    :math:`\frac{1}{2\eta}\|W\|^2 + \frac1\alpha\|W\|_1`; the printed :math:`\frac1\eta\|W\|^2` would give
    :math:`\mathcal{S}_{\eta/(2\alpha)}(A_t/2)` (A5, docs/errata.md "MIRAS Eq. 23").

    Args:
        A_prev: :math:`A_{t-1}`, any shape (zeros at the start).
        grad: :math:`\nabla\ell(W_{t-1})`, same shape.
        eta: :math:`\eta \ge 0`; alpha: :math:`\alpha \in (0, \infty]` (∞ = plain GD, Eq. 7).

    Returns:
        ``(A_t, W_t)``, both of the shape of ``A_prev``.
    """
    _check_pair(A_prev, grad, "A_prev")
    eta_t = check_range("eta", eta, A_prev)
    alpha_t = check_range("alpha", alpha, A_prev, low_open=True, allow_inf=True)
    acc = A_prev - eta_t * grad
    return acc, _soft_threshold(acc, eta_t / alpha_t)


# --------------------------------------------------------------------------------------------------
# Variant 4 (M-U22) and Eq. 24 — ℓ_q memory stability, Moneta
# --------------------------------------------------------------------------------------------------


def lq_ftrl_weights(A: Tensor, q: float, dim: Dims = None) -> Tensor:
    r"""Weights of the ℓ_q-stability FTRL memory (MIRAS v1, §5.2 Variant 4, M-U22; unnumbered), exact form.

    .. math::
        W_t = (q-1)\,\frac{\mathrm{Sign}(A_t)\odot|A_t|^{p-1}}{\|A_t\|_p^{\,p-2}},\qquad
        p=\frac{q}{q-1},\qquad A_t = A_{t-1}-\eta\nabla\ell(W_{t-1};\mathbf{k}_t,\mathbf{v}_t)

    The argmin of :math:`\sum_i\langle W,\nabla\ell_i\rangle + \frac{1}{2\eta(q-1)}\|W\|_q^2`: the
    gradient of :math:`\frac{q-1}{2}\|\cdot\|_p^2` (the conjugate norm) at the accumulator. The paper
    prints :math:`A_t/\|A_t\|_p^{p-2}`, exact only at :math:`q = 2` (A3, docs/errata.md "MIRAS
    Variant 4"). The paper states :math:`1 < q \le 2`; the form is the argmin for every :math:`q > 1`.
    Computed as :math:`(q-1)\,\mathrm{Sign}(A)(|A|/\|A\|_p)^{p-1}\|A\|_p` (no overflow; A = 0 gives 0).

    Args:
        A: the recursive accumulator :math:`A_t`, any shape.
        q: :math:`q > 1`.
        dim: the slice of the norm; ``None`` (default) = all entries (the FTRL objective's ‖W‖_q).

    Returns:
        :math:`W_t`, shape of ``A``.
    """
    _check_tensor("A", A)
    q = _check_q(q, minimum=1.0, strict=True)
    p = q / (q - 1)
    norm = _lq_norm(A, p, _dims(dim, A.dim()))
    safe = torch.where(norm > 0, norm, torch.ones_like(norm))
    return (q - 1) * torch.sign(A) * (A.abs() / safe) ** (p - 1) * norm


def _rescale(x: Tensor, norm: Tensor, q: float, eps: float) -> Tensor:
    # x / n^{q-2} = (x/n)·n^{3-q}: |A/n| <= 1, so only n^{3-q} can be large, and only for n near eps
    n = norm.clamp_min(eps)
    return (x / n) * n ** (3 - q)


def _moneta_normalize(A: Tensor, q: float, dims: tuple[int, ...], eps: float) -> Tensor:
    return _rescale(A, _lq_norm(A, q, dims), q, eps)


@implements("miras", 24)
def moneta_normalize(A: Tensor, q: float, dim: Dims = (-2, -1), eps: float = 1e-12) -> Tensor:
    r"""Moneta's read-out of its accumulator (MIRAS v1, Eq. 24, second half), as printed.

    .. math::
        W_t=\frac{A_t}{\|A_t\|_q^{\,q-2}} \qquad (24)

    Rescale the accumulator so that :math:`\|W_t\|_q = \|A_t\|_q^{3-q}` (for Moneta's q = 4:
    :math:`1/\|A_t\|_q`). The norm is entrywise over ``dim``; the paper does not say over which slice,
    and we default to the whole matrix of one layer and head (the last two dims). The norm is clamped at
    ``eps`` so that :math:`A = 0` gives :math:`W = 0` with finite gradients instead of 0/0 (for q > 2,
    :math:`W` blows up as :math:`A \to 0`; the map has no limit there). docs/errata.md "MIRAS Eq. 24".

    Args:
        A: :math:`A_t`, ``(..., d_in, d_out)`` for the default ``dim``.
        q: :math:`q \ge 1` (Moneta: 4).
        dim: the normalised slice, default ``(-2, -1)``.
        eps: floor of the norm, > 0.

    Returns:
        :math:`W_t`, shape of ``A``.
    """
    _check_tensor("A", A)
    q = _check_q(q, minimum=1.0, strict=False)
    eps = _positive_float("eps", eps)
    return _moneta_normalize(A, q, _dims(dim, A.dim()), eps)


@implements("miras", 24)
def moneta_step(
    A_prev: Tensor,
    grad: Tensor,
    eta: float | Tensor,
    alpha: float | Tensor,
    q: float,
    dim: Dims = (-2, -1),
) -> tuple[Tensor, Tensor]:
    r"""One Moneta step, ℓ_p bias + ℓ_q retention (MIRAS v1, Eq. 24).

    .. math::
        A_t=\alpha_t A_{t-1}-\eta_t\,\nabla\ell_p(W_{t-1};\mathbf{k}_t,\mathbf{v}_t),\qquad
        W_t=\frac{A_t}{\|A_t\|_q^{\,q-2}} \qquad (24)

    Decay and move the accumulator, then normalise it (:func:`moneta_normalize`). The paper prints
    :math:`W_{i-1}` in the gradient; it is :math:`W_{t-1}` (A1). The gradient is an input here (Eq. 25's
    printed gradient already contains :math:`\eta_t`, A4: pass it without).

    Args:
        A_prev: :math:`A_{t-1}`, ``(..., d_in, d_out)``.
        grad: :math:`\nabla\ell_p(W_{t-1})`, same shape.
        eta: :math:`\eta_t \ge 0`; alpha: :math:`\alpha_t \in [0, 1]`; floats or tensors broadcastable
            to ``A_prev`` (channel-wise gates).
        q: :math:`q \ge 1` (Moneta: 4).
        dim: the normalised slice, default ``(-2, -1)``.

    Returns:
        ``(A_t, W_t)``, both of the shape of ``A_prev``.
    """
    _check_pair(A_prev, grad, "A_prev")
    eta_t = check_range("eta", eta, A_prev)
    alpha_t = check_range("alpha", alpha, A_prev, high=1.0)
    acc = alpha_t * A_prev - eta_t * grad
    return acc, moneta_normalize(acc, q, dim)


# --------------------------------------------------------------------------------------------------
# M-U23, M-U24 (unnumbered) — Bregman retention
# --------------------------------------------------------------------------------------------------


def bregman_step(
    W: Tensor,
    grad: Tensor,
    eta: float | Tensor,
    f_prime: Callable[[Tensor], Tensor],
    g: Callable[[Tensor], Tensor],
) -> Tensor:
    r"""Bregman-divergence retention (MIRAS v1, §5.2 Variant 5, M-U23; unnumbered).

    .. math::
        W_t = g\big(F'(W_{t-1}) - \eta\,\nabla\ell(W_{t-1};\mathbf{k}_t,\mathbf{v}_t)\big),\qquad
        g = (F')^{-1}

    Mirror descent: the argmin of :math:`\langle W-W',\nabla\ell\rangle + \frac1\eta D_F(W, W')` with
    :math:`D_F(W, W') = F(W) - F(W') - \langle F'(W'), W-W'\rangle`, :math:`F = \sum_{jl} f(W_{jl})`.
    The paper prints :math:`\langle W', W-W'\rangle` (A1, docs/errata.md "MIRAS Bregman retention").

    Args:
        W: :math:`W_{t-1}`, any shape, inside the domain of ``f_prime``.
        grad: :math:`\nabla\ell(W_{t-1})`, same shape.
        eta: :math:`\eta \ge 0`, float or tensor broadcastable to ``W``.
        f_prime: :math:`f'`, elementwise, strictly increasing.
        g: its inverse, elementwise.

    Returns:
        :math:`W_t`, shape of ``W``.
    """
    _check_pair(W, grad)
    for name, fn in (("f_prime", f_prime), ("g", g)):
        if not callable(fn):
            raise TypeError(f"{name} must be callable (elementwise), got {type(fn).__name__}")
    eta_t = check_range("eta", eta, W)
    mirror = f_prime(W)
    if bool(torch.isnan(mirror).any()):
        raise ValueError("W is outside the domain of f_prime (f_prime(W) is NaN)")
    return g(mirror - eta_t * grad)


def sigmoid_bregman_step(W: Tensor, grad: Tensor, eta: float | Tensor) -> Tensor:
    r"""Bregman retention with the binary entropy (MIRAS v1, §5.2, M-U24; unnumbered).

    .. math::
        W_t=\sigma\Big(\ln\frac{W_{t-1}}{1-W_{t-1}}-\eta\nabla\ell(W_{t-1};\mathbf{k}_t,\mathbf{v}_t)\Big)

    :func:`bregman_step` with :math:`f'(\tau) = \ln\frac{\tau}{1-\tau}` and :math:`g = \sigma`: a gradient
    step in logit space, so entries stay in (0, 1). The paper prints :math:`W_t` inside σ; it is
    :math:`W_{t-1}` (A1). In floating point the open interval holds while the new logit is below about
    36.7 in magnitude (float64); :class:`SigmoidBregman` keeps the logits and never saturates.

    Args:
        W: :math:`W_{t-1} \in (0, 1)`, any shape.
        grad: :math:`\nabla\ell(W_{t-1})`, same shape.
        eta: :math:`\eta \ge 0`, float or tensor broadcastable to ``W``.

    Returns:
        :math:`W_t`, shape of ``W``.
    """
    _check_pair(W, grad)
    if bool(((W <= 0) | (W >= 1)).any()):
        raise ValueError("W must be in (0, 1) (the sigmoid-Bregman update takes its logit)")
    eta_t = check_range("eta", eta, W)
    return torch.sigmoid(torch.logit(W) - eta_t * grad)


def yaad_gates(theta: float | Tensor, beta: float | Tensor) -> tuple[Tensor, Tensor]:
    r"""Yaad's retention gate and step from its retention (MIRAS v1, §5.3, M-U27 and A6; unnumbered).

    .. math::
        \arg\min_W \langle W-W_{t-1},\nabla\ell\rangle + \frac{1}{2\theta_t}\|W-W_{t-1}\|_F^2
        + \frac{1}{\beta_t}\|W\|_2^2 = \alpha_t W_{t-1} - s_t\nabla\ell,\qquad
        \alpha_t = \frac{\beta_t}{\beta_t+2\theta_t},\quad s_t = \frac{\theta_t\beta_t}{\beta_t+2\theta_t}

    The paper gives the retention but not α_t; this is our derivation (docs/errata.md "MIRAS Yaad
    gates"). Computed as α = 1/(1 + 2θ/β), s = θα, so β = ∞ gives α = 1, s = θ.

    Args:
        theta: :math:`\theta_t \ge 0`, float or tensor.
        beta: :math:`\beta_t \in (0, \infty]`, float or tensor broadcastable with ``theta``.

    Returns:
        ``(alpha, step)``, tensors of the broadcast shape (float64 for float inputs).
    """
    tensors = [x for x in (theta, beta) if isinstance(x, Tensor)]
    like = tensors[0] if tensors else torch.zeros((), dtype=torch.float64)
    shape = torch.broadcast_shapes(*(x.shape for x in tensors)) if tensors else torch.Size()
    like = torch.zeros(shape, dtype=like.dtype, device=like.device)
    theta_t = check_range("theta", theta, like)
    beta_t = check_range("beta", beta, like, low_open=True, allow_inf=True)
    alpha = torch.broadcast_to(1 / (1 + 2 * theta_t / beta_t), shape)
    return alpha, theta_t * alpha


# --------------------------------------------------------------------------------------------------
# Part 2 — retentions as a linear accumulator C plus a projection W = φ(C)
# --------------------------------------------------------------------------------------------------


def _check_acc(acc: object) -> Tensor:
    if not isinstance(acc, Tensor) or acc.dim() < 2:
        shape = tuple(acc.shape) if isinstance(acc, Tensor) else type(acc).__name__
        raise ValueError(f"acc must be a tensor (..., d_in, d_out) with at least 2 dims, got {shape}")
    return acc


class Retention(abc.ABC):
    r"""A MIRAS retention as the generic memory runs it: a linear accumulator and a projection.

    The memory keeps :math:`C_t = a_t C_{t-1} - s_t \nabla_W\ell(W_{t-1})` (decay ``a``, step ``s``, exactly
    Titans' weight update) and reads and differentiates :math:`W = \varphi(C)` = :meth:`project`.
    ``project`` acts on layer tensors ``(N, d_in, d_out)`` (rows = sequence × head) or stacks
    ``(N, b, d_in, d_out)``, and reduces over the last two dims only.
    """

    lag_token: bool = (
        False  # Memora (Eq. 30): the chunk's first token is applied before the chunk's gradients
    )
    # phi(C) = C·rho(||C||), one number per matrix (Moneta): such a retention also has ``matrix_norm`` and
    # ``rescale``, and the chunked memory reads it through the dual form (miras/chunked.py)
    rescaling: bool = False

    @abc.abstractmethod
    def project(self, acc: Tensor) -> Tensor:
        """φ: accumulator ``(..., d_in, d_out)`` to weights of the same shape."""

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class WeightDecay(Retention):
    r"""ℓ₂ local + global retention (Titans, Yaad): :math:`\varphi = \mathrm{id}`, the decay is the gate.

    With Yaad's retention the decay and step are :func:`yaad_gates`.
    """

    def project(self, acc: Tensor) -> Tensor:
        return _check_acc(acc)


class _LqProjection(torch.autograd.Function):
    r""":math:`W = A\,\rho(\|A\|_q)`, :math:`\rho(n) = \max(n, \epsilon)^{2-q}`, keeping only :math:`A` for
    back-propagation (autograd keeps three more matrices: :math:`A/s`, its square, :math:`A/n`).

    .. math::
        \bar A = \rho(n)\,\bar W + \rho'(n)\,\langle\bar W, A\rangle\,\frac{\partial n}{\partial A},
        \qquad \rho'(n) = (2-q)\,n^{1-q}\ (0\ \text{for}\ n < \epsilon),

    evaluated on :math:`A/n` so that no power of a large entry is formed.
    """

    @staticmethod
    def forward(ctx, acc: Tensor, retention: LqNormalization) -> Tensor:
        ctx.save_for_backward(acc)
        ctx.retention = retention
        return retention.rescale(acc, retention.matrix_norm(acc))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        (acc,) = ctx.saved_tensors
        retention = ctx.retention
        norm = retention.matrix_norm(acc)
        scale = norm.clamp_min(retention.eps)
        unit = acc / scale  # entries <= 1 where norm >= eps
        inner = (grad * unit).sum(dim=(-2, -1), keepdim=True)  # <grad, A> / n
        slope = torch.where(norm >= retention.eps, (2 - retention.q) * scale ** (2 - retention.q), 0.0)
        direction = retention.matrix_norm_grad(unit, norm / scale)  # 0-homogeneous: dn/dA at A/n
        return retention.rescale(grad, norm).add_(direction.mul_(slope * inner)), None


@implements("miras", 24)
class LqNormalization(Retention):
    r"""Moneta's ℓ_q retention (MIRAS v1, Eq. 24): :math:`\varphi(A) = A/\|A\|_q^{q-2}` per layer matrix.

    The norm runs over the last two dims (one layer of one head, docs/errata.md "MIRAS Eq. 24"), via
    :func:`moneta_normalize`.
    """

    rescaling = True
    eps = 1e-12

    def __init__(self, q: float = 4.0) -> None:
        self.q = _check_q(q, minimum=1.0, strict=False)

    def project(self, acc: Tensor) -> Tensor:
        return _LqProjection.apply(_check_acc(acc), self)

    def matrix_norm(self, acc: Tensor, *, bounded: bool = False) -> Tensor:
        """:math:`\\|C\\|_q` of each layer matrix, ``(..., 1, 1)``; ``bounded``: the caller has divided
        ``acc`` by a bound of its entries (no overflow possible), so the norm skips its max-scaling pass."""
        dims = (acc.dim() - 2, acc.dim() - 1)
        return _unscaled_lq_norm(acc, self.q, dims) if bounded else _lq_norm(acc, self.q, dims)

    def matrix_norm_grad(self, acc: Tensor, norm: Tensor) -> Tensor:
        r""":math:`\partial\|C\|_q/\partial C = \mathrm{Sign}(C)\,|C|^{q-1}/\|C\|_q^{q-1}` (0 where the norm
        is 0), given ``norm = matrix_norm(acc)``; computed in ``acc``'s memory (``acc`` is consumed)."""
        q = self.q
        if q == 2:
            direction = acc
        elif q == 4:  # an odd power keeps the sign: C^3
            direction = acc.pow_(3)
        else:
            direction = acc.abs().pow_(q - 1).mul_(torch.sign(acc))
        safe = torch.where(norm > 0, norm, torch.ones_like(norm))
        return direction.mul_(torch.where(norm > 0, safe ** (1 - q), torch.zeros_like(norm)))

    def rescale(self, x: Tensor, norm: Tensor) -> Tensor:
        """:math:`x / \\|C\\|_q^{q-2}` with the norm clamped at ``eps``: ``project(C) = rescale(C,
        matrix_norm(C))``, and ``rescale(h @ C, norm)`` reads through :math:`\\varphi(C)` by linearity."""
        return _rescale(x, norm, self.q, self.eps)


@implements("miras", 27)
class KLSoftmax(Retention):
    r"""Memora's KL retention (MIRAS v1, Eq. 21/27) in log space: :math:`\varphi(L) = c\,\mathrm{softmax}(L)`.

    The accumulator is the log-weights ``L`` (:func:`memora_log_step`); decay ``1 − λ`` (Eq. 21) or
    ``α`` (Eq. 27), step ``η'`` or ``η``. The softmax runs over ``dim``; the default −2 makes each output
    unit's incoming weights of a row-convention layer ``(d_in, d_out)`` a simplex (A7, docs/errata.md
    "MIRAS Eq. 27"). ``lag_token`` (default True) asks the memory for Eq. 30's first-token step.
    """

    def __init__(self, c: float = 1.0, dim: int | tuple[int, int] = -2, lag_token: bool = True) -> None:
        self.c = _positive_float("c", c)
        if dim not in (-1, -2, (-2, -1)):
            raise ValueError(f"dim must be -1, -2 or (-2, -1) (a slice of the last two dims), got {dim!r}")
        self.dim = dim
        self.lag_token = bool(lag_token)

    def project(self, acc: Tensor) -> Tensor:
        _check_acc(acc)
        if isinstance(self.dim, int):
            return self.c * torch.softmax(acc, dim=self.dim)
        return self.c * _softmax(acc, (acc.dim() - 2, acc.dim() - 1))


@implements("miras", 23)
class ElasticNet(Retention):
    r"""Elastic-net retention, FTRL view (MIRAS v1, Eq. 23): :math:`\varphi(A) = \mathcal{S}_{\gamma}(A)`.

    With an undecayed accumulator (decay 1) and step η, ``threshold = η/α`` gives Eq. 23 exactly.
    """

    def __init__(self, threshold: float) -> None:
        ok = isinstance(threshold, int | float) and not isinstance(threshold, bool)
        if not ok or not (0 <= threshold < math.inf):
            raise ValueError(f"threshold must be a float in [0, inf), got {threshold!r}")
        self.threshold = float(threshold)

    def project(self, acc: Tensor) -> Tensor:
        return _soft_threshold(_check_acc(acc), self.threshold)


class SigmoidBregman(Retention):
    r"""Sigmoid-Bregman retention (M-U24) in logit space: :math:`\varphi(U) = \sigma(U)` in (0, 1)."""

    def project(self, acc: Tensor) -> Tensor:
        return torch.sigmoid(_check_acc(acc))


__all__ = [
    "ElasticNet",
    "KLSoftmax",
    "LqNormalization",
    "Retention",
    "SigmoidBregman",
    "WeightDecay",
    "bregman_step",
    "elastic_net_ftrl",
    "elastic_net_step",
    "f_divergence_step",
    "kl_retention_step",
    "lq_ftrl_weights",
    "memora_log_step",
    "memora_step",
    "moneta_normalize",
    "moneta_step",
    "sigmoid_bregman_step",
    "soft_threshold",
    "yaad_gates",
]
