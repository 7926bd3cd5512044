"""Offline teacher maps: built once on whole images, cut to each sample's crop while training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from suite.teacher.cam import class_activation_maps, raw_activation_maps
from suite.config import ConfigError, load_config
from suite.data.loaders import build_data
from suite.data.geometry import CropFlip
from suite.models.factory import build_model
from suite.teacher.maps_build import build_offline_maps
from suite.teacher.offline import META_FILE, RANKS_FILE, OfflineMaps, crop_maps, training_set_fingerprint
from suite.run.records import read_run
from suite.run.records import RunState
from suite.train.trainer import train

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
    x0, y0, x1, y1, flipped = where[1:6].tolist()
    assert where[6:].tolist() == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]  # no RandAugment on the built-in data
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
    assert where.shape == (18,)  # index, box, flip, the composed affine, one fill check (RandAugment's n=2)
    augment = next(t for t in data.train.transform.transforms if type(t).__name__ == "RandAugment")
    followed = {op.name for op in augment.ops if type(op.aug_fn).__name__ == "_Follow"}
    assert followed == {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}
    import pickle

    pickle.loads(pickle.dumps(data.train))  # spawned loader workers get a working copy


def test_built_maps_train_a_tokenmix_student(tiny_overrides: list[str], teacher_run: Path, tmp_path: Path) -> None:
    maps_dir = tmp_path / "maps"
    base = [*tiny_overrides, "mix.method=tokenmix", f"teacher={teacher_run}"]
    meta = build_offline_maps(load_config(None, base), maps_dir, batch_size=64)
    assert meta["count"] == 256 and meta["map_size"] == [8, 8] and (maps_dir / META_FILE).is_file()
    assert meta["rank_cap"] == 255
    ranks, maps = np.load(maps_dir / RANKS_FILE), np.load(maps_dir / "maps.npy")
    assert ranks.dtype == np.uint8 and ranks.shape == maps.shape and ranks.max() < 10
    top1 = OfflineMaps.open(maps_dir, fingerprint=meta["fingerprint"], num_classes=10, topk=1)
    where = torch.tensor([[i, *FULL[1:]] for i in range(8)], dtype=torch.float64)
    x, y = torch.zeros(8, 3, 32, 32), torch.zeros(8, dtype=torch.long)
    gated = crop_maps(torch.from_numpy(np.where(ranks[:8] < 1, maps[:8], 0).astype(np.float32)), where, grid=4)
    torch.testing.assert_close(top1.maps(x, y, 4, geometry=where), gated)
    stamp = (maps_dir / "maps.npy").stat().st_mtime_ns
    build_offline_maps(load_config(None, base), maps_dir, batch_size=64)  # same inputs: nothing rewritten
    assert (maps_dir / "maps.npy").stat().st_mtime_ns == stamp

    cfg = load_config(None, [*tiny_overrides, "mix.method=tokenmix", f"teacher=maps:{maps_dir}", "mix.mixup_alpha=0"])
    assert cfg.teacher.maps == maps_dir and cfg.teacher.checkpoint is None and cfg.mix.target == "teacher_raw"
    result = train(cfg)
    assert result.state is RunState.FINISHED
    rows = read_run(result.run_dir).metrics
    assert all("tokenmix_fallbacks" in r for r in rows)
    assert 0.0 <= result.summary["top1"] <= 100.0
    student = [*tiny_overrides, "mix.method=tokenmix", f"teacher=maps:{maps_dir}", "mix.mixup_alpha=0"]
    reference = train(load_config(None, [*student, "data.aug_order=reference", "data.hflip=0.5", "schedule.epochs=1"]))
    assert reference.state is RunState.FINISHED and reference.run_id != result.run_id  # another recipe
    assert read_run(reference.run_dir).metrics[0]["tokenmix_fallbacks"] >= 0


def test_maps_of_another_training_set_are_refused(tiny_overrides: list[str], teacher_run: Path, tmp_path: Path) -> None:
    maps_dir = tmp_path / "maps"
    build_offline_maps(load_config(None, [*tiny_overrides, "mix.method=tokenmix", f"teacher={teacher_run}"]), maps_dir)
    other = load_config(None, [*tiny_overrides, "data.train_size=128", "mix.method=tokenmix", f"teacher=maps:{maps_dir}"])
    data = build_data(other.data, geometry=True)
    with pytest.raises(ValueError, match="different training set"):
        OfflineMaps.open(maps_dir, fingerprint=training_set_fingerprint(other.data, data.train), num_classes=10)


def test_bad_maps_settings_fail_in_the_config(tmp_path: Path, teacher_run: Path) -> None:
    from suite.train.preflight import check_machine

    with pytest.raises(ConfigError, match="teacher.maps"):
        check_machine(load_config(None, ["mix.method=tokenmix", f"teacher.maps={tmp_path}"]))  # no maps.json
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
    assert json.loads((out / META_FILE).read_text())["teacher"]["checkpoint"] in (
        str(teacher_run), str(teacher_run / "checkpoint.pt")
    )


def _maps_dir(directory: Path, maps: np.ndarray, ranks: np.ndarray | None, fmt: int = 2) -> Path:
    directory.mkdir()
    np.save(directory / "maps.npy", maps)
    meta = {"format": fmt, "count": len(maps), "num_classes": 3, "fingerprint": "f"}
    if ranks is not None:
        np.save(directory / RANKS_FILE, ranks)
        meta["rank_cap"] = 255
    (directory / META_FILE).write_text(json.dumps(meta))
    return directory


def test_offline_topk_gates_the_stored_map_by_the_stored_rank(tmp_path: Path) -> None:
    # the 3-class example of test_cam: ground-truth logits and ranks on a 2 x 2 map
    maps = np.array([[[2.0, 2.0], [1.0, 5.0]]], dtype=np.float16)
    ranks = np.array([[[1, 1], [2, 0]]], dtype=np.uint8)
    directory = _maps_dir(tmp_path / "m", maps, ranks)
    where = _where(FULL)
    x, y = torch.zeros(1, 3, 8, 8), torch.tensor([1])
    for k, kept in [(1, [[0.0, 0.0], [0.0, 5.0]]), (2, [[2.0, 2.0], [0.0, 5.0]]), (None, [[2.0, 2.0], [1.0, 5.0]])]:
        opened = OfflineMaps.open(directory, fingerprint="f", num_classes=3, topk=k)
        expected = crop_maps(torch.tensor([kept]), where, grid=2)  # gate first, then cut and normalise
        torch.testing.assert_close(opened.maps(x, y, 2, geometry=where), expected)
    with pytest.raises(ValueError, match="up to 255"):
        OfflineMaps.open(directory, fingerprint="f", num_classes=3, topk=256)


def test_dense_only_maps_refuse_topk(tmp_path: Path) -> None:
    directory = _maps_dir(tmp_path / "m", np.ones((1, 2, 2), dtype=np.float16), None, fmt=1)
    assert OfflineMaps.open(directory, fingerprint="f", num_classes=3).topk is None
    with pytest.raises(ValueError, match="teacher.topk=5.*dense maps only"):
        OfflineMaps.open(directory, fingerprint="f", num_classes=3, topk=5)


def _hot_image(size: int) -> tuple[object, torch.Tensor]:
    """A black PIL image with a white square off the centre, and the same square as a 16 x 16 map."""
    from PIL import Image

    pixels = np.zeros((size, size, 3), dtype=np.uint8)
    lo, hi = size * 11 // 16, size * 13 // 16  # rows and columns 44..52 of 64
    pixels[lo:hi, lo:hi] = 255
    raw = torch.zeros(1, 16, 16)
    raw[0, 11:13, 11:13] = 1.0
    return Image.fromarray(pixels), raw


def _centroid(weights: torch.Tensor) -> torch.Tensor:
    """(row, col) centre of mass of a (G, G) weight map, in cells."""
    g = weights.shape[-1]
    idx = torch.arange(g, dtype=torch.float32) + 0.5
    total = weights.sum()
    return torch.stack([(weights.sum(1) * idx).sum() / total, (weights.sum(0) * idx).sum() / total])


def _image_cells(image: object, grid: int) -> torch.Tensor:
    hot = torch.from_numpy((np.asarray(image)[..., 0] > 127).astype(np.float32))
    return torch.nn.functional.avg_pool2d(hot[None, None], hot.shape[-1] // grid)[0, 0]


@pytest.mark.parametrize("op", ["Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel", "TranslateX"])
def test_randaugment_geometry_moves_the_map_with_the_image(op: str) -> None:
    import random

    from PIL import Image
    from timm.data.auto_augment import AugmentOp, RandAugment

    from suite.data.geometry import follow_augment_ops

    size, grid = 64, 8
    image, raw = _hot_image(size)
    hparams = {"img_mean": (0, 0, 0), "interpolation": Image.BILINEAR, "translate_const": 20}
    moved = 0  # seeds whose moved spot stayed in the image (the map's position checked)
    for seed in range(4):  # both signs of the magnitude
        random.seed(seed)
        crop = CropFlip(size, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0)
        augment = RandAugment([AugmentOp(op, prob=1.0, magnitude=9, hparams=hparams)], num_layers=1)
        assert follow_augment_ops(augment, crop) == 1
        out = augment(crop(image))
        seen = _image_cells(out, grid)
        followed = crop_maps(raw, torch.tensor([[0, *crop.record]], dtype=torch.float64), grid)[0]
        unmoved = crop_maps(raw, torch.tensor([[0, *crop.last]], dtype=torch.float64), grid)[0]
        if seen.sum() == 0:  # moved out of the image: the map is empty too (area fallback)
            assert followed.sum() == 0
            continue
        assert (_centroid(seen) - _centroid(unmoved)).abs().max() >= 1.0  # the op moved the spot a token or more
        assert (_centroid(seen) - _centroid(followed)).abs().max() <= 1.0  # and the map went with it
        moved += 1
    assert moved >= 2, f"{op}: the spot stayed in the image in {moved} of 4 seeds, too few to check the map"


def test_crop_flip_and_two_randaugment_ops_keep_map_and_image_aligned() -> None:
    import random

    from timm.data.auto_augment import rand_augment_transform

    from suite.data.geometry import follow_augment_ops

    size, grid = 64, 8
    image, raw = _hot_image(size)
    checked = 0
    for seed in range(40):
        random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
        crop = CropFlip(size, scale=(0.5, 1.0), hflip=0.5)
        augment = rand_augment_transform("rand-m9-n2-mstd0.5", {"img_mean": (0, 0, 0)})
        follow_augment_ops(augment, crop)
        seen = _image_cells(augment(crop(image)), grid)
        followed = crop_maps(raw, torch.tensor([[0, *crop.record]], dtype=torch.float64), grid)[0]
        if seen.sum() < 0.5 or followed.sum() == 0:  # the spot was cropped or moved out
            continue
        # colour ops can dim the spot or light the background: compare only where the spot is clear
        if (seen > 0).float().mean() > 0.3:
            continue
        assert (_centroid(seen) - _centroid(followed)).abs().max() <= 1.0, seed
        checked += 1
    assert checked >= 15


@pytest.mark.parametrize("topk", [None, 5])
def test_maps_delivered_by_the_loader_workers_equal_the_maps_read_directly(tmp_path: Path, topk: int | None) -> None:
    import pickle

    from suite.data.loaders import train_loader

    cfg = load_config(None, ["data.train_size=64", "data.val_size=16", "data.batch_size=16", "data.workers=2"])
    bundle = build_data(cfg.data, geometry=True)
    rng = np.random.default_rng(0)
    stored = rng.normal(0, 3, (64, 4, 4)).astype(np.float16)
    directory = _maps_dir(tmp_path / "m", stored, rng.integers(0, 10, (64, 4, 4), dtype=np.uint8))
    offline = OfflineMaps.open(directory, fingerprint="f", num_classes=3, topk=topk)
    x, y = torch.zeros(16, 3, 32, 32), torch.zeros(16, dtype=torch.long)
    direct = [offline.maps(x, y, 4, geometry=where) for _, _, where in train_loader(bundle, cfg.data, seed=1, epoch=0)]

    plain = len(pickle.dumps(bundle.train))
    offline.deliver_to(bundle.train)
    assert bundle.train[(3, 1)][2].shape == (12 + 16,)  # crop geometry, then the sample's stored map
    assert len(pickle.dumps(bundle.train)) - plain < 1000  # workers get the file names, not the arrays
    batches = list(train_loader(bundle, cfg.data, seed=1, epoch=0))
    delivered = [offline.maps(x, y, 4, geometry=where) for _, _, where in batches]
    assert len(delivered) == len(direct) == 4
    for a, b in zip(delivered, direct):
        assert torch.equal(a, b)
    bundle.close()


def test_a_stopped_maps_build_resumes_to_the_same_bytes(tiny_overrides: list[str], teacher_run: Path, tmp_path: Path) -> None:
    import os
    import signal

    from suite.teacher.maps_build import MapsBuildStopped
    from suite.teacher.offline import MAPS_FILE, PROGRESS_FILE
    from suite.run.signals import GracefulStop

    cfg = load_config(None, [*tiny_overrides, "mix.method=tokenmix", f"teacher={teacher_run}"])
    whole = build_offline_maps(cfg, tmp_path / "whole", batch_size=32, chunk_batches=2)  # 8 batches, 4 chunks

    # stopped during chunk 2 by a flag: the chunk is finished and recorded, then the build stops
    stop = GracefulStop()
    resumed = tmp_path / "resumed"
    with pytest.raises(MapsBuildStopped) as stopped:
        build_offline_maps(cfg, resumed, batch_size=32, chunk_batches=2, stop=stop,
                           progress=lambda done, total: stop.request() if done == 96 else None)
    assert stopped.value.done == 128 and not (resumed / META_FILE).exists()
    assert json.loads((resumed / PROGRESS_FILE).read_text())["done"] == 128

    # the rerun continues at chunk 3, and is stopped again after it by SIGUSR1 (the build's own handler)
    seen: list[int] = []

    def signal_at_160(done: int, total: int) -> None:
        seen.append(done)
        if done == 160:
            os.kill(os.getpid(), signal.SIGUSR1)

    with pytest.raises(MapsBuildStopped, match="SIGUSR1 after 192 of 256"):
        build_offline_maps(cfg, resumed, batch_size=32, chunk_batches=2, progress=signal_at_160)
    assert seen == [160, 192] and signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # handler given back

    seen.clear()
    meta = build_offline_maps(cfg, resumed, batch_size=32, chunk_batches=2, progress=lambda d, t: seen.append(d))
    assert seen == [224, 256]  # only the last chunk was computed
    assert meta == whole and json.loads((resumed / META_FILE).read_text())["fingerprint"] == whole["fingerprint"]
    for name in (MAPS_FILE, RANKS_FILE):
        assert (resumed / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    assert sorted(p.name for p in resumed.iterdir()) == sorted([MAPS_FILE, RANKS_FILE, META_FILE])


def test_a_maps_build_with_other_inputs_starts_over(tiny_overrides: list[str], teacher_run: Path, tmp_path: Path) -> None:
    from suite.teacher.maps_build import MapsBuildStopped
    from suite.run.signals import GracefulStop

    cfg = load_config(None, [*tiny_overrides, "mix.method=tokenmix", f"teacher={teacher_run}"])
    stop = GracefulStop()
    stop.request()
    with pytest.raises(MapsBuildStopped):
        build_offline_maps(cfg, tmp_path / "m", batch_size=32, chunk_batches=2, stop=stop)
    seen: list[int] = []
    build_offline_maps(cfg, tmp_path / "m", batch_size=64, progress=lambda d, t: seen.append(d))
    assert seen[0] == 64  # another batch size: other batches, so no mixing with the stopped build's chunks


def test_a_stopped_maps_step_is_no_failure_and_continues(tiny_overrides: list[str], teacher_run: Path, tmp_path: Path) -> None:
    from suite.teacher.maps_step import run_maps_step
    from suite.teacher.maps_build import MapsBuildStopped
    from suite.run.records import RunPaths
    from suite.run.signals import GracefulStop

    cfg = load_config(None, [*tiny_overrides, "mix.method=tokenmix", f"teacher={teacher_run}"])
    paths = RunPaths.of(tmp_path / "out", "maps-0123456789ab")
    stop = GracefulStop()
    stop.request()
    with pytest.raises(MapsBuildStopped):
        run_maps_step(cfg, paths, img_size=None, batch_size=4, stop=stop)  # 64 batches: 2 chunks
    assert not paths.failure.exists() and not paths.summary.exists()  # unfinished, not failed
    summary = run_maps_step(cfg, paths, img_size=None, batch_size=4)
    assert summary["status"] == "finished" and summary["count"] == 256


class _Bundle:
    """The parts of a data bundle the teacher's input transform reads."""

    def __init__(self, images: list) -> None:
        self.train = type("Train", (), {"source": [(image, 0) for image in images]})()
        self.mean, self.std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


