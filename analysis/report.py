"""Ablation reports: collect a sweep's runs, tabulate them over seeds, write Markdown/LaTeX/CSV/PNG.

:func:`collect` reads the runs of one or more sweep files into one DataFrame (from the run
directories, cached, or from the W&B public API); :func:`build_tables` turns each sweep into
its ablation tables; :func:`write_report` writes a report folder with ``index.md``.

Example:
    >>> from analysis.report import collect, write_report  # doctest: +SKIP
    >>> runs = collect(["sweeps/demo/mask_ratio.yaml"])  # doctest: +SKIP
    >>> runs.frame[["label", "seed", "state", "top1"]].head()  # doctest: +SKIP
    >>> write_report(runs, "reports/demo", formats=("md", "tex", "csv", "png"))  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import _plots, render
from analysis._plan import SweepPlan, plan_sweep, value_text
from analysis._records import Curves, RecordCache, RunData, flatten, problem_text
from analysis._tables import DEFAULT_EFFECT, Table, build_tables
from suite.run.names import CURVE_KEYS, SUMMARY_COLUMNS, is_summary_column
from suite.run.records import RunState
from sweeps.spec import SweepError

__all__ = ["FORMATS", "Collection", "Report", "all_tables", "build_tables", "collect", "sweep_files", "write_report"]

FORMATS: tuple[str, ...] = ("md", "tex", "csv", "png")


@dataclass
class Collection:
    """The runs of one or more sweeps.

    Attributes:
        plans: the sweeps, in the order given.
        frame: one row per planned run. Columns: ``run_id``, ``sweep``, ``condition`` (index of the
            row in sweep order), ``label`` (what differs from the base run), ``seed``, ``state``
            (the value of the run's :class:`~suite.run.records.RunState`: ``finished``,
            ``pruned``, ``failed``, ``interrupted``, ``running``, ``new``, ``corrupt``,
            ``missing``; from W&B also ``pending`` and ``cancelled``), ``problem`` (one line
            naming the file and the fix, or None), ``source`` (run directory or
            ``wandb:ENTITY/PROJECT``), ``axis.<key>`` (the sweep's axis values, as written; None
            where the run keeps the base value), the summary metrics
            (:data:`suite.run.names.SUMMARY_COLUMNS` plus every ``occ<NN>_top1``; NaN unless
            finished) and ``cfg.<dotted key>`` (the flattened resolved config; lists as JSON text).
        curves: one row per run and epoch: ``run_id``, ``epoch`` and the curves of
            :data:`suite.run.names.CURVE_KEYS` that were logged.
        cache_hits: runs read from the cache.
        cache_misses: runs (re)read from their files or W&B.
    """

    plans: list[SweepPlan]
    frame: pd.DataFrame
    curves: pd.DataFrame
    cache_hits: int = 0
    cache_misses: int = 0

    def problems(self) -> pd.DataFrame:
        """Runs that are not finished, with their state and problem line."""
        cols = ["sweep", "label", "seed", "run_id", "state", "problem"]
        if self.frame.empty:
            return pd.DataFrame(columns=cols)
        return self.frame.loc[self.frame["state"] != RunState.FINISHED.value, cols].reset_index(drop=True)


def sweep_files(paths: Iterable[Path | str]) -> list[Path]:
    """Sweep files named directly or found in folders (``*.yaml`` of the folder, not below).

    Raises:
        SweepError: a path does not exist or a folder holds no sweep file.
    """
    files: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.glob("*.y*ml") if p.suffix in (".yaml", ".yml"))
            if not found:
                raise SweepError(f"{path}: no sweep file (*.yaml) in this folder; give sweep files or their folder")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise SweepError(f"{path}: no such sweep file or folder")
    return list(dict.fromkeys(files))


def _row(plan: SweepPlan, cond_index: int, values: dict[str, Any], seed: int, rid: str, run: RunData,
         source: str) -> dict[str, Any]:
    record = run.record
    row: dict[str, Any] = {
        "run_id": rid, "sweep": plan.name, "condition": cond_index,
        "label": plan.conditions[cond_index].label, "seed": seed, "state": record.state.value,
        "problem": problem_text(run), "source": source,
    }
    for axis in plan.axes:
        row[f"axis.{axis}"] = value_text(values[axis]) if axis in values else None
    if record.state.is_finished():
        for key, value in (record.summary or {}).items():
            if is_summary_column(key) and (value is None or isinstance(value, (int, float, str, bool))):
                row[key] = value
    for key, value in flatten(record.config).items():
        row[f"cfg.{key}"] = value
    return row


def collect(
    sources: Sequence[Path | str],
    *,
    overrides: Sequence[str] = (),
    output_root: Path | None = None,
    origin: str = "runs",
    wandb_path: str | None = None,
    api: Any = None,
    cache: bool = True,
    curves: bool = True,
    all_curves: bool = False,
) -> Collection:
    """Read every planned run of the given sweeps into one DataFrame.

    Args:
        sources: sweep files or folders of sweep files.
        overrides: run config overrides the sweeps were launched with (they change run ids).
        output_root: the output root the sweeps were launched with, if not their own.
        origin: ``runs`` (run directories, default) or ``wandb`` (the W&B public API).
        wandb_path: ``ENTITY/PROJECT`` for ``origin="wandb"``.
        api: the W&B API object (default ``wandb.Api()``); tests pass a stand-in.
        cache: reuse parsed records and plans whose files did not change.
        curves: read per-epoch metrics where a curve plot will use them (sweeps whose tables
            have at most :data:`analysis._plots.MAX_CURVES` rows).
        all_curves: read the per-epoch metrics of every run (for your own analysis of ``curves``).

    Returns:
        The :class:`Collection`; unreadable or missing runs are rows with their state and problem.

    Raises:
        SweepError: a sweep file is invalid, or ``origin`` is unknown.
    """
    if origin not in ("runs", "wandb"):
        raise SweepError(f"--from {origin}: unknown source; choose runs or wandb")
    if origin == "wandb" and not wandb_path:
        raise SweepError("--from wandb needs --wandb-path ENTITY/PROJECT")
    plans = [
        plan_sweep(path, list(overrides), output_root=output_root, cache=cache) for path in sweep_files(sources)
    ]
    frames: list[pd.DataFrame] = []
    curve_frames: list[pd.DataFrame] = []
    hits = misses = 0
    if origin == "wandb" and api is None:
        import wandb

        api = wandb.Api()
    stores: dict[Path, RecordCache] = {}
    for plan in plans:
        want = all_curves or (curves and _plots.wants_curves(plan))
        if origin == "wandb":
            from analysis._wandb import fetch_wandb

            records = fetch_wandb(api, str(wandb_path), plan.group, plan.run_ids(), curves=want)
            misses += len(records)
            part, curve_part = _sweep_rows(plan, records.__getitem__, want, f"wandb:{wandb_path}")
        else:
            store = stores.get(plan.output_root) or RecordCache(plan.output_root, enabled=cache)
            stores[plan.output_root] = store
            part, curve_part, found = _sweep_rows_cached(plan, store, want)
            hits += found
        frames.append(part)
        curve_frames.append(curve_part)
    for store in stores.values():
        store.save()
        misses += store.misses
        hits += store.hits
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    for key in ("top1", "gpu_hours"):
        if key not in frame.columns:
            frame[key] = np.nan
    curves_frame = pd.concat([c for c in curve_frames if len(c)] or [_curves_frame([])], ignore_index=True)
    curves_frame = curves_frame.drop_duplicates(["run_id", "epoch"], ignore_index=True)  # runs shared by sweeps
    return Collection(plans, frame, curves_frame, hits, misses)


def _sweep_rows(
    plan: SweepPlan, get: Callable[[str], RunData], want: bool, source: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows: list[dict[str, Any]] = []
    parts: list[tuple[str, Curves]] = []
    for cond in plan.conditions:
        for seed, rid in cond.run_ids.items():
            run = get(rid)
            where = source or str(plan.output_root / rid)
            rows.append(_row(plan, cond.index, cond.values, seed, rid, run, where))
            if want and run.curves and run.record.state is RunState.FINISHED:
                parts.append((rid, run.curves))
    return pd.DataFrame(rows), _curves_frame(parts)


def _sweep_rows_cached(
    plan: SweepPlan, store: RecordCache, want: bool
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """A sweep's rows; the assembled rows are reused when no record of the sweep changed."""
    layout = [(c.index, c.label, seed, rid) for c in plan.conditions for seed, rid in c.run_ids.items()]
    sigs = {rid: store.signature(rid) for *_, rid in layout}
    key = (plan.name, str(plan.output_root), repr(plan.axes), want, tuple(layout), tuple(sigs.values()))
    cached = store.assembled(plan.name, key)
    if cached is not None:
        return cached[0], cached[1], len(layout)
    part, curve_part = _sweep_rows(plan, lambda rid: store.get(rid, curves=want, sig=sigs[rid]), want, "")
    if not (part["state"] == RunState.RUNNING.value).any():  # a lock's release leaves no trace to compare
        store.store_assembled(plan.name, key, (part, curve_part))
    return part, curve_part, 0


