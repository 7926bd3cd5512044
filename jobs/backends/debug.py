"""The debug backend: one job after the other, inside this process (submitit's ``DebugExecutor``).

With a terminal, a failing job opens the debugger (submitit's post-mortem); without one (tests,
scripts, CI) the job just runs and raises its error, since submitit's debug job would otherwise
start ``pdb`` on a stdin that nobody reads.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import submitit

from jobs.backends.base import ForegroundBackend, Outcome
from jobs.session import Session, job_config
from jobs.worker import job_for
from suite.run.records import RunState
from sweeps.expand import PlannedRun

__all__ = ["DebugBackend"]


class DebugBackend(ForegroundBackend):
    """Jobs run in this process when their result is asked for, one at a time."""

    name = "debug"
    in_process = True

    def executor(self) -> submitit.DebugExecutor:
        return submitit.DebugExecutor(folder=str(self.folder / "%j"))

    def submit(self, calls: Sequence[Callable[[], Any]]) -> list[Any]:
        executor = self.executor()
        return [executor.submit(call) for call in calls]

    def result(self, job: Any) -> Any:
        """Run the job here: with a terminal through submitit (pdb on an error), else directly."""
        return job.result() if sys.stdin.isatty() else job.submission().result()

    def results(self, jobs: Sequence[Any], poll_s: float = 1.0) -> Iterator[Outcome]:
        """Each job run in turn; its error is raised, not collected (this is for debugging)."""
        for job in jobs:
            yield job, self.result(job), None

    def cancel(self, jobs: Sequence[Any]) -> None:
        """Mark the jobs cancelled (asking a debug job whether it is done would run it)."""
        for job in jobs:
            job.cancel()

    def run_wave(self, session: Session, runs: list[PlannedRun], max_parallel: int | None) -> None:
        executor = self.executor()
        for run in runs:
            job = executor.submit(job_for(run, job_config(run, None)))
            session.submitted([(run, str(job.job_id))], self.name, RunState.RUNNING)
            try:
                self.result(job)
            except Exception as err:  # noqa: BLE001 - recorded in the run's failure.json and the report
                session.ended(run, False, f"{type(err).__name__}: {err}")
            else:
                session.ended(run, True, None)
