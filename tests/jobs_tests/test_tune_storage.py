"""Study storage: heartbeats on the journal file, stale trials failed and retried with their params."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import optuna
import pytest

from jobs.study_storage import open_storage, storage_label


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_a_trial_without_heartbeat_is_failed_and_retried_with_its_params(tmp_path: Path, kind: str) -> None:
    url = f"journal:{tmp_path / 'study.journal'}" if kind == "journal" else f"sqlite:///{tmp_path / 'study.db'}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        storage = open_storage(url, heartbeat_s=1, grace_s=2, max_retries=1)
        study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
        alive, lost = study.ask(), study.ask()
        for trial in (alive, lost):
            trial.suggest_float("x", 0.0, 1.0)
        storage.record_heartbeat(lost._trial_id)
        lost_beat = time.time()  # the lost trial's last heartbeat is no later than this
        # until it is past the 2 s grace, also for SQLite, which stores heartbeats to the whole second
        while time.time() < lost_beat + 3.5:
            time.sleep(0.1)
        storage.record_heartbeat(alive._trial_id)  # the live one beat just now, well within its grace
        optuna.storages.fail_stale_trials(study)
    trials = study.get_trials()
    states = {t.number: t.state.name for t in trials}
    assert states == {0: "RUNNING", 1: "FAIL", 2: "WAITING"}
    assert trials[2].params == trials[1].params
    assert trials[2].system_attrs["failed_trial"] == 1


def test_storage_label_hides_passwords() -> None:
    assert storage_label("postgresql://me:secret@db:5432/optuna") == "postgresql://me:***@db:5432/optuna"
    assert storage_label("journal:/x/study.journal") == "/x/study.journal"


def test_a_torn_last_journal_line_does_not_break_the_study(tmp_path: Path) -> None:
    # A node that crashes mid-write leaves a last line without its newline; the next writer used to
    # append onto it, and every later read of the study failed with JSONDecodeError.
    url = f"journal:{tmp_path / 'study.journal'}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(study_name="s", storage=open_storage(url, heartbeat_s=60, grace_s=120,
                                                                          max_retries=0), direction="maximize")
        study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=3)
        journal = tmp_path / "study.journal"
        journal.write_bytes(journal.read_bytes()[:-40])  # the last record torn
        for _ in range(2):  # a tune run after the crash, then every later command
            storage = open_storage(url, heartbeat_s=60, grace_s=120, max_retries=0)
            again = optuna.load_study(study_name="s", storage=storage)
            again.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=1)
        final = optuna.load_study(study_name="s", storage=open_storage(url, heartbeat_s=60, grace_s=120,
                                                                        max_retries=0))
    assert len(final.trials) >= 4
    assert journal.read_bytes().endswith(b"\n")


def test_a_stopped_workers_trial_is_handed_back_without_using_a_retry(tmp_path: Path) -> None:
    """Ctrl-C on `suite tune` used to fail the trial through the retry callback: after max_retries
    stops the trial was dropped and the failures wedged the study. A hand-back keeps the retries."""
    from jobs.study_storage import GIVEN_BACK, give_back, is_failure
    from jobs.tune.study import _counts

    url = f"journal:{tmp_path / 'study.journal'}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(study_name="s", storage=open_storage(url, heartbeat_s=60, grace_s=120,
                                                                          max_retries=1), direction="maximize")
        trial = study.ask()
        x = trial.suggest_float("x", 0.0, 1.0)
        for _ in range(4):  # four stops of the same trial, each continued by the next ask
            give_back(study, trial)
            trial = study.ask()
            assert trial.suggest_float("x", 0.0, 1.0) == x
        study.tell(trial, 0.5)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["FAIL"] * 4 + ["COMPLETE"]
    assert all(t.user_attrs.get(GIVEN_BACK) for t in trials[:4]) and not trials[4].user_attrs.get(GIVEN_BACK)
    assert not any(is_failure(t) for t in trials)
    assert trials[4].system_attrs["retry_history"] == [] and trials[4].system_attrs["failed_trial"] == 0
    assert _counts(trials) == {"interrupted": 4, "complete": 1}
