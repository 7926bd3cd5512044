"""A study through the real local SLURM cluster: one job array of workers sharing the journal."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.tune import open_study, study_status, tune
from suite.records import read_run
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
