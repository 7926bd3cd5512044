"""Local launches on a GPU machine, simulated: which GPUs runs get, and a preset that asks too many."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from jobs.backends import local as local_backend
from jobs.backends.local import GpuSlots, local_gpus
from jobs.launch import check, launch
from jobs.worker import RunJob, _expose
from sweeps.spec import SweepError, load_sweep
from tests.sweeps_tests.sweep_files import write_sweep


def test_local_gpus_are_the_inherited_visible_devices() -> None:
    # a 4-GPU share of an 8-GPU box (a SLURM allocation, a shared workstation): GPUs 4-7, not 0-3
    assert local_gpus(1, {"CUDA_VISIBLE_DEVICES": "4,5,6,7"}, 4) == ["4", "5", "6", "7"]
    uuids = "GPU-8a1f0c2e-0000-0000-0000-000000000001,MIG-5c3e-0000-0000-0000-000000000002"
    assert local_gpus(1, {"CUDA_VISIBLE_DEVICES": uuids}, 2) == uuids.split(",")
    assert local_gpus(1, {}, 3) == ["0", "1", "2"]  # nothing inherited: every GPU of the machine
    assert local_gpus(1, {"CUDA_VISIBLE_DEVICES": ""}, 0) == []  # hidden: the runs use the CPU
    assert local_gpus(1, {"CUDA_VISIBLE_DEVICES": "2,-1,3"}, 1) == ["2"]  # CUDA stops at an invalid entry
    assert local_gpus(0, {"CUDA_VISIBLE_DEVICES": "4,5"}, 2) == []  # the runs ask for no GPU
    assert local_gpus(2, {}, 0) == []  # no CUDA


class _Executor:
    def __init__(self) -> None:
        self.parameters: dict[str, Any] = {}

    def update_parameters(self, **kwargs: Any) -> None:
        self.parameters.update(kwargs)


def test_each_concurrent_run_gets_its_own_inherited_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    executor = _Executor()
    slots = GpuSlots(["4", "5", "6", "7"], 2)
    assert slots.take("a", executor) == ["4", "5"]
    assert executor.parameters == {"gpus_per_node": 2, "visible_gpus": (4, 5)}  # submitit sets CUDA_VISIBLE_DEVICES=4,5
    assert slots.take("b", executor) == ["6", "7"]
    slots.give_back("a")
    assert slots.take("c", executor) == ["4", "5"]

    uuids = ["GPU-aaaa", "GPU-bbbb"]
    slots = GpuSlots(uuids, 1)
    assert slots.take("a", executor) == ["GPU-aaaa"]
    assert executor.parameters == {"gpus_per_node": 1, "visible_gpus": ()}  # submitit takes integers only...
    job = RunJob({}, "a", ["GPU-aaaa"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # ...and would say 0, a GPU this launch was not given
    _expose(job.devices)  # what the job does first, before CUDA starts
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "GPU-aaaa"


def test_a_run_asking_more_gpus_than_the_machine_shows_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The paper presets ask 8 GPUs per run; this machine was given 4 of its GPUs.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    monkeypatch.setattr(local_backend, "cuda_device_count", lambda: 4)
    resources = {"gpus_per_node": 8, "cpus_per_task": 1, "mem_gb": 1, "timeout_min": 60}
    sweep = load_sweep(write_sweep(tmp_path, "eight", resources=resources))
    with pytest.raises(SweepError) as err:
        launch(sweep, executor="local")
    message = str(err.value)
    assert "resources.gpus_per_node=8" in message and "4 GPU(s)" in message and "CUDA_VISIBLE_DEVICES=4,5,6,7" in message
    assert "Nothing was started" in message
    assert not sweep.output_root.exists()  # refused before any file or process

    monkeypatch.setattr(local_backend, "cuda_device_count", lambda: 0)  # a CPU machine: runs train on the CPU
    check(sweep, executor="local")
