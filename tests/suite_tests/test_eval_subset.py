"""eval.subset: curves on the validation set's first images, the last epoch on all of them."""

from __future__ import annotations

import pytest

from suite.config import ConfigError, load_config
from suite.config.identity import run_id
from suite.run.records import read_run
from suite.train.trainer import train


def test_the_curve_sees_the_subset_and_the_last_epoch_the_whole_set(tiny_overrides: list[str], tmp_path) -> None:
    base = [*tiny_overrides, "schedule.epochs=3", "eval.every=1"]
    subset = train(load_config(None, [*base, "eval.subset=40"]))
    whole = train(load_config(None, [*base, f"run.output_root={tmp_path / 'whole'}"]))
    rows, whole_rows = read_run(subset.run_dir).metrics, read_run(whole.run_dir).metrics
    assert [r["val_images"] for r in rows] == [40, 40, 128]
    assert [r["val_images"] for r in whole_rows] == [128, 128, 128]
    # the subset changes what is evaluated, never what is trained: same weights, same final numbers
    assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in whole_rows]
    for key in ("top1", "top5", "val_loss", "occ50_top1"):  # eval.occlusion=[0.5]: on the whole set
        assert subset.summary[key] == whole.summary[key], key
    assert subset.summary["val_images"] == 128
    # 40 images give top-1 in steps of 2.5 points; the intermediate rows are on that grid
    assert all(abs(r["top1"] / 2.5 - round(r["top1"] / 2.5)) < 1e-9 for r in rows[:2])
    # the best epoch is chosen among whole-set evaluations only: here the last
    assert subset.summary["best_epoch"] == 3 and subset.summary["best_top1"] == subset.summary["top1"]


def test_eval_subset_is_part_of_the_run_id_but_its_default_changes_no_id(tiny_overrides: list[str]) -> None:
    plain = load_config(None, tiny_overrides)
    assert run_id(load_config(None, [*tiny_overrides, "eval.subset=40"])) != run_id(plain)
    assert load_config(None, tiny_overrides).eval.subset is None
    with pytest.raises(ConfigError, match="eval.subset"):
        load_config(None, [*tiny_overrides, "eval.subset=0"])


def test_the_subset_of_a_class_sorted_image_folder_spans_its_classes(image_folder) -> None:
    """An ImageFolder lists its images class by class: the subset is a seeded random draw, the same
    at every call, never the first classes only."""
    from suite.data.loaders import build_data, eval_subset

    val = build_data(load_config(None, [f"data={image_folder}", "data.img_size=32"]).data).val
    labels = [val.source[i][1] for i in range(len(val))]
    assert labels == sorted(labels)  # the folder's own order: class by class
    subset = eval_subset(val, len(val) // 2, seed=0)
    picked = [subset.source[i][1] for i in range(len(subset))]
    assert len(picked) == len(val) // 2 and len(set(picked)) > 1
    assert picked == [eval_subset(val, len(val) // 2, seed=0).source[i][1] for i in range(len(subset))]
    assert eval_subset(val, 10**6, seed=0).source is val.source  # a subset as large as the set is the set
