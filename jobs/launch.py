"""Launching a sweep: validate everything, then submit only what is not done.

:func:`launch` works in two phases.

1. **Check** (nothing is written): expand and validate every run config with real paths
   (:func:`sweeps.expand.expand`), resolve the executor, and for SLURM check the resources
   against the partition (``sinfo``) and the rendered sbatch script with ``sbatch
   --test-only``. Any problem raises :class:`~sweeps.spec.SweepError` and leaves no file.
2. **Submit**: read the state file, ask the scheduler once about every job on record, and
   submit the runs that need it (never submitted, failed, cancelled, interrupted); done runs
   and runs whose job is still queued or running are skipped. Runs that need a prerequisite
   (``@teacher.yaml``, or a maps build step) wait for it: on SLURM with
   ``--dependency=afterok``, locally by running prerequisites first (runs trained first, then
   maps builds, then the sweep's runs). The state file is rewritten atomically after every submission.

On SLURM the runs go out as job arrays (one ``sbatch`` per array, split under
``MaxArraySize``, see :mod:`jobs.arrays`) and ``launch`` returns (``wait=True`` polls until they
end). The local executor runs in the foreground with at most ``max_parallel`` runs at once,
each with its share of the CPU threads (``run.threads``, an output-only field, so run ids do
not change); ``debug`` runs them one after the other in this process.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs import slurm
from jobs.arrays import ArrayChunk, plan_arrays
from jobs.executors import (
    ExecutorError,
    checked_slurm_executor,
    local_executor,
    resolve_executor,
    slurm_executor,
)
from jobs.sweep_state import RunEntry, SweepState, classify
from jobs.status_report import observe
from jobs.worker import job_for
from suite.run.records import RunPaths, RunState, read_run, read_summary, run_state
from sweeps.expand import Plan, PlannedRun, expand
from sweeps.spec import Sweep, SweepError

__all__ = ["LaunchInterrupted", "LaunchReport", "STOP_GRACE_S", "SubmissionError", "check", "launch", "wait_for"]

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
class Checked:
    """The result of phase 1: a valid plan and a usable executor."""

    sweep: Sweep
    plan: Plan
    executor: str
    seconds: float


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
    name = executor or sweep.spec.executor
    try:
        kind = resolve_executor(name)
    except ExecutorError as err:
        raise SweepError(f"{sweep.path}: executor: {err}") from None
    plan = expand(sweep, check_paths=check_paths)
    _check_legacy(sweep, plan)
    if check_paths:
        _check_maps_steps(sweep, plan)
    if kind == "slurm":
        _check_slurm(sweep, len(plan.all_runs()))
    if kind == "local":
        _check_local_gpus(sweep)
    return Checked(sweep, plan, kind, time.perf_counter() - start)


def _check_legacy(sweep: Sweep, plan: Plan) -> None:
    """Refuse to launch while run folders of an earlier id rule hold runs of this plan (no silent retraining)."""
    from suite.run.migrate import legacy_folders

    old = legacy_folders(sweep.output_root)
    hits = [f"{run.run_id} is in {old[run.run_id]}" for run in plan.all_runs() if isinstance(old.get(run.run_id), Path)]
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


def _check_local_gpus(sweep: Sweep) -> None:
    """Refuse a local launch whose runs ask for more GPUs than this machine shows (none: runs use the CPU)."""
    per_run = sweep.spec.resources.gpus_per_node
    gpus = _local_gpus(per_run, os.environ, _cuda_device_count())
    if gpus and per_run > len(gpus):
        inherited = os.environ.get("CUDA_VISIBLE_DEVICES")
        seen = f"CUDA_VISIBLE_DEVICES={inherited}" if inherited is not None else "torch.cuda.device_count()"
        raise SweepError(
            f"{sweep.path}: resources.gpus_per_node={per_run}, but this machine shows {len(gpus)} GPU(s) "
            f"({seen}); a run trains one process per GPU, so set resources.gpus_per_node={len(gpus)} or less for a "
            "local launch (data.batch_size stays the global batch), or launch on SLURM. Nothing was started"
        )


def _check_slurm(sweep: Sweep, count: int) -> None:
    checked_slurm_executor(
        sweep.path, sweep.spec.resources, folder=sweep.output_root / ".submitit", job_name=sweep.name,
        tasks=count, error=SweepError,
    )


@contextmanager
def _launch_lock(root: Path) -> Iterator[None]:
    """One launch per sweep at a time (two would submit the same runs twice)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / ".launch.lock"
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SweepError(
                f"{root}: another `suite sweep launch` of this sweep is running; wait for it"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _state_for(sweep: Sweep, plan: Plan, say: Echo = lambda line: None) -> SweepState:
    state = SweepState.read_or_set_aside(sweep.state_file, lambda line: say(f"warning {line}"))
    if state is None:
        state = SweepState(
            path=sweep.state_file,
            sweep=sweep.name,
            sweep_file=str(sweep.path),
            output_root=str(sweep.output_root),
            submitit_folder=str(sweep.output_root / ".submitit" / "%j"),
        )
    for run in plan.all_runs():
        entry = state.runs.get(run.run_id) or RunEntry(index=run.index, values={}, label="")
        entry.index, entry.values, entry.label = run.index, run.values, run.label()
        entry.prerequisite, entry.needs = run.prerequisite, list(run.needs)
        state.runs[run.run_id] = entry
    return state


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
    plan, kind = checked.plan, checked.executor
    report = LaunchReport(kind, plan, sweep.state_file, check_seconds=checked.seconds)
    start = time.perf_counter()
    with _launch_lock(sweep.output_root):
        state = _state_for(sweep, plan, say)
        observed, accounting_ok = observe(state, [run.run_id for run in plan.all_runs()])
        if not accounting_ok:
            raise SweepError(
                f"{sweep.state_file}: sacct does not answer, so launch cannot tell which jobs still run; "
                "retry when accounting is back (sacct -j <id>)"
            )
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
        if kind == "local":
            state.host = os.uname().nodename
        state.launches.append({"time": time.time(), "executor": kind, "runs": len(todo), "arrays": []})
        state.write()
        if kind == "slurm":
            _submit_slurm(sweep, plan, state, todo, observed, report, max_parallel=max_parallel, say=say)
        else:
            _run_here(sweep, plan, state, todo, report, kind=kind, max_parallel=max_parallel, say=say)
        report.submit_seconds = time.perf_counter() - start
    if kind == "slurm" and wait:
        report.final = wait_for(state, report.submitted, poll_s=poll_s, say=say)
    return report


def _submit_slurm(
    sweep: Sweep,
    plan: Plan,
    state: SweepState,
    todo: list[PlannedRun],
    observed: dict[str, Any],
    report: LaunchReport,
    *,
    max_parallel: int | None,
    say: Echo,
) -> None:
    """Submit ``todo`` as job arrays: prerequisites first, then runs grouped by what they wait for."""
    res = sweep.spec.resources
    executor = slurm_executor(sweep.output_root / ".submitit", res, job_name=sweep.name)
    waiting_on = {
        run.run_id: state.runs[run.run_id].job_id
        for run in plan.prerequisites
        if observed[run.run_id].state.is_active() and state.runs[run.run_id].job_id
    }
    limit = slurm.max_array_size()
    parallel = max_parallel or res.array_parallelism

    def submit(
        batch: list[PlannedRun], chunks: list[ArrayChunk], offset: int, dependency: str | None
    ) -> None:
        for chunk in chunks:
            members = batch[chunk.start - offset : chunk.stop - offset]
            executor.update_parameters(array_parallelism=chunk.parallelism, dependency=dependency)
            try:
                with executor.batch():
                    jobs = [executor.submit(job_for(run)) for run in members]
            except Exception as err:  # sbatch refused (e.g. MaxJobCount reached): keep what went out
                state.write()
                raise SubmissionError(
                    f"sbatch failed after {len(report.submitted)} of {len(todo)} runs were submitted: "
                    f"{str(err).strip()}\nThe state file records the submitted jobs; once the cause is fixed, launch "
                    "again: queued runs are not submitted twice."
                ) from err
            now = time.time()
            for run, job in zip(members, jobs):
                entry = state.runs[run.run_id]
                entry.executor, entry.job_id, entry.submitted = "slurm", str(job.job_id), now
                entry.submissions += 1
                entry.state = RunState.PENDING.value
                report.submitted.append(run.run_id)
            array_id = str(jobs[0].job_id).split("_")[0]
            info = {
                "job_id": array_id,
                "size": len(members),
                "parallelism": chunk.parallelism,
                "dependency": dependency,
            }
            report.arrays.append(info)
            state.launches[-1]["arrays"].append(info)
            state.write()
            say(
                f"submitted {len(members)} runs as SLURM job {array_id} (%{chunk.parallelism})"
                + (f", after {dependency}" if dependency else "")
            )

    single: dict[str, Any] = {"ntasks_per_node": 1, "nodes": 1}  # a maps build is one process on one GPU
    if executor.parameters.get("gpus_per_node"):
        single["gpus_per_node"] = 1
    whole = {k: executor.parameters[k] for k in single if k in executor.parameters}
    for wave in _waves(todo):
        if not wave:
            continue
        executor.update_parameters(**(single if wave[0].kind == "maps" else whole))
        groups: dict[str | None, list[PlannedRun]] = {}
        for run in wave:
            ids = [waiting_on[need] for need in run.needs if need in waiting_on]
            groups.setdefault("afterok:" + ":".join(ids) if ids else None, []).append(run)
        ordered = [run for members in groups.values() for run in members]
        chunks = plan_arrays([len(m) for m in groups.values()], max_array_size=limit, max_parallel=parallel)
        offset = 0
        for dependency, members in groups.items():
            mine = [c for c in chunks if offset <= c.start < offset + len(members)]
            submit(ordered[offset : offset + len(members)], mine, offset, dependency)
            offset += len(members)
        for run in wave:
            if run.prerequisite:
                waiting_on[run.run_id] = state.runs[run.run_id].job_id
    executor.update_parameters(**whole)


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


def _cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _run_here(
    sweep: Sweep,
    plan: Plan,
    state: SweepState,
    todo: list[PlannedRun],
    report: LaunchReport,
    *,
    kind: str,
    max_parallel: int | None,
    say: Echo,
) -> None:
    """Local and debug executors: prerequisites first, then the rest, in the foreground."""
    res = sweep.spec.resources
    gpus = _local_gpus(res.gpus_per_node, os.environ, _cuda_device_count()) if kind == "local" else []
    parallel = 1 if kind == "debug" else (max_parallel or max(1, _cpus() // res.cpus_per_task))
    if gpus:
        parallel = min(parallel, max(1, len(gpus) // min(res.gpus_per_node, len(gpus))))
    tasks = res.tasks if kind == "local" else 1  # the processes of one data-parallel run share its CPUs
    failed_prerequisites: set[str] = set()
    folder = sweep.output_root / ".submitit"

    def finish(run: PlannedRun, ok: bool, error: str | None, stopped: bool = False) -> None:
        files = run_state(RunPaths.of(sweep.output_root, run.run_id))
        final = classify(files, None if stopped else "FINISHED")  # a stopped run that never began stays new
        if not ok and final is not RunState.FINISHED:
            final = RunState.FAILED
        state.runs[run.run_id].state = final.value
        report.final[run.run_id] = final
        if run.prerequisite and final is not RunState.FINISHED:
            failed_prerequisites.add(run.run_id)
        state.write()
        say(f"{final.value:<11} {run.run_id}  {run.label()}" + (f"  ({error})" if error else ""))

    waves = _waves(todo)
    for wave in waves:
        ready = []
        for run in wave:
            if failed_prerequisites.intersection(run.needs):
                report.blocked.append(run.run_id)
                failed_prerequisites.add(run.run_id)  # what waits on a blocked step is blocked too
                say(f"blocked     {run.run_id}  {run.label()}  (a prerequisite failed)")
            else:
                ready.append(run)
        if kind == "debug":
            _debug(ready, state, report, folder, finish)
        else:
            slots = _GpuSlots(gpus, min(res.gpus_per_node, len(gpus)))
            # a wave smaller than the slots (a lone teacher) shares the CPUs among its runs
            at_once = max(1, min(parallel, len(ready)))
            threads = max(1, _cpus() // (at_once * tasks))
            _local(ready, state, report, local_executor(folder, res), at_once, threads, slots, finish, say)


def _waves(todo: list[PlannedRun]) -> list[list[PlannedRun]]:
    """What can start together: runs trained first, then maps build steps, then the sweep's runs."""
    return [
        [run for run in todo if run.prerequisite and run.kind != "maps"],
        [run for run in todo if run.kind == "maps"],
        [run for run in todo if not run.prerequisite],
    ]


def _cuda_device_count() -> int:
    """GPUs this process sees (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _local_gpus(per_run: int, env: Mapping[str, str], device_count: int) -> list[str]:
    """The GPUs local runs may use, as ``CUDA_VISIBLE_DEVICES`` entries (none when runs ask for none).

    With an inherited ``CUDA_VISIBLE_DEVICES`` (a SLURM allocation, a shared workstation) they
    are its entries, ids or UUIDs, read as CUDA reads them (up to an empty or negative entry,
    at most ``device_count`` of them); numbering ``range(device_count)`` instead would hand out
    GPUs of the machine that this process was not given. Without it: ``0 .. device_count-1``.
    """
    if per_run <= 0 or device_count <= 0:
        return []
    inherited = env.get("CUDA_VISIBLE_DEVICES")
    if inherited is None:
        return [str(i) for i in range(device_count)]
    entries: list[str] = []
    for entry in (e.strip() for e in inherited.split(",")):
        if not entry or entry.startswith("-"):
            break
        entries.append(entry)
    return entries[:device_count]


class _GpuSlots:
    """Hands each concurrent local run its own GPUs (``CUDA_VISIBLE_DEVICES`` entries)."""

    def __init__(self, gpus: list[str], per_run: int) -> None:
        self.free = list(gpus)
        self.per_run = per_run
        self.taken: dict[str, list[str]] = {}

    def take(self, run_id: str, executor: Any) -> list[str]:
        """The next free GPUs for ``run_id``; the executor's next job gets them (empty: the CPU).

        submitit's local executor takes integer ids only: numeric entries go through it, and
        the job sets ``CUDA_VISIBLE_DEVICES`` to the returned entries itself (UUIDs included)
        before anything touches CUDA (:class:`jobs.worker.RunJob`).
        """
        ids, self.free = self.free[: self.per_run], self.free[self.per_run :]
        self.taken[run_id] = ids
        numeric = tuple(int(i) for i in ids) if all(i.isdigit() for i in ids) else ()
        executor.update_parameters(gpus_per_node=len(ids), visible_gpus=numeric)
        return ids

    def give_back(self, run_id: str) -> None:
        self.free += self.taken.pop(run_id, [])


def _job_config(run: PlannedRun, threads: int | None) -> dict[str, Any]:
    config = run.resolved()
    if threads is not None:
        config["run"]["threads"] = threads  # output-only: the run id stays the same
    return config


def _mark_submitted(
    state: SweepState, report: LaunchReport, run: PlannedRun, executor: str, job_id: str
) -> None:
    entry = state.runs[run.run_id]
    entry.executor, entry.job_id, entry.submitted = executor, job_id, time.time()
    entry.submissions += 1
    entry.state = RunState.RUNNING.value
    report.submitted.append(run.run_id)
    state.write()


def _debug(
    runs: list[PlannedRun],
    state: SweepState,
    report: LaunchReport,
    folder: Path,
    finish: Callable[[PlannedRun, bool, str | None], None],
) -> None:
    import submitit

    executor = submitit.DebugExecutor(folder=str(folder / "%j"))
    for run in runs:
        job = executor.submit(job_for(run, _job_config(run, None)))
        _mark_submitted(state, report, run, "debug", str(job.job_id))
        try:
            # With a terminal, submitit's debug job opens pdb on an error; without one, just run it.
            job.result() if sys.stdin.isatty() else job.submission().result()
        except Exception as err:  # noqa: BLE001 - recorded in the run's failure.json and the report
            finish(run, False, f"{type(err).__name__}: {err}")
        else:
            finish(run, True, None)


def _local(
    runs: list[PlannedRun],
    state: SweepState,
    report: LaunchReport,
    executor: Any,
    parallel: int,
    threads: int,
    slots: _GpuSlots,
    finish: Callable[..., None],
    say: Echo,
) -> None:
    """Run ``runs`` as local processes, at most ``parallel`` at once, in the foreground.

    Stopping (Ctrl-C, or SIGTERM to the launcher) goes through :class:`_LocalStop`: the stop
    is forwarded to every run, each run checkpoints at its next step boundary and ends
    ``interrupted``, and the launcher waits for them (``STOP_GRACE_S``) before it raises
    :class:`LaunchInterrupted`. No run is left behind.
    """
    queue = list(runs)
    running: dict[str, tuple[PlannedRun, Any]] = {}

    def reap(stopping: bool = False) -> None:
        for rid, (run, job) in list(running.items()):
            if job.done():
                del running[rid]
                slots.give_back(rid)
                if stopping:
                    finish(run, True, None, True)  # the records say interrupted (or finished)
                else:
                    _collect(run, job, finish)

    with _LocalStop() as stop:
        try:
            while (queue or running) and not stop.requested:
                while queue and len(running) < parallel and not stop.requested:
                    run = queue.pop(0)
                    devices = slots.take(run.run_id, executor)
                    with _controller_ignores_sigint():
                        job = executor.submit(job_for(run, _job_config(run, threads), devices=devices or None))
                    running[run.run_id] = (run, job)
                    _mark_submitted(state, report, run, "local", str(job.job_id))
                    say(f"started     {run.run_id}  {run.label()}  (pid {job.job_id}, {threads} threads)")
                stop.sleep(0.5)
                reap()
        finally:
            if stop.requested or running:
                _stop_local(running, stop, reap, say)
        if stop.requested:
            raise LaunchInterrupted(stop.describe(), list(running))


class LaunchInterrupted(RuntimeError):
    """A local launch was stopped by a signal; its runs checkpointed and are resumable."""

    def __init__(self, reason: str, left: list[str]) -> None:
        super().__init__(reason)
        self.left = left


def _stop_grace_s() -> float:
    """How long a stopped local launch waits for its runs to checkpoint (``SUITE_STOP_GRACE_S``)."""
    try:
        return float(os.environ.get("SUITE_STOP_GRACE_S", STOP_GRACE_S))
    except ValueError:
        return STOP_GRACE_S


STOP_GRACE_S = 600.0  # a step plus the write of a large checkpoint; SUITE_STOP_GRACE_S overrides it
HURRY_GRACE_S = 30.0  # after a second Ctrl-C: runs stop at once, keeping their last checkpoint


class _LocalStop:
    """Turns SIGINT/SIGTERM to the launcher into a stop request (and a second one into "hurry")."""

    def __init__(self) -> None:
        self.signals: list[int] = []
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return bool(self.signals)

    @property
    def hurry(self) -> bool:
        return len(self.signals) > 1

    def describe(self) -> str:
        import signal

        return signal.Signals(self.signals[0]).name if self.signals else "stop"

    def _handler(self, signum: int, frame: Any) -> None:
        self.signals.append(signum)

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        count = len(self.signals)
        while time.monotonic() < deadline and len(self.signals) == count:
            time.sleep(0.05)

    def __enter__(self) -> _LocalStop:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        import signal

        for sig, handler in self._previous.items():
            # After a stop the launcher only reports and exits: further Ctrl-Cs change nothing.
            signal.signal(sig, signal.SIG_IGN if self.requested else handler)
        self._previous.clear()


@contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """While launching, SIGTERM (like Ctrl-C) raises KeyboardInterrupt once, then both are ignored.

    So ``kill <launcher>`` before any run started ends with the launcher's own message instead
    of a silent exit 143; once runs are started, :class:`_LocalStop` takes over.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if signal.getsignal(sig) is interrupt:
                signal.signal(sig, handler)


@contextmanager
def _controller_ignores_sigint() -> Iterator[None]:
    """Start submitit's local controller with SIGINT ignored.

    A terminal's Ctrl-C reaches every process of the foreground group; submitit's controller
    answers SIGINT by sending SIGINT and, one second later, SIGKILL to the run, which then dies
    mid-step without a checkpoint. Ignored at start, SIGINT leaves the controller alone (Python
    keeps an inherited SIG_IGN), and the run itself installs its own handler. The launcher
    forwards stops to the controller as SIGTERM, which the controller passes on to the run.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc), deepest last."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            with open(f"/proc/{parent}/task/{parent}/children") as handle:
                children = [int(c) for c in handle.read().split()]
        except OSError:
            children = []
        found.extend(children)
        todo.extend(children)
    return found


def _signal(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def _stop_local(running: dict[str, tuple[PlannedRun, Any]], stop: _LocalStop, reap: Callable[..., None], say: Echo) -> None:
    """Forward the stop to every running run, wait for their checkpoints, leave no process behind."""
    import signal

    if not running:
        return
    grace = _stop_grace_s()
    say(
        f"stopping: {len(running)} run(s) checkpoint at their next step (waiting up to {grace:.0f} s; "
        "Ctrl-C again to stop at once, keeping the last checkpoint)"
    )
    controllers = {rid: int(job.job_id) for rid, (_, job) in running.items()}
    _signal(list(controllers.values()), signal.SIGTERM)  # the controller passes SIGTERM on to the run
    hurried = False
    deadline = time.monotonic() + grace
    while running and time.monotonic() < deadline:
        if stop.hurry and not hurried:
            hurried = True
            deadline = min(deadline, time.monotonic() + HURRY_GRACE_S)
            runs = [pid for rid in running for pid in _descendants(controllers[rid])[:1]]
            _signal(runs, signal.SIGINT)  # a run's second interrupt: stop now, last checkpoint kept
            _signal(runs, signal.SIGINT)
        stop.sleep(0.2)
        reap(stopping=True)
    if running:
        say(f"{len(running)} run(s) did not stop within the grace period; killing them (last checkpoints kept)")
        for rid in list(running):
            pids = [controllers[rid], *_descendants(controllers[rid])]
            _signal(pids, signal.SIGKILL)
        time.sleep(0.5)
        reap(stopping=True)


def _collect(run: PlannedRun, job: Any, finish: Callable[[PlannedRun, bool, str | None], None]) -> None:
    try:
        job.results()  # every process of the run (one per task)
    except Exception as err:  # noqa: BLE001 - the traceback is in the job log and failure.json
        lines = [line for line in str(err).splitlines() if line.strip()]
        finish(run, False, lines[-1] if lines else type(err).__name__)
    else:
        finish(run, True, None)
