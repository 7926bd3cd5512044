"""One tuning worker: it pulls trials from the study until the study has ``n_trials`` finished.

:class:`TuneWorker` is what submitit pickles and runs (see :mod:`jobs.tune` for the whole
picture). Each trial trains through :func:`jobs.preemption.train_preemptible`, the training
sweep runs use: a stop ends it at a step boundary with a checkpoint, and a preempted SLURM worker
requeues and continues the same trial. The trial's heartbeat thread (:class:`_Heartbeat`) keeps
it from being failed as stale meanwhile, also while it waits for the lock of its run folder.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import submitit

from jobs.locks import file_lock
from jobs.preemption import train_preemptible
from jobs.study_storage import frozen_trial, give_back, is_failure, reattach, record_heartbeat
from jobs.tune.study import WORKERS_DIR, open_study
from suite.run.records import RunPaths, atomic_write_json, read_json, read_jsonl
from sweeps.study import (
    CategoricalParam,
    FloatParam,
    Study,
    decode_param,
    intermediate_value,
    objective_value,
    report_metric,
)

__all__ = ["PruneCallback", "TrialOutcome", "TuneWorker"]

POLL_S = 2.0
LOCKS_DIR = ".locks"


def _suggest(trial: Any, study: Study) -> dict[str, Any]:
    """Suggest every parameter of the space (a retried or resumed trial returns its fixed values)."""
    params = {}
    for key, dist in study.spec.space.items():
        if isinstance(dist, CategoricalParam):
            params[key] = trial.suggest_categorical(key, dist.values())
        elif isinstance(dist, FloatParam):
            params[key] = trial.suggest_float(key, dist.low, dist.high, log=dist.log, step=dist.step)
        else:
            params[key] = trial.suggest_int(key, dist.low, dist.high, log=dist.log, step=dist.step)
    return params


class _Heartbeat:
    """Records the trial's heartbeat (and the worker's) every ``interval`` seconds in a thread."""

    def __init__(self, trial: Any, interval: float, beat: Callable[[], None]) -> None:
        self.trial, self.interval, self.beat = trial, interval, beat
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            record_heartbeat(self.trial)
            self.beat()
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class PruneCallback:
    """The trainer callback of a trial: report each epoch's value, return a reason when pruned."""

    def __init__(self, trial: Any, study: Study, paths: RunPaths) -> None:
        self.trial, self.paths = trial, paths
        self.metric = report_metric(study.spec)
        self.pruner = study.spec.pruner.name
        self.reported: set[int] = set(frozen_trial(trial).intermediate_values)

    def backfill(self) -> None:
        """Report the epochs a resumed run already has (a retried trial starts with none)."""
        rows = read_jsonl(self.paths.metrics)
        for i in range(len(rows)):
            self._report(int(rows[i]["epoch"]), rows[: i + 1])

    def _report(self, epoch: int, rows: list[dict[str, Any]]) -> float | None:
        value = intermediate_value(self.metric, rows)
        if value is not None and epoch not in self.reported:
            self.trial.report(value, epoch)
            self.reported.add(epoch)
        return value

    def __call__(self, epoch: int, metrics: Any) -> str | None:
        rows = [r for r in read_jsonl(self.paths.metrics) if int(r["epoch"]) <= epoch]
        if not rows or int(rows[-1]["epoch"]) != epoch:
            rows = [*rows, {**dict(metrics), "epoch": epoch}]
        value = self._report(epoch, rows)
        if value is not None and self.trial.should_prune():
            return f"pruned by the {self.pruner} pruner after epoch {epoch}: {self.metric} {value:.4g}"
        return None



@dataclass
class TrialOutcome:
    number: int
    state: str  # complete | pruned | fail | interrupted
    value: float | None = None
    run_id: str | None = None


