"""Device and CPU-allocation helpers.

Threads come from the job's CPU allocation: several trainings sharing a node each at full
thread count run several times slower than with their fair share. The allocation is the
smaller of ``SLURM_CPUS_PER_TASK`` and the process's affinity mask: SLURM 22.05 to 23.02 do
not pass sbatch's ``--cpus-per-task`` on to ``srun`` (jobs ask srun for it explicitly, see
``jobs.backends.slurm``), so a task can be bound to fewer cores than the variable says, and
starting that many threads and data workers on them only makes them wait for each other.
"""

from __future__ import annotations

import os
import platform

import torch

__all__ = [
    "configure_threads", "cpu_allocation", "cpu_share", "device_label", "host_to_device", "resolve_device", "set_cpu_share",
]

_SHARE: int | None = None  # this process's share of its allocation, when it shares one with other ranks


def cpu_allocation() -> int:
    """CPUs this process may use: SLURM's allocation, but never more than the affinity mask.

    The mask is what the kernel lets the process run on; ``SLURM_CPUS_PER_TASK`` is what the
    job asked for. A larger mask (no CPU binding on the node) is shared fairly by taking
    SLURM's number; a smaller one (srun bound the task to fewer cores) is the truth.
    """
    try:
        mask = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        mask = max(1, os.cpu_count() or 1)
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        return min(int(slurm), mask)
    return mask


def set_cpu_share(cpus: int | None) -> None:
    """Record this process's share of the CPUs (``suite.device.distributed.Context.threads``; None: all of them).

    Loader workers are sized from it: ranks that inherit one allocation (torchrun, ``--nproc``)
    would otherwise each start workers for the whole allocation.
    """
    global _SHARE
    _SHARE = cpus


def cpu_share() -> int:
    """CPUs this process may use for itself: its recorded share, else its whole allocation."""
    return _SHARE if _SHARE is not None else cpu_allocation()


def resolve_device(spec: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is an error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"run.device={spec} but no CUDA device is available; use run.device=auto or cpu")
    return device


def configure_threads(threads: int | None) -> int:
    """Set torch's intra-op threads from the config or the CPU allocation; returns the count."""
    count = threads or cpu_allocation()
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count


def host_to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a host tensor made during the training step to ``device`` without waiting for its queue.

    On CUDA the tensor is pinned first, so the copy is asynchronous (PyTorch's pinned-memory
    allocator keeps the buffer until the copy is done); a copy from pageable memory would wait for
    the stream.
    """
    if device.type == "cpu":
        return tensor
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def device_label(device: torch.device, *, index: bool = True) -> str:
    """A device as the logs and summaries name it: the GPU's model (with its index), or ``cpu (<arch>)``."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return f"{name} ({device})" if index else name
    return f"cpu ({platform.machine()})"
