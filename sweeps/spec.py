"""Sweep files: one typed schema, checked when the file is read.

A sweep file is YAML. Every key has one default, here; an unknown key fails with the valid
keys and their defaults (the idea of submitit's ``_internal_update_parameters``), and every
message starts with the file and the dotted field, so it says what to fix.

.. code-block:: yaml

    name: demo-mask-ratio            # also the W&B group and the default output folder
    base:
      config: base/vit_micro.yaml    # a run config, relative to this file (optional)
      overrides:                     # dotted keys applied on top of it
        schedule.epochs: 5
    axes:                            # dotted key -> list of values
      mix.mask_ratio: [0.3, 0.5, 0.7]
    mode: grid                       # grid | zip | one_at_a_time
    seeds: [0, 1, 2]
    resources: {gpus_per_node: 1, timeout_min: 60}

:func:`load_sweep` reads a file into a :class:`Sweep`: the validated :class:`SweepSpec`, the
resolved base run config (a nested dict) and the absolute output root. Expanding it into runs
is :mod:`sweeps.expand`'s job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from suite.config import ConfigError, apply_overrides, read_yaml
from sweeps.values import apply_values, format_value, to_override

__all__ = [
    "EXECUTORS",
    "apply_tracking",
    "BaseSpec",
    "MapsStepSpec",
    "ResourcesSpec",
    "Sweep",
    "SweepError",
    "SweepSpec",
    "TrackingSpec",
    "format_value",
    "load_maps_step",
    "load_sweep",
    "resolve_base",
    "to_override",
]

EXECUTORS: tuple[str, ...] = ("auto", "slurm", "local", "debug")
MODES: tuple[str, ...] = ("grid", "zip", "one_at_a_time")


class SweepError(ValueError):
    """A sweep that cannot be planned or launched; the message names the file, run and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BaseSpec(_Strict):
    """The run every sweep run starts from: a run config file plus dotted overrides.

    ``base: file.yaml`` is shorthand for ``base: {config: file.yaml}``.
    """

    config: Path | None = Field(None, description="run config YAML, relative to the sweep file")
    overrides: dict[str, Any] = Field(default_factory=dict, description="dotted key -> value, applied on top")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"config": value} if isinstance(value, (str, Path)) else value


class MapsStepSpec(_Strict):
    """A maps build step file (``kind: maps``), named by ``teacher.maps: "@file.yaml"`` in a sweep.

    The sweep builds these offline teacher maps before the runs that read them, over the
    training set of the sweep's base run (``data.*``), as ``suite maps build`` would.

    .. code-block:: yaml

        kind: maps
        teacher:                                  # as a run config's teacher section, or its shorthand
          model: dm_nfnet_f6
          checkpoint: /checkpoints/teachers/dm_nfnet_f6.pth   # or "@../base/teacher.yaml": trained first
        img_size: 576                             # whole images resized to this side (default data.img_size)
    """

    kind: Literal["maps"] = Field(description="maps: this file is a maps build step, not a run config")
    description: str | None = Field(None, description="what the step builds (shown in plan)")
    teacher: Any = Field(description="the teacher, as in a run config: {model, checkpoint[, kwargs]} or a path")
    img_size: int | None = Field(None, gt=0, description="side of the whole images fed to the teacher")
    batch_size: int = Field(128, gt=0, description="teacher batch size (does not change the maps)")

    @field_validator("teacher")
    @classmethod
    def _teacher(cls, value: Any) -> Any:
        if value in (None, "none") or (isinstance(value, str) and value.startswith("maps:")):
            raise ValueError("a maps build step needs a teacher checkpoint (a path, or {model, checkpoint})")
        if not isinstance(value, (str, dict)):
            raise ValueError(f"give a path or a {{model, checkpoint}} mapping, but got {value!r}")
        if isinstance(value, dict) and (value.get("checkpoint") in (None, "", "none") or "maps" in value):
            raise ValueError(
                f"a maps build step needs teacher.checkpoint (and no teacher.maps), but got {value!r}"
            )
        return value


