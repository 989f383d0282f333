"""checkpoint_chunks_group: the same outputs and gradients as no checkpointing, for nested arguments."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neural_memory.common.checkpoint import checkpoint_chunks_group

DT = torch.float64


class Scale(nn.Module):
    """A module whose parameter the group uses without it being passed as a tensor."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([1.5, -0.5, 2.0], dtype=DT))

    def forward(self, x):
        return x * self.weight

    def bias_grad(self, x):
        return torch.tanh(x) * self.weight


class Holder:
    def __init__(self, tensor):
        self.tensor = tensor

    def apply(self, x):
        return x * self.tensor


def group_fn(model, state, pieces, settings):
    """A small chunk loop: nested state in, nested state and a number out."""
    w, (m, extra) = state
    outputs = []
    for piece in pieces:
        x, gate, params = piece["x"], piece["gate"], piece.get("params")
        m = gate * m + model(x @ w)
        if params is not None:
            m = m + settings["hook"](params)
        w = w - settings["lr"] * torch.sin(m).unsqueeze(-1) * x.unsqueeze(-2).sum(0, keepdim=True)[0]
        outputs.append(m * extra)
    return outputs, (w, m), len(pieces), w if settings["return_w"] else None


def make(seed=0, with_params=True):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, dtype=DT, generator=g, requires_grad=True)

    model = Scale()
    w, m, extra = r(3, 3), r(3), r(3)
    pieces = [{"x": r(3), "gate": r(()), "params": r(3) if with_params and i % 2 else None} for i in range(4)]
    settings = {"lr": 0.3, "hook": model.bias_grad, "return_w": True}
    leaves = [w, m, extra, *[t for p in pieces for t in (p["x"], p["gate"], p["params"]) if t is not None]]
    return model, (w, (m, extra)), pieces, settings, leaves + list(model.parameters())


def total(result):
    outputs, (w, m), count, w_again = result
    assert count == 4
    return sum((o**2).sum() for o in outputs) + (w**3).sum() + m.sum() + (w_again * 0.5).sum()


def test_outputs_and_gradients_equal_no_checkpointing():
    model, state, pieces, settings, wrt = make()
    plain = group_fn(model, state, pieces, settings)
    ckpt = checkpoint_chunks_group(group_fn, model, state, pieces, settings)
    for a, b in zip(plain[0], ckpt[0], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert ckpt[2] == 4
    want = torch.autograd.grad(total(plain), wrt)
    got = torch.autograd.grad(total(ckpt), wrt)
    assert all(g is not None for g in got)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-14)


def test_backward_accumulates_the_same_grads_as_no_checkpointing():
    """``loss.backward()`` fills ``.grad`` of leaves nested anywhere in the arguments and of the module."""
    results = []
    for use in (False, True):
        model, state, pieces, settings, wrt = make(seed=1)
        result = (checkpoint_chunks_group if use else lambda f, *a: f(*a))(
            group_fn, model, state, pieces, settings
        )
        total(result).backward()
        results.append([t.grad for t in wrt])
    for a, b in zip(*results, strict=True):
        assert a is not None and b is not None
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-14)


def test_only_the_inputs_are_kept_for_the_backward_pass():
    """The group's intermediate tensors are not saved: only its inputs (no copies)."""
    model, state, pieces, settings, wrt = make()
    counts = []
    for use in (False, True):
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t, s=saved: s.append(t) or t, lambda t: t):
            (checkpoint_chunks_group if use else lambda f, *a: f(*a))(
                group_fn, model, state, pieces, settings
            )
        counts.append(len(saved))
    n_inputs = len(wrt) - 1  # the tensor leaves of the arguments; the module's parameter is not saved
    assert counts[1] == n_inputs < counts[0]


def test_an_output_may_be_an_input_unchanged():
    x = torch.randn(3, dtype=DT, requires_grad=True)
    y = torch.randn(3, dtype=DT, requires_grad=True)
    same, doubled = checkpoint_chunks_group(lambda a, b: (a, 2 * b), x, y)
    (gx, gy) = torch.autograd.grad((same * 3).sum() + doubled.sum(), (x, y))
    torch.testing.assert_close(gx, torch.full_like(x, 3.0))
    torch.testing.assert_close(gy, torch.full_like(y, 2.0))


