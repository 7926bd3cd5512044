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
* ``box``: one token-aligned rectangle, as CutMix (the paper's "region box" ablation).

Deliberate differences from the reference code:

* The number of partner tokens is ``round(ratio * G * G)`` clamped to ``[1, G * G - 1]``; the
  reference fixes it at ``int(0.5 * N) + 14`` (112 of 196, i.e. ``ratio = 4 / 7``).
* ``block`` masks have *exactly* that many partner tokens. When the reference's procedure stops
  early (no rectangle fits after 10 attempts, about 1.4 % of masks at 112/196) the shortfall is
  topped up with uniformly drawn free tokens; the reference keeps the smaller mask.
* Masks can be drawn per sample (the reference draws one per batch), and every generator is
  vectorised over the batch on the target device, driven by an explicit ``torch.Generator``.
  ``block`` runs one round per rectangle (about 17 rounds for 256 masks at 14 x 14), each
  evaluating several attempts of every sample at once; failed attempts leave the mask unchanged, so
  taking the first accepted attempt of a round reproduces the sequential procedure exactly.

Example:
    >>> import torch
    >>> from suite.masks import token_masks
    >>> gen = torch.Generator().manual_seed(0)
    >>> m = token_masks(8, 14, 4 / 7, mode="block", generator=gen)
    >>> m.shape, m.sum((1, 2)).tolist() == [112] * 8
    (torch.Size([8, 14, 14]), True)
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import torch

__all__ = ["MASK_MODES", "count_parts", "partner_counts", "token_masks"]

MASK_MODES: tuple[str, ...] = ("block", "random", "box")

_ATTEMPTS = 10  # reference: up to 10 attempts per rectangle before giving up
_PER_ROUND = 5  # attempts per mask evaluated at once in one round of the block generator (divides 10)
_MAX_BLOCK_GRID = 62  # block generator keeps integer sums in float32 exactly up to this grid


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
    r = torch.rand(n, generator=generator, device=device).mul_(hi - lo).add_(lo)
    return r.mul_(tokens).round_().clamp_(1, tokens - 1).long()


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
            ``box`` when no rectangle of that area fits (see ``mode``).
        mode: ``block`` (the reference's multi-rectangle masks), ``random`` (uniform tokens) or
            ``box`` (one rectangle: among rectangles with aspect in ``[min_aspect, 1 / min_aspect]``
            those with the area closest to the count, so exactly the count whenever such a
            rectangle exists; among them the shape closest to a log-uniform aspect draw, at a
            uniform position).
        per_sample: One mask per sample (``(B, G, G)``) or one shared mask (``(1, G, G)``).
        min_aspect: Minimum rectangle aspect ratio for ``block`` and ``box``, in ``(0, 1]``.
        generator: The only source of randomness; must live on ``device``.
        device: Device the masks are drawn on.

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
    n = batch if per_sample else 1
    counts = partner_counts(n, grid, ratio, generator=generator, device=device)
    if mode == "block":
        if grid > _MAX_BLOCK_GRID:
            raise ValueError(f"grid must be <= {_MAX_BLOCK_GRID} for mode='block', but got grid={grid}")
        return _block_masks(counts, grid, min_aspect, generator)
    elif mode == "random":
        flat = torch.zeros(n, grid * grid, dtype=torch.bool, device=counts.device)
        return _add_random_tokens(flat, counts, generator).view(n, grid, grid)
    elif mode == "box":
        return _box_masks(counts, grid, min_aspect, generator)
    else:
        raise ValueError(f"mode must be one of {', '.join(MASK_MODES)}, but got mode={mode!r}")


def _add_random_tokens(flat: torch.Tensor, extra: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Set ``extra[i]`` uniformly chosen free cells of each row of ``flat`` (``(n, N)`` bool)."""
    n, tokens = flat.shape
    keys = torch.rand(n, tokens, generator=generator, device=flat.device)
    keys.masked_fill_(flat, 2.0)  # taken cells sort after every free one
    order = keys.argsort(dim=1)
    take = torch.arange(tokens, device=flat.device) < extra.view(n, 1)
    return flat | torch.zeros_like(flat).scatter_(1, order, take)


@functools.lru_cache(maxsize=32)
def _block_tables(grid: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Constant tables of the block generator for one grid size.

    Returns:
        ``prefix`` ``(G + 1, G)`` with ``prefix[i, i'] = 1`` for ``i' < i`` (left-multiplying sums
        the rows above ``i``); ``intervals`` ``(G, (G + 1) ** 2)`` whose column
        ``start * (G + 1) + length`` is the indicator of cells ``[start, start + length)``; and
        ``area`` ``((G + 1) ** 2,)`` holding ``h * w`` at ``h * (G + 1) + w`` for rectangles the
        reference allows (``h < G`` and ``w < G``) and a large negative number for the others.
    """
    g1 = grid + 1
    prefix = torch.tril(torch.ones(g1, grid, device=device), diagonal=-1)
    pos = torch.arange(grid, device=device).view(grid, 1)
    start = torch.arange(g1, device=device).repeat_interleave(g1)
    length = torch.arange(g1, device=device).repeat(g1)
    intervals = ((pos >= start) & (pos < start + length)).float()
    side = torch.arange(g1, device=device, dtype=torch.float32)
    area = torch.outer(side, side)
    area[grid, :] = area[:, grid] = -1.0e6
    return prefix, intervals, area.view(-1)


def _block_masks(
    counts: torch.Tensor, grid: int, min_aspect: float, generator: torch.Generator
) -> torch.Tensor:
    """The reference's block masks for every count, in chunks small enough for exact float indices."""
    per_chunk = max(1, (1 << 24) // (grid + 1) ** 2 - 1)
    if counts.numel() <= per_chunk:
        return _block_chunk(counts, grid, min_aspect, generator)
    return torch.cat([_block_chunk(c, grid, min_aspect, generator) for c in counts.split(per_chunk)])


def _block_chunk(
    counts: torch.Tensor, grid: int, min_aspect: float, generator: torch.Generator
) -> torch.Tensor:
    """The reference's block masks, vectorised over masks, with exact counts.

    One loop iteration is one rectangle of every still-growing mask, so the loop runs as often as
    the mask with the most rectangles needs (about 17 times for 256 masks at 112/196, 9 for one).
    Failed attempts leave a mask unchanged, so evaluating ``_PER_ROUND`` attempts per mask at once
    and taking the first accepted one reproduces the sequential procedure exactly; after
    ``_ATTEMPTS`` failures in a row a mask stops growing, as in the reference.

    The mask is kept as float in a ``(G, G, n)`` layout. Its summed-area table takes two matrix
    products (integer sums are exact in float32 for G <= 62); one gather then yields, for every
    attempt, the four corner sums and the rectangle's area (negative for rectangles the reference
    rejects), so the new-token count is one small matrix product. Painting the accepted rectangle
    is a rank-one update per mask. The loop ends when no mask can grow (one host sync per round
    on an accelerator); masks that stopped short are topped up with uniformly drawn free tokens.
    """
    n, dev = counts.numel(), counts.device
    g, g1, t = grid, grid + 1, _PER_ROUND
    prefix, intervals, area = _block_tables(g, str(dev))
    n_sat = g1 * g1 * n
    table = torch.empty(n_sat + g1 * g1, device=dev)  # summed-area table, then the area table
    table[n_sat:] = area
    sat = table[:n_sat].view(g1, g1 * n)  # layout (column, row, mask)
    mask = torch.zeros(g, g, n, device=dev)  # layout (row, column, mask)
    row_sums = torch.empty(g1, g, n, device=dev)
    row_sums_t = torch.empty(g, g1, n, device=dev)
    # One matrix product maps an attempt's (top, left, h, w) to the flat indices it needs:
    # its area-table entry, its four summed-area corners, and its row / column intervals.
    stride_c, stride_r, a0 = float(g1 * n), float(n), float(g1)
    weights = torch.tensor(
        [
            [0.0, 0.0, a0, 1.0],
            [stride_r, stride_c, 0.0, 0.0],
            [stride_r, stride_c, 0.0, stride_c],
            [stride_r, stride_c, stride_r, 0.0],
            [stride_r, stride_c, stride_r, stride_c],
            [a0, 0.0, 1.0, 0.0],
            [0.0, a0, 0.0, 1.0],
        ],
        device=dev,
    )
    # Each mask has t attempt columns and one sentinel column whose rectangle is empty and which
    # is picked when no attempt is accepted: it adds nothing, and its flag counts a failed round.
    tt = t + 1
    sample = torch.arange(n, device=dev, dtype=torch.float32).repeat_interleave(tt).view(1, n * tt)
    offsets = torch.cat(
        (
            torch.full((1, n * tt), float(n_sat), device=dev),
            sample.expand(4, n * tt),
            torch.zeros(2, n * tt, device=dev),
        )
    )
    signs = torch.tensor([[1.0, -1.0, 1.0, 1.0, -1.0]], device=dev)  # area - inside
    one = torch.ones(1, 1, device=dev)
    score = torch.arange(t, -1, -1, device=dev, dtype=torch.float32)  # the first accepted attempt wins
    no_score = torch.zeros(tt, device=dev)
    no_score[t] = 0.5  # the sentinel wins only when nothing was accepted
    geo = torch.zeros(4, n, tt, device=dev)  # top, left, h, w of every attempt; sentinel stays 0
    top_left, height_width = geo[:2, :, :t], geo[2:, :, :t]
    # rows: flat indices (area, 4 corners, row and column interval), new tokens, sentinel flag
    work = torch.zeros(9, n, tt, device=dev)
    work[8, :, t] = 1.0
    new = work[7]
    picks = work[5:]
    rem = counts.to(torch.float32).view(n, 1).clone()  # tokens still to add; 0 once a mask stops
    fails = torch.zeros(n, 1, device=dev)  # failed attempts for the current rectangle
    log_lo = math.log(min_aspect)
    chunk, r = 6, 6
    while True:
        if r == chunk:  # the draws of `chunk` rounds at once: area, aspect, top, left per attempt
            r = 0
            draws = torch.rand(chunk, 4, n, t, generator=generator, device=dev)
            half_log = draws[:, 1].mul(-log_lo).add_(0.5 * log_lo)  # 0.5 * log(aspect), log-uniform
            rounds = list(
                zip(
                    draws[:, 0].unbind(0),
                    torch.stack((half_log, half_log.neg()), 1).exp_().unbind(0),  # sqrt(aspect), 1 / ...
                    draws[:, 2:].unbind(0),
                    (draws[:, 2:] * g1).unbind(0),
                    strict=True,
                )
            )
        area_u, sqrt_aspect, pos_u, pos_span = rounds[r]
        torch.mm(prefix, mask.view(g, g * n), out=row_sums.view(g1, g * n))
        row_sums_t.copy_(row_sums.permute(1, 0, 2))
        torch.mm(prefix, row_sums_t.view(g, g1 * n), out=sat)
        root_area = torch.addcmul(one, area_u, rem - 1.0).sqrt_()  # area ~ U[1, rem]
        torch.mul(sqrt_aspect, root_area, out=height_width).round_().clamp_(max=g)
        torch.addcmul(pos_span, pos_u, height_width, value=-1.0, out=top_left).floor_()  # U{0..G-h}
        torch.addmm(offsets, weights, geo.view(4, n * tt), out=work[:7].view(7, n * tt))
        torch.mm(signs, table.take(work[:5].view(5, n * tt).long()), out=new.view(1, n * tt))
        ok = (new >= 1.0).logical_and_(new <= rem)
        first = torch.where(ok, score, no_score).argmax(1, keepdim=True)
        picked = picks.gather(2, first.expand(4, n, 1)).view(4, n)
        spans = intervals.index_select(1, picked[:2].long().view(-1)).view(g, 2, n)
        mask.addcmul_(spans[:, 0].unsqueeze(1), spans[:, 1].unsqueeze(0)).clamp_(max=1.0)
        rem.sub_(picked[2].view(n, 1))
        fails.add_(t).mul_(picked[3].view(n, 1))
        rem.mul_(fails < _ATTEMPTS)  # gave up: the reference stops this mask here
        r += 1
        if not bool(rem.any()):
            break
    out = (mask.permute(2, 0, 1) > 0.5).contiguous()
    missing = counts - out.view(n, g * g).sum(1)
    todo = missing.nonzero().view(-1)
    if todo.numel() > 0:
        flat = out.view(n, g * g)
        flat[todo] = _add_random_tokens(flat[todo], missing[todo], generator)
    return out


@functools.lru_cache(maxsize=32)
def _box_tables(grid: int, min_aspect: float, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per count k: which rectangles (h, w) are admissible; and each rectangle's log aspect."""
    side = torch.arange(1, grid + 1, dtype=torch.float64)
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
    return penalty.to(device=device, dtype=torch.float32), torch.cat(
        (log_aspect.view(1, -1), sizes.to(torch.float64))
    ).to(device=device, dtype=torch.float32)


def _box_masks(
    counts: torch.Tensor, grid: int, min_aspect: float, generator: torch.Generator
) -> torch.Tensor:
    """One rectangle per mask with the admissible area closest to the count (exact when possible)."""
    n, dev = counts.numel(), counts.device
    penalty, shapes = _box_tables(grid, min_aspect, str(dev))
    u = torch.rand(3, n, 1, generator=generator, device=dev)
    log_lo = math.log(min_aspect)
    wanted = u[0].mul(-2.0 * log_lo).add_(log_lo)  # log-uniform aspect draw
    score = (shapes[0] - wanted).abs_() + penalty[counts]
    choice = score.argmin(1)
    h, w = shapes[1][choice].view(n, 1), shapes[2][choice].view(n, 1)
    top = (grid + 1 - h).mul_(u[1]).floor_()
    left = (grid + 1 - w).mul_(u[2]).floor_()
    pos = torch.arange(grid, device=dev, dtype=torch.float32)
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
