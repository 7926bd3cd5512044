"""The run config: defaults, overrides, validation messages and the run id."""

from __future__ import annotations

from pathlib import Path

import pytest

from suite.config import ConfigError, TrainConfig, apply_overrides, load_config, run_id


def test_defaults_are_a_valid_runnable_config() -> None:
    cfg = load_config()
    assert cfg.data.source == "builtin" and cfg.data.train_size == 6000
    assert cfg.model.name == "vit_micro_patch4_32"
    assert cfg.mix.method == "none"


def test_overrides_parse_yaml_values_and_shorthands(tmp_path: Path) -> None:
    cfg = load_config(None, ["mix.method=tokenmix", "mix.mask_ratio=[0.3, 0.8]", "schedule.epochs=3", "data=builtin"])
    assert cfg.mix.mask_ratio == (0.3, 0.8)
    assert cfg.schedule.epochs == 3
    assert cfg.mix.token_grid == 8  # default: the model's patch grid (32 px / patch 4)
    assert cfg.mix.target == "area"  # no teacher: auto resolves to area


def test_yaml_file_plus_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("mix:\n  method: cutmix\nschedule:\n  epochs: 4\n")
    cfg = load_config(path, ["schedule.epochs=5"])
    assert (cfg.mix.method, cfg.schedule.epochs) == ("cutmix", 5)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["mix.mask_raito=0.5"], "mix.mask_raito: unknown key; valid keys: method='none'"),
        (["schedule.epochs=ten"], "schedule.epochs"),
        (["mix.mask_ratio=1.3"], "mix.mask_ratio: mask_ratio must be in (0, 1)"),
        (["optim.lr=-1"], "optim.lr"),
        (["data.img_size=30"], "data.img_size must be divisible by the patch size 4"),
        (["data.source=folder"], "data.root is required"),
        (["mix.method=cutmix", "data.batch_size=33"], "data.batch_size must be even"),
        (["mix.method=tokenmix", "mix.target=teacher_norm"], "mix.target=teacher_norm needs a teacher"),
        (["mix.method=tokenmix", "mix.token_grid=5"], "mix.token_grid must divide data.img_size=32"),
        (["run.device=gpu0"], "run.device"),
        (["nonsense"], "must look like key.sub=value"),
    ],
)
def test_bad_input_names_the_dotted_field(overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["model.name=vit_does_not_exist"], "model.name: unknown timm model 'vit_does_not_exist'"),
        (["mix.method=tokenmix", "teacher.checkpoint=/no/such/teacher.pt"], "teacher.checkpoint: file not found"),
        (["model.checkpoint=/no/such/init.safetensors"], "model.checkpoint: file not found"),
    ],
)
def test_what_this_machine_lacks_is_named_by_the_machine_check(overrides: list[str], needle: str) -> None:
    from suite.train.preflight import check_machine

    cfg = load_config(None, overrides)  # the schema alone accepts it: the cluster may have these
    with pytest.raises(ConfigError) as info:
        check_machine(cfg)
    assert needle in str(info.value)


def test_run_id_is_stable_and_ignores_output_only_fields(tmp_path: Path) -> None:
    a = load_config(None, ["mix.method=cutmix", "run.output_root=/a", "run.threads=1", "tracking.mode=disabled"])
    b = load_config(None, ["mix.method=cutmix", f"run.output_root={tmp_path}", "run.device=cpu", "name=x"])
    c = load_config(None, ["mix.method=cutmix", "run.seed=1"])
    assert run_id(a) == run_id(b)
    assert run_id(a) != run_id(c)
    assert run_id(a).startswith("cutmix-")


def test_resolved_config_round_trips() -> None:
    cfg = load_config(None, ["mix.method=tokenmix", "mix.per_sample=true"])
    again = TrainConfig.model_validate_json(cfg.model_dump_json())
    assert run_id(again) == run_id(cfg)


def test_apply_overrides_creates_nested_keys_without_touching_input() -> None:
    base = {"mix": {"method": "none"}}
    out = apply_overrides(base, ["mix.prob=0.5", "optim.lr=1e-4"])
    assert out == {"mix": {"method": "none", "prob": 0.5}, "optim": {"lr": 1e-4}}
    assert base == {"mix": {"method": "none"}}


@pytest.mark.parametrize(
    ("overrides", "loss"),
    [
        ([], "soft_ce"),
        (["mix.method=tokenmix"], "soft_ce"),  # no teacher: area targets
        (["mix.method=cutmix"], "soft_ce"),
        (["mix.method=tokenmix", "mix.target=teacher_norm", "teacher.maps=MAPS"], "soft_ce"),
        (["mix.method=tokenmix", "mix.target=mixed", "teacher.maps=MAPS"], "soft_ce"),
        (["mix.method=tokenmix", "teacher.maps=MAPS"], "bce"),  # target auto -> teacher_raw -> bce
        (["mix.method=tokenmix", "mix.target=teacher_raw", "teacher.maps=MAPS"], "bce"),
        (["mix.method=tokenmix", "mix.target=teacher_raw", "teacher.maps=MAPS", "optim.loss=bce"], "bce"),
        (["mix.method=cutmix", "optim.loss=bce"], "bce"),
    ],
)
def test_auto_loss_resolves_to_bce_for_raw_teacher_targets(tmp_path: Path, overrides: list[str], loss: str) -> None:
    (tmp_path / "maps.json").write_text("{}")
    cfg = load_config(None, [o.replace("MAPS", str(tmp_path)) for o in overrides])
    assert cfg.optim.loss == loss
    assert TrainConfig.model_validate(cfg.model_dump()).optim.loss == loss  # the saved config reloads as is


def test_raw_teacher_targets_with_soft_ce_are_refused(tmp_path: Path) -> None:
    (tmp_path / "maps.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"mix.target=teacher_raw needs optim.loss=bce.*optim.loss=soft_ce"):
        load_config(None, ["mix.method=tokenmix", f"teacher.maps={tmp_path}", "optim.loss=soft_ce"])
