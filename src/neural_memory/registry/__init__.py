"""The equation registry: the project's machine-readable record of the three papers.

Two halves:

* the *data* (``registry/data/{titans,miras,nl}.json``): every numbered equation of the pinned arXiv
  versions, transcribed from the project's equation catalogs, with its name, section, kind, LaTeX and
  confidence, plus an ``na`` reason where the project decided not to implement it;
* the *claims*: code declares which equations it computes with the :func:`implements` decorator, tests
  declare which equations they verify with ``@pytest.mark.equation(paper, number)``.

``neural-memory equations`` joins the two (see :mod:`neural_memory.registry.report`) with the statuses the
last whole test run recorded (:mod:`neural_memory.registry.status`, written by
:mod:`neural_memory.registry.pytest_plugin`).
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TypeVar

PAPERS: tuple[str, ...] = ("titans", "miras", "nl")
KINDS: tuple[str, ...] = ("implement", "definition", "derivation", "background")

EquationId = int | str  # an int for numbered equations, a str for MIRAS' named displays ("FTRL-VP")


@dataclass(frozen=True)
class Equation:
    """One numbered (or named) display of a pinned paper version."""

    paper: str
    number: EquationId
    name: str
    section: str
    kind: str
    latex: str
    confidence: str
    na: str | None = None  # why the project does not implement it, if it decided so

    @property
    def key(self) -> tuple[str, EquationId]:
        return (self.paper, self.number)

    @property
    def label(self) -> str:
        return f"{PAPER_TITLES[self.paper][0]} Eq. {self.number}"


PAPER_TITLES: dict[str, tuple[str, str]] = {
    "titans": ("Titans", "Titans: Learning to Memorize at Test Time"),
    "miras": ("MIRAS", "It's All Connected: A Journey Through Test-Time Memorization, ..."),
    "nl": ("NL", "Nested Learning: The Illusion of Deep Learning Architectures"),
}


def normalise_number(number: EquationId) -> EquationId:
    """Equation numbers are ints; named displays (``"FTRL-VP"``) stay strings; ``"13"`` becomes 13."""
    if isinstance(number, bool):
        raise TypeError(f"equation number must be an int or a name, got {number!r}")
    if isinstance(number, int):
        return number
    if isinstance(number, str):
        return int(number) if number.isdigit() else number
    raise TypeError(f"equation number must be an int or a name, got {type(number).__name__}")


@cache
def paper_meta(paper: str) -> dict:
    """Header of a paper's registry file: title, arXiv id with pinned version, equation count."""
    return {k: v for k, v in _load_raw(paper).items() if k != "equations"}


@cache
def _load_raw(paper: str) -> dict:
    if paper not in PAPERS:
        raise ValueError(f"paper must be one of {PAPERS}, got {paper!r}")
    text = resources.files("neural_memory.registry").joinpath("data", f"{paper}.json").read_text("utf-8")
    return json.loads(text)


@cache
def load_registry() -> dict[tuple[str, EquationId], Equation]:
    """All equations of all papers, keyed by ``(paper, number)``, in paper order."""
    registry: dict[tuple[str, EquationId], Equation] = {}
    for paper in PAPERS:
        for row in _load_raw(paper)["equations"]:
            eq = Equation(paper=paper, **{**row, "number": normalise_number(row["number"])})
            registry[eq.key] = eq
    return registry


# ---------------------------------------------------------------------------------------------------
# Claims made by code
# ---------------------------------------------------------------------------------------------------

_IMPLEMENTATIONS: dict[tuple[str, EquationId], list[str]] = {}
_CLAIMED_OBJECTS: dict[str, object] = {}  # "module:qualname" -> the decorated function or class

T = TypeVar("T", bound=Callable)


def implements(paper: str, *numbers: EquationId) -> Callable[[T], T]:
    """Declare that the decorated function or class computes these equations of ``paper``.

    This is the single mechanism the registry reads: ``neural-memory equations`` imports every module of
    the package and collects these claims. An unknown paper raises at import time; an equation number the
    registry does not know is reported by ``neural-memory equations --check``.

    Example::

        @implements("titans", 13, 14)
        def forgetting_update(...): ...
    """
    if paper not in PAPERS:
        raise ValueError(f"paper must be one of {PAPERS}, got {paper!r}")
    if not numbers:
        raise ValueError("implements() needs at least one equation number")
    keys = [(paper, normalise_number(n)) for n in numbers]

    def decorate(obj: T) -> T:
        where = f"{obj.__module__}:{obj.__qualname__}"
        _CLAIMED_OBJECTS[where] = obj
        for key in keys:
            claimed = _IMPLEMENTATIONS.setdefault(key, [])
            if where not in claimed:
                claimed.append(where)
        obj.__equations__ = (*getattr(obj, "__equations__", ()), *keys)  # type: ignore[attr-defined]
        return obj

    return decorate


def discover_implementations() -> dict[tuple[str, EquationId], list[str]]:
    """Import every module of the package and return all :func:`implements` claims.

    The registry package itself claims nothing and is skipped (its pytest plugin needs pytest, a dev
    dependency).
    """
    import neural_memory

    for info in pkgutil.walk_packages(neural_memory.__path__, prefix="neural_memory."):
        if info.name.split(".")[-1] == "__main__" or info.name.startswith(f"{__name__}."):
            continue
        importlib.import_module(info.name)
    return {key: list(where) for key, where in _IMPLEMENTATIONS.items()}


def claimed_object(where: str) -> object | None:
    """The function or class an :func:`implements` claim ``"module:qualname"`` decorated, if imported."""
    return _CLAIMED_OBJECTS.get(where)
