"""The one run-state vocabulary, read from a run's files alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from suite.run import names
from suite.run.records import (
    RunBusyError,
    RunPaths,
    RunState,
    read_run,
    record_signature,
    run_lock,
    run_state,
    write_failure,
    write_summary,
)


def _paths(tmp_path: Path) -> RunPaths:
    paths = RunPaths(tmp_path / "none-000000000000")
    paths.root.mkdir()
    paths.config.write_text("{}")
    return paths


def test_states_follow_the_files(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    assert run_state(paths) is RunState.NEW
    paths.checkpoint.write_bytes(b"x")
    assert run_state(paths) is RunState.INTERRUPTED
    write_failure(paths, RuntimeError("boom"))
    assert run_state(paths) is RunState.FAILED  # no mtime comparison: the failure file decides
    write_summary(paths, {"run_id": paths.root.name, "status": "finished", "top1": 50.0})
    assert run_state(paths) is RunState.FINISHED and not paths.failure.exists()
    write_summary(paths, {"run_id": paths.root.name, "status": "pruned", "top1": None})
    assert run_state(paths) is RunState.PRUNED


def test_a_held_lock_means_running_and_refuses_a_second_trainer(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    with run_lock(paths):
        assert run_state(paths) is RunState.RUNNING
        with pytest.raises(RunBusyError, match="being trained by another process"):
            with run_lock(paths):
                pass
    assert run_state(paths) is RunState.NEW


@pytest.mark.parametrize("content", ["{not json", "", "{}", "[1, 2]", '{"run_id": "x"}'])
def test_unreadable_summary_is_corrupt_never_finished(tmp_path: Path, content: str) -> None:
    paths = _paths(tmp_path)
    paths.summary.write_text(content)
    assert run_state(paths) is RunState.CORRUPT
    record = read_run(paths.root)
    assert record.state is RunState.CORRUPT and record.summary is None
    assert str(paths.summary) in record.problem and "delete" in record.problem


def test_summary_status_must_be_an_ending(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="finished or pruned"):
        write_summary(_paths(tmp_path), {"run_id": "x", "status": "interrupted"})


def test_read_run_reports_a_malformed_metrics_line(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    paths.metrics.write_text('{"epoch": 1}\nnot json\n{"epoch": 3}\n')
    record = read_run(paths.root)
    assert record.metrics == [] and "metrics.jsonl" in record.problem
    paths.metrics.write_text(json.dumps({"epoch": 1}) + "\n" + '{"epo')  # torn last line: tolerated
    assert read_run(paths.root).metrics == [{"epoch": 1}]


def test_the_first_failure_of_an_attempt_is_kept(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    assert write_failure(paths, MemoryError("rank 3 out of memory"), rank=3, processes=8, first=True)
    # rank 0 then fails at a collective that lost rank 3: the cause stays on record
    assert not write_failure(paths, RuntimeError("Connection closed by peer"), rank=0, processes=8, first=True)
    record = read_run(paths.root).failure
    assert (record["rank"], record["processes"], record["error"]) == (3, 8, "MemoryError")
    assert run_state(paths) is RunState.FAILED
    assert [p.name for p in paths.root.iterdir() if p.name.endswith(".tmp")] == []
    write_failure(paths, RuntimeError("next attempt"))  # one process: the last failure, as always
    assert read_run(paths.root).failure["message"] == "next attempt"


def test_a_silent_rank_writes_its_own_failure(tmp_path: Path) -> None:
    from suite.run.writer import RunWriter

    paths = _paths(tmp_path)
    RunWriter(paths, enabled=False, rank=1, processes=2).failure(MemoryError("CUDA out of memory"))
    record = read_run(paths.root)
    assert record.state is RunState.FAILED and (record.failure["rank"], record.failure["error"]) == (1, "MemoryError")
    assert "rank 1 of 2 failed: MemoryError: CUDA out of memory" in paths.log.read_text()
    # rank 0 then fails at a collective that lost rank 1: the record keeps rank 1's cause
    RunWriter(paths, rank=0, processes=2).failure(RuntimeError("Connection closed by peer"))
    assert read_run(paths.root).failure["rank"] == 1
    RunWriter(paths, enabled=False).failure(RuntimeError("x"))  # a silent writer of one process writes nothing
    assert read_run(paths.root).failure["rank"] == 1


def test_the_paths_are_the_record_names(tmp_path: Path) -> None:
    paths = RunPaths.of(tmp_path, "none-000000000000")
    assert paths.summary == paths.root / names.SUMMARY_FILE and paths.lock == paths.root / names.LOCK_FILE
    assert {getattr(paths, a).name for a in ("config", "summary", "metrics", "failure", "checkpoint",
                                             "previous_checkpoint", "lock")} == set(names.RECORD_FILES)


def test_a_planned_run_without_a_folder_is_missing_to_a_reader_and_new_to_a_launch(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path / "none-000000000000")
    record = read_run(paths.root)
    assert record.state is RunState.MISSING and record.problem is None and record.config is None
    assert run_state(paths) is RunState.NEW  # `sweep plan` and launch: nothing computed, train it
    assert RunState.MISSING.needs_launch() and not RunState.MISSING.is_finished()


def test_read_run_states_follow_the_one_rule(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    paths.checkpoint.write_bytes(b"x")
    write_failure(paths, RuntimeError("boom"))
    assert read_run(paths.root).state is RunState.FAILED == run_state(paths)
    with run_lock(paths):  # a process holds the lock: running, whatever else the folder holds
        assert read_run(paths.root).state is RunState.RUNNING


def test_read_run_without_metrics_and_a_config_that_is_not_an_object(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    paths.metrics.write_text(json.dumps({"epoch": 1}) + "\n")
    assert read_run(paths.root).metrics == [{"epoch": 1}]
    assert read_run(paths.root, metrics=False).metrics == []
    paths.config.write_text("[1, 2]")
    record = read_run(paths.root)
    assert record.config is None and str(paths.config) in record.problem
    assert "not a JSON object" in record.problem
    assert record.state is RunState.NEW  # a damaged config.json does not decide the state


def test_the_signature_changes_when_the_state_can(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    before = record_signature(paths.root)
    assert len(before) == len(names.RECORD_FILES) and before[0] is not None
    with run_lock(paths):
        started = record_signature(paths.root)
    assert started != before  # taking the lock rewrites it: a cached `new` is read again
    write_summary(paths, {"run_id": paths.root.name, "status": "finished", "top1": 50.0})
    ended = record_signature(paths.root)
    paths.checkpoint.write_bytes(b"y")
    write_failure(paths, RuntimeError("after the end"))
    assert record_signature(paths.root) == ended  # a summary decides: the other files are not looked at
    assert record_signature(tmp_path / "absent") == (None,) * len(names.RECORD_FILES)
