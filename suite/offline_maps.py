"""Offline teacher maps: computed once per training set, cut to each crop at training time.

The online teacher (``suite.cam.Teacher``) costs one teacher forward per mixed step, which is
fine for a ResNet-class teacher and out of reach for the reference's NFNet-F6 at 576 px. Offline
maps move that cost to one pass over the training set:

1. ``suite maps build teacher=<run dir or checkpoint> ... --out DIR`` resizes every *whole*
   training image to ``img_size`` x ``img_size`` (no crop, so the map covers the full image), runs
   the teacher and stores the ground-truth class's raw activation map at the teacher's own
   resolution (``DIR/maps.npy``, float16 ``(N, h, w)``) and what it was built from
   (``DIR/maps.json``: teacher, checkpoint hash, training-set fingerprint; written last, so a
   directory with ``maps.json`` is complete).
2. A run with ``teacher.maps=DIR`` loads the array memory-mapped. Its training items carry the crop
   box and flip of their augmentation (``suite.geometry.CropFlip``). Each step gathers the
   batch's maps, cuts every map to its sample's box and mirrors it where the image was mirrored.
   This is one ``affine_grid`` / ``grid_sample`` call for the batch, on the training device,
   sampled 4x finer than the token grid and average-pooled. The result is normalised like the
   online maps.

Differences from the online teacher: the map is computed on the unaugmented whole image; later
geometric augmentations (RandAugment's rotate, shear, translate) are not followed, as in the
reference; only the ground-truth class's map is stored (the reference keeps top-5 classes per
location), which is all TokenMix's targets use. The reference's x/y swap of the crop box is not
reproduced.

Example:
    >>> import torch
    >>> # an 8 x 8 map with its mass in the top-left 4 x 2 cells; the crop is the left half,
    >>> # mirrored: on a 2 x 2 token grid the mass lands top-right (bilinear sampling blurs a little)
    >>> raw = torch.zeros(1, 8, 8)
    >>> raw[0, :4, :2] = 1.0
    >>> where = torch.tensor([[0, 0.0, 0.0, 0.5, 1.0, 1.0]], dtype=torch.float64)
    >>> crop_maps(raw, where, grid=2).round(decimals=2)
    tensor([[[0.0600, 0.9400],
             [0.0000, 0.0000]]])
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from suite.cam import normalise_maps, raw_activation_maps
from suite.config import DataConfig, TrainConfig
from suite.hardware import host_to_device
from suite.records import atomic_write_json
from suite.preflight import resolve_checkpoint_path

__all__ = ["MAPS_FILE", "META_FILE", "OfflineMaps", "build_offline_maps", "crop_maps", "training_set_fingerprint"]

MAPS_FILE = "maps.npy"
META_FILE = "maps.json"
FORMAT = 1
_SUPERSAMPLE = 4  # samples per token cell and side before average pooling


def crop_maps(raw: torch.Tensor, where: torch.Tensor, grid: int) -> torch.Tensor:
    """Cut whole-image maps to crop boxes, mirror them as the images were, and normalise.

    Args:
        raw: Maps ``(B, h, w)`` of whole images (any float dtype, any device).
        where: ``(B, 6)`` rows ``[index, x0, y0, x1, y1, flipped]`` from ``SeededDataset`` (box in
            ``[0, 1]`` image coordinates).
        grid: Token grid size G.

    Returns:
        Float32 maps ``(B, G, G)`` on ``raw``'s device, non-negative and summing to 1 (all zero
        where the crop holds no positive activation).
    """
    b = raw.shape[0]
    geo = where.to(device=raw.device, dtype=torch.float32)
    x0, y0, x1, y1, flipped = geo[:, 1], geo[:, 2], geo[:, 3], geo[:, 4], geo[:, 5]
    mirror = 1.0 - 2.0 * flipped  # -1 where the image was flipped: read the box right to left
    theta = torch.zeros(b, 2, 3, device=raw.device)
    theta[:, 0, 0] = (x1 - x0) * mirror
    theta[:, 0, 2] = x0 + x1 - 1.0
    theta[:, 1, 1] = y1 - y0
    theta[:, 1, 2] = y0 + y1 - 1.0
    side = grid * _SUPERSAMPLE
    points = F.affine_grid(theta, [b, 1, side, side], align_corners=False)
    cut = F.grid_sample(raw.float().unsqueeze(1), points, mode="bilinear", padding_mode="border", align_corners=False)
    return normalise_maps(F.avg_pool2d(cut, _SUPERSAMPLE).squeeze(1))


def training_set_fingerprint(cfg: DataConfig, dataset: Any) -> str:
    """A hash of what makes up the training set, in index order (sources, labels, sizes)."""
    digest = hashlib.sha256()
    source = getattr(dataset, "source", dataset)
    digest.update(json.dumps({"source": cfg.source, "count": len(source)}).encode())
    if cfg.source == "builtin":  # generated deterministically from these
        digest.update(json.dumps([cfg.data_seed, cfg.train_size, cfg.img_size]).encode())
        digest.update(source.labels.numpy().tobytes())
        return digest.hexdigest()
    indices: Any = range(len(source))
    folder = source
    if isinstance(source, torch.utils.data.Subset):
        indices, folder = source.indices, source.dataset
    root = Path(folder.root)
    for i in indices:
        path, label = folder.samples[i]
        digest.update(f"{Path(path).relative_to(root).as_posix()}\t{label}\n".encode())
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class OfflineMaps:
    """Precomputed maps opened for training; ``maps`` has the online ``Teacher``'s signature.

    Raises:
        ValueError: (from ``open``) when the directory is incomplete or was built for another
            training set or number of classes.
    """

    def __init__(self, directory: Path, maps: np.ndarray, meta: dict[str, Any]) -> None:
        self.directory, self.array, self.meta = directory, maps, meta

    @classmethod
    def open(cls, directory: str | Path, *, fingerprint: str, num_classes: int) -> OfflineMaps:
        directory = Path(directory)
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            raise ValueError(f"teacher.maps: {directory} has no {META_FILE}; build it with `suite maps build`")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"teacher.maps: {directory} has format {meta.get('format')}, expected {FORMAT}")
        if meta.get("fingerprint") != fingerprint:
            raise ValueError(
                f"teacher.maps: {directory} was built for a different training set "
                f"({meta.get('data')}); rebuild it for this data config"
            )
        if meta.get("num_classes") != num_classes:
            raise ValueError(
                f"teacher.maps: {directory} has maps for {meta.get('num_classes')} classes, the data has {num_classes}"
            )
        maps = np.load(directory / MAPS_FILE, mmap_mode="r")
        if maps.shape[0] != meta.get("count"):
            raise ValueError(f"teacher.maps: {directory / MAPS_FILE} holds {maps.shape[0]} maps, expected {meta.get('count')}")
        return cls(directory, maps, meta)

    def maps(self, x: torch.Tensor, y: torch.Tensor, grid: int, *, geometry: torch.Tensor | None = None) -> torch.Tensor:
        """Maps ``(B, G, G)`` of the batch's crops on the device of ``x`` (``y`` is implied by the index)."""
        if geometry is None:
            raise ValueError("offline teacher maps need each sample's crop geometry (build the data with geometry=True)")
        index = geometry[:, 0].long().numpy()
        raw = host_to_device(torch.from_numpy(np.ascontiguousarray(self.array[index])), x.device)
        return crop_maps(raw, geometry, grid)


