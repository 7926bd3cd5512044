"""Launching a sweep: validate everything, then submit only what is not done.

:func:`launch` works in two phases.

1. **Check** (nothing is written): expand and validate every run config with real paths
   (:func:`sweeps.expand.expand`), choose the backend (:mod:`jobs.backends`), and let it check
   the resources (SLURM: against the partition with ``sinfo`` and the rendered sbatch script with
   ``sbatch --test-only``; local: the GPUs this machine shows). Any problem raises
   :class:`~sweeps.spec.SweepError` and leaves no file.
2. **Submit**: read the state file, ask the scheduler once about every job on record, and
   hand the runs that need it (never submitted, failed, cancelled, interrupted) to the backend;
   done runs and runs whose job is still queued or running are skipped. Runs that need a
   prerequisite (``@teacher.yaml``, or a maps build step) wait for it: on SLURM with
   ``--dependency=afterok``, locally by running prerequisites first (runs trained first, then
   maps builds, then the sweep's runs). The state file is rewritten atomically after every submission.

On SLURM ``launch`` returns once the job arrays are queued (``wait=True`` polls until they end).
The local backend runs in the foreground with at most ``max_parallel`` runs at once, each with
its share of the CPU threads; ``debug`` runs them one after the other in this process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from jobs.backends import Backend, ExecutorError, make_backend
from jobs.backends.local import STOP_GRACE_S
from jobs.locks import file_lock
from jobs.session import Echo, LaunchReport, Session, SubmissionError
from jobs.status_report import Observation, observe
from jobs.stop import LaunchInterrupted, stop_signals_interrupt
from jobs.sweep_state import SweepState
from suite.run.names import SUBMITIT_DIR
from suite.run.records import RunPaths, RunState, read_run, read_summary
from sweeps.expand import Plan, expand
from sweeps.spec import Sweep, SweepError

__all__ = [
    "STOP_GRACE_S",
    "LaunchInterrupted",
    "LaunchReport",
    "SubmissionError",
    "check",
    "launch",
    "stop_signals_interrupt",
    "wait_for",
]

LAUNCH_LOCK_FILE = ".launch.lock"


@dataclass
class Checked:
    """The result of phase 1: a valid plan and a usable backend."""

    sweep: Sweep
    plan: Plan
    executor: str
    seconds: float
    backend: Backend


def check(sweep: Sweep, *, executor: str | None = None, check_paths: bool = True) -> Checked:
    """Phase 1: validate configs, executor and resources; writes nothing.

    Args:
        sweep: the loaded sweep.
        executor: the executor name (default: the sweep file's).
        check_paths: refuse data/checkpoint paths missing here (turn off when only the compute
            nodes see them; each job then checks on its node).

    Raises:
        SweepError: the first problem found (all invalid runs are listed together).
    """
    start = time.perf_counter()
    try:
        backend = make_backend(
            executor or sweep.spec.executor, sweep.output_root / SUBMITIT_DIR, sweep.spec.resources, job_name=sweep.name
        )
    except ExecutorError as err:
        raise SweepError(f"{sweep.path}: executor: {err}") from None
    plan = expand(sweep, check_paths=check_paths)
    _check_legacy(sweep, plan)
    if check_paths:
        _check_maps_steps(sweep, plan)
    backend.check(sweep.path, len(plan.all_runs()), SweepError)
    return Checked(sweep, plan, backend.name, time.perf_counter() - start, backend)


def legacy_hits(output_root: Path, plan: Plan) -> list[str]:
    """``"<run id> is in <folder>"`` for each run of the plan held in a folder of an earlier id rule."""
    from suite.run.migrate import legacy_folders

    old = legacy_folders(output_root)
    return [f"{run.run_id} is in {old[run.run_id]}" for run in plan.all_runs() if isinstance(old.get(run.run_id), Path)]


def _check_legacy(sweep: Sweep, plan: Plan) -> None:
    """Refuse to launch while run folders of an earlier id rule hold runs of this plan (no silent retraining)."""
    hits = legacy_hits(sweep.output_root, plan)
    if hits:
        raise SweepError(
            f"{sweep.output_root}: {len(hits)} run(s) of this sweep are in folders made by an earlier suite version "
            f"({hits[0]}{', ...' if len(hits) > 1 else ''}); run `suite runs migrate {sweep.output_root}` first. "
            "Nothing was submitted"
        )


def _check_maps_steps(sweep: Sweep, plan: Plan) -> None:
    """Refuse to launch on maps built from a teacher file whose content has changed since."""
    from suite.teacher.maps_step import stale_teacher

    for run in plan.prerequisites:
        try:
            summary = read_summary(run.paths) if run.kind == "maps" else None
        except ValueError:  # an unreadable summary: the step is corrupt, which launch reports
            summary = None
        reason = stale_teacher(summary) if summary else None
        if reason:
            raise SweepError(
                f"{sweep.path}: maps step {run.run_id} ({run.source}): {reason}; its maps, and the runs trained "
                f"on them, belong to the old teacher. Restore the file, or delete {run.paths.root} and the runs "
                "that read it, then launch again to rebuild. Nothing was submitted"
            )


@contextmanager
def _launch_lock(root: Path) -> Iterator[None]:
    """One launch per sweep at a time (two would submit the same runs twice)."""
    with file_lock(root / LAUNCH_LOCK_FILE, blocking=False) as held:
        if not held:
            raise SweepError(f"{root}: another `suite sweep launch` of this sweep is running; wait for it")
        yield


def _state_for(sweep: Sweep, plan: Plan, say: Echo) -> SweepState:
    """The sweep's state file (a damaged one set aside and rebuilt), with every run of the plan on record."""
    state = SweepState.read_or_set_aside(sweep.state_file, lambda line: say(f"warning {line}"))
    return (state or SweepState.of_sweep(sweep)).with_plan(plan)


def launch(
    sweep: Sweep,
    *,
    executor: str | None = None,
    max_parallel: int | None = None,
    wait: bool = False,
    poll_s: float = 10.0,
    check_paths: bool = True,
    echo: Echo | None = None,
) -> LaunchReport:
    """Validate a sweep, then submit every run that is not done and not already queued.

    Args:
        sweep: the loaded sweep.
        executor: ``auto``, ``slurm``, ``local`` or ``debug`` (default: the sweep file's).
        max_parallel: runs at once (SLURM: the arrays' ``%P`` together; local: concurrent
            processes; default: ``resources.array_parallelism`` on SLURM, CPUs /
            ``resources.cpus_per_task`` locally).
        wait: SLURM only: poll until every submitted job has ended.
        poll_s: seconds between scheduler polls while waiting.
        check_paths: refuse missing data/checkpoint paths before submitting (default); False
            when only the compute nodes see them (jobs then fail on the node with the message).
        echo: where progress lines go (default: nowhere).

    Returns:
        A :class:`LaunchReport`.

    Raises:
        SweepError: invalid sweep, runs, executor or resources; nothing was submitted.

    Example:
        >>> report = launch(load_sweep("sweeps/demo/methods.yaml"), executor="local")  # doctest: +SKIP
        >>> report.failed()  # doctest: +SKIP
        []
    """
    say = echo or (lambda line: None)
    checked = check(sweep, executor=executor, check_paths=check_paths)
    if max_parallel is not None and max_parallel < 1:
        raise SweepError(f"--max-parallel must be >= 1, but got {max_parallel}")
    plan, backend = checked.plan, checked.backend
    report = LaunchReport(backend.name, plan, sweep.state_file, check_seconds=checked.seconds)
    start = time.perf_counter()
    with _launch_lock(sweep.output_root):
        state = _state_for(sweep, plan, say)
        observed = _observe(sweep, state, plan)
        todo = [run for run in plan.all_runs() if observed[run.run_id].state.needs_launch()]
        report.skipped = {rid: obs.state for rid, obs in observed.items() if not obs.state.needs_launch()}
        for rid, skipped in report.skipped.items():
            if skipped is RunState.CORRUPT:
                say(f"corrupt     {rid}  {read_run(RunPaths.of(sweep.output_root, rid).root).problem}")
        for rid, obs in observed.items():
            state.runs[rid].state = obs.state.value
        if not todo:
            state.write()
            say(f"nothing to submit: {len(report.skipped)} runs are done or already queued")
            return report
        if backend.host_bound:
            state.host = os.uname().nodename
        state.launches.append({"time": time.time(), "executor": backend.name, "runs": len(todo), "arrays": []})
        state.write()
        session = Session(sweep, state, report, say, queued=_queued_prerequisites(plan, state, observed))
        backend.launch(session, todo, max_parallel)
        report.submit_seconds = time.perf_counter() - start
    if wait and not backend.foreground:
        report.final = wait_for(state, report.submitted, poll_s=poll_s, say=say)
    return report


def _observe(sweep: Sweep, state: SweepState, plan: Plan) -> dict[str, Observation]:
    """Every run's state now: its records and one scheduler query (refuses to go on without accounting)."""
    observed, accounting_ok = observe(state, [run.run_id for run in plan.all_runs()])
    if not accounting_ok:
        raise SweepError(
            f"{sweep.state_file}: sacct does not answer, so launch cannot tell which jobs still run; "
            "retry when accounting is back (sacct -j <id>)"
        )
    return observed


def _queued_prerequisites(plan: Plan, state: SweepState, observed: dict[str, Observation]) -> dict[str, str]:
    """Prerequisites whose job is still queued or running -> that job's id (runs wait for it)."""
    return {
        run.run_id: state.runs[run.run_id].job_id
        for run in plan.prerequisites
        if observed[run.run_id].state.is_active() and state.runs[run.run_id].job_id
    }


def wait_for(
    state: SweepState,
    run_ids: list[str],
    *,
    poll_s: float = 10.0,
    timeout_s: float | None = None,
    say: Echo | None = None,
) -> dict[str, RunState]:
    """Poll the scheduler (one ``sacct`` per poll) until none of ``run_ids`` is queued or running.

    Raises:
        TimeoutError: some runs are still queued or running after ``timeout_s`` seconds.
    """
    say = say or (lambda line: None)
    last = None
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        observed, _ = observe(state, run_ids)
        states = {rid: obs.state for rid, obs in observed.items()}
        counts = {s.value: n for s in RunState if (n := sum(v is s for v in states.values()))}
        if counts != last:
            say("  ".join(f"{k} {v}" for k, v in counts.items()))
            last = counts
        if not any(s.is_active() for s in states.values()):
            for rid, s in states.items():
                state.runs[rid].state = s.value
            state.write()
            return states
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"still queued or running after {timeout_s:.0f} s: {counts}")
        time.sleep(max(0.5, poll_s))