def test_center_crop_keeps_the_central_square_as_tokenlabeling_and_squash_keeps_all() -> None:
    from PIL import Image

    from suite.teacher.maps_build import _teacher_inputs

    # 8 wide, 4 tall; each column has its own grey value 10, 40, ..., 220
    columns = np.array([10 + 30 * c for c in range(8)], dtype=np.uint8)
    wide = Image.fromarray(np.repeat(np.tile(columns, (4, 1))[..., None], 3, axis=2))
    center = _teacher_inputs(_Bundle([wide]), 4, "center")
    x, _ = center[(0, 0)][:2]
    # short side 4 = the target side: no resize; the central 4 of 8 columns are 2..5
    assert x.shape == (3, 4, 4)
    torch.testing.assert_close(x[0, 0] * 255, torch.tensor([70.0, 100.0, 130.0, 160.0]), atol=1e-4, rtol=0)
    squash = _teacher_inputs(_Bundle([wide]), 4, "squash")
    y, _ = squash[(0, 0)][:2]
    # squashed: the whole width lands in 4 columns, so the outer columns' values reach the edges
    assert y.shape == (3, 4, 4)
    assert float(y[0, 0, 0]) * 255 < 40 and float(y[0, 0, -1]) * 255 > 190


def test_the_crop_is_recorded_and_a_build_with_another_crop_starts_over(
    tiny_overrides: list[str], teacher_run: Path, tmp_path: Path
) -> None:
    from suite.teacher.maps_step import maps_step_id

    cfg = load_config(None, [*tiny_overrides, "mix.method=tokenmix", f"teacher={teacher_run}"])
    center = build_offline_maps(cfg, tmp_path / "m", batch_size=128, crop="center")
    assert center["crop"] == "center" and json.loads((tmp_path / "m" / META_FILE).read_text())["crop"] == "center"
    seen: list[int] = []
    squash = build_offline_maps(cfg, tmp_path / "m", batch_size=128, progress=lambda d, t: seen.append(d))
    assert squash["crop"] == "squash" and seen == [128, 256]  # built again, not taken for the centre-crop maps
    again: list[int] = []
    build_offline_maps(cfg, tmp_path / "m", batch_size=128, progress=lambda d, t: again.append(d))
    assert again == []  # same inputs: left as it is
    assert maps_step_id(cfg, None, "center") != maps_step_id(cfg, None)
    with pytest.raises(ValueError, match="crop must be"):
        build_offline_maps(cfg, tmp_path / "x", crop="middle")  # type: ignore[arg-type]


