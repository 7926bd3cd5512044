"""A sweep's offline-maps build step: its id, and one recorded build.

A sweep can build the offline teacher maps its students read (``teacher.maps: "@maps/x.yaml"``,
see :mod:`sweeps.expand`), as it trains a teacher first for ``teacher: "@teacher.yaml"``. The
step's folder, ``<output_root>/maps-<12 hex>``, is both the maps directory the students read and
a record the sweep's state machinery understands: ``.lock`` while it builds, ``failure.json``
when the build failed, ``summary.json`` (status ``finished``) when ``maps.json`` is complete.
It holds no ``config.json``, so reports never count it as a run.

The id hashes what the maps are made of: the teacher (a suite run by its run id, any other file
by its path), its timm name, the input side of the whole images, and the fields that define the
training set, and the crop when it is not the default ``squash``. Batch size and where the step runs do not enter it. A student's run id records
the step's id (:func:`suite.config.maps_identity`), so it names the maps it learned from
wherever the sweep's output lies.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from pathlib import Path

from suite.config import DataConfig, TrainConfig, file_sha256, teacher_identity, teacher_run_folder
from suite.run.names import MAPS_META_FILE
from suite.run.clock import setup_origin
from suite.run.records import RunPaths, RunState, clear_failure, run_lock, write_failure, write_summary
from suite.run.signals import GracefulStop

__all__ = ["DATA_IDENTITY_FIELDS", "data_identity", "maps_step_id", "run_maps_step", "stale_teacher"]

STEP_ID_VERSION = 1
# The data fields that decide which images (and in which order) a maps directory covers, as
# the maps' own training-set fingerprint does (suite.teacher.offline.training_set_fingerprint).
# The built-in data is rendered at data.img_size, so for it the side is one of them; a folder's
# images are the same files at any training resolution.
DATA_IDENTITY_FIELDS = ("source", "root", "train_size", "data_seed")


def data_identity(data: DataConfig) -> dict[str, Any]:
    """The training-set-defining fields of a data config, as JSON data."""
    dumped = json.loads(data.model_dump_json())
    identity = {key: dumped[key] for key in DATA_IDENTITY_FIELDS}
    if data.source == "builtin":
        identity["img_size"] = dumped["img_size"]
    return identity


def maps_step_id(cfg: TrainConfig, img_size: int | None, crop: str = "squash") -> str:
    """``maps-<12 hex>``: the id of a build of ``cfg.teacher`` over ``cfg.data``'s training set.

    Example:
        >>> from suite.config import load_config
        >>> a = load_config(None, ["mix.method=tokenmix", "teacher=runs/none-0123456789ab"])
        >>> maps_step_id(a, 64) == maps_step_id(a, 64) != maps_step_id(a, 96)
        True
        >>> maps_step_id(a, 64) != maps_step_id(a, 64, "center")
        True
    """
    if cfg.teacher.checkpoint is None:
        raise ValueError("teacher.checkpoint: a maps build step needs a teacher")
    blob = {
        "version": STEP_ID_VERSION,
        "teacher": teacher_identity(cfg.teacher.checkpoint),
        "teacher_model": cfg.teacher.model,
        "teacher_kwargs": cfg.teacher.kwargs,
        "img_size": int(img_size or cfg.data.img_size),
        "data": data_identity(cfg.data),
    }
    if crop != "squash":  # squash steps keep the ids they had before crop existed
        blob["crop"] = crop
    text = json.dumps(blob, sort_keys=True, separators=(",", ":"), default=str)
    return f"maps-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def stale_teacher(summary: dict[str, Any]) -> str | None:
    """Why a finished step's maps no longer match its teacher file, or None.

    A teacher that is a suite run is named by its run id in the step id, so its maps cannot go
    stale. A teacher *file* is named by its path; its content is pinned by the SHA-256 the build
    recorded, compared here with the file as it is now (when this machine has it).
    """
    teacher = summary.get("teacher") or {}
    path, recorded = teacher.get("checkpoint"), teacher.get("sha256")
    if not path or not recorded or teacher_run_folder(path) is not None or not Path(path).is_file():
        return None
    now = file_sha256(path)
    if now == recorded:
        return None
    return f"the teacher file {path} changed since the maps were built (sha256 {recorded[:12]} then, {now[:12]} now)"


def run_maps_step(
    cfg: TrainConfig,
    paths: RunPaths,
    *,
    img_size: int | None,
    batch_size: int,
    crop: str = "squash",
    progress: Callable[[int, int], None] | None = None,
    stop: GracefulStop | None = None,
) -> dict[str, Any]:
    """Build the step's maps into ``paths.root`` under the run lock, recording the outcome.

    Idempotent: a finished step returns its summary without touching the teacher. The build
    writes its maps in durable chunks (:func:`suite.teacher.maps_build.build_offline_maps`): the next
    attempt, after a failure, a kill or a requeue, continues at the first unfinished chunk. A
    failure is written to ``failure.json`` (state ``failed``) and raised. A stop signal (``stop``,
    the job's; else the build's own for SIGTERM, SIGUSR1 and SIGINT) ends the build at the next
    chunk boundary with :class:`~suite.teacher.maps_build.MapsBuildStopped`, raised without a failure
    record: the step stays unfinished, ready to continue.

    Raises:
        RunBusyError: another process builds this step right now.
        MapsBuildStopped: a stop signal ended the build early.
    """
    from suite.device.hardware import configure_threads
    from suite.teacher.maps_build import MapsBuildStopped, build_offline_maps
    from suite.run.records import read_summary

    origin = setup_origin()
    configure_threads(cfg.run.threads)  # the job's CPU share, as a training run uses it

    with run_lock(paths):
        done = read_summary(paths)
        if done is not None and (paths.root / MAPS_META_FILE).is_file() and stale_teacher(done) is None:
            return done
        paths.summary.unlink(missing_ok=True)  # building again: not finished until the new summary
        clear_failure(paths)
        start = time.time()
        setup = start - origin  # imports and start-up before the build (its data and teacher load count as the build)
        try:
            meta = build_offline_maps(
                cfg, paths.root, img_size=img_size, batch_size=batch_size, crop=crop, progress=progress, stop=stop
            )
        except MapsBuildStopped:  # a stop is no failure: the next launch continues the build
            raise
        except Exception as err:  # not KeyboardInterrupt (Ctrl-C twice): that leaves the step unfinished
            write_failure(paths, err)
            raise
        summary = {
            "status": RunState.FINISHED.value,
            "kind": "maps",
            "run_id": paths.root.name,
            "count": meta["count"],
            "map_size": meta["map_size"],
            "img_size": meta["img_size"],
            "crop": meta["crop"],
            "teacher": meta["teacher"],
            "wall_seconds": round(time.time() - start, 3),
            "setup_seconds": round(setup, 3),
            "gpu_hours": round((time.time() - start) / 3600, 6) if _on_gpu() else 0.0,
        }
        write_summary(paths, summary)
        return summary


def _on_gpu() -> bool:
    """Whether the build ran on a GPU (one device: the step is one process)."""
    import torch

    return torch.cuda.is_available()
