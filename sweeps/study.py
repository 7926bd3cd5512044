"""Study files: Optuna tuning over the suite's run config, one typed schema checked when read.

A study file is YAML, like a sweep file: the same ``base``, ``resources`` and ``tracking`` blocks
(:mod:`sweeps.spec`), plus a search space over dotted run config keys, an objective and the
Optuna pieces. Every key has one default, here; an unknown key fails with the valid keys, and
every message starts with the file and the dotted field.

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
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from suite.config import ConfigError, read_yaml, validate_config
from sweeps.spec import BaseSpec, ResourcesSpec, SweepError, TrackingSpec, apply_tracking, resolve_base
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
    "load_study",
    "objective_value",
    "intermediate_value",
]

JOURNAL_FILE = "study.journal"
SAMPLERS: tuple[str, ...] = ("tpe", "random", "grid", "cmaes")
PRUNERS: tuple[str, ...] = ("median", "hyperband", "none")
EXECUTORS: tuple[str, ...] = ("auto", "slurm", "local", "debug")

# Objective metrics the run records write. Per-epoch ones are in every metrics.jsonl row;
# ``best_*`` are running maxima of a per-epoch metric; the rest are only in summary.json.
PER_EPOCH = ("top1", "top5", "val_loss", "ema_top1", "ema_top5")
RUNNING_MAX = {
    "best_top1": ("top1",),
    "best_top5": ("top5",),
    "best_ema_top1": ("ema_top1",),
    "best_top1_max": ("top1", "ema_top1"),
}
OCCLUSION = re.compile(r"^occ(\d+)_top1$")
MINIMIZED = ("val_loss",)


class StudyError(SweepError):
    """A study file that cannot be run; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _bounds(low: float, high: float, log: bool) -> None:
    if low > high:
        raise ValueError(f"low must be <= high, but got low={low!r}, high={high!r}")
    if log and low <= 0:
        raise ValueError(f"log scale needs low > 0, but got low={low!r}")


class FloatParam(_Strict):
    """A float in ``[low, high]``; ``log`` samples its logarithm uniformly; ``step`` discretises."""

    type: Literal["float"] = "float"
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        _bounds(self.low, self.high, self.log)
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined (Optuna samples either on a log scale or on a grid)")
        return self

    def values(self) -> list[float] | None:
        """The finite set of values (with ``step``), else None."""
        if self.step is None:
            return None
        n = int(math.floor((self.high - self.low) / self.step + 1e-9))
        return [round(self.low + i * self.step, 10) for i in range(n + 1)]

    def probes(self) -> list[Any]:
        return [self.low, self.high]


class IntParam(_Strict):
    """An integer in ``[low, high]`` (both included); ``log`` or ``step``."""

    type: Literal["int"] = "int"
    low: int
    high: int
    log: bool = False
    step: int = Field(1, gt=0)

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        _bounds(self.low, self.high, self.log)
        if self.log and self.step != 1:
            raise ValueError("log and step cannot be combined (Optuna samples either on a log scale or on a grid)")
        return self

    def values(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step))

    def probes(self) -> list[Any]:
        return [self.low, self.high]


class CategoricalParam(_Strict):
    """One of ``choices`` (any YAML values; lists such as a mask-ratio range ``[0.3, 0.7]`` too)."""

    type: Literal["categorical"] = "categorical"
    choices: list[Any]

    @field_validator("choices")
    @classmethod
    def _choices(cls, value: list[Any]) -> list[Any]:
        if not value:
            raise ValueError("choices is an empty list; give at least one value")
        encoded = [encode_choice(v) for v in value]
        if len(set(map(repr, encoded))) != len(encoded):
            raise ValueError(f"choices must be distinct, but got {value}")
        return value

    def values(self) -> list[Any]:
        return [encode_choice(v) for v in self.choices]

    def probes(self) -> list[Any]:
        return list(self.choices)


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


def encode_choice(value: Any) -> Any:
    """Optuna stores categorical choices as None/bool/int/float/str: other values become JSON text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True)


class ObjectiveSpec(_Strict):
    """What a trial's value is: a metric of the run records and its direction."""

    metric: str = Field("best_top1", description="a summary.json metric, e.g. best_top1, top1, val_loss, occ50_top1")
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="default: minimize for val_loss, else maximize"
    )
    report: str | None = Field(
        None, description="per-epoch metric reported to the pruner (default: the objective's own, or top1)"
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"metric": value} if isinstance(value, str) else value

    @property
    def resolved_direction(self) -> str:
        return self.direction or ("minimize" if self.metric in MINIMIZED else "maximize")