def test_offline_maps_keep_negative_values_when_asked_as_the_reference(tmp_path: Path) -> None:
    raw = np.zeros((1, 4, 4), dtype=np.float16)
    raw[0, 0, 0], raw[0, 3, 3] = 3.0, -1.0  # a hot cell and a negative one
    maps = OfflineMaps.open(_maps_dir(tmp_path / "m", raw, None), fingerprint="f", num_classes=3, clamp_negative=False)
    where = _where(FULL)
    signed = maps.maps(torch.zeros(1, 3, 8, 8), torch.zeros(1), 4, geometry=where)
    # the reference's normalisation: divided by the signed sum, the negative cells kept
    assert float(signed.sum()) == pytest.approx(1.0) and float(signed.min()) < 0
    clamped = OfflineMaps.open(tmp_path / "m", fingerprint="f", num_classes=3).maps(
        torch.zeros(1, 3, 8, 8), torch.zeros(1), 4, geometry=where
    )
    # the default clamps first: the same cut, negative cells at 0, rescaled to sum 1
    assert float(clamped.min()) == 0.0 and float(clamped.sum()) == pytest.approx(1.0)
    torch.testing.assert_close(clamped, signed.clamp_min(0) / signed.clamp_min(0).sum())


def _reference(size: int, **kwargs: object):  # noqa: ANN202
    from suite.data.geometry import ReferenceGeometry

    return ReferenceGeometry(size, **{"scale": (0.5, 1.0), "hflip": 0.5, **kwargs})


