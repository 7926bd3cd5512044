"""TokenMix ablation suite: the training core.

Importing the package imports nothing heavy: it arranges for the torchvision compatibility shim
(:mod:`suite._compat`) to run just before torchvision is first imported (by timm or directly), so
every entry point (the CLI, submitit children, tests) can import timm on CPU-only installs, while
commands that never touch a model (``suite report``, ``suite sweep plan``) do not load torch.

Sub-packages, bottom layer first; each imports only those before it (``tests/test_layering.py``):
``config`` < ``run`` < ``device`` < ``data`` < ``models`` < ``mixing`` < ``teacher`` < ``train`` < ``cli``.
"""

import time

from suite._compat import shim_before_torchvision

# When this process imported the suite, its first import: a run's setup time (imports, data,
# model and teacher build) is counted from here to its first step (``setup_seconds``).
IMPORTED_AT = time.time()

shim_before_torchvision()

__version__ = "0.1.0"
