"""Sweep files: schema errors name the file and the field, and say what is valid."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sweeps.spec import SweepError, load_sweep
from tests.sweeps_tests.sweep_files import write_sweep


def test_loads_base_file_overrides_and_cli_overrides(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(
        yaml.safe_dump({"schedule": {"epochs": 7}, "mix": {"method": "cutmix"}})
    )
    path = write_sweep(tmp_path, base={"config": "base.yaml", "overrides": {"schedule.epochs": 3}})
    sweep = load_sweep(path, ["optim.lr=5e-4"])
    assert sweep.base["schedule"]["epochs"] == 3  # base.overrides over the file
    assert sweep.base["mix"]["method"] == "cutmix"
    assert sweep.base["optim"]["lr"] == 5e-4  # command line last
    assert sweep.output_root == tmp_path / "runs" / "tiny"
    assert sweep.state_file == tmp_path / "runs" / "tiny" / "sweep-state.json"


def test_default_output_root_is_runs_name_in_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: abl\n")
    monkeypatch.chdir(tmp_path)
    assert load_sweep(path).output_root == tmp_path / "runs" / "abl"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"axes": {"mix.mask_ratio": []}},
            "axes: axis mix.mask_ratio is an empty list; give at least one value or remove the axis",
        ),
        ({"axes": {"mix.mask_ratio": 0.5}}, "axis mix.mask_ratio must be a list of values"),
        (
            {"mode": "zip", "axes": {"mix.mask_ratio": [0.3, 0.5], "mix.token_grid": [4, 8, 16]}},
            (
                "mode zip pairs the axes value by value, so all lists need the same length, "
                "but mix.mask_ratio has 2, mix.token_grid has 3"
            ),
        ),
        (
            {"executor": "kubernetes"},
            "executor: unknown executor 'kubernetes'; choose one of auto, slurm, local, debug",
        ),
        ({"mode": "random"}, "mode: Input should be 'grid', 'zip' or 'one_at_a_time'"),
        ({"seeds": []}, "seeds is an empty list"),
        ({"axes": {"run.seed": [1, 2]}}, "use the top-level 'seeds:' list"),
    ],
)
def test_malformed_sweep_names_file_and_field(tmp_path: Path, fields: dict, expected: str) -> None:
    path = write_sweep(tmp_path, **fields)
    with pytest.raises(SweepError) as err:
        load_sweep(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_unknown_key_lists_valid_keys_with_defaults(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, resources={"gpus": 2})
    with pytest.raises(SweepError) as err:
        load_sweep(path)
    message = str(err.value)
    assert f"{path}: resources.gpus: unknown key; valid keys:" in message
    assert "gpus_per_node=1" in message and "timeout_min=1440" in message
    path = write_sweep(tmp_path, axis={"mix.prob": [0.5]})
    with pytest.raises(
        SweepError, match=r"axis: unknown key; valid keys: name \(required\), description=None"
    ):
        load_sweep(path)


def test_missing_or_broken_files(tmp_path: Path) -> None:
    with pytest.raises(SweepError, match="config file not found"):
        load_sweep(tmp_path / "nope.yaml")
    folder = tmp_path / "sweeps"
    folder.mkdir()
    (folder / "methods.yaml").write_text("name: m\n")
    with pytest.raises(SweepError, match=r"sweeps is a folder, not a config file; .*its YAML files: methods.yaml"):
        load_sweep(folder)  # a folder given as the sweep file is named as a folder, not "not found"
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(SweepError, match="invalid YAML"):
        load_sweep(broken)
    path = write_sweep(tmp_path, base={"config": "missing-base.yaml"})
    with pytest.raises(SweepError, match=r"base.config: config file not found: .*missing-base.yaml"):
        load_sweep(path)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"include": [{"mix.method": "none"}], "labels": {"mix.methd": {"none": "No mixing"}}},
            ("labels.mix.methd: mix.methd is not an axis or include key of this sweep; labels name the values of "
             "mix.method"),
        ),
        (
            {"axes": {"mix.prob": [0.5, 1.0]}, "labels": {"mix.prob": {0.25: "a quarter"}}},
            "labels.mix.prob.0.25: mix.prob never takes the value 0.25 in this sweep; its values: 0.5, 1.0",
        ),
        (
            {"axes": {"mix.prob": [0.5, 1.0]}, "labels": {"mix.prob": {0.5: "some", 1.0: "some"}}},
            "labels.mix.prob: 'some' names both 0.5 and 1.0; give each value its own label",
        ),
        ({"axes": {"mix.prob": [0.5]}, "labels": {"mix.prob": {0.5: ""}}}, "labels.mix.prob.0.5: a label is text"),
        ({"axes": {"mix.prob": [0.5]}, "labels": {"mix.prob": {0.5: 3}}}, "labels.mix.prob.0.5: Input should be a valid string"),
        ({"axes": {"mix.prob": [0.5]}, "labels": {"mix.prob": ["half"]}}, "labels.mix.prob: give value -> label pairs"),
        (
            {"include": [{"label": "A", "mix.method": "none"}, {"label": "A", "mix.method": "cutmix"}]},
            "include.1.label: 'A' is also the label of include.0; give each row its own",
        ),
        ({"include": [{"label": " ", "mix.method": "none"}]}, "include.0.label: a row label is text"),
        ({"include": [{"label": "A"}]}, "include: entry 0 has a label but no values"),
    ],
)
def test_labels_name_values_of_the_sweep_or_fail_naming_the_field(tmp_path: Path, fields: dict, expected: str) -> None:
    path = write_sweep(tmp_path, **fields)
    with pytest.raises(SweepError) as err:
        load_sweep(path)
    assert f"{path}: {expected}" in str(err.value), str(err.value)


def test_labels_are_read_from_the_sweep_file(tmp_path: Path) -> None:
    """``label`` is no run config key: the run's values are the entry's other keys."""
    from sweeps.expand import expand

    path = write_sweep(
        tmp_path, axes={"teacher": [None, "runs/none-0123456789ab"], "mix.mask_ratio": [0.5, [0.3, 0.7]]},
        mode="zip", overrides={"mix.method": "tokenmix"}, include=[{"label": "CutMix", "mix.method": "cutmix"}],
        labels={"teacher": {None: "no teacher"}, "mix.mask_ratio": {"[0.3,0.7]": "a range"}},
    )
    spec = load_sweep(path).spec
    assert spec.value_label("teacher", None) == "no teacher" and spec.value_label("teacher", "x") is None
    assert spec.value_label("mix.mask_ratio", [0.3, 0.7]) == "a range"
    assert spec.row_label({"mix.method": "cutmix", "run.seed": 3}) == "CutMix"
    assert spec.row_label({"mix.method": "none"}) is None
    assert spec.include[0].model_dump() == {"label": "CutMix", "mix.method": "cutmix"}  # as written
    plan = expand(load_sweep(path), check_paths=False)
    assert plan.runs[-1].values == {"mix.method": "cutmix"} and plan.runs[-1].config.mix.method == "cutmix"
