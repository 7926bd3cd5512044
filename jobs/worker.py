"""The job callable: one sweep run, resumable, requeued on preemption.

:class:`RunJob` is what submitit pickles and runs. It holds only the run's resolved config and
id, since the training state lives in the run directory, so a requeued job unpickles the same
small object and :func:`suite.train.trainer.train` resumes from ``checkpoint.pt``. The W&B run id is
the suite run id, so the resumed job continues the same W&B run.

Preemption and time limits. submitit installs, before calling the job, a handler for its
preemption signal (``USR2``, or ``$SUBMITIT_PREEMPT_SIGNAL``; SLURM sends it
``signal_delay_s`` before the time limit, and ``job._interrupt()`` /
``scancel --signal=USR2`` send it on demand). That handler checkpoints the callable, runs
``scontrol requeue`` and exits at once, whatever the process was doing: inside a training step
it would lose the step and skip the trainer's checkpoint. So while training, :class:`RunJob`
puts its own handler in front (a :class:`~suite.run.signals.GracefulStop` that also listens to the
preemption signal). The trainer stops at the next step boundary and writes its checkpoint;
only then does :class:`RunJob` call submitit's handler, which pickles the callable
(:meth:`RunJob.checkpoint`), requeues the job and exits. A signal that arrives before training
starts or after it ended reaches submitit's handler directly, which is just as safe there.

``SIGTERM`` (SLURM's preemption in ``REQUEUE`` mode, ``scancel``) also stops at a step boundary
with a checkpoint. submitit's own ``job._interrupt()`` sends ``SIGTERM`` and then ``USR2``, so
after a ``SIGTERM`` the job waits a few seconds for the preemption signal before returning
``interrupted``; the next ``suite sweep launch`` resumes it either way. SLURM sends that
``SIGTERM`` to every process of the job, W&B's service included, which then exits; the W&B
error that follows in the trainer is not a training failure, so the run is kept resumable
(see :func:`_keep_resumable`).

Several processes per run (``resources.tasks_per_node``/``nodes``): every task of the job runs
the same :class:`RunJob`; the trainer forms one process group from submitit's job environment
(``suite.device.distributed``). The ranks agree on the stop step, rank 0 writes the one checkpoint and
the others wait for it; then each calls submitit's handler, which checkpoints and requeues from
global rank 0 only (the other ranks' handler just returns), so the job is requeued once.
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import submitit

from suite.run.records import RunPaths, clear_failure
from suite.run.signals import GracefulStop

__all__ = ["MapsJob", "RunJob", "job_for", "preemption_signal"]

TERM_GRACE_S = 5.0  # after SIGTERM, how long to wait for the preemption signal that may follow


def preemption_signal() -> signal.Signals:
    """The signal submitit treats as preemption/timeout (``$SUBMITIT_PREEMPT_SIGNAL``, default USR2)."""
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    try:
        return signal.Signals[f"SIG{name}"]
    except KeyError:
        raise ValueError(f"SUBMITIT_PREEMPT_SIGNAL={name} is not a signal name (e.g. USR2)") from None


class RunJob(submitit.helpers.Checkpointable):
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

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Resubmit the same callable: the training state is on disk, not in this object."""
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)

    def __call__(self) -> dict[str, Any]:
        _expose(getattr(self, "devices", None))
        import suite  # noqa: F401 - torchvision shim before timm
        from suite.config import run_id
        from suite.run.records import RunState
        from suite.train.trainer import TrainResult, train

        paths = RunPaths.of(self.config["run"]["output_root"], self.run_id)
        cfg = _checked_config(self.config, paths, f"run {self.run_id}", run_id)
        preempt = preemption_signal()
        submitit_handler = signal.getsignal(preempt)
        stop = GracefulStop((signal.SIGTERM, signal.SIGUSR1, signal.SIGINT, preempt))
        with stop:
            try:
                result = train(cfg, stop=stop, progress=False)
            except Exception as err:
                if not (stop.requested and _from_tracker(err)):
                    raise
                _keep_resumable(paths, err)
                result = TrainResult(self.run_id, paths.root, RunState.INTERRUPTED, {})
            if (
                result.state is RunState.INTERRUPTED
                and preempt not in stop.received
                and signal.SIGTERM in stop.received
                and os.environ.get("SUBMITIT_EXECUTOR") != "local"  # a local stop sends no preemption signal
            ):
                _wait_for(stop, preempt, TERM_GRACE_S)
        if result.state is RunState.INTERRUPTED and preempt in stop.received and callable(submitit_handler):
            # The checkpoint is on disk: now let submitit pickle this callable, requeue and exit.
            _hand_over(submitit_handler, preempt)
        return {"run_id": result.run_id, "state": result.state.value, "summary": result.summary}


