"""Smoke test of benchmarks/miras_memory.py: a tiny run end to end, and its derived comparisons."""

from __future__ import annotations

import json

import pytest

from .scripts import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("miras_memory")


def test_quick_run_measures_every_configuration(bench, tmp_path):
    out = tmp_path / "miras.json"
    assert bench.main(["--quick", "--memories", "titans", "memora", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = {(r["memory"], r["impl"], r["mode"], r["seq"]): r for r in report["rows"]}
    runs = (
        ("chunked", "fwd_bwd", 16),
        ("chunked", "fwd_bwd", 32),
        ("chunked", "fwd", 16),
        ("reference", "fwd", 16),
    )
    assert set(rows) == {(m, *run) for m in ("titans", "memora") for run in runs}
    assert all(r["tokens_per_s"] > 0 and "error" not in r for r in rows.values())
    assert any(
        line.startswith(("[PASS] memora / titans", "[FAIL] memora / titans")) for line in report["derived"]
    )


def test_derived_lines_from_made_up_rows(bench):
    rows = [
        {"memory": "titans", "impl": "chunked", "mode": "fwd_bwd", "seq": 8, "tokens_per_s": 100.0},
        {"memory": "titans", "impl": "chunked", "mode": "fwd", "seq": 8, "tokens_per_s": 200.0},
        {"memory": "titans", "impl": "reference", "mode": "fwd", "seq": 8, "tokens_per_s": 10.0},
        {"memory": "moneta", "impl": "chunked", "mode": "fwd_bwd", "seq": 8, "tokens_per_s": 40.0},
        {"memory": "moneta", "impl": "reference", "mode": "fwd", "seq": 8, "error": "timeout"},
    ]
    lines = bench.derived(rows, {"seqs": [8], "ref_seqs": [8]})
    assert lines == [
        "[PASS] titans: chunked / token loop (forward) at seq 8: 20.0x (target >= 10x)",
        "[FAIL] moneta / titans (chunked) at seq 8: 0.40 (target >= 0.5)",
    ]
