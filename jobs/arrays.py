"""Splitting a sweep into SLURM job arrays that the cluster accepts.

SLURM rejects an array whose largest task *index* reaches ``MaxArraySize`` (default 1001): an
array may hold at most ``MaxArraySize`` tasks, indexes ``0 .. MaxArraySize-1``. submitit always
numbers an array's tasks from 0, so a sweep of N runs becomes ``ceil(N / MaxArraySize)``
arrays, each one ``sbatch`` call. ``--max-parallel`` caps the runs of the whole sweep that run
at once; it is shared out between the arrays (each array's ``%P``), so their sum stays within
the cap.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ArrayChunk", "plan_arrays", "split_arrays"]


@dataclass(frozen=True)
class ArrayChunk:
    """Runs ``start .. stop-1`` of a submission list, submitted as one array with ``%parallelism``."""

    start: int
    stop: int
    parallelism: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def max_index(self) -> int:
        """The largest task index SLURM will see (submitit numbers tasks from 0)."""
        return self.size - 1


def plan_arrays(groups: list[int], *, max_array_size: int, max_parallel: int) -> list[ArrayChunk]:
    """Arrays for consecutive groups of runs (runs of one group share sbatch options).

    No array crosses a group boundary or holds more than ``max_array_size`` runs, and the
    arrays' ``%P`` add up to at most ``max_parallel`` (each array gets at least 1).

    Args:
        groups: sizes of consecutive groups of a submission list (for example runs that wait
            for a teacher, then runs that do not).
        max_array_size: the cluster's ``MaxArraySize`` (task indexes must stay below it).
        max_parallel: runs of the sweep allowed to run at once.

    Returns:
        The chunks, with ``start``/``stop`` indexes into the whole submission list.
    """
    if max_array_size < 1:
        raise ValueError(f"max_array_size must be >= 1, but got max_array_size={max_array_size}")
    if max_parallel < 1:
        raise ValueError(f"max_parallel must be >= 1, but got max_parallel={max_parallel}")
    bounds = []
    offset = 0
    for size in groups:
        bounds += [
            (start, min(offset + size, start + max_array_size))
            for start in range(offset, offset + size, max_array_size)
        ]
        offset += size
    share, extra = divmod(max_parallel, max(1, len(bounds)))
    return [
        ArrayChunk(start, stop, min(stop - start, max(1, share + (1 if i < extra else 0))))
        for i, (start, stop) in enumerate(bounds)
    ]


def split_arrays(count: int, *, max_array_size: int, max_parallel: int) -> list[ArrayChunk]:
    """Chunks of at most ``max_array_size`` runs whose ``%P`` add up to at most ``max_parallel``.

    Example:
        >>> [(c.size, c.parallelism) for c in split_arrays(2500, max_array_size=1001, max_parallel=256)]
        [(1001, 86), (1001, 85), (498, 85)]
    """
    return plan_arrays([count], max_array_size=max_array_size, max_parallel=max_parallel)
