"""Building offline teacher maps (``suite maps build``, a sweep's maps step): one pass of the
teacher over the whole training set, written in durable chunks so a stopped, killed or requeued
build continues where it stopped. The maps are read back by :mod:`suite.teacher.offline`.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from suite.config import TrainConfig, file_sha256
from suite.models.weights import resolve_checkpoint_path
from suite.run.records import atomic_write_json, read_json
from suite.run.signals import GracefulStop
from suite.teacher.cam import class_logit_maps, class_rank
from suite.teacher.offline import (
    CHUNK_BATCHES,
    FORMAT,
    MAPS_FILE,
    META_FILE,
    PROGRESS_FILE,
    RANK_CAP,
    RANKS_FILE,
    training_set_fingerprint,
)

__all__ = ["MapsBuildStopped", "MapsCrop", "build_offline_maps"]

# How the teacher sees an image: squashed whole into the square, or TokenLabeling's centre crop.
MapsCrop = Literal["squash", "center"]


class MapsBuildStopped(Exception):
    """A stop signal ended a maps build at a chunk boundary; the maps finished so far are kept.

    Rerunning the build with the same inputs continues at the first unfinished chunk.
    """

    def __init__(self, out: Path, done: int, total: int, signum: int | None) -> None:
        try:
            name = "a stop request" if signum is None else signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        super().__init__(
            f"maps build stopped by {name} after {done} of {total} maps in {out}; "
            "rerun it with the same inputs to continue"
        )
        self.out, self.done, self.total, self.signum = out, done, total, signum


def build_offline_maps(
    cfg: TrainConfig,
    out: str | Path,
    *,
    img_size: int | None = None,
    batch_size: int = 128,
    crop: MapsCrop = "squash",
    device: torch.device | None = None,
    progress: Callable[[int, int], None] | None = None,
    stop: GracefulStop | None = None,
    chunk_batches: int = CHUNK_BATCHES,
) -> dict[str, Any]:
    """Run the configured teacher over the whole training set once and store its maps in ``out``.

    Idempotent: a complete directory built from the same teacher checkpoint, training set and
    ``img_size`` is left as it is. ``maps.json`` is written last.

    Resumable: the arrays are written in chunks of ``chunk_batches`` batches into memory-mapped
    files under temporary names (``.maps.npy.partial``, ``.ranks.npy.partial``). After each chunk
    they are flushed to disk and ``.progress.json`` (written atomically) records how many maps
    are done and for which inputs. A rerun with the same inputs (teacher checkpoint, training
    set, ``img_size``, ``batch_size``) continues at the first unfinished chunk, with the same
    batches, so the result is byte-identical to an uninterrupted build on the same device type; a
    rerun with other inputs starts over. At the end the arrays are renamed into place.

    A stop signal (SIGTERM, SIGUSR1, SIGINT; a second Ctrl-C stops at once) ends the build at the
    next chunk boundary with :class:`MapsBuildStopped`. ``stop`` is the caller's
    :class:`~suite.run.signals.GracefulStop` (a job's, listening to its own signals); without it the
    build installs one while it runs.

    Args:
        cfg: Run config naming the data (``data.*``) and the teacher (``teacher.checkpoint``).
        out: Output directory.
        img_size: Side of the square the teacher sees (default ``data.img_size``).
        batch_size: Teacher batch size.
        crop: ``squash`` resizes the whole image to ``img_size`` x ``img_size`` (the map covers
            all of it). ``center`` does what TokenLabeling's ``generate_label.py`` does for the
            reference (``--crop-pct 1.0``): resize the short side to ``img_size`` and keep the
            central square. Training reads either map as the map of the whole image, as the
            reference does; for a non-square image a ``center`` map so stretches its central
            square over the full image (the reference's behaviour, kept for reproduction).
        device: Default: CUDA if available, else CPU.
        progress: Called with ``(done, total)`` after every batch.
        stop: Checked after every chunk.
        chunk_batches: Batches per durably written chunk.

    Returns:
        The metadata written to ``maps.json``.

    Raises:
        MapsBuildStopped: a stop was requested; the chunks written so far are kept for the rerun.
    """
    if chunk_batches < 1:
        raise ValueError(f"chunk_batches must be at least 1, but got {chunk_batches}")
    if crop not in ("squash", "center"):
        raise ValueError(f"crop must be 'squash' or 'center', but got {crop!r}")
    if stop is not None:
        return _build(cfg, Path(out), img_size, batch_size, crop, device, progress, stop, chunk_batches)
    with GracefulStop() as own:
        return _build(cfg, Path(out), img_size, batch_size, crop, device, progress, own, chunk_batches)


def _metadata(cfg: TrainConfig, bundle: Any, size: int, crop: MapsCrop) -> dict[str, Any]:
    """What ``maps.json`` says of a build: its inputs (teacher, training set, size, crop) and format."""
    checkpoint = resolve_checkpoint_path(cfg.teacher.checkpoint)
    return {
        "format": FORMAT,
        "count": len(bundle.train),
        "num_classes": bundle.num_classes,
        "img_size": size,
        "crop": crop,
        "fingerprint": training_set_fingerprint(cfg.data, bundle.train),
        "teacher": {"model": cfg.teacher.model, "checkpoint": str(checkpoint), "sha256": file_sha256(checkpoint)},
        "data": {"source": cfg.data.source, "root": str(cfg.data.root) if cfg.data.root else None,
                 "train_size": cfg.data.train_size, "data_seed": cfg.data.data_seed},
    }


def _up_to_date(out: Path, meta: dict[str, Any]) -> dict[str, Any] | None:
    """The metadata of a complete directory built from the same inputs, else None."""
    existing = out / META_FILE
    if existing.is_file() and (out / MAPS_FILE).is_file() and (out / RANKS_FILE).is_file():
        old = json.loads(existing.read_text())
        same = all(old.get(k) == meta[k] for k in ("format", "fingerprint", "img_size", "teacher"))
        if same and old.get("crop", "squash") == meta["crop"]:  # maps.json before crop existed: squash
            return old
    return None


def _teacher_inputs(bundle: Any, size: int, crop: MapsCrop) -> Any:
    """The training images as the teacher sees them (``size`` x ``size``, normalised, unaugmented).

    ``squash``: the whole image resized to the square. ``center``: the short side resized to
    ``size``, then the central ``size`` x ``size`` square (TokenLabeling's eval transform at
    ``crop_pct=1.0``).
    """
    from torchvision.transforms import v2

    from suite.data.loaders import SeededDataset

    bicubic = v2.InterpolationMode.BICUBIC
    if crop == "center":
        geometry = [v2.Resize(size, interpolation=bicubic, antialias=True), v2.CenterCrop(size)]
    else:
        geometry = [v2.Resize((size, size), interpolation=bicubic, antialias=True)]
    whole = v2.Compose([
        v2.ToImage(),
        *geometry,
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(bundle.mean, bundle.std),
    ])
    return SeededDataset(bundle.train.source, whole)


class _Pass:
    """One teacher pass over the images from ``done`` on, writing each batch's maps and ranks."""

    def __init__(self, cfg: TrainConfig, bundle: Any, files: _BuildFiles, device: torch.device) -> None:
        from suite.teacher.online import load_teacher

        self.files, self.device = files, device
        self.teacher = load_teacher(cfg, num_classes=bundle.num_classes, device=device)

    def write(self, x: torch.Tensor, y: torch.Tensor, done: int, total: int, shape: tuple[int, ...] | None) -> tuple:
        """Store one batch at rows ``done...``; returns the map shape (known after the first batch)."""
        y = y.to(self.device)
        logits = class_logit_maps(self.teacher.model, x.to(self.device, non_blocking=True))
        cams = logits.gather(1, y.view(-1, 1, 1, 1).expand(-1, 1, *logits.shape[2:])).squeeze(1)
        if shape is None:
            shape = tuple(cams.shape[1:])
            self.files.create(total, shape)
        rows = slice(done, done + len(y))
        self.files.maps[rows] = cams.clamp(-6e4, 6e4).cpu().numpy().astype(np.float16)
        self.files.ranks[rows] = class_rank(logits, y).clamp_max(RANK_CAP).cpu().numpy().astype(np.uint8)
        return shape


def _build(
    cfg: TrainConfig,
    out: Path,
    img_size: int | None,
    batch_size: int,
    crop: MapsCrop,
    device: torch.device | None,
    progress: Callable[[int, int], None] | None,
    stop: GracefulStop,
    chunk_batches: int,
) -> dict[str, Any]:
    from suite.data.loaders import build_data, eval_loader

    if cfg.teacher.checkpoint is None:
        raise ValueError("teacher.checkpoint: building offline maps needs a teacher (teacher=runs/<id> or a file)")
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size = int(img_size or cfg.data.img_size)
    bundle = build_data(cfg.data)
    meta = _metadata(cfg, bundle, size, crop)
    if (old := _up_to_date(out, meta)) is not None:
        return old
    total = len(bundle.train)
    inputs = {k: meta[k] for k in ("format", "count", "num_classes", "img_size", "fingerprint", "teacher")}
    inputs.update(batch_size=batch_size, rank_cap=RANK_CAP)
    if crop != "squash":  # progress files of squash builds from before crop existed stay valid
        inputs["crop"] = crop
    out.mkdir(parents=True, exist_ok=True)
    (out / META_FILE).unlink(missing_ok=True)  # the directory is incomplete until maps.json is back
    files = _BuildFiles(out)
    done, shape = files.resume(inputs, total)
    if done < total:
        teacher_pass = _Pass(cfg, bundle, files, device)
        images = _teacher_inputs(bundle, size, crop)
        loader = eval_loader(images, cfg.data, batch_size, pin=device.type == "cuda", start=done)
        try:
            for batches, (x, y) in enumerate(loader, 1):
                shape = teacher_pass.write(x, y, done, total, shape)
                done += len(y)
                if progress is not None:
                    progress(done, total)
                if batches % chunk_batches == 0 or done == total:
                    files.commit(inputs, done, shape)
                    if stop.requested and done < total:
                        raise MapsBuildStopped(out, done, total, stop.signum)
        finally:
            images.close()
            bundle.close()
    assert shape is not None and done == total
    meta.update(map_size=list(shape), rank_cap=RANK_CAP)
    files.finish()
    atomic_write_json(out / META_FILE, meta)
    files.progress.unlink(missing_ok=True)
    return meta


class _BuildFiles:
    """The partial arrays of a maps build and its progress record (see ``build_offline_maps``)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.partial = {MAPS_FILE: out / f".{MAPS_FILE}.partial", RANKS_FILE: out / f".{RANKS_FILE}.partial"}
        self.progress = out / PROGRESS_FILE
        self.maps: np.ndarray | None = None
        self.ranks: np.ndarray | None = None

    def resume(self, inputs: dict[str, Any], total: int) -> tuple[int, tuple[int, ...] | None]:
        """Maps done and their shape from an earlier build of the same inputs, else ``(0, None)``
        after removing what another build left."""
        try:
            record = read_json(self.progress)
        except ValueError:  # not ours: written atomically, it is never torn
            record = None
        if record is not None and record.get("inputs") == json.loads(json.dumps(inputs, default=str)):
            done, shape = int(record["done"]), tuple(record["shape"])
            expected = (total, *shape)
            if all(p.is_file() for p in self.partial.values()):
                self.maps = np.load(self.partial[MAPS_FILE], mmap_mode="r+")
                self.ranks = np.load(self.partial[RANKS_FILE], mmap_mode="r+")
                if self.maps.shape == expected and self.ranks.shape == expected and 0 <= done <= total:
                    return done, shape
                self.maps = self.ranks = None
            elif done == total and all(_npy_shape(self.out / name) == expected for name in self.partial):
                return done, shape  # renamed into place, then stopped before maps.json
        for path in (*self.partial.values(), self.progress):
            path.unlink(missing_ok=True)
        return 0, None

    def create(self, total: int, shape: tuple[int, ...]) -> None:
        """Start both arrays (sparse files of their full size)."""
        full = (total, *shape)
        self.maps = np.lib.format.open_memmap(self.partial[MAPS_FILE], mode="w+", dtype=np.float16, shape=full)
        self.ranks = np.lib.format.open_memmap(self.partial[RANKS_FILE], mode="w+", dtype=np.uint8, shape=full)

    def commit(self, inputs: dict[str, Any], done: int, shape: tuple[int, ...]) -> None:
        """Make the first ``done`` maps durable, then record them."""
        for array in (self.maps, self.ranks):
            array.flush()  # msync: on disk before the record says so
        atomic_write_json(self.progress, {"inputs": inputs, "done": done, "shape": list(shape)})

    def finish(self) -> None:
        """Rename the complete arrays into place (ranks first; ``maps.json``, written after, marks
        the directory complete)."""
        self.maps = self.ranks = None  # close the memory maps
        for name in (RANKS_FILE, MAPS_FILE):
            if self.partial[name].is_file():
                os.replace(self.partial[name], self.out / name)


def _npy_shape(path: Path) -> tuple[int, ...] | None:
    if not path.is_file():
        return None
    return tuple(np.load(path, mmap_mode="r").shape)
