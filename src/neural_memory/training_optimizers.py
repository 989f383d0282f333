"""The optimizers the training loop can use, by name, and how each one splits a model's parameters.

``neural-memory train KIND --optimizer NAME`` builds one of :data:`OPTIMIZER_NAMES` with
:func:`build_optimizer`:

* ``adamw`` (the default): ``torch.optim.AdamW`` on every parameter, weight decay on tensors of >= 2 dims.
* ``muon``, ``torch-muon``, ``m3``: :class:`~neural_memory.nl.optimizers.Muon`,
  ``torch.optim.Muon`` or :class:`~neural_memory.nl.optimizers.M3` on the *hidden matrices* — the weight of
  every ``nn.Linear`` except the output head — and AdamW on everything else. ``torch.optim.Muon``'s
  documentation: "Muon is an optimizer for 2D parameters of neural network hidden layers. Other parameters,
  such as bias, and embedding, should be optimized by a standard method such as AdamW"; the NL paper is
  silent on M3's non-matrix parameters and trains embeddings, head, conv and norms with AdamW (catalog,
  Algorithm 1 (e), and its table of levels). So the embedding (tied to the head by default), an untied head,
  the Titans persistent tokens, the memory's initial weights (3-D, one matrix per head), convolutions,
  norms, gates and biases go to AdamW. Both Muons use ``adjust_lr_fn="match_rms_adamw"``, the scaling made
  to reuse AdamW's learning rate and weight decay, so one ``--lr`` serves both groups.
  M3 runs in the EMA reading of Algorithm 1 (:data:`M3_TRAINING_OPTIONS`; catalog, Algorithm 1 (c)):
  ``M1 ← 0.9 M1 + 0.1 g``, ``V ← 0.999 V + 0.001 g²``, ``M2 ← 0.9 M2 + 0.1 Σg`` and ε = 0.1, with
  Newton–Schulz in bfloat16 like Muon's (the class keeps the parameter's dtype by default). The class's
  defaults (the printed sums, ε = 1e-8) diverge in the LM at the default ``--lr``: the orthogonalised
  numerator does not shrink with the gradient, so ``lr·O/(√V + ε)`` is huge wherever ``|g| ≪ 1/√d``
  (docs/errata.md, NL Eq. 75 and Algorithm 1).
* ``dgd``: :class:`~neural_memory.nl.optimizers.DeltaGradientDescent` on every hidden ``nn.Linear`` (weight
  and bias), whose inputs it records with forward hooks (:meth:`DeltaGradientDescent.track`); AdamW on the
  rest. The Gram matrix is the per-token mean ``gram="mean"`` (the LM loss is a mean over the batch's
  tokens): the step is the argmin of Eq. 56 averaged over the tokens, not summed (a sum would make the
  correction B·T times stronger relative to the mean loss's gradient; docs/errata.md).
* ``momentum``: :class:`~neural_memory.nl.optimizers.MomentumGD` (Eq. 33, α = 0.9) on every parameter.
* ``adam-nl``: :class:`~neural_memory.nl.optimizers.ElementwiseMomentum` in Appendix B's Adam form
  (Eq. 105 with EMAs and bias correction, decays (0.9, 0.95)) on every parameter: Adam built as an
  associative memory, equal to ``adamw`` up to float round-off.
* ``dmgd``: :class:`~neural_memory.nl.optimizers.DeepMomentumGD` (Eq. 50: the momentum is a tanh MLP with
  16 hidden units trained by the dot-product objective, α = 0.9, memory step ``lr``) on every parameter.
* ``delta-momentum``: :class:`~neural_memory.nl.optimizers.DeltaMomentum` (Eq. 48–49, α = 0.9, the printed
  correction step ζ = 1, P = I) on every parameter. Along a parameter's top gradient direction the
  momentum is multiplied by α − ζσ₁(g)² each step; the loop clips the gradient norm to ``grad_clip``
  (default 1), so σ₁² <= 1 < 1 + α and the printed ζ = 1 stays stable (with ``grad_clip`` above
  √1.9 ≈ 1.38 it may not: docs/errata.md, NL Eq. 48–49).

Both momentum memories take any tensor (a vector is one column, higher ranks flatten to ``(shape[0], -1)``),
so, like ``momentum``, they hold every parameter.

The learning-rate schedule sets every group's ``lr`` to the scheduled rate times the group's ``lr_scale``
(1 unless stated; ``adam-nl`` uses √β₂ so that its step is Adam's at the same rate). Weight decay is
decoupled (``p ← (1 − lr·wd) p`` before the update) on tensors of >= 2 dims: by AdamW and the Muons
themselves, and by :class:`OptimizerChain` for the optimizers that have none (M3, DGD, momentum,
adam-nl, dmgd, delta-momentum), through the group key ``chain_weight_decay``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from neural_memory.nl.optimizers import (
    M3,
    DeepMomentumGD,
    DeltaGradientDescent,
    DeltaMomentum,
    ElementwiseMomentum,
    MomentumGD,
    Muon,
)

OPTIMIZER_NAMES = (
    "adamw",
    "muon",
    "torch-muon",
    "m3",
    "dgd",
    "momentum",
    "adam-nl",
    "dmgd",
    "delta-momentum",
)
ADAMW_BETAS = (0.9, 0.95)
M3_TRAINING_OPTIONS: dict[str, Any] = {  # the EMA reading of Algorithm 1 that trains the LM (errata)
    "beta1": 0.1,
    "beta2": 0.001,
    "beta3": 0.1,
    "decays": (0.9, 0.999, 0.9),
    "eps": 0.1,
    "ns_dtype": torch.bfloat16,  # Newton-Schulz in bfloat16, as Muon (ours and torch's) in the same loop
}
DECAY_KEY = (
    "chain_weight_decay"  # weight decay applied by OptimizerChain (torch AdamW owns "decoupled_weight_decay")
)


def check_optimizer_name(name: object) -> str:
    """``name`` if it is one of :data:`OPTIMIZER_NAMES`; ``ValueError`` listing them otherwise."""
    if name not in OPTIMIZER_NAMES:
        raise ValueError(f"unknown optimizer {name!r}; available optimizers: {', '.join(OPTIMIZER_NAMES)}")
    return name  # type: ignore[return-value]


def hidden_linears(model: nn.Module) -> list[nn.Linear]:
    """Every ``nn.Linear`` of ``model`` with a trainable weight, except ``model.head`` (the output layer)."""
    head = getattr(model, "head", None)
    return [
        m for m in model.modules() if isinstance(m, nn.Linear) and m is not head and m.weight.requires_grad
    ]


def _trainable(model: nn.Module) -> list[Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def _without(params: Iterable[Tensor], taken: Iterable[Tensor]) -> list[Tensor]:
    ids = {id(p) for p in taken}
    return [p for p in params if id(p) not in ids]


def _decay_split(params: list[Tensor], weight_decay: float, key: str = "weight_decay") -> list[dict]:
    """Tensors of >= 2 dims decay by ``weight_decay``, vectors not at all (two groups, empty ones dropped)."""
    groups = [
        {"params": [p for p in params if p.dim() >= 2], key: weight_decay},
        {"params": [p for p in params if p.dim() < 2], key: 0.0},
    ]
    return [g for g in groups if g["params"]]


def _adamw(params: list[Tensor], lr: float, weight_decay: float) -> torch.optim.AdamW:
    return torch.optim.AdamW(_decay_split(params, weight_decay), lr=lr, betas=ADAMW_BETAS)


class OptimizerChain:
    """Several optimizers over disjoint parameter sets, used as one by the training loop.

    ``param_groups`` is the list of every optimizer's groups (the same dicts, so the schedule's writes
    reach them), ``state`` maps each parameter to its state, ``state_dict`` holds one entry per optimizer
    by name. Before the optimizers step, the chain applies ``p ← (1 − lr·wd) p`` to the parameters with a
    gradient of every group whose ``chain_weight_decay`` is ``wd > 0`` (for optimizers without weight
    decay of their own), with ``lr`` the scheduled rate (the group's ``lr`` divided by its ``lr_scale``).
    """

    def __init__(self, optimizers: dict[str, Optimizer]) -> None:
        if not optimizers:
            raise ValueError("OptimizerChain needs at least one optimizer")
        seen: set[int] = set()
        for opt in optimizers.values():
            for group in opt.param_groups:
                for p in group["params"]:
                    if id(p) in seen:
                        raise ValueError("a parameter is in two optimizers of the chain")
                    seen.add(id(p))
        self.optimizers = dict(optimizers)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for opt in self.optimizers.values() for group in opt.param_groups]

    @property
    def state(self) -> dict[Tensor, dict[str, Any]]:
        return {p: s for opt in self.optimizers.values() for p, s in opt.state.items()}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def _decay(self) -> None:
        for group in self.param_groups:
            wd = group.get(DECAY_KEY, 0.0)
            if wd:
                rate = group["lr"] / group.get("lr_scale", 1.0)  # the schedule's rate, as AdamW's decay
                for p in group["params"]:
                    if p.grad is not None:
                        p.mul_(1 - rate * wd)

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._decay()
        for opt in self.optimizers.values():
            opt.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("optimizers") if isinstance(state_dict, dict) else None
        if not isinstance(saved, dict) or sorted(saved) != sorted(self.optimizers):
            found = sorted(saved) if isinstance(saved, dict) else "a single optimizer's state"
            raise ValueError(f"optimizer state holds {found}, expected parts {sorted(self.optimizers)}")
        for name, opt in self.optimizers.items():
            opt.load_state_dict(saved[name])


def _with_fallback(main: Optimizer, rest: list[Tensor], lr: float, weight_decay: float) -> OptimizerChain:
    parts: dict[str, Optimizer] = {"main": main}
    if rest:
        parts["adamw"] = _adamw(rest, lr, weight_decay)
    return OptimizerChain(parts)


def _matrix_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float) -> OptimizerChain:
    """Muon, torch.optim.Muon or M3 on the hidden matrices, AdamW on the rest."""
    matrices = [m.weight for m in hidden_linears(model)]
    if not matrices:
        raise ValueError(f"--optimizer {name} needs at least one nn.Linear besides the head")
    rest = _without(_trainable(model), matrices)
    if name == "muon":
        main = Muon(matrices, lr=lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw")
    elif name == "torch-muon":
        main = torch.optim.Muon(matrices, lr=lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw")
    else:
        main = M3([{"params": matrices, DECAY_KEY: weight_decay}], lr=lr, **M3_TRAINING_OPTIONS)
    return _with_fallback(main, rest, lr, weight_decay)


def _dgd(model: nn.Module, lr: float, weight_decay: float) -> OptimizerChain:
    """DGD on every hidden nn.Linear (inputs recorded by hooks), AdamW on the rest."""
    linears = hidden_linears(model)
    if not linears:
        raise ValueError("--optimizer dgd needs at least one nn.Linear besides the head")
    params = [p for m in linears for p in (m.weight, m.bias) if p is not None]
    main = DeltaGradientDescent(_decay_split(params, weight_decay, DECAY_KEY), lr=lr, gram="mean")
    for module in linears:
        main.track(module)
    return _with_fallback(main, _without(_trainable(model), params), lr, weight_decay)


def _elementwise(name: str, model: nn.Module, lr: float, weight_decay: float) -> OptimizerChain:
    """MomentumGD, DMGD, Delta momentum or App. B's Adam on every parameter, decay by the chain."""
    groups = _decay_split(_trainable(model), weight_decay, DECAY_KEY)
    if name == "momentum":
        return OptimizerChain({"main": MomentumGD(groups, lr=lr, alpha=0.9)})
    if name == "dmgd":
        return OptimizerChain({"main": DeepMomentumGD(groups, lr=lr, alpha=0.9, hidden=16)})
    if name == "delta-momentum":
        return OptimizerChain({"main": DeltaMomentum(groups, lr=lr, alpha=0.9, delta_lr=1.0)})
    beta1, beta2 = 1 - ADAMW_BETAS[0], 1 - ADAMW_BETAS[1]
    for group in groups:
        group["lr_scale"] = math.sqrt(beta2)  # ElementwiseMomentum(lr) = Adam(lr / √β₂)
    main = ElementwiseMomentum(
        groups,
        lr=lr * math.sqrt(beta2),
        beta1=beta1,
        beta2=beta2,
        preconditioner="adam",
        decay1=ADAMW_BETAS[0],
        decay2=ADAMW_BETAS[1],
        bias_correction=True,
    )
    return OptimizerChain({"main": main})


def build_optimizer(
    name: str, model: nn.Module, *, lr: float, weight_decay: float
) -> torch.optim.AdamW | OptimizerChain:
    """The optimizer ``name`` (one of :data:`OPTIMIZER_NAMES`) over every trainable parameter of ``model``.

    Args:
        name: the optimizer, see the module docstring for what each one does with which parameters.
        model: any module; its ``head`` attribute, if any, is treated as the output layer.
        lr: peak learning rate > 0 (each group's ``lr`` is ``lr * lr_scale``).
        weight_decay: decoupled weight decay >= 0 on parameters of >= 2 dims.

    Returns:
        ``torch.optim.AdamW`` for ``adamw`` (the format of earlier checkpoints), else an
        :class:`OptimizerChain`.
    """
    check_optimizer_name(name)
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if not (isinstance(weight_decay, int | float) and math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    if name == "adamw":
        return _adamw(_trainable(model), lr, weight_decay)
    if name in ("muon", "torch-muon", "m3"):
        return _matrix_optimizer(name, model, lr, weight_decay)
    if name == "dgd":
        return _dgd(model, lr, weight_decay)
    return _elementwise(name, model, lr, weight_decay)


def set_learning_rate(optimizer: Optimizer | OptimizerChain, lr: float) -> None:
    """Every group's ``lr`` becomes ``lr * group.get("lr_scale", 1)`` (the schedule's write)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def state_bytes(optimizer: Optimizer | OptimizerChain) -> int:
    """Bytes of every tensor in ``optimizer.state`` (the optimizer's memory beyond the parameters)."""
    total = 0
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, Tensor):
                total += value.numel() * value.element_size()
    return total


__all__ = [
    "ADAMW_BETAS",
    "M3_TRAINING_OPTIONS",
    "OPTIMIZER_NAMES",
    "OptimizerChain",
    "build_optimizer",
    "check_optimizer_name",
    "hidden_linears",
    "set_learning_rate",
    "state_bytes",
]
