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
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from suite.config import DataConfig
from suite.device.hardware import cpu_share
from suite.run.seeds import derive_seed, seed_everything

if TYPE_CHECKING:
    from suite.data.geometry import CropFlip

__all__ = [
    "QUEUE_BYTES",
    "DataBundle",
    "EpochSampler",
    "SeededDataset",
    "SeededLoader",
    "Shard",
    "WorkerPool",
    "build_data",
    "eval_loader",
    "prefetch_batches",
    "train_loader",
]

BUILTIN_MEAN = (0.5, 0.5, 0.5)
BUILTIN_STD = (0.25, 0.25, 0.25)


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, sample_seed)`` for one epoch, from ``start`` on, for one rank."""

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
    ) -> None:
        self.size, self.seed, self.epoch, self.shuffle = size, seed, epoch, shuffle
        self.start, self.rank, self.world_size, self.stop = start, rank, world_size, stop

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        gen = torch.Generator().manual_seed(derive_seed(self.seed, "order", self.epoch))
        return torch.randperm(self.size, generator=gen).tolist()

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
        self, source: Any, transform: Any, geometry: CropFlip | None = None, *, pool: WorkerPool | None = None
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

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


@dataclass
class DataBundle:
    """What training needs from the data: datasets, classes and normalisation.

    Its two datasets share one :class:`WorkerPool`: training epochs and evaluations use the same
    loader workers.
    """

    train: SeededDataset
    val: SeededDataset
    classes: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

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
    cfg: DataConfig, mean: tuple, std: tuple, train: bool, geometry: CropFlip | None = None
) -> Any:
    from timm.data.random_erasing import RandomErasing
    from torchvision.transforms import v2

    steps: list[Any] = []
    if train and geometry is not None:
        steps.append(geometry)
    elif train:
        steps.append(v2.RandomResizedCrop(cfg.img_size, scale=tuple(cfg.scale), antialias=True))
        if cfg.hflip:
            steps.append(v2.RandomHorizontalFlip(cfg.hflip))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    if train and cfg.random_erasing:
        steps.append(RandomErasing(cfg.random_erasing, mode="pixel", device="cpu"))
    return v2.Compose(steps)


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


def _subset(dataset: Any, cap: int | None, seed: int) -> Any:
    if cap is None or cap >= len(dataset):
        return dataset
    gen = torch.Generator().manual_seed(derive_seed(seed, "subset"))
    return torch.utils.data.Subset(dataset, torch.randperm(len(dataset), generator=gen)[:cap].tolist())


def build_data(cfg: DataConfig, *, geometry: bool = False) -> DataBundle:
    """Build the train/val datasets for a data config (built-in or ImageFolder).

    With ``geometry`` the training items also say where their crop came from (see
    ``SeededDataset``); offline teacher maps need it.
    """
    from suite.data.augment import repair_augment_ops
    from suite.data.geometry import CropFlip

    if cfg.source == "builtin":
        train, val = _builtin(cfg.train_size, cfg.val_size, cfg.img_size, cfg.data_seed)
        from suite.data.builtin import BUILTIN_CLASSES

        mean, std = BUILTIN_MEAN, BUILTIN_STD
        crop = CropFlip(cfg.img_size, scale=tuple(cfg.scale), hflip=cfg.hflip) if geometry else None
        return DataBundle(
            train=SeededDataset(
                _TensorSource(train.images, train.labels), _tensor_transforms(cfg, mean, std, True, crop), crop
            ),
            val=SeededDataset(_TensorSource(val.images, val.labels), _tensor_transforms(cfg, mean, std, False)),
            classes=list(BUILTIN_CLASSES),
            mean=mean,
            std=std,
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
        crop = _track_geometry(train_tf, cfg) if geometry else None
        return DataBundle(
            train=SeededDataset(_subset(train_set, cfg.train_size, cfg.data_seed), train_tf, crop),
            val=SeededDataset(_subset(val_set, cfg.val_size, cfg.data_seed), val_tf),
            classes=list(train_set.classes),
            mean=mean,
            std=std,
        )
    raise ValueError(f"data.source must be one of builtin, folder, but got {cfg.source!r}")


def default_workers(cfg: DataConfig) -> int:
    """Workers for loading: none for in-memory data, else this process's CPU share minus one (≤ 8)."""
    if cfg.workers is not None:
        return cfg.workers
    return 0 if cfg.source == "builtin" else min(8, max(0, cpu_share() - 1))


