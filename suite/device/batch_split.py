"""How a run's global batch splits over its processes, and whether mixing can use the split.

``data.batch_size`` is the global batch: each of a run's processes (``nodes x tasks_per_node``,
one per GPU) loads ``batch_size / processes`` images per step and mixes them on its own.
Partners pair inside a process's batch, and ``mix.groups`` cuts that batch into groups of G
images. So a config that validates on one process can fail at the first training step on 16:
the paper presets' ``mix.groups=128`` with ``data.batch_size=1024`` fits 8 GPUs (128 each), not
16 (64 each).

:func:`batch_split_problem` is the rule, with no I/O and no imports: the plan-time check of
:mod:`sweeps.expand` uses it, and a runtime check can share it. :func:`per_process_batch` is
the same rule for callers that want the per-process batch or an exception.
"""

from __future__ import annotations

__all__ = ["accumulation_problem", "batch_split_problem", "per_process_batch"]


def _layout(processes: int, nodes: int, unit: str) -> str:
    if nodes > 1 or unit != "processes":
        return f"{processes} processes ({nodes} node{'s' if nodes > 1 else ''} x {processes // nodes} {unit})"
    return f"{processes} process{'es' if processes > 1 else ''}"


def _fits(batch_size: int, processes: int, mixing: bool, groups: int | None) -> bool:
    if batch_size % processes:
        return False
    per = batch_size // processes
    if mixing and per % 2:
        return False
    return not (mixing and groups is not None and per % groups)


def _fewer(
    batch_size: int, processes: int, nodes: int, unit: str, mixing: bool, groups: int | None
) -> str | None:
    """The largest smaller node count (or, on one node, processes per node) whose split works."""
    per_node = processes // nodes
    if nodes > 1:
        for n in range(nodes - 1, 0, -1):
            if _fits(batch_size, n * per_node, mixing, groups):
                share = batch_size // (n * per_node)
                return f"resources.nodes={n} ({n * per_node} processes, {share} images each)"
        return None
    key = "resources.gpus_per_node" if unit == "GPUs" else "resources.tasks_per_node"
    for k in range(per_node - 1, 0, -1):
        if _fits(batch_size, k, mixing, groups):
            return f"{key}={k} ({batch_size // k} images per process)"
    return None


def _multiple_near(value: int, step: int) -> int:
    below = value // step * step
    above = below + step
    return below if below and value - below <= above - value else above


def batch_split_problem(
    batch_size: int,
    processes: int,
    *,
    mixing: bool,
    groups: int | None = None,
    nodes: int = 1,
    unit: str = "processes",
) -> str | None:
    """Why ``batch_size`` cannot be split over ``processes`` for training, with the fix; None if it can.

    The rule: the global batch divides by the processes; when mixing, each process's batch is
    even (partners pair inside it) and, with ``mix.groups``, a multiple of the groups (each
    process cuts its own batch into groups).

    Args:
        batch_size: ``data.batch_size``, the global batch.
        processes: the run's data-parallel processes (all nodes together).
        mixing: ``mix.method`` is not ``none`` (``mix.groups`` only matters then).
        groups: ``mix.groups`` (None: one draw per process batch).
        nodes: nodes the processes are spread over (for the message and the suggested fix).
        unit: what one process per node stands for in the message, e.g. ``GPUs``.

    Example:
        >>> batch_split_problem(1024, 8, mixing=True, groups=128) is None
        True
        >>> "mix.groups=64" in batch_split_problem(1024, 16, mixing=True, groups=128, nodes=2, unit="GPUs")
        True
    """
    if batch_size < 1 or processes < 1 or nodes < 1 or processes % nodes:
        raise ValueError(f"need batch_size, processes >= 1 and nodes dividing processes, got {batch_size}, "
                         f"{processes}, {nodes}")
    if _fits(batch_size, processes, mixing, groups):
        return None
    layout = _layout(processes, nodes, unit)
    fewer = _fewer(batch_size, processes, nodes, unit, mixing, groups)
    if batch_size % processes:
        step = processes * ((groups or 2) if mixing else 1)
        fixes = [f"data.batch_size={_multiple_near(batch_size, step)} (a multiple of {step})"]
        return (
            f"data.batch_size={batch_size} is the global batch and does not divide by the {layout} "
            "of the run; "
            f"fix: {' or '.join([*fixes, *([fewer] if fewer else [])])}"
        )
    per = batch_size // processes
    if per % 2:
        step = processes * (groups or 2)
        fixes = [f"data.batch_size={_multiple_near(batch_size, step)}", *([fewer] if fewer else [])]
        return (
            f"data.batch_size={batch_size} over {layout} gives {per} images per process, an odd number; "
            "mixing "
            f"pairs images inside each process's batch; fix: {' or '.join(fixes)}"
        )
    assert groups is not None  # the only rule left
    new_groups = max(g for g in range(2, min(groups, per) + 1, 2) if per % g == 0)
    fixes = [
        f"mix.groups={new_groups} (one draw per {new_groups} images; a new run id)",
        *([fewer] if fewer else []),
        f"data.batch_size={processes * groups} ({groups} images per process; a new run id)",
    ]
    return (
        f"mix.groups={groups} does not fit the per-process batch: data.batch_size={batch_size} over {layout} "
        f"gives {per} images per process, and each process cuts its batch into groups of mix.groups images; "
        f"fix: {' or '.join(fixes)}"
    )


def accumulation_problem(batch_size: int, processes: int, accum_steps: int) -> str | None:
    """Why ``optim.accum_steps`` cannot cut each process's batch into equal micro-batches; None if it can.

    Example:
        >>> accumulation_problem(1024, 1, 8) is None
        True
        >>> "optim.accum_steps=12" in accumulation_problem(96, 4, 16)
        True
    """
    if accum_steps < 1:
        raise ValueError(f"accum_steps must be at least 1, but got {accum_steps}")
    per = batch_size // max(1, processes)
    if accum_steps == 1 or per % accum_steps == 0:
        return None
    fits = max(k for k in range(1, min(accum_steps, per) + 1) if per % k == 0)
    return (
        f"optim.accum_steps={accum_steps} does not divide the {per} images each of the {processes} process(es) "
        f"loads per step (data.batch_size={batch_size}); every micro-batch must be the same size; "
        f"fix: optim.accum_steps={fits} or data.batch_size={processes * accum_steps * max(1, per // accum_steps)}"
    )


def per_process_batch(
    batch_size: int,
    processes: int,
    *,
    mixing: bool,
    groups: int | None = None,
    nodes: int = 1,
    unit: str = "processes",
    accum_steps: int = 1,
) -> int:
    """The images each process loads per step (``batch_size // processes``).

    Raises:
        ValueError: :func:`batch_split_problem`'s or :func:`accumulation_problem`'s message, when the
            split does not work.
    """
    problem = batch_split_problem(batch_size, processes, mixing=mixing, groups=groups, nodes=nodes, unit=unit)
    problem = problem or accumulation_problem(batch_size, processes, accum_steps)
    if problem:
        raise ValueError(problem)
    return batch_size // processes
