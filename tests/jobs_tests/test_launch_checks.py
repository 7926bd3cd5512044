"""Launch checks everything before submitting: a bad sweep fails with file, run and field, and leaves no file."""

from __future__ import annotations

import json

from pathlib import Path

import pytest
from typer.testing import CliRunner

from jobs.launch import launch
from sweeps.spec import SweepError, load_sweep
from tests.sweeps_tests.sweep_files import write_sweep


def _assert_nothing_written(folder: Path) -> None:
    assert not (folder / "runs").exists(), sorted(p.name for p in (folder / "runs").rglob("*"))


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"axes": {"mix.mask_ration": [0.3]}},
            "run 0 (mix.mask_ration=0.3): mix.mask_ration: unknown key; valid keys:",
        ),
        ({"axes": {"mix.prob": []}}, "axes: axis mix.prob is an empty list"),
        (
            {"mode": "zip", "axes": {"mix.prob": [0.5, 1.0], "optim.lr": [1e-3]}},
            "mix.prob has 2, optim.lr has 1",
        ),
        (
            {"axes": {"mix.prob": [0.5, 1.5]}},
            "run 1 (mix.prob=1.5): mix.prob: Input should be less than or equal to 1",
        ),
        ({"executor": "kubernetes"}, "executor: unknown executor 'kubernetes'"),
        (
            {"base": {"overrides": {"data": "/no/imagenet"}}},
            "run 0 (base): data.root: /no/imagenet does not exist",
        ),
    ],
)
def test_invalid_sweeps_fail_before_submission(tmp_path: Path, fields: dict, expected: str) -> None:
    path = write_sweep(tmp_path, **fields)
    with pytest.raises(SweepError) as err:
        launch(load_sweep(path), executor="debug")
    assert str(path) in str(err.value) and expected in str(err.value)
    _assert_nothing_written(tmp_path)


def test_unknown_executor_on_the_command_line(tmp_path: Path) -> None:
    with pytest.raises(
        SweepError, match=r"executor: unknown executor 'k8s'; choose one of auto, slurm, local, debug"
    ):
        launch(load_sweep(write_sweep(tmp_path)), executor="k8s")
    _assert_nothing_written(tmp_path)


def test_cli_exit_codes(tmp_path: Path, cli) -> None:
    runner = CliRunner()
    good = write_sweep(tmp_path, axes={"optim.lr": [1e-3, 5e-4]})
    result = runner.invoke(cli, ["sweep", "plan", str(good), "--json"])
    assert result.exit_code == 0, result.output
    assert '"run_id"' in result.output and result.output.count('"state": "new"') == 2
    result = runner.invoke(cli, ["sweep", "plan", str(good), "schedule.epochs=3"])
    assert result.exit_code == 0 and "2 runs" in result.output
    result = runner.invoke(cli, ["sweep", "launch", str(good), "--executor", "nope"])
    assert result.exit_code == 2 and "unknown executor 'nope'" in result.output
    result = runner.invoke(cli, ["sweep", "launch", str(good), "mix.mask_ratio=2"])
    assert result.exit_code == 2 and "mix.mask_ratio: mask_ratio must be in (0, 1)" in result.output
    result = runner.invoke(cli, ["sweep", "status", str(tmp_path)])
    assert result.exit_code == 2 and "no sweep-state.json" in result.output
    _assert_nothing_written(tmp_path)
    result = runner.invoke(cli, ["sweep", "launch", str(good), "-e", "debug"])
    assert result.exit_code == 0 and "submitted 2 run(s)" in result.output
    result = runner.invoke(cli, ["sweep", "status", str(tmp_path / "runs" / "tiny")])
    assert result.exit_code == 0 and "GPU-hours used" in result.output


@pytest.mark.slurm
@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        (
            {"gpus_per_node": 4},
            "resources.gpus_per_node: 4 requested, but the nodes of partition debug have at most 2 (GRES gpu:2)",
        ),
        ({"partition": "a100"}, "resources.partition: no partition 'a100' on this cluster; available: debug"),
        (
            {"mem_gb": 4096},
            "resources.mem_gb: 4096 GB requested, but the nodes of partition debug have at most",
        ),
        ({"cpus_per_task": 64}, "resources.cpus_per_task: 64 requested"),
        (
            {"constraint": "a100"},
            "resources: SLURM would reject the job (allocation failure: Invalid feature specification)",
        ),
    ],
)
def test_resources_the_partition_cannot_satisfy(tmp_path: Path, resources: dict, expected: str) -> None:
    path = write_sweep(tmp_path, resources={"cpus_per_task": 1, "mem_gb": 1, **resources})
    with pytest.raises(SweepError) as err:
        launch(load_sweep(path), executor="slurm")
    assert str(path) in str(err.value) and expected in str(err.value), str(err.value)
    _assert_nothing_written(tmp_path)