def _curves_frame(parts: list[tuple[str, Curves]]) -> pd.DataFrame:
    if not parts:
        return pd.DataFrame(columns=["run_id", "epoch", *CURVE_KEYS])
    lengths = [len(c["epoch"]) for _, c in parts]
    data: dict[str, Any] = {
        "run_id": pd.Categorical.from_codes(
            np.repeat(np.arange(len(parts)), lengths), categories=[rid for rid, _ in parts]
        ),
        "epoch": np.concatenate([c["epoch"] for _, c in parts]),
    }
    for key in CURVE_KEYS:
        if any(key in c for _, c in parts):
            data[key] = np.concatenate(
                [c.get(key, np.full(n, np.nan, dtype=np.float32)) for (_, c), n in zip(parts, lengths)]
            )
    return pd.DataFrame(data)


@dataclass
class Report:
    """What :func:`write_report` wrote."""

    out: Path
    index: Path
    tables: list[Table]
    files: list[Path] = field(default_factory=list)


def all_tables(
    collection: Collection, *, metric: str = "top1", pivot: tuple[str, str] | None = None,
    effect: float = DEFAULT_EFFECT,
) -> list[Table]:
    """Every sweep's tables, in the order of the sweeps (``pivot``, ``effect``: see :func:`build_tables`)."""
    if pivot is not None:
        grids = [p for p in collection.plans if p.mode == "grid"]
        for plan in grids:
            unknown = [k for k in pivot if k not in plan.axes]
            if unknown:
                raise SweepError(
                    f"--pivot {','.join(pivot)}: {plan.path} has no axis {unknown[0]}; its axes: {', '.join(plan.axes)}"
                )
    tables: list[Table] = []
    for plan in collection.plans:
        part = collection.frame[collection.frame["sweep"] == plan.name] if len(collection.frame) else collection.frame
        if metric not in part.columns:
            part = part.assign(**{metric: np.nan})
        tables += build_tables(part, plan, metric=metric, pivot=pivot, effect=effect)
    return tables


