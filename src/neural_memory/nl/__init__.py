"""Nested Learning (arXiv 2512.24695v1).

* :mod:`neural_memory.nl.associative_memory` — Definition 1 / NSAM: inner objectives over (keys, values),
  one GD step or the exact proximal step on them, and their minimisers (Eq. 6, 19–20, 98–99).
* :mod:`neural_memory.nl.optimizers` — optimizers as instances: momentum, preconditioned momentum, Muon and
  Newton–Schulz, Appendix B's element-wise and matrix momentum (GD with momentum, Adam, AdaGrad), M3
  (Algorithm 1) and Delta Gradient Descent with Appendix C's derivation.
* :mod:`neural_memory.nl.cms` — the Continuum Memory System: MLP levels updated every C^(l) tokens by their
  summed error signal, Sequential, Nested and Independent (Eq. 70–74).

Hope is not here yet.
"""

from neural_memory.nl.cms import (
    CMSState,
    ContinuumMemory,
    cms_chain,
    cms_independent,
    continuum_memory_reference,
)

__all__ = ["CMSState", "ContinuumMemory", "cms_chain", "cms_independent", "continuum_memory_reference"]
