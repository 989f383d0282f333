"""Smoke test of benchmarks/training_sweep.py: one tiny run per mode end to end, and its tables."""

from __future__ import annotations

import json

import pytest

from .scripts import load_benchmark


@pytest.fixture(scope="module")
def sweep():
    return load_benchmark("training_sweep")


def test_quick_stability_run_records_a_finite_curve(sweep, tmp_path, capsys):
    out = tmp_path / "stability.json"
    assert (
        sweep.main(["stability", "--quick", "--kinds", "titans-lmm", "--seeds", "0", "--out", str(out)]) == 0
    )
    (record,) = json.loads(out.read_text())["records"]
    assert record["finite"] is True and record["task"] == "recall" and record["steps"] == 3
    assert record["curve"][-1]["step"] == 3 and "val_accuracy" in record["curve"][-1]
    assert record["lr_effective"] == 1e-3  # TrainConfig's default, times --lr-mult 1
    assert "| titans-lmm | recall | 0 | 0.001 | yes |" in capsys.readouterr().out


def test_lr_sets_the_base_learning_rate(sweep, tmp_path):
    out = tmp_path / "stability.json"
    argv = [
        "stability",
        "--quick",
        "--kinds",
        "transformer",
        "--seeds",
        "0",
        "--lr",
        "1e-3",
        "--lr-mult",
        "2",
    ]
    assert sweep.main([*argv, "--out", str(out)]) == 0
    (record,) = json.loads(out.read_text())["records"]
    assert record["lr_effective"] == 2e-3


def test_tables_from_made_up_records(sweep):
    records = [
        {
            "kind": "k",
            "task": "recall",
            "seed": s,
            "lr_effective": 9e-3,
            "finite": f,
            "seconds": 1.0,
            "curve": c,
        }
        for s, f, c in [
            (0, True, [{"step": 10, "val_accuracy": 0.2, "val_loss": 2.0, "train_loss": 2.1}]),
            (1, False, [{"step": 10, "val_accuracy": 0.4, "val_loss": 1.0}]),
        ]
    ]
    stability = sweep.table(records)
    assert "| k | recall | 0 | 0.009 | yes | 2.100 | 2.000 | 0.200 | 1 |" in stability
    assert "| k | recall | 1 | 0.009 | **NaN** | – | 1.000 | 0.400 | 1 |" in stability
    assert "| k | 0.300 (0.20–0.40) |" in sweep.accuracy_table(records)


def test_summary_tabulates_kinds_by_seed_per_task_and_learning_rate(sweep, tmp_path, capsys):
    def record(kind, task, seed, mult, finite, loss, acc=None):
        point = {"step": 500, "val_loss": loss} | ({} if acc is None else {"val_accuracy": acc})
        return {"kind": kind, "task": task, "seed": seed, "lr_mult": mult, "finite": finite, "curve": [point]}

    first = [record("a", "recall", 0, 3.0, True, 1.234, 0.5), record("b", "recall", 0, 3.0, False, 9.0, 0.1)]
    second = [record("a", "recall", 2, 3.0, True, 0.5, 0.9), record("a", "text", 2, 1.0, True, 1.8765)]
    files = []
    for i, records in enumerate((first, second)):
        files.append(tmp_path / f"{i}.json")
        files[-1].write_text(json.dumps({"records": records}))
    assert sweep.main(["summary", *map(str, files)]) == 0
    out = capsys.readouterr().out
    assert "recall, 3x lr:\n\n| kind | seed 0 | seed 2 | all finite |" in out
    assert "| a | 0.500 (1.23) | 0.900 (0.50) | yes |" in out
    assert "| b | **NaN** | not run | no |" in out
    assert "text, 1x lr:\n\n| kind | seed 2 | all finite |" in out and "| a | 1.877 | yes |" in out
