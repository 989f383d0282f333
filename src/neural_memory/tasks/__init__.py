"""Generated data for the experiments: natural-looking text and long-context tasks, no download.

Every generator is a deterministic function of its seed, and every task sample carries its answer so a test
can check it.
"""

from neural_memory.tasks.sentences import SentenceGenerator, generate_text

__all__ = ["SentenceGenerator", "generate_text"]
