"""CPU allocation: what a process may really use, whatever SLURM's variables say."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")


def _allocation(cpus: set[int], slurm: str | None) -> int:
    """``cpu_allocation()`` in a fresh process bound to ``cpus``, with ``SLURM_CPUS_PER_TASK=slurm``."""
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CPUS_PER_TASK"}
    env["PYTHONPATH"] = str(REPO)
    if slurm is not None:
        env["SLURM_CPUS_PER_TASK"] = slurm
    code = (
        f"import os; os.sched_setaffinity(0, {sorted(cpus)!r}); "
        "from suite.device.hardware import cpu_allocation; print(cpu_allocation())"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_a_task_bound_to_fewer_cores_than_slurm_says_uses_its_cores() -> None:
    # srun without --cpus-per-task (SLURM 22.05-23.02) pins the task to one core, while
    # SLURM_CPUS_PER_TASK still says 10: threads and data workers must follow the core.
    one = {min(os.sched_getaffinity(0))}
    assert _allocation(one, "10") == 1
    assert _allocation(one, None) == 1


def test_slurm_share_of_a_larger_mask_is_kept() -> None:
    # No CPU binding on the node: the mask is the whole machine, the job's share is SLURM's number.
    mask = os.sched_getaffinity(0)
    assert _allocation(mask, "1") == 1
    assert _allocation(mask, str(len(mask) + 8)) == len(mask)
    assert _allocation(mask, "garbage") == len(mask)
