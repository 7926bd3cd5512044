"""GPU-hour estimates: the throughput table, and measured throughput of finished runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sweeps.estimate import IMAGENET_TRAIN, IMAGENET_VAL, THROUGHPUT, estimate
from sweeps.expand import expand
from sweeps.spec import load_sweep
from tests.sweeps_tests.sweep_files import write_sweep

REPO = Path(__file__).resolve().parents[2]


def test_paper_estimate_from_the_table(tmp_path: Path) -> None:
    plan = expand(load_sweep(REPO / "sweeps/paper/methods.yaml", output_root=tmp_path), check_paths=False)
    est = estimate(plan)
    rate = THROUGHPUT["deit_small_patch16_224"].images_per_s
    per_run = (300 + 10) * (IMAGENET_TRAIN + IMAGENET_VAL / 3) / rate / 3600  # cosine + cooldown epochs
    assert est.device == "GPU" and est.unknown == 1  # the NFNet-F6 maps build: no published throughput
    assert est.total_hours == pytest.approx(21 * per_run)
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
    assert est.hours[todo.run_id] == pytest.approx(2 * (256 + 128 / 3) / 256.0 / 3600)
    assert est.sources["vit_micro_patch4_32"].startswith("measured in finished runs")


def test_more_nodes_same_gpu_hours_shorter_wall_clock(tmp_path: Path) -> None:
    import dataclasses

    def planned(nodes: int):
        sweep = load_sweep(REPO / "sweeps/paper/methods.yaml", ["mix.groups=32"], output_root=tmp_path)
        resources = sweep.spec.resources.model_copy(update={"nodes": nodes})
        sweep = dataclasses.replace(sweep, spec=sweep.spec.model_copy(update={"resources": resources}))
        return estimate(expand(sweep, check_paths=False))

    one, four = planned(1), planned(4)
    assert four.total_hours == pytest.approx(one.total_hours)  # table rates scale linearly with the GPUs
    assert four.wall_hours == pytest.approx(one.wall_hours / 4)
    assert one.wall_hours == pytest.approx(one.total_hours / 21 / 8)  # 21 equal runs of 8 GPUs each
    assert one.sweep_wall_hours == pytest.approx(6 * one.wall_hours)  # 21 runs, 4 at a time: 6 rounds
