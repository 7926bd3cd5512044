"""Loader workers that live as long as the run: one pool per data bundle, shared by training and
evaluation, told before each pass which dataset, epoch and start step to load.

Every sample is seeded from its (seed, epoch, position), so a persistent worker yields exactly the
batches a fresh loader would: resume stays exact. Each worker queues at most 2 batches, 1 when 2
would pass :data:`QUEUE_BYTES` (host memory per GPU at ImageNet scale).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from suite.config import DataConfig
from suite.device.hardware import cpu_share


__all__ = ["QUEUE_BYTES", "SeededLoader", "WorkerPool", "batch_bytes", "default_workers", "prefetch_batches"]


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

    from suite.run.signals import DEFAULT_STOP_SIGNALS

    for signum in DEFAULT_STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


class _Members(Dataset):
    """The datasets of one worker pool: ``members[(member, index, seed)]``."""

    def __init__(self, members: list[Dataset]) -> None:
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
        self.members: list[Dataset] = []
        self.busy = False
        self.largest_batch = 0  # bytes; decides the queue depth
        self._loader: DataLoader | None = None
        self._key: tuple[Any, ...] | None = None
        self._plan = _Plan()

    def register(self, dataset: Dataset, bytes_per_batch: int = 0) -> int:
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

    def plan(self, dataset: Dataset, batches: BatchSampler) -> None:
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
        dataset: Dataset,
        sampler: Sampler,
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
        self.shard: Any = None  # suite.data.loaders.Shard, set by eval_loader
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
