"""A random resized crop + horizontal flip that remembers where each crop came from.

Offline teacher maps (``suite.offline_maps``) are computed once on whole images; at training
time each sample's map must be cut to the same box the image was cut to, and mirrored with it.
``CropFlip`` replaces the usual ``RandomResizedCrop`` + ``RandomHorizontalFlip`` pair (same
parameters, same sampling procedure as torchvision's) and records, after each call, the crop box
in coordinates normalised to the source image plus the flip flag. Geometric RandAugment ops that
come later (rotate, shear, translate) are not tracked, as in the reference.

Example:
    >>> import torch
    >>> crop = CropFlip(8, scale=(0.5, 1.0), hflip=0.5)
    >>> out = crop(torch.zeros(3, 16, 16, dtype=torch.uint8))
    >>> out.shape, len(crop.last)
    (torch.Size([3, 8, 8]), 5)
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision.transforms import InterpolationMode, RandomResizedCrop
from torchvision.transforms.v2 import functional as F

__all__ = ["CropFlip"]


class CropFlip:
    """Random resized crop then horizontal flip, PIL or tensor images; see the module docstring.

    Args:
        size: Output side in pixels.
        scale: Range of the crop's area as a fraction of the image (``RandomResizedCrop``).
        ratio: Range of the crop's aspect ratio.
        hflip: Probability of a horizontal flip.
        interpolation: ``bilinear`` or ``bicubic``.

    After each call ``last`` is ``(x0, y0, x1, y1, flipped)``: the crop box in ``[0, 1]`` image
    coordinates (x to the right, y down) and 1.0 if the output was mirrored, else 0.0.
    """

    def __init__(
        self,
        size: int,
        *,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        interpolation: str = "bilinear",
    ) -> None:
        self.size = int(size)
        self.scale, self.ratio = (float(scale[0]), float(scale[1])), (float(ratio[0]), float(ratio[1]))
        self.hflip = float(hflip)
        self.interpolation = InterpolationMode(interpolation)
        self.last: tuple[float, float, float, float, float] = (0.0, 0.0, 1.0, 1.0, 0.0)

    def __call__(self, image: Any) -> Any:
        height, width = F.get_size(image)
        top, left, h, w = RandomResizedCrop.get_params(image, list(self.scale), list(self.ratio))
        out = F.resized_crop(
            image, top, left, h, w, [self.size, self.size], interpolation=self.interpolation, antialias=True
        )
        flipped = self.hflip > 0 and float(torch.rand(1)) < self.hflip
        if flipped:
            out = F.horizontal_flip(out)
        self.last = (left / width, top / height, (left + w) / width, (top + h) / height, float(flipped))
        return out

    def __repr__(self) -> str:
        return (
            f"CropFlip(size={self.size}, scale={self.scale}, ratio={self.ratio}, hflip={self.hflip}, "
            f"interpolation={self.interpolation.value})"
        )
