"""Preemption-safe work in a submitit job: stop at a boundary, write the state, only then requeue.

submitit installs, before calling the job, a handler for its preemption signal (``USR2``, or
``$SUBMITIT_PREEMPT_SIGNAL``; SLURM sends it ``signal_delay_s`` before the time limit, and
``job._interrupt()`` / ``scancel --signal=USR2`` send it on demand). That handler pickles the
callable, runs ``scontrol requeue`` and exits at once, whatever the process was doing: inside a
training step it would lose the step and skip the trainer's checkpoint. So while the work runs,
:class:`Preemption` puts a :class:`~suite.run.signals.GracefulStop` in front that also listens to
the preemption signal. The work stops at its next boundary and writes its state; only then does
:meth:`Preemption.requeue` call submitit's handler, which pickles the callable (its
``checkpoint``), requeues the job and exits. A signal that arrives before the work starts or
after it ended reaches submitit's handler directly, which is just as safe there.

``SIGTERM`` (SLURM's preemption in ``REQUEUE`` mode, ``scancel``) also stops at a boundary.
submitit's own ``job._interrupt()`` sends ``SIGTERM`` and then ``USR2``, so after a ``SIGTERM`` a
stopped training waits a few seconds for the preemption signal before it returns ``interrupted``.
SLURM sends that ``SIGTERM`` to every process of the job, W&B's service included, which then
exits; the W&B error that follows in the trainer is not a training failure, so the run is kept
resumable (see :func:`_keep_resumable`).

Several processes per run: every task of the job runs the same callable; the ranks agree on the
stop step, rank 0 writes the one checkpoint and the others wait for it; then each calls
submitit's handler, which checkpoints and requeues from global rank 0 only (the other ranks'
handler just returns), so the job is requeued once.

:func:`train_preemptible` is the one preemption-safe training: sweep runs
(:class:`jobs.worker.RunJob`) and study trials (:class:`jobs.tune.worker.TuneWorker`) train
through it.
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import submitit

from suite.run.records import RunPaths, clear_failure, read_json
from suite.run.signals import GracefulStop

__all__ = ["Preemption", "global_rank", "preemption_signal", "train_preemptible"]

TERM_GRACE_S = 5.0  # after SIGTERM, how long to wait for the preemption signal that may follow


def preemption_signal() -> signal.Signals:
    """The signal submitit treats as preemption/timeout (``$SUBMITIT_PREEMPT_SIGNAL``, default USR2)."""
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    try:
        return signal.Signals[f"SIG{name}"]
    except KeyError:
        raise ValueError(f"SUBMITIT_PREEMPT_SIGNAL={name} is not a signal name (e.g. USR2)") from None


def global_rank() -> int:
    """This process's global rank in its submitit job (``$RANK`` outside one, default 0)."""
    try:
        return submitit.JobEnvironment().global_rank
    except RuntimeError:  # not inside a submitit job (called directly)
        return int(os.environ.get("RANK", "0"))


class Preemption:
    """The stop signals of one attempt, and submitit's requeue once the work's state is on disk.

    Create it inside the job (submitit's handler is installed by then), run the work under
    :attr:`stop` (``with preemption.stop:``), then call :meth:`requeue`.
    """

    def __init__(self) -> None:
        self.signum = preemption_signal()
        self._submitit_handler = signal.getsignal(self.signum)  # checkpoint-and-requeue, in a submitit job
        self.stop = GracefulStop((signal.SIGTERM, signal.SIGUSR1, signal.SIGINT, self.signum))

    @property
    def preempted(self) -> bool:
        return self.signum in self.stop.received

    def wait_after_term(self, seconds: float = TERM_GRACE_S) -> None:
        """After a SIGTERM, give the preemption signal that may follow ``seconds`` to arrive.

        Call it while :attr:`stop` is active. A local job gets no preemption signal after a stop.
        """
        if self.preempted or signal.SIGTERM not in self.stop.received:
            return
        if os.environ.get("SUBMITIT_EXECUTOR") == "local":
            return
        deadline = time.monotonic() + seconds
        while not self.preempted and time.monotonic() < deadline:
            time.sleep(0.05)

    def requeue(self, before: Callable[[], None] | None = None) -> bool:
        """When preempted inside a submitit job: ``before()``, then submitit's handler.

        The handler pickles the callable, requeues the job and exits on global rank 0 (so this
        does not return there); other ranks return True. False: nothing was handed over.
        """
        if not (self.preempted and callable(self._submitit_handler)):
            return False
        if before is not None:
            before()
        self._submitit_handler(self.signum, None)
        return True


def train_preemptible(
    cfg: Any, paths: RunPaths, *, callbacks: Sequence[Any] = (), before_requeue: Callable[[], None] | None = None
) -> Any:
    """Train ``cfg`` so that a stop or a preemption never loses more than the current step.

    Args:
        cfg: the validated run config.
        paths: its run folder.
        callbacks: the trainer's epoch callbacks (a trial's pruning callback).
        before_requeue: called just before a preempted job is pickled and requeued (a trial
            worker notes the trial it continues).

    Returns:
        The :class:`~suite.train.trainer.TrainResult`: ``finished``, ``pruned``, or
        ``interrupted`` (stopped with a checkpoint; a preempted job on global rank 0 has been
        requeued and this process exited instead).

    Raises:
        Exception: what training raised, unless a stop was requested and the error came from
            the W&B sink (its service died with the stop signal): then the run is kept resumable
            and the result is ``interrupted``.
    """
    from suite.run.records import RunState
    from suite.train.trainer import TrainResult, train

    preemption = Preemption()
    with preemption.stop:
        try:
            result = train(cfg, callbacks=list(callbacks), stop=preemption.stop, progress=False)
        except Exception as err:
            if not (preemption.stop.requested and _from_tracker(err)):
                raise
            _keep_resumable(paths, err)
            result = TrainResult(paths.root.name, paths.root, RunState.INTERRUPTED, {})
        if result.state is RunState.INTERRUPTED:
            preemption.wait_after_term()
    if result.state is RunState.INTERRUPTED:
        preemption.requeue(before_requeue)  # the checkpoint is on disk: requeue and exit
    return result


def _from_tracker(err: BaseException) -> bool:
    """The error was raised by the W&B sink (its service process died), not by training."""
    frames = traceback.extract_tb(err.__traceback__)
    sink = os.path.join("suite", "run", "tracking.py")
    return any(f.filename.endswith(sink) or f"{os.sep}wandb{os.sep}" in f.filename for f in frames)


def _keep_resumable(paths: RunPaths, err: BaseException) -> None:
    """Undo the failure record of a run whose W&B service was killed by the stop signal.

    SLURM signals every process of a job step, so its SIGTERM also ends W&B's ``wandb-core``
    service, and the trainer's next W&B call raises although the training state is safely in
    ``checkpoint.pt``. W&B is only a sink: the run stays resumable and continues the same W&B
    run (``resume="allow"``, id = run id) when it restarts.

    Only this process's own record is undone: a record that names another rank is that rank's
    failure (for example an out-of-memory on rank 3 that made srun stop the job), and stays.
    """
    try:
        record = read_json(paths.failure)
    except (ValueError, UnicodeDecodeError, OSError):
        record = None
    if isinstance(record, dict) and record.get("rank") not in (None, global_rank()):
        return
    clear_failure(paths)
    with open(paths.log, "a") as handle:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        handle.write(
            f"{stamp} W&B service ended by the stop signal ({type(err).__name__}: {err}); run kept resumable\n"
        )
