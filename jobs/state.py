"""Run states of a sweep, and the sweep state file.

:class:`JobState` is the one vocabulary for what a sweep run is doing, whatever runs it.
SLURM's words (``sacct``), submitit's local words and the run directory's own records
(:class:`suite.records.RunState`) are mapped into it in exactly one function,
:func:`classify` (submitit's ``InfoWatcher.is_done`` is the counter-example: free-text states
that differ by backend).

The state file, ``<output_root>/sweep-state.json``, records for every run of the sweep its
index, axis values, executor and job id; it is rewritten atomically
(:func:`suite.records.atomic_write_json`) after every submission, so a reader never sees half a
file and a killed launch leaves the jobs it did submit on record.
"""

from __future__ import annotations

import enum
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from suite.records import RunState, atomic_write_json, read_json

__all__ = ["STATE_FILE_NAME", "JobState", "RunEntry", "SweepState", "classify"]

STATE_FILE_NAME = "sweep-state.json"
STATE_VERSION = 1


class JobState(str, enum.Enum):
    """What a sweep run is doing."""

    NEW = "new"  # never submitted, nothing computed
    PENDING = "pending"  # submitted, waiting for resources (or for a prerequisite)
    RUNNING = "running"
    REQUEUED = "requeued"  # preempted or timed out, back in the queue to resume
    INTERRUPTED = "interrupted"  # stopped with a checkpoint and no job left: launch resumes it
    DONE = "done"  # summary.json written
    FAILED = "failed"  # the run raised, or the scheduler killed it (OOM, node failure, time limit)
    CANCELLED = "cancelled"  # cancelled by a user; launch reruns it

    def is_finished(self) -> bool:
        """Its job has ended (done, failed, cancelled or interrupted): nothing will change without a launch."""
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED, JobState.INTERRUPTED)

    def is_active(self) -> bool:
        """A job exists for the run (queued or running): launch must not submit it again."""
        return self in (JobState.PENDING, JobState.RUNNING, JobState.REQUEUED)

    def needs_launch(self) -> bool:
        """Launch submits the run: never submitted, failed, cancelled or interrupted."""
        return self in (JobState.NEW, JobState.FAILED, JobState.CANCELLED, JobState.INTERRUPTED)


_PENDING = {"PENDING", "CONFIGURING", "RESV_DEL_HOLD", "REQUEUE_HOLD", "SUSPENDED", "STOPPED", "QUEUED"}
_RUNNING = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "RESIZING"}
_REQUEUED = {"REQUEUED", "REQUEUE_FED", "PREEMPTED"}
_FAILED = {
    "FAILED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "BOOT_FAIL",
    "DEADLINE",
    "SPECIAL_EXIT",
    "REVOKED",
}
_CANCELLED = {"CANCELLED"}
_ENDED = {"COMPLETED", "FINISHED", "DONE", "INTERRUPTED", "NO PROCESS AND NO RESULT"}


def classify(records: RunState, scheduler: str | None, *, requeued_before: bool = False) -> JobState:
    """The one mapping from (run records, scheduler state) to a :class:`JobState`.

    Args:
        records: what the run directory says (:func:`suite.records.run_state`).
        scheduler: the scheduler's word for the run's job: a SLURM state from ``sacct``
            (``PENDING``, ``RUNNING``, ``CANCELLED by 0``, ...), a submitit local/debug state
            (``RUNNING``, ``FINISHED``, ``QUEUED``, ``DONE``), or None when there is no job or
            the scheduler does not know it any more.
        requeued_before: the job already went back to the queue once (``sacct`` shows an
            earlier ``REQUEUED``/``PREEMPTED`` record): a pending job is then ``REQUEUED``.

    Returns:
        The run's state; the run's own records win over the scheduler for done and failed.
    """
    if records is RunState.DONE:
        return JobState.DONE
    word = (scheduler or "").strip().upper().split(" ")[0].rstrip("+")
    if word in _RUNNING:
        return JobState.RUNNING
    if word in _PENDING:
        return JobState.REQUEUED if requeued_before else JobState.PENDING
    if word in _REQUEUED:
        return JobState.REQUEUED
    if records is RunState.FAILED or word in _FAILED:
        return JobState.FAILED
    if word in _CANCELLED:
        return JobState.CANCELLED
    if word and word not in _ENDED:
        raise ValueError(f"unknown scheduler state {scheduler!r}; add it to jobs.state.classify")
    if records is RunState.RESUMABLE:
        return JobState.INTERRUPTED
    if word in _ENDED and records is RunState.NEW:
        return JobState.FAILED  # the job ended before the run wrote anything (see its log)
    return JobState.NEW


@dataclass
class RunEntry:
    """One run in the state file."""

    index: int
    values: dict[str, Any]
    label: str
    prerequisite: bool = False
    needs: list[str] = field(default_factory=list)
    executor: str | None = None
    job_id: str | None = None
    submitted: float | None = None
    submissions: int = 0
    state: str = JobState.NEW.value  # last state seen by launch or status


@dataclass
class SweepState:
    """The sweep state file: run id -> :class:`RunEntry`, plus where the jobs keep their logs."""

    path: Path
    sweep: str
    sweep_file: str
    output_root: str
    submitit_folder: str
    runs: dict[str, RunEntry] = field(default_factory=dict)
    launches: list[dict[str, Any]] = field(default_factory=list)
    host: str = field(default_factory=lambda: os.uname().nodename)  # where local jobs run

    @classmethod
    def read(cls, path: Path) -> SweepState | None:
        """Read a state file, or None when there is none."""
        data = read_json(path)
        if data is None:
            return None
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"{path}: state file version {data.get('version')} is not {STATE_VERSION}")
        runs = {rid: RunEntry(**entry) for rid, entry in data["runs"].items()}
        return cls(
            path=Path(path),
            sweep=data["sweep"],
            sweep_file=data["sweep_file"],
            output_root=data["output_root"],
            submitit_folder=data["submitit_folder"],
            runs=runs,
            launches=list(data.get("launches", [])),
            host=data.get("host", ""),
        )

    def write(self) -> None:
        """Atomically rewrite the file."""
        atomic_write_json(
            self.path,
            {
                "version": STATE_VERSION,
                "sweep": self.sweep,
                "sweep_file": self.sweep_file,
                "output_root": self.output_root,
                "submitit_folder": self.submitit_folder,
                "updated": time.time(),
                "host": self.host,
                "launches": self.launches,
                "runs": {rid: asdict(entry) for rid, entry in self.runs.items()},
            },
        )
