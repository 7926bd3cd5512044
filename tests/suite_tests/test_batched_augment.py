"""In-memory training batches augmented a whole batch at a time (suite.data.batched)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from suite.config import load_config
from suite.data.batched import InMemoryBatches, resample_weights
from suite.data.loaders import BUILTIN_STD, build_data, train_loader


@pytest.mark.parametrize("extra", [[], ["data.hflip=0.5", "data.scale=[0.08,1.0]"]])
def test_a_batch_is_the_per_sample_images_of_its_seeds(extra: list[str]) -> None:
    """Same samples, same crop and flip per seed as the per-sample transform; pixels within one
    grey level (that path rounds its resize to uint8, this one keeps float)."""
    cfg = load_config(None, ["data.train_size=256", "data.val_size=16", "data.batch_size=64", *extra])
    bundle = build_data(cfg.data)
    loader = train_loader(bundle, cfg.data, seed=5, epoch=1, start_step=1)
    assert isinstance(loader, InMemoryBatches)
    pairs = list(loader.sampler)
    batches = list(loader)
    assert len(batches) == 3  # 4 steps per epoch, the first skipped
    for n, (x, y) in enumerate(batches):
        samples = [bundle.train[pair] for pair in pairs[64 * n : 64 * (n + 1)]]
        ref = torch.stack([image for image, _ in samples])
        assert torch.equal(y, torch.tensor([label for _, label in samples]))
        grey_levels = ((x - ref) * BUILTIN_STD[0] * 255).abs()
        assert grey_levels.max() <= 1.0 + 1e-3 and grey_levels.mean() < 0.35
    if extra:  # flips were drawn: some samples are mirrored, and the comparison above saw them
        flipped = loader.augment.params([seed for _, seed in pairs], 32, 32)[:, 4]
        assert 0 < int(flipped.sum()) < len(pairs)


def test_resampling_matches_torch_antialiased_resize_when_growing_and_shrinking() -> None:
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 40, 48, generator=gen)
    for top, left, h, w, out in [(3, 5, 17, 30, 24), (0, 0, 40, 48, 24), (10, 2, 9, 11, 24), (0, 0, 40, 48, 64)]:
        rows = resample_weights(torch.tensor([top]), torch.tensor([h]), out, 40)
        cols = resample_weights(torch.tensor([left]), torch.tensor([w]), out, 48)
        got = rows[:, None] @ image @ cols.transpose(1, 2)[:, None]
        crop = image[..., top : top + h, left : left + w]
        want = F.interpolate(crop, size=(out, out), mode="bilinear", align_corners=False, antialias=True)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_per_sample_path_remains_where_the_batch_path_does_not_apply() -> None:
    """Random erasing, offline-map geometry and loader workers keep the per-sample transform."""
    for overrides, geometry in [(["data.random_erasing=0.25"], False), ([], True), (["data.workers=1"], False)]:
        cfg = load_config(None, ["data.train_size=64", "data.val_size=16", "data.batch_size=32", *overrides])
        bundle = build_data(cfg.data, geometry=geometry)
        loader = train_loader(bundle, cfg.data, seed=0, epoch=0)
        assert not isinstance(loader, InMemoryBatches), overrides
        bundle.close()
