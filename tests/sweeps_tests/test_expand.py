"""Expanding sweeps: combination modes, seeds, include/exclude, validation messages, paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from suite.config import load_config, run_id
from sweeps.expand import expand
from sweeps.spec import SweepError, load_sweep
from tests.sweeps_tests.sweep_files import TINY, write_sweep

REPO = Path(__file__).resolve().parents[2]


def _values(plan) -> list[dict]:
    return [run.values for run in plan.runs]


@pytest.mark.parametrize(
    ("mode", "axes", "seeds", "count"),
    [
        ("grid", {"mix.method": ["cutmix", "mixup", "none"], "optim.lr": [1e-3, 5e-4]}, [0, 1], 12),
        ("zip", {"mix.method": ["cutmix", "mixup"], "optim.lr": [1e-3, 5e-4]}, [0, 1, 2], 6),
        ("one_at_a_time", {"mix.prob": [0.5, 1.0], "optim.lr": [5e-4]}, None, 3),  # prob=1.0 is the base
    ],
)
def test_modes_and_seeds(tmp_path: Path, mode: str, axes: dict, seeds: list | None, count: int) -> None:
    fields = {"mode": mode, "axes": axes, **({"seeds": seeds} if seeds else {})}
    plan = expand(load_sweep(write_sweep(tmp_path, **fields)))
    assert len(plan.runs) == count
    assert len({run.run_id for run in plan.runs}) == count
    assert [run.index for run in plan.runs] == list(range(count))
    if mode == "zip":
        assert {(v["mix.method"], v["optim.lr"]) for v in _values(plan)} == {
            ("cutmix", 1e-3),
            ("mixup", 5e-4),
        }
    if mode == "one_at_a_time":
        assert [run.label() for run in plan.runs] == ["base", "mix.prob=0.5", "optim.lr=0.0005"]
        assert plan.duplicates == 1
    if seeds:
        assert sorted({run.config.run.seed for run in plan.runs}) == seeds


def test_include_exclude(tmp_path: Path) -> None:
    path = write_sweep(
        tmp_path,
        axes={"mix.method": ["cutmix", "mixup"], "optim.lr": [1e-3, 5e-4]},
        include=[{"mix.method": "none", "optim.lr": 2e-3}],
        exclude=[{"mix.method": "mixup", "optim.lr": 5e-4}],
    )
    plan = expand(load_sweep(path))
    got = {(v["mix.method"], v["optim.lr"]) for v in _values(plan)}
    assert got == {("cutmix", 1e-3), ("cutmix", 5e-4), ("mixup", 1e-3), ("none", 2e-3)}
    assert plan.excluded == 1
    only_includes = expand(
        load_sweep(write_sweep(tmp_path, "inc", include=[{"mix.method": "mixup"}, {"mix.method": "cutmix"}]))
    )
    assert [run.config.mix.method for run in only_includes.runs] == ["mixup", "cutmix"]  # no bare base run


def test_run_ids_ignore_output_fields_and_match_suite(tmp_path: Path) -> None:
    plan = expand(
        load_sweep(write_sweep(tmp_path, axes={"mix.method": ["cutmix"]}, tracking={"tags": ["t1"]}))
    )
    run = plan.runs[0]
    direct = load_config(None, [f"{k}={json.dumps(v)}" for k, v in TINY.items()] + ["mix.method=cutmix"])
    assert run.run_id == run_id(direct)  # same id as `suite train` gives the same run
    assert run.config.tracking.group == "tiny" and run.config.tracking.tags == ["t1"]
    assert run.config.run.output_root == tmp_path / "runs" / "tiny"
    assert run.paths.root == tmp_path / "runs" / "tiny" / run.run_id


def test_unknown_axis_key_names_file_run_and_field(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, axes={"mix.mask_ration": [0.3, 0.5]})
    with pytest.raises(SweepError) as err:
        expand(load_sweep(path))
    message = str(err.value)
    assert f"{path}: 2 run(s) of the sweep are invalid; nothing was submitted" in message
    assert (
        f"{path}: run 0 (mix.mask_ration=0.3): mix.mask_ration: unknown key; valid keys: method='none'"
        in message
    )
    assert f"{path}: run 1 (mix.mask_ration=0.5): mix.mask_ration: unknown key" in message


def test_rejected_value_names_the_run_and_reason(tmp_path: Path) -> None:
    path = write_sweep(
        tmp_path, axes={"mix.method": ["tokenmix"], "mix.mask_ratio": [0.5, 1.3]}, seeds=[0, 1]
    )
    with pytest.raises(SweepError) as err:
        expand(load_sweep(path))
    message = str(err.value)
    assert (
        "run 2 (mix.method=tokenmix mix.mask_ratio=1.3 seed=0): mix.mask_ratio: mask_ratio must be in (0, 1)"
        in message
    )
    assert "run 3 (mix.method=tokenmix mix.mask_ratio=1.3 seed=1)" in message
    assert "run 0 " not in message


def test_missing_data_root_warns_in_plan_and_fails_launch_check(tmp_path: Path) -> None:
    root = tmp_path / "imagenet"
    path = write_sweep(
        tmp_path, overrides={"data": str(root), "data.img_size": 32}, axes={"mix.method": ["cutmix"]}
    )
    plan = expand(load_sweep(path), check_paths=False)
    assert any(w.startswith(f"data.root: {root} does not exist") for w in plan.warnings)
    assert plan.runs[0].config.data.root == root  # the real path, not the stand-in
    with pytest.raises(SweepError, match=rf"run 0 \(mix.method=cutmix\): data.root: {root} does not exist"):
        expand(load_sweep(path), check_paths=True)
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
    real = expand(load_sweep(path), check_paths=True)
    assert real.runs[0].run_id == plan.runs[0].run_id  # the plan-time id is the id the cluster computes


def test_prerequisite_reference(tmp_path: Path) -> None:
    (tmp_path / "teacher.yaml").write_text(
        yaml.safe_dump({"model": {"name": "cnn_micro"}, "data": "builtin"})
    )
    path = write_sweep(tmp_path, axes={"mix.method": ["tokenmix"], "teacher": ["none", "@teacher.yaml"]})
    plan = expand(load_sweep(path), check_paths=True)  # the teacher's checkpoint does not exist yet: fine
    (teacher,) = plan.prerequisites
    assert teacher.prerequisite and teacher.config.model.name == "cnn_micro"
    assert teacher.config.run.output_root == tmp_path / "runs" / "tiny"
    assert "prerequisite" in teacher.config.tracking.tags
    no_teacher, student = plan.runs
    assert no_teacher.needs == () and student.needs == (teacher.run_id,)
    assert student.config.teacher.checkpoint == tmp_path / "runs" / "tiny" / teacher.run_id / "checkpoint.pt"
    assert student.config.mix.target == "teacher_raw"
    assert student.label() == "mix.method=tokenmix teacher=@teacher.yaml"


def test_missing_prerequisite_file(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, axes={"mix.method": ["tokenmix"], "teacher": ["@nope.yaml"]})
    with pytest.raises(SweepError, match=r"prerequisite @nope.yaml: config file not found"):
        expand(load_sweep(path))


@pytest.mark.parametrize(
    ("file", "runs", "prerequisites"),
    [
        ("paper/mask_ratio.yaml", 18, 1),  # every TokenMix teacher row reads the NFNet-F6 maps step
        ("paper/token_grid.yaml", 12, 1),
        ("paper/teacher.yaml", 15, 4),  # one maps build step per teacher
        ("paper/mix_prob.yaml", 12, 1),
        ("paper/methods.yaml", 21, 1),
        ("paper/models.yaml", 18, 1),
        ("paper/mask_type.yaml", 9, 1),
        ("demo/mask_ratio.yaml", 6, 0),
        ("demo/token_grid.yaml", 6, 0),
        ("demo/teacher.yaml", 6, 2),  # the CNN teacher, then its maps build step
        ("demo/mix_prob.yaml", 4, 0),
        ("demo/methods.yaml", 25, 1),
    ],
)
def test_presets_plan_without_the_dataset(tmp_path: Path, file: str, runs: int, prerequisites: int) -> None:
    plan = expand(load_sweep(REPO / "sweeps" / file, output_root=tmp_path), check_paths=False)
    assert len(plan.runs) == runs and len(plan.prerequisites) == prerequisites
    if file.startswith("paper/"):
        models = {run.config.model.name for run in plan.runs}
        assert models == ({"deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224"}
                          if file.endswith("models.yaml") else {"deit_small_patch16_224"})
        assert all(run.config.schedule.epochs == 300 for run in plan.runs)
        # the reference's recipe: 300 + 10 cooldown epochs, EMA, BCE, one draw per 128 images; the
        # DeiT-recipe baseline rows alone use soft-target CE, repeated augmentation and timm's order
        assert all(run.config.schedule.total_epochs == 310 for run in plan.runs)
        deit = [run for run in plan.runs if run.config.data.repeated_aug == 3]
        assert all(run.config.optim.loss == "soft_ce" and run.config.data.aug_order == "timm" for run in deit)
        reference = [run for run in plan.runs if run not in deit]
        assert all(run.config.optim.ema_decay == 0.99996 and run.config.optim.loss == "bce" for run in reference)
        assert all(run.config.data.aug_order == "reference" for run in reference)
        assert all(run.config.mix.groups == 128 for run in plan.runs)
        assert all(run.config.teacher.topk == 5 for run in plan.runs if run.config.teacher.enabled)
        if not file.endswith("teacher.yaml"):  # the reference's teacher in every teacher-label row
            taught = [run for run in plan.runs if run.config.teacher.enabled]
            assert taught and all(run.config.teacher.maps is not None for run in taught)
            assert all(run.config.teacher.fallback == "zero" and not run.config.teacher.clamp_negative
                       for run in taught)
            (step,) = plan.prerequisites
            assert step.build["crop"] == "center" and step.build["img_size"] == 576
        assert any(w.startswith("data.root: /datasets/imagenet does not exist") for w in plan.warnings)
        assert sorted({run.config.run.seed for run in plan.runs}) == [0, 1, 2]
    else:
        assert not plan.warnings and all(run.config.data.source == "builtin" for run in plan.runs)


def test_an_exclude_entry_matching_nothing_is_refused(tmp_path: Path) -> None:
    """Defect 5: a typo'd exclude key was silently ignored, while a typo in include is refused."""
    sweep = load_sweep(write_sweep(tmp_path, axes={"mix.method": ["none", "mixup"]},
                                   exclude=[{"mix.methd": "mixup"}]))
    with pytest.raises(SweepError, match=r"exclude\[0\] mix.methd=mixup matches no run"):
        expand(sweep, check_paths=False)


