"""The runs of a sweep plan, and the checks every planned run goes through.

A :class:`PlannedRun` is one validated run (or a run or maps build the sweep makes first); a
:class:`Plan` is all of them. :class:`Checks` validates one run config with the suite's schema,
then against this machine and the sweep's resources; :class:`Problems` collects what is wrong
with every run, so that a sweep fails once, with one line per invalid run and field.

Missing paths. The run config schema never looks at the filesystem, so every run validates
(and gets its run id) the same way on a laptop and on the cluster. What this machine lacks is
found by :func:`suite.train.preflight.machine_problems`: an unknown timm model is always an error; a
missing ``data.root``, ``model.checkpoint`` or teacher file is a warning with
``check_paths=False`` (plan works without the dataset) and an error with ``check_paths=True``
(launch), except paths that a prerequisite of the sweep produces.

The batch split. ``data.batch_size`` is the global batch of a run's ``resources.processes``
processes; each process mixes its own share, so a run whose share is not even, or not a multiple
of ``mix.groups``, would fail at its first step on the cluster. Such runs are refused
(:func:`split_problem`, :mod:`suite.device.batch_split`); identical refusals are reported once,
with the runs they concern.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from suite.config import ConfigError, TrainConfig, validate_config
from suite.device.batch_split import accumulation_problem, batch_split_problem
from suite.run.records import RunPaths, RunState, run_state
from suite.train.preflight import machine_problems
from sweeps.spec import Sweep, SweepError, apply_tracking, format_value
from sweeps.values import apply_values

__all__ = ["SEED_KEY", "Checks", "Plan", "PlannedRun", "Problems", "describe", "output_fields", "split_problem"]

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


def output_fields(sweep: Sweep, data: dict[str, Any]) -> dict[str, Any]:
    """Set the output-only fields every run of the sweep shares (never part of a run id)."""
    if "tracking" not in data:
        data["tracking"] = {}
    section = data.get("run")
    if isinstance(section, dict):  # the caller's own copy: set it in place (no second deep copy)
        section["output_root"] = str(sweep.output_root)
    else:  # absent, or malformed (validation names it)
        data = apply_values(data, {"run.output_root": str(sweep.output_root)})
    tracking = data.get("tracking")
    if isinstance(tracking, dict):  # else validation reports the malformed section
        apply_tracking(tracking, sweep.spec.tracking, group=sweep.name)
    return data


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
    ) or accumulation_problem(cfg.data.batch_size, res.processes, cfg.optim.accum_steps)


@dataclass
class Checks:
    """How strictly planned runs are checked, and the warnings the checks leave.

    Attributes:
        sweep: the sweep whose runs these are.
        check_paths: refuse missing data/checkpoint paths (launch); ``False`` makes them warnings (plan).
        machine: check that the runs can run, here (files, timm models) and on the sweep's
            resources (the batch split); a report reading existing records passes False.
        warnings: what the checks noticed, in order (repeats included).
    """

    sweep: Sweep
    check_paths: bool = True
    machine: bool = True
    warnings: list[str] = field(default_factory=list)

    def validate(self, data: dict[str, Any], prefix: str, *, produced: set[str]) -> TrainConfig:
        """Validate one run config, then check it against this machine (see the module docstring).

        Raises:
            ConfigError: one line per problem, each starting with ``prefix``.
        """
        cfg = validate_config(data, prefix=prefix)
        if not self.machine:
            return cfg
        errors = []
        for problem in machine_problems(cfg, produced=produced):
            if problem.kind in ("path", "teacher") and not self.check_paths:
                self.warnings.append(
                    f"{problem} (fine for plan; launch refuses it): set {problem.field}=<path> on the command "
                    "line or in base.overrides"
                )
            else:
                errors.append(f"{prefix}{problem}")
        if errors:
            raise ConfigError("\n".join(errors))
        return cfg

    def split(self, cfg: TrainConfig) -> str | None:
        """Why the run cannot train on the sweep's processes (None: it can, or machine checks are off)."""
        return split_problem(self.sweep, cfg) if self.machine else None


@dataclass
class Problems:
    """What is wrong with the runs of a sweep: error lines and the count of invalid runs."""

    sweep: Sweep
    errors: list[str] = field(default_factory=list)
    invalid: int = 0

    def add(self, *lines: str) -> None:
        """One invalid run, with its error lines."""
        self.errors.extend(lines)
        self.invalid += 1

    def add_config_error(self, err: ConfigError, prefix: str) -> None:
        """An invalid run config: validation lines carry ``prefix`` already, a teacher file's error not."""
        self.add(*(f"{prefix}{line}" if line.startswith("teacher.") else line for line in str(err).splitlines()))

    def raise_any(self) -> None:
        """Raise the collected errors (the first :data:`MAX_SHOWN_ERRORS` lines), if any."""
        if not self.errors:
            return
        shown = self.errors[:MAX_SHOWN_ERRORS]
        more = len(self.errors) - len(shown)
        tail = f"\n... and {more} more error lines" if more > 0 else ""
        head = f"{self.sweep.path}: {self.invalid} run(s) of the sweep are invalid; nothing was submitted\n"
        raise SweepError(head + "\n".join(shown) + tail)
