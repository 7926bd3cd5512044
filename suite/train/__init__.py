"""The training core: ``Trainer``/``train``, evaluation, occlusion, and the machine checks before a run.

Imports: every package of ``suite`` below it (config, run, device, data, models, mixing, teacher).
"""
