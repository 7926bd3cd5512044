"""Writing small sweep files for tests: tiny runs (seconds on one core) into a temp folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.helpers import TINY as TINY_OVERRIDES

# tests/helpers.py's TINY as base.overrides of a sweep: the built-in data, no occlusion evaluation.
TINY: dict[str, Any] = {
    "data": "builtin",
    **{key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in TINY_OVERRIDES)},
    "eval.occlusion": [],
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
