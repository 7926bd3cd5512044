"""Runs of several processes: resources map to submitit, and a 2-task job on the real local cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.backends.slurm import slurm_parameters
from jobs.launch import launch, wait_for
from jobs.sweep_state import SweepState
from suite.run.records import RunState, read_run
from sweeps.spec import ResourcesSpec, SweepError, load_sweep
from tests.sweeps_tests.sweep_files import write_sweep

REPO = Path(__file__).resolve().parents[2]


def test_one_task_per_gpu_by_default() -> None:
    params = slurm_parameters(ResourcesSpec(nodes=2, gpus_per_node=8), job_name="x")
    assert (params["nodes"], params["ntasks_per_node"], params["gpus_per_node"]) == (2, 8, 8)
    assert ResourcesSpec(nodes=2, gpus_per_node=8).gpus == 16
    assert slurm_parameters(ResourcesSpec(gpus_per_node=0), job_name="x")["ntasks_per_node"] == 1
    assert ResourcesSpec(gpus_per_node=0, tasks_per_node=2).processes == 2  # CPU ranks
    with pytest.raises(ValueError, match="one process per GPU"):
        ResourcesSpec(gpus_per_node=8, tasks_per_node=4)


def test_paper_presets_use_8_gpus_per_run() -> None:
    presets = sorted((REPO / "sweeps" / "paper").glob("*.yaml"))
    assert presets, f"no sweep files in {REPO / 'sweeps' / 'paper'}"
    for path in presets:
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


@pytest.mark.slurm
def test_preempted_two_task_job_checkpoints_once_and_resumes_exactly(tmp_path: Path) -> None:
    import json
    import os
    import time

    import submitit

    from jobs.status_report import observe
    from suite.device.distributed import launch_local
    from tests.sweeps_tests.sweep_files import TINY

    longer = {"tracking.mode": "offline", "data.train_size": 2048, "schedule.epochs": 4, "run.log_every": 2}
    resources = {"gpus_per_node": 2, "tasks_per_node": 2, "cpus_per_task": 1, "mem_gb": 1, "timeout_min": 30}
    sweep = load_sweep(write_sweep(tmp_path, "ddp-preempt", overrides=longer, resources=resources))
    report = launch(sweep, executor="slurm")
    (run,) = report.plan.runs
    entry = SweepState.read(sweep.state_file).runs[run.run_id]
    deadline = time.monotonic() + 300
    while "epoch 1/4" not in (run.paths.log.read_text() if run.paths.log.is_file() else ""):
        assert time.monotonic() < deadline, "the job never started training"
        time.sleep(0.2)
    submitit.SlurmJob(folder=sweep.output_root / ".submitit" / "%j", job_id=entry.job_id)._interrupt()
    # the same run on 2 local processes, uninterrupted
    overrides = [f"{k}={json.dumps(v)}" for k, v in {**TINY, **longer}.items()]
    code = launch_local(
        ["train", *overrides, f"run.output_root={tmp_path / 'ref'}", "tracking.mode=disabled", "--no-progress"], 2,
        env={**os.environ, "PYTHONPATH": str(Path.cwd())},
    )
    assert code == 0
    reference = read_run(tmp_path / "ref" / run.run_id)
    states = wait_for(SweepState.read(sweep.state_file), report.submitted, poll_s=1, timeout_s=300)
    assert states == {run.run_id: RunState.FINISHED}

    log = run.paths.log.read_text()
    assert log.count("checkpoint at") == 1 and log.count(f"resuming {run.run_id}") == 1  # one checkpoint, one resume
    record = read_run(run.paths.root)
    for key in ("top1", "top5", "val_loss"):
        assert record.summary[key] == reference.summary[key], key
    offline = sorted(p.name for p in (run.paths.root / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(name.endswith(f"-{run.run_id}") for name in offline)  # one W&B run id
    observed, _ = observe(SweepState.read(sweep.state_file))
    assert observed[run.run_id].record.requeued_before  # requeued once, then the final attempt


@pytest.mark.slurm
def test_a_rank_failing_in_a_two_task_job_is_recorded_and_ends_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    # rank 1 runs out of memory at step 2 (tests/faults_hook); sbatch passes this environment on
    hook = Path.cwd() / "tests" / "faults_hook"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), str(Path.cwd()), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("FAULT_RANK", "1")
    monkeypatch.setenv("FAULT_STEP", "2")
    resources = {"gpus_per_node": 2, "tasks_per_node": 2, "cpus_per_task": 1, "mem_gb": 1, "timeout_min": 30}
    sweep = load_sweep(write_sweep(tmp_path, "ddp-fail", resources=resources))
    report = launch(sweep, executor="slurm")
    (run,) = report.plan.runs
    # srun --kill-on-bad-exit ends rank 0, which would otherwise wait at its next collective
    states = wait_for(SweepState.read(sweep.state_file), report.submitted, poll_s=1, timeout_s=300)
    assert states == {run.run_id: RunState.FAILED}
    record = read_run(run.paths.root)
    assert record.state is RunState.FAILED
    assert (record.failure["rank"], record.failure["error"]) == (1, "OutOfMemoryError")
    assert "injected on rank 1" in record.failure["message"]


def test_local_executor_runs_the_processes_of_one_run(tmp_path: Path) -> None:
    resources = {"gpus_per_node": 0, "tasks_per_node": 2, "cpus_per_task": 1, "mem_gb": 1, "timeout_min": 30}
    sweep = load_sweep(write_sweep(tmp_path, "local-ddp", overrides={"tracking.mode": "offline"}, resources=resources))
    report = launch(sweep, executor="local", wait=True)
    (run,) = report.plan.runs
    record = read_run(run.paths.root)
    assert record.state is RunState.FINISHED
    assert record.summary["processes"] == 2 and record.summary["threads"] >= 1
    assert len(list((run.paths.root / "wandb").glob("offline-run-*"))) == 1
