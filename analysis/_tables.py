"""Ablation tables from the runs DataFrame: one row per condition, statistics over seeds.

Layout per sweep mode (see :class:`analysis._plan.SweepPlan`):

- ``one_at_a_time``: one table per axis, its values in sweep order, the base run as the
  baseline row (at the position of its value when the axis lists it);
- ``grid``: a pivot of the metric over the first two axes (one per combination of any further
  axes), plus a row table of every combination against the first one;
- ``rows`` (include-only, zip, one-axis grid): one row per condition, the base run (or the
  first row) as the baseline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis._captions import (
    UNFINISHED_MARK, column_title, lower_is_better, note, pivot_caption, rows_caption,
)
from analysis._plan import Condition, SweepPlan, value_text
from analysis._stats import CI_LEVEL, Comparison, binomial_se, compare_paired, holm, seeds_needed
from suite.run.names import is_occlusion_key
from suite.run.records import RunState

__all__ = ["DEFAULT_EFFECT", "Table", "build_tables", "lower_is_better"]

DEFAULT_EFFECT = 1.0

FINISHED = RunState.FINISHED.value  # the runs frame holds states as text


@dataclass
class Table:
    """A rendered-ready table.

    Attributes:
        sweep: the sweep name.
        name: file stem, unique within a report (``<sweep>`` or ``<sweep>-<axis>``).
        title: one line.
        caption: what the numbers are (metric, statistic, test, interval, correction, n, markers).
        header: column titles (unicode: ± † Δ, turned into LaTeX by the renderer).
        rows: cell texts.
        bold: ``(row, column)`` cells holding a column's best value.
        data: the numbers behind the cells (one row per table row), for CSV.
        axis: the axis a plot puts on x (None for method rows and pivots).
        conditions: the conditions of the rows (None for pivots), for plots.
        kind: ``rows`` or ``pivot``.
        note: sentences printed under the table (seeds needed per comparison, the measurement
            error of top-1 on the validation set); empty when there is nothing to say.
    """

    sweep: str
    name: str
    title: str
    caption: str
    header: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)
    data: pd.DataFrame = field(default_factory=pd.DataFrame)
    axis: str | None = None
    conditions: list[Condition] | None = None
    kind: str = "rows"
    note: str = ""


def _fmt(value: float, digits: int = 1, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _p(value: float) -> str:
    if math.isnan(value):
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _hours(value: float) -> str:
    if math.isnan(value):
        return "–"
    if value == 0:
        return "0"
    return f"{value:.2g}" if value < 10 else f"{value:,.0f}"


class _Runs:
    """The runs of one sweep by condition: seeds, states and metric columns as lists (one pass)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self._by: dict[int, np.ndarray] = {}
        if len(frame):
            codes = frame["condition"].to_numpy()
            order = np.argsort(codes, kind="stable")
            bounds = np.flatnonzero(np.diff(codes[order])) + 1
            for chunk in np.split(order, bounds):
                self._by[int(codes[chunk[0]])] = chunk
        self._columns: dict[str, np.ndarray] = {}

    def column(self, name: str) -> np.ndarray:
        if name not in self._columns:
            if name in self.frame.columns:
                self._columns[name] = self.frame[name].to_numpy()
            else:
                self._columns[name] = np.full(len(self.frame), np.nan)
        return self._columns[name]

    def rows(self, cond: Condition) -> np.ndarray:
        return self._by.get(cond.index, np.array([], dtype=int))


def _values(runs: _Runs, cond: Condition, metric: str) -> tuple[dict[int, float], int, list[str]]:
    """seed -> metric of the finished runs, planned count, and the states of the others."""
    index = runs.rows(cond)
    seeds, states, values = runs.column("seed")[index], runs.column("state")[index], runs.column(metric)[index]
    out: dict[int, float] = {}
    other: list[str] = []
    for seed, state, value in zip(seeds, states, values):
        if state == FINISHED and value is not None and not (isinstance(value, float) and math.isnan(value)):
            out[int(seed)] = float(value)
        else:
            other.append(str(state))
    return out, len(cond.run_ids), other


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else math.nan


