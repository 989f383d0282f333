r"""Associative memories and their inner objectives (NL v1, Definition 1 / NSAM: Eq. 6, 19–20, 98–99).

Nested Learning reads every learning rule as an *associative memory*: an operator :math:`\mathcal M` that
maps keys to values by minimising an inner objective :math:`\tilde{\mathcal L}(\mathcal M; K, V)`. The
update a level makes is either one gradient step on that objective from the current state (the
linearised proximal step of Eq. 19–20) or the exact proximal step (Eq. 98–99). Optimizers are instances:
momentum is a dot-product memory of gradients (Eq. 13, 34), Adam/AdaGrad the minimisers of the element-wise
and matrix objectives of Appendix B (Eq. 101, 106), Newton–Schulz one step on the orthogonality objective
(Eq. 43–44), Delta Gradient Descent the proximal step on the L2 objective (Eq. 56).

Shapes (column-vector convention of the NL catalog): a matrix memory ``M`` is ``(d_v, d_k)`` and reads a
key as ``M k``; ``keys`` are ``(n, d_k)`` and ``values`` ``(n, d_v)``, one row per (key, value) pair, and
objectives sum over the pairs. The Appendix-B objectives take gradients as keys (see each class).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from neural_memory.registry import implements


def _check_lr(lr: float) -> float:
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr >= 0 or lr == float("inf"):
        raise ValueError(f"lr must be a finite float >= 0, got {lr!r}")
    return float(lr)


def _check_pairs(memory: Tensor, keys: Tensor, values: Tensor) -> None:
    """``memory (d_v, d_k)``, ``keys (n, d_k)``, ``values (n, d_v)``."""
    if memory.dim() != 2:
        raise ValueError(f"memory must be (d_v, d_k), got shape {tuple(memory.shape)}")
    d_v, d_k = memory.shape
    if keys.dim() != 2 or keys.shape[1] != d_k:
        raise ValueError(f"keys must be (n, d_k={d_k}), got shape {tuple(keys.shape)}")
    if values.shape != (keys.shape[0], d_v):
        raise ValueError(f"values must be (n={keys.shape[0]}, d_v={d_v}), got shape {tuple(values.shape)}")


class InnerObjective(ABC):
    r"""An inner objective :math:`\tilde{\mathcal L}(\mathcal M; K, V)` of an associative memory (NL Def. 1).

    Subclasses give the value (:meth:`loss`) and its closed-form gradient in the memory (:meth:`grad`);
    those with a closed-form proximal step or minimiser also define ``proximal_step`` /
    ``minimiser``, which :func:`proximal_step` and :func:`associative_memory` call.
    """

    @abstractmethod
    def loss(self, memory: Tensor, keys: Tensor, values: Tensor | None) -> Tensor:
        """The objective's value, a scalar tensor."""

    @abstractmethod
    def grad(self, memory: Tensor, keys: Tensor, values: Tensor | None) -> Tensor:
        """:math:`\\nabla_{\\mathcal M}\\tilde{\\mathcal L}`, shaped like ``memory``."""


