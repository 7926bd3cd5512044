"""Patch occlusion for the occlusion-robustness evaluation.

The TokenMix paper (Liu et al., ECCV 2022, https://arxiv.org/abs/2207.08409) reports better
robustness to occlusion. The usual protocol for ViTs (Naseer et al., "Intriguing Properties of
Vision Transformers", NeurIPS 2021, https://arxiv.org/abs/2105.10497) drops a random fraction of
the image's patches at test time and measures top-1 accuracy. Here each image loses *exactly*
``round(fraction * cells)`` patch cells, drawn uniformly per image from an explicit generator, so
every evaluated model sees the same occluded images for a given seed.

Example:
    >>> import torch
    >>> from suite.occlusion import occlude_patches
    >>> x = torch.ones(2, 3, 32, 32)
    >>> out = occlude_patches(x, 8, 0.5, torch.Generator().manual_seed(0))
    >>> (out[:, 0] == 0).float().mean().item()
    0.5
"""

from __future__ import annotations

import torch

__all__ = ["occlusion_mask", "occlude_patches"]


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
    x6 = x.unflatten(3, (cols, patch)).unflatten(2, (grid_rows, patch))
    return x6.masked_fill(drop.view(b, 1, grid_rows, 1, cols, 1), fill).flatten(4, 5).flatten(2, 3)
