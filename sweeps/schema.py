"""What sweep, study and maps step files share: strict models, messages, the base run, the loading.

Every file kind is a strict pydantic model (:class:`Strict`): every key has one default, an
unknown key fails with the valid keys and their defaults (the idea of submitit's
``_internal_update_parameters``), and every message starts with the file and the dotted field
(:func:`format_errors`), so it says what to fix. Sweep and study files (:class:`FileSpec`) have
the same ``name``, ``base``, ``resources``, ``tracking``, ``output_root`` and ``executor`` keys and
load the same way (:func:`read_file`); :mod:`sweeps.spec` and :mod:`sweeps.study` add their own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from suite.config import ConfigError, apply_overrides, read_yaml
from sweeps.values import apply_values

__all__ = [
    "EXECUTORS",
    "BaseSpec",
    "FileSpec",
    "LoadedFile",
    "ResourcesSpec",
    "Strict",
    "SweepError",
    "TrackingSpec",
    "apply_tracking",
    "describe_keys",
    "format_errors",
    "read_file",
    "resolve_base",
]

EXECUTORS: tuple[str, ...] = ("auto", "slurm", "local", "debug")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"

# pydantic error types whose message gains the value that was given
_SHOW_INPUT = ("int_parsing", "float_parsing", "int_type", "float_type", "int_from_float", "list_type", "string_type")


class SweepError(ValueError):
    """A sweep that cannot be planned or launched; the message names the file, run and field."""


class Strict(BaseModel):
    """A file section: unknown keys fail, values never change after loading.

    Subclasses name their kind for messages about the whole file (``WHAT``) and the choices of
    their literal fields (``CHOICES``: dotted field -> values, named after the field's first part).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    WHAT: ClassVar[str] = "file"
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {}

    @classmethod
    def error_field(cls, loc: list[str]) -> tuple[str, type[BaseModel]]:
        """The dotted field of an error location, and the section whose keys are valid there."""
        model: type[BaseModel] = cls
        for part in loc[:-1]:
            field = model.model_fields.get(part)
            annotation = getattr(field, "annotation", None)
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                break
            model = annotation
        return ".".join(loc), model

    @classmethod
    def error_message(cls, item: Any, loc: list[str], dotted: str) -> str | None:
        """A message of this file kind for one pydantic error, or None for the shared wording."""
        return None


def describe_keys(model: type[BaseModel]) -> str:
    """``name (required), description=None, ...``: the keys of a section and their defaults."""
    parts = []
    for name, field in model.model_fields.items():
        if field.is_required():
            parts.append(f"{name} (required)")
            continue
        default = field.get_default(call_default_factory=True)
        parts.append(f"{name}={'{...}' if isinstance(default, BaseModel) else repr(default)}")
    return ", ".join(parts)


def format_errors(err: ValidationError, path: Path, model: type[Strict]) -> str:
    """One line per error: ``<file>: <dotted field>: <what is wrong>``, unknown keys with the valid ones.

    A check of the whole file whose message starts with a field of it (``labels.mix.method: ...``)
    names that field itself, one line each.
    """
    lines = []
    for item in err.errors():
        loc = [str(p) for p in item["loc"]]
        msg = item["msg"].removeprefix("Value error, ")
        if not loc and all(_names_field(line, model) for line in msg.splitlines()):
            lines += [f"{path}: {line}" for line in msg.splitlines()]
            continue
        dotted, section = model.error_field(loc)
        own = model.error_message(item, loc, dotted)
        if own is not None:
            msg = own
        elif item["type"] == "extra_forbidden":
            msg = f"unknown key; valid keys: {describe_keys(section)}"
        elif item["type"] == "literal_error" and dotted in model.CHOICES:
            msg = f"unknown {dotted.split('.')[0]} {item.get('input')!r}; choose one of {', '.join(model.CHOICES[dotted])}"
        elif item["type"] in _SHOW_INPUT:
            msg = f"{msg} (got {item.get('input')!r})"
        lines.append(f"{path}: {dotted or f'({model.WHAT})'}: {msg}")
    return "\n".join(lines)


def _names_field(line: str, model: type[BaseModel]) -> bool:
    head = line.split(":", 1)[0].split(".", 1)[0]
    return ":" in line and head in model.model_fields


class BaseSpec(Strict):
    """The run every sweep run (or trial) starts from: a run config file plus dotted overrides.

    ``base: file.yaml`` is shorthand for ``base: {config: file.yaml}``.
    """

    config: Path | None = Field(None, description="run config YAML, relative to the sweep file")
    overrides: dict[str, Any] = Field(default_factory=dict, description="dotted key -> value, applied on top")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"config": value} if isinstance(value, (str, Path)) else value


