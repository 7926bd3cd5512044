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
