"""What every experiment shares: the scales, the training runs (cached, resumable), evaluation, the JSON.

An experiment is a module of :mod:`neural_memory.experiments` that defines ``EXPERIMENT``, an
:class:`Experiment`: a ``run(ctx) -> results`` function that trains and evaluates with the project's loop
(:func:`neural_memory.training.train`), a ``claims(results) -> list[Claim]`` function that applies the
verdict rule of :mod:`neural_memory.experiments.stats` to the numbers, a ``plot(results, path)`` function
and a ``table(results) -> list[list[str]]`` function. :func:`run_experiment` writes ``OUT/NAME.json`` and
``OUT/NAME.png``; a second call with the same scale, seeds, text and kinds reuses the JSON.

Every training run lives in ``OUT/runs/RUN/`` (its checkpoint and ``result.json``): a finished run is never
trained again, and a run interrupted mid-training resumes from its last checkpoint. So an interrupted
``neural-memory reproduce`` resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

FORMAT = 1
TEXT_CHARS = 400_000  # generated text of the lm experiments; TextData holds out its last 10 %


@dataclass(frozen=True)
class Scale:
    """The size of every experiment: model, training budget, seeds and evaluation samples."""

    name: str
    dim: int
    depth: int
    seq_len: int
    batch_size: int
    steps: int
    seeds: tuple[int, ...]
    eval_windows: int  # held-out text windows / recall sequences evaluated per run
    recall_pairs: tuple[int, ...]
    recall_widths: tuple[int, ...]
    memory_depths: tuple[int, ...]
    throughput_repeats: int
    needle_train_len: int = 128  # prompt bytes of the needle task's training samples
    needle_lengths: tuple[int, ...] = (128, 256, 512)  # prompt bytes it is evaluated at
    needle_samples: int = 200  # per form and length
    recall_seq_len: int | None = None  # bytes per recall sequence (None: seq_len); must fit 2 P + 2
    lr: float = 3e-3
    scaling_lengths: tuple[int, ...] = (256, 512, 1024)  # sequence lengths the scaling experiment times
    scaling_repeats: int = 3  # timed passes per (kind, length, pass)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SCALES: dict[str, Scale] = {
    # seconds: for the tests
    "test": Scale(
        "test",
        16,
        1,
        32,
        2,
        2,
        (0,),
        4,
        (2,),
        (16,),
        (1, 2),
        2,
        100,
        (100, 128),
        4,
        scaling_lengths=(16, 32, 64),
        scaling_repeats=2,
    ),
    # the default of `reproduce`: under 10 minutes on 2 shared CPU cores; a smoke run of the whole pipeline
    "tiny": Scale(
        "tiny", 32, 1, 64, 8, 60, (0,), 64, (4, 12), (32,), (1, 2, 3, 4), 5, 112, (112, 224, 448), 100, 32
    ),
    # `reproduce --scale small --text tinyshakespeare.txt` in about an hour on 2 shared cores (estimated from
    # measured per-step times: 0.07 s transformer, 0.5 s Titans, 1.6 s MIRAS per step of 8 x 128 bytes at
    # width 64, depth 2, one thread). Cut from the first plan (600 steps, seeds 0-2, recall pairs 4/8/16 at
    # widths 32/64, 200 needle samples), which came to about 25 hours: one seed (so intervals cover held-out
    # windows, not training runs), 120 steps, recall pairs 4/16 at width 32, 100 needle samples per cell;
    # estimate: about 55 min of training, 10 min of evaluation, 5 min of scaling timings (~70 min).
    "small": Scale(
        "small",
        64,
        2,
        128,
        8,
        120,
        (0,),
        128,
        (4, 16),
        (32,),
        (1, 2, 3, 4),
        5,
        256,
        (256, 512, 1024),
        100,
        scaling_lengths=(512, 1024, 2048, 4096),
    ),
    "medium": Scale(
        "medium",
        128,
        4,
        256,
        16,
        3000,
        (0, 1, 2),
        256,
        (4, 8, 16, 24),
        (64, 128),
        (1, 2, 3, 4),
        10,
        512,
        (1024, 2048, 4096),
        200,
        scaling_lengths=(1024, 2048, 4096, 8192, 16384),
    ),
}


def get_scale(name: str) -> Scale:
    if name not in SCALES:
        raise ValueError(f"unknown scale {name!r}; choose from {', '.join(SCALES)}")
    return SCALES[name]


@dataclass(frozen=True)
class Claim:
    """One row of the claims table: what the paper says, what we measured, and the rule's verdict."""

    claim: str
    reference: str
    paper: str
    measured: str
    verdict: str
    rule: str = "95 % intervals separate in the claimed direction"
    # the two intervals the rule compared and the claimed direction of a ("lower" or "higher" than b)
    comparison: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compared_claim(claim: str, reference: str, paper: str, measured: str, a, b, direction: str) -> Claim:
    """A claim "a is ``direction`` than b" with its verdict from the rule of :mod:`.stats`."""
    from neural_memory.experiments.stats import verdict_higher, verdict_lower

    if direction not in ("lower", "higher"):
        raise ValueError(f"direction must be 'lower' or 'higher', got {direction!r}")
    verdict = (verdict_lower if direction == "lower" else verdict_higher)(a, b)
    comparison = {"a": a.to_dict(), "b": b.to_dict(), "direction": direction}
    # say what the intervals cover (seeds, or only the evaluation samples of one training run)
    methods = a.method if a.method == b.method else f"{a.method}; {b.method}"
    return Claim(claim, reference, paper, f"{measured} ({methods})", verdict, comparison=comparison)


