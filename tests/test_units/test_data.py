"""Training data: byte windows from a text file, and the generated associative-recall task."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from neural_memory.data import AssociativeRecall, Batch, TextData, answer_accuracy, read_bytes, sample_windows

TEXT = (
    "The quick brown fox jumps over the lazy dog. " * 8 + "Pack my box with five dozen liquor jugs. " * 4
).encode()


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(TEXT)
    return path


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------------
# text
# ------------------------------------------------------------------------------------------------


def test_read_bytes_is_the_file(text_file):
    data = read_bytes(text_file)
    assert data.dtype == torch.uint8 and bytes(data.tolist()) == TEXT


def test_missing_and_empty_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"text file not found: .*nowhere\.txt"):
        read_bytes(tmp_path / "nowhere.txt")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(ValueError, match="text file is empty"):
        read_bytes(tmp_path / "empty.txt")


def test_split_is_by_position(text_file):
    data = TextData(text_file, val_fraction=0.25)
    cut = round(len(TEXT) * 0.75)
    assert bytes(data.train.tolist()) == TEXT[:cut]
    assert bytes(data.val.tolist()) == TEXT[cut:]


@pytest.mark.parametrize("split", ["train", "val"])
def test_windows_come_from_their_split_of_the_file(text_file, split):
    data = TextData(text_file, val_fraction=0.25)
    part = bytes((data.train if split == "train" else data.val).tolist())
    batch = data.batch(split, 16, 20, gen(0))
    assert batch.inputs.shape == batch.targets.shape == batch.loss_mask.shape == (16, 20)
    assert batch.inputs.dtype == batch.targets.dtype == torch.long and batch.loss_mask.all()
    for inputs, targets in zip(batch.inputs, batch.targets, strict=True):
        window = bytes(inputs.tolist()) + bytes(targets[-1:].tolist())
        assert window in part
        assert torch.equal(inputs[1:], targets[:-1])  # targets are the inputs shifted by one


def test_text_batches_are_deterministic_given_the_seed(text_file):
    data = TextData(text_file)
    a, b, c = (data.batch("train", 4, 10, gen(s)) for s in (5, 5, 6))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a.inputs, c.inputs)


@given(seq_len=st.integers(1, 9))
def test_every_window_start_is_reachable(seq_len):
    data = torch.arange(12, dtype=torch.uint8)
    starts = set(sample_windows(data, 400, seq_len, gen(seq_len)).inputs[:, 0].tolist())
    assert starts == set(range(12 - seq_len))


def test_text_too_short_for_the_window(text_file):
    data = TextData(text_file, val_fraction=0.1)
    with pytest.raises(ValueError, match=r"validation split holds \d+ bytes, fewer than seq_len \+ 1 = 100"):
        data.batch("val", 2, 99, gen(0))
    with pytest.raises(ValueError, match=r"a window needs seq_len \+ 1 = 13"):
        sample_windows(torch.zeros(12, dtype=torch.uint8), 1, 12, gen(0))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda d: d.batch("test", 2, 4, gen(0)), ValueError, "split must be 'train' or 'val'"),
        (lambda d: d.batch("train", 0, 4, gen(0)), ValueError, "batch_size must be an int >= 1"),
        (lambda d: d.batch("train", 2, 0, gen(0)), ValueError, "seq_len must be an int >= 1"),
    ],
)
def test_bad_text_arguments(text_file, call, error, match):
    with pytest.raises(error, match=match):
        call(TextData(text_file))


def test_bad_val_fraction(text_file):
    with pytest.raises(ValueError, match=r"val_fraction must lie in \(0, 1\)"):
        TextData(text_file, val_fraction=1.0)


# ------------------------------------------------------------------------------------------------
# associative recall
# ------------------------------------------------------------------------------------------------


def parse_recall(sequence: bytes) -> tuple[dict[int, int], list[tuple[int, int]]]:
    """Independent parser: pairs before '|', (query, answer) after it; trailing '.' padding dropped."""
    context, _, questions = sequence.partition(b"|")
    pairs = {context[i]: context[i + 1] for i in range(0, len(context), 2)}
    assert len(pairs) == len(context) // 2, "keys must be distinct"
    questions = questions.rstrip(b".")
    return pairs, [(questions[i], questions[i + 1]) for i in range(0, len(questions), 2)]


@pytest.mark.parametrize(("seq_len", "n_pairs"), [(32, 8), (33, 8), (10, 4), (128, 26)])
def test_answers_are_correct_by_construction(seq_len, n_pairs):
    task = AssociativeRecall(seq_len, n_pairs=n_pairs)
    batch = task.batch(64, gen(seq_len))
    assert batch.inputs.shape == batch.targets.shape == batch.loss_mask.shape == (64, seq_len)
    for inputs, targets, mask in zip(*batch, strict=True):
        sequence = bytes(inputs.tolist()) + bytes(targets[-1:].tolist())
        assert len(sequence) == seq_len + 1
        pairs, questions = parse_recall(sequence)
        assert len(pairs) == n_pairs
        assert set(pairs) <= set(AssociativeRecall.KEYS)
        assert set(pairs.values()) <= set(AssociativeRecall.VALUES)
        assert len(questions) == (seq_len - 2 * n_pairs) // 2
        assert all(pairs[q] == a for q, a in questions)
        # the mask marks exactly the answers: input = the query key, target = its value
        marked = mask.nonzero().flatten().tolist()
        assert [(inputs[t].item(), targets[t].item()) for t in marked] == questions


def test_odd_space_is_padded_with_a_dot():
    seq = AssociativeRecall(11, n_pairs=2).sequences(3, gen(0))
    assert (seq[:, -1] == ord(".")).all() and (seq[:, 4] == ord("|")).all()


def test_recall_is_deterministic_given_the_seed():
    task = AssociativeRecall(40, n_pairs=6)
    a, b, c = (task.sequences(8, gen(s)) for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_recall_keys_and_queries_vary():
    seq = AssociativeRecall(64, n_pairs=8).sequences(200, gen(0))
    assert len(set(seq[:, 0].tolist())) > 20  # first keys are spread over the alphabet
    assert len(set(seq[:, 1].tolist())) == 10  # all digits appear as values


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ({"seq_len": 17, "n_pairs": 8}, ValueError, r"seq_len must be >= 2 \* n_pairs \+ 2 = 18"),
        ({"seq_len": 100, "n_pairs": 27}, ValueError, r"n_pairs must be <= 26"),
        ({"seq_len": 10, "n_pairs": 0}, ValueError, "n_pairs must be an int >= 1"),
        ({"seq_len": 10.0, "n_pairs": 2}, TypeError, "seq_len must be an int"),
    ],
)
def test_bad_recall_arguments(args, error, match):
    with pytest.raises(error, match=match):
        AssociativeRecall(args.pop("seq_len"), **args)


def test_answer_accuracy_counts_only_masked_positions():
    targets = torch.tensor([[1, 2, 3, 0]])
    mask = torch.tensor([[True, True, False, True]])
    logits = torch.zeros(1, 4, 4)
    logits[0, 0, 1] = 1  # right
    logits[0, 1, 0] = 1  # wrong
    logits[0, 2, 3] = 1  # right but unmasked
    logits[0, 3, 0] = 1  # right
    assert answer_accuracy(logits, Batch(targets, targets, mask)) == pytest.approx(2 / 3)
