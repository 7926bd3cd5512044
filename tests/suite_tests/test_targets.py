from __future__ import annotations

import pytest
import torch

import suite  # noqa: F401 - torchvision shim before timm
from suite.mixing.masks import token_masks
from suite.mixing.targets import mix_weights, mixed_target

# Two images on a 2 x 2 grid; each map sums to 1.
MAPS = torch.tensor(
    [
        [[0.4, 0.1], [0.3, 0.2]],
        [[0.1, 0.2], [0.3, 0.4]],
    ]
)
MASK = torch.tensor(
    [
        [[True, False], [False, False]],  # image 0 shows its partner's top-left token
        [[False, False], [False, True]],  # image 1 shows its partner's bottom-right token
    ]
)
# by hand: w_own = own mass outside the mask, w_partner = partner mass inside it
RAW_OWN, RAW_PARTNER = [0.6, 0.6], [0.1, 0.2]


@pytest.mark.parametrize(
    "target, own, partner",
    [
        ("area", [0.75, 0.75], [0.25, 0.25]),
        ("teacher_raw", RAW_OWN, RAW_PARTNER),
        ("teacher_norm", [0.6 / 0.7, 0.6 / 0.8], [0.1 / 0.7, 0.2 / 0.8]),
        (
            "mixed",
            [(0.6 / 0.7 + 0.75) / 2, (0.6 / 0.8 + 0.75) / 2],
            [(0.1 / 0.7 + 0.25) / 2, (0.2 / 0.8 + 0.25) / 2],
        ),
    ],
)
@pytest.mark.parametrize("scale", [1.0, 5.0])  # maps need not be normalised
def test_weights_match_a_hand_computed_example(target: str, own: list, partner: list, scale: float) -> None:
    w_own, w_partner, fallback = mix_weights(MASK, MAPS * scale, target)
    assert w_own.tolist() == pytest.approx(own)
    assert w_partner.tolist() == pytest.approx(partner)
    assert not fallback.any()


def test_negative_map_values_are_ignored() -> None:
    noisy = MAPS.clone()
    noisy[0, 1, 1] = -3.0
    w_own, _, _ = mix_weights(MASK, noisy, "teacher_raw")
    assert w_own[0].item() == pytest.approx((0.1 + 0.3) / 0.8)  # the negative cell counts as 0


@pytest.mark.parametrize("per_sample", [True, False])
def test_area_weights_equal_the_mask_fraction(per_sample: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    mask = token_masks(8, 14, (0.2, 0.8), per_sample=per_sample, generator=gen)
    w_own, w_partner, fallback = mix_weights(mask, None, "area")
    fraction = mask.float().mean((1, 2))
    assert torch.allclose(w_partner, fraction)
    assert torch.allclose(w_own, 1 - fraction)
    y = torch.arange(8)
    target = mixed_target(y, w_own, w_partner, 10, 0.0, target="area")
    expected_fraction = fraction.expand(8)
    assert torch.allclose(target[torch.arange(8), y], 1 - expected_fraction)
    assert torch.allclose(target[torch.arange(8), y.flip(0)], expected_fraction)
    assert torch.allclose(target.sum(1), torch.ones(8))


@pytest.mark.parametrize("target", ["teacher_norm", "mixed", "area"])
def test_normalised_weights_sum_to_one(target: str) -> None:
    gen = torch.Generator().manual_seed(1)
    mask = token_masks(16, 7, 0.5, generator=gen)
    maps = torch.rand(16, 7, 7, generator=gen) ** 4
    w_own, w_partner, _ = mix_weights(mask, maps, target)
    assert torch.allclose(w_own + w_partner, torch.ones(16))
    soft = mixed_target(torch.randint(0, 5, (16,), generator=gen), w_own, w_partner, 5, 0.1, target=target)
    assert torch.allclose(soft.sum(1), torch.ones(16))


def test_raw_weights_are_not_normalised() -> None:
    gen = torch.Generator().manual_seed(2)
    mask = token_masks(16, 7, 0.5, generator=gen)
    maps = torch.rand(16, 7, 7, generator=gen) ** 4
    w_own, w_partner, _ = mix_weights(mask, maps, "teacher_raw")
    total = w_own + w_partner
    assert (total >= 0).all() and (total <= 2).all()
    assert (total - 1).abs().max() > 0.05


@pytest.mark.parametrize("target", ["teacher_raw", "teacher_norm", "mixed"])
@pytest.mark.parametrize("zero, flagged", [(0, [0, 3]), (2, [1, 2])])
def test_map_without_mass_falls_back_to_area(target: str, zero: int, flagged: list) -> None:
    gen = torch.Generator().manual_seed(3)
    mask = token_masks(4, 4, 0.5, generator=gen)
    maps = torch.rand(4, 4, 4, generator=gen)
    maps[zero] = 0.0
    maps[zero, 0, 0] = -1.0  # no positive mass either
    w_own, w_partner, fallback = mix_weights(mask, maps, target)
    assert fallback.nonzero().view(-1).tolist() == flagged  # the sample and the one it is mixed with
    area_own, area_partner, _ = mix_weights(mask, None, "area")
    assert torch.allclose(w_own[fallback], area_own[fallback])
    assert torch.allclose(w_partner[fallback], area_partner[fallback])


def test_teacher_weights_that_sum_to_zero_fall_back() -> None:
    # own activation fully covered, partner activation fully outside the mask
    maps = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]])
    mask = torch.tensor([[[True, False], [False, False]], [[True, False], [False, False]]])
    w_own, w_partner, fallback = mix_weights(mask, maps, "teacher_raw")
    assert fallback.tolist() == [True, False]
    assert (w_own[0].item(), w_partner[0].item()) == pytest.approx((0.75, 0.25))


