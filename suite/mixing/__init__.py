"""Batch mixing: Mixup, CutMix and TokenMix behind DeiT's switch.

- ``mixer``: ``build_mixer`` and the mixer the training step calls (``(x, y) -> (x, target, stats)``).
- ``tokenmix``: TokenMix's masks, teacher-weighted targets and blending.
- ``masks``: token masks (block, random, box) drawn from seeded CPU generators.
- ``targets``: pure label functions, one per target (``mix.target``: the label rule).

Imports: ``suite.config``, ``suite.device``; a teacher is passed in (``suite.teacher`` is above).
"""