# At most this many bytes of finished batches wait in one loader's queue (see prefetch_batches).
QUEUE_BYTES = 3 << 29  # 1.5 GiB


def batch_bytes(cfg: DataConfig, batch: int) -> int:
    """Bytes of one float32 batch of ``batch`` images of ``3 x img_size x img_size``."""
    return batch * 3 * cfg.img_size * cfg.img_size * 4


def prefetch_batches(workers: int, bytes_per_batch: int) -> int | None:
    """Batches each worker may queue ahead (``DataLoader``'s ``prefetch_factor``): 2, or 1 when 2
    would queue more than :data:`QUEUE_BYTES`; None without workers.

    The queue is ``workers x prefetch`` finished float32 batches of the pool's largest batch. The
    paper preset (10 CPUs per GPU, so 8 workers; per GPU 128 training images of 3 x 224 x 224, 77 MB
    a batch, and 256 / 8 = 32 evaluation images) queues at most 16 batches: 1.23 GB (1.15 GiB) per
    GPU, 9.9 GB per 8-GPU node. With 4 batches per worker it was 2.5 GB per GPU (3.1 GB with 10
    workers, 25 GB per node). Evaluation and training share the pool's workers and never queue at
    once. Where 2 per worker would pass the bound (one GPU evaluating 256 images at 224 px: 154 MB a
    batch) each worker queues 1.
    """
    if workers <= 0:
        return None
    return 2 if 2 * workers * bytes_per_batch <= QUEUE_BYTES else 1


def _leave_stops_to_the_main_process(worker_id: int) -> None:
    """Loader workers ignore the stop signals (Ctrl-C reaches the whole process group, SLURM's
    SIGTERM every process of the job): the main process stops at its next step or chunk boundary
    and ends its workers; a worker that died of the signal would fail the pass instead."""
    import signal

    from suite.run.signals import DEFAULT_STOP_SIGNALS

    for signum in DEFAULT_STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


class _Members(Dataset):
    """The datasets of one worker pool: ``members[(member, index, seed)]``."""

    def __init__(self, members: list[SeededDataset]) -> None:
        self.members = members

    def __len__(self) -> int:
        return sum(len(m) for m in self.members)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[Any, ...]:
        member, index, seed = key
        return self.members[member][(index, seed)]


class _Plan(Sampler[list[tuple[int, int, int]]]):
    """The pool's batch sampler: the batches of ``batches`` (one pass over member ``member``), set
    before each pass; the persistent workers get their indices from it."""

    def __init__(self) -> None:
        self.member = 0
        self.batches: BatchSampler | None = None

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        if self.batches is None:
            return iter(())
        member, batches = self.member, iter(self.batches)  # bound now, not when the first batch is asked for
        return ([(member, index, seed) for index, seed in batch] for batch in batches)

    def __len__(self) -> int:
        return 0 if self.batches is None else len(self.batches)


