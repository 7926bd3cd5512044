"""What :func:`suite.train.trainer.train` returns, and the callback it calls after each epoch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from suite.run.records import RunState

__all__ = ["EpochCallback", "TrainResult"]


class EpochCallback(Protocol):
    """Called after each epoch's records are written; a returned string stops the run as ``pruned``.

    Args (of the call):
        epoch: the finished epoch, 1-based.
        metrics: that epoch's ``metrics.jsonl`` row (``top1`` present on evaluated epochs).
    """

    def __call__(self, epoch: int, metrics: Mapping[str, Any]) -> str | None: ...


@dataclass
class TrainResult:
    """What :func:`train` returns: the run's id, directory, state and summary.

    ``summary`` is the run's ``summary.json`` when it ended (``finished``/``pruned``); for an
    ``interrupted`` run it holds the ``epoch`` and ``step`` it will resume from.
    """

    run_id: str
    run_dir: Path
    state: RunState
    summary: dict[str, Any] = field(default_factory=dict)
