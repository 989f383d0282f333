"""Smoke test of benchmarks/delta_rule.py: a tiny run end to end, the skip rule, and the verdict logic."""

from __future__ import annotations

import json

import pytest

from .scripts import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("delta_rule")


def test_quick_run_writes_rows_and_skips_a_recurrence_over_budget(bench, tmp_path, capsys):
    out = tmp_path / "delta_rule.json"
    argv = ["--quick", "--seqs", "16", "32", "--chunks", "8", "--heads", "1", "--dim", "8"]
    # a zero budget: the recurrence runs at the first seq (nothing to project from) and is skipped after
    assert bench.main([*argv, "--max-recurrent-s", "0", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert {"config", "environment", "throughput_metric", "rows", "derived"} <= set(report)
    got = [(r["variant"], r["impl"], r["chunk"], r["seq"], r["status"]) for r in report["rows"]]
    assert got == [
        ("deltanet", "chunked", 8, 16, "ok"),
        ("deltanet", "recurrent", None, 16, "ok"),
        ("gated-deltanet", "chunked", 8, 16, "ok"),
        ("gated-deltanet", "recurrent", None, 16, "ok"),
        ("deltanet", "chunked", 8, 32, "ok"),
        ("deltanet", "recurrent", None, 32, "skipped"),
        ("gated-deltanet", "chunked", 8, 32, "ok"),
        ("gated-deltanet", "recurrent", None, 32, "skipped"),
    ]
    for row in report["rows"]:
        if row["status"] == "ok":
            assert row["tokens_per_s"] > 0 and len(row["seconds"]) == 1
    assert [d["verdict"] for d in report["derived"]] == ["INFO", "N/A", "INFO", "N/A"]
    printed = capsys.readouterr().out
    assert (
        "skipped: deltanet recurrent at seq 32" in printed and "tokens/s" in printed and str(out) in printed
    )


def _row(impl, seq, seconds, chunk=64, variant="deltanet"):
    return {
        "variant": variant,
        "impl": impl,
        "chunk": chunk if impl == "chunked" else None,
        "seq": seq,
        "status": "ok",
        "median_s": seconds,
    }


def test_derived_verdicts_from_made_up_rows(bench):
    rows = [
        _row("chunked", 4096, 1.0),
        _row("recurrent", 4096, 25.0),  # 25x: PASS
        _row("chunked", 4096, 1.0, variant="gated-deltanet"),
        _row("recurrent", 4096, 10.0, variant="gated-deltanet"),  # 10x: FAIL
        _row("chunked", 1024, 1.0),
        _row("recurrent", 1024, 5.0),  # not the target seq: INFO
    ]
    by_name = {d["name"]: d for d in bench.derived(rows, [1024, 4096], [64])}
    target = "(target >= 20x)"
    assert (
        by_name[f"speed-up chunked/recurrent fwd+bwd, deltanet, chunk 64, seq 4096 {target}"]["verdict"]
        == "PASS"
    )
    gated = by_name[f"speed-up chunked/recurrent fwd+bwd, gated-deltanet, chunk 64, seq 4096 {target}"]
    assert gated["verdict"] == "FAIL" and gated["value"] == pytest.approx(10.0)
    assert by_name["speed-up chunked/recurrent fwd+bwd, deltanet, chunk 64, seq 1024"]["verdict"] == "INFO"
    assert (
        by_name["speed-up chunked/recurrent fwd+bwd, gated-deltanet, chunk 64, seq 1024"]["verdict"] == "N/A"
    )
