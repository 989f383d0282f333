"""Run a memory layer on the ``meta`` device: every tensor it makes must be on the input's device.

A tensor created without ``device=`` lands on the CPU; on a CUDA machine that is a device mismatch,
on a CPU-only one it goes unnoticed. The ``meta`` device (shapes, no data) makes the same mistake show:
mixing a CPU tensor into a ``meta`` computation raises, or leaves a CPU tensor in the state. The checks
that read values (the gates' range, the attention mask's rows) cannot run on ``meta`` and are replaced
by no-ops here; their own tests run them on real data.
"""

from __future__ import annotations

import pytest
import torch
from test_integration.lm_state import tensors_in
from torch import nn


def run_on_meta(module: nn.Module, monkeypatch: pytest.MonkeyPatch, seq: int = 5) -> None:
    """Two calls (start and continue a stream) on ``meta``; all outputs and state tensors on ``meta``."""
    import neural_memory.common.attention as attention
    import neural_memory.titans.memory as memory

    monkeypatch.setattr(memory, "check_gates", lambda *args: None)
    monkeypatch.setattr(attention, "_check_mask", lambda *args: None)
    dtype = next(module.parameters()).dtype
    module = module.to("meta")
    dim = module.proj.dim if hasattr(module, "proj") else module.dim  # the attention keeps it in proj
    x = torch.randn(2, seq, dim, device="meta", dtype=dtype)
    y, state = module(x)
    y2, state = module(x, state)
    devices = {t.device.type for t in (y, y2, *tensors_in(state))}
    assert devices == {"meta"}, devices
