"""Reading run directories for reports: tolerant, fast, cached.

A run's record and state come from :func:`suite.run.records.read_run`, the rule every command
shares: a report never works a state out on its own. A report adds the per-epoch curves (read
straight into arrays) and keeps both as a :class:`RunData`; it never fails because of a record:
an unreadable one gives its run state ``corrupt`` and a ``problem`` naming the file and the fix,
and a planned run without a directory has state ``missing``. Every other run is unaffected. The
words shown for a run's problem are made when a row is printed (:func:`problem_text`).

The records of an output root are cached in ``<output_root>/.report-cache.pkl``, keyed by each
run's :func:`~suite.run.records.record_signature` (path, size and modification time of its record
files): a second report re-reads only runs whose files changed. The rows assembled for each sweep
are kept in ``.report-rows.pkl`` under the signatures of all its runs, so an unchanged sweep costs
one ``stat`` per record file. A ``running`` run is never cached (its lock's release leaves no trace
in the files). The caches are pickles (pandas' parquet needs pyarrow, which the suite does not
require); a cache that cannot be read, or that someone else could have written, is ignored and
rewritten.
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from suite.run.names import CURVE_KEYS
from suite.run.records import (
    RunPaths, RunRecord, RunState, Signature, atomic_write_bytes, read_run, record_signature,
)

__all__ = [
    "CACHE_NAME", "ROWS_NAME", "Curves", "RecordCache", "RunData", "flatten", "problem_text", "read_curves",
    "read_report_run", "trusted",
]

CACHE_NAME = ".report-cache.pkl"
ROWS_NAME = ".report-rows.pkl"
CACHE_VERSION = 4

Curves = dict[str, np.ndarray]
_NOT_CACHED = (RunState.MISSING, RunState.CORRUPT, RunState.RUNNING)


@dataclass
class RunData:
    """What a report keeps of one run.

    Attributes:
        record: the run's record (:func:`suite.run.records.read_run`, without its metrics rows:
            the curves hold what a report needs of them).
        curves: epoch-indexed arrays (``epoch`` plus those of
            :data:`~suite.run.names.CURVE_KEYS` present); None when ``metrics.jsonl`` was not
            read (no curve plot needed it).
        curves_problem: why ``metrics.jsonl`` could not be read, if it could not.
    """

    record: RunRecord
    curves: Curves | None = field(default_factory=dict)
    curves_problem: str | None = None


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to ``{"a.b": scalar}``; lists and other values become JSON text.

    Example:
        >>> flatten({"mix": {"method": "tokenmix", "mask_ratio": [0.3, 0.7]}, "seed": 1})
        {'mix.method': 'tokenmix', 'mix.mask_ratio': '[0.3, 0.7]', 'seed': 1}
    """
    flat: dict[str, Any] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            dotted = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict):
                flat.update(flatten(value, dotted))
            else:
                flat[dotted] = _scalar(value)
    return flat


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, default=str)


def problem_text(run: RunData) -> str | None:
    """The one line a report shows for a run: what is wrong, with the file and the fix (None: nothing)."""
    record = run.record
    if record.state is RunState.MISSING and record.problem is None:
        return f"{record.paths.root}: no run directory; the run was never started (launch the sweep)"
    if record.state is RunState.FAILED and record.failure is not None:
        error, message = record.failure.get("error", "error"), str(record.failure.get("message", ""))
        return f"{record.paths.failure}: {error}: {message[:120]}"
    return "; ".join(p for p in (record.problem, run.curves_problem) if p) or None


