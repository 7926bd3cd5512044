"""PNG plots of a table: the metric against the axis value, and mean training curves per row.

matplotlib is imported here only (with the non-interactive Agg backend), so ``suite`` never
needs it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis._captions import METRIC_TEXT
from analysis._plan import SweepPlan
from analysis._tables import Table

__all__ = ["MAX_BARS", "MAX_CURVES", "plot_curves", "plot_metric", "wants_curves"]

MAX_BARS = 40  # rows above this are not plotted (the table and CSV hold them)
MAX_CURVES = 12  # lines above this make an unreadable curve plot


def wants_curves(plan: SweepPlan) -> bool:
    """Whether any table of the sweep is small enough for a curve plot (so its curves are read)."""
    if plan.mode == "one_at_a_time":
        return any(len(values) + 1 <= MAX_CURVES for values in plan.axes.values())
    return len(plan.conditions) <= MAX_CURVES


def _pyplot():  # noqa: ANN202 - matplotlib.pyplot module
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise RuntimeError(
            "PNG plots need matplotlib: pip install matplotlib (or leave png out of --format)"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metric(table: Table, metric: str, out: Path) -> Path | None:
    """Mean ± std of ``metric`` per row, against the axis value (or per row for method tables).

    Args:
        table: a row table (pivots are not plotted).
        metric: the compared metric.
        out: the PNG file to write.

    Returns:
        ``out``, or None when the table has nothing to plot.
    """
    data = table.data
    if table.kind != "rows" or data.empty or f"{metric}_mean" not in data or len(data) > MAX_BARS:
        return None
    means = data[f"{metric}_mean"].to_numpy(dtype=float)
    if np.isnan(means).all():
        return None
    plt = _pyplot()
    stds = np.nan_to_num(data[f"{metric}_std"].to_numpy(dtype=float))
    labels = [str(v) for v in data["label"]]
    numeric = table.axis is not None and all(_is_number(v) for v in data[table.axis])
    counts = list(data.get(f"{metric}_n", [None] * len(means)))
    if numeric:
        fig, ax = plt.subplots(figsize=(6.0, 3.4), dpi=120)
        xs = np.array([float(v) for v in data[table.axis]])
        order = np.argsort(xs)
        ax.errorbar(xs[order], means[order], yerr=stds[order], marker="o", capsize=4)
        for x, m, n in zip(xs, means, counts):
            if not math.isnan(m):
                ax.annotate(f"n={n}", (x, m), textcoords="offset points", xytext=(6, -10), fontsize=7)
        ax.set_xlabel(table.axis)
        ax.set_ylabel(METRIC_TEXT.get(metric, metric))
    else:  # one dot per row, top to bottom in table order: long labels stay readable
        width = min(11.0, 4.5 + 0.065 * max(len(s) for s in labels))
        fig, ax = plt.subplots(figsize=(width, 0.45 * len(labels) + 1.3), dpi=120)
        y = np.arange(len(labels))[::-1]
        ax.errorbar(means, y, xerr=stds, fmt="o", capsize=4, color="#4c72b0")
        ax.set_yticks(y, [f"{label}  (n={n})" for label, n in zip(labels, counts)], fontsize=8)
        finite = means[~np.isnan(means)]
        low = float(np.nanmin(means - stds))
        high = float(np.nanmax(means + stds))
        pad = max(1.0, 0.15 * (high - low))
        ax.set_xlim(max(0.0, low - pad) if finite.size else 0.0, high + pad)
        ax.set_xlabel(METRIC_TEXT.get(metric, metric))
    ax.set_title(f"{table.title}: mean ± std over seeds", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def _is_number(value: object) -> bool:
    try:
        float(str(value))
    except ValueError:
        return False
    return True


SPARSE_POINTS = 30


def curve_series(
    table: Table, runs: pd.DataFrame, curves: pd.DataFrame, key: str = "top1"
) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, int]]:
    """Per row of ``table``: ``(label, epochs, mean, std, n seeds)`` over its finished runs.

    Only epochs that hold ``key`` count (a run with ``eval.every=20`` has a point every 20
    epochs); rows without any point are left out.
    """
    sweep_runs = runs[(runs["sweep"] == table.sweep) & (runs["state"] == "finished")]
    labels = list(table.data["label"]) if "label" in table.data else [c.label for c in table.conditions or []]
    series = []
    for cond, label in zip(table.conditions or [], labels):
        ids = sweep_runs.loc[sweep_runs["condition"] == cond.index, "run_id"]
        part = curves[curves["run_id"].isin(set(ids))].drop_duplicates(["run_id", "epoch"])
        part = part[part[key].notna()]  # epochs without evaluation (eval.every > 1) have no point
        if part.empty:
            continue
        stats = part.groupby("epoch")[key].agg(["mean", "std", "count"]).reset_index()
        series.append((
            str(label),
            stats["epoch"].to_numpy(dtype=float),
            stats["mean"].to_numpy(dtype=float),
            np.nan_to_num(stats["std"].to_numpy(dtype=float)),
            int(stats["count"].max()),
        ))
    return series


def plot_curves(table: Table, runs: pd.DataFrame, curves: pd.DataFrame, out: Path, key: str = "top1") -> Path | None:
    """Mean validation curve per row over its finished seeds, with a ±std band.

    Args:
        table: a row table (its ``conditions``).
        runs: the runs DataFrame (``run_id``, ``condition``, ``state``, ``sweep``).
        curves: the curves DataFrame (``run_id``, ``epoch``, ``key``).
        out: the PNG file.
        key: the curve plotted.

    Returns:
        ``out``, or None when no row has a curve.
    """
    if table.conditions is None or curves.empty or key not in curves or len(table.conditions) > MAX_CURVES:
        return None
    series = curve_series(table, runs, curves, key)
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9.0, 3.6), dpi=120)
    drawn = 0
    for label, epochs, mean, std, n in series:
        marker = "o" if len(epochs) <= SPARSE_POINTS else None  # a few evaluations: show where they are
        line, = ax.plot(epochs, mean, label=f"{label} (n={n})", linewidth=1.4, marker=marker, markersize=3)
        ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.18, linewidth=0)
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("epoch")
    ax.set_ylabel({"top1": "validation top-1 (%)", "top5": "validation top-5 (%)"}.get(key, f"validation {key}"))
    ax.set_title(f"{table.title}: mean over finished seeds, band = ±std", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
