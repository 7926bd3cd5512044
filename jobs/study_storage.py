"""Where a study lives: Optuna storage with heartbeats and retry of lost trials.

The default is Optuna's ``JournalStorage`` with its file backend, one append-only file in the
study folder (``<output_root>/study.journal``): it needs no database and its lock works on NFS,
so workers on any node of a cluster share it. Any SQLAlchemy URL (``sqlite:///...``,
``postgresql://...``) gives Optuna's ``RDBStorage`` instead.

Both get a heartbeat: a running trial records one every ``heartbeat_s`` seconds, and a trial
whose heartbeat is older than ``grace_s`` (its worker was killed: SIGKILL, node failure, OOM) is
failed by the next worker that asks for a trial (``optuna.storages.fail_stale_trials``) and
re-enqueued with the same parameters by ``RetryFailedTrialCallback``. Same parameters mean the
same run config, so the retried trial resumes the dead worker's run from its checkpoint.

Optuna's ``RDBStorage`` has heartbeats built in. ``JournalStorage`` has none, so
:class:`HeartbeatJournalStorage` adds them: the heartbeat is a system attribute of the trial
(``heartbeat``, a Unix time) written to the journal like any other update.

This module is also the one place that uses Optuna's private names. Optuna's public API runs a
trial from ``ask`` to ``tell`` in one process; a suite worker also records its trial's heartbeat
from a thread, takes its running trial up again after a SLURM requeue (a new process), and hands
a stopped trial to the retry callback. For that it needs the study's storage and the storage's
trial id, which Optuna keeps private (``Study._storage``, ``Trial._trial_id``,
``FrozenTrial._trial_id``: :func:`frozen_trial`, :func:`record_heartbeat`, :func:`reattach`);
and a journal storage with heartbeats implements Optuna's heartbeat protocol, which Optuna
exports only privately (``optuna.storages._heartbeat.BaseHeartbeat`` and its
``_get_stale_trial_ids``).
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "HEARTBEAT_ATTR",
    "HeartbeatJournalStorage",
    "frozen_trial",
    "open_storage",
    "reattach",
    "record_heartbeat",
    "retry_callback",
    "storage_exists",
    "storage_label",
]

HEARTBEAT_ATTR = "heartbeat"
JOURNAL_PREFIX = "journal:"

StaleCallback = Callable[[optuna.Study, FrozenTrial], None]


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """``JournalStorage`` plus Optuna's heartbeat protocol (what ``RDBStorage`` offers built in).

    Args:
        backend: the journal backend (a ``JournalFileBackend``).
        heartbeat_interval: seconds between heartbeats of a running trial.
        grace_period: a running trial whose last heartbeat (or start) is older than this is stale.
        stale_callback: called with each trial failed as stale (e.g. ``RetryFailedTrialCallback``).
    """

    def __init__(
        self,
        backend: Any,
        *,
        heartbeat_interval: int,
        grace_period: int,
        stale_callback: StaleCallback | None = None,
    ) -> None:
        super().__init__(backend)
        if heartbeat_interval <= 0 or grace_period <= 0:
            raise ValueError(
                f"heartbeat_interval and grace_period must be > 0, but got {heartbeat_interval=}, {grace_period=}"
            )
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.stale_callback = stale_callback

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
            pass  # the trial ended (or was failed as stale) meanwhile

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            last = trial.system_attrs.get(HEARTBEAT_ATTR)
            if last is None and trial.datetime_start is not None:
                last = trial.datetime_start.timestamp()
            if last is not None and now - float(last) > self.grace_period:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> StaleCallback | None:
        return self.stale_callback

    def get_failed_trial_callback(self) -> StaleCallback | None:  # the Optuna 4 name
        return self.stale_callback


def retry_callback(max_retries: int) -> StaleCallback:
    """Optuna's callback that re-enqueues a lost trial with its parameters (the Optuna 4.9+ name when there)."""
    import warnings

    cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return cls(max_retry=max_retries)


def _rdb(url: str, heartbeat_s: int, grace_s: int, callback: StaleCallback) -> RDBStorage:
    names = inspect.signature(RDBStorage.__init__).parameters
    key = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in names else "failed_trial_callback"
    return RDBStorage(url, heartbeat_interval=heartbeat_s, grace_period=grace_s, **{key: callback})


