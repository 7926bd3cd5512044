"""Checks that need this machine: files exist, timm knows the model.

The config schema (:mod:`suite.config`) holds only types, ranges, choices and cross-field rules,
so a config validates the same way on a laptop and on the cluster. What depends on the machine
is checked here, in one function that ``suite train``, ``suite sweep launch`` and the job
worker call where the run will execute (``suite sweep plan`` shows path problems as warnings:
planning works without the dataset).
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from suite.config import ConfigError, TrainConfig, teacher_run_folder
from suite.models.weights import resolve_checkpoint_path
from suite.run.names import MAPS_META_FILE

__all__ = ["Problem", "check_machine", "machine_problems", "resolve_checkpoint_path"]


@dataclass(frozen=True)
class Problem:
    """One thing this machine lacks for a run: a missing path, an unknown timm model, or a teacher
    that cannot be used (unfinished run, a file that does not fit)."""

    field: str
    message: str
    kind: Literal["path", "registry", "teacher"]

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def _unfinished_teacher(teacher: Path) -> str | None:
    """Why a teacher that is a suite run folder cannot be used yet (None: it finished)."""
    from suite.run.records import RunState, read_run

    path = Path(teacher).expanduser()
    folder = teacher_run_folder(path)
    if folder is None and path.is_symlink():  # a link to a run folder or its checkpoint is that run
        folder = teacher_run_folder(path.resolve())
    if folder is None:
        return None
    record = read_run(folder)
    if record.state is RunState.FINISHED:
        return None
    if record.state is RunState.CORRUPT:
        return f"teacher run {folder.name} has an unreadable record: {record.problem}"
    return (
        f"teacher run {folder} is {record.state.value}, not finished (no summary.json): a student of it would "
        "learn from a half-trained teacher; finish the teacher first (rerunning its `suite train` command "
        "resumes it; a sweep's @teacher.yaml prerequisite waits for it)"
    )


_FIT_CACHE: dict[tuple[Any, ...], str | None] = {}


def _dataset_classes(cfg: TrainConfig) -> int | None:
    """Class count of the configured data, read cheaply (None when the data is not here)."""
    if cfg.data.source == "builtin":
        from suite.data.builtin import BUILTIN_CLASSES

        return len(BUILTIN_CLASSES)
    train = Path(cfg.data.root or "") / "train"
    return sum(1 for d in train.iterdir() if d.is_dir()) if train.is_dir() else None


def _teacher_misfit(cfg: TrainConfig) -> str | None:
    """Why the teacher file cannot be this run's teacher: unreadable, another architecture, or
    another class count (None: it loads). Checked before submission, not on the node."""
    from suite.config import file_sha256
    from suite.models.weights import WeightsError, read_weights

    path = resolve_checkpoint_path(Path(cfg.teacher.checkpoint))
    classes = _dataset_classes(cfg)
    try:
        key = (file_sha256(path), classes, cfg.teacher.model, repr(cfg.teacher.kwargs), cfg.data.img_size)
    except OSError as err:
        return f"cannot read {path} ({err.strerror or err})"
    if key in _FIT_CACHE:
        return _FIT_CACHE[key]
    message = None
    try:
        read_weights(path)
        if classes is not None:
            import torch

            from suite.teacher.online import load_teacher

            load_teacher(cfg, num_classes=classes, device=torch.device("cpu"))
    except WeightsError as err:
        message = f"{err}; give a suite run folder, or a torch/safetensors state dict with teacher.model"
    except (ValueError, RuntimeError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        message = (f"{path} does not fit the teacher architecture with this data's {classes} classes "
                   f"({first[:300]})")
    _FIT_CACHE[key] = message
    return message


@functools.lru_cache(maxsize=256)
def _unknown_model(name: str) -> str | None:
    from suite.models.known import is_known_model

    if is_known_model(name):  # a cached list: no timm (and torch) import for a known name
        return None
    import timm

    import suite.models.factory  # noqa: F401 - registers the suite's small models with timm

    if timm.is_model(name):
        return None
    close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
    hint = f"; similar: {', '.join(close)}" if close else ""
    return f"unknown timm model {name!r}{hint}"


def machine_problems(cfg: TrainConfig, *, produced: Collection[str] = ()) -> list[Problem]:
    """Everything this machine lacks for ``cfg``.

    Args:
        cfg: a validated run config.
        produced: absolute paths that a run trained first will create (a sweep's ``@teacher.yaml``
            prerequisites); they may be missing.
    """
    problems: list[Problem] = []

    def missing(path: Path) -> bool:
        return str(Path(path).expanduser().absolute()) not in produced

    for field, name in (("model.name", cfg.model.name), ("teacher.model", cfg.teacher.model)):
        if name is not None and (message := _unknown_model(name)):
            problems.append(Problem(field, message, "registry"))
    if cfg.model.checkpoint is not None and not cfg.model.checkpoint.is_file() and missing(cfg.model.checkpoint):
        problems.append(Problem("model.checkpoint", f"file not found: {cfg.model.checkpoint}", "path"))
    teacher = cfg.teacher.checkpoint
    if teacher is not None:
        if (teacher / MAPS_META_FILE).is_file():
            problems.append(Problem(
                "teacher.checkpoint",
                f"{teacher} is an offline maps directory; use teacher.maps={teacher} (or teacher=maps:{teacher})",
                "path",
            ))
        elif not resolve_checkpoint_path(teacher).is_file() and missing(teacher):
            problems.append(Problem(
                "teacher.checkpoint", f"file not found: {teacher} (a checkpoint file or a suite run folder)", "path"
            ))
        elif missing(teacher) and (message := _unfinished_teacher(teacher) or _teacher_misfit(cfg)):
            problems.append(Problem("teacher.checkpoint", message, "teacher"))
    maps = cfg.teacher.maps
    if maps is not None and not (maps / MAPS_META_FILE).is_file() and missing(maps):
        problems.append(Problem(
            "teacher.maps", f"{maps} is not a complete offline maps directory (no maps.json); run `suite maps build`",
            "path",
        ))
    if cfg.data.source == "folder" and cfg.data.root is not None:
        if not Path(cfg.data.root).is_dir():
            problems.append(Problem("data.root", f"{cfg.data.root} does not exist", "path"))
        for split in ("train", "val") if Path(cfg.data.root).is_dir() else ():
            if not (Path(cfg.data.root) / split).is_dir():
                problems.append(Problem(
                    "data.root", f"{cfg.data.root} has no {split}/ folder (ImageNet layout expected)", "path"
                ))
                break
    return problems


def check_machine(cfg: TrainConfig, *, produced: Collection[str] = (), prefix: str = "") -> None:
    """Raise :class:`~suite.config.ConfigError` listing every problem of :func:`machine_problems`."""
    problems = machine_problems(cfg, produced=produced)
    if problems:
        raise ConfigError("\n".join(f"{prefix}{p}" for p in problems))
