"""Fault injection with real records and real processes: nothing a fault does may lose a record,
mark a stopped run failed, count a damaged run as done, or end in a traceback.

1. Every record kind x every corruption (garbage, empty, truncated, ``{}``): the state and the
   message of ``plan``, ``status``, ``launch`` and ``train``.
2. A training killed at random points (SIGKILL to its process group, SIGTERM, Ctrl-C twice,
   SIGTERM to the group as ``scancel`` does) and then finished: metrics identical to an
   uninterrupted run, and the W&B history equal to ``metrics.jsonl``.
3. Ctrl-C and SIGTERM to a local sweep launcher with slow steps, then a relaunch: every run
   finishes with the metrics of an uninterrupted sweep, none is ever reported failed, and no
   process is left behind.

Slow steps come from ``tests/faults_hook/sitecustomize.py`` (``FAULT_STEP_DELAY_S``).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from jobs.launch import launch
from suite.config import load_config
from suite.run.records import RunPaths, RunState, atomic_write_bytes, read_run
from suite.run.signals import GracefulStop
from suite.train.trainer import train
from sweeps.spec import load_sweep
from tests.helpers import wandb_history, wandb_records
from tests.sweeps_tests.sweep_files import write_sweep

REPO = Path(__file__).resolve().parents[2]
HOOK = REPO / "tests" / "faults_hook"
COMPARED = ("top1", "top5", "val_loss", "best_top1")

# ---------------------------------------------------------------------------------------------
# helpers


def _env(delay_s: float = 0.0) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HOOK), str(REPO), os.environ.get("PYTHONPATH", "")]),
        "FAULT_STEP_DELAY_S": str(delay_s),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
    }


def _group_left(pgid: int) -> list[str]:
    """Processes still alive in a process group (zombies excluded)."""
    out = subprocess.run(["ps", "-eo", "pgid=,stat=,args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.split()[0] == str(pgid) and not line.split()[1].startswith("Z")]


def _wait_gone(pgid: int, seconds: float = 20.0) -> list[str]:
    deadline = time.monotonic() + seconds
    while (left := _group_left(pgid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


CORRUPTIONS = {
    "garbage": lambda data: b"\x89PNG\xff\xfe not a record \x00\x01" * 4,
    "empty": lambda data: b"",
    "truncated": lambda data: data[: max(1, len(data) // 2)],
    "{}": lambda data: b"{}",
}


# ---------------------------------------------------------------------------------------------
# 1. corrupt records x commands


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A launched sweep of one finished tiny run (its folder is copied by each case)."""
    folder = tmp_path_factory.mktemp("faults-sweep")
    path = write_sweep(folder, "one", overrides={"schedule.epochs": 1}, axes={"optim.lr": [1e-3]})
    report = launch(load_sweep(path), executor="debug")
    assert list(report.final.values()) == [RunState.FINISHED]
    return path


def _cli(*args: str) -> tuple[int, str]:
    from suite.cli.main import app, register_command_groups

    register_command_groups(app)
    result = CliRunner().invoke(app, list(args), catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"suite {' '.join(args)} raised {result.exception!r}\n{result.output}")
    return result.exit_code, " ".join(result.output.split())  # rich wraps lines


# (record, corruption) -> what each command must show: (exit code, words in the output).
# A corrupt summary never counts as done and names the file; a corrupt state file is rebuilt
# from the run folders; metrics and config are rebuilt or ignored, the run stays finished.
def _expected(record: str) -> dict[str, tuple[int, tuple[str, ...]]]:
    if record == "summary.json":
        fix = ("corrupt", "summary.json", "delete")
        return {"plan": (0, fix), "status": (0, fix), "launch": (0, (*fix, "submitted 0")), "train": (1, fix)}
    if record == "sweep-state.json":
        rebuilt = ("warning", "sweep-state.json", "Rebuilt from the run folders")
        return {"plan": (0, ("finished",)), "status": (0, (*rebuilt, "finished")),
                "launch": (0, (*rebuilt, "nothing to submit")), "train": (0, ("finished",))}
    return {"plan": (0, ("finished",)), "status": (0, ("finished",)), "launch": (0, ("nothing to submit",)),
            "train": (0, ("finished",))}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