class SamplerSpec(_Strict):
    """The Optuna sampler: ``tpe`` (default), ``random``, ``grid``, ``cmaes``; ``params`` go to its constructor."""

    name: Literal["tpe", "random", "grid", "cmaes"] = "tpe"
    seed: int | None = Field(0, description="sampler seed (worker k uses seed + k); null for a random seed")
    params: dict[str, Any] = Field(default_factory=dict, description="constructor keywords, e.g. n_startup_trials")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class PrunerSpec(_Strict):
    """The Optuna pruner: ``median`` (default), ``hyperband``, ``none``; ``params`` go to its constructor."""

    name: Literal["median", "hyperband", "none"] = "median"
    params: dict[str, Any] = Field(default_factory=dict, description="constructor keywords, e.g. n_warmup_steps")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if value is None:
            return {"name": "none"}
        return {"name": value} if isinstance(value, str) else value


class StudySpec(_Strict):
    """A whole study file."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="study name (letters, digits, . _ -)")
    description: str | None = Field(None, description="one line shown by status")
    base: BaseSpec = Field(default_factory=BaseSpec, description="run config file and/or dotted overrides")
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
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="scheduler request per worker")
    tracking: TrackingSpec = Field(default_factory=TrackingSpec, description="W&B project/group/tags")
    output_root: Path | None = Field(None, description="run folders and the study journal (default runs/<name>)")
    executor: Literal["auto", "slurm", "local", "debug"] = Field("auto", description="default for suite tune")

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
            out[key] = _infer_type(dist)
        return out

    @property
    def grace_period(self) -> int:
        return self.grace_s or 3 * self.heartbeat_s


def _infer_type(dist: Any) -> Any:
    """``[a, b]`` is a categorical; ``{low, high}`` without ``type`` is int when both are ints, else float."""
    if isinstance(dist, list):
        return {"type": "categorical", "choices": dist}
    if isinstance(dist, dict) and "type" not in dist:
        if "choices" in dist:
            return {"type": "categorical", **dist}
        ints = all(isinstance(dist.get(k), int) and not isinstance(dist.get(k), bool) for k in ("low", "high"))
        return {"type": "int" if ints and not isinstance(dist.get("step"), float) else "float", **dist}
    return dist


@dataclass(frozen=True)
class Study:
    """A loaded study file: its spec, where it lives, its base run config and output root."""

    spec: StudySpec
    path: Path
    base: dict[str, Any]
    output_root: Path

    @property
    def name(self) -> str:
        return self.spec.name

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


def decode_param(dist: Any, value: Any) -> Any:
    """An Optuna param value back to the run config value (categorical JSON text back to lists)."""
    if isinstance(dist, CategoricalParam):
        for choice in dist.choices:
            if encode_choice(choice) == value:
                return choice
    return value


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


# ---- recorded metrics -----------------------------------------------------------------------------


def _recorded_problem(metric: str, config: dict[str, Any], *, per_epoch: bool) -> str | None:
    """Why runs of this config would not record ``metric`` (None when they do)."""
    ema = bool((config.get("optim") or {}).get("ema_decay"))
    occlusion = [round(float(f) * 100) for f in (config.get("eval") or {}).get("occlusion") or []]
    known = [*PER_EPOCH, *RUNNING_MAX] + ([] if per_epoch else [f"occ{p}_top1" for p in occlusion])
    match = OCCLUSION.match(metric)
    if match and not per_epoch:
        if int(match.group(1)) in occlusion:
            return None
        return (f"{metric} is not recorded: the base config's eval.occlusion is "
                f"{(config.get('eval') or {}).get('occlusion')}; add {int(match.group(1)) / 100:g} there")
    if metric not in known:
        kind = "per-epoch metric" if per_epoch else "metric"
        return f"unknown {kind} {metric!r}: runs record {', '.join(known)}"
    if "ema" in metric and not ema:
        return f"{metric} is only recorded with an EMA model; set optim.ema_decay in the base config"
    return None


def report_metric(spec: StudySpec) -> str:
    """The per-epoch metric the pruner sees: the objective's own, or ``top1`` for summary-only ones."""
    metric = spec.objective.report or spec.objective.metric
    return metric if metric in PER_EPOCH or metric in RUNNING_MAX else "top1"


def intermediate_value(metric: str, rows: list[dict[str, Any]]) -> float | None:
    """The value of a per-epoch (or running-max) metric after the last of ``rows``; None if not evaluated."""
    if metric in RUNNING_MAX:
        seen = [r[k] for r in rows for k in RUNNING_MAX[metric] if r.get(k) is not None]
        return max(seen) if seen else None
    if not rows or rows[-1].get(metric) is None:
        return None
    return float(rows[-1][metric])


