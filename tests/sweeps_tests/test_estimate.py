"""GPU-hour estimates: the throughput table, and measured throughput of finished runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sweeps.estimate import EVAL_SPEEDUP, IMAGENET_TRAIN, IMAGENET_VAL, SETUP_SECONDS, THROUGHPUT, estimate
from sweeps.expand import expand
from sweeps.spec import load_sweep
from tests.sweeps_tests.sweep_files import write_sweep

REPO = Path(__file__).resolve().parents[2]


def test_paper_estimate_from_the_table(tmp_path: Path) -> None:
    plan = expand(load_sweep(REPO / "sweeps/paper/methods.yaml", output_root=tmp_path), check_paths=False)
    est = estimate(plan)
    rate = 8 * THROUGHPUT["deit_small_patch16_224"].images_per_s  # 8 GPUs per run
    # 300 + 10 cooldown epochs; the raw and the EMA model evaluated every epoch, 3 occlusion passes at the end
    seconds = SETUP_SECONDS["gpu"] + 310 * IMAGENET_TRAIN / rate + (2 * 310 + 3) * IMAGENET_VAL / (3 * rate)
    assert est.device == "GPU" and est.unknown == 1  # the NFNet-F6 maps build: no published throughput
    assert est.total_hours == pytest.approx(21 * 8 * seconds / 3600)
    assert "timm benchmark" in est.sources["deit_small_patch16_224"]


def test_measured_throughput_of_finished_runs_wins(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, axes={"optim.lr": [1e-3, 5e-4]})
    plan = expand(load_sweep(path))
    done, todo = plan.runs
    done.paths.root.mkdir(parents=True)
    (done.paths.root / "config.json").write_text(json.dumps(done.resolved()))
    (done.paths.root / "summary.json").write_text(
        json.dumps({"run_id": done.run_id, "status": "finished", "top1": 50.0, "images_per_s": 256.0,
                    "device": "cpu (x86_64)"})
    )
    est = estimate(plan)
    assert est.device == "CPU"
    assert est.hours[done.run_id] == 0.0  # finished: nothing left to spend
    cfg = todo.config  # no setup time recorded by the finished run: the default setup and eval speed-up
    epochs, val = cfg.schedule.total_epochs, cfg.data.val_size
    seconds = SETUP_SECONDS["cpu"] + epochs * cfg.data.train_size / 256.0 + epochs * val / (EVAL_SPEEDUP["cpu"] * 256.0)
    assert est.hours[todo.run_id] == pytest.approx(seconds / 3600)
    assert est.sources["vit_micro_patch4_32"].startswith("measured in finished runs")


def test_more_nodes_same_gpu_hours_shorter_wall_clock(tmp_path: Path) -> None:
    import dataclasses

    def planned(nodes: int):
        sweep = load_sweep(REPO / "sweeps/paper/methods.yaml", ["mix.groups=32"], output_root=tmp_path)
        resources = sweep.spec.resources.model_copy(update={"nodes": nodes})
        sweep = dataclasses.replace(sweep, spec=sweep.spec.model_copy(update={"resources": resources}))
        return estimate(expand(sweep, check_paths=False))

    one, four = planned(1), planned(4)
    # table rates scale linearly with the GPUs; only each process's setup is billed once more per GPU
    assert four.total_hours - one.total_hours == pytest.approx(21 * SETUP_SECONDS["gpu"] * (32 - 8) / 3600)
    setup = SETUP_SECONDS["gpu"] / 3600  # the same on 8 or 32 GPUs; the rest is 4x shorter
    assert four.wall_hours == pytest.approx((one.wall_hours - setup) / 4 + setup)
    assert one.wall_hours == pytest.approx(max(h for h in one.hours.values() if h) / 8)  # the longest run, 8 GPUs
    assert one.sweep_wall_hours == pytest.approx(6 * one.wall_hours)  # 21 runs, 4 at a time: 6 rounds


def _finished(run, *, images_per_s: float, wall: float, setup: float, train: float, epochs: int) -> None:
    run.paths.root.mkdir(parents=True)
    (run.paths.root / "config.json").write_text(json.dumps(run.resolved()))
    (run.paths.root / "summary.json").write_text(json.dumps({
        "run_id": run.run_id, "status": "finished", "top1": 50.0, "images_per_s": images_per_s, "device": "cpu (x86_64)",
        "wall_seconds": wall, "setup_seconds": setup, "train_seconds": train, "epochs": epochs,
        "val_images": run.config.data.val_size,
    }))


def test_setup_and_evaluation_speed_are_fitted_to_finished_runs(tmp_path: Path) -> None:
    """Two finished runs that evaluated 2 x 64 and 2 x 256 images (one epoch, one occlusion pass)
    spent 3 + n/128 s outside their training epochs: a third run with 512 validation images is
    estimated from that line, not from the defaults."""
    path = write_sweep(tmp_path, axes={"data.val_size": [64, 256, 512]}, overrides={"schedule.epochs": 1})
    plan = expand(load_sweep(path))
    small, medium, todo = plan.runs
    for run in (small, medium):
        val = run.config.data.val_size
        _finished(run, images_per_s=128.0, wall=2.0 + 2 * val / 128 + 1.0, setup=2.0, train=2.0, epochs=1)
    est = estimate(plan)
    trained = todo.config.data.train_size / 128.0
    assert est.hours[todo.run_id] * 3600 == pytest.approx(3.0 + trained + 2 * 512 / 128)


def test_an_online_teacher_is_billed_its_forward_pass(tmp_path: Path) -> None:
    """Without a finished run that had the teacher, its forward pass on every batch (a third of a
    training step of the teacher's model) is added to the student's rate."""
    from sweeps.estimate import FORWARD_SPEEDUP

    sweep = load_sweep(REPO / "sweeps/demo/teacher.yaml", output_root=tmp_path)
    plan = expand(sweep, check_paths=False)
    rows = {run.values["teacher"]: run for run in plan.runs if run.values["run.seed"] == 0}
    est = estimate(plan)
    none, online = rows["none"], rows["@base/teacher_cnn.yaml"]
    student, teacher = THROUGHPUT["vit_micro_patch4_32"].images_per_s, THROUGHPUT["cnn_micro"].images_per_s
    slower = (1 / student + 1 / (FORWARD_SPEEDUP * teacher)) / (1 / student)
    trained = none.config.schedule.total_epochs * none.config.data.train_size
    extra = trained / student * (slower - 1)
    assert (est.hours[online.run_id] - est.hours[none.run_id]) * 3600 == pytest.approx(extra)


def test_eval_subset_bills_its_images_before_the_last_epoch(tmp_path: Path) -> None:
    """10 epochs evaluated every 4 (epochs 4, 8 and the last, 10) with eval.subset=100 of 1,000
    validation images, one occlusion pass: 100 + 100 + 1,000 + 1,000 images evaluated."""
    from sweeps.estimate import run_work

    overrides = {"schedule.epochs": 10, "eval.every": 4, "data.val_size": 1000, "eval.occlusion": [0.5]}
    path = write_sweep(tmp_path, axes={"eval.subset": [100, None]}, overrides=overrides)
    subset, whole = expand(load_sweep(path)).runs
    assert run_work(subset).evaluated == 100 + 100 + 1000 + 1000
    assert run_work(whole).evaluated == 3 * 1000 + 1000
