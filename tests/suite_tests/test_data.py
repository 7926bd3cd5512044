"""Built-in data and ImageFolder loading, with per-sample seeds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader

from suite.data.builtin import make_builtin_dataset
from suite.config import load_config
from suite.data.loaders import EpochSampler, build_data, eval_loader, train_loader


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


def test_repeated_augmentation_shows_each_drawn_image_three_times_on_different_ranks() -> None:
    from collections import Counter

    ranks = [
        list(EpochSampler(12, seed=1, epoch=0, shuffle=True, rank=r, world_size=2, repeats=3)) for r in (0, 1)
    ]
    indices = [i for rank in ranks for i, _ in rank]
    assert len(indices) == 12  # the epoch keeps its length
    assert sorted(Counter(indices).values()) == [3, 3, 3, 3]  # 4 distinct images, each 3 times
    for index in set(indices):  # the copies of an image go to both ranks, each with its own seed
        where = [r for r in (0, 1) for i, _ in ranks[r] if i == index]
        seeds = [s for rank in ranks for i, s in rank if i == index]
        assert set(where) == {0, 1} and len(set(seeds)) == 3
    plain = [[i for i, _ in EpochSampler(12, seed=1, epoch=0, shuffle=True, rank=r, world_size=2)] for r in (0, 1)]
    assert sorted(plain[0] + plain[1]) == list(range(12))  # repeats=1: the usual permutation
    with pytest.raises(ValueError, match="repeats"):
        EpochSampler(12, seed=1, epoch=0, shuffle=True, repeats=0)


def test_repeated_augmentation_reaches_the_training_loader() -> None:
    cfg = load_config(None, ["data.train_size=64", "data.batch_size=16", "data.workers=0", "data.repeated_aug=2"])
    bundle = build_data(cfg.data)
    labels = [y for _, y in train_loader(bundle, cfg.data, seed=0, epoch=0)]
    indices = list(train_loader(bundle, cfg.data, seed=0, epoch=0).sampler)
    assert len(labels) == 4 and len(indices) == 64
    assert all(indices[k][0] == indices[k + 1][0] for k in range(0, 64, 2))  # pairs of the same image


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


class _WorkerPids:
    """A source whose label is the id of the process that loaded the image."""

    def __init__(self, source: object) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[object, int]:
        return self.source[index][0], os.getpid()


def test_loader_workers_survive_epochs_and_evaluations() -> None:
    cfg = load_config(None, ["data.train_size=64", "data.val_size=32", "data.batch_size=16", "data.workers=2"])
    bundle = build_data(cfg.data)
    bundle.train.source, bundle.val.source = _WorkerPids(bundle.train.source), _WorkerPids(bundle.val.source)
    val = eval_loader(bundle.val, cfg.data, 16)
    seen = []
    for epoch in range(2):
        seen.append({int(p) for _, pids in train_loader(bundle, cfg.data, seed=0, epoch=epoch) for p in pids})
        seen.append({int(p) for _, pids in val for p in pids})
    bundle.close()
    assert len(seen[0]) == 2 and os.getpid() not in seen[0]  # two worker processes loaded the data
    assert all(pids == seen[0] for pids in seen)  # the same two, both epochs and both evaluations


def _fresh_batches(dataset: object, seed: int, epoch: int, start_step: int, batch: int) -> list[list[torch.Tensor]]:
    """One epoch from a loader of its own, as every epoch was loaded before workers persisted."""
    sampler = EpochSampler(len(dataset), seed=seed, epoch=epoch, shuffle=True, start=start_step * batch,
                           stop=len(dataset) // batch * batch)
    loader = DataLoader(dataset, batch_sampler=BatchSampler(sampler, batch, drop_last=True), num_workers=0)
    return [list(b) for b in loader]


def _assert_same(got: list, expected: list) -> None:
    assert len(got) == len(expected) > 0
    for a, b in zip(got, expected):
        assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_persistent_workers_give_the_batches_of_fresh_loaders(image_folder: Path) -> None:
    # RandAugment, random erasing and crop geometry: every random draw must come from the sample seed
    cfg = load_config(None, [f"data={image_folder}", "data.img_size=16", "data.batch_size=4", "data.workers=2"])
    bundle = build_data(cfg.data, geometry=True)
    passes = [(0, 0), (1, 0), (1, 3), (0, 5)]  # (epoch, start_step): two epochs, then resumed ones
    for epoch, start in passes:
        got = [list(b) for b in train_loader(bundle, cfg.data, seed=7, epoch=epoch, start_step=start)]
        _assert_same(got, _fresh_batches(bundle.train, 7, epoch, start, 4))
    # a pass left after two batches (a stop signal) does not leak into the next one
    partial = iter(train_loader(bundle, cfg.data, seed=7, epoch=2))
    next(partial), next(partial)
    del partial
    _assert_same([list(b) for b in train_loader(bundle, cfg.data, seed=7, epoch=2, start_step=2)],
                 _fresh_batches(bundle.train, 7, 2, 2, 4))
    # two passes at once: the second one loads on its own, still the same batches
    a, b = train_loader(bundle, cfg.data, seed=7, epoch=3), train_loader(bundle, cfg.data, seed=7, epoch=4)
    pairs = [(list(x), list(y)) for x, y in zip(a, b)]
    _assert_same([x for x, _ in pairs], _fresh_batches(bundle.train, 7, 3, 0, 4))
    _assert_same([y for _, y in pairs], _fresh_batches(bundle.train, 7, 4, 0, 4))
    bundle.close()
