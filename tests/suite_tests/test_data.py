"""Built-in data and ImageFolder loading, with per-sample seeds."""

from __future__ import annotations

from pathlib import Path

import torch

from suite.builtin_data import make_builtin_dataset
from suite.config import load_config
from suite.data import EpochSampler, build_data, eval_loader, train_loader


def test_builtin_dataset_is_deterministic_and_digits_cover_a_minority() -> None:
    a_train, a_val = make_builtin_dataset(train_size=64, val_size=32, seed=3)
    b_train, _ = make_builtin_dataset(train_size=64, val_size=32, seed=3)
    c_train, _ = make_builtin_dataset(train_size=64, val_size=32, seed=4)
    assert torch.equal(a_train.images, b_train.images) and torch.equal(a_train.labels, b_train.labels)
    assert not torch.equal(a_train.images, c_train.images)
    boxes = a_train.boxes.float()
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / 32**2
    assert area.max() < 0.5 and area.mean() < 0.4  # the labelled object is a minority of the image
    assert set(a_train.labels.tolist()) <= set(range(10))
    assert a_val.images.shape == (32, 3, 32, 32)


def test_resumed_epoch_sees_the_same_batches() -> None:
    cfg = load_config(None, ["data.train_size=96", "data.val_size=32", "data.batch_size=16"])
    bundle = build_data(cfg.data)
    full = list(train_loader(bundle, cfg.data, seed=0, epoch=2))
    tail = list(train_loader(bundle, cfg.data, seed=0, epoch=2, start_step=4))
    assert len(tail) == len(full) - 4
    for (xa, ya), (xb, yb) in zip(full[4:], tail):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other_epoch = next(iter(train_loader(bundle, cfg.data, seed=0, epoch=3)))
    assert not torch.equal(other_epoch[0], full[0][0])


def test_sampler_shards_disjointly_across_ranks() -> None:
    ranks = [[i for i, _ in EpochSampler(10, seed=1, epoch=0, shuffle=True, rank=r, world_size=2)] for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == list(range(10))


def test_imagefolder_tree_loads_with_timm_transforms(image_folder: Path) -> None:
    cfg = load_config(None, [f"data={image_folder}", "data.img_size=32", "data.batch_size=4", "data.workers=0"])
    bundle = build_data(cfg.data)
    assert bundle.classes == ["class_0", "class_1", "class_2"]
    x, y = next(iter(train_loader(bundle, cfg.data, seed=0, epoch=0)))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    xs = torch.cat([b[0] for b in eval_loader(bundle.val, cfg.data, 8)])
    assert xs.shape == (12, 3, 32, 32)
    again = torch.cat([b[0] for b in eval_loader(bundle.val, cfg.data, 8)])
    assert torch.equal(xs, again)  # evaluation is deterministic
