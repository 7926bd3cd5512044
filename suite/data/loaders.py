"""Datasets, transforms and loaders with per-sample seeds.

Every random draw of data loading is seeded from ``(seed, epoch, position in the epoch)``
(:func:`derive_seed`): the sampler yields ``(index, sample_seed)`` pairs and the dataset
seeds ``random``/``numpy``/``torch`` from that seed before the transform runs. The order
and the augmentation of a sample therefore depend neither on the worker that loads it nor
on where a run was interrupted: a run resumed mid-epoch sees exactly the batches an
uninterrupted run would. The sampler also shards by rank, ready for data parallelism.

Loader workers live as long as the data: the datasets of a :class:`DataBundle` share one
:class:`WorkerPool`, a ``DataLoader`` with persistent workers whose batch plan (which epoch, from
which step, which split) is set before each pass. Training epochs and evaluations reuse the same
worker processes instead of starting new ones; since every sample is seeded from its position,
the batches are exactly those of a fresh loader. Each worker queues at most two batches, fewer
when that would exceed :data:`QUEUE_BYTES` (see :func:`prefetch_batches`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from suite.config import DataConfig
from suite.data.workers import SeededLoader, WorkerPool, batch_bytes, default_workers
from suite.run.seeds import derive_seed, seed_everything

if TYPE_CHECKING:
    from suite.data.batched import BatchedCropFlip, InMemoryBatches
    from suite.data.geometry import CropFlip, ReferenceGeometry

__all__ = [
    "DataBundle",
    "EpochSampler",
    "SeededDataset",
    "Shard",
    "build_data",
    "eval_loader",
    "eval_subset",
    "train_loader",
]

BUILTIN_MEAN = (0.5, 0.5, 0.5)
BUILTIN_STD = (0.25, 0.25, 0.25)


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, sample_seed)`` for one epoch, from ``start`` on, for one rank.

    ``repeats`` > 1 is DeiT's repeated augmentation (its ``RASampler``): the epoch's shuffled order
    lists each image ``repeats`` times in a row, and the epoch keeps its length, so it sees about
    ``size / repeats`` distinct images, each ``repeats`` times with its own augmentation (the seed
    follows the position). Consecutive positions go to consecutive ranks, so with several
    processes the copies of an image land on different ones, as in DeiT.
    """

    def __init__(
        self,
        size: int,
        *,
        seed: int,
        epoch: int,
        shuffle: bool,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
        stop: int | None = None,
        repeats: int = 1,
    ) -> None:
        if repeats < 1:
            raise ValueError(f"repeats must be at least 1, but got {repeats}")
        self.size, self.seed, self.epoch, self.shuffle = size, seed, epoch, shuffle
        self.start, self.rank, self.world_size, self.stop = start, rank, world_size, stop
        self.repeats = repeats

    def _order(self) -> list[int]:
        if not self.shuffle:
            order = list(range(self.size))
        else:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, "order", self.epoch))
            order = torch.randperm(self.size, generator=gen).tolist()
        if self.repeats == 1:
            return order
        return [index for index in order for _ in range(self.repeats)][: self.size]

    def _end(self) -> int:
        count = len(range(self.rank, self.size, self.world_size))
        return count if self.stop is None else min(count, self.stop)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self._order()[self.rank :: self.world_size]
        for pos in range(self.start, self._end()):
            # The seed follows the global position (the 0 keeps single-process seeds as they were),
            # so a sample is augmented alike whatever the world size.
            where = self.rank + self.world_size * pos
            yield order[pos], derive_seed(self.seed, "sample", self.epoch, 0, where)

    def __len__(self) -> int:
        return max(0, self._end() - self.start)


