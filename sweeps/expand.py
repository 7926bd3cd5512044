"""Expanding a sweep into validated runs.

:func:`expand` turns a :class:`~sweeps.spec.Sweep` into a :class:`Plan`: the axis combinations
(``grid``, ``zip`` or ``one_at_a_time``), the ``include`` runs, minus the ``exclude`` matches,
each once per seed. Every run config is validated with :func:`suite.config.validate_config`
before anything can be submitted; the errors of all runs are collected and raised together,
each line naming the file, the run (index and axis values), the field and the reason.

What the sweep makes first (runs a value ``@<file>.yaml`` names, trained before the runs that
read their checkpoint, and maps build steps) is :mod:`sweeps.prerequisites`; the planned runs, the
checks each goes through (this machine's files, the batch split over the sweep's processes) and
the collected errors are :mod:`sweeps.runs`.
"""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any

from suite.config import ConfigError, run_id, validate_config
from sweeps.extra_seeds import ExtraSeeds
from sweeps.prerequisites import Made, data_mismatch, make_first
from sweeps.runs import SEED_KEY, Checks, Plan, PlannedRun, Problems, describe, output_fields, split_problem
from sweeps.spec import Sweep, SweepError
from sweeps.values import apply_values, lookup

__all__ = ["SEED_KEY", "Plan", "PlannedRun", "describe", "expand", "lookup", "split_problem"]


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


def _axis_combos(sweep: Sweep) -> list[dict[str, Any]]:
    """The axis combinations of the sweep's mode, then its includes."""
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
    return combos + [dict(item.values) for item in spec.include]


def _run_values(sweep: Sweep) -> tuple[list[dict[str, Any]], int]:
    """Each run's values (axis combinations and includes, times the seeds), minus the excluded
    ones; returns (values, excluded count). An ``exclude`` entry may name ``run.seed`` too.

    Raises:
        SweepError: an ``exclude`` entry matches no run.
    """
    spec = sweep.spec
    seeds: list[int | None] = list(spec.seeds) if spec.seeds is not None else [None]
    try:  # the rows adaptive seeding extended (suite sweep launch --until-ci)
        extra = ExtraSeeds.read(sweep.output_root) if spec.seeds is not None else None
    except ValueError as err:
        raise SweepError(str(err)) from None
    runs = []
    for combo in _axis_combos(sweep):
        more = [s for s in extra.seeds(combo) if s not in seeds] if extra is not None else []
        runs += [dict(combo) if seed is None else {**combo, SEED_KEY: seed} for seed in [*seeds, *more]]
    if not spec.exclude:
        return runs, 0
    base_flat = _flatten(sweep.base)
    kept = []
    used: set[int] = set()
    for values in runs:
        assignment = {**base_flat, **values}
        hits = [
            i
            for i, rule in enumerate(spec.exclude)
            if all(k in assignment and _normal(assignment[k]) == _normal(v) for k, v in rule.items())
        ]
        used.update(hits)
        if not hits:
            kept.append(values)
    unused = [f"exclude[{i}] {describe(rule)}" for i, rule in enumerate(spec.exclude) if i not in used]
    if unused:
        seeds_text = f"; seeds {', '.join(map(str, spec.seeds))}" if spec.seeds is not None else ""
        raise SweepError(
            f"{sweep.path}: {', '.join(unused)} matches no run (a typo in a key or value?); the axes are "
            f"{', '.join(spec.axes) or '(none)'}{seeds_text}. Remove the entry or fix it"
        )
    return kept, len(runs) - len(kept)


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
    runs, excluded = _run_values(sweep)
    checks = Checks(sweep, check_paths=check_paths, machine=machine)
    expansion = _Expansion(sweep, checks, make_first(sweep, runs, checks))
    for values in runs:
        expansion.add(dict(values))
    return expansion.plan(excluded)


class _Expansion:
    """The runs of a sweep, added one combination and seed at a time by :func:`expand`."""

    def __init__(self, sweep: Sweep, checks: Checks, made: Made) -> None:
        self.sweep = sweep
        self.checks = checks
        self.made = made
        self.base = _base_config(sweep, made)
        self.runs: list[PlannedRun] = []
        self.problems = Problems(sweep)
        self.refused: dict[str, list[str]] = {}  # batch-split problem -> the runs it refuses
        self.seen_raw: set[str] = set()
        self.seen_ids: set[str] = set()
        self.duplicates = 0

    def add(self, values: dict[str, Any]) -> None:
        """Validate the run of these values; keep it, or count it as a duplicate or an invalid run."""
        name = f"run {len(self.runs) + self.problems.invalid} ({describe(values) or 'base'})"
        prefix = f"{self.sweep.path}: {name}: "
        try:
            data = apply_values(self.sweep.base, values)
        except ConfigError as err:
            self.problems.add(f"{prefix}{err}")
            return
        data = output_fields(self.sweep, self.made.resolve(data))
        raw_key = json.dumps(data, sort_keys=True, default=str)
        if self._seen(self.seen_raw, raw_key):
            return
        try:
            cfg = self.checks.validate(data, prefix, produced=set(self.made.run_ids))
            rid = run_id(cfg)  # a teacher file is identified by its content: it must be readable here
        except ConfigError as err:
            self.problems.add_config_error(err, prefix)
            return
        if self._seen(self.seen_ids, rid):
            return
        if mismatch := data_mismatch(cfg, self.made.steps):
            self.problems.add(f"{prefix}{mismatch}")
        elif split := self.checks.split(cfg):
            self.refused.setdefault(split, []).append(name)
            self.problems.invalid += 1
        else:
            changed = _changed(values, self.base)
            self.runs.append(PlannedRun(len(self.runs), rid, values, changed, cfg, needs=self.made.needs(cfg)))

    def _seen(self, seen: set[str], key: str) -> bool:
        """Whether a run with this key came before (a duplicate, counted); else remember it."""
        if key in seen:
            self.duplicates += 1
            return True
        seen.add(key)
        return False

    def plan(self, excluded: int) -> Plan:
        """The plan of the runs added so far.

        Raises:
            SweepError: one line per invalid run and field (one per batch-split refusal).
        """
        self.problems.errors += _split_errors(self.sweep, self.refused)
        self.problems.raise_any()
        warnings = list(dict.fromkeys(self.checks.warnings))
        return Plan(self.sweep, self.runs, self.made.runs, warnings, duplicates=self.duplicates, excluded=excluded)


def _split_errors(sweep: Sweep, refused: dict[str, list[str]]) -> list[str]:
    """One line per distinct batch-split refusal: the first run it concerns, then the others' indices."""
    lines = []
    for problem, runs in refused.items():
        others = [run.split(" ", 2)[1] for run in runs[1:]]
        shown = ", ".join(others[:12]) + (", ..." if len(others) > 12 else "")
        also = f" and {len(others)} more run(s) ({shown})" if others else ""
        lines.append(f"{sweep.path}: {runs[0]}{also}: {problem}")
    return lines


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


def _base_config(sweep: Sweep, made: Made) -> dict[str, Any] | None:
    """The resolved base run as JSON data, to tell which axis values differ from it (None if invalid)."""
    data = output_fields(sweep, made.resolve(copy.deepcopy(sweep.base)))
    try:
        cfg = validate_config(data)
    except ConfigError:
        return None
    return json.loads(cfg.model_dump_json())
