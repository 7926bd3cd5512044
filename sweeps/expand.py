"""Expanding a sweep into validated runs.

:func:`expand` turns a :class:`~sweeps.spec.Sweep` into a :class:`Plan`: the axis combinations
(``grid``, ``zip`` or ``one_at_a_time``), the ``include`` runs, minus the ``exclude`` matches,
each once per seed. Every run config is validated with :func:`suite.config.validate_config`
before anything can be submitted; the errors of all runs are collected and raised together,
each line naming the file, the run (index and axis values), the field and the reason.

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
reads a step's maps but trains on another training set (``data.*``) is refused.

The batch split. ``data.batch_size`` is the global batch of a run's ``resources.processes``
processes; each process mixes its own share, so a run whose share is not even, or not a multiple
of ``mix.groups``, would fail at its first step on the cluster. Such runs are refused here, with
the processes and the fix (:mod:`suite.device.batch_split`); identical refusals are reported once, with
the runs they concern.

Missing paths. The run config schema never looks at the filesystem, so every run validates
(and gets its run id) the same way on a laptop and on the cluster. What this machine lacks is
found by :func:`suite.train.preflight.machine_problems`: an unknown timm model is always an error; a
missing ``data.root``, ``model.checkpoint`` or teacher file is a warning with
``check_paths=False`` (plan works without the dataset) and an error with ``check_paths=True``
(launch), except paths that a prerequisite of the sweep produces.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suite.config import MAPS_PREFIX, ConfigError, TrainConfig, read_yaml, run_id, validate_config
from suite.device.batch_split import batch_split_problem
from suite.run.records import RunPaths, RunState, run_state
from suite.teacher.maps_step import data_identity, maps_step_id
from suite.train.preflight import machine_problems
from sweeps.spec import MapsStepSpec, Sweep, SweepError, apply_tracking, format_value, load_maps_step
from sweeps.values import apply_values, lookup

__all__ = ["Plan", "PlannedRun", "expand", "lookup", "split_problem"]

REFERENCE_PREFIX = "@"
MAX_SHOWN_ERRORS = 8
SEED_KEY = "run.seed"


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep, validated.

    Attributes:
        index: position in the sweep (prerequisites are numbered separately, from 0).
        run_id: the suite's run id (hash of the resolved config).
        values: the axis values (and seed) that define this run, as written in the sweep.
        changed: the subset of ``values`` that differ from the base run.
        config: the validated run config, with its real paths.
        needs: run ids of the prerequisites this run waits for.
        prerequisite: True for a run the sweep trains first (``@file.yaml``).
        source: for prerequisites, the run config file.
        kind: ``train`` (a training run) or ``maps`` (a maps build step: ``config`` names the
            teacher and data, ``build`` holds ``img_size`` and ``batch_size``).
        build: for maps build steps, the arguments of the build.
    """

    index: int
    run_id: str
    values: dict[str, Any]
    changed: dict[str, Any]
    config: TrainConfig
    needs: tuple[str, ...] = ()
    prerequisite: bool = False
    source: str | None = None
    kind: str = "train"
    build: dict[str, Any] | None = None

    @property
    def paths(self) -> RunPaths:
        return RunPaths.of(self.config.run.output_root, self.run_id)

    def state(self) -> RunState:
        """What the run directory says (new, running, interrupted, finished, pruned, failed, corrupt)."""
        return run_state(self.paths)

    def resolved(self) -> dict[str, Any]:
        """The resolved config as plain JSON data (what a job receives)."""
        return json.loads(self.config.model_dump_json())

    def label(self) -> str:
        """``key=value`` pairs that differ from the base run, or ``base``."""
        if self.kind == "maps":
            return f"maps build {self.source}"
        if self.prerequisite:
            return f"prerequisite {self.source}"
        return describe(self.changed) or "base"


@dataclass
class Plan:
    """Every run of a sweep, prerequisites first, plus what planning noticed."""

    sweep: Sweep
    runs: list[PlannedRun]
    prerequisites: list[PlannedRun] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    duplicates: int = 0
    excluded: int = 0

    def all_runs(self) -> list[PlannedRun]:
        return [*self.prerequisites, *self.runs]


def describe(values: dict[str, Any]) -> str:
    """``mix.mask_ratio=0.3 seed=1`` style text of a run's values."""
    parts = []
    for key, value in values.items():
        parts.append(f"seed={value}" if key == SEED_KEY else f"{key}={format_value(value)}")
    return " ".join(parts)


