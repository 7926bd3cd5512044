"""mix.groups: one switch draw, one lam and one mask per group of G images, partners inside the group."""

from __future__ import annotations

import pytest
import torch

from suite.config import ConfigError, MixConfig, load_config
from suite.mixing.mixer import BatchMixer
from suite.mixing.tokenmix import group_partners, mix_tokens_

B, G, GRID = 16, 4, 4


def _mixer(teacher: object | None = None, **kwargs: object) -> BatchMixer:
    fields = {"method": "tokenmix", "groups": G, "token_grid": GRID, "mask_mode": "random", "target": "area"}
    return BatchMixer(MixConfig(**(fields | kwargs)), num_classes=B, teacher=teacher)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Image i is the constant i + 1 (so every pixel says which image it came from); label i."""
    x = (torch.arange(B, dtype=torch.float32) + 1).view(B, 1, 1, 1).expand(B, 3, 8, 8).contiguous()
    return x, torch.arange(B)


def test_group_partners_mirror_inside_each_group() -> None:
    assert group_partners(8, 4).tolist() == [3, 2, 1, 0, 7, 6, 5, 4]
    assert torch.equal(group_partners(8, 8), torch.arange(8).flip(0))
    for bad in (3, 0, 6):
        with pytest.raises(ValueError, match="group_size|multiple"):
            group_partners(8, bad)


def test_mix_tokens_pairs_inside_each_group_with_one_mask_per_group() -> None:
    x, _ = _batch()
    masks = torch.zeros(B // G, GRID, GRID, dtype=torch.bool)
    masks[0, 0, 0] = True  # group 0: one cell from the partner
    masks[1] = True  # group 1 (images 4..7): every cell from the partner
    mix_tokens_(x, masks, group_size=G)
    assert x[0, :, :2, :2].eq(4.0).all() and x[0, :, 2:].eq(1.0).all()  # partner of 0 is 3, not 15
    assert x[3, :, :2, :2].eq(1.0).all() and x[3, :, 2:].eq(4.0).all()
    assert [float(x[i, 0, 0, 0]) for i in range(4, 8)] == [8.0, 7.0, 6.0, 5.0]
    assert x[8:].eq(torch.arange(9, B + 1, dtype=torch.float32).view(-1, 1, 1, 1)).all()  # empty masks
    with pytest.raises(ValueError, match="group_size"):
        mix_tokens_(x, masks, group_size=3)


def _cells(x: torch.Tensor) -> torch.Tensor:
    """Per image and token cell, the source value (the 2 x 2 pixel block is constant)."""
    return x[:, 0, ::2, ::2]


def test_groups_draw_their_own_branch_mask_and_partners() -> None:
    partner = group_partners(B, G)
    seen_branches = set()
    for seed in range(20):
        x, y = _batch()
        out, target, stats = _mixer(switch_prob=0.5)(x, y, generator=torch.Generator().manual_seed(seed))
        cells = _cells(out)
        own = (torch.arange(B, dtype=torch.float32) + 1).view(B, 1, 1)
        other = own[partner]
        branches, masks = [], []
        for g in range(B // G):
            rows = slice(g * G, (g + 1) * G)
            from_own, from_partner = cells[rows] == own[rows], cells[rows] == other[rows]
            if (from_own | from_partner).all() and from_partner.any():  # TokenMix: exact copies
                assert (from_partner == from_partner[0]).all()  # one mask for the whole group
                masks.append(from_partner[0])
                branches.append("tokenmix")
                share = from_partner[0].float().mean()
                assert torch.allclose(target[rows][torch.arange(G), y[rows]], torch.full((G,), 0.9 * (1 - share) + 0.1 / B))
                assert torch.allclose(target[rows][torch.arange(G), partner[rows]], torch.full((G,), 0.9 * share + 0.1 / B))
            else:  # Mixup: every cell the same blend of the image and its in-group partner
                lam = (cells[rows] - other[rows]) / (own[rows] - other[rows])
                assert torch.allclose(lam, lam.flatten()[0].expand_as(lam), atol=1e-5)
                branches.append("mixup")
        assert int(stats["tokenmix_groups"]) == branches.count("tokenmix")
        if len(masks) >= 2:
            assert not all(torch.equal(masks[0], m) for m in masks[1:])  # independent masks
        seen_branches.add(tuple(branches))
    assert any(len(set(b)) == 2 for b in seen_branches)  # both branches inside one batch


def test_group_draws_come_only_from_the_step_seeds() -> None:
    """The switch and the masks come from the step's generator, Mixup's lam from numpy (as timm
    draws it; the trainer seeds both per step): torch's global state plays no part."""
    import numpy as np

    runs = []
    for _ in range(2):
        x, y = _batch()
        torch.manual_seed(123)  # global state must not matter
        np.random.seed(5)
        runs.append(_mixer(mixup_alpha=0.8)(x, y, generator=torch.Generator().manual_seed(7))[:2])
        torch.manual_seed(456)
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    x, y = _batch()
    np.random.seed(5)
    other = _mixer(mixup_alpha=0.8)(x, y, generator=torch.Generator().manual_seed(8))[0]
    assert not torch.equal(other, runs[0][0])


