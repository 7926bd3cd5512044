"""The interface of a backend: what runs a sweep's runs and a study's workers.

submitit's shape, one executor per backend, plus what the suite needs around it: a check of the
resources before anything is written (:meth:`Backend.check`), the CPU share of jobs that run
side by side (:meth:`Backend.threads`), submitting callables together and collecting their
results (tuning workers), and launching a sweep's runs with its prerequisites first
(:meth:`Backend.launch`). Callers never ask which backend they hold; what differs is said by the
class (:attr:`Backend.foreground`, :attr:`Backend.in_process`, :attr:`Backend.host_bound`).

:class:`ForegroundBackend` is the part the local and debug backends share: runs trained first,
then maps build steps, then the sweep's runs, each wave to its end, skipping runs whose
prerequisite failed.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from jobs.session import Session
from sweeps.expand import PlannedRun
from sweeps.spec import ResourcesSpec

__all__ = ["Backend", "ExecutorError", "ForegroundBackend", "waves"]

Outcome = tuple[Any, Any, Exception | None]  # (job, its result, or the error it ended with)


class ExecutorError(ValueError):
    """An executor name or backend that cannot be used here; the message says what to use."""


class Backend(ABC):
    """One way to run jobs.

    Args:
        folder: where submitit writes job pickles and logs (``<output_root>/.submitit``).
        resources: the sweep's or study's resources (per run, or per worker).
        job_name: the scheduler's job name.
    """

    name: ClassVar[str]
    foreground: ClassVar[bool] = True  # its jobs end before launch returns (SLURM: they are only submitted)
    in_process: ClassVar[bool] = False  # runs one job at a time inside this process (debug)
    host_bound: ClassVar[bool] = False  # job ids are process ids on this host (the state file names it)

    def __init__(self, folder: Path, resources: ResourcesSpec, *, job_name: str) -> None:
        self.folder = folder
        self.resources = resources
        self.job_name = job_name

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this backend cannot run here (None: it can)."""
        return None

    def check(self, source: Path, tasks: int, error: type[Exception]) -> None:
        """Refuse what this backend cannot give ``tasks`` jobs; writes nothing.

        Raises:
            error: with lines that start with ``source`` (the sweep or study file).
        """

    def threads(self, at_once: int, tasks: int = 1) -> int | None:
        """``run.threads`` when ``at_once`` jobs of ``tasks`` processes share this machine (None: the job's CPUs)."""
        return None

    @abstractmethod
    def submit(self, calls: Sequence[Callable[[], Any]]) -> list[Any]:
        """Submit ``calls`` together (SLURM: one job array) and return their submitit jobs."""

    def started(self, jobs: Sequence[Any], what: str, threads: int | None) -> str | None:
        """The progress line after :meth:`submit` (None: nothing to say yet)."""
        return None

    def result(self, job: Any) -> Any:
        """A job's result (waits for it; raises its error)."""
        return job.result()

    def results(self, jobs: Sequence[Any], poll_s: float = 1.0) -> Iterator[Outcome]:
        """``(job, result, None)`` or ``(job, None, error)`` for each job, as it ends."""
        pending = list(jobs)
        while pending:
            time.sleep(poll_s)
            for job in [j for j in pending if j.done()]:
                pending.remove(job)
                try:
                    value = job.result()
                except Exception as err:  # noqa: BLE001 - the caller reports it; other jobs go on
                    yield job, None, err
                else:
                    yield job, value, None

    def cancel(self, jobs: Sequence[Any]) -> None:
        """Cancel the jobs that have not ended."""
        for job in jobs:
            if not job.done():
                job.cancel()

    @abstractmethod
    def launch(self, session: Session, todo: list[PlannedRun], max_parallel: int | None) -> None:
        """Submit, or run, the runs of ``todo``, prerequisites first (see :func:`waves`).

        Args:
            session: the launch (state file, report, progress lines).
            todo: the runs that need a job.
            max_parallel: runs at once (None: the backend's default).
        """


class ForegroundBackend(Backend):
    """A backend that runs each wave of a sweep to its end before it starts the next."""

    def launch(self, session: Session, todo: list[PlannedRun], max_parallel: int | None) -> None:
        for wave in waves(todo):
            ready = [run for run in wave if not session.blocked(run)]
            if ready:
                self.run_wave(session, ready, max_parallel)

    @abstractmethod
    def run_wave(self, session: Session, runs: list[PlannedRun], max_parallel: int | None) -> None:
        """Run ``runs`` (none waits for another) to their end, recording each with ``session.ended``."""


def waves(todo: list[PlannedRun]) -> list[list[PlannedRun]]:
    """What can start together: runs trained first, then maps build steps, then the sweep's runs."""
    return [
        [run for run in todo if run.prerequisite and run.kind != "maps"],
        [run for run in todo if run.kind == "maps"],
        [run for run in todo if not run.prerequisite],
    ]
