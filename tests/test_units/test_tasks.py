"""Generated data of the experiments (neural_memory.tasks): deterministic under a seed, checkable."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from neural_memory.experiments.needle import DIGITS, needle_batch
from neural_memory.tasks.babilong import PEOPLE, fact_sample, fact_sentence, question
from neural_memory.tasks.needle import FORMS, NOISE, needle_sample
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


@given(st.integers(1, 3000), st.integers(0, 2**16))
def test_generated_text_has_exactly_the_requested_length_and_is_ascii(n_chars, seed):
    text = generate_text(n_chars, seed=seed)
    assert len(text) == n_chars
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


# ---- needle in a haystack --------------------------------------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
def test_needle_sample_is_a_pure_function_of_the_rng_state(form):
    first = needle_sample(form, 300, random.Random(11))
    assert first == needle_sample(form, 300, random.Random(11))
    assert first != needle_sample(form, 300, random.Random(12))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("context_len", [90, 257, 1000])
def test_needle_prompt_has_the_length_and_its_answer_sits_in_the_needle_only(form, context_len):
    rng = random.Random(context_len)
    for _ in range(20):
        sample = needle_sample(form, context_len, rng)
        assert len(sample.prompt) == context_len and sample.prompt.isascii()
        lead = sample.prompt[sample.prompt.rindex(" The ") :]  # the query is the prompt's last clause
        needle_at = sample.prompt.index(lead)
        assert needle_at == sample.needle_start  # the same lead-in opens the needle, earlier
        assert sample.prompt[needle_at + len(lead) :].startswith(sample.answer + ". ")
        assert sample.prompt.count(sample.answer) == 1


def test_needle_answers_have_the_documented_alphabets():
    rng = random.Random(0)
    assert re.fullmatch(r"[0-9]{7}", needle_sample("passkey", 200, rng, digits=7).answer)
    assert re.fullmatch(r"[0-9]{5}", needle_sample("number", 200, rng).answer)
    assert re.fullmatch(r"[0-9a-f]{4}-[0-9a-f]{4}", needle_sample("uuid", 200, rng, digits=8).answer)
    assert NOISE in needle_sample("passkey", 400, rng).prompt


def test_needle_batch_masks_exactly_the_answer_bytes():
    batch = needle_batch(random.Random(5), 6, 120)
    replay = random.Random(5)
    for i in range(6):
        form = FORMS[i % len(FORMS)]
        answer = needle_sample(form, 120, replay, digits=DIGITS[form]).answer
        assert bytes(batch.targets[i][batch.loss_mask[i]].tolist()).decode() == answer
        assert bytes(batch.inputs[i, :120].tolist()).decode().endswith(" is ")


def test_needle_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="form must be one of passkey, number, uuid"):
        needle_sample("essay", 200, random.Random(0))
    with pytest.raises(ValueError, match="context_len must be >= "):
        needle_sample("number", 20, random.Random(0))
    with pytest.raises(ValueError, match="digits must be an int >= 2"):
        needle_sample("passkey", 200, random.Random(0), digits=1)


# ---- bAbI-style facts in distractor text ---------------------------------------------------------------

FACT = re.compile(r" (\w+) moved to the (\w+)\. ")


@pytest.mark.parametrize("context_len", [130, 300, 900])
def test_fact_sample_answer_is_the_last_place_of_the_asked_person_read_back_from_the_prompt(context_len):
    rng = random.Random(context_len)
    for _ in range(30):
        sample = fact_sample(context_len, rng)
        assert len(sample.prompt) == context_len and sample.prompt.isascii()
        assert sample.prompt.endswith(question(sample.person))
        # recompute the answer from the text alone: the facts in order, then the newest about the person
        facts = FACT.findall(sample.prompt)
        assert tuple(facts) == sample.facts
        assert [place for person, place in facts if person == sample.person][-1] == sample.answer


def test_distractors_never_mention_the_cast_or_the_fact_verb():
    sample = fact_sample(5000, random.Random(2), n_facts=1)
    body = sample.prompt.replace(fact_sentence(*sample.facts[0]), " ", 1)[: -len(question(sample.person))]
    assert "moved to" not in body
    assert not any(re.search(rf"\b{name}\b", body) for name in PEOPLE)


def test_fact_sample_is_a_pure_function_of_the_rng_state():
    assert fact_sample(400, random.Random(9)) == fact_sample(400, random.Random(9))
    assert fact_sample(400, random.Random(9)) != fact_sample(400, random.Random(10))


def test_fact_sample_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="context_len must be >= "):
        fact_sample(40, random.Random(0))
    with pytest.raises(ValueError, match="n_facts must be an int >= 1"):
        fact_sample(400, random.Random(0), n_facts=0)
    with pytest.raises(ValueError, match="names must be a non-empty tuple"):
        SentenceGenerator(0, names=())
