"""Smoke test of benchmarks/titans_models.py: a tiny run with and without the memory's checkpointing."""

from __future__ import annotations

import json

import pytest

from .scripts import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("titans_models")


def test_quick_run_measures_each_checkpoint_setting_of_the_titans_kinds(bench, tmp_path, capsys):
    out = tmp_path / "models.json"
    args = [
        "--quick",
        "--seqs",
        "64",
        "--kinds",
        "titans-lmm",
        "transformer",
        "--checkpoint-chunks",
        "0",
        "1",
        "--mmap-threshold",
        "1048576",
        "131072",
        "--out",
        str(out),
    ]
    assert bench.main(args) == 0
    results = json.loads(out.read_text())["results"]
    settings = [(r["kind"], r["checkpoint_chunks"], r["mmap_threshold"]) for r in results]
    per_seq = [
        ("titans-lmm", 0, 1 << 20),
        ("titans-lmm", 0, 1 << 17),
        ("titans-lmm", 1, 1 << 20),
        ("titans-lmm", 1, 1 << 17),
        ("transformer", "default", 1 << 20),
        ("transformer", "default", 1 << 17),
    ]
    assert settings == per_seq
    for r in results:
        assert "error" not in r, r
        assert r["cpu_seconds_per_step"] > 0 and r["delta_peak_rss_mb"] >= 0
    plain, checkpointed = results[0], results[2]
    # checkpointing recomputes the chunks: the same training, to float32 rounding
    assert plain["final_loss"] == pytest.approx(checkpointed["final_loss"], rel=1e-5)
    printed = capsys.readouterr().out
    assert "titans-lmm ckpt=1 " in printed and "titans-lmm ckpt=1 mmap=128K" in printed
