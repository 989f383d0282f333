"""``OUT/metrics.jsonl``: one line per scheduled evaluation; a resumed run writes an unbroken run's lines."""

from __future__ import annotations

import json

import pytest

import neural_memory.training as training
from neural_memory.training import METRICS_NAME, TrainConfig, load_checkpoint, lr_at, read_metrics, train

TINY = {
    "seq_len": 16,
    "batch_size": 2,
    "dim": 16,
    "depth": 1,
    "recall_pairs": 3,
    "model_config": {"heads": 2},
}


def _config(**changes) -> TrainConfig:
    return TrainConfig(kind="transformer", **{"steps": 6, "eval_every": 2, **TINY, **changes})


def _train(config, out, **kwargs):
    return train(config, out, progress=False, log=lambda _: None, **kwargs)


def test_every_scheduled_evaluation_appends_one_line(tmp_path):
    config = _config(steps=5)
    _train(config, tmp_path)
    lines = read_metrics(tmp_path)
    assert [line["step"] for line in lines] == [2, 4, 5]  # every eval_every steps, and the last step
    assert all(set(line) == {"step", "train_loss", "val_loss", "val_accuracy", "lr"} for line in lines)
    assert [line["lr"] for line in lines] == [lr_at(step - 1, config) for step in (2, 4, 5)]
    assert {k: lines[-1][k] for k in ("train_loss", "val_loss", "val_accuracy")} == load_checkpoint(tmp_path)[
        "metrics"
    ]
    assert read_metrics(tmp_path / METRICS_NAME) == lines  # the file itself or its run directory


def test_a_text_run_has_no_accuracy_in_its_lines(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_bytes(b"hello world, hello memory. " * 20)
    _train(_config(text=str(text), steps=2), tmp_path / "run")
    (line,) = read_metrics(tmp_path / "run")
    assert set(line) == {"step", "train_loss", "val_loss", "lr"} and line["step"] == 2


def test_a_run_resumed_at_an_evaluation_writes_the_lines_of_an_uninterrupted_one(tmp_path):
    _train(_config(), tmp_path / "straight")
    _train(_config(), tmp_path / "resumed", stop_at=4)
    assert [line["step"] for line in read_metrics(tmp_path / "resumed")] == [2, 4]
    _train(None, tmp_path / "resumed", resume=True)
    assert read_metrics(tmp_path / "resumed") == read_metrics(tmp_path / "straight")
    assert len(read_metrics(tmp_path / "straight")) == 3


def test_a_run_interrupted_between_evaluations_writes_no_extra_line(tmp_path):
    _train(_config(), tmp_path / "straight")
    _train(_config(), tmp_path / "resumed", stop_at=3)  # checkpoint at step 3, not an evaluation step
    assert load_checkpoint(tmp_path / "resumed")["step"] == 3
    _train(None, tmp_path / "resumed", resume=True)
    straight, resumed = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "resumed")
    assert [line["step"] for line in resumed] == [line["step"] for line in straight] == [2, 4, 6]
    held_out = ("step", "val_loss", "val_accuracy", "lr")
    assert [{k: line[k] for k in held_out} for line in resumed] == [
        {k: line[k] for k in held_out} for line in straight
    ]
    # step 4's train_loss averages step 4 only (the interruption restarted the average), as TrainResult's does
    assert resumed[0] == straight[0] and resumed[2] == straight[2]


def test_a_crash_between_the_line_and_the_checkpoint_neither_loses_nor_duplicates_a_line(
    tmp_path, monkeypatch
):
    _train(_config(), tmp_path / "straight")
    save = training.save_checkpoint
    calls = []

    def crash_on_second_save(out, payload):
        calls.append(payload["step"])
        if len(calls) == 2:
            raise KeyboardInterrupt("killed while writing the checkpoint")
        return save(out, payload)

    monkeypatch.setattr(training, "save_checkpoint", crash_on_second_save)
    with pytest.raises(KeyboardInterrupt):
        _train(_config(), tmp_path / "crashed")
    monkeypatch.setattr(training, "save_checkpoint", save)
    assert [line["step"] for line in read_metrics(tmp_path / "crashed")] == [2, 4]  # line 4 is written first
    assert load_checkpoint(tmp_path / "crashed")["step"] == 2
    _train(None, tmp_path / "crashed", resume=True)
    assert read_metrics(tmp_path / "crashed") == read_metrics(tmp_path / "straight")


def test_a_new_run_in_the_same_directory_starts_a_new_history(tmp_path):
    _train(_config(steps=4), tmp_path)
    _train(_config(steps=3, eval_every=3), tmp_path)
    assert [line["step"] for line in read_metrics(tmp_path)] == [3]


def test_a_cut_last_line_is_left_out_and_a_bad_line_is_an_error(tmp_path):
    file = tmp_path / METRICS_NAME
    good = json.dumps({"step": 2, "val_loss": 1.0})
    file.write_text(good + "\n" + '{"step": 4, "val_lo', encoding="utf-8")  # a write cut short
    assert read_metrics(tmp_path) == [{"step": 2, "val_loss": 1.0}]
    file.write_text("not json\n" + good + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"metrics.jsonl:1: not a JSON line"):
        read_metrics(tmp_path)
    assert read_metrics(tmp_path / "absent") == []
