"""Tuning: Optuna workers that pull trials from a shared study, each trial an ordinary suite run.

:func:`tune` validates a study file (:func:`sweeps.study.load_study`), creates or loads the study
in its storage, and starts ``workers`` :class:`TuneWorker` jobs: one SLURM job array, or local
processes, or one worker in this process (``debug``). There is no batch barrier: every worker
loops on its own, asking the storage for the next trial as soon as its last one ended, until the
study holds ``n_trials`` finished (complete or pruned) trials.

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
step boundary, requeues (submitit), and continues the same trial when it starts again. A per-run
lock file makes sure that two trials with the same parameters never train one run directory at
once.

Who takes the next trial is decided under a lock file in the study folder, so the number of
trials created is exactly what the study needs (``finished + running < n_trials``); workers with
nothing left to take wait while other trials run (one of them may be lost and retried) and exit
when the study has ``n_trials`` finished trials.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit

from jobs.executors import (
    ExecutorError,
    checked_slurm_executor,
    local_executor,
    resolve_executor,
)
from jobs.study_storage import open_storage, storage_exists, storage_label
from jobs.worker import preemption_signal
from suite.run.records import RunPaths, atomic_write_json, clear_failure, read_json, read_jsonl
from suite.run.signals import GracefulStop
from sweeps.study import (
    CategoricalParam,
    FloatParam,
    Study,
    StudyError,
    decode_param,
    intermediate_value,
    make_pruner,
    make_sampler,
    objective_value,
    output_fields,
    report_metric,
)

__all__ = ["TuneReport", "TuneWorker", "best_sweep", "open_study", "plot_study", "study_status", "tune"]

Echo = Callable[[str], None]
POLL_S = 2.0
WORKERS_DIR = ".workers"
LOCKS_DIR = ".locks"


# ---- the study in its storage ---------------------------------------------------------------------


def open_study(study: Study, *, worker: int = 0, create: bool = False) -> Any:
    """The Optuna study object (``create``: create it when it does not exist yet)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _quiet()
    spec = study.spec
    storage = open_storage(study.storage_url, heartbeat_s=spec.heartbeat_s, grace_s=spec.grace_period,
                           max_retries=spec.max_retries)
    kwargs = dict(study_name=study.name, storage=storage, sampler=make_sampler(spec, worker=worker),
                  pruner=make_pruner(spec))
    if create:
        ostudy = optuna.create_study(direction=study.direction, load_if_exists=True, **kwargs)
        wanted = optuna.study.StudyDirection.MAXIMIZE if study.direction == "maximize" else (
            optuna.study.StudyDirection.MINIMIZE)
        if ostudy.direction != wanted:
            raise StudyError(f"{study.path}: objective.direction: the study {study.name} in "
                             f"{storage_label(study.storage_url)} was created to {ostudy.direction.name.lower()}; "
                             "use another study name or output_root")
        return ostudy
    return optuna.load_study(**kwargs)


def _quiet() -> None:
    """Silence Optuna's notes that do not apply here (ask/tell with heartbeats is what we want)."""
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