@implements("nl", 9, 13, 34)
class DotProductObjective(InnerObjective):
    r"""The dot-product objective :math:`\sum_i\langle \mathcal M k_i, v_i\rangle` (NL v1, Eq. 9, 13, 34).

    .. math::
        W_{t+1} = \arg\min_{W}\ \langle W\mathbf{x}_{t+1}, \nabla_{y_{t+1}}\mathcal{L}\rangle
            + \frac{1}{2\eta_{t+1}}\|W - W_t\|_2^2 \qquad (9)

        \mathbf{m}_{t+1} = \arg\min_{\mathbf m}\ -\langle \mathbf{m}\,\mathbf{x}_{t+1},
            \nabla_{y_{t+1}}\mathcal{L}\rangle + \frac{1}{2\eta_{t+1}}\|\mathbf m - \mathbf m_t\|_2^2
            \qquad (13)

        \min_{\mathbf m}\ \langle \mathbf{m}\hat{\mathbf{x}}_{\ell-1}, \boldsymbol\delta_\ell\rangle
            \qquad (34)

    The objective is linear in the memory, so one gradient step *is* its exact proximal step:
    :math:`\mathcal M - \eta\sum_i v_i k_i^\top`. Plain GD on a linear layer is this memory with key
    :math:`x` and value :math:`\nabla_y\mathcal L` (Eq. 9); momentum is it with value
    :math:`-\nabla_y\mathcal L` (Eq. 13) or, in Eq. 34's sign, :math:`\delta` and a descent step.

    Shapes: ``memory (d_v, d_k)``, ``keys (n, d_k)``, ``values (n, d_v)``.
    """

    def loss(self, memory: Tensor, keys: Tensor, values: Tensor | None) -> Tensor:
        _check_pairs(memory, keys, values)
        return (values * (keys @ memory.T)).sum()

    def grad(self, memory: Tensor, keys: Tensor, values: Tensor | None) -> Tensor:
        _check_pairs(memory, keys, values)
        return values.T @ keys

    def proximal_step(self, memory: Tensor, keys: Tensor, values: Tensor, lr: float) -> Tensor:
        """Exact ``argmin ⟨M k, v⟩ + ‖M − M_t‖²/(2η)`` = ``M_t − η Σ v kᵀ`` (the objective is linear)."""
        return memory - _check_lr(lr) * self.grad(memory, keys, values)


@implements("nl", 56)
class L2RegressionObjective(InnerObjective):
    r"""The regression objective :math:`\tfrac12\sum_i\|\mathcal M k_i - v_i\|_2^2` (NL v1, Eq. 56, 99).

    .. math::
        W_{t+1} = \arg\min_{W}\ \frac{1}{2}\|W\mathbf{x}_t - \mathbf{u}_t\|_2^2
            + \frac{1}{2\eta_t}\|W - W_t\|_2^2 \qquad (56)

    The Delta-rule / Delta Gradient Descent objective. Its proximal step has the closed form
    :math:`\mathcal M^* = (V^\top K + \mathcal M_t/\eta)(K^\top K + I/\eta)^{-1}` and its minimiser (Eq. 6
    with this objective) is least squares, :math:`V^\top (K^{+})^\top`.

    Shapes: ``memory (d_v, d_k)``, ``keys (n, d_k)``, ``values (n, d_v)``.
    """

    def loss(self, memory: Tensor, keys: Tensor, values: Tensor | None) -> Tensor:
        _check_pairs(memory, keys, values)
        return 0.5 * ((keys @ memory.T - values) ** 2).sum()

    def grad(self, memory: Tensor, keys: Tensor, values: Tensor | None) -> Tensor:
        _check_pairs(memory, keys, values)
        return (keys @ memory.T - values).T @ keys

    def proximal_step(self, memory: Tensor, keys: Tensor, values: Tensor, lr: float) -> Tensor:
        """Exact ``argmin ½Σ‖M k − v‖² + ‖M − M_t‖²/(2η)``: solve ``M (η KᵀK + I) = M_t + η VᵀK``."""
        _check_pairs(memory, keys, values)
        lr = _check_lr(lr)
        eye = torch.eye(memory.shape[1], dtype=memory.dtype, device=memory.device)
        system = lr * (keys.T @ keys) + eye  # (d_k, d_k), symmetric positive definite
        return torch.linalg.solve(system, (memory + lr * values.T @ keys).T).T

    def minimiser(self, keys: Tensor, values: Tensor) -> Tensor:
        """Minimum-norm least squares ``M* = Vᵀ (K⁺)ᵀ``, ``(d_v, d_k)``."""
        _check_pairs(values.new_zeros(values.shape[1], keys.shape[1]), keys, values)
        return (torch.linalg.pinv(keys) @ values).T


def _check_lam(lam: float) -> float:
    if isinstance(lam, bool) or not isinstance(lam, int | float) or not lam >= 0 or lam == float("inf"):
        raise ValueError(f"lam must be a finite float >= 0, got {lam!r}")
    return float(lam)


