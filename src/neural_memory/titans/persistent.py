r"""Persistent memory: learnable, input-independent tokens put in front of the sequence (Titans §3.3).

Titans prepends the same operation three times — Eq. 19 (§3.3), Eq. 26 (MAG) and Eq. 29 (MAL) — and MAC
prepends it to every segment (Eq. 22). One module, :class:`PersistentMemory`, implements all of them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from neural_memory.common.validation import check_int
from neural_memory.registry import implements


def check_sequence(x: object, dim: int, name: str = "x") -> Tensor:
    """``x`` as a ``(batch, seq, dim)`` floating tensor; a clear error otherwise."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (batch, seq, {dim}), got {type(x).__name__}")
    if x.dim() != 3 or x.shape[-1] != dim:
        raise ValueError(f"{name} must have shape (batch, seq, {dim}), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    return x


@implements("titans", 19, 26, 29)
class PersistentMemory(nn.Module):
    r"""Persistent memory: ``N_p`` learnable tokens put before the sequence (Titans v1, Eq. 19, 26, 29).

    .. math::
        x_{\text{new}} = \left[p_1 \; p_2 \; \dots \; p_{N_p}\right] \,\|\, x \qquad (19)

        \tilde{x} = \left[p_1 \; p_2 \; \dots \; p_{N_p}\right] \,\|\, x \qquad (26, 29)

    The same learned rows ``P`` stand in front of every sequence (MAG, MAL) or every segment (MAC, Eq. 22),
    whatever the input; only the outer loop (back-propagation) changes them, never the test-time memory.
    The paper asks :math:`N_p \ge 1`; we also accept ``N_p = 0`` for Table 5's "w/o Persistent Memory"
    ablation (then the input is returned unchanged).

    Args:
        n_persistent: ``N_p >= 0``.
        dim: token width ``d_in >= 1``.
        init_std: standard deviation of the normal initialisation of ``P`` (not given in v1).

    Shapes:
        ``forward(x (B, N, dim)) -> (B, N_p + N, dim)``; ``tokens`` is ``P``, ``(N_p, dim)``.
    """

    def __init__(self, n_persistent: int, dim: int, *, init_std: float = 0.02):
        super().__init__()
        check_int("n_persistent", n_persistent, 0)
        check_int("dim", dim, 1)
        if not (isinstance(init_std, (int, float)) and init_std >= 0):
            raise ValueError(f"init_std must be a number >= 0, got {init_std!r}")
        self.n_persistent, self.dim = n_persistent, dim
        self.tokens = nn.Parameter(torch.randn(n_persistent, dim) * init_std)

    def expand(self, batch_size: int) -> Tensor:
        """``P`` repeated for every sequence of a batch: ``(batch_size, N_p, dim)`` (a view, shares grads)."""
        check_int("batch_size", batch_size, 1)
        return self.tokens.unsqueeze(0).expand(batch_size, -1, -1)

    def forward(self, x: Tensor) -> Tensor:
        """``[P ‖ x]`` along the sequence axis: ``(B, N, dim) -> (B, N_p + N, dim)``."""
        check_sequence(x, self.dim)
        prefix = self.expand(x.shape[0]).to(dtype=x.dtype, device=x.device)
        return torch.cat([prefix, x], dim=1)

    def extra_repr(self) -> str:
        return f"n_persistent={self.n_persistent}, dim={self.dim}"


__all__ = ["PersistentMemory"]