def test_reference_order_moves_the_map_with_the_image() -> None:
    import random

    from timm.data.auto_augment import rand_augment_transform

    from suite.data.geometry import follow_augment_ops

    size, grid = 64, 8
    image, raw = _hot_image(size)
    checked = 0
    for seed in range(40):
        random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
        geometry = _reference(size)
        augment = rand_augment_transform("rand-m9-n2-mstd0.5", {"img_mean": (0, 0, 0)})
        follow_augment_ops(augment, geometry)
        # the reference's order: flip the whole image, RandAugment on it, then the crop
        seen = _image_cells(geometry.crop(augment(geometry.flip(image))), grid)
        followed = crop_maps(raw, torch.tensor([[0, *geometry.record]], dtype=torch.float64), grid)[0]
        if seen.sum() < 0.5 or followed.sum() == 0 or (seen > 0).float().mean() > 0.3:
            continue  # cropped or moved out, or a colour op lit the background
        assert (_centroid(seen) - _centroid(followed)).abs().max() <= 1.0, seed
        checked += 1
    assert checked >= 15


@pytest.mark.parametrize("op", ["Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel", "TranslateX"])
def test_reference_order_moves_the_map_with_each_geometric_op(op: str) -> None:
    import random

    from PIL import Image
    from timm.data.auto_augment import AugmentOp, RandAugment

    from suite.data.geometry import follow_augment_ops

    size, grid = 64, 8
    image, raw = _hot_image(size)
    hparams = {"img_mean": (0, 0, 0), "interpolation": Image.BILINEAR, "translate_const": 20}
    moved = 0
    for seed in range(8):  # both signs of the magnitude, flipped or not
        random.seed(seed), torch.manual_seed(seed)
        geometry = _reference(size, scale=(1.0, 1.0), ratio=(1.0, 1.0))
        augment = RandAugment([AugmentOp(op, prob=1.0, magnitude=9, hparams=hparams)], num_layers=1)
        assert follow_augment_ops(augment, geometry) == 1
        seen = _image_cells(geometry.crop(augment(geometry.flip(image))), grid)
        followed = crop_maps(raw, torch.tensor([[0, *geometry.record]], dtype=torch.float64), grid)[0]
        if seen.sum() == 0:  # moved out of the image: the map is empty too
            assert followed.sum() == 0
            continue
        assert (_centroid(seen) - _centroid(followed)).abs().max() <= 1.0, seed  # within one token
        moved += 1
    assert moved >= 4, f"{op}: the spot stayed in the image in {moved} of 8 seeds, too few to check the map"


