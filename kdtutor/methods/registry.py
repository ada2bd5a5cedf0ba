"""Methods by name: ``build_distiller("kd", student, teacher, T=4)``.

A method's module is imported when the method is first asked for: ``get_method("kd")`` imports
``kdtutor.methods.kd`` (every method lives in the module of its name), and :func:`list_methods`
imports them all. A program therefore loads only the methods it uses, and a change to one
method's file does not touch the others' users.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from torch import nn

from ..config import from_dict
from ..errors import unknown_name
from .base import Distiller

_METHODS: dict[str, type[Distiller]] = {}
_PACKAGE = __name__.rpartition(".")[0]
_INFRASTRUCTURE = frozenset({"base", "feature_base", "hparams", "registry", "steps"})
"""Modules of the package that hold the contract, not a method."""

D = TypeVar("D", bound=type[Distiller])


def register_method(cls: D) -> D:
    """Class decorator adding a :class:`Distiller` subclass to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a class attribute `name` to be registered.")
    if cls.name in _METHODS and _METHODS[cls.name] is not cls:
        raise ValueError(
            f"method name {cls.name!r} is already registered by {_METHODS[cls.name].__name__}."
        )
    _METHODS[cls.name] = cls
    return cls


def method_modules() -> list[str]:
    """Names of the package's method modules (each registers the method of its name);
    modules starting with ``_`` hold pieces shared by several methods."""
    package = importlib.import_module(_PACKAGE)
    return sorted(
        m.name
        for m in pkgutil.iter_modules(package.__path__)
        if m.name not in _INFRASTRUCTURE and not m.name.startswith("_")
    )


def _import_all() -> None:
    for module in method_modules():
        importlib.import_module(f"{_PACKAGE}.{module}")


def list_methods() -> list[str]:
    """Names of every registered method, sorted (importing every method module)."""
    _import_all()
    return sorted(_METHODS)


def get_method(name: str) -> type[Distiller]:
    """The Distiller class registered as ``name``, importing its module on first use."""
    if name not in _METHODS and name in method_modules():
        importlib.import_module(f"{_PACKAGE}.{name}")
    if name not in _METHODS:
        _import_all()
    try:
        return _METHODS[name]
    except KeyError:
        raise unknown_name("method", name, _METHODS, hint="`kdtutor methods` lists them.") from None


def build_distiller(
    name: str,
    student: nn.Module,
    teacher: nn.Module | None = None,
    hparams: Mapping[str, Any] | None = None,
    *,
    input_shape: Sequence[int] | None = None,
    **overrides: Any,
) -> Distiller:
    """Build method ``name`` around ``student`` (and ``teacher``) from a flat dict of hyperparameters.

    Unknown keys and wrong types are errors; unspecified keys take the paper's defaults.
    ``input_shape`` (one sample, e.g. ``(3, 32, 32)``) lets feature-based methods learn the
    feature shapes and build their connectors; by default it is guessed from the student
    (32x32 images with the channels of its first convolution).

    Example:
        >>> distiller = build_distiller("kd", student, teacher, T=4, ce_weight=0.1, kd_weight=0.9)  # doctest: +SKIP
    """
    cls = get_method(name)
    values = {**(hparams or {}), **overrides}
    params = from_dict(cls.hparams_cls, values, what=f"method {name!r}")
    if "input_shape" in inspect.signature(cls.__init__).parameters:
        return cls(student, teacher, params, input_shape=input_shape)  # type: ignore[call-arg]
    return cls(student, teacher, params)
