"""``scaling``: training and inference time and peak memory vs sequence length for every kind (mirrors
Titans v1 Fig. 9, and the linear-vs-quadratic cost the papers argue from).

Each available kind is built at the scale's width and depth (its registered defaults otherwise, untrained:
the cost does not depend on the weights) and timed on one sequence of each length of
``Scale.scaling_lengths``, batch 1: a *training pass* is forward, byte-level cross-entropy and backward; an
*inference pass* is a forward pass under ``torch.no_grad`` in eval mode. Every (kind, length) gets one warm-up
of each pass, then ``Scale.scaling_repeats`` timed ones; each timed pass also records its peak memory
(:mod:`neural_memory.experiments.peak_memory`: the growth of the resident set, Linux only).

How cost grows is summarised by the exponent ``b`` of ``cost ~ length^b``: the least-squares slope of
log cost on log length over every timed pass, with its t interval (:func:`~.stats.slope_interval`). Full
attention is quadratic in the limit and a recurrent memory linear, but at short lengths the
length-independent and linear parts (projections, MLPs) dominate, so every exponent is below its limit and
the gap only shows at lengths where attention's T^2 work is large; the claims compare intervals at the
lengths the scale measured, nothing more. Times are wall-clock on a shared CPU: other jobs add noise.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

from neural_memory.experiments.base import Claim, Context, Experiment, _atomic_write
from neural_memory.experiments.stats import NOT_TESTED, Interval, slope_interval, t_interval

PASSES = ("train", "infer")
PAGE_MIB = 4 / 1024  # the resolution of the memory measurement: one 4 KiB page
NO_MEMORY = f"{NOT_TESTED}: this system has no resettable peak-memory counter"
FIG9 = "Fig. 9 (throughput vs sequence length): figure only, no numbers in the text"


def _inputs(length: int):
    import torch

    from neural_memory.data import BYTE_VOCAB

    generator = torch.Generator().manual_seed(length)
    return torch.randint(0, BYTE_VOCAB, (1, length + 1), generator=generator)


def _passes(model, seq) -> dict[str, Any]:
    """The two passes of one sequence, each a function returning its wall-clock seconds."""
    import torch

    from neural_memory.models import lm_loss

    inputs, targets = seq[:, :-1], seq[:, 1:]

    def train() -> float:
        model.train()
        started = time.perf_counter()
        logits, _ = model(inputs)
        lm_loss(logits, targets).backward()
        seconds = time.perf_counter() - started
        model.zero_grad(set_to_none=True)
        return seconds

    def infer() -> float:
        model.eval()
        started = time.perf_counter()
        with torch.no_grad():
            model(inputs)
        return time.perf_counter() - started

    return {"train": train, "infer": infer}


def measure_kind(kind: str, dim: int, depth: int, lengths, repeats: int) -> dict[str, Any]:
    """Seconds and peak MiB (``None`` where unmeasurable) of every timed pass of ``kind`` at every length."""
    import torch

    from neural_memory.data import BYTE_VOCAB
    from neural_memory.experiments.peak_memory import memory_meter
    from neural_memory.models import build_lm

    torch.manual_seed(0)
    model = build_lm(kind, vocab_size=BYTE_VOCAB, dim=dim, depth=depth)
    meter = memory_meter()
    points = {}
    for length in lengths:
        passes = _passes(model, _inputs(length))
        point: dict[str, Any] = {}
        for name, work in passes.items():
            work()  # warm-up: first-call allocations and caches are not counted
            seconds: list[float] = []
            peaks: list[float] = []
            for _ in range(repeats):
                if meter is None:
                    seconds.append(work())
                else:
                    peaks.append(meter(lambda work=work, seconds=seconds: seconds.append(work())))
            point[f"{name}_seconds"] = seconds
            point[f"{name}_peak_mib"] = peaks if meter is not None else None
        points[str(length)] = point
    return {"params": sum(p.numel() for p in model.parameters()), "points": points}


def _cached_kind(ctx: Context, kind: str) -> dict[str, Any]:
    """:func:`measure_kind` once per (kind, scale settings): stored in ``OUT/runs/scaling-KIND-DIGEST``."""
    import torch

    s = ctx.scale
    key = {
        "kind": kind,
        "dim": s.dim,
        "depth": s.depth,
        "lengths": list(s.scaling_lengths),
        "repeats": s.scaling_repeats,
        "threads": torch.get_num_threads(),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    path = ctx.runs_dir / f"scaling-{kind}-{digest}" / "result.json"
    if path.is_file():
        record = json.loads(path.read_text("utf-8"))
        if record.get("key") == key:
            return record
    record = {"key": key, **measure_kind(kind, s.dim, s.depth, s.scaling_lengths, s.scaling_repeats)}
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, json.dumps(record, indent=1))
    if ctx.on_run_done is not None:
        ctx.on_run_done(path.parent.name)
    return record


def run(ctx: Context) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from neural_memory.experiments.lm import too_shallow
    from neural_memory.models.registry import available_kinds

    shallow = too_shallow(available_kinds(), ctx.scale.depth)  # the hybrids at depth 1: not timed
    kinds = [k for k in available_kinds() if k not in shallow]
    disable = None if ctx.progress is None else not ctx.progress
    measured = {}
    with tqdm(total=len(kinds), desc="scaling", unit="kind", disable=disable, leave=False) as bar:
        for kind in kinds:
            bar.set_postfix_str(kind, refresh=True)
            measured[kind] = _cached_kind(ctx, kind)
            bar.update(1)
    return {
        "lengths": list(ctx.scale.scaling_lengths),
        "batch_size": 1,
        "kinds": measured,
        "shallow_kinds": shallow,
    }


# ------------------------------------------------------------------------------------------------
# intervals
# ------------------------------------------------------------------------------------------------


def exponent(results: dict[str, Any], kind: str, quantity: str) -> Interval | None:
    """Exponent ``b`` of ``quantity ~ length^b`` (``quantity`` like ``train_seconds``) with its interval.

    Memory values are clamped below at one page, the measurement's resolution, before the logarithm.
    """
    xs, ys = [], []
    for length, point in results["kinds"][kind]["points"].items():
        if point[quantity] is None:
            return None
        for value in point[quantity]:
            xs.append(math.log(int(length)))
            ys.append(math.log(max(value, PAGE_MIB) if quantity.endswith("mib") else value))
    return slope_interval(xs, ys, "slope of log cost on log length over timed passes")


def longest_throughput(results: dict[str, Any], kind: str, name: str = "train") -> Interval:
    """Tokens per second of the ``name`` passes at the longest length (t interval over the repeats)."""
    longest = results["lengths"][-1]
    seconds = results["kinds"][kind]["points"][str(longest)][f"{name}_seconds"]
    return t_interval([longest / s for s in seconds], f"t over timed passes at {longest} tokens")


def longest_value(results: dict[str, Any], kind: str, quantity: str) -> Interval | None:
    values = results["kinds"][kind]["points"][str(results["lengths"][-1])][quantity]
    return None if values is None else t_interval(values, "t over timed passes")


# ------------------------------------------------------------------------------------------------
# claims, table, plot
# ------------------------------------------------------------------------------------------------


def _compare(results, claim, reference, paper, a_kind, b_kind, values, direction, unit) -> Claim:
    from neural_memory.experiments.base import compared_claim
    from neural_memory.experiments.lm import MODEL_NOT_IMPLEMENTED

    if a_kind not in results["kinds"] or b_kind not in results["kinds"]:
        return Claim(claim, reference, paper, "(not implemented)", MODEL_NOT_IMPLEMENTED)
    a, b = values(a_kind), values(b_kind)
    if a is None or b is None:
        return Claim(claim, reference, paper, "-", NO_MEMORY, rule="-")
    measured = f"{unit}: {a_kind} {a.text(2)} vs {b_kind} {b.text(2)}"
    return compared_claim(claim, reference, paper, measured, a, b, direction)


def claims(results: dict[str, Any]) -> list[Claim]:
    lengths = f"{results['lengths'][0]}-{results['lengths'][-1]} tokens"
    return [
        _compare(
            results,
            "Titans' training time grows linearly in length where full attention grows quadratically",
            "Titans §3.2/§4 (linear-time memory vs quadratic attention) and Fig. 9",
            "complexity argument and figure; no numbers in the text",
            "titans-lmm",
            "transformer",
            lambda k: exponent(results, k, "train_seconds"),
            "lower",
            f"exponent of training time vs length over {lengths}",
        ),
        _compare(
            results,
            "Titans' peak training memory grows more slowly with length than full attention's",
            "Titans §3.2/§4 (fixed-size memory vs attention over the whole context)",
            "complexity argument; no numbers in the text",
            "titans-lmm",
            "transformer",
            lambda k: exponent(results, k, "train_peak_mib"),
            "lower",
            f"exponent of peak training memory vs length over {lengths}",
        ),
        _compare(
            results,
            "the LMM is slightly slower than Gated DeltaNet",
            "Titans Fig. 9",
            FIG9,
            "titans-lmm",
            "gated-deltanet",
            lambda k: longest_throughput(results, k),
            "lower",
            f"training tokens/s at {results['lengths'][-1]} tokens",
        ),
        _compare(
            results,
            "the LMM is slightly slower than Mamba2",
            "Titans Fig. 9",
            FIG9,
            "titans-lmm",
            "mamba2",
            lambda k: longest_throughput(results, k),
            "lower",
            f"training tokens/s at {results['lengths'][-1]} tokens",
        ),
        _compare(
            results,
            "MAL is faster than the baselines (here: than Gated DeltaNet)",
            "Titans Fig. 9",
            FIG9,
            "titans-mal",
            "gated-deltanet",
            lambda k: longest_throughput(results, k),
            "higher",
            f"training tokens/s at {results['lengths'][-1]} tokens",
        ),
    ]


def _text(interval: Interval | None, digits: int = 2) -> str:
    return "n/a" if interval is None else interval.text(digits)


def table(results: dict[str, Any]) -> list[list[str]]:
    longest = results["lengths"][-1]
    header = [
        "kind",
        "params",
        "train time exponent",
        "inference time exponent",
        "train memory exponent",
        f"train s @ {longest}",
        f"inference s @ {longest}",
        f"train peak MiB @ {longest}",
    ]
    rows = [
        [
            kind,
            str(record["params"]),
            _text(exponent(results, kind, "train_seconds")),
            _text(exponent(results, kind, "infer_seconds")),
            _text(exponent(results, kind, "train_peak_mib")),
            _text(longest_value(results, kind, "train_seconds"), 4),
            _text(longest_value(results, kind, "infer_seconds"), 4),
            _text(longest_value(results, kind, "train_peak_mib"), 1),
        ]
        for kind, record in results["kinds"].items()
    ]
    shallow = results.get("shallow_kinds", {})
    rows += [[kind, *[f"not run: needs depth >= {n}"] * (len(header) - 1)] for kind, n in shallow.items()]
    return [header, *rows]


def plot(results: dict[str, Any], path: Path) -> None:
    from neural_memory.experiments.plots import _pyplot

    plt = _pyplot()
    panels = [
        ("train_seconds", "training pass (s)"),
        ("infer_seconds", "inference pass (s)"),
        ("train_peak_mib", "peak memory growth, training (MiB)"),
    ]
    lengths = results["lengths"]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
    for ax, (quantity, label) in zip(axes[0], panels, strict=True):
        for kind, record in results["kinds"].items():
            values = [record["points"][str(n)][quantity] for n in lengths]
            if any(v is None for v in values):
                continue
            means = [max(sum(v) / len(v), PAGE_MIB) for v in values]
            ax.plot(lengths, means, marker="o", label=kind)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length (tokens, batch 1)")
        ax.set_ylabel(label)
        ax.set_title(label.split(" (")[0])
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


EXPERIMENT = Experiment(
    name="scaling",
    mirrors="Titans Fig. 9 (throughput vs sequence length)",
    description=(
        "Training (forward + backward) and inference (forward) time and peak memory growth of one sequence "
        "vs its length for every kind; exponents of cost ~ length^b fitted on log-log axes with t "
        "intervals; peak memory is the resident-set growth (Linux VmHWM reset per pass)."
    ),
    run=run,
    claims=claims,
    table=table,
    plot=plot,
)
