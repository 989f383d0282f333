"""``neural-memory train --optimizer NAME``: every optimizer trains, resumes bit for bit and covers every
parameter; the schedule and the weight decay reach every group; bad names and changed optimizers are errors.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from neural_memory.cli import main
from neural_memory.commands.train import OPTIMIZERS
from neural_memory.nl.optimizers import M3, DeepMomentumGD, DeltaMomentum
from neural_memory.training import (
    Task,
    TrainConfig,
    build_model,
    load_checkpoint,
    lr_at,
    make_optimizer,
    resume_config,
    train,
    train_step,
)
from neural_memory.training_optimizers import (
    M3_TRAINING_OPTIONS,
    OPTIMIZER_NAMES,
    OptimizerChain,
    build_optimizer,
    hidden_linears,
    set_learning_rate,
    state_bytes,
)

TINY = {"seq_len": 16, "batch_size": 4, "dim": 16, "depth": 1, "recall_pairs": 3}
QUIET = {"progress": False, "log": lambda _: None}


def _config(name: str, kind: str = "transformer", **overrides) -> TrainConfig:
    return TrainConfig(kind=kind, optimizer=name, **{**TINY, **overrides})


def _tensors(obj, prefix=""):
    """Every tensor in a nested state dict, by path (ints and floats too, as 0-d tensors)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _tensors(value, f"{prefix}/{key}")
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            yield from _tensors(value, f"{prefix}/{i}")
    elif isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, int | float) and not isinstance(obj, bool):
        yield prefix, torch.tensor(obj, dtype=torch.float64)


# ------------------------------------------------------------------------------------------------
# every optimizer trains and covers every parameter
# ------------------------------------------------------------------------------------------------


def test_the_cli_lists_exactly_the_optimizers_the_loop_builds():
    assert tuple(OPTIMIZERS) == OPTIMIZER_NAMES
    assert TrainConfig(kind="x").optimizer == "adamw"


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_three_step_run_is_finite_and_moves_the_weights(name, tmp_path):
    config = _config(name, steps=3, eval_every=3)
    result = train(config, tmp_path, **QUIET)
    assert result.steps == 3 and math.isfinite(result.train_loss) and math.isfinite(result.val_loss)
    trained, initial = load_checkpoint(tmp_path)["model"], build_model(config).state_dict()
    assert all(torch.isfinite(v).all() for v in trained.values())
    assert any(not torch.equal(trained[k], initial[k]) for k in initial)
    assert load_checkpoint(tmp_path)["config"]["optimizer"] == name


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_one_step_moves_every_parameter_of_the_titans_lm(name):
    # titans-mac has every kind of parameter: tied embedding, norms, persistent tokens, 3-D memory weights,
    # convolutions, gates with biases. None may be left out of the optimizer or silently skipped by it.
    # float64, so that a small step (lr·g ~ 1e-10 on a gate bias of 6 for momentum) is not rounded away.
    config = _config(name, kind="titans-mac", steps=10)
    model = build_model(config).double()
    optimizer = make_optimizer(model, config)
    grouped = [p for group in optimizer.param_groups for p in group["params"]]
    assert len(grouped) == len({id(p) for p in grouped}) == len(list(model.parameters()))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_step(model, optimizer, Task(config).batch(torch.Generator().manual_seed(0)), 1e-3, 1.0)
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
    assert unchanged == []


@pytest.mark.parametrize("name", ["muon", "torch-muon", "m3"])
def test_matrix_optimizers_get_the_hidden_linear_weights_and_adamw_the_rest(name):
    model = build_model(_config(name, kind="titans-mac", model_config={"tie_embeddings": False}))
    optimizer = build_optimizer(name, model, lr=1e-3, weight_decay=0.1)
    assert isinstance(optimizer, OptimizerChain) and list(optimizer.optimizers) == ["main", "adamw"]
    main_params = {id(p) for g in optimizer.optimizers["main"].param_groups for p in g["params"]}
    expected = {id(m.weight) for m in hidden_linears(model)}
    assert main_params == expected
    assert id(model.head.weight) not in main_params and id(model.embedding.weight) not in main_params
    assert all(p.dim() == 2 for g in optimizer.optimizers["main"].param_groups for p in g["params"])