class SeededDataset(Dataset):
    """Wraps ``(image, label)`` sources; ``dataset[(index, seed)]`` seeds, then transforms.

    With ``geometry`` (the ``CropFlip`` inside ``transform``) an item is ``(image, label, where)``:
    ``where`` is float64 ``[index, x0, y0, x1, y1, flipped, a, b, c, d, e, f]``, the sample's
    index, where its crop came from, and the affine of the geometric RandAugment ops the crop then
    underwent (``CropFlip.record``), for offline teacher maps. With ``extra_rows`` set
    (:meth:`extend_geometry`), ``where`` goes on with ``extra_rows(index)``: offline maps read the
    sample's stored map there, in the loader workers, so it arrives with the batch.

    ``pool`` is the :class:`WorkerPool` its loaders draw from (shared by a bundle's datasets; a
    dataset made on its own gets one at its first loader). It stays in this process: the copy a
    spawned worker gets has none.
    """

    def __init__(
        self,
        source: Any,
        transform: Any,
        geometry: CropFlip | ReferenceGeometry | None = None,
        *,
        pool: WorkerPool | None = None,
    ) -> None:
        self.source, self.transform, self.geometry = source, transform, geometry
        self.extra_rows: Callable[[int], np.ndarray] | None = None
        self.revision = 0  # bumped when items change shape: a pool started before must restart
        self.pool = pool

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int] | int) -> tuple[Any, ...]:
        index, seed = key if isinstance(key, tuple) else (key, 0)
        image, label = self.source[index]
        seed_everything(seed)
        out = self.transform(image)
        if self.geometry is None:
            return out, int(label)
        where = torch.tensor([index, *self.geometry.record], dtype=torch.float64)
        if self.extra_rows is not None:
            where = torch.cat([where, torch.as_tensor(self.extra_rows(index), dtype=torch.float64).reshape(-1)])
        return out, int(label), where

    def extend_geometry(self, rows: Callable[[int], np.ndarray] | None) -> None:
        """Append ``rows(index)`` (a picklable callable) to every item's ``where``; None removes it."""
        if self.geometry is None:
            raise ValueError("extend_geometry needs a dataset built with geometry=True")
        self.extra_rows = rows
        self.revision += 1

    def close(self) -> None:
        """Stop the loader workers of this dataset's pool (they also stop when it is collected)."""
        if self.pool is not None:
            self.pool.close()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "pool": None}  # the pool's loader and workers stay in this process


class _TensorSource:
    """In-memory uint8 images (the built-in data)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels
        self._on: tuple[torch.device, torch.Tensor, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels on ``device``, copied there once (18 MB for the built-in data)."""
        device = torch.device(device)
        if self._on is None or self._on[0] != device:
            self._on = (device, self.images.to(device), self.labels.to(device))
        return self._on[1], self._on[2]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_on": None}  # a worker process gets the host copy only

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


@dataclass
class DataBundle:
    """What training needs from the data: datasets, classes and normalisation.

    Its two datasets share one :class:`WorkerPool`: training epochs and evaluations use the same
    loader workers. ``batched`` is set for in-memory training images that can be augmented a
    whole batch at a time on the device (:mod:`suite.data.batched`).
    """

    train: SeededDataset
    val: SeededDataset
    classes: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    batched: BatchedCropFlip | None = None

    def __post_init__(self) -> None:
        pool = self.train.pool or self.val.pool or WorkerPool()
        for dataset in (self.train, self.val):
            dataset.pool = pool
            pool.register(dataset)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def close(self) -> None:
        """Stop the loader workers (idle workers otherwise live until the bundle is collected)."""
        self.train.close()
        self.val.close()


@lru_cache(maxsize=4)
def _builtin(train_size: int, val_size: int, img_size: int, seed: int) -> tuple[Any, Any]:
    from suite.data.builtin import make_builtin_dataset

    return make_builtin_dataset(train_size=train_size, val_size=val_size, img_size=img_size, seed=seed)


