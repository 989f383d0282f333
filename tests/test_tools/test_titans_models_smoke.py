"""Smoke test of benchmarks/titans_models.py: a tiny run with and without the memory's checkpointing."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_code_versions_run_side_by_side_and_profile_counts_operators(bench, tmp_path, capsys):
    src = str(Path(bench.__file__).resolve().parent.parent / "src")
    out = tmp_path / "models.json"
    args = ["--quick", "--seqs", "64", "--kinds", "titans-lmm", "--code", f"a={src}", f"b={src}"]
    assert bench.main([*args, "--profile", "--out", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert [r["code"] for r in results] == ["a", "b"]
    for r in results:
        assert "error" not in r, r
        profile = r["profile"]
        assert profile["aten_calls"] > 100 and profile["self_cpu_seconds"] > 0
        assert len(profile["top"]) == 8 and all(len(row) == 4 for row in profile["top"])
    # the same code, seed and data: the same training
    assert results[0]["final_loss"] == results[1]["final_loss"]
    printed = capsys.readouterr().out
    assert "a: titans-lmm" in printed and "b: titans-lmm" in printed and "aten calls" in printed
    with pytest.raises(SystemExit, match="--code wants NAME=SRC"):
        bench.main(["--quick", "--code", f"{tmp_path}"])
    with pytest.raises(SystemExit, match="--code wants NAME=SRC"):
        bench.main(["--quick", "--code", f"x={tmp_path}"])  # no neural_memory package there
