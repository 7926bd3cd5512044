"""The scheduler's words mapped into the suite's run states, and the sweep state file.

A sweep run's state is a :class:`suite.run.records.RunState`, the one vocabulary every command
prints. The run directory's own records say most of it (new, running, interrupted, finished,
pruned, failed, corrupt); the scheduler adds what only it knows (pending, cancelled, a job that
died). SLURM's words (``sacct``) and submitit's local words are mapped in exactly one function,
:func:`classify` (submitit's ``InfoWatcher.is_done`` is the counter-example: free-text states that
differ by backend).

The state file, ``<output_root>/sweep-state.json``, records for every run of the sweep its
index, axis values, executor and job id. Its folders are stored relative to the file (``.``,
``.submitit/%j``) and read back against the folder the file is in, so a sweep folder that was
moved or copied keeps its finished runs (an older file's absolute paths are rebased the same
way). It is rewritten atomically
(:func:`suite.run.records.atomic_write_json`) after every submission, so a reader never sees half a
file and a killed launch leaves the jobs it did submit on record.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from suite.run.names import SUBMITIT_DIR
from suite.run.records import RunState, atomic_write_json, read_json

if TYPE_CHECKING:
    from sweeps.expand import Plan
    from sweeps.spec import Sweep

__all__ = ["RunEntry", "RunState", "SweepState", "classify"]

STATE_VERSION = 1

_PENDING = {"PENDING", "CONFIGURING", "RESV_DEL_HOLD", "REQUEUE_HOLD", "SUSPENDED", "STOPPED", "QUEUED"}
_RUNNING = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "RESIZING"}
_REQUEUED = {"REQUEUED", "REQUEUE_FED", "PREEMPTED"}
_FAILED = {
    "FAILED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "BOOT_FAIL",
    "DEADLINE",
    "SPECIAL_EXIT",
    "REVOKED",
}
_CANCELLED = {"CANCELLED"}
_ENDED = {"COMPLETED", "FINISHED", "DONE", "INTERRUPTED", "NO PROCESS AND NO RESULT"}


def classify(records: RunState, scheduler: str | None) -> RunState:
    """The one mapping from (run records, scheduler word) to the run's :class:`RunState`.

    Args:
        records: what the run directory says (:func:`suite.run.records.run_state`).
        scheduler: the scheduler's word for the run's job: a SLURM state from ``sacct``
            (``PENDING``, ``RUNNING``, ``CANCELLED by 0``, ...), a submitit local/debug state
            (``RUNNING``, ``FINISHED``, ``QUEUED``, ``DONE``), or None when there is no job or
            the scheduler does not know it any more.

    Returns:
        The run's state. The records win for what they know for certain (finished, pruned,
        corrupt, a process holding the run's lock); a job back in the queue after preemption
        (``REQUEUED``/``PREEMPTED``) is ``pending``; a job that ended with the run unfinished
        leaves the records' word (``interrupted`` with a checkpoint, ``failed`` otherwise).
    """
    if records.is_finished() or records in (RunState.CORRUPT, RunState.RUNNING):
        return records
    word = (scheduler or "").strip().upper().split(" ")[0].rstrip("+")
    if word in _RUNNING:
        return RunState.RUNNING
    if word in _PENDING or word in _REQUEUED:
        return RunState.PENDING
    if records is RunState.FAILED or word in _FAILED:
        return RunState.FAILED
    if word in _CANCELLED:
        return RunState.CANCELLED
    if word and word not in _ENDED:
        raise ValueError(f"unknown scheduler state {scheduler!r}; add it to jobs.sweep_state.classify")
    if records is RunState.INTERRUPTED:
        return RunState.INTERRUPTED
    if word in _ENDED and records is RunState.NEW:
        return RunState.FAILED  # the job ended before the run wrote anything (see its log)
    return RunState.NEW


@dataclass
class RunEntry:
    """One run in the state file."""

    index: int
    values: dict[str, Any]
    label: str
    prerequisite: bool = False
    needs: list[str] = field(default_factory=list)
    executor: str | None = None
    job_id: str | None = None
    submitted: float | None = None
    submissions: int = 0
    state: str = RunState.NEW.value  # last state seen by launch or status


@dataclass
class SweepState:
    """The sweep state file: run id -> :class:`RunEntry`, plus where the jobs keep their logs."""

    path: Path
    sweep: str
    sweep_file: str
    output_root: str
    submitit_folder: str
    runs: dict[str, RunEntry] = field(default_factory=dict)
    launches: list[dict[str, Any]] = field(default_factory=list)
    host: str = field(default_factory=lambda: os.uname().nodename)  # where local jobs run
    # runs on record that the last with_plan(only=True) left out (the sweep file no longer plans
    # them); never written, never counted: status names them once
    left_out: list[str] = field(default_factory=list, compare=False)

    @classmethod
    def empty(cls, path: Path, *, sweep: str, sweep_file: str, output_root: Path) -> SweepState:
        """A state file with no runs yet; job logs go to ``<output_root>/.submitit/<job id>/``."""
        root = Path(output_root)
        return cls(path=Path(path), sweep=sweep, sweep_file=sweep_file, output_root=str(root),
                   submitit_folder=str(root / SUBMITIT_DIR / "%j"))

    @classmethod
    def of_sweep(cls, sweep: Sweep) -> SweepState:
        """The empty state file of a loaded sweep, at ``<output_root>/sweep-state.json``."""
        return cls.empty(sweep.state_file, sweep=sweep.name, sweep_file=str(sweep.path), output_root=sweep.output_root)

    def with_plan(self, plan: Plan, *, only: bool = False) -> SweepState:
        """This state with every run of ``plan`` on record: known runs keep their job, the others are new.

        Each run's index, values, label and prerequisites follow the plan. With ``only``, the runs
        not in ``plan`` (launched earlier with other overrides, or since dropped from the file) are
        left out, and their ids kept in :attr:`left_out`. Returns ``self``, changed in place; nothing
        is written.
        """
        runs = {} if only else self.runs
        for run in plan.all_runs():
            entry = self.runs.get(run.run_id) or RunEntry(index=run.index, values={}, label="")
            entry.index, entry.values, entry.label = run.index, run.values, run.label()
            entry.prerequisite, entry.needs = run.prerequisite, list(run.needs)
            runs[run.run_id] = entry
        if only:
            self.left_out = sorted(set(self.runs) - set(runs))
        self.runs = runs
        return self

    @classmethod
    def read(cls, path: Path) -> SweepState | None:
        """Read a state file, or None when there is none.

        Raises:
            ValueError: the file is unreadable (the message names it); see :meth:`read_or_set_aside`.
        """
        try:
            data = read_json(path)
        except (ValueError, UnicodeDecodeError, OSError) as err:
            raise ValueError(f"{path}: unreadable state file ({err})") from None
        if data is None:
            return None
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            version = data.get("version") if isinstance(data, dict) else None
            raise ValueError(f"{path}: state file version {version} is not {STATE_VERSION}")
        try:
            runs = {rid: RunEntry(**entry) for rid, entry in data["runs"].items()}
            root = Path(path).parent
            return cls(
                path=Path(path),
                sweep=data["sweep"],
                sweep_file=data["sweep_file"],
                output_root=str(root),  # where the file is now, whatever folder wrote it
                submitit_folder=_rebased(data["submitit_folder"], data["output_root"], root),
                runs=runs,
                launches=list(data.get("launches", [])),
                host=data.get("host", ""),
            )
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"{path}: not a sweep state file ({type(err).__name__}: {err})") from None

    @classmethod
    def read_or_set_aside(cls, path: Path, warn: Callable[[str], None]) -> SweepState | None:
        """Read a state file; an unreadable one is renamed aside (``.corrupt-<time>``) and None returned.

        The run folders are the source of truth, so the caller rebuilds the state from them;
        only the job ids of earlier launches are lost (``warn`` says so).
        """
        try:
            return cls.read(path)
        except ValueError as err:
            aside = Path(path).with_name(f"{Path(path).name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            try:
                os.replace(path, aside)
                moved = f"moved to {aside.name}"
            except OSError:
                moved = "left in place"
            warn(
                f"{err}; {moved}. Rebuilt from the run folders (their records are the source of truth); "
                "job ids of earlier launches are forgotten: check `squeue --me` before relaunching on SLURM"
            )
            return None

    @classmethod
    def from_run_folders(cls, path: Path) -> SweepState:
        """A state rebuilt from the run folders next to ``path`` (when the file itself was unreadable)."""
        root = Path(path).parent
        state = cls.empty(path, sweep=root.name, sweep_file="", output_root=root)
        folders = sorted(p.parent for p in root.glob("*/config.json"))
        folders += sorted(p.parent for p in root.glob("*/summary.json") if p.parent not in folders)
        for index, folder in enumerate(folders):
            state.runs[folder.name] = RunEntry(index=index, values={}, label="(rebuilt from the run folder)")
        return state

    def write(self) -> None:
        """Atomically rewrite the file."""
        atomic_write_json(
            self.path,
            {
                "version": STATE_VERSION,
                "sweep": self.sweep,
                "sweep_file": self.sweep_file,
                "output_root": ".",  # the folder of this file (see _rebased)
                "submitit_folder": _relative(self.submitit_folder, Path(self.path).parent),
                "updated": time.time(),
                "host": self.host,
                "launches": self.launches,
                "runs": {rid: asdict(entry) for rid, entry in self.runs.items()},
            },
        )


def _relative(folder: str, root: Path) -> str:
    """``folder`` relative to ``root`` when it lies under it (as the state file stores it), else as is."""
    try:
        return str(Path(folder).relative_to(root))
    except ValueError:
        return folder


def _rebased(folder: str, stored_root: str, root: Path) -> str:
    """A stored folder read against the state file's folder ``root``.

    A relative one is joined to ``root``; an absolute one under the root the file was written in
    (an older file, or a folder since moved) keeps its place inside ``root``; others stay as they are.
    """
    path = Path(folder)
    if not path.is_absolute():
        return str(root / path)
    try:
        return str(root / path.relative_to(stored_root))
    except ValueError:
        return folder
