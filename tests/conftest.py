"""Test configuration shared by the whole suite.

Tests declare the equations they verify with ``@pytest.mark.equation(paper, number)`` on the test function
(never on a module or class). The plugin below records, in every run, which marked tests passed and
executed the code that claims their equation; a run of the whole suite writes that to
``src/neural_memory/registry/data/status.json``, which ``neural-memory equations`` reads.
"""

import os

import torch
from hypothesis import settings

pytest_plugins = ["neural_memory.registry.pytest_plugin"]

# Deterministic, CI-sized hypothesis runs; `HYPOTHESIS_PROFILE=thorough pytest` for a longer search.
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True)
settings.register_profile("thorough", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# pytest-xdist runs one worker per core: one thread each avoids oversubscribing the 2-core CI box.
torch.set_num_threads(1)