_PLAIN = (str, int, float, bool, type(None))


def _normal(value: Any) -> Any:
    """``value`` as JSON would carry it (tuples become lists, paths text), to compare values."""
    if isinstance(value, _PLAIN):
        return value
    return json.loads(json.dumps(value, default=str))


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        flat[dotted] = value
        if isinstance(value, dict):
            flat.update(_flatten(value, dotted))
    return flat


def _combos(sweep: Sweep) -> tuple[list[dict[str, Any]], int]:
    """Axis combinations plus includes, minus excludes; returns (combos, excluded count)."""
    spec = sweep.spec
    keys = list(spec.axes)
    lists = [spec.axes[key] for key in keys]
    if not keys:  # the base run, unless the includes list the runs
        combos: list[dict[str, Any]] = [] if spec.include and spec.mode != "one_at_a_time" else [{}]
    elif spec.mode == "grid":
        combos = [dict(zip(keys, values)) for values in itertools.product(*lists)]
    elif spec.mode == "zip":
        combos = [dict(zip(keys, values)) for values in zip(*lists)]
    elif spec.mode == "one_at_a_time":
        combos = [{}] + [{key: value} for key in keys for value in spec.axes[key]]
    else:  # the schema admits only the three modes
        raise SweepError(f"{sweep.path}: mode: unknown mode {spec.mode!r}; choose grid, zip or one_at_a_time")
    combos += [dict(item) for item in spec.include]
    if not spec.exclude:
        return combos, 0
    base_flat = _flatten(sweep.base)
    kept = []
    used: set[int] = set()
    for combo in combos:
        assignment = {**base_flat, **combo}
        hits = [
            i
            for i, rule in enumerate(spec.exclude)
            if all(k in assignment and _normal(assignment[k]) == _normal(v) for k, v in rule.items())
        ]
        used.update(hits)
        if not hits:
            kept.append(combo)
    unused = [f"exclude[{i}] {describe(rule)}" for i, rule in enumerate(spec.exclude) if i not in used]
    if unused:
        raise SweepError(
            f"{sweep.path}: {', '.join(unused)} matches no run (a typo in a key or value?); the axes are "
            f"{', '.join(keys) or '(none)'}. Remove the entry or fix it"
        )
    return kept, len(combos) - len(kept)


def _output_fields(sweep: Sweep, data: dict[str, Any]) -> dict[str, Any]:
    """Set the output-only fields every run of the sweep shares (never part of a run id)."""
    section = data.get("run")
    if isinstance(section, dict):  # the caller's own copy: set it in place (no second deep copy)
        section["output_root"] = str(sweep.output_root)
    else:  # absent, or malformed (validation names it)
        data = apply_values(data, {"run.output_root": str(sweep.output_root)})
    tracking = data.get("tracking")
    if isinstance(tracking, dict):  # else validation reports the malformed section
        apply_tracking(tracking, sweep.spec.tracking, group=sweep.name)
    return data


def _ensure_tracking(data: dict[str, Any]) -> dict[str, Any]:
    if "tracking" not in data:
        data["tracking"] = {}
    return data


def _validate(
    data: dict[str, Any],
    prefix: str,
    *,
    produced: set[str],
    check_paths: bool,
    warnings: list[str],
    machine: bool = True,
) -> TrainConfig:
    """Validate one run config, then check it against this machine (see the module docstring)."""
    cfg = validate_config(data, prefix=prefix)
    if not machine:
        return cfg
    errors = []
    for problem in machine_problems(cfg, produced=produced):
        if problem.kind in ("path", "teacher") and not check_paths:
            warnings.append(
                f"{problem} (fine for plan; launch refuses it): set {problem.field}=<path> on the command line "
                "or in base.overrides"
            )
        else:
            errors.append(f"{prefix}{problem}")
    if errors:
        raise ConfigError("\n".join(errors))
    return cfg


def split_problem(sweep: Sweep, cfg: TrainConfig) -> str | None:
    """Why ``cfg``'s global batch cannot train on the sweep's processes per run (None: it can)."""
    res = sweep.spec.resources
    return batch_split_problem(
        cfg.data.batch_size,
        res.processes,
        mixing=cfg.mix.method != "none",
        groups=cfg.mix.groups,
        nodes=res.nodes,
        unit="GPUs" if res.gpus_per_node else "processes",
    )


