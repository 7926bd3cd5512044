"""What every command shares: state colours keyed by RunState, and the sweep commands' argument grammar."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from suite.cli.console import styled_state, sweep_args
from suite.run.records import RunState


def test_every_state_has_its_colour() -> None:
    assert styled_state(RunState.FINISHED) == "[green]finished[/]"
    assert all(styled_state(state).endswith(f"]{state.value}[/]") for state in RunState)


def test_sweep_args_sort_files_overrides_and_resources() -> None:
    args = sweep_args(["a.yaml", "b", "data.root=/x", "resources.nodes=2", "mix.groups=64"], title="t", several=True)
    assert args.files == (Path("a.yaml"), Path("b"))
    assert args.overrides == ("data.root=/x", "mix.groups=64") and args.resources == ("resources.nodes=2",)


@pytest.mark.parametrize("items", [["a.yaml", "b.yaml"], ["a.yaml", "run.output_root=/x"]])
def test_sweep_args_refuse_a_second_file_and_run_output_root(items: list[str]) -> None:
    with pytest.raises(typer.Exit) as exit_:
        sweep_args(items, title="t")
    assert exit_.value.exit_code == 2

