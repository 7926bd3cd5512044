"""Images in: the built-in dataset, ImageFolder trees, seeded augmentation and the loaders.

- ``loaders``: datasets, seeded samplers, the persistent worker pool, ``train_loader``/``eval_loader``.
- ``builtin``: the generated digits-on-clutter dataset (no download).
- ``augment``: fixes to timm's RandAugment ops (posterize at 0 bits).
- ``geometry``: the crop/flip/affine each training sample went through (for offline teacher maps).

Imports: ``suite.config``, ``suite.run``, ``suite.device``.
"""