def read_curves(path: Path) -> tuple[Curves, str | None]:
    """The curves of a ``metrics.jsonl`` and the problem, if a line other than a torn last one is bad."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}, None
    except OSError as err:
        return {}, f"{path}: unreadable ({err})"
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return {}, None
    try:
        rows = json.loads("[" + ",".join(lines) + "]")
    except ValueError:
        rows = []
        for i, line in enumerate(lines):
            try:
                rows.append(json.loads(line))
            except ValueError:
                if i != len(lines) - 1:  # a torn last line is tolerated, anything else is reported
                    return {}, f"{path}:{i + 1}: malformed JSON line; the curves of this run are left out"
    rows = [row for row in rows if isinstance(row, dict) and "epoch" in row]
    if not rows:
        return {}, None
    curves = {"epoch": np.array([row["epoch"] for row in rows], dtype=np.float32)}
    for key in CURVE_KEYS:
        if key in rows[0] or key in rows[-1]:
            try:
                curves[key] = np.array([row.get(key, np.nan) for row in rows], dtype=np.float32)
            except (TypeError, ValueError):  # a null or text value somewhere: slow path
                curves[key] = np.array([_number(row.get(key)) for row in rows], dtype=np.float32)
    return curves, None


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else np.nan


def read_report_run(root: Path, *, curves: bool = True) -> RunData:
    """One run directory as a report reads it (never raises for bad records).

    Args:
        root: the run directory ``<output_root>/<run_id>``.
        curves: read ``metrics.jsonl`` too (the per-epoch curves), unless the run is missing or
            corrupt.
    """
    record = read_run(root, metrics=False)
    if not curves:
        return RunData(record, None)
    if record.state in (RunState.MISSING, RunState.CORRUPT):
        return RunData(record)
    return RunData(record, *read_curves(record.paths.metrics))


def trusted(fd: int) -> bool:
    """Whether a cache file may be unpickled: written by this user and writable by no one else.

    Unpickling runs code, so a cache in a shared output root that another user could have written
    is ignored (and rebuilt) rather than loaded.
    """
    st = os.fstat(fd)
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


class RecordCache:
    """The runs of one output root as a report reads them, re-read only when their files change.

    Args:
        output_root: the folder holding the run directories.
        enabled: ``False`` reads everything and writes no cache file.

    Example:
        >>> cache = RecordCache(Path("runs/demo-mask-ratio"))  # doctest: +SKIP
        >>> cache.get("tokenmix-0123456789ab").record.state  # doctest: +SKIP
        <RunState.FINISHED: 'finished'>
        >>> cache.save()  # doctest: +SKIP
    """

    def __init__(self, output_root: Path, *, enabled: bool = True) -> None:
        self.root = Path(output_root)
        self.path = self.root / CACHE_NAME
        self.rows_path = self.root / ROWS_NAME
        self._base = os.fspath(self.root) + os.sep
        self.enabled = enabled
        self.hits = 0
        self.misses = 0
        self._entries: dict[str, tuple[Signature, RunData]] | None = None if enabled else {}
        self._tables: dict[str, tuple[Any, Any]] = (self._read(self.rows_path) or {}) if enabled else {}
        self._dirty = False
        self._tables_dirty = False

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            with open(path, "rb") as handle:
                if not trusted(handle.fileno()):
                    return None
                data = pickle.load(handle)
        except FileNotFoundError:
            return None
        except Exception:  # noqa: BLE001 - a stale or torn cache is rebuilt, never trusted
            return None
        if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
            return None
        return data["data"]

    @property
    def entries(self) -> dict[str, tuple[Signature, RunData]]:
        """The per-run entries, read from the cache file on first use."""
        if self._entries is None:
            self._entries = self._read(self.path) or {}
        return self._entries

    def signature(self, run_id: str) -> Signature:
        """What the cache compares: (size, mtime) of the run's record files."""
        return record_signature(self._base + run_id)

    def assembled(self, name: str, key: Any) -> Any | None:
        """A value built from many records (a sweep's rows), if stored under the same ``key``."""
        stored = self._tables.get(name)
        return stored[1] if stored is not None and stored[0] == key else None

    def store_assembled(self, name: str, key: Any, value: Any) -> None:
        """Keep ``value`` until ``key`` (e.g. the run ids and their signatures) changes."""
        if self.enabled:
            self._tables[name] = (key, value)
            self._tables_dirty = True

    def get(self, run_id: str, *, curves: bool = True, sig: Signature | None = None) -> RunData:
        """The run ``<output_root>/<run_id>``, from the cache when its files are unchanged.

        Args:
            run_id: the run directory's name.
            curves: the per-epoch curves are needed (read ``metrics.jsonl`` if not cached yet).
            sig: the run's :meth:`signature`, if already taken.
        """
        root = self.root / run_id
        sig = sig if sig is not None else self.signature(run_id)
        entry = self.entries.get(run_id)
        if entry is not None and entry[0] == sig and sig[0] is not None:
            run = entry[1]
            if curves and run.curves is None:
                run.curves, run.curves_problem = read_curves(RunPaths(root).metrics)
                self._dirty = True
            self.hits += 1
            return run
        self.misses += 1
        run = read_report_run(root, curves=curves)
        if run.record.state not in _NOT_CACHED:
            self.entries[run_id] = (sig, run)
            self._dirty = True
        elif self.entries.pop(run_id, None) is not None:
            self._dirty = True
        return run

    def save(self) -> None:
        """Write the changed cache files atomically (silently skipped on a read-only root)."""
        if not (self.enabled and self.root.is_dir()):
            return
        for dirty, path, data in (
            (self._dirty, self.path, self._entries),
            (self._tables_dirty, self.rows_path, self._tables),
        ):
            if not dirty or data is None:
                continue
            payload = pickle.dumps({"version": CACHE_VERSION, "data": data}, protocol=pickle.HIGHEST_PROTOCOL)
            try:
                atomic_write_bytes(path, payload)
            except OSError:
                return
        self._dirty = self._tables_dirty = False
