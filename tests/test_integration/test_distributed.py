"""Data-parallel training: two processes on halves of the batch equal one process on the whole batch.

Launched the way a user launches it, ``torchrun --nproc-per-node 2 -m neural_memory train ...`` (the gloo
backend, loopback only), then compared with ``train`` in this process on the same config. The sharding and
the loss scaling are also checked without processes, by simulating the ranks one after the other.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from neural_memory.data import Batch
from neural_memory.distributed import DataParallel
from neural_memory.models import build_lm, lm_loss
from neural_memory.training import TrainConfig, load_checkpoint, read_metrics, train

TINY = {"seq_len": 24, "batch_size": 4, "dim": 16, "depth": 1}


def _batch(seed: int, masked: bool) -> Batch:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 256, (4, 9), generator=g)
    mask = None
    if masked:  # uneven answers per row: 1, 3, 2 and 1 marked positions
        mask = torch.zeros(4, 8, dtype=torch.bool)
        mask[0, 7] = True
        mask[1, 2:5] = True
        mask[2, [1, 6]] = True
        mask[3, 0] = True
    return Batch(ids[:, :-1], ids[:, 1:], mask)


@pytest.mark.parametrize("masked", [False, True], ids=["text", "recall-mask"])
def test_mean_of_the_ranks_gradients_is_the_gradient_of_the_global_batch(masked):
    # DDP averages the ranks' gradients; each rank's loss is scaled so that the average is exactly the
    # gradient of lm_loss on the whole batch, even when the ranks hold different numbers of answers.
    torch.manual_seed(0)
    model = build_lm("transformer", vocab_size=256, dim=16, depth=1, heads=2).double()
    batch = _batch(1, masked)

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    whole = grads(lm_loss(model(batch.inputs)[0], batch.targets, batch.loss_mask))
    ranks = [DataParallel(rank, 2) for rank in range(2)]
    parts = [grads(dp.loss(model, dp.shard(batch), batch)[0]) for dp in ranks]
    for g, g0, g1 in zip(whole, parts[0], parts[1], strict=True):
        torch.testing.assert_close((g0 + g1) / 2, g, rtol=1e-12, atol=1e-15)
    # the value each rank reports after the all-reduce is the global loss
    values = [dp.loss(model, dp.shard(batch), batch)[0].item() for dp in ranks]
    expected = lm_loss(model(batch.inputs)[0], batch.targets, batch.loss_mask).item()
    assert abs(sum(values) / 2 - expected) < 1e-12


def test_shards_are_contiguous_rows_and_cover_the_batch():
    batch = _batch(2, masked=True)
    shards = [DataParallel(rank, 2).shard(batch) for rank in range(2)]
    assert torch.equal(torch.cat([s.inputs for s in shards]), batch.inputs)
    assert torch.equal(torch.cat([s.loss_mask for s in shards]), batch.loss_mask)
    assert torch.equal(shards[1].targets, batch.targets[2:])


def test_bad_world_and_batch_are_clear_errors():
    with pytest.raises(ValueError, match="rank"):
        DataParallel(2, 2)
    with pytest.raises(ValueError, match="world"):
        DataParallel(0, 0)
    with pytest.raises(ValueError, match="batch_size 4 must be divisible by the number of processes 3"):
        DataParallel(0, 3).shard(_batch(3, masked=False))


def _torchrun(tmp_path, kind: str, steps: int, text) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    torchrun = [sys.executable, "-m", "torch.distributed.run"]
    args = ["--standalone", "--nproc-per-node", "2", "-m", "neural_memory", "train", kind]
    args += ["--steps", str(steps), "--eval-every", str(steps), "--out", str(tmp_path / "ddp")]
    args += ["--seq-len", "24", "--batch-size", "4", "--dim", "16", "--depth", "1", "--no-progress"]
    args += [] if text is None else ["--text", str(text)]
    return subprocess.run(torchrun + args, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("kind", "task"), [("transformer", "recall"), ("titans-lmm", "text")])
def test_two_processes_train_like_one_process_on_the_global_batch(tmp_path, kind, task):
    steps = 3
    text = None
    if task == "text":
        text = tmp_path / "corpus.txt"
        text.write_bytes(b"hello world, hello memory. " * 40)
    done = _torchrun(tmp_path, kind, steps, text)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("kind=") == 1  # only rank 0 reports
    ddp = load_checkpoint(tmp_path / "ddp")
    config = TrainConfig(
        kind=kind, steps=steps, eval_every=steps, text=None if text is None else str(text), **TINY
    )
    torch.set_num_threads(1)
    train(config, tmp_path / "single", progress=False, log=lambda _: None)
    single = load_checkpoint(tmp_path / "single")
    assert ddp["step"] == single["step"] == steps
    assert ddp["config"] == single["config"]
    for name, value in single["model"].items():
        # float32: the two ranks' gradients are summed in a different order than one batch's
        torch.testing.assert_close(ddp["model"][name], value, rtol=1e-5, atol=1e-6, msg=name)
    for key in ("train_loss", "val_loss"):
        assert abs(ddp["metrics"][key] - single["metrics"][key]) < 1e-5
    # one history line per evaluation, written by rank 0 only
    lines = [read_metrics(tmp_path / run) for run in ("ddp", "single")]
    assert [line["step"] for line in lines[0]] == [line["step"] for line in lines[1]] == [steps]
