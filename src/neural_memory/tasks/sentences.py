"""A deterministic generator of simple English sentences over a small embedded vocabulary.

It is the project's own "natural text" (no download): the ``lm`` experiment trains on it when no ``--text``
is given, and the long-context tasks hide their needles and facts in it. The grammar is a handful of
templates (subject, verb, object, place, time); the words are common English words typed into this module.
"""

from __future__ import annotations

import random

from neural_memory.common.validation import check_int

NAMES = ("Mary", "John", "Sandra", "Daniel", "Anna", "Peter", "Lucy", "Tom", "Emma", "Jack", "Clara", "Sam")
NOUNS = (
    "dog", "cat", "bird", "horse", "farmer", "teacher", "child", "sailor", "baker", "river", "garden",
    "letter", "book", "song", "storm", "lamp", "boat", "apple", "window", "forest",
)  # fmt: skip
ADJECTIVES = (
    "old", "young", "quiet", "bright", "small", "tall", "green", "cold", "warm", "happy", "tired", "careful",
)  # fmt: skip
VERBS = ("saw", "found", "carried", "painted", "followed", "helped", "watched", "opened", "cleaned", "heard")
PLACES = (
    "kitchen",
    "garden",
    "hallway",
    "bathroom",
    "office",
    "bedroom",
    "market",
    "station",
    "library",
    "park",
)
TIMES = (
    "in the morning",
    "at noon",
    "in the evening",
    "at night",
    "on Sunday",
    "after the rain",
    "before dinner",
)
TEMPLATES = (
    "The {adj} {noun} {verb} the {noun2} {time}.",
    "{name} {verb} a {adj} {noun} near the {place}.",
    "{time_cap}, {name} went to the {place} with the {noun}.",
    "A {adj} {noun} was in the {place}, and {name} {verb} it.",
    "{name} said that the {noun} {verb} the {adj} {noun2}.",
)


class SentenceGenerator:
    """Sentences from :data:`TEMPLATES`, drawn with ``random.Random(seed)`` (the same seed, the same text).

    ``names`` replaces :data:`NAMES` (the long-context tasks keep their cast out of the distractors).
    """

    def __init__(self, seed: int = 0, *, names: tuple[str, ...] = NAMES):
        check_int("seed", seed, 0)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"names must be a non-empty tuple of non-empty strings, got {names!r}")
        self.rng = random.Random(seed)
        self.names = tuple(names)

    def sentence(self) -> str:
        r = self.rng
        time = r.choice(TIMES)
        return r.choice(TEMPLATES).format(
            name=r.choice(self.names),
            noun=r.choice(NOUNS),
            noun2=r.choice(NOUNS),
            adj=r.choice(ADJECTIVES),
            verb=r.choice(VERBS),
            place=r.choice(PLACES),
            time=time,
            time_cap=time[0].upper() + time[1:],
        )

    def text(self, n_chars: int) -> str:
        """At least ``n_chars`` characters of sentences, space-separated, cut to exactly ``n_chars``."""
        check_int("n_chars", n_chars, 1)
        parts = [self.sentence()]
        length = len(parts[0])  # of " ".join(parts)
        while length < n_chars:
            parts.append(self.sentence())
            length += 1 + len(parts[-1])
        return " ".join(parts)[:n_chars]


def generate_text(n_chars: int, seed: int = 0) -> str:
    """``n_chars`` characters of generated English (ASCII), a pure function of ``(n_chars, seed)``."""
    return SentenceGenerator(seed).text(n_chars)


__all__ = [
    "ADJECTIVES",
    "NAMES",
    "NOUNS",
    "PLACES",
    "TEMPLATES",
    "TIMES",
    "VERBS",
    "SentenceGenerator",
    "generate_text",
]
