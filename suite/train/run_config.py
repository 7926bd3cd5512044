"""``config.json`` of a training run: the resolved config, what the run is and how it is computed,
and the teacher file it was trained against, pinned by content."""

from __future__ import annotations

from typing import Any

from suite.config import ID_VERSION, ConfigError, TrainConfig, file_sha256, teacher_identity
from suite.run.records import RunPaths, read_json

__all__ = ["config_record", "teacher_record"]


def config_record(
    cfg: TrainConfig, *, run_id: str, processes: int, resolved: dict[str, Any], teacher: dict[str, Any]
) -> dict[str, Any]:
    """``config.json``: ``resolved`` (the validated config as JSON), the run id, the effective batch and LR."""
    batch = cfg.data.batch_size  # global, whatever the process count
    effective = {"global_batch": batch, "lr": cfg.optim.effective_lr(batch), "processes": processes}
    return {**resolved, "run_id": run_id, "id_version": ID_VERSION, "effective": effective, **teacher}


def teacher_record(cfg: TrainConfig, paths: RunPaths, run_id: str, *, required: bool = True) -> dict[str, Any]:
    """What the teacher is (``teacher_identity``, ``teacher_sha256``), recorded in config.json once.

    The run id names a teacher file by its path (a suite run folder by its run id), so the file's
    content is pinned here: a run refuses to resume, and a finished run refuses to be reported
    again, against a teacher whose content changed since the run started. The student would
    otherwise continue against, or pass off as trained with, another teacher. ``required=False``
    skips the check when the file is not on this machine.

    Raises:
        ConfigError: the teacher file's content changed since the run started.
    """
    if cfg.teacher.checkpoint is None:
        return {}
    from suite.models.weights import resolve_checkpoint_path

    file = resolve_checkpoint_path(cfg.teacher.checkpoint)
    if not required and not file.is_file():
        return {}
    record = {"teacher_identity": teacher_identity(cfg.teacher.checkpoint), "teacher_sha256": file_sha256(file)}
    try:
        saved = read_json(paths.config)
    except (ValueError, UnicodeDecodeError):
        saved = None
    earlier = saved.get("teacher_sha256") if isinstance(saved, dict) else None
    if earlier is not None and earlier != record["teacher_sha256"]:
        raise ConfigError(
            f"teacher.checkpoint: {file} changed since run {run_id} started (sha256 {earlier[:12]} then, "
            f"{record['teacher_sha256'][:12]} now); its records belong to the old teacher. Restore the teacher "
            f"file, or delete {paths.root} to train the student against the new one"
        )
    return record