def test_reports_expand_without_the_machine_checks(tmp_path: Path) -> None:
    """A report needs run ids, not a runnable setup: a model this timm lacks, a missing teacher file."""
    (tmp_path / "maps.yaml").write_text(yaml.safe_dump(
        {"kind": "maps", "teacher": {"model": "resnet_from_the_future", "checkpoint": str(tmp_path / "gone.pth")}}
    ))
    path = write_sweep(tmp_path, overrides={"model.name": "vit_future_patch4_32", "mix.method": "tokenmix"},
                       axes={"teacher.maps": [None, "@maps.yaml"]})
    with pytest.raises(SweepError, match="unknown timm model 'resnet_from_the_future'"):
        expand(load_sweep(path), check_paths=False)
    plan = expand(load_sweep(path), check_paths=False, machine=False)
    assert len(plan.runs) == 2 and plan.prerequisites[0].kind == "maps" and not plan.warnings


def _on_nodes(sweep, nodes: int):
    """The sweep with its runs on ``nodes`` nodes (what ``resources.nodes=N`` on the command line gives)."""
    import dataclasses

    resources = sweep.spec.resources.model_copy(update={"nodes": nodes})
    return dataclasses.replace(sweep, spec=sweep.spec.model_copy(update={"resources": resources}))


def test_paper_groups_are_checked_per_gpu_at_plan_time(tmp_path: Path) -> None:
    """mix.groups=128 of a 1,024 batch fits 8 GPUs; on 16 each GPU has 64 images and training would fail."""
    path = REPO / "sweeps/paper/methods.yaml"
    assert len(expand(load_sweep(path, output_root=tmp_path), check_paths=False).runs) == 21
    with pytest.raises(SweepError) as err:
        expand(_on_nodes(load_sweep(path, output_root=tmp_path), 2), check_paths=False)
    message = str(err.value)
    assert message.startswith(f"{path}: 18 run(s) of the sweep are invalid")  # the 3 runs without mixing train
    assert f"{path}: run 3 (mix.method=mixup seed=0) and 17 more run(s)" in message
    assert "mix.groups=128" in message and "data.batch_size=1024" in message
    assert "16 processes (2 nodes x 8 GPUs) gives 64 images per process" in message
    assert "fix: mix.groups=64" in message and "resources.nodes=1" in message
    halved = _on_nodes(load_sweep(path, ["mix.groups=64"], output_root=tmp_path), 2)
    plan = expand(halved, check_paths=False)
    assert len(plan.runs) == 21 and all(run.config.mix.groups == 64 for run in plan.runs)


