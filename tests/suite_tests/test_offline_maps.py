"""Offline teacher maps: built once on whole images, cut to each sample's crop while training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from suite.cam import class_activation_maps, raw_activation_maps
from suite.config import ConfigError, load_config
from suite.data import build_data
from suite.geometry import CropFlip
from suite.models import build_model
from suite.offline_maps import META_FILE, OfflineMaps, build_offline_maps, crop_maps, training_set_fingerprint
from suite.records import read_run
from suite.records import RunState
from suite.trainer import train

FULL = [0.0, 0.0, 0.0, 1.0, 1.0, 0.0]  # index, whole image, not flipped


def _where(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_whole_image_crop_gives_the_online_teachers_maps() -> None:
    torch.manual_seed(0)
    model = build_model("cnn_micro", num_classes=10, img_size=32).eval()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 3, 5, 9])
    raw = raw_activation_maps(model, x, y)
    online = class_activation_maps(model, x, y, grid=4)
    offline = crop_maps(raw, _where(*[FULL] * 4), grid=4)
    torch.testing.assert_close(offline, online, atol=0.02, rtol=0.0)
    torch.testing.assert_close(offline.sum((1, 2)), online.sum((1, 2)))  # 1, or 0 without positive mass


def test_maps_follow_the_crop_box_and_the_flip() -> None:
    raw = torch.zeros(1, 8, 8)
    raw[0, 1, 6] = 1.0  # one hot cell near the top right of the whole image
    # crop: the top-right quarter of the image, shown on a 4 x 4 grid
    cut = crop_maps(raw, _where([0, 0.5, 0.0, 1.0, 0.5, 0.0]), grid=4)
    assert divmod(int(cut[0].argmax()), 4) == (1, 2)
    mirrored = crop_maps(raw, _where([0, 0.5, 0.0, 1.0, 0.5, 1.0]), grid=4)
    assert divmod(int(mirrored[0].argmax()), 4) == (1, 1)
    torch.testing.assert_close(mirrored[0], cut[0].flip(-1))
    # a crop that misses the hot cell has no positive mass: all zero, so targets fall back to area
    missed = crop_maps(raw, _where([0, 0.0, 0.5, 0.5, 1.0, 0.0]), grid=4)
    assert missed.abs().sum() == 0


def test_crop_flip_records_where_the_pixels_came_from() -> None:
    ramp = (torch.arange(64) * 4).to(torch.uint8).repeat(3, 64, 1)  # value = 4 * column
    crop = CropFlip(16, scale=(0.2, 0.6), hflip=0.5, interpolation="bilinear")
    seen_flip = set()
    for seed in range(12):
        torch.manual_seed(seed)
        out = crop(ramp).float()
        x0, _, x1, _, flipped = crop.last
        left, right = out[0, :, 0].mean() / 4, out[0, :, -1].mean() / 4  # source columns
        if flipped:
            left, right = right, left
        assert abs(left - x0 * 64) < 3 and abs(right - x1 * 64) < 3
        seen_flip.add(flipped)
    assert seen_flip == {0.0, 1.0}


def test_training_items_carry_their_index_and_crop() -> None:
    cfg = load_config(None, ["data.train_size=64", "data.val_size=32"])
    data = build_data(cfg.data, geometry=True)
    image, label, where = data.train[(5, 123)]
    assert image.shape == (3, 32, 32) and int(where[0]) == 5
    x0, y0, x1, y1, flipped = where[1:].tolist()
    assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 and flipped in (0.0, 1.0)
    again = data.train[(5, 123)]
    torch.testing.assert_close(again[0], image)  # still seeded per sample
    assert len(build_data(cfg.data).train[(5, 123)]) == 2  # plain runs keep (image, label)


def test_folder_pipeline_swaps_timms_crop_for_a_recording_one(image_folder: Path) -> None:
    cfg = load_config(None, [f"data={image_folder}", "data.img_size=32"])
    data = build_data(cfg.data, geometry=True)
    first = data.train.transform.transforms[0]
    assert isinstance(first, CropFlip) and first.interpolation.value == "bicubic"
    assert not any(type(t).__name__ == "RandomHorizontalFlip" for t in data.train.transform.transforms)
    _, _, where = data.train[(0, 1)]
    assert where.shape == (6,)


def test_built_maps_train_a_tokenmix_student(tiny_overrides: list[str], teacher_run: Path, tmp_path: Path) -> None:
    maps_dir = tmp_path / "maps"
    base = [*tiny_overrides, "mix.method=tokenmix", f"teacher={teacher_run}"]
    meta = build_offline_maps(load_config(None, base), maps_dir, batch_size=64)
    assert meta["count"] == 256 and meta["map_size"] == [8, 8] and (maps_dir / META_FILE).is_file()
    stamp = (maps_dir / "maps.npy").stat().st_mtime_ns
    build_offline_maps(load_config(None, base), maps_dir, batch_size=64)  # same inputs: nothing rewritten
    assert (maps_dir / "maps.npy").stat().st_mtime_ns == stamp

    cfg = load_config(None, [*tiny_overrides, "mix.method=tokenmix", f"teacher={maps_dir}", "mix.mixup_alpha=0"])
    assert cfg.teacher.maps == maps_dir and cfg.teacher.checkpoint is None and cfg.mix.target == "teacher_raw"
    result = train(cfg)
    assert result.state is RunState.FINISHED
    rows = read_run(result.run_dir).metrics
    assert all("tokenmix_fallbacks" in r for r in rows)
    assert 0.0 <= result.summary["top1"] <= 100.0


def test_maps_of_another_training_set_are_refused(tiny_overrides: list[str], teacher_run: Path, tmp_path: Path) -> None:
    maps_dir = tmp_path / "maps"
    build_offline_maps(load_config(None, [*tiny_overrides, "mix.method=tokenmix", f"teacher={teacher_run}"]), maps_dir)
    other = load_config(None, [*tiny_overrides, "data.train_size=128", "mix.method=tokenmix", f"teacher={maps_dir}"])
    data = build_data(other.data, geometry=True)
    with pytest.raises(ValueError, match="different training set"):
        OfflineMaps.open(maps_dir, fingerprint=training_set_fingerprint(other.data, data.train), num_classes=10)


def test_bad_maps_settings_fail_in_the_config(tmp_path: Path, teacher_run: Path) -> None:
    with pytest.raises(ConfigError, match="teacher.maps"):
        load_config(None, ["mix.method=tokenmix", f"teacher.maps={tmp_path}"])  # no maps.json
    (tmp_path / META_FILE).write_text(json.dumps({"format": 1}))
    with pytest.raises(ConfigError, match="either teacher.maps or teacher.checkpoint"):
        load_config(None, ["mix.method=tokenmix", f"teacher.maps={tmp_path}", f"teacher.checkpoint={teacher_run}"])


def test_maps_build_command(tiny_overrides: list[str], teacher_run: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    def suite(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "suite.cli", *args], capture_output=True, text=True, timeout=300)

    out = tmp_path / "maps"
    data = [o for o in tiny_overrides if o.startswith("data.")]
    missing = suite("maps", "build", *data, "--out", str(out))
    assert missing.returncode == 2 and "teacher" in missing.stderr and not out.exists()
    done = suite("maps", "build", *data, f"teacher={teacher_run}", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "256 maps of 8x8" in done.stdout and f"teacher.maps={out}" in done.stdout.replace("\n", "")
    assert json.loads((out / META_FILE).read_text())["teacher"]["checkpoint"] == str(teacher_run / "checkpoint.pt")
