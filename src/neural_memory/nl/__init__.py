"""Nested Learning (arXiv 2512.24695v1).

Nothing here yet: the Nested Learning issue adds the M3 optimizer, Delta Gradient Descent, the Continuum
Memory System and Hope. ``neural-memory equations --paper nl`` lists every NL equation as ``missing`` until
then.
"""
