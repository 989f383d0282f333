"""Smoke test of benchmarks/titans_memory.py: a tiny run end to end, and the verdict logic on made-up rows."""

from __future__ import annotations

import json

import pytest

from .scripts import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("titans_memory")


def test_quick_run_writes_every_key(bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    # two subprocesses (fast and reference at seq 64): seconds, even on a busy 2-core box
    argv = ["--quick", "--configs", "fast", "reference", "--seqs", "64", "--ref-fwd-seqs", "--out", str(out)]
    assert bench.main(argv) == 0
    report = json.loads(out.read_text())
    assert {"config", "environment", "memory_metric", "throughput_metric", "rows", "derived", "notes"} <= set(
        report
    )
    assert [(r["config"], r["seq"]) for r in report["rows"]] == [("fast", 64), ("reference", 64)]
    for row in report["rows"]:
        assert row["status"] == "ok", row
        for mode in row["planned_modes"]:
            m = row["modes"][mode]
            assert {
                "tokens_per_s",
                "median_s",
                "seconds",
                "cpu_seconds",
                "maxrss_mb",
                "peak_delta_mb",
            } <= set(m)
            assert len(m["seconds"]) == 1 and m["tokens_per_s"] > 0 and m["maxrss_mb"] > 0
    flops = {
        "flops_per_token",
        "achieved_gflops",
        "matmul_peak_gflops",
        "share_of_matmul_peak",
        "profile_top",
    }
    fast_bwd = report["rows"][0]["modes"]["fwd_bwd"]
    assert flops <= set(fast_bwd) and fast_bwd["flops_per_token"] > 0 and fast_bwd["profile_top"]
    assert not flops & set(report["rows"][1]["modes"]["fwd"])  # the token loop is not profiled
    assert set(report["rows"][0]["modes"]) == {"fwd", "fwd_bwd"}
    assert set(report["rows"][1]["modes"]) == {"fwd"}
    assert all(d["verdict"] in {"PASS", "FAIL", "INFO", "N/A"} for d in report["derived"])
    printed = capsys.readouterr().out
    assert "tokens/s" in printed and "Derived" in printed and str(out) in printed
    assert "MFLOP/tok" in printed


def test_flops_are_counted_per_token_and_the_profile_names_the_operator(bench):
    import torch

    a, b = torch.randn(64, 32), torch.randn(32, 16)
    result = bench.compute_profile(lambda: a @ b, tokens=4)
    assert result["flops_per_token"] == 2 * 64 * 32 * 16 / 4  # one matmul, 2 m k n FLOPs
    assert result["profile_top"][0]["op"] in {"aten::mm", "aten::matmul"}
    assert 0 < result["profile_top"][0]["share"] <= 1
    assert bench.matmul_peak_gflops(reps=2) > 0


def _row(config, chunk, seq, fwd_s=None, bwd_s=None, peak=100.0):
    modes = {}
    for mode, s in (("fwd", fwd_s), ("fwd_bwd", bwd_s)):
        if s is not None:
            modes[mode] = {
                "median_s": s,
                "tokens_per_s": 2 * seq / s,
                "maxrss_mb": peak + 200,
                "peak_delta_mb": peak,
            }
    return {
        "config": config,
        "chunk": chunk,
        "seq": seq,
        "status": "ok",
        "modes": modes,
        "checkpoint_chunks": 0,
    }


def _derived(bench, rows):
    cfg = {"seqs": (1024, 4096, 16384), "chunks": (16, 64), "ref_seqs": [1024], "ref_fwd_seqs": [4096]}
    return bench.derived(rows, {**cfg, "mem_cap_gb": 8})


def test_derived_targets_pass_fail_and_missing(bench):
    rows = [
        _row("fast", 16, 1024, fwd_s=1.0),
        _row("reference", 16, 1024, fwd_s=30.0),  # 30x: only the seq-1024 reference ran
        _row("fast", 64, 4096, fwd_s=1.0, bwd_s=4.0),
        _row("titans-pytorch", 64, 4096, bwd_s=6.0),  # 1.5x < 2x: FAIL
        _row("fast", 64, 16384, fwd_s=4.0, bwd_s=20.0, peak=300.0),  # fwd 4x PASS, fwd_bwd 5x FAIL
        _row("titans-pytorch", 64, 16384, bwd_s=30.0, peak=1200.0),  # 300/1200 = 1/4 PASS
    ]
    lines = _derived(bench, rows)
    by_name = {d["name"]: d for d in lines}
    ref = by_name["speed-up fast/reference fwd, chunk 16, seq 1024 (target seq skipped; measured here)"]
    assert ref["verdict"] == "PASS" and ref["value"] == pytest.approx(30.0)
    assert by_name["fast vs titans-pytorch fwd+bwd, chunk 64, seq 4096"]["verdict"] == "FAIL"
    assert by_name["cost ratio fast seq 16384/seq 4096, chunk 64, fwd"]["verdict"] == "PASS"
    assert by_name["cost ratio fast seq 16384/seq 4096, chunk 64, fwd_bwd"]["verdict"] == "FAIL"
    assert by_name["cost ratio fast seq 16384/seq 4096, chunk 16, fwd_bwd"]["verdict"] == "N/A"
    mem = by_name["peak memory fast/titans-pytorch fwd+bwd (delta RSS), chunk 64, seq 16384"]
    assert mem["verdict"] == "PASS" and mem["value"] == pytest.approx(0.25)


def test_lucidrains_over_the_cap_gives_a_labelled_bound(bench):
    rows = [
        _row("fast", 64, 16384, bwd_s=20.0, peak=1024.0),
        {
            "config": "titans-pytorch",
            "chunk": 64,
            "seq": 16384,
            "status": "failed",
            "mem_cap_gb": 8,
            "modes": {},
            "reason": "out of memory (cap 8 GB): can't allocate",
        },
    ]
    lines = _derived(bench, rows)
    bound = [d for d in lines if "[bound:" in d["name"] and "chunk 64" in d["name"]]
    # floor of what titans-pytorch needed: the 8 GB cap minus 2 GB of libraries and arenas
    assert len(bound) == 1 and bound[0]["value"] == pytest.approx(1 / 6) and bound[0]["verdict"] == "PASS"


def test_quick_run_of_the_other_papers_memories_beside_the_titans_memory(bench, tmp_path):
    """Each MIRAS preset and Hope's self-modifying Titans builds, runs forward+backward, is FLOP-counted
    and profiled, and gets its slow-down line against the Titans memory at the same length and chunk."""
    out = tmp_path / "bench.json"
    configs = ["fast", "yaad", "moneta", "memora", "hope"]
    argv = ["--quick", "--configs", *configs, "--seqs", "64", "--ref-fwd-seqs", "--out", str(out)]
    assert bench.main(argv) == 0
    report = json.loads(out.read_text())
    rows = {r["config"]: r for r in report["rows"]}
    assert set(rows) == set(configs)
    for config in configs[1:]:
        assert rows[config]["status"] == "ok", rows[config]
        m = rows[config]["modes"]["fwd_bwd"]
        assert m["tokens_per_s"] > 0 and m["flops_per_token"] > 0 and m["profile_top"]
    slowdowns = {d["name"]: d for d in report["derived"] if d["name"].startswith("slow-down of")}
    assert len(slowdowns) == 4 and all(d["verdict"] in {"PASS", "FAIL"} for d in slowdowns.values())


def test_derived_preset_slowdowns_and_matmul_share(bench):
    fast = _row("fast", 64, 4096, bwd_s=4.0)
    fast["modes"]["fwd_bwd"]["share_of_matmul_peak"] = 0.55
    rows = [fast, _row("yaad", 64, 4096, bwd_s=5.0), _row("hope", 64, 4096, bwd_s=9.0)]
    by_name = {d["name"]: d for d in _derived(bench, rows)}
    yaad = by_name["slow-down of yaad vs the Titans memory fwd+bwd, chunk 64, seq 4096"]
    assert yaad["verdict"] == "PASS" and yaad["value"] == pytest.approx(1.25)  # <= 1.5
    hope = by_name["slow-down of hope vs the Titans memory fwd+bwd, chunk 64, seq 4096"]
    assert hope["verdict"] == "FAIL" and hope["value"] == pytest.approx(2.25)  # > 2
    assert "slow-down of moneta vs the Titans memory fwd+bwd, chunk 64, seq 4096" not in by_name  # not run
    share = by_name["fast fwd+bwd share of the fp32 matmul peak, chunk 64, seq 4096"]
    assert share["verdict"] == "FAIL" and share["value"] == pytest.approx(0.55)  # < 0.65


def test_memory_budget_reaches_the_compiled_miras_rows_and_is_checked(bench, monkeypatch):
    # --memory-budget replaces MEMORY_BUDGET in the row's subprocess (set before the preset is built)
    from neural_memory.miras import chunked

    monkeypatch.setattr(chunked, "MEMORY_BUDGET", chunked.MEMORY_BUDGET)
    rows = bench.plan(bench.config_from(bench.parse_args(["--quick", "--memory-budget", "0.3"])))
    assert rows and all(r["memory_budget"] == 0.3 for r in rows)
    spec = {"config": "moneta", "dim": 8, "chunk": 4, "depth": 2, "heads": 1, "expansion": 2}
    bench.build_preset({**spec, "compile_chunks": True, "memory_budget": 0.3})
    assert chunked.MEMORY_BUDGET == 0.3
    assert bench.plan(bench.config_from(bench.parse_args(["--quick"])))[0]["memory_budget"] is None
    for bad in ("0", "1.5"):
        with pytest.raises(SystemExit):
            bench.parse_args(["--memory-budget", bad])
