"""Tuning end to end on this machine: asynchronous local workers, a killed worker, pruning, the CLI.

Every trial is a real tiny training (seconds on one core) into a temp folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import typer
import yaml
from typer.testing import CliRunner

from jobs.tune import best_sweep, open_study, plot_study, study_status, tune
from jobs.tune_cli import register
from suite.run.records import read_jsonl, read_run
from sweeps.study import load_study
from tests.sweeps_tests.study_files import write_study

WAIT_S = 300


def _cli() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.command("noop")
    def noop() -> None:  # a second command keeps `tune` a group, as in the suite app
        """Nothing."""

    return app


def _finished(trials: list) -> list:
    return [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]


def test_two_local_workers_share_the_journal_and_finish_exactly_n_trials(tmp_path: Path) -> None:
    study = load_study(write_study(tmp_path, n_trials=4, workers=2))
    report = tune(study, executor="local")
    assert not report.failed_workers and len(report.results) == 2
    assert all(r["trials"] for r in report.results), "both workers took trials (no batch barrier)"
    trials = open_study(study).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    run_ids = [t.user_attrs["run_id"] for t in trials]
    assert len(set(run_ids)) == 4
    dirs = sorted(p.parent.name for p in study.output_root.glob("*/config.json"))
    assert dirs == sorted(run_ids)
    for t in trials:
        record = read_run(study.output_root / t.user_attrs["run_id"])
        assert record.summary is not None and record.summary["best_top1"] == t.value
        assert record.config["name"] == f"tiny-study-trial{t.number}"
        assert record.config["tracking"]["group"] == "tiny-study"
        assert f"trial:{t.number}" in record.config["tracking"]["tags"]
    assert (study.output_root / "study.journal").is_file()

    # Running it again does nothing; raising n_trials extends the same study.
    assert tune(study, executor="local").results == []
    bigger = load_study(write_study(tmp_path, n_trials=5, workers=1))
    tune(bigger, executor="debug")
    assert len(open_study(bigger).get_trials()) == 5

    # best -> a seeded sweep file that the sweep loader accepts.
    out = tmp_path / "best.yaml"
    best_sweep(bigger, seeds=[0, 1], write=out)
    from sweeps.expand import expand
    from sweeps.spec import load_sweep

    plan = expand(load_sweep(out), check_paths=False)
    assert len(plan.runs) == 2
    best = study_status(bigger).best
    assert {r.config.optim.lr for r in plan.runs} == {best["params"]["optim.lr"]}
    plots = plot_study(bigger)
    assert all(isinstance(p, Path) and p.is_file() for p in plots.values()), plots


def _start_worker(study_file: Path) -> subprocess.Popen:
    code = (
        "import sys; from sweeps.study import load_study; from jobs.tune import TuneWorker, open_study; "
        f"s = load_study({str(study_file)!r}); open_study(s, create=True); TuneWorker(s, 0, 1)()"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=study_file.parent)


def test_a_killed_workers_trial_is_retried_and_resumes_its_run(tmp_path: Path) -> None:
    path = write_study(tmp_path, n_trials=1, overrides={"schedule.epochs": 3, "data.train_size": 512})
    study = load_study(path)
    proc = _start_worker(path)
    deadline = time.monotonic() + WAIT_S
    metrics = []
    while not metrics:
        assert time.monotonic() < deadline and proc.poll() is None, "the worker never finished an epoch"
        time.sleep(0.2)
        metrics = [p for p in study.output_root.glob("*/metrics.jsonl") if read_jsonl(p)]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (killed,) = open_study(study).get_trials()
    assert killed.state.name == "RUNNING"  # nobody told the storage

    report = tune(study, executor="local", workers=1)  # fails the stale trial after grace_s, retries it
    assert not report.failed_workers
    trials = open_study(study).get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    retry = trials[1]
    assert retry.system_attrs["failed_trial"] == killed.number
    assert retry.params == killed.params and retry.user_attrs["run_id"] == killed.user_attrs["run_id"]
    run = read_run(study.output_root / retry.user_attrs["run_id"])
    assert run.summary["epochs"] == 3
    assert f"resuming {run.run_id} at epoch" in run.paths.log.read_text()
    assert sorted(retry.intermediate_values) == [1, 2, 3]  # the killed worker's epoch was backfilled


def test_a_bad_region_is_pruned_before_its_last_epoch(tmp_path: Path) -> None:
    path = write_study(
        tmp_path,
        n_trials=2,
        overrides={"schedule.epochs": 3},
        space={"optim.lr": [3.0e-3, 0.5]},  # 0.5: the deliberately bad region (the loss blows up)
        objective={"metric": "val_loss", "direction": "minimize"},
        pruner={"name": "median", "params": {"n_startup_trials": 1, "n_warmup_steps": 0}},
    )
    study = load_study(path)
    ostudy = open_study(study, create=True)
    ostudy.enqueue_trial({"optim.lr": 3.0e-3})
    ostudy.enqueue_trial({"optim.lr": 0.5})
    tune(study, executor="debug")
    good, bad = open_study(study).get_trials()
    assert good.state.name == "COMPLETE" and len(good.intermediate_values) == 3
    assert bad.state.name == "PRUNED"
    run = read_run(study.output_root / bad.user_attrs["run_id"])
    assert run.state.value == "pruned"
    assert len(run.metrics) < 3 and run.summary["epochs"] < 3
    assert "pruned by the median pruner" in run.summary["prune_reason"]


def test_cli_runs_a_study_and_reads_it_back(tmp_path: Path) -> None:
    path = write_study(tmp_path, n_trials=1)
    runner = CliRunner()
    result = runner.invoke(_cli(), ["tune", str(path), "--executor", "debug"])
    assert result.exit_code == 0, result.output
    assert "1/1 finished" in result.output
    result = runner.invoke(_cli(), ["tune", "status", str(path), "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["counts"] == {"complete": 1} and status["best"]["number"] == 0
    out = tmp_path / "best.yaml"
    result = runner.invoke(_cli(), ["tune", "best", str(path), "--seeds", "0,1,2", "--write", str(out)])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(out.read_text())["seeds"] == [0, 1, 2]


def test_cli_refuses_a_malformed_study_before_creating_it(tmp_path: Path) -> None:
    path = write_study(tmp_path, space={"optim.lr": {"type": "float", "low": 1.0, "high": 0.1}})
    result = CliRunner().invoke(_cli(), ["tune", str(path), "--executor", "local"])
    assert result.exit_code == 2
    assert "space.optim.lr: low must be <= high" in result.output
    assert not (tmp_path / "runs").exists()
    result = CliRunner().invoke(_cli(), ["tune", "status", str(write_study(tmp_path, name="never"))])
    assert result.exit_code == 2 and "no study yet" in result.output


def test_status_says_when_trials_repeat_a_parameter_set(tmp_path: Path) -> None:
    """Defect 15: `n_trials: 6` gave 4 distinct runs without a word; status now says so per trial and in total."""
    path = write_study(tmp_path, n_trials=3, space={"mix.prob": [1.0]}, sampler={"name": "random", "seed": 0})
    runner = CliRunner()
    result = runner.invoke(_cli(), ["tune", str(path), "--executor", "debug"])
    assert result.exit_code == 0, result.output
    trials = open_study(load_study(path)).get_trials()
    assert len({t.user_attrs["run_id"] for t in trials}) == 1 and len(trials) == 3  # one point, trained once
    result = runner.invoke(_cli(), ["tune", "status", str(path)], terminal_width=300)
    assert result.exit_code == 0, result.output
    assert "the 3 finished trials are 1 distinct run: 2 repeated the parameters" in result.output
    assert result.output.count("same run as") == 2  # the table's note on trials 1 and 2 (it may wrap)


def test_a_killed_worker_is_reported_as_killed_not_by_its_last_progress_line() -> None:
    """Defect 15: a SIGKILLed worker was reported as "failed: epoch 1/8 loss ..."."""
    from submitit.core.utils import UncompletedJobError

    from jobs.tune.dispatch import worker_error

    killed = UncompletedJobError("Job 12 (task: 0) has not produced any output (state: FINISHED)\n"
                                 "Error stream produced:\n----\nepoch 1/8 loss 2.30")
    message = worker_error(killed)
    assert message.startswith("was killed before it ended") and "epoch 1/8" not in message
    assert "retried from the run's last checkpoint" in message
    assert worker_error(ValueError("bad\nreal reason")) == "failed: real reason"  # a raised error keeps its line
