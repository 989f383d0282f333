"""Generated data for the experiments: natural-looking text and long-context tasks, no download.

Every generator is a deterministic function of its seed, and every task sample carries its answer so a test
can check it.
"""

from neural_memory.tasks.babilong import FactSample, fact_sample
from neural_memory.tasks.needle import FORMS, NeedleSample, needle_sample
from neural_memory.tasks.sentences import SentenceGenerator, generate_text

__all__ = [
    "FORMS",
    "FactSample",
    "NeedleSample",
    "SentenceGenerator",
    "fact_sample",
    "generate_text",
    "needle_sample",
]
