"""Reading run directories for reports: tolerant, fast, cached.

A report never trusts a record blindly and never fails because of one: a run whose
``config.json`` or ``summary.json`` is unreadable gets state ``corrupt`` and a one-line
``problem`` naming the file and the fix; a planned run without a directory gets state
``missing``. Every other run is unaffected.

The parsed records of an output root are cached in ``<output_root>/.report-cache.pkl``, keyed
by each run's record files (path, size and modification time): a second report re-reads only
runs whose files changed. The rows assembled for each sweep are kept in ``.report-rows.pkl``
under the signatures of all its runs, so an unchanged sweep costs one ``stat`` per record file.
The caches are pickles (pandas' parquet needs pyarrow, which the suite does not require); a
cache that cannot be read, or that someone else could have written, is ignored and rewritten.
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from suite.run.records import RunPaths, atomic_write_bytes

__all__ = ["CACHE_NAME", "CURVE_KEYS", "ROWS_NAME", "Parsed", "RecordCache", "flatten", "parse_run", "trusted"]

CACHE_NAME = ".report-cache.pkl"
ROWS_NAME = ".report-rows.pkl"
CACHE_VERSION = 3
CURVE_KEYS: tuple[str, ...] = ("top1", "top5", "train_loss", "val_loss", "ema_top1")
_FILES: tuple[str, ...] = ("config.json", "summary.json", "metrics.jsonl", "failure.json", "checkpoint.pt")

Signature = tuple[tuple[int, int] | None, ...]


@dataclass
class Parsed:
    """What a report keeps of one run directory.

    Attributes:
        state: ``finished``, ``pruned``, ``failed``, ``interrupted``, ``running``, ``new``,
            ``corrupt`` or ``missing``.
        problem: one line naming the file and the fix, for corrupt/missing/failed runs.
        config: the flattened config (dotted key -> scalar; lists as JSON text).
        summary: the scalar entries of ``summary.json`` (empty unless finished/pruned).
        curves: epoch-indexed arrays (``epoch`` plus those of :data:`CURVE_KEYS` present);
            None when ``metrics.jsonl`` was not read (no curve plot needed it).
    """

    state: str
    problem: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, np.ndarray] | None = field(default_factory=dict)


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


_UNCHECKED = (-1, -1)  # a finished run's state no longer depends on failure.json or the checkpoint


def _signature(root: str) -> Signature:
    """(size, mtime) of each record file; a finished run skips the files its state ignores."""
    base = root + os.sep
    sig: list[tuple[int, int] | None] = []
    finished = False
    for name in _FILES:
        if finished and name in ("failure.json", "checkpoint.pt"):
            sig.append(_UNCHECKED)
            continue
        try:
            st = os.stat(base + name)
        except OSError:
            sig.append(None)
            continue
        sig.append((st.st_size, st.st_mtime_ns))
        finished = finished or name == "summary.json"
    return tuple(sig)


def _load_json(path: Path) -> tuple[Any, str | None]:
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read()), None
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as err:
        return None, f"{path}: unreadable ({type(err).__name__}: {str(err)[:80]})"


def _read_curves(path: Path) -> tuple[dict[str, np.ndarray], str | None]:
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


def parse_run(root: Path, *, curves: bool = True) -> Parsed:
    """Read one run directory into a :class:`Parsed` (never raises for bad records).

    Args:
        root: the run directory ``<output_root>/<run_id>``.
        curves: read ``metrics.jsonl`` too (the per-epoch curves).

    Returns:
        The parsed record; ``state`` is ``missing`` when the directory does not exist.
    """
    paths = RunPaths(Path(root))
    if not paths.root.is_dir():
        return Parsed("missing", f"{paths.root}: no run directory; the run was never started (launch the sweep)")
    config, problem = _load_json(paths.config)
    if problem is None and config is not None and not isinstance(config, dict):
        problem = f"{paths.config}: not a JSON object"
    if problem is not None:
        return Parsed("corrupt", problem + "; delete the run directory and launch the sweep again")
    flat = flatten({k: v for k, v in (config or {}).items()})
    summary, problem = _load_json(paths.summary)
    if problem is None and summary is not None and not isinstance(summary, dict):
        problem = f"{paths.summary}: not a JSON object"
    if problem is not None:
        fix = "delete summary.json and launch the sweep again (the run resumes from its checkpoint)"
        return Parsed("corrupt", f"{problem}; {fix}", config=flat)
    if curves:
        read, curve_problem = _read_curves(paths.metrics)
    else:
        read, curve_problem = None, None
    if summary is not None:
        status = str(summary.get("status", "finished"))
        state = "pruned" if status == "pruned" else "finished"
        scalars = {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool)) or v is None}
        return Parsed(state, curve_problem, flat, scalars, read)
    failure, _ = _load_json(paths.failure)
    ckpt = paths.checkpoint
    if isinstance(failure, dict) and (
        not ckpt.is_file() or paths.failure.stat().st_mtime >= ckpt.stat().st_mtime
    ):
        message = f"{failure.get('error', 'error')}: {str(failure.get('message', ''))[:120]}"
        return Parsed("failed", f"{paths.failure}: {message}", flat, {}, read)
    if ckpt.is_file():
        return Parsed("interrupted", curve_problem, flat, {}, read)
    started = bool(read) or (read is None and paths.metrics.is_file())
    return Parsed("running" if started else "new", curve_problem, flat, {}, read)


def trusted(fd: int) -> bool:
    """Whether a cache file may be unpickled: written by this user and writable by no one else.

    Unpickling runs code, so a cache in a shared output root that another user could have written
    is ignored (and rebuilt) rather than loaded.
    """
    st = os.fstat(fd)
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


class RecordCache:
    """Parsed run records of one output root, re-read only when their files change.

    Args:
        output_root: the folder holding the run directories.
        enabled: ``False`` reads everything and writes no cache file.

    Example:
        >>> cache = RecordCache(Path("runs/demo-mask-ratio"))  # doctest: +SKIP
        >>> cache.get("tokenmix-0123456789ab").state  # doctest: +SKIP
        'finished'
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
        self._entries: dict[str, tuple[Signature, Parsed]] | None = None if enabled else {}
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
    def entries(self) -> dict[str, tuple[Signature, Parsed]]:
        """The per-run entries, read from the cache file on first use."""
        if self._entries is None:
            self._entries = self._read(self.path) or {}
        return self._entries

    def signature(self, run_id: str) -> Signature:
        """What the cache compares: (size, mtime) of the run's record files."""
        return _signature(self._base + run_id)

    def assembled(self, name: str, key: Any) -> Any | None:
        """A value built from many records (a sweep's rows), if stored under the same ``key``."""
        stored = self._tables.get(name)
        return stored[1] if stored is not None and stored[0] == key else None

    def store_assembled(self, name: str, key: Any, value: Any) -> None:
        """Keep ``value`` until ``key`` (e.g. the run ids and their signatures) changes."""
        if self.enabled:
            self._tables[name] = (key, value)
            self._tables_dirty = True

    def get(self, run_id: str, *, curves: bool = True, sig: Signature | None = None) -> Parsed:
        """The parsed record of ``<output_root>/<run_id>``, from the cache when unchanged.

        Args:
            run_id: the run directory's name.
            curves: the per-epoch curves are needed (read ``metrics.jsonl`` if not cached yet).
            sig: the run's :meth:`signature`, if already taken.
        """
        root = self.root / run_id
        sig = sig if sig is not None else _signature(os.fspath(root))
        entry = self.entries.get(run_id)
        if entry is not None and entry[0] == sig and sig[0] is not None:
            parsed = entry[1]
            if curves and parsed.curves is None:
                parsed.curves, parsed.problem = _read_curves(RunPaths(root).metrics)[0], parsed.problem
                self._dirty = True
            self.hits += 1
            return parsed
        self.misses += 1
        parsed = parse_run(root, curves=curves)
        if parsed.state not in ("missing", "corrupt"):
            self.entries[run_id] = (sig, parsed)
            self._dirty = True
        elif self.entries.pop(run_id, None) is not None:
            self._dirty = True
        return parsed

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
