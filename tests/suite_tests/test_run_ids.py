"""Run ids: pinned by a golden file, unchanged by new defaulted options, the same on every machine."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from pydantic import Field, create_model

from suite.config import MixConfig, TrainConfig, load_config, run_id
from sweeps.expand import expand
from sweeps.spec import load_sweep

GOLDEN = Path(__file__).parent / "golden" / "run_ids.json"
REPO = Path(__file__).resolve().parents[2]

# Fixed configs whose ids must never change between suite versions (update the golden file only
# with a deliberate change of the id rule: SUITE_UPDATE_GOLDEN=1 pytest tests/suite_tests/test_run_ids.py).
CONFIGS: dict[str, list[str]] = {
    "defaults": [],
    "tokenmix-area": ["mix.method=tokenmix"],
    "tokenmix-teacher": ["mix.method=tokenmix", "teacher=runs/teacher", "mix.mask_ratio=[0.3,0.7]"],
    "tokenmix-maps": ["mix.method=tokenmix", "teacher=maps:maps/r50"],
    "cutmix-seed1": ["mix.method=cutmix", "run.seed=1", "schedule.epochs=30", "optim.lr=5e-4"],
    "deit-folder": ["model.name=deit_tiny_patch16_224", "data=/datasets/imagenet", "data.img_size=224"],
}


def _current() -> dict[str, str]:
    ids = {name: run_id(load_config(None, overrides)) for name, overrides in CONFIGS.items()}
    for path in sorted((REPO / "sweeps" / "demo").glob("*.yaml")):
        if "space" in yaml.safe_load(path.read_text()):
            continue  # an Optuna study file, not a sweep
        plan = expand(load_sweep(path, output_root=Path("runs") / "golden"), check_paths=False)
        ids[f"sweeps/demo/{path.name}"] = ",".join(run.run_id for run in plan.all_runs())
    return ids


def test_run_ids_match_the_golden_file() -> None:
    current = _current()
    if os.environ.get("SUITE_UPDATE_GOLDEN") == "1":  # a rewrite checks nothing: it never passes
        GOLDEN.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
        pytest.skip(f"SUITE_UPDATE_GOLDEN=1: {GOLDEN} rewritten with the current ids, nothing compared; "
                    "review its diff, then rerun without SUITE_UPDATE_GOLDEN")
    golden = json.loads(GOLDEN.read_text())
    assert current == golden


def test_a_new_option_with_a_default_keeps_every_id() -> None:
    """A later suite version adds ``mix.new_knob`` with a default: no existing run id moves."""
    NewMix = create_model("NewMix", __base__=MixConfig, new_knob=(float, Field(0.25, ge=0.0)))
    NewTrain = create_model("NewTrain", __base__=TrainConfig, mix=(NewMix, Field(default_factory=NewMix)))
    for overrides in CONFIGS.values():
        old = load_config(None, overrides)
        new = NewTrain.model_validate(json.loads(old.model_dump_json()))
        assert new.mix.new_knob == 0.25
        assert run_id(new) == run_id(old)
    changed = NewTrain.model_validate({"mix": {"method": "cutmix", "new_knob": 0.5}})
    assert run_id(changed) != run_id(load_config(None, ["mix.method=cutmix"]))


def test_spelling_out_a_default_or_an_output_field_keeps_the_id(tmp_path: Path) -> None:
    base = run_id(load_config(None, ["mix.method=cutmix"]))
    assert run_id(load_config(None, ["mix.method=cutmix", "optim.lr=0.001", "mix.prob=1.0"])) == base
    assert run_id(load_config(None, ["mix.method=cutmix", f"run.output_root={tmp_path}", "run.threads=3",
                                     "tracking.mode=disabled", "name=x", "run.log_every=7"])) == base
    assert run_id(load_config(None, ["mix.method=cutmix", "optim.lr=0.002"])) != base


def test_teacher_shorthand_reads_the_spelling_not_the_disk(tmp_path: Path) -> None:
    """A maps folder on this machine must not turn teacher=<dir> into offline maps (the cluster may lack it)."""
    maps = tmp_path / "maps"
    maps.mkdir()
    before = load_config(None, ["mix.method=tokenmix", f"teacher={maps}"])
    (maps / "maps.json").write_text("{}")
    after = load_config(None, ["mix.method=tokenmix", f"teacher={maps}"])
    assert after.teacher.checkpoint == before.teacher.checkpoint == maps and after.teacher.maps is None
    explicit = load_config(None, ["mix.method=tokenmix", f"teacher=maps:{maps}"])
    assert explicit.teacher.maps == maps and explicit.teacher.checkpoint is None


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_ids_are_method_prefixed_hex(name: str) -> None:
    rid = run_id(load_config(None, CONFIGS[name]))
    method, digest = rid.split("-")
    assert method == load_config(None, CONFIGS[name]).mix.method and len(digest) == 12


def test_a_teacher_run_is_identified_by_its_run_id_not_its_folder(tmp_path: Path) -> None:
    """Defect 1: the student's id hashed the teacher's path; a run folder now counts by its run id."""
    def student(teacher: str | Path) -> str:
        return run_id(load_config(None, ["mix.method=tokenmix", f"teacher={teacher}"]))

    assert student("runs/none-0123456789ab") == student(tmp_path / "elsewhere" / "none-0123456789ab")
    assert student("runs/none-0123456789ab") == student("runs/none-0123456789ab/checkpoint.pt")
    assert student("runs/none-0123456789ab") != student("runs/none-ba9876543210")
    assert student("runs/teacher") != student("other/teacher")  # any other file: by its path (content: see trainer)
