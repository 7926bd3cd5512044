"""Turning termination signals into a clean stop at the next step boundary.

SLURM sends SIGTERM before killing a job (and USR1/USR2 ahead of a time limit when asked);
a training that dies inside a step loses the epoch and, with wandb, all logged data of the
run. :class:`GracefulStop` records the signal; the training loop checks it after every
step, writes a checkpoint and returns ``interrupted``.

A second Ctrl-C raises ``KeyboardInterrupt`` at once, wherever the loop is; the trainer catches
it and ends the run ``interrupted`` without a new checkpoint. Every record is replaced
atomically, so the last good checkpoint is where the resume starts (never ``failed``).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType

__all__ = ["GracefulStop", "DEFAULT_STOP_SIGNALS"]

DEFAULT_STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class GracefulStop:
    """Context manager: while active, the given signals set :attr:`signum` instead of killing.

    Outside the main thread (where handlers cannot be installed) it only offers
    :meth:`request`, which other code may call to stop the loop.
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = DEFAULT_STOP_SIGNALS) -> None:
        self.signals = signals
        self.signum: int | None = None  # the first signal: the reason of the stop
        self.received: set[int] = set()  # every signal seen (jobs tell SIGTERM from preemption by it)
        self._previous: dict[int, object] = {}

    def request(self, signum: int = signal.SIGTERM) -> None:
        self.received.add(signum)
        if self.signum is None:
            self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.request(signum)

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
