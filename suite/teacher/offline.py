"""Offline teacher maps: computed once per training set, cut to each crop at training time.

The online teacher (``suite.teacher.cam.Teacher``) costs one teacher forward per mixed step, which is
fine for a ResNet-class teacher and out of reach for the reference's NFNet-F6 at 576 px. Offline
maps move that cost to one pass over the training set:

1. ``suite maps build teacher=<run dir or checkpoint> ... --out DIR`` resizes every *whole*
   training image to ``img_size`` x ``img_size`` (no crop, so the map covers the full image), runs
   the teacher and stores, at the teacher's own resolution, the ground-truth class's raw
   activation map (``DIR/maps.npy``, float16 ``(N, h, w)``, logits as the reference keeps them)
   and the ground-truth class's rank among all classes at each location (``DIR/ranks.npy``,
   uint8 ``(N, h, w)``: how many classes score strictly higher, capped at 255), plus what it was
   built from (``DIR/maps.json``: teacher, checkpoint hash, training-set fingerprint, rank cap;
   written last, so a directory with ``maps.json`` is complete). The build writes the arrays in
   durable chunks: stopped by a signal (at a chunk boundary), killed or requeued, it continues
   where it was when run again with the same inputs (:func:`build_offline_maps`).
2. A run with ``teacher.maps=DIR`` loads the arrays memory-mapped. With ``topk`` (the reference's
   5) a location's value is kept only where its rank is below ``topk``, which is exactly the
   reference's top-5 gating; one build serves every ``topk`` up to the cap, and ``topk=None``
   (dense) ignores the ranks. Its training items carry the crop
   box and flip of their augmentation (``suite.data.geometry.CropFlip``) and, once
   :meth:`OfflineMaps.deliver_to` was called on the training set, the sample's stored (gated) map:
   the loader workers read it from the memory-mapped arrays, so it arrives with the batch, pinned,
   and reaches the device in one non-blocking copy. Each step cuts every map to its sample's box
   and mirrors it where the image was mirrored. This is one ``affine_grid`` / ``grid_sample`` call
   for the batch, on the training device, sampled 4x finer than the token grid and average-pooled.
   The result is normalised like the online maps.

RandAugment's geometric ops (rotate, shear-x/y, translate-x/y) are followed as the reference's
label pipeline follows them: each sample also carries the affine those ops applied, with the
magnitudes it drew (``suite.data.geometry``), and the same ``grid_sample`` composes it with the crop
(timm's order, crop then RandAugment; the map lands where the image content went either way).

Differences from the online teacher: the map is computed on the unaugmented whole image.
Differences from the reference: only the ground-truth class's map and its rank are stored (the
reference keeps the top-5 classes' logits and indices per location): that is all TokenMix's
targets use, and gating it with ``topk=5`` gives the same ground-truth channel. The reference's
x/y swap of the crop box is not reproduced.

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
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from suite.teacher.cam import normalise_maps
from suite.config import DataConfig
from suite.device.hardware import host_to_device
from suite.run.names import MAPS_META_FILE

__all__ = [
    "MAPS_FILE",
    "META_FILE",
    "RANKS_FILE",
    "OfflineMaps",
    "StoredRows",
    "crop_maps",
    "training_set_fingerprint",
]

MAPS_FILE = "maps.npy"
RANKS_FILE = "ranks.npy"
META_FILE = MAPS_META_FILE
FORMAT = 2  # 2 added ranks.npy (top-k gating); format-1 directories serve dense maps only
RANK_CAP = 255  # ranks are stored as uint8; any topk <= RANK_CAP can be applied at training time
_SUPERSAMPLE = 4  # samples per token cell and side before average pooling
PROGRESS_FILE = ".progress.json"  # a build in progress: maps done so far, and for which inputs
CHUNK_BATCHES = 50  # batches per durably written chunk of a build (6400 images at batch 128)


def crop_maps(raw: torch.Tensor, where: torch.Tensor, grid: int, *, clamp_negative: bool = True) -> torch.Tensor:
    """Cut whole-image maps to crop boxes, mirror and move them as the images were, and normalise.

    Args:
        raw: Maps ``(B, h, w)`` of whole images (any float dtype, any device).
        where: ``(B, 6)`` rows ``[index, x0, y0, x1, y1, flipped]``, or ``(B, 12 + 6 k)`` rows with
            the affine ``a, b, c, d, e, f`` of the later geometric ops appended, then ``k`` fill
            checks, from ``SeededDataset`` (box in ``[0, 1]`` image coordinates; affine from
            output to crop coordinates in ``[-1, 1]``, see ``suite.data.geometry``).
        grid: Token grid size G.
        clamp_negative: Clamp negative values at 0 before normalising (the suite's default);
            False keeps them, as the reference does (``teacher.clamp_negative``).

    Returns:
        Float32 maps ``(B, G, G)`` on ``raw``'s device, summing to 1 (all zero where the crop
        holds no positive mass); non-negative unless ``clamp_negative`` is False. Where an op
        moved content in from outside its input (RandAugment's fill) the map is 0: the composed
        affine and every check must map the point inside ``[-1, 1]``, so content that one op moved
        out and the next moved back in counts as fill, as the image shows it.
    """
    b = raw.shape[0]
    width = where.shape[1] if where.dim() == 2 else -1
    if where.dim() != 2 or where.shape[0] != b or not (width == 6 or (width >= 12 and width % 6 == 0)):
        raise ValueError(f"where must have shape ({b}, 6) or ({b}, 12 + 6 k), but got {tuple(where.shape)}")
    geo = where.to(device=raw.device, dtype=torch.float32)
    x0, y0, x1, y1, flipped = geo[:, 1], geo[:, 2], geo[:, 3], geo[:, 4], geo[:, 5]
    mirror = 1.0 - 2.0 * flipped  # -1 where the image was flipped: read the box right to left
    theta = torch.zeros(b, 3, 3, device=raw.device)
    theta[:, 0, 0] = (x1 - x0) * mirror
    theta[:, 0, 2] = x0 + x1 - 1.0
    theta[:, 1, 1] = y1 - y0
    theta[:, 1, 2] = y0 + y1 - 1.0
    theta[:, 2, 2] = 1.0
    side = grid * _SUPERSAMPLE
    inside = None
    if width >= 12:
        for start in range(6, width, 6):  # the composed affine, then each check
            moved = F.affine_grid(geo[:, start : start + 6].view(b, 2, 3), [b, 1, side, side], align_corners=False)
            shown = (moved.abs() <= 1.0).all(-1).unsqueeze(1)  # the output point shows content, not fill
            inside = shown if inside is None else inside & shown
        affine = torch.cat([geo[:, 6:12].view(b, 2, 3), theta[:, 2:]], 1)
        theta = theta @ affine
    points = F.affine_grid(theta[:, :2], [b, 1, side, side], align_corners=False)
    cut = F.grid_sample(raw.float().unsqueeze(1), points, mode="bilinear", padding_mode="border", align_corners=False)
    if inside is not None:
        cut = cut * inside
    return normalise_maps(F.avg_pool2d(cut, _SUPERSAMPLE).squeeze(1), clamp_negative=clamp_negative)


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


class OfflineMaps:
    """Precomputed maps opened for training; ``maps`` has the online ``Teacher``'s signature.

    Raises:
        ValueError: (from ``open``) when the directory is incomplete or was built for another
            training set or number of classes.
    """

    def __init__(
        self,
        directory: Path,
        maps: np.ndarray,
        meta: dict[str, Any],
        *,
        ranks: np.ndarray | None = None,
        topk: int | None = None,
        clamp_negative: bool = True,
    ) -> None:
        if topk is not None and ranks is None:
            raise ValueError("topk needs the ranks stored by `suite maps build`; rebuild the maps")
        self.directory, self.array, self.meta = directory, maps, meta
        self.ranks, self.topk, self.clamp_negative = ranks, topk, clamp_negative
        self.record_width: int | None = None  # the geometry rows' width when maps come with the batch

    @classmethod
    def open(
        cls,
        directory: str | Path,
        *,
        fingerprint: str,
        num_classes: int,
        topk: int | None = None,
        clamp_negative: bool = True,
    ) -> OfflineMaps:
        """Open a built directory for a training set; ``topk`` gates the maps (``None`` = dense);
        ``clamp_negative`` as in :func:`crop_maps`."""
        directory = Path(directory)
        if topk is not None and (isinstance(topk, bool) or not isinstance(topk, int) or topk < 1):
            raise ValueError(f"teacher.topk must be a positive integer or null (dense), but got {topk!r}")
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            raise ValueError(f"teacher.maps: {directory} has no {META_FILE}; build it with `suite maps build`")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") not in (1, FORMAT):
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
        ranks = None
        if topk is not None:
            cap = meta.get("rank_cap")
            if cap is None:
                raise ValueError(
                    f"teacher.topk={topk}: {directory} holds dense maps only (format {meta.get('format')}); "
                    "rebuild it with `suite maps build` or set teacher.topk=null"
                )
            if topk > cap:
                raise ValueError(f"teacher.topk={topk}: {directory} stores class ranks up to {cap} only")
            ranks = np.load(directory / RANKS_FILE, mmap_mode="r")
        maps = np.load(directory / MAPS_FILE, mmap_mode="r")
        if maps.shape[0] != meta.get("count"):
            raise ValueError(f"teacher.maps: {directory / MAPS_FILE} holds {maps.shape[0]} maps, expected {meta.get('count')}")
        if ranks is not None and ranks.shape != maps.shape:
            raise ValueError(f"teacher.maps: {directory / RANKS_FILE} has shape {ranks.shape}, not {maps.shape}")
        return cls(directory, maps, meta, ranks=ranks, topk=topk, clamp_negative=clamp_negative)

    def deliver_to(self, dataset: Any) -> None:
        """Have the loader workers read each sample's stored map along with its image.

        ``dataset`` is the training set (a ``SeededDataset`` built with ``geometry=True``): its
        items' ``where`` rows go on with the sample's stored map, gated by ``topk`` as :meth:`maps`
        gates it, as float64 (exact for float16). :meth:`maps` then takes the maps from the batch
        instead of reading the arrays on the training thread; its results are the same.
        """
        dataset.extend_geometry(StoredRows(self.directory, self.topk))
        self.record_width = 1 + dataset.geometry.width

    def maps(self, x: torch.Tensor, y: torch.Tensor, grid: int, *, geometry: torch.Tensor | None = None) -> torch.Tensor:
        """Maps ``(B, G, G)`` of the batch's crops on the device of ``x`` (``y`` is implied by the index).

        ``geometry`` rows are ``[index, crop box, flip, affine, checks]`` (see ``crop_maps``),
        or those followed by the sample's stored map when the loader delivered it
        (:meth:`deliver_to`); without it the maps are read here from the memory-mapped arrays.
        """
        if geometry is None:
            raise ValueError("offline teacher maps need each sample's crop geometry (build the data with geometry=True)")
        side = self.array.shape[1:]
        width = self.record_width
        if width is not None and geometry.dim() == 2 and geometry.shape[1] == width + int(np.prod(side)):
            where = host_to_device(geometry, x.device)  # delivered with the batch
            return crop_maps(
                where[:, width:].view(-1, *side), where[:, :width], grid, clamp_negative=self.clamp_negative
            )
        index = geometry[:, 0].long().numpy()
        raw = host_to_device(torch.from_numpy(np.ascontiguousarray(self.array[index])), x.device)
        if self.topk is not None:
            ranks = host_to_device(torch.from_numpy(np.ascontiguousarray(self.ranks[index])), x.device)
            raw = torch.where(ranks < self.topk, raw, torch.zeros_like(raw))
        return crop_maps(raw, host_to_device(geometry, x.device), grid, clamp_negative=self.clamp_negative)


class StoredRows:
    """``rows(index)``: one sample's stored map, gated by its ranks below ``topk``, flat float64.

    Picklable and cheap to copy into loader workers: each process opens the memory-mapped arrays
    of ``directory`` at its first read.
    """

    def __init__(self, directory: str | Path, topk: int | None) -> None:
        self.directory, self.topk = Path(directory), topk
        self._maps: np.ndarray | None = None
        self._ranks: np.ndarray | None = None

    def __call__(self, index: int) -> np.ndarray:
        if self._maps is None:
            self._maps = np.load(self.directory / MAPS_FILE, mmap_mode="r")
            if self.topk is not None:
                self._ranks = np.load(self.directory / RANKS_FILE, mmap_mode="r")
        row = np.asarray(self._maps[index])
        if self._ranks is not None:
            row = np.where(np.asarray(self._ranks[index]) < self.topk, row, np.zeros_like(row))
        return row.astype(np.float64).reshape(-1)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": None, "_ranks": None}