@implements("nl", 101)
class ElementwiseMomentumObjective(InnerObjective):
    r"""Appendix B's element-wise momentum objective (NL v1, Eq. 101).

    .. math::
        \tilde{\mathcal{L}}_t = \sum_{i=1}^t \|\mathbf{m}_{\ell_t}\odot\mathbf{g}_{\ell_{i+1}}
            - P_{\ell_t}\|_2^2 + \lambda_\ell\|\mathbf{m}_{\ell_t}\|_F^2 \qquad (101)

    The momentum ``m`` maps each past gradient, element by element, to a global property ``P`` of the
    gradients. Its minimiser is :math:`m^* = P\odot\sum_i g_i / (\sum_i g_i^{\odot 2} + \lambda)`; the
    choices of ``P`` in Eq. 104–105 turn it into momentum and Adam.

    Shapes: ``memory`` (m) any shape ``S``; ``keys`` the gradients ``(n, *S)``; ``values`` P, ``S``.
    """

    def __init__(self, lam: float = 0.0) -> None:
        self.lam = _check_lam(lam)

    @staticmethod
    def _check(memory: Tensor, keys: Tensor, values: Tensor | None) -> None:
        if keys.shape[1:] != memory.shape or values is None or values.shape != memory.shape:
            raise ValueError(
                f"keys must be (n, *{tuple(memory.shape)}) and values {tuple(memory.shape)}, got "
                f"{tuple(keys.shape)} and {None if values is None else tuple(values.shape)}"
            )

    def loss(self, memory: Tensor, keys: Tensor, values: Tensor | None) -> Tensor:
        self._check(memory, keys, values)
        return ((memory * keys - values) ** 2).sum() + self.lam * (memory**2).sum()

    def grad(self, memory: Tensor, keys: Tensor, values: Tensor | None) -> Tensor:
        self._check(memory, keys, values)
        return 2 * ((memory * keys - values) * keys).sum(0) + 2 * self.lam * memory

    def minimiser(self, keys: Tensor, values: Tensor) -> Tensor:
        """``m* = P ⊙ Σ g / (Σ g² + λ)``; ``ValueError`` where the minimiser is not unique."""
        self._check(values, keys, values)
        curvature = (keys**2).sum(0) + self.lam
        if not bool((curvature > 0).all()):
            raise ValueError("the minimiser is not unique where every gradient is 0 and lam = 0: use lam > 0")
        return values * keys.sum(0) / curvature


@implements("nl", 102)
def optimal_elementwise_momentum(p: Tensor, m_tilde: Tensor, h: Tensor, lam: float = 0.0) -> Tensor:
    r"""The optimal element-wise momentum of Appendix B (NL v1, Eq. 102).

    .. math::
        \boldsymbol{m}^{(t)*}_{\ell,i}
            = \big[(\boldsymbol H^{(t)}_{\ell,i} + \lambda_\ell\boldsymbol I)^{-1}\big]\odot
            \tilde{\boldsymbol M}^{(t)}_{\ell,i+1}\odot\boldsymbol P_{\ell_t}, \quad
        \tilde{\boldsymbol M}_{i+1} = \tilde{\boldsymbol M}_{i} + \beta_1\boldsymbol g_{i+1}, \quad
        \boldsymbol H_{i+1} = \boldsymbol H_{i} + \beta_2\boldsymbol g_{i+1}\odot\boldsymbol g_{i+1}
        \qquad (102)

    Element by element, ``(H + λ)⁻¹`` is the reciprocal ``1 / (H + λ)``. With ``β₁ = β₂ = 1`` this is the
    exact minimiser of Eq. 101. Eq. 102 prints :math:`\tilde M_{i+1} = M_i + \beta_1 g` where the
    recursion is in :math:`\tilde M` (docs/errata.md, NL Eq. 102, 109).

    Args:
        p: the property ``P``, any shape ``S``.
        m_tilde: accumulated gradients ``M̃ = Σ β₁ g``, shape ``S``.
        h: accumulated squared gradients ``H = Σ β₂ g²``, shape ``S``.
        lam: ridge ``λ >= 0``; ``H + λ`` must be positive everywhere.

    Returns:
        ``m*``, shape ``S``.
    """
    curvature = h + _check_lam(lam)
    if not bool((curvature > 0).all()):
        raise ValueError("h + lam must be > 0 everywhere (use lam > 0 where a gradient was always 0)")
    return m_tilde * p / curvature


