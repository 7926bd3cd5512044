"""RandAugment on image folders under the installed Pillow: every seeded sample loads."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from suite.config import load_config
from suite.data.loaders import build_data
from suite.run.seeds import derive_seed
from tests.helpers import make_image_folder


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("tiny"), classes=2, per_class=(8, 2), size=16)


def _posterize_op(transform: object) -> object:
    augment = next(t for t in transform.transforms if type(t).__name__ == "RandAugment")
    return next(op for op in augment.ops if op.name == "PosterizeIncreasing")


@pytest.mark.parametrize("geometry", [False, True], ids=["plain", "offline-maps"])
def test_paper_randaugment_loads_every_seeded_sample(tiny_folder: Path, geometry: bool) -> None:
    cfg = load_config(None, [f"data={tiny_folder}", "data.img_size=8", "data.workers=0"])
    assert cfg.data.rand_augment == "rand-m9-mstd0.5-inc1"  # the paper's policy, the folder default
    train = build_data(cfg.data, geometry=geometry).train
    # ~1 sample in 800 draws posterize at magnitude 10 (0 bits), which Pillow >= 11 refuses
    for position in range(3000):
        train[(position % len(train), derive_seed(0, "sample", 0, 0, position))]


def test_posterize_at_magnitude_10_keeps_no_bits(tiny_folder: Path) -> None:
    from PIL import Image, ImageOps

    cfg = load_config(None, [f"data={tiny_folder}", "data.img_size=8"])
    op = copy.copy(_posterize_op(build_data(cfg.data).train.transform))
    op.prob, op.magnitude_std = 1.0, 0.0
    image = Image.fromarray(np.random.default_rng(0).integers(1, 256, (8, 8, 3), dtype=np.uint8))
    op.magnitude = 10
    assert not np.asarray(op(image)).any()  # 0 bits kept: black, as timm 0.5.4 with older Pillow gave
    op.magnitude = 9  # 1 bit: Pillow's own posterize, unchanged
    assert np.array_equal(np.asarray(op(image)), np.asarray(ImageOps.posterize(image, 1)))