def test_gradients_only_for_what_asks_for_one():
    a = torch.randn(3, dtype=DT, requires_grad=True)
    b = torch.randn(3, dtype=DT)  # no gradient wanted
    out = checkpoint_chunks_group(lambda u, v: (u * v).sum(), a, b)
    (ga,) = torch.autograd.grad(out, a)
    torch.testing.assert_close(ga, b)
    assert b.grad is None


def test_without_gradients_it_is_the_plain_call():
    model, state, pieces, settings, _ = make()
    with torch.no_grad():
        plain = group_fn(model, state, pieces, settings)
        ckpt = checkpoint_chunks_group(group_fn, model, state, pieces, settings)
    for a, b in zip(plain[0], ckpt[0], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not ckpt[1][0].requires_grad


def test_a_leaf_reaching_the_group_unseen_is_refused_in_the_backward_pass():
    """Two levels down, past the call's shallow look (next test): the recomputed graph gives it away."""
    hidden = torch.randn(3, dtype=DT, requires_grad=True)
    x = torch.randn(3, dtype=DT, requires_grad=True)
    nested = Holder(Holder(hidden))
    out = checkpoint_chunks_group(lambda h, a: (a * h.tensor.tensor).sum(), nested, x)
    with pytest.raises(RuntimeError, match=r"differentiates through 1 tensor\(s\) that are not among its"):
        out.backward()
    unchecked = checkpoint_chunks_group(
        lambda h, a: (a * h.tensor.tensor).sum(), nested, x, check_hidden=False
    )
    unchecked.backward()  # the caller vouched for it: the hidden tensor's gradient is lost, as documented
    assert hidden.grad is None
    torch.testing.assert_close(x.grad, hidden.detach())


def test_a_second_derivative_through_the_group_is_refused():
    x = torch.randn(3, dtype=DT, requires_grad=True)
    out = checkpoint_chunks_group(lambda a: (a**3).sum(), x)
    message = (
        r"^checkpoint_chunks_group: no second derivative through a checkpointed group \(create_graph=True\); "
        r"turn checkpointing off \(checkpoint_chunks=0\) for it$"
    )
    with pytest.raises(RuntimeError, match=message):
        torch.autograd.grad(out, x, create_graph=True)


def test_the_recomputation_runs_under_the_forward_autocast():
    """Forward under bf16 autocast, backward outside it: the recomputed matmuls are bf16 again."""
    results = []
    for use in (False, True):
        g = torch.Generator().manual_seed(3)
        a = torch.randn(8, 8, generator=g, requires_grad=True)
        b = torch.randn(8, 8, generator=g, requires_grad=True)

        def fn(u, v):
            return (u @ v).float().pow(2).sum()

        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = checkpoint_chunks_group(fn, a, b) if use else fn(a, b)
        results.append(torch.autograd.grad(out, (a, b)))
    for x, y in zip(*results, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


@pytest.mark.parametrize("where", ["object", "bound method", "closure", "fn's closure"])
def test_a_tensor_requiring_grad_inside_a_non_tensor_argument_is_refused(where):
    """The flattening sees tuples, lists and dicts only; a tensor inside an object would lose its gradient
    (or, if not a leaf, be differentiated through the graph outside the group)."""
    hidden = torch.randn(3, dtype=DT, requires_grad=True) * 2  # not a leaf
    x = torch.randn(3, dtype=DT, requires_grad=True)
    holder = Holder(hidden)
    fn, arg = {
        "object": (lambda h, a: h.apply(a).sum(), holder),
        "bound method": (lambda f, a: f(a).sum(), holder.apply),
        "closure": (lambda f, a: f(a).sum(), lambda a: a * hidden),
        "fn's closure": (lambda _, a: (a * hidden).sum(), None),
    }[where]
    message = (
        r"^checkpoint_chunks_group: 1 tensor\(s\) requiring gradients are held inside fn or a non-tensor "
        r"argument \(an object's attribute or a closure\); pass them as arguments, in tuples, lists or "
        r"dicts, so that they get their gradients$"
    )
    with pytest.raises(TypeError, match=message):
        checkpoint_chunks_group(fn, arg, x)
    with torch.no_grad():  # nothing to lose without gradients
        checkpoint_chunks_group(fn, arg, x)


def test_the_hidden_tensors_message_names_the_first_three_shapes():
    hidden = [torch.randn(n, dtype=DT, requires_grad=True) for n in (1, 1, 1, 1)]
    x = torch.randn(1, dtype=DT, requires_grad=True)
    nested = Holder(Holder(hidden))
    out = checkpoint_chunks_group(lambda h, a: sum(a * t for t in h.tensor.tensor).sum(), nested, x)
    message = (
        r"^checkpoint_chunks_group: the function differentiates through 4 tensor\(s\) that are not among its "
        r"arguments \(shapes \(1,\), \(1,\), \(1,\)\); pass them as arguments \(or as parameters of an "
        r"nn.Module argument\), or their gradients would be lost$"
    )
    with pytest.raises(RuntimeError, match=message):
        out.backward()


def test_a_leaf_behind_a_node_reached_twice_is_still_found():
    """The graph walk skips a node it has seen and goes on with the others (z = y + y reaches y twice,
    and the hidden leaf is popped after that second visit)."""
    hidden = torch.randn(3, dtype=DT, requires_grad=True)
    x = torch.randn(3, dtype=DT, requires_grad=True)

    def fn(h, a):
        y = a * 2
        return (h.tensor.tensor * (y + y)).sum()

    out = checkpoint_chunks_group(fn, Holder(Holder(hidden)), x)
    with pytest.raises(RuntimeError, match=r"differentiates through 1 tensor\(s\)"):
        out.backward()


def test_a_bound_method_argument_brings_its_modules_parameters():
    """The module is passed only through its bound method: its parameter still gets its gradient."""
    x = torch.randn(3, dtype=DT, requires_grad=True)
    grads = []
    for use in (False, True):
        scale = Scale()

        def fn(f, a):
            return (f(a) ** 2).sum()

        out = checkpoint_chunks_group(fn, scale.bias_grad, x) if use else fn(scale.bias_grad, x)
        grads.append(torch.autograd.grad(out, [x, scale.weight]))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-15)


def test_a_tensor_attribute_of_a_module_argument_is_refused():
    """A module's parameters are passed on; a plain tensor attribute requiring gradients is not."""
    scale = Scale()
    scale.extra = torch.randn(3, dtype=DT, requires_grad=True)
    x = torch.randn(3, dtype=DT, requires_grad=True)
    with pytest.raises(TypeError, match=r"1 tensor\(s\) requiring gradients are held inside"):
        checkpoint_chunks_group(lambda m, a: (m(a) * m.extra).sum(), scale, x)
    checkpoint_chunks_group(lambda m, a: m(a).sum(), Scale(), x)  # parameters alone are fine


def test_an_output_that_needs_no_gradient_gives_none_to_every_input():
    """The output does not depend on the input: the backward pass has nothing to differentiate."""
    x = torch.randn(3, dtype=DT, requires_grad=True)
    constant = checkpoint_chunks_group(lambda a: torch.ones(3, dtype=DT), x)
    assert constant.requires_grad  # an autograd function's output, since its input requires grad
    constant.sum().backward()
    assert x.grad is None


def test_the_recomputation_keeps_float32_outside_autocast_and_the_forwards_dtype_inside():
    """Without autocast the recomputed matmuls stay float32; under float16 autocast they are float16 again
    (not the default bfloat16)."""
    for autocast_dtype in (None, torch.float16):
        results = []
        for use in (False, True):
            g = torch.Generator().manual_seed(4)
            a = torch.randn(16, 16, generator=g, requires_grad=True)
            b = torch.randn(16, 16, generator=g, requires_grad=True)

            def fn(u, v):
                return (u @ v).float().pow(2).sum()

            with torch.autocast(
                "cpu", dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None
            ):
                out = checkpoint_chunks_group(fn, a, b) if use else fn(a, b)
            results.append(torch.autograd.grad(out, (a, b)))
        for x, y in zip(*results, strict=True):
            torch.testing.assert_close(x, y, rtol=0, atol=0)
