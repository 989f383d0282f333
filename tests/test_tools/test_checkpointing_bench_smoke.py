"""Smoke test of benchmarks/checkpointing.py: a tiny run end to end, and its summary on made-up rows."""

from __future__ import annotations

import json

from .scripts import load_benchmark


def test_quick_run_measures_the_three_settings_with_the_same_gradients(tmp_path, capsys):
    bench = load_benchmark("checkpointing")
    out = tmp_path / "ckpt.json"
    assert bench.main(["--quick", "--rounds", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [r["setting"] for r in report["rows"]] == ["none", "torch", "ours"]
    summary = report["summary"]
    norms = [summary[s]["grad_norm_sum"] for s in ("none", "torch", "ours")]
    assert norms[0] > 0 and max(norms) - min(norms) <= 1e-6 * norms[0]  # the same gradients
    assert all(summary[s]["cpu_seconds"] > 0 for s in summary)
    assert "x none" in capsys.readouterr().out


def test_summary_takes_the_median_over_rounds_and_skips_errors():
    bench = load_benchmark("checkpointing")
    keys = ("seconds", "cpu_seconds", "delta_peak_rss_mb", "grad_norm_sum")
    rows = [{"setting": "ours", **dict.fromkeys(keys, v)} for v in (1.0, 5.0, 2.0)]
    rows.append({"setting": "torch", "error": "MemoryError"})
    summary = bench.summarise(rows)
    assert summary == {"ours": dict.fromkeys(keys, 2.0)}
    assert "ours" in bench.table(summary) and "x none" in bench.table(summary)
