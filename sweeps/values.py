"""Run config values as sweep and study files give them: set on nested dicts directly, never as text.

A sweep file's values are already YAML data, so a run's config is its base with each dotted key
set to its value (:func:`apply_values`), then validated by the run config schema. Only the
command line speaks the ``key=value`` override language (:func:`suite.config.apply_overrides`);
:func:`to_override` writes a value in it for scripts and tests that call the command line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from suite.config import ConfigError
from suite.config.overrides import set_dotted

__all__ = ["apply_values", "format_value", "lookup", "plain", "to_override"]

_SCALARS = (bool, int, float, type(None))


def plain(value: Any) -> Any:
    """``value`` as a run config receives it: JSON data (tuples as lists, paths as text), and text
    that reads as a number (YAML 1.1 reads ``1e-4`` as a string) as that number."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(value, _SCALARS):
        return value
    return json.loads(json.dumps(value, default=str))


def apply_values(base: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with each dotted key set to its value (:func:`plain`), in order.

    The keys walk nested dicts as the command line's overrides do
    (:func:`suite.config.overrides.set_dotted`).

    Raises:
        ConfigError: a key with an empty part (``mix..prob``).
    """
    data = json.loads(json.dumps(base, default=str))
    for key, value in values.items():
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"key {key!r} has an empty part")
        set_dotted(data, parts, plain(value))
    return data


def lookup(data: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted key of nested dicts, or ``KeyError``."""
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def format_value(value: Any) -> str:
    """Short, YAML-like text of an axis value for tables and messages."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{format_value(v)}" for k, v in value.items()) + "}"
    return repr(value) if isinstance(value, float) else str(value)


def to_override(key: str, value: Any) -> str:
    """``key=value`` for the command line (:func:`suite.config.apply_overrides`; JSON is valid YAML)."""
    return f"{key}={json.dumps(value, default=str)}"
