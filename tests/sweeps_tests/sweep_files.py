"""Writing small sweep files for tests: tiny runs (seconds on one core) into a temp folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

# Same scale as tests/conftest.py's TINY, as base.overrides of a sweep.
TINY: dict[str, Any] = {
    "data": "builtin",
    "data.train_size": 256,
    "data.val_size": 128,
    "data.batch_size": 32,
    "model.depth": 1,
    "model.embed_dim": 48,
    "schedule.epochs": 2,
    "schedule.warmup_epochs": 0.5,
    "eval.batch_size": 128,
    "eval.occlusion": [],
    "tracking.mode": "disabled",
    "run.threads": 1,
}

CPU_RESOURCES: dict[str, Any] = {"gpus_per_node": 0, "cpus_per_task": 1, "mem_gb": 1, "timeout_min": 60}


def write_sweep(
    folder: Path, name: str = "tiny", *, overrides: dict[str, Any] | None = None, **fields: Any
) -> Path:
    """Write ``<folder>/<name>.yaml``: a sweep of tiny runs whose output root is ``<folder>/runs/<name>``.

    ``overrides`` are merged into the tiny base overrides; other keywords are top-level sweep keys.
    """
    data: dict[str, Any] = {
        "name": name,
        "base": {"overrides": {**TINY, **(overrides or {})}},
        "output_root": str(folder / "runs" / name),
        "resources": dict(CPU_RESOURCES),
    }
    data.update(fields)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
