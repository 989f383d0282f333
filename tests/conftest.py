"""Test configuration shared by the whole suite.

Tests declare the equations they verify with ``@pytest.mark.equation(paper, number)`` on the test function
(never on a module or class). The plugin below records, in every run, which marked tests passed and
executed the code that claims their equation; a run of the whole suite writes that to
``src/neural_memory/registry/data/status.json``, which ``neural-memory equations`` reads.
"""

import json
import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

pytest_plugins = ["neural_memory.registry.pytest_plugin"]

# Deterministic, CI-sized hypothesis runs; `HYPOTHESIS_PROFILE=thorough pytest` for a longer search.
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True)
settings.register_profile("thorough", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# pytest-xdist runs one worker per core: one thread each avoids oversubscribing the 2-core CI box.
torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under mutmut (``python3 dev.py mutate``), run a mutant's tests fastest first.

    mutmut stops at the first failing test (``-x``) and runs a mutant's tests in collection order, so a
    mutant that a 0.1 s test kills may first sit through minutes of slower tests. The durations come
    from mutmut's own timing pass (``mutants/mutmut-stats.json``); outside mutmut nothing changes.
    """
    if os.environ.get("MUTANT_UNDER_TEST", "") in ("", "stats", "fail"):
        return
    stats = Path("mutmut-stats.json")
    if not stats.is_file():
        return
    duration = json.loads(stats.read_text()).get("duration_by_test", {})
    # stable sort: tests of equal (or unknown, counted as slow) duration keep their collection order
    items.sort(key=lambda item: duration.get(item.nodeid, float("inf")))


@pytest.fixture
def checkpoint_calls(monkeypatch):
    """``watch(module)``: the ``check_hidden`` flag of each call the module makes to its
    ``checkpoint_chunks_group`` during the test, in order (the calls still run)."""

    def watch(module) -> list[bool]:
        seen: list[bool] = []
        original = module.checkpoint_chunks_group

        def spy(*args, **kwargs):
            seen.append(kwargs["check_hidden"])
            return original(*args, **kwargs)

        monkeypatch.setattr(module, "checkpoint_chunks_group", spy)
        return seen

    return watch
