"""``neural-memory figures RUN_DIR``: a tiny real run, its four PNGs and figures.json, and bad input."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import neural_memory
from neural_memory.cli import main
from neural_memory.figures import DATA_NAME, FIGURES, PROBE_ALPHAS
from neural_memory.training import TrainConfig, read_metrics, train

TINY = {"dim": 16, "depth": 1, "seq_len": 32, "batch_size": 2, "steps": 4, "eval_every": 2, "eval_batches": 1}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SRC = Path(neural_memory.__file__).resolve().parents[1]


def _train(config: TrainConfig, out: Path) -> Path:
    train(config, out, progress=False, log=lambda _: None)
    return out


@pytest.fixture(scope="module")
def recall_run(tmp_path_factory) -> tuple[Path, dict]:
    """A titans-mac recall run (4 steps, evaluations at 2 and 4) and the figures of it, made by the CLI."""
    run = _train(
        TrainConfig(kind="titans-mac", model_config={"heads": 2}, **TINY), tmp_path_factory.mktemp("mac")
    )
    assert main(["figures", str(run)]) == 0
    return run, json.loads((run / "figures" / DATA_NAME).read_text("utf-8"))


def _numbers(value, path="figures.json"):
    """Every leaf of ``value`` with its path."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _numbers(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _numbers(item, f"{path}[{i}]")
    else:
        yield path, value


def test_every_figure_is_a_valid_png(recall_run):
    import matplotlib.image

    run, _ = recall_run
    for name in FIGURES:
        path = run / "figures" / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE, name
        pixels = matplotlib.image.imread(path)  # decodes the whole image
        assert pixels.shape[0] >= 300 and pixels.shape[1] >= 500 and pixels.std() > 0.05, name


def test_figures_json_holds_finite_numbers_behind_every_plot(recall_run):
    _, data = recall_run
    assert set(data) == {"run", "surprise", "memory_updates", "forgetting", "dashboard"}
    for path, leaf in _numbers(data):
        if isinstance(leaf, str) or path.startswith("figures.json.forgetting.memory."):  # names and switches
            continue
        assert isinstance(leaf, int | float) and not isinstance(leaf, bool), path  # None: not finite
        assert math.isfinite(leaf), path
    run = data["run"]
    assert (run["kind"], run["step"], run["seq_len"], run["memories"], run["prefix_tokens"]) == (
        "titans-mac",
        4,
        32,
        1,
        0,
    )
    assert run["replay_max_abs_error"] < 1e-10  # the trace is the module's own computation
    tokens = list(range(32))
    for key in ("grad_norm", "surprise_norm", "momentum_norm"):
        assert len(data["surprise"][key]) == 32 and all(
            len(row) == run["heads"] for row in data["surprise"][key]
        )
    assert (
        data["surprise"]["token"] == data["memory_updates"]["token"] == data["dashboard"]["token"] == tokens
    )
    for (d_in, _), layer in zip(run["layers"], data["memory_updates"]["row_update"], strict=True):
        assert len(layer) == run["heads"] and all(len(h) == d_in and len(h[0]) == 32 for h in layer)
    forgetting = data["forgetting"]
    assert forgetting["alphas"] == list(PROBE_ALPHAS) and forgetting["memory"]["dim"] == 16
    assert len(forgetting["relative_error"]) == 4 and len(forgetting["relative_error"][0]) == len(
        forgetting["age"]
    )
    for key in ("alpha", "eta", "theta", "weight_norm", "content_norm"):
        assert len(data["dashboard"][key]) == 32, key


def test_metrics_jsonl_has_one_line_per_evaluation_and_the_dashboard_shows_them(recall_run):
    run, data = recall_run
    lines = read_metrics(run)
    assert [line["step"] for line in lines] == [2, 4]
    assert data["dashboard"]["metrics"] == lines


def test_a_text_run_traces_a_window_of_its_held_out_text(tmp_path, capsys):
    text = tmp_path / "corpus.txt"
    text.write_bytes(b"the memory writes what surprises it. " * 30)
    config = TrainConfig(kind="titans-mag", text=str(text), model_config={"heads": 2}, **{**TINY, "steps": 2})
    run = _train(config, tmp_path / "run")
    assert main(["figures", str(run), "--out", str(tmp_path / "figs"), "--seq-len", "20", "--seed", "3"]) == 0
    assert "kind=titans-mag step=2" in capsys.readouterr().out
    data = json.loads((tmp_path / "figs" / DATA_NAME).read_text("utf-8"))
    assert data["run"]["sequence"] == f"{text} (held-out tail)" and data["run"]["prefix_tokens"] == 4
    assert data["surprise"]["token"] == list(range(-4, 20))  # the persistent tokens are written first
    assert all((tmp_path / "figs" / name).is_file() for name in FIGURES)
    text.unlink()
    with pytest.raises(SystemExit, match=r"^neural-memory figures: error: the run's text file .* is missing"):
        main(["figures", str(run)])


def test_the_same_seed_gives_the_same_numbers(recall_run, tmp_path):
    run, data = recall_run
    assert main(["figures", str(run / "checkpoint.pt"), "--out", str(tmp_path)]) == 0
    again = json.loads((tmp_path / DATA_NAME).read_text("utf-8"))
    assert {k: v for k, v in again["run"].items() if k != "dir"} == {
        k: v for k, v in data["run"].items() if k != "dir"
    }
    assert again["surprise"] == data["surprise"] and again["forgetting"] == data["forgetting"]


@pytest.fixture(scope="module")
def transformer_run(tmp_path_factory) -> Path:
    config = TrainConfig(kind="transformer", model_config={"heads": 2}, **{**TINY, "steps": 1})
    return _train(config, tmp_path_factory.mktemp("transformer"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{missing}"], r"missing: no such directory"),
        (["{empty}"], r"no checkpoint \(.*checkpoint.pt is missing\)"),
        (["{broken}"], r"checkpoint.pt: not a readable checkpoint"),
        (["{transformer}"], r"kind 'transformer' has no Titans NeuralMemory; figures need one of titans-mac"),
        (["{mac}", "--memory", "1"], r"index must be an int in \[0, 0\], got 1"),
        (["{mac}", "--seq-len", "0"], r"--seq-len must be an integer >= 1, got 0"),
        (["{mac}", "--seq-len", "10"], r"seq_len must be >= 2 \* n_pairs \+ 2 = 18"),
    ],
)
def test_bad_input_is_a_one_line_error(argv, message, tmp_path, recall_run, transformer_run):
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    places = {
        "missing": tmp_path / "missing",
        "empty": tmp_path / "empty",
        "broken": tmp_path / "broken",
        "transformer": transformer_run,
        "mac": recall_run[0],
    }
    argv = [arg.format(**places) for arg in argv]
    with pytest.raises(SystemExit) as exit_info:
        main(["figures", *argv, "--out", str(tmp_path / "out")])
    text = str(exit_info.value.code)
    assert text.startswith("neural-memory figures: error: ") and "\n" not in text
    assert re.search(message, text), text


def test_the_command_line_exits_non_zero_without_a_traceback(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p),
    }
    result = subprocess.run(
        [sys.executable, "-m", "neural_memory", "figures", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == f"neural-memory figures: error: {tmp_path / 'nowhere'}: no such directory"