def test_plan_takes_several_sweep_files(tmp_path: Path, cli) -> None:
    runner = CliRunner()
    one = write_sweep(tmp_path, "one", axes={"optim.lr": [1e-3, 5e-4]})
    two = write_sweep(tmp_path, "two", axes={"mix.method": ["none", "cutmix", "mixup"]})
    result = runner.invoke(cli, ["sweep", "plan", str(one), str(two), "schedule.epochs=3"])
    assert result.exit_code == 0, result.output
    assert "2 runs" in result.output and "3 runs" in result.output
    bad = write_sweep(tmp_path, "bad", axes={"mix.mask_ratio": [2.0]}, overrides={"mix.method": "tokenmix"})
    result = runner.invoke(cli, ["sweep", "plan", str(one), str(bad)])
    assert result.exit_code == 2 and "2 runs" in result.output and "mask_ratio must be in (0, 1)" in result.output


def test_plan_validates_every_paper_preset_with_its_maps_steps(cli) -> None:
    """`suite sweep plan sweeps/paper/*.yaml` on a laptop: valid, with the teacher sweep's builds first."""
    files = sorted(str(p) for p in (Path(__file__).parents[2] / "sweeps" / "paper").glob("*.yaml"))
    result = CliRunner().invoke(cli, ["sweep", "plan", *files])
    assert result.exit_code == 0, result.output
    assert len(files) == 7 and result.output.count("sweep paper-") == 7
    assert "4 maps build step(s) first" in result.output  # the teacher sweep
    assert result.output.count("1 maps build step(s) first") == 6  # the NFNet-F6 maps of every other preset
    assert "/checkpoints/teachers/dm_nfnet_f6.pth" in result.output  # missing here: a warning, not an error
    teacher = [f for f in files if f.endswith("teacher.yaml")]
    result = CliRunner().invoke(cli, ["sweep", "plan", *teacher, "--json"])
    rows = json.loads(result.output)["runs"]
    steps = [r for r in rows if r["kind"] == "maps"]
    assert [r["label"] for r in steps] == [
        f"maps build maps/{t}.yaml" for t in ("resnet18-576", "resnet50-576", "dm_nfnet_f6-576", "deit_base-224")
    ]
    students = [r for r in rows if not r["prerequisite"]]
    assert len(students) == 15 and sum(len(r["needs"]) == 1 for r in students) == 12  # 3 area-label runs need none
    assert {need for r in students for need in r["needs"]} == {r["run_id"] for r in steps}


def test_plan_and_launch_refuse_paper_groups_on_two_nodes(tmp_path: Path, cli) -> None:
    """`resources.nodes=2` on the command line: 64 images per GPU cannot hold groups of 128."""
    methods = str(Path(__file__).parents[2] / "sweeps" / "paper" / "methods.yaml")
    runner = CliRunner()
    root = ["--output-root", str(tmp_path / "runs")]
    result = runner.invoke(cli, ["sweep", "plan", methods, *root])
    assert result.exit_code == 0, result.output
    assert "1 node(s) x 8 GPU(s) = 8 process(es)" in " ".join(result.output.split())
    result = runner.invoke(cli, ["sweep", "plan", methods, "resources.nodes=2", *root])
    assert result.exit_code == 2, result.output
    flat = " ".join(result.output.split())
    assert f"{methods}: run 3 (mix.method=mixup seed=0) and 17 more run(s)" in flat
    assert "mix.groups=128 does not fit the per-process batch: data.batch_size=1024 over 16 processes" in flat
    assert "(2 nodes x 8 GPUs) gives 64 images per process" in flat and "fix: mix.groups=64" in flat
    result = runner.invoke(cli, ["sweep", "plan", methods, "resources.nodes=2", "mix.groups=64", *root])
    assert result.exit_code == 0, result.output
    assert "22 runs" in result.output and "2 node(s) x 8 GPU(s) = 16 process(es)" in " ".join(result.output.split())
    result = runner.invoke(cli, ["sweep", "plan", methods, "resources.nodes=2", "mix.groups=64", "--json", *root])
    planned = json.loads(result.output)
    assert planned["processes"] == 16 and planned["wall_hours"] == pytest.approx(planned["hours"] / 21 / 16)
    result = runner.invoke(cli, ["sweep", "launch", methods, "resources.nodes=2", "--no-check-paths", "-e", "debug",
                                 *root])
    assert result.exit_code == 2 and "fix: mix.groups=64" in " ".join(result.output.split())
    _assert_nothing_written(tmp_path)


def test_resources_overrides_on_the_command_line(tmp_path: Path, cli) -> None:
    runner = CliRunner()
    path = write_sweep(tmp_path, overrides={"mix.method": "tokenmix", "data.batch_size": 6})
    result = runner.invoke(cli, ["sweep", "plan", str(path), "resources.tasks_per_node=2"])
    assert result.exit_code == 2 and "6 over 2 processes gives 3 images per process, an odd number" in " ".join(
        result.output.split())
    result = runner.invoke(cli, ["sweep", "plan", str(path), "resources.tasks_per_node=3"])
    assert result.exit_code == 0 and "1 node(s) x 3 process(es), no GPU = 3 process(es)" in " ".join(
        result.output.split())
    result = runner.invoke(cli, ["sweep", "plan", str(path), "resources.node=2"])
    assert result.exit_code == 2 and "unknown resources key 'node'; valid keys: partition, nodes" in result.output
    result = runner.invoke(cli, ["sweep", "plan", str(path), "resources.nodes=0"])
    assert result.exit_code == 2 and "resources.nodes=0: nodes: Input should be greater than 0" in result.output
    _assert_nothing_written(tmp_path)