def _split_errors(sweep: Sweep, refused: dict[str, list[str]]) -> list[str]:
    """One line per distinct batch-split refusal: the first run it concerns, then the others' indices."""
    lines = []
    for problem, runs in refused.items():
        others = [run.split(" ", 2)[1] for run in runs[1:]]
        shown = ", ".join(others[:12]) + (", ..." if len(others) > 12 else "")
        also = f" and {len(others)} more run(s) ({shown})" if others else ""
        lines.append(f"{sweep.path}: {runs[0]}{also}: {problem}")
    return lines


def _references(data: Any) -> Iterator[str]:
    if isinstance(data, str) and data.startswith(REFERENCE_PREFIX):
        yield data
    elif isinstance(data, dict):
        for value in data.values():
            yield from _references(value)
    elif isinstance(data, list):
        for value in data:
            yield from _references(value)


def _replace(data: Any, table: dict[str, str], maps: frozenset[str] = frozenset()) -> Any:
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
                out[key] = _replace({**rest, "maps": value["checkpoint"]}, table, maps)
            else:
                out[key] = _replace(value, table, maps)
        return out
    if isinstance(data, list):
        return [_replace(value, table, maps) for value in data]
    return data


def _raise_collected(sweep: Sweep, errors: list[str], total: int) -> None:
    shown = errors[:MAX_SHOWN_ERRORS]
    more = len(errors) - len(shown)
    tail = f"\n... and {more} more error lines" if more > 0 else ""
    head = f"{sweep.path}: {total} run(s) of the sweep are invalid; nothing was submitted\n"
    raise SweepError(head + "\n".join(shown) + tail)


def expand(sweep: Sweep, *, check_paths: bool = True, machine: bool = True) -> Plan:
    """Expand and validate every run of a sweep.

    Args:
        sweep: a loaded sweep (:func:`sweeps.spec.load_sweep`).
        check_paths: refuse missing data/checkpoint paths (launch); ``False`` turns them into
            warnings (plan), except that paths made by prerequisites are always accepted.
        machine: check that the runs can run, here (files, timm models) and on the sweep's
            resources (the batch split); a report reading existing records passes False (it
            needs the run ids, not a runnable setup).

    Returns:
        The :class:`Plan`, with duplicate runs (same run id) dropped.

    Raises:
        SweepError: one line per invalid run and field, naming the file and the run.

    Example:
        >>> plan = expand(load_sweep("sweeps/demo/mask_ratio.yaml"), check_paths=False)  # doctest: +SKIP
        >>> len(plan.runs)  # doctest: +SKIP
        9
    """
    spec = sweep.spec
    combos, excluded = _combos(sweep)
    seeds: list[int | None] = list(spec.seeds) if spec.seeds is not None else [None]
    warnings: list[str] = []
    errors: list[str] = []
    invalid = 0
    prerequisites, table = _prerequisites(sweep, combos, check_paths=check_paths, warnings=warnings, machine=machine)
    by_path = {_produced_path(run): run.run_id for run in prerequisites}
    steps = {_produced_path(run): run for run in prerequisites if run.kind == "maps"}
    maps = frozenset(ref for ref, path in table.items() if str(Path(path).absolute()) in steps)
    produced = set(by_path)
    base_cfg = _base_config(sweep, table, maps)
    runs: list[PlannedRun] = []
    refused: dict[str, list[str]] = {}  # batch-split problem -> the runs it refuses
    seen_raw: set[str] = set()
    seen_ids: set[str] = set()
    duplicates = 0
    for combo in combos:
        for seed in seeds:
            values = dict(combo) if seed is None else {**combo, SEED_KEY: seed}
            index = len(runs) + invalid
            prefix = f"{sweep.path}: run {index} ({describe(values) or 'base'}): "
            try:
                data = apply_values(sweep.base, values)
            except ConfigError as err:
                errors.append(f"{prefix}{err}")
                invalid += 1
                continue
            data = _output_fields(sweep, _ensure_tracking(_replace(data, table, maps)))
            raw_key = json.dumps(data, sort_keys=True, default=str)
            if raw_key in seen_raw:
                duplicates += 1
                continue
            seen_raw.add(raw_key)
            try:
                cfg = _validate(
                    data,
                    prefix,
                    produced=produced,
                    check_paths=check_paths,
                    warnings=warnings,
                    machine=machine,
                )
                rid = run_id(cfg)  # a teacher file is identified by its content: it must be readable here
            except ConfigError as err:
                errors.extend(f"{prefix}{line}" if line.startswith("teacher.") else line for line in str(err).splitlines())
                invalid += 1
                continue
            if rid in seen_ids:
                duplicates += 1
                continue
            seen_ids.add(rid)
            mismatch = _data_mismatch(cfg, steps)
            if mismatch:
                errors.append(f"{prefix}{mismatch}")
                invalid += 1
                continue
            split = split_problem(sweep, cfg) if machine else None
            if split:
                refused.setdefault(split, []).append(f"run {index} ({describe(values) or 'base'})")
                invalid += 1
                continue
            needs = tuple(sorted({by_path[p] for p in _used_paths(cfg) if p in by_path}))
            runs.append(
                PlannedRun(
                    index=len(runs),
                    run_id=rid,
                    values=values,
                    changed=_changed(values, base_cfg),
                    config=cfg,
                    needs=needs,
                )
            )
    errors += _split_errors(sweep, refused)
    if errors:
        _raise_collected(sweep, errors, invalid)
    unique_warnings = list(dict.fromkeys(warnings))
    return Plan(sweep, runs, prerequisites, unique_warnings, duplicates=duplicates, excluded=excluded)


