"""Epoch callbacks: a callback that asks to stop prunes the run, for good."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jobs.launch import launch
from suite.config import load_config
from suite.run.records import RunState, read_run
from suite.train.trainer import train
from sweeps.expand import expand
from sweeps.spec import load_sweep
from tests.sweeps_tests.sweep_files import write_sweep


class StopAfter:
    """Prune after ``epoch`` epochs, recording what it saw."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.seen: list[tuple[int, float]] = []

    def __call__(self, epoch: int, metrics: Mapping[str, Any]) -> str | None:
        self.seen.append((epoch, metrics["top1"]))
        return f"top-1 {metrics['top1']:.1f} too low" if epoch >= self.epoch else None


def test_pruned_run_keeps_its_records_and_a_relaunch_never_resumes_it(tmp_path: Path) -> None:
    sweep = load_sweep(write_sweep(tmp_path, overrides={"schedule.epochs": 4}))
    run = expand(sweep).runs[0]
    callback = StopAfter(2)
    result = train(run.config, callbacks=[callback])
    assert result.state is RunState.PRUNED
    assert [epoch for epoch, _ in callback.seen] == [1, 2]
    record = read_run(run.paths.root)
    assert record.state is RunState.PRUNED
    assert [row["epoch"] for row in record.metrics] == [1, 2]
    assert record.summary["status"] == "pruned" and record.summary["epochs"] == 2
    assert record.summary["prune_reason"].startswith("top-1")
    assert record.paths.checkpoint.is_file()  # kept: the pruned run's weights stay inspectable

    again = train(run.config)  # the same run asked again: its summary, no training
    assert again.state is RunState.PRUNED and again.summary == record.summary

    report = launch(sweep, executor="debug")
    assert report.submitted == [] and report.skipped == {run.run_id: RunState.PRUNED}
    assert [row["epoch"] for row in read_run(run.paths.root).metrics] == [1, 2]


def test_callbacks_see_every_epoch_of_a_finished_run(tiny_overrides: list[str]) -> None:
    callback = StopAfter(99)
    result = train(load_config(None, tiny_overrides), callbacks=[callback])
    assert result.state is RunState.FINISHED
    assert [epoch for epoch, _ in callback.seen] == [1, 2]
    assert callback.seen[-1][1] == result.summary["top1"]


def test_cooldown_epochs_train_at_min_lr_after_the_cosine(tiny_overrides: list[str]) -> None:
    cfg = load_config(None, [*tiny_overrides, "schedule.epochs=1", "schedule.cooldown_epochs=1",
                             "schedule.min_lr=1e-5"])
    result = train(cfg)
    rows = read_run(result.run_dir).metrics
    assert result.summary["epochs"] == 2 and [r["epoch"] for r in rows] == [1, 2]
    assert rows[-1]["lr"] == 1e-5  # the cooldown epoch runs at min_lr
