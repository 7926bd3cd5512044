"""Token masks for TokenMix: which cells of a G x G token grid show the partner image.

TokenMix (Liu et al., "TokenMix: Rethinking Image Mixing for Data Augmentation in Vision
Transformers", ECCV 2022, https://arxiv.org/abs/2207.08409; reference code
https://github.com/Sense-X/TokenMix) mixes two images at the level of tokens: a boolean mask on
the token grid says, per cell, whether the partner's pixels replace the image's own. A mask here
is ``True`` where the token is taken from the partner.

Three generators:

* ``block`` (the method's default): the reference's procedure. Random rectangles of tokens are
  added until the target count is reached. Each rectangle has an area drawn uniformly in
  ``[1, remaining]``, an aspect ratio drawn log-uniformly in ``[min_aspect, 1 / min_aspect]``, a
  uniform position, must be strictly smaller than the grid in both directions, and is accepted only
  if it adds between 1 and ``remaining`` new tokens; each rectangle gets up to 10 attempts. This
  yields about 9 rectangles and 2.5 separated parts per mask at 112 of 196 tokens.
* ``random``: exactly ``k`` tokens chosen uniformly (the paper's "random tokens" ablation).
* ``box``: one token-aligned rectangle, as CutMix (the paper's "region box" ablation), with sides
  below G like the block rectangles.

Deliberate differences from the reference code:

* The number of partner tokens is ``round(ratio * G * G)`` clamped to ``[1, G * G - 1]``; the
  reference fixes it at ``int(0.5 * N) + 14`` (112 of 196, i.e. ``ratio = 4 / 7``).
* ``block`` masks have *exactly* that many partner tokens. When the reference's procedure stops
  early (no rectangle fits after 10 attempts, about 1.4 % of masks at 112/196) the shortfall is
  topped up with uniformly drawn free tokens; the reference keeps the smaller mask.
* Masks can be drawn per sample (the reference draws one per batch). Every generator is
  vectorised over the batch (no per-sample Python loop) and driven by one explicit CPU
  ``torch.Generator``.

Where the masks are made: on the host, always, then moved to the training device (one 50 KB
non-blocking copy from pinned memory for 256 masks on a 14 x 14 grid). ``block`` is a chain of
small dependent steps (one rectangle of every still-growing mask per round, about 20 rounds for 256
masks at 112 of 196): on an accelerator each round would cost several kernel launches and a host
sync to learn whether any mask still grows, which stalls the queue of an otherwise asynchronous
training step, while on the host the whole chain takes about 1.5 ms (masks packed into
64-bit words, numpy operations) and overlaps with the accelerator's queued work. A seed gives the
same masks on every device.

Example:
    >>> import torch
    >>> from suite.mixing.masks import token_masks
    >>> gen = torch.Generator().manual_seed(0)
    >>> m = token_masks(8, 14, 4 / 7, mode="block", generator=gen)
    >>> m.shape, m.sum((1, 2)).tolist() == [112] * 8
    (torch.Size([8, 14, 14]), True)
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import numpy as np
import torch

from suite.device.hardware import host_to_device

__all__ = ["MASK_MODES", "count_parts", "partner_counts", "token_masks"]

MASK_MODES: tuple[str, ...] = ("block", "random", "box")

_ATTEMPTS = 10  # reference: up to 10 attempts per rectangle before giving up
_PER_ROUND = 2  # attempts per mask tested at once in one round of the block generator (divides 10)
_MAX_BLOCK_GRID = 64  # block generator's bit tables grow as G**3 (2 MB each at 64: 1024 px, patch 16)


def _check_ratio(ratio: float | tuple[float, float], name: str = "ratio") -> tuple[float, float]:
    """Return ``(lo, hi)`` for a fixed ratio or a range, or raise ``ValueError``."""
    if isinstance(ratio, (tuple, list)):
        if len(ratio) != 2:
            raise ValueError(f"{name} must be a float or a pair (lo, hi), but got {name}={ratio!r}")
        lo, hi = float(ratio[0]), float(ratio[1])
        if not 0.0 < lo <= hi < 1.0:
            raise ValueError(f"{name} range must satisfy 0 < lo <= hi < 1, but got {name}={tuple(ratio)!r}")
        return lo, hi
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
        raise ValueError(f"{name} must be a float or a pair (lo, hi), but got {name}={ratio!r}")
    if not 0.0 < float(ratio) < 1.0:
        raise ValueError(f"{name} must be in (0, 1), but got {name}={ratio}")
    return float(ratio), float(ratio)


def partner_counts(
    n: int,
    grid: int,
    ratio: float | tuple[float, float],
    *,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Number of partner tokens per mask: ``round(ratio * G * G)`` clamped to ``[1, N - 1]``.

    Args:
        n: Number of masks.
        grid: Token grid size G.
        ratio: Fraction of partner tokens, or a range ``(lo, hi)`` sampled uniformly per mask.
        generator: Source of the ratio draws (unused for a fixed ratio).
        device: Device of the result.

    Returns:
        Long tensor of shape ``(n,)``.
    """
    lo, hi = _check_ratio(ratio)
    tokens = grid * grid
    if lo == hi:
        k = min(max(round(lo * tokens), 1), tokens - 1)
        return torch.full((n,), k, dtype=torch.long, device=device)
    r = torch.rand(n, generator=generator).mul_(hi - lo).add_(lo)  # on the generator's device (CPU)
    return r.mul_(tokens).round_().clamp_(1, tokens - 1).long().to(device)


