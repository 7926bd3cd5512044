"""The run directory: the one record format every stage reads.

``<output_root>/<run_id>/`` holds

- ``config.json``   the resolved run config (written before training starts);
- ``metrics.jsonl`` one JSON object per finished epoch (rewritten atomically each epoch,
  so it always matches the last checkpoint);
- ``checkpoint.pt`` the full training state (model, optimiser, scheduler, scaler, EMA,
  RNG states, epoch and step);
- ``summary.json``  final/best metrics and status ``finished``: the commit marker of a
  finished run, written last;
- ``failure.json``  error type, message and traceback tail of a run that raised;
- ``train.log``     the human-readable log.

Every JSON file is written atomically (temporary file in the same directory, fsync,
rename), so a reader never sees half a file and a kill never corrupts a record.
:func:`run_state` derives the state from these files alone; sweeps, reports and tuning
all use it.
"""

from __future__ import annotations

import enum
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "RunPaths",
    "RunRecord",
    "RunState",
    "atomic_write_bytes",
    "atomic_write_json",
    "read_json",
    "read_run",
    "run_state",
]


class RunState(str, enum.Enum):
    """What the files of a run directory say about it."""

    NEW = "new"  # nothing computed yet
    RESUMABLE = "resumable"  # a checkpoint exists, no summary: relaunching continues it
    FAILED = "failed"  # the last attempt raised (failure.json newer than the checkpoint)
    DONE = "done"  # summary.json exists: never retrained

    def is_finished(self) -> bool:
        return self is RunState.DONE


@dataclass(frozen=True)
class RunPaths:
    """File layout of one run directory."""

    root: Path

    @classmethod
    def of(cls, output_root: Path | str, run_id: str) -> RunPaths:
        return cls(Path(output_root) / run_id)

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"

    @property
    def failure(self) -> Path:
        return self.root / "failure.json"

    @property
    def log(self) -> Path:
        return self.root / "train.log"

    @property
    def wandb_dir(self) -> Path:
        return self.root


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def atomic_write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Atomically write rows as JSON lines."""
    atomic_write_bytes(path, "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows).encode())


def read_json(path: Path) -> Any | None:
    """Read a JSON file, or None when it does not exist."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read JSON lines, tolerating a torn last line (from writers that append)."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}:{i + 1}: malformed JSON line") from None
    return rows


def run_state(paths: RunPaths) -> RunState:
    """Derive the state of a run from its files alone."""
    if paths.summary.is_file():
        return RunState.DONE
    if paths.failure.is_file():
        ckpt_time = paths.checkpoint.stat().st_mtime if paths.checkpoint.is_file() else 0.0
        if paths.failure.stat().st_mtime >= ckpt_time:
            return RunState.FAILED
    if paths.checkpoint.is_file():
        return RunState.RESUMABLE
    return RunState.NEW


@dataclass
class RunRecord:
    """Everything a report needs from one run directory."""

    run_id: str
    paths: RunPaths
    state: RunState
    config: dict[str, Any] | None
    metrics: list[dict[str, Any]]
    summary: dict[str, Any] | None
    failure: dict[str, Any] | None


def read_run(root: Path | str) -> RunRecord:
    """Read a run directory (any state)."""
    paths = RunPaths(Path(root))
    return RunRecord(
        run_id=paths.root.name,
        paths=paths,
        state=run_state(paths),
        config=read_json(paths.config),
        metrics=read_jsonl(paths.metrics),
        summary=read_json(paths.summary),
        failure=read_json(paths.failure),
    )


def iter_runs(output_root: Path | str) -> list[RunRecord]:
    """Every run directory (one holding config.json) below ``output_root``."""
    root = Path(output_root)
    if not root.is_dir():
        return []
    return [read_run(p.parent) for p in sorted(root.glob("*/config.json"))]