def _used_paths(cfg: TrainConfig) -> list[str]:
    paths = [cfg.teacher.checkpoint, cfg.model.checkpoint, cfg.teacher.maps]
    return [str(Path(p).absolute()) for p in paths if p is not None]


def _produced_path(run: PlannedRun) -> str:
    """What a prerequisite leaves for its dependents: a checkpoint, or a maps directory."""
    paths = run.paths
    return str((paths.root if run.kind == "maps" else paths.checkpoint).absolute())


def _data_mismatch(cfg: TrainConfig, steps: dict[str, PlannedRun]) -> str | None:
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


def _changed(values: dict[str, Any], base: dict[str, Any] | None) -> dict[str, Any]:
    if base is None:
        return dict(values)
    changed = {}
    for key, value in values.items():
        try:
            same = _normal(lookup(base, key)) == _normal(value)
        except KeyError:
            same = False
        if not same:
            changed[key] = value
    return changed


def _base_config(sweep: Sweep, table: dict[str, str], maps: frozenset[str]) -> dict[str, Any] | None:
    """The resolved base run as JSON data, to tell which axis values differ from it (None if invalid)."""
    data = _output_fields(sweep, _ensure_tracking(_replace(copy.deepcopy(sweep.base), table, maps)))
    try:
        cfg = validate_config(data)
    except ConfigError:
        return None
    return json.loads(cfg.model_dump_json())


def _resolve_reference(reference: str, folder: Path) -> tuple[str, Path]:
    relative = reference[len(REFERENCE_PREFIX) :]
    return relative, (Path(relative) if Path(relative).is_absolute() else folder / relative)


