"""Helpers shared by the LM-kind tests: token batches and the tensors of a (nested) mixer state."""

import dataclasses

import torch


def tokens(batch, length, seed=0, vocab=16):
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def tensors_in(obj):
    """Every tensor of a (nested) state: inside dataclasses, dicts, tuples and lists."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from tensors_in(getattr(obj, f.name))
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from tensors_in(v)
    elif isinstance(obj, tuple | list):
        for v in obj:
            yield from tensors_in(v)


def state_numel(obj):
    """Scalars held by a (nested) state."""
    return sum(t.numel() for t in tensors_in(obj))
