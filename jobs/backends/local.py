"""The local backend: a pool of processes on this machine, each run with its CPU share and its GPUs.

Runs start through submitit's ``LocalExecutor`` (one controller process per run, which starts
the run's processes; :mod:`jobs.local_controller` has it create its log folder
first), at most ``max_parallel`` at once (default: CPUs ÷
``resources.cpus_per_task``, and no more than the GPUs allow). Each run gets ``run.threads`` =
CPUs ÷ runs at once (an output-only field, so run ids do not change) and its own GPUs
(:class:`GpuSlots`), taken from the ``CUDA_VISIBLE_DEVICES`` this launcher inherited
(:func:`local_gpus`).

The launcher stays in the foreground. Stopping it (Ctrl-C, SIGTERM) goes through a
:class:`~jobs.stop.LaunchStop`: the stop is forwarded to every run, each run checkpoints at its
next step boundary and ends ``interrupted``, and the launcher waits for them
(``STOP_GRACE_S``; a second Ctrl-C: at once, keeping the last checkpoint) before it raises
:class:`~jobs.stop.LaunchInterrupted`. No process is left behind.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import submitit

from jobs.backends.base import ForegroundBackend
from jobs.local_controller import FolderFirstLocalExecutor
from jobs.session import Session, job_config
from jobs.stop import LaunchInterrupted, LaunchStop
from jobs.worker import job_for
from suite.run.records import RunState
from sweeps.expand import PlannedRun

__all__ = ["HURRY_GRACE_S", "STOP_GRACE_S", "GpuSlots", "LocalBackend", "LocalPool", "local_gpus"]

STOP_GRACE_S = 600.0  # a step plus the write of a large checkpoint; SUITE_STOP_GRACE_S overrides it
HURRY_GRACE_S = 30.0  # after a second Ctrl-C: runs stop at once, keeping their last checkpoint


def _cpus() -> int:
    """CPUs this launcher may hand out (its own allocation)."""
    from suite.device.hardware import cpu_allocation

    return cpu_allocation()


def cuda_device_count() -> int:
    """GPUs this process sees (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def local_gpus(per_run: int, env: Mapping[str, str], device_count: int) -> list[str]:
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


class GpuSlots:
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


class LocalBackend(ForegroundBackend):
    """Processes on this machine, in the foreground."""

    name = "local"
    host_bound = True

    def executor(self) -> submitit.LocalExecutor:
        """A local executor (one subprocess per process of a run) with the resources' time limit."""
        res = self.resources
        executor = FolderFirstLocalExecutor(folder=str(self.folder / "%j"), max_num_timeout=res.max_num_timeout)
        executor.update_parameters(
            timeout_min=res.timeout_min, signal_delay_s=res.signal_delay_s, gpus_per_node=0, tasks_per_node=res.tasks
        )
        return executor

    def gpus(self) -> list[str]:
        return local_gpus(self.resources.gpus_per_node, os.environ, cuda_device_count())

    def check(self, source: Path, tasks: int, error: type[Exception]) -> None:
        """One machine, and no more GPUs per run than it shows (none: runs use the CPU)."""
        res = self.resources
        if res.nodes > 1:
            raise error(f"{source}: resources.nodes={res.nodes}: the local executor runs on this one machine; use 1")
        gpus = self.gpus()
        if gpus and res.gpus_per_node > len(gpus):
            inherited = os.environ.get("CUDA_VISIBLE_DEVICES")
            seen = f"CUDA_VISIBLE_DEVICES={inherited}" if inherited is not None else "torch.cuda.device_count()"
            raise error(
                f"{source}: resources.gpus_per_node={res.gpus_per_node}, but this machine shows {len(gpus)} GPU(s) "
                f"({seen}); a run trains one process per GPU, so set resources.gpus_per_node={len(gpus)} or less for "
                "a local launch (data.batch_size stays the global batch), or launch on SLURM. Nothing was started"
            )

    def threads(self, at_once: int, tasks: int = 1) -> int | None:
        return max(1, _cpus() // (at_once * tasks))

    def submit(self, calls: Sequence[Callable[[], Any]]) -> list[Any]:
        executor = self.executor()
        return [executor.submit(call) for call in calls]

    def started(self, jobs: Sequence[Any], what: str, threads: int | None) -> str | None:
        pids = ", ".join(str(job.job_id) for job in jobs)
        return f"started {len(jobs)} local {what} (pids {pids}, {threads} threads each)"

    def run_wave(self, session: Session, runs: list[PlannedRun], max_parallel: int | None) -> None:
        res = self.resources
        gpus = self.gpus()
        per_run = min(res.gpus_per_node, len(gpus))
        parallel = max_parallel or max(1, _cpus() // res.cpus_per_task)
        if gpus:
            parallel = min(parallel, max(1, len(gpus) // per_run))
        at_once = max(1, min(parallel, len(runs)))  # a wave smaller than that (a lone teacher) shares the CPUs
        # the processes of one data-parallel run share its CPUs
        pool = LocalPool(session, self.executor(), at_once, self.threads(at_once, res.tasks), GpuSlots(gpus, per_run))
        pool.run(runs)


def _stop_grace_s() -> float:
    """How long a stopped local launch waits for its runs to checkpoint (``SUITE_STOP_GRACE_S``)."""
    try:
        return float(os.environ.get("SUITE_STOP_GRACE_S", STOP_GRACE_S))
    except ValueError:
        return STOP_GRACE_S


class LocalPool:
    """Runs as local processes, at most ``parallel`` at once, until they end or the launcher is stopped."""

    def __init__(self, session: Session, executor: Any, parallel: int, threads: int, slots: GpuSlots) -> None:
        self.session, self.executor, self.parallel, self.threads, self.slots = session, executor, parallel, threads, slots
        self.running: dict[str, tuple[PlannedRun, Any]] = {}

    def run(self, runs: list[PlannedRun]) -> None:
        """Start and collect ``runs``.

        Raises:
            LaunchInterrupted: a signal stopped the launcher; every started run checkpointed.
        """
        queue = list(runs)
        with LaunchStop() as stop:
            try:
                while (queue or self.running) and not stop.requested:
                    while queue and len(self.running) < self.parallel and not stop.requested:
                        self._start(queue.pop(0), stop)
                    stop.sleep(0.5)
                    self._reap()
            finally:
                if stop.requested or self.running:
                    self._stop(stop)
            if stop.requested:
                raise LaunchInterrupted(stop.describe(), list(self.running))

    def _start(self, run: PlannedRun, stop: LaunchStop) -> None:
        devices = self.slots.take(run.run_id, self.executor)
        config = job_config(run, self.threads)
        with stop.spawning():
            job = self.executor.submit(job_for(run, config, devices=devices or None))
        self.running[run.run_id] = (run, job)
        self.session.submitted([(run, str(job.job_id))], LocalBackend.name, RunState.RUNNING)
        self.session.say(f"started     {run.run_id}  {run.label()}  (pid {job.job_id}, {self.threads} threads)")

    def _reap(self, stopping: bool = False) -> None:
        for rid, (run, job) in list(self.running.items()):
            if job.done():
                del self.running[rid]
                self.slots.give_back(rid)
                if stopping:
                    self.session.ended(run, True, None, True)  # the records say interrupted (or finished)
                else:
                    _collect(run, job, self.session.ended)

    def _stop(self, stop: LaunchStop) -> None:
        """Forward the stop to every running run, wait for their checkpoints, leave no process behind."""
        if not self.running:
            return
        grace = _stop_grace_s()
        self.session.say(
            f"stopping: {len(self.running)} run(s) checkpoint at their next step (waiting up to {grace:.0f} s; "
            "Ctrl-C again to stop at once, keeping the last checkpoint)"
        )
        controllers = {rid: int(job.job_id) for rid, (_, job) in self.running.items()}
        _signal(list(controllers.values()), signal.SIGTERM)  # the controller passes SIGTERM on to the run
        hurried = False
        deadline = time.monotonic() + grace
        while self.running and time.monotonic() < deadline:
            if stop.hurry and not hurried:
                hurried = True
                deadline = min(deadline, time.monotonic() + HURRY_GRACE_S)
                runs = [pid for rid in self.running for pid in _descendants(controllers[rid])[:1]]
                _signal(runs, signal.SIGINT)  # a run's second interrupt: stop now, last checkpoint kept
                _signal(runs, signal.SIGINT)
            stop.sleep(0.2)
            self._reap(stopping=True)
        if self.running:
            self.session.say(
                f"{len(self.running)} run(s) did not stop within the grace period; killing them (last checkpoints kept)"
            )
            for rid in list(self.running):
                _signal([controllers[rid], *_descendants(controllers[rid])], signal.SIGKILL)
            time.sleep(0.5)
            self._reap(stopping=True)


def _collect(run: PlannedRun, job: Any, ended: Callable[[PlannedRun, bool, str | None], None]) -> None:
    try:
        job.results()  # every process of the run (one per task)
    except Exception as err:  # noqa: BLE001 - the traceback is in the job log and failure.json
        lines = [line for line in str(err).splitlines() if line.strip()]
        ended(run, False, lines[-1] if lines else type(err).__name__)
    else:
        ended(run, True, None)


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
