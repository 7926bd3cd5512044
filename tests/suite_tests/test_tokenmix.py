from __future__ import annotations

import pytest
import torch

import suite  # noqa: F401 - torchvision shim before timm
import suite.mixing.tokenmix as tokenmix_module
from suite.mixing.masks import token_masks
from suite.mixing.tokenmix import TokenMix, mix_tokens_


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _distinct_batch(b: int, size: int, channels: int = 3) -> torch.Tensor:
    """Every pixel value is unique, so each output pixel tells which image it came from."""
    return torch.arange(b * channels * size * size, dtype=torch.float32).view(b, channels, size, size)


def _source_tokens(x_old: torch.Tensor, x_new: torch.Tensor, grid: int) -> torch.Tensor:
    """Per token: True if all its pixels are the partner's, False if all are the image's own.

    Fails if a token block holds anything else (a pixel from neither image, or a mix of both).
    """
    b, c, h, w = x_old.shape
    own = (x_new == x_old).unflatten(3, (grid, w // grid)).unflatten(2, (grid, h // grid))
    partner = (x_new == x_old.flip(0)).unflatten(3, (grid, w // grid)).unflatten(2, (grid, h // grid))
    assert torch.all(own | partner), "a pixel comes from neither the image nor its partner"
    all_own = own.all(5).all(3).all(1)
    all_partner = partner.all(5).all(3).all(1)
    assert torch.all(all_own | all_partner), "a token block is not aligned with the token grid"
    return all_partner


@pytest.mark.parametrize("chunk", [None, 1, 3, "half"])
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("b, size, grid", [(6, 56, 14), (16, 32, 8), (2, 20, 5)])
def test_mixed_pixels_are_exact_copies_as_the_mask_says(
    monkeypatch: pytest.MonkeyPatch, chunk: int | str | None, shared: bool, b: int, size: int, grid: int
) -> None:
    if chunk is not None:  # the CPU cache blocking, and the one-chunk path used on accelerators
        monkeypatch.setattr(
            tokenmix_module, "_pairs_per_chunk", lambda x: b // 2 if chunk == "half" else chunk
        )
    mask = token_masks(b, grid, 0.4, per_sample=not shared, generator=_gen())
    x = _distinct_batch(b, size)
    old = x.clone()
    out = mix_tokens_(x, mask)
    assert out is x
    assert torch.equal(_source_tokens(old, x, grid), mask.expand(b, grid, grid))


@pytest.mark.parametrize("mask_mode", ["block", "random", "box"])
@pytest.mark.parametrize("per_sample", [True, False])
@pytest.mark.parametrize("ratio", [4 / 7, (0.2, 0.8)])
def test_area_target_equals_the_visible_partner_fraction(mask_mode: str, per_sample: bool, ratio) -> None:
    b, grid = 8, 7
    mix = TokenMix(
        num_classes=10,
        mask_mode=mask_mode,
        mask_ratio=ratio,
        token_grid=grid,
        per_sample=per_sample,
        target="area",
        label_smoothing=0.0,
    )
    x = _distinct_batch(b, 28)
    old = x.clone()
    y = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    out, target, stats = mix(x, y, generator=_gen(1))
    partner = _source_tokens(old, out, grid)
    fraction = partner.float().mean((1, 2))
    rows = torch.arange(b)
    assert torch.allclose(target[rows, y], 1 - fraction)
    assert torch.allclose(target[rows, y.flip(0)], fraction)
    assert torch.allclose(target.sum(1), torch.ones(b))
    assert float(stats["partner_fraction"]) == pytest.approx(fraction.mean().item())
    assert int(stats["fallbacks"]) == 0
    if per_sample:
        assert len({tuple(m.flatten().tolist()) for m in partner}) > 1
    else:
        assert torch.equal(partner, partner[:1].expand_as(partner))


def test_the_mask_drawn_is_token_masks_with_the_same_generator() -> None:
    mix = TokenMix(num_classes=3, token_grid=4, per_sample=True, target="area")
    x = _distinct_batch(4, 16)
    old = x.clone()
    mix(x, torch.tensor([0, 1, 2, 0]), generator=_gen(5))
    expected = token_masks(4, 4, 4 / 7, per_sample=True, generator=_gen(5))
    assert torch.equal(_source_tokens(old, x, 4), expected)


@pytest.mark.parametrize("rule", ["teacher_raw", "teacher_norm", "mixed"])
def test_teacher_targets_and_fallback_count(rule: str) -> None:
    b, grid = 6, 4
    maps = torch.rand(b, grid, grid, generator=_gen(2))
    maps[1] = 0.0  # no signal for sample 1: it and its partner (4) fall back to area
    mix = TokenMix(
        num_classes=6, token_grid=grid, per_sample=True, target=rule, label_smoothing=0.0
    )
    x = _distinct_batch(b, 16)
    old = x.clone()
    y = torch.arange(b)
    _, target, stats = mix(x, y, maps=maps, generator=_gen(3))
    assert int(stats["fallbacks"]) == 2
    partner = _source_tokens(old, x, grid).float()
    a = maps / maps.sum((1, 2), keepdim=True).clamp_min(1e-12)
    w_own = (a * (1 - partner)).sum((1, 2))
    w_partner = (a.flip(0) * partner).sum((1, 2))
    for i in (0, 2):
        own, other = w_own[i].item(), w_partner[i].item()
        if rule != "teacher_raw":
            own, other = own / (own + other), other / (own + other)
        if rule == "mixed":
            f = partner[i].mean().item()
            own, other = (own + 1 - f) / 2, (other + f) / 2
        assert target[i, y[i]].item() == pytest.approx(own, abs=1e-5)
        assert target[i, y.flip(0)[i]].item() == pytest.approx(other, abs=1e-5)
    f1 = partner[1].mean().item()
    assert target[1, y[1]].item() == pytest.approx(1 - f1, abs=1e-6)  # area fallback


def test_same_seed_same_result() -> None:
    mix = TokenMix(num_classes=5, token_grid=8, per_sample=True, target="area")
    x = torch.randn(8, 3, 32, 32, generator=_gen(4))
    y = torch.randint(0, 5, (8,), generator=_gen(4))
    a = mix(x.clone(), y, generator=_gen(9))
    b = mix(x.clone(), y, generator=_gen(9))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"num_classes": 0}, "num_classes"),
        ({"mask_mode": "grid"}, "mask_mode"),
        ({"mask_ratio": 1.3}, "mask_ratio"),
        ({"mask_ratio": (0.8, 0.2)}, "mask_ratio"),
        ({"token_grid": 1}, "token_grid"),
        ({"token_grid": 65}, "token_grid"),
        ({"min_aspect": 0}, "min_aspect"),
        ({"per_sample": "yes"}, "per_sample"),
        ({"target": "auto"}, "target"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
    ],
)
def test_bad_constructor_arguments_raise_value_error_naming_them(kwargs: dict, name: str) -> None:
    args = {"num_classes": 10} | kwargs
    with pytest.raises(ValueError, match=name):
        TokenMix(**args)


def test_ratio_message_is_optuna_style() -> None:
    with pytest.raises(ValueError, match=r"mask_ratio must be in \(0, 1\), but got mask_ratio=1.3"):
        TokenMix(num_classes=10, mask_ratio=1.3)


@pytest.mark.parametrize(
    "x, y, maps, match",
    [
        (torch.randn(3, 3, 32, 32), torch.zeros(3, dtype=torch.long), None, "even"),
        (torch.randn(2, 3, 30, 32), torch.zeros(2, dtype=torch.long), None, "divisible"),
        (torch.randn(2, 3, 32, 32), torch.zeros(3, dtype=torch.long), None, "y must"),
        (torch.randn(2, 3, 32, 32), torch.zeros(2, dtype=torch.long), None, "maps"),
        (torch.randn(2, 3, 32, 32), torch.zeros(2, dtype=torch.long), torch.rand(2, 8, 8), "maps"),
    ],
)
def test_bad_call_arguments(x: torch.Tensor, y: torch.Tensor, maps: torch.Tensor | None, match: str) -> None:
    mix = TokenMix(num_classes=3, token_grid=4, target="teacher_raw")
    with pytest.raises(ValueError, match=match):
        mix(x, y, maps=maps, generator=_gen())
