"""A study through the real local SLURM cluster: one job array of workers sharing the journal."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.tune import open_study, study_status, tune
from suite.run.records import read_run
from sweeps.study import load_study
from tests.sweeps_tests.study_files import write_study

pytestmark = pytest.mark.slurm

GPU = {"gpus_per_node": 1, "cpus_per_task": 1, "mem_gb": 1, "timeout_min": 30}


def test_study_completes_on_slurm_with_an_array_of_workers(tmp_path: Path) -> None:
    study = load_study(write_study(tmp_path, "slurm-study", n_trials=3, workers=2, resources=GPU))
    report = tune(study, executor="slurm", wait=True)
    assert report.executor == "slurm" and len(report.job_ids) == 2
    assert len({job.split("_")[0] for job in report.job_ids}) == 1, "one array for all workers"
    assert not report.failed_workers, report.failed_workers
    trials = open_study(study).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert len({t.user_attrs["run_id"] for t in trials}) == 3
    workers = {t.user_attrs["worker"] for t in trials}
    assert workers <= set(report.job_ids)
    for t in trials:
        assert read_run(study.output_root / t.user_attrs["run_id"]).summary is not None
    assert study_status(study).best is not None


def test_a_preempted_worker_requeues_and_continues_its_trial(tmp_path: Path) -> None:
    import time

    import submitit

    longer = {"data.train_size": 2048, "schedule.epochs": 4}
    path = write_study(tmp_path, "slurm-preempt", n_trials=1, workers=1, resources=GPU, overrides=longer,
                       heartbeat_s=1, grace_s=300)
    study = load_study(path)
    report = tune(study, executor="slurm", wait=False)
    (job_id,) = report.job_ids
    deadline = time.monotonic() + 240
    logs: list[Path] = []
    while not any("epoch 1/4" in p.read_text() for p in logs):
        assert time.monotonic() < deadline, "the worker never started training"
        time.sleep(0.2)
        logs = list(study.output_root.glob("*/train.log"))
    # submitit's own preemption test: SIGTERM, then USR2 (as SLURM does before a time limit).
    submitit.SlurmJob(folder=study.output_root / ".submitit" / "%j", job_id=job_id)._interrupt()
    while open_study(study).get_trials()[0].state.name == "RUNNING":
        assert time.monotonic() < deadline + 240, "the requeued worker never finished its trial"
        time.sleep(1.0)
    trials = open_study(study).get_trials()
    # Usually the requeued worker continues the same trial; when the requeue outlasts the heartbeat
    # check, the trial is failed and retried with the same params: the same run, resumed either way.
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 1 and len(trials) <= 2, [(t.number, t.state.name) for t in trials]
    trial = complete[0]
    assert {t.user_attrs["run_id"] for t in trials} == {trial.user_attrs["run_id"]}
    run = read_run(study.output_root / trial.user_attrs["run_id"])
    assert run.summary["epochs"] == 4
    log = run.paths.log.read_text()
    assert "checkpoint at epoch" in log and f"resuming {run.run_id} at epoch" in log
    assert sorted(trial.intermediate_values) == [1, 2, 3, 4]
