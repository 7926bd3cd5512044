"""Which runs make up a sweep, in sweep order, grouped into conditions (axis values minus seed).

Expanding a sweep validates every run config (about 1 ms per run), so the expanded plan is
cached next to the run records (``<output_root>/.report-plan.pkl``), keyed by the bytes of the
sweep file and of every run config file it names, the command-line overrides, and the size and
modification time of the modules that define run ids (``suite/config/``, ``sweeps/*.py``).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import suite.config.identity
import suite.config.schema
import sweeps.expand
import sweeps.extra_seeds
import sweeps.prerequisites
import sweeps.runs
import sweeps.schema
import sweeps.spec
import sweeps.values
from analysis._records import trusted
from suite.run.records import atomic_write_bytes
from sweeps.expand import SEED_KEY, expand, lookup
from sweeps.extra_seeds import EXTRA_SEEDS_FILE
from sweeps.spec import Sweep, format_value, load_sweep

__all__ = ["Condition", "SweepPlan", "condition_label", "plan_sweep", "value_label", "value_text"]

PLAN_CACHE = ".report-plan.pkl"


@dataclass
class Condition:
    """One row of an ablation table: a combination of axis values, run once per seed.

    Attributes:
        index: position in sweep order.
        values: the axis values as written in the sweep (seed excluded).
        label: the row's name: the sweep file's ``label`` of its include entry, else
            :func:`condition_label` of what differs from the base run (``labels:`` naming values), or ``base``.
        is_base: the condition equals the sweep's base run.
        run_ids: seed -> run id.
    """

    index: int
    values: dict[str, Any]
    label: str
    is_base: bool
    run_ids: dict[int, str] = field(default_factory=dict)


@dataclass
class SweepPlan:
    """A sweep reduced to what a report needs.

    Attributes:
        name: the sweep name.
        path: the sweep file.
        mode: ``one_at_a_time``, ``grid`` or ``rows`` (include-only, zip, or a one-axis grid).
        axes: axis key -> values as written.
        base_values: axis key -> the base run's value (resolved config), where known.
        output_root: where the run directories are.
        group: the W&B group of the sweep's runs.
        conditions: in sweep order.
        description: the sweep's description line.
        labels: the sweep file's ``labels:``, dotted key -> {value text: name}.
    """

    name: str
    path: Path
    mode: str
    axes: dict[str, list[Any]]
    base_values: dict[str, Any]
    output_root: Path
    group: str
    conditions: list[Condition]
    description: str | None = None
    labels: dict[str, dict[str, str]] = field(default_factory=dict)

    def run_ids(self) -> list[str]:
        return [rid for cond in self.conditions for rid in cond.run_ids.values()]

    def value_label(self, key: str, value: Any) -> str:
        """An axis value as this sweep's tables show it: its name in ``labels:``, else :func:`value_label`."""
        given = self.labels.get(key, {}).get(value_text(value))
        return given if given is not None else value_label(key, value)


def _key(values: dict[str, Any]) -> str:
    return json.dumps(values, sort_keys=True, default=str)


def _fingerprint(sweep: Sweep, overrides: list[str]) -> str:
    digest = hashlib.sha256()
    files = [sweep.path]
    if sweep.spec.base.config is not None:
        cfg = sweep.spec.base.config
        files.append(cfg if cfg.is_absolute() else sweep.folder / cfg)
    text = json.dumps([sweep.spec.model_dump(mode="json"), sweep.base], sort_keys=True, default=str)
    files += [sweep.folder / ref[1:] for ref in _refs(text)]
    files.append(sweep.output_root / EXTRA_SEEDS_FILE)  # rows that adaptive seeding extended
    for path in files:
        digest.update(str(path).encode())
        try:
            digest.update(Path(path).read_bytes())
        except OSError:
            digest.update(b"<missing>")
    digest.update(json.dumps([overrides, str(sweep.output_root)]).encode())
    identity_modules = (sweeps.expand, sweeps.extra_seeds, sweeps.spec, sweeps.values, sweeps.runs, sweeps.prerequisites, sweeps.schema)
    for module in (suite.config.schema, suite.config.identity, *identity_modules, sys.modules[__name__]):
        st = Path(module.__file__).stat()  # type: ignore[arg-type]
        digest.update(f"{module.__name__}:{st.st_size}:{st.st_mtime_ns}".encode())
    return digest.hexdigest()


