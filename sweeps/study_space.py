"""A study's search space: one distribution per dotted run config key (float, int or categorical).

A list is a categorical; ``{low, high}`` without ``type`` is an int range when both bounds are
ints, else a float range (:func:`infer_type`). Optuna stores categorical choices as scalars, so
other choices (a mask-ratio range ``[0.3, 0.7]``) travel as JSON text (:func:`encode_choice`) and
come back as run config values (:func:`decode_param`).
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from sweeps.schema import Strict

__all__ = ["CategoricalParam", "FloatParam", "IntParam", "Param", "decode_param", "encode_choice", "infer_type"]


def _bounds(low: float, high: float, log: bool) -> None:
    if low > high:
        raise ValueError(f"low must be <= high, but got low={low!r}, high={high!r}")
    if log and low <= 0:
        raise ValueError(f"log scale needs low > 0, but got low={low!r}")


class FloatParam(Strict):
    """A float in ``[low, high]``; ``log`` samples its logarithm uniformly; ``step`` discretises."""

    type: Literal["float"] = "float"
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        _bounds(self.low, self.high, self.log)
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined (Optuna samples either on a log scale or on a grid)")
        return self

    def values(self) -> list[float] | None:
        """The finite set of values (with ``step``), else None."""
        if self.step is None:
            return None
        n = math.floor((self.high - self.low) / self.step + 1e-9)
        return [round(self.low + i * self.step, 10) for i in range(n + 1)]

    def probes(self) -> list[Any]:
        return [self.low, self.high]


class IntParam(Strict):
    """An integer in ``[low, high]`` (both included); ``log`` or ``step``."""

    type: Literal["int"] = "int"
    low: int
    high: int
    log: bool = False
    step: int = Field(1, gt=0)

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        _bounds(self.low, self.high, self.log)
        if self.log and self.step != 1:
            raise ValueError("log and step cannot be combined (Optuna samples either on a log scale or on a grid)")
        return self

    def values(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step))

    def probes(self) -> list[Any]:
        return [self.low, self.high]


class CategoricalParam(Strict):
    """One of ``choices`` (any YAML values; lists such as a mask-ratio range ``[0.3, 0.7]`` too)."""

    type: Literal["categorical"] = "categorical"
    choices: list[Any]

    @field_validator("choices")
    @classmethod
    def _choices(cls, value: list[Any]) -> list[Any]:
        if not value:
            raise ValueError("choices is an empty list; give at least one value")
        encoded = [encode_choice(v) for v in value]
        if len(set(map(repr, encoded))) != len(encoded):
            raise ValueError(f"choices must be distinct, but got {value}")
        return value

    def values(self) -> list[Any]:
        return [encode_choice(v) for v in self.choices]

    def probes(self) -> list[Any]:
        return list(self.choices)


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


def encode_choice(value: Any) -> Any:
    """Optuna stores categorical choices as None/bool/int/float/str: other values become JSON text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True)


def decode_param(dist: Any, value: Any) -> Any:
    """An Optuna param value back to the run config value (categorical JSON text back to lists)."""
    if isinstance(dist, CategoricalParam):
        for choice in dist.choices:
            if encode_choice(choice) == value:
                return choice
    return value


def infer_type(dist: Any) -> Any:
    """``[a, b]`` is a categorical; ``{low, high}`` without ``type`` is int when both are ints, else float."""
    if isinstance(dist, list):
        return {"type": "categorical", "choices": dist}
    if isinstance(dist, dict) and "type" not in dist:
        if "choices" in dist:
            return {"type": "categorical", **dist}
        ints = all(isinstance(dist.get(k), int) and not isinstance(dist.get(k), bool) for k in ("low", "high"))
        return {"type": "int" if ints and not isinstance(dist.get("step"), float) else "float", **dist}
    return dist
