"""Weights & Biases as a sink: one W&B run per run id, resumable, offline by default.

The run directory stays the source of truth (wandb's offline files have no reader).
``resume="allow"`` with ``id=<run_id>`` makes a requeued or relaunched job continue the
same W&B run. No API key is ever written by the suite: online mode relies on the user's
own ``wandb login`` / ``WANDB_API_KEY``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from suite.config import TrackingConfig

__all__ = ["Tracker"]


class Tracker:
    """Thin wrapper over a wandb run; every method is a no-op when tracking is disabled."""

    def __init__(self, cfg: TrackingConfig, *, run_id: str, run_dir: Path, config: dict[str, Any], name: str) -> None:
        self._run = None
        if cfg.mode == "disabled":
            return
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        self._run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            group=cfg.group,
            tags=list(cfg.tags) or None,
            name=name,
            id=run_id,
            resume="allow",
            mode=cfg.mode,
            dir=str(run_dir),
            config=config,
            settings=wandb.Settings(console="off", x_disable_stats=True, quiet=True),
        )

    @property
    def wandb_id(self) -> str | None:
        return None if self._run is None else self._run.id

    def log(self, metrics: dict[str, Any], *, step: int) -> None:
        if self._run is not None:
            self._run.log(metrics, step=step)

    def summarize(self, summary: dict[str, Any]) -> None:
        if self._run is not None:
            for key, value in summary.items():
                if isinstance(value, (int, float, str, bool)) or value is None:
                    self._run.summary[key] = value

    def finish(self, *, exit_code: int = 0) -> None:
        if self._run is not None:
            self._run.finish(exit_code=exit_code)
            self._run = None
