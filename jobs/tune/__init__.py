"""Tuning: Optuna workers that pull trials from a shared study, each trial an ordinary suite run.

:func:`tune` validates a study file (:func:`sweeps.study.load_study`), creates or loads the study
in its storage, and starts ``workers`` :class:`TuneWorker` jobs through a backend
(:mod:`jobs.backends`): one SLURM job array, or local processes, or one worker in this process
(``debug``). There is no batch barrier: every worker loops on its own, asking the storage for the
next trial as soon as its last one ended, until the study holds ``n_trials`` finished (complete
or pruned) trials.

A trial is an ordinary run. Its parameters (decoded back to run config values) go on top of the
study's base config; the run id is the hash of that config, as for any run, so the same
parameters always land in the same run directory (``<output_root>/<run_id>/``) and the same W&B
run (group = study name, tags ``study:<name>`` and ``trial:<n>``, name ``<study>-trial<n>``; all
output-only fields). The trainer calls the trial's callback after every epoch: it reports the
objective's per-epoch value (``trial.report``) and returns a reason when the pruner says so
(``trial.should_prune``), which ends the run in state ``pruned``.

Lost workers. A running trial records a heartbeat (:mod:`jobs.study_storage`); a worker that asks
for a trial first fails stale trials, and ``RetryFailedTrialCallback`` re-enqueues them with the
same parameters, hence the same run directory: the retry resumes from the dead worker's
checkpoint. A SLURM worker that is preempted or reaches its time limit checkpoints its run at a
step boundary, requeues (:func:`jobs.preemption.train_preemptible`, as sweep runs do), and
continues the same trial when it starts again. A per-run lock file makes sure that two trials
with the same parameters never train one run directory at once.

Who takes the next trial is decided under a lock file in the study folder, so the number of
trials created is exactly what the study needs (``finished + running < n_trials``); workers with
nothing left to take wait while other trials run (one of them may be lost and retried) and exit
when the study has ``n_trials`` finished trials.

Modules: :mod:`~jobs.tune.dispatch` (:func:`tune`), :mod:`~jobs.tune.worker` (the worker and its
trial), :mod:`~jobs.tune.study` (the study in its storage: open, status, best, plots).
"""

from __future__ import annotations

from jobs.tune.dispatch import TuneReport, tune
from jobs.tune.study import StudyStatus, best_sweep, open_study, plot_study, study_status
from jobs.tune.worker import TuneWorker

__all__ = ["StudyStatus", "TuneReport", "TuneWorker", "best_sweep", "open_study", "plot_study", "study_status", "tune"]
