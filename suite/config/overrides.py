"""Reading a run config: a YAML file plus ``key.sub=value`` overrides, validated into a
:class:`~suite.config.schema.TrainConfig` or a :class:`~suite.config.strict.ConfigError` that
names the dotted field. Override values are YAML (``0.5``, ``[0.3,0.8]``, ``null``, ``true``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from suite.config.schema import DataConfig, TeacherConfig, TrainConfig
from suite.config.strict import ConfigError, format_validation_error

__all__ = ["apply_overrides", "load_config", "read_yaml", "set_dotted", "validate_config"]


_JSON_START = frozenset('-0123456789tfnN"')
_MISSING = object()


def _parse_value(text: str) -> Any:
    """An override's value, read as YAML (JSON, as sweeps write it, is read by a faster path
    with the same result)."""
    value: Any = _MISSING
    if text[:1] in _JSON_START and not (text[:1] == '"' and "\\" in text):
        try:
            value = json.loads(text)
        except ValueError:
            value = _MISSING
        if isinstance(value, (dict, list)):  # containers go through YAML (it reads 1e-5 in a list as text)
            value = _MISSING
    if value is _MISSING:
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            return text
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_overrides(base: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a nested dict copy."""
    data = json.loads(json.dumps(base, default=str))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r} has an empty key part")
        set_dotted(data, parts, _parse_value(raw))
    return data


def set_dotted(data: dict[str, Any], parts: list[str], value: Any) -> None:
    """Set ``value`` at the dotted key ``parts`` of nested dicts, in place.

    A shorthand on the way (``data: builtin``, ``teacher: runs/x``) opens into its section;
    anything else that is not a mapping is replaced by one. Sweep files set their values with it
    too (``sweeps.values.apply_values``), so a file and the command line agree.
    """
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if isinstance(child, str):  # shorthand such as data=builtin, then data.img_size=...
            child = DataConfig.expand_shorthand(child) if part == "data" else TeacherConfig.expand_shorthand(child)
        if not isinstance(child, dict):
            child = {}
        node[part] = child
        node = child
    node[parts[-1]] = value


def validate_config(data: dict[str, Any], *, prefix: str = "") -> TrainConfig:
    """Validate a nested dict into a :class:`TrainConfig` or raise :class:`ConfigError`."""
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, root=TrainConfig, prefix=prefix)) from None


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping (safe loader); a missing or malformed file is a ConfigError."""
    path = Path(path)
    if path.is_dir():
        files = sorted(f.name for f in path.glob("*.yaml"))[:5]
        hint = f" (its YAML files: {', '.join(files)})" if files else ""
        raise ConfigError(f"{path} is a folder, not a config file; give one YAML file in it{hint}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror or err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_config(path: Path | str | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Load a run config from an optional YAML file plus ``key.sub=value`` overrides.

    Example:
        >>> cfg = load_config(None, ["mix.method=cutmix", "schedule.epochs=2"])
        >>> cfg.mix.method, cfg.schedule.epochs
        ('cutmix', 2)
    """
    base = read_yaml(Path(path)) if path is not None else {}
    return validate_config(apply_overrides(base, list(overrides or [])))
