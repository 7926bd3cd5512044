"""The one place a run's files, log and W&B run are written.

The trainer never opens a file of the run directory itself: it hands rows, checkpoints and
summaries to a :class:`RunWriter`. A data-parallel run gives rank 0 a writer and every other
rank a silent one (``RunWriter(paths, enabled=False)``), so one run directory, one checkpoint and
one W&B run come out however many processes train.

Failures are the exception: any rank records its own. The rank that fails first writes
``failure.json`` with its rank (an out-of-memory on rank 3 would otherwise leave no record, and
the run would look interrupted); the ranks that fail after it, usually because a collective lost
that rank, keep its record. A non-zero rank also adds one line to ``train.log``. So that no rank
records a failure before rank 0 has cleared the last attempt's, :meth:`RunWriter.start` is a
barrier of the ranks.

Order of writes at the end of an epoch: checkpoint first, then ``metrics.jsonl``, then W&B, so
the metrics never hold an epoch that the checkpoint (where a resume restarts) does not.
"""

from __future__ import annotations

import io
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from suite.config import TrackingConfig
from suite.run.records import (
    RunPaths,
    RunState,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_jsonl,
    clear_failure,
    keep_previous,
    read_json,
    write_failure,
    write_summary,
)

__all__ = ["RunWriter"]


def _logger(paths: RunPaths, *, to_file: bool) -> logging.Logger:
    log = logging.getLogger(f"suite.run.{paths.root.name}")
    log.setLevel(logging.INFO)
    log.propagate = False
    for handler in list(log.handlers):
        handler.close()
        log.removeHandler(handler)
    if to_file:
        file_handler = logging.FileHandler(paths.log)
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        log.addHandler(file_handler)
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
        log.addHandler(stream)
    else:
        log.addHandler(logging.NullHandler())
    return log


