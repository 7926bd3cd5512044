"""Fault injection for the tests that start real processes (on their ``PYTHONPATH``).

- ``FAULT_STEP_DELAY_S=<seconds>``: every training step sleeps that long after its work, so a
  test can signal a run, or a sweep launcher, in the middle of an epoch.
- ``FAULT_HOLD_AT=<epoch>:<step>`` and ``FAULT_HOLD_DIR=<folder>``: after that step (0-based epoch,
  step within the epoch) the process writes ``<folder>/<pid>`` and waits there until it receives
  ``FAULT_HOLD_SIGNALS`` (default 1) SIGINT/SIGTERM signals, each passed on to the handler that was
  installed (a second Ctrl-C still raises where GracefulStop raises it). A test waits for the file,
  then signals (the file holds the number of signals received so far): the fault lands at that step on any machine, however fast or slow.
  ``FAULT_HOLD_RANK=<r>`` holds rank ``r`` only.
- ``FAULT_RANK=<r>`` (and ``FAULT_STEP=<s>``, default 1): rank ``r`` raises an out-of-memory error
  at step ``s`` of the first epoch, as a GPU that runs out of memory would; the other ranks train on.

The hook patches ``suite.train.trainer`` when something imports it, so processes that never train
pay nothing.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import signal
import sys
import time
from pathlib import Path

DELAY_S = float(os.environ.get("FAULT_STEP_DELAY_S") or 0)
RANK = os.environ.get("FAULT_RANK", "")
STEP = int(os.environ.get("FAULT_STEP") or 1)
HOLD_AT = tuple(int(part) for part in os.environ["FAULT_HOLD_AT"].split(":")) if os.environ.get("FAULT_HOLD_AT") else None
HOLD_DIR = os.environ.get("FAULT_HOLD_DIR", "")
HOLD_SIGNALS = int(os.environ.get("FAULT_HOLD_SIGNALS") or 1)
HOLD_RANK = os.environ.get("FAULT_HOLD_RANK", "")
HOLD_LIMIT_S = 300.0


def _hold() -> None:
    """Wait for HOLD_SIGNALS stop signals, passing each on to the handler installed before."""
    received = []
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}

    marker = Path(HOLD_DIR, str(os.getpid()))

    def relay(signum, frame):  # noqa: ANN001, ANN202
        received.append(signum)
        marker.write_text(f"{len(received)}\n")  # signals so far: a test sends the next one after this
        handler = previous[signum]
        if callable(handler):
            handler(signum, frame)
        elif handler == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    for signum in previous:
        signal.signal(signum, relay)
    try:
        marker.write_text("0\n")
        deadline = time.monotonic() + HOLD_LIMIT_S
        while len(received) < HOLD_SIGNALS and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _faulty(step):  # noqa: ANN001, ANN202
    def faulty_step(self, batch, epoch, index, meter):  # noqa: ANN001, ANN202
        if RANK and self.dist.rank == int(RANK) and epoch == 0 and index == STEP:
            import torch

            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 20.00 GiB (injected on rank {RANK})")
        step(self, batch, epoch, index, meter)
        if HOLD_AT == (epoch, index) and (not HOLD_RANK or self.dist.rank == int(HOLD_RANK)):
            _hold()
        if DELAY_S > 0:
            time.sleep(DELAY_S)

    return faulty_step


class _FaultySteps(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):  # noqa: ANN001, ANN201 - importlib protocol
        if name != "suite.train.trainer":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):  # noqa: ANN001, ANN202
            run(module)
            module.Trainer._step = _faulty(module.Trainer._step)

        spec.loader.exec_module = exec_module
        return spec


if DELAY_S > 0 or RANK or HOLD_AT:
    sys.meta_path.insert(0, _FaultySteps())