def _refs(text: str) -> list[str]:
    import re

    return sorted(set(re.findall(r'"(@[^"]+\.ya?ml)"', text)))


def _mode(sweep: Sweep) -> str:
    spec = sweep.spec
    if spec.mode == "one_at_a_time" and spec.axes:
        return "one_at_a_time"
    if spec.mode == "grid" and len(spec.axes) >= 2:
        return "grid"
    return "rows"


def plan_sweep(
    path: Path, overrides: list[str] | None = None, *, output_root: Path | None = None, cache: bool = True
) -> SweepPlan:
    """Expand a sweep file (without checking data paths) into its report conditions.

    Args:
        path: the sweep YAML file.
        overrides: run config overrides given to ``launch`` (they change run ids).
        output_root: replaces the sweep file's output root (as ``launch --output-root`` does).
        cache: reuse the expanded plan when neither the files nor the id code changed.

    Returns:
        The :class:`SweepPlan`.

    Raises:
        SweepError: the sweep file is invalid (the message names the file and field).
    """
    overrides = list(overrides or [])
    sweep = load_sweep(path, overrides, output_root=output_root)
    cache_file = sweep.output_root / PLAN_CACHE
    fingerprint = _fingerprint(sweep, overrides) if cache else ""
    if cache:
        try:
            with open(cache_file, "rb") as handle:
                stored = pickle.load(handle) if trusted(handle.fileno()) else {}
            if stored.get("fingerprint") == fingerprint:
                return stored["plan"]
        except Exception:  # noqa: BLE001 - missing or stale cache: expand again
            pass
    plan = expand(sweep, check_paths=False, machine=False)  # the records decide, not this machine
    base_cfg = json.loads(plan.runs[0].config.model_dump_json()) if plan.runs else {}
    conditions: dict[str, Condition] = {}
    for run in plan.runs:
        values = {k: v for k, v in run.values.items() if k != SEED_KEY}
        seed = int(run.values.get(SEED_KEY, run.config.run.seed))
        key = _key(values)
        if key not in conditions:
            changed = {k: v for k, v in run.changed.items() if k != SEED_KEY}
            label = condition_label(values if not sweep.spec.axes else changed,
                                    label=sweep.spec.row_label(values), labels=sweep.spec.labels)
            conditions[key] = Condition(len(conditions), values, label, not changed)
        conditions[key].run_ids[seed] = run.run_id
    base_values: dict[str, Any] = {}
    base_run = next((c for c in conditions.values() if c.is_base), None)
    for axis in sweep.spec.axes:
        if base_run is not None and base_run.run_ids:
            rid = next(iter(base_run.run_ids.values()))
            cfg = next(json.loads(r.config.model_dump_json()) for r in plan.runs if r.run_id == rid)
            try:
                base_values[axis] = lookup(cfg, axis)
            except KeyError:
                pass
        elif base_cfg:
            try:
                base_values[axis] = lookup(sweep.base, axis)
            except KeyError:
                pass
    result = SweepPlan(
        name=sweep.name,
        path=sweep.path,
        mode=_mode(sweep),
        axes={k: list(v) for k, v in sweep.spec.axes.items()},
        base_values=base_values,
        output_root=sweep.output_root,
        group=sweep.spec.tracking.group or sweep.name,
        conditions=list(conditions.values()),
        description=sweep.spec.description,
        labels={key: dict(names) for key, names in sweep.spec.labels.items()},
    )
    if cache and sweep.output_root.is_dir():
        try:
            atomic_write_bytes(cache_file, pickle.dumps({"fingerprint": fingerprint, "plan": result}))
        except OSError:
            pass
    return result


