"""The experiments and ``neural-memory experiment`` / ``reproduce`` end to end at ``--scale test``.

Every experiment runs once into a shared directory (runs are shared, as in a real ``reproduce``); the tests
check the JSON schema, recompute the intervals the verdicts compared from the raw numbers, re-apply the rule,
check that an interrupted experiment resumes to the same numbers, and that bad input exits cleanly.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest

from neural_memory.cli import main
from neural_memory.experiments import PLANNED, experiment_names, get_experiment
from neural_memory.experiments.base import Context, get_scale, run_experiment
from neural_memory.experiments.report import NOT_IMPLEMENTED
from neural_memory.experiments.stats import T_975, Z_95
from neural_memory.models.registry import available_kinds
from neural_memory.tasks.sentences import generate_text

VERDICTS = {"reproduced", "not reproduced at this scale"}
NOT_TESTED_MODEL = "not tested: model not implemented"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _context(out: Path) -> Context:
    scale = get_scale("test")
    return Context(scale, out, scale.seeds, progress=False)


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    out = tmp_path_factory.mktemp("experiments")
    documents = {name: run_experiment(get_experiment(name), _context(out)) for name in experiment_names()}
    return out, documents


# ---- independent recomputation of the intervals from the raw numbers ---------------------------------


def _t_bounds(values: list[float]) -> tuple[float, float, float]:
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    t = T_975[len(values) - 2] if len(values) <= 31 else None
    assert t is not None, "test scale keeps fewer than 32 samples per interval"
    half = t * sd / math.sqrt(len(values))
    return mean, mean - half, mean + half


def _wilson_bounds(hits: int, n: int) -> tuple[float, float, float]:
    p, z = hits / n, Z_95
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return p, max(0.0, centre - half), min(1.0, centre + half)


def _slope_bounds(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    slope, intercept = statistics.linear_regression(xs, ys)
    rss = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys, strict=True))
    sxx = sum((x - statistics.fmean(xs)) ** 2 for x in xs)
    half = T_975[len(xs) - 3] * math.sqrt(rss / (len(xs) - 2) / sxx)
    return slope, slope - half, slope + half


def _scaling_intervals(results: dict) -> list[tuple[float, float, float]]:
    """Exponents (log cost on log length) and tokens/s at the longest length, from the raw timings."""
    found, longest = [], results["lengths"][-1]
    for record in results["kinds"].values():
        points = record["points"]
        for quantity in ("train_seconds", "infer_seconds", "train_peak_mib"):
            pairs = [(math.log(int(n)), v) for n, p in points.items() for v in p[quantity]]
            floor = 4 / 1024 if quantity.endswith("mib") else 0.0  # memory: one page, the resolution
            found.append(_slope_bounds([x for x, _ in pairs], [math.log(max(v, floor)) for _, v in pairs]))
        found.append(_t_bounds([longest / s for s in points[str(longest)]["train_seconds"]]))
    return found


def _raw_intervals(document: dict) -> list[tuple[float, float, float]]:
    """Every interval an experiment could compare, computed here from the runs' raw numbers."""
    if document["experiment"] == "scaling":
        return _scaling_intervals(document["results"])
    found = []
    for variant in document["results"]["variants"].values():
        runs = variant["runs"]
        metrics = runs[0]["metrics"]
        if "accuracy" in metrics:  # needle: one Wilson interval per (form, length) cell
            for cell in metrics["accuracy"]:
                found.append(
                    _wilson_bounds(
                        sum(r["metrics"]["accuracy"][cell]["hits"] for r in runs),
                        sum(r["metrics"]["accuracy"][cell]["n"] for r in runs),
                    )
                )
        elif "bpb_windows" in metrics:
            found.append(_t_bounds([w for r in runs for w in r["metrics"]["bpb_windows"]]))
        else:
            found.append(
                _wilson_bounds(sum(r["metrics"]["hits"] for r in runs), sum(r["metrics"]["n"] for r in runs))
            )
        if "throughput" in runs[0]["timings"]:
            found.append(_t_bounds([v for r in runs for v in r["timings"]["throughput"]]))
    return found


def _matches_one_of(interval: dict, candidates: list[tuple[float, float, float]]) -> bool:
    return any(
        all(
            math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)
            for x, y in zip(c, (interval["estimate"], interval["low"], interval["high"]), strict=True)
        )
        for c in candidates
    )


