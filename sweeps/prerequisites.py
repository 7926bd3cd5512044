"""What a sweep makes before its runs: runs it trains first, and maps it builds first.

Runs the sweep trains first. A value ``@<file>.yaml`` (anywhere in ``base.overrides``, an axis
or an ``include``) names a run config, relative to the sweep file, of a run this sweep trains
first: typically a teacher (``teacher: "@base/teacher_cnn.yaml"``). It stands for that run's
checkpoint, ``<output_root>/<run_id>/checkpoint.pt``, so the student's run id is fixed before
the teacher exists. Such runs are the plan's ``prerequisites``; ``launch`` runs them first and
makes their dependents wait for them.

Maps built first. A value ``@<file>.yaml`` whose file says ``kind: maps`` names a maps build
step instead (:class:`~sweeps.spec.MapsStepSpec`): ``teacher.maps: "@maps/nfnet-576.yaml"``.
The sweep runs the build (as ``suite maps build`` would, over the base run's training set)
before the runs that read it, and the value stands for the step's directory,
``<output_root>/maps-<12 hex>`` (:mod:`suite.teacher.maps_step`). A step's teacher may itself be
``@run.yaml``: that run trains first, then the step builds, then the students train. A run that
reads a step's maps but trains on another training set (``data.*``) is refused
(:func:`data_mismatch`).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from suite.config import MAPS_PREFIX, ConfigError, TrainConfig, read_yaml, run_id
from suite.run.records import RunPaths
from suite.teacher.maps_step import data_identity, maps_step_id
from sweeps.runs import Checks, PlannedRun, Problems, output_fields
from sweeps.spec import MapsStepSpec, Sweep, SweepError, format_value, load_maps_step

__all__ = ["REFERENCE_PREFIX", "Made", "data_mismatch", "make_first", "references", "replace_references"]

REFERENCE_PREFIX = "@"


def references(data: Any) -> Iterator[str]:
    """Every ``@file.yaml`` value in nested dicts and lists, in order."""
    if isinstance(data, str) and data.startswith(REFERENCE_PREFIX):
        yield data
    elif isinstance(data, dict):
        for value in data.values():
            yield from references(value)
    elif isinstance(data, list):
        for value in data:
            yield from references(value)


def replace_references(data: Any, table: dict[str, str], maps: frozenset[str] = frozenset()) -> Any:
    """Swap each ``@file.yaml`` for what it produces; a maps step named by the ``teacher``
    shorthand becomes ``maps:<dir>`` (``teacher.maps: "@step.yaml"`` gets the bare directory)."""
    if isinstance(data, str):
        return table.get(data, data)
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            if key == "teacher" and isinstance(value, str) and value in maps:
                out[key] = f"{MAPS_PREFIX}{table[value]}"
            elif key == "teacher" and isinstance(value, dict) and value.get("checkpoint") in maps:
                # ``teacher=@step.yaml`` followed by ``teacher.topk=...`` reads as a checkpoint
                rest = {k: v for k, v in value.items() if k != "checkpoint"}
                out[key] = replace_references({**rest, "maps": value["checkpoint"]}, table, maps)
            else:
                out[key] = replace_references(value, table, maps)
        return out
    if isinstance(data, list):
        return [replace_references(value, table, maps) for value in data]
    return data


def produced_path(run: PlannedRun) -> str:
    """What a prerequisite leaves for its dependents: a checkpoint, or a maps directory."""
    paths = run.paths
    return str((paths.root if run.kind == "maps" else paths.checkpoint).absolute())


def used_paths(cfg: TrainConfig) -> list[str]:
    """The files a run reads that a prerequisite may produce (absolute)."""
    paths = [cfg.teacher.checkpoint, cfg.model.checkpoint, cfg.teacher.maps]
    return [str(Path(p).absolute()) for p in paths if p is not None]


@dataclass(frozen=True)
class Made:
    """What the sweep makes first: the prerequisites (trained runs, then maps steps) and what
    each ``@file.yaml`` stands for (``table``: reference -> checkpoint or maps directory)."""

    runs: list[PlannedRun]
    table: dict[str, str]

    @functools.cached_property
    def run_ids(self) -> dict[str, str]:
        """Produced path -> the run id of the prerequisite that produces it."""
        return {produced_path(run): run.run_id for run in self.runs}

    @functools.cached_property
    def steps(self) -> dict[str, PlannedRun]:
        """Maps directory -> its maps build step."""
        return {produced_path(run): run for run in self.runs if run.kind == "maps"}

    @functools.cached_property
    def maps(self) -> frozenset[str]:
        """The references that name maps build steps."""
        steps = self.steps
        return frozenset(ref for ref, path in self.table.items() if str(Path(path).absolute()) in steps)

    def resolve(self, data: dict[str, Any]) -> dict[str, Any]:
        """A run config with every reference swapped for what it stands for."""
        return replace_references(data, self.table, self.maps)

    def needs(self, cfg: TrainConfig) -> tuple[str, ...]:
        """The run ids of the prerequisites a run reads from."""
        by_path = self.run_ids
        return tuple(sorted({by_path[p] for p in used_paths(cfg) if p in by_path}))


def data_mismatch(cfg: TrainConfig, steps: dict[str, PlannedRun]) -> str | None:
    """A run reading a maps step's directory must train on the training set the maps cover."""
    if cfg.teacher.maps is None:
        return None
    step = steps.get(str(Path(cfg.teacher.maps).absolute()))
    if step is None:
        return None
    built, mine = data_identity(step.config.data), data_identity(cfg.data)
    differ = [f"data.{k}={format_value(mine[k])} (the maps: {format_value(built[k])})" for k in built if built[k] != mine[k]]
    if not differ:
        return None
    return (
        f"teacher.maps: the maps step @{step.source} covers the training set of the sweep's base run, but this "
        f"run trains on another: {', '.join(differ)}; build maps for this training set (another step file "
        "with the same data) or keep these data fields at the base's values"
    )