@implements("nl", 106)
class MatrixMomentumObjective(InnerObjective):
    r"""Appendix B's matrix momentum objective (NL v1, Eq. 106).

    .. math::
        \tilde{\mathcal{L}}_t = \sum_{i=1}^t \|\mathbf{m}_{\ell_t}\mathbf{g}_{\ell_{i+1}}
            - P_{\ell_t}\|_2^2 + \lambda_\ell\|\mathbf{m}_{\ell_t}\|_F^2 \qquad (106)

    The momentum is a matrix acting on the gradients. Setting the gradient
    :math:`2\sum_i(m g_i - P)g_i^\top + 2\lambda m` to zero gives the minimiser
    :math:`m^* = P\,(\sum_i g_i)^\top(\sum_i g_i g_i^\top + \lambda I)^{-1}`, with the inverse on the
    *right* (Eq. 107 prints it on the left; docs/errata.md).

    Shapes: ``memory`` m ``(p, d)``; ``keys`` the gradients ``(n, d, q)`` (``q = 1`` for vectors);
    ``values`` P ``(p, q)``.
    """

    def __init__(self, lam: float = 0.0) -> None:
        self.lam = _check_lam(lam)

    @staticmethod
    def _check(memory: Tensor, keys: Tensor, values: Tensor | None) -> None:
        p, d = memory.shape
        if keys.dim() != 3 or keys.shape[1] != d or values is None or values.shape != (p, keys.shape[2]):
            raise ValueError(
                f"keys must be (n, d={d}, q) and values (p={p}, q), got {tuple(keys.shape)} and "
                f"{None if values is None else tuple(values.shape)}"
            )

    def loss(self, memory: Tensor, keys: Tensor, values: Tensor | None) -> Tensor:
        self._check(memory, keys, values)
        return ((memory @ keys - values) ** 2).sum() + self.lam * (memory**2).sum()

    def grad(self, memory: Tensor, keys: Tensor, values: Tensor | None) -> Tensor:
        self._check(memory, keys, values)
        return 2 * ((memory @ keys - values) @ keys.mT).sum(0) + 2 * self.lam * memory

    def minimiser(self, keys: Tensor, values: Tensor) -> Tensor:
        """``m* = P (Σ g)ᵀ (Σ g gᵀ + λ I)⁻¹``, ``(p, d)``."""
        self._check(values.new_zeros(values.shape[0], keys.shape[1]), keys, values)
        gram = (keys @ keys.mT).sum(0)  # (d, d)
        return optimal_matrix_momentum(values, keys.sum(0).mT, gram, self.lam)


