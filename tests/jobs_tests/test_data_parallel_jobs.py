"""Runs of several processes: resources map to submitit, and a 2-task job on the real local cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.executors import slurm_parameters
from jobs.launch import launch, wait_for
from jobs.state import SweepState
from suite.records import RunState, read_run
from sweeps.spec import ResourcesSpec, SweepError, load_sweep
from tests.sweeps_tests.sweep_files import write_sweep


def test_one_task_per_gpu_by_default() -> None:
    params = slurm_parameters(ResourcesSpec(nodes=2, gpus_per_node=8), job_name="x")
    assert (params["nodes"], params["ntasks_per_node"], params["gpus_per_node"]) == (2, 8, 8)
    assert ResourcesSpec(nodes=2, gpus_per_node=8).gpus == 16
    assert slurm_parameters(ResourcesSpec(gpus_per_node=0), job_name="x")["ntasks_per_node"] == 1
    assert ResourcesSpec(gpus_per_node=0, tasks_per_node=2).processes == 2  # CPU ranks
    with pytest.raises(ValueError, match="one process per GPU"):
        ResourcesSpec(gpus_per_node=8, tasks_per_node=4)


def test_paper_presets_use_8_gpus_per_run() -> None:
    for path in sorted(Path("sweeps/paper").glob("*.yaml")):
        try:
            sweep = load_sweep(path)
        except SweepError as err:  # pragma: no cover - the presets are valid
            raise AssertionError(err) from None
        assert (sweep.spec.resources.gpus, sweep.spec.resources.processes) == (8, 8), path
        assert sweep.base["data"]["batch_size"] == 1024  # global: 8 x 128


@pytest.mark.slurm
def test_two_task_job_trains_one_run(tmp_path: Path) -> None:
    resources = {"gpus_per_node": 2, "tasks_per_node": 2, "cpus_per_task": 1, "mem_gb": 1, "timeout_min": 30}
    sweep = load_sweep(write_sweep(tmp_path, "ddp", overrides={"tracking.mode": "offline"}, resources=resources))
    report = launch(sweep, executor="slurm")
    (run,) = report.plan.runs
    scripts = list((sweep.output_root / ".submitit").rglob("*_submission.sh"))
    assert any("#SBATCH --ntasks-per-node=2" in p.read_text() for p in scripts)
    states = wait_for(SweepState.read(sweep.state_file), report.submitted, poll_s=1, timeout_s=300)
    assert states == {run.run_id: RunState.FINISHED}
    runs = [p for p in sweep.output_root.iterdir() if (p / "config.json").is_file()]
    assert runs == [run.paths.root]  # one run directory
    record = read_run(run.paths.root)
    assert record.summary["processes"] == 2 and [m["epoch"] for m in record.metrics] == [1, 2]
    offline = list((run.paths.root / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and offline[0].name.endswith(f"-{run.run_id}")  # one W&B run id
    assert record.paths.log.read_text().count("starting ") == 1  # rank 0 alone logs
