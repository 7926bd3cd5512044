"""``suite report`` end to end on generated run directories (through ``register`` on a fresh app)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from analysis.cli import EXIT_INVALID, register
from tests.analysis_tests.run_records import plan_of, write_run, write_sweep


@pytest.fixture
def app() -> typer.Typer:
    root = typer.Typer()

    @root.callback()
    def _root() -> None:
        """A stand-in for the suite app."""

    register(root)
    return root


def _sweeps(folder: Path) -> Path:
    sweeps = folder / "sweeps"
    sweeps.mkdir()
    ratio = write_sweep(sweeps, "ratio", axes={"mix.mask_ratio": [0.3, 0.7]}, mode="one_at_a_time", seeds=[0, 1, 2])
    methods = write_sweep(sweeps, "methods", include=[{"mix.method": "none"}, {"mix.method": "cutmix"}],
                          seeds=[0, 1, 2])
    for path in (ratio, methods):
        plan = plan_of(path)
        for cond in plan.conditions:
            for seed, rid in cond.run_ids.items():
                if path == ratio and cond.label == "mix.mask_ratio=0.7" and seed == 2:
                    continue  # one planned run never started
                top1 = 40.0 + 4 * cond.index + seed
                write_run(plan, rid, top1, occ50=top1 - 15, curve=[top1 - 8, top1 - 3, top1])
    return sweeps


def test_report_end_to_end(app: typer.Typer, tmp_path: Path) -> None:
    sweeps = _sweeps(tmp_path)
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["report", str(sweeps), "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "14/15 planned runs finished" in result.output and "1 missing" in result.output
    assert "ratio: mix.mask_ratio" in result.output  # the rich table
    index = (out / "index.md").read_text()
    for name in ("ratio-mix-mask_ratio", "methods"):
        for suffix in (".md", ".tex", ".csv"):
            assert (out / "tables" / f"{name}{suffix}").is_file()
        assert f"plots/{name}.png" in index and f"plots/{name}-curves.png" in index
        for png in (f"{name}.png", f"{name}-curves.png"):
            assert (out / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 0.7 | 44.5 ± 0.7 | 49.5 ± 0.7" not in index  # the missing seed is not averaged silently
    assert "2/3 †" in index and "Runs not in the statistics" in index and "missing" in index
    rerun = CliRunner().invoke(app, ["report", str(sweeps), "--out", str(out), "--format", "md", "-q"])
    assert rerun.exit_code == 0 and "ratio: mix.mask_ratio" not in rerun.output


def test_piped_output_prints_markdown_tables(app: typer.Typer, tmp_path: Path) -> None:
    """Output that is not a terminal (a file, a pipe, CliRunner) gets Markdown, not boxes wrapped at 80 columns."""
    sweeps = _sweeps(tmp_path)
    result = CliRunner().invoke(app, ["report", str(sweeps), "--out", str(tmp_path / "r"), "--format", "md"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "### methods" in lines
    header = "| condition | top-1 | occl. 50 % | n | Δ top-1 | p | p (Holm) | 95 % CI | GPU-h |"
    assert header in lines  # one line per table row, however long
    assert any(line.startswith("| CutMix | **45.0 ± 1.0** |") for line in lines)
    assert not set("┏┃━│└") & set(result.output)


def test_metric_val_loss_bolds_the_lowest(app: typer.Typer, tmp_path: Path) -> None:
    path = write_sweep(tmp_path, "loss", include=[{"mix.method": "none"}, {"mix.method": "cutmix"},
                                                   {"mix.method": "mixup"}], seeds=[0, 1])
    plan = plan_of(path)
    losses = {0: 2.5, 1: 1.5, 2: 2.0}  # CutMix has the lowest validation loss, and the lowest top-1
    for cond in plan.conditions:
        for seed, rid in cond.run_ids.items():
            loss = losses[cond.index] + 0.1 * seed * (cond.index + 1)
            write_run(plan, rid, 50.0 - cond.index + seed, val_loss=loss)
    out = tmp_path / "r"
    result = CliRunner().invoke(app, ["report", str(path), "--out", str(out), "--format", "md,csv",
                                      "--metric", "val_loss"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    table = (out / "tables" / "loss.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "**" in line]
    assert rows == [next(line for line in table.splitlines() if line.startswith("| CutMix |"))]
    assert "| CutMix | **1.6 ± 0.1** |" in table  # the lowest mean loss, not the highest
    assert "lowest val_loss" in table


def test_effect_option_sets_the_seeds_needed(app: typer.Typer, tmp_path: Path) -> None:
    sweeps = _sweeps(tmp_path)
    out = tmp_path / "r"
    result = CliRunner().invoke(app, ["report", str(sweeps), "--out", str(out), "--format", "md,csv",
                                      "--effect", "2.5"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "true Δ of 2.5 points of top-1" in (out / "tables" / "methods.md").read_text()
    frame = pd.read_csv(out / "tables" / "methods.csv")
    assert set(frame["effect"]) == {2.5}
    bad = CliRunner().invoke(app, ["report", str(sweeps), "--out", str(out), "--effect", "0"])
    assert bad.exit_code == EXIT_INVALID and "--effect 0.0: give a positive difference" in bad.output


def test_index_has_no_absolute_paths(app: typer.Typer, tmp_path: Path) -> None:
    sweeps = _sweeps(tmp_path)
    out = tmp_path / "reports" / "latest"
    result = CliRunner().invoke(app, ["report", str(sweeps), "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    index = (out / "index.md").read_text()
    assert str(tmp_path) not in index
    assert "Sweep file `../../sweeps/ratio.yaml`" in index and "runs in `../../sweeps/runs/ratio`" in index
    assert "| missing | ../../sweeps/runs/ratio/" in index  # the problem line names the run folder, relatively
    for link in re.findall(r"\]\(([^)]+)\)", index):  # every link and image resolves from the report folder
        assert not Path(link).is_absolute() and (out / link).is_file(), link


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nowhere.yaml"], "no such sweep file or folder"),
        (["SWEEPS", "--format", "md,docx"], "--format docx: unknown"),
        (["SWEEPS", "--from", "wandb"], "--wandb-path ENTITY/PROJECT"),
        (["SWEEPS", "--metric", "top_one"], "--metric top_one: no finished run records it; choose one of top1"),
    ],
)
def test_report_invalid_input_exits_2(app: typer.Typer, tmp_path: Path, args: list[str], message: str) -> None:
    sweeps = _sweeps(tmp_path)
    args = [str(sweeps) if a == "SWEEPS" else a for a in args]
    result = CliRunner().invoke(app, ["report", *args, "--out", str(tmp_path / "r")])
    assert result.exit_code == EXIT_INVALID, result.output
    assert message in result.output