@implements("nl", 107)
def optimal_matrix_momentum(p: Tensor, m_tilde: Tensor, h: Tensor, lam: float = 0.0) -> Tensor:
    r"""The optimal matrix momentum of Appendix B, inverse on the right (NL v1, Eq. 107; M = P M̃ is Eq. 108).

    .. math::
        \boldsymbol{m}^{(t)*}_{\ell,i}
            = \big[(\boldsymbol H^{(t)}_{\ell,i} + \lambda_\ell\boldsymbol I)^{-1}\big]
            \big(\boldsymbol M^{(t)}_{\ell,i}\big), \qquad
        \boldsymbol M^{(t)}_{\ell,i+1} = \boldsymbol P_{\ell_t}\tilde{\boldsymbol M}^{(t)}_{\ell,i+1}
            \qquad (107, 108)

    We compute :math:`m^* = P\tilde M\,(H + \lambda I)^{-1}`: with :math:`\tilde M = \sum\beta_1 g^\top`
    (Eq. 109) and :math:`H = \sum\beta_2 g g^\top` (Eq. 110) this is the exact minimiser of Eq. 106 for
    :math:`\beta_1 = \beta_2 = 1`. The printed left inverse is not (docs/errata.md, NL Eq. 106–111).

    Args:
        p: the value ``P``, ``(p, q)``.
        m_tilde: accumulated transposed gradients ``M̃ = Σ β₁ gᵀ``, ``(q, d)``.
        h: accumulated outer products ``H = Σ β₂ g gᵀ``, ``(d, d)``, symmetric positive semi-definite.
        lam: ridge ``λ >= 0``; ``H + λ I`` must be invertible.

    Returns:
        ``m*``, ``(p, d)``.
    """
    lam = _check_lam(lam)
    if h.dim() != 2 or h.shape[0] != h.shape[1] or m_tilde.dim() != 2 or m_tilde.shape[1] != h.shape[0]:
        raise ValueError(f"h must be (d, d) and m_tilde (q, d), got {tuple(h.shape)}, {tuple(m_tilde.shape)}")
    if p.dim() != 2 or p.shape[1] != m_tilde.shape[0]:
        raise ValueError(f"p must be (p, q={m_tilde.shape[0]}), got {tuple(p.shape)}")
    eye = torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    return torch.linalg.solve(h + lam * eye, (p @ m_tilde).T).T  # (H + λI) symmetric


@implements("nl", 43)
class OrthogonalityObjective(InnerObjective):
    r"""The orthogonality objective that Newton–Schulz descends (NL v1, Eq. 43, with Eq. 44's anchor).

    .. math::
        \tilde{\mathcal{L}}(P(g); g) = \|P(g)^\top P(g) - I\|_F^2 \qquad (43)

    We implement :math:`\tfrac12\|O - g\|_F^2 + \tfrac12\|O^\top O - I\|_F^2`, the objective whose gradient
    Eq. 44 prints, :math:`O - g + 2O(O^\top O - I)`; ``anchor=False`` drops the first term, leaving the
    printed Eq. 43 up to its factor ½ (docs/errata.md, NL Eq. 43–44). It is zero exactly at matrices with
    orthonormal columns equal to ``g``.

    Shapes: ``memory`` O ``(m, n)``; ``keys`` the anchor g ``(m, n)``; ``values`` unused (``None``).
    """

    def __init__(self, anchor: bool = True) -> None:
        self.anchor = bool(anchor)

    @staticmethod
    def _gap(memory: Tensor) -> Tensor:
        return memory.T @ memory - torch.eye(memory.shape[1], dtype=memory.dtype, device=memory.device)

    def _check(self, memory: Tensor, keys: Tensor) -> None:
        if memory.dim() != 2 or keys.shape != memory.shape:
            raise ValueError(
                f"memory and keys must be equal (m, n) matrices, got {memory.shape}, {keys.shape}"
            )

    def loss(self, memory: Tensor, keys: Tensor, values: Tensor | None = None) -> Tensor:
        self._check(memory, keys)
        ortho = 0.5 * (self._gap(memory) ** 2).sum()
        return ortho + 0.5 * ((memory - keys) ** 2).sum() if self.anchor else ortho

    def grad(self, memory: Tensor, keys: Tensor, values: Tensor | None = None) -> Tensor:
        self._check(memory, keys)
        ortho = 2 * memory @ self._gap(memory)
        return ortho + (memory - keys) if self.anchor else ortho


@implements("nl", 6)
@implements("miras", 4)
def associative_memory(objective: InnerObjective, keys: Tensor, values: Tensor) -> Tensor:
    r"""The memory that best maps the keys to the values (NL v1, Eq. 6, Definition 1).

    Also MIRAS v1, Eq. 4 (Definition 3.1, the same definition; there the objective is the "attentional
    bias" :math:`\mathcal L(\mathcal M(\mathcal K); \mathcal V)`).

    .. math::
        \mathcal{M}^* = \arg\min_{\mathcal{M}}\ \tilde{\mathcal{L}}(\mathcal{M}(\mathcal{K}); \mathcal{V})
            \qquad (6)

    The closed-form minimiser of ``objective`` over the pairs (for example least squares for
    :class:`L2RegressionObjective`).

    Args:
        objective: an :class:`InnerObjective` with a closed-form ``minimiser``.
        keys, values: the pairs, shaped as the objective documents.

    Returns:
        ``M*``, shaped as that objective's memory.
    """
    minimiser = getattr(objective, "minimiser", None)
    if minimiser is None:
        raise TypeError(f"{type(objective).__name__} has no closed-form minimiser (it may be unbounded)")
    return minimiser(keys, values)


