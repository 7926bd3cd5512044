"""Which run a config is: the run id, and the identity of the files it names.

The run id (:func:`run_id`) is a hash of the resolved fields that differ from their defaults,
minus the fields that only say where or how to run (output root, device, threads, workers,
tracking), so the same experiment always lands in the same run directory and the same W&B run,
and a new option with a default leaves every existing id unchanged. A teacher checkpoint counts
by what it is (a suite run by its run id, a file by its path), not by where it lies.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from suite.config.schema import TrainConfig
from suite.run.names import CHECKPOINT_FILE

__all__ = [
    "ID_VERSION", "MAPS_STEP_PATTERN", "OUTPUT_ONLY_FIELDS", "RUN_ID_PATTERN", "file_sha256", "identity_fields",
    "maps_identity", "run_id", "teacher_identity", "teacher_run_folder",
]

# Fields that change where/how a run executes, not what it computes.
OUTPUT_ONLY_FIELDS: tuple[str, ...] = (
    "name",
    "run.output_root",
    "run.device",
    "run.threads",
    "data.workers",
    "eval.batch_size",
    "run.log_every",
    "run.checkpoint_every",
    "run.compile",
    "run.keep_checkpoints",
    "optim.accum_steps",
    "tracking",
)


RUN_ID_PATTERN = re.compile(r"^[a-z]+-[0-9a-f]{12}$")  # <method>-<12 hex>
MAPS_STEP_PATTERN = re.compile(r"^maps-[0-9a-f]{12}$")  # a sweep's maps build step (suite.teacher.maps_step)
_SHA_CACHE: dict[tuple[str, int, int, int], str] = {}


def teacher_run_folder(path: Path | str) -> Path | None:
    """The suite run folder a teacher path names (``<root>/<run_id>`` or its ``checkpoint.pt``), else None.

    Read from the spelling alone, so every machine agrees.
    """
    path = Path(path)
    if path.name == CHECKPOINT_FILE and _is_run_name(path.parent.name):
        return path.parent
    if _is_run_name(path.name):
        return path
    return None


def _is_run_name(name: str) -> bool:
    return bool(RUN_ID_PATTERN.match(name)) and not MAPS_STEP_PATTERN.match(name)


def file_sha256(path: Path | str) -> str:
    """SHA-256 of a file's content (cached per path, inode, size and modification time)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.absolute()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


def teacher_identity(path: Path | str) -> str:
    """What the run id records of a teacher: ``run:<run_id>`` for a suite run folder (or its
    ``checkpoint.pt``), else the path as given.

    Read from the spelling alone, so a laptop and a cluster node agree. A run folder's id names
    what that run computed, wherever the folder lies. Any other file is named by its path, and
    its content is pinned another way: the trainer records the file's SHA-256 in ``config.json``
    when the run starts and refuses to resume, or to report a finished student, against a file
    whose content changed (see ``suite.train.trainer.Trainer``).
    """
    folder = teacher_run_folder(path)
    return f"run:{folder.name}" if folder is not None else str(path)


def maps_identity(path: Path | str) -> str:
    """What the run id records of offline maps: ``step:<id>`` for a sweep's maps build step folder
    (``<output_root>/maps-<12 hex>``, whose id hashes what the maps were built from), else the path.

    Read from the spelling alone, like :func:`teacher_identity`.
    """
    name = Path(path).name
    return f"step:{name}" if MAPS_STEP_PATTERN.match(name) else str(path)


# Version of the run-id rule. 1: hash of every resolved field (ids changed whenever an option was
# added); 2: hash of the non-default resolved fields. Run folders record it in config.json.
ID_VERSION = 2


@functools.cache
def _output_only(dotted: str) -> bool:
    return any(dotted == f or dotted.startswith(f"{f}.") for f in OUTPUT_ONLY_FIELDS)


@functools.cache
def _default_leaves(cls: type[BaseModel]) -> dict[str, Any]:
    """The schema defaults as dotted leaves, built once per class (shared: never modify it)."""
    return _leaves(json.loads(cls().model_dump_json()))


def _leaves(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections flattened to dotted leaves; dict-valued options (kwargs) stay one leaf."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if not prefix and isinstance(value, dict):  # a section: model, data, mix, ...
            flat.update(_leaves(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def run_id(cfg: TrainConfig) -> str:
    """Stable id of a run: ``<method>-<12 hex of sha256(version, non-default fields)>``.

    Example:
        >>> from suite.config import TrainConfig, load_config
        >>> run_id(TrainConfig()) == run_id(load_config(None, ["optim.lr=0.001"]))  # a default spelled out
        True
    """
    blob = json.dumps({"id_version": ID_VERSION, "fields": identity_fields(cfg)}, sort_keys=True, separators=(",", ":"))
    return f"{cfg.mix.method}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def identity_fields(cfg: TrainConfig) -> dict[str, Any]:
    """What the run id hashes: the dotted fields whose resolved value differs from its default.

    Output-only fields (where and how a run executes) are left out. Options added later with
    a default are equal to it in every existing config, so they never enter an old run's
    identity, and upgrading the suite keeps every run id.
    """
    defaults = _default_leaves(type(cfg))
    values = _leaves(json.loads(cfg.model_dump_json()))  # inf/nan as null, as ids always read them
    if cfg.teacher.checkpoint is not None:  # what the teacher is, not where it lies
        values["teacher.checkpoint"] = teacher_identity(cfg.teacher.checkpoint)
    if cfg.teacher.maps is not None:
        values["teacher.maps"] = maps_identity(cfg.teacher.maps)
    return {
        key: value
        for key, value in sorted(values.items())
        if not _output_only(key) and (key not in defaults or defaults[key] != value)
    }