class ResourcesSpec(_Strict):
    """What one run asks the scheduler for (SLURM names as submitit spells them).

    Defaults fit one GPU of a typical cluster node; the local executor only uses
    ``timeout_min``, ``gpus_per_node``, ``tasks_per_node`` and ``cpus_per_task``.

    A run spans ``nodes x tasks_per_node`` processes, one per GPU (data parallelism, see
    ``suite.device.distributed``); ``tasks_per_node`` defaults to ``gpus_per_node`` (1 without GPUs).
    ``data.batch_size`` stays the global batch whatever the process count.
    """

    partition: str | None = Field(None, description="SLURM partition (default: the cluster's default)")
    nodes: int = Field(1, gt=0, description="nodes per run")
    gpus_per_node: int = Field(1, ge=0, description="GPUs per node of a run (one training process per GPU)")
    tasks_per_node: int | None = Field(
        None, gt=0, description="training processes per node (default: gpus_per_node, or 1 without GPUs)"
    )
    cpus_per_task: int = Field(8, gt=0, description="CPU cores per process (data workers + main process)")
    mem_gb: float = Field(32.0, gt=0, description="host memory per run, GB")
    timeout_min: int = Field(24 * 60, gt=0, description="wall-clock limit per job; longer runs requeue")
    array_parallelism: int = Field(256, gt=0, description="runs of one array running at once (%N)")
    max_num_timeout: int = Field(10, ge=0, description="requeues after a time limit before giving up")
    signal_delay_s: int = Field(120, ge=10, description="USR2 this many seconds before the time limit")
    account: str | None = Field(None, description="SLURM account")
    qos: str | None = Field(None, description="SLURM quality of service")
    constraint: str | None = Field(None, description="SLURM node features, e.g. a100")
    setup: list[str] = Field(
        default_factory=list, description="shell lines run before the job (module load ...)"
    )
    additional: dict[str, str | int] = Field(
        default_factory=dict, description="extra #SBATCH flags, e.g. {exclusive: true}"
    )


    @model_validator(mode="after")
    def _one_task_per_gpu(self) -> ResourcesSpec:
        if self.gpus_per_node and self.tasks_per_node is not None and self.tasks_per_node != self.gpus_per_node:
            raise ValueError(
                f"tasks_per_node={self.tasks_per_node} with gpus_per_node={self.gpus_per_node}: a run trains one "
                "process per GPU, so give them the same value (or leave tasks_per_node out)"
            )
        return self

    @property
    def tasks(self) -> int:
        """Training processes per node."""
        return self.tasks_per_node or max(1, self.gpus_per_node)

    @property
    def processes(self) -> int:
        """Training processes (data-parallel ranks) of one run."""
        return self.nodes * self.tasks

    @property
    def gpus(self) -> int:
        """GPUs of one run, all nodes together."""
        return self.nodes * self.gpus_per_node


class TrackingSpec(_Strict):
    """W&B settings applied to every run (output-only: they never change a run id)."""

    project: str | None = Field(None, description="W&B project (default: the run config's)")
    group: str | None = Field(None, description="W&B group (default: the sweep name)")
    tags: list[str] = Field(default_factory=list, description="W&B tags added to every run")
    mode: Literal["offline", "online", "disabled"] | None = Field(
        None, description="W&B mode (default: the run config's)"
    )


