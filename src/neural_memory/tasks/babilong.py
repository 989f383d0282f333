"""bAbI-style facts hidden in distractor text, the question at the end (BABILong-style, generated offline).

Like bAbI task 1 (single supporting fact): a few facts "Mary moved to the hallway." are spread, in order,
through the project's generated sentences; the prompt ends with "Where is Mary? Mary is in the " and the
answer is the place of the *last* fact about that person (earlier facts about them are outdated, so the
model must keep the newest one). The distractor sentences never use "moved to" nor the four people's
names, so the facts are the only evidence. The answer is stored with the sample; a test can recompute it
from the prompt.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from neural_memory.common.validation import check_int
from neural_memory.tasks.sentences import NAMES, PLACES, SentenceGenerator

PEOPLE = NAMES[:4]  # Mary, John, Sandra, Daniel: bAbI's cast
DISTRACTOR_NAMES = tuple(n for n in NAMES if n not in PEOPLE)  # the cast never appears in the distractors


@dataclass(frozen=True)
class FactSample:
    """One sample: ``prompt`` (``context_len`` ASCII characters), the ``answer`` place, and the facts."""

    prompt: str
    answer: str
    facts: tuple[tuple[str, str], ...]  # (person, place) in the order they appear
    person: str  # who the question asks about


def fact_sentence(person: str, place: str) -> str:
    return f" {person} moved to the {place}. "


def question(person: str) -> str:
    return f" Where is {person}? {person} is in the "


def fact_sample(context_len: int, rng: random.Random, *, n_facts: int = 3) -> FactSample:
    """A sample with ``n_facts`` facts at uniform positions in ``context_len`` characters of prompt."""
    check_int("context_len", context_len, 1)
    check_int("n_facts", n_facts, 1)
    facts = tuple((rng.choice(PEOPLE), rng.choice(PLACES)) for _ in range(n_facts))
    person = rng.choice([p for p, _ in facts])
    answer = [place for p, place in facts if p == person][-1]
    texts = [fact_sentence(p, place) for p, place in facts]
    filler = context_len - sum(len(t) for t in texts) - len(question(person))
    if filler < 0:
        need = context_len - filler
        raise ValueError(
            f"context_len must be >= {need} to hold {n_facts} facts and the question, got {context_len}"
        )
    hay = SentenceGenerator(rng.randrange(2**31), names=DISTRACTOR_NAMES).text(filler) if filler > 0 else ""
    cuts = sorted(rng.randint(0, filler) for _ in range(n_facts))
    pieces, last = [], 0
    for cut, text in zip(cuts, texts, strict=True):
        pieces += [hay[last:cut], text]
        last = cut
    prompt = "".join([*pieces, hay[last:], question(person)])
    return FactSample(prompt, answer, facts, person)


__all__ = ["DISTRACTOR_NAMES", "PEOPLE", "FactSample", "fact_sample", "fact_sentence", "question"]