def test_reference_rule_keeps_negative_values_and_divides_by_the_signed_sum() -> None:
    """``clamp_negative=False`` is the reference's normalisation: a cell voting against the class
    lowers the weight of the part that shows it."""
    noisy = MAPS.clone()
    noisy[0, 1, 1] = -0.2  # image 0: 0.4 + 0.1 + 0.3 - 0.2 = 0.6
    w_own, w_partner, fallback = mix_weights(MASK, noisy, "teacher_raw", clamp_negative=False)
    assert w_own[0].item() == pytest.approx((0.1 + 0.3 - 0.2) / 0.6)  # own visible: all but the top-left cell
    assert w_partner[1].item() == pytest.approx(-0.2 / 0.6)  # image 1 shows image 0's negative cell
    assert not fallback.any()
    clamped, _, _ = mix_weights(MASK, noisy, "teacher_raw")
    assert clamped[0].item() == pytest.approx((0.1 + 0.3) / 0.8)


@pytest.mark.parametrize("clamp_negative", [True, False])
def test_zero_fallback_gives_the_own_label_weight_zero_and_keeps_the_partners(clamp_negative: bool) -> None:
    """The reference's ``fallback="zero"``: an image whose map has no mass gets weight 0 for its own
    label; its partner's label keeps the weight of the partner's visible activation."""
    maps = MAPS.clone()
    maps[0] = 0.0
    maps[0, 0, 0] = -1.0  # no positive mass, clamped or not
    w_own, w_partner, fallback = mix_weights(MASK, maps, "teacher_raw", fallback="zero", clamp_negative=clamp_negative)
    assert fallback.tolist() == [True, True]  # flagged either way, so training counts it
    assert w_own[0].item() == 0.0 and w_partner[0].item() == pytest.approx(RAW_PARTNER[0])
    assert w_own[1].item() == pytest.approx(RAW_OWN[1]) and w_partner[1].item() == 0.0
    norm_own, norm_partner, _ = mix_weights(MASK, maps, "teacher_norm", fallback="zero")
    assert (norm_own[0].item(), norm_partner[0].item()) == (0.0, 1.0)
    assert (norm_own[1].item(), norm_partner[1].item()) == (1.0, 0.0)


def test_zero_fallback_with_no_teacher_weight_at_all_gives_zero_weights() -> None:
    maps = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]])
    mask = torch.tensor([[[True, False], [False, False]], [[True, False], [False, False]]])
    w_own, w_partner, fallback = mix_weights(mask, maps, "teacher_norm", fallback="zero")
    assert fallback.tolist() == [True, False]
    assert (w_own[0].item(), w_partner[0].item()) == (0.0, 0.0)


