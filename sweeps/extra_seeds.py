"""Seeds a sweep's rows got beyond its ``seeds:`` list (``suite sweep launch --until-ci``).

Adaptive seeding gives more seeds only to the rows whose interval is still wide. What it decided
is part of the sweep's state, kept in ``<output_root>/extra-seeds.json`` beside
``sweep-state.json``, so that every command that expands the sweep (plan, launch, status,
report) sees the same runs: :func:`sweeps.expand.expand` adds, for each row named here, the runs
of its extra seeds. A row is named by its values without the seed (the include entry's keys or
the axis values), as JSON; rows the sweep file no longer has are ignored.

The file also says why each row has the seeds it has (its last interval half-width, the target,
the cap), for ``sweep status`` and the report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from suite.run.records import atomic_write_json

__all__ = ["EXTRA_SEEDS_FILE", "ExtraSeeds", "row_key"]

EXTRA_SEEDS_FILE = "extra-seeds.json"
VERSION = 1


def row_key(values: dict[str, Any]) -> str:
    """A row's name in the file: its values without the seed, as sorted JSON."""
    return json.dumps({k: v for k, v in values.items() if k != "run.seed"}, sort_keys=True, default=str)


class ExtraSeeds:
    """The extra seeds of a sweep's rows and why, read from and written to its output root."""

    def __init__(self, output_root: Path, rows: dict[str, dict[str, Any]] | None = None,
                 target: dict[str, Any] | None = None) -> None:
        self.path = Path(output_root) / EXTRA_SEEDS_FILE
        self.rows: dict[str, dict[str, Any]] = rows or {}
        self.target: dict[str, Any] = target or {}

    @classmethod
    def read(cls, output_root: Path) -> ExtraSeeds:
        """The recorded decisions (none when the file is missing).

        Raises:
            ValueError: the file exists but cannot be read; the message names it.
        """
        path = Path(output_root) / EXTRA_SEEDS_FILE
        if not path.is_file():
            return cls(output_root)
        try:
            data = json.loads(path.read_text())
            if data.get("version") != VERSION or not isinstance(data.get("rows"), dict):
                raise ValueError(f"version {data.get('version')!r}, expected {VERSION}")
        except (ValueError, OSError, AttributeError) as err:
            raise ValueError(
                f"{path}: unreadable ({err}); delete it to drop the extra seeds (their finished runs stay on disk)"
            ) from None
        return cls(output_root, data["rows"], data.get("target") or {})

    def seeds(self, values: dict[str, Any]) -> list[int]:
        """The extra seeds of the row with these values (empty when it has none)."""
        entry = self.rows.get(row_key(values))
        return [int(s) for s in entry.get("seeds", [])] if entry else []

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, {"version": VERSION, "target": self.target, "rows": self.rows})
