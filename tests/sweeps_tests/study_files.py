"""Writing small study files for tests: tiny trials (seconds on one core) into a temp folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.sweeps_tests.sweep_files import CPU_RESOURCES, TINY

SPACE: dict[str, Any] = {
    "optim.lr": {"type": "float", "low": 3.0e-4, "high": 3.0e-3, "log": True},
    "mix.prob": {"type": "float", "low": 0.2, "high": 1.0},
}


def write_study(
    folder: Path, name: str = "tiny-study", *, overrides: dict[str, Any] | None = None, **fields: Any
) -> Path:
    """Write ``<folder>/<name>.yaml``: a study of tiny runs, output root ``<folder>/runs/<name>``.

    ``overrides`` are merged into the tiny base overrides; other keywords are top-level study keys
    (a value of None removes the key).
    """
    data: dict[str, Any] = {
        "name": name,
        "base": {"overrides": {**TINY, "mix.method": "mixup", **(overrides or {})}},
        "space": dict(SPACE),
        "objective": {"metric": "best_top1"},
        "n_trials": 2,
        "pruner": "none",
        "heartbeat_s": 1,
        "grace_s": 4,
        "output_root": str(folder / "runs" / name),
        "resources": dict(CPU_RESOURCES),
    }
    data.update(fields)
    data = {k: v for k, v in data.items() if v is not None}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
