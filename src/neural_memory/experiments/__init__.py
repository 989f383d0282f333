"""The experiments of ``neural-memory experiment`` / ``reproduce``: one module per experiment.

:data:`EXPERIMENTS` lists every experiment in the order ``reproduce`` runs them; :data:`PLANNED` lists the
experiments of the reproduction plan that do not exist yet (the report shows them as not tested).
"""

from __future__ import annotations

import importlib

# name -> module (each defines EXPERIMENT); the order is the order of `reproduce`
MODULES: dict[str, str] = {
    "titans-ablation": "neural_memory.experiments.titans_ablation",
    "memory-depth": "neural_memory.experiments.memory_depth",
    "recall": "neural_memory.experiments.recall",
    "miras-variants": "neural_memory.experiments.miras_variants",
    "lm": "neural_memory.experiments.lm",
    "needle": "neural_memory.experiments.needle",
    "babilong": "neural_memory.experiments.babilong",
    "scaling": "neural_memory.experiments.scaling",
    "optimizers": "neural_memory.experiments.optimizers",
}

# experiments of the reproduction plan (issue 12) that are not implemented yet; their claims are in
# neural_memory.experiments.report.PLANNED_CLAIMS and the report lists them as not tested
PLANNED: tuple[str, ...] = ()


def experiment_names() -> list[str]:
    return list(MODULES)


def get_experiment(name: str):
    """The :class:`~neural_memory.experiments.base.Experiment` called ``name``."""
    if name not in MODULES:
        raise ValueError(f"unknown experiment {name!r}; choose from {', '.join(MODULES)}")
    return importlib.import_module(MODULES[name]).EXPERIMENT


__all__ = ["MODULES", "PLANNED", "experiment_names", "get_experiment"]