class SweepSpec(_Strict):
    """A whole sweep file."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="sweep name (letters, digits, . _ -)"
    )
    description: str | None = Field(None, description="one line shown by plan and status")
    base: BaseSpec = Field(default_factory=BaseSpec, description="run config file and/or dotted overrides")
    axes: dict[str, list[Any]] = Field(default_factory=dict, description="dotted key -> values")
    mode: Literal["grid", "zip", "one_at_a_time"] = Field("grid", description="how axes combine")
    seeds: list[int] | None = Field(None, description="run.seed values; every combination runs once per seed")
    include: list[dict[str, Any]] = Field(default_factory=list, description="extra runs: dotted key -> value")
    exclude: list[dict[str, Any]] = Field(
        default_factory=list, description="drop runs matching all these keys"
    )
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="scheduler request per run")
    tracking: TrackingSpec = Field(default_factory=TrackingSpec, description="W&B project/group/tags")
    output_root: Path | None = Field(
        None, description="run folders go here (default: runs/<name>, from the cwd)"
    )
    executor: Literal["auto", "slurm", "local", "debug"] = Field("auto", description="default for launch")

    @field_validator("axes", mode="before")
    @classmethod
    def _axes(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        for key, values in value.items():
            if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
                raise ValueError(f"axis key {key!r} must be a dotted run config key such as mix.mask_ratio")
            if not isinstance(values, list):  # pydantic reports ValueError, not TypeError
                raise ValueError(  # noqa: TRY004
                    f"axis {key} must be a list of values, but got {values!r}; write [{values!r}]"
                )
            if not values:
                raise ValueError(f"axis {key} is an empty list; give at least one value or remove the axis")
            if key in ("seed", "run.seed"):
                raise ValueError(f"axis {key}: use the top-level 'seeds:' list for seeds")
        return value

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int] | None) -> list[int] | None:
        if value is not None:
            if not value:
                raise ValueError("seeds is an empty list; give at least one seed or remove the key")
            if len(set(value)) != len(value):
                raise ValueError(f"seeds must be distinct, but got {value}")
        return value

    @field_validator("include", "exclude")
    @classmethod
    def _partials(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, item in enumerate(value):
            if not item:
                raise ValueError(f"entry {i} is empty; give dotted key -> value pairs")
        return value

    @model_validator(mode="after")
    def _zip_lengths(self) -> SweepSpec:
        if self.mode == "zip" and self.axes:
            lengths = {key: len(values) for key, values in self.axes.items()}
            if len(set(lengths.values())) > 1:
                shown = ", ".join(f"{key} has {n}" for key, n in lengths.items())
                raise ValueError(
                    f"mode zip pairs the axes value by value, so all lists need the same length, but {shown}"
                )
        return self


@dataclass(frozen=True)
class Sweep:
    """A loaded sweep file: its spec, where it lives, its base run config and output root."""

    spec: SweepSpec
    path: Path
    base: dict[str, Any]
    output_root: Path

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def folder(self) -> Path:
        """The folder of the sweep file: relative paths inside it start here."""
        return self.path.parent

    @property
    def state_file(self) -> Path:
        return self.output_root / "sweep-state.json"


def apply_tracking(tracking: dict[str, Any], spec: TrackingSpec, *, group: str, extra_tags: tuple[str, ...] = ()) -> None:
    """Write a sweep's or study's W&B settings into a run's ``tracking`` section, in place.

    Output-only fields (never part of a run id): the group (``spec.group`` or ``group``), project,
    mode, and the tags added after the run's own.
    """
    tracking["group"] = spec.group or group
    if spec.project is not None:
        tracking["project"] = spec.project
    if spec.mode is not None:
        tracking["mode"] = spec.mode
    extra = [*spec.tags, *extra_tags]
    if extra:
        tags = list(tracking.get("tags") or [])
        tracking["tags"] = tags + [t for t in extra if t not in tags]


def _describe(model: type[BaseModel]) -> str:
    parts = []
    for name, field in model.model_fields.items():
        if field.is_required():
            parts.append(f"{name} (required)")
            continue
        default = field.get_default(call_default_factory=True)
        shown = "{...}" if isinstance(default, BaseModel) else repr(default)
        parts.append(f"{name}={shown}")
    return ", ".join(parts)


_SECTIONS: dict[str, type[BaseModel]] = {
    "base": BaseSpec,
    "resources": ResourcesSpec,
    "tracking": TrackingSpec,
}


def _format_error(err: ValidationError, path: Path, model: type[BaseModel] | None = None) -> str:
    top = model or SweepSpec
    lines = []
    for item in err.errors():
        loc = [str(p) for p in item["loc"]]
        dotted = ".".join(loc) or "(sweep)"
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            parent = _SECTIONS.get(loc[0], top) if len(loc) > 1 and top is SweepSpec else top
            msg = f"unknown key; valid keys: {_describe(parent)}"
        elif item["type"] == "literal_error" and loc and loc[-1] == "executor":
            msg = f"unknown executor {item.get('input')!r}; choose one of {', '.join(EXECUTORS)}"
        elif item["type"] in (
            "int_parsing",
            "float_parsing",
            "int_type",
            "float_type",
            "list_type",
            "string_type",
        ):
            msg = f"{msg} (got {item.get('input')!r})"
        lines.append(f"{path}: {dotted}: {msg}")
    return "\n".join(lines)


def resolve_base(path: Path, spec: BaseSpec, overrides: list[str] | None = None) -> dict[str, Any]:
    """The base run config of a sweep or study file: its ``base.config`` plus overrides (a nested dict).

    Args:
        path: the absolute path of the sweep or study file (``base.config`` is relative to its folder).
        spec: its ``base`` block.
        overrides: command-line ``key=value`` overrides, applied after ``base.overrides``.

    Raises:
        SweepError: the config file is missing or malformed, or an override is; the message names
            the file and the field.
    """
    base: dict[str, Any] = {}
    if spec.config is not None:
        config_path = spec.config if spec.config.is_absolute() else path.parent / spec.config
        try:
            base = read_yaml(config_path)
        except ConfigError as err:
            raise SweepError(f"{path}: base.config: {err}") from None
    try:
        base = apply_values(base, spec.overrides)
    except ConfigError as err:
        raise SweepError(f"{path}: base.overrides: {err}") from None
    try:
        base = apply_overrides(base, list(overrides or []))
    except ConfigError as err:
        raise SweepError(f"{path}: command-line override: {err}") from None
    return base


def _default_output_root(name: str) -> Path:
    return Path("runs") / name


def load_sweep(
    path: Path | str, overrides: list[str] | None = None, *, output_root: Path | None = None
) -> Sweep:
    """Read and validate a sweep file; nothing is expanded or submitted.

    Args:
        path: the sweep YAML file.
        overrides: ``key.sub=value`` run config overrides applied after ``base.overrides`` (for
            example ``data.root=/datasets/imagenet``).
        output_root: replaces the file's ``output_root`` (relative paths start at the cwd).

    Returns:
        The loaded :class:`Sweep`.

    Raises:
        SweepError: the file is missing, not YAML, or breaks the schema; the message names the file
            and the field.

    Example:
        >>> sweep = load_sweep("sweeps/demo/mask_ratio.yaml")  # doctest: +SKIP
        >>> sweep.spec.axes["mix.mask_ratio"]  # doctest: +SKIP
        [0.3, 0.5, 0.7]
    """
    path = Path(path).expanduser().absolute()
    try:
        raw = read_yaml(path)
    except ConfigError as err:
        raise SweepError(str(err)) from None
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as err:
        raise SweepError(_format_error(err, path)) from None
    base = resolve_base(path, spec.base, overrides)
    root = output_root or spec.output_root or _default_output_root(spec.name)
    root = Path(os.path.abspath(Path(root).expanduser()))
    return Sweep(spec=spec, path=path, base=base, output_root=root)


def load_maps_step(path: Path, data: dict[str, Any]) -> MapsStepSpec:
    """Validate a maps build step file's content (``kind: maps``); errors name the file and field."""
    try:
        return MapsStepSpec.model_validate(data)
    except ValidationError as err:
        raise SweepError(_format_error(err, path, MapsStepSpec)) from None