@pytest.mark.parametrize(
    ("name", "cls", "options"),
    [
        ("dmgd", DeepMomentumGD, {"alpha": 0.9, "hidden": 16, "objective": "dot", "activation": "tanh"}),
        ("delta-momentum", DeltaMomentum, {"alpha": 0.9, "delta_lr": 1.0, "precondition": None}),
    ],
)
def test_momentum_memories_hold_every_parameter_with_the_chain_decay(name, cls, options):
    # DMGD and Delta momentum take any tensor (a vector is one column, higher ranks flatten), so, like
    # momentum, they get every parameter, the matrices decayed by the chain and the vectors not at all.
    model = build_model(_config(name, kind="titans-mac"))
    optimizer = build_optimizer(name, model, lr=1e-3, weight_decay=0.1)
    assert isinstance(optimizer, OptimizerChain) and list(optimizer.optimizers) == ["main"]
    main = optimizer.optimizers["main"]
    assert isinstance(main, cls)
    held = [p for g in main.param_groups for p in g["params"]]
    assert {id(p) for p in held} == {id(p) for p in model.parameters()}
    for group in main.param_groups:
        assert {k: group[k] for k in options} == options and group["lr"] == 1e-3
        expected = 0.1 if group["params"][0].dim() >= 2 else 0.0
        assert group["chain_weight_decay"] == expected
        assert all((p.dim() >= 2) == (expected > 0) for p in group["params"])


