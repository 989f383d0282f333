"""``needle``: single needle in a haystack in the three RULER S-NIAH forms (mirrors Titans v1 Table 2).

Each kind trains on needle samples of all three forms (:mod:`neural_memory.tasks.needle`) at one prompt
length, with the loss on the answer bytes only, using the project's optimizer, schedule and update step
(:mod:`neural_memory.training`); it is then scored at growing prompt lengths (the longest ones beyond the
training length, as Titans trains at 4K and tests up to 16K). A sample counts as right when every answer byte
is the most likely next byte (greedy exact match); accuracies carry Wilson 95 % intervals over the samples.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from neural_memory.experiments import lm
from neural_memory.experiments.base import (
    Claim,
    Context,
    Experiment,
    _atomic_write,
    compared_claim,
    run_name,
    train_config,
)
from neural_memory.experiments.paper_claims import TITANS_TABLE2_NIAH
from neural_memory.experiments.plots import lines_with_ci
from neural_memory.experiments.stats import wilson_interval
from neural_memory.tasks.needle import FORMS, needle_sample

KINDS = ["transformer", "titans-lmm", "titans-mac", "titans-mag", "titans-mal", "hope", "deltanet"]
DIGITS = {"passkey": 5, "number": 5, "uuid": 8}
ANSWER_BYTES = max(len(needle_sample(f, 200, random.Random(0), digits=d).answer) for f, d in DIGITS.items())
EVAL_SEED = 31_415


def needle_batch(forms_rng: random.Random, n: int, context_len: int, forms=FORMS):
    """A :class:`~neural_memory.data.Batch` of ``n`` samples (forms cycling), mask on the answer bytes.

    Every row is ``prompt + answer`` padded with ``.`` to ``context_len + ANSWER_BYTES + 1`` bytes.
    """
    import torch

    from neural_memory.data import Batch

    total = context_len + ANSWER_BYTES + 1
    rows, mask = [], torch.zeros(n, total - 1, dtype=torch.bool)
    for i in range(n):
        form = forms[i % len(forms)]
        sample = needle_sample(form, context_len, forms_rng, digits=DIGITS[form])
        rows.append(list((sample.prompt + sample.answer).ljust(total, ".").encode("ascii")))
        # target t is byte t + 1: the answer bytes are targets context_len - 1 .. context_len + len - 2
        mask[i, context_len - 1 : context_len - 1 + len(sample.answer)] = True
    seq = torch.tensor(rows, dtype=torch.long)
    return Batch(seq[:, :-1], seq[:, 1:], mask)


def exact_matches(model, batch) -> int:
    """Samples whose every masked target is the argmax prediction."""
    import torch

    with torch.no_grad():
        logits, _ = model(batch.inputs)
    wrong = (logits.argmax(-1) != batch.targets) & batch.loss_mask
    return int((~wrong.any(dim=1)).sum())


def train_needle(ctx: Context, config) -> dict[str, Any]:
    """Train ``config.kind`` on needle samples (cached in ``OUT/runs``) and score it at every length."""
    from neural_memory.training import build_model, lr_at, make_optimizer, train_step

    run_dir = ctx.runs_dir / f"needle-{run_name(config)}"
    record_path = run_dir / "result.json"
    if record_path.is_file():
        record = json.loads(record_path.read_text("utf-8"))
        if record.get("config") == config.to_dict():
            return record
    model = build_model(config)
    optimizer = make_optimizer(model, config)
    rng = random.Random(config.seed)
    started = time.perf_counter()
    for step in range(config.steps):
        batch = needle_batch(rng, config.batch_size, config.seq_len)
        train_step(model, optimizer, batch, lr_at(step, config), config.grad_clip)
    seconds = time.perf_counter() - started
    model.eval()
    accuracy = {}
    for form in FORMS:
        for length in ctx.scale.needle_lengths:
            batch = needle_batch(random.Random(EVAL_SEED + length), ctx.scale.needle_samples, length, (form,))
            accuracy[f"{form}@{length}"] = {
                "hits": exact_matches(model, batch),
                "n": ctx.scale.needle_samples,
            }
    record = {
        "config": config.to_dict(),
        "params": sum(p.numel() for p in model.parameters()),
        "metrics": {"accuracy": accuracy},
        "timings": {"train_seconds": seconds},
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(record_path, json.dumps(record, indent=1))
    if ctx.on_run_done is not None:
        ctx.on_run_done(run_dir.name)
    return record


def run(ctx: Context) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from neural_memory.models.registry import available_kinds

    present = available_kinds()
    kinds = [k for k in KINDS if k in present]
    jobs = [(kind, seed) for kind in kinds for seed in ctx.seeds]
    variants: dict[str, dict[str, Any]] = {kind: {"kind": kind, "runs": []} for kind in kinds}
    disable = None if ctx.progress is None else not ctx.progress
    with tqdm(total=len(jobs), desc="needle", unit="run", disable=disable, leave=False) as bar:
        for kind, seed in jobs:
            bar.set_postfix_str(f"{kind} seed {seed}", refresh=True)
            config = train_config(ctx, kind, seed, seq_len=ctx.scale.needle_train_len + ANSWER_BYTES)
            variants[kind]["runs"].append(train_needle(ctx, config))
            bar.update(1)
    return {
        "forms": list(FORMS),
        "lengths": list(ctx.scale.needle_lengths),
        "variants": variants,
        "missing_kinds": [k for k in KINDS if k not in present],
    }


def accuracy(results: dict[str, Any], kind: str, form: str, length: int):
    runs = results["variants"][kind]["runs"]
    cells = [r["metrics"]["accuracy"][f"{form}@{length}"] for r in runs]
    return wilson_interval(sum(c["hits"] for c in cells), sum(c["n"] for c in cells))


FORM_COLUMN = {"passkey": 3, "number": 7, "uuid": 11}  # 16K column of each form in TITANS_TABLE2_NIAH


def claims(results: dict[str, Any]) -> list[Claim]:
    longest = results["lengths"][-1]
    rows = []
    for form in FORMS:
        for a, b, names in (
            ("titans-lmm", "deltanet", ("Titans (LMM)", "DeltaNet")),
            ("titans-mac", "deltanet", ("Titans (MAC)", "DeltaNet")),
        ):
            claim = f"{names[0]} finds the {form} needle at the longest context better than {names[1]}"
            reference = "Titans Table 2 (S-NIAH, 16K)"
            col = FORM_COLUMN[form]
            paper = f"{TITANS_TABLE2_NIAH[names[0]][col]} vs {TITANS_TABLE2_NIAH[names[1]][col]} %"
            if a not in results["variants"] or b not in results["variants"]:
                rows.append(Claim(claim, reference, paper, "(not implemented)", lm.MODEL_NOT_IMPLEMENTED))
                continue
            ia, ib = accuracy(results, a, form, longest), accuracy(results, b, form, longest)
            measured = f"accuracy at {longest} bytes: {ia.text()} vs {ib.text()}"
            rows.append(compared_claim(claim, reference, paper, measured, ia, ib, "higher"))
    return rows


def table(results: dict[str, Any]) -> list[list[str]]:
    columns = [(f, n) for f in results["forms"] for n in results["lengths"]]
    header = ["kind", *[f"{f} {n}" for f, n in columns]]
    rows = [[k, *[accuracy(results, k, f, n).text(2) for f, n in columns]] for k in results["variants"]]
    rows += [[k, *["not implemented"] * len(columns)] for k in results["missing_kinds"]]
    return [header, *rows]


def plot(results: dict[str, Any], path: Path) -> None:
    panels = {
        f"S-NIAH {form}": {
            kind: [accuracy(results, kind, form, n) for n in results["lengths"]]
            for kind in results["variants"]
        }
        for form in results["forms"]
    }
    lines_with_ci(
        results["lengths"],
        {},
        xlabel="prompt bytes",
        ylabel="exact-match accuracy",
        title="",
        path=path,
        panels=panels,
    )


EXPERIMENT = Experiment(
    name="needle",
    mirrors="Titans Table 2 (RULER S-NIAH)",
    description=(
        "Single needle in a haystack (pass key in noise, number and UUID-like code in natural text): "
        "exact-match accuracy vs prompt length, Wilson 95 % intervals."
    ),
    run=run,
    claims=claims,
    table=table,
    plot=plot,
)