class _RecordingTeacher:
    def __init__(self) -> None:
        self.seen: list[list[int]] = []

    def maps(self, x: torch.Tensor, y: torch.Tensor, grid: int, *, geometry: torch.Tensor | None = None) -> torch.Tensor:
        self.seen.append(y.tolist())
        return torch.ones(len(y), grid, grid)


def test_the_teacher_sees_only_the_images_of_tokenmix_groups() -> None:
    teacher = _RecordingTeacher()
    mixer = _mixer(teacher=teacher, target="teacher_norm")
    for seed in range(10):
        x, y = _batch()
        _, target, stats = mixer(x, y, generator=torch.Generator().manual_seed(seed))
        if int(stats["tokenmix_groups"]):
            seen = teacher.seen.pop()
            assert len(seen) == G * int(stats["tokenmix_groups"])
            assert all(len({i // G for i in seen[k : k + G]}) == 1 for k in range(0, len(seen), G))  # whole groups
        assert int(stats["fallbacks"]) == 0
        torch.testing.assert_close(target.sum(1), torch.ones(B))


class _BlindTeacher:
    """Maps with no positive mass for even labels (the class is nowhere among the teacher's top-k)."""

    def maps(self, x: torch.Tensor, y: torch.Tensor, grid: int, *, geometry: torch.Tensor | None = None) -> torch.Tensor:
        return (y % 2).float().view(-1, 1, 1).expand(len(y), grid, grid).contiguous()


@pytest.mark.parametrize("groups", [None, G])  # one group (no groups) and several
def test_teacher_fallback_option_reaches_both_tokenmix_paths(groups: int | None) -> None:
    """``teacher.fallback=zero`` (the reference): an image whose map has no mass gets weight 0 for
    its own label; with ``area`` (the default) it is labelled by area."""
    for fallback in ("area", "zero"):
        mixer = BatchMixer(
            MixConfig(
                method="tokenmix", groups=groups, token_grid=GRID, mask_mode="random", target="teacher_raw",
                prob=1.0, mixup_alpha=0.0,
            ),
            num_classes=B,
            teacher=_BlindTeacher(),
            fallback=fallback,
        )
        x, y = _batch()
        _, target, stats = mixer(x, y, generator=torch.Generator().manual_seed(0))
        assert int(stats["fallbacks"]) == B  # partners i and B-1-i: every pair has an even label
        own = target[torch.arange(B), y]
        blind = y % 2 == 0
        if fallback == "zero":
            assert torch.all(own[blind] == 0.1 / B - 0.05)  # smoothing 0.1: off + (0 - smoothing / 2)
        else:
            assert torch.all(own[blind] > 0.3)  # the area share (1 - 4/7 of the tokens), smoothed


def test_groups_config_checks() -> None:
    cfg = load_config(None, ["mix.method=tokenmix", "mix.groups=32", "data.batch_size=128"])
    assert cfg.mix.groups == 32
    for bad in (["mix.groups=3"], ["mix.groups=48"]):
        with pytest.raises(ConfigError, match="mix.groups must be even and divide data.batch_size=128"):
            load_config(None, ["mix.method=tokenmix", "data.batch_size=128", *bad])
    # the Mixup branch of TokenMix groups is timm's, once per group: every timm mode works there
    assert load_config(None, ["mix.method=tokenmix", "mix.groups=32", "mix.mode=pair"]).mix.mode == "pair"


@pytest.mark.parametrize("method", ["mixup", "cutmix"])
def test_timm_methods_mix_inside_each_group(method: str) -> None:
    x, y = _batch()
    mixer = BatchMixer(MixConfig(method=method, groups=G), num_classes=B)
    torch.manual_seed(0)
    import numpy as np
    import random

    np.random.seed(0), random.seed(0)
    out, target, _ = mixer(x, y, generator=torch.Generator().manual_seed(0))
    partner = group_partners(B, G)
    allowed = torch.stack([y + 1, partner + 1], 1).float()
    for i in range(B):
        assert target[i].topk(2).indices.sort().values.tolist() == sorted({i, int(partner[i])})
        values = out[i].unique()
        lo, hi = allowed[i].min(), allowed[i].max()
        assert ((values >= lo - 1e-5) & (values <= hi + 1e-5)).all()  # only this image and its in-group partner


def test_grouped_tokenmix_resumes_exactly(tiny_overrides: list[str], tmp_path) -> None:
    from suite.run.records import read_run
    from suite.train.trainer import train
    from tests.helpers import StopAfter

    grouped = [*tiny_overrides, "mix.method=tokenmix", "mix.groups=8", "mix.mask_ratio=[0.3,0.7]", "schedule.epochs=1"]
    reference = train(load_config(None, [*grouped, f"run.output_root={tmp_path / 'ref'}"]))
    cfg = load_config(None, [*grouped, f"run.output_root={tmp_path / 'int'}"])
    train(cfg, stop=StopAfter(3))
    assert "top1" not in (read_run(cfg.run.output_root / reference.run_dir.name).summary or {})
    resumed = train(cfg)
    for key in ("top1", "val_loss"):
        assert resumed.summary[key] == reference.summary[key], key
    assert [r["train_loss"] for r in read_run(resumed.run_dir).metrics] == [
        r["train_loss"] for r in read_run(reference.run_dir).metrics
    ]


class _LabelTeacher:
    """A distinct, fixed map per class (so a slice of the batch gets the same maps as the whole),
    recording the labels and geometry rows it was shown."""

    def __init__(self) -> None:
        self.seen: list[tuple[list[int], torch.Tensor | None]] = []

    def maps(self, x: torch.Tensor, y: torch.Tensor, grid: int, *, geometry: torch.Tensor | None = None) -> torch.Tensor:
        self.seen.append((y.tolist(), None if geometry is None else geometry.clone()))
        table = torch.rand(B, grid, grid, generator=torch.Generator().manual_seed(11)) ** 2
        return table[y]


class _FixedMasks:
    """Stands in for ``token_masks`` so two calls can be given the same masks (the draw itself is
    pinned by the golden file); counts every call."""

    def __init__(self, masks: torch.Tensor) -> None:
        self.masks, self.calls = masks, []

    def __call__(self, batch: int, grid: int, ratio: object, **kwargs: object) -> torch.Tensor:
        start = sum(self.calls)
        self.calls.append(batch)
        return self.masks[start : start + batch].clone()


@pytest.mark.parametrize("target", ["area", "teacher_raw", "teacher_norm", "mixed"])
@pytest.mark.parametrize("per_sample", [False, True])
def test_each_group_mixes_as_an_ungrouped_batch_of_its_images(
    monkeypatch: pytest.MonkeyPatch, target: str, per_sample: bool
) -> None:
    """Every group is mixed and labelled exactly as the (golden-pinned) ungrouped path would mix
    a batch of just its images with the same mask(s): partners inside the group, the group's own
    mask (or its images' masks with ``per_sample``), the teacher's map of each image."""
    import suite.mixing.tokenmix as tokenmix

    n = B if per_sample else B // G
    masks = torch.rand(n, GRID, GRID, generator=torch.Generator().manual_seed(3)) < 0.5
    fields = {"prob": 1.0, "switch_prob": 1.0, "target": target, "per_sample": per_sample}

    monkeypatch.setattr(tokenmix, "token_masks", fixed := _FixedMasks(masks))
    x, y = _batch()
    y = (y * 5) % B  # labels that are not the positions
    out, soft, stats = _mixer(_LabelTeacher(), **fields)(x, y, generator=torch.Generator().manual_seed(0))
    assert fixed.calls == [n] and stats["branch"] == "tokenmix"

    per_group = n // (B // G)
    for k in range(B // G):
        rows = slice(k * G, (k + 1) * G)
        monkeypatch.setattr(tokenmix, "token_masks", _FixedMasks(masks[k * per_group : (k + 1) * per_group]))
        xs, _ = _batch()
        alone = _mixer(_LabelTeacher(), **fields, groups=None)
        x_alone, soft_alone, _ = alone(xs[rows].clone(), y[rows], generator=torch.Generator().manual_seed(0))
        assert torch.equal(out[rows], x_alone), k
        torch.testing.assert_close(soft[rows], soft_alone, rtol=0, atol=1e-6)
    # and not what one group of the whole batch gives: the partners and masks are the group's
    assert set(torch.unique(out[:G]).tolist()) <= {1.0, 2.0, 3.0, 4.0}


def test_the_teacher_gets_the_geometry_rows_of_the_images_it_labels() -> None:
    teacher = _LabelTeacher()
    mixer = _mixer(teacher=teacher, target="teacher_norm", switch_prob=0.5, mixup_alpha=0.8)
    geometry = torch.arange(B, dtype=torch.float32).view(B, 1).expand(B, 4).contiguous()
    partial = 0
    for seed in range(12):
        x, y = _batch()
        _, _, stats = mixer(x, y, generator=torch.Generator().manual_seed(seed), geometry=geometry)
        if int(stats["tokenmix_groups"]):
            labels, rows = teacher.seen.pop()
            assert rows is not None and rows[:, 0].tolist() == [float(i) for i in labels]  # row i for image i
            partial += 0 < int(stats["tokenmix_groups"]) < B // G
    assert partial  # some steps labelled only a subset of the groups


@pytest.mark.parametrize("mode", ["pair", "elem"])
def test_mixup_groups_of_tokenmix_honour_the_timm_mode(mode: str) -> None:
    """``mix.mode`` reaches TokenMix's Mixup branch: ``elem`` draws a lam per image, ``pair`` one
    per pair (image and partner share it); partners stay inside the group."""
    import numpy as np

    np.random.seed(0)
    mixer = _mixer(prob=1.0, switch_prob=0.0, mixup_alpha=0.8, mode=mode)
    x, y = _batch()
    out, soft, stats = mixer(x, y, generator=torch.Generator().manual_seed(0))
    assert stats["branch"] == "mixup"
    partner = group_partners(B, G)
    own = torch.arange(B, dtype=torch.float32) + 1
    lam = (out[:, 0, 0, 0] - own[partner]) / (own - own[partner])
    blend = lam * own + (1 - lam) * own[partner]  # every pixel: this image and its in-group partner
    torch.testing.assert_close(out, blend.view(B, 1, 1, 1).expand_as(out))
    torch.testing.assert_close(soft[torch.arange(B), y], lam * 0.9 + 0.1 / B, rtol=0, atol=1e-5)
    if mode == "pair":
        torch.testing.assert_close(lam, lam[partner], rtol=0, atol=1e-5)
    assert len({round(float(v), 5) for v in lam}) > B // 4  # not one lam per group (batch mode)


def test_tokenmix_refuses_a_group_size_that_does_not_fit() -> None:
    from suite.mixing.tokenmix import TokenMix

    mix = TokenMix(num_classes=B, token_grid=GRID, mask_mode="random", target="area")
    for bad in (3, 6, 0, 32):
        x, y = _batch()
        with pytest.raises(ValueError, match="group_size"):
            mix(x, y, generator=torch.Generator().manual_seed(0), group_size=bad)
