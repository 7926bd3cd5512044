"""The backends that run jobs, one class each behind :class:`~jobs.backends.base.Backend`.

- :mod:`~jobs.backends.slurm`: job arrays on a SLURM cluster (``sbatch``), checked first;
- :mod:`~jobs.backends.local`: a pool of processes on this machine, with CPU shares and GPU slots;
- :mod:`~jobs.backends.debug`: one job after the other inside this process.

:func:`make_backend` turns an executor name (``auto`` picks ``slurm`` when the SLURM client
commands answer, else ``local``) into one; sweeps (:mod:`jobs.launch`) and studies
(:mod:`jobs.tune`) both dispatch through it.
"""

from __future__ import annotations

from pathlib import Path

from jobs.backends.base import Backend, ExecutorError
from jobs.backends.debug import DebugBackend
from jobs.backends.local import LocalBackend
from jobs.backends.slurm import SlurmBackend
from sweeps.spec import ResourcesSpec

__all__ = ["BACKENDS", "Backend", "ExecutorError", "make_backend", "resolve_executor"]

_CLASSES: dict[str, type[Backend]] = {cls.name: cls for cls in (SlurmBackend, LocalBackend, DebugBackend)}
BACKENDS: tuple[str, ...] = tuple(_CLASSES)


def resolve_executor(name: str) -> str:
    """``auto`` -> ``slurm`` or ``local``; checks that the named backend is usable.

    Raises:
        ExecutorError: an unknown name, or ``slurm`` without a reachable cluster.
    """
    if name == "auto":
        return SlurmBackend.name if SlurmBackend.unavailable() is None else LocalBackend.name
    if name not in BACKENDS:
        raise ExecutorError(f"unknown executor {name!r}; choose one of auto, {', '.join(BACKENDS)}")
    reason = _CLASSES[name].unavailable()
    if reason is not None:
        raise ExecutorError(f"executor {name}: {reason}")
    return name


def make_backend(name: str, folder: Path, resources: ResourcesSpec, *, job_name: str) -> Backend:
    """The backend called ``name`` (after :func:`resolve_executor`) for jobs of ``resources``.

    Raises:
        ExecutorError: as :func:`resolve_executor`.
    """
    return _CLASSES[resolve_executor(name)](folder, resources, job_name=job_name)
