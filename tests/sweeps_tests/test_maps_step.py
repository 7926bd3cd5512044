"""Maps build steps in sweeps: ``teacher.maps: "@step.yaml"`` with ``kind: maps``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from suite.config import load_config, run_id
from suite.teacher.maps_step import maps_step_id
from sweeps.expand import expand
from sweeps.spec import SweepError, load_sweep
from tests.sweeps_tests.sweep_files import write_sweep

TEACHER = {"model": {"name": "cnn_micro"}, "data": "builtin", "mix": {"method": "none"}}


def _files(tmp_path: Path, step: dict | None = None) -> None:
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump(TEACHER))
    (tmp_path / "maps").mkdir(exist_ok=True)
    step = step if step is not None else {"kind": "maps", "teacher": "@../teacher.yaml", "img_size": 48}
    (tmp_path / "maps" / "cnn.yaml").write_text(yaml.safe_dump(step))


def test_step_runs_after_its_teacher_and_before_its_students(tmp_path: Path) -> None:
    _files(tmp_path)
    path = write_sweep(
        tmp_path,
        overrides={"mix.method": "tokenmix"},
        include=[{"teacher.maps": "@maps/cnn.yaml"}, {"teacher": "@maps/cnn.yaml", "teacher.topk": 2}, {"teacher": "none"}],
    )
    plan = expand(load_sweep(path), check_paths=True)  # nothing exists yet, and launch may go ahead
    teacher, step = plan.prerequisites
    assert (teacher.kind, step.kind) == ("train", "maps") and [r.index for r in plan.prerequisites] == [0, 1]
    assert step.needs == (teacher.run_id,) and step.build == {"img_size": 48, "batch_size": 128, "crop": "squash"}
    assert step.run_id.startswith("maps-") and step.label() == "maps build maps/cnn.yaml"
    assert step.config.teacher.checkpoint == teacher.paths.checkpoint
    assert step.config.data.train_size == 256  # the sweep base's training set
    dense, top2, area = plan.runs
    for student in (dense, top2):
        assert student.config.teacher.maps == step.paths.root and student.config.teacher.checkpoint is None
        assert student.needs == (step.run_id,)
    assert top2.config.teacher.topk == 2 and area.needs == ()
    # the student's id names the step, not the folder it lies in: another output root, same id
    moved = dense.config.model_copy(
        update={"teacher": dense.config.teacher.model_copy(update={"maps": Path("/elsewhere") / step.run_id})}
    )
    assert run_id(moved) == dense.run_id


def test_step_id_follows_what_the_maps_are_made_of(tmp_path: Path) -> None:
    base = ["mix.method=tokenmix", "teacher=/t/resnet.pth", "teacher.model=resnet18"]
    cfg = load_config(None, base)
    same = load_config(None, [*base, "data.batch_size=16", "optim.lr=0.1", "run.output_root=/x"])
    assert maps_step_id(cfg, 64) == maps_step_id(same, 64)  # batch, optimiser, output: not in the maps
    for other in (["data.train_size=100"], ["data.data_seed=3"], ["teacher.model=resnet50"]):
        assert maps_step_id(load_config(None, [*base, *other]), 64) != maps_step_id(cfg, 64)
    assert maps_step_id(cfg, 96) != maps_step_id(cfg, 64)


def test_student_on_another_training_set_is_refused(tmp_path: Path) -> None:
    _files(tmp_path)
    path = write_sweep(
        tmp_path, overrides={"mix.method": "tokenmix", "teacher.maps": "@maps/cnn.yaml"},
        axes={"data.train_size": [256, 512]},
    )
    with pytest.raises(SweepError) as err:
        expand(load_sweep(path), check_paths=False)
    message = str(err.value)
    assert "run 1 (data.train_size=512): teacher.maps: the maps step @maps/cnn.yaml" in message
    assert "data.train_size=512 (the maps: 256)" in message and "run 0" not in message


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ({"kind": "maps", "teacher": "@../teacher.yaml", "img_sise": 48}, r"maps/cnn.yaml: img_sise: unknown key; valid keys: kind"),
        ({"kind": "maps", "teacher": "none"}, r"maps/cnn.yaml: teacher: a maps build step needs a teacher checkpoint"),
        ({"kind": "maps", "teacher": "@../teacher.yaml", "img_size": 0}, r"img_size: Input should be greater than 0"),
        ({"kind": "maps", "teacher": "@../nope.yaml"}, r"teacher @../nope.yaml: config file not found"),
        ({"kind": "maps", "teacher": "@cnn.yaml"}, r"teacher @cnn.yaml: is a maps step"),
        ({"kind": "maps", "teacher": {"model": "resnet18"}}, r"maps build step needs teacher.checkpoint"),
        ({"kind": "maps", "teacher": {"maps": "/m"}}, r"maps build step needs teacher.checkpoint \(and no teacher.maps\)"),
    ],
)
def test_bad_step_file_names_the_file_and_field(tmp_path: Path, step: dict, expected: str) -> None:
    _files(tmp_path, step)
    path = write_sweep(tmp_path, overrides={"mix.method": "tokenmix"}, axes={"teacher.maps": ["@maps/cnn.yaml"]})
    with pytest.raises(SweepError, match=expected) as err:
        expand(load_sweep(path), check_paths=False)
    assert str(err.value).startswith(f"{path}: ")


def test_missing_teacher_file_warns_in_plan_and_fails_launch(tmp_path: Path) -> None:
    _files(tmp_path, {"kind": "maps", "teacher": {"model": "resnet18", "checkpoint": str(tmp_path / "r18.pth")}})
    path = write_sweep(tmp_path, overrides={"mix.method": "tokenmix"}, axes={"teacher.maps": ["@maps/cnn.yaml"]})
    plan = expand(load_sweep(path), check_paths=False)
    assert any("r18.pth" in w for w in plan.warnings) and plan.prerequisites[0].kind == "maps"
    with pytest.raises(SweepError, match=r"maps step @maps/cnn.yaml: teacher.checkpoint: .*r18.pth"):
        expand(load_sweep(path), check_paths=True)


def test_fields_that_leave_the_training_images_alone_are_accepted(tmp_path: Path) -> None:
    _files(tmp_path)
    path = write_sweep(
        tmp_path, overrides={"mix.method": "tokenmix", "teacher.maps": "@maps/cnn.yaml"},
        axes={"data.val_size": [128, 256], "data.batch_size": [32, 64]},
    )
    plan = expand(load_sweep(path), check_paths=False)
    assert len(plan.runs) == 4 and len({r.needs for r in plan.runs}) == 1


def test_launch_refuses_maps_of_a_teacher_file_that_changed(tmp_path: Path) -> None:
    import json

    import timm
    import torch

    import suite.models.factory  # noqa: F401 - registers cnn_micro
    from jobs.launch import check
    from suite.config import file_sha256

    weights = timm.create_model("cnn_micro", num_classes=10).state_dict()
    teacher = tmp_path / "teacher.pth"
    torch.save(weights, teacher)  # the weights the maps were built from
    _files(tmp_path, {"kind": "maps", "teacher": {"model": "cnn_micro", "checkpoint": str(teacher)}})
    sweep = load_sweep(write_sweep(tmp_path, overrides={"mix.method": "tokenmix", "teacher.maps": "@maps/cnn.yaml"}))
    (step,) = expand(sweep).prerequisites
    step.paths.root.mkdir(parents=True)
    summary = {"status": "finished", "kind": "maps", "run_id": step.run_id,
               "teacher": {"checkpoint": str(teacher), "sha256": file_sha256(teacher)}}
    (step.paths.root / "summary.json").write_text(json.dumps(summary))
    assert check(sweep, executor="debug").plan.prerequisites[0].state().value == "finished"
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in weights.items()}, teacher)  # retrained in place
    with pytest.raises(SweepError, match=rf"maps step {step.run_id} \(maps/cnn.yaml\): the teacher file .* changed"):
        check(sweep, executor="debug")
