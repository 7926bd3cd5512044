"""Against the real local SLURM cluster: one job array, relaunches, preemption, failures.

Three sweeps are submitted at once (module fixture) so their jobs overlap on the two-core node;
the preemption test goes first, so that its run is still training when it is signalled.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import submitit

from jobs.launch import LaunchReport, launch, wait_for
from jobs.sweep_state import SweepState
from jobs.status_report import collect, observe
from suite.config import load_config
from suite.run.records import RunState, read_run
from suite.train.trainer import train
from sweeps.spec import Sweep, load_sweep
from tests.sweeps_tests.sweep_files import TINY, write_sweep

pytestmark = pytest.mark.slurm

GPU = {"gpus_per_node": 1, "cpus_per_task": 1, "mem_gb": 1, "timeout_min": 60}
LONGER = {
    "data.train_size": 2048,
    "schedule.epochs": 4,
    "tracking.mode": "offline",
}  # a few seconds of training
WAIT_S = 240


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Sweep, LaunchReport]]:
    folder = tmp_path_factory.mktemp("slurm-sweeps")
    files = {
        "preempt": write_sweep(folder, "preempt", overrides=LONGER, resources=GPU),
        "array": write_sweep(
            folder, "array", axes={"mix.method": ["none", "cutmix"], "optim.lr": [1e-3, 5e-4]}, resources=GPU
        ),
        "boom": write_sweep(folder, "boom", overrides={"optim.lr": 1e30}, resources=GPU),
    }
    launched = {}
    for key, path in files.items():
        sweep = load_sweep(path)
        launched[key] = (sweep, launch(sweep, executor="slurm"))
    return launched


def _wait(sweep: Sweep, report: LaunchReport) -> dict[str, RunState]:
    return wait_for(SweepState.read(sweep.state_file), report.submitted, poll_s=1, timeout_s=WAIT_S)


def test_preempted_job_resumes_to_the_same_metrics_and_wandb_run(sweeps: dict, tmp_path: Path) -> None:
    sweep, report = sweeps["preempt"]
    (run,) = report.plan.runs
    entry = SweepState.read(sweep.state_file).runs[run.run_id]
    deadline = time.monotonic() + WAIT_S
    while "epoch 1/4" not in (run.paths.log.read_text() if run.paths.log.is_file() else ""):
        assert time.monotonic() < deadline, "the job never started training"
        time.sleep(0.2)
    # submitit's own preemption test: SIGTERM, then USR2 (as SLURM does before a time limit).
    submitit.SlurmJob(folder=sweep.output_root / ".submitit" / "%j", job_id=entry.job_id)._interrupt()
    overrides = [f"{k}={json.dumps(v)}" for k, v in {**TINY, **LONGER}.items()]
    reference = train(
        load_config(None, [*overrides, f"run.output_root={tmp_path}", "tracking.mode=disabled"])
    )
    assert reference.run_id == run.run_id
    assert _wait(sweep, report) == {run.run_id: RunState.FINISHED}

    log = run.paths.log.read_text()
    assert "checkpoint at epoch" in log and f"resuming {run.run_id} at epoch" in log
    summary = read_run(run.paths.root).summary
    for key in ("top1", "top5", "val_loss"):
        assert summary[key] == reference.summary[key], key
    offline = sorted(p.name for p in (run.paths.root / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(name.endswith(f"-{run.run_id}") for name in offline)  # one W&B run id
    observed, _ = observe(SweepState.read(sweep.state_file))
    assert observed[run.run_id].record.requeued_before  # sacct -D: a REQUEUED attempt, then the final one


def test_four_runs_as_one_job_array(sweeps: dict) -> None:
    sweep, report = sweeps["array"]
    assert len(report.submitted) == 4 and report.sbatch_calls == 1
    assert report.arrays[0]["size"] == 4
    (script,) = [
        p
        for p in (sweep.output_root / ".submitit").rglob("*_submission.sh")
        if "--array=0-3" in p.read_text()
    ]
    assert "#SBATCH --gpus-per-node=1" in script.read_text()
    assert set(_wait(sweep, report).values()) == {RunState.FINISHED}
    for run in report.plan.runs:
        record = read_run(run.paths.root)
        assert record.state is RunState.FINISHED and [m["epoch"] for m in record.metrics] == [1, 2]
    status = collect(SweepState.read(sweep.state_file))
    assert status.counts[RunState.FINISHED] == 4 and status.accounting_ok
    assert status.gpu_hours_source.startswith("sacct") and status.gpu_hours > 0  # gres/gpu=1 x Elapsed


def test_second_launch_submits_nothing(sweeps: dict) -> None:
    sweep, _ = sweeps["array"]
    launches = len(SweepState.read(sweep.state_file).launches)
    again = launch(sweep, executor="slurm")
    assert again.submitted == [] and again.sbatch_calls == 0
    assert set(again.skipped.values()) == {RunState.FINISHED}
    assert len(SweepState.read(sweep.state_file).launches) == launches


def test_deleted_summary_relaunches_exactly_that_run(sweeps: dict) -> None:
    sweep, first = sweeps["array"]
    target = first.plan.runs[2]
    before = read_run(target.paths.root).summary
    target.paths.summary.unlink()
    again = launch(sweep, executor="slurm")
    assert again.submitted == [target.run_id] and again.sbatch_calls == 1
    assert _wait(sweep, again) == {target.run_id: RunState.FINISHED}
    after = read_run(target.paths.root).summary
    assert after["top1"] == before["top1"] and after["epochs"] == 2  # written again from the final weights
    assert "summary is written again from its final weights" in target.paths.log.read_text()


def test_failing_job_is_reported_with_its_error(sweeps: dict) -> None:
    sweep, report = sweeps["boom"]
    (run,) = report.plan.runs
    assert _wait(sweep, report) == {run.run_id: RunState.FAILED}
    status = collect(SweepState.read(sweep.state_file))
    (failed,) = status.runs
    assert failed.state is RunState.FAILED and failed.observation.scheduler == "FAILED"
    assert failed.error.startswith("FloatingPointError: non-finite training loss")
    assert failed.log_path.endswith("_log.err") and any(
        "FloatingPointError" in line for line in failed.log_tail
    )
