"""Issue 7's question "can the memory do the recall task at all?", asked without the outer loop.

The LM kinds learn the associative-recall task slowly (``benchmarks/results/recall.json``). Two things could
hold a memory-only model back: the test-time memory itself (its default gates, initialisation and
LayerNorm read-out cannot store the task's pairs) or the outer loop (the projections and the short
convolution must first learn to build lag-1 keys). These tests separate the two: they give a default
:class:`~neural_memory.titans.NeuralMemory` the projections a trained model would need — the key of token t
is an embedding of token t-1, the value and the query embeddings of token t (SiLU, unit keys and queries,
as in Titans §4.4) — on sequences of :class:`~neural_memory.data.AssociativeRecall`, and read the answer as
the digit whose value embedding is closest in direction to the memory's output (the read-out minus its
residual input). The default memory answers almost every query; the unwritten memory answers at chance.
So a model that stays near chance is held back by what it has learned outside the memory, not by the
memory's capacity.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.functional import normalize, silu

from neural_memory.data import AssociativeRecall
from neural_memory.titans import NeuralMemory

DIM, SEQ, BATCH = 64, 128, 16
DIGITS = torch.tensor(list(AssociativeRecall.VALUES))


def recall_accuracy(seed: int, *, write: bool) -> float:
    """Share of the task's answers read correctly from a default memory given ideal lag-1 projections."""
    torch.manual_seed(seed)
    memory = NeuralMemory(DIM)
    embed_key, embed_value = torch.randn(256, DIM), torch.randn(256, DIM)
    task = AssociativeRecall(SEQ, n_pairs=8)
    batch = task.batch(BATCH, torch.Generator().manual_seed(seed))
    tokens = batch.inputs  # (B, T)
    previous = torch.cat([torch.zeros_like(tokens[:, :1]), tokens[:, :-1]], dim=1)
    keys = normalize(silu(embed_key[previous]), dim=-1)  # token t's key names token t-1: (B, T, d)
    queries = normalize(silu(embed_key[tokens]), dim=-1)  # token t asks with its own name
    values = silu(embed_value[tokens])
    state = memory.init_state(BATCH)
    gate_input = torch.zeros(BATCH, SEQ, DIM)  # the gates' initial values (learned gates at zero input)
    with torch.no_grad():
        if write:
            out, _ = memory._write(gate_input, keys, values, queries, state)
        else:  # the read of M_0, the memory before any write
            out = memory.memory.recall(state.weights, queries)
    answer = normalize(out - queries, dim=-1) @ normalize(silu(embed_value[DIGITS]), dim=-1).T  # (B, T, 10)
    predicted = DIGITS[answer.argmax(dim=-1)]
    return (predicted[batch.loss_mask] == batch.targets[batch.loss_mask]).float().mean().item()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_memory_answers_the_recall_task_given_lag_one_keys(seed):
    assert recall_accuracy(seed, write=True) >= 0.9


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unwritten_memory_answers_the_recall_task_at_chance(seed):
    # 10 digits: chance is 0.1; 16 x 55 answers put a 99 % band at about +-0.03
    assert recall_accuracy(seed, write=False) <= 0.16


def test_the_mode_of_the_pair_values_answers_three_in_ten():
    # The plateau every kind sits on for thousands of steps (benchmarks/results/recall*.json: val accuracy
    # about 0.30, an independent nn.TransformerEncoder too) is this shortcut: answer every query with the
    # digit that occurs most often among the 8 pair values, without looking up the key. Its accuracy, by
    # counting on 2000 sequences, is 0.30; uniform guessing gives 0.10.
    task = AssociativeRecall(SEQ, n_pairs=8)
    batch = task.batch(2000, torch.Generator().manual_seed(0))
    pair_values = batch.inputs[:, 1 : 2 * 8 : 2]  # (B, 8): k_1 v_1 k_2 v_2 ... -> v_i
    counts = (pair_values[:, :, None] == DIGITS).sum(dim=1).float()  # (B, 10)
    ties = torch.rand(counts.shape, generator=torch.Generator().manual_seed(1)) * 0.1
    mode = DIGITS[(counts + ties).argmax(dim=-1)]  # (B,)
    answers = batch.targets[batch.loss_mask].reshape(2000, -1)  # (B, queries)
    assert abs((answers == mode[:, None]).float().mean().item() - 0.30) < 0.01
