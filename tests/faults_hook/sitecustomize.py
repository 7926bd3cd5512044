"""Fault injection for the tests that start real processes (on their ``PYTHONPATH``).

- ``FAULT_STEP_DELAY_S=<seconds>``: every training step sleeps that long after its work, so a
  test can signal a run, or a sweep launcher, in the middle of an epoch.
- ``FAULT_RANK=<r>`` (and ``FAULT_STEP=<s>``, default 1): rank ``r`` raises an out-of-memory error
  at step ``s`` of the first epoch, as a GPU that runs out of memory would; the other ranks train on.

The hook patches ``suite.train.trainer`` when something imports it, so processes that never train
pay nothing.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
import time

DELAY_S = float(os.environ.get("FAULT_STEP_DELAY_S") or 0)
RANK = os.environ.get("FAULT_RANK", "")
STEP = int(os.environ.get("FAULT_STEP") or 1)


def _faulty(step):  # noqa: ANN001, ANN202
    def faulty_step(self, batch, epoch, index, meter):  # noqa: ANN001, ANN202
        if RANK and self.dist.rank == int(RANK) and epoch == 0 and index == STEP:
            import torch

            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 20.00 GiB (injected on rank {RANK})")
        step(self, batch, epoch, index, meter)
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


if DELAY_S > 0 or RANK:
    sys.meta_path.insert(0, _FaultySteps())
