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

Missing paths. The run config schema never looks at the filesystem, so every run validates
(and gets its run id) the same way on a laptop and on the cluster. What this machine lacks is
found by :func:`suite.preflight.machine_problems`: an unknown timm model is always an error; a
missing ``data.root``, ``model.checkpoint`` or teacher file is a warning with
``check_paths=False`` (plan works without the dataset) and an error with ``check_paths=True``
(launch), except paths that a prerequisite of the sweep produces.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suite.config import ConfigError, TrainConfig, apply_overrides, read_yaml, run_id, validate_config
from suite.preflight import machine_problems
from suite.records import RunPaths, RunState, run_state
from sweeps.spec import Sweep, SweepError, format_value, to_override

__all__ = ["Plan", "PlannedRun", "expand", "lookup"]

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
    """

    index: int
    run_id: str
    values: dict[str, Any]
    changed: dict[str, Any]
    config: TrainConfig
    needs: tuple[str, ...] = ()
    prerequisite: bool = False
    source: str | None = None

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


def lookup(data: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted key of nested dicts, or ``KeyError``."""
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def _normal(value: Any) -> Any:
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
    data = apply_overrides(data, [to_override("run.output_root", str(sweep.output_root))])
    tracking = data.get("tracking")
    if not isinstance(tracking, dict):
        return data  # validation reports a malformed tracking section
    spec = sweep.spec.tracking
    tracking["group"] = spec.group or sweep.name
    if spec.project is not None:
        tracking["project"] = spec.project
    if spec.mode is not None:
        tracking["mode"] = spec.mode
    if spec.tags:
        tags = list(tracking.get("tags") or [])
        tracking["tags"] = tags + [t for t in spec.tags if t not in tags]
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
) -> TrainConfig:
    """Validate one run config, then check it against this machine (see the module docstring)."""
    cfg = validate_config(data, prefix=prefix)
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


def _references(data: Any) -> Iterator[str]:
    if isinstance(data, str) and data.startswith(REFERENCE_PREFIX):
        yield data
    elif isinstance(data, dict):
        for value in data.values():
            yield from _references(value)
    elif isinstance(data, list):
        for value in data:
            yield from _references(value)


def _replace(data: Any, table: dict[str, str]) -> Any:
    if isinstance(data, str):
        return table.get(data, data)
    if isinstance(data, dict):
        return {key: _replace(value, table) for key, value in data.items()}
    if isinstance(data, list):
        return [_replace(value, table) for value in data]
    return data


def _raise_collected(sweep: Sweep, errors: list[str], total: int) -> None:
    shown = errors[:MAX_SHOWN_ERRORS]
    more = len(errors) - len(shown)
    tail = f"\n... and {more} more error lines" if more > 0 else ""
    head = f"{sweep.path}: {total} run(s) of the sweep are invalid; nothing was submitted\n"
    raise SweepError(head + "\n".join(shown) + tail)


def expand(sweep: Sweep, *, check_paths: bool = True) -> Plan:
    """Expand and validate every run of a sweep.

    Args:
        sweep: a loaded sweep (:func:`sweeps.spec.load_sweep`).
        check_paths: refuse missing data/checkpoint paths (launch); ``False`` turns them into
            warnings (plan), except that paths made by prerequisites are always accepted.

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
    prerequisites, table = _prerequisites(sweep, combos, check_paths=check_paths, warnings=warnings)
    by_path = {str(Path(path).absolute()): Path(path).parent.name for path in table.values()}
    produced = set(by_path)
    base_cfg = _base_config(sweep, table, produced)
    runs: list[PlannedRun] = []
    seen_raw: set[str] = set()
    seen_ids: set[str] = set()
    duplicates = 0
    for combo in combos:
        for seed in seeds:
            values = dict(combo) if seed is None else {**combo, SEED_KEY: seed}
            index = len(runs) + invalid
            prefix = f"{sweep.path}: run {index} ({describe(values) or 'base'}): "
            try:
                data = apply_overrides(sweep.base, [to_override(k, v) for k, v in values.items()])
            except ConfigError as err:
                errors.append(f"{prefix}{err}")
                invalid += 1
                continue
            data = _output_fields(sweep, _ensure_tracking(_replace(data, table)))
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
    if errors:
        _raise_collected(sweep, errors, invalid)
    unique_warnings = list(dict.fromkeys(warnings))
    return Plan(sweep, runs, prerequisites, unique_warnings, duplicates=duplicates, excluded=excluded)


def _used_paths(cfg: TrainConfig) -> list[str]:
    paths = [cfg.teacher.checkpoint, cfg.model.checkpoint]
    return [str(Path(p).absolute()) for p in paths if p is not None]


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


def _base_config(sweep: Sweep, table: dict[str, str], produced: set[str]) -> dict[str, Any] | None:
    """The resolved base run as JSON data, to tell which axis values differ from it (None if invalid)."""
    data = _output_fields(sweep, _ensure_tracking(_replace(copy.deepcopy(sweep.base), table)))
    try:
        cfg = validate_config(data)
    except ConfigError:
        return None
    return json.loads(cfg.model_dump_json())


def _prerequisites(
    sweep: Sweep, combos: list[dict[str, Any]], *, check_paths: bool, warnings: list[str]
) -> tuple[list[PlannedRun], dict[str, str]]:
    """Validate every ``@file.yaml`` run; returns them and the reference -> checkpoint path table."""
    references = list(dict.fromkeys([*_references(sweep.base), *_references(combos)]))
    runs: list[PlannedRun] = []
    table: dict[str, str] = {}
    errors: list[str] = []
    invalid = 0
    for reference in references:
        relative = reference[len(REFERENCE_PREFIX) :]
        path = Path(relative) if Path(relative).is_absolute() else sweep.folder / relative
        prefix = f"{sweep.path}: prerequisite {reference}: "
        try:
            data = read_yaml(path)
        except ConfigError as err:
            errors.append(f"{prefix}{err} (a value starting with @ names a run config file to train first)")
            invalid += 1
            continue
        nested = list(_references(data))
        if nested:
            errors.append(
                f"{prefix}refers to {nested[0]}; a prerequisite cannot have prerequisites of its own"
            )
            invalid += 1
            continue
        data = _output_fields(sweep, _ensure_tracking(data))
        tracking = data.get("tracking")
        if isinstance(tracking, dict):
            tracking["tags"] = [*(tracking.get("tags") or []), "prerequisite"]
        try:
            cfg = _validate(data, prefix, produced=set(), check_paths=check_paths, warnings=warnings)
            rid = run_id(cfg)
        except ConfigError as err:
            errors.extend(f"{prefix}{line}" if line.startswith("teacher.") else line for line in str(err).splitlines())
            invalid += 1
            continue
        table[reference] = str(RunPaths.of(sweep.output_root, rid).checkpoint)
        if all(run.run_id != rid for run in runs):  # two spellings of one file train once
            runs.append(PlannedRun(len(runs), rid, {}, {}, cfg, prerequisite=True, source=relative))
    if errors:
        _raise_collected(sweep, errors, invalid)
    return runs, table
