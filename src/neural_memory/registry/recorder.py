"""Which claimed objects a piece of code runs: code objects entered, noted with ``sys.setprofile``.

The pytest plugin (:mod:`neural_memory.registry.pytest_plugin`) wraps each test marked with an equation in
a :class:`ClaimRecorder` watching the code of the objects that claim that equation. Nothing is wrapped or
patched: the recorder compares the code object of every Python call with a small dict and removes its
profile function as soon as every watched object has run, so a test pays only until then.

``sys.setprofile`` (not ``sys.settrace``) leaves coverage's tracer alone; it sees calls in the current
thread only, which is where tests call the code they test.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterable, Mapping
from types import CodeType, FrameType, TracebackType
from typing import Any


def code_objects(obj: object) -> set[CodeType]:
    """The code that runs when ``obj`` runs.

    A function gives its own code object. A class gives every method, static method, class method and
    property defined in its body and in the bodies of its bases from the same top-level package
    (``__init__``, ``forward`` ...), but nothing of ``torch.nn.Module`` or ``object``.
    """
    if inspect.isclass(obj):
        package = obj.__module__.split(".")[0]
        klasses = [k for k in obj.__mro__ if k.__module__.split(".")[0] == package]
        return {code for k in klasses for attr in vars(k).values() for code in _attribute_code(attr)}
    return set(_attribute_code(obj))


def _attribute_code(attr: object) -> Iterable[CodeType]:
    if isinstance(attr, staticmethod | classmethod):
        attr = attr.__func__
    if isinstance(attr, property):
        return [
            code for f in (attr.fget, attr.fset, attr.fdel) if f is not None for code in _attribute_code(f)
        ]
    functions = [attr, inspect.unwrap(attr)] if inspect.isfunction(attr) else [attr]
    codes = [getattr(f, "__code__", None) for f in functions]
    return [code for code in codes if isinstance(code, CodeType)]


class ClaimRecorder:
    """Context manager: which claims (names) of ``watched`` (code object -> claim names) ran in the block.

    ``ran`` holds the names whose code was entered at least once. A claim is a function (one code object)
    or a class (many): once every name has run, the profile hook is removed.
    """

    def __init__(self, watched: Mapping[CodeType, Iterable[str]]) -> None:
        self._watched = {code: frozenset(names) for code, names in watched.items()}
        self._waiting: set[str] = set().union(*self._watched.values())
        self._previous: Any = None
        self.ran: set[str] = set()

    def __enter__(self) -> ClaimRecorder:
        self._previous = sys.getprofile()
        if self._waiting:
            sys.setprofile(self._profile)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        sys.setprofile(self._previous)

    def _profile(self, frame: FrameType, event: str, arg: object) -> None:
        if event == "call":
            names = self._watched.get(frame.f_code)
            if names is not None:
                self.ran |= names
                self._waiting -= names
                if not self._waiting:  # every claim has run: stop paying for the profile hook
                    sys.setprofile(self._previous)
        if self._previous is not None:
            self._previous(frame, event, arg)
