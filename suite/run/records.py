"""The run directory: the one record format every stage reads, and the one run-state vocabulary.

``<output_root>/<run_id>/`` holds

- ``config.json``   the resolved run config, its ``run_id`` and ``id_version`` (written first);
- ``checkpoint.pt`` the full training state (model, optimiser, EMA, RNG states, epoch, step);
- ``metrics.jsonl`` one JSON object per finished epoch, rewritten atomically after the
  checkpoint of the same epoch, so it never holds an epoch that a resume would not reach;
- ``summary.json``  final/best metrics and ``status`` (``finished`` or ``pruned``): the commit
  marker of a run that ended, written last;
- ``failure.json``  error type, message and traceback tail of the last attempt, if it raised;
  removed when a new attempt starts. In a data-parallel run it names the ``rank`` that failed
  first; the ranks that fail after it (at their next collective) keep it;
- ``train.log``     the human-readable log;
- ``.lock``         held (``flock``) by the process that trains the run.

Every file is written atomically (temporary file in the same directory, fsync, rename), so a
reader never sees half a file. :func:`run_state` derives the state from these files alone (no
modification-time comparisons); :func:`read_run` reads a run's records with the same rule, and
:func:`record_signature` tells a cache of them when to read again. Sweeps, reports and tuning all
use them, and the scheduler's words are mapped into the same :class:`RunState` in one function
(``jobs.sweep_state.classify``).
"""

from __future__ import annotations

import enum
import errno
import fcntl
import json
import os
import tempfile
import time
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from suite.run import names

__all__ = [
    "CorruptRecordError",
    "RunBusyError",
    "RunPaths",
    "RunRecord",
    "RunState",
    "Signature",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_jsonl",
    "clear_failure",
    "iter_runs",
    "keep_previous",
    "read_json",
    "read_jsonl",
    "read_run",
    "read_summary",
    "record_signature",
    "run_lock",
    "run_state",
    "write_failure",
    "write_summary",
]


class RunState(str, enum.Enum):
    """The one vocabulary for where a run stands, printed by every command.

    ``new``, ``running``, ``interrupted``, ``finished``, ``pruned``, ``failed`` and ``corrupt``
    come from the run directory (:func:`run_state`); ``missing`` from :func:`read_run` of a run
    whose folder does not exist (a planned run never started: :func:`run_state`, which a launch
    asks, calls it ``new``); ``pending`` and ``cancelled`` only from a scheduler
    (``jobs.sweep_state.classify``).
    """

    NEW = "new"  # nothing computed yet
    PENDING = "pending"  # a job is queued for it (scheduler)
    RUNNING = "running"  # a process is training it now
    INTERRUPTED = "interrupted"  # stopped with a checkpoint: relaunching resumes it
    FINISHED = "finished"  # summary.json written: never retrained
    PRUNED = "pruned"  # stopped early on purpose (e.g. an Optuna pruner): never resumed
    FAILED = "failed"  # the last attempt raised (failure.json), or its job died
    CANCELLED = "cancelled"  # its job was cancelled by a user (scheduler)
    CORRUPT = "corrupt"  # a record cannot be read; see the run's ``problem``
    MISSING = "missing"  # planned, but there is no run folder (read_run)

    def is_finished(self) -> bool:
        """Ended for good (finished or pruned): a relaunch never trains it again."""
        return self in (RunState.FINISHED, RunState.PRUNED)

    def is_active(self) -> bool:
        """A job or process exists for it: a launch must not submit it again."""
        return self in (RunState.PENDING, RunState.RUNNING)

    def needs_launch(self) -> bool:
        """A launch submits it: never run, interrupted, failed or cancelled."""
        launched = (RunState.NEW, RunState.MISSING, RunState.INTERRUPTED, RunState.FAILED, RunState.CANCELLED)
        return self in launched


class CorruptRecordError(ValueError):
    """A run record cannot be read; the message names the file and the fix."""


class RunBusyError(RuntimeError):
    """Another process holds the run's lock: it is being trained right now."""