def test_unknown_fallback_is_refused() -> None:
    with pytest.raises(ValueError, match="fallback must be one of area, zero"):
        mix_weights(MASK, MAPS, "teacher_raw", fallback="partner")  # type: ignore[arg-type]


@pytest.mark.parametrize("target", ["teacher_raw", "teacher_norm", "mixed"])
def test_teacher_targets_need_maps(target: str) -> None:
    with pytest.raises(ValueError, match="maps"):
        mix_weights(MASK, None, target)


def test_unknown_target_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="area, teacher_raw, teacher_norm, mixed"):
        mix_weights(MASK, MAPS, "teacher")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="target must be one of"):
        mixed_target(torch.tensor([0, 1]), torch.ones(2), torch.zeros(2), 3, 0.0, target="cutmix")  # type: ignore


@pytest.mark.parametrize("target", ["area", "teacher_norm", "mixed"])
@pytest.mark.parametrize("lam, smoothing", [(0.3, 0.1), (1.0, 0.0), (0.5, 0.2)])
def test_normalised_targets_use_timm_smoothing(target: str, lam: float, smoothing: float) -> None:
    from timm.data.mixup import mixup_target

    y = torch.tensor([3, 1, 4, 1, 5, 9])
    w_own = torch.full((6,), lam)
    soft = mixed_target(y, w_own, 1 - w_own, 10, smoothing, target=target)
    assert torch.allclose(soft, mixup_target(y, 10, lam=lam, smoothing=smoothing), atol=1e-6)


def _reference_rule(
    y: torch.Tensor, w_own: torch.Tensor, w_partner: torch.Tensor, c: int, eps: float
) -> torch.Tensor:
    """The reference's description: two one-hots, on = w - eps/2 + off/2, off = off/2, added."""
    off = eps / c
    y1 = torch.full((len(y), c), off / 2)
    y1[torch.arange(len(y)), y] = w_own - eps / 2 + off / 2
    y2 = torch.full((len(y), c), off / 2)
    y2[torch.arange(len(y)), y.flip(0)] = w_partner - eps / 2 + off / 2
    return y1 + y2


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_raw_target_smooths_like_the_reference(smoothing: float) -> None:
    y = torch.tensor([0, 2, 2, 1])  # samples 1 and 2 are partners with the same label
    w_own = torch.tensor([0.6, 0.5, 0.9, 0.0])
    w_partner = torch.tensor([0.1, 0.4, 0.2, 0.7])
    target = mixed_target(y, w_own, w_partner, 4, smoothing, target="teacher_raw")
    assert torch.allclose(target, _reference_rule(y, w_own, w_partner, 4, smoothing), atol=1e-6)
    assert torch.allclose(target.sum(1), w_own + w_partner)


def test_raw_target_hand_example_and_negative_entries() -> None:
    target = mixed_target(
        torch.tensor([0, 1]), torch.tensor(RAW_OWN), torch.tensor([0.1, 0.0]), 4, 0.1, target="teacher_raw"
    )
    off = 0.1 / 4
    assert target[0].tolist() == pytest.approx([0.6 - 0.05 + off, 0.1 - 0.05 + off, off, off])
    # a partner weight below eps/2 - off gives a negative entry, as in the reference
    assert target[1, 0].item() == pytest.approx(-0.05 + off)
    assert target[1, 0].item() < 0


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"num_classes": 0}, "num_classes"),
        ({"smoothing": 1.0}, "smoothing"),
        ({"smoothing": -0.1}, "smoothing"),
    ],
)
def test_bad_target_arguments(kwargs: dict, name: str) -> None:
    args = {"num_classes": 3, "smoothing": 0.1} | kwargs
    with pytest.raises(ValueError, match=name):
        mixed_target(
            torch.tensor([0, 1]),
            torch.ones(2),
            torch.zeros(2),
            args["num_classes"],
            args["smoothing"],
            target="area",
        )
