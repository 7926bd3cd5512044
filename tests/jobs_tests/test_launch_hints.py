"""The commands `suite sweep launch` prints can be pasted into a shell as they are."""

from __future__ import annotations

import io
import shlex
from pathlib import Path

import pytest
import typer
from rich.console import Console

import jobs.cli as cli
from jobs.session import LaunchReport
from suite.run.records import RunState


@pytest.mark.parametrize("name", ["my sweep.yaml", "[v2] methods.yaml"])
def test_the_watch_and_failure_hints_quote_the_sweep_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=300))
    monkeypatch.setattr(cli, "err_console", Console(file=err, width=300))
    file = tmp_path / name
    report = LaunchReport(
        executor="local", plan=None, state_file=tmp_path / "sweep-state.json",  # type: ignore[arg-type]
        submitted=["a", "b"], final={"a": RunState.FINISHED, "b": RunState.FAILED},
    )
    with pytest.raises(typer.Exit):
        cli._print_launch(report, file)
    watch = out.getvalue().split("watch: ", 1)[1].strip()
    assert shlex.split(watch) == ["suite", "sweep", "status", str(file)]  # one argument, brackets kept
    failed = err.getvalue().split("failed: ", 1)[1].replace(" shows why", "").strip()
    assert shlex.split(failed) == ["suite", "sweep", "status", str(file)]


def test_plan_names_runs_left_by_an_earlier_suite_version_and_how_to_migrate(tmp_path: Path) -> None:
    """Defect 15: plan showed such runs as plain `new` while launch refused them, naming `suite runs migrate`."""
    import json

    import os
    import subprocess
    import sys

    from sweeps.expand import expand
    from sweeps.spec import load_sweep
    from tests.sweeps_tests.sweep_files import write_sweep

    path = write_sweep(tmp_path, seeds=[0])
    sweep = load_sweep(path)
    (run,) = expand(sweep).all_runs()
    old = sweep.output_root / f"{run.config.mix.method}-0123456789ab"  # the folder name of the old id rule
    old.mkdir(parents=True)
    record = {**json.loads(run.config.model_dump_json()), "run_id": old.name}
    record.pop("id_version", None)  # written before ids were versioned
    (old / "config.json").write_text(json.dumps(record))
    (old / "summary.json").write_text(json.dumps({"run_id": old.name, "status": "finished", "top1": 42.0}))

    result = subprocess.run(
        [sys.executable, "-m", "suite.cli", "sweep", "plan", str(path)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "300"},
    )
    assert result.returncode == 0, result.stderr
    assert f"{run.run_id} is in {old}" in result.stdout
    assert f"suite runs migrate {sweep.output_root}" in result.stdout
