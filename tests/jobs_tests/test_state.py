"""Run states: one mapping from scheduler words and run records; sacct parsing; the state file."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.slurm import gpu_count, parse_sacct
from jobs.sweep_state import RunEntry, SweepState, classify
from suite.run.records import RunState

S = RunState


@pytest.mark.parametrize(
    ("records", "scheduler", "expected"),
    [
        (S.NEW, None, S.NEW),
        (S.FINISHED, "RUNNING", S.FINISHED),  # records win: summary.json is the commit marker
        (S.FINISHED, None, S.FINISHED),
        (S.PRUNED, "COMPLETED", S.PRUNED),
        (S.CORRUPT, "COMPLETED", S.CORRUPT),
        (S.RUNNING, None, S.RUNNING),  # a process holds the run's lock
        (S.NEW, "PENDING", S.PENDING),
        (S.INTERRUPTED, "PENDING", S.PENDING),  # back in the queue after a requeue
        (S.INTERRUPTED, "REQUEUED", S.PENDING),
        (S.INTERRUPTED, "RUNNING", S.RUNNING),
        (S.NEW, "COMPLETING", S.RUNNING),
        (S.FAILED, "FAILED", S.FAILED),
        (S.FAILED, None, S.FAILED),
        (S.INTERRUPTED, "OUT_OF_MEMORY", S.FAILED),
        (S.INTERRUPTED, "TIMEOUT", S.FAILED),
        (S.NEW, "CANCELLED by 0", S.CANCELLED),
        (S.INTERRUPTED, "COMPLETED", S.INTERRUPTED),  # stopped with a checkpoint (SIGTERM)
        (S.INTERRUPTED, None, S.INTERRUPTED),
        (S.NEW, "COMPLETED", S.FAILED),  # ended without writing anything
        (S.NEW, "FINISHED", S.FAILED),  # submitit local words
        (S.NEW, "RUNNING", S.RUNNING),
    ],
)
def test_classify(records: RunState, scheduler: str | None, expected: RunState) -> None:
    assert classify(records, scheduler) is expected


def test_classify_rejects_unknown_words() -> None:
    with pytest.raises(ValueError, match="unknown scheduler state 'EXPLODED'"):
        classify(RunState.NEW, "EXPLODED")


def test_state_predicates() -> None:
    assert {s for s in S if s.is_active()} == {S.PENDING, S.RUNNING}
    assert {s for s in S if s.needs_launch()} == {S.NEW, S.MISSING, S.FAILED, S.CANCELLED, S.INTERRUPTED}
    assert {s for s in S if s.is_finished()} == {S.FINISHED, S.PRUNED}


# Recorded from `sacct -X -D --parsable2 --noheader --format=JobID,State,ExitCode,ElapsedRaw,AllocTRES,Reason`
# on the local cluster: array 41 (two tasks done, one requeued then running, three pending), job 44 failed.
SACCT = """\
41_0|COMPLETED|0:0|6|billing=1,cpu=1,gres/gpu=1,mem=1G,node=1|None
41_1|COMPLETED|0:0|7|billing=1,cpu=1,gres/gpu=1,mem=1G,node=1|None
41_2|REQUEUED|0:0|8|billing=1,cpu=1,gres/gpu=1,mem=1G,node=1|None
41_2|RUNNING|0:0|13|billing=1,cpu=1,gres/gpu=1,mem=1G,node=1|BeginTime
41_[3-4,6%2]|PENDING|0:0|0||JobArrayTaskLimit
44|FAILED|1:0|9|billing=1,cpu=1,mem=1G,node=1|NonZeroExitCode
44.batch|FAILED|1:0|9|cpu=1,mem=1G,node=1|
"""


def test_parse_sacct() -> None:
    records = parse_sacct(SACCT)
    assert set(records) == {"41_0", "41_1", "41_2", "41_3", "41_4", "41_6", "44"}
    assert records["41_2"].state == "RUNNING" and records["41_2"].requeued_before
    assert records["41_2"].gpu_seconds == 8 + 13  # both attempts count
    assert not records["41_0"].requeued_before and records["41_0"].gpus == 1
    assert records["41_6"].state == "PENDING" and records["41_6"].reason == "JobArrayTaskLimit"
    assert records["44"].gpus == 0 and records["44"].exit_code == "1:0"


def test_parse_sacct_skips_an_older_job_with_the_same_id() -> None:
    """Accounting keeps jobs from before a controller lost its job counter: job 79 submitted
    yesterday must not stand for the job 79 just submitted (still unknown, or pending)."""
    import datetime

    now = datetime.datetime(2026, 12, 4, 8, 58, 34)
    stale = "79|COMPLETED|0:0|6|billing=1,cpu=1,node=1|None|2026-12-03T20:23:09"
    fresh = "79|PENDING|0:0|0||None|2026-12-04T08:58:34"
    assert parse_sacct(stale, {"79": now.timestamp()}) == {}
    (record,) = parse_sacct(f"{stale}\n{fresh}", {"79": now.timestamp()}).values()
    assert record.state == "PENDING" and record.elapsed_s == 0 and not record.requeued_before
    # arrays are filtered by their array id; without submit times every line counts
    array = "80_[0-1]|PENDING|0:0|0||None|2026-12-03T20:23:09"
    assert parse_sacct(array, {"80": now.timestamp()}) == {}
    assert parse_sacct(stale)["79"].state == "COMPLETED"


@pytest.mark.parametrize(
    ("gres", "count"), [("gpu:2", 2), ("gpu:a100:8(S:0-1)", 8), ("(null)", 0), ("gpu:1,shard:4", 1)]
)
def test_gpu_count(gres: str, count: int) -> None:
    assert gpu_count(gres) == count


def test_state_file_roundtrip(tmp_path: Path) -> None:
    state = SweepState(
        tmp_path / "sweep-state.json", "s", "/x/s.yaml", str(tmp_path), str(tmp_path / ".submitit/%j")
    )
    state.runs["none-1"] = RunEntry(0, {"optim.lr": 0.1}, "optim.lr=0.1", executor="slurm", job_id="41_0")
    state.write()
    again = SweepState.read(state.path)
    assert again is not None and again.runs == state.runs and again.submitit_folder == state.submitit_folder
    assert not list(tmp_path.glob(".*.tmp"))
    assert SweepState.read(tmp_path / "none.json") is None


def test_state_of_a_sweep_and_its_plan(tmp_path: Path) -> None:
    """One set-up of a sweep's state file (launch and status); the plan's runs keep known jobs."""
    from sweeps.expand import expand
    from sweeps.spec import load_sweep
    from tests.sweeps_tests.sweep_files import write_sweep

    sweep = load_sweep(write_sweep(tmp_path, axes={"optim.lr": [1e-3, 5e-4]}))
    state = SweepState.of_sweep(sweep)
    assert state.path == sweep.state_file and state.output_root == str(sweep.output_root)
    assert state.submitit_folder == str(sweep.output_root / ".submitit" / "%j") and state.runs == {}
    plan = expand(sweep, check_paths=False)
    first, second = (run.run_id for run in plan.runs)
    state.runs[first] = RunEntry(7, {}, "old", executor="slurm", job_id="41_0")
    state.runs["earlier-launch"] = RunEntry(9, {}, "other overrides")
    assert list(state.with_plan(plan).runs) == [first, "earlier-launch", second]  # launch keeps every run
    assert state.runs[first].job_id == "41_0" and state.runs[first].index == 0
    assert state.runs[first].label == plan.runs[0].label() and state.runs[second].state == RunState.NEW.value
    assert list(state.with_plan(plan, only=True).runs) == [first, second]  # status: the plan's runs only