class WorkerPool:
    """One ``DataLoader`` with persistent workers serving the datasets of a bundle, one pass at a time.

    A :class:`SeededLoader` sets the pass (dataset, sampler, batch size) and iterates the pool's
    loader; the workers stay alive between passes, so epochs and evaluations do not start new
    processes. The loader is made at the first pass, for every dataset registered by then
    (:meth:`register`, which every ``SeededLoader`` does when it is made), and made again only when
    the worker count, pinning or the queue depth change, or a dataset registers or changes shape
    later. While a pass is running (``busy``), another pass gets a loader of its own.
    """

    def __init__(self) -> None:
        self.members: list[SeededDataset] = []
        self.busy = False
        self.largest_batch = 0  # bytes; decides the queue depth
        self._loader: DataLoader | None = None
        self._key: tuple[Any, ...] | None = None
        self._plan = _Plan()

    def register(self, dataset: SeededDataset, bytes_per_batch: int = 0) -> int:
        """The member number of ``dataset`` (added when new) and note its batch size."""
        self.largest_batch = max(self.largest_batch, bytes_per_batch)
        for number, member in enumerate(self.members):
            if member is dataset:
                return number
        self.members.append(dataset)
        return len(self.members) - 1

    def loader(self, workers: int, pin: bool) -> DataLoader:
        """The pool's loader for this pass, made (again) when what it was made for changed."""
        prefetch = prefetch_batches(workers, self.largest_batch)
        key = (workers, pin, prefetch, len(self.members), tuple(m.revision for m in self.members))
        if self._loader is None or key != self._key:
            self.close()
            self._loader = DataLoader(
                _Members(list(self.members)),
                batch_sampler=self._plan,
                num_workers=workers,
                pin_memory=pin,
                persistent_workers=workers > 0,
                prefetch_factor=prefetch,
                worker_init_fn=_leave_stops_to_the_main_process,
            )
            self._key = key
        return self._loader

    def plan(self, dataset: SeededDataset, batches: BatchSampler) -> None:
        """Make the next pass of the loader the ``batches`` of ``dataset``."""
        self._plan.member, self._plan.batches = self.register(dataset), batches

    def close(self) -> None:
        """Stop the workers; the next pass starts new ones."""
        iterator = None if self._loader is None else self._loader._iterator
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        self._loader, self._key = None, None


class SeededLoader:
    """The batches of one pass over a dataset (an epoch of one rank, or an evaluation).

    Iterable any number of times, each time from the same plan; what :func:`train_loader` and
    :func:`eval_loader` return. It iterates the dataset's :class:`WorkerPool`, so the workers
    survive from one pass to the next; when the pool is busy with another pass (two passes
    interleaved), it loads with a fresh ``DataLoader`` instead. The batches are the same either way.

    Attributes:
        shard: for evaluation under data parallelism, which share of the set this rank holds.
    """

    def __init__(
        self,
        dataset: SeededDataset,
        sampler: EpochSampler,
        batch_size: int,
        *,
        drop_last: bool,
        workers: int,
        pin: bool,
        bytes_per_batch: int,
    ) -> None:
        self.dataset, self.sampler, self.batch_size = dataset, sampler, batch_size
        self.drop_last, self.workers, self.pin = drop_last, workers, pin
        self.bytes_per_batch = bytes_per_batch
        self.shard: Shard | None = None
        if dataset.pool is None:
            dataset.pool = WorkerPool()
        dataset.pool.register(dataset, bytes_per_batch)

    def _batches(self) -> BatchSampler:
        return BatchSampler(self.sampler, self.batch_size, drop_last=self.drop_last)

    def __len__(self) -> int:
        return len(self._batches())

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        pool = self.dataset.pool
        if pool is None or pool.busy:
            yield from self._fresh()
            return
        pool.busy = True
        try:
            pool.plan(self.dataset, self._batches())
            yield from pool.loader(self.workers, self.pin)
        finally:
            pool.busy = False

    def _fresh(self) -> DataLoader:
        """A loader of its own for this pass (its workers end with it)."""
        return DataLoader(
            self.dataset,
            batch_sampler=self._batches(),
            num_workers=self.workers,
            pin_memory=self.pin,
            prefetch_factor=prefetch_batches(self.workers, self.bytes_per_batch),
            worker_init_fn=_leave_stops_to_the_main_process,
        )


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
) -> SeededLoader:
    """Shuffled, augmented batches of one epoch, starting at ``start_step`` (for resume).

    ``cfg.batch_size`` is the global batch: each of ``world_size`` ranks loads
    ``batch_size / world_size`` images per step, and all ranks yield exactly
    :func:`steps_per_epoch` batches (the union of their batches of a step is the single-process batch).
    Call it every epoch: the loaders of a bundle share its workers (see :class:`WorkerPool`).
    """
    per_rank = cfg.batch_size // world_size
    steps = steps_per_epoch(bundle, cfg)
    sampler = EpochSampler(
        len(bundle.train), seed=seed, epoch=epoch, shuffle=True, start=start_step * per_rank,
        rank=rank, world_size=world_size, stop=steps * per_rank,
    )
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
