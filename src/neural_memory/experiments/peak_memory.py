"""Peak memory of a piece of work on the CPU: the growth of the process's resident set while it runs.

``tracemalloc`` sees only Python's allocator, not torch's tensors, and ``torch.cuda.max_memory_allocated`` has
no CPU counterpart, so we measure what the operating system sees. Linux keeps the peak resident set size of a
process (``VmHWM`` in ``/proc/self/status``) and lets the process reset it to the current size (write ``5``
to ``/proc/self/clear_refs``, Linux >= 4.0). Before each measurement we also return the allocator's free
memory to the system (glibc ``malloc_trim``), so memory freed by earlier work is not silently reused and
hidden. The result is the peak growth in MiB: it includes allocator overhead and has the resolution of a page
(4 KiB), which is why the scaling experiment fits exponents only on lengths where the work is large.

Elsewhere (macOS, Windows, a /proc that forbids the reset) :func:`memory_meter` returns ``None`` and the
experiment records no memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
from collections.abc import Callable
from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", STATUS.read_text(), flags=re.MULTILINE)
    if match is None:
        raise OSError(f"{field} not in {STATUS}")
    return int(match.group(1))


def _trimmer() -> Callable[[], None]:
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    return (lambda: None) if trim is None else (lambda: trim(0) and None)


def memory_meter() -> Callable[[Callable[[], object]], float] | None:
    """A function ``measure(work) -> MiB`` giving the peak resident growth while ``work()`` runs, or ``None``
    when this system cannot reset the peak (then no memory is reported)."""
    try:
        CLEAR_REFS.write_text("5")
        _status_kib("VmHWM")
    except OSError:
        return None
    trim = _trimmer()

    def measure(work: Callable[[], object]) -> float:
        trim()
        CLEAR_REFS.write_text("5")  # the peak is now the current resident size
        before = _status_kib("VmRSS")
        work()
        return max(0, _status_kib("VmHWM") - before) / 1024

    return measure


__all__ = ["memory_meter"]
