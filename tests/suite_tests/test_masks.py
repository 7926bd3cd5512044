from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

import suite  # noqa: F401 - torchvision shim before timm
from suite.mixing.masks import count_parts, partner_counts, token_masks


def _reference_block_mask(grid: int, k: int, rng: np.random.Generator, min_aspect: float = 0.3) -> np.ndarray:
    """A plain sequential port of the reference's block procedure, one rectangle at a time."""
    mask = np.zeros((grid, grid), dtype=bool)
    remaining = k
    while remaining > 0:
        for _ in range(10):
            area = rng.uniform(1, remaining)
            aspect = np.exp(rng.uniform(np.log(min_aspect), -np.log(min_aspect)))
            h, w = int(np.rint(np.sqrt(area * aspect))), int(np.rint(np.sqrt(area / aspect)))
            if h < grid and w < grid:
                top, left = rng.integers(0, grid - h + 1), rng.integers(0, grid - w + 1)
                new = h * w - mask[top : top + h, left : left + w].sum()
                if 0 < new <= remaining:
                    mask[top : top + h, left : left + w] = True
                    remaining -= new
                    break
        else:
            break  # no rectangle fitted in 10 attempts: the reference stops here
    return mask


def _perimeter(masks: torch.Tensor) -> torch.Tensor:
    m = masks.float()
    return (m[:, 1:] - m[:, :-1]).abs().sum((1, 2)) + (m[:, :, 1:] - m[:, :, :-1]).abs().sum((1, 2))


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _expected_count(ratio: float, grid: int) -> int:
    n = grid * grid
    return min(max(round(ratio * n), 1), n - 1)


def _box_area_error(k: int, grid: int, min_aspect: float = 0.3) -> int:
    """Distance from k to the closest area of a rectangle the box generator may use."""
    return min(
        abs(a * b - k)
        for a in range(1, grid)
        for b in range(1, grid)
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
        ("block", 9, 0.6),  # 81 cells: the packed mask spans two 64-bit words
        ("block", 64, 0.57),  # the largest grid block masks support
        ("random", 14, 4 / 7),
        ("random", 8, 0.99),  # clamped to N - 1
        ("random", 28, 0.2),
        ("box", 14, 0.25),  # 49 = 7 x 7
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


@pytest.mark.parametrize("ratio", [4 / 7, 0.99])
def test_box_is_a_region_never_a_stripe_across_the_image(ratio: float) -> None:
    # the paper's "region box" ablation is a CutMix box: never as wide or as tall as the image
    masks = token_masks(200, 14, ratio, mode="box", generator=_gen())
    assert (masks.any(2).sum(1) < 14).all() and (masks.any(1).sum(1) < 14).all()
    if ratio == 4 / 7:
        assert (masks.sum((1, 2)) == 110).all()  # 10 x 11, the closest admissible box to 112
    assert (masks.sum((1, 2)) < 196).all()


def test_block_masks_follow_the_reference_procedure_in_distribution() -> None:
    # the vectorised generator must draw the same kind of masks as the sequential procedure:
    # compare the shape statistics of 1,500 masks from each at the reference's 112 of 196 tokens
    rng = np.random.default_rng(0)
    reference = torch.from_numpy(np.stack([_reference_block_mask(14, 112, rng) for _ in range(1500)]))
    ours = token_masks(1500, 14, 4 / 7, mode="block", generator=_gen(2))
    ref_parts, our_parts = count_parts(reference).float(), count_parts(ours).float()
    assert abs(ref_parts.mean() - our_parts.mean()) < 0.12  # both about 2.5
    for n_parts in (1, 2, 3):
        assert abs((ref_parts == n_parts).float().mean() - (our_parts == n_parts).float().mean()) < 0.05
    assert abs(_perimeter(reference).mean() - _perimeter(ours).mean()) < 1.5  # about 54 cell edges
    # where the partner shows: corners rarely, the centre mostly (the same border effect)
    for cells in ((slice(0, 2), slice(0, 2)), (slice(5, 9), slice(5, 9))):
        ref_rate = reference[:, cells[0], cells[1]].float().mean()
        assert abs(ref_rate - ours[:, cells[0], cells[1]].float().mean()) < 0.03


def test_masks_need_a_cpu_generator() -> None:
    # no accelerator on the test machines: a stand-in that only carries a CUDA device
    class CudaGenerator:
        device = torch.device("cuda")

    with pytest.raises(ValueError, match="generator must be a CPU"):
        token_masks(2, 4, 0.5, generator=CudaGenerator())  # type: ignore[arg-type]


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
        ({"grid": 65}, "grid"),
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
