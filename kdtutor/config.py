"""Flat, typed configuration dataclasses built from dicts, with clear errors for bad keys."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from .errors import KDTutorError, closest

C = TypeVar("C")


class ConfigError(KDTutorError, ValueError):
    """A configuration with unknown keys, wrong types or out-of-range values."""


def _accepts(annotation: Any, value: Any) -> tuple[bool, Any]:
    """Whether ``value`` fits ``annotation``; returns (ok, possibly converted value)."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True, value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            ok, converted = _accepts(arg, value)
            if ok:
                return True, converted
        return False, value
    if annotation is type(None):
        return value is None, value
    if origin is typing.Literal:
        return value in typing.get_args(annotation), value
    if origin in (tuple, list):
        if isinstance(value, (list, tuple)):
            return True, origin(value)
        return False, value
    if annotation is float:
        if isinstance(value, bool):
            return False, value
        if isinstance(value, (int, float)):
            return True, float(value)
        return False, value
    if annotation is int:
        if isinstance(value, bool):
            return False, value
        if isinstance(value, int):
            return True, value
        if isinstance(value, float) and value.is_integer():
            return True, int(value)
        return False, value
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is str:
        return isinstance(value, str), value
    if isinstance(annotation, type):
        return isinstance(value, annotation), value
    return True, value


def from_dict(cls: type[C], values: Mapping[str, Any] | None = None, *, what: str = "") -> C:
    """Build dataclass ``cls`` from ``values``, rejecting unknown keys and wrong types.

    Integers are accepted for float fields and lists for tuple fields. A key that ``cls``
    lists in its ``renamed`` class attribute (old name -> new name) is unknown too, and the
    error names its new name.
    """
    values = dict(values or {})
    what = what or cls.__name__
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            near = closest(key, fields)
            suggestion = f" Did you mean {near[0]!r}?" if near else ""
            new_name = getattr(cls, "renamed", {}).get(key)
            if new_name is not None:
                suggestion = f" {key!r} is now {new_name!r}."
            raise ConfigError(
                f"unknown key {key!r} for {what}.{suggestion} Valid keys: {', '.join(sorted(fields))}."
            )
        ok, converted = _accepts(hints[key], value)
        if not ok:
            raise ConfigError(
                f"{what}.{key} must be {_type_name(hints[key])}, got {value!r} "
                f"({type(value).__name__})."
            )
        kwargs[key] = converted
    return cls(**kwargs)


def _type_name(annotation: Any) -> str:
    """``one of 'a', 'b'`` for a Literal, ``int or None`` for a union, else the type's name."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def positive(name: str, value: float | int, owner: str = "") -> None:
    """Raise a :class:`ConfigError` unless ``value > 0``."""
    if not value > 0:
        where = f"{owner}." if owner else ""
        raise ConfigError(f"{where}{name} must be > 0, got {value!r}.")


def non_negative(name: str, value: float | int, owner: str = "") -> None:
    """Raise a :class:`ConfigError` unless ``value >= 0``."""
    if not value >= 0:
        where = f"{owner}." if owner else ""
        raise ConfigError(f"{where}{name} must be >= 0, got {value!r}.")