def test_a_report_reads_runs_whatever_the_split(tmp_path: Path) -> None:
    """Reports expand without the runnable-setup checks: the records decide."""
    sweep = _on_nodes(load_sweep(REPO / "sweeps/paper/methods.yaml", output_root=tmp_path), 2)
    assert len(expand(sweep, check_paths=False, machine=False).runs) == 21


def test_a_prerequisite_is_checked_on_the_sweep_resources_too(tmp_path: Path) -> None:
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump(
        {"data": {"source": "builtin", "batch_size": 6}, "model": {"name": "cnn_micro"}, "mix": {"method": "cutmix"},
         "tracking": {"mode": "disabled"}}
    ))
    path = write_sweep(tmp_path, overrides={"mix.method": "tokenmix", "teacher": "@teacher.yaml"},
                       resources={"gpus_per_node": 0, "tasks_per_node": 2, "cpus_per_task": 1})
    with pytest.raises(SweepError, match=r"prerequisite @teacher.yaml: data.batch_size=6 over 2 processes gives 3 "):
        expand(load_sweep(path), check_paths=False)


def test_exclude_can_name_a_seed(tmp_path: Path) -> None:
    path = write_sweep(
        tmp_path, "seeds", axes={"mix.method": ["cutmix", "mixup"]}, seeds=[0, 1],
        exclude=[{"mix.method": "mixup", "run.seed": 1}],
    )
    plan = expand(load_sweep(path))
    got = sorted((run.config.mix.method, run.config.run.seed) for run in plan.runs)
    assert got == [("cutmix", 0), ("cutmix", 1), ("mixup", 0)]
    assert plan.excluded == 1
    with pytest.raises(SweepError, match=r"exclude\[0\].*matches no run.*seeds 0, 1"):
        expand(load_sweep(write_sweep(tmp_path, "typo", axes={"mix.method": ["cutmix"]}, seeds=[0, 1],
                                      exclude=[{"mix.method": "cutmix", "run.seed": 7}])))
