"""Matplotlib figures of the experiments (Agg backend: files only, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from neural_memory.experiments.stats import Interval


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bars_with_ci(names: Sequence[str], intervals: Sequence[Interval], *, ylabel: str, title: str, path: Path):
    """One bar per variant with its 95 % interval as an error bar."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(names) + 2), 4))
    estimates = [i.estimate for i in intervals]
    errors = [[i.estimate - i.low for i in intervals], [i.high - i.estimate for i in intervals]]
    ax.bar(range(len(names)), estimates, yerr=errors, capsize=4, color="tab:blue", alpha=0.8)
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    low = min(i.low for i in intervals)
    high = max(i.high for i in intervals)
    ax.set_ylim(max(0.0, low - 0.1 * (high - low + 1e-9)), high + 0.1 * (high - low + 1e-9))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def lines_with_ci(
    x: Sequence[float],
    series: dict[str, Sequence[Interval]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    path: Path,
    panels: dict[str, dict[str, Sequence[Interval]]] | None = None,
):
    """One line per series with a shaded 95 % band; ``panels`` draws several such plots side by side."""
    plt = _pyplot()
    panels = panels or {title: series}
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (panel_title, panel) in zip(axes[0], panels.items(), strict=True):
        for name, intervals in panel.items():
            ax.plot(x, [i.estimate for i in intervals], marker="o", label=name)
            ax.fill_between(x, [i.low for i in intervals], [i.high for i in intervals], alpha=0.15)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(panel_title)
        ax.set_xticks(list(x))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


__all__ = ["bars_with_ci", "lines_with_ci"]