def _tensor_transforms(
    cfg: DataConfig, mean: tuple, std: tuple, train: bool, geometry: CropFlip | ReferenceGeometry | None = None
) -> Any:
    from timm.data.random_erasing import RandomErasing
    from torchvision.transforms import v2

    from suite.data.geometry import ReferenceGeometry

    steps: list[Any] = []
    if train and isinstance(geometry, ReferenceGeometry):
        steps += [geometry.flip_stage, geometry.crop_stage]
    elif train and geometry is not None:
        steps.append(geometry)
    elif train:
        steps.append(v2.RandomResizedCrop(cfg.img_size, scale=tuple(cfg.scale), antialias=True))
        if cfg.hflip:
            steps.append(v2.RandomHorizontalFlip(cfg.hflip))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    if train and cfg.random_erasing:
        steps.append(RandomErasing(cfg.random_erasing, mode="pixel", device="cpu"))
    return v2.Compose(steps)


def _reference_order(transform: Any, cfg: DataConfig, *, track: bool) -> ReferenceGeometry:
    """Reorder timm's training ``transform`` in place to the reference's: flip, RandAugment, crop.

    timm's ``create_transform`` gives crop, flip, RandAugment, then tensor steps; the reference
    (TokenLabeling's label transform) flips and augments the whole image before it crops. With
    ``track`` the geometric ops of the RandAugment report their affine to the returned geometry.
    """
    from timm.data.auto_augment import AugMixAugment, AutoAugment, RandAugment
    from timm.data.transforms import RandomResizedCropAndInterpolation
    from torchvision.transforms import RandomHorizontalFlip

    from suite.data.geometry import ReferenceGeometry, follow_augment_ops

    steps = transform.transforms
    if not isinstance(steps[0], RandomResizedCropAndInterpolation):
        raise ValueError(f"data.aug_order=reference needs a random resized crop first, but the transform is {transform}")
    crop = steps[0]
    geometry = ReferenceGeometry(
        cfg.img_size, scale=crop.scale, ratio=crop.ratio, hflip=cfg.hflip or 0.0, interpolation="bicubic"
    )
    rest = [step for step in steps[1:] if not isinstance(step, RandomHorizontalFlip)]
    augments = [step for step in rest if isinstance(step, (RandAugment, AutoAugment, AugMixAugment))]
    tensor_steps = [step for step in rest if step not in augments]
    steps[:] = [geometry.flip_stage, *augments, geometry.crop_stage, *tensor_steps]
    if track:
        for step in augments:
            follow_augment_ops(step, geometry)
    return geometry


def _track_geometry(transform: Any, cfg: DataConfig) -> CropFlip:
    """Swap timm's crop + flip at the head of ``transform`` for a ``CropFlip``, in place, and make
    the geometric ops of its RandAugment report their affine to it."""
    from timm.data.auto_augment import AugMixAugment, AutoAugment, RandAugment
    from timm.data.transforms import RandomResizedCropAndInterpolation
    from torchvision.transforms import RandomHorizontalFlip

    from suite.data.geometry import CropFlip, follow_augment_ops

    steps = transform.transforms
    if not isinstance(steps[0], RandomResizedCropAndInterpolation):
        raise ValueError(f"offline teacher maps need a random resized crop first, but the transform is {transform}")
    crop = steps[0]
    geometry = CropFlip(cfg.img_size, scale=crop.scale, ratio=crop.ratio, hflip=cfg.hflip, interpolation="bicubic")
    flips = 1 if cfg.hflip and len(steps) > 1 and isinstance(steps[1], RandomHorizontalFlip) else 0
    steps[: 1 + flips] = [geometry]
    for step in steps[1:]:
        if isinstance(step, (RandAugment, AutoAugment, AugMixAugment)):
            follow_augment_ops(step, geometry)
    return geometry


def _pil_rgb(path: str) -> Any:
    from PIL import Image

    with open(path, "rb") as handle:
        return Image.open(handle).convert("RGB")


def _subset(dataset: Any, cap: int | None, seed: int, tag: str = "subset") -> Any:
    """A seeded random ``cap`` of ``dataset`` (not its first images: an ImageFolder is sorted by class)."""
    if cap is None or cap >= len(dataset):
        return dataset
    gen = torch.Generator().manual_seed(derive_seed(seed, tag))
    return torch.utils.data.Subset(dataset, torch.randperm(len(dataset), generator=gen)[:cap].tolist())