class _Relative:
    """Paths as ``index.md`` shows them: relative to the report folder, never this machine's absolute paths."""

    def __init__(self, out: Path, plans: Sequence[SweepPlan]) -> None:
        self.out = Path(os.path.abspath(out))
        roots = {str(path) for p in plans for folder in (p.output_root, p.path.parent)
                 for path in (folder, os.path.abspath(folder)) if str(path) not in ("", ".")}
        # one pass, the longest first: an absolute root wins over its relative spelling inside it
        ordered = sorted(roots, key=len, reverse=True)
        self._roots = re.compile("|".join(re.escape(r) for r in ordered)) if roots else None

    def path(self, path: Path | str) -> str:
        try:
            return Path(os.path.relpath(os.path.abspath(path), self.out)).as_posix()
        except ValueError:  # another drive (Windows): the name alone
            return Path(path).name

    def text(self, text: str) -> str:
        """``text`` with the sweeps' folders and output roots written relative to the report."""
        if self._roots is None:
            return text
        return self._roots.sub(lambda match: self.path(match.group(0)), text)


def write_report(
    collection: Collection,
    out: Path | str,
    *,
    formats: Sequence[str] = FORMATS,
    metric: str = "top1",
    pivot: tuple[str, str] | None = None,
    effect: float = DEFAULT_EFFECT,
) -> Report:
    """Write the report folder: ``index.md`` plus ``tables/*.{md,tex,csv}`` and ``plots/*.png``.

    Args:
        collection: from :func:`collect`.
        out: the report folder (created).
        formats: any of ``md``, ``tex``, ``csv``, ``png``; ``index.md`` is always written.
        metric: the summary metric compared (``top1`` = final-epoch top-1).
        pivot: the (rows, columns) axes of grid sweeps' pivots (default: their first two).
        effect: the difference (metric units) for which the tables give the seeds needed.

    Returns:
        The :class:`Report`.

    Raises:
        SweepError: an unknown format, a metric no finished run records, or an effect that is not
            a positive number; nothing is written then.
    """
    _check_options(collection.frame, formats, metric, effect)
    out = Path(out)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    tables = all_tables(collection, metric=metric, pivot=pivot, effect=effect)
    where = _Relative(out, collection.plans)
    files: list[Path] = []
    index = ["# Ablation report", ""]
    index.append(f"Metric: `{metric}`. Sweeps: " + ", ".join(f"`{p.name}`" for p in collection.plans) + ".")
    index.append("")
    for plan in collection.plans:
        index += [f"## {plan.name}", ""]
        if plan.description:
            index += [plan.description, ""]
        index += [f"Sweep file `{where.path(plan.path)}`, mode `{plan.mode}`, "
                  f"runs in `{where.path(plan.output_root)}`.", ""]
        for table in (t for t in tables if t.sweep == plan.name):
            index += _write_table(table, collection, out, formats, metric, files)
    index += _problems_section(collection.problems(), where)
    path = out / "index.md"
    path.write_text("\n".join(index))
    return Report(out, path, tables, files)