# ---- per experiment ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", experiment_names())
def test_experiment_json_has_the_schema_and_its_plot_is_a_png(shared, name):
    out, documents = shared
    stored = json.loads((out / f"{name}.json").read_text("utf-8"))
    assert stored == documents[name]
    assert set(stored) == {
        "key",
        "experiment",
        "mirrors",
        "description",
        "results",
        "claims",
        "table",
        "timings",
    }
    assert stored["experiment"] == name and stored["mirrors"] and stored["description"]
    assert stored["key"]["scale"]["name"] == "test" and stored["key"]["seeds"] == [0]
    assert stored["timings"]["seconds"] >= 0
    header, *rows = stored["table"]
    assert rows and all(len(row) == len(header) for row in rows)
    for variant in stored["results"].get("variants", {}).values():
        for run in variant["runs"]:
            assert run["params"] > 0 and run["timings"]["train_seconds"] > 0
            assert run["config"]["steps"] == get_scale("test").steps
            metrics = run["metrics"]
            if "bpb" in metrics:
                assert len(metrics["bpb_windows"]) == get_scale("test").eval_windows
                assert math.isclose(metrics["bpb"], statistics.fmean(metrics["bpb_windows"]), rel_tol=1e-12)
                assert all(0 < w < 20 for w in metrics["bpb_windows"])  # bits per byte of a 256-way model
            elif "accuracy" in metrics:
                assert all(
                    0 <= c["hits"] <= c["n"] == get_scale("test").needle_samples
                    for c in metrics["accuracy"].values()
                )
            else:
                assert 0 <= metrics["hits"] <= metrics["n"] and metrics["n"] > 0
    assert stored["claims"], f"{name} states no claim"
    png = (out / f"{name}.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 1000


@pytest.mark.parametrize("name", experiment_names())
def test_experiment_verdicts_follow_the_rule_on_the_numbers_it_produced(shared, name):
    _, documents = shared
    candidates = _raw_intervals(documents[name])
    for claim in documents[name]["claims"]:
        if claim["comparison"] is None:  # a model that does not exist, or needs more blocks than the scale
            assert claim["verdict"] in (NOT_TESTED_MODEL, "not tested: needs depth >= 2")
            continue
        a, b, direction = claim["comparison"]["a"], claim["comparison"]["b"], claim["comparison"]["direction"]
        assert _matches_one_of(a, candidates) and _matches_one_of(b, candidates), claim["claim"]
        separated = a["high"] < b["low"] if direction == "lower" else a["low"] > b["high"]
        assert claim["verdict"] == ("reproduced" if separated else "not reproduced at this scale"), claim[
            "claim"
        ]


def test_scaling_measures_every_kind_at_every_length(shared):
    _, documents = shared
    scale = get_scale("test")
    results = documents["scaling"]["results"]
    hybrids = {"moneta-h", "yaad-h", "memora-h"}  # need depth 2; the test scale has depth 1
    assert set(results["kinds"]) == set(available_kinds()) - hybrids
    assert results["shallow_kinds"] == dict.fromkeys(hybrids, 2)
    assert results["lengths"] == list(scale.scaling_lengths) and results["batch_size"] == 1
    for record in results["kinds"].values():
        assert record["params"] > 0
        assert list(record["points"]) == [str(n) for n in scale.scaling_lengths]
        for point in record["points"].values():
            for name in ("train", "infer"):
                assert len(point[f"{name}_seconds"]) == scale.scaling_repeats
                assert all(s > 0 for s in point[f"{name}_seconds"])
                peaks = point[f"{name}_peak_mib"]
                assert len(peaks) == scale.scaling_repeats and all(p >= 0 for p in peaks)  # Linux: measured
    rows = {row[0]: row for row in documents["scaling"]["table"][1:]}
    assert set(rows) == set(available_kinds())


def test_needle_leaves_mamba2_out_at_the_tiny_scale_only(monkeypatch, tmp_path):
    # tiny is the smoke run: a mamba2 needle run would add about 7 s there (needle.NOT_AT_TINY)
    from neural_memory.experiments import needle

    trained = {}

    def record_kinds(ctx, desc, kinds, train_one):
        trained[ctx.scale.name] = kinds
        return {"variants": {}, "missing_kinds": []}

    monkeypatch.setattr(needle, "kind_answer_runs", record_kinds)
    for name in ("test", "tiny", "small"):
        scale = get_scale(name)
        needle.run(Context(scale, tmp_path, scale.seeds, progress=False))
    assert "mamba2" in needle.KINDS
    assert trained["test"] == trained["small"] == needle.KINDS
    assert trained["tiny"] == [kind for kind in needle.KINDS if kind != "mamba2"]


def test_scaling_memory_meter_sees_a_large_tensor():
    # 32 MiB of float32 touched inside the work: the meter reports at least that much resident growth
    import torch

    from neural_memory.experiments.peak_memory import memory_meter

    meter = memory_meter()
    assert meter is not None  # the project's CI and this machine run Linux
    mib = meter(lambda: torch.ones(8 * 1024 * 1024).sum())
    assert 31.5 <= mib < 80


def test_claims_of_a_model_that_does_not_exist_are_not_tested(shared):
    _, documents = shared
    hope_claims = [c for doc in documents.values() for c in doc["claims"] if c["claim"].startswith("Hope")]
    assert hope_claims
    expected = {NOT_TESTED_MODEL} if "hope" not in available_kinds() else VERDICTS
    assert {c["verdict"] for c in hope_claims} <= expected


def test_hybrids_are_not_run_below_their_depth_and_their_claims_say_why(shared):
    # the test scale has depth 1: a "-h" hybrid would be its plain model under the hybrid's name
    _, documents = shared
    lm_doc, recall_doc = documents["lm"], documents["recall"]
    assert lm_doc["results"]["depth"] == 1
    assert lm_doc["results"]["shallow_kinds"] == {"moneta-h": 2, "yaad-h": 2, "memora-h": 2}
    assert not {"moneta-h", "yaad-h", "memora-h"} & set(lm_doc["results"]["variants"])
    assert set(recall_doc["results"]["shallow_kinds"]) == {"moneta-h", "yaad-h", "memora-h"}
    hybrid_claims = [c for c in lm_doc["claims"] if "-H (" in c["claim"]]
    assert len(hybrid_claims) == 3
    assert {c["verdict"] for c in hybrid_claims} == {"not tested: needs depth >= 2"}
    assert all("this scale has depth 1" in c["measured"] for c in hybrid_claims)


def test_a_finished_experiment_is_reused_not_rerun(shared):
    out, documents = shared
    again = run_experiment(get_experiment("titans-ablation"), _context(out))
    assert again == documents["titans-ablation"]  # same timings: nothing ran


class _Interrupt(Exception):
    pass


def _comparable(document: dict) -> dict:
    """The document without wall-clock timings (which differ between any two runs)."""
    results = json.loads(json.dumps(document["results"]))
    for variant in results["variants"].values():
        for run in variant["runs"]:
            run.pop("timings")
            run["config"].pop("text")  # the generated text lives in each output directory
    return {"results": results, "table": document["table"], "claims": document["claims"]}


def test_an_interrupted_experiment_resumes_to_the_uninterrupted_result(shared, tmp_path):
    _, documents = shared
    ctx = _context(tmp_path)
    done: list[str] = []

    def stop_after_three(run: str) -> None:
        done.append(run)
        if len(done) == 3:
            raise _Interrupt

    ctx.on_run_done = stop_after_three
    with pytest.raises(_Interrupt):
        run_experiment(get_experiment("titans-ablation"), ctx)
    assert not (tmp_path / "titans-ablation.json").exists()
    assert len(list((tmp_path / "runs").glob("*/result.json"))) == 3
    ctx.on_run_done = done.append
    resumed = run_experiment(get_experiment("titans-ablation"), ctx)
    assert len(done) == 9 - 3 + 3  # only the six unfinished runs trained the second time
    assert _comparable(resumed) == _comparable(documents["titans-ablation"])


# ---- the commands --------------------------------------------------------------------------------------


def test_reproduce_writes_the_report_with_every_claim_and_plot(shared, capsys):
    out, documents = shared
    assert main(["reproduce", "--scale", "test", "--out", str(out), "--no-progress"]) == 0
    report = (out / "report.md").read_text("utf-8")
    printed = capsys.readouterr().out
    for name, document in documents.items():
        assert f"![{name}]({name}.png)" in report
        for claim in document["claims"]:
            assert claim["claim"] in report and claim["claim"] in printed
    for name in PLANNED:
        assert f"`{name}` — {NOT_IMPLEMENTED}" in report
    assert report.count(NOT_IMPLEMENTED) >= 2 * len(PLANNED)  # a claims row and a section each


def test_experiment_command_runs_on_a_text_file_and_prints_its_claims(tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text(generate_text(3000, seed=5), encoding="ascii")
    out = tmp_path / "out"
    assert (
        main(
            [
                "experiment",
                "memory-depth",
                "--scale",
                "test",
                "--out",
                str(out),
                "--text",
                str(text),
                "--no-progress",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "deeper memory lowers loss" in printed and "Titans Fig. 7" in printed
    document = json.loads((out / "memory-depth.json").read_text("utf-8"))
    assert document["key"]["text_sha256"] is not None
    assert all(
        r["config"]["text"] == str(text) for v in document["results"]["variants"].values() for r in v["runs"]
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["experiment", "no-such-experiment", "--scale", "test"], "unknown experiment 'no-such-experiment'"),
        (["experiment", "lm", "--scale", "huge"], "invalid choice: 'huge'"),
        (["reproduce", "--scale", "huge"], "invalid choice: 'huge'"),
        (
            ["reproduce", "--scale", "test", "--text", "/no/such/file.txt"],
            "--text /no/such/file.txt: no such file",
        ),
        (["experiment", "lm", "--scale", "test", "--seeds", "-1"], "--seeds must be integers >= 0"),
        (["reproduce", "--scale", "test", "--threads", "0"], "--threads must be an integer >= 1"),
    ],
)
def test_bad_input_exits_non_zero_with_a_message_and_no_traceback(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(tmp_path)])
    code = exit_info.value.code
    text = code if isinstance(code, str) else capsys.readouterr().err
    assert code not in (0, None)
    assert message in text and "Traceback" not in text


def test_a_text_too_short_for_the_scale_is_a_clear_error(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("tiny text", encoding="ascii")
    with pytest.raises(SystemExit) as exit_info:
        main(["reproduce", "--scale", "test", "--text", str(short), "--out", str(tmp_path / "out")])
    assert "fewer than seq_len + 1" in str(exit_info.value.code)


def test_a_run_interrupted_mid_training_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    import neural_memory.training
    from neural_memory.experiments.base import run_name, run_training, train_config
    from neural_memory.training import train

    resumed_flags: list[bool] = []

    def spy(*args, **kwargs):
        resumed_flags.append(kwargs["resume"])
        return train(*args, **kwargs)

    monkeypatch.setattr(neural_memory.training, "train", spy)

    text = tmp_path / "text.txt"
    text.write_text(generate_text(4000, seed=1), encoding="ascii")
    fresh, interrupted = _context(tmp_path / "fresh"), _context(tmp_path / "interrupted")
    config = train_config(fresh, "titans-lmm", 0, text=str(text), steps=4, eval_every=2)
    name = run_name(config)
    train(config, interrupted.runs_dir / name, stop_at=2, progress=False, log=lambda _: None)
    assert not (interrupted.runs_dir / name / "result.json").exists()
    resumed = run_training(interrupted, name, config)
    straight = run_training(fresh, name, config)
    assert resumed_flags == [True, False]  # the interrupted run continued; the fresh one started anew
    assert resumed["metrics"] == straight["metrics"]


def test_an_interrupted_reproduce_says_how_to_resume(tmp_path, monkeypatch, capsys):
    import neural_memory.experiments.base as base

    def interrupt(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(base, "run_experiment", interrupt)
    assert main(["reproduce", "--scale", "test", "--out", str(tmp_path), "--no-progress"]) == 130
    assert f"resume with: neural-memory reproduce --scale test --out {tmp_path}" in capsys.readouterr().out


def test_reusing_a_stored_experiment_recomputes_its_verdicts_from_the_stored_numbers(shared):
    out, documents = shared
    path = out / "lm.json"
    tampered = json.loads(path.read_text("utf-8"))
    for claim in tampered["claims"]:
        claim["verdict"] = "reproduced"  # as if written by an older, wrong rule
    path.write_text(json.dumps(tampered), encoding="utf-8")
    again = run_experiment(get_experiment("lm"), _context(out))
    assert again["claims"] == documents["lm"]["claims"]
    assert json.loads(path.read_text("utf-8"))["claims"] == documents["lm"]["claims"]


def test_optimizers_trains_one_model_with_each_optimizer(shared):
    _, documents = shared
    variants = documents["optimizers"]["results"]["variants"]
    assert list(variants) == ["adamw", "muon", "m3"]
    configs = [dict(v["runs"][0]["config"]) for v in variants.values()]
    assert [c.pop("optimizer") for c in configs] == ["adamw", "muon", "m3"]
    assert configs[0] == configs[1] == configs[2]  # everything else equal: same model, data, budget
    assert [c["claim"] for c in documents["optimizers"]["claims"]] == [
        "M3 reaches lower loss than AdamW at equal budget",
        "M3 reaches lower loss than Muon at equal budget",
    ]
