"""One conformance test over every backend (debug, local, the real SLURM cluster), plus local specifics."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from jobs.backends.slurm import render_sbatch, slurm_executor
from jobs.launch import launch, wait_for
from jobs.status_report import collect
from jobs.sweep_state import SweepState
from suite.config import apply_overrides
from suite.run.records import RunState, read_run
from sweeps.spec import load_sweep, to_override
from tests.sweeps_tests.sweep_files import write_sweep

BACKENDS = ["debug", "local", pytest.param("slurm", marks=pytest.mark.slurm)]


@pytest.mark.parametrize("executor", BACKENDS)
def test_two_runs_finish_and_relaunch_skips_them(tmp_path: Path, executor: str) -> None:
    resources = {
        "gpus_per_node": 1 if executor == "slurm" else 0,
        "cpus_per_task": 1,
        "mem_gb": 1,
        "timeout_min": 60,
    }
    sweep = load_sweep(write_sweep(tmp_path, axes={"mix.method": ["none", "cutmix"]}, resources=resources))
    report = launch(sweep, executor=executor, max_parallel=2, wait=True, poll_s=1)
    assert report.executor == executor and len(report.submitted) == 2
    assert report.final == {rid: RunState.FINISHED for rid in report.submitted}
    for run in report.plan.runs:
        record = read_run(run.paths.root)
        assert record.state is RunState.FINISHED and record.summary["epochs"] == 2
        assert record.config["run_id"] == run.run_id
    state = SweepState.read(sweep.state_file)
    assert {entry.executor for entry in state.runs.values()} == {executor}
    assert all(entry.job_id for entry in state.runs.values())
    again = launch(sweep, executor=executor)
    assert again.submitted == [] and set(again.skipped.values()) == {RunState.FINISHED}
    assert collect(SweepState.read(sweep.state_file)).counts[RunState.FINISHED] == 2


def test_local_runs_share_the_cpus_and_failures_show_in_status(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, axes={"optim.lr": [1e-3, 1e30]}, overrides={"run.threads": None})
    sweep = load_sweep(path)
    report = launch(sweep, executor="local", max_parallel=2)
    good, bad = report.plan.runs
    assert report.final == {good.run_id: RunState.FINISHED, bad.run_id: RunState.FAILED}
    assert report.failed() == [bad.run_id]
    assert " 1 threads)" in (good.paths.root / "train.log").read_text()  # 2 CPUs shared by 2 runs
    status = collect(SweepState.read(sweep.state_file))
    failed = next(r for r in status.runs if r.run_id == bad.run_id)
    assert failed.state is RunState.FAILED
    assert failed.error.startswith("FloatingPointError: non-finite training loss")
    assert failed.log_tail and failed.log_path.endswith("_log.err")
    assert any("FloatingPointError" in line for line in failed.log_tail)


def test_relaunch_resumes_and_reruns_only_what_needs_it(tmp_path: Path) -> None:
    sweep = load_sweep(write_sweep(tmp_path, axes={"optim.lr": [1e-3, 5e-4, 2e-4]}))
    first = launch(sweep, executor="debug")
    resumed, rerun, kept = first.plan.runs
    before = read_run(resumed.paths.root).summary
    (resumed.paths.summary).unlink()  # final weights left: the relaunch writes the summary again
    (rerun.paths.failure).write_text(json.dumps({"error": "X", "message": "simulated"}))
    (rerun.paths.summary).unlink()
    (rerun.paths.checkpoint).unlink()  # failure.json newer than any checkpoint: failed
    again = launch(sweep, executor="debug")
    assert sorted(again.submitted) == sorted([resumed.run_id, rerun.run_id])
    assert again.skipped == {kept.run_id: RunState.FINISHED}
    assert "summary is written again from its final weights" in (resumed.paths.log).read_text()
    after = read_run(resumed.paths.root).summary
    assert (after["top1"], after["val_loss"]) == (before["top1"], before["val_loss"])  # resumed at the end
    assert all(read_run(r.paths.root).state is RunState.FINISHED for r in first.plan.runs)


def test_prerequisite_trains_first_and_its_failure_blocks_dependents(tmp_path: Path) -> None:
    dotted = yaml.safe_load(write_sweep(tmp_path, "x").read_text())["base"]["overrides"]
    tiny = apply_overrides(
        {}, [to_override(key, value) for key, value in dotted.items()]
    )  # a run config file
    (tmp_path / "pre.yaml").write_text(yaml.safe_dump(tiny | {"name": "pretrain"}))
    sweep = load_sweep(write_sweep(tmp_path, axes={"model.checkpoint": ["@pre.yaml"], "optim.lr": [5e-4]}))
    report = launch(sweep, executor="debug")
    (pre,) = report.plan.prerequisites
    (student,) = report.plan.runs
    assert report.submitted == [pre.run_id, student.run_id]  # prerequisite first
    assert student.config.model.checkpoint == pre.paths.checkpoint
    assert report.final == {pre.run_id: RunState.FINISHED, student.run_id: RunState.FINISHED}

    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(apply_overrides(tiny, ["optim.lr=1e30"])))
    sweep = load_sweep(write_sweep(tmp_path, "dep", axes={"model.checkpoint": ["@bad.yaml"]}))
    report = launch(sweep, executor="debug")
    assert report.final == {report.plan.prerequisites[0].run_id: RunState.FAILED}
    assert report.blocked == [report.plan.runs[0].run_id]


@pytest.mark.parametrize("executor", ["local", pytest.param("slurm", marks=pytest.mark.slurm)])
def test_teacher_then_maps_step_then_students(tmp_path: Path, executor: str) -> None:
    """A sweep that trains its teacher, builds its offline maps from it, then trains students on them."""
    dotted = yaml.safe_load(write_sweep(tmp_path, "x").read_text())["base"]["overrides"]
    teacher = apply_overrides({}, [to_override(k, v) for k, v in dotted.items()] + ["model.name=cnn_micro"])
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump(teacher))
    (tmp_path / "maps.yaml").write_text(yaml.safe_dump({"kind": "maps", "teacher": "@teacher.yaml", "batch_size": 64}))
    resources = {"gpus_per_node": 1 if executor == "slurm" else 0, "cpus_per_task": 1, "mem_gb": 1, "timeout_min": 60}
    path = write_sweep(tmp_path, overrides={"mix.method": "tokenmix", "teacher.maps": "@maps.yaml"},
                       axes={"teacher.topk": [None, 2]}, resources=resources)
    sweep = load_sweep(path)
    report = launch(sweep, executor=executor)
    pre, step = report.plan.prerequisites
    assert report.submitted[:2] == [pre.run_id, step.run_id]
    final = report.final if executor == "local" else wait_for(
        SweepState.read(sweep.state_file), report.submitted, poll_s=1, timeout_s=240
    )
    assert set(final.values()) == {RunState.FINISHED}, final
    maps_dir = step.paths.root
    assert (maps_dir / "maps.json").is_file() and (maps_dir / "ranks.npy").is_file()
    assert json.loads((maps_dir / "summary.json").read_text())["count"] == 256
    for run in report.plan.runs:
        config = read_run(run.paths.root).config
        assert config is not None and config["teacher"]["maps"] == str(maps_dir)
    if executor == "slurm":  # each wave waits for the one before (afterok)
        deps = [a["dependency"] for a in report.arrays]
        assert deps[0] is None and deps[1] == f"afterok:{SweepState.read(sweep.state_file).runs[pre.run_id].job_id}"
        assert deps[2].startswith("afterok:")
    again = launch(sweep, executor=executor)
    assert again.submitted == [] and set(again.skipped.values()) == {RunState.FINISHED}
    status = collect(SweepState.read(sweep.state_file))
    assert status.counts[RunState.FINISHED] == 4


def test_failed_teacher_blocks_its_maps_step_and_the_students(tmp_path: Path) -> None:
    dotted = yaml.safe_load(write_sweep(tmp_path, "x").read_text())["base"]["overrides"]
    teacher = apply_overrides({}, [to_override(k, v) for k, v in dotted.items()] + ["model.name=cnn_micro", "optim.lr=1e30"])
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump(teacher))
    (tmp_path / "maps.yaml").write_text(yaml.safe_dump({"kind": "maps", "teacher": "@teacher.yaml"}))
    sweep = load_sweep(write_sweep(tmp_path, overrides={"mix.method": "tokenmix", "teacher.maps": "@maps.yaml"}))
    report = launch(sweep, executor="debug")
    pre, step = report.plan.prerequisites
    assert report.final == {pre.run_id: RunState.FAILED}
    assert report.blocked == [step.run_id, report.plan.runs[0].run_id]


def test_srun_asks_for_the_cpus_of_each_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SLURM 22.05-23.02 do not pass sbatch's --cpus-per-task on to srun: the srun line must say it."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit's executor wants an srun; nothing runs it
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    sweep = load_sweep(Path("sweeps/paper/methods.yaml"))  # 8 tasks of 10 CPUs per run
    resources = sweep.spec.resources
    two_nodes = resources.model_copy(update={"nodes": 2})
    for res in (resources, two_nodes):
        executor = slurm_executor(tmp_path / ".submitit", res, job_name=sweep.name)
        script = render_sbatch(executor, 3)
        (srun,) = [line.split() for line in script.splitlines() if line.startswith("srun ")]
        assert f"--cpus-per-task={res.cpus_per_task}" in srun  # each task bound to its 10 cores, not 1
        assert "--kill-on-bad-exit=1" in srun  # a rank that dies ends the others
        assert f"#SBATCH --cpus-per-task={res.cpus_per_task}" in script
        assert f"#SBATCH --ntasks-per-node={res.tasks}" in script and f"#SBATCH --nodes={res.nodes}" in script