@dataclass
class Context:
    """Where and how an experiment runs."""

    scale: Scale
    out: Path
    seeds: tuple[int, ...]
    text: Path | None = None
    progress: bool | None = None
    # called after every finished run (tests use it to interrupt an experiment)
    on_run_done: Callable[[str], None] | None = None
    bar: Any = None

    @property
    def runs_dir(self) -> Path:
        return self.out / "runs"

    def lm_text(self) -> Path:
        """The text the language-model experiments train on: ``--text`` or the generated one."""
        if self.text is not None:
            return self.text
        from neural_memory.tasks.sentences import generate_text

        path = self.out / "data" / "generated_sentences.txt"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(path, generate_text(TEXT_CHARS, seed=0))
        return path


@dataclass(frozen=True)
class Experiment:
    """An experiment: its name, the paper table/figure it mirrors, and its four functions."""

    name: str
    mirrors: str
    description: str
    run: Callable[[Context], dict[str, Any]]
    claims: Callable[[dict[str, Any]], list[Claim]]
    table: Callable[[dict[str, Any]], list[list[str]]]
    plot: Callable[[dict[str, Any], Path], None]
    kinds_needed: tuple[str, ...] = field(default_factory=tuple)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------
# training runs
# ------------------------------------------------------------------------------------------------


def train_config(ctx: Context, kind: str, seed: int, **changes: Any):
    """The :class:`~neural_memory.training.TrainConfig` of one run at ``ctx.scale`` (``changes`` override)."""
    from neural_memory.training import TrainConfig

    s = ctx.scale
    base = TrainConfig(
        kind=kind,
        steps=s.steps,
        seq_len=s.seq_len,
        batch_size=s.batch_size,
        dim=s.dim,
        depth=s.depth,
        lr=s.lr,
        eval_every=s.steps,
        eval_batches=1,
        seed=seed,
    )
    return replace(base, **changes)


def run_training(ctx: Context, name: str, config, *, throughput: bool = False) -> dict[str, Any]:
    """Train ``config`` in ``OUT/runs/name`` unless its result is there already; evaluate; return the record.

    The record: ``config``, ``params``, ``metrics`` (bits per byte per held-out window for text; answer hits
    and count for recall) and ``timings`` (training seconds, tokens per second, and with ``throughput`` the
    tokens per second of repeated forward+backward passes).
    """
    from neural_memory.training import CHECKPOINT_NAME, train

    run_dir = ctx.runs_dir / name
    record_path = run_dir / "result.json"
    wanted = config.to_dict()
    if record_path.is_file():
        record = json.loads(record_path.read_text("utf-8"))
        if record.get("config") == wanted:
            if throughput and "throughput" not in record["timings"]:  # trained by another experiment
                record["timings"]["throughput"] = measure_throughput(run_dir, ctx.scale.throughput_repeats)
                _atomic_write(record_path, json.dumps(record, indent=1))
            return record
    resume = (run_dir / CHECKPOINT_NAME).is_file() and _checkpoint_config(run_dir) == wanted
    started = time.perf_counter()
    result = train(None if resume else config, run_dir, resume=resume, progress=False, log=lambda _line: None)
    seconds = time.perf_counter() - started
    record = evaluate_run(ctx, run_dir, config)
    record["timings"] = {"train_seconds": seconds, "tokens_per_second": result.tokens_per_second}
    if throughput:
        record["timings"]["throughput"] = measure_throughput(run_dir, ctx.scale.throughput_repeats)
    run_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(record_path, json.dumps(record, indent=1))
    if ctx.on_run_done is not None:
        ctx.on_run_done(name)
    return record


