"""Models named on the command line: a registry name, a call with the builder's options, a
name with a checkpoint, a zoo teacher or a timm model, with what they were trained on checked
before any training starts.

Spec forms (``--teacher`` and ``--student``):

- ``resnet8x4``: a registry model (``kdtutor models``), randomly initialised;
- ``convnet(widths=(16,32,64),stem_stride=2)``: a registry model with options of its builder
  (they override a preset's defaults, as :func:`kdtutor.models.build_model`'s keywords do);
  the values are Python literals (numbers, strings, booleans, ``None`` and tuples of them),
  never names, calls or attribute access;
- ``resnet8x4:path/to/weights.pt`` or ``convnet(widths=(8,16,32)):w.pt``: the same, loaded
  from a checkpoint (a plain state dict, a file written by ``--save-student``, or a training
  checkpoint holding ``"student"``);
- ``zoo:shapes_cnn_large``: a shipped or trained zoo teacher (``kdtutor zoo list``);
- ``timm:resnet18`` or ``timm:resnet18:weights.pt``: a `timm <https://github.com/huggingface/pytorch-image-models>`_
  model (``pip install 'kdtutor[timm]'``; never downloads: pretrained weights come from a file).

One architecture written with the same options has one string: :func:`format_model_spec`
writes the canonical form (keys sorted, lists as tuples, no spaces), which
:func:`parse_model_spec` reads back unchanged, so the string can key a results file, a
chain's store or a search's memo. (Options left at their defaults are not filled in:
``convnet(widths=(8,16))`` and ``convnet(blocks_per_stage=1,widths=(8,16))`` build the same
network under two strings.)

A model built here carries :class:`~kdtutor.models.trained_on.TrainedOn` (as
``model.trained_on``) when its file says what it was trained on; ``fit`` then refuses a run
on another dataset, image shape or class count before training.
"""

from __future__ import annotations

import ast
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from .errors import CheckpointError, KDTutorError
from .io import safe_load
from .models.trained_on import IncompatibleTeacherError, TrainedOn

__all__ = [
    "ModelSpec",
    "ModelSpecError",
    "build_from_spec",
    "format_model_spec",
    "parse_model_spec",
]

#: Arguments a spec cannot set: the dataset gives the first two, the ``name:path`` form the third.
_RESERVED = ("num_classes", "in_channels", "weights_path")

_LITERALS = "numbers, strings, True/False/None and tuples of them"


class ModelSpecError(KDTutorError, ValueError):
    """A model spec that cannot be read or built: bad syntax, an option the model does not
    take, or a value its builder refuses."""


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec (see the module docstring for the forms).

    Attributes:
        kind: ``"registry"``, ``"zoo"`` or ``"timm"``.
        name: The model's name, without options or weights (``"convnet"``).
        weights: The weights file of the ``name:path`` form, else ``None``.
        kwargs: The call form's options as sorted ``(key, value)`` pairs, lists turned into
            tuples (empty for a plain name).
    """

    kind: str  # "registry", "zoo" or "timm"
    name: str
    weights: Path | None = None
    kwargs: tuple[tuple[str, Any], ...] = ()

    @property
    def options(self) -> dict[str, Any]:
        """The call form's options as a dict (``{}`` for a plain name)."""
        return dict(self.kwargs)

    @property
    def call(self) -> str:
        """The model with its options in canonical form, without prefix or weights:
        ``"convnet(stem_stride=2,widths=(16,32,64))"``, or the bare name."""
        return format_model_spec(self.name, self.options)

    def __str__(self) -> str:
        prefix = "" if self.kind == "registry" else f"{self.kind}:"
        return prefix + self.call + (f":{self.weights}" if self.weights else "")


