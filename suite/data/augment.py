"""timm's PIL augmentations made total under the installed Pillow.

timm 1.0's posterize ops hand Pillow 0 bits at one end of their range: ``PosterizeIncreasing``
(the paper's ``rand-m9-mstd0.5-inc1``) at magnitude 10, which ``mstd0.5`` draws for roughly one
image in a thousand, and ``Posterize`` (AutoAugment's v0 policies) below magnitude 2.5. Pillow 13
(installed) refuses 0 bits (``ValueError: bits must be between or equal to 1 and 8``) where older
Pillow kept no bits and returned a black image. Every sample's augmentation is seeded, so a run
on an image folder failed at the same image on every relaunch.

:func:`posterize` keeps the old result: 0 bits keep no bits, a black image. That is what the
reference (timm 0.5.4 with the Pillow of its time) trained with, what the op's own definition
says ("keep 4 down to 0 MSB"), and the strongest point of an op whose severity increases with the
magnitude. Raising the lower bound to 1 bit instead would change the augmentation distribution
silently; skipping the op would change which random draws follow. 1 to 8 bits are Pillow's own
posterize, unchanged.
"""

from __future__ import annotations

from typing import Any

__all__ = ["POSTERIZE_OPS", "posterize", "repair_augment_ops"]

POSTERIZE_OPS = ("Posterize", "PosterizeIncreasing", "PosterizeOriginal")


def posterize(img: Any, bits_to_keep: int, **_: Any) -> Any:
    """timm's posterize op with 0 (or fewer) bits giving black, as older Pillow did."""
    from PIL import ImageOps

    bits = int(bits_to_keep)
    if bits >= 8:
        return img
    if bits <= 0:  # the mask ~(2**8 - 1) clears every bit of every channel
        return img.point([0] * (256 * len(img.getbands())))
    return ImageOps.posterize(img, bits)


def _augment_ops(transform: Any) -> list[Any]:
    """The timm ``AugmentOp``s inside a transform (Compose, RandAugment, AutoAugment, AugMix)."""
    from timm.data.auto_augment import AugMixAugment, AutoAugment, RandAugment

    if isinstance(transform, (RandAugment, AugMixAugment)):
        return list(transform.ops)
    if isinstance(transform, AutoAugment):
        return [op for sub in transform.policy for op in sub]
    steps = getattr(transform, "transforms", None)
    if isinstance(steps, (list, tuple)):
        return [op for step in steps for op in _augment_ops(step)]
    return []


def repair_augment_ops(transform: Any) -> int:
    """Give the posterize ops inside ``transform`` :func:`posterize`, in place; returns how many.

    Works on a whole ``Compose`` from ``timm.data.create_transform`` or on one augmentation. The
    geometric ops that ``suite.data.geometry.follow_augment_ops`` wraps are left alone, so the two
    compose in either order.
    """
    repaired = 0
    for op in _augment_ops(transform):
        if op.name in POSTERIZE_OPS and op.aug_fn is not posterize:
            op.aug_fn = posterize
            repaired += 1
    return repaired
