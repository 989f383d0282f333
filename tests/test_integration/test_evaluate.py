"""``neural-memory evaluate``: bits per byte of a text read as one stream, task accuracy, and bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch

from neural_memory.cli import main
from neural_memory.evaluation import stream_loss, task_accuracy
from neural_memory.tasks.sentences import generate_text
from neural_memory.training import TrainConfig, load_model, train

SMALL = {
    "seq_len": 16,
    "batch_size": 2,
    "dim": 16,
    "depth": 1,
    "steps": 3,
    "eval_every": 3,
    "eval_batches": 1,
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A trained swa text model (window 5 < seq_len 16), a transformer, and a recall model."""
    root = tmp_path_factory.mktemp("evaluate")
    text = root / "corpus.txt"
    text.write_text(generate_text(4000, seed=3), encoding="ascii")
    configs = {
        "swa": TrainConfig(kind="swa", text=str(text), model_config={"heads": 2, "window": 5}, **SMALL),
        "transformer": TrainConfig(kind="transformer", text=str(text), model_config={"heads": 2}, **SMALL),
        "recall": TrainConfig(kind="transformer", recall_pairs=3, model_config={"heads": 2}, **SMALL),
    }
    for name, config in configs.items():
        train(config, root / name, progress=False, log=lambda _: None)
    return root, text


def _evaluate(argv, capsys) -> dict:
    assert main(["evaluate", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_uniform_model_has_eight_bits_per_byte():
    # logits all equal: every byte has probability 1/256, loss ln 256 nats, 8 bits, perplexity 256
    def uniform(x, state):
        return torch.zeros(*x.shape, 256), (state or 0) + x.shape[1]

    result = stream_loss(uniform, torch.arange(11), chunk=3)
    assert result["bytes"] == 10
    assert result["loss"] == pytest.approx(math.log(256), abs=1e-12)
    assert result["bpb"] == pytest.approx(8.0, abs=1e-12)
    assert result["perplexity"] == pytest.approx(256.0, rel=1e-12)


@pytest.mark.parametrize("kind", ["swa", "transformer"])
def test_a_text_longer_than_the_training_length_is_one_stream(runs, kind, capsys):
    # 100 bytes at chunk 16: the state carries the context, so the result equals one forward pass over all
    root, text = runs
    got = _evaluate([str(root / kind), "--text", str(text), "--max-bytes", "100"], capsys)
    model, _ = load_model(root / kind)
    model.eval()
    data = torch.frombuffer(bytearray(text.read_bytes()[:100]), dtype=torch.uint8).long()
    with torch.no_grad():
        logits, _ = model(data[None, :-1])
    nats = torch.nn.functional.cross_entropy(logits[0].double(), data[1:]).item()
    assert got["bytes"] == 99 and got["chunk"] == 16 and got["kind"] == kind
    assert got["bpb"] == pytest.approx(nats / math.log(2), abs=1e-5)
    assert got["perplexity"] == pytest.approx(math.exp(nats), rel=1e-5)


def test_chunk_size_does_not_change_the_result(runs, capsys):
    root, text = runs
    a = _evaluate([str(root / "swa"), "--text", str(text), "--max-bytes", "60", "--chunk", "7"], capsys)
    b = _evaluate([str(root / "swa"), "--text", str(text), "--max-bytes", "60", "--chunk", "60"], capsys)
    assert a["bpb"] == pytest.approx(b["bpb"], abs=1e-5)


def test_without_text_the_held_out_tail_is_read(runs, capsys):
    root, _ = runs
    got = _evaluate([str(root / "transformer" / "checkpoint.pt")], capsys)
    assert got["text"].endswith("(held out)")
    assert got["bytes"] == 4000 - round(4000 * 0.9) - 1
    assert 0 < got["bpb"] < 9


def test_task_accuracy_of_a_recall_and_a_needle_run(runs, capsys):
    root, _ = runs
    recall = _evaluate([str(root / "recall"), "--samples", "5"], capsys)  # default task of a recall run
    assert recall["task"] == "recall" and 0 <= recall["hits"] <= recall["n"] and recall["n"] > 0
    needle = _evaluate(
        [str(root / "transformer"), "--task", "needle", "--samples", "6", "--length", "80"], capsys
    )
    assert needle["task"] == "needle" and needle["n"] == 6 and needle["accuracy"] == needle["hits"] / 6


def test_task_accuracy_counts_exact_matches_by_hand(runs):
    # a needle sample counts only when every answer byte is the argmax; recall counts answer bytes
    root, _ = runs
    model, config = load_model(root / "recall")
    model.eval()
    result = task_accuracy(model, config, "recall", samples=4)
    from neural_memory.evaluation import TASK_BATCHES

    batch = TASK_BATCHES["recall"](config, 4, None)
    with torch.no_grad():
        logits, _ = model(batch.inputs)
    hits = int(((logits.argmax(-1) == batch.targets) & batch.loss_mask).sum())
    assert (result["hits"], result["n"]) == (hits, int(batch.loss_mask.sum()))
    with pytest.raises(ValueError, match="unknown task 'babel'; choose from recall, needle"):
        task_accuracy(model, config, "babel", samples=1)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{root}/nothing"], "no such file or directory"),
        (["{root}/corrupt"], "not a readable checkpoint"),
        (["{root}/swa", "--task", "sudoku"], "invalid choice: 'sudoku'"),
        (["{root}/swa", "--text", "/no/such.txt"], "--text /no/such.txt: no such file"),
        (["{root}/swa", "--chunk", "0"], "--chunk must be an integer >= 1, got 0"),
        (["{root}/swa", "--text", "{text}", "--max-bytes", "1"], "needs at least 2 bytes"),
    ],
)
def test_bad_input_is_a_clear_error_without_a_traceback(runs, argv, message, capsys):
    root, text = runs
    (root / "corrupt").mkdir(exist_ok=True)
    (root / "corrupt" / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", *[a.format(root=root, text=text) for a in argv]])
    code = exit_info.value.code
    text_out = code if isinstance(code, str) else capsys.readouterr().err
    assert code not in (0, None)
    assert message in text_out and "Traceback" not in text_out