class ResourcesSpec(Strict):
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


class TrackingSpec(Strict):
    """W&B settings applied to every run (output-only: they never change a run id)."""

    project: str | None = Field(None, description="W&B project (default: the run config's)")
    group: str | None = Field(None, description="W&B group (default: the sweep name)")
    tags: list[str] = Field(default_factory=list, description="W&B tags added to every run")
    mode: Literal["offline", "online", "disabled"] | None = Field(
        None, description="W&B mode (default: the run config's)"
    )


class FileSpec(Strict):
    """The keys every sweep and study file has; the file kinds add theirs after these."""

    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"executor": EXECUTORS}

    name: str = Field(pattern=NAME_PATTERN, description="name (letters, digits, . _ -); the W&B group")
    description: str | None = Field(None, description="one line shown by plan and status")
    base: BaseSpec = Field(default_factory=BaseSpec, description="run config file and/or dotted overrides")
    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec, description="scheduler request per run (a study's: per worker)"
    )
    tracking: TrackingSpec = Field(default_factory=TrackingSpec, description="W&B project/group/tags")
    output_root: Path | None = Field(
        None, description="run folders (and a study's journal) go here (default: runs/<name>, from the cwd)"
    )
    executor: Literal["auto", "slurm", "local", "debug"] = Field(
        "auto", description="default for suite sweep launch and suite tune"
    )


SpecT = TypeVar("SpecT", bound=FileSpec)


@dataclass(frozen=True)
class LoadedFile:
    """A loaded sweep or study file: its spec, where it lives, its base run config and output root."""

    spec: FileSpec
    path: Path
    base: dict[str, Any]
    output_root: Path

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def folder(self) -> Path:
        """The folder of the file: relative paths inside it start here."""
        return self.path.parent


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


def resolve_base(
    path: Path, spec: BaseSpec, overrides: list[str] | None = None, *, error: type[SweepError] = SweepError
) -> dict[str, Any]:
    """The base run config of a sweep or study file: its ``base.config`` plus overrides (a nested dict).

    Args:
        path: the absolute path of the sweep or study file (``base.config`` is relative to its folder).
        spec: its ``base`` block.
        overrides: command-line ``key=value`` overrides, applied after ``base.overrides``.
        error: the exception to raise.

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
            raise error(f"{path}: base.config: {err}") from None
    try:
        base = apply_values(base, spec.overrides)
    except ConfigError as err:
        raise error(f"{path}: base.overrides: {err}") from None
    try:
        base = apply_overrides(base, list(overrides or []))
    except ConfigError as err:
        raise error(f"{path}: command-line override: {err}") from None
    return base


def read_file(
    path: Path | str,
    model: type[SpecT],
    overrides: list[str] | None = None,
    *,
    output_root: Path | None = None,
    error: type[SweepError] = SweepError,
) -> tuple[SpecT, Path, dict[str, Any], Path]:
    """Read and validate a sweep or study file: its spec, absolute path, base run config and output root.

    Args:
        path: the YAML file.
        model: its schema.
        overrides: command-line ``key=value`` run config overrides, after ``base.overrides``.
        output_root: replaces the file's ``output_root`` (default ``runs/<name>``; relative paths
            start at the cwd).
        error: the exception to raise.

    Raises:
        SweepError: the file is missing, not YAML, or breaks the schema, or its base does; the
            message names the file and the field.
    """
    path = Path(path).expanduser().absolute()
    try:
        raw = read_yaml(path)
    except ConfigError as err:
        raise error(str(err)) from None
    try:
        spec = model.model_validate(raw)
    except ValidationError as err:
        raise error(format_errors(err, path, model)) from None
    base = resolve_base(path, spec.base, overrides, error=error)
    root = output_root or spec.output_root or Path("runs") / spec.name
    return spec, path, base, Path(os.path.abspath(Path(root).expanduser()))
