r"""Figures of a trained Titans run (``neural-memory figures RUN_DIR``): what its memory does on a sequence.

:func:`make_figures` loads ``RUN_DIR/checkpoint.pt``, takes one sequence of the run's own task (a generated
recall sequence, or a window of the held-out tail of its text file), runs the model on it once and traces
one of its Titans memories token by token (:func:`neural_memory.memory_trace.trace_model`, in float64). It
writes, with the numbers behind every plot in ``figures.json``:

* ``surprise.png`` — the gradient :math:`\|\nabla\ell\|` of each token, the momentary surprise
  :math:`\theta_t\|\nabla\ell\|` and the momentum :math:`\|S_t\|` (Titans Eq. 14) over the sequence;
* ``memory_updates.png`` — heatmaps of :math:`\|(\mathcal{M}_t - \mathcal{M}_{t-1})_i\|`, the change of every
  row of every memory weight matrix at every token (Eq. 13);
* ``forgetting.png`` — :func:`~neural_memory.memory_trace.forgetting_probe` at the run's memory width and
  depth: recall of old pairs against their age for several forget rates :math:`\alpha`;
* ``dashboard.png`` — the loss curves of ``metrics.jsonl``, the gates :math:`\alpha_t, \eta_t, \theta_t` and
  the memory's weight norms over the sequence.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from neural_memory.data import AssociativeRecall, TextData, sample_windows
from neural_memory.memory_trace import forgetting_probe, probe_config, titans_memories, trace_model
from neural_memory.training import (
    TrainConfig,
    build_model,
    checkpoint_path,
    load_checkpoint,
    read_metrics,
)

FIGURES = ("surprise.png", "memory_updates.png", "forgetting.png", "dashboard.png")
DATA_NAME = "figures.json"
PROBE_ALPHAS = (0.0, 0.01, 0.05, 0.2)
MEMORY_KINDS = ("titans-mac", "titans-mag", "titans-mal", "titans-lmm")


# ------------------------------------------------------------------------------------------------
# the run and its sequence
# ------------------------------------------------------------------------------------------------


def load_run(path: str | Path) -> tuple[torch.nn.Module, TrainConfig, int]:
    """The trained model of a run directory (or checkpoint file), its config and its step."""
    payload = load_checkpoint(path)
    config = TrainConfig.from_dict(payload["config"])
    model = build_model(config)
    model.load_state_dict(payload["model"])
    return model, config, int(payload["step"])


def run_sequence(config: TrainConfig, seq_len: int, seed: int) -> tuple[Tensor, str]:
    """One ``(1, seq_len)`` byte sequence of the run's task, drawn with ``seed``, and where it came from.

    Recall runs: a fresh :class:`~neural_memory.data.AssociativeRecall` sequence with the run's number of
    pairs. Text runs: a random window of the held-out tail of the run's text file (``FileNotFoundError`` if
    the file is gone).
    """
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len must be an int >= 1, got {seq_len!r}")
    generator = torch.Generator().manual_seed(seed)
    if config.text is None:
        task = AssociativeRecall(seq_len, n_pairs=config.recall_pairs)
        return task.sequences(1, generator)[:, :seq_len], f"associative recall ({config.recall_pairs} pairs)"
    if not Path(config.text).is_file():
        raise FileNotFoundError(f"the run's text file {config.text} is missing; figures read a window of it")
    held_out = TextData(config.text, val_fraction=config.val_fraction).val
    if held_out.numel() < seq_len + 1:
        raise ValueError(
            f"the held-out tail of {config.text} holds {held_out.numel()} bytes, fewer than seq_len + 1 = "
            f"{seq_len + 1}; use a smaller --seq-len"
        )
    return sample_windows(held_out, 1, seq_len, generator).inputs, f"{config.text} (held-out tail)"


# ------------------------------------------------------------------------------------------------
# the numbers
# ------------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """Tensors to nested lists and non-finite floats to ``None``, for strict JSON."""
    if isinstance(value, Tensor):
        return _plain(value.tolist())
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def figure_data(
    model: torch.nn.Module,
    config: TrainConfig,
    step: int,
    *,
    seq_len: int | None = None,
    seed: int = 0,
    memory: int = 0,
    metrics: list[dict] | None = None,
) -> dict[str, Any]:
    """Everything the figures show, as JSON-ready lists (see the module docstring).

    Args:
        model: the trained model (traced in float64; it is converted in place).
        config, step: the run's config and the checkpoint's step (for titles and the sequence).
        seq_len: tokens of the traced sequence (default: the run's ``seq_len``).
        seed: seed of the sequence and of the forgetting probe.
        memory: which Titans memory, in :func:`~neural_memory.memory_trace.titans_memories` order.
        metrics: the run's evaluations (:func:`~neural_memory.training.read_metrics`).
    """
    memories = titans_memories(model)
    if not memories:
        raise ValueError(
            f"kind {config.kind!r} has no Titans NeuralMemory; figures need one of {', '.join(MEMORY_KINDS)}"
        )
    tokens, source = run_sequence(config, config.seq_len if seq_len is None else seq_len, seed)
    model.double().eval()
    traced = trace_model(model, tokens, memory)
    trace = traced.trace
    prefix = trace.tokens - tokens.shape[1]  # MAG/MAL/LMM write the persistent tokens first
    token = trace.position - prefix
    probe = probe_config(memories[memory])
    forgetting = forgetting_probe(PROBE_ALPHAS, seed=seed, **probe)
    target = memories[memory]
    return _plain(
        {
            "run": {
                "kind": config.kind,
                "step": step,
                "sequence": source,
                "seq_len": tokens.shape[1],
                "seed": seed,
                "memory_index": memory,
                "memories": traced.memories,
                "calls": traced.calls,
                "heads": target.heads,
                "chunk_size": target.chunk_size,
                "prefix_tokens": prefix,
                "layers": [list(w.shape[1:]) for w in trace.weights],
                "replay_max_abs_error": traced.replay_error,
            },
            "surprise": {
                "token": token,
                "grad_norm": trace.grad_norm,
                "surprise_norm": trace.surprise_norm,
                "momentum_norm": trace.momentum_norm,
            },
            "memory_updates": {
                "token": token,
                "row_update": [layer.permute(1, 2, 0) for layer in trace.row_update],  # (heads, rows, T)
            },
            "forgetting": {"alphas": list(PROBE_ALPHAS), **forgetting, "memory": probe, "seed": seed},
            "dashboard": {
                "metrics": metrics or [],
                "token": token,
                "alpha": trace.alpha,
                "eta": trace.eta,
                "theta": trace.theta,
                "weight_norm": trace.weight_norm,
                "content_norm": trace.content_norm,
            },
        }
    )


# ------------------------------------------------------------------------------------------------
# the drawings
# ------------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _title(data: dict, what: str) -> str:
    run = data["run"]
    where = f"memory {run['memory_index']} of {run['memories']}"
    return f"{run['kind']}, step {run['step']} ({where}): {what}"


def _token_label(data: dict) -> str:
    if data["run"]["prefix_tokens"]:
        return "token position t (bytes; t < 0: persistent tokens written first)"
    return "token position t (bytes)"


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)


HEAD_STYLES = ("-", "--", ":", "-.")  # one line style per head; one colour per quantity


def _per_head(ax, x, rows, label: str, color: str) -> None:
    """One line per head of ``rows`` (T × heads), all in ``color``."""
    heads = len(rows[0]) if rows else 0
    for h in range(heads):
        suffix = f", head {h}" if heads > 1 else ""
        style = HEAD_STYLES[h % len(HEAD_STYLES)]
        ax.plot(x, [r[h] for r in rows], color=color, linestyle=style, linewidth=1.2, label=label + suffix)


def draw_surprise(data: dict, path: Path) -> None:
    """``surprise.png``: the gradient norm, and the momentary surprise against the momentum norm."""
    plt = _pyplot()
    s = data["surprise"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    _per_head(top, s["token"], s["grad_norm"], r"$\|\nabla\ell(M_{t'}; x_t)\|$", "tab:gray")
    top.set_ylabel(r"gradient norm $\|\nabla\ell\|$" + "\n(Frobenius, all layers)")
    top.set_yscale("log")
    top.legend(fontsize=7)
    _per_head(
        bottom, s["token"], s["surprise_norm"], r"momentary surprise $\theta_t\|\nabla\ell\|$", "tab:blue"
    )
    _per_head(bottom, s["token"], s["momentum_norm"], r"momentum $\|S_t\|$", "tab:orange")
    bottom.set_ylabel("weight-space step\n(Frobenius norm, all layers)")
    bottom.set_yscale("log")
    bottom.set_xlabel(_token_label(data))
    bottom.legend(fontsize=7)
    chunk = data["run"]["chunk_size"]
    where = "$t' = t-1$" if chunk == 1 else f"$t'$ = start of the token's chunk of {chunk} (Eq. 16)"
    top.set_title(_title(data, "surprise and momentum (Eq. 14)") + f"\ngradients at {where}", fontsize=9)
    _save(fig, path)


def draw_memory_updates(data: dict, path: Path) -> None:
    """``memory_updates.png``: per-row update magnitude, rows × tokens, one panel per weight matrix."""
    from matplotlib.colors import LogNorm

    plt = _pyplot()
    u = data["memory_updates"]
    layers = u["row_update"]
    token = u["token"]
    fig, axes = plt.subplots(len(layers), 1, figsize=(9, 2.2 + 2.2 * len(layers)), squeeze=False)
    for layer, (ax, per_head) in enumerate(zip(axes[:, 0], layers, strict=True)):
        image = torch.tensor([row for head in per_head for row in head], dtype=torch.float64)  # (H*rows, T)
        positive = image[image > 0]
        high = positive.max().item() if positive.numel() else 1.0
        low = max(positive.min().item(), high * 1e-6) if positive.numel() else high * 1e-6
        extent = (token[0] - 0.5, token[-1] + 0.5, image.shape[0] - 0.5, -0.5)
        shown = ax.imshow(
            image.clamp(min=low).numpy(), aspect="auto", interpolation="nearest", extent=extent,
            norm=LogNorm(vmin=low, vmax=high), cmap="viridis",
        )  # fmt: skip
        rows = len(per_head[0])
        for h in range(1, len(per_head)):
            ax.axhline(h * rows - 0.5, color="white", linewidth=0.8)
        d_in, d_out = data["run"]["layers"][layer]
        ax.set_ylabel(f"row i of $W_{layer + 1}$\n({d_in}×{d_out} per head)")
        ax.set_xlabel(_token_label(data))
        fig.colorbar(shown, ax=ax, label=r"$\|(M_t - M_{t-1})_i\|$ (log)")
    axes[0, 0].set_title(_title(data, "how much each memory row changed per token (Eq. 13)"), fontsize=9)
    _save(fig, path)


def draw_forgetting(data: dict, path: Path) -> None:
    """``forgetting.png``: relative retrieval error of old pairs against their age, one line per alpha."""
    plt = _pyplot()
    f = data["forgetting"]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for alpha, errors in zip(f["alphas"], f["relative_error"], strict=True):
        ax.plot(f["age"], errors, marker="o", markersize=3, label=rf"$\alpha = {alpha:g}$")
    ax.axhline(1.0, color="black", linestyle=":", linewidth=1, label="unwritten memory $M_0$")
    ax.set_xlabel("age of the pair (tokens written after it)")
    ax.set_ylabel(r"retrieval error $\|M(k) - v\|^2$" + "\nrelative to the unwritten memory")
    m = f["memory"]
    setup = (
        f"fresh memory d={m['dim']}, $L_M$={m['depth']}, fixed gates $\\eta$={f['eta']:g}, "
        f"$\\theta$={f['theta']:g}; {f['n_pairs']} pairs, then {f['n_distractors']} distractors; "
        f"mean of {f['samples']} streams"
    )
    ax.set_title(_title(data, r"forgetting probe, effect of $\alpha$ (Eq. 13)") + "\n" + setup, fontsize=9)
    ax.legend(fontsize=7)
    _save(fig, path)


def draw_dashboard(data: dict, path: Path) -> None:
    """``dashboard.png``: losses over training, gates and weight norms over the traced sequence."""
    plt = _pyplot()
    d = data["dashboard"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    _draw_losses(axes[0, 0], d["metrics"], data["run"])
    gates = axes[0, 1]
    _per_head(gates, d["token"], d["eta"], r"momentum decay $\eta_t$", "tab:orange")
    _per_head(gates, d["token"], d["alpha"], r"forget $\alpha_t$", "tab:blue")
    _per_head(gates, d["token"], d["theta"], r"step $\theta_t$", "tab:red")
    gates.set_yscale("symlog", linthresh=1e-6)  # the three live on different scales; 0 stays drawable
    gates.set_ylabel(r"gate value ($\alpha_t, \eta_t$: fraction per token; $\theta_t$: step size)")
    gates.set_title("gates over the sequence (symmetric log scale)", fontsize=9)
    gates.set_xlabel(_token_label(data))
    gates.legend(fontsize=7)
    for ax, key, what in (
        (axes[1, 0], "weight_norm", r"$\|M_t^{(l)}\|$"),
        (axes[1, 1], "content_norm", r"$\|M_t^{(l)} - M_0^{(l)}\|$"),
    ):
        rows = d[key]  # (T, heads, layers)
        for layer in range(len(rows[0][0]) if rows else 0):
            color = f"C{layer}"
            _per_head(ax, d["token"], [[h[layer] for h in r] for r in rows], f"layer {layer + 1}", color)
        ax.set_ylabel(f"{what} (Frobenius norm)")
        ax.set_xlabel(_token_label(data))
        title = "memory weights" if key == "weight_norm" else "distance from the learned $M_0$"
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(_title(data, f"dashboard, sequence: {data['run']['sequence']}"), fontsize=10)
    _save(fig, path)


def _draw_losses(ax, metrics: list[dict], run: dict) -> None:
    ax.set_title("training (metrics.jsonl)", fontsize=9)
    ax.set_xlabel("training step")
    unit = "nats per answer byte" if run["sequence"].startswith("associative") else "nats per byte"
    ax.set_ylabel(f"loss ({unit})")
    if not metrics:
        ax.text(0.5, 0.5, "no metrics.jsonl in the run directory", ha="center", va="center",
                transform=ax.transAxes)  # fmt: skip
        return
    for key, style in (("train_loss", "-"), ("val_loss", "--")):
        points = [(m["step"], m[key]) for m in metrics if m.get(key) is not None]
        if points:
            ax.plot(*zip(*points, strict=True), style, marker="o", markersize=3, label=key.replace("_", " "))
    accuracy = [(m["step"], m["val_accuracy"]) for m in metrics if m.get("val_accuracy") is not None]
    if accuracy:
        right = ax.twinx()
        right.plot(*zip(*accuracy, strict=True), ":", marker="s", markersize=3, color="tab:green")
        right.set_ylabel("answer accuracy (fraction)", color="tab:green")
        right.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7, loc="upper center")


DRAW = {
    "surprise.png": draw_surprise,
    "memory_updates.png": draw_memory_updates,
    "forgetting.png": draw_forgetting,
    "dashboard.png": draw_dashboard,
}


def make_figures(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    seq_len: int | None = None,
    seed: int = 0,
    memory: int = 0,
) -> dict[str, Any]:
    """Write the four PNGs and ``figures.json`` of the run in ``run_dir`` into ``out``; return the data.

    Args:
        run_dir: a directory of ``neural-memory train`` (or its ``checkpoint.pt``).
        out: the figures' directory (default ``run_dir/figures``), created if needed.
        seq_len, seed, memory: see :func:`figure_data`.
    """
    run_dir = checkpoint_path(run_dir).parent
    model, config, step = load_run(run_dir)
    return write_figures(model, config, step, run_dir, out, seq_len=seq_len, seed=seed, memory=memory)


def write_figures(
    model: torch.nn.Module,
    config: TrainConfig,
    step: int,
    run_dir: Path,
    out: str | Path | None = None,
    **options: Any,
) -> dict[str, Any]:
    """:func:`make_figures` for a model already loaded (:func:`load_run`); ``options`` go to
    :func:`figure_data`."""
    data = figure_data(model, config, step, metrics=read_metrics(run_dir), **options)
    data["run"]["dir"] = str(run_dir)
    out = run_dir / "figures" if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / DATA_NAME).write_text(json.dumps(data, allow_nan=False) + "\n", encoding="utf-8")
    for name in FIGURES:
        DRAW[name](data, out / name)
    return data


__all__ = [
    "DATA_NAME",
    "FIGURES",
    "PROBE_ALPHAS",
    "draw_dashboard",
    "draw_forgetting",
    "draw_memory_updates",
    "draw_surprise",
    "figure_data",
    "load_run",
    "make_figures",
    "run_sequence",
    "write_figures",
]
