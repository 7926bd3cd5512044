"""Where a sweep stands: one scheduler query, the runs' own records, errors and GPU-hours.

:func:`observe` gives every run of a state file its :class:`~suite.run.records.RunState`, from the run
directory (:func:`suite.run.records.run_state`) and the scheduler: all SLURM jobs of the sweep in
ONE ``sacct`` call, local jobs by their process. :func:`collect` adds what a person needs for
failed runs (the error from ``failure.json`` and the last lines of the job log) and the
GPU-hours used: ``AllocTRES gres/gpu x Elapsed`` summed over every attempt when accounting
answers, else the ``gpu_hours`` of the run summaries.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from submitit.core.utils import JobPaths

from jobs import slurm
from jobs.sweep_state import RunEntry, SweepState, classify
from suite.run.names import SUMMARY_FILE
from suite.run.records import RunPaths, RunState, read_json, read_run, run_state

__all__ = ["Observation", "RunStatus", "SweepStatus", "collect", "observe", "finished_elsewhere", "renamed_sweep_hints"]

SACCT_LAG_S = 600  # a job sacct does not know yet counts as pending for this long after submission


@dataclass
class Observation:
    """A run's state and the scheduler's view of its job (None: no job, or unknown)."""

    state: RunState
    scheduler: str | None = None
    record: slurm.SacctRecord | None = None


def _process_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    try:  # a zombie (finished child not yet reaped) is not running
        with open(f"/proc/{int(pid)}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def observe(state: SweepState, run_ids: list[str] | None = None) -> tuple[dict[str, Observation], bool]:
    """States of ``run_ids`` (default: all runs of the state file).

    Returns:
        ``(observations, accounting_ok)``; ``accounting_ok`` is False when the sweep has SLURM
        jobs and ``sacct`` did not answer (their states then come from the run records alone).
    """
    ids = list(state.runs) if run_ids is None else run_ids
    entries = {rid: state.runs.get(rid) for rid in ids}
    slurm_entries = [e for e in entries.values() if e and e.executor == "slurm" and e.job_id]
    submitted = {e.job_id: e.submitted for e in slurm_entries if e.submitted}
    records = slurm.sacct([e.job_id for e in slurm_entries], submitted) if slurm_entries else {}
    accounting_ok = records is not None
    records = records or {}
    root = Path(state.output_root)
    this_host = os.uname().nodename
    observations = {}
    for rid in ids:
        entry: RunEntry | None = entries[rid]
        word: str | None = None
        record = None
        if entry is not None and entry.job_id:
            if entry.executor == "slurm":
                record = records.get(entry.job_id)
                word = record.state if record else None
                if (
                    record is None
                    and accounting_ok
                    and entry.submitted
                    and time.time() - entry.submitted < SACCT_LAG_S
                ):
                    word = "PENDING"  # just submitted: accounting has not recorded it yet
            elif entry.executor == "local" and state.host == this_host and _process_alive(entry.job_id):
                word = "RUNNING"
        files = run_state(RunPaths.of(root, rid))
        observations[rid] = Observation(classify(files, word), word, record)
    return observations, accounting_ok


@dataclass
class RunStatus:
    """One run as ``status`` shows it."""

    run_id: str
    entry: RunEntry
    observation: Observation
    error: str | None = None
    log_tail: list[str] = field(default_factory=list)
    log_path: str | None = None

    @property
    def state(self) -> RunState:
        return self.observation.state


@dataclass
class SweepStatus:
    """A whole sweep: every run, counts by state and GPU-hours used."""

    state: SweepState
    runs: list[RunStatus]
    counts: dict[RunState, int]
    gpu_hours: float
    gpu_hours_source: str
    accounting_ok: bool
    left_out: list[str] = field(default_factory=list)  # on record, but not in the sweep file any more


def _tail(path: Path, lines: int) -> list[str]:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


def _job_log(state: SweepState, entry: RunEntry) -> Path | None:
    """The submitit stderr log of the run's last job (where tracebacks land)."""
    if not entry.job_id or entry.executor not in ("slurm", "local"):
        return None
    return JobPaths(state.submitit_folder, job_id=entry.job_id, task_id=0).stderr


