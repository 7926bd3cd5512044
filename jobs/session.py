"""One launch of a sweep as the backends see it: its runs, state file, report and progress lines.

:func:`jobs.launch.launch` opens a :class:`Session` after its checks; a backend
(:mod:`jobs.backends`) records each submission and each ended run through it, so the state file
and the :class:`LaunchReport` are written in one way whatever runs the jobs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.sweep_state import SweepState, classify
from suite.run.records import RunPaths, RunState, run_state
from sweeps.expand import Plan, PlannedRun
from sweeps.spec import Sweep

__all__ = ["Echo", "LaunchReport", "Session", "SubmissionError"]

Echo = Callable[[str], None]


class SubmissionError(RuntimeError):
    """The scheduler refused a submission after the checks passed (busy, limits); nothing is lost."""


@dataclass
class LaunchReport:
    """What a launch did."""

    executor: str
    plan: Plan
    state_file: Path
    submitted: list[str] = field(default_factory=list)
    skipped: dict[str, RunState] = field(default_factory=dict)  # run id -> why it was not submitted
    blocked: list[str] = field(default_factory=list)  # waited for a prerequisite that failed
    arrays: list[dict[str, Any]] = field(default_factory=list)  # SLURM: one entry per sbatch call
    final: dict[str, RunState] = field(default_factory=dict)  # after local/debug runs, or wait=True
    check_seconds: float = 0.0
    submit_seconds: float = 0.0

    @property
    def sbatch_calls(self) -> int:
        return len(self.arrays)

    def failed(self) -> list[str]:
        return [rid for rid, state in self.final.items() if state in (RunState.FAILED, RunState.CANCELLED)]


@dataclass
class Session:
    """A launch in progress.

    Attributes:
        queued: prerequisite run id -> the id of its job that is still queued or running (a
            SLURM run waiting for it depends on that job).
        failed_prerequisites: prerequisites that did not finish here, and steps they blocked.
    """

    sweep: Sweep
    state: SweepState
    report: LaunchReport
    say: Echo
    queued: dict[str, str] = field(default_factory=dict)
    failed_prerequisites: set[str] = field(default_factory=set)

    def submitted(self, jobs: Sequence[tuple[PlannedRun, str]], executor: str, state: RunState) -> None:
        """Record runs whose jobs were just submitted (``(run, job id)``), then write the state file."""
        now = time.time()
        for run, job_id in jobs:
            entry = self.state.runs[run.run_id]
            entry.executor, entry.job_id, entry.submitted = executor, job_id, now
            entry.submissions += 1
            entry.state = state.value
            self.report.submitted.append(run.run_id)
        self.state.write()

    def ended(self, run: PlannedRun, ok: bool, error: str | None, stopped: bool = False) -> None:
        """A run of a foreground backend ended: its state from its records, written and reported."""
        files = run_state(RunPaths.of(self.sweep.output_root, run.run_id))
        final = classify(files, None if stopped else "FINISHED")  # a stopped run that never began stays new
        if not ok and final is not RunState.FINISHED:
            final = RunState.FAILED
        self.state.runs[run.run_id].state = final.value
        self.report.final[run.run_id] = final
        if run.prerequisite and final is not RunState.FINISHED:
            self.failed_prerequisites.add(run.run_id)
        self.state.write()
        self.say(f"{final.value:<11} {run.run_id}  {run.label()}" + (f"  ({error})" if error else ""))

    def blocked(self, run: PlannedRun) -> bool:
        """Whether ``run`` waits for a prerequisite that failed here (then it is reported blocked)."""
        if not self.failed_prerequisites.intersection(run.needs):
            return False
        self.report.blocked.append(run.run_id)
        self.failed_prerequisites.add(run.run_id)  # what waits on a blocked step is blocked too
        self.say(f"blocked     {run.run_id}  {run.label()}  (a prerequisite failed)")
        return True


def job_config(run: PlannedRun, threads: int | None) -> dict[str, Any]:
    """A run's resolved config with ``run.threads`` set (output-only: the run id stays the same)."""
    config = run.resolved()
    if threads is not None:
        config["run"]["threads"] = threads
    return config
