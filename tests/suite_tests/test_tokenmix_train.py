"""TokenMix end to end: a teacher trained by the suite labels a student's mixed batches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from suite.config import ConfigError, load_config
from suite.run.records import read_run
from suite.run.records import RunState
from suite.train.trainer import train


@pytest.mark.parametrize("per_sample", [False, True])
def test_tokenmix_with_suite_teacher_reports_clean_and_occlusion_top1(
    tiny_overrides: list[str], teacher_run: Path, per_sample: bool
) -> None:
    overrides = [o for o in tiny_overrides if not o.startswith("eval.occlusion")]
    cfg = load_config(
        None,
        [*overrides, "mix.method=tokenmix", f"teacher={teacher_run}", f"mix.per_sample={per_sample}",
         "mix.mixup_alpha=0", "eval.occlusion=[0.25,0.5,0.75]"],
    )
    assert cfg.mix.target == "teacher_raw" and cfg.teacher.checkpoint == teacher_run
    result = train(cfg)
    assert result.state is RunState.FINISHED
    summary = result.summary
    for key in ("top1", "occ25_top1", "occ50_top1", "occ75_top1"):
        assert 0.0 <= summary[key] <= 100.0
    assert "tokenmix_fallbacks" in summary
    rows = read_run(result.run_dir).metrics
    assert all("tokenmix_fallbacks" in r for r in rows)


def test_teacher_from_plain_weights_file_needs_its_model_name(
    tiny_overrides: list[str], teacher_run: Path, tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    state = torch.load(teacher_run / "checkpoint.pt", weights_only=True)["model"]
    weights = tmp_path / "teacher.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    cfg = load_config(
        None, [*tiny_overrides, "mix.method=tokenmix", f"teacher.checkpoint={weights}", "teacher.model=cnn_micro",
               "mix.target=teacher_norm", "schedule.epochs=1"],
    )
    assert train(cfg).state is RunState.FINISHED
    bad = load_config(None, [*tiny_overrides, "mix.method=tokenmix", f"teacher.checkpoint={weights}"])
    with pytest.raises(ValueError, match="teacher.model"):
        train(bad)


def test_teacher_without_tokenmix_is_rejected(teacher_run: Path) -> None:
    with pytest.raises(ConfigError, match="teacher is only used by mix.method=tokenmix"):
        load_config(None, ["mix.method=cutmix", f"teacher={teacher_run}"])


def test_a_replaced_teacher_file_never_reuses_the_old_student(teacher_run: Path, tiny_overrides: list[str]) -> None:
    """Defect 1: after the teacher file was replaced at the same path, the same command printed the
    old student's summary (and a resume continued against the new teacher) without a word."""
    import shutil

    teacher = teacher_run.parent / "teacher.pt"
    shutil.copyfile(teacher_run / "checkpoint.pt", teacher)
    cfg = load_config(None, [*tiny_overrides, "schedule.epochs=1", "eval.occlusion=[]", "mix.method=tokenmix",
                             f"teacher={teacher}"])
    result = train(cfg)
    assert result.state is RunState.FINISHED
    assert read_run(result.run_dir).config["teacher_sha256"]
    with open(teacher, "ab") as handle:  # another teacher at the same path
        handle.write(b"\0")
    with pytest.raises(ConfigError, match="changed since run .* started"):
        train(cfg)
