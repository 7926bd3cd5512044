"""Patch occlusion for the occlusion-robustness evaluation.

The TokenMix paper (Liu et al., ECCV 2022, https://arxiv.org/abs/2207.08409) reports better
robustness to occlusion. The usual protocol for ViTs (Naseer et al., "Intriguing Properties of
Vision Transformers", NeurIPS 2021, https://arxiv.org/abs/2105.10497) drops a random fraction of
the image's patches at test time and measures top-1 accuracy. Here each image loses *exactly*
``round(fraction * cells)`` patch cells, drawn uniformly per image from an explicit generator, so
every evaluated model sees the same occluded images for a given seed.

Example:
    >>> import torch
    >>> from suite.train.occlusion import occlude_patches
    >>> x = torch.ones(2, 3, 32, 32)
    >>> out = occlude_patches(x, 8, 0.5, torch.Generator().manual_seed(0))
    >>> (out[:, 0] == 0).float().mean().item()
    0.5
"""

from __future__ import annotations

import torch

__all__ = ["OcclusionMasks", "occlusion_mask", "occlude_patches", "apply_occlusion"]


def occlusion_mask(
    batch: int,
    rows: int,
    cols: int,
    fraction: float,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Boolean ``(B, rows, cols)`` masks with exactly ``round(fraction * rows * cols)`` cells set per row.

    Raises:
        ValueError: If ``fraction`` is not in ``[0, 1]``.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], but got fraction={fraction!r}")
    cells = rows * cols
    k = round(fraction * cells)
    keys = torch.rand(batch, cells, generator=generator, device=device)
    drop = torch.zeros(batch, cells, dtype=torch.bool, device=device)
    if k > 0:
        drop.scatter_(1, keys.topk(k, dim=1).indices, True)
    return drop.view(batch, rows, cols)


def occlude_patches(
    x: torch.Tensor,
    patch: int,
    fraction: float,
    generator: torch.Generator,
    fill: float = 0.0,
    *,
    rows: tuple[int, int, int] | None = None,
) -> torch.Tensor:
    """Fill a random ``fraction`` of the ``patch x patch`` cells of every image with ``fill``.

    Args:
        x: Images ``(B, C, H, W)``; H and W must be multiples of ``patch``. Not modified.
        patch: Cell size in pixels (usually the model's patch size).
        fraction: Fraction of cells dropped per image, in ``[0, 1]``; the count
            ``round(fraction * cells)`` is exact for every image.
        generator: Source of the random cells; on the device of ``x``.
        fill: Value written into dropped cells (0 is the dataset mean after normalisation).
        rows: ``(n, start, step)``: draw the masks of a batch of ``n`` images and use rows
            ``start::step`` (one rank's images of a global batch under data parallelism).

    Returns:
        A new tensor like ``x``.

    Raises:
        ValueError: For an invalid argument.
    """
    if x.dim() != 4:
        raise ValueError(f"x must have shape (B, C, H, W), but got x.shape={tuple(x.shape)}")
    if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1:
        raise ValueError(f"patch must be a positive integer, but got patch={patch!r}")
    b, _, height, width = x.shape
    if height % patch != 0 or width % patch != 0:
        raise ValueError(f"image size {height}x{width} must be divisible by patch={patch}")
    grid_rows, cols = height // patch, width // patch
    if rows is None:
        drop = occlusion_mask(b, grid_rows, cols, fraction, generator, x.device)
    else:
        n, start, step = rows
        drop = occlusion_mask(n, grid_rows, cols, fraction, generator, x.device)[start::step]
        if drop.shape[0] != b:
            raise ValueError(f"rows={rows} selects {drop.shape[0]} masks for a batch of {b} images")
    return apply_occlusion(x, drop, patch, fill)


def apply_occlusion(x: torch.Tensor, drop: torch.Tensor, patch: int, fill: float = 0.0) -> torch.Tensor:
    """Fill the ``patch x patch`` cells of ``x`` (B, C, H, W) where ``drop`` (B, H/patch, W/patch) is set."""
    b, grid_rows, cols = drop.shape
    x6 = x.unflatten(3, (cols, patch)).unflatten(2, (grid_rows, patch))
    return x6.masked_fill(drop.view(b, 1, grid_rows, 1, cols, 1), fill).flatten(4, 5).flatten(2, 3)


class OcclusionMasks:
    """The occlusion masks of an evaluation set, looked up by image index.

    The masks are those of a single-process evaluation in batches of ``chunk`` images that draws
    each batch's masks in turn from one CPU generator seeded with ``seed``. They depend on the
    image's index alone, not on how the images are batched, on how many processes share the set
    or on the device: a GPU run and a CPU run, and runs on 1 or 32 GPUs, blank the same cells of
    the same images. Chunks are drawn on demand in order and forgotten once passed.

    Args:
        size: images in the evaluation set.
        rows, cols: the cell grid of one image.
        fraction: share of cells blanked per image.
        seed: ``eval.occlusion_seed``.
        chunk: images per draw (``eval.batch_size``).
    """

    def __init__(self, size: int, rows: int, cols: int, fraction: float, seed: int, chunk: int) -> None:
        if chunk < 1 or size < 0:
            raise ValueError(f"chunk must be >= 1 and size >= 0, but got chunk={chunk}, size={size}")
        self.size, self.rows, self.cols, self.fraction, self.chunk = size, rows, cols, fraction, chunk
        self._gen = torch.Generator().manual_seed(seed)
        self._drawn = 0  # chunks drawn so far
        self._cache: dict[int, torch.Tensor] = {}

    def _chunk(self, index: int) -> torch.Tensor:
        while self._drawn <= index:
            n = min(self.chunk, self.size - self._drawn * self.chunk)
            self._cache[self._drawn] = occlusion_mask(n, self.rows, self.cols, self.fraction, self._gen)
            self._drawn += 1
        return self._cache[index]

    def __call__(self, indices: torch.Tensor) -> torch.Tensor:
        """Boolean masks ``(len(indices), rows, cols)`` of the images at ``indices`` (ascending), on the CPU."""
        indices = indices.cpu().long()
        if indices.numel() == 0:
            return torch.zeros(0, self.rows, self.cols, dtype=torch.bool)
        if int(indices.min()) < 0 or int(indices.max()) >= self.size:
            raise ValueError(f"image indices must be in [0, {self.size}), but got {indices.min()}..{indices.max()}")
        chunks = indices // self.chunk
        first, last = int(chunks.min()), int(chunks.max())
        block = torch.cat([self._chunk(c) for c in range(first, last + 1)])
        for old in [c for c in self._cache if c < first]:
            del self._cache[old]
        return block[indices - first * self.chunk]
