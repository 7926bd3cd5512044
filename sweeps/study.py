"""Study files: Optuna tuning over the suite's run config, one typed schema checked when read.

A study file is YAML, like a sweep file: the keys every sweep and study file has
(:mod:`sweeps.schema`: ``name``, ``base``, ``resources``, ``tracking``, ...), plus a search space
over dotted run config keys (:mod:`sweeps.study_space`), an objective (:mod:`sweeps.study_metrics`)
and the Optuna pieces. Every key has one default, here; an unknown key fails with the valid keys,
and every message starts with the file and the dotted field.

.. code-block:: yaml

    name: demo-tune                      # study name; W&B group; default output folder runs/<name>
    base: base/vit_micro.yaml            # as in sweep files ({config, overrides} or a file)
    space:                               # dotted run config key -> distribution
      mix.mask_ratio: {type: float, low: 0.3, high: 0.8, step: 0.05}
      mix.prob: {type: float, low: 0.2, high: 1.0}
      optim.lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
      mix.mask_mode: [block, random]     # a list is a categorical
    objective: {metric: best_top1, direction: maximize}
    n_trials: 20
    sampler: {name: tpe, seed: 0}        # tpe | random | grid | cmaes
    pruner: {name: median, params: {n_warmup_steps: 1}}   # median | hyperband | none
    storage: null                        # default: a journal file in the study folder; or an RDB URL
    workers: 2
    resources: {gpus_per_node: 1}

:func:`load_study` reads a file into a :class:`Study` and checks everything that can be checked
before a trial runs: the schema, the base run config, every distribution's bounds and choices
against the run config schema, that the objective is a metric the runs record, and that the
sampler and pruner can be built with the given parameters (CMA-ES needs the ``cmaes`` package).
It writes nothing, so a bad file leaves no study behind.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from suite.config import ConfigError, validate_config
from sweeps.schema import FileSpec, LoadedFile, Strict, SweepError, apply_tracking, read_file
from sweeps.study_metrics import (
    PER_EPOCH,
    RUNNING_MAX,
    ObjectiveSpec,
    intermediate_value,
    objective_value,
    recorded_problem,
)
from sweeps.study_space import (
    CategoricalParam,
    FloatParam,
    IntParam,
    Param,
    decode_param,
    encode_choice,
    infer_type,
)
from sweeps.values import apply_values

__all__ = [
    "JOURNAL_FILE",
    "CategoricalParam",
    "FloatParam",
    "IntParam",
    "ObjectiveSpec",
    "PrunerSpec",
    "SamplerSpec",
    "Study",
    "StudyError",
    "StudySpec",
    "decode_param",
    "encode_choice",
    "grid_size",
    "grid_space",
    "intermediate_value",
    "load_study",
    "make_pruner",
    "make_sampler",
    "objective_value",
    "output_fields",
    "report_metric",
]

JOURNAL_FILE = "study.journal"
SAMPLERS: tuple[str, ...] = ("tpe", "random", "grid", "cmaes")
PRUNERS: tuple[str, ...] = ("median", "hyperband", "none")
_PARAMS: dict[str, type[BaseModel]] = {"float": FloatParam, "int": IntParam, "categorical": CategoricalParam}


class StudyError(SweepError):
    """A study file that cannot be run; the message names the file and the field."""


class SamplerSpec(Strict):
    """The Optuna sampler: ``tpe`` (default), ``random``, ``grid``, ``cmaes``; ``params`` go to its constructor."""

    name: Literal["tpe", "random", "grid", "cmaes"] = "tpe"
    seed: int | None = Field(0, description="sampler seed (worker k uses seed + k); null for a random seed")
    params: dict[str, Any] = Field(default_factory=dict, description="constructor keywords, e.g. n_startup_trials")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class PrunerSpec(Strict):
    """The Optuna pruner: ``median`` (default), ``hyperband``, ``none``; ``params`` go to its constructor."""

    name: Literal["median", "hyperband", "none"] = "median"
    params: dict[str, Any] = Field(default_factory=dict, description="constructor keywords, e.g. n_warmup_steps")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if value is None:
            return {"name": "none"}
        return {"name": value} if isinstance(value, str) else value


class StudySpec(FileSpec):
    """A whole study file: the keys of every sweep and study file, then the search and its Optuna pieces."""

    WHAT: ClassVar[str] = "study"
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {**FileSpec.CHOICES, "sampler.name": SAMPLERS,
                                                     "pruner.name": PRUNERS}

    space: dict[str, Param] = Field(description="dotted run config key -> distribution")
    objective: ObjectiveSpec = Field(default_factory=ObjectiveSpec, description="metric and direction")
    n_trials: int | None = Field(None, gt=0, description="finished trials to reach (grid: default the grid size)")
    sampler: SamplerSpec = Field(default_factory=SamplerSpec, description="tpe | random | grid | cmaes")
    pruner: PrunerSpec = Field(default_factory=PrunerSpec, description="median | hyperband | none")
    storage: str | None = Field(
        None, description=f"null: <output_root>/{JOURNAL_FILE} (journal file); or an RDB URL (sqlite:///, postgresql://)"
    )
    workers: int = Field(1, gt=0, description="worker jobs pulling trials at the same time")
    heartbeat_s: int = Field(20, gt=0, description="a running trial records a heartbeat this often")
    grace_s: int | None = Field(None, gt=0, description="a trial without heartbeat for this long is failed and "
                                "retried (default 3 x heartbeat_s)")
    max_retries: int = Field(3, ge=0, description="retries of a trial whose worker died")

    @field_validator("space", mode="before")
    @classmethod
    def _space(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        if not value:
            raise ValueError("the search space is empty; give at least one dotted key -> distribution")
        out = {}
        for key, dist in value.items():
            if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
                raise ValueError(f"space key {key!r} must be a dotted run config key such as optim.lr")
            if key in ("seed", "run.seed"):
                raise ValueError(f"space key {key}: seeds are not tuned; use `suite tune best --seeds`")
            out[key] = infer_type(dist)
        return out

    @property
    def grace_period(self) -> int:
        return self.grace_s or 3 * self.heartbeat_s

    @classmethod
    def error_field(cls, loc: list[str]) -> tuple[str, type[BaseModel]]:
        """``space.<key>.<field>``: the distribution's tag (``float``, ...) is no key of the file."""
        if len(loc) >= 2 and loc[0] == "space":
            model = _PARAMS.get(loc[2], cls) if len(loc) >= 3 else cls
            return ".".join(["space", loc[1], *loc[3:]]), model
        return super().error_field(loc)

    @classmethod
    def error_message(cls, item: Any, loc: list[str], dotted: str) -> str | None:
        if item["type"] == "union_tag_invalid":
            return f"unknown type {item.get('input', {}).get('type')!r}; choose float, int or categorical"
        return None


