"""Runs from the W&B public API, mapped to the records a report reads from disk.

The suite logs every run under W&B run id = suite run id, group = sweep name, config = the
resolved run config, the per-epoch ``metrics.jsonl`` rows as history (``step`` = epoch) and the
scalar entries of ``summary.json`` as the run summary. This module turns
``wandb.Api().runs(path, filters={"group": ...})`` back into :class:`~analysis._records.Parsed`
records, so a report from W&B has exactly the columns of a report from run directories.
Curves need the full history: ``scan_history()`` (unsampled, paged), never ``history()``
(sampled to 500 points).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from analysis._records import CURVE_KEYS, Parsed, flatten

__all__ = ["fetch_wandb", "map_wandb_run"]

# W&B run states -> the suite's words. A W&B "finished" run is only finished for the suite
# when its summary has the suite's status (the summary is written before wandb.finish).
_STATES = {"running": "running", "crashed": "failed", "failed": "failed", "killed": "cancelled",
           "preempted": "interrupted", "preempting": "interrupted", "pending": "pending"}


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


def map_wandb_run(run: Any, *, curves: bool = True) -> Parsed:
    """One W&B public-API run as a :class:`~analysis._records.Parsed` record.

    Args:
        run: a ``wandb.apis.public.Run`` (or any object with ``id``, ``state``, ``config``,
            ``summary_metrics`` and ``scan_history()``).
        curves: read the full history for training curves.

    Returns:
        The record; state ``corrupt`` with the reason when the run's data cannot be read.
    """
    try:
        config = _unwrap(dict(run.config or {}))
        summary = {k: v for k, v in dict(run.summary_metrics or {}).items() if not str(k).startswith("_")}
    except Exception as err:  # noqa: BLE001 - one bad run must not stop the report
        return Parsed("corrupt", f"W&B run {getattr(run, 'id', '?')}: unreadable ({type(err).__name__}: {err}); "
                                 "check the run in the W&B UI or report from the run directories")
    status = summary.get("status")
    scalars = {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool)) or v is None}
    wandb_state = str(getattr(run, "state", "") or "")
    if status in ("finished", "pruned"):
        state = str(status)
    else:
        state = _STATES.get(wandb_state, "interrupted" if wandb_state == "finished" else "new")
        scalars = {}
    parsed = Parsed(state, None, flatten(config), scalars, {})
    if curves:
        parsed.curves = _curves(run.scan_history())
    return parsed


def _curves(rows: Iterable[Mapping[str, Any]]) -> dict[str, np.ndarray]:
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
) -> dict[str, Parsed]:
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
    out: dict[str, Parsed] = {}
    for rid in wanted:
        if rid in found:
            out[rid] = map_wandb_run(found[rid], curves=curves)
        else:
            out[rid] = Parsed("missing", f"W&B {path}: no run {rid} in group {group}; "
                                         "was it synced (wandb sync runs/<id>/wandb/offline-run-*)?")
    return out
