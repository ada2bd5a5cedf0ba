"""The model registry: names -> builder functions, with a one-line decorator to add a model.

A builder is a plain function ``builder(num_classes=..., in_channels=..., **options) -> nn.Module``
that returns a model annotated by :func:`kdtutor.models.common.set_feature_paths`. The same
builder may be registered under several names with different ``defaults`` (presets)::

    @register_model("cnn_tiny", family="small_cnn", defaults={"widths": (8, 16, 32)})
    @register_model("convnet", family="small_cnn")
    def convnet(num_classes=10, in_channels=3, widths=(16, 32, 64)): ...

:func:`build_model` merges a preset's defaults with the caller's keyword arguments (the
caller wins), checks the argument names against the builder's signature, and builds.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from torch import nn

from ..errors import unknown_name

__all__ = ["ModelEntry", "ModelInfo", "get_entry", "register_model", "registered_names"]

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])

#: Arguments every builder receives from build_model itself.
RESERVED_ARGS = ("num_classes", "in_channels")


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a model name.

    Attributes:
        name: The registered name, e.g. ``"resnet8x4"``.
        family: The family: the name of the module that defines it, e.g. ``"cifar_resnet"``
            (``"torchvision"`` for ``tv:`` models).
        description: One sentence about the model.
        paper: The citation, e.g. ``"He et al. 2016, Deep Residual Learning ... (CVPR)"``.
        defaults: The preset's default keyword arguments (empty for plain builders).
    """

    name: str
    family: str
    description: str
    paper: str
    defaults: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelEntry:
    """A registered builder with its :class:`ModelInfo`."""

    info: ModelInfo
    builder: Callable[..., nn.Module]

    def options(self) -> tuple[list[str], bool]:
        """The builder's keyword options (without num_classes/in_channels), and whether it takes ``**kwargs``."""
        params = inspect.signature(self.builder).parameters.values()
        names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        varkw = any(p.kind is p.VAR_KEYWORD for p in params)
        return [n for n in names if n not in RESERVED_ARGS], varkw


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    *,
    family: str,
    description: str,
    paper: str,
    defaults: Mapping[str, Any] | None = None,
) -> Callable[[Builder], Builder]:
    """Register a builder function under ``name`` (a decorator; the function is returned unchanged).

    Args:
        name: The model name used by :func:`kdtutor.models.build_model`. Must be new, and must
            not start with ``"tv:"`` (reserved for torchvision models).
        family: The model family, by convention the name of the defining module
            (``"cifar_resnet"``, ``"small_cnn"``, ...); ``kdtutor models --family`` filters on it.
        description: One sentence describing the model.
        paper: The citation of the paper that introduced it (author, year, title, venue).
        defaults: Keyword arguments this name passes to the builder (a preset).

    Returns:
        A decorator that registers the function and returns it.

    Raises:
        ValueError: If ``name`` is taken or reserved, or a default is not a builder option.
    """
    if name.startswith("tv:"):
        raise ValueError(
            f"model names starting with 'tv:' are reserved for torchvision; rename {name!r}."
        )
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered; choose another name.")
    frozen_defaults = MappingProxyType(dict(defaults or {}))

    def decorator(builder: Builder) -> Builder:
        entry = ModelEntry(ModelInfo(name, family, description, paper, frozen_defaults), builder)
        options, varkw = entry.options()
        unknown = [key for key in frozen_defaults if key not in options]
        if unknown and not varkw:
            raise ValueError(
                f"defaults {unknown} of model {name!r} are not options of {builder.__name__}: {options}."
            )
        _REGISTRY[name] = entry
        return builder

    return decorator


def registered_names() -> list[str]:
    """Every registered name, sorted."""
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    """The :class:`ModelEntry` of ``name``; an unknown name raises an error suggesting the closest."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise unknown_name(
            "model",
            name,
            _REGISTRY,
            hint="Torchvision models are available as 'tv:<name>', e.g. 'tv:resnet18'.",
        ) from None