@dataclass(frozen=True)
class Study(LoadedFile):
    """A loaded study file (:class:`~sweeps.schema.LoadedFile`): its trials, storage and direction."""

    spec: StudySpec

    @property
    def n_trials(self) -> int:
        if self.spec.n_trials is not None:
            return self.spec.n_trials
        return grid_size(self.spec)

    @property
    def storage_url(self) -> str:
        """The storage: an RDB URL, or ``journal:<file>`` for the default journal file."""
        return self.spec.storage or f"journal:{self.output_root / JOURNAL_FILE}"

    @property
    def direction(self) -> str:
        return self.spec.objective.resolved_direction

    def trial_config(self, params: dict[str, Any], *, number: int | None = None) -> dict[str, Any]:
        """The run config (nested dict, not yet validated) of a trial with these Optuna params."""
        values = {key: decode_param(self.spec.space[key], value) for key, value in params.items()}
        data = apply_values(self.base, values)
        return output_fields(self, data, number=number)


def output_fields(study: Study, data: dict[str, Any], *, number: int | None = None) -> dict[str, Any]:
    """Output-only fields of a trial's run (never part of a run id): output root, W&B group, tags, name."""
    data = apply_values(data, {"run.output_root": str(study.output_root)})
    tracking = data.setdefault("tracking", {})
    if not isinstance(tracking, dict):
        return data  # validation reports the malformed section
    extra = (f"study:{study.name}",) + ((f"trial:{number}",) if number is not None else ())
    apply_tracking(tracking, study.spec.tracking, group=study.name, extra_tags=extra)
    if number is not None:
        data["name"] = f"{study.name}-trial{number}"
    return data


def grid_size(spec: StudySpec) -> int:
    size = 1
    for dist in spec.space.values():
        values = dist.values()
        size *= len(values) if values is not None else 0
    return size


def grid_space(spec: StudySpec) -> dict[str, list[Any]]:
    """The search space of ``GridSampler`` (every distribution must be finite)."""
    return {key: list(dist.values() or []) for key, dist in spec.space.items()}


def report_metric(spec: StudySpec) -> str:
    """The per-epoch metric the pruner sees: the objective's own, or ``top1`` for summary-only ones."""
    metric = spec.objective.report or spec.objective.metric
    return metric if metric in PER_EPOCH or metric in RUNNING_MAX else "top1"



# ---- samplers and pruners -------------------------------------------------------------------------


def _construct(cls: Any, params: dict[str, Any], field: str) -> Any:
    names = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = [k for k in params if k not in names]
    if unknown:
        raise StudyError(f"{field}.params: unknown parameter(s) {', '.join(unknown)} of {cls.__name__}; "
                         f"valid: {', '.join(names)}")
    try:
        return cls(**params)
    except (TypeError, ValueError) as err:
        raise StudyError(f"{field}.params: {cls.__name__} refuses them: {err}") from None