def token_masks(
    batch: int,
    grid: int,
    ratio: float | tuple[float, float],
    *,
    mode: Literal["block", "random", "box"] = "block",
    per_sample: bool = True,
    min_aspect: float = 0.3,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Draw token masks on a ``grid x grid`` token grid (``True`` = token from the partner).

    Args:
        batch: Batch size B (number of masks when ``per_sample``).
        grid: Token grid size G; the mask has ``N = G * G`` cells.
        ratio: Fraction of tokens taken from the partner. A pair ``(lo, hi)`` is sampled uniformly
            per sample (per batch when not ``per_sample``). The count is
            ``round(ratio * N)`` clamped to ``[1, N - 1]`` and is exact in every mode except
            ``box`` when no admissible rectangle has that area (see ``mode``).
        mode: ``block`` (the reference's multi-rectangle masks), ``random`` (uniform tokens) or
            ``box`` (one rectangle: among rectangles with aspect in ``[min_aspect, 1 / min_aspect]``
            and sides below G (never a stripe across the image) those with the area closest to the
            count, so exactly the count whenever such a rectangle exists (at 112 of 196: 110, a
            10 x 11 box); among them the shape closest to a log-uniform aspect draw, at a uniform
            position).
        per_sample: One mask per sample (``(B, G, G)``) or one shared mask (``(1, G, G)``).
        min_aspect: Minimum rectangle aspect ratio for ``block`` and ``box``, in ``(0, 1]``.
        generator: The only source of randomness; a CPU generator (masks are made on the host,
            see the module docstring).
        device: Device of the returned masks.

    Returns:
        Boolean tensor of shape ``(B, G, G)`` when ``per_sample``, else ``(1, G, G)``.

    Raises:
        ValueError: For an invalid argument or an unknown ``mode``.

    Example:
        >>> gen = torch.Generator().manual_seed(0)
        >>> token_masks(2, 4, 0.5, mode="random", generator=gen).sum((1, 2)).tolist()
        [8, 8]
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, but got batch={batch!r}")
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 2:
        raise ValueError(f"grid must be an integer >= 2, but got grid={grid!r}")
    _check_ratio(ratio)
    if (
        isinstance(min_aspect, bool)
        or not isinstance(min_aspect, (int, float))
        or not 0.0 < min_aspect <= 1.0
    ):
        raise ValueError(f"min_aspect must be in (0, 1], but got min_aspect={min_aspect!r}")
    if generator.device.type != "cpu":
        raise ValueError(
            f"generator must be a CPU torch.Generator (masks are made on the host), "
            f"but got a generator on {generator.device}"
        )
    if mode not in MASK_MODES:
        raise ValueError(f"mode must be one of {', '.join(MASK_MODES)}, but got mode={mode!r}")
    if mode == "block" and grid > _MAX_BLOCK_GRID:
        raise ValueError(f"grid must be <= {_MAX_BLOCK_GRID} for mode='block', but got grid={grid}")
    n = batch if per_sample else 1
    counts = partner_counts(n, grid, ratio, generator=generator)
    if mode == "block":
        masks = _block_masks(counts, grid, min_aspect, generator)
    elif mode == "random":
        cells = np.zeros((n, grid * grid), dtype=bool)
        _add_random_cells(cells, counts.numpy(), _host_rng(generator))
        masks = torch.from_numpy(cells).view(n, grid, grid)
    else:
        masks = _box_masks(counts, grid, min_aspect, generator)
    return host_to_device(masks, torch.device(device))


def _add_random_cells(cells: np.ndarray, extra: np.ndarray, rng: np.random.Generator) -> None:
    """Set ``extra[i]`` uniformly chosen free cells of each row of ``cells`` (``(n, N)`` bool), in place."""
    n, tokens = cells.shape
    keys = rng.random((n, tokens))
    keys[cells] = 2.0  # taken cells sort after every free one
    chosen = np.zeros_like(cells)
    np.put_along_axis(chosen, keys.argsort(1), np.arange(tokens) < extra.reshape(n, 1), axis=1)
    cells |= chosen


def _host_rng(generator: torch.Generator) -> np.random.Generator:
    """A numpy generator seeded from the torch generator (one draw), for the host-side masks."""
    return np.random.Generator(np.random.PCG64(int(torch.randint(2**63 - 1, (1,), generator=generator))))


@functools.lru_cache(maxsize=16)
def _block_tables(grid: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bit-pattern tables of the block generator for one grid size.

    A mask is a row of ``W = ceil(G * G / 64)`` 64-bit words holding its cells in row-major order
    (cell ``c`` is bit ``c % 64`` of word ``c // 64``), so a whole rectangle test is a few word
    operations.

    Returns:
        ``rows`` and ``cols`` ``(G + 1, G + 1, W)``: ``rows[start, length]`` has the cells of grid
        rows ``[start, start + length)`` set, ``cols`` the same for columns, so
        ``rows[top, h] & cols[left, w]`` is a rectangle. Lengths ``G`` (the reference rejects
        rectangles as tall or as wide as the grid) map to an empty pattern: such a rectangle adds
        no token and is never accepted. ``span`` ``(G + 1,)``: number of start positions
        ``G + 1 - length`` (at least 1). ``grid_bits`` ``(W,)``: every cell of the grid.
        ``ones`` ``(W,)`` int16: sums the per-word bit counts in one matrix product.
    """
    words = (grid * grid + 63) // 64
    length = np.arange(grid + 1)
    pos = np.arange(grid)
    start = np.arange(grid + 1).reshape(-1, 1, 1)
    inside = (pos >= start) & (pos < start + length.reshape(1, -1, 1)) & (length.reshape(1, -1, 1) < grid)
    shape = (grid + 1, grid + 1, grid, grid)
    rows = _pack_cells(np.broadcast_to(inside[..., :, None], shape), grid, words)
    cols = _pack_cells(np.broadcast_to(inside[..., None, :], shape), grid, words)
    grid_bits = _pack_cells(np.ones((grid, grid), dtype=bool), grid, words)
    span = np.maximum(grid + 1 - length, 1).astype(np.float64)
    return rows, cols, span, grid_bits, np.ones(words, dtype=np.int16)


def _pack_cells(cells: np.ndarray, grid: int, words: int) -> np.ndarray:
    """Pack boolean ``(..., G, G)`` cells into ``(..., W)`` 64-bit words, row-major, little-endian bits."""
    lead = cells.shape[:-2]
    flat = np.zeros((*lead, words * 64), dtype=bool)
    flat[..., : grid * grid] = cells.reshape(*lead, grid * grid)
    return np.packbits(flat, axis=-1, bitorder="little").view(np.uint64)


def _block_masks(
    counts: torch.Tensor, grid: int, min_aspect: float, generator: torch.Generator
) -> torch.Tensor:
    """The reference's block masks for every count, with exact counts (see the module docstring).

    All masks grow together, one rectangle per round. A round draws ``_PER_ROUND`` attempts of
    every still-growing mask and tests them at once: the new-token count of an attempt is the bit
    count of ``free & rectangle`` over the mask's words. Failed attempts leave a mask unchanged,
    so taking the first accepted attempt of a round reproduces the sequential procedure exactly;
    after ``_ATTEMPTS`` failures in a row a mask stops growing, as in the reference. Finished masks
    leave the working arrays, so late rounds only touch the few masks still growing. The work is a
    chain of small dependent steps, which is why it runs in numpy on the host: per operation it
    costs a fraction of a torch call, and on an accelerator every round would be several kernel
    launches plus a host sync to learn whether any mask is still growing.
    """
    rows, cols, span, grid_bits, ones = _block_tables(grid)
    n = counts.numel()
    rng = _host_rng(generator)
    log_lo = math.log(min_aspect)
    signs = np.array([1.0, -1.0]).reshape(2, 1, 1)
    free_out = np.empty((n, grid_bits.size), dtype=np.uint64)
    short = np.zeros(n, dtype=np.int64)  # tokens still missing when a mask stopped early
    index = np.arange(n)  # masks still growing
    free = np.tile(grid_bits, (n, 1))  # cells not yet taken, per growing mask
    rem = counts.numpy().astype(np.int64)  # tokens still to add
    fails = np.zeros(n, dtype=np.int64)  # failed attempts for the current rectangle
    while True:
        m = index.size
        u = rng.random((4, m, _PER_ROUND))  # area, aspect, top, left of every attempt
        root_area = np.sqrt(u[0] * (rem - 1)[:, None] + 1.0)  # area ~ U[1, rem]
        half_log_aspect = u[1] * -log_lo + 0.5 * log_lo  # aspect log-uniform in [lo, 1 / lo]
        sides = np.exp(half_log_aspect * signs) * root_area  # h, w before rounding
        hw = np.minimum(np.rint(sides), grid).astype(np.intp)
        top_left = (u[2:] * span[hw]).astype(np.intp)  # uniform in {0, ..., G - side}
        rect = rows[top_left[0], hw[0]] & cols[top_left[1], hw[1]]  # (m, attempts, W)
        new = np.bitwise_count(free[:, None, :] & rect) @ ones
        ok = (new >= 1) & (new <= rem[:, None])
        first = ok.argmax(1)
        at = np.arange(m)
        hit = ok[at, first]
        free &= ~(rect[at, first] * hit[:, None])
        rem = rem - new[at, first] * hit
        fails = np.where(hit, 0, fails + _PER_ROUND)
        growing = (rem > 0) & (fails < _ATTEMPTS)
        if not growing.all():
            done = ~growing
            free_out[index[done]] = free[done]
            short[index[done]] = rem[done]
            index = index[growing]
            if index.size == 0:
                break
            free, rem, fails = free[growing], rem[growing], fails[growing]
    taken = grid_bits & ~free_out
    cells = np.unpackbits(taken.view(np.uint8), axis=1, count=grid * grid, bitorder="little").view(bool)
    todo = short.nonzero()[0]
    if todo.size > 0:  # the reference stops short here (about 1.4 % of masks at 112 of 196)
        topped = cells[todo]
        _add_random_cells(topped, short[todo], rng)
        cells[todo] = topped
    return torch.from_numpy(cells).view(n, grid, grid)


@functools.lru_cache(maxsize=32)
def _box_tables(grid: int, min_aspect: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per count k: which rectangles (h, w) are admissible; and each rectangle's log aspect.

    Sides stop at G - 1, as for the block rectangles: a box as wide as the grid would be a stripe
    across the whole image (at 112 of 196 tokens the only exact boxes are 8 x 14 and 14 x 8), not
    the CutMix-like region box of the paper's ablation, and at high ratios the whole grid.
    """
    side = torch.arange(1, grid, dtype=torch.float64)  # never as tall or as wide as the grid
    h, w = torch.meshgrid(side, side, indexing="ij")
    h, w = h.reshape(-1), w.reshape(-1)
    log_aspect = (h / w).log()
    inside = log_aspect.abs() <= -math.log(min_aspect) + 1e-9
    area = h * w
    k = torch.arange(grid * grid, dtype=torch.float64).view(-1, 1)
    dist = (area.view(1, -1) - k).abs().masked_fill(~inside.view(1, -1), math.inf)
    admissible = dist == dist.amin(1, keepdim=True)
    penalty = torch.zeros_like(dist).masked_fill_(~admissible, math.inf)
    sizes = torch.stack((h, w)).long()
    return penalty.float(), torch.cat((log_aspect.view(1, -1), sizes.to(torch.float64))).float()


def _box_masks(
    counts: torch.Tensor, grid: int, min_aspect: float, generator: torch.Generator
) -> torch.Tensor:
    """One rectangle per mask with the admissible area closest to the count (exact when possible)."""
    n = counts.numel()
    penalty, shapes = _box_tables(grid, min_aspect)
    u = torch.rand(3, n, 1, generator=generator)
    log_lo = math.log(min_aspect)
    wanted = u[0].mul(-2.0 * log_lo).add_(log_lo)  # log-uniform aspect draw
    score = (shapes[0] - wanted).abs_() + penalty[counts]
    choice = score.argmin(1)
    h, w = shapes[1][choice].view(n, 1), shapes[2][choice].view(n, 1)
    top = (grid + 1 - h).mul_(u[1]).floor_()
    left = (grid + 1 - w).mul_(u[2]).floor_()
    pos = torch.arange(grid, dtype=torch.float32)
    rows = (pos >= top) & (pos < top + h)
    cols = (pos >= left) & (pos < left + w)
    return rows.unsqueeze(2) & cols.unsqueeze(1)


def count_parts(mask: torch.Tensor) -> torch.Tensor:
    """Number of 4-connected parts of each mask (a reporting and test helper, not for the hot path).

    Each cell starts with its own label; labels spread to 4-neighbours inside the mask (max wins)
    until stable, so each part ends up labelled by its highest cell index, which is counted once.

    Args:
        mask: Boolean tensor ``(G, G)`` or ``(B, G, G)``.

    Returns:
        Long tensor ``(B,)`` (0-dim for a single mask).
    """
    if mask.dim() not in (2, 3):
        raise ValueError(f"mask must have shape (G, G) or (B, G, G), but got mask.shape={tuple(mask.shape)}")
    single = mask.dim() == 2
    m = mask.view(1, *mask.shape) if single else mask
    m = m.bool()
    b, gh, gw = m.shape
    index = torch.arange(1, gh * gw + 1, device=m.device).view(1, gh, gw).expand(b, gh, gw)
    labels = torch.where(m, index, 0)
    while True:
        padded = torch.nn.functional.pad(labels, (1, 1, 1, 1))
        spread = torch.stack(
            (
                labels,
                padded[:, :-2, 1:-1],
                padded[:, 2:, 1:-1],
                padded[:, 1:-1, :-2],
                padded[:, 1:-1, 2:],
            )
        ).amax(0)
        spread = torch.where(m, spread, 0)
        if torch.equal(spread, labels):
            break
        labels = spread
    parts = (m & (labels == index)).sum((1, 2))
    return parts[0] if single else parts
