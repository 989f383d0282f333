"""neural-memory: Titans, MIRAS and Nested Learning, equation by equation.

Every object that computes a numbered equation of one of the three papers is tagged with
:func:`neural_memory.registry.implements`; ``neural-memory equations`` prints the resulting
table of contents of the papers (what is implemented where, and which tests prove it).
"""

from neural_memory.registry import implements

__all__ = ["__version__", "implements"]
__version__ = "0.1.0"
