"""What a study optimises: a metric the run records write, per epoch or in the summary only.

Per-epoch metrics are in every ``metrics.jsonl`` row; ``best_*`` are running maxima of a
per-epoch metric; the rest (occlusion top-1) are only in ``summary.json``. :func:`recorded_problem`
says why runs of a config would not record a metric, before any trial runs.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, model_validator

from sweeps.schema import Strict

__all__ = ["MINIMIZED", "PER_EPOCH", "RUNNING_MAX", "ObjectiveSpec", "intermediate_value", "objective_value",
           "recorded_problem"]

PER_EPOCH = ("top1", "top5", "val_loss", "ema_top1", "ema_top5")
RUNNING_MAX = {
    "best_top1": ("top1",),
    "best_top5": ("top5",),
    "best_ema_top1": ("ema_top1",),
    "best_top1_max": ("top1", "ema_top1"),
}
OCCLUSION = re.compile(r"^occ(\d+)_top1$")
MINIMIZED = ("val_loss",)


class ObjectiveSpec(Strict):
    """What a trial's value is: a metric of the run records and its direction."""

    metric: str = Field("best_top1", description="a summary.json metric, e.g. best_top1, top1, val_loss, occ50_top1")
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="default: minimize for val_loss, else maximize"
    )
    report: str | None = Field(
        None, description="per-epoch metric reported to the pruner (default: the objective's own, or top1)"
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"metric": value} if isinstance(value, str) else value

    @property
    def resolved_direction(self) -> str:
        return self.direction or ("minimize" if self.metric in MINIMIZED else "maximize")


def recorded_problem(metric: str, config: dict[str, Any], *, per_epoch: bool) -> str | None:
    """Why runs of this config would not record ``metric`` (None when they do)."""
    ema = bool((config.get("optim") or {}).get("ema_decay"))
    occlusion = [round(float(f) * 100) for f in (config.get("eval") or {}).get("occlusion") or []]
    known = [*PER_EPOCH, *RUNNING_MAX] + ([] if per_epoch else [f"occ{p}_top1" for p in occlusion])
    match = OCCLUSION.match(metric)
    if match and not per_epoch:
        if int(match.group(1)) in occlusion:
            return None
        return (f"{metric} is not recorded: the base config's eval.occlusion is "
                f"{(config.get('eval') or {}).get('occlusion')}; add {int(match.group(1)) / 100:g} there")
    if metric not in known:
        kind = "per-epoch metric" if per_epoch else "metric"
        return f"unknown {kind} {metric!r}: runs record {', '.join(known)}"
    if "ema" in metric and not ema:
        return f"{metric} is only recorded with an EMA model; set optim.ema_decay in the base config"
    return None


def intermediate_value(metric: str, rows: list[dict[str, Any]]) -> float | None:
    """The value of a per-epoch (or running-max) metric after the last of ``rows``; None if not evaluated."""
    if metric in RUNNING_MAX:
        seen = [r[k] for r in rows for k in RUNNING_MAX[metric] if r.get(k) is not None]
        return max(seen) if seen else None
    if not rows or rows[-1].get(metric) is None:
        return None
    return float(rows[-1][metric])


def objective_value(metric: str, summary: dict[str, Any], rows: list[dict[str, Any]]) -> float | None:
    """The objective of a finished run: its summary value, else computed from its metrics rows."""
    if summary.get(metric) is not None:
        return float(summary[metric])
    if metric in PER_EPOCH or metric in RUNNING_MAX:
        return intermediate_value(metric, rows)
    return None
