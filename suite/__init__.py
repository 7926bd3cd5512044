"""TokenMix ablation suite: the training core.

Importing the package applies the torchvision compatibility shim first, so every entry
point (the CLI, submitit children, tests) can import timm on CPU-only installs.
"""

from suite._compat import ensure_torchvision_importable

ensure_torchvision_importable()

__version__ = "0.1.0"
