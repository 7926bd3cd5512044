"""How a launcher answers SIGINT, SIGTERM and SIGHUP: one class, :class:`LaunchStop`.

SIGHUP (the launcher's terminal closed) is a stop like SIGTERM: the runs checkpoint and the
launcher exits 75 with its message, instead of dying at once (exit 129) with its runs mid-epoch.

A launcher meets stop signals at three moments, and :class:`LaunchStop` covers each:

- **Before any run started** (checks, submission; ``interrupt=True``, what
  :func:`stop_signals_interrupt` gives ``suite sweep launch``): the first signal raises
  ``KeyboardInterrupt``, so ``kill <launcher>`` ends with the launcher's own message instead of a
  silent exit 143, and later signals are ignored while it reports.
- **While local runs train** (the default, :class:`jobs.backends.local.LocalPool`): a signal is
  recorded, as a run's :class:`~suite.run.signals.GracefulStop` records it. The first asks the
  runs to stop at their next step boundary; a second one is :attr:`~LaunchStop.hurry` (stop at
  once, keeping the last checkpoint), never ``KeyboardInterrupt``: the launcher is not inside a
  step, it has to pass the stop on to its runs. After a stop the signals stay ignored: the
  launcher only reports and exits.
- **While a run's process starts** (:meth:`LaunchStop.spawning`): SIGINT is ignored, so the child
  inherits SIG_IGN. A terminal's Ctrl-C reaches every process of the foreground group, and
  submitit's local controller answers SIGINT by sending SIGINT and, one second later, SIGKILL to
  the run, which would die mid-step without a checkpoint. Ignored at start, SIGINT leaves the
  controller alone (Python keeps an inherited SIG_IGN), and the run installs its own handler; the
  launcher forwards stops to the controller as SIGTERM, which the controller passes on. SIGHUP is
  ignored the same way: a closed terminal hangs up its whole session, and the runs must stop through
  the launcher (with a checkpoint), not die of the hang-up.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any

from suite.run.signals import GracefulStop

__all__ = ["LaunchInterrupted", "LaunchStop", "stop_signals_interrupt"]

LAUNCHER_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
SPAWN_IGNORED: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGHUP)  # see LaunchStop.spawning


class LaunchInterrupted(RuntimeError):
    """A local launch was stopped by a signal; its runs checkpointed and are resumable."""

    def __init__(self, reason: str, left: list[str]) -> None:
        super().__init__(reason)
        self.left = left


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class LaunchStop(GracefulStop):
    """SIGINT/SIGTERM/SIGHUP to a launcher, while the ``with`` block runs (see the module docstring).

    Args:
        interrupt: raise ``KeyboardInterrupt`` on the first signal (before runs start) instead
            of recording it.

    Outside the main thread, where handlers cannot be installed, it changes nothing.
    """

    def __init__(self, *, interrupt: bool = False) -> None:
        super().__init__(LAUNCHER_SIGNALS)
        self.interrupt = interrupt
        self.count = 0  # signals received
        self._saved: dict[int, Any] = {}

    def request(self, signum: int = signal.SIGTERM) -> None:
        super().request(signum)
        self.count += 1

    @property
    def hurry(self) -> bool:
        """A second signal: the runs stop at once, keeping their last checkpoint."""
        return self.count > 1

    def describe(self) -> str:
        """The first signal's name (``SIGINT``), or ``stop`` for a stop requested in code."""
        return signal.Signals(self.signum).name if self.signum is not None else "stop"

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or less when a signal arrives meanwhile."""
        deadline = time.monotonic() + seconds
        count = self.count
        while time.monotonic() < deadline and self.count == count:
            time.sleep(0.05)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.request(signum)
        if self.interrupt:
            self._ignore()
            raise KeyboardInterrupt

    def _ignore(self) -> None:
        for sig in self.signals:
            signal.signal(sig, signal.SIG_IGN)

    def __enter__(self) -> LaunchStop:
        if _main_thread():
            self._saved = {sig: signal.signal(sig, self._on_signal) for sig in self.signals}
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._saved and self.requested:
            self._ignore()  # after a stop the launcher only reports and exits: more signals change nothing
        for sig, handler in self._saved.items():
            if signal.getsignal(sig) == self._on_signal:  # not replaced meanwhile (an inner stop ignores them)
                signal.signal(sig, handler)
        self._saved = {}

    @contextmanager
    def spawning(self) -> Iterator[None]:
        """Start a child process (submitit's local controller) with SIGINT and SIGHUP ignored."""
        if not _main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in SPAWN_IGNORED}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def stop_signals_interrupt() -> LaunchStop:
    """While launching, SIGTERM or SIGHUP (like Ctrl-C) raises KeyboardInterrupt once, then all are ignored.

    Once local runs are started, their pool's own :class:`LaunchStop` takes over.
    """
    return LaunchStop(interrupt=True)
