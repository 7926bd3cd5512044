"""What every config schema of the suite shares: the strict model base, the error type, and
messages that name the dotted field (an unknown key lists the valid keys with their defaults,
submitit's ``_internal_update_parameters`` idea). Run configs and sweep/study files use them."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

__all__ = ["ConfigError", "Strict", "describe_keys", "format_validation_error"]


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the dotted field(s)."""


def _numeric(annotation: Any) -> bool:
    """An int/float field (or one of them or None): where YAML's true/false must not pass as 1/0."""
    import types
    import typing

    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(args) and all(a in (int, float) for a in args)
    return False


class Strict(BaseModel):
    """A pydantic model that refuses unknown keys and checks assignments (every config section)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_as_numbers(cls, data: Any) -> Any:
        """``schedule.epochs=true`` is a mistake, not 1: a boolean in a number field fails as text."""
        if isinstance(data, dict):
            numeric = _numeric_fields(cls)
            for name, value in data.items():
                if isinstance(value, bool) and name in numeric:
                    data = {**data, name: str(value).lower()}
        return data


@functools.cache
def _numeric_fields(cls: type[BaseModel]) -> frozenset[str]:
    return frozenset(name for name, field in cls.model_fields.items() if _numeric(field.annotation))



def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = root
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return None
    return model


def describe_keys(model: type[BaseModel]) -> str:
    """``name=default, ...`` of a model's fields: what an unknown key's message lists."""
    parts = []
    for name, field in model.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "{...}" if isinstance(default, BaseModel) else repr(default)
        parts.append(f"{name}={shown}")
    return ", ".join(parts)


def format_validation_error(err: ValidationError, *, root: type[BaseModel], prefix: str = "") -> str:
    """Readable, dotted-field messages for a pydantic error; unknown keys list the valid ones.

    ``root`` is the model that was validated; an unknown key's message lists the keys of the
    section it was found in.
    """
    lines = []
    for item in err.errors():
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and p.startswith(("function-", "tuple["))))
        dotted = ".".join(str(p) for p in loc) or "(config)"
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            parent = _model_at(root, loc[:-1])
            valid = f"; valid keys: {describe_keys(parent)}" if parent else ""
            msg = f"unknown key{valid}"
        elif item["type"] in ("int_parsing", "float_parsing", "bool_parsing", "int_type", "float_type"):
            msg = f"{msg} (got {item.get('input')!r})"
        if not loc or msg.startswith(f"{dotted}.") or msg.startswith(f"{dotted}:"):
            lines.append(f"{prefix}{msg}")
        else:
            lines.append(f"{prefix}{dotted}: {msg}")
    return "\n".join(lines)
