"""``suite tune``: create or load a study, then run its workers through a backend until it is done.

The backend (:mod:`jobs.backends`) is the one sweeps use: ``slurm`` submits the workers as one
job array, ``local`` starts them as processes of this machine (each with its CPU share), and
``debug`` runs one worker in this process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from jobs.backends import Backend, ExecutorError, make_backend
from jobs.study_storage import storage_label
from jobs.tune.study import open_study
from jobs.tune.worker import TuneWorker
from suite.run.names import SUBMITIT_DIR
from sweeps.study import Study, StudyError, output_fields

__all__ = ["TuneReport", "tune"]

Echo = Callable[[str], None]


@dataclass
class TuneReport:
    """What ``suite tune`` did."""

    executor: str
    workers: int
    job_ids: list[str] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    failed_workers: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _check_machine(study: Study) -> None:
    """The base config's files and models as this machine sees them (the space's values are schema-checked)."""
    from suite.config import ConfigError, validate_config
    from suite.train.preflight import check_machine

    try:
        check_machine(validate_config(output_fields(study, dict(study.base))))
    except ConfigError as err:
        lines = [f"{study.path}: base: {line}" for line in str(err).splitlines()]
        raise StudyError("\n".join(lines) + "\n(--no-check-paths leaves this check to each trial)") from None


def tune(
    study: Study,
    *,
    executor: str | None = None,
    workers: int | None = None,
    wait: bool = True,
    check_paths: bool = True,
    echo: Echo | None = None,
) -> TuneReport:
    """Create (or load) the study and run its workers until it has ``n_trials`` finished trials.

    Args:
        study: the loaded study file.
        executor: ``auto``, ``slurm``, ``local`` or ``debug`` (default: the file's).
        workers: worker jobs (default: the file's ``workers``; ``debug`` always runs one).
        wait: SLURM: poll until every worker has ended (local and debug always wait).
        check_paths: refuse a base config whose data, checkpoints or model this machine lacks
            (turn off when only the compute nodes see them; each trial then checks on its node).
        echo: where progress lines go.

    Raises:
        StudyError: invalid executor or resources; nothing was created or submitted.
    """
    say = echo or (lambda line: None)
    start = time.perf_counter()
    try:
        backend = make_backend(
            executor or study.spec.executor, study.output_root / SUBMITIT_DIR, study.spec.resources,
            job_name=study.name,
        )
    except ExecutorError as err:
        raise StudyError(f"{study.path}: executor: {err}") from None
    count = 1 if backend.in_process else (workers or study.spec.workers)
    if count < 1:
        raise StudyError(f"--workers must be >= 1, but got {count}")
    if check_paths:
        _check_machine(study)
    backend.check(study.path, count, StudyError)
    ostudy = open_study(study, create=True)
    ostudy.set_user_attr("study_file", str(study.path))
    report = TuneReport(backend.name, count)
    finished = sum(t.state.name in ("COMPLETE", "PRUNED") for t in ostudy.get_trials(deepcopy=False))
    say(f"study {study.name}: {finished}/{study.n_trials} trials finished; storage "
        f"{storage_label(study.storage_url)}")
    if finished >= study.n_trials:
        say("nothing to do: raise n_trials in the study file to extend it")
        return report
    threads = backend.threads(count)
    jobs = backend.submit([TuneWorker(study, k, threads) for k in range(count)])
    report.job_ids = [str(j.job_id) for j in jobs]
    line = backend.started(jobs, "workers", threads)
    if line:
        say(line)
    if backend.foreground or wait:
        _collect(backend, jobs, report, say)
    report.seconds = time.perf_counter() - start
    return report


def _collect(backend: Backend, jobs: Sequence[Any], report: TuneReport, say: Echo) -> None:
    """Each worker's result as it ends; a lost worker is reported, the study survives it."""
    try:
        for job, result, error in backend.results(jobs):
            if error is None:
                report.results.append(result)
                say(f"worker {result['worker']} ended ({result['stopped']}): {len(result['trials'])} trials")
            else:
                report.failed_workers.append(str(job.job_id))
                say(f"worker job {job.job_id} {worker_error(error)}")
    except KeyboardInterrupt:
        say("interrupted: workers checkpoint their runs; `suite tune` again resumes them")
        backend.cancel(jobs)
        raise


def worker_error(error: BaseException) -> str:
    """How a worker job that raised or vanished ended, in one line (after "worker job N ").

    A job killed from outside (SIGKILL, out of memory, a lost node) leaves no result; submitit's
    error then ends with the last line the training printed ("epoch 1/8 loss ..."), which is not
    why it ended.
    """
    from submitit.core.utils import UncompletedJobError

    if isinstance(error, UncompletedJobError):
        return (
            "was killed before it ended (a signal, out of memory or a lost node; no result): its trial is "
            "retried from the run's last checkpoint by the next worker, once its heartbeat is older than grace_s"
        )
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"failed: {lines[-1] if lines else type(error).__name__}"
