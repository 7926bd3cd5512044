"""Fault injection with real records and real processes: nothing a fault does may lose a record,
mark a stopped run failed, count a damaged run as done, or end in a traceback.

1. Every record kind x every corruption (garbage, empty, truncated, ``{}``): the state and the
   message of ``plan``, ``status``, ``launch`` and ``train``.
2. A training killed at chosen points (SIGKILL to its process group, SIGTERM, Ctrl-C twice,
   SIGTERM to the group as ``scancel`` does) and then finished: metrics identical to an
   uninterrupted run, and the W&B history equal to ``metrics.jsonl``.
3. Ctrl-C and SIGTERM to a local sweep launcher with slow steps, then a relaunch: every run
   finishes with the metrics of an uninterrupted sweep, none is ever reported failed, and no
   process is left behind.

Each fault waits for its process to stop at a chosen step (``tests/faults_hook/sitecustomize.py``,
``FAULT_HOLD_AT``), so where it lands does not depend on the machine's speed.
"""

from __future__ import annotations

import json
import os
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
from suite.run.records import RunPaths, RunState, read_run
from suite.train.trainer import train
from sweeps.spec import load_sweep
from tests.helpers import StopAfter, hold_env, wait_held, wait_signalled, wandb_history, wandb_records
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


def _cli(app, *args: str) -> tuple[int, str]:  # noqa: ANN001 - the typer app of the `cli` fixture
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
    cli, finished_sweep: Path, tmp_path: Path, record: str, corruption: str  # noqa: ANN001
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
        exit_code, output = _cli(cli, *commands[command])
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
    from suite.config.identity import identity_fields

    return dict(identity_fields(validate_config(stored_config(config))))


def test_a_truncated_checkpoint_falls_back_to_the_previous_one(tiny_overrides: list[str], tmp_path: Path) -> None:
    """Defect 4: a truncated checkpoint.pt gave torch's zip error on every relaunch."""
    reference = train(load_config(None, [*tiny_overrides, f"run.output_root={tmp_path / 'ref'}"]))
    cfg = load_config(None, [*tiny_overrides, f"run.output_root={tmp_path / 'cut'}"])
    assert train(cfg, stop=StopAfter(11, signum=signal.SIGINT)).state is RunState.INTERRUPTED  # epoch 2, step 3
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
    # in a process of its own: the umask is process-wide, and records caches it on first use
    code = (
        "import os, sys\n"
        "os.umask(0o022)\n"
        "from pathlib import Path\n"
        "from suite.run.records import atomic_write_bytes\n"
        "atomic_write_bytes(Path(sys.argv[1]), b'{}')\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "x.json")], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644


# ---------------------------------------------------------------------------------------------
# 2. a training killed at chosen points, then finished


def test_a_second_ctrl_c_leaves_the_run_interrupted_and_resumable(tiny_overrides: list[str], tmp_path: Path) -> None:
    """Defect 2: the second SIGINT raised KeyboardInterrupt and the run was marked failed."""
    reference = train(load_config(None, [*tiny_overrides, f"run.output_root={tmp_path / 'ref'}"]))
    cfg = load_config(None, [*tiny_overrides, f"run.output_root={tmp_path / 'int'}"])
    stopped = train(cfg, stop=StopAfter(11, second_ctrl_c=True))
    assert stopped.state is RunState.INTERRUPTED and stopped.summary == {"epoch": 1, "step": 0}
    record = read_run(stopped.run_dir)
    assert record.state is RunState.INTERRUPTED and record.failure is None
    resumed = train(cfg)
    assert all(resumed.summary[k] == reference.summary[k] for k in COMPARED)


# (signal, to the whole process group?, how many times, after which step (epoch, step of 8)): Ctrl-C
# in a terminal reaches the group; scancel signals every process of the job, W&B's service included.
# Each attempt waits at its step until signalled (tests/faults_hook), so every fault hits a running
# attempt: mid-epoch, at an epoch's last step (its evaluation and checkpoint follow), a second
# Ctrl-C mid-step. The steps only move forward, so each attempt reaches its own after resuming.
FAULTS = [
    ("SIGKILL", True, 1, (0, 5)),
    ("SIGTERM", False, 1, (0, 7)),
    ("SIGINT", True, 2, (1, 3)),
    ("SIGTERM", True, 1, (2, 2)),
]


def test_killed_training_finishes_with_identical_metrics_and_wandb_history(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    """Defects 2, 3 and 6 as a user meets them: faults at chosen points, then the same command again."""
    overrides = [o for o in tiny_overrides if not o.startswith(("run.output_root", "schedule.epochs", "tracking"))]
    overrides += ["schedule.epochs=3", "eval.occlusion=[]"]
    reference = train(load_config(None, [*overrides, "tracking.mode=disabled", f"run.output_root={tmp_path / 'ref'}"]))
    tracked = [*overrides, "tracking.mode=offline", "tracking.system_metrics=false"]
    cmd = [sys.executable, "-m", "suite.cli", "train", *tracked, f"run.output_root={tmp_path / 'faults'}"]
    run_dir = tmp_path / "faults" / reference.run_id
    log = []
    delivered: list[str] = []
    for attempt, (name, group, times, step) in enumerate(FAULTS):
        held = tmp_path / f"held-{attempt}"
        proc = subprocess.Popen(cmd, env=hold_env(held, step, signals=times, env=_env()), cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        (pid,) = wait_held(held, proc)  # this attempt waits after its step for the fault
        for n in range(1, times + 1):
            assert proc.poll() is None, (name, proc.communicate()[0])
            if group:
                os.killpg(proc.pid, getattr(signal, name))
            else:
                proc.send_signal(getattr(signal, name))
            delivered.append(name)
            if n < times:
                wait_signalled(held, pid, n)
        out, _ = proc.communicate(timeout=120)
        assert _wait_gone(proc.pid) == []
        state = read_run(run_dir).state
        log.append((name, proc.returncode, state))
        assert state in (RunState.NEW, RunState.INTERRUPTED, RunState.FINISHED), (name, state, out)
        assert "Traceback" not in out, out
        assert not list(run_dir.glob(".*.tmp")) or name == "SIGKILL"
    assert delivered == [name for name, _, times, _ in FAULTS for _ in range(times)], log
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


def _launcher(sweep_file: Path, env: dict[str, str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "suite.cli", "sweep", "launch", str(sweep_file), "-e", "local", "-j", "2"]
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def _stop_launcher(sweep_file: Path, how: str, run_ids: list[str], step: tuple[int, int], held: Path) -> str:
    runs = load_sweep(sweep_file).output_root
    proc = _launcher(sweep_file, hold_env(held, step, env=_env()))
    wait_held(held, proc, count=len(run_ids))  # both runs wait after that step of theirs
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
    # 10 steps an epoch: Ctrl-C after step 5 of epoch 1, SIGTERM (after resuming) after step 3 of epoch 2
    for how, step in (("ctrl-c", (0, 4)), ("sigterm", (1, 2))):
        _stop_launcher(sweep_file, how, list(reference.final), step, tmp_path / f"held-{how}")
    final = _launcher(sweep_file, _env())
    out, _ = final.communicate(timeout=300)
    assert final.returncode == 0, out
    assert "failed" not in out
    root = load_sweep(sweep_file).output_root
    for rid in reference.final:
        ours = read_run(root / rid)
        theirs = read_run(load_sweep(tmp_path / "ref" / "s.yaml").output_root / rid)
        assert ours.state is RunState.FINISHED
        assert all(ours.summary[k] == theirs.summary[k] for k in COMPARED), rid