def test_delta_momentum_in_the_loop_is_eq49_by_hand():
    # Two steps on an MLP with fixed gradients G1, G2 per parameter (weight decay 0): by Eq. 48–49 with
    # ζ = 1, P = I: m1 = −η G1, m2 = m1 (α I − G2ᵀG2) − η G2 (a vector as one column), W2 = W0 + m1 + m2.
    lr, alpha = 0.1, 0.9
    model = _mlp()
    optimizer = build_optimizer("delta-momentum", model, lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(3)
    grads = [[torch.randn(p.shape, dtype=torch.float64, generator=generator) for p in model.parameters()]]
    grads.append([torch.randn(p.shape, dtype=torch.float64, generator=generator) for p in model.parameters()])
    start = [p.detach().clone() for p in model.parameters()]
    for step_grads in grads:
        for p, g in zip(model.parameters(), step_grads, strict=True):
            p.grad = g.clone()
        optimizer.step()
    for p, w0, g1, g2 in zip(model.parameters(), start, *grads, strict=True):
        g1m, g2m = (g.reshape(g.shape[0], -1) for g in (g1, g2))
        m1 = -lr * g1m
        m2 = m1 @ (alpha * torch.eye(g2m.shape[1], dtype=torch.float64) - g2m.T @ g2m) - lr * g2m
        torch.testing.assert_close(p.detach(), w0 + (m1 + m2).reshape(w0.shape), rtol=1e-12, atol=1e-14)


def test_m3_in_the_loop_is_the_ema_reading_of_algorithm_1_and_the_paper_default_stays_the_class_default():
    # --optimizer m3: M ← 0.9 M + 0.1 g, V ← 0.999 V + 0.001 g², slow M2 ← 0.9 M2 + 0.1 Σg, ε = 0.1 (the
    # catalog's EMA reading; the printed sums with ε = 1e-8 diverge in the LM, see the module docstring).
    model = build_model(_config("m3"))
    main = build_optimizer("m3", model, lr=1e-3, weight_decay=0.1).optimizers["main"]
    expected = {"beta1": 0.1, "beta2": 0.001, "beta3": 0.1, "decays": (0.9, 0.999, 0.9), "eps": 0.1}
    assert all({k: g[k] for k in expected} == expected for g in main.param_groups)
    paper = M3(model.parameters()).defaults
    assert {k: paper[k] for k in expected} == {
        "beta1": 0.9,
        "beta2": 0.999,
        "beta3": 0.9,
        "decays": (1.0, 1.0, 1.0),
        "eps": 1e-8,
    }


def test_m3_in_the_loop_orthogonalises_in_the_dtype_muon_uses():
    # M3 and Muon run the same Newton-Schulz; in the loop both run it in bfloat16 (torch.optim.Muon's
    # choice), so --optimizer m3 costs one Newton-Schulz more per period than muon, not a float32 one per
    # step (benchmarks/nl_optimizers.py: 1.95x muon's step with float32, the 1.5x target missed).
    model = build_model(_config("m3"))
    m3 = build_optimizer("m3", model, lr=1e-3, weight_decay=0.1).optimizers["main"]
    muon = build_optimizer("muon", model, lr=1e-3, weight_decay=0.1).optimizers["main"]
    assert {g["ns_dtype"] for g in m3.param_groups} == {g["ns_dtype"] for g in muon.param_groups}
    assert {g["ns_dtype"] for g in m3.param_groups} == {torch.bfloat16}
    # and the step is the one an M3 built by hand with that dtype takes
    torch.manual_seed(0)
    w = torch.randn(8, 5)
    grads = [torch.randn(8, 5) for _ in range(3)]
    a, b = nn.Parameter(w.clone()), nn.Parameter(w.clone())
    loop = M3([a], lr=1e-2, **M3_TRAINING_OPTIONS)
    hand = M3([b], lr=1e-2, ns_dtype=torch.bfloat16, beta1=0.1, beta2=0.001, beta3=0.1,
              decays=(0.9, 0.999, 0.9), eps=0.1)  # fmt: skip
    for g in grads:
        a.grad, b.grad = g.clone(), g.clone()
        loop.step()
        hand.step()
    assert torch.equal(a, b)


@pytest.mark.parametrize(("ours", "reference"), [("adam-nl", "adamw"), ("muon", "torch-muon")])
def test_an_nl_optimizer_equals_its_torch_counterpart_in_training(ours, reference, tmp_path):
    # App. B's Adam form with lr·√β₂ and the chain's decay is AdamW; our Muon is torch.optim.Muon. Three
    # steps of the loop agree to float32 round-off (the operations differ in order).
    for name in (ours, reference):
        train(_config(name, steps=3, eval_every=3), tmp_path / name, **QUIET)
    a, b = (load_checkpoint(tmp_path / name)["model"] for name in (ours, reference))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# resume
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_resume_equals_an_uninterrupted_run_bit_for_bit(name, tmp_path):
    config = _config(name, steps=4, eval_every=100, warmup=1)
    train(config, tmp_path / "straight", **QUIET)
    train(config, tmp_path / "resumed", stop_at=2, **QUIET)
    assert load_checkpoint(tmp_path / "resumed")["step"] == 2
    train(None, tmp_path / "resumed", resume=True, **QUIET)
    a, b = (load_checkpoint(tmp_path / d) for d in ("straight", "resumed"))
    assert a["step"] == b["step"] == 4
    for part in ("model", "optimizer"):
        left, right = dict(_tensors(a[part])), dict(_tensors(b[part]))
        assert left.keys() == right.keys() and left
        different = [k for k in left if not torch.equal(left[k], right[k])]
        assert different == [], part


def test_resuming_with_another_optimizer_is_an_error(tmp_path):
    train(_config("adamw", steps=1), tmp_path, **QUIET)
    saved = TrainConfig.from_dict(load_checkpoint(tmp_path)["config"])
    with pytest.raises(ValueError, match=r"cannot change optimizer='m3' \(checkpoint: 'adamw'\)"):
        resume_config(saved, {"optimizer": "m3"})
    with pytest.raises(ValueError, match=r"cannot change optimizer='muon'"):
        train(None, tmp_path, resume=True, overrides={"optimizer": "muon"}, **QUIET)


def test_a_checkpoint_without_an_optimizer_field_is_an_adamw_run():
    old = {k: v for k, v in _config("adamw").to_dict().items() if k != "optimizer"}
    assert TrainConfig.from_dict(old).optimizer == "adamw"


def test_chain_refuses_another_optimizers_state():
    model = build_model(_config("muon"))
    chain = make_optimizer(model, _config("muon"))
    adamw = make_optimizer(model, _config("adamw"))
    with pytest.raises(ValueError, match=r"expected parts \['adamw', 'main'\]"):
        chain.load_state_dict(adamw.state_dict())
    with pytest.raises(ValueError, match="a parameter is in two optimizers"):
        OptimizerChain({"a": torch.optim.SGD(model.parameters()), "b": torch.optim.SGD(model.parameters())})


# ------------------------------------------------------------------------------------------------
# the schedule and the weight decay reach every group
# ------------------------------------------------------------------------------------------------


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_the_schedule_sets_every_groups_rate(name):
    config = _config(name, steps=20, warmup=5, lr=0.01)
    model = build_model(config)
    optimizer = make_optimizer(model, config)
    task, generator = Task(config), torch.Generator().manual_seed(0)
    for step in range(3):
        train_step(model, optimizer, task.batch(generator), lr_at(step, config), 1.0)
        rate = lr_at(step, config)
        scales = [g.get("lr_scale", 1.0) for g in optimizer.param_groups]
        assert [g["lr"] for g in optimizer.param_groups] == [rate * s for s in scales]


@pytest.mark.parametrize("name", [n for n in OPTIMIZER_NAMES if n != "dgd"])
def test_with_zero_gradients_only_the_weight_decay_acts(name):
    # Zero gradients: every optimizer's own update is exactly 0 (Newton-Schulz of 0 is 0, 0/(0 + eps) is 0),
    # so matrices shrink by (1 - lr·wd) and vectors (no decay) stay put, whichever optimizer holds them.
    lr, wd = 0.1, 0.5
    model = _mlp()
    optimizer = build_optimizer(name, model, lr=1.0, weight_decay=wd)
    set_learning_rate(optimizer, lr)
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for p, old in zip(model.parameters(), before, strict=True):
        expected = old * (1 - lr * wd) if p.dim() >= 2 else old
        torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=1e-15)


