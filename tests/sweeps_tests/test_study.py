"""Study files: schema, checks before any trial, factories, and what a trial's config is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sweeps.study import (
    CategoricalParam,
    StudyError,
    grid_size,
    intermediate_value,
    load_study,
    make_pruner,
    make_sampler,
    objective_value,
)
from tests.sweeps_tests.study_files import SPACE, write_study

DEMO = Path(__file__).resolve().parents[2] / "sweeps" / "demo" / "tune.yaml"

MALFORMED: list[tuple[str, dict[str, Any], str]] = [
    ("empty space", {"space": {}}, "space: the search space is empty"),
    ("low > high", {"space": {"optim.lr": {"type": "float", "low": 1.0e-2, "high": 1.0e-3}}},
     "space.optim.lr: low must be <= high"),
    ("log with zero", {"space": {"optim.lr": {"type": "float", "low": 0.0, "high": 1.0e-3, "log": True}}},
     "space.optim.lr: log scale needs low > 0"),
    ("int log negative", {"space": {"model.depth": {"type": "int", "low": -1, "high": 3, "log": True}}},
     "space.model.depth: log scale needs low > 0"),
    ("unknown top-level key", {"n_trails": 3}, "n_trails: unknown key; valid keys: name (required)"),
    ("unknown distribution key", {"space": {"optim.lr": {"type": "float", "low": 1, "high": 2, "lg": True}}},
     "space.optim.lr.lg: unknown key"),
    ("unknown config key in the space", {"space": {"mix.mask_raito": {"type": "float", "low": 0.3, "high": 0.7}}},
     "space.mix.mask_raito: value 0.3: mix.mask_raito: unknown key"),
    ("value out of the config's range", {"space": {"mix.mask_ratio": {"type": "float", "low": 0.3, "high": 1.3}}},
     "space.mix.mask_ratio: value 1.3:"),
    ("objective not recorded", {"objective": {"metric": "best_top7"}},
     "objective.metric: unknown metric 'best_top7'"),
    ("occlusion not recorded", {"objective": {"metric": "occ25_top1"}},
     "objective.metric: occ25_top1 is not recorded"),
    ("ema not recorded", {"objective": {"metric": "ema_top1"}}, "objective.metric: ema_top1 is only recorded"),
    ("unknown sampler", {"sampler": "bayes"}, "sampler.name: unknown sampler 'bayes'; choose one of tpe, random"),
    ("unknown pruner", {"pruner": {"name": "asha"}}, "pruner.name: unknown pruner 'asha'; choose one of median"),
    ("unknown pruner parameter", {"pruner": {"name": "median", "params": {"warmup": 2}}},
     "pruner.params: unknown parameter(s) warmup of MedianPruner"),
    ("bad pruner value", {"pruner": {"name": "median", "params": {"n_warmup_steps": -1}}},
     "pruner.params: MedianPruner refuses them"),
    ("grid needs steps", {"sampler": "grid"}, "space.optim.lr: sampler grid needs a finite set"),
    ("no n_trials", {"n_trials": None}, "n_trials: required"),
    ("unknown executor", {"executor": "kube"}, "executor: unknown executor 'kube'"),
]


@pytest.mark.parametrize(("case", "fields", "expected"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_study_fails_naming_the_field_and_writes_nothing(
    tmp_path: Path, case: str, fields: dict[str, Any], expected: str
) -> None:
    path = write_study(tmp_path, **fields)
    with pytest.raises(StudyError) as err:
        load_study(path)
    assert f"{path}: {expected}" in str(err.value), str(err.value)
    assert not (tmp_path / "runs").exists()


def test_cmaes_is_refused_clearly_without_its_package(tmp_path: Path) -> None:
    import importlib.util

    path = write_study(tmp_path, sampler={"name": "cmaes"})
    if importlib.util.find_spec("cmaes") is not None:
        assert load_study(path).spec.sampler.name == "cmaes"
        return
    with pytest.raises(StudyError, match="sampler.name: cmaes needs the `cmaes` package"):
        load_study(path)


def test_demo_study_loads_with_a_finite_space() -> None:
    study = load_study(DEMO)
    assert set(study.spec.space) == {"mix.mask_ratio", "mix.prob", "optim.lr"}
    assert grid_size(study.spec) == 18
    assert study.storage_url.endswith("runs/demo-tune/study.journal")
    assert type(make_sampler(study.spec)).__name__ == "TPESampler"
    assert type(make_pruner(study.spec)).__name__ == "MedianPruner"


def test_list_shorthand_and_range_choices_become_run_config_values(tmp_path: Path) -> None:
    space = {**SPACE, "mix.method": ["mixup", "tokenmix"], "mix.mask_ratio": [0.5, [0.3, 0.7]]}
    study = load_study(write_study(tmp_path, space=space))
    ratio = study.spec.space["mix.mask_ratio"]
    assert isinstance(ratio, CategoricalParam) and ratio.values() == [0.5, "[0.3, 0.7]"]
    config = study.trial_config({"optim.lr": 1e-3, "mix.prob": 0.5, "mix.method": "tokenmix",
                                 "mix.mask_ratio": "[0.3, 0.7]"}, number=4)
    assert config["mix"]["mask_ratio"] == [0.3, 0.7] and config["optim"]["lr"] == 1e-3
    assert config["name"] == "tiny-study-trial4"  # output-only: not part of the run id
    assert config["tracking"]["group"] == "tiny-study"
    assert config["tracking"]["tags"] == ["study:tiny-study", "trial:4"]
    assert config["run"]["output_root"] == str(tmp_path / "runs" / "tiny-study")


def test_trial_number_does_not_change_the_run_id(tmp_path: Path) -> None:
    from suite.config import run_id, validate_config

    study = load_study(write_study(tmp_path))
    params = {"optim.lr": 1e-3, "mix.prob": 0.5}
    ids = {run_id(validate_config(study.trial_config(params, number=n))) for n in (0, 7)}
    assert len(ids) == 1


def test_grid_defaults_n_trials_to_the_grid_size(tmp_path: Path) -> None:
    space = {"optim.lr": [1.0e-3, 3.0e-3], "mix.prob": {"type": "float", "low": 0.5, "high": 1.0, "step": 0.25}}
    study = load_study(write_study(tmp_path, space=space, sampler="grid", n_trials=None))
    assert study.n_trials == 6
    with pytest.raises(StudyError, match="n_trials: the grid has 6 points"):
        load_study(write_study(tmp_path, space=space, sampler="grid", n_trials=7))


def test_objective_values_from_records() -> None:
    rows = [{"epoch": 1, "top1": 20.0}, {"epoch": 2, "top1": 35.0}, {"epoch": 3, "top1": 30.0}]
    assert intermediate_value("best_top1", rows) == 35.0
    assert intermediate_value("top1", rows) == 30.0
    assert intermediate_value("top1", [{"epoch": 1}]) is None  # not evaluated that epoch
    assert objective_value("best_top1", {"best_top1": 36.0}, rows) == 36.0
    assert objective_value("best_top1", {}, rows) == 35.0


def test_grid_workers_share_one_order_so_each_point_runs_once(tmp_path: Path) -> None:
    import warnings

    import optuna

    space = {"optim.lr": [1.0e-3, 3.0e-3, 1.0e-2], "mix.prob": {"type": "float", "low": 0.5, "high": 1.0, "step": 0.5}}
    study = load_study(write_study(tmp_path, space=space, sampler="grid", n_trials=None, workers=2))
    storage = optuna.storages.InMemoryStorage()
    workers = [
        optuna.create_study(study_name="g", storage=storage, sampler=make_sampler(study.spec, worker=k),
                            load_if_exists=True, direction="maximize")
        for k in (0, 1)
    ]
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(study.n_trials):
            worker = workers[i % 2]
            trial = worker.ask()
            point = (trial.suggest_categorical("optim.lr", [1.0e-3, 3.0e-3, 1.0e-2]),
                     trial.suggest_float("mix.prob", 0.5, 1.0, step=0.5))
            seen.append(point)
            try:
                worker.tell(trial, 0.0)
            except RuntimeError as err:  # GridSampler stops the study after its last point
                assert "Study.stop" in str(err) and i == study.n_trials - 1
    assert len(set(seen)) == study.n_trials == 6