def _cell(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "–"
    return _fmt(mean) if math.isnan(std) else f"{_fmt(mean)} ± {_fmt(std)}"


def _row_label(cond: Condition, axis: str | None, plan: SweepPlan) -> str:
    if axis is None:
        return cond.label
    if axis in cond.values:
        return plan.value_label(axis, cond.values[axis])
    base = plan.base_values.get(axis)
    return f"{plan.value_label(axis, base)} (base)" if axis in plan.base_values and _simple(base) else "base"


def _simple(value: Any) -> bool:
    return value is None or isinstance(value, (int, float, str, bool)) or isinstance(value, list)


def _order_axis(plan: SweepPlan, axis: str) -> list[Condition]:
    """The base condition plus those that set ``axis``, in the axis's order."""
    base = next((c for c in plan.conditions if c.is_base), None)
    setting = [c for c in plan.conditions if list(c.values) == [axis]]
    rank = {value_text(v): i for i, v in enumerate(plan.axes.get(axis, []))}
    setting.sort(key=lambda c: rank.get(value_text(c.values[axis]), len(rank)))
    if base is None:
        return setting
    base_text = value_text(plan.base_values[axis]) if axis in plan.base_values else None
    if base_text in rank:
        position = sum(1 for c in setting if rank.get(value_text(c.values[axis]), 0) < rank[base_text])
        return [*setting[:position], base, *setting[position:]]
    numbers = [_number(c.values[axis]) for c in setting]
    base_number = _number(plan.base_values.get(axis))
    if base_number is not None and None not in numbers and numbers == sorted(numbers):  # type: ignore[type-var]
        position = sum(1 for n in numbers if n < base_number)  # type: ignore[operator]
        return [*setting[:position], base, *setting[position:]]
    return [base, *setting]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _metric_columns(frame: pd.DataFrame, metric: str) -> list[str]:
    extra = [m for m in ("best_top1_max",) if m in frame.columns and m != metric and frame[m].notna().any()]
    occ = sorted(c for c in frame.columns if is_occlusion_key(c) and frame[c].notna().any())
    return [metric, *extra, *occ]


def _n_val(runs: _Runs, cond: Condition) -> tuple[float, str]:
    """Validation images of the row's finished runs (the fewest if they differ) and where that came from.

    The summary's ``val_images`` when a run records it; else the resolved config's ``data.val_size``:
    the exact number for the built-in data, an upper bound for an ImageFolder (a cap on ``val/``).
    NaN when neither says (an ImageFolder without a cap).
    """
    index = runs.rows(cond)
    done = index[runs.column("state")[index] == FINISHED]
    recorded = pd.to_numeric(pd.Series(runs.column("val_images")[done]), errors="coerce").dropna()
    if len(recorded):
        return float(recorded.min()), "the run summary (val_images)"
    sizes = pd.to_numeric(pd.Series(runs.column("cfg.data.val_size")[done]), errors="coerce").dropna()
    if not len(sizes):
        return math.nan, ""
    folder = any(source == "folder" for source in runs.column("cfg.data.source")[done])
    return float(sizes.min()), "the config's data.val_size" + (" (a cap: val/ may hold fewer)" if folder else "")


def _rows_table(
    runs: _Runs, plan: SweepPlan, conds: list[Condition], baseline: Condition | None,
    *, metric: str, name: str, title: str, axis: str | None, effect: float = DEFAULT_EFFECT,
) -> Table:
    columns = _metric_columns(runs.frame, metric)
    first = axis if axis is not None else "condition"
    header = [first] + [column_title(c, metric) for c in columns] + ["n", "Δ " + column_title(metric, metric),
                                                                     "p", "p (Holm)", f"{CI_LEVEL * 100:.0f} % CI",
                                                                     "GPU-h"]
    base_values = _values(runs, baseline, metric)[0] if baseline is not None else {}
    rows: list[list[str]] = []
    data: list[dict[str, Any]] = []
    means: dict[str, list[float]] = {c: [] for c in columns}
    compared: list[tuple[int, str, Comparison]] = []
    errors: list[tuple[float, float, str]] = []
    unfinished_any = False
    for i, cond in enumerate(conds):
        label = _row_label(cond, axis, plan)
        cells = [label]
        record: dict[str, Any] = {"sweep": plan.name, "label": label}
        if axis is not None:
            record[axis] = value_text(cond.values.get(axis, plan.base_values.get(axis)))
        for key in columns:
            values, planned, other = _values(runs, cond, key)
            mean, std = _mean_std(list(values.values()))
            cells.append(_cell(mean, std))
            means[key].append(mean)
            record[f"{key}_mean"], record[f"{key}_std"], record[f"{key}_n"] = mean, std, len(values)
        values, planned, other = _values(runs, cond, metric)
        mark = f" {UNFINISHED_MARK}" if len(values) < planned else ""
        unfinished_any |= bool(mark)
        cells.append(f"{len(values)}/{planned}{mark}")
        record["planned"] = planned
        record["unfinished"] = planned - len(values)
        record["unfinished_states"] = ",".join(sorted(set(other)))
        n_val, n_val_from = _n_val(runs, cond)
        top1_mean = _mean_std(list(_values(runs, cond, "top1")[0].values()))[0]
        se = binomial_se(top1_mean, n_val)
        errors.append((se, n_val, n_val_from))
        record.update(n_val=n_val, n_val_from=n_val_from, top1_binomial_se=se)
        if baseline is not None and cond is baseline:
            cells += ["baseline", "", "", ""]
            record.update(delta=0.0, pairs=len(values), diff_sd=math.nan, p=math.nan, p_holm=math.nan,
                          ci_low=math.nan, ci_high=math.nan, ci_interval="", effect=effect,
                          seeds_needed=math.nan, baseline=True)
        elif baseline is not None:
            cmp = compare_paired(values, base_values)
            compared.append((i, label, cmp))
            ci = "–" if math.isnan(cmp.ci_low) else f"[{_fmt(cmp.ci_low, sign=True)}, {_fmt(cmp.ci_high, sign=True)}]"
            cells += [_fmt(cmp.delta, sign=True), _p(cmp.p), "–", ci]
            record.update(delta=cmp.delta, pairs=cmp.n, diff_sd=cmp.sd, p=cmp.p, p_holm=math.nan,
                          ci_low=cmp.ci_low, ci_high=cmp.ci_high, ci_interval=cmp.interval, effect=effect,
                          seeds_needed=seeds_needed(cmp.sd, effect), baseline=False)
        else:
            cells += ["–", "–", "–", "–"]
        hours = _sum(runs, cond, "gpu_hours")
        cells.append(_hours(hours))
        record["gpu_hours"] = hours
        record["run_ids"] = " ".join(cond.run_ids.values())
        rows.append(cells)
        data.append(record)
    holm_column = header.index("p (Holm)")
    for (i, _, _), adjusted in zip(compared, holm([c.p for _, _, c in compared])):
        rows[i][holm_column] = _p(adjusted)
        data[i]["p_holm"] = adjusted
    bold = set()
    for j, key in enumerate(columns, start=1):
        finite = [m for m in means[key] if not math.isnan(m)]
        if len(finite) > 1:
            best = min(finite) if lower_is_better(key) else max(finite)
            bold |= {(i, j) for i, m in enumerate(means[key]) if m == best}
    pairs = [(label, c.n) for _, label, c in compared]
    intervals = {c.interval for _, _, c in compared if c.interval}
    caption = rows_caption(metric, _row_label(baseline, axis, plan) if baseline else "none", pairs, unfinished_any,
                       intervals, any(is_occlusion_key(key) for key in columns),
                       sum(1 for _, _, c in compared if not math.isnan(c.p)))
    under = note(metric, effect, [(label, data[i]["seeds_needed"]) for i, label, _ in compared], errors)
    return Table(plan.name, name, title, caption, header, rows, bold, pd.DataFrame(data), axis, conds, note=under)


def _sum(runs: _Runs, cond: Condition, column: str) -> float:
    values = pd.to_numeric(pd.Series(runs.column(column)[runs.rows(cond)]), errors="coerce").dropna()
    return float(values.sum()) if len(values) else math.nan


def _pivot(runs: _Runs, plan: SweepPlan, *, metric: str, pivot: tuple[str, str] | None) -> list[Table]:
    axes = list(plan.axes)
    a, b = pivot if pivot is not None and all(k in plan.axes for k in pivot) else (axes[0], axes[1])
    rest = [k for k in axes if k not in (a, b)]
    groups: dict[str, list[Condition]] = {}
    for cond in plan.conditions:
        if not all(k in cond.values for k in (a, b)):
            continue
        key = " ".join(f"{k}={value_text(cond.values.get(k))}" for k in rest)
        groups.setdefault(key, []).append(cond)
    tables = []
    for i, (rest_key, conds) in enumerate(groups.items()):
        cols = [value_text(v) for v in plan.axes[b]]
        rows_vals = [value_text(v) for v in plan.axes[a]]
        grid: dict[tuple[str, str], Condition] = {
            (value_text(c.values[a]), value_text(c.values[b])): c for c in conds
        }
        rows: list[list[str]] = []
        means: list[list[float]] = []
        data = []
        unfinished_any = False
        for rv, raw in zip(rows_vals, plan.axes[a]):
            cells = [plan.value_label(a, raw)]
            mrow = []
            for cv in cols:
                cond = grid.get((rv, cv))
                if cond is None:
                    cells.append("–")
                    mrow.append(math.nan)
                    continue
                values, planned, _ = _values(runs, cond, metric)
                mean, std = _mean_std(list(values.values()))
                mark = f" {UNFINISHED_MARK}" if len(values) < planned else ""
                unfinished_any |= bool(mark)
                cells.append(f"{_cell(mean, std)} ({len(values)}){mark}")
                mrow.append(mean)
                data.append({"sweep": plan.name, a: rv, b: cv, f"{metric}_mean": mean, f"{metric}_std": std,
                             f"{metric}_n": len(values), "planned": planned})
            rows.append(cells)
            means.append(mrow)
        flat = [m for r in means for m in r if not math.isnan(m)]
        bold = set()
        if len(flat) > 1:
            best = min(flat) if lower_is_better(metric) else max(flat)
            bold = {(i_, j + 1) for i_, r in enumerate(means) for j, m in enumerate(r) if m == best}
        caption = pivot_caption(metric, a, b, rest_key, unfinished_any)
        suffix = f"-pivot{i + 1}" if len(groups) > 1 else "-pivot"
        tables.append(Table(plan.name, plan.name + suffix, f"{plan.name}: {metric} over {a} × {b}"
                            + (f" ({rest_key})" if rest_key else ""), caption,
                            [f"{a} \\ {b}", *[plan.value_label(b, v) for v in plan.axes[b]]], rows,
                            bold, pd.DataFrame(data), None, None, "pivot"))
    return tables


def build_tables(
    frame: pd.DataFrame, plan: SweepPlan, *, metric: str = "top1", pivot: tuple[str, str] | None = None,
    effect: float = DEFAULT_EFFECT,
) -> list[Table]:
    """The tables of one sweep.

    Args:
        frame: the runs of this sweep (columns of :func:`analysis.report.collect`).
        plan: the sweep's plan.
        metric: the summary metric compared (``top1`` = final-epoch top-1).
        pivot: the (rows, columns) axes of a grid sweep's pivot (default: its first two axes;
            ignored when the sweep lacks either).
        effect: the true difference (metric units, e.g. 1 point of top-1) for which each row's note
            gives the seeds needed at 80 % power.

    Returns:
        One table per axis (``one_at_a_time``), pivots plus a row table (``grid``), or one row
        table (``rows``).
    """
    runs = _Runs(frame.reset_index(drop=True))
    if plan.mode == "one_at_a_time":
        base = next((c for c in plan.conditions if c.is_base), None)
        return [
            _rows_table(runs, plan, _order_axis(plan, axis), base, metric=metric,
                        name=f"{plan.name}-{axis.replace('.', '-')}", title=f"{plan.name}: {axis}", axis=axis,
                        effect=effect)
            for axis in plan.axes
        ]
    conds = list(plan.conditions)
    if plan.axes:  # the base run is the reference of an axis
        baseline = next((c for c in conds if c.is_base), conds[0] if conds else None)
    else:  # a methods sweep lists its reference (no mixing) first
        baseline = conds[0] if conds else None
    axis = next(iter(plan.axes)) if len(plan.axes) == 1 and not any(
        set(c.values) != set(plan.axes) for c in conds) else None
    row_table = _rows_table(runs, plan, conds, baseline, metric=metric, name=plan.name, title=plan.name, axis=axis,
                            effect=effect)
    if plan.mode == "grid":
        return [*_pivot(runs, plan, metric=metric, pivot=pivot), row_table]
    return [row_table]
