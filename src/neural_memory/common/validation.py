"""Argument checks shared by every module: bad input gets an error naming the argument and its range."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum``; ``TypeError``/``ValueError`` naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return value


def _interval(low: float, high: float, low_open: bool, allow_inf: bool) -> str:
    left = "(" if low_open else "["
    right = "]" if (allow_inf or math.isfinite(high)) else ")"
    return f"{left}{low:g}, {high:g}{right}"


def check_range(
    name: str,
    value: object,
    like: Tensor,
    *,
    shape: torch.Size | None = None,
    low: float = 0.0,
    high: float = math.inf,
    low_open: bool = False,
    allow_inf: bool = False,
) -> Tensor:
    """A scalar or tensor parameter (a gate, a step, a threshold) as a tensor in ``like``'s dtype and device.

    It must lie in ``[low, high]`` (``(low, ...`` with ``low_open``; ``inf`` only with ``allow_inf``; never
    NaN) and broadcast to ``shape`` (default ``like.shape``); ``TypeError``/``ValueError`` naming ``name``
    and the interval otherwise.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | Tensor):
        raise TypeError(f"{name} must be a float or a tensor, got {type(value).__name__}")
    # checked where the values are (a float: on the CPU, no device sync), then moved to like's device
    t = torch.as_tensor(value, dtype=like.dtype)
    bad = torch.isnan(t) | (t < low) | (t > high) | (torch.isinf(t) & (not allow_inf))
    if low_open:
        bad = bad | (t == low)
    if bool(bad.any()):
        shown = value if not isinstance(value, Tensor) or value.numel() == 1 else "a tensor with entries"
        raise ValueError(f"{name} must be in {_interval(low, high, low_open, allow_inf)}, got {shown}")
    shape = like.shape if shape is None else shape
    try:
        fits = torch.broadcast_shapes(t.shape, shape) == shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(f"{name} of shape {tuple(t.shape)} does not broadcast to {tuple(shape)}")
    return t.to(device=like.device)