@pytest.mark.parametrize("record", ["summary.json", "sweep-state.json", "metrics.jsonl", "config.json"])
def test_each_command_names_a_corrupt_record(
    finished_sweep: Path, tmp_path: Path, record: str, corruption: str
) -> None:
    """Defect 4: tracebacks naming no file, and a garbage summary counted as done forever."""
    source = load_sweep(finished_sweep).output_root
    root = tmp_path / "runs"
    shutil.copytree(source, root)
    state_file = root / "sweep-state.json"
    state_file.write_text(state_file.read_text().replace(str(source), str(root)))  # the copy is the sweep now
    (run_dir,) = [p.parent for p in root.glob("*/summary.json")]
    target = root / record if record == "sweep-state.json" else run_dir / record
    damaged = CORRUPTIONS[corruption](target.read_bytes())
    config = json.loads((source / run_dir.name / "config.json").read_text())
    overrides = [f"{k}={json.dumps(v)}" for k, v in _flat(config).items()]
    commands = {
        "plan": ["sweep", "plan", str(finished_sweep), "--output-root", str(root)],
        "status": ["sweep", "status", str(finished_sweep), "--output-root", str(root)],
        "launch": ["sweep", "launch", str(finished_sweep), "-e", "local", "--output-root", str(root)],
        "train": ["train", *overrides, f"run.output_root={root}"],
    }
    for command, (code, words) in _expected(record).items():
        target.write_bytes(damaged)  # each command meets the damage (status sets a bad state file aside)
        exit_code, output = _cli(*commands[command])
        assert exit_code == code, f"{command}: {output}"
        for word in words:
            assert word in output, f"{command} does not say {word!r}: {output}"
        assert "Traceback" not in output
    if record == "summary.json":
        assert read_run(run_dir).state is RunState.CORRUPT
        assert not (run_dir / "failure.json").exists()  # a refused train is not a failed run


def _flat(config: dict) -> dict:
    """The non-default config fields as dotted overrides (enough to name the same run)."""
    from suite.config import stored_config, validate_config

    return {k: v for k, v in validate_config(stored_config(config)).identity().items()}


def test_a_truncated_checkpoint_falls_back_to_the_previous_one(tiny_overrides: list[str], tmp_path: Path) -> None:
    """Defect 4: a truncated checkpoint.pt gave torch's zip error on every relaunch."""
    reference = train(load_config(None, [*tiny_overrides, f"run.output_root={tmp_path / 'ref'}"]))
    cfg = load_config(None, [*tiny_overrides, f"run.output_root={tmp_path / 'cut'}"])
    assert train(cfg, stop=_StopAfter(11)).state is RunState.INTERRUPTED  # epoch 2, step 3
    paths = RunPaths.of(cfg.run.output_root, reference.run_id)
    assert torch.load(paths.previous_checkpoint, weights_only=True)["epoch"] == 1
    paths.checkpoint.write_bytes(paths.checkpoint.read_bytes()[:1000])
    resumed = train(cfg)
    assert resumed.state is RunState.FINISHED
    assert all(resumed.summary[k] == reference.summary[k] for k in COMPARED)
    for path in (paths.checkpoint, paths.previous_checkpoint):  # both damaged: the message says what to do
        path.write_bytes(b"")
    paths.summary.unlink()
    with pytest.raises(RuntimeError, match=r"corrupt checkpoint: .*checkpoint.pt.*Delete .*to retrain"):
        train(cfg)


def test_run_files_follow_the_umask(tmp_path: Path) -> None:
    """Defect 6: run files were created 0600, unreadable by colleagues on a shared cluster."""
    old = os.umask(0o022)
    try:
        import suite.run.records as records

        records._UMASK = None
        atomic_write_bytes(tmp_path / "x.json", b"{}")
        assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)
        records._UMASK = None