def repair_torn_tail(path: Path) -> int:
    """Drop a last journal line that a crashed writer left without its newline; returns the bytes dropped.

    Optuna's reader skips a torn last line, but its next writer appends onto the fragment, and the
    merged line then fails every later read (``JSONDecodeError``): one node crash mid-write would
    break the study for good. The fragment was never a whole record, so no reader acted on it.
    The repair holds Optuna's own journal lock, so no live writer is cut.
    """
    from optuna.storages.journal import JournalFileSymlinkLock

    if not path.is_file() or path.stat().st_size == 0:
        return 0
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        with open(path, "rb+") as handle:
            data = handle.read()
            if data.endswith(b"\n"):
                return 0
            keep = data.rfind(b"\n") + 1
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())
            return len(data) - keep
    finally:
        lock.release()


def open_storage(url: str, *, heartbeat_s: int, grace_s: int, max_retries: int) -> BaseStorage:
    """The storage of a study: ``journal:<file>`` or an RDB URL, with heartbeats and trial retry.

    Args:
        url: ``journal:/path/study.journal`` (the default of study files) or a SQLAlchemy URL.
        heartbeat_s: heartbeat interval of running trials.
        grace_s: heartbeat age after which a running trial counts as lost.
        max_retries: how often a lost trial is retried (``RetryFailedTrialCallback(max_retry=...)``).
    """
    callback = retry_callback(max_retries)
    if url.startswith(JOURNAL_PREFIX):
        path = Path(url[len(JOURNAL_PREFIX):])
        path.parent.mkdir(parents=True, exist_ok=True)
        repair_torn_tail(path)
        return HeartbeatJournalStorage(
            JournalFileBackend(str(path)), heartbeat_interval=heartbeat_s, grace_period=grace_s,
            stale_callback=callback,
        )
    return _rdb(url, heartbeat_s, grace_s, callback)


def storage_exists(url: str) -> bool:
    """Whether the default journal file exists (RDB URLs: assumed to exist)."""
    if url.startswith(JOURNAL_PREFIX):
        return Path(url[len(JOURNAL_PREFIX):]).is_file()
    return True


def storage_label(url: str) -> str:
    """The storage for people: the journal file path, or the URL without its password."""
    if url.startswith(JOURNAL_PREFIX):
        return url[len(JOURNAL_PREFIX):]
    import re

    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


# ---- a live trial's storage (Optuna's private names, see the module docstring) --------------------


def frozen_trial(trial: optuna.Trial) -> FrozenTrial:
    """What the storage holds of a live trial now: its state and the values reported so far."""
    return trial.study._storage.get_trial(trial._trial_id)


GIVEN_BACK = "given_back"  # user attribute of a trial a stopped worker handed back (not a failure)


def give_back(study: optuna.Study, trial: optuna.Trial) -> None:
    """End a stopped worker's trial and enqueue its continuation at once, with the same parameters.

    A stop (Ctrl-C, SIGTERM, preemption without requeue) is no failure: unlike the retry of a lost
    trial (:func:`retry_callback`) it does not use up ``max_retries``, and the ended trial carries
    :data:`GIVEN_BACK`, so failure counts skip it. Optuna has no state for "paused": the trial is
    stored as FAIL (the only way to end it) and its continuation is a WAITING copy whose run
    directory, named by the same parameters, resumes from the checkpoint.
    """
    from optuna.trial import TrialState, create_trial

    trial.set_user_attr(GIVEN_BACK, True)
    study.tell(trial, state=TrialState.FAIL)
    frozen = frozen_trial(trial)
    system = {"failed_trial": frozen.number, "retry_history": [], **frozen.system_attrs}  # lineage, no retry used
    attrs = {k: v for k, v in frozen.user_attrs.items() if k != GIVEN_BACK}
    study.add_trial(create_trial(state=TrialState.WAITING, params=frozen.params, distributions=frozen.distributions,
                                 user_attrs=attrs, system_attrs=system))


def is_failure(trial: FrozenTrial) -> bool:
    """A failed trial that was not handed back by a stopped worker (see :func:`give_back`)."""
    from optuna.trial import TrialState

    return trial.state == TrialState.FAIL and not trial.user_attrs.get(GIVEN_BACK)


def record_heartbeat(trial: optuna.Trial) -> None:
    """Record that ``trial``'s worker is alive (the storage must have heartbeats: :func:`open_storage`)."""
    trial.study._storage.record_heartbeat(trial._trial_id)


def reattach(study: optuna.Study, number: int) -> optuna.Trial | None:
    """Trial ``number`` as a live trial again (a requeued worker continues it), if it still runs.

    Its heartbeat is recorded first, before another worker can see it as stale. None: the trial
    ended meanwhile (failed as stale, and retried elsewhere).
    """
    frozen = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if frozen is None or frozen.state != TrialState.RUNNING:
        return None
    study._storage.record_heartbeat(frozen._trial_id)
    return optuna.Trial(study, frozen._trial_id)
