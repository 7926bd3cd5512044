"""The job callables: one sweep run, or one maps build step, resumable and requeued on preemption.

:class:`RunJob` is what submitit pickles and runs. It holds only the run's resolved config and
id, since the training state lives in the run directory, so a requeued job unpickles the same
small object and :func:`suite.train.trainer.train` resumes from ``checkpoint.pt``. The W&B run id is
the suite run id, so the resumed job continues the same W&B run.

Preemption, time limits, ``SIGTERM`` and several processes per run are handled by
:func:`jobs.preemption.train_preemptible` (the same training that study trials use): the run
stops at its next step boundary, writes its checkpoint, and only then does submitit pickle the
callable (:meth:`RunJob.checkpoint`), requeue the job and exit. Every task of a multi-process
job runs the same :class:`RunJob`; the trainer forms one process group from submitit's job
environment (``suite.device.distributed``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import submitit

from jobs.preemption import Preemption, global_rank, train_preemptible
from suite.run.records import RunPaths

__all__ = ["MapsJob", "RunJob", "job_for"]


class _Job(submitit.helpers.Checkpointable):
    """What both job callables share: the GPUs they expose, and a requeue that resubmits the same small
    object (the work's state is on disk, not in it)."""

    devices: list[str] | None = None  # CUDA_VISIBLE_DEVICES entries; None: as inherited

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Resubmit the same callable."""
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)

    def _start(self) -> None:
        """First thing in the job: expose its GPUs before anything starts CUDA."""
        _expose(self.devices)
        import suite  # noqa: F401 - torchvision shim before timm


class RunJob(_Job):
    """Train one sweep run in a submitit job (SLURM, local or debug).

    Args:
        config: the run's resolved config (``TrainConfig.model_dump``, JSON data).
        run_id: the run id the sweep planned; the job refuses to train if the config on the
            node resolves to another id (for example a different suite version).
        devices: ``CUDA_VISIBLE_DEVICES`` entries (ids or UUIDs) the job exposes before it
            touches CUDA; a local launch hands each run its GPUs this way (None: as inherited).

    Returns (when called):
        ``{"run_id", "state", "summary"}``; ``state`` is ``finished``, ``pruned`` or ``interrupted``.

    Example:
        >>> job = executor.submit(RunJob(plan.runs[0].resolved(), plan.runs[0].run_id))  # doctest: +SKIP
    """

    def __init__(self, config: dict[str, Any], run_id: str, devices: Sequence[str] | None = None) -> None:
        self.config = config
        self.run_id = run_id
        self.devices = None if devices is None else list(devices)

    def __call__(self) -> dict[str, Any]:
        self._start()
        from suite.config import run_id

        paths = RunPaths.of(self.config["run"]["output_root"], self.run_id)
        cfg = _checked_config(self.config, paths, f"run {self.run_id}", run_id)
        result = train_preemptible(cfg, paths)
        return {"run_id": result.run_id, "state": result.state.value, "summary": result.summary}


class MapsJob(_Job):
    """Build a sweep's offline-maps step (``kind: maps``) in a submitit job.

    The build is one pass of the teacher over the training set, written to the step's folder in
    durable chunks (:func:`suite.teacher.maps_step.run_maps_step`): a stop signal ends it at the next chunk
    boundary, a preempted step is requeued, and a requeued or relaunched step continues at the
    first unfinished chunk; a finished one returns at once. When the sweep's resources give a run
    several processes, only global rank 0 builds.

    Args:
        config: the step's resolved config (the teacher and the sweep base's data).
        step_id: ``maps-<12 hex>``, as the sweep planned it.
        img_size: side of the whole images fed to the teacher (None: ``data.img_size``).
        batch_size: teacher batch size.
        crop: ``squash`` or ``center`` (see :func:`suite.teacher.maps_build.build_offline_maps`).
    """

    def __init__(
        self,
        config: dict[str, Any],
        step_id: str,
        img_size: int | None,
        batch_size: int,
        devices: Sequence[str] | None = None,
        crop: str = "squash",
    ) -> None:
        self.config = config
        self.step_id = step_id
        self.img_size = img_size
        self.batch_size = batch_size
        self.crop = crop
        self.devices = None if devices is None else list(devices)

    def __call__(self) -> dict[str, Any]:
        self._start()
        from suite.teacher.maps_step import maps_step_id, run_maps_step
        from suite.teacher.maps_build import MapsBuildStopped

        if global_rank() != 0:
            return {"run_id": self.step_id, "state": "finished", "summary": {}}
        paths = RunPaths.of(self.config["run"]["output_root"], self.step_id)
        cfg = _checked_config(self.config, paths, f"maps step {self.step_id}", lambda c: maps_step_id(c, self.img_size, self.crop))
        preemption = Preemption()
        with preemption.stop:
            try:
                summary = run_maps_step(
                    cfg, paths, img_size=self.img_size, batch_size=self.batch_size, crop=self.crop,
                    stop=preemption.stop,
                )
            except MapsBuildStopped:
                summary = None
        if summary is None:
            preemption.requeue()  # the finished chunks are on disk: requeue
            return {"run_id": self.step_id, "state": "interrupted", "summary": {}}
        return {"run_id": self.step_id, "state": "finished", "summary": summary}


def _checked_config(config: dict[str, Any], paths: RunPaths, what: str, identify: Callable[[Any], str]) -> Any:
    """The job's config, validated, with the id the sweep planned, checked against this node.

    A problem is recorded in ``failure.json`` (where ``sweep status`` looks) before it is raised.
    """
    from suite.config import ConfigError, validate_config
    from suite.run.records import write_failure
    from suite.train.preflight import check_machine

    try:
        cfg = validate_config(config, prefix=f"{what}: ")
        if identify(cfg) != paths.root.name:
            raise ConfigError(
                f"{what}: the config resolves to {identify(cfg)} on this node; is the suite installed here "
                "the same version as where the sweep was planned?"
            )
        check_machine(cfg, prefix=f"{what}: ")  # files and models as this node sees them
    except ConfigError as err:
        write_failure(paths, err)
        raise
    return cfg


def _expose(devices: Sequence[str] | None) -> None:
    """Make ``devices`` this process's ``CUDA_VISIBLE_DEVICES`` (read when CUDA starts, so first)."""
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(devices)


def job_for(run: Any, config: dict[str, Any] | None = None, *, devices: Sequence[str] | None = None) -> RunJob | MapsJob:
    """The submitit callable of a planned run (:class:`sweeps.expand.PlannedRun`): training or maps build.

    ``devices``: the GPUs (``CUDA_VISIBLE_DEVICES`` entries) the job uses; None leaves them as inherited.
    """
    config = run.resolved() if config is None else config
    if run.kind == "maps":
        build = run.build or {}
        return MapsJob(
            config, run.run_id, build.get("img_size"), int(build.get("batch_size", 128)), devices,
            crop=build.get("crop", "squash"),
        )
    return RunJob(config, run.run_id, devices)
