"""Assembled language models: one :class:`LanguageModel` around any registered sequence mixer.

>>> from neural_memory.models import available_kinds, build_lm
>>> model = build_lm("transformer", vocab_size=256, dim=64, depth=2)

The mixer protocol and the model layout are documented in :mod:`neural_memory.models.lm`; kinds and how a
provider registers them in :mod:`neural_memory.models.registry` (providers are imported on first use).
"""

from neural_memory.models.lm import LanguageModel, LMState, count_parameters, generate, lm_loss
from neural_memory.models.registry import PROVIDER_MODULES, available_kinds, build_lm, register_kind

__all__ = [
    "PROVIDER_MODULES",
    "LMState",
    "LanguageModel",
    "available_kinds",
    "build_lm",
    "count_parameters",
    "generate",
    "lm_loss",
    "register_kind",
]
