"""Sweep and study files: what they share (:mod:`sweeps.schema`), the sweep schema
(:mod:`sweeps.spec`), expansion into validated runs (:mod:`sweeps.expand`, with the runs and
their checks in :mod:`sweeps.runs` and what a sweep makes first in :mod:`sweeps.prerequisites`),
values set on run configs (:mod:`sweeps.values`), GPU-hour estimates (:mod:`sweeps.estimate`) and
Optuna studies (:mod:`sweeps.study`, :mod:`sweeps.study_space`, :mod:`sweeps.study_metrics`).

Presets live next to the code: ``sweeps/paper/`` (DeiT-S on ImageNet-1k) and ``sweeps/demo/``
(the same axes on the built-in data). See ``docs/sweeps.md``.
"""
