"""Generated data of the experiments (neural_memory.tasks): deterministic under a seed, checkable."""

from __future__ import annotations

import re

import pytest

from neural_memory.tasks.sentences import (
    ADJECTIVES,
    NAMES,
    NOUNS,
    PLACES,
    TEMPLATES,
    TIMES,
    VERBS,
    SentenceGenerator,
    generate_text,
)


def test_generated_text_is_a_pure_function_of_length_and_seed():
    assert generate_text(5000, seed=3) == generate_text(5000, seed=3)
    assert generate_text(5000, seed=3) != generate_text(5000, seed=4)


def test_generated_text_has_exactly_the_requested_length_and_is_ascii():
    text = generate_text(1234, seed=0)
    assert len(text) == 1234
    assert text.isascii()


def test_every_word_of_the_generated_text_comes_from_the_embedded_vocabulary():
    template_words = {w for t in TEMPLATES for w in re.findall(r"[A-Za-z]+", re.sub(r"\{\w+\}", " ", t))}
    vocabulary = {
        w.lower()
        for group in (NAMES, NOUNS, ADJECTIVES, VERBS, PLACES, TIMES)
        for p in group
        for w in p.split()
    }
    vocabulary |= {w.lower() for w in template_words}
    words = re.findall(r"[A-Za-z]+", generate_text(20_000, seed=1))[:-1]  # the last word may be cut
    assert {w.lower() for w in words} <= vocabulary


def test_sentences_start_with_a_capital_and_end_with_a_full_stop():
    generator = SentenceGenerator(seed=7)
    for _ in range(50):
        sentence = generator.sentence()
        assert sentence[0].isupper() and sentence.endswith(".")


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="n_chars must be an int >= 1"):
        generate_text(0)
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        SentenceGenerator(seed=-1)