def value_text(value: Any) -> str:
    """An axis value as tables show it (``format_value`` of the sweep code)."""
    return format_value(value)


METHOD_NAMES = {"none": "no mixing", "mixup": "Mixup", "cutmix": "CutMix", "tokenmix": "TokenMix"}
TARGET_NAMES = {"area": "area labels"}
_FILE_SUFFIXES = (".yaml", ".yml", ".json", ".pt", ".pth", ".ckpt", ".safetensors")
_LABEL_ORDER = ("mix.method", "teacher", "mix.target")


def _is_path(text: str) -> bool:
    return text.startswith("@") or "/" in text or "\\" in text or text.endswith(_FILE_SUFFIXES)


def _path_name(text: str) -> str:
    """``@base/teacher_cnn.yaml`` -> ``teacher_cnn``; ``maps:/data/maps/cnn`` -> ``maps: cnn``."""
    prefix = ""
    if text.startswith("maps:"):
        prefix, text = "maps: ", text[len("maps:"):]
    name = text.lstrip("@").replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    for suffix in _FILE_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return prefix + (name or text)


def value_label(key: str, value: Any) -> str:
    """An axis value as a table row shows it: method names spelled out, file paths as their stem.

    Example:
        >>> value_label("teacher", "@base/teacher_cnn.yaml"), value_label("mix.mask_ratio", 0.5)
        ('teacher_cnn', '0.5')
    """
    if key == "mix.method" and value in METHOD_NAMES:
        return METHOD_NAMES[value]
    if key == "teacher" and value in (None, "none"):
        return "no teacher"
    if isinstance(value, str) and (key == "teacher" or _is_path(value)):
        return _path_name(value)
    return value_text(value)


def condition_label(
    values: dict[str, Any], *, label: str | None = None, labels: dict[str, dict[str, str]] | None = None
) -> str:
    """The name of a table row: the sweep's own ``label``, else built from the axis values that set
    the row apart (``base`` if none).

    The method comes first, then the teacher and the target, then every other ``key=value``;
    a value the sweep names in ``labels`` (dotted key -> {value text: name}) shows as that name,
    file paths as their stem, never as paths. This is the one place row labels are built.

    Example:
        >>> condition_label({"mix.method": "tokenmix", "mix.target": "teacher_norm",
        ...                  "teacher": "@base/teacher_cnn.yaml"})
        'TokenMix · teacher: teacher_cnn · teacher_norm'
        >>> condition_label({"mix.method": "cutmix", "mix.mixup_alpha": 0.0})
        'CutMix · mix.mixup_alpha=0.0'
        >>> condition_label({"mix.method": "tokenmix", "teacher": "@t.yaml"}, labels={"teacher": {"@t.yaml": "CNN"}})
        'TokenMix · CNN'
        >>> condition_label({"mix.method": "cutmix"}, label="CutMix (reference)")
        'CutMix (reference)'
    """
    if label is not None:
        return label
    if not values:
        return "base"
    keys = [k for k in _LABEL_ORDER if k in values] + [k for k in values if k not in _LABEL_ORDER]
    parts = []
    for key in keys:
        value = values[key]
        given = (labels or {}).get(key, {}).get(value_text(value))
        if given is not None:
            parts.append(given)
        elif key == "mix.method" and value in METHOD_NAMES:
            parts.append(METHOD_NAMES[value])
        elif key == "teacher":
            text = value_label(key, value)
            parts.append(text if text == "no teacher" else f"teacher: {text}")
        elif key == "mix.target" and isinstance(value, str):
            parts.append(TARGET_NAMES.get(value, value))
        else:
            parts.append(f"{key}={value_label(key, value)}")
    return " · ".join(parts)
