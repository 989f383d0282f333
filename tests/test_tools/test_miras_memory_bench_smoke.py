"""Smoke test of benchmarks/miras_memory.py: a tiny run end to end, and its derived comparisons."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "miras_memory.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("miras_memory_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_measures_every_configuration(bench, tmp_path):
    out = tmp_path / "miras.json"
    assert bench.main(["--quick", "--memories", "titans", "memora", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = {(r["memory"], r["impl"], r["seq"]): r for r in report["rows"]}
    assert set(rows) == {(m, i, s) for m in ("titans", "memora") for i, s in
                         (("chunked", 16), ("chunked", 32), ("reference", 16))}  # fmt: skip
    assert all(r["tokens_per_s"] > 0 and "error" not in r for r in rows.values())
    assert any(
        line.startswith(("[PASS] memora / titans", "[FAIL] memora / titans")) for line in report["derived"]
    )


def test_derived_lines_from_made_up_rows(bench):
    rows = [
        {"memory": "titans", "impl": "chunked", "seq": 8, "tokens_per_s": 100.0},
        {"memory": "titans", "impl": "reference", "seq": 8, "tokens_per_s": 5.0},
        {"memory": "moneta", "impl": "chunked", "seq": 8, "tokens_per_s": 40.0},
        {"memory": "moneta", "impl": "reference", "seq": 8, "error": "timeout"},
    ]
    lines = bench.derived(rows, {"seqs": [8], "ref_seqs": [8]})
    assert lines == [
        "[PASS] titans: chunked / token loop at seq 8: 20.0x (target >= 10x)",
        "[FAIL] moneta / titans (chunked) at seq 8: 0.40 (target >= 0.5)",
    ]