def test_dgd_step_is_the_decayed_proximal_step_on_the_mean_gram_of_the_recorded_inputs():
    # By hand: W ← (1 − η·wd) W, then W ← (W − η G)(I + η XᵀX / n)⁻¹ with the per-token mean Gram (the loss
    # is a mean over the n tokens); a bias is a column with input 1 and no decay: b ← (b − η g_b) / (1 + η).
    # Layer 2's inputs are tanh of layer 1's outputs.
    lr, wd, n = 0.1, 0.5, 5
    model = _mlp()
    optimizer = build_optimizer("dgd", model, lr=lr, weight_decay=wd)
    assert list(optimizer.optimizers) == ["main"]  # an MLP has no head: every layer is DGD's
    assert all(group["gram"] == "mean" for group in optimizer.param_groups)
    x = torch.randn(n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    first, second = model[0], model[2]
    hidden = torch.tanh(first(x)).detach()
    generator = torch.Generator().manual_seed(2)
    grads = [torch.randn(p.shape, dtype=torch.float64, generator=generator) for p in model.parameters()]
    expected = []
    for i, (layer, inputs) in enumerate(((first, x), (second, hidden))):
        g_weight, g_bias = grads[2 * i], grads[2 * i + 1]
        system = torch.eye(inputs.shape[1], dtype=torch.float64) + lr * inputs.T @ inputs / n
        weight = ((1 - lr * wd) * layer.weight.detach() - lr * g_weight) @ torch.linalg.inv(system)
        expected += [weight, (layer.bias.detach() - lr * g_bias) / (1 + lr)]
    optimizer.zero_grad()
    model(x)  # the hooks record the inputs
    for p, g in zip(model.parameters(), grads, strict=True):
        p.grad = g.clone()
    optimizer.step()
    got = [first.weight, first.bias, second.weight, second.bias]
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g.detach(), e, rtol=1e-12, atol=1e-14)


