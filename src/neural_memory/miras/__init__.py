"""MIRAS (arXiv 2504.13173v1): a memory is an architecture, an attentional bias, a retention gate and a
learning algorithm.

* :mod:`~neural_memory.miras.attentional_bias` — the inner losses (§5.1, Eq. 10-17);
* :mod:`~neural_memory.miras.retention` — the retention gates (§5.2, Eq. 18-23, Variant 4, Bregman);
* :mod:`~neural_memory.miras.viewpoints` — FTRL and learning-retaining views of online regression (§3);
* :mod:`~neural_memory.miras.framework` — the framework table's recurrences (§4, Eq. 3, 8, 9);
* :mod:`~neural_memory.miras.memory` — the generic memory and the Moneta, Yaad and Memora presets (§5.3-5.4).
"""

from neural_memory.miras.memory import MirasMemory, memora, moneta, yaad

__all__ = ["MirasMemory", "memora", "moneta", "yaad"]
