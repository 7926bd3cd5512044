"""Runs from the W&B public API, mapped to the records a report reads from disk.

The suite logs every run under W&B run id = suite run id, group = sweep name, config = the
resolved run config, the per-epoch ``metrics.jsonl`` rows as history (``step`` = epoch) and the
scalar entries of ``summary.json`` as the run summary. This module turns
``wandb.Api().runs(path, filters={"group": ...})`` back into :class:`~analysis._records.RunData`
(a :class:`~suite.run.records.RunRecord` and its curves), so a report from W&B has exactly the
columns of a report from run directories. W&B's run states are mapped into the suite's
:class:`~suite.run.records.RunState` here, as ``jobs.sweep_state.classify`` maps a scheduler's.
Curves need the full history: ``scan_history()`` (unsampled, paged), never ``history()``
(sampled to 500 points).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from analysis._records import Curves, RunData
from suite.run.names import CURVE_KEYS
from suite.run.records import RunPaths, RunRecord, RunState

__all__ = ["fetch_wandb", "map_wandb_run"]

# W&B run states -> the suite's. A W&B "finished" run is only finished for the suite when its
# summary has the suite's status (the summary is written before wandb.finish).
_STATES = {"running": RunState.RUNNING, "crashed": RunState.FAILED, "failed": RunState.FAILED,
           "killed": RunState.CANCELLED, "preempted": RunState.INTERRUPTED,
           "preempting": RunState.INTERRUPTED, "pending": RunState.PENDING, "finished": RunState.INTERRUPTED}
_ENDED = (RunState.FINISHED.value, RunState.PRUNED.value)


def _unwrap(config: Mapping[str, Any]) -> dict[str, Any]:
    """The public API may return ``{"key": {"value": v, "desc": ...}}``; keep the values."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if str(key).startswith("_"):
            continue
        if isinstance(value, Mapping) and "value" in value and set(value) <= {"value", "desc"}:
            value = value["value"]
        out[str(key)] = value
    return out


def _record(path: str, run_id: str, state: RunState, **fields: Any) -> RunRecord:
    """A W&B run as a record: its ``paths`` name the W&B run (``wandb:ENTITY/PROJECT/<id>``), not a folder."""
    fields = {"config": None, "summary": None, "failure": None, **fields}
    return RunRecord(run_id, RunPaths(Path(f"wandb:{path}") / run_id), state, metrics=[], **fields)


def map_wandb_run(run: Any, *, curves: bool = True, path: str = "") -> RunData:
    """One W&B public-API run as a :class:`~analysis._records.RunData`.

    Args:
        run: a ``wandb.apis.public.Run`` (or any object with ``id``, ``state``, ``config``,
            ``summary_metrics`` and ``scan_history()``).
        curves: read the full history for training curves.
        path: ``ENTITY/PROJECT``, named in the record's paths.

    Returns:
        The run; state ``corrupt`` with the reason when the run's data cannot be read.
    """
    run_id = str(getattr(run, "id", "?"))
    try:
        config = _unwrap(dict(run.config or {}))
        summary = {k: v for k, v in dict(run.summary_metrics or {}).items() if not str(k).startswith("_")}
    except Exception as err:  # noqa: BLE001 - one bad run must not stop the report
        problem = (f"W&B run {run_id}: unreadable ({type(err).__name__}: {err}); "
                   "check the run in the W&B UI or report from the run directories")
        return RunData(_record(path, run_id, RunState.CORRUPT, problem=problem))
    status = summary.get("status")
    if status in _ENDED:
        state = RunState(status)
        scalars = {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool)) or v is None}
    else:
        state, scalars = _STATES.get(str(getattr(run, "state", "") or ""), RunState.NEW), None
    record = _record(path, run_id, state, config=config, summary=scalars)
    return RunData(record, _curves(run.scan_history()) if curves else {})


def _curves(rows: Iterable[Mapping[str, Any]]) -> Curves:
    kept = [row for row in rows if row.get("epoch") is not None and "top1" in row]
    if not kept:
        return {}
    kept.sort(key=lambda row: row["epoch"])
    out = {"epoch": np.array([row["epoch"] for row in kept], dtype=np.float32)}
    for key in CURVE_KEYS:
        if any(key in row for row in kept):
            values = [row.get(key) for row in kept]
            out[key] = np.array([v if isinstance(v, (int, float)) else np.nan for v in values], dtype=np.float32)
    return out


def fetch_wandb(
    api: Any, path: str, group: str, run_ids: Iterable[str], *, curves: bool = True
) -> dict[str, RunData]:
    """Records of a sweep's runs from W&B; planned runs W&B does not have are ``missing``.

    Args:
        api: ``wandb.Api()`` (or an object with the same ``runs(path, filters=...)``).
        path: ``ENTITY/PROJECT``.
        group: the sweep's W&B group (its name unless the sweep file sets ``tracking.group``).
        run_ids: the planned run ids (W&B run id = suite run id).
        curves: read full histories for the training-curve plots.

    Returns:
        run id -> record.
    """
    wanted = list(run_ids)
    found: dict[str, Any] = {}
    for run in api.runs(path, filters={"group": group}):
        if run.id in wanted:
            found[run.id] = run
    out: dict[str, RunData] = {}
    for rid in wanted:
        if rid in found:
            out[rid] = map_wandb_run(found[rid], curves=curves, path=path)
        else:
            problem = (f"W&B {path}: no run {rid} in group {group}; "
                       "was it synced (wandb sync runs/<id>/wandb/offline-run-*)?")
            out[rid] = RunData(_record(path, rid, RunState.MISSING, problem=problem))
    return out
