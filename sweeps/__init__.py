"""Sweep files: one typed schema (:mod:`sweeps.spec`), expansion into validated runs
(:mod:`sweeps.expand`), and GPU-hour estimates (:mod:`sweeps.estimate`).

Presets live next to the code: ``sweeps/paper/`` (DeiT-S on ImageNet-1k) and ``sweeps/demo/``
(the same axes on the built-in data). See ``docs/sweeps.md``.
"""
