"""Defects found by users (round 2): moved sweep folders, edited sweep files, stopped launchers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import flat, run_cli
from tests.sweeps_tests.sweep_files import write_sweep


@pytest.fixture(scope="module")
def finished_sweep(cli, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sweep file whose two runs finished (debug executor, one epoch)."""
    tmp = tmp_path_factory.mktemp("finished")
    path = write_sweep(tmp, "moved", overrides={"schedule.epochs": 1}, axes={"mix.method": ["none", "cutmix"]})
    code, output = run_cli(cli, "sweep", "launch", path, "-e", "debug")
    assert code == 0, output
    return path


def test_a_moved_sweep_folder_keeps_its_finished_runs(cli, finished_sweep: Path, tmp_path: Path) -> None:
    """The state file works after its folder moves: status shows the runs finished, launch trains nothing."""
    from jobs.sweep_state import SweepState

    old_root = finished_sweep.parent / "runs" / "moved"
    moved = tmp_path / "elsewhere"
    shutil.copytree(old_root, moved)
    shutil.rmtree(old_root)  # the old folder is gone: nothing may read it any more
    stored = json.loads((moved / "sweep-state.json").read_text())
    assert str(old_root) not in json.dumps(stored)  # paths relative to the state file
    state = SweepState.read(moved / "sweep-state.json")
    assert state is not None and state.output_root == str(moved)
    assert state.submitit_folder == str(moved / ".submitit" / "%j")

    code, output = run_cli(cli, "sweep", "status", moved, "--json")
    assert code == 0, output
    assert {run["state"] for run in json.loads(output)["runs"]} == {"finished"}
    code, output = run_cli(cli, "sweep", "launch", finished_sweep, "--output-root", moved, "-e", "debug")
    assert code == 0, output
    assert "nothing to submit" in flat(output)


def test_an_older_state_file_with_an_absolute_root_is_rebased(tmp_path: Path) -> None:
    """A state file written with absolute folders by an older version reads against where it is now."""
    from jobs.sweep_state import SweepState

    state_file = tmp_path / "now" / "sweep-state.json"
    state_file.parent.mkdir()
    state_file.write_text(json.dumps({
        "version": 1, "sweep": "s", "sweep_file": "/x/s.yaml", "output_root": "/old/place",
        "submitit_folder": "/old/place/.submitit/%j", "runs": {}, "launches": [],
    }))
    state = SweepState.read(state_file)
    assert state is not None and state.output_root == str(tmp_path / "now")
    assert state.submitit_folder == str(tmp_path / "now" / ".submitit" / "%j")


def _read_until(proc, needle: str, timeout_s: float = 120.0) -> str:
    """The process's output up to the first line holding ``needle`` (fails on exit or timeout)."""
    import select
    import time

    seen = ""
    deadline = time.monotonic() + timeout_s
    while needle not in seen:
        assert time.monotonic() < deadline, f"no {needle!r} within {timeout_s} s:\n{seen}"
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            line = proc.stdout.readline()
            assert line, f"exited ({proc.wait()}) before {needle!r}:\n{seen}"
            seen += line
    return seen


def _wait_for_file(root: Path, pattern: str, proc, timeout_s: float = 120.0) -> Path:
    """The first file matching ``pattern`` under ``root``, once the running ``proc`` wrote it."""
    import time

    deadline = time.monotonic() + timeout_s
    while not (found := sorted(root.glob(pattern))):
        assert proc.poll() is None, f"exited ({proc.returncode}) before {pattern} appeared"
        assert time.monotonic() < deadline, f"no {pattern} under {root} within {timeout_s} s"
        time.sleep(0.1)
    return found[0]


def _launcher(args: list[str], tmp_path: Path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "FORCE_COLOR": "1", "COLUMNS": "200", "SUITE_STOP_GRACE_S": "120"}
    return subprocess.Popen(
        [sys.executable, *args], cwd=Path(__file__).resolve().parents[2], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )


def test_ctrl_c_in_the_demo_is_one_line_exit_75_and_runs_in_yellow(tmp_path: Path) -> None:
    """A real SIGINT to `python -m jobs.demo` once a run has started: one line, exit 75, no traceback."""
    import signal

    from suite.cli.console import EXIT_INTERRUPTED

    sweep = write_sweep(tmp_path, "long", overrides={"schedule.epochs": 500}, seeds=[0],
                        axes={"mix.method": ["none"]})
    proc = _launcher(["-m", "jobs.demo", "--sweep", str(sweep), "--output-root", str(tmp_path / "runs"),
                      "--report", str(tmp_path / "report"), "-j", "1"], tmp_path)
    try:
        _read_until(proc, "started")
        _wait_for_file(tmp_path / "runs", "*/metrics.jsonl", proc)  # the run trained an epoch
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_INTERRUPTED, output
    assert "Traceback" not in output and "LaunchInterrupted" not in output
    assert output.count("demo stopped") == 1 and "make demo" in output
    assert "\x1b[33minterrupted" in output  # yellow, not red like a failure
    assert "\x1b[31minterrupted" not in output


def test_sighup_to_a_local_launcher_stops_its_runs_with_a_checkpoint(tmp_path: Path) -> None:
    """A closed terminal (SIGHUP to the launcher's whole session) is a stop like SIGTERM: exit 75, a message."""
    import os
    import signal

    from suite.cli.console import EXIT_INTERRUPTED
    from suite.run.records import RunState, read_run

    sweep = write_sweep(tmp_path, "hup", overrides={"schedule.epochs": 500}, seeds=[0], axes={"mix.method": ["none"]})
    suite = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "suite"
    proc = _launcher([str(suite), "sweep", "launch", str(sweep), "-e", "local", "-j", "1"], tmp_path)
    try:
        _read_until(proc, "started")
        metrics = _wait_for_file(tmp_path / "runs" / "hup", "*/metrics.jsonl", proc)  # an epoch trained
        os.killpg(proc.pid, signal.SIGHUP)  # the terminal's hang-up reaches its whole session
        output, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == EXIT_INTERRUPTED, output
    assert "SIGHUP" in output and "launch the same sweep again to resume" in " ".join(output.split())
    assert "Traceback" not in output
    assert read_run(metrics.parent, metrics=False).state is RunState.INTERRUPTED  # checkpointed, resumable


def test_runs_the_edited_sweep_file_no_longer_plans_are_set_apart(tmp_path: Path) -> None:
    """The state of the current plan counts its runs only; the others are named apart, never as failed."""
    from jobs.status_report import collect
    from jobs.sweep_state import RunEntry, SweepState
    from sweeps.expand import expand
    from sweeps.spec import load_sweep

    sweep = load_sweep(write_sweep(tmp_path, "edited", axes={"optim.lr": [1e-3, 5e-4]}))
    state = SweepState.of_sweep(sweep)
    state.runs["dropped-1"] = RunEntry(7, {"optim.lr": 0.1}, "optim.lr=0.1", state="failed")
    state.with_plan(expand(sweep, check_paths=False), only=True)
    assert state.left_out == ["dropped-1"] and "dropped-1" not in state.runs
    report = collect(state)
    assert report.left_out == ["dropped-1"] and len(report.runs) == 2
    assert sum(report.counts.values()) == 2 and "failed" not in {s.value for s in report.counts}


def test_a_relaunch_after_a_killed_launcher_leaves_its_training_runs_alone(tmp_path: Path) -> None:
    """SIGKILL leaves the runs training; a relaunch sees them through their run locks and starts none."""
    import os
    import signal

    sweep = write_sweep(tmp_path, "kill", overrides={"schedule.epochs": 500}, seeds=[0], axes={"mix.method": ["none"]})
    suite = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "suite"
    first = _launcher([str(suite), "sweep", "launch", str(sweep), "-e", "local", "-j", "1"], tmp_path)
    try:
        _read_until(first, "started")
        _wait_for_file(tmp_path / "runs" / "kill", "*/metrics.jsonl", first)  # training, its lock held
        first.kill()
        first.wait()
        (tmp_path / "runs" / "kill" / "sweep-state.json").unlink()  # no job ids: only the run lock tells
        again = _launcher([str(suite), "sweep", "launch", str(sweep), "-e", "local", "-j", "1"], tmp_path)
        output, _ = again.communicate(timeout=120)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
    assert again.returncode == 0, output
    assert "nothing to submit" in output and "started" not in output