def format_model_spec(name: str, kwargs: Mapping[str, Any] | None = None) -> str:
    """The canonical spec string of model ``name`` built with options ``kwargs``.

    Keys are sorted, lists become tuples, and nothing is spaced, so the same options always
    give the same string and :func:`parse_model_spec` reads it back unchanged.

    Args:
        name: A registry name (``"convnet"``, ``"resnet8"``, ...).
        kwargs: Options of the model's builder; values must be ``None``, booleans, integers,
            finite floats, strings, or tuples/lists of these (nested).

    Returns:
        ``name`` alone when ``kwargs`` is empty, else ``name(key=value,...)``.

    Raises:
        ModelSpecError: A name that is not an identifier, a reserved or non-identifier key,
            or a value that cannot be written as a literal.

    Example:
        >>> format_model_spec("convnet", {"widths": [16, 32, 64], "stem_stride": 2})
        'convnet(stem_stride=2,widths=(16,32,64))'
        >>> format_model_spec("cnn_tiny")
        'cnn_tiny'
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ModelSpecError(
            f"a model spec with options needs a model name such as 'convnet' before them, got "
            f"{name!r}."
        )
    if not kwargs:
        return name
    parts = []
    for key in sorted(kwargs):
        _check_key(key, name)
        parts.append(f"{key}={_literal(kwargs[key], key, name)}")
    return f"{name}({','.join(parts)})"


def parse_model_spec(spec: str) -> ModelSpec:
    """Read a spec: ``name``, ``name(key=value, ...)``, either with ``:weights``,
    ``zoo:name`` or ``timm:name[:weights]`` (see the module docstring).

    The options of the call form are parsed with :func:`ast.parse` and each value with
    :func:`ast.literal_eval`: only literals are accepted, so a spec never runs code. Whether
    the model takes those options is checked when it is built (:func:`build_from_spec`).

    Raises:
        KDTutorError: An empty spec, or a zoo spec with a weights path.
        ModelSpecError: A call form that is not ``name(key=literal, ...)``, or options on a
            zoo or timm model.

    Example:
        >>> spec = parse_model_spec("convnet(widths=[16, 32, 64], stem_stride=2):w.pt")
        >>> spec.name, spec.options, str(spec.weights)
        ('convnet', {'stem_stride': 2, 'widths': (16, 32, 64)}, 'w.pt')
        >>> str(spec)
        'convnet(stem_stride=2,widths=(16,32,64)):w.pt'
    """
    if not isinstance(spec, str) or not spec.strip():
        raise KDTutorError(
            f"a model must be named by a string such as 'cnn_small', 'cnn_small:weights.pt', "
            f"'convnet(widths=(16,32,64))' or 'zoo:shapes_cnn_large', got {spec!r}."
        )
    kind, name = "registry", spec.strip()
    if name.startswith(("zoo:", "timm:")):
        kind, name = name.split(":", 1)
    kwargs: tuple[tuple[str, Any], ...] = ()
    paren, colon = name.find("("), name.find(":")
    if paren >= 0 and (colon < 0 or paren < colon):
        close = _closing_paren(name, paren, spec)
        call, rest = name[: close + 1], name[close + 1 :]
        if rest and not rest.startswith(":"):
            raise ModelSpecError(
                f"unexpected {rest!r} after the options in the model spec {spec!r}: write "
                "name(key=value,...) or name(key=value,...):weights.pt."
            )
        name, kwargs = _parse_call(call, spec)
        if kind != "registry":
            raise ModelSpecError(
                f"{kind} models take no options in a spec ({spec!r}): "
                + (
                    f"use zoo:{name} as it is, or {name}(...) for a registry model of your own."
                    if kind == "zoo"
                    else f"use timm:{name}, or build it with timm.create_model(...) in Python."
                )
            )
        sep, weights = (":", rest[1:]) if rest else ("", "")
        if sep and not weights:
            raise ModelSpecError(
                f"the model spec {spec!r} ends with ':' but names no weights file after it."
            )
    elif ")" in name.partition(":")[0]:
        raise ModelSpecError(
            f"unbalanced parentheses in the model spec {spec!r}: write name(key=value,...)."
        )
    else:
        name, sep, weights = name.partition(":")
    if kind == "zoo" and sep:
        raise KDTutorError(
            f"zoo teachers carry their own weights: use zoo:{name} without a path, or "
            f"{name.split('_', 1)[-1]}:{weights} for a model of your own."
        )
    return ModelSpec(kind, name, Path(weights).expanduser() if sep else None, kwargs)


def build_from_spec(
    spec: str | ModelSpec, *, num_classes: int, in_channels: int, role: str = "model"
) -> nn.Module:
    """Build the model a spec names, load its weights and attach ``trained_on`` when known.

    A call form's options go to :func:`kdtutor.models.build_model` as keywords, after a check
    that the model's builder takes each of them.

    Raises:
        UnknownNameError: The model name is not registered (the message suggests the closest).
        ModelSpecError: An option the model does not take, or a value its builder refuses.
        CheckpointError: The weights file is missing, corrupt or made for another model.
        IncompatibleTeacherError: The file records another class count or input channels.

    Example:
        >>> model = build_from_spec(
        ...     "convnet(widths=(8,16),stem_stride=2)", num_classes=10, in_channels=3
        ... )
        >>> model.widths
        (8, 16)
    """
    spec = parse_model_spec(spec) if isinstance(spec, str) else spec
    if spec.kwargs and spec.kind != "registry":
        raise ModelSpecError(
            f"{spec.kind} models take no options in a spec, got {spec}: drop the options."
        )
    if spec.kind == "zoo":
        from .snapshots import load_snapshot
        from .zoo import load_teacher, split_snapshot, trained_on

        if split_snapshot(spec.name)[1] is not None:  # an early-stopped teacher
            return load_snapshot(spec.name)
        model = load_teacher(spec.name)
        model.trained_on = trained_on(spec.name)  # type: ignore[assignment]
        return model
    meta = _weights_meta(spec.weights, role) if spec.weights is not None else {}
    _check_meta(spec, meta, num_classes=num_classes, in_channels=in_channels, role=role)
    if spec.kind == "timm":
        model = _build_timm(spec.name, num_classes, in_channels)
        if spec.weights is not None:
            from .models.weights import load_weights

            load_weights(model, spec.weights)
    else:
        model = _build_registry(spec, num_classes, in_channels)
    if meta.get("dataset"):
        model.trained_on = TrainedOn(  # type: ignore[assignment]
            meta["dataset"],
            int(meta.get("num_classes", num_classes)),
            tuple(meta["input_shape"]) if meta.get("input_shape") else None,
        )
    return model


def _build_registry(spec: ModelSpec, num_classes: int, in_channels: int) -> nn.Module:
    from .models import build_model
    from .models.registry import get_entry
    from .models.torchvision_models import PREFIX

    options = spec.options
    if options and not spec.name.startswith(PREFIX):
        accepted, takes_any = get_entry(spec.name).options()  # unknown names raise here
        unknown = sorted(k for k in options if k not in accepted)
        if unknown and not takes_any:
            raise ModelSpecError(
                f"model {spec.name!r} does not take {', '.join(map(repr, unknown))} (in "
                f"{spec.call!r}). Its options are: {', '.join(accepted) or 'none'}."
            )
    try:
        return build_model(
            spec.name,
            num_classes=num_classes,
            in_channels=in_channels,
            weights_path=spec.weights,
            **options,
        )
    except KDTutorError:
        raise
    except (TypeError, ValueError) as exc:
        if not options:
            raise
        reason = str(exc).rstrip()
        reason += "" if reason.endswith((".", "?", "!")) else "."
        raise ModelSpecError(
            f"cannot build {spec.call!r}: {reason} Check each option's value against the "
            f"builder (`kdtutor.models.build_model({spec.name!r}, ...)`'s docstring)."
        ) from exc


def _closing_paren(text: str, start: int, spec: str) -> int:
    """Index of the ``)`` matching the ``(`` at ``start``, skipping quoted strings."""
    depth, quote, i = 0, "", start
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ModelSpecError(
        f"unbalanced parentheses in the model spec {spec!r}: close the option list with ')'."
    )


def _parse_call(call: str, spec: str) -> tuple[str, tuple[tuple[str, Any], ...]]:
    try:
        tree = ast.parse(call, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        reason = getattr(exc, "msg", None) or type(exc).__name__
        raise ModelSpecError(
            f"cannot read the options of the model spec {spec!r} ({reason}): write "
            "name(key=value,...), e.g. convnet(widths=(16,32,64),stem_stride=2)."
        ) from None
    node = tree.body
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise ModelSpecError(
            f"the model spec {spec!r} must call a model by its plain name, "
            "e.g. convnet(widths=(16,32,64)); attribute access and nested calls are refused."
        )
    name = node.func.id
    if node.args:
        raise ModelSpecError(
            f"the model spec {spec!r} passes options by position: name each one, "
            f"e.g. {name}(widths=(16,32,64))."
        )
    options: dict[str, Any] = {}
    for keyword in node.keywords:
        if keyword.arg is None:
            raise ModelSpecError(
                f"the model spec {spec!r} unpacks a mapping (**): write each option as key=value."
            )
        _check_key(keyword.arg, name)
        if keyword.arg in options:
            raise ModelSpecError(
                f"the model spec {spec!r} gives {keyword.arg} twice: give each option once."
            )
        try:
            value = ast.literal_eval(keyword.value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise ModelSpecError(
                f"the option {keyword.arg}={ast.unparse(keyword.value)} of the model spec "
                f"{spec!r} is not a literal: only {_LITERALS} are accepted (no names, calls "
                "or attribute access)."
            ) from None
        options[keyword.arg] = _normalise(value, keyword.arg, name)
    return name, tuple(sorted(options.items()))


def _check_key(key: Any, name: str) -> None:
    if not isinstance(key, str) or not key.isidentifier():
        raise ModelSpecError(f"option names of {name!r} must be identifiers, got {key!r}.")
    if key in _RESERVED:
        raise ModelSpecError(
            f"{key} cannot be set in a model spec ({name}({key}=...)): the number of classes "
            "and input channels come from the dataset, the weights from the name:path form."
        )


def _normalise(value: Any, key: str, name: str) -> Any:
    """The value with lists turned into tuples; anything but a plain literal is refused."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ModelSpecError(f"{name}({key}=...) must be a finite number, got {value!r}.")
        return value
    if isinstance(value, (tuple, list)):
        return tuple(_normalise(v, key, name) for v in value)
    raise ModelSpecError(
        f"{name}({key}={value!r}): a {type(value).__name__} cannot be a model option in a "
        f"spec; use {_LITERALS}."
    )


def _literal(value: Any, key: str, name: str) -> str:
    value = _normalise(value, key, name)
    if isinstance(value, tuple):
        inner = ",".join(_literal(v, key, name) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return repr(value)


def _weights_meta(path: Path, role: str) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(
            f"the {role} weights file {path} does not exist. Give the path of a file written by "
            "torch.save(model.state_dict(), path) or by `kdtutor distill --save-student`."
        )
    blob = safe_load(os.fspath(path), what=f"{role} weights file")
    if isinstance(blob, dict):
        return {k: v for k, v in blob.items() if isinstance(v, (str, int, list, tuple))}
    return {}


def _check_meta(
    spec: ModelSpec, meta: dict[str, Any], *, num_classes: int, in_channels: int, role: str
) -> None:
    recorded = meta.get("model")
    # a file records the bare name (files written before the call form, or by a caller that
    # records only the name) or a call form, which must then be this spec's (however spelled)
    if recorded and _canonical(recorded) not in (spec.name, spec.call):
        raise CheckpointError(
            f"{spec.weights} holds a {recorded!r} model, not {spec.call!r}: use "
            f"{recorded}:{spec.weights} as the {role}."
        )
    classes = meta.get("num_classes")
    if classes is not None and int(classes) != num_classes:
        raise IncompatibleTeacherError(
            f"the {role} in {spec.weights} was trained on {meta.get('dataset', 'a dataset')!r} "
            f"with {classes} classes, but this run's dataset has {num_classes}. Use weights "
            "trained on this dataset."
        )
    shape = meta.get("input_shape")
    if shape and int(shape[0]) != in_channels:
        raise IncompatibleTeacherError(
            f"the {role} in {spec.weights} takes {shape[0]}-channel images, but this run's "
            f"dataset has {in_channels} channels. Use weights trained on this dataset."
        )


def _canonical(recorded: Any) -> Any:
    """A recorded model's call form in canonical spelling (as it is when it cannot be read)."""
    try:
        parsed = parse_model_spec(recorded)
    except KDTutorError:
        return recorded
    return parsed.call if parsed.kind == "registry" and parsed.weights is None else recorded


def _build_timm(name: str, num_classes: int, in_channels: int) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise KDTutorError(
            f"timm:{name} needs the timm package: pip install 'kdtutor[timm]'."
        ) from None
    if not timm.list_models(name):
        from .errors import unknown_name

        raise unknown_name("timm model", name, timm.list_models(), hint="`timm.list_models()`.")
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)
    model.num_classes = num_classes
    return model