def objective_value(metric: str, summary: dict[str, Any], rows: list[dict[str, Any]]) -> float | None:
    """The objective of a finished run: its summary value, else computed from its metrics rows."""
    if summary.get(metric) is not None:
        return float(summary[metric])
    if metric in PER_EPOCH or metric in RUNNING_MAX:
        return intermediate_value(metric, rows)
    return None


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

_SECTIONS: dict[str, type[BaseModel]] = {
    "base": BaseSpec,
    "resources": ResourcesSpec,
    "tracking": TrackingSpec,
    "objective": ObjectiveSpec,
    "sampler": SamplerSpec,
    "pruner": PrunerSpec,
}


def _describe(model: type[BaseModel]) -> str:
    parts = []
    for name, field in model.model_fields.items():
        if field.is_required():
            parts.append(f"{name} (required)")
            continue
        default = field.get_default(call_default_factory=True)
        parts.append(f"{name}={'{...}' if isinstance(default, BaseModel) else repr(default)}")
    return ", ".join(parts)


def _param_model(loc: list[str]) -> type[BaseModel] | None:
    if len(loc) >= 3 and loc[0] == "space":
        return {"float": FloatParam, "int": IntParam, "categorical": CategoricalParam}.get(loc[2])
    return None


def _format_error(err: ValidationError, path: Path) -> str:
    lines = []
    for item in err.errors():
        loc = [str(p) for p in item["loc"]]
        msg = item["msg"].removeprefix("Value error, ")
        shown = [p for i, p in enumerate(loc) if not (i == 2 and loc[0] == "space")]  # drop the union tag
        dotted = ".".join(shown) or "(study)"
        if loc and loc[0] == "space" and len(loc) >= 2:
            dotted = f"space.{loc[1]}" + ("." + ".".join(loc[3:]) if len(loc) > 3 else "")
        if item["type"] == "extra_forbidden":
            parent = _param_model(loc) or (_SECTIONS.get(loc[0], StudySpec) if len(loc) > 1 else StudySpec)
            msg = f"unknown key; valid keys: {_describe(parent)}"
        elif item["type"] == "literal_error" and loc[-1] == "name" and loc[0] in ("sampler", "pruner"):
            choices = SAMPLERS if loc[0] == "sampler" else PRUNERS
            msg = f"unknown {loc[0]} {item.get('input')!r}; choose one of {', '.join(choices)}"
        elif item["type"] == "literal_error" and loc[-1] == "executor":
            msg = f"unknown executor {item.get('input')!r}; choose one of {', '.join(EXECUTORS)}"
        elif item["type"] == "union_tag_invalid":
            msg = f"unknown type {item.get('input', {}).get('type')!r}; choose float, int or categorical"
        elif item["type"] in ("int_parsing", "float_parsing", "int_type", "float_type", "int_from_float",
                              "list_type", "string_type", "missing"):
            msg = f"{msg}" + ("" if item["type"] == "missing" else f" (got {item.get('input')!r})")
        lines.append(f"{path}: {dotted}: {msg}")
    return "\n".join(lines)


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
    path = Path(path).expanduser().absolute()
    try:
        raw = read_yaml(path)
    except ConfigError as err:
        raise StudyError(str(err)) from None
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as err:
        raise StudyError(_format_error(err, path)) from None
    try:
        base = resolve_base(path, spec.base, overrides)
    except SweepError as err:
        raise StudyError(str(err)) from None
    root = output_root or spec.output_root or Path("runs") / spec.name
    study = Study(spec=spec, path=path, base=base, output_root=Path(os.path.abspath(Path(root).expanduser())))
    try:
        validate_config(output_fields(study, dict(base)))
    except ConfigError as err:
        raise StudyError("\n".join(f"{path}: base: {line}" for line in str(err).splitlines())) from None
    problems = _check_space(study) + _check_grid(study)
    resolved = json.loads(validate_config(output_fields(study, dict(base))).model_dump_json())
    for field, metric, per_epoch in (("objective.metric", spec.objective.metric, False),
                                     ("objective.report", spec.objective.report, True)):
        problem = metric and _recorded_problem(metric, resolved, per_epoch=per_epoch)
        if problem:
            problems.append(f"{path}: {field}: {problem}")
    if spec.n_trials is None and spec.sampler.name != "grid":
        problems.append(f"{path}: n_trials: required (only sampler grid defaults it to the grid size)")
    if problems:
        raise StudyError("\n".join(problems))
    for factory in (make_sampler, make_pruner):
        try:
            factory(spec)
        except StudyError as err:
            raise StudyError(f"{path}: {err}") from None
    return study