def make_first(sweep: Sweep, combos: list[dict[str, Any]], checks: Checks) -> Made:
    """Validate every ``@file.yaml`` the sweep names (in its base and its runs' values).

    A file with ``kind: maps`` is a maps build step (:class:`~sweeps.spec.MapsStepSpec`): it
    stands for its maps directory, and its teacher may itself be ``@run.yaml`` (relative to the
    step file), a run trained before the step. Any other file is a run config to train first;
    it stands for its checkpoint. Training prerequisites come first, then the maps steps.

    Raises:
        SweepError: one line per invalid file and field.
    """
    maker = _Maker(sweep, checks)
    step_files = []
    for reference in dict.fromkeys([*references(sweep.base), *references(combos)]):
        prefix = f"{sweep.path}: prerequisite {reference}: "
        if (found := maker.read(reference, sweep.folder, prefix)) is None:
            continue
        relative, path, data = found
        if data.get("kind") == "maps":
            step_files.append((reference, relative, path, data))
        elif (rid := maker.train_first(relative, data, prefix)) is not None:
            maker.table[reference] = maker.checkpoint(rid)
    for reference, relative, path, data in step_files:
        maker.build_step(reference, relative, path, data)
    maker.problems.raise_any()
    offset = len(maker.trained)
    steps = [dataclasses.replace(run, index=offset + i) for i, run in enumerate(maker.steps)]
    return Made([*maker.trained, *steps], maker.table)


