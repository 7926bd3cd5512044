"""A training step that fails on one rank, for the data-parallel failure tests (on ``PYTHONPATH``).

With ``FAULT_RANK=<r>`` (and ``FAULT_STEP=<s>``, default 1), rank ``r`` raises an out-of-memory
error at step ``s`` of the first epoch, as a GPU that runs out of memory would; the other ranks
train on. The hook patches ``suite.trainer`` when something imports it.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

RANK = os.environ.get("FAULT_RANK", "")
STEP = int(os.environ.get("FAULT_STEP") or 1)


class _FailingStep(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):  # noqa: ANN001, ANN201 - importlib protocol
        if name != "suite.trainer":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):  # noqa: ANN001, ANN202
            run(module)
            step = module.Trainer._step

            def failing_step(self, batch, epoch, index, meter):  # noqa: ANN001, ANN202
                if self.dist.rank == int(RANK) and epoch == 0 and index == STEP:
                    import torch

                    raise torch.OutOfMemoryError(
                        f"CUDA out of memory. Tried to allocate 20.00 GiB (injected on rank {RANK})"
                    )
                step(self, batch, epoch, index, meter)

            module.Trainer._step = failing_step

        spec.loader.exec_module = exec_module
        return spec


if RANK.isdigit():
    sys.meta_path.insert(0, _FailingStep())
