r"""Self-modifying Titans (NL v1, §8.1–8.2, Eq. 76–93; N-U13–N-U15).

A Titans memory whose keys, values, queries, learning rates and retention gates are not static projections
of the input (Eq. 76) but the reads of *memories* that learn in context too (Eq. 79, 83/86). Every memory
:math:`\mathcal M_\square`, :math:`\square \in \{k, v, q, \eta, \alpha, \text{memory}\}`, regresses its own
self-generated value :math:`\hat v_{\square,t} = \mathcal M_{\square,t-1}(v_t)` (Eq. 84/87) from the key
:math:`k_t` (Eq. 85) and is updated by Delta Gradient Descent with weight decay (Eq. 88):

.. math::
    \mathcal{M}_{\square,t} = \mathcal{M}_{\square,t-1}(\alpha_t\mathbf I - \eta_t\mathbf k_t\mathbf k_t^\top)
        - \eta_t\nabla\mathcal L(\mathcal M_{\square,t-1}; \mathbf k_t, \hat{\mathbf v}_{\square,t})

**Memories.** ``memory="residual_mlp"`` (default) is Eq. 89/91, :math:`\mathcal M(z) = z + W_1\sigma(W_2z)`,
``memory="linear"`` the matrix memory of Eq. 92–93. Weights are kept in the row convention of the Titans
code, one ``(N, d_in, d_out)`` tensor per layer, read as ``z W`` — so the paper's
:math:`\mathcal M(\alpha I - \eta kk^\top)` (column convention) is :math:`(\alpha I - \eta kk^\top)W` here.
For the residual MLP the ``kk^T`` term acts on the input side of the first layer (the one that reads
:math:`k`); the second layer only decays by :math:`\alpha_t` (the paper does not say; docs/errata.md, NL
Eq. 88).

**Scalar memories.** :math:`\mathcal M_\eta` and :math:`\mathcal M_\alpha` are ``d → d`` memories like the
others (so that Eq. 84's :math:`\mathcal M(v)` and the residual exist), followed by a learned linear read-out
and a sigmoid: :math:`\eta_t = \sigma(w_\eta^\top\mathcal M_\eta(x_t) + b_\eta)`, same for
:math:`\alpha_t` — both in (0, 1) (docs/errata.md, NL Eq. 89).

**Chunks** (Eq. 90–93, N-U15). Chunk boundaries sit every ``C`` tokens of the stream (``chunk_size`` for
:math:`\mathcal M_{memory}`, ``other_chunk_size`` for the others; one divides the other). Within a chunk
everything — outputs, keys, values, gates, self-generated values and every inner gradient — is computed at
the state the memory had at the end of the previous chunk (the prose; the printed index
:math:`C\lceil t/C\rceil` is the end of the *current* chunk, docs/errata.md NL Eq. 90). The only sequential
part is the linear recurrence in the decay: for the first layer it is a gated delta rule, run in the WY/UT
chunk form of :func:`~neural_memory.common.delta_rule_chunked.chunk_delta_rule`; for the other layers the
decay is a scalar and the chunk end is a closed form. ``C = 1`` is the token-by-token rule (Eq. 86–88),
and :func:`self_modifying_reference` is that loop (for any ``C``, with the same chunk semantics).

**Outputs** are :math:`y_t = \mathcal M_{memory}(q_t)` at that chunk-start state (Eq. 83's
read-before-write when ``C = 1``). **State** (:class:`SelfModifyingState`): every memory's current weights,
its chunk-start weights and the stream position — a size fixed by the model; one call equals two calls at
any split point.

**Outer loop.** The initial states :math:`\mathcal M_{\square,0}`, :math:`W_q` and the gate read-outs are
``nn.Parameter`` s; the inner gradients are closed-form tensor expressions, so the outer gradient flows
through every inner update.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn
from torch.func import grad, vmap

from neural_memory.common.compiled import check_compile_chunks, chunk_step
from neural_memory.common.validation import check_int
from neural_memory.registry import implements
from neural_memory.titans.memory_model import ACTIVATIONS, scaled_act_grad

Weights = tuple[Tensor, ...]  # linear: (W,) (N, d, d); residual MLP: (W_2 (N, d, h), W_1 (N, h, d))
MEMORIES = ("residual_mlp", "linear")
OBJECTIVES = ("l2", "dot")
RULES = ("dgd", "gd")
VALUES = ("generated", "shared")
# α is a sigmoid; in float32 it underflows to 0 for logits below about -88, and the chunk form divides by α
# (the gated delta rule's β = η/α), so it is kept at or above this floor (a retention of 1e-4 still erases)
ALPHA_MIN = 1e-4


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


# --------------------------------------------------------------------------------------------------
# The memories and their objective: Eq. 78, 82, 89, 91; Eq. 77, 80, 81, 85
# --------------------------------------------------------------------------------------------------


@implements("nl", 89, 91)
def residual_memory(z: Tensor, w_in: Tensor, w_out: Tensor, activation: str = "silu") -> Tensor:
    r"""The 2-layer residual memory MLP (NL v1, Eq. 89, repeated as Eq. 91).

    .. math::
        \mathcal{M}_{\square}(\cdot) = (\cdot) + W_{\square,1}\sigma(W_{\square,2}(\cdot)) \qquad (89, 91)

    The input plus a one-hidden-layer MLP of it; :math:`W_{\square,1} = 0` is the identity. Row convention:
    ``w_in`` is :math:`W_{\square,2}^\top`, ``w_out`` is :math:`W_{\square,1}^\top`. :math:`\sigma` is not
    named by the paper: SiLU by default (as the Titans memory).

    Args:
        z: ``(N, n, d)``.
        w_in: ``(N, d, h)``; w_out: ``(N, h, d)``.
        activation: ``"silu"`` or ``"gelu"``.

    Returns:
        ``(N, n, d)``.
    """
    act = ACTIVATIONS[activation]
    return z + act(z @ w_in) @ w_out


@implements("nl", 78, 82)
def memory_read(weights: Weights, z: Tensor, activation: str = "silu") -> Tensor:
    r"""Read a memory state with a query (NL v1, Eq. 78 for a matrix memory, Eq. 82 for any memory).

    .. math::
        \mathbf{y}_t = \mathcal{M}_t \mathbf{q}_t \quad (78), \qquad
        \mathbf{y}_{t} = \mathcal{M}_{\text{mem},t}(\mathbf{q}_{t}) \quad (82)

    ``weights`` is the state read; the caller decides which (the module reads the chunk-start state,
    Eq. 83/90). One weight is a matrix memory (``z W``, the row form of :math:`\mathcal M q`), two are the
    residual MLP of Eq. 89.

    Args:
        weights: ``(W,)`` with ``W (N, d_in, d_out)``, or ``(W_2, W_1)`` of :func:`residual_memory`.
        z: queries ``(N, n, d_in)``.

    Returns:
        ``(N, n, d_out)``.
    """
    if len(weights) == 1:
        return z @ weights[0]
    return residual_memory(z, *weights, activation=activation)


@implements("nl", 77, 80, 81, 85)
def inner_loss(pred: Tensor, target: Tensor, objective: str = "l2") -> Tensor:
    r"""The objective every memory minimises in context, one value per token (NL v1, Eq. 77, 80–81, 85).

    .. math::
        \min_{\mathcal{M}_{\square}} \mathcal{L}(\mathcal{M}_{\square}; \mathbf{k}_{t},
            \hat{\mathbf{v}}_{\square, t}) \qquad (85)

    ``"l2"`` (N-U13): :math:`\tfrac12\|\mathcal M(k_t) - \hat v_t\|^2` — we take the ½ so that the
    gradient is :math:`(\mathcal M k - \hat v)k^\top` as Eq. 93 writes it (the prose's N-U13 has no ½);
    ``"dot"`` (Eq. 92): :math:`-\langle\mathcal M(k_t), \hat v_t\rangle`. The same function is Eq. 81
    (target :math:`v_t`, the main memory), Eq. 80 (the projection memories with the shared value) and Eq.
    77 (any key/value pair); the minimisation is the update of :func:`self_modifying_step`.

    Args:
        pred: the memory's read of the key, :math:`\mathcal M(k_t)`, ``(..., d)``.
        target: :math:`\hat v_t` (or :math:`v_t`), ``(..., d)``; a constant for the inner gradient.
        objective: ``"l2"`` or ``"dot"``.

    Returns:
        ``(...,)``.
    """
    _check_choice("objective", objective, OBJECTIVES)
    if objective == "l2":
        return 0.5 * (pred - target).pow(2).sum(-1)
    return -(pred * target).sum(-1)


def _output_grad(pred: Tensor, target: Tensor, objective: str) -> Tensor:
    """The gradient of :func:`inner_loss` at the memory's read: ``pred - target`` or ``-target``."""
    return pred - target if objective == "l2" else -target


def layer_factors(
    weights: Weights, key: Tensor, target: Tensor, objective: str = "l2", activation: str = "silu"
) -> list[tuple[Tensor, Tensor]]:
    """Per layer, the factors ``(a_t, g_t)`` of the per-token inner gradient ``a_t^T g_t`` (closed form).

    ``a_t`` is the layer's input, ``g_t`` the gradient of :func:`inner_loss` at its output, both
    ``(N, n, ·)``; back-propagated by hand through the residual MLP, so the gradient of every token of a chunk
    at one state is a batched product, never an autograd call.
    """
    if len(weights) == 1:
        return [(key, _output_grad(key @ weights[0], target, objective))]
    w_in, w_out = weights
    z = key @ w_in
    hidden = ACTIVATIONS[activation](z)
    r = _output_grad(key + hidden @ w_out, target, objective)
    return [(key, scaled_act_grad(r @ w_out.transpose(-1, -2), z, activation)), (hidden, r)]


# --------------------------------------------------------------------------------------------------
# The update: Eq. 88 (= 96), Eq. 92–93 for a matrix memory
# --------------------------------------------------------------------------------------------------


def _check_update(
    weights: Weights, per_layer: tuple | list, per_layer_name: str, key: Tensor, eta: Tensor, alpha: Tensor
):
    """Shapes of an update's inputs: one ``per_layer`` entry per layer, ``key`` ``(N, d)`` (a token) or
    ``(N, n, d)`` (a chunk) with ``N, d`` of ``weights[0] (N, d, d_out)``, ``eta``/``alpha`` the key's shape
    without ``d``. A mismatch would broadcast into a state of the wrong shape, not raise."""
    what = "tensor" if per_layer_name == "grads" else "(a, g) pair"
    n_layers, n_given = len(weights), len(per_layer)
    if n_given != n_layers:
        raise ValueError(
            f"{per_layer_name} must hold one {what} per layer of weights ({n_layers}), got {n_given}"
        )
    n_batch, d = weights[0].shape[:2]
    one_token = per_layer_name == "grads"
    form = "(N, d)" if one_token else "(N, n, d)"
    if key.dim() != (2 if one_token else 3) or key.shape[0] != n_batch or key.shape[-1] != d:
        raise ValueError(
            f"key must be {form} with N = {n_batch} and d = {d} (weights[0] is (N, d, d_out)), "
            f"got {tuple(key.shape)}"
        )
    lead = tuple(key.shape[:-1])
    for name, gate in (("eta", eta), ("alpha", alpha)):
        if tuple(gate.shape) != lead:
            raise ValueError(f"{name} must have the key's shape without d, {lead}, got {tuple(gate.shape)}")


@implements("nl", 88, 92, 93, 96)
def self_modifying_step(
    weights: Weights, grads: Weights, key: Tensor, eta: Tensor, alpha: Tensor, rule: str = "dgd"
) -> Weights:
    r"""One update of a memory by DGD with weight decay (NL v1, Eq. 88 = Eq. 96; Eq. 92–93 when linear).

    .. math::
        \mathcal{M}_{\Box,t} = \mathcal{M}_{\Box,t-1} \left( \alpha_t \mathbf{I} - \eta_t \mathbf{k}_t
            \mathbf{k}_t^{\top} \right) - \eta_t \nabla \mathcal{L}_{\mathcal{M}_{\Box,t-1}} \left(
            \mathcal{M}_{\Box,t-1}; \mathbf{k}_t, \hat{\boldsymbol{v}}_{\Box,t} \right) \qquad (88)

        \mathcal{M}_{\Box,t} = \mathcal{M}_{\Box,t-1} \left( \alpha_t \mathbf{I} - \eta_t \mathbf{k}_t
            \mathbf{k}_t^\top \right) - \eta_t \left( \mathcal{M}_{\Box,C(\lceil t/C\rceil - 1)}
            \mathbf{k}_t - \hat{\boldsymbol{v}}_{\Box,t} \right) \mathbf{k}_t^\top \qquad (93)

    Decay the memory (by :math:`\alpha_t`, and along the key by :math:`\eta_t`), then step against the
    gradient. ``grads`` is the gradient of :func:`inner_loss` at whatever state the caller chose (the state
    before the token: Eq. 88; the chunk-start state: Eq. 90/93). For a matrix memory with the dot objective
    the gradient is :math:`-\hat v k^\top`, so the step adds :math:`+\eta\hat vk^\top`; Eq. 92 prints a
    minus, inconsistent with its own objective (docs/errata.md, NL Eq. 92). Row convention: the first
    layer ``W (N, d, ·)`` becomes :math:`(\alpha I - \eta kk^\top)W - \eta G`; further layers (the residual
    MLP's second) only :math:`\alpha W - \eta G` (docs/errata.md, NL Eq. 88). ``rule="gd"`` drops the
    ``kk^T`` term (plain GD with weight decay, the "w/o DGD" ablation of Table 6).

    Args:
        weights: :math:`\mathcal M_{t-1}`, one ``(N, d_in, d_out)`` tensor per layer (the first reads k).
        grads: :math:`\nabla\mathcal L`, same shapes.
        key: :math:`k_t`, ``(N, d)``.
        eta, alpha: ``(N,)``.
        rule: ``"dgd"`` or ``"gd"``.

    Returns:
        :math:`\mathcal M_t`, same shapes as ``weights``.

    Raises:
        ValueError: a gradient missing for a layer, or a key or gate of another shape.
    """
    _check_choice("rule", rule, RULES)
    _check_update(weights, grads, "grads", key, eta, alpha)
    e, a = eta[:, None, None], alpha[:, None, None]
    out = []
    for layer, (w, g) in enumerate(zip(weights, grads, strict=True)):
        new = a * w - e * g
        if layer == 0 and rule == "dgd":
            new = new - e * key[:, :, None] * (key[:, None, :] @ w)  # η k (kᵀ W)
        out.append(new)
    return tuple(out)


@implements("nl", 93)
def chunk_recurrence(
    weights: Weights,
    factors: list[tuple[Tensor, Tensor]],
    key: Tensor,
    eta: Tensor,
    alpha: Tensor,
    rule: str = "dgd",
) -> Weights:
    r"""The chunk-end state of Eq. 93's recurrence, every gradient given as factors (NL v1, Eq. 93; parallel).

    .. math::
        \mathcal{M}_{\Box,t} = \mathcal{M}_{\Box,t-1} \left( \alpha_t \mathbf{I} - \eta_t \mathbf{k}_t
            \mathbf{k}_t^\top \right) - \eta_t \left( \mathcal{M}_{\Box,C(\lceil t/C\rceil - 1)}
            \mathbf{k}_t - \hat{\boldsymbol{v}}_{\Box,t} \right) \mathbf{k}_t^\top \qquad (93)

    Applies :func:`self_modifying_step` ``n`` times with gradients :math:`a_t^\top g_t` fixed in advance (the
    chunk-start gradients of Eq. 90/93), in closed form. First layer with ``rule="dgd"`` (column convention
    :math:`S = W^\top`): :math:`S_t = S_{t-1}(\alpha_t I - \eta_t k_tk_t^\top) - \eta_t g_tk_t^\top` is the
    gated delta rule with :math:`\beta_t = \eta_t/\alpha_t` and values :math:`-\alpha_t g_t` (needs
    :math:`\alpha_t > 0`), the recurrence of
    :func:`~neural_memory.common.delta_rule_chunked.chunk_delta_rule`; its WY/UT form for one chunk and
    the chunk end only is :func:`_dgd_chunk_end`. Other layers: :math:`W_n = \gamma_n W_0 - \sum_t
    (\gamma_n/\gamma_t)\eta_t a_t^\top g_t`, :math:`\gamma_t = \alpha_1\cdots\alpha_t`, as one matmul.

    Args:
        weights: start state, ``(N, d_in, d_out)`` per layer; factors: per layer ``(a (N, n, d_in),
            g (N, n, d_out))``; key ``(N, n, d)``; eta, alpha ``(N, n)``.

    Returns:
        the state after the ``n`` tokens, same shapes as ``weights``.

    Raises:
        ValueError: a factor pair missing for a layer, a key or gate of another shape, or (``"dgd"``) an
            :math:`\alpha_t \le 0`.
    """
    _check_choice("rule", rule, RULES)
    _check_update(weights, factors, "factors", key, eta, alpha)
    if rule == "dgd" and not bool((alpha > 0).all()):
        raise ValueError(f"alpha must be > 0 under rule='dgd', got a minimum of {alpha.min().item():g}")
    return _chunk_end(weights, factors, key, eta, alpha, rule)


def _chunk_end(
    weights: Weights, factors: list[tuple[Tensor, Tensor]], key: Tensor, eta: Tensor, alpha: Tensor, rule: str
) -> Weights:
    """:func:`chunk_recurrence` without its input checks, for the module's chunk loop: its inputs are valid
    by construction (α >= ``ALPHA_MIN``), and the value check would synchronise a GPU once per chunk."""
    tail = torch.cumprod(alpha.flip(-1), -1).flip(-1)  # Π_{s >= t} α_s
    after = torch.cat([tail[:, 1:], torch.ones_like(tail[:, :1])], 1)  # Π_{s > t} α_s
    gamma_n = tail[:, 0, None, None]
    out = []
    for layer, (w, (a, g)) in enumerate(zip(weights, factors, strict=True)):
        if layer == 0 and rule == "dgd":
            out.append(_dgd_chunk_end(w, key, g, eta, alpha, after, gamma_n))
        else:
            out.append(gamma_n * w - a.transpose(-1, -2) @ ((after * eta)[..., None] * g))
    return tuple(out)


def _dgd_chunk_end(
    w: Tensor, key: Tensor, g: Tensor, eta: Tensor, alpha: Tensor, after: Tensor, gamma_n: Tensor
) -> Tensor:
    r"""The first layer's chunk end under DGD: :math:`W_t = (\alpha_t I - \eta_t k_tk_t^\top)W_{t-1} -
    \eta_t k_tg_t^\top` from :math:`W_0 =` ``w`` over the ``n`` tokens, in the WY/UT form of
    :func:`~neural_memory.common.delta_rule_chunked.chunk_delta_rule` for one chunk (row convention).

    Unrolled, :math:`W_t = \gamma_tW_0 + \sum_{i \le t}(\gamma_t/\gamma_i)k_iu_i^\top` with pseudo-values
    :math:`u_t = -\eta_t(W_{t-1}^\top k_t + g_t)`; stacking them as rows gives the unit lower-triangular
    system :math:`(I + A)U = -\mathrm{diag}(\eta)(G + \mathrm{diag}(\gamma_{t-1})KW_0)`,
    :math:`A_{ti} = \eta_t(\gamma_{t-1}/\gamma_i)k_t^\top k_i` for :math:`i < t` (chunk_delta_rule's
    :math:`\beta_r\gamma_r/\gamma_i` with :math:`\beta = \eta/\alpha`, without dividing by :math:`\alpha`),
    and :math:`W_n = \gamma_nW_0 + K^\top\mathrm{diag}(\gamma_n/\gamma)U`. Written out rather than called
    because the module needs neither the outputs nor the chunk loop of the general routine, and one small
    triangular solve replaces its matmul-doubling inverse: at one chunk of 16 tokens per call the cost is
    per-op overhead, and this is about a quarter of the ops.

    Args:
        w: ``(N, d, d_out)``; key ``(N, n, d)``; g ``(N, n, d_out)``; eta, alpha ``(N, n)`` (α > 0);
            after: :math:`\gamma_n/\gamma_t` ``(N, n)``; gamma_n: :math:`\gamma_n` ``(N, 1, 1)``.
    """
    n = key.shape[1]
    # the ratios γ_{t-1}/γ_i of A as differences of cumulative logs: the products underflow in float32
    log_gamma = torch.log(alpha).cumsum(-1)
    log_before = log_gamma - torch.log(alpha)  # log γ_{t-1}
    strict = torch.ones(n, n, dtype=torch.bool, device=key.device).tril(-1)
    # mask before exp: above the diagonal the log-ratio is positive and could overflow
    log_ratio = torch.where(
        strict, log_before[..., :, None] - log_gamma[..., None, :], torch.zeros((), dtype=w.dtype)
    )
    lower = (eta[..., None] * torch.exp(log_ratio)) * (key @ key.transpose(-1, -2)) * strict
    rhs = -eta[..., None] * torch.baddbmm(g, torch.exp(log_before)[..., None] * key, w)
    # unitriangular: the (zero) diagonal of `lower` is read as ones, i.e. the solve is with I + A
    pseudo = torch.linalg.solve_triangular(lower, rhs, upper=False, unitriangular=True)
    return torch.baddbmm(gamma_n * w, key.transpose(-1, -2), after[..., None] * pseudo)


# --------------------------------------------------------------------------------------------------
# The module: Eq. 76, 79, 83–87, 90
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SelfModifyingState:
    """Streaming state of :class:`SelfModifyingTitans` after ``position`` tokens.

    Attributes:
        current: per memory name, its current weights :math:`\\mathcal M_{\\square,t}`, ``(N, d_in, d_out)``.
        snapshot: per memory name, its weights at the start of its current chunk (where Eq. 90 generates
            and differentiates).
        position: tokens seen since the start of the stream.
    """

    current: dict[str, Weights]
    snapshot: dict[str, Weights]
    position: int = 0

    def detach(self) -> SelfModifyingState:
        """The same state cut from the autograd graph."""
        cut = lambda d: {name: tuple(w.detach() for w in ws) for name, ws in d.items()}  # noqa: E731
        return replace(self, current=cut(self.current), snapshot=cut(self.snapshot))

    def numel(self) -> int:
        """Number of scalars held; constant along a stream."""
        return sum(w.numel() for d in (self.current, self.snapshot) for ws in d.values() for w in ws)


def _gate(readout: nn.Linear, h: Tensor) -> Tensor:
    return torch.sigmoid(readout(h)).squeeze(-1)


@implements("nl", 79, 83, 84, 90)
class SelfModifyingTitans(nn.Module):
    r"""Self-modifying Titans, chunk-parallel (NL v1, Eq. 76, 79, 83–87, 90; module docstring for 88–93).

    .. math::
        \mathbf{k}_t = \mathbf{x}_t W_k, \quad \mathbf{v}_t = \mathbf{x}_t W_v, \quad
            \mathbf{q}_t = \mathbf{x}_t W_q, \quad \eta_t = \mathbf{x}_t W_\eta, \quad
            \alpha_t = \mathbf{x}_t W_\alpha \qquad (76)

        \mathbf{y}_{t} = \mathcal{M}_{\text{memory},t-1}(\mathbf{q}_{t}), \quad
            \mathbf{k}_{t} = \mathcal{M}_{k,t-1}(\mathbf{x}_{t}), \quad
            \mathbf{v}_{t} = \mathcal{M}_{v,t-1}(\mathbf{x}_{t}), \quad
            \eta_{t} = \mathcal{M}_{\eta,t-1}(\mathbf{x}_{t}), \quad
            \alpha_{t} = \mathcal{M}_{\alpha,t-1}(\mathbf{x}_{t}) \qquad (83, 86; 79)

        \hat{\mathbf{v}}_{\square, t} = \mathcal{M}_{\square, t-1}(\mathbf{v}_{t}) \qquad (84, 87)

    with every :math:`t-1` replaced by the chunk-start index :math:`C(\lceil t/C\rceil - 1)` (Eq. 90). The
    memories generate the projections of the token, the main memory answers the query, and every memory
    then regresses its own read of :math:`v_t` from :math:`k_t` (Eq. 85) by DGD with weight decay (Eq. 88).

    Switches (the paper's intermediate designs and ablations):

    * ``self_modifying=False``: the static projections of Eq. 76 (``nn.Linear`` maps for k, v, q and
      sigmoid read-outs of ``x`` for η, α); only the main memory learns in context (Eq. 77–78, 81).
    * ``values="shared"``: every memory regresses the shared value :math:`v_t` (Eq. 79–82) instead of its
      self-generated :math:`\hat v_{\square,t}` (Eq. 84).
    * ``adaptive_q``: :math:`q_t = \mathcal M_{q}(x_t)`, a memory (Eq. 85/88 list it), instead of the static
      :math:`q_t = x_tW_q` the prose prescribes (N-U14, default; docs/errata.md NL Eq. 85).
    * ``rule="gd"``: no ``kk^T`` term (Table 6's "w/o DGD").

    Args:
        dim: width ``d`` of x and of every memory's input and output.
        hidden: the residual MLP's hidden width ``h`` (default ``dim``).
        memory: ``"residual_mlp"`` (Eq. 89) or ``"linear"`` (Eq. 92–93).
        chunk_size: :math:`C_{memory}` of the main memory (1 = token by token).
        other_chunk_size: :math:`C` of the other memories (default ``chunk_size``); one of the two chunk
            sizes must divide the other.
        objective: ``"l2"`` (default) or ``"dot"``, see :func:`inner_loss`.
        qk_norm: l2-normalise q and k (Hope, N-U16; default True).
        v_norm: l2-normalise v too (Hope's stabiliser, default False): v is also every memory's input for
            its self-generated value :math:`\mathcal M_\square(v_t)`, so without it :math:`\hat v_v =
            \mathcal M_v(\mathcal M_v(x_t))` compounds the value memory's gain (docs/errata.md, NL Eq. 94–97).
        activation: σ of the residual MLP, ``"silu"`` or ``"gelu"``.
        compile_chunks: run each span's arithmetic (generation, inner gradients, chunk end) through
            ``torch.compile`` (:func:`~neural_memory.common.compiled.chunk_step`; default False: the first
            call compiles for tens of seconds). The token reference is never compiled.
    """

    def __init__(
        self,
        dim: int,
        *,
        hidden: int | None = None,
        memory: str = "residual_mlp",
        chunk_size: int = 1,
        other_chunk_size: int | None = None,
        self_modifying: bool = True,
        adaptive_q: bool = False,
        values: str = "generated",
        objective: str = "l2",
        rule: str = "dgd",
        qk_norm: bool = True,
        v_norm: bool = False,
        activation: str = "silu",
        compile_chunks: bool = False,
    ):
        super().__init__()
        check_compile_chunks(compile_chunks)
        self.compile_chunks = compile_chunks
        self.dim = check_int("dim", dim)
        self.hidden = check_int("hidden", dim if hidden is None else hidden)
        self.memory = _check_choice("memory", memory, MEMORIES)
        self.chunk_size = check_int("chunk_size", chunk_size)
        other = chunk_size if other_chunk_size is None else other_chunk_size  # 0 is refused, not "unset"
        self.other_chunk_size = check_int("other_chunk_size", other)
        small, large = sorted((self.chunk_size, self.other_chunk_size))
        if large % small:
            raise ValueError(
                f"chunk_size ({chunk_size}) and other_chunk_size ({other_chunk_size}) must divide one another"
            )
        self.values = _check_choice("values", values, VALUES)
        self.objective = _check_choice("objective", objective, OBJECTIVES)
        self.rule = _check_choice("rule", rule, RULES)
        self.activation = _check_choice("activation", activation, tuple(ACTIVATIONS))
        self.self_modifying, self.adaptive_q, self.qk_norm = (
            bool(self_modifying),
            bool(adaptive_q),
            bool(qk_norm),
        )
        self.v_norm = bool(v_norm)
        if self.self_modifying:
            names = ("k", "v", "q", "eta", "alpha") if self.adaptive_q else ("k", "v", "eta", "alpha")
        else:
            names = ()
            self.to_k = nn.Linear(dim, dim, bias=False)
            self.to_v = nn.Linear(dim, dim, bias=False)
        self.names = (*names, "memory")
        if "q" not in self.names:
            self.to_q = nn.Linear(dim, dim, bias=False)
        # gate read-outs: sigmoid(w·h + b), η starting near 0.12 and α near 0.98 (mild steps, long retention)
        self.eta_readout, self.alpha_readout = nn.Linear(dim, 1), nn.Linear(dim, 1)
        nn.init.constant_(self.eta_readout.bias, -2.0)
        nn.init.constant_(self.alpha_readout.bias, 4.0)
        self.initial = nn.ParameterDict()
        for name in self.names:
            for i, (d_in, d_out) in enumerate(self._layer_shapes()):
                self.initial[f"{name}_{i}"] = nn.Parameter(torch.randn(d_in, d_out) / math.sqrt(d_in))

    def _layer_shapes(self) -> list[tuple[int, int]]:
        if self.memory == "linear":
            return [(self.dim, self.dim)]
        return [(self.dim, self.hidden), (self.hidden, self.dim)]

    def chunk_of(self, name: str) -> int:
        """The chunk size of memory ``name``."""
        return self.chunk_size if name == "memory" else self.other_chunk_size

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> SelfModifyingState:
        """Every memory at its meta-learned initial state :math:`\\mathcal M_{\\square,0}`, position 0."""
        check_int("batch_size", batch_size)
        layers = len(self._layer_shapes())
        start = {
            name: tuple(
                self.initial[f"{name}_{i}"].to(device=device, dtype=dtype).expand(batch_size, -1, -1)
                for i in range(layers)
            )
            for name in self.names
        }
        return SelfModifyingState(current=start, snapshot=dict(start), position=0)

    def read(self, weights: Weights, z: Tensor) -> Tensor:
        """:math:`\\mathcal M(z)` for one memory's ``weights`` (see :func:`memory_read`)."""
        return memory_read(weights, z, self.activation)

    def _norm(self, t: Tensor) -> Tensor:
        return nn.functional.normalize(t, dim=-1) if self.qk_norm else t

    def _norm_v(self, v: Tensor) -> Tensor:
        return nn.functional.normalize(v, dim=-1) if self.v_norm else v

    @implements("nl", 76)
    def static_projections(self, x: Tensor) -> dict[str, Tensor]:
        r"""The static projections of Eq. 76, :math:`k, v, q = xW_{k,v,q}` and :math:`\eta, \alpha =
        \sigma(x w + b)` (the sigmoid is ours: the paper leaves the squashing open); ``self_modifying=False``
        only. ``x (N, n, d)`` → k, v, q ``(N, n, d)``, eta, alpha ``(N, n)``."""
        return {
            "k": self._norm(self.to_k(x)),
            "v": self._norm_v(self.to_v(x)),
            "q": self._norm(self.to_q(x)),
            "eta": _gate(self.eta_readout, x),
            "alpha": _gate(self.alpha_readout, x).clamp_min(ALPHA_MIN),
        }

    def generate(self, x: Tensor, snapshot: dict[str, Weights]) -> dict[str, Tensor]:
        """Eq. 83/86 at the given states: k, v, q ``(N, n, d)``, eta, alpha ``(N, n)``."""
        if not self.self_modifying:
            return self.static_projections(x)
        q = self.read(snapshot["q"], x) if self.adaptive_q else self.to_q(x)
        return {
            "k": self._norm(self.read(snapshot["k"], x)),
            "v": self._norm_v(self.read(snapshot["v"], x)),
            "q": self._norm(q),
            "eta": _gate(self.eta_readout, self.read(snapshot["eta"], x)),
            "alpha": _gate(self.alpha_readout, self.read(snapshot["alpha"], x)).clamp_min(ALPHA_MIN),
        }

    def target(self, name: str, weights: Weights, v: Tensor) -> Tensor:
        """The value memory ``name`` regresses: :math:`\\hat v = \\mathcal M(v)` (Eq. 84) or ``v``."""
        return self.read(weights, v) if self.values == "generated" else v

    def check_input(self, x: object, state: SelfModifyingState | None) -> SelfModifyingState:
        """Validate ``x (batch, T, dim)`` and return ``state`` (a fresh one when None)."""
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be (batch, T, dim={self.dim}), got {shape}")
        if state is None:
            return self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        if state.current["memory"][0].shape[0] != x.shape[0]:
            raise ValueError(f"state holds batch {state.current['memory'][0].shape[0]}, x has {x.shape[0]}")
        return state

    def snapshots(self, state: SelfModifyingState) -> dict[str, Weights]:
        """Per memory, the chunk-start state at ``state.position`` (the current state at a chunk start)."""
        return {
            name: state.current[name] if state.position % self.chunk_of(name) == 0 else state.snapshot[name]
            for name in self.names
        }

    def forward(
        self, x: Tensor, state: SelfModifyingState | None = None
    ) -> tuple[Tensor, SelfModifyingState]:
        """Run ``x (batch, T, dim)`` from ``state``; returns ``(y (batch, T, dim), new state)``."""
        state = self.check_input(x, state)
        outputs, t = [], 0
        while t < x.shape[1]:
            # a span in which no memory reaches a chunk end: everything is generated at one snapshot
            to_end = min(self.chunk_of(n) - state.position % self.chunk_of(n) for n in self.names)
            n = min(to_end, x.shape[1] - t)
            y, state = self._span(x[:, t : t + n], state)
            outputs.append(y)
            t += n
        return (torch.cat(outputs, 1) if outputs else x.new_empty(x.shape[0], 0, self.dim)), state

    def _span(self, x: Tensor, state: SelfModifyingState) -> tuple[Tensor, SelfModifyingState]:
        # Every memory has the same layer shapes and, inside a span, the same inputs (x, k, v, η, α), so the
        # memories run as one batch: their weights stacked along the leading dimension, memory-major
        # ((M * N, d_in, d_out), rows m * N .. (m + 1) * N - 1 are memory ``names[m]``). One batched read,
        # one `layer_factors` and one `chunk_recurrence` replace a Python loop over the 5-6 memories: the
        # cost is per-op overhead at these sizes (chunk 16, d 128), not flops. The same arithmetic per row
        # as the loop; the token reference (self_modifying_reference) keeps the per-memory loop.
        snap = self.snapshots(state)
        snap_all = _stack(snap, self.names)
        current_all = (
            snap_all
            if all(snap[n] is state.current[n] for n in self.names)
            else _stack(state.current, self.names)
        )
        y, new_all = chunk_step(_span_update, self.compile_chunks)(self, x, snap_all, current_all)
        current = _unstack(new_all, self.names, x.shape[0])
        return y, SelfModifyingState(current=current, snapshot=snap, position=state.position + x.shape[1])

    def _generate_stacked(self, x: Tensor, snap_all: Weights) -> tuple[dict[str, Tensor], Tensor]:
        """:meth:`generate` and the output read :math:`\\mathcal M_{memory}(q)` from the stacked snapshots
        (memory-major, in ``self.names`` order, ``"memory"`` last): one batched read for all of them."""
        batch, count = x.shape[0], len(self.names)
        if not self.self_modifying:
            gen = self.static_projections(x)
            return gen, self.read(tuple(w[-batch:] for w in snap_all), gen["q"])
        if self.adaptive_q:
            # q is a memory's read of x, so the output read (of q) waits for it: two batched reads
            reads = self.read(tuple(w[: (count - 1) * batch] for w in snap_all), x.repeat(count - 1, 1, 1))
            q = None
        else:
            # q = x W_q does not depend on the memories: the output read joins the batch (input q, not x)
            q = self._norm(self.to_q(x))
            reads = self.read(snap_all, torch.cat([x.repeat(count - 1, 1, 1), q], 0))
        read = dict(zip(self.names, reads.split(batch, 0), strict=False))
        gen = {
            "k": self._norm(read["k"]),
            "v": self._norm_v(read["v"]),
            "q": self._norm(read["q"]) if self.adaptive_q else q,
            "eta": _gate(self.eta_readout, read["eta"]),
            "alpha": _gate(self.alpha_readout, read["alpha"]).clamp_min(ALPHA_MIN),
        }
        y = self.read(tuple(w[-batch:] for w in snap_all), gen["q"]) if self.adaptive_q else read["memory"]
        return gen, y


def _span_update(
    module: SelfModifyingTitans, x: Tensor, snap_all: Weights, current_all: Weights
) -> tuple[Tensor, Weights]:
    """One span of :meth:`SelfModifyingTitans._span` for the stacked memories: the outputs ``(N, n, d)`` and
    every memory's state after the span, ``(M * N, d_in, d_out)`` per layer. The unit that
    ``compile_chunks=True`` compiles (:func:`~neural_memory.common.compiled.chunk_step`)."""
    count = len(module.names)
    gen, y = module._generate_stacked(x, snap_all)
    k_all = gen["k"].repeat(count, 1, 1)
    v = gen["v"]
    target = (
        module.read(snap_all, v.repeat(count, 1, 1))
        if module.values == "generated"
        else v.repeat(count, 1, 1)
    )
    factors = layer_factors(snap_all, k_all, target, module.objective, module.activation)
    eta_all, alpha_all = gen["eta"].repeat(count, 1), gen["alpha"].repeat(count, 1)
    return y, _chunk_end(current_all, factors, k_all, eta_all, alpha_all, module.rule)


def _stack(weights: dict[str, Weights], names: tuple[str, ...]) -> Weights:
    """Per layer, the named memories' weights ``(N, d_in, d_out)`` stacked memory-major, ``(M * N, ...)``."""
    return tuple(torch.cat([weights[name][i] for name in names], 0) for i in range(len(weights[names[0]])))


def _unstack(stacked: Weights, names: tuple[str, ...], batch: int) -> dict[str, Weights]:
    """Inverse of :func:`_stack`: per name, its ``(N, d_in, d_out)`` rows (views)."""
    per_layer = [w.split(batch, 0) for w in stacked]
    return {name: tuple(layer[m] for layer in per_layer) for m, name in enumerate(names)}


@implements("nl", 86, 87, 88)
def self_modifying_reference(
    module: SelfModifyingTitans, x: Tensor, state: SelfModifyingState | None = None
) -> tuple[Tensor, SelfModifyingState]:
    r"""Token-by-token self-modifying Titans (NL v1, Eq. 86–88; with chunks, Eq. 90): slow, obviously right.

    .. math::
        \mathcal{M}_{\Box,t} = \mathcal{M}_{\Box,t-1} \left( \alpha_t \mathbf{I} - \eta_t \mathbf{k}_t
            \mathbf{k}_t^{\top} \right) - \eta_t \nabla \mathcal{L}_{\mathcal{M}_{\Box,t-1}} \left(
            \mathcal{M}_{\Box,t-1}; \mathbf{k}_t, \hat{\boldsymbol{v}}_{\Box,t} \right) \qquad (88)

    For every token: refresh the snapshot of each memory whose chunk starts here, generate k, v, q, η, α
    and the output from the snapshots, take each memory's inner gradient at its snapshot by autograd
    (``torch.func``, the target held constant), and apply :func:`self_modifying_step` to its current state.
    With ``chunk_size = 1`` the snapshot is :math:`\mathcal M_{t-1}`: Eq. 86–88 exactly. Same arguments and
    results as ``module(x, state)``.
    """
    state = module.check_input(x, state)
    outputs = []
    for t in range(x.shape[1]):
        snap = module.snapshots(state)
        x_t = x[:, t : t + 1]
        gen = module.generate(x_t, snap)
        outputs.append(module.read(snap["memory"], gen["q"]))
        k, eta, alpha = gen["k"][:, 0], gen["eta"][:, 0], gen["alpha"][:, 0]
        current = {}
        for name in module.names:
            target = module.target(name, snap[name], gen["v"])[:, 0]
            grads = _autograd_grads(module, snap[name], k, target)
            current[name] = self_modifying_step(state.current[name], grads, k, eta, alpha, module.rule)
        state = SelfModifyingState(current=current, snapshot=snap, position=state.position + 1)
    return (torch.cat(outputs, 1) if outputs else x.new_empty(x.shape[0], 0, module.dim)), state


def _autograd_grads(module: SelfModifyingTitans, weights: Weights, key: Tensor, target: Tensor) -> Weights:
    """The inner gradient of every sequence, by ``torch.func`` autograd (the target held constant)."""

    def loss(ws: Weights, k: Tensor, v: Tensor) -> Tensor:
        return inner_loss(module.read(ws, k[None]), v[None], module.objective).sum()

    per_row: Callable = vmap(grad(loss), in_dims=(0, 0, 0))
    return per_row(weights, key, target)


__all__ = [
    "SelfModifyingState",
    "SelfModifyingTitans",
    "chunk_recurrence",
    "inner_loss",
    "layer_factors",
    "memory_read",
    "residual_memory",
    "self_modifying_reference",
    "self_modifying_step",
]