def _error(paths: RunPaths, observation: Observation) -> str | None:
    try:
        failure = read_json(paths.failure)
    except (ValueError, UnicodeDecodeError, OSError) as err:
        return f"{paths.failure}: unreadable ({err}); delete it and relaunch the run"
    if failure and not isinstance(failure, dict):
        return f"{paths.failure}: not a failure record; delete it and relaunch the run"
    if failure:
        where = f" (rank {failure['rank']} of {failure.get('processes', '?')})" if "rank" in failure else ""
        return f"{failure.get('error', 'Error')}: {failure.get('message', '')}".strip() + where
    if observation.scheduler:
        record = observation.record
        exit_code = f" (exit {record.exit_code})" if record else ""
        return f"scheduler state {observation.scheduler}{exit_code}"
    return None


def collect(state: SweepState, *, log_lines: int = 5) -> SweepStatus:
    """Everything ``suite sweep status`` prints, from one scheduler query.

    Example:
        >>> report = collect(SweepState.read(Path("runs/demo-methods/sweep-state.json")))  # doctest: +SKIP
        >>> report.counts[RunState.FINISHED]  # doctest: +SKIP
        15
    """
    observations, accounting_ok = observe(state)
    root = Path(state.output_root)
    runs = []
    for rid, entry in sorted(state.runs.items(), key=lambda kv: (not kv[1].prerequisite, kv[1].index)):
        obs = observations[rid]
        status = RunStatus(rid, entry, obs)
        if obs.state is RunState.CORRUPT:
            status.error = read_run(RunPaths.of(root, rid).root).problem
        if obs.state is RunState.FAILED:
            paths = RunPaths.of(root, rid)
            status.error = _error(paths, obs)
            log = _job_log(state, entry)
            if log is None or not log.is_file():
                log = paths.log
            status.log_path = str(log)
            status.log_tail = _tail(log, log_lines)
        runs.append(status)
    counts = Counter(r.state for r in runs)
    slurm_seconds = [r.observation.record.gpu_seconds for r in runs if r.observation.record is not None]
    if slurm_seconds and accounting_ok:
        gpu_hours, source = sum(slurm_seconds) / 3600, "sacct AllocTRES gres/gpu x Elapsed"
    else:
        summaries = [read_run(RunPaths.of(root, r.run_id).root).summary or {} for r in runs]
        gpu_hours, source = sum(float(s.get("gpu_hours") or 0.0) for s in summaries), "run summaries"
    shown = {s: counts[s] for s in RunState if counts.get(s)}
    return SweepStatus(state, runs, shown, gpu_hours, source, accounting_ok, list(state.left_out))


def finished_elsewhere(output_root: Path, run_ids: list[str]) -> dict[Path, int]:
    """Folders beside ``output_root`` holding finished runs of these ids: where a renamed sweep's
    runs are (a sweep's runs live in ``<root>/<sweep name>``, so a new name plans them as new)."""
    parent = Path(output_root).parent
    if not run_ids or not parent.is_dir():
        return {}
    found: dict[Path, int] = {}
    for sibling in sorted(p for p in parent.iterdir() if p.is_dir() and p != Path(output_root)):
        count = sum(1 for rid in run_ids if (sibling / rid / SUMMARY_FILE).is_file())
        if count:
            found[sibling] = count
    return found


def renamed_sweep_hints(output_root: Path, states: dict[str, RunState]) -> list[str]:
    """One line per folder beside ``output_root`` where runs planned as new are already finished."""
    new = [rid for rid, state in states.items() if state is RunState.NEW]
    return [
        f"{count} of the new runs are finished under {folder} (a renamed sweep, or another output root?): "
        f"move those run folders into {output_root}, or pass --output-root {folder}"
        for folder, count in finished_elsewhere(output_root, new).items()
    ]
