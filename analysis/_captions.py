"""The words of a table: metric and column titles, captions, and the note under a row table.

:mod:`analysis._tables` computes the numbers; this module says what they are (the test, the
interval, the correction, n per row, the seeds needed, the measurement error), in the words the
Markdown, LaTeX and terminal outputs share.
"""

from __future__ import annotations

import math

from analysis._stats import (
    ALPHA, BCA_INTERVAL, BOOTSTRAP_MIN_PAIRS, BOOTSTRAP_SAMPLES, CI_LEVEL, POWER, T_INTERVAL,
)
from suite.run.names import is_occlusion_key, occlusion_percent

__all__ = [
    "METRIC_TEXT", "UNFINISHED_MARK", "column_title", "in_points", "lower_is_better", "note", "pivot_caption",
    "rows_caption",
]

UNFINISHED_MARK = "†"
UNFINISHED_TEXT = f" {UNFINISHED_MARK} = not all seeds finished: the statistics use the finished seeds only."
METRIC_TEXT = {
    "top1": "final-epoch top-1 (%)",
    "best_top1": "best-epoch top-1 (%)",
    "best_top1_max": "best top-1 over epochs, raw or EMA (%)",
    "ema_top1": "final-epoch EMA top-1 (%)",
    "top5": "final-epoch top-5 (%)",
    "val_loss": "final-epoch validation loss",
}
_LOWER_IS_BETTER = {"gpu_hours", "wall_seconds", "setup_seconds", "train_seconds", "tokenmix_fallbacks"}


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of ``metric`` is the better one (losses, time, cost).

    Example:
        >>> lower_is_better("val_loss"), lower_is_better("top1")
        (True, False)
    """
    return metric.endswith("loss") or metric in _LOWER_IS_BETTER


def in_points(metric: str) -> bool:
    """Top-1/top-5 style metrics, in points (%)."""
    return "top1" in metric or "top5" in metric


def column_title(key: str, metric: str) -> str:
    """A metric column's title (``top-1``, ``best top-1``, ``occl. 50 %``)."""
    if key == metric:
        return {"top1": "top-1", "top5": "top-5", "best_top1": "best top-1"}.get(metric, metric)
    if key == "best_top1_max":
        return "best top-1"
    if is_occlusion_key(key):
        return f"occl. {occlusion_percent(key)} %"
    return key


def _n_text(pairs: list[tuple[str, int]]) -> str:
    counts = {n for _, n in pairs}
    if not pairs:
        return "no compared rows"
    if len(counts) == 1:
        return f"n = {pairs[0][1]} pairs for every compared row"
    return "n pairs per row: " + ", ".join(f"{label} {n}" for label, n in pairs)


def _interval_text(intervals: set[str]) -> str:
    t_text = ("Student t interval of Δ (df = n − 1), the interval of the t-test: it excludes 0 exactly when "
              "p < 0.05")
    bca = f"BCa bootstrap of Δ (scipy.stats.bootstrap, {BOOTSTRAP_SAMPLES:,} resamples)"
    if BCA_INTERVAL in intervals and T_INTERVAL in intervals:
        n = BOOTSTRAP_MIN_PAIRS
        return f"{t_text}, for rows with fewer than {n} pairs; {bca} for rows with {n} or more"
    if BCA_INTERVAL in intervals:
        return f"{bca} (every row has at least {BOOTSTRAP_MIN_PAIRS} pairs)"
    return t_text


def rows_caption(
    metric: str, baseline: str, pairs: list[tuple[str, int]], unfinished: bool, intervals: set[str], occlusion: bool,
    tested: int,
) -> str:
    """What the table's numbers are; ``tested``: the comparisons with a p (Holm's family)."""
    what = METRIC_TEXT.get(metric, metric)
    level = f"{CI_LEVEL * 100:.0f} %"
    best = (f"lowest {column_title(metric, metric)}, highest top-1 in the top-1 columns"
            if lower_is_better(metric) else "the highest")
    text = (
        f"{what[0].upper()}{what[1:]} on the validation set: mean ± sample std over seeds; n = finished seeds of "
        f"planned. {'Occlusion columns: top-1 with that share of patches blanked. ' if occlusion else ''}"
        f"Δ = mean paired difference (row − baseline) to the baseline row ({baseline}), paired by seed over "
        f"the seeds both finished ({_n_text(pairs)}). p = two-sided paired t-test (df = n − 1); p (Holm) = p adjusted by Holm's step-down "
        f"method over the {tested} comparison{'s' if tested != 1 else ''} with the baseline that have a p. "
        f"{level} CI = {_interval_text(intervals)}. p and CI are – with fewer than 2 pairs or when every difference "
        f"is the same (no spread to test). GPU-h = sum over the row's runs. Bold = best mean per column ({best})."
    )
    return text + (UNFINISHED_TEXT if unfinished else "")


def _effect_text(metric: str, effect: float) -> str:
    if in_points(metric):
        return f"{effect:g} point{'' if effect == 1 else 's'} of {column_title(metric, metric)}"
    return f"{effect:g} ({metric})"


def _seeds_text(value: float) -> str:
    if math.isnan(value):
        return "–"
    return f"> {100_000:,}" if math.isinf(value) else f"{int(value)}"


def note(
    metric: str, effect: float, needed: list[tuple[str, float]], errors: list[tuple[float, float, str]]
) -> str:
    """Seeds needed per comparison, and the measurement error of top-1 on the validation set."""
    parts = []
    if needed:
        listed = "; ".join(f"{label}: {_seeds_text(n)}" for label, n in needed)
        parts.append(
            f"Seeds needed to detect a true Δ of {_effect_text(metric, effect)} with {POWER * 100:.0f} % power "
            f"(two-sided paired t-test, α = {ALPHA:g}, from the observed sd of the paired differences): {listed}"
            + (" (– = fewer than 2 pairs or no spread observed)."
               if any(math.isnan(n) for _, n in needed) else ".")
        )
    known = [(se, n_val, source) for se, n_val, source in errors if not math.isnan(se)]
    if known:
        low, high = min(se for se, _, _ in known), max(se for se, _, _ in known)
        sizes = sorted({int(n) for _, n, _ in known})
        sources = sorted({source for _, _, source in known})
        size_text = " or ".join(f"{n:,}" for n in sizes)
        span = f"{low:.1f}" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f}–{high:.1f}"
        parts.append(
            f"Measurement error of one run's top-1 from the finite validation set alone ({size_text} images, "
            f"from {' and '.join(sources)}): binomial SE {span} points, apart from the seed-to-seed spread."
        )
    return " ".join(parts)


def pivot_caption(metric: str, rows: str, columns: str, rest: str, unfinished: bool) -> str:
    """What a pivot's cells are: mean ± std over the finished seeds (their count), and the best cell."""
    what = METRIC_TEXT.get(metric, metric)
    caption = (f"{what[0].upper()}{what[1:]} on the validation set: mean ± sample std over seeds (n finished). "
               f"Rows: {rows}; columns: {columns}" + (f"; {rest}" if rest else "")
               + f". Bold = best cell ({'lowest' if lower_is_better(metric) else 'highest'} {metric}).")
    return caption + (UNFINISHED_TEXT if unfinished else "")