def run_name(config) -> str:
    """``KIND-DIGEST``: equal configs share a run directory, so experiments reuse each other's runs."""
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
    return f"{config.kind}-{digest}"


def train_variants(
    ctx: Context, desc: str, variants: dict[str, Callable[[int], Any]], *, throughput: bool = False
) -> dict[str, list[dict[str, Any]]]:
    """Train every variant (a function ``seed -> TrainConfig``) at every seed of ``ctx``; records by variant.

    A tqdm bar counts the runs (``ctx.progress``: ``None`` = only on a terminal).
    """
    from tqdm.auto import tqdm

    jobs = [(name, seed) for name in variants for seed in ctx.seeds]
    records: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    disable = None if ctx.progress is None else not ctx.progress
    with tqdm(total=len(jobs), desc=desc, unit="run", disable=disable, leave=False) as bar:
        for name, seed in jobs:
            bar.set_postfix_str(f"{name} seed {seed}", refresh=True)
            config = variants[name](seed)
            records[name].append(run_training(ctx, run_name(config), config, throughput=throughput))
            bar.update(1)
    return records


def _checkpoint_config(run_dir: Path) -> dict[str, Any] | None:
    from neural_memory.training import load_checkpoint

    try:
        return load_checkpoint(run_dir)["config"]
    except (OSError, ValueError, KeyError, RuntimeError):
        return None  # a damaged checkpoint: train again from scratch


EVAL_SEED = 2_718_281  # the held-out samples of every run come from this seed: all variants see the same ones


def evaluate_run(ctx: Context, run_dir: Path, config) -> dict[str, Any]:
    """Held-out metrics of the trained model in ``run_dir`` on ``ctx.scale.eval_windows`` fixed samples."""
    import torch

    from neural_memory.training import Task, load_model

    model, _ = load_model(run_dir)
    model.eval()
    task = Task(config)
    generator = torch.Generator().manual_seed(EVAL_SEED)
    n = ctx.scale.eval_windows
    if task.recall is not None:
        batch = task.recall.batch(n, generator)
    else:
        batch = task.text.batch("val", n, config.seq_len, generator)
    with torch.no_grad():
        logits, _ = model(batch.inputs)
    record = {"config": config.to_dict(), "params": sum(p.numel() for p in model.parameters())}
    if task.recall is not None:
        hits = (logits.argmax(-1) == batch.targets)[batch.loss_mask]
        record["metrics"] = {"hits": int(hits.sum()), "n": int(hits.numel())}
    else:
        per_token = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), batch.targets, reduction="none"
        )  # (n, T) nats
        bpb = (per_token.mean(dim=1) / math.log(2)).tolist()
        record["metrics"] = {"bpb_windows": bpb, "bpb": sum(bpb) / len(bpb)}
    return record


def measure_throughput(run_dir: Path, repeats: int) -> list[float]:
    """Tokens per second of ``repeats`` timed forward+backward passes of one training batch."""
    import torch

    from neural_memory.models import lm_loss
    from neural_memory.training import Task, load_model

    model, config = load_model(run_dir)
    batch = Task(config).batch(torch.Generator().manual_seed(EVAL_SEED))
    rates = []
    for _ in range(repeats + 1):  # the first pass warms up and is not counted
        started = time.perf_counter()
        logits, _ = model(batch.inputs)
        lm_loss(logits, batch.targets, batch.loss_mask).backward()
        rates.append(batch.inputs.numel() / (time.perf_counter() - started))
        model.zero_grad(set_to_none=True)
    return rates[1:]


