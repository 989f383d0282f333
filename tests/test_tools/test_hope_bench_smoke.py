"""Smoke test of benchmarks/hope.py: a tiny run end to end, and its PASS/FAIL lines on made-up rows."""

from __future__ import annotations

import json

import pytest

from .scripts import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("hope")


def test_quick_run_measures_every_configuration(bench, tmp_path):
    out = tmp_path / "hope.json"
    argv = [
        "--quick",
        "--kinds",
        "hope",
        "titans-lmm",
        "--seqs",
        "16",
        "32",
        "--ref-seq",
        "16",
        "--out",
        str(out),
    ]
    assert bench.main(argv) == 0
    report = json.loads(out.read_text())
    rows = {(r["part"], r.get("kind") or r["impl"], r["seq"]): r for r in report["rows"]}
    want = {("lm", k, s) for k in ("hope", "titans-lmm") for s in (16, 32)}
    assert set(rows) == want | {("memory", "chunked", 16), ("memory", "reference", 16)}
    assert all("error" not in r and r["tokens_per_s"] > 0 for r in rows.values())
    subjects = (
        "self-modifying Titans chunk-parallel / token loop (forward) at seq 16:",
        "hope: cost ~ seq^",
        "titans-lmm: cost ~ seq^",
        "hope / titans-lmm tokens/s at seq 16:",
        "hope / titans-lmm tokens/s at seq 32:",
    )
    assert len(report["derived"]) == len(subjects)
    for line, subject in zip(report["derived"], subjects, strict=True):
        assert line.startswith(("[PASS] ", "[FAIL] ", "[info] ")) and subject in line, line


def test_exponent_of_power_laws(bench):
    assert bench.exponent([(1024, 2.0), (4096, 8.0), (16384, 32.0)]) == pytest.approx(1.0, abs=1e-12)
    assert bench.exponent([(1024, 1.0), (4096, 16.0)]) == pytest.approx(2.0, abs=1e-12)


def test_derived_lines_from_made_up_rows(bench):
    lm = [("hope", 8, 1.0), ("hope", 32, 8.0), ("titans-lmm", 8, 0.5), ("titans-lmm", 32, 2.0)]
    rows = [
        {"part": "lm", "kind": k, "seq": s, "seconds_per_step": t, "tokens_per_s": s / t} for k, s, t in lm
    ] + [
        {"part": "memory", "impl": "chunked", "seq": 8, "tokens_per_s": 200.0},
        {"part": "memory", "impl": "reference", "seq": 8, "tokens_per_s": 10.0},
        {"part": "lm", "kind": "hope-attention", "seq": 8, "error": "timeout"},
    ]
    assert bench.derived(rows, {"seqs": [8, 32], "ref_seq": 8}) == [
        "[PASS] self-modifying Titans chunk-parallel / token loop (forward) at seq 8: 20.0x (target >= 10x)",
        "[FAIL] hope: cost ~ seq^1.50 over seq 8-32 (target <= 1.2)",
        "[info] titans-lmm: cost ~ seq^1.00 over seq 8-32",
        "[PASS] hope / titans-lmm tokens/s at seq 8: 0.50 (target >= 0.33, within 3x)",
        "[FAIL] hope / titans-lmm tokens/s at seq 32: 0.25 (target >= 0.33, within 3x)",
    ]
