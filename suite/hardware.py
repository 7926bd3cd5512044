"""Device and CPU-allocation helpers.

Threads come from the job's CPU allocation (``SLURM_CPUS_PER_TASK``, else the process
affinity): several trainings sharing a node each at full thread count run several times
slower than with their fair share.
"""

from __future__ import annotations

import os

import torch

__all__ = ["cpu_allocation", "resolve_device", "configure_threads", "host_to_device"]


def cpu_allocation() -> int:
    """CPUs this process may use: SLURM's allocation, else the affinity mask."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK")
    if slurm and slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


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