# ------------------------------------------------------------------------------------------------
# aggregation over seeds
# ------------------------------------------------------------------------------------------------


def loss_interval(records: list[dict[str, Any]]):
    """95 % interval of bits per byte: t over seeds when there are >= 3, else t over the held-out windows."""
    from neural_memory.experiments.stats import t_interval

    if len(records) >= 3:
        return t_interval([r["metrics"]["bpb"] for r in records], "t over seeds")
    windows = [w for r in records for w in r["metrics"]["bpb_windows"]]
    return t_interval(windows, f"{len(records)} seed(s), t over held-out windows: evaluation noise only")


def accuracy_interval(records: list[dict[str, Any]]):
    """Wilson 95 % interval of the answer accuracy pooled over seeds."""
    from neural_memory.experiments.stats import wilson_interval

    hits, n = sum(r["metrics"]["hits"] for r in records), sum(r["metrics"]["n"] for r in records)
    interval = wilson_interval(hits, n)
    # the answers of one sequence share its context, so they are not independent: the interval is optimistic
    return replace(interval, method=f"{len(records)} seed(s), {interval.method} over answers")


def throughput_interval(records: list[dict[str, Any]]):
    """t 95 % interval of the timed passes' tokens per second, pooled over seeds."""
    from neural_memory.experiments.stats import t_interval

    rates = [v for r in records for v in r["timings"]["throughput"]]
    return t_interval(rates, f"{len(records)} seed(s), t over timed passes")


# ------------------------------------------------------------------------------------------------
# one experiment end to end
# ------------------------------------------------------------------------------------------------


def experiment_key(experiment: Experiment, ctx: Context) -> dict[str, Any]:
    """What decides an experiment's results: a stored JSON with the same key is reused."""
    from neural_memory.models.registry import available_kinds

    key = {
        "format": FORMAT,
        "experiment": experiment.name,
        "scale": ctx.scale.to_dict(),
        "seeds": list(ctx.seeds),
        "text_sha256": None if ctx.text is None else file_digest(ctx.text),
        "kinds": available_kinds(),
    }
    return json.loads(json.dumps(key))  # as it reads back from the JSON file (tuples become lists)


def _judge(experiment: Experiment, results: dict[str, Any]) -> dict[str, Any]:
    """The claims (with verdicts) and the table of ``results``, as stored in the JSON."""
    claims = [c.to_dict() for c in experiment.claims(results)]
    return json.loads(json.dumps({"claims": claims, "table": experiment.table(results)}))


def run_experiment(experiment: Experiment, ctx: Context) -> dict[str, Any]:
    """Run (or reuse) ``experiment``; write ``NAME.json`` and ``NAME.png`` in ``ctx.out``; return the JSON."""
    ctx.out.mkdir(parents=True, exist_ok=True)
    json_path = ctx.out / f"{experiment.name}.json"
    key = experiment_key(experiment, ctx)
    if json_path.is_file():
        stored = json.loads(json_path.read_text("utf-8"))
        if stored.get("key") == key:
            # claims and table are a function of the results: recompute them, so a changed rule applies
            # without training again
            fresh = {**stored, **_judge(experiment, stored["results"])}
            if fresh != stored:
                _atomic_write(json_path, json.dumps(fresh, indent=1))
            if not (ctx.out / f"{experiment.name}.png").is_file():
                experiment.plot(stored["results"], ctx.out / f"{experiment.name}.png")
            return json.loads(json.dumps(fresh))
    started = time.perf_counter()
    results = experiment.run(ctx)
    document = {
        "key": key,
        "experiment": experiment.name,
        "mirrors": experiment.mirrors,
        "description": experiment.description,
        "results": results,
        **_judge(experiment, results),
        "timings": {"seconds": time.perf_counter() - started},
    }
    experiment.plot(results, ctx.out / f"{experiment.name}.png")
    text = json.dumps(document, indent=1)
    _atomic_write(json_path, text)
    return json.loads(text)


__all__ = [
    "SCALES",
    "Claim",
    "Context",
    "Experiment",
    "Scale",
    "accuracy_interval",
    "compared_claim",
    "evaluate_run",
    "get_scale",
    "loss_interval",
    "measure_throughput",
    "run_experiment",
    "run_name",
    "run_training",
    "throughput_interval",
    "train_config",
    "train_variants",
]