def build_offline_maps(
    cfg: TrainConfig,
    out: str | Path,
    *,
    img_size: int | None = None,
    batch_size: int = 128,
    device: torch.device | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run the configured teacher over the whole training set once and store its maps in ``out``.

    Idempotent: a complete directory built from the same teacher checkpoint, training set and
    ``img_size`` is left as it is. The array is written under a temporary name and renamed;
    ``maps.json`` is written last.

    Args:
        cfg: Run config naming the data (``data.*``) and the teacher (``teacher.checkpoint``).
        out: Output directory.
        img_size: Side the whole images are resized to for the teacher (default ``data.img_size``).
        batch_size: Teacher batch size.
        device: Default: CUDA if available, else CPU.
        progress: Called with ``(done, total)`` after every batch.

    Returns:
        The metadata written to ``maps.json``.
    """
    from torchvision.transforms import v2

    from suite.data import SeededDataset, build_data, eval_loader
    from suite.online_teacher import load_teacher

    if cfg.teacher.checkpoint is None:
        raise ValueError("teacher.checkpoint: building offline maps needs a teacher (teacher=runs/<id> or a file)")
    out = Path(out)
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size = int(img_size or cfg.data.img_size)
    bundle = build_data(cfg.data)
    fingerprint = training_set_fingerprint(cfg.data, bundle.train)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "count": len(bundle.train),
        "num_classes": bundle.num_classes,
        "img_size": size,
        "fingerprint": fingerprint,
        "teacher": {
            "model": cfg.teacher.model,
            "checkpoint": str(cfg.teacher.checkpoint),
            "sha256": _file_sha256(resolve_checkpoint_path(cfg.teacher.checkpoint)),
        },
        "data": {"source": cfg.data.source, "root": str(cfg.data.root) if cfg.data.root else None,
                 "train_size": cfg.data.train_size, "data_seed": cfg.data.data_seed},
    }
    existing = out / META_FILE
    if existing.is_file() and (out / MAPS_FILE).is_file():
        old = json.loads(existing.read_text())
        if all(old.get(k) == meta[k] for k in ("format", "fingerprint", "img_size", "teacher")):
            return old
    teacher = load_teacher(cfg, num_classes=bundle.num_classes, device=device)
    whole = v2.Compose(
        [
            v2.ToImage(),
            v2.Resize((size, size), interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(bundle.mean, bundle.std),
        ]
    )
    images = SeededDataset(bundle.train.source, whole)
    out.mkdir(parents=True, exist_ok=True)
    existing.unlink(missing_ok=True)  # the directory is incomplete until maps.json is back
    partial = out / f".{MAPS_FILE}.partial"
    array = None
    done = 0
    for x, y in eval_loader(images, cfg.data, batch_size, pin=device.type == "cuda"):
        cams = raw_activation_maps(teacher.model, x.to(device, non_blocking=True), y.to(device))
        if array is None:
            shape = (len(images), *cams.shape[1:])
            array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float16, shape=shape)
        array[done : done + len(y)] = cams.clamp(-6e4, 6e4).cpu().numpy().astype(np.float16)
        done += len(y)
        if progress is not None:
            progress(done, len(images))
    assert array is not None and done == len(images)
    meta["map_size"] = list(array.shape[1:])
    array.flush()
    del array
    os.replace(partial, out / MAPS_FILE)
    atomic_write_json(existing, meta)
    return meta
