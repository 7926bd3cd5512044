"""A local run's controller writes its logs even when the launcher has not created the job folder yet."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest
import submitit
from submitit.local import local as submitit_local

from jobs.local_controller import FolderFirstLocalExecutor, start_controller

SETTINGS = {"tasks_per_node": 1, "cuda_devices": "", "timeout_min": 1.0, "signal_delay_s": 5, "stderr_to_stdout": False}


def _command() -> str:
    return shlex.join([sys.executable, "-c", "print('task ran')"])


def test_submitits_own_controller_dies_when_the_job_folder_is_not_there_yet(tmp_path: Path) -> None:
    """The race this module closes, made certain: nobody creates ``<folder>/<pid>`` for the controller."""
    process = submitit_local.start_controller(folder=tmp_path / "%j", command=_command(), **SETTINGS)
    assert process.wait(timeout=60) != 0
    assert not (tmp_path / str(process.pid)).exists()


def test_our_controller_creates_the_job_folder_and_runs_the_task(tmp_path: Path) -> None:
    process = start_controller(folder=tmp_path / "%j", command=_command(), **SETTINGS)
    assert process.wait(timeout=60) == 0
    log = tmp_path / str(process.pid) / f"{process.pid}_0_log.out"
    assert log.read_text() == "task ran\n"


def test_the_executor_runs_a_function_with_its_result_and_logs_in_the_job_folder(tmp_path: Path) -> None:
    executor = FolderFirstLocalExecutor(folder=tmp_path / "%j")
    executor.update_parameters(timeout_min=1, tasks_per_node=2)
    job = executor.submit(sorted, [3, 1, 2])
    assert job.results() == [[1, 2, 3], [1, 2, 3]]
    assert isinstance(job, submitit.LocalJob)
    assert job.paths.folder == tmp_path / job.job_id
    assert job.paths.stdout.exists() and job.paths.stderr.exists()


def test_the_executor_refuses_setup_commands_instead_of_skipping_them(tmp_path: Path) -> None:
    executor = FolderFirstLocalExecutor(folder=tmp_path / "%j")
    executor.update_parameters(timeout_min=1, setup=["export X=1"])
    with pytest.raises(ValueError, match="setup"):
        executor.submit(sorted, [2, 1])
