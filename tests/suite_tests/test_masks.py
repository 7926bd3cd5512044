from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

import suite  # noqa: F401 - torchvision shim before timm
from suite.masks import count_parts, partner_counts, token_masks


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _expected_count(ratio: float, grid: int) -> int:
    n = grid * grid
    return min(max(round(ratio * n), 1), n - 1)


def _box_area_error(k: int, grid: int, min_aspect: float = 0.3) -> int:
    """Distance from k to the closest area of a rectangle the box generator may use."""
    return min(
        abs(a * b - k)
        for a in range(1, grid + 1)
        for b in range(1, grid + 1)
        if min_aspect - 1e-9 <= a / b <= 1 / min_aspect + 1e-9
    )


@pytest.mark.parametrize("per_sample", [True, False])
@pytest.mark.parametrize(
    "mode, grid, ratio",
    [
        ("block", 14, 4 / 7),  # the reference's 112 of 196
        ("block", 14, 0.3),
        ("block", 7, 0.5),
        ("block", 4, 0.875),  # the sequential procedure often gets stuck here: the top-up must fill it
        ("block", 28, 0.57),
        ("block", 2, 0.01),  # clamped to one partner token
        ("random", 14, 4 / 7),
        ("random", 8, 0.99),  # clamped to N - 1
        ("random", 28, 0.2),
        ("box", 14, 4 / 7),  # 8 x 14
        ("box", 8, 0.25),  # 4 x 4
        ("box", 7, 0.5),  # round(24.5) = 24 = 4 x 6
    ],
)
def test_partner_token_count_is_exact(mode: str, grid: int, ratio: float, per_sample: bool) -> None:
    masks = token_masks(64, grid, ratio, mode=mode, per_sample=per_sample, generator=_gen())
    assert masks.dtype == torch.bool
    assert masks.shape == ((64 if per_sample else 1), grid, grid)
    assert masks.sum((1, 2)).tolist() == [_expected_count(ratio, grid)] * masks.shape[0]


@pytest.mark.parametrize("grid, ratio", [(14, 0.3), (28, 0.3), (5, 0.9)])
def test_box_mask_is_one_rectangle_with_the_closest_admissible_area(grid: int, ratio: float) -> None:
    k = _expected_count(ratio, grid)
    masks = token_masks(32, grid, ratio, mode="box", generator=_gen())
    rows, cols = masks.any(2), masks.any(1)
    h, w = rows.sum(1), cols.sum(1)
    # the mask is exactly the rectangle spanned by its rows and columns
    assert torch.equal(masks, rows.unsqueeze(2) & cols.unsqueeze(1))
    aspect = (h / w).float()
    assert ((aspect >= 0.3 - 1e-6) & (aspect <= 1 / 0.3 + 1e-6)).all()
    assert ((h * w - k).abs() == _box_area_error(k, grid)).all()


def test_block_masks_have_several_parts_like_the_reference() -> None:
    gen = _gen(1)
    masks = torch.cat([token_masks(250, 14, 0.57, mode="block", generator=gen) for _ in range(8)])
    parts = count_parts(masks).float()
    # the reference's procedure gives about 2.5 separated parts per mask at 112 of 196 tokens
    assert 2.2 < parts.mean().item() < 2.8
    assert (parts == 1).float().mean() < 0.3


@pytest.mark.parametrize("mode, low, high", [("box", 1.0, 1.0), ("random", 8.0, 20.0)])
def test_other_modes_parts(mode: str, low: float, high: float) -> None:
    parts = count_parts(token_masks(200, 14, 0.57, mode=mode, generator=_gen())).float().mean().item()
    assert low <= parts <= high


def test_per_sample_masks_differ_and_per_batch_mask_is_one() -> None:
    per_sample = token_masks(32, 14, 4 / 7, per_sample=True, generator=_gen())
    flat = per_sample.view(32, -1)
    assert len({tuple(row.tolist()) for row in flat}) == 32
    shared = token_masks(32, 14, 4 / 7, per_sample=False, generator=_gen())
    assert shared.shape == (1, 14, 14)