class TuneWorker(submitit.helpers.Checkpointable):
    """One worker of a study: pulls trials from the storage until the study has ``n_trials`` finished.

    Args:
        study: the loaded study (pickled with the job; the storage holds the trials).
        worker: this worker's index (its sampler is seeded with ``seed + worker``).
        threads: ``run.threads`` of its runs (output-only; None: the job's CPU allocation).

    Returns (when called):
        ``{"worker", "trials": [TrialOutcome as dict], "stopped": reason}``.
    """

    def __init__(self, study: Study, worker: int = 0, threads: int | None = None) -> None:
        self.study = study
        self.worker = worker
        self.threads = threads
        self.trial_number: int | None = None  # a trial this worker continues after a requeue

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Requeue with the same object: the trial it continues; the run state is on disk."""
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)

    # -- bookkeeping of live workers (for status) --
    def _job_id(self) -> str:
        try:
            env = submitit.JobEnvironment()
            return str(env.job_id)
        except RuntimeError:
            return f"pid{os.getpid()}"

    def _beat(self, state: str = "running", trial: int | None = None) -> None:
        path = self.study.output_root / WORKERS_DIR / f"{self._job_id()}.json"
        record = read_json(path) if path.is_file() else None
        record = record or {"worker": self.worker, "host": socket.gethostname(), "pid": os.getpid(),
                            "started": time.time()}
        record.update({"time": time.time(), "state": state})
        if trial is not None:
            record["trial"] = trial
        atomic_write_json(path, record)

    def __call__(self) -> dict[str, Any]:
        import suite  # noqa: F401 - torchvision shim before timm

        ostudy = open_study(self.study, worker=self.worker)
        outcomes: list[TrialOutcome] = []
        stopped = "study complete"
        self._beat("started")
        try:
            while True:
                trial = self._next_trial(ostudy)
                if trial is None:
                    break
                if isinstance(trial, str):
                    stopped = trial
                    break
                outcome = self._run_trial(ostudy, trial)
                outcomes.append(outcome)
                if outcome.state == "interrupted":
                    stopped = "interrupted"
                    break
        finally:
            self._beat("exited")
        return {"worker": self.worker, "trials": [o.__dict__ for o in outcomes], "stopped": stopped}

    def _next_trial(self, ostudy: Any) -> Any:
        """The trial to run next (None: the study is complete; a string: why this worker stops)."""
        import optuna
        from optuna.trial import TrialState

        lock = self.study.output_root / LOCKS_DIR / "ask.lock"
        n_trials = self.study.n_trials
        while True:
            with file_lock(lock):
                number, self.trial_number = getattr(self, "trial_number", None), None
                if number is not None and (trial := reattach(ostudy, number)) is not None:
                    return trial  # requeued: continue our trial, since nobody took it over
                optuna.storages.fail_stale_trials(ostudy)
                trials = ostudy.get_trials(deepcopy=False)
                done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
                running = sum(t.state == TrialState.RUNNING for t in trials)
                failed = sum(is_failure(t) for t in trials)
                if done >= n_trials:
                    return None
                if failed > max(n_trials, 3) and not any(t.state == TrialState.WAITING for t in trials):
                    return f"stopped: {failed} trials failed (see `suite tune status`)"
                if done + running < n_trials:
                    trial = ostudy.ask()
                    trial.set_user_attr("worker", self._job_id())
                    return trial
            self._beat("waiting")
            time.sleep(POLL_S)

    def _run_trial(self, ostudy: Any, trial: Any) -> TrialOutcome:
        from optuna.trial import TrialState

        from suite.config import run_id

        study = self.study
        params = _suggest(trial, study)
        cfg = self._trial_config(ostudy, trial, params)
        if cfg is None:
            return TrialOutcome(trial.number, "fail")
        rid = run_id(cfg)
        paths = RunPaths.of(cfg.run.output_root, rid)
        trial.set_user_attr("run_id", rid)
        trial.set_user_attr("run_dir", str(paths.root))
        trial.set_user_attr("values", {k: decode_param(study.spec.space[k], v) for k, v in params.items()})
        callback = PruneCallback(trial, study, paths)
        self._beat("training", trial.number)
        try:
            # Heartbeat first: waiting for another trial of the same run still counts as alive.
            with _Heartbeat(trial, study.spec.heartbeat_s, lambda: self._beat("training", trial.number)), \
                    file_lock(study.output_root / LOCKS_DIR / f"{rid}.lock"):
                callback.backfill()
                result = train_preemptible(
                    cfg, paths, callbacks=[callback], before_requeue=lambda: setattr(self, "trial_number", trial.number)
                )
        except Exception as err:  # noqa: BLE001 - recorded in the trial and in the run's failure.json
            trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:500])
            self._tell(ostudy, trial, state=TrialState.FAIL)
            return TrialOutcome(trial.number, "fail", run_id=rid)
        return self._record(ostudy, trial, result, callback)

    def _trial_config(self, ostudy: Any, trial: Any, params: dict[str, Any]) -> Any | None:
        """The trial's validated run config, checked on this node (None: refused, the trial failed)."""
        from optuna.trial import TrialState

        from suite.config import ConfigError, validate_config
        from suite.train.preflight import check_machine

        config = self.study.trial_config(params, number=trial.number)
        if self.threads is not None:
            config.setdefault("run", {})["threads"] = self.threads  # output-only
        try:
            cfg = validate_config(config, prefix=f"trial {trial.number}: ")
            check_machine(cfg, prefix=f"trial {trial.number}: ")  # files and models as this node sees them
        except ConfigError as err:
            trial.set_user_attr("error", str(err))
            ostudy.tell(trial, state=TrialState.FAIL)
            return None
        return cfg

    def _record(self, ostudy: Any, trial: Any, result: Any, callback: PruneCallback) -> TrialOutcome:
        """Tell the storage how the trial's run ended (finished, pruned, or interrupted: given back)."""
        from optuna.trial import TrialState

        rid, outcome = result.run_id, result.state.value  # finished | pruned | interrupted
        if outcome in ("finished", "pruned"):
            callback.backfill()  # epochs the trainer did not report (a run finished before this trial)
        if outcome == "pruned":
            trial.set_user_attr("prune_reason", (result.summary or {}).get("prune_reason"))
            self._tell(ostudy, trial, state=TrialState.PRUNED)
            return TrialOutcome(trial.number, "pruned", run_id=rid)
        if outcome == "finished":
            metric = self.study.spec.objective.metric
            value = objective_value(metric, result.summary or {}, read_jsonl(callback.paths.metrics))
            if value is None:
                trial.set_user_attr("error", f"the run did not record {metric}")
                self._tell(ostudy, trial, state=TrialState.FAIL)
                return TrialOutcome(trial.number, "fail", run_id=rid)
            self._tell(ostudy, trial, values=value)
            return TrialOutcome(trial.number, "complete", value, rid)
        # Interrupted with a checkpoint, and not requeued with this trial: another worker resumes it.
        self._give_back(ostudy, trial)
        return TrialOutcome(trial.number, "interrupted", run_id=rid)

    def _tell(self, ostudy: Any, trial: Any, **kwargs: Any) -> None:
        try:
            ostudy.tell(trial, **kwargs)
        except (ValueError, RuntimeError) as err:
            # GridSampler calls Study.stop() after the last grid point, which raises outside
            # Study.optimize once the state is stored; a trial failed as stale meanwhile raises too
            # (its retry will find the run done).
            if "Study.stop" not in str(err):
                print(f"trial {trial.number}: could not record its result ({err})", file=sys.stderr)

    def _give_back(self, ostudy: Any, trial: Any) -> None:
        """A stopped worker's trial: handed back, its continuation enqueued at once (no retry used)."""
        try:
            give_back(ostudy, trial)
        except (ValueError, RuntimeError) as err:  # failed as stale meanwhile: its retry resumes the run
            print(f"trial {trial.number}: could not hand it back ({err})", file=sys.stderr)