def _check_options(frame: pd.DataFrame, formats: Sequence[str], metric: str, effect: float) -> None:
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise SweepError(f"--format {','.join(unknown)}: unknown; choose from {','.join(FORMATS)}")
    if len(frame) and (frame["state"] == RunState.FINISHED.value).any() and (
        metric not in frame.columns or frame[metric].isna().all()
    ):
        known = [c for c in SUMMARY_COLUMNS if c in frame.columns and frame[c].notna().any()]
        raise SweepError(f"--metric {metric}: no finished run records it; choose one of {', '.join(known)}")
    if not (math.isfinite(effect) and effect > 0):
        raise SweepError(f"--effect {effect}: give a positive difference to detect, e.g. 1 (point of top-1)")


def _write_table(
    table: Table, collection: Collection, out: Path, formats: Sequence[str], metric: str, files: list[Path]
) -> list[str]:
    """Write one table's files and plots (adding them to ``files``); its lines of ``index.md``."""
    lines = [render.to_markdown(table)]
    links = []
    for fmt, as_text in (("md", render.to_markdown), ("tex", render.to_latex), ("csv", render.to_csv)):
        if fmt in formats:
            path = out / "tables" / f"{table.name}.{fmt}"
            path.write_text(as_text(table))
            files.append(path)
            links.append(f"[{fmt}](tables/{path.name})")
    if links:
        lines += ["Files: " + " · ".join(links), ""]
    if "png" in formats:
        plots = out / "plots"
        for made in (
            _plots.plot_metric(table, metric, plots / f"{table.name}.png"),
            _plots.plot_curves(table, collection.frame, collection.curves, plots / f"{table.name}-curves.png"),
        ):
            if made is not None:
                files.append(made)
                lines += [f"![{made.stem}](plots/{made.name})", ""]
    return lines


def _problems_section(problems: pd.DataFrame, where: _Relative) -> list[str]:
    """The runs not in the statistics, with their state and problem (paths relative to the report)."""
    lines = ["## Runs not in the statistics", ""]
    if problems.empty:
        return [*lines, "Every planned run finished.", ""]
    lines += ["| sweep | row | seed | run | state | problem |", "|:---|:---|---:|:---|:---|:---|"]
    for r in problems.itertuples(index=False):
        problem = "" if pd.isna(r.problem) else r.problem
        lines.append(f"| {r.sweep} | {r.label} | {r.seed} | `{r.run_id}` | {r.state} | "
                     f"{where.text(str(problem)).replace('|', '/')} |")
    return [*lines, ""]