class _Maker:
    """The prerequisites of one sweep, as :func:`make_first` reads them."""

    def __init__(self, sweep: Sweep, checks: Checks) -> None:
        self.sweep = sweep
        self.checks = checks
        self.trained: list[PlannedRun] = []
        self.steps: list[PlannedRun] = []
        self.table: dict[str, str] = {}
        self.problems = Problems(sweep)

    def read(self, reference: str, folder: Path, prefix: str) -> tuple[str, Path, dict[str, Any]] | None:
        """The file a reference names: its name as written, its path and its content (None: an error)."""
        relative = reference[len(REFERENCE_PREFIX) :]
        path = Path(relative) if Path(relative).is_absolute() else folder / relative
        try:
            return relative, path, read_yaml(path)
        except ConfigError as err:
            self.problems.add(f"{prefix}{err} (a value starting with @ names a run config or maps step file to "
                              "run first)")
            return None

    def checkpoint(self, rid: str) -> str:
        return str(RunPaths.of(self.sweep.output_root, rid).checkpoint)

    def train_first(self, relative: str, data: dict[str, Any], prefix: str) -> str | None:
        """The run id of a run config to train first (None: it is invalid)."""
        nested = list(references(data))
        if nested:
            self.problems.add(f"{prefix}refers to {nested[0]}; a prerequisite cannot have prerequisites of its own")
            return None
        data = output_fields(self.sweep, data)
        tracking = data.get("tracking")
        if isinstance(tracking, dict):
            tracking["tags"] = [*(tracking.get("tags") or []), "prerequisite"]
        try:
            cfg = self.checks.validate(data, prefix, produced=set())
            rid = run_id(cfg)
        except ConfigError as err:
            self.problems.add_config_error(err, prefix)
            return None
        split = self.checks.split(cfg)
        if split:  # a run trained first asks for the sweep's resources too
            self.problems.add(f"{prefix}{split}")
            return None
        if all(run.run_id != rid for run in self.trained):  # two spellings of one file train once
            self.trained.append(PlannedRun(len(self.trained), rid, {}, {}, cfg, prerequisite=True, source=relative))
        return rid

    def build_step(self, reference: str, relative: str, path: Path, data: dict[str, Any]) -> None:
        """A maps build step, after the runs its teacher needs trained first."""
        prefix = f"{self.sweep.path}: maps step {reference}: "
        try:
            spec = load_maps_step(path, data)
        except SweepError as err:
            self.problems.add(*(f"{prefix}{line}" for line in str(err).splitlines()))
            return
        teacher_runs = self._teacher_runs(spec.teacher, relative, path, prefix)
        if teacher_runs is None:
            return
        inner = {ref: self.checkpoint(rid) for ref, rid in teacher_runs.items()}
        teacher = replace_references(spec.teacher, inner)
        step = _maps_step(self.sweep, spec, teacher, relative, prefix, self.checks, set(inner.values()))
        if isinstance(step, str):
            self.problems.add(*step.splitlines())
            return
        step = dataclasses.replace(step, needs=tuple(sorted(set(teacher_runs.values()))))
        self.table[reference] = str(step.paths.root)
        if all(run.run_id != step.run_id for run in self.steps):
            self.steps.append(step)

    def _teacher_runs(self, teacher: Any, relative: str, path: Path, prefix: str) -> dict[str, str] | None:
        """A step's own ``@run.yaml`` references -> run ids of the runs trained first (None: one is invalid)."""
        teacher_runs: dict[str, str] = {}
        for nested in references(teacher):
            nested_prefix = f"{prefix}teacher {nested}: "
            if (found := self.read(nested, path.parent, nested_prefix)) is None:
                continue
            nested_relative, _, nested_data = found
            if nested_data.get("kind") == "maps":
                self.problems.add(f"{nested_prefix}is a maps step; a step's teacher is a checkpoint or a run config")
            elif (rid := self.train_first(str(Path(relative).parent / nested_relative), nested_data,
                                          nested_prefix)) is not None:
                teacher_runs[nested] = rid
        return teacher_runs if len(teacher_runs) == len(list(references(teacher))) else None


def _maps_step(
    sweep: Sweep, spec: MapsStepSpec, teacher: Any, relative: str, prefix: str, checks: Checks, produced: set[str]
) -> PlannedRun | str:
    """The validated build of one maps step over the sweep base's training set (or error lines)."""
    data: dict[str, Any] = {
        "data": copy.deepcopy(sweep.base.get("data", {})),
        "teacher": teacher,
        "mix": {"method": "tokenmix"},
        "tracking": {"mode": "disabled"},
        "run": {"output_root": str(sweep.output_root)},
    }
    try:
        cfg = checks.validate(data, prefix, produced={str(Path(p).absolute()) for p in produced})
    except ConfigError as err:
        return "\n".join(f"{prefix}{line}" if not line.startswith(str(sweep.path)) else line for line in str(err).splitlines())
    step_id = maps_step_id(cfg, spec.img_size, spec.crop)
    return PlannedRun(0, step_id, {}, {}, cfg, prerequisite=True, source=relative, kind="maps",
                      build={"img_size": spec.img_size, "batch_size": spec.batch_size, "crop": spec.crop})
