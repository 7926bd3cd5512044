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


@pytest.mark.parametrize("groups", [None, G])  # the ungrouped path and the grouped one
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