class RunWriter:
    """Writes one run's records, checkpoints, log and W&B run (or nothing, when disabled).

    Args:
        paths: the run directory.
        enabled: False for the non-zero ranks of a data-parallel run (they write only a failure).
        rank, processes: this process's place in a data-parallel run (default: the
            ``torch.distributed`` process group's, if one is initialised, else rank 0 of 1).
    """

    def __init__(
        self, paths: RunPaths, *, enabled: bool = True, rank: int | None = None, processes: int | None = None
    ) -> None:
        self.paths = paths
        self.enabled = enabled
        self._rank, self._processes = rank, processes
        self.log = _logger(paths, to_file=False)
        self._tracker: Any = None
        self._sent = 0  # last epoch handed to W&B

    def restore_config(self, config: dict[str, Any]) -> bool:
        """Write ``config.json`` if it is missing or damaged (it is written once); returns whether it did."""
        if not self.enabled:
            return False
        try:
            readable = isinstance(read_json(self.paths.config), dict)
        except (ValueError, UnicodeDecodeError, OSError):
            readable = False  # damaged: rewritten from the run's config, which fixes it
        if not readable:
            atomic_write_json(self.paths.config, config)
        return not readable

    def start(self, *, config: dict[str, Any], tracking: TrackingConfig, run_id: str, name: str) -> None:
        """Open the log and the W&B run; write ``config.json`` once; forget the last failure.

        Called by every rank, it ends with a barrier of the ranks: no rank can record a failure
        of this attempt before rank 0 has forgotten the last one. When rank 0's start fails
        (W&B cannot start), the others fail at this barrier, here, before training, and record
        nothing in place of rank 0's error.
        """
        if self.enabled:
            self.paths.root.mkdir(parents=True, exist_ok=True)
            self.restore_config(config)
            clear_failure(self.paths)
            for stale in self.paths.root.glob(".*.tmp"):  # left by a process killed mid-write
                stale.unlink(missing_ok=True)
            self.log = _logger(self.paths, to_file=True)
            from suite.run.tracking import Tracker

            self._tracker = Tracker(tracking, run_id=run_id, run_dir=self.paths.root, config=config, name=name)
            self._sent = self._wandb_epochs() if self._tracker.active else 0
        _barrier()

    def _wandb_epochs(self) -> int:
        """Epochs W&B confirmed in earlier sessions of this run (``wandb.json``; 0 when unknown)."""
        try:
            record = read_json(self.paths.wandb_record)
        except (ValueError, UnicodeDecodeError, OSError):
            record = None  # unreadable: send every epoch again (W&B keeps one row per step)
        value = record.get("logged_epochs") if isinstance(record, dict) else None
        return value if isinstance(value, int) and value >= 0 else 0

    def info(self, message: str, *args: Any) -> None:
        self.log.info(message, *args)

    def checkpoint(self, payload: dict[str, Any]) -> None:
        """Atomically replace ``checkpoint.pt``, keeping the one before as ``checkpoint.prev.pt``.

        The previous checkpoint is hard-linked to its new name first, so at every instant
        ``checkpoint.pt`` is a complete file, and a damaged one can fall back to the one before.
        """
        if not self.enabled:
            return
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        keep_previous(self.paths.checkpoint, self.paths.previous_checkpoint)
        atomic_write_bytes(self.paths.checkpoint, buffer.getvalue())

    def final_weights(self, payload: dict[str, Any]) -> None:
        """Replace ``checkpoint.pt`` by a finished run's final weights and drop ``checkpoint.prev.pt``.

        Written atomically after ``summary.json``: a kill in between leaves the full checkpoint.
        """
        if not self.enabled:
            return
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        atomic_write_bytes(self.paths.checkpoint, buffer.getvalue())
        self.paths.previous_checkpoint.unlink(missing_ok=True)

    def metrics(self, history: Sequence[dict[str, Any]], *, new_row: dict[str, Any] | None = None) -> None:
        """Rewrite ``metrics.jsonl`` to ``history``; send ``new_row`` to W&B."""
        if not self.enabled:
            return
        atomic_write_jsonl(self.paths.metrics, history)
        if self._tracker is None:
            return
        # W&B gets every row it has not confirmed yet (after a resume: the epochs whose W&B data
        # was lost with a killed process or service), so its history equals metrics.jsonl.
        rows = [row for row in history if int(row["epoch"]) > self._sent]
        if new_row is not None and new_row not in rows:
            rows.append(new_row)
        for row in rows:
            self._tracker.log(row, step=int(row["epoch"]))
            self._sent = max(self._sent, int(row["epoch"]))

    def summary(self, summary: dict[str, Any]) -> None:
        """Commit the run as ended (finished or pruned)."""
        if not self.enabled:
            return
        write_summary(self.paths, summary)
        if self._tracker is not None:
            self._tracker.summarize(summary)

    def failure(self, err: BaseException) -> None:
        """Record ``err`` as the reason the run failed; in a data-parallel run, on any rank, first one wins."""
        rank, processes = self._place()
        if processes == 1:
            if self.enabled:
                write_failure(self.paths, err)
                self.log.error("run failed: %s: %s (see %s)", type(err).__name__, err, self.paths.failure)
            return
        try:
            first = write_failure(self.paths, err, rank=rank, processes=processes, first=True)
        except OSError as write_error:  # the run folder cannot be written: say so, raise the run's error
            print(f"rank {rank}: cannot record the failure in {self.paths.failure}: {write_error}", file=sys.stderr)
            return
        what = f"rank {rank} of {processes} failed: {type(err).__name__}: {err}"
        after = f" (see {self.paths.failure})" if first else f"; {self.paths.failure.name} keeps {self._first()}"
        if self.enabled:
            self.log.error("%s%s", what, after)
        else:  # rank 0's log handler owns train.log; one appended line is atomic (O_APPEND)
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            try:
                with open(self.paths.log, "a") as handle:
                    handle.write(f"{stamp} {what}{after}\n")
            except OSError:
                pass
            print(f"[suite.run.{self.paths.root.name}] {what}{after}", file=sys.stderr)

    def _first(self) -> str:
        """Whose failure the record holds (it was there before this rank's)."""
        try:
            record = read_json(self.paths.failure)
        except (ValueError, UnicodeDecodeError, OSError):
            record = None
        rank = record.get("rank") if isinstance(record, dict) else None
        return "the failure of the rank that failed first" + (f", rank {rank}" if rank is not None else "")

    def _place(self) -> tuple[int, int]:
        """(rank, processes) of this process: as given, else the process group's, else (0, 1)."""
        if self._rank is not None and self._processes is not None:
            return self._rank, self._processes
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return self._rank or 0, self._processes or 1

    def close(self, state: RunState) -> None:
        """End the W&B run with the run's state and close the log."""
        if self._tracker is not None:
            if self._tracker.finish(state=state):
                # W&B confirmed every row so far; a resume sends only the epochs after these.
                atomic_write_json(self.paths.wandb_record, {"logged_epochs": self._sent})
            self._tracker = None
        for handler in list(self.log.handlers):
            handler.close()
            self.log.removeHandler(handler)

    @property
    def root(self) -> Path:
        return self.paths.root


def _barrier() -> None:
    """Wait for every rank of the process group, if there is one (no-op for one process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
