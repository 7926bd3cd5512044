"""The study in its storage: open or create it, and read it back (status, best trial, plots).

Everything here reads the storage (:mod:`jobs.study_storage`) and the workers' heartbeat files;
only :func:`open_study` with ``create=True`` writes (the study record itself).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.study_storage import GIVEN_BACK, open_storage, storage_exists, storage_label
from suite.run.records import read_json
from sweeps.study import Study, StudyError, make_pruner, make_sampler

__all__ = ["WORKERS_DIR", "StudyStatus", "best_sweep", "open_study", "plot_study", "study_status"]

WORKERS_DIR = ".workers"  # one heartbeat file per live worker job, for status


def open_study(study: Study, *, worker: int = 0, create: bool = False) -> Any:
    """The Optuna study object (``create``: create it when it does not exist yet)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _quiet()
    spec = study.spec
    try:
        storage = open_storage(study.storage_url, heartbeat_s=spec.heartbeat_s, grace_s=spec.grace_period,
                               max_retries=spec.max_retries)
    except Exception as err:  # noqa: BLE001 - SQLAlchemy and OS errors: said in one line, naming the field
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise StudyError(
            f"{study.path}: storage: cannot open {storage_label(study.storage_url)} ({type(err).__name__}: {first}); "
            "give a SQLAlchemy URL whose folder exists (sqlite:////abs/path/study.db) or leave storage unset "
            "for the journal file in the study folder"
        ) from None
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
        state = "interrupted" if t.user_attrs.get(GIVEN_BACK) else t.state.name.lower()
        out[state] = out.get(state, 0) + 1
    return out



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
            "number": t.number, "state": "interrupted" if t.user_attrs.get(GIVEN_BACK) else t.state.name.lower(),
            "value": t.value,
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
