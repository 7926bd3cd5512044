"""Sweep files and run directories with known metrics, written without training anything."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from analysis._plan import SweepPlan, plan_sweep
from suite.run.records import RunPaths


def write_sweep(folder: Path, name: str, **fields: Any) -> Path:
    """``<folder>/<name>.yaml`` over the built-in data; runs go to ``<folder>/runs/<name>``."""
    data: dict[str, Any] = {
        "name": name,
        "base": {"overrides": {"data": "builtin", "mix.method": "tokenmix", "schedule.epochs": 3,
                               "tracking.mode": "disabled"}},
        "output_root": str(folder / "runs" / name),
        **fields,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def write_run(plan: SweepPlan, run_id: str, top1: float | None, *, occ50: float | None = None,
              gpu_hours: float = 0.01, epochs: int = 3, curve: list[float] | None = None,
              val_loss: float | None = None, val_size: int = 400) -> Path:
    """A run directory as the trainer leaves it; ``top1=None`` leaves it unfinished (no summary).

    Its config has the built-in data with ``val_size`` validation images, as resolved configs do.
    """
    paths = RunPaths.of(plan.output_root, run_id)
    paths.root.mkdir(parents=True, exist_ok=True)
    config = {"run_id": run_id, "mix": {"method": "tokenmix"}, "run": {"seed": 0},
              "data": {"source": "builtin", "val_size": val_size}}
    paths.config.write_text(json.dumps(config))
    values = curve or [(top1 or 10.0) * (i + 1) / epochs for i in range(epochs)]
    rows = [{"epoch": i + 1, "top1": v, "train_loss": 2.0 - 0.1 * i, "val_loss": 1.5} for i, v in enumerate(values)]
    paths.metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    if top1 is None:
        paths.checkpoint.write_bytes(b"checkpoint")
        return paths.root
    summary: dict[str, Any] = {"run_id": run_id, "status": "finished", "top1": top1, "top5": 99.0,
                               "best_top1": top1, "epochs": epochs, "gpu_hours": gpu_hours, "wall_seconds": 5.0}
    if occ50 is not None:
        summary["occ50_top1"] = occ50
    if val_loss is not None:
        summary["val_loss"] = val_loss
    paths.summary.write_text(json.dumps(summary))
    return paths.root


def plan_of(path: Path) -> SweepPlan:
    return plan_sweep(path, cache=False)
