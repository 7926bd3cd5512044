"""One grammar for every sweep command: the same positional overrides and the same --output-root.

``sweep plan``, ``sweep launch``, ``sweep status``, ``report``, ``tune`` and ``tune status`` read
``key=value`` and ``resources.<key>=<value>`` after the file(s), and ``--output-root DIR`` as the
folder of the run folders itself; so the same arguments name the same runs in every command.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import flat, run_cli
from tests.sweeps_tests.study_files import write_study
from tests.sweeps_tests.sweep_files import write_sweep


def _ids(output: str) -> list[str]:
    return [row["run_id"] for row in json.loads(output)["runs"]]


COMMANDS = [["sweep", "plan"], ["sweep", "launch"], ["sweep", "status"], ["report"], ["tune", "run"],
            ["tune", "status"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_each_command_help_lists_the_overrides_and_output_root(cli, command: list[str]) -> None:
    code, output = run_cli(cli, *command, "--help")
    assert code == 0, output
    text = flat(output)
    assert "dotted key=value for every run's config" in text
    assert "resources.<key>=<value> for what each run asks the scheduler for" in text
    assert "Every sweep, report and tune command reads them alike" in text
    assert "--output-root" in text and "The folder of the run folders and sweep-state.json" in text
    assert "used as is: it replaces the file's output_root" in text


def test_plan_launch_status_and_report_name_the_same_runs(cli, tmp_path: Path) -> None:
    """The arguments launch got find its runs in plan, status and report; other arguments do not."""
    path = write_sweep(tmp_path, "same", overrides={"schedule.epochs": 1},
                       axes={"mix.method": ["none", "cutmix"]})
    root = tmp_path / "elsewhere"
    given = ["optim.lr=0.002", "resources.cpus_per_task=1", "--output-root", root]

    code, output = run_cli(cli, "sweep", "plan", path, *given, "--json")
    assert code == 0, output
    planned = _ids(output)
    assert json.loads(output)["output_root"] == str(root) and len(planned) == 2
    code, output = run_cli(cli, "sweep", "plan", path, "--json")
    assert set(_ids(output)).isdisjoint(planned)  # the override changes the run ids
    code, output = run_cli(cli, "sweep", "status", path, *given, "--json")
    assert code == 0, output
    assert "not launched yet" in output
    status = json.loads(output[output.index("{"):])
    assert [r["run_id"] for r in status["runs"]] == planned and status["counts"] == {"new": 2}

    code, output = run_cli(cli, "sweep", "launch", path, *given, "-e", "debug")
    assert code == 0 and "submitted 2 run(s)" in output, output
    assert sorted(p.parent.name for p in root.glob("*/summary.json")) == sorted(planned)  # root itself
    for extra in ([], ["optim.lr=0.002"]):  # the state file's runs, or the plan's: the same ones
        code, output = run_cli(cli, "sweep", "status", path, *extra, "--output-root", root, "--json")
        status = json.loads(output)
        assert code == 0 and sorted(r["run_id"] for r in status["runs"]) == sorted(planned), output
        assert status["counts"] == {"finished": 2}
    code, output = run_cli(cli, "sweep", "status", path, "optim.lr=0.001", "--output-root", root, "--json")
    assert json.loads(output)["counts"] == {"new": 2}  # other overrides: other runs, none launched

    out = tmp_path / "report"
    code, output = run_cli(cli, "report", path, *given, "--out", out, "--format", "md", "-q")
    assert code == 0 and "2/2 planned runs finished" in flat(output), output
    code, output = run_cli(cli, "report", path, "--override", "optim.lr=0.002", "--output-root", root,
                        "--out", out, "--format", "md", "-q")
    assert code == 0 and "2/2 planned runs finished" in flat(output) and "deprecated" in output, output
    code, output = run_cli(cli, "report", path, "optim.lr=0.002", "--out", out, "--format", "md", "-q")
    assert code == 0 and "0/2 planned runs finished" in flat(output) and "2 missing" in output, output


def test_run_output_root_is_refused_with_the_option_to_use(cli, tmp_path: Path) -> None:
    """A run.output_root override used to be dropped silently (the runs went to the sweep's root)."""
    sweep, study = write_sweep(tmp_path), write_study(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    for command, path in [(["sweep", "plan"], sweep), (["sweep", "launch"], sweep), (["sweep", "status"], sweep),
                          (["report"], sweep), (["tune"], study), (["tune", "status"], study)]:
        code, output = run_cli(cli, *command, path, f"run.output_root={elsewhere}")
        assert code == 2, f"{command}: {output}"
        assert f"give --output-root {elsewhere} instead" in flat(output), output
    assert not (tmp_path / "runs").exists() and not elsewhere.exists()


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_resources_overrides_are_checked_alike(cli, tmp_path: Path, command: list[str]) -> None:
    path = write_study(tmp_path) if command[0] == "tune" else write_sweep(tmp_path)
    code, output = run_cli(cli, *command, path, "resources.node=2")
    assert code == 2, output
    assert "unknown resources key 'node'; valid keys: partition, nodes" in flat(output)
    code, output = run_cli(cli, *command, path, "resources.nodes=0")
    assert code == 2 and "resources.nodes=0: nodes: Input should be greater than 0" in flat(output), output
    assert not (tmp_path / "runs").exists()


def test_status_of_a_folder_takes_no_overrides(cli, tmp_path: Path) -> None:
    path = write_sweep(tmp_path, "folder", overrides={"schedule.epochs": 1})
    code, output = run_cli(cli, "sweep", "launch", path, "-e", "debug")
    assert code == 0, output
    folder = tmp_path / "runs" / "folder"
    code, output = run_cli(cli, "sweep", "status", folder, "--json")
    assert code == 0 and json.loads(output)["counts"] == {"finished": 1}, output
    for extra in (["optim.lr=0.002"], ["--output-root", tmp_path]):
        code, output = run_cli(cli, "sweep", "status", folder, *extra)
        assert code == 2 and "give the sweep file with overrides or --output-root" in flat(output), output


def test_tune_status_reads_the_output_root_as_tune_does(cli, tmp_path: Path) -> None:
    path = write_study(tmp_path, name="unstarted")
    root = tmp_path / "elsewhere"
    code, output = run_cli(cli, "tune", "status", path, "optim.weight_decay=0.01", "--output-root", root)
    assert code == 2 and f"no study yet at {root / 'study.journal'}" in flat(output), output
    code, output = run_cli(cli, "tune", "status", path, "second.yaml")
    assert code == 2 and "one file is taken here" in flat(output), output


def test_resources_follow_the_gpus_unless_set_apart() -> None:
    from suite.cli.console import with_resources
    from sweeps.spec import ResourcesSpec

    file = ResourcesSpec.model_validate({"gpus_per_node": 4, "tasks_per_node": 4})
    assert with_resources(file, ["resources.gpus_per_node=8"]).tasks == 8  # one process per GPU
    with pytest.raises(ValueError, match="tasks_per_node=2 with gpus_per_node=8"):
        with_resources(file, ["resources.gpus_per_node=8", "resources.tasks_per_node=2"])
    with pytest.raises(ValueError, match="command-line override resources.nodes=two: nodes"):
        with_resources(file, ["resources.nodes=two"])


def test_plan_of_a_renamed_sweep_points_at_its_finished_runs(cli, tmp_path: Path) -> None:
    """A sweep's runs live in <root>/<sweep name>: a new name plans them as new, with a hint where they are."""
    old = write_sweep(tmp_path, "old", overrides={"schedule.epochs": 1}, axes={"mix.method": ["none", "cutmix"]})
    code, output = run_cli(cli, "sweep", "launch", old, "-e", "debug")
    assert code == 0, output
    renamed = write_sweep(tmp_path, "new", overrides={"schedule.epochs": 1}, axes={"mix.method": ["none", "cutmix"]})
    text = renamed.read_text().replace(str(tmp_path / "runs" / "new"), str(tmp_path / "runs" / "renamed"))
    renamed.write_text(text)
    code, output = run_cli(cli, "sweep", "plan", renamed)
    assert code == 0, output
    text = flat(output)
    assert "2 of the new runs are finished under" in text and str(tmp_path / "runs" / "old") in text


@pytest.mark.parametrize("url", ["sqlite:////nonexistent/dir/x.db", "foo://bar"])
def test_a_storage_that_cannot_open_is_one_line_naming_the_field(cli, tmp_path: Path, url: str) -> None:
    path = write_study(tmp_path, storage=url)
    for command in (["tune", "status", path], ["tune", path, "-e", "debug"]):
        code, output = run_cli(cli, *command)  # a traceback would fail _run
        assert code == 2, output
        assert "storage: cannot open" in flat(output) and "Traceback" not in output