def eval_subset(dataset: SeededDataset, size: int, seed: int) -> SeededDataset:
    """``eval.subset``: the same seeded random ``size`` images of an evaluation set at every call,
    drawn from all its classes, sharing the set's loader workers."""
    return SeededDataset(_subset(dataset.source, size, seed, "eval-subset"), dataset.transform, pool=dataset.pool)


def build_data(cfg: DataConfig, *, geometry: bool = False) -> DataBundle:
    """Build the train/val datasets for a data config (built-in or ImageFolder).

    With ``geometry`` the training items also say where their crop came from (see
    ``SeededDataset``); offline teacher maps need it.
    """
    from suite.data.augment import repair_augment_ops
    from suite.data.geometry import CropFlip, ReferenceGeometry

    if cfg.source == "builtin":
        train, val = _builtin(cfg.train_size, cfg.val_size, cfg.img_size, cfg.data_seed)
        from suite.data.builtin import BUILTIN_CLASSES

        mean, std = BUILTIN_MEAN, BUILTIN_STD
        crop: CropFlip | ReferenceGeometry | None = None
        if cfg.aug_order == "reference":  # flip, then crop (the built-in data has no RandAugment)
            crop = ReferenceGeometry(cfg.img_size, scale=tuple(cfg.scale), hflip=cfg.hflip or 0.0)
        elif geometry:
            crop = CropFlip(cfg.img_size, scale=tuple(cfg.scale), hflip=cfg.hflip)
        batched = None
        if crop is None and not cfg.random_erasing:  # the crop and flip, a batch at a time
            from suite.data.batched import BatchedCropFlip

            batched = BatchedCropFlip(cfg.img_size, scale=tuple(cfg.scale), hflip=cfg.hflip or 0.0, mean=mean, std=std)
        return DataBundle(
            train=SeededDataset(
                _TensorSource(train.images, train.labels),
                _tensor_transforms(cfg, mean, std, True, crop),
                crop if geometry else None,
            ),
            val=SeededDataset(_TensorSource(val.images, val.labels), _tensor_transforms(cfg, mean, std, False)),
            classes=list(BUILTIN_CLASSES),
            mean=mean,
            std=std,
            batched=batched,
        )
    if cfg.source == "folder":
        from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
        from torchvision.datasets import ImageFolder

        root = Path(cfg.root)
        train_set = ImageFolder(str(root / "train"), loader=_pil_rgb)
        val_set = ImageFolder(str(root / "val"), loader=_pil_rgb)
        if train_set.classes != val_set.classes:
            raise ValueError(f"data.root: train/ and val/ of {root} have different class folders")
        mean, std = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
        train_tf = create_transform(
            cfg.img_size,
            is_training=True,
            scale=tuple(cfg.scale),
            hflip=cfg.hflip,
            auto_augment=cfg.rand_augment,
            re_prob=cfg.random_erasing,
            re_mode="pixel",
            interpolation="bicubic",
            mean=mean,
            std=std,
        )
        repair_augment_ops(train_tf)  # posterize to 0 bits: black, as before Pillow 11 (suite.data.augment)
        val_tf = create_transform(cfg.img_size, is_training=False, interpolation="bicubic", mean=mean, std=std)
        if cfg.aug_order == "reference":
            tracked: CropFlip | ReferenceGeometry | None = _reference_order(train_tf, cfg, track=geometry)
        else:
            tracked = _track_geometry(train_tf, cfg) if geometry else None
        return DataBundle(
            train=SeededDataset(
                _subset(train_set, cfg.train_size, cfg.data_seed), train_tf, tracked if geometry else None
            ),
            val=SeededDataset(_subset(val_set, cfg.val_size, cfg.data_seed), val_tf),
            classes=list(train_set.classes),
            mean=mean,
            std=std,
        )
    raise ValueError(f"data.source must be one of builtin, folder, but got {cfg.source!r}")