@implements("nl", 19, 20, 41)
def gd_step(
    objective: InnerObjective, memory: Tensor, keys: Tensor, values: Tensor | None, lr: float
) -> Tensor:
    r"""One gradient step of a level on its inner objective (NL v1, Eq. 19–20, 41).

    .. math::
        \theta^{(k)}_{i\,t+1} = \arg\min_{\Phi}\ \langle \Phi\,\mathbf{k}_{t+1},
            -\nabla\mathcal{L}^{(k)}_i(\theta^{(k)}_{i_t}; \mathbf{k}_{t+1}, \mathbf{v}_{t+1})\rangle
            + \frac{1}{2\eta^{(k)}_{i\,t+1}}\|\Phi - \theta^{(k)}_{i_t}\|_2^2 \qquad (19, 20)

        P_{t+1} = P_t - \zeta_{t+1}\nabla_{P_t}\tilde{\mathcal{L}}(P_t; g_{t+1}, \hat g_{t+1}) \qquad (41)

    The objective linearised at the current state plus a proximal term is minimised by one gradient step,
    :math:`\theta - \eta\nabla_\theta\tilde{\mathcal L}(\theta)`. We step *down* the level's objective,
    the sign of Eq. 9, 31 and 98; the printed ``−∇`` of Eq. 19–20 read literally steps up
    (docs/errata.md, NL Eq. 19–20). Eq. 41 prints :math:`P_{t+1}` on its right-hand side; we use
    :math:`P_t` (docs/errata.md, NL Eq. 41).

    Args:
        objective: the level's :class:`InnerObjective`.
        memory: the current state θ_t, shaped as the objective's memory.
        keys, values: the context, shaped as the objective documents.
        lr: step η >= 0.

    Returns:
        θ_{t+1}, shaped like ``memory``.
    """
    return memory - _check_lr(lr) * objective.grad(memory, keys, values)


@implements("nl", 98, 99)
def proximal_step(
    objective: InnerObjective, memory: Tensor, keys: Tensor, values: Tensor, lr: float
) -> Tensor:
    r"""The exact proximal update of a level on its inner objective (NL v1, Eq. 98–99, Definitions 6–7).

    .. math::
        \theta^{(k)}_{i\,t+1} = \arg\min_{\Phi}\ \mathcal{L}^{(k)}_i(\Phi; \mathbf{k}_{t+1},
            \mathbf{v}_{t+1}) + \frac{1}{2\eta^{(k)}_{i\,t+1}}\|\Phi - \theta^{(k)}_{i\,t}\|_2^2
            \qquad (98, 99)

    The objective itself, not its linearisation: for the dot-product objective this is one GD step, for
    the L2 objective it is Delta Gradient Descent's update (Eq. 56).

    Args:
        objective: an :class:`InnerObjective` with a closed-form ``proximal_step``.
        memory: θ_t; keys, values: the context; lr: η >= 0.

    Returns:
        θ_{t+1}, shaped like ``memory``.
    """
    step = getattr(objective, "proximal_step", None)
    if step is None:
        raise TypeError(f"{type(objective).__name__} has no closed-form proximal step")
    return step(memory, keys, values, lr)


__all__ = [
    "DotProductObjective",
    "ElementwiseMomentumObjective",
    "InnerObjective",
    "L2RegressionObjective",
    "MatrixMomentumObjective",
    "OrthogonalityObjective",
    "associative_memory",
    "gd_step",
    "optimal_elementwise_momentum",
    "optimal_matrix_momentum",
    "proximal_step",
]
