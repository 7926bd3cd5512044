"""``make demo``'s entry: launch sweeps locally into one output root, then write their report."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from jobs.demo import DEMO_SWEEPS, demo_files, run_demo
from sweeps.expand import expand
from sweeps.spec import load_sweep
from tests.sweeps_tests.sweep_files import write_sweep


def test_demo_sweeps_share_runs_and_the_teacher(tmp_path: Path) -> None:
    files = demo_files()
    assert [f.stem for f in files] == list(DEMO_SWEEPS)
    plans = [expand(load_sweep(f, output_root=tmp_path), check_paths=False) for f in files]
    runs = {run.run_id for plan in plans for run in plan.runs}
    teachers = {run.run_id for plan in plans for run in plan.prerequisites if run.kind == "train"}
    steps = {run.run_id for plan in plans for run in plan.prerequisites if run.kind == "maps"}
    assert len(teachers) == 1 and len(steps) == 1  # methods and teacher sweeps train the same CNN once
    assert len(runs) == 37 and sum(len(plan.runs) for plan in plans) == 47  # the base run is shared
    for plan, name in zip(plans, DEMO_SWEEPS):
        for run in plan.runs:
            assert run.config.mix.target != "teacher_raw" or run.config.optim.loss == "bce"
            # top-1 on 8,000 images at the end (binomial SE <= 0.5 point), the curve on 400
            assert run.config.data.val_size == 8_000 and run.config.eval.subset == 400
        seeds = sorted({r.config.run.seed for r in plan.runs})
        assert seeds == ([0, 1, 2, 3, 4] if name == "methods" else [0, 1])  # the main comparison: 5 seeds


@pytest.mark.slow
def test_demo_trains_once_then_only_reports(tmp_path: Path) -> None:
    a = write_sweep(tmp_path, "a", include=[{"mix.method": "none"}, {"mix.method": "cutmix"}], seeds=[0])
    b = write_sweep(tmp_path, "b", axes={"mix.method": ["none", "mixup"]}, seeds=[0])  # shares the no-mix run
    root, report = tmp_path / "runs" / "demo", tmp_path / "report"
    console = Console(record=True, width=120)
    failed, index = run_demo(root, report, files=[a, b], max_parallel=2, console=console)
    first = console.export_text()
    assert failed == 0 and "trained 3 of 3 runs" in first
    assert len(list(root.glob("*/summary.json"))) == 3
    text = index.read_text()
    assert "## a" in text and "## b" in text and "Every planned run finished." in text
    assert (report / "tables" / "a.tex").is_file() and (report / "plots" / "b.png").is_file()
    console = Console(record=True, width=120)
    failed, _ = run_demo(root, report, files=[a, b], max_parallel=2, console=console)
    assert failed == 0 and "trained 0 of 3 runs" in console.export_text()
