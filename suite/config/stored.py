"""``config.json`` as a record: the run config plus what the run is and how it ran."""

from __future__ import annotations

from typing import Any

__all__ = ["RECORD_KEYS", "stored_config"]

RECORD_KEYS: tuple[str, ...] = ("run_id", "id_version", "legacy_id", "teacher_identity", "teacher_sha256", "effective")


def stored_config(record: dict[str, Any]) -> dict[str, Any]:
    """The run config inside a ``config.json`` record (its record-only keys dropped)."""
    return {k: v for k, v in record.items() if k not in RECORD_KEYS}