def make_sampler(spec: StudySpec, *, worker: int = 0) -> Any:
    """The Optuna sampler of a study; worker ``k`` is seeded with ``seed + k`` so workers differ (grid: ``seed``)."""
    import optuna

    s = spec.sampler
    seed = None if s.seed is None else s.seed + worker
    params = dict(s.params)
    if s.name == "tpe":
        params.setdefault("seed", seed)
        if spec.workers > 1:
            params.setdefault("constant_liar", True)  # running trials count, so workers spread out
        return _construct(optuna.samplers.TPESampler, params, "sampler")
    if s.name == "random":
        return _construct(optuna.samplers.RandomSampler, {"seed": seed, **params}, "sampler")
    if s.name == "grid":
        # Every worker needs the same seed: a grid id indexes the sampler's own shuffled grid, so
        # workers with different orders would give one id different points (and repeat others).
        return _construct(optuna.samplers.GridSampler, {"search_space": grid_space(spec), "seed": s.seed, **params},
                          "sampler")
    if s.name == "cmaes":
        if importlib.util.find_spec("cmaes") is None:
            raise StudyError("sampler.name: cmaes needs the `cmaes` package, which is not installed here; "
                             "pip install cmaes, or use sampler tpe")
        return _construct(optuna.samplers.CmaEsSampler, {"seed": seed, **params}, "sampler")
    raise StudyError(f"sampler.name: unknown sampler {s.name!r}; choose one of {', '.join(SAMPLERS)}")


def make_pruner(spec: StudySpec) -> Any:
    """The Optuna pruner of a study (``none``: never prunes)."""
    import optuna

    p = spec.pruner
    if p.name == "median":
        return _construct(optuna.pruners.MedianPruner, dict(p.params), "pruner")
    if p.name == "hyperband":
        return _construct(optuna.pruners.HyperbandPruner, dict(p.params), "pruner")
    if p.name == "none":
        if p.params:
            raise StudyError("pruner.params: pruner none takes no parameters")
        return optuna.pruners.NopPruner()
    raise StudyError(f"pruner.name: unknown pruner {p.name!r}; choose one of {', '.join(PRUNERS)}")


# ---- loading --------------------------------------------------------------------------------------


def _check_space(study: Study) -> list[str]:
    """Every distribution's bounds and choices against the run config schema; one line per problem."""
    problems: list[str] = []
    for key, dist in study.spec.space.items():
        for probe in dist.probes():
            data = apply_values(study.base, {key: probe})
            try:
                validate_config(output_fields(study, data))
            except ConfigError as err:
                first = str(err).splitlines()[0]
                problems.append(f"{study.path}: space.{key}: value {probe!r}: {first}")
                break
    return problems


def _check_grid(study: Study) -> list[str]:
    spec = study.spec
    if spec.sampler.name != "grid":
        return []
    problems = [
        f"{study.path}: space.{key}: sampler grid needs a finite set of values: give step, or a list of choices"
        for key, dist in spec.space.items() if dist.values() is None
    ]
    if not problems and spec.n_trials is not None and spec.n_trials > grid_size(spec):
        problems.append(f"{study.path}: n_trials: the grid has {grid_size(spec)} points, but n_trials is "
                        f"{spec.n_trials}; lower it or leave it out (default: the grid size)")
    return problems


def _check_objective(study: Study, resolved: dict[str, Any]) -> list[str]:
    """The objective (and the pruner's metric) must be recorded by runs of the base config."""
    spec = study.spec
    problems = []
    for field, metric, per_epoch in (("objective.metric", spec.objective.metric, False),
                                     ("objective.report", spec.objective.report, True)):
        problem = metric and recorded_problem(metric, resolved, per_epoch=per_epoch)
        if problem:
            problems.append(f"{study.path}: {field}: {problem}")
    if spec.n_trials is None and spec.sampler.name != "grid":
        problems.append(f"{study.path}: n_trials: required (only sampler grid defaults it to the grid size)")
    return problems


def load_study(path: Path | str, overrides: list[str] | None = None, *, output_root: Path | None = None) -> Study:
    """Read and validate a study file; nothing is written and no trial is created.

    Args:
        path: the study YAML file.
        overrides: ``key.sub=value`` run config overrides applied after ``base.overrides``.
        output_root: replaces the file's ``output_root``.

    Returns:
        The loaded :class:`Study`.

    Raises:
        StudyError: the file, the base run config, the space, the objective, the sampler or the
            pruner is invalid; one line per problem, each naming the file and the field.

    Example:
        >>> study = load_study("sweeps/demo/tune.yaml")  # doctest: +SKIP
        >>> study.n_trials  # doctest: +SKIP
        16
    """
    spec, path, base, root = read_file(path, StudySpec, overrides, output_root=output_root, error=StudyError)
    study = Study(spec=spec, path=path, base=base, output_root=root)
    try:
        resolved = validate_config(output_fields(study, dict(base)))
    except ConfigError as err:
        raise StudyError("\n".join(f"{path}: base: {line}" for line in str(err).splitlines())) from None
    problems = _check_space(study) + _check_grid(study) + _check_objective(study, json.loads(resolved.model_dump_json()))
    if problems:
        raise StudyError("\n".join(problems))
    for factory in (make_sampler, make_pruner):
        try:
            factory(spec)
        except StudyError as err:
            raise StudyError(f"{path}: {err}") from None
    return study