def _from_tracker(err: BaseException) -> bool:
    """The error was raised by the W&B sink (its service process died), not by training."""
    frames = traceback.extract_tb(err.__traceback__)
    return any(
        f.filename.endswith(os.path.join("suite", "tracking.py")) or f"{os.sep}wandb{os.sep}" in f.filename
        for f in frames
    )


def _keep_resumable(paths: RunPaths, err: BaseException) -> None:
    """Undo the failure record of a run whose W&B service was killed by the stop signal.

    SLURM signals every process of a job step, so its SIGTERM also ends W&B's ``wandb-core``
    service, and the trainer's next W&B call raises although the training state is safely in
    ``checkpoint.pt``. W&B is only a sink: the run stays resumable and continues the same W&B
    run (``resume="allow"``, id = run id) when it restarts.

    Only this process's own record is undone: a record that names another rank is that rank's
    failure (for example an out-of-memory on rank 3 that made srun stop the job), and stays.
    """
    from suite.run.records import read_json

    try:
        record = read_json(paths.failure)
    except (ValueError, UnicodeDecodeError, OSError):
        record = None
    if isinstance(record, dict) and record.get("rank") not in (None, _global_rank()):
        return
    clear_failure(paths)
    with open(paths.log, "a") as handle:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        handle.write(
            f"{stamp} W&B service ended by the stop signal ({type(err).__name__}: {err}); run kept resumable\n"
        )


def _wait_for(stop: GracefulStop, signum: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while signum not in stop.received and time.monotonic() < deadline:
        time.sleep(0.05)


def _hand_over(handler: Callable[[int, Any], Any], signum: int) -> None:
    """Call the handler that was installed before training (submitit's checkpoint-and-requeue)."""
    handler(signum, None)


class MapsJob(submitit.helpers.Checkpointable):
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
    """

    def __init__(
        self,
        config: dict[str, Any],
        step_id: str,
        img_size: int | None,
        batch_size: int,
        devices: Sequence[str] | None = None,
    ) -> None:
        self.config = config
        self.step_id = step_id
        self.img_size = img_size
        self.batch_size = batch_size
        self.devices = None if devices is None else list(devices)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)

    def __call__(self) -> dict[str, Any]:
        _expose(getattr(self, "devices", None))
        import suite  # noqa: F401 - torchvision shim before timm
        from suite.teacher.maps_step import maps_step_id, run_maps_step

        if _global_rank() != 0:
            return {"run_id": self.step_id, "state": "finished", "summary": {}}
        paths = RunPaths.of(self.config["run"]["output_root"], self.step_id)
        cfg = _checked_config(self.config, paths, f"maps step {self.step_id}", lambda c: maps_step_id(c, self.img_size))
        from suite.teacher.offline import MapsBuildStopped

        preempt = preemption_signal()
        submitit_handler = signal.getsignal(preempt)
        stop = GracefulStop((signal.SIGTERM, signal.SIGUSR1, signal.SIGINT, preempt))
        with stop:
            try:
                summary = run_maps_step(cfg, paths, img_size=self.img_size, batch_size=self.batch_size, stop=stop)
            except MapsBuildStopped:
                summary = None
        if summary is None:
            if preempt in stop.received and callable(submitit_handler):
                _hand_over(submitit_handler, preempt)  # the finished chunks are on disk: requeue
            return {"run_id": self.step_id, "state": "interrupted", "summary": {}}
        return {"run_id": self.step_id, "state": "finished", "summary": summary}


def _checked_config(config: dict[str, Any], paths: RunPaths, what: str, identify: Callable[[Any], str]) -> Any:
    """The job's config, validated, with the id the sweep planned, checked against this node.

    A problem is recorded in ``failure.json`` (where ``sweep status`` looks) before it is raised.
    """
    from suite.config import ConfigError, validate_config
    from suite.train.preflight import check_machine
    from suite.run.records import write_failure

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


def _global_rank() -> int:
    try:
        return submitit.JobEnvironment().global_rank
    except RuntimeError:  # not inside a submitit job (called directly)
        return int(os.environ.get("RANK", "0"))


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
        return MapsJob(config, run.run_id, build.get("img_size"), int(build.get("batch_size", 128)), devices)
    return RunJob(config, run.run_id, devices)
