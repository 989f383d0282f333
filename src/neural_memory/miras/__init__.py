"""MIRAS — It's All Connected (arXiv 2504.13173v1).

Nothing here yet: the MIRAS issue adds attentional biases (l_p, Huber, KL), retention gates and the
Moneta / Yaad / Memora models *on top of* :mod:`neural_memory.titans.memory` (a MIRAS memory with l2 bias,
weight-decay retention and momentum is the Titans memory). ``neural-memory equations --paper miras``
lists every MIRAS equation as ``missing`` until then.
"""