@pytest.mark.parametrize("order", ["timm", "reference"])
def test_content_moved_out_and_back_in_leaves_no_map_mass_on_fill(order: str) -> None:
    from PIL import Image
    from timm.data.auto_augment import translate_y_rel

    from suite.data.geometry import op_affine

    size, grid = 64, 8
    pixels = np.zeros((size, size, 3), dtype=np.uint8)
    pixels[4:12, 28:36] = 255  # a spot near the top
    image = Image.fromarray(pixels)
    raw = torch.zeros(1, 16, 16)
    raw[0, 1:3, 7:9] = 1.0
    full = {"scale": (1.0, 1.0), "ratio": (1.0, 1.0), "hflip": 0.0}
    geometry = CropFlip(size, **full) if order == "timm" else _reference(size, **full)
    geometry.max_ops = 2  # as follow_augment_ops sets it for a RandAugment of two ops
    out = geometry(image) if order == "timm" else geometry.flip(image)
    for shift in (0.39, -0.40):  # up and out of the image, then down again: the top rows show fill
        geometry.follow(op_affine("TranslateYRel", (shift,), (size, size)), (size, size))
        out = translate_y_rel(out, shift, fillcolor=(0, 0, 0), resample=Image.BILINEAR)
    if order == "reference":
        out = geometry.crop(out)
    assert _image_cells(out, grid).sum() == 0  # the spot is gone from the image
    record = torch.tensor([[0, *geometry.record]], dtype=torch.float64)
    assert record.shape == (1, 18)  # composed affine plus one check
    assert crop_maps(raw, record, grid).sum() == 0  # and from the map: checked after each op
    composed_only = crop_maps(raw, record[:, :12], grid)  # the composed affine alone moves it 1 % only
    assert composed_only.sum() == pytest.approx(1.0)


def test_reference_order_pipeline_on_an_image_folder(image_folder: Path) -> None:
    import pickle

    from suite.data.geometry import ReferenceGeometry

    cfg = load_config(None, [f"data={image_folder}", "data.img_size=32", "data.aug_order=reference"])
    data = build_data(cfg.data, geometry=True)
    names = [type(t).__name__ for t in data.train.transform.transforms]
    assert names[:3] == ["_Stage", "RandAugment", "_Stage"] and "RandomHorizontalFlip" not in names
    assert isinstance(data.train.geometry, ReferenceGeometry)
    x, _, where = data.train[(0, 1)]
    assert x.shape == (3, 32, 32) and where.shape == (18,)
    assert where[1:6].tolist() == [0.0, 0.0, 1.0, 1.0, 0.0]  # the affine carries crop, ops and flip
    copy = pickle.loads(pickle.dumps(data.train))  # spawned loader workers get a working copy
    torch.testing.assert_close(copy[(0, 1)][0], x)  # the same seeded sample
    plain = build_data(cfg.data)  # without offline maps: the same order, no record
    assert len(plain.train[(0, 1)]) == 2 and torch.equal(plain.train[(0, 1)][0], x)
