"""Process-level settings for long CPU training runs (used by the CLI and the benchmarks, never on import).

glibc's ``malloc`` raises its mmap threshold every time a large block is freed ("dynamic mmap threshold"),
after which blocks of a few MB are carved from the heap and the freed space fragments. The chunk-parallel
memory allocates and frees many weight-sized tensors per chunk, so the resident set can grow several
times larger than the live tensors (measured: 7.3 GiB peak RSS for 16K tokens whose backward pass needs
~1.4 GiB). Fixing the threshold stops the growth. It is a setting of the whole process, so library code
never calls it; applications opt in, as ``neural-memory train`` and ``benchmarks/`` do.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def configure_allocator(mmap_threshold: int = 1 << 20) -> bool:
    """Fix glibc's mmap threshold to ``mmap_threshold`` bytes; returns False where there is no glibc.

    Args:
        mmap_threshold: blocks at least this large are mapped directly (and unmapped when freed); must be
            in [4096, 32 MiB] as glibc accepts.
    """
    if not 4096 <= mmap_threshold <= 32 << 20:
        raise ValueError(f"mmap_threshold must be in [4096, {32 << 20}] bytes, got {mmap_threshold}")
    name = ctypes.util.find_library("c")
    if name is None:  # pragma: no cover - not glibc/Linux
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt"):  # pragma: no cover - musl, macOS
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold))
