"""Smoke test of benchmarks/precision.py: a tiny run writes one row per kind with both precisions."""

from __future__ import annotations

import json
import math

from .scripts import load_benchmark


def test_quick_run_writes_both_precisions(tmp_path, capsys):
    bench = load_benchmark("precision")
    out = tmp_path / "precision.json"
    assert bench.main(["--quick", "--kinds", "transformer", "titans-lmm", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["kind"] for r in rows] == ["transformer", "titans-lmm"]
    for r in rows:
        for precision in ("fp32", "bf16"):
            assert r[precision]["tokens_per_s"] > 0 and math.isfinite(r[precision]["first_loss"])
        assert r["bf16_speedup"] == r["fp32"]["median_s"] / r["bf16"]["median_s"]
        # the same weights and batch: bfloat16 moves the loss a little, not a lot
        assert abs(r["bf16"]["first_loss"] - r["fp32"]["first_loss"]) < 0.05 * r["fp32"]["first_loss"]
    assert "| transformer | 16 |" in capsys.readouterr().out
