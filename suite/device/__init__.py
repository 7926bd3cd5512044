"""Where a process computes: CPUs and threads, the CUDA device, the process group, numeric precision.

- ``hardware``: the CPU allocation and this process's share of it, device choice, host-to-device copies.
- ``distributed``: data parallelism (ranks, collectives, the local launcher).
- ``precision``: the autocast dtype, fp16 loss scaling, TF32.
- ``batch_split``: how a global batch splits over processes (shared by ``sweep plan`` and the run).

Imports: ``suite.config`` and ``suite.run`` (below it).
"""