# ---------------------------------------------------------------------------------------------
# 2. a training killed at random points, then finished


class _StopAfter(GracefulStop):
    """Requests a stop after ``n`` step polls (an interruption at a known step)."""

    def __init__(self, n: int, *, second_ctrl_c: bool = False) -> None:
        super().__init__(signals=())
        self.n = n
        self.second = second_ctrl_c

    @property
    def requested(self) -> bool:  # type: ignore[override]
        self.n -= 1
        if self.n < 0:
            if self.second and self.signum is not None:
                raise KeyboardInterrupt  # what GracefulStop's handler raises on a second Ctrl-C
            self.request(signal.SIGINT)
            return not self.second
        return False


def test_a_second_ctrl_c_leaves_the_run_interrupted_and_resumable(tiny_overrides: list[str], tmp_path: Path) -> None:
    """Defect 2: the second SIGINT raised KeyboardInterrupt and the run was marked failed."""
    reference = train(load_config(None, [*tiny_overrides, f"run.output_root={tmp_path / 'ref'}"]))
    cfg = load_config(None, [*tiny_overrides, f"run.output_root={tmp_path / 'int'}"])
    stopped = train(cfg, stop=_StopAfter(11, second_ctrl_c=True))
    assert stopped.state is RunState.INTERRUPTED and stopped.summary == {"epoch": 1, "step": 0}
    record = read_run(stopped.run_dir)
    assert record.state is RunState.INTERRUPTED and record.failure is None
    resumed = train(cfg)
    assert all(resumed.summary[k] == reference.summary[k] for k in COMPARED)


def _log_size(run_dir: Path) -> int:
    try:
        return (run_dir / "train.log").stat().st_size
    except FileNotFoundError:
        return 0


# (signal, to the whole process group?, how many times): Ctrl-C in a terminal reaches the group;
# scancel signals every process of the job, W&B's service included.
FAULTS = [
    ("SIGKILL", True, 1),
    ("SIGTERM", False, 1),
    ("SIGINT", True, 2),
    ("SIGTERM", True, 1),
]