def _loader(
    dataset: SeededDataset, sampler: EpochSampler, batch: int, drop_last: bool, cfg: DataConfig, pin: bool
) -> SeededLoader:
    return SeededLoader(
        dataset, sampler, batch, drop_last=drop_last, workers=default_workers(cfg), pin=pin,
        bytes_per_batch=batch_bytes(cfg, batch),
    )


def train_loader(
    bundle: DataBundle,
    cfg: DataConfig,
    *,
    seed: int,
    epoch: int,
    start_step: int = 0,
    pin: bool = False,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | str = "cpu",
) -> SeededLoader | InMemoryBatches:
    """Shuffled, augmented batches of one epoch, starting at ``start_step`` (for resume).

    ``cfg.batch_size`` is the global batch: each of ``world_size`` ranks loads
    ``batch_size / world_size`` images per step, and all ranks yield exactly
    :func:`steps_per_epoch` batches (the union of their batches of a step is the single-process batch).
    Call it every epoch: the loaders of a bundle share its workers (see :class:`WorkerPool`).
    In-memory data without loader workers is augmented a batch at a time on ``device``
    (:class:`~suite.data.batched.InMemoryBatches`; the batches then arrive there), with the same
    samples and per-sample seeds.
    """
    per_rank = cfg.batch_size // world_size
    steps = steps_per_epoch(bundle, cfg)
    sampler = EpochSampler(
        len(bundle.train), seed=seed, epoch=epoch, shuffle=True, start=start_step * per_rank,
        rank=rank, world_size=world_size, stop=steps * per_rank, repeats=cfg.repeated_aug,
    )
    source = bundle.train.source
    if bundle.batched is not None and isinstance(source, _TensorSource) and default_workers(cfg) == 0:
        from suite.data.batched import InMemoryBatches

        images, labels = source.on(torch.device(device))
        return InMemoryBatches(images, labels, sampler, per_rank, bundle.batched, torch.device(device))
    return _loader(bundle.train, sampler, per_rank, True, cfg, pin)


def steps_per_epoch(bundle: DataBundle, cfg: DataConfig) -> int:
    """Optimiser steps per epoch (the last partial global batch is dropped), the same on every rank."""
    steps = len(bundle.train) // cfg.batch_size
    if steps == 0:
        raise ValueError(
            f"data.batch_size={cfg.batch_size} is larger than the training set ({len(bundle.train)} images)"
        )
    return steps


@dataclass(frozen=True)
class Shard:
    """Which share of an evaluation set a loader holds: positions ``rank, rank + world, ...``.

    ``batch`` is the global evaluation batch (the per-rank batch times ``world``) and ``size``
    the whole set's length: together they say which rows of a global batch's occlusion masks
    belong to this rank.
    """

    rank: int
    world: int
    batch: int
    size: int

    def global_batch(self, index: int) -> int:
        """Images in global evaluation batch ``index``."""
        return min(self.batch, self.size - index * self.batch)


def eval_loader(
    dataset: SeededDataset,
    cfg: DataConfig,
    batch_size: int,
    *,
    pin: bool = False,
    rank: int = 0,
    world_size: int = 1,
    start: int = 0,
) -> SeededLoader:
    """Deterministic evaluation batches (no shuffling, no augmentation).

    With several ranks each holds positions ``rank, rank + world_size, ...`` without padding (every
    image is evaluated exactly once over all ranks), in batches of ``batch_size // world_size``;
    the loader's ``shard`` tells :func:`suite.train.evaluate.evaluate` to all-reduce its sums. Iterate the
    same loader for every evaluation: its workers stay alive between passes. ``start`` skips this
    rank's first positions (a maps build continuing where it stopped).
    """
    per_rank = max(1, batch_size // world_size)
    sampler = EpochSampler(
        len(dataset), seed=0, epoch=0, shuffle=False, start=start, rank=rank, world_size=world_size
    )
    loader = _loader(dataset, sampler, per_rank, False, cfg, pin)
    loader.shard = Shard(rank, world_size, per_rank * world_size, len(dataset)) if world_size > 1 else None
    return loader
