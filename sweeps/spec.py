"""Sweep files: one typed schema, checked when the file is read.

A sweep file is YAML. Every key has one default, here or in the keys every sweep and study
file shares (:mod:`sweeps.schema`); an unknown key fails with the valid keys and their defaults,
and every message starts with the file and the dotted field, so it says what to fix.

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

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationError, field_validator, model_serializer, model_validator

from sweeps.schema import (
    EXECUTORS,
    BaseSpec,
    FileSpec,
    LoadedFile,
    ResourcesSpec,
    Strict,
    SweepError,
    TrackingSpec,
    apply_tracking,
    format_errors,
    read_file,
    resolve_base,
)
from sweeps.values import format_value, to_override

__all__ = [
    "EXECUTORS",
    "BaseSpec",
    "IncludeSpec",
    "MapsStepSpec",
    "ResourcesSpec",
    "Sweep",
    "SweepError",
    "SweepSpec",
    "TrackingSpec",
    "apply_tracking",
    "format_value",
    "load_maps_step",
    "load_sweep",
    "resolve_base",
    "to_override",
]

MODES: tuple[str, ...] = ("grid", "zip", "one_at_a_time")


class MapsStepSpec(Strict):
    """A maps build step file (``kind: maps``), named by ``teacher.maps: "@file.yaml"`` in a sweep.

    The sweep builds these offline teacher maps before the runs that read them, over the
    training set of the sweep's base run (``data.*``), as ``suite maps build`` would.

    .. code-block:: yaml

        kind: maps
        teacher:                                  # as a run config's teacher section, or its shorthand
          model: dm_nfnet_f6
          checkpoint: /checkpoints/teachers/dm_nfnet_f6.pth   # or "@../base/teacher.yaml": trained first
        img_size: 576                             # side of the square the teacher sees (default data.img_size)
        crop: center                              # TokenLabeling's: short side to img_size, centre square
    """

    WHAT: ClassVar[str] = "maps step"

    kind: Literal["maps"] = Field(description="maps: this file is a maps build step, not a run config")
    description: str | None = Field(None, description="what the step builds (shown in plan)")
    teacher: Any = Field(description="the teacher, as in a run config: {model, checkpoint[, kwargs]} or a path")
    img_size: int | None = Field(None, gt=0, description="side of the square images fed to the teacher")
    crop: Literal["squash", "center"] = Field(
        "squash",
        description="squash: the whole image resized to the square; center: short side resized, central "
        "square kept (TokenLabeling's generate_label.py, as the reference's maps)",
    )
    batch_size: int = Field(128, gt=0, description="teacher batch size (does not change the maps)")

    @field_validator("teacher")
    @classmethod
    def _teacher(cls, value: Any) -> Any:
        if value in (None, "none") or (isinstance(value, str) and value.startswith("maps:")):
            raise ValueError("a maps build step needs a teacher checkpoint (a path, or {model, checkpoint})")
        if not isinstance(value, (str, dict)):
            raise ValueError(f"give a path or a {{model, checkpoint}} mapping, but got {value!r}")  # noqa: TRY004
        if isinstance(value, dict) and (value.get("checkpoint") in (None, "", "none") or "maps" in value):
            raise ValueError(
                f"a maps build step needs teacher.checkpoint (and no teacher.maps), but got {value!r}"
            )
        return value


class IncludeSpec(Strict):
    """A run the sweep adds (with no axes: one row of its table), and the name of its row.

    Written flat, ``{label: "TokenMix, CNN teacher", mix.method: tokenmix, teacher: ...}``: every
    key but ``label`` is a dotted run config key.
    """

    label: str | None = Field(None, description="the row's name in reports (default: built from the values)")
    values: dict[str, Any] = Field(default_factory=dict, description="dotted run config key -> value")

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {"label": value.get("label"), "values": {k: v for k, v in value.items() if k != "label"}}
        return value

    @field_validator("label")
    @classmethod
    def _label(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("a row label is text; give one, or leave label out for the default name")
        return value

    @model_serializer
    def _dump(self) -> dict[str, Any]:
        return {**({"label": self.label} if self.label is not None else {}), **self.values}


class SweepSpec(FileSpec):
    """A whole sweep file: the keys of every sweep and study file, then the runs of the sweep."""

    WHAT: ClassVar[str] = "sweep"

    axes: dict[str, list[Any]] = Field(default_factory=dict, description="dotted key -> values")
    mode: Literal["grid", "zip", "one_at_a_time"] = Field("grid", description="how axes combine")
    seeds: list[int] | None = Field(None, description="run.seed values; every combination runs once per seed")
    include: list[IncludeSpec] = Field(
        default_factory=list, description="extra runs: dotted key -> value, and the row's label"
    )
    exclude: list[dict[str, Any]] = Field(
        default_factory=list, description="drop runs matching all these keys"
    )
    labels: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="dotted key -> {value: its name in reports}"
    )

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
    def _partials(cls, value: list[Any]) -> list[Any]:
        for i, item in enumerate(value):
            if isinstance(item, IncludeSpec) and not item.values and item.label is not None:
                raise ValueError(f"entry {i} has a label but no values; give dotted key -> value pairs")
            if not (item.values if isinstance(item, IncludeSpec) else item):
                raise ValueError(f"entry {i} is empty; give dotted key -> value pairs")
        return value

    @field_validator("labels", mode="before")
    @classmethod
    def _label_keys(cls, value: Any) -> Any:
        """A value is named by its text (``0.3``, ``null``, ``"[0.3,0.7]"``): YAML keys cannot be lists."""
        if not isinstance(value, dict):
            return value
        return {key: {format_value(v): text for v, text in names.items()} if isinstance(names, dict) else names
                for key, names in value.items()}

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

    @model_validator(mode="after")
    def _names(self) -> SweepSpec:
        problems = _label_problems(self) + _row_label_problems(self)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @classmethod
    def error_message(cls, item: Any, loc: list[str], dotted: str) -> str | None:
        if loc[:1] == ["labels"] and len(loc) == 2 and item["type"] == "dict_type":
            return f"give value -> label pairs, e.g. {{tokenmix: TokenMix}} (got {item.get('input')!r})"
        return None

    def values_of(self, key: str) -> list[Any]:
        """The values a dotted key takes in the axes and the includes, as written."""
        return [*self.axes.get(key, []), *(entry.values[key] for entry in self.include if key in entry.values)]

    def value_label(self, key: str, value: Any) -> str | None:
        """The name ``labels:`` gives this value of a key, or None."""
        return self.labels.get(key, {}).get(format_value(value))

    def row_label(self, values: dict[str, Any]) -> str | None:
        """The ``label`` of the include entry of exactly these values (seed aside), or None."""
        wanted = _text({k: v for k, v in values.items() if k != "run.seed"})
        for entry in self.include:
            if entry.label is not None and _text({k: v for k, v in entry.values.items() if k != "run.seed"}) == wanted:
                return entry.label
        return None


def _text(values: dict[str, Any]) -> str:
    return json.dumps(values, sort_keys=True, default=str)


def _label_problems(spec: SweepSpec) -> list[str]:
    """``labels:`` names values the sweep gives: one line per unknown key or value, empty or shared label."""
    keys = list(dict.fromkeys([*spec.axes, *(k for entry in spec.include for k in entry.values)]))
    problems = []
    for key, names in spec.labels.items():
        if key not in keys:
            problems.append(f"labels.{key}: {key} is not an axis or include key of this sweep; labels name the "
                            f"values of {', '.join(keys) or '(none: the sweep has no axes or includes)'}")
            continue
        known = list(dict.fromkeys(format_value(v) for v in spec.values_of(key)))
        for text, label in names.items():
            if text not in known:
                problems.append(f"labels.{key}.{text}: {key} never takes the value {text} in this sweep; its values: "
                                f"{', '.join(known)}")
            elif not label.strip():
                problems.append(f"labels.{key}.{text}: a label is text; give one, or leave the value out for its "
                                "default name")
        named: dict[str, str] = {}
        for text, label in names.items():
            if label in named:
                problems.append(f"labels.{key}: {label!r} names both {named[label]} and {text}; give each value its "
                                "own label")
            named.setdefault(label, text)
    return problems


def _row_label_problems(spec: SweepSpec) -> list[str]:
    """Two include entries with one label would be two rows of one name."""
    first: dict[str, int] = {}
    problems = []
    for i, entry in enumerate(spec.include):
        if entry.label is None:
            continue
        if entry.label in first:
            problems.append(f"include.{i}.label: {entry.label!r} is also the label of include.{first[entry.label]}; "
                            "give each row its own")
        first.setdefault(entry.label, i)
    return problems


@dataclass(frozen=True)
class Sweep(LoadedFile):
    """A loaded sweep file (:class:`~sweeps.schema.LoadedFile`); launch records its runs in ``state_file``."""

    spec: SweepSpec

    @property
    def state_file(self) -> Path:
        return self.output_root / "sweep-state.json"


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
    spec, path, base, root = read_file(path, SweepSpec, overrides, output_root=output_root)
    return Sweep(spec=spec, path=path, base=base, output_root=root)


def load_maps_step(path: Path, data: dict[str, Any]) -> MapsStepSpec:
    """Validate a maps build step file's content (``kind: maps``); errors name the file and field."""
    try:
        return MapsStepSpec.model_validate(data)
    except ValidationError as err:
        raise SweepError(format_errors(err, path, MapsStepSpec)) from None
