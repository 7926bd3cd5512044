"""Machine checks apart from the schema: the same config validates everywhere; this machine's gaps are named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from suite.config import ConfigError, load_config, run_id
from suite.run.migrate import migrate
from suite.train.preflight import check_machine, machine_problems

SUITE = [sys.executable, "-m", "suite.cli"]


def test_schema_never_touches_the_disk(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    cfg = load_config(None, [f"data={missing}", "mix.method=tokenmix", f"teacher={missing}/t.pt",
                             f"model.checkpoint={missing}/m.pt"])
    fields = {p.field for p in machine_problems(cfg)}
    assert fields == {"data.root", "teacher.checkpoint", "model.checkpoint"}
    with pytest.raises(ConfigError) as err:
        check_machine(cfg)
    assert "data.root" in str(err.value) and "does not exist" in str(err.value)
    (missing / "train").mkdir(parents=True)
    assert any("no val/ folder" in str(p) for p in machine_problems(cfg))


def test_unknown_model_is_a_registry_problem() -> None:
    problems = machine_problems(load_config(None, ["model.name=vit_tinyy_patch16_224"]))
    assert [(p.field, p.kind) for p in problems] == [("model.name", "registry")]
    assert "unknown timm model" in problems[0].message and "similar" in problems[0].message


def test_maps_folder_given_as_checkpoint_says_how_to_fix_it(tmp_path: Path) -> None:
    (tmp_path / "maps.json").write_text("{}")
    cfg = load_config(None, ["mix.method=tokenmix", f"teacher={tmp_path}"])
    (problem,) = machine_problems(cfg)
    assert f"teacher=maps:{tmp_path}" in problem.message


def test_paths_a_prerequisite_produces_may_be_missing(tmp_path: Path) -> None:
    ckpt = tmp_path / "runs" / "teacher" / "checkpoint.pt"
    cfg = load_config(None, ["mix.method=tokenmix", f"teacher={ckpt}"])
    assert machine_problems(cfg, produced={str(ckpt.absolute())}) == []


def _legacy_run(root: Path, overrides: list[str]) -> tuple[Path, str]:
    """A finished run folder as the previous id rule (v1) left it."""
    cfg = load_config(None, [*overrides, f"run.output_root={root}"])
    old = root / f"{cfg.mix.method}-0123456789ab"
    old.mkdir(parents=True)
    (old / "config.json").write_text(json.dumps({**json.loads(cfg.model_dump_json()), "run_id": old.name}))
    (old / "summary.json").write_text(json.dumps({"run_id": old.name, "status": "finished", "top1": 42.0}))
    return old, run_id(cfg)


def test_old_run_folders_are_refused_until_migrated_and_never_retrained(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    overrides = ["mix.method=cutmix", "schedule.epochs=1", "tracking.mode=disabled"]
    old, new_id = _legacy_run(root, overrides)
    cmd = [*SUITE, "train", *overrides, f"run.output_root={root}"]
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "suite runs migrate" in refused.stderr
    assert not (root / new_id).exists()

    moves, problems = migrate(root)
    assert moves == [(old, root / new_id)] and problems == []
    summary = json.loads((root / new_id / "summary.json").read_text())
    assert summary["run_id"] == new_id and summary["legacy_id"] == old.name
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "42.00" in done.stdout  # the old summary, not a new training
    assert migrate(root) == ([], [])  # idempotent


def test_an_unfinished_teacher_run_is_refused(tmp_path: Path) -> None:
    """Defect 1: a teacher run interrupted at epoch 2 (no summary.json) was accepted without a word."""
    teacher = tmp_path / "runs" / "none-0123456789ab"
    teacher.mkdir(parents=True)
    (teacher / "config.json").write_text("{}")
    (teacher / "checkpoint.pt").write_bytes(b"not finished")
    cfg = load_config(None, ["mix.method=tokenmix", f"teacher={teacher}"])
    (problem,) = machine_problems(cfg)
    assert problem.field == "teacher.checkpoint" and "interrupted, not finished" in problem.message
    assert machine_problems(cfg, produced={str(teacher.absolute())}) == []  # a sweep prerequisite waits for it
    for name, target in (("teacher-link", teacher), ("teacher.pt", teacher / "checkpoint.pt")):
        link = tmp_path / name  # defect 15: a symlink to the interrupted run (or its checkpoint) was accepted
        link.symlink_to(target)
        (problem,) = machine_problems(load_config(None, ["mix.method=tokenmix", f"teacher={link}"]))
        assert problem.field == "teacher.checkpoint" and "interrupted, not finished" in problem.message
    (teacher / "summary.json").write_text(json.dumps({"run_id": teacher.name, "status": "finished", "top1": 1.0}))
    assert all("not finished" not in p.message for p in machine_problems(cfg))  # (its fake checkpoint is refused)


@pytest.mark.parametrize("content", [b"", b"random bytes, not a checkpoint" * 10])
def test_an_unreadable_teacher_file_is_refused_before_submission(tmp_path: Path, content: bytes) -> None:
    """Defect 5: a random or empty teacher file passed plan/launch and failed on the node."""
    teacher = tmp_path / "teacher.pt"
    teacher.write_bytes(content)
    cfg = load_config(None, ["mix.method=tokenmix", f"teacher={teacher}", "teacher.model=cnn_micro"])
    (problem,) = machine_problems(cfg)
    assert problem.field == "teacher.checkpoint" and str(teacher) in problem.message


def test_a_teacher_for_another_class_count_is_refused(teacher_run: Path, image_folder: Path) -> None:
    """Defect 5: a teacher trained on 10 classes was accepted for a 3-class dataset."""
    fits = load_config(None, ["mix.method=tokenmix", f"teacher={teacher_run}"])
    assert machine_problems(fits) == []
    other = load_config(None, ["mix.method=tokenmix", f"teacher={teacher_run}", f"data={image_folder}",
                               "data.img_size=32"])
    (problem,) = machine_problems(other)
    assert problem.field == "teacher.checkpoint" and "3 classes" in problem.message


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["schedule.epochs=true"], "schedule.epochs"),
        (["model.embed_dim=50"], "model.embed_dim must be divisible by model.num_heads"),
        (["model.embed_dim=64", "model.num_heads=6"], "num_heads=6"),
    ],
)
def test_schema_refuses_booleans_as_numbers_and_bad_vit_shapes(overrides: list[str], message: str) -> None:
    """Defect 5: schedule.epochs=true was accepted as 1; a ViT width not divisible by its heads failed at train time."""
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_a_config_file_that_is_not_utf8_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_bytes(b"schedule:\n  epochs: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)
    result = subprocess.run([*SUITE, "train", "-c", str(path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr and str(path) in result.stdout + result.stderr


def test_an_unwritable_output_root_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    result = subprocess.run(
        [*SUITE, "train", "data.train_size=64", "schedule.epochs=1", "tracking.mode=disabled",
         f"run.output_root={tmp_path / 'file' / 'runs'}"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot write" in result.stdout + result.stderr
