"""The SLURM backend: job arrays through submitit's ``SlurmExecutor``, checked before submission.

A sweep's :class:`~sweeps.spec.ResourcesSpec` maps onto submitit's parameter names here, once
(:func:`slurm_parameters`). Before anything is written, :meth:`SlurmBackend.check` compares the
resources with the partition (``sinfo``), lets submitit check its parameters, and asks ``sbatch
--test-only`` about the exact script submitit will send (:func:`render_sbatch`).

A sweep goes out as job arrays, one ``sbatch`` per array, split under ``MaxArraySize``
(:mod:`jobs.arrays`): runs trained first, then maps build steps (one process on one GPU each),
then the sweep's runs, each wave after the one before with ``--dependency=afterok``; ``launch``
returns once they are queued.

This module is the one place that uses a private name of submitit: its sbatch renderer
``submitit.slurm.slurm._make_sbatch_string``. submitit has no public way to get the script
without submitting it, and only that renderer gives ``sbatch --test-only`` exactly what
``submit`` will send (it is also the one submitit's own ``update_parameters`` checks values with).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import submitit

from jobs import slurm as cluster
from jobs.arrays import plan_arrays
from jobs.backends.base import Backend, waves
from jobs.session import Session, SubmissionError
from jobs.worker import job_for
from suite.run.records import RunState
from sweeps.expand import PlannedRun
from sweeps.spec import ResourcesSpec

__all__ = ["SlurmBackend", "render_sbatch", "slurm_executor", "slurm_parameters", "srun_args"]


def _mem(mem_gb: float) -> str:
    return f"{int(mem_gb)}GB" if float(mem_gb).is_integer() else f"{round(mem_gb * 1024)}MB"


def srun_args(resources: ResourcesSpec) -> list[str]:
    """What the job's ``srun`` line must say itself, beyond what it inherits from sbatch.

    - ``--cpus-per-task``: SLURM 22.05 to 23.02 do not pass sbatch's value on to srun (23.11 reads
      ``SRUN_CPUS_PER_TASK`` again), so without it each task may be bound to a single core while
      ``SLURM_CPUS_PER_TASK`` promises more.
    - ``--kill-on-bad-exit=1`` for several processes: a rank that dies (it records its failure
      first) would leave the others waiting at their next collective until the time limit; srun
      ends them all at once.
    """
    args = [f"--cpus-per-task={resources.cpus_per_task}"]
    if resources.processes > 1:
        args.append("--kill-on-bad-exit=1")
    return args


def slurm_parameters(resources: ResourcesSpec, *, job_name: str) -> dict[str, Any]:
    """submitit ``SlurmExecutor.update_parameters`` keywords for ``resources``."""
    params: dict[str, Any] = {
        "job_name": job_name,
        "time": resources.timeout_min,
        "nodes": resources.nodes,
        "ntasks_per_node": resources.tasks,  # one training process per GPU; they form one process group
        "cpus_per_task": resources.cpus_per_task,
        "mem": _mem(resources.mem_gb),
        "signal_delay_s": resources.signal_delay_s,
        "array_parallelism": resources.array_parallelism,
    }
    if resources.gpus_per_node:
        params["gpus_per_node"] = resources.gpus_per_node
    params["srun_args"] = srun_args(resources)
    for key in ("partition", "account", "qos", "constraint"):
        value = getattr(resources, key)
        if value is not None:
            params[key] = value
    if resources.setup:
        params["setup"] = list(resources.setup)
    if resources.additional:
        params["additional_parameters"] = dict(resources.additional)
    return params


def slurm_executor(folder: Path, resources: ResourcesSpec, *, job_name: str) -> submitit.SlurmExecutor:
    """A SLURM executor writing its pickles and logs to ``folder/<job id>/``."""
    executor = submitit.SlurmExecutor(folder=str(folder / "%j"), max_num_timeout=resources.max_num_timeout)
    executor.update_parameters(**slurm_parameters(resources, job_name=job_name))
    return executor


def render_sbatch(executor: submitit.SlurmExecutor, tasks: int) -> str:
    """The sbatch script submitit would submit for ``tasks`` runs (an array when more than one)."""
    from submitit.slurm.slurm import _make_sbatch_string  # private: see the module docstring

    params = {k: v for k, v in executor.parameters.items() if k != "map_count"}
    return _make_sbatch_string(
        command="true", folder=executor.folder, map_count=tasks if tasks > 1 else None, **params
    )


class SlurmBackend(Backend):
    """Job arrays on a SLURM cluster; ``launch`` returns once they are queued."""

    name = "slurm"
    foreground = False

    def __init__(self, folder: Path, resources: ResourcesSpec, *, job_name: str) -> None:
        super().__init__(folder, resources, job_name=job_name)
        self._executor: submitit.SlurmExecutor | None = None

    @classmethod
    def unavailable(cls) -> str | None:
        if cluster.available():
            return None
        return (
            "the SLURM client commands (sbatch, srun, sinfo) are missing or the controller does not answer `sinfo`; "
            "use --executor local, or start the development cluster (tools/slurm/README.md)"
        )

    def executor(self) -> submitit.SlurmExecutor:
        if self._executor is None:
            self._executor = slurm_executor(self.folder, self.resources, job_name=self.job_name)
        return self._executor

    def check(self, source: Path, tasks: int, error: type[Exception]) -> None:
        """The partition (``sinfo``), submitit's parameter check, and ``sbatch --test-only`` on an array of ``tasks``."""
        res = self.resources
        try:
            problems = cluster.check_resources(
                partition=res.partition,
                gpus_per_node=res.gpus_per_node,
                cpus_per_task=res.cpus_per_task,
                mem_gb=res.mem_gb,
                timeout_min=res.timeout_min,
            )
        except RuntimeError as err:
            raise error(f"{source}: resources: cannot read the partitions ({err})") from None
        if problems:
            raise error("\n".join(f"{source}: {p}" for p in problems) + "\nnothing was submitted")
        try:
            executor = self.executor()
        except ValueError as err:  # submitit rejects a parameter value
            raise error(f"{source}: resources: {err}") from None
        rejected = cluster.test_only(render_sbatch(executor, min(max(tasks, 1), cluster.max_array_size())))
        if rejected:
            raise error(
                f"{source}: resources: SLURM would reject the job ({rejected}); check resources.partition/account/qos/"
                "constraint/additional against `sinfo` and `sacctmgr show assoc`. Nothing was submitted"
            )

    def submit(self, calls: Sequence[Callable[[], Any]]) -> list[Any]:
        return self.submit_array(calls, len(calls))

    def submit_array(
        self, calls: Sequence[Callable[[], Any]], parallelism: int, dependency: str | None = None
    ) -> list[Any]:
        """One ``sbatch``: ``calls`` as an array with ``%parallelism``, after ``dependency`` (``afterok:<ids>``)."""
        executor = self.executor()
        executor.update_parameters(array_parallelism=parallelism, dependency=dependency)
        with executor.batch():
            return [executor.submit(call) for call in calls]

    def started(self, jobs: Sequence[Any], what: str, threads: int | None) -> str | None:
        return f"submitted {len(jobs)} {what} as SLURM job array {str(jobs[0].job_id).split('_')[0]}"

    def launch(self, session: Session, todo: list[PlannedRun], max_parallel: int | None) -> None:
        """Submit ``todo`` as job arrays: prerequisites first, then runs grouped by what they wait for."""
        executor = self.executor()
        waiting_on = dict(session.queued)
        single: dict[str, Any] = {"ntasks_per_node": 1, "nodes": 1}  # a maps build is one process on one GPU
        if executor.parameters.get("gpus_per_node"):
            single["gpus_per_node"] = 1
        whole = {k: executor.parameters[k] for k in single if k in executor.parameters}
        limit = cluster.max_array_size()
        parallel = max_parallel or self.resources.array_parallelism
        for wave in waves(todo):
            if not wave:
                continue
            executor.update_parameters(**(single if wave[0].kind == "maps" else whole))
            groups: dict[str | None, list[PlannedRun]] = {}
            for run in wave:
                ids = [waiting_on[need] for need in run.needs if need in waiting_on]
                groups.setdefault("afterok:" + ":".join(ids) if ids else None, []).append(run)
            ordered = [run for members in groups.values() for run in members]
            dependencies = [dependency for dependency, members in groups.items() for _ in members]
            chunks = plan_arrays([len(m) for m in groups.values()], max_array_size=limit, max_parallel=parallel)
            for chunk in chunks:  # no chunk crosses a group: its first run's dependency is the chunk's
                members = ordered[chunk.start : chunk.stop]
                self._submit_chunk(session, members, chunk.parallelism, dependencies[chunk.start], len(todo))
            for run in wave:
                if run.prerequisite:
                    waiting_on[run.run_id] = session.state.runs[run.run_id].job_id
        executor.update_parameters(**whole)

    def _submit_chunk(
        self, session: Session, members: list[PlannedRun], parallelism: int, dependency: str | None, total: int
    ) -> None:
        try:
            jobs = self.submit_array([job_for(run) for run in members], parallelism, dependency)
        except Exception as err:  # sbatch refused (e.g. MaxJobCount reached): keep what went out
            session.state.write()
            raise SubmissionError(
                f"sbatch failed after {len(session.report.submitted)} of {total} runs were submitted: "
                f"{str(err).strip()}\nThe state file records the submitted jobs; once the cause is fixed, launch "
                "again: queued runs are not submitted twice."
            ) from err
        array_id = str(jobs[0].job_id).split("_")[0]
        info = {"job_id": array_id, "size": len(members), "parallelism": parallelism, "dependency": dependency}
        session.report.arrays.append(info)
        session.state.launches[-1]["arrays"].append(info)
        session.submitted([(run, str(job.job_id)) for run, job in zip(members, jobs)], self.name, RunState.PENDING)
        session.say(
            f"submitted {len(members)} runs as SLURM job {array_id} (%{parallelism})"
            + (f", after {dependency}" if dependency else "")
        )