def _prerequisites(
    sweep: Sweep, combos: list[dict[str, Any]], *, check_paths: bool, warnings: list[str], machine: bool = True
) -> tuple[list[PlannedRun], dict[str, str]]:
    """Validate every ``@file.yaml`` the sweep names; returns the prerequisites and the
    reference -> produced path table.

    A file with ``kind: maps`` is a maps build step (:class:`~sweeps.spec.MapsStepSpec`): it
    stands for its maps directory, and its teacher may itself be ``@run.yaml`` (relative to the
    step file), a run trained before the step. Any other file is a run config to train first;
    it stands for its checkpoint. Training prerequisites come first, then the maps steps.
    """
    references = list(dict.fromkeys([*_references(sweep.base), *_references(combos)]))
    trained: list[PlannedRun] = []
    steps: list[PlannedRun] = []
    table: dict[str, str] = {}
    errors: list[str] = []
    invalid = 0
    step_files: list[tuple[str, str, Path, dict[str, Any]]] = []

    def train_first(reference: str, relative: str, data: dict[str, Any], prefix: str) -> str | None:
        nonlocal invalid
        nested = list(_references(data))
        if nested:
            errors.append(f"{prefix}refers to {nested[0]}; a prerequisite cannot have prerequisites of its own")
            invalid += 1
            return None
        data = _output_fields(sweep, _ensure_tracking(data))
        tracking = data.get("tracking")
        if isinstance(tracking, dict):
            tracking["tags"] = [*(tracking.get("tags") or []), "prerequisite"]
        try:
            cfg = _validate(data, prefix, produced=set(), check_paths=check_paths, warnings=warnings, machine=machine)
            rid = run_id(cfg)
        except ConfigError as err:
            errors.extend(f"{prefix}{line}" if line.startswith("teacher.") else line for line in str(err).splitlines())
            invalid += 1
            return None
        split = split_problem(sweep, cfg) if machine else None
        if split:  # a run trained first asks for the sweep's resources too
            errors.append(f"{prefix}{split}")
            invalid += 1
            return None
        if all(run.run_id != rid for run in trained):  # two spellings of one file train once
            trained.append(PlannedRun(len(trained), rid, {}, {}, cfg, prerequisite=True, source=relative))
        return rid

    def read(reference: str, folder: Path, prefix: str) -> tuple[str, Path, dict[str, Any]] | None:
        nonlocal invalid
        relative, path = _resolve_reference(reference, folder)
        try:
            return relative, path, read_yaml(path)
        except ConfigError as err:
            errors.append(f"{prefix}{err} (a value starting with @ names a run config or maps step file to run first)")
            invalid += 1
            return None

    def checkpoint(rid: str) -> str:
        return str(RunPaths.of(sweep.output_root, rid).checkpoint)

    for reference in references:
        prefix = f"{sweep.path}: prerequisite {reference}: "
        if (found := read(reference, sweep.folder, prefix)) is None:
            continue
        relative, path, data = found
        if data.get("kind") == "maps":
            step_files.append((reference, relative, path, data))
        elif (rid := train_first(reference, relative, data, prefix)) is not None:
            table[reference] = checkpoint(rid)
    for reference, relative, path, data in step_files:
        prefix = f"{sweep.path}: maps step {reference}: "
        try:
            spec = load_maps_step(path, data)
        except SweepError as err:
            errors.extend(f"{prefix}{line}" for line in str(err).splitlines())
            invalid += 1
            continue
        teacher: Any = spec.teacher
        teacher_runs: dict[str, str] = {}  # the step's own @run.yaml references -> run ids
        for nested in _references(teacher):
            nested_prefix = f"{prefix}teacher {nested}: "
            if (found := read(nested, path.parent, nested_prefix)) is None:
                continue
            nested_relative, _, nested_data = found
            if nested_data.get("kind") == "maps":
                errors.append(f"{nested_prefix}is a maps step; a step's teacher is a checkpoint or a run config")
                invalid += 1
            elif (rid := train_first(nested, str(Path(relative).parent / nested_relative), nested_data,
                                     nested_prefix)) is not None:
                teacher_runs[nested] = rid
        if len(teacher_runs) != len(list(_references(teacher))):
            continue
        inner = {ref: checkpoint(rid) for ref, rid in teacher_runs.items()}
        step = _maps_step(
            sweep, spec, _replace(teacher, inner), relative, prefix, check_paths, warnings, set(inner.values()), machine
        )
        if isinstance(step, str):
            errors.extend(step.splitlines())
            invalid += 1
            continue
        step = dataclasses.replace(step, needs=tuple(sorted(set(teacher_runs.values()))))
        table[reference] = str(step.paths.root)
        if all(run.run_id != step.run_id for run in steps):
            steps.append(step)
    if errors:
        _raise_collected(sweep, errors, invalid)
    offset = len(trained)
    steps = [dataclasses.replace(run, index=offset + i) for i, run in enumerate(steps)]
    return [*trained, *steps], table


def _maps_step(
    sweep: Sweep,
    spec: MapsStepSpec,
    teacher: Any,
    relative: str,
    prefix: str,
    check_paths: bool,
    warnings: list[str],
    produced: set[str],
    machine: bool = True,
) -> PlannedRun | str:
    """The validated build of one maps step over the sweep base's training set (or error lines)."""
    base = sweep.base
    data: dict[str, Any] = {
        "data": copy.deepcopy(base.get("data", {})),
        "teacher": teacher,
        "mix": {"method": "tokenmix"},
        "tracking": {"mode": "disabled"},
        "run": {"output_root": str(sweep.output_root)},
    }
    try:
        cfg = _validate(data, prefix, produced={str(Path(p).absolute()) for p in produced},
                        check_paths=check_paths, warnings=warnings, machine=machine)
    except ConfigError as err:
        return "\n".join(f"{prefix}{line}" if not line.startswith(str(sweep.path)) else line for line in str(err).splitlines())
    step_id = maps_step_id(cfg, spec.img_size)
    return PlannedRun(0, step_id, {}, {}, cfg, prerequisite=True, source=relative, kind="maps",
                      build={"img_size": spec.img_size, "batch_size": spec.batch_size})
