"""Test helpers that build small real inputs (no mocks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_image_folder(root: Path, classes: int = 3, per_class: tuple[int, int] = (8, 4), size: int = 40) -> Path:
    """Write an ImageNet-style tree of PNGs: a coloured square per class on noise."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in zip(("train", "val"), per_class):
        for c in range(classes):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                img = rng.integers(0, 80, size=(size, size, 3), dtype=np.uint8)
                y, x = rng.integers(0, size - 12, 2)
                img[y : y + 12, x : x + 12, c] = 255
                Image.fromarray(img).save(folder / f"img_{i}.png")
    return root
