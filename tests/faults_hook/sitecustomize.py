"""Slow training steps for the fault-injection tests (on ``PYTHONPATH`` of the processes they start).

With ``FAULT_STEP_DELAY_S=<seconds>`` every training step sleeps that long after its work, so a
test can signal a run, or a sweep launcher, in the middle of an epoch. The hook patches
``suite.trainer`` when something imports it, so processes that never train pay nothing.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
import time

DELAY_S = float(os.environ.get("FAULT_STEP_DELAY_S") or 0)


class _SlowSteps(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):  # noqa: ANN001, ANN201 - importlib protocol
        if name != "suite.trainer":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):  # noqa: ANN001, ANN202
            run(module)
            step = module.Trainer._step

            def slow_step(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
                step(self, *args, **kwargs)
                time.sleep(DELAY_S)

            module.Trainer._step = slow_step

        spec.loader.exec_module = exec_module
        return spec


if DELAY_S > 0:
    sys.meta_path.insert(0, _SlowSteps())
