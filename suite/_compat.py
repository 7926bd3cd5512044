"""Make ``import torchvision`` work when its compiled ops cannot load.

PyPI's torchvision wheels are CUDA builds. Paired with a CPU-only torch (the pinned
``torch==2.13.0`` / ``torchvision==0.28.0`` pair used on machines without CUDA), the
import fails with ``RuntimeError: operator torchvision::nms does not exist`` because
torchvision registers Python fake kernels for operators whose schemas live in the
compiled extension that did not load. Defining the two schemas first lets torchvision,
and therefore timm, import; only the compiled ops themselves (``ops.nms``,
``roi_align``, ``io.decode_image``) then raise, and the suite never calls them (images
are decoded with PIL).

On a matching install (a cluster's CUDA torch with its own torchvision) the operator
already exists and this is a no-op.
"""

from __future__ import annotations

import importlib.abc
import sys
from typing import Any

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library = None  # keep the Library object alive: dropping it unregisters the schemas


def ensure_torchvision_importable() -> bool:
    """Define torchvision's operator schemas if the compiled extension is missing.

    Returns:
        True when the workaround was applied, False when it was not needed.
    """
    global _library
    if "torchvision" in sys.modules or _library is not None:
        return False
    import torch

    try:
        torch.ops.torchvision.nms  # noqa: B018 - attribute access is the probe
        return False
    except (AttributeError, RuntimeError):
        pass
    try:
        import torchvision  # noqa: F401 - a working install registers the op on import

        return False
    except RuntimeError as err:
        if "torchvision::nms" not in str(err):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
    _library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        _library.define(schema)
    return True


class _ShimFirst(importlib.abc.MetaPathFinder):
    """Runs :func:`ensure_torchvision_importable` when torchvision is about to be imported, then
    steps aside (the import itself proceeds as usual)."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name == "torchvision":
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            ensure_torchvision_importable()
        return None


def shim_before_torchvision() -> None:
    """Apply the shim lazily: now if torchvision is already imported, else at its first import."""
    if "torchvision" in sys.modules:
        return
    if not any(isinstance(f, _ShimFirst) for f in sys.meta_path):
        sys.meta_path.insert(0, _ShimFirst())