def _counts(trials: list[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in trials:
        out[t.state.name.lower()] = out.get(t.state.name.lower(), 0) + 1
    return out


@contextmanager
def _file_lock(path: Path, *, blocking: bool = True) -> Iterator[bool]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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


# ---- the worker -----------------------------------------------------------------------------------


class _Heartbeat:
    """Records the trial's heartbeat (and the worker's) every ``interval`` seconds in a thread."""

    def __init__(self, storage: Any, trial_id: int, interval: float, beat: Callable[[], None]) -> None:
        self.storage, self.trial_id, self.interval, self.beat = storage, trial_id, interval, beat
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.storage.record_heartbeat(self.trial_id)
            self.beat()
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


class PruneCallback:
    """The trainer callback of a trial: report each epoch's value, return a reason when pruned."""

    def __init__(self, trial: Any, study: Study, paths: RunPaths) -> None:
        self.trial, self.paths = trial, paths
        self.metric = report_metric(study.spec)
        self.pruner = study.spec.pruner.name
        self.reported: set[int] = set(trial.study._storage.get_trial(trial._trial_id).intermediate_values)

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
        self.trial_id: int | None = None  # a trial this worker continues after a requeue

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Requeue with the same object: the trial id it continues, the run state is on disk."""
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
            with _file_lock(lock):
                if self.trial_id is not None:  # requeued: continue our trial if nobody took it over
                    trial_id, self.trial_id = self.trial_id, None
                    if ostudy._storage.get_trial(trial_id).state == TrialState.RUNNING:
                        ostudy._storage.record_heartbeat(trial_id)  # before others see it as stale
                        return optuna.Trial(ostudy, trial_id)
                optuna.storages.fail_stale_trials(ostudy)
                trials = ostudy.get_trials(deepcopy=False)
                done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
                running = sum(t.state == TrialState.RUNNING for t in trials)
                failed = sum(t.state == TrialState.FAIL for t in trials)
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

        from suite.config import ConfigError, run_id, validate_config
        from suite.train.preflight import check_machine
        from suite.train.trainer import train

        study = self.study
        params = _suggest(trial, study)
        config = study.trial_config(params, number=trial.number)
        if self.threads is not None:
            config.setdefault("run", {})["threads"] = self.threads  # output-only
        try:
            cfg = validate_config(config, prefix=f"trial {trial.number}: ")
            check_machine(cfg, prefix=f"trial {trial.number}: ")  # files and models as this node sees them
        except ConfigError as err:
            trial.set_user_attr("error", str(err))
            ostudy.tell(trial, state=TrialState.FAIL)
            return TrialOutcome(trial.number, "fail")
        rid = run_id(cfg)
        paths = RunPaths.of(cfg.run.output_root, rid)
        trial.set_user_attr("run_id", rid)
        trial.set_user_attr("run_dir", str(paths.root))
        trial.set_user_attr("values", {k: decode_param(study.spec.space[k], v) for k, v in params.items()})
        callback = PruneCallback(trial, study, paths)
        preempt = preemption_signal()
        submitit_handler = signal.getsignal(preempt)
        stop = GracefulStop((signal.SIGTERM, signal.SIGUSR1, signal.SIGINT, preempt))
        self._beat("training", trial.number)
        storage = ostudy._storage
        try:
            # Heartbeat first: waiting for another trial of the same run still counts as alive.
            with _Heartbeat(
                storage, trial._trial_id, study.spec.heartbeat_s, lambda: self._beat("training", trial.number)
            ), _file_lock(study.output_root / LOCKS_DIR / f"{rid}.lock"), stop:
                callback.backfill()
                result = train(cfg, callbacks=[callback], stop=stop, progress=False)
            outcome = result.state.value  # finished | pruned | interrupted
        except Exception as err:  # noqa: BLE001 - recorded in the trial and in the run's failure.json
            if not stop.requested:
                trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:500])
                self._tell(ostudy, trial, state=TrialState.FAIL)
                return TrialOutcome(trial.number, "fail", run_id=rid)
            # A stop signal also ends W&B's service process on SLURM, whose next call then raises:
            # not a training failure, the checkpoint is on disk (as jobs.worker does for sweep runs).
            clear_failure(paths)
            outcome, result = "interrupted", None
        if outcome in ("finished", "pruned"):
            callback.backfill()  # epochs the trainer did not report (a run finished before this trial)
        if outcome == "pruned":
            trial.set_user_attr("prune_reason", (result.summary or {}).get("prune_reason"))
            self._tell(ostudy, trial, state=TrialState.PRUNED)
            return TrialOutcome(trial.number, "pruned", run_id=rid)
        if outcome == "finished":
            value = objective_value(study.spec.objective.metric, result.summary or {}, read_jsonl(paths.metrics))
            if value is None:
                trial.set_user_attr("error", f"the run did not record {study.spec.objective.metric}")
                self._tell(ostudy, trial, state=TrialState.FAIL)
                return TrialOutcome(trial.number, "fail", run_id=rid)
            self._tell(ostudy, trial, values=value)
            return TrialOutcome(trial.number, "complete", value, rid)
        # Interrupted: the run is checkpointed.
        if preempt in stop.received and callable(submitit_handler):
            self.trial_id = trial._trial_id  # continue this trial after the requeue
            submitit_handler(preempt, None)  # pickles self, requeues the job and exits
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
        """A stopped worker's trial: fail it and enqueue its retry at once (resumes from the checkpoint)."""
        from optuna.trial import TrialState

        from jobs.study_storage import retry_callback

        self._tell(ostudy, trial, state=TrialState.FAIL)
        frozen = ostudy._storage.get_trial(trial._trial_id)
        if frozen.state == TrialState.FAIL:
            retry_callback(self.study.spec.max_retries)(ostudy, frozen)


# ---- dispatch -------------------------------------------------------------------------------------


@dataclass
class TuneReport:
    """What ``suite tune`` did."""

    executor: str
    workers: int
    job_ids: list[str] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    failed_workers: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _check_slurm(study: Study, workers: int) -> Any:
    return checked_slurm_executor(
        study.path, study.spec.resources, folder=study.output_root / ".submitit", job_name=study.name,
        tasks=workers, error=StudyError,
    )


def _check_machine(study: Study) -> None:
    """The base config's files and models as this machine sees them (the space's values are schema-checked)."""
    from suite.config import ConfigError, validate_config
    from suite.train.preflight import check_machine

    try:
        check_machine(validate_config(output_fields(study, dict(study.base))))
    except ConfigError as err:
        lines = [f"{study.path}: base: {line}" for line in str(err).splitlines()]
        raise StudyError("\n".join(lines) + "\n(--no-check-paths leaves this check to each trial)") from None


def tune(
    study: Study,
    *,
    executor: str | None = None,
    workers: int | None = None,
    wait: bool = True,
    check_paths: bool = True,
    echo: Echo | None = None,
) -> TuneReport:
    """Create (or load) the study and run its workers until it has ``n_trials`` finished trials.

    Args:
        study: the loaded study file.
        executor: ``auto``, ``slurm``, ``local`` or ``debug`` (default: the file's).
        workers: worker jobs (default: the file's ``workers``; ``debug`` always runs one).
        wait: SLURM: poll until every worker has ended (local and debug always wait).
        check_paths: refuse a base config whose data, checkpoints or model this machine lacks
            (turn off when only the compute nodes see them; each trial then checks on its node).
        echo: where progress lines go.

    Raises:
        StudyError: invalid executor or resources; nothing was created or submitted.
    """
    say = echo or (lambda line: None)
    start = time.perf_counter()
    try:
        kind = resolve_executor(executor or study.spec.executor)
    except ExecutorError as err:
        raise StudyError(f"{study.path}: executor: {err}") from None
    count = 1 if kind == "debug" else (workers or study.spec.workers)
    if count < 1:
        raise StudyError(f"--workers must be >= 1, but got {count}")
    if check_paths:
        _check_machine(study)
    slurm_exec = _check_slurm(study, count) if kind == "slurm" else None
    ostudy = open_study(study, create=True)
    ostudy.set_user_attr("study_file", str(study.path))
    report = TuneReport(kind, count)
    finished = sum(t.state.name in ("COMPLETE", "PRUNED") for t in ostudy.get_trials(deepcopy=False))
    say(f"study {study.name}: {finished}/{study.n_trials} trials finished; storage "
        f"{storage_label(study.storage_url)}")
    if finished >= study.n_trials:
        say("nothing to do: raise n_trials in the study file to extend it")
        return report
    folder = study.output_root / ".submitit"
    if kind == "debug":
        job = submitit.DebugExecutor(folder=str(folder / "%j")).submit(TuneWorker(study, 0, None))
        report.job_ids.append(str(job.job_id))
        report.results.append(job.result() if sys.stdin.isatty() else job.submission().result())
    elif kind == "local":
        threads = max(1, _cpus() // count)
        local = local_executor(folder, study.spec.resources)
        jobs = [local.submit(TuneWorker(study, k, threads)) for k in range(count)]
        report.job_ids = [str(j.job_id) for j in jobs]
        say(f"started {count} local workers (pids {', '.join(report.job_ids)}, {threads} threads each)")
        _wait_local(jobs, report, say)
    else:
        slurm_exec.update_parameters(array_parallelism=count)
        with slurm_exec.batch():
            jobs = [slurm_exec.submit(TuneWorker(study, k, None)) for k in range(count)]
        report.job_ids = [str(j.job_id) for j in jobs]
        say(f"submitted {count} workers as SLURM job array {report.job_ids[0].split('_')[0]}")
        if wait:
            _wait_local(jobs, report, say)
    report.seconds = time.perf_counter() - start
    return report


def _wait_local(jobs: list[Any], report: TuneReport, say: Echo) -> None:
    try:
        pending = list(jobs)
        while pending:
            time.sleep(1.0)
            for job in [j for j in pending if j.done()]:
                pending.remove(job)
                try:
                    result = job.result()
                    report.results.append(result)
                    say(f"worker {result['worker']} ended ({result['stopped']}): {len(result['trials'])} trials")
                except Exception as err:  # noqa: BLE001 - reported; the study survives a lost worker
                    lines = [line for line in str(err).splitlines() if line.strip()]
                    report.failed_workers.append(str(job.job_id))
                    say(f"worker job {job.job_id} failed: {lines[-1] if lines else type(err).__name__}")
    except KeyboardInterrupt:
        say("interrupted: workers checkpoint their runs; `suite tune` again resumes them")
        for job in jobs:
            if not job.done():
                job.cancel()
        raise


# ---- status, best, plots --------------------------------------------------------------------------


@dataclass
class StudyStatus:
    name: str
    storage: str
    n_trials: int
    direction: str
    metric: str
    counts: dict[str, int]
    best: dict[str, Any] | None
    trials: list[dict[str, Any]]
    workers_alive: list[dict[str, Any]]


def study_status(study: Study) -> StudyStatus:
    """Trials by state, the best trial, every trial's row, and the workers alive now.

    Raises:
        StudyError: the study has not been started (no storage yet).
    """
    if not storage_exists(study.storage_url):
        raise StudyError(f"{study.path}: no study yet at {storage_label(study.storage_url)}; "
                         f"start it with `suite tune {study.path}`")
    import optuna

    try:
        ostudy = open_study(study)
    except KeyError:
        raise StudyError(f"{study.path}: no study named {study.name} in {storage_label(study.storage_url)}") from None
    trials = ostudy.get_trials(deepcopy=False)
    rows = []
    for t in trials:
        rows.append({
            "number": t.number, "state": t.state.name.lower(), "value": t.value,
            "params": t.user_attrs.get("values") or t.params, "run_id": t.user_attrs.get("run_id"),
            "epochs": len(t.intermediate_values), "retry_of": t.system_attrs.get("failed_trial"),
            "error": t.user_attrs.get("error"),
        })
    best = None
    if any(t.state == optuna.trial.TrialState.COMPLETE for t in trials):
        b = ostudy.best_trial
        best = {"number": b.number, "value": b.value, "params": b.user_attrs.get("values") or b.params,
                "run_id": b.user_attrs.get("run_id")}
    alive = []
    for path in sorted((study.output_root / WORKERS_DIR).glob("*.json")):
        record = read_json(path) or {}
        if record.get("state") != "exited" and time.time() - record.get("time", 0) < study.spec.grace_period:
            alive.append({"job": path.stem, **record})
    return StudyStatus(study.name, storage_label(study.storage_url), study.n_trials, study.direction,
                       study.spec.objective.metric, _counts(trials), best, rows, alive)


def best_sweep(study: Study, *, seeds: list[int], write: Path | None = None) -> dict[str, Any]:
    """The best trial's parameters as a seeded sweep file (``suite sweep launch`` runs it).

    The sweep's base is the study's base with the best values as overrides; its name is
    ``<study>-best`` and its runs go to ``runs/<study>-best``.
    """
    status = study_status(study)
    if status.best is None:
        raise StudyError(f"{study.path}: no complete trial yet; wait for `suite tune status` to show one")
    spec = study.spec
    overrides = dict(spec.base.overrides)
    overrides.update(status.best["params"])
    base: dict[str, Any] = {"overrides": overrides}
    if spec.base.config is not None:
        config = spec.base.config if spec.base.config.is_absolute() else study.path.parent / spec.base.config
        where = (write.absolute().parent if write else Path.cwd())
        base["config"] = os.path.relpath(config.resolve(), where)
    sweep: dict[str, Any] = {
        "name": f"{study.name}-best",
        "description": (f"best trial {status.best['number']} of study {study.name} "
                        f"({spec.objective.metric} {status.best['value']:.4g}), {len(seeds)} seeds"),
        "base": base,
        "seeds": list(seeds),
        "resources": spec.resources.model_dump(exclude_defaults=True),
        "tracking": spec.tracking.model_dump(exclude_defaults=True),
    }
    sweep = {k: v for k, v in sweep.items() if v != {}}
    if write is not None:
        import yaml

        write.parent.mkdir(parents=True, exist_ok=True)
        text = f"# The best trial of {study.path}, as a seeded sweep: suite sweep launch {write}\n"
        write.write_text(text + yaml.safe_dump(json.loads(json.dumps(sweep)), sort_keys=False))
    return sweep


def plot_study(study: Study, out: Path | None = None) -> dict[str, Path | str]:
    """Optimisation history, parameter importances and intermediate values as PNG files.

    Returns:
        plot name -> written file, or the reason it could not be drawn (e.g. too few trials).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    ostudy = open_study(study)
    out = out or study.output_root / "plots"
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path | str] = {}
    import warnings

    for name, fn in (("optimization_history", ovm.plot_optimization_history),
                     ("param_importances", ovm.plot_param_importances),
                     ("intermediate_values", ovm.plot_intermediate_values)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = fn(ostudy)
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).get_figure()
            fig.set_size_inches(7, 4.5)
            fig.tight_layout()
            path = out / f"{name}.png"
            fig.savefig(path, dpi=120)
            plt.close(fig)
            written[name] = path
        except (ValueError, RuntimeError, ZeroDivisionError) as err:
            written[name] = f"not drawn: {err}"
    return written
