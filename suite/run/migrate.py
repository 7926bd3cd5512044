"""Run folders made by earlier suite versions, and renaming them to today's run ids.

Run ids of version 1 hashed every resolved field, defaults included, so any new option changed
every id. Version 2 (:data:`suite.config.ID_VERSION`) hashes only non-default fields. A version-1
folder is recognised by its ``config.json`` (no ``id_version``); :func:`migrate` validates that
config with today's schema, computes the version-2 id and renames the folder, so finished runs
stay finished and interrupted ones resume from their checkpoints: nothing is silently retrained.
The W&B run of a migrated folder keeps its old id (W&B ids cannot be renamed).
"""

from __future__ import annotations

import os
from pathlib import Path

from suite.config import ID_VERSION, ConfigError, TrainConfig, run_id, stored_config, validate_config
from suite.run.records import RunPaths, atomic_write_json, read_json

__all__ = ["legacy_folders", "legacy_match", "migrate"]


def legacy_folders(output_root: Path | str) -> dict[str, Path | str]:
    """Folders under ``output_root`` written under an older id rule: current id -> folder.

    A folder whose config no longer validates maps the message (a str) under its old name.
    """
    root = Path(output_root)
    if not root.is_dir():
        return {}
    found: dict[str, Path | str] = {}
    for config_path in sorted(root.glob("*/config.json")):
        try:
            data = read_json(config_path)
        except ValueError:
            continue  # a corrupt record is reported by status/report, not a migration matter
        if not isinstance(data, dict) or data.get("id_version", 1) >= ID_VERSION:
            continue
        stored = stored_config(data)
        try:
            cfg = validate_config(stored)
        except ConfigError as err:
            found[config_path.parent.name] = f"{config_path}: does not validate with this suite version ({err})"
            continue
        found[run_id(cfg)] = config_path.parent
    return found


def legacy_match(cfg: TrainConfig) -> Path | None:
    """The old folder holding the run ``cfg`` describes, if one exists under its output root."""
    rid = run_id(cfg)
    if RunPaths.of(cfg.run.output_root, rid).root.exists():
        return None
    found = legacy_folders(cfg.run.output_root).get(rid)
    return found if isinstance(found, Path) else None


def migrate(output_root: Path | str, *, dry_run: bool = False) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Rename every old folder under ``output_root`` to its current id.

    Returns:
        ``(moves, problems)``: the ``(old, new)`` folder pairs, and one line per folder left alone.
    """
    moves: list[tuple[Path, Path]] = []
    problems: list[str] = []
    for new_id, old in legacy_folders(output_root).items():
        if isinstance(old, str):
            problems.append(old)
            continue
        target = old.parent / new_id
        if target.exists():
            problems.append(f"{old}: {target} exists already (both hold the same run); keep one and delete the other")
            continue
        moves.append((old, target))
        if dry_run:
            continue
        os.rename(old, target)
        paths = RunPaths(target)
        config = read_json(paths.config)
        atomic_write_json(paths.config, {**config, "run_id": new_id, "id_version": ID_VERSION, "legacy_id": old.name})
        summary = read_json(paths.summary) if paths.summary.is_file() else None
        if isinstance(summary, dict):
            atomic_write_json(paths.summary, {**summary, "run_id": new_id, "legacy_id": old.name})
    return moves, problems