class _RunFile:
    """A file of the run directory as an attribute of :class:`RunPaths` (``paths.summary``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, paths: RunPaths | None, owner: type) -> Any:
        return self if paths is None else paths.root / self.name


@dataclass(frozen=True)
class RunPaths:
    """File layout of one run directory (the names: :mod:`suite.run.names`)."""

    root: Path

    @classmethod
    def of(cls, output_root: Path | str, run_id: str) -> RunPaths:
        return cls(Path(output_root) / run_id)

    config = _RunFile(names.CONFIG_FILE)
    metrics = _RunFile(names.METRICS_FILE)
    summary = _RunFile(names.SUMMARY_FILE)
    checkpoint = _RunFile(names.CHECKPOINT_FILE)
    previous_checkpoint = _RunFile(names.PREVIOUS_CHECKPOINT_FILE)  # the fallback for a damaged checkpoint.pt
    failure = _RunFile(names.FAILURE_FILE)
    wandb_record = _RunFile(names.WANDB_RECORD_FILE)  # the last epoch W&B confirmed, for a resume's backfill
    log = _RunFile(names.LOG_FILE)
    lock = _RunFile(names.LOCK_FILE)

    @property
    def wandb_dir(self) -> Path:
        return self.root


_UMASK: int | None = None


def _umask() -> int:
    """The process umask (read once: reading it means setting it)."""
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return _UMASK


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; colleagues may read a sweep's results
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def keep_previous(path: Path, previous: Path) -> None:
    """Make ``previous`` the current content of ``path`` (hard link and rename: atomic, no copy)."""
    if not path.is_file():
        return
    tmp = previous.with_name(f".{previous.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:  # a filesystem without hard links: copy
        import shutil

        shutil.copyfile(path, tmp)
    os.replace(tmp, previous)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def atomic_write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Atomically write rows as JSON lines."""
    atomic_write_bytes(path, "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows).encode())


def read_json(path: Path) -> Any | None:
    """Read a JSON file, or None when it does not exist (a malformed file raises ValueError)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read JSON lines, tolerating a torn last line (from writers that append)."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}:{i + 1}: malformed JSON line") from None
    return rows


def read_summary(paths: RunPaths) -> dict[str, Any] | None:
    """The run's summary, None when there is none; ValueError (naming the file) when unreadable."""
    try:
        summary = read_json(paths.summary)
    except NotADirectoryError:
        return None  # the run folder cannot exist there; writing it will say so
    except (ValueError, UnicodeDecodeError, OSError) as err:
        raise ValueError(f"{paths.summary}: unreadable summary ({err})") from None
    if summary is None:
        return None
    # a pruned run has no final top1; a maps build step (suite.teacher.maps_step) has none at all
    no_top1 = isinstance(summary, dict) and (summary.get("status") == RunState.PRUNED.value or summary.get("kind") == "maps")
    if not isinstance(summary, dict) or "run_id" not in summary or ("top1" not in summary and not no_top1):
        raise ValueError(f"{paths.summary}: not a run summary (no run_id/top1)")
    return summary


def write_summary(paths: RunPaths, summary: dict[str, Any]) -> None:
    """Commit a run as ended (``summary["status"]``: ``finished`` or ``pruned``)."""
    status = summary.get("status")
    if status not in (RunState.FINISHED.value, RunState.PRUNED.value):
        raise ValueError(f"summary status must be finished or pruned, but got status={status!r}")
    atomic_write_json(paths.summary, summary)
    clear_failure(paths)


def write_failure(
    paths: RunPaths,
    err: BaseException | None = None,
    *,
    error: str = "",
    message: str = "",
    rank: int | None = None,
    processes: int | None = None,
    first: bool = False,
) -> bool:
    """Record why the last attempt failed (the run state becomes ``failed``); True when written.

    Args:
        rank, processes: the failing process of a data-parallel run, recorded with the error.
        first: keep a failure record that is already there (another rank of the same attempt
            failed first; the later failures are usually its consequence, a collective that
            lost a peer). The check and the write are one atomic step (a hard link that fails
            when the name exists), so two ranks failing together leave one complete record.
    """
    record: dict[str, Any] = {
        "error": type(err).__name__ if err is not None else error,
        "message": str(err) if err is not None else message,
        "time": time.time(),
    }
    if rank is not None:
        record["rank"] = rank
    if processes is not None:
        record["processes"] = processes
    if err is not None and err.__traceback__ is not None:
        record["traceback"] = "".join(traceback.format_exception(err))[-4000:]
    if not first:
        atomic_write_json(paths.failure, record)
        return True
    return _create_json(paths.failure, record)


def _create_json(path: Path, obj: Any) -> bool:
    """Write ``obj`` to ``path`` unless ``path`` exists, atomically; False when it existed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new.tmp")
    atomic_write_json(tmp, obj)
    try:
        os.link(tmp, path)  # fails when path exists: the check and the write are one step
    except FileExistsError:
        return False
    except OSError:  # a filesystem without hard links: check, then rename
        if path.exists():
            return False
        os.replace(tmp, path)
        return True
    finally:
        tmp.unlink(missing_ok=True)
    return True


def clear_failure(paths: RunPaths) -> None:
    """Forget the last attempt's failure (a new attempt starts, or the failure was not the run's)."""
    paths.failure.unlink(missing_ok=True)


def _lock_held(paths: RunPaths) -> bool:
    """True when another open file description holds the run's lock."""
    try:
        fd = os.open(paths.lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as err:
        return err.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


@contextmanager
def run_lock(paths: RunPaths) -> Iterator[None]:
    """Hold the run's lock while training it; a second trainer of the same run is refused.

    ``flock`` locks are released by the kernel when the process dies, so a killed run never
    leaves a stale lock. (On network filesystems without ``flock`` support the lock is local to
    the node.)
    """
    paths.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise RunBusyError(
                    f"run {paths.root.name} is being trained by another process (lock {paths.lock}); "
                    "wait for it or stop it first"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {os.uname().nodename}\n".encode())
        yield
    finally:
        os.close(fd)


def run_state(paths: RunPaths) -> RunState:
    """Derive the state of a run from its files alone (a folder that is not there: ``new``)."""
    try:
        summary = read_summary(paths)
    except ValueError:
        return RunState.CORRUPT
    return _state(paths, summary)


def _state(paths: RunPaths, summary: dict[str, Any] | None) -> RunState:
    """The one rule, given the run's readable summary: the summary, then the lock, the failure
    record, the checkpoints. No modification times: each file is removed or replaced when what it
    says stops being true (``failure.json`` when an attempt starts, the lock when its process dies)."""
    if summary is not None:
        return RunState.PRUNED if summary.get("status") == RunState.PRUNED.value else RunState.FINISHED
    if _lock_held(paths):
        return RunState.RUNNING
    if paths.failure.is_file():
        return RunState.FAILED
    if paths.checkpoint.is_file() or paths.previous_checkpoint.is_file():
        return RunState.INTERRUPTED
    return RunState.NEW


Signature = tuple[tuple[int, int] | None, ...]
_UNCHECKED = (-1, -1)  # a file the state no longer depends on (the run has a summary)


def record_signature(root: Path | str) -> Signature:
    """``(size, mtime)`` of each of the run's record files (None where absent): what a cache of
    :func:`read_run` results compares. Once there is a summary, the files after the metrics in
    :data:`~suite.run.names.RECORD_FILES` no longer decide the state and are not looked at.

    The lock is rewritten whenever a process takes it, so a run that starts changes its signature;
    its release (a process ending) does not: a ``running`` record is never to be cached.
    """
    base = os.fspath(root) + os.sep
    sig: list[tuple[int, int] | None] = []
    ended = False
    for name in names.RECORD_FILES:
        if ended and name not in (names.CONFIG_FILE, names.SUMMARY_FILE, names.METRICS_FILE):
            sig.append(_UNCHECKED)
            continue
        try:
            st = os.stat(base + name)
        except OSError:
            sig.append(None)
            continue
        sig.append((st.st_size, st.st_mtime_ns))
        ended = ended or name == names.SUMMARY_FILE
    return tuple(sig)


@dataclass
class RunRecord:
    """Everything a report needs from one run directory.

    ``problem`` names the unreadable file and the fix when ``state`` is ``corrupt`` (or when an
    optional record such as ``metrics.jsonl`` could not be read); it is None otherwise.
    ``metrics`` is empty when the run has none, or when they were not asked for
    (``read_run(root, metrics=False)``).
    """

    run_id: str
    paths: RunPaths
    state: RunState
    config: dict[str, Any] | None
    metrics: list[dict[str, Any]]
    summary: dict[str, Any] | None
    failure: dict[str, Any] | None
    problem: str | None = None


def _read_optional(path: Path, reader: Any, problems: list[str]) -> Any:
    try:
        return reader(path)
    except (ValueError, UnicodeDecodeError, OSError) as err:
        problems.append(f"{path}: unreadable ({err}); delete it and relaunch the run to rebuild it")
        return None


def _read_object(path: Path, problems: list[str]) -> dict[str, Any] | None:
    """A JSON object record (config, failure); anything else is a problem, never an exception."""
    value = _read_optional(path, read_json, problems)
    if value is not None and not isinstance(value, dict):
        problems.append(f"{path}: not a JSON object; delete it and relaunch the run to rebuild it")
        return None
    return value


def read_run(root: Path | str, *, metrics: bool = True) -> RunRecord:
    """Read a run directory in any state; never raises for an unreadable record.

    Args:
        root: the run directory ``<output_root>/<run_id>``; state ``missing`` when it is not there.
        metrics: read ``metrics.jsonl`` too.
    """
    paths = RunPaths(Path(root))
    if not paths.root.is_dir():
        return RunRecord(paths.root.name, paths, RunState.MISSING, None, [], None, None)
    problems: list[str] = []
    try:
        summary = read_summary(paths)
    except ValueError as err:
        summary, state = None, RunState.CORRUPT
        problems.append(
            f"{err}: the run does not count as finished; delete {paths.summary.name} and relaunch to resume "
            "it from its checkpoint, or delete the run folder to retrain it"
        )
    else:
        state = _state(paths, summary)
    config = _read_object(paths.config, problems)
    rows = (_read_optional(paths.metrics, read_jsonl, problems) or []) if metrics else []
    failure = _read_object(paths.failure, problems)
    return RunRecord(
        run_id=paths.root.name,
        paths=paths,
        state=state,
        config=config,
        metrics=rows,
        summary=summary,
        failure=failure,
        problem="; ".join(problems) or None,
    )


def iter_runs(output_root: Path | str) -> list[RunRecord]:
    """Every run directory (one holding config.json) below ``output_root``."""
    root = Path(output_root)
    if not root.is_dir():
        return []
    return [read_run(p.parent) for p in sorted(root.glob(f"*/{names.CONFIG_FILE}"))]