def test_state_bytes_counts_the_optimizer_tensors():
    model = _mlp()
    optimizer = build_optimizer("adamw", model, lr=1e-3, weight_decay=0.0)
    assert state_bytes(optimizer) == 0
    model(torch.ones(1, 3, dtype=torch.float64)).sum().backward()
    optimizer.step()
    n = sum(p.numel() for p in model.parameters())
    # exp_avg and exp_avg_sq in float64, and a 0-d float32 step counter per parameter
    assert state_bytes(optimizer) == 2 * 8 * n + 4 * len(list(model.parameters()))


# ------------------------------------------------------------------------------------------------
# names and the command line
# ------------------------------------------------------------------------------------------------


def test_unknown_optimizer_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown optimizer 'sgd'; available optimizers: adamw, muon"):
        TrainConfig(kind="transformer", optimizer="sgd")
    with pytest.raises(ValueError, match=r"unknown optimizer 'lion'"):
        build_optimizer("lion", _mlp(), lr=1e-3, weight_decay=0.0)
    with pytest.raises(ValueError, match="weight_decay must be a finite number >= 0"):
        build_optimizer("m3", _mlp(), lr=1e-3, weight_decay=-1.0)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        build_optimizer("muon", _mlp(), lr=0.0, weight_decay=0.0)


def test_cli_unknown_optimizer_names_the_choices(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "transformer", "--optimizer", "sgd", "--out", str(tmp_path)])
    assert "invalid choice: 'sgd'" in capsys.readouterr().err


def test_cli_help_shows_the_optimizer_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--optimizer NAME" in text and all(f"{name}:" in text for name in OPTIMIZER_NAMES)
    assert "inputs recorded by forward hooks" in text


def test_cli_trains_with_m3_and_resumes_it(tmp_path, capsys):
    args = ["--seq-len", "16", "--batch-size", "2", "--dim", "16", "--depth", "1", "--recall-pairs", "3"]
    args.append("--no-progress")
    assert (
        main(["train", "transformer", "--optimizer", "m3", "--steps", "2", "--out", str(tmp_path), *args])
        == 0
    )
    assert load_checkpoint(tmp_path)["config"]["optimizer"] == "m3"
    main(["train", "transformer", "--out", str(tmp_path), "--resume", "--steps", "3", "--no-progress"])
    assert load_checkpoint(tmp_path)["step"] == 3 and "steps=3" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"cannot change optimizer='adamw' \(checkpoint: 'm3'\)"):
        main(["train", "transformer", "--out", str(tmp_path), "--resume", "--optimizer", "adamw"])


def test_chain_step_evaluates_a_closure_once_and_needs_an_optimizer():
    model = _mlp()
    chain = build_optimizer("muon", model, lr=1e-3, weight_decay=0.0)
    calls = []

    def closure():
        calls.append(1)
        chain.zero_grad()
        loss = model(torch.ones(2, 3, dtype=torch.float64)).square().sum()
        loss.backward()
        return loss

    assert torch.isfinite(chain.step(closure)) and calls == [1]
    with pytest.raises(ValueError, match="at least one optimizer"):
        OptimizerChain({})


@pytest.mark.parametrize("name", ["muon", "m3", "dgd"])
def test_a_model_without_hidden_linear_layers_is_refused_by_the_matrix_optimizers(name):
    with pytest.raises(ValueError, match=f"--optimizer {name} needs at least one nn.Linear besides the head"):
        build_optimizer(name, nn.Sequential(nn.LayerNorm(3)), lr=1e-3, weight_decay=0.0)
