"""Smoke test of benchmarks/nl_optimizers.py: a tiny run end to end, and the verdict logic."""

from __future__ import annotations

import json
import math

import pytest
import torch

from .scripts import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("nl_optimizers")


def test_quick_run_writes_every_row_and_the_derived_lines(bench, tmp_path, capsys):
    out = tmp_path / "nl_optimizers.json"
    argv = ["--quick", "--iters", "1", "--recall-steps", "1", "--out", str(out)]
    assert bench.main([*argv, "--optimizers", "adamw", "muon", "torch-muon", "m3"]) == 0
    report = json.loads(out.read_text())
    assert {"config", "environment", "metrics", "rows", "derived"} <= set(report)
    got = [(r["model"], r["optimizer"], r["status"]) for r in report["rows"]]
    names = ["adamw", "muon", "torch-muon", "m3"]
    assert got == [("lm", n, "ok") for n in names] + [("mlp", n, "ok") for n in names]
    for row in report["rows"]:
        assert row["step_ms"] > 0 and row["train_step_ms"] >= row["step_ms"] and len(row["step_seconds"]) == 1
        assert row["state_bytes"] >= row["main_state_bytes"] > 0
    by_name = {(r["model"], r["optimizer"]): r for r in report["rows"]}
    # Muon keeps one buffer per hidden matrix, AdamW two per parameter, M3 five per hidden matrix
    mlp_matrices = by_name["mlp", "muon"]["main_state_bytes"]
    assert by_name["mlp", "m3"]["main_state_bytes"] == 5 * mlp_matrices
    assert by_name["mlp", "torch-muon"]["state_bytes"] == by_name["mlp", "muon"]["state_bytes"]
    assert all(by_name["lm", n]["recall"]["status"] == "ok" for n in names)
    assert "recall" not in by_name["mlp", "adamw"]
    assert [d["verdict"] in ("PASS", "FAIL") for d in report["derived"]] == [True] * 4
    printed = capsys.readouterr().out
    assert "| lm | m3 |" in printed and "target <= 1.5" in printed and str(out) in printed


def _row(model, optimizer, step_ms):
    return {"model": model, "optimizer": optimizer, "status": "ok", "step_ms": step_ms}


def test_derived_verdicts_from_made_up_rows(bench):
    rows = [
        _row("lm", "m3", 1.4),
        _row("lm", "muon", 1.0),  # m3/muon 1.4 <= 1.5: PASS
        _row("lm", "torch-muon", 0.8),  # muon/torch 1.25 > 1.2: FAIL
        _row("mlp", "muon", 1.0),
    ]
    by_name = {d["name"]: d for d in bench.derived(rows)}
    assert by_name["lm: step time m3 / muon (target <= 1.5)"]["verdict"] == "PASS"
    lm_muon = by_name["lm: step time muon / torch-muon (target <= 1.2)"]
    assert lm_muon["verdict"] == "FAIL" and lm_muon["value"] == pytest.approx(1.25)
    assert by_name["mlp: step time m3 / muon (target <= 1.5)"]["verdict"] == "N/A"


def _heavy_ball_psi(lr: float, steps: int, k=10.0, a=0.5, w=2.0) -> float:
    """Eq. 33 on Eq. 53 written out: m ← 0.9 m − lr ∇ψ, (r, θ) ← (r, θ) + m, gradient by hand."""
    r, theta, m_r, m_theta = -3.5, 2.0, 0.0, 0.0
    for _ in range(steps):
        e = r - theta + a * math.sin(w * r)
        g_r, g_theta = 2 * r + 2 * k * e * (1 + a * w * math.cos(w * r)), -2 * k * e
        m_r, m_theta = 0.9 * m_r - lr * g_r, 0.9 * m_theta - lr * g_theta
        r, theta = r + m_r, theta + m_theta
    return r**2 + k * (r - theta + a * math.sin(w * r)) ** 2


def test_quick_run_has_dmgd_and_the_eq53_toy(bench, tmp_path, capsys):
    out = tmp_path / "nl_optimizers.json"
    argv = ["--quick", "--iters", "1", "--recall-steps", "0", "--models", "mlp", "--out", str(out)]
    assert bench.main([*argv, "--optimizers", "dmgd"]) == 0
    report = json.loads(out.read_text())
    assert [(r["model"], r["optimizer"], r["status"]) for r in report["rows"]] == [("mlp", "dmgd", "ok")]
    toy = {(r["optimizer"], r.get("lr")): r for r in report["toy"]}
    assert {name for name, _ in toy} == set(bench.TOY_OPTIMIZERS) | {"muon", "m3"}
    assert toy["muon", None]["status"] == toy["m3", None]["status"] == "n/a"
    assert toy["momentum", 1e-2]["steps"] == 20
    assert toy["momentum", 1e-2]["loss"] == pytest.approx(_heavy_ball_psi(1e-2, 20), rel=1e-12)
    # the printed ζ = 1 flips and grows the momentum where ‖g‖² ≈ 1e4 (docs/errata.md, NL Eq. 48–49)
    assert all(toy["delta-momentum zeta=1 (printed)", lr]["status"] == "diverged" for lr in (1e-3, 1e-2))
    start = bench.curvature_toy(torch.tensor(bench.CURVATURE_TOY_START, dtype=torch.float64)).item()
    assert toy["dmgd", 1e-3]["status"] == "ok" and toy["dmgd", 1e-3]["loss"] < start / 10
    printed = capsys.readouterr().out
    assert "| muon | | | n/a:" in printed and "| momentum | 0.01 | 20 |" in printed
