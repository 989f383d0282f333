"""Titans — Learning to Memorize at Test Time (arXiv 2501.00663v1).

``NeuralMemory`` is the long-term memory (§3); the architectures MAC, MAG and MAL (§4) build on it.
"""

from neural_memory.titans.memory import NeuralMemory
from neural_memory.titans.state import MemoryState

__all__ = ["MemoryState", "NeuralMemory"]
