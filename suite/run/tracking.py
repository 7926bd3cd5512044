"""Weights & Biases as a sink: one W&B run per run id, resumable, offline by default.

The run directory stays the source of truth (wandb's offline files have no reader).
``resume="allow"`` with ``id=<run_id>`` makes a requeued or relaunched job continue the
same W&B run. No API key is ever written by the suite: online mode relies on the user's
own ``wandb login`` / ``WANDB_API_KEY``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from suite.config import TrackingConfig
from suite.run.records import RunState

__all__ = ["Tracker"]

_log = logging.getLogger(__name__)


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
            settings=wandb.Settings(console="off", x_disable_stats=not cfg.system_metrics, quiet=True),
        )

    @property
    def wandb_id(self) -> str | None:
        return None if self._run is None else self._run.id

    def _guard(self, what: str, call: Any) -> None:
        """W&B is a sink: if its service is gone (SLURM signals every process of a job,
        wandb's service included), warn and stop tracking instead of failing the run."""
        if self._run is None:
            return
        try:
            call()
        except Exception as err:  # noqa: BLE001 - any wandb failure must not fail training
            _log.warning("W&B %s failed (%s: %s); tracking stops, run records are unaffected", what,
                         type(err).__name__, err)
            self._run = None

    def log(self, metrics: dict[str, Any], *, step: int) -> None:
        self._guard("log", lambda: self._run.log(metrics, step=step))

    def summarize(self, summary: dict[str, Any]) -> None:
        def write() -> None:
            for key, value in summary.items():
                if isinstance(value, (int, float, str, bool)) or value is None:
                    self._run.summary[key] = value

        self._guard("summary", write)

    @property
    def active(self) -> bool:
        """A W&B run is open (tracking is on and its service has not failed)."""
        return self._run is not None

    def finish(self, *, state: RunState) -> bool:
        """End the W&B run so that W&B shows what the records say.

        Finished and pruned runs exit 0; an interrupted run is marked preempting first (W&B then
        shows it as preempted, and the resumed job continues it); a failed run exits 1.

        Returns:
            True when W&B confirmed the end of the run: everything logged before was written.
        """

        def end() -> None:
            if state is RunState.INTERRUPTED:
                self._run.mark_preempting()
            self._run.finish(exit_code=0 if state.is_finished() else 1)

        if self._run is None:
            return False
        self._guard("finish", end)
        ok = self._run is not None  # _guard drops the run when wandb failed
        self._run = None
        return ok