def test_killed_training_finishes_with_identical_metrics_and_wandb_history(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    """Defects 2, 3 and 6 as a user meets them: faults at random points, then the same command again."""
    overrides = [o for o in tiny_overrides if not o.startswith(("run.output_root", "schedule.epochs", "tracking"))]
    overrides += ["schedule.epochs=3", "eval.occlusion=[]"]
    reference = train(load_config(None, [*overrides, "tracking.mode=disabled", f"run.output_root={tmp_path / 'ref'}"]))
    tracked = [*overrides, "tracking.mode=offline", "tracking.system_metrics=false"]
    cmd = [sys.executable, "-m", "suite.cli", "train", *tracked, f"run.output_root={tmp_path / 'faults'}"]
    run_dir = tmp_path / "faults" / reference.run_id
    rng = random.Random(13)
    log = []
    delivered: list[str] = []
    for name, group, times in FAULTS:
        before = _log_size(run_dir)
        proc = subprocess.Popen(cmd, env=_env(0.3), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        deadline = time.monotonic() + 120
        while _log_size(run_dir) <= before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # until this attempt logs that it starts (or resumes)
        time.sleep(rng.uniform(0.2, 2.5))  # somewhere in a step, an evaluation or a checkpoint write
        for _ in range(times):
            if proc.poll() is not None:
                break  # this attempt finished the run before the fault (a fast machine): nothing to signal
            try:
                if group:
                    os.killpg(proc.pid, getattr(signal, name))
                else:
                    proc.send_signal(getattr(signal, name))
            except ProcessLookupError:
                break
            delivered.append(name)
            time.sleep(0.15)
        out, _ = proc.communicate(timeout=120)
        assert _wait_gone(proc.pid) == []
        state = read_run(run_dir).state
        log.append((name, proc.returncode, state))
        assert state in (RunState.NEW, RunState.INTERRUPTED, RunState.FINISHED), (name, state, out)
        assert "Traceback" not in out, out
        assert not list(run_dir.glob(".*.tmp")) or name == "SIGKILL"
    assert len(set(delivered)) >= 2, log  # the faults really hit running attempts
    final = subprocess.run(cmd, env=_env(0.0), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stdout + final.stderr
    record = read_run(run_dir)
    assert record.state is RunState.FINISHED and not list(run_dir.glob(".*.tmp"))
    for key in COMPARED:
        assert record.summary[key] == reference.summary[key], (key, log)
    ref_rows = read_run(reference.run_dir).metrics
    assert [r["train_loss"] for r in record.metrics] == [r["train_loss"] for r in ref_rows]
    history = wandb_history(run_dir)
    assert sorted(history) == [r["epoch"] for r in record.metrics], log
    for row in record.metrics:
        assert {k: history[row["epoch"]].get(k) for k in row} == row
    # an interrupted W&B segment says so (preempting, non-zero exit), not "finished"
    segments = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    kinds = [{r.WhichOneof("record_type") for r in wandb_records(path)} for path in segments]
    assert any("preempting" in k for k in kinds[:-1]), log


# ---------------------------------------------------------------------------------------------
# 3. Ctrl-C and SIGTERM to a local sweep launcher


def _launcher(sweep_file: Path, delay_s: float) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "suite.cli", "sweep", "launch", str(sweep_file), "-e", "local", "-j", "2"]
    return subprocess.Popen(cmd, env=_env(delay_s), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def _stop_launcher(sweep_file: Path, how: str, run_ids: list[str]) -> str:
    runs = load_sweep(sweep_file).output_root
    before = {rid: _log_size(runs / rid) for rid in run_ids}
    proc = _launcher(sweep_file, 0.15)
    deadline = time.monotonic() + 120
    while (
        any(_log_size(runs / rid) <= size for rid, size in before.items())  # until both runs (re)started
        and proc.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    time.sleep(0.6)  # into a step
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal does
    else:
        proc.send_signal(signal.SIGTERM)  # kill <launcher pid>
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 75, out
    assert "Traceback" not in out and "interrupted" in out, out
    assert _wait_gone(proc.pid) == [], "the launcher left processes behind"
    states = {p.name: read_run(p).state for p in runs.glob("*-*") if p.is_dir()}
    assert states and all(s in (RunState.INTERRUPTED, RunState.FINISHED) for s in states.values()), (states, out)
    return out


def test_stopped_local_sweep_resumes_to_identical_metrics(tmp_path: Path) -> None:
    """Defect 2: Ctrl-C killed runs after 1 s (no checkpoint, failed); SIGTERM left orphans."""
    axes = {"mix.method": ["none", "mixup"]}
    overrides = {"schedule.epochs": 2, "data.train_size": 320}
    for name in ("ref", "int"):
        (tmp_path / name).mkdir()
    reference = launch(load_sweep(write_sweep(tmp_path / "ref", "s", overrides=overrides, axes=axes)), executor="debug")
    sweep_file = write_sweep(tmp_path / "int", "s", overrides=overrides, axes=axes)
    for how in ("ctrl-c", "sigterm"):
        _stop_launcher(sweep_file, how, list(reference.final))
    final = _launcher(sweep_file, 0.0)
    out, _ = final.communicate(timeout=300)
    assert final.returncode == 0, out
    assert "failed" not in out
    root = load_sweep(sweep_file).output_root
    for rid in reference.final:
        ours = read_run(root / rid)
        theirs = read_run(load_sweep(tmp_path / "ref" / "s.yaml").output_root / rid)
        assert ours.state is RunState.FINISHED
        assert all(ours.summary[k] == theirs.summary[k] for k in COMPARED), rid
