"""The allocator setting used by the CLI and the benchmarks."""

import platform

import pytest

from neural_memory.common.runtime import configure_allocator


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_glibc_accepts_the_threshold():
    assert configure_allocator(1 << 20) is True


@pytest.mark.parametrize("bad", [0, 1024, 64 << 20])
def test_threshold_out_of_range_raises(bad):
    with pytest.raises(ValueError, match="mmap_threshold"):
        configure_allocator(bad)
