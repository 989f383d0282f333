"""Gradient checkpointing of a loop over chunks, with no work per saved tensor.

Back-propagation through the chunk recurrence keeps every chunk's state; checkpointing a group of chunks
keeps only its inputs and recomputes the group in the backward pass, for one more forward pass.
``torch.utils.checkpoint`` does this without restrictions, but its non-reentrant form runs Python hooks
for every tensor autograd saves (about 120 per chunk of the Titans memory: twice the fwd+bwd time instead
of one more forward), and its reentrant form loses the gradients of tensors nested in lists or tuples and
refuses ``torch.autograd.grad``.

:func:`checkpoint_chunks_group` is one autograd function around the group: its forward runs the group
without building a graph, its backward re-runs it with one and differentiates it with
``torch.autograd.grad``. The function's inputs are every tensor in the group's arguments, however deeply
nested (``torch.utils._pytree``), plus the parameters of every ``nn.Module`` among them, so the result
works with ``backward()`` and ``torch.autograd.grad`` alike and gives the same gradients as no
checkpointing. A tensor that requires gradients and reaches the group any other way (a closure, a global)
would silently get none; the backward pass looks for such tensors in the recomputed graph and raises.
Not supported: a second derivative through the group (``create_graph=True`` raises), random numbers
inside it (the recomputation would draw new ones; the memory draws none), and a ``fn`` that modifies its
arguments in place (the recomputation would start from the modified values).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree

__all__ = ["checkpoint_chunks_group"]


def _module_parameters(leaves: list[Any]) -> list[Tensor]:
    """The parameters of every module among ``leaves`` (or bound to a method among them), each once."""
    found: dict[int, Tensor] = {}
    for leaf in leaves:
        owner = getattr(leaf, "__self__", leaf)  # a bound method's module
        if isinstance(owner, nn.Module):
            for p in owner.parameters():
                found.setdefault(id(p), p)
    return list(found.values())


def _opaque_tensors(leaf: Any) -> list[Tensor]:
    """Tensors requiring gradients held inside a non-tensor argument, where the flattening cannot see them.

    Looks one level deep: an object's attributes, a bound method's object, a closure's cells (a module's
    parameters sit in its ``_parameters`` dict, not among its attributes, and are passed on).
    """
    owner = getattr(leaf, "__self__", leaf)
    values = list(vars(owner).values()) if hasattr(owner, "__dict__") and not isinstance(owner, type) else []
    for cell in getattr(leaf, "__closure__", None) or ():
        values.append(cell.cell_contents)
    return [v for v in values if isinstance(v, Tensor) and v.requires_grad]


def _graph_leaves(roots: list[Tensor]) -> list[Tensor]:
    """Every leaf tensor requiring gradients that the graph of ``roots`` reaches."""
    seen, stack, leaves = set(), [t.grad_fn for t in roots if t.grad_fn is not None], []
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)  # AccumulateGrad: the leaf it accumulates into
        if variable is not None:
            leaves.append(variable)
        stack.extend(n for n, _ in node.next_functions if n is not None)
    return leaves


def _autocast_states() -> list[tuple[str, bool, torch.dtype]]:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [(d, torch.is_autocast_enabled(d), torch.get_autocast_dtype(d)) for d in devices]


class _CheckpointedGroup(torch.autograd.Function):
    """``fn(*args)`` with ``args`` flattened to ``tensors`` (the tensor leaves) and ``others``."""

    @staticmethod
    def forward(ctx, fn, spec, others, tensor_slots, n_tensors, check_hidden, result, *inputs):
        tensors = inputs[:n_tensors]
        ctx.fn, ctx.spec, ctx.others, ctx.tensor_slots = fn, spec, others, tensor_slots
        ctx.check_hidden = check_hidden
        ctx.n_tensors, ctx.autocast = n_tensors, _autocast_states()
        ctx.save_for_backward(*tensors)
        ctx.params = inputs[n_tensors:]  # the modules' parameters, kept by the modules themselves
        out_leaves, out_spec = pytree.tree_flatten(fn(*_rebuild(spec, others, tensor_slots, tensors)))
        result["spec"], result["leaves"] = out_spec, out_leaves
        ctx.out_slots = [i for i, x in enumerate(out_leaves) if isinstance(x, Tensor)]
        return tuple(out_leaves[i] for i in ctx.out_slots)

    @staticmethod
    def backward(ctx, *grad_outputs):
        if torch.is_grad_enabled():  # create_graph=True: a second derivative would silently be zero
            raise RuntimeError(
                "checkpoint_chunks_group: no second derivative through a checkpointed group "
                "(create_graph=True); turn checkpointing off (checkpoint_chunks=0) for it"
            )
        saved = ctx.saved_tensors
        needs = ctx.needs_input_grad[7 : 7 + ctx.n_tensors]
        tensors = [t.detach().requires_grad_(need) for t, need in zip(saved, needs, strict=True)]
        params = list(ctx.params)
        with torch.enable_grad(), _recompute_autocast(ctx.autocast):
            out = pytree.tree_leaves(ctx.fn(*_rebuild(ctx.spec, ctx.others, ctx.tensor_slots, tensors)))
        outs = [out[i] for i in ctx.out_slots]
        pairs = [(o, g) for o, g in zip(outs, grad_outputs, strict=True) if g is not None and o.requires_grad]
        wrt = [t for t in tensors + params if t.requires_grad]
        if ctx.check_hidden:
            _refuse_hidden_leaves([o for o, _ in pairs], wrt)
        grads = iter(
            torch.autograd.grad([o for o, _ in pairs], wrt, [g for _, g in pairs], allow_unused=True)
            if pairs and wrt
            else [None] * len(wrt)
        )
        grad_inputs = [next(grads) if t.requires_grad else None for t in tensors + params]
        return (None,) * 7 + tuple(grad_inputs)


class _recompute_autocast:
    """Re-enter the autocast state of the forward pass (the backward pass may run outside it)."""

    def __init__(self, states):
        self.contexts = [torch.autocast(d, dtype=dtype, enabled=on) for d, on, dtype in states]

    def __enter__(self):
        for c in self.contexts:
            c.__enter__()

    def __exit__(self, *exc):
        for c in reversed(self.contexts):
            c.__exit__(*exc)


def _rebuild(spec, others, tensor_slots, tensors):
    leaves = list(others)
    for slot, t in zip(tensor_slots, tensors, strict=True):
        leaves[slot] = t
    return pytree.tree_unflatten(leaves, spec)


def _refuse_hidden_leaves(outputs: list[Tensor], inputs: list[Tensor]) -> None:
    known = {id(t) for t in inputs}
    hidden = [t for t in _graph_leaves(outputs) if id(t) not in known]
    if hidden:
        shapes = ", ".join(str(tuple(t.shape)) for t in hidden[:3])
        raise RuntimeError(
            f"checkpoint_chunks_group: the function differentiates through {len(hidden)} tensor(s) that are "
            f"not among its arguments (shapes {shapes}); pass them as arguments (or as parameters of an "
            "nn.Module argument), or their gradients would be lost"
        )


def checkpoint_chunks_group(fn: Callable[..., Any], *args: Any, check_hidden: bool = True) -> Any:
    """``fn(*args)``, keeping only ``args`` for the backward pass and recomputing ``fn`` there.

    ``args`` may nest tensors in tuples, lists and dicts, and hold modules, functions and numbers;
    ``fn``'s result may nest tensors likewise (non-tensor parts must not depend on gradients). Gradients
    equal those without checkpointing (up to the order in which a gradient's contributions are summed),
    for ``backward()`` and ``torch.autograd.grad`` alike.

    ``check_hidden``: walk the recomputed graph for tensors that require gradients but are not among
    ``args`` (about 6 % of a Titans memory's fwd+bwd); a loop of groups running the same code needs it for
    one group only.
    """
    leaves, spec = pytree.tree_flatten(args)
    tensor_slots = [i for i, x in enumerate(leaves) if isinstance(x, Tensor)]
    tensors = [leaves[i] for i in tensor_slots]
    others = [None if isinstance(x, Tensor) else x for x in leaves]
    opaque = [t for x in [fn, *others] for t in _opaque_tensors(x)]
    if opaque and torch.is_grad_enabled():
        raise TypeError(
            f"checkpoint_chunks_group: {len(opaque)} tensor(s) requiring gradients are held inside fn or a "
            "non-tensor argument (an object's attribute or a closure); pass them as arguments, in tuples, "
            "lists or dicts, so that they get their gradients"
        )
    params = _module_parameters(leaves)
    result: dict[str, Any] = {}
    outs = _CheckpointedGroup.apply(
        fn, spec, others, tensor_slots, len(tensors), check_hidden, result, *tensors, *params
    )
    out_leaves = list(result["leaves"])
    tensor_outs = iter(outs)
    for i, x in enumerate(out_leaves):
        if isinstance(x, Tensor):
            out_leaves[i] = next(tensor_outs)
    return pytree.tree_unflatten(out_leaves, result["spec"])
