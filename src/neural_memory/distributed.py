r"""Multi-process data-parallel training: ``torchrun --nproc-per-node N -m neural_memory train ...``.

Every process draws the *whole* global batch from the same seeded generator (so the data stream, the
checkpoint and ``--resume`` are those of a one-process run) and trains on its contiguous share of the rows,
``batch_size / N`` of them. :class:`torch.nn.parallel.DistributedDataParallel` (``gloo`` backend, CPU)
averages the gradients over the processes; each process scales its loss so that this average is exactly
the gradient of :func:`~neural_memory.models.lm_loss` on the global batch, also for the recall task, whose
rows hold different numbers of answers:

.. math::
    \mathcal L = \frac{1}{n}\sum_{i \in \text{batch}} \ell_i
    = \frac1N\sum_{r=1}^{N} \underbrace{\frac{N}{n}\sum_{i \in \text{shard}_r}\ell_i}_{\mathcal L_r},

with :math:`n` the number of scored positions of the global batch. Gradient clipping and the optimizer then
act on identical gradients in every process, so the parameters stay identical; only rank 0 writes the
checkpoint and the log. Two processes equal one process on the global batch up to the order of
floating-point summation (``tests/test_integration/test_distributed.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch.distributed as dist
from torch import Tensor, nn

from neural_memory.data import Batch
from neural_memory.models import lm_loss


@dataclass(frozen=True)
class DataParallel:
    """This process's place in a data-parallel run: ``rank`` in ``[0, world)``."""

    rank: int
    world: int

    def __post_init__(self) -> None:
        if isinstance(self.world, bool) or not isinstance(self.world, int) or self.world < 1:
            raise ValueError(f"world must be an int >= 1, got {self.world!r}")
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or not 0 <= self.rank < self.world:
            raise ValueError(f"rank must be an int in [0, {self.world}), got {self.rank!r}")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def check_batch_size(self, batch_size: int) -> None:
        if batch_size % self.world:
            raise ValueError(
                f"batch_size {batch_size} must be divisible by the number of processes {self.world}"
            )

    def shard(self, batch: Batch) -> Batch:
        """This rank's contiguous rows of the global ``batch``: ``(B / world, T)`` each."""
        size = batch.inputs.shape[0]
        self.check_batch_size(size)
        rows = slice(self.rank * size // self.world, (self.rank + 1) * size // self.world)
        mask = None if batch.loss_mask is None else batch.loss_mask[rows]
        return Batch(batch.inputs[rows], batch.targets[rows], mask)

    def loss(self, model: nn.Module, shard: Batch, batch: Batch) -> tuple[Tensor, Tensor]:
        """``(L_r, logits)``: this rank's scaled loss, whose mean over the ranks is the global loss.

        ``L_r = (world / n) * sum of the shard's scored token losses``, ``n`` the global batch's number of
        scored positions (every position without a mask).
        """
        logits, _ = model(shard.inputs)
        total = batch.targets.numel() if batch.loss_mask is None else int(batch.loss_mask.sum())
        local = shard.targets.numel() if shard.loss_mask is None else int(shard.loss_mask.sum())
        if local == 0:  # no answer in this shard: contributes nothing, but keeps the graph for DDP
            return logits.sum() * 0.0, logits
        return lm_loss(logits, shard.targets, shard.loss_mask) * (self.world * local / total), logits

    def mean(self, value: Tensor) -> Tensor:
        """The mean of ``value`` over the ranks (every rank gets it)."""
        if self.world == 1:
            return value
        value = value.detach().clone()
        dist.all_reduce(value)
        return value / self.world


def from_environment() -> DataParallel | None:
    """Join the process group that ``torchrun`` describes (``WORLD_SIZE > 1``), else ``None``.

    The backend is ``gloo`` (CPU). The group is created once per process.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return DataParallel(dist.get_rank(), dist.get_world_size())


def wrap(model: nn.Module, parallel: DataParallel | None) -> nn.Module:
    """``model`` inside :class:`~torch.nn.parallel.DistributedDataParallel` when ``parallel``, else itself.

    ``find_unused_parameters=True``: some kinds leave parameters out of a forward pass (e.g. a memory that
    only writes); DDP must not wait for their gradients.
    """
    if parallel is None:
        return model
    return nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)


def barrier(parallel: DataParallel | None) -> None:
    if parallel is not None and parallel.world > 1:
        dist.barrier()


def is_main_process() -> bool:
    """Rank 0 of a process group, or a process outside any group."""
    return not dist.is_initialized() or dist.get_rank() == 0


def shutdown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


__all__ = ["DataParallel", "barrier", "from_environment", "is_main_process", "shutdown", "wrap"]
