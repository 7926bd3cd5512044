"""TokenMix's teacher: activation maps from a frozen model online, or stored offline maps.

- ``cam``: class-activation maps of a timm model (the classifier as a 1x1 conv), top-k gating.
- ``online``: the online teacher (``Teacher``) built from a checkpoint or a suite run folder.
- ``offline``: building and reading offline maps (``suite maps build``), cut to each crop.
- ``maps_step``: a sweep's maps build step, recorded like a run.
- ``build``: ``build_teacher``, the one entry the trainer uses.

Imports: ``suite.config``, ``suite.run``, ``suite.device``, ``suite.data``, ``suite.models``.
"""
