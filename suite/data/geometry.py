"""A random resized crop + horizontal flip that remembers where each crop came from, and the
affine of the geometric RandAugment ops that follow it.

Offline teacher maps (``suite.teacher.offline``) are computed once on whole images; at training
time each sample's map must be cut to the same box the image was cut to, mirrored with it, and
moved by the same rotate / shear / translate that RandAugment applied to the image.
``CropFlip`` replaces the usual ``RandomResizedCrop`` + ``RandomHorizontalFlip`` pair (same
parameters, same sampling procedure as torchvision's) and records, after each call, the crop box
in coordinates normalised to the source image plus the flip flag. ``follow_augment_ops`` makes
the geometric ops of a timm ``RandAugment`` / ``AutoAugment`` report the affine they applied, with
the magnitude they drew, to the ``CropFlip``; ``CropFlip.record`` then also holds the composed
affine in normalised coordinates (what ``torch.nn.functional.affine_grid`` takes).

Order (``data.aug_order``): ``timm`` (crop, flip, then RandAugment on the crop; ``CropFlip``)
or ``reference``, the order of the reference's label pipeline (TokenLabeling's, which TokenMix
uses): flip, RandAugment on the whole image, then the random resized crop
(``ReferenceGeometry``). Both move the map exactly where the image content went. Where an op moves
content in from outside its input (RandAugment's fill), the map is zero; this is checked after
every geometric op, not only for the composed affine, so content moved out of the image by one op
and back in by the next keeps no map mass where the image shows fill. The record therefore holds,
after the composed affine, one more affine per further op a sample can draw (``checks``): the
output-to-input map of the ops from that one on, whose image of the output must stay inside.

Example:
    >>> import torch
    >>> crop = CropFlip(8, scale=(0.5, 1.0), hflip=0.5)
    >>> out = crop(torch.zeros(3, 16, 16, dtype=torch.uint8))
    >>> out.shape, len(crop.last)
    (torch.Size([3, 8, 8]), 5)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torchvision.transforms import InterpolationMode, RandomResizedCrop
from torchvision.transforms.v2 import functional as F

__all__ = ["GEOMETRIC_OPS", "CropFlip", "ReferenceGeometry", "follow_augment_ops", "op_affine"]

# timm auto_augment op names that move pixels, and nothing else about them
GEOMETRIC_OPS = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY", "TranslateXRel", "TranslateYRel")
_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def op_affine(name: str, args: tuple[float, ...], size: tuple[int, int]) -> np.ndarray:
    """The 3 x 3 matrix (output pixel -> input pixel, PIL's convention) that timm's op ``name`` applies.

    Args:
        name: A timm auto-augment op name from ``GEOMETRIC_OPS``.
        args: The op's level arguments as timm passes them (degrees, shear factor, fraction or pixels).
        size: Image ``(width, height)``.
    """
    w, h = size
    (v,) = args
    if name == "Rotate":  # PIL's Image.rotate about the centre, counter-clockwise in degrees
        angle = -math.radians(v)
        cos, sin = math.cos(angle), math.sin(angle)
        cx, cy = w / 2.0, h / 2.0
        shift_x, shift_y = cx - cos * cx - sin * cy, cy + sin * cx - cos * cy
        return np.array([[cos, sin, shift_x], [-sin, cos, shift_y], [0, 0, 1]])
    if name == "ShearX":
        return np.array([[1.0, v, 0.0], [0.0, 1.0, 0.0], [0, 0, 1]])
    if name == "ShearY":
        return np.array([[1.0, 0.0, 0.0], [v, 1.0, 0.0], [0, 0, 1]])
    if name in ("TranslateX", "TranslateXRel"):
        pixels = v * w if name == "TranslateXRel" else v
        return np.array([[1.0, 0.0, pixels], [0.0, 1.0, 0.0], [0, 0, 1]])
    if name in ("TranslateY", "TranslateYRel"):
        pixels = v * h if name == "TranslateYRel" else v
        return np.array([[1.0, 0.0, 0.0], [0.0, 1.0, pixels], [0, 0, 1]])
    raise ValueError(f"name must be one of {', '.join(GEOMETRIC_OPS)}, but got name={name!r}")


def _normalised(matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A pixel affine (output -> input, PIL's convention) of an image of ``(w, h)`` in ``[-1, 1]`` coordinates."""
    w, h = size
    to_pixels = np.array([[w / 2.0, 0.0, w / 2.0], [0.0, h / 2.0, h / 2.0], [0.0, 0.0, 1.0]])
    return np.linalg.inv(to_pixels) @ matrix @ to_pixels


def _box(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Output ``[-1, 1]`` coordinates -> the box's place in its image's ``[-1, 1]`` coordinates."""
    return np.array([[x1 - x0, 0.0, x0 + x1 - 1.0], [0.0, y1 - y0, y0 + y1 - 1.0], [0.0, 0.0, 1.0]])


class _Tracked:
    """What both orders share: the geometric ops followed since the sample began, and the record."""

    max_ops: int = 1  # geometric ops one sample can draw (RandAugment's num_layers); sets the record's width

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
        self._begin()

    def _begin(self) -> None:
        self._ops: list[np.ndarray] = []

    def follow(self, matrix: np.ndarray, size: tuple[int, int]) -> None:
        """Compose a later op's pixel affine (output -> input, PIL's convention) on an image of ``(w, h)``."""
        self._ops.append(_normalised(matrix, size))

    def _suffixes(self, last: np.ndarray) -> list[np.ndarray]:
        """``[op_1..op_n·last, op_2..op_n·last, ..., op_n·last, last]``: the ops from each one on."""
        suffix = [last]
        for op in reversed(self._ops):
            suffix.insert(0, op @ suffix[0])
        return suffix

    def _record(self, affine: np.ndarray, checks: list[np.ndarray]) -> tuple[float, ...]:
        if len(checks) > self.max_ops - 1:
            raise ValueError(f"{len(checks) + 1} geometric ops in one sample, but max_ops={self.max_ops}")
        checks = checks + [np.eye(3)] * (self.max_ops - 1 - len(checks))  # identity: always inside
        return (*self.last, *(float(v) for m in (affine, *checks) for v in m[:2].reshape(-1)))

    @property
    def width(self) -> int:
        """Values in :attr:`record`."""
        return 5 + 6 * self.max_ops


class _Follow:
    """Wraps a timm op function: applies it and reports its affine to a ``CropFlip`` (picklable)."""

    def __init__(self, fn: Any, name: str, geometry: CropFlip) -> None:
        self.fn, self.name, self.geometry = fn, name, geometry

    def __call__(self, img: Any, *args: Any, **kwargs: Any) -> Any:
        height, width = F.get_size(img)  # PIL or tensor
        size = (width, height)
        self.geometry.follow(op_affine(self.name, args, size), size)
        return self.fn(img, *args, **kwargs)


def follow_augment_ops(augment: Any, geometry: CropFlip | ReferenceGeometry) -> int:
    """Make the geometric ops of a timm ``RandAugment`` or ``AutoAugment`` report to ``geometry``.

    Returns:
        How many ops were wrapped.

    Raises:
        ValueError: For augmentations whose geometry cannot be followed by one affine (AugMix).
    """
    from timm.data.auto_augment import AugMixAugment, AutoAugment, RandAugment

    if isinstance(augment, RandAugment):
        ops = list(augment.ops)
        geometry.max_ops = max(geometry.max_ops, int(augment.num_layers))
    elif isinstance(augment, AutoAugment):
        ops = [op for sub in augment.policy for op in sub]
        geometry.max_ops = max(geometry.max_ops, max(len(sub) for sub in augment.policy))
    elif isinstance(augment, AugMixAugment):
        raise ValueError("offline teacher maps cannot follow AugMix (it blends geometries); use RandAugment")
    else:
        raise ValueError(f"augment must be a timm RandAugment or AutoAugment, but got {type(augment).__name__}")
    wrapped = 0
    for op in ops:
        if op.name in GEOMETRIC_OPS and not isinstance(op.aug_fn, _Follow):
            op.aug_fn = _Follow(op.aug_fn, op.name, geometry)
            wrapped += 1
    return wrapped


class CropFlip(_Tracked):
    """Random resized crop then horizontal flip, PIL or tensor images; see the module docstring.

    Args:
        size: Output side in pixels.
        scale: Range of the crop's area as a fraction of the image (``RandomResizedCrop``).
        ratio: Range of the crop's aspect ratio.
        hflip: Probability of a horizontal flip.
        interpolation: ``bilinear`` or ``bicubic``.

    After each call ``last`` is ``(x0, y0, x1, y1, flipped)``: the crop box in ``[0, 1]`` image
    coordinates (x to the right, y down) and 1.0 if the output was mirrored, else 0.0. ``record``
    is ``last`` plus ``(a, b, c, d, e, f)``: the affine ``[[a, b, c], [d, e, f]]`` that maps output
    coordinates to crop coordinates (both in ``[-1, 1]``, ``align_corners=False``), composed from the
    ops that ``follow`` was told about since the crop (identity when none), then ``max_ops - 1``
    fill checks: for each op after the first, the affine of the ops from that one on.
    """


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
        self._begin()
        return out

    @property
    def record(self) -> tuple[float, ...]:
        """``last``, the composed affine and the fill checks (see the class docstring)."""
        suffix = self._suffixes(np.eye(3))
        return self._record(suffix[0], suffix[1:-1])

    def __repr__(self) -> str:
        return (
            f"CropFlip(size={self.size}, scale={self.scale}, ratio={self.ratio}, hflip={self.hflip}, "
            f"interpolation={self.interpolation.value})"
        )


class ReferenceGeometry(_Tracked):
    """The reference's order: flip, (RandAugment on the whole image), random resized crop.

    TokenLabeling's training transform (which TokenMix uses) flips the whole image and its label
    map, applies RandAugment to both, and only then cuts the random resized crop. ``flip_stage``
    and ``crop_stage`` are the two ends of that pipeline (RandAugment goes between them, its
    geometric ops reporting to this object through :func:`follow_augment_ops`); they draw their
    random numbers as the reference's transforms do (flip, then the crop's parameters on the
    augmented image).

    ``record`` has ``CropFlip``'s layout, so offline maps read either: the box is the whole image,
    not mirrored, and the affine takes output coordinates all the way to the source image (crop,
    ops, flip); the checks are the ops from the second one on, each followed by the crop.
    """

    def __init__(self, size: int, **kwargs: Any) -> None:
        super().__init__(size, **kwargs)
        self.flip_stage, self.crop_stage = _Stage(self, "flip"), _Stage(self, "crop")
        self._flipped = False
        self._crop = np.eye(3)
        self._begin()

    def flip(self, image: Any) -> Any:
        """First stage: mirror the whole image with probability ``hflip``; starts a new sample."""
        self._begin()
        self._crop = np.eye(3)
        self._flipped = self.hflip > 0 and float(torch.rand(1)) < self.hflip
        return F.horizontal_flip(image) if self._flipped else image

    def crop(self, image: Any) -> Any:
        """Last stage: the random resized crop of the (flipped, augmented) image."""
        height, width = F.get_size(image)
        top, left, h, w = RandomResizedCrop.get_params(image, list(self.scale), list(self.ratio))
        self._crop = _box(left / width, top / height, (left + w) / width, (top + h) / height)
        return F.resized_crop(
            image, top, left, h, w, [self.size, self.size], interpolation=self.interpolation, antialias=True
        )

    @property
    def record(self) -> tuple[float, ...]:
        """The whole-image box, no mirror, the composed affine and the fill checks."""
        suffix = self._suffixes(self._crop)
        mirror = np.diag([-1.0 if self._flipped else 1.0, 1.0, 1.0])
        return self._record(mirror @ suffix[0], suffix[1:-1])

    def __repr__(self) -> str:
        return (
            f"ReferenceGeometry(size={self.size}, scale={self.scale}, ratio={self.ratio}, hflip={self.hflip}, "
            f"interpolation={self.interpolation.value})"
        )


class _Stage:
    """One end of a :class:`ReferenceGeometry` as a transform step (picklable)."""

    def __init__(self, geometry: ReferenceGeometry, which: str) -> None:
        self.geometry, self.which = geometry, which

    def __call__(self, image: Any) -> Any:
        return getattr(self.geometry, self.which)(image)

    def __repr__(self) -> str:
        return f"{self.which} stage of {self.geometry!r}"
