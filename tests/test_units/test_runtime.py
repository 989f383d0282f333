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


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
@pytest.mark.parametrize("edge", [4096, 32 << 20])
def test_the_interval_glibc_accepts_is_closed(edge):
    assert configure_allocator(edge) is True


@pytest.mark.parametrize("bad", [4095, (32 << 20) + 1])
def test_just_outside_the_interval_is_refused_with_the_interval_and_the_value(bad):
    with pytest.raises(ValueError, match=rf"^mmap_threshold must be in \[4096, 33554432\] bytes, got {bad}$"):
        configure_allocator(bad)


class _FakeLibc:
    def __init__(self, answer: int):
        self.calls, self.answer = [], answer

    def mallopt(self, parameter, value):
        self.calls.append((parameter, value))
        return self.answer


def test_it_sets_glibcs_mmap_threshold_parameter_to_the_value(monkeypatch):
    # mallopt(M_MMAP_THRESHOLD = -3, bytes) on the C library found by ctypes; glibc's 0 means refused
    import neural_memory.common.runtime as runtime

    names, loaded = [], []
    monkeypatch.setattr(runtime.ctypes.util, "find_library", lambda name: names.append(name) or "libc.so.6")
    for answer, expected in ((1, True), (0, False)):
        libc = _FakeLibc(answer)
        monkeypatch.setattr(runtime.ctypes, "CDLL", lambda name, libc=libc: loaded.append(name) or libc)
        assert runtime.configure_allocator(1 << 20) is expected
        assert libc.calls == [(-3, 1 << 20)]
    assert names == ["c", "c"] and loaded == ["libc.so.6", "libc.so.6"]  # the library it found


def test_without_a_c_library_or_mallopt_nothing_is_set(monkeypatch):
    import neural_memory.common.runtime as runtime

    monkeypatch.setattr(runtime.ctypes.util, "find_library", lambda name: None)
    assert runtime.configure_allocator() is False
    monkeypatch.setattr(runtime.ctypes.util, "find_library", lambda name: "libc.so")
    monkeypatch.setattr(runtime.ctypes, "CDLL", lambda name: object())  # no mallopt (musl, macOS)
    assert runtime.configure_allocator() is False
