"""Causal 1-D depthwise-separable convolution with a streaming cache (Titans §4.4).

Titans puts a depthwise-separable convolution after each of the query, key and value projections. It must
be causal (a token sees only itself and the ``kernel_size - 1`` tokens before it), and a stream split into
several calls must give the same result as one call: the last ``kernel_size - 1`` inputs are the cache.
Mamba2 convolves without the pointwise map (``pointwise=False``): each channel sees only its own past.

The depthwise taps run as ``kernel_size`` shifted multiply-adds over the padded input, not through
``nn.Conv1d``'s kernel (which keeps the parameters): with one channel per group and four taps the
convolution is a handful of element-wise passes, and oneDNN's depthwise kernel spends its time on layout
changes around them — its backward was 4.5 % of a Titans memory step, and MAC convolves every segment
separately (512 calls per 4K step). As element-wise ops the taps also fuse into a compiled step.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class CausalDepthwiseSeparableConv(nn.Module):
    """Depthwise causal convolution along the sequence, then a pointwise (1×1) linear map.

    Args:
        channels: feature width ``C``.
        kernel_size: taps per channel, >= 1.
        pointwise: apply the pointwise map; ``False`` leaves the depthwise convolution alone (Mamba2's).
    """

    def __init__(self, channels: int, kernel_size: int, *, pointwise: bool = True):
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
        self.channels, self.kernel_size = channels, kernel_size
        self.depthwise = nn.Conv1d(channels, channels, kernel_size, groups=channels)
        self.pointwise = nn.Linear(channels, channels) if pointwise else nn.Identity()

    def empty_cache(self, batch: int, *, device=None, dtype=None) -> Tensor:
        """Zeros standing for the inputs before the stream starts: ``(batch, kernel_size - 1, C)``."""
        return torch.zeros(batch, self.kernel_size - 1, self.channels, device=device, dtype=dtype)

    def forward(self, x: Tensor, cache: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x (B, T, C)``, ``cache (B, kernel_size - 1, C)`` → ``(y (B, T, C), new cache)``."""
        if x.dim() != 3 or x.shape[-1] != self.channels:
            raise ValueError(f"x must have shape (batch, seq, {self.channels}), got {tuple(x.shape)}")
        if cache is None:
            cache = self.empty_cache(x.shape[0], device=x.device, dtype=x.dtype)
        # an empty x gives an empty output and keeps the cache: the taps slice zero rows, the cache is re-cut
        padded = torch.cat([cache, x], dim=1)
        y = self._depthwise(padded)
        new_cache = padded[:, padded.shape[1] - (self.kernel_size - 1) :]
        return self.pointwise(y), new_cache

    def _depthwise(self, padded: Tensor) -> Tensor:
        """``padded (B, K - 1 + T, C)`` → ``(B, T, C)``: ``y_t = b + Σ_j w_j ⊙ padded_{t + j}``.

        ``nn.Conv1d`` cross-correlates, so tap ``j`` reads ``j`` steps into the window and tap ``K - 1`` is
        the current token.
        """
        taps, bias = self.depthwise.weight[:, 0, :], self.depthwise.bias  # (C, K), (C,)
        seq = padded.shape[1] - (self.kernel_size - 1)
        y = torch.addcmul(bias, padded[:, :seq], taps[:, 0])
        for j in range(1, self.kernel_size):
            y = torch.addcmul(y, padded[:, j : j + seq], taps[:, j])
        return y