@pytest.mark.parametrize("mode", ["block", "random", "box"])
@pytest.mark.parametrize("lo, hi", [(0.2, 0.4), (0.5, 0.9), (0.3, 0.3)])
def test_ratio_range_respects_bounds(mode: str, lo: float, hi: float) -> None:
    grid = 14
    n = grid * grid
    masks = token_masks(400, grid, (lo, hi), mode=mode, generator=_gen())
    counts = masks.sum((1, 2))
    k_lo, k_hi = round(lo * n), round(hi * n)
    if mode == "box":  # the nearest admissible rectangle may miss the count by a little
        slack = max(_box_area_error(k, grid) for k in range(k_lo, k_hi + 1))
        k_lo, k_hi = k_lo - slack, k_hi + slack
    assert counts.min() >= k_lo
    assert counts.max() <= k_hi
    if lo < hi:
        assert counts.unique().numel() > 10
        assert counts.float().std() > 0.15 * (k_hi - k_lo) / 2


def test_ratio_range_is_drawn_once_per_batch_when_shared() -> None:
    counts = partner_counts(1, 14, (0.2, 0.8), generator=_gen())
    assert counts.shape == (1,)
    draws = {int(partner_counts(1, 14, (0.2, 0.8), generator=_gen(s))[0]) for s in range(20)}
    assert len(draws) > 5


@pytest.mark.parametrize("mode", ["block", "random", "box"])
@pytest.mark.parametrize("ratio", [4 / 7, (0.3, 0.7)])
def test_masks_are_deterministic_for_a_seed(mode: str, ratio: float | tuple[float, float]) -> None:
    a = token_masks(16, 14, ratio, mode=mode, generator=_gen(7))
    b = token_masks(16, 14, ratio, mode=mode, generator=_gen(7))
    c = token_masks(16, 14, ratio, mode=mode, generator=_gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_block_mask_cells_are_equally_likely_up_to_border_effects() -> None:
    masks = torch.cat([token_masks(256, 14, 4 / 7, generator=_gen(s)) for s in range(4)])
    freq = masks.float().mean(0)
    # symmetric under flips and transposition, as the generator is
    for other in (freq.flip(0), freq.flip(1), freq.t()):
        assert (freq - other).abs().max() < 0.12
    assert abs(freq.mean().item() - 112 / 196) < 1e-6


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"ratio": 1.3}, "ratio"),
        ({"ratio": 0.0}, "ratio"),
        ({"ratio": (0.6, 0.4)}, "ratio"),
        ({"ratio": (0.1, 0.2, 0.3)}, "ratio"),
        ({"ratio": "half"}, "ratio"),
        ({"mode": "blocks"}, "mode"),
        ({"grid": 1}, "grid"),
        ({"grid": 63}, "grid"),
        ({"batch": 0}, "batch"),
        ({"min_aspect": 0.0}, "min_aspect"),
        ({"min_aspect": 1.5}, "min_aspect"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs: dict, name: str) -> None:
    args = {"batch": 4, "grid": 14, "ratio": 0.5, "mode": "block"} | kwargs
    with pytest.raises(ValueError, match=name):
        token_masks(args.pop("batch"), args.pop("grid"), args.pop("ratio"), generator=_gen(), **args)


def test_unknown_mode_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="block, random, box"):
        token_masks(2, 4, 0.5, mode="grid", generator=_gen())  # type: ignore[arg-type]


def test_count_parts_matches_scipy() -> None:
    gen = _gen(3)
    masks = torch.rand(300, 9, 9, generator=gen) < 0.45
    expected = [ndimage.label(m)[1] for m in masks.numpy()]
    assert count_parts(masks).tolist() == expected
    assert int(count_parts(masks[0])) == expected[0]
    assert int(count_parts(torch.zeros(3, 3, dtype=torch.bool))) == 0
    assert np.mean(expected) > 1
