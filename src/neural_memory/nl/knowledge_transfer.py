r"""Knowledge transfer between levels of a nested system (NL v1, §3.3: Eq. 26, 28).

Levels pass knowledge to each other in a few ways (Eq. 24–28). Two of them define computable maps:

* through the forward pass: a higher-frequency memory reads the output of a lower-frequency one. The
  paper's example is the linear transformer, whose token-updated memory :math:`\mathcal M_t` reads the
  query made by the slow projection :math:`W_q` (Eq. 26, :func:`two_level_forward`);
* through the initial state: the slow level learns where the fast level starts, so that the fast memory,
  after adapting to a context, does well on it — MAML (Eq. 28, :func:`meta_learned_initialisation`).

The direct parametric and non-parametric connections (Eq. 24, 25, 27) only say that one block's map may
depend on the other's parameters, output or context, without saying how; they have nothing of their own to
compute (the registry records them as ``n/a``).

Column convention: a matrix memory is ``(d_v, d_k)`` and reads ``M k``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from neural_memory.common.validation import check_int
from neural_memory.nl.associative_memory import L2RegressionObjective, _check_pairs, gd_step
from neural_memory.nl.training_objective import minimise_expected_loss
from neural_memory.registry import implements


@implements("nl", 26)
def two_level_forward(fast_memory: Tensor, slow_weight: Tensor, x: Tensor) -> Tensor:
    r"""Linear attention's read as a forward pass through two levels (NL v1, Eq. 26).

    .. math::
        \mathbf{y}_t = \mathcal{M}_t\mathbf{q}_t = \underbrace{\mathcal{M}_t}_{\text{higher-frequency
            memory}}\ \underbrace{[\mathbf{x}_t W_q]}_{\text{lower-frequency memory}} \qquad (26)

    The slow memory :math:`W_q` (changed only by training) maps the token to a query; the fast memory
    :math:`\mathcal M_t` (rewritten every token, Eq. 15) maps the query to the output. The paper prints
    the row-convention :math:`x_t W_q`; in the column convention of Eq. 14 it is :math:`W_q x_t`
    (docs/errata.md, NL Eq. 26).

    Args:
        fast_memory: ``M_t``, ``(d_v, d_k)``, or one state per token ``(L, d_v, d_k)``.
        slow_weight: ``W_q``, ``(d_k, d_in)``.
        x: a token ``(d_in,)``, or ``L`` tokens ``(L, d_in)`` (then ``fast_memory`` is ``(L, d_v, d_k)``
            or one shared state).

    Returns:
        ``y``: ``(d_v,)`` for one token, ``(L, d_v)`` for ``L``.
    """
    if fast_memory.dim() not in (2, 3):
        raise ValueError(f"fast_memory must be (d_v, d_k) or (L, d_v, d_k), got {tuple(fast_memory.shape)}")
    d_k = fast_memory.shape[-1]
    if slow_weight.dim() != 2 or slow_weight.shape[0] != d_k:
        raise ValueError(f"slow_weight must be (d_k={d_k}, d_in), got shape {tuple(slow_weight.shape)}")
    d_in = slow_weight.shape[1]
    if x.dim() not in (1, 2) or x.shape[-1] != d_in:
        raise ValueError(f"x must be (d_in={d_in},) or (L, d_in={d_in}), got shape {tuple(x.shape)}")
    if fast_memory.dim() == 3 and (x.dim() != 2 or fast_memory.shape[0] != x.shape[0]):
        length = x.shape[0] if x.dim() == 2 else 1
        raise ValueError(
            f"fast_memory must be (L={length}, d_v, d_k) or (d_v, d_k), got {tuple(fast_memory.shape)}"
        )
    query = x @ slow_weight.T  # the lower-frequency memory's output, W_q x_t per row
    return (fast_memory @ query[..., None]).squeeze(-1)


def _adapt(init: Tensor, keys: Tensor, values: Tensor, inner_lr: float, inner_steps: int) -> Tensor:
    """The fast memory after ``inner_steps`` GD steps on its L2 objective over the context, from ``init``."""
    memory = init
    for _ in range(inner_steps):
        memory = gd_step(L2RegressionObjective(), memory, keys, values, inner_lr)
    return memory


@implements("nl", 28)
def adapted_memory_loss(
    init: Tensor, keys: Tensor, values: Tensor, inner_lr: float, inner_steps: int = 1
) -> Tensor:
    r"""The loss of a fast memory started at ``init`` and adapted to a context (the ℓ of NL v1, Eq. 28).

    .. math::
        \ell\big(\mathcal{M}^{(1)}(\cdot; \Phi), C\big)
            = \tfrac12\sum_{(k, v)\in C}\|\mathcal{M}_S k - v\|_2^2, \qquad \mathcal M_0 = \Phi,\quad
        \mathcal M_{s+1} = \mathcal M_s - \alpha\nabla\tilde{\mathcal L}(\mathcal M_s; C)

    The inner block is a linear associative memory that learns its context ``C`` by ``inner_steps`` GD
    steps (lr ``α``) on the L2 objective (:class:`~neural_memory.nl.associative_memory.L2RegressionObjective`)
    and is judged by the same objective after adapting. The paper leaves ℓ and the inner rule open;
    this choice and why are in docs/errata.md (NL Eq. 28). Differentiable in ``init`` through the inner
    steps (second-order MAML).

    Args:
        init: ``Φ``, ``(d_v, d_k)``.
        keys: the context's keys, ``(n, d_k)``; values: ``(n, d_v)``.
        inner_lr: ``α >= 0``.
        inner_steps: ``S >= 0`` (0: the loss at ``Φ`` itself).

    Returns:
        The scalar loss.
    """
    _check_pairs(init, keys, values)
    check_int("inner_steps", inner_steps, minimum=0)
    adapted = _adapt(init, keys, values, inner_lr, inner_steps)
    return L2RegressionObjective().loss(adapted, keys, values)


@implements("nl", 28)
def meta_learned_initialisation(
    init: Tensor,
    contexts: Sequence[tuple[Tensor, Tensor]],
    inner_lr: float,
    outer_lr: float,
    inner_steps: int = 1,
    *,
    max_steps: int = 10_000,
    tol: float = 1e-13,
) -> Tensor:
    r"""The initial state of a fast memory learned by the slower level, MAML (NL v1, Eq. 28).

    .. math::
        \Theta^{(1)}_0 = \arg\min_{\Phi}\ \mathbb{E}_{C\sim C^{(0)}}\Big[\ell\big(\mathcal{M}^{(1)}(\cdot;
            \Phi), C\big)\Big] \qquad (28)

    Knowledge moves from the outer level to the inner one through where the inner memory starts: the
    minimiser, over the given contexts, of the mean :func:`adapted_memory_loss`, found by outer gradient
    descent through the inner steps (:func:`neural_memory.nl.training_objective.minimise_expected_loss`,
    Eq. 4 of which this is an instance).

    Args:
        init: the starting ``Φ`` of the outer descent, ``(d_v, d_k)``.
        contexts: non-empty sequence of ``(keys (n, d_k), values (n, d_v))`` pairs, the sample of ``C^{(0)}``.
        inner_lr, inner_steps: as in :func:`adapted_memory_loss`.
        outer_lr: outer GD step ``> 0``.
        max_steps, tol: stopping rule of the outer descent (see ``minimise_expected_loss``).

    Returns:
        ``Θ_0^{(1)}``, ``(d_v, d_k)``.
    """
    if isinstance(contexts, Tensor) or not isinstance(contexts, Sequence) or len(contexts) == 0:
        raise ValueError("contexts must be a non-empty sequence of (keys, values) pairs")
    for context in contexts:
        if not isinstance(context, tuple) or len(context) != 2:
            raise TypeError(f"each context must be a (keys, values) pair, got {type(context).__name__}")
        _check_pairs(init, *context)
    check_int("inner_steps", inner_steps, minimum=0)

    def loss(phi: Tensor, keys: Tensor, values: Tensor) -> Tensor:
        return adapted_memory_loss(phi, keys, values, inner_lr, inner_steps)

    return minimise_expected_loss(loss, init, list(contexts), outer_lr, max_steps=max_steps, tol=tol)


__all__ = ["adapted_memory_loss", "meta_learned_initialisation", "two_level_forward"]
