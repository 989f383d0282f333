"""pytest plugin: write every test's ``equation`` markers to a JSON file, during ``--collect-only``.

Used by :func:`neural_memory.registry.report.collect_test_map`, which runs
``python -m pytest --collect-only -p neural_memory.registry._pytest_collect --equation-map-out FILE TESTS``
in a subprocess (a fresh interpreter, so it also works while pytest itself is running our tests).

The file holds::

    {"items": [{"nodeid": "tests/x.py::test_y", "equations": [["titans", 13], ...]}, ...],
     "errors": [{"nodeid": "tests/broken.py", "message": "..."}]}

Equation numbers are written as given (int, or str for named displays); the caller validates them.
Markers are read per test item, so a parametrised case counts only for the equations it names; the cases
of one test function are then listed under its node id without the parameters.

The plugin also loads :mod:`neural_memory.registry.pytest_plugin`, which turns an equation marker on a
module or class into a collection error (listed here under ``errors``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported by discover_implementations(); pytest is only a dev dependency
    import pytest

pytest_plugins = ["neural_memory.registry.pytest_plugin"]

_ITEMS: list[dict] = []
_ERRORS: list[dict] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--equation-map-out", default=None, help="write the equation-marker map (JSON) here")


def pytest_configure(config: pytest.Config) -> None:
    # A tests folder outside the repository has no pyproject.toml registering the marker.
    config.addinivalue_line("markers", "equation(paper, number): the test verifies this equation")


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        message = str(report.longrepr).strip().splitlines()
        _ERRORS.append({"nodeid": report.nodeid, "message": message[-1] if message else "collection failed"})


def _function_nodeid(item: pytest.Item) -> str:
    nodeid = item.nodeid
    base, sep, name = nodeid.rpartition("::")
    if sep and "[" in name and name.endswith("]"):
        return f"{base}::{name[: name.index('[')]}"
    return nodeid


def pytest_collection_finish(session: pytest.Session) -> None:
    seen: dict[str, list] = {}
    for item in session.items:
        equations = [_marker_equation(marker) for marker in item.iter_markers("equation")]
        if not equations:
            continue
        cited = seen.setdefault(_function_nodeid(item), [])
        cited.extend(eq for eq in equations if eq not in cited)
    _ITEMS.extend({"nodeid": nodeid, "equations": eqs} for nodeid, eqs in seen.items())


def _marker_equation(marker: pytest.Mark) -> list:
    """``[paper, number]``; a malformed marker is kept (as text) so that ``--check`` reports it."""
    if len(marker.args) != 2:
        return ["<malformed>", repr(marker.args)]
    paper, number = marker.args
    if not isinstance(number, int | str) or isinstance(number, bool):
        number = repr(number)
    return [str(paper), number]


def pytest_unconfigure(config: pytest.Config) -> None:
    out = config.getoption("--equation-map-out", default=None)
    if out:
        Path(out).write_text(json.dumps({"items": _ITEMS, "errors": _ERRORS}), "utf-8")
