"""Choosing and configuring the submitit executor that runs a sweep.

One job API over three backends (submitit's idea): ``slurm`` (job arrays through ``sbatch``),
``local`` (one subprocess per run on this machine) and ``debug`` (in this process, one run
after the other; with a terminal, a failing run opens the debugger). ``auto`` picks ``slurm``
when the SLURM client commands answer, else ``local``.

A sweep's :class:`~sweeps.spec.ResourcesSpec` maps onto submitit's parameter names here, once;
:func:`render_sbatch` renders the exact sbatch script submitit would submit, so ``launch`` can
ask ``sbatch --test-only`` about it before submitting anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import submitit

from jobs import slurm
from sweeps.spec import ResourcesSpec

__all__ = [
    "checked_slurm_executor",
    "BACKENDS",
    "ExecutorError",
    "local_executor",
    "render_sbatch",
    "resolve_executor",
    "slurm_executor",
]

BACKENDS: tuple[str, ...] = ("slurm", "local", "debug")


class ExecutorError(ValueError):
    """An executor name or backend that cannot be used here; the message says what to use."""


def resolve_executor(name: str) -> str:
    """``auto`` -> ``slurm`` or ``local``; checks that the named backend is usable.

    Raises:
        ExecutorError: an unknown name, or ``slurm`` without a reachable cluster.
    """
    if name == "auto":
        return "slurm" if slurm.available() else "local"
    if name not in BACKENDS:
        raise ExecutorError(f"unknown executor {name!r}; choose one of auto, {', '.join(BACKENDS)}")
    if name == "slurm" and not slurm.available():
        raise ExecutorError(
            "executor slurm: the SLURM client commands (sbatch, srun, sinfo) are missing or the controller does not "
            "answer `sinfo`; use --executor local, or start the development cluster (tools/slurm/README.md)"
        )
    return name


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
    """The sbatch script submitit would submit for ``tasks`` runs (an array when more than one).

    Uses submitit's own renderer (the one ``update_parameters`` checks values with), so
    ``sbatch --test-only`` judges exactly what will be sent.
    """
    from submitit.slurm.slurm import _make_sbatch_string

    params = {k: v for k, v in executor.parameters.items() if k != "map_count"}
    return _make_sbatch_string(
        command="true", folder=executor.folder, map_count=tasks if tasks > 1 else None, **params
    )


def checked_slurm_executor(
    source: Path, resources: ResourcesSpec, *, folder: Path, job_name: str, tasks: int, error: type[Exception]
) -> submitit.SlurmExecutor:
    """The SLURM executor of a sweep or study, after checking its resources; writes nothing.

    The resources are checked against the partition (``sinfo``), submitit's parameter check, and
    the rendered sbatch script with ``sbatch --test-only`` for an array of ``tasks``. Any problem
    raises ``error`` with lines that start with ``source`` (the sweep or study file).
    """
    res = resources
    try:
        problems = slurm.check_resources(
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
        executor = slurm_executor(folder, res, job_name=job_name)
    except ValueError as err:  # submitit rejects a parameter value
        raise error(f"{source}: resources: {err}") from None
    rejected = slurm.test_only(render_sbatch(executor, min(max(tasks, 1), slurm.max_array_size())))
    if rejected:
        raise error(
            f"{source}: resources: SLURM would reject the job ({rejected}); check resources.partition/account/qos/"
            "constraint/additional against `sinfo` and `sacctmgr show assoc`. Nothing was submitted"
        )
    return executor


def local_executor(folder: Path, resources: ResourcesSpec) -> submitit.LocalExecutor:
    """A local executor (one subprocess per process of a run) with the sweep's time limit."""
    if resources.nodes > 1:
        raise ExecutorError(f"resources.nodes={resources.nodes}: the local executor runs on this one machine; use 1")
    executor = submitit.LocalExecutor(folder=str(folder / "%j"), max_num_timeout=resources.max_num_timeout)
    executor.update_parameters(
        timeout_min=resources.timeout_min, signal_delay_s=resources.signal_delay_s, gpus_per_node=0,
        tasks_per_node=resources.tasks,
    )
    return executor
