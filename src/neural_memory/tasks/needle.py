"""Single needle in a haystack, the three RULER S-NIAH forms, generated offline (Titans v1 Table 2).

* ``passkey`` (S-NIAH-1): a pass key hidden in repeated noise ("The grass is green. The sky is blue. ...").
* ``number`` (S-NIAH-2): a number for a key word hidden in natural text (the project's sentences).
* ``uuid`` (S-NIAH-3): a UUID-like hex string for a key word hidden in natural text.

A sample is ``haystack-with-needle + query`` (exactly ``context_len`` bytes) followed by the answer; the
query repeats the needle's lead-in, so the model must copy what followed it from far back. The answer is
stored with the sample, so a test can check it (it appears in the prompt exactly once, inside the needle).
Compact phrasings keep the prompt short enough for byte-level models at small context lengths.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from neural_memory.common.validation import check_int
from neural_memory.tasks.sentences import NOUNS, SentenceGenerator

FORMS = ("passkey", "number", "uuid")
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
HEX = "0123456789abcdef"


@dataclass(frozen=True)
class NeedleSample:
    """One sample: ``prompt`` (``context_len`` ASCII characters) and the ``answer`` that follows it."""

    form: str
    prompt: str
    answer: str
    needle_start: int  # index of the needle in the prompt


def _needle_and_query(form: str, rng: random.Random, digits: int) -> tuple[str, str, str]:
    """(needle sentence, query lead-in, answer) of one sample."""
    if form == "passkey":
        answer = "".join(rng.choice("0123456789") for _ in range(digits))
        return f" The pass key is {answer}. ", " The pass key is ", answer
    key = rng.choice(NOUNS)
    if form == "number":
        answer = "".join(rng.choice("0123456789") for _ in range(digits))
        lead = f" The {key} number is "
    else:
        half = max(1, digits // 2)
        answer = (
            "".join(rng.choice(HEX) for _ in range(half))
            + "-"
            + "".join(rng.choice(HEX) for _ in range(half))
        )
        lead = f" The {key} code is "
    return f"{lead}{answer}. ", lead, answer


def _haystack(form: str, rng: random.Random, n_chars: int) -> str:
    if form == "passkey":
        return (NOISE * (n_chars // len(NOISE) + 1))[:n_chars]
    return SentenceGenerator(rng.randrange(2**31)).text(n_chars) if n_chars > 0 else ""


def needle_sample(form: str, context_len: int, rng: random.Random, *, digits: int = 5) -> NeedleSample:
    """A sample of ``form`` whose prompt is ``context_len`` characters, the needle at a uniform depth.

    Args:
        form: one of :data:`FORMS`.
        context_len: prompt length in bytes; must hold the needle and the query.
        rng: the source of randomness (the same state gives the same sample).
        digits: digits of the pass key / number; hex digits of the code (two halves).
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {', '.join(FORMS)}, got {form!r}")
    check_int("context_len", context_len, 1)
    check_int("digits", digits, 2)
    needle, query, answer = _needle_and_query(form, rng, digits)
    filler = context_len - len(needle) - len(query)
    if filler < 0:
        raise ValueError(
            f"context_len must be >= {len(needle) + len(query)} to hold the {form} needle and query, "
            f"got {context_len}"
        )
    hay = _haystack(form, rng, filler)
    cut = rng.randint(0, filler)
    prompt = hay[:cut] + needle + hay[cut:] + query
    # a haystack made of the same words could contain the answer by chance; needles are rare enough
    return NeedleSample(form, prompt, answer, cut)


__all__ = ["FORMS", "NOISE", "NeedleSample", "needle_sample"]
