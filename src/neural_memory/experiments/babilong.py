"""``babilong``: bAbI-style facts hidden in distractor text, the question at the end; accuracy vs length
(mirrors the BABILong column of Titans v1 Table 5 and, qualitatively, Titans Fig. 6).

Each kind trains on :mod:`neural_memory.tasks.babilong` samples at one prompt length (loss on the answer
bytes only, the project's optimizer and schedule) and is scored at growing lengths: a sample is right when
every byte of the place is the most likely next byte. Wilson 95 % intervals over the samples.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Any

from neural_memory.experiments import lm
from neural_memory.experiments.base import Claim, Context, Experiment, compared_claim, train_config
from neural_memory.experiments.needle import answer_batch, kind_answer_runs, train_answer_task
from neural_memory.experiments.paper_claims import TITANS_TABLE5
from neural_memory.experiments.plots import lines_with_ci
from neural_memory.experiments.stats import wilson_interval
from neural_memory.tasks.babilong import fact_sample
from neural_memory.tasks.sentences import PLACES

KINDS = ["transformer", "titans-lmm", "titans-mac", "titans-mag", "titans-mal", "hope", "deltanet"]
ANSWER_BYTES = max(len(p) for p in PLACES)
EVAL_SEED = 27_182
N_FACTS = 2  # two facts fit the shortest prompts (100 bytes); about the same person 1 time in 4


def fact_batch(rng: random.Random, n: int, context_len: int):
    samples = [fact_sample(context_len, rng, n_facts=N_FACTS) for _ in range(n)]
    return answer_batch([(s.prompt, s.answer) for s in samples], context_len, ANSWER_BYTES)


def train_babilong(ctx: Context, kind: str, seed: int) -> dict[str, Any]:
    s = ctx.scale
    config = train_config(ctx, kind, seed, seq_len=s.needle_train_len + ANSWER_BYTES)
    evals = {
        str(n): (lambda n=n: fact_batch(random.Random(EVAL_SEED + n), s.needle_samples, n))
        for n in s.needle_lengths
    }
    return train_answer_task(
        ctx, "babilong", config, lambda rng: fact_batch(rng, config.batch_size, s.needle_train_len), evals
    )


def run(ctx: Context) -> dict[str, Any]:
    return {
        "lengths": list(ctx.scale.needle_lengths),
        **kind_answer_runs(ctx, "babilong", KINDS, train_babilong),
    }


def accuracy(results: dict[str, Any], kind: str, length: int):
    runs = results["variants"][kind]["runs"]
    cells = [r["metrics"]["accuracy"][str(length)] for r in runs]
    interval = wilson_interval(sum(c["hits"] for c in cells), sum(c["n"] for c in cells))
    return replace(interval, method=f"{len(runs)} seed(s), {interval.method} over samples")


def claims(results: dict[str, Any]) -> list[Claim]:
    longest = results["lengths"][-1]
    rows = []
    for kind, name in (
        ("titans-mac", "+Attn (MAC)"),
        ("titans-mag", "+Attn (MAG)"),
        ("titans-mal", "+Attn (MAL)"),
    ):
        claim = f"adding attention helps on long facts: {name[7:-1]} answers better than the LMM alone"
        reference = "Titans Table 5 (long context = BABILong)"
        paper = f"accuracy {TITANS_TABLE5[name][2]} vs {TITANS_TABLE5['LMM'][2]} %"
        if kind not in results["variants"] or "titans-lmm" not in results["variants"]:
            rows.append(Claim(claim, reference, paper, "(not implemented)", lm.MODEL_NOT_IMPLEMENTED))
            continue
        a, b = accuracy(results, kind, longest), accuracy(results, "titans-lmm", longest)
        measured = f"accuracy at {longest} bytes: {a.text()} vs {b.text()}"
        rows.append(compared_claim(claim, reference, paper, measured, a, b, "higher"))
    return rows


def table(results: dict[str, Any]) -> list[list[str]]:
    header = ["kind", *[f"{n} bytes" for n in results["lengths"]]]
    rows = [[k, *[accuracy(results, k, n).text(2) for n in results["lengths"]]] for k in results["variants"]]
    rows += [[k, *["not implemented"] * len(results["lengths"])] for k in results["missing_kinds"]]
    return [header, *rows]


def plot(results: dict[str, Any], path: Path) -> None:
    series = {k: [accuracy(results, k, n) for n in results["lengths"]] for k in results["variants"]}
    lines_with_ci(
        results["lengths"],
        series,
        xlabel="prompt bytes",
        ylabel="exact-match accuracy",
        title="bAbI facts in distractor text",
        path=path,
    )


EXPERIMENT = Experiment(
    name="babilong",
    mirrors="Titans Table 5 (BABILong column) and Fig. 6",
    description="bAbI-style facts in distractor text, question at the end: accuracy vs prompt length.",
    run=run,
    claims=claims,
    table=table,
    plot=plot,
)
