"""Nested Learning (arXiv 2512.24695v1).

* :mod:`neural_memory.nl.associative_memory` — Definition 1 / NSAM: inner objectives over (keys, values),
  one GD step or the exact proximal step on them, and their minimisers (Eq. 6, 19–20, 98–99).
* :mod:`neural_memory.nl.optimizers` — optimizers as instances: momentum, preconditioned momentum, Muon and
  Newton–Schulz, Appendix B's element-wise and matrix momentum (GD with momentum, Adam, AdaGrad), M3
  (Algorithm 1) and Delta Gradient Descent with Appendix C's derivation.
* :mod:`neural_memory.nl.learning_rules` — the sequence-model rules of §5 as memories: attention as
  Nadaraya–Watson regression, Hebbian, delta, Oja and Omega rules, AdaTransformer (Eq. 21, 61–69).

The Continuum Memory System and Hope are not here yet.
"""
