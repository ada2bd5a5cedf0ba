"""Models named on the command line: a registry name, a name with a checkpoint, a zoo teacher
or a timm model, with what they were trained on checked before any training starts.

Spec forms (``--teacher`` and ``--student``):

- ``resnet8x4``: a registry model (``kdtutor models``), randomly initialised;
- ``resnet8x4:path/to/weights.pt``: the same, loaded from a checkpoint (a plain state dict,
  a file written by ``--save-student``, or a training checkpoint holding ``"student"``);
- ``zoo:shapes_cnn_large``: a shipped or trained zoo teacher (``kdtutor zoo list``);
- ``timm:resnet18`` or ``timm:resnet18:weights.pt``: a `timm <https://github.com/huggingface/pytorch-image-models>`_
  model (``pip install 'kdtutor[timm]'``; never downloads: pretrained weights come from a file).

A model built here carries :class:`~kdtutor.models.trained_on.TrainedOn` (as
``model.trained_on``) when its file says what it was trained on; ``fit`` then refuses a run
on another dataset, image shape or class count before training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from .errors import CheckpointError, KDTutorError
from .io import safe_load
from .models.trained_on import IncompatibleTeacherError, TrainedOn

__all__ = ["ModelSpec", "build_from_spec", "parse_model_spec"]


@dataclass(frozen=True)
class ModelSpec:
    kind: str  # "registry", "zoo" or "timm"
    name: str
    weights: Path | None = None

    def __str__(self) -> str:
        prefix = "" if self.kind == "registry" else f"{self.kind}:"
        return prefix + self.name + (f":{self.weights}" if self.weights else "")


def parse_model_spec(spec: str) -> ModelSpec:
    """Split ``name``, ``name:weights``, ``zoo:name``, ``timm:name[:weights]`` (see module)."""
    if not isinstance(spec, str) or not spec.strip():
        raise KDTutorError(
            f"a model must be named by a string such as 'cnn_small', 'cnn_small:weights.pt' or "
            f"'zoo:shapes_cnn_large', got {spec!r}."
        )
    kind, name = "registry", spec.strip()
    if name.startswith(("zoo:", "timm:")):
        kind, name = name.split(":", 1)
    name, sep, weights = name.partition(":")
    if kind == "zoo" and sep:
        raise KDTutorError(
            f"zoo teachers carry their own weights: use zoo:{name} without a path, or "
            f"{name.split('_', 1)[-1]}:{weights} for a model of your own."
        )
    return ModelSpec(kind, name, Path(weights).expanduser() if sep else None)


def build_from_spec(
    spec: str | ModelSpec, *, num_classes: int, in_channels: int, role: str = "model"
) -> nn.Module:
    """Build the model a spec names, load its weights and attach ``trained_on`` when known.

    Raises:
        CheckpointError: the weights file is missing, corrupt or made for another model.
        IncompatibleTeacherError: the file records another class count or input channels.
    """
    spec = parse_model_spec(spec) if isinstance(spec, str) else spec
    if spec.kind == "zoo":
        from .zoo import load_teacher, trained_on

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
        from .models import build_model

        model = build_model(
            spec.name, num_classes=num_classes, in_channels=in_channels, weights_path=spec.weights
        )
    if meta.get("dataset"):
        model.trained_on = TrainedOn(  # type: ignore[assignment]
            meta["dataset"],
            int(meta.get("num_classes", num_classes)),
            tuple(meta["input_shape"]) if meta.get("input_shape") else None,
        )
    return model


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
    if recorded and recorded != spec.name:
        raise CheckpointError(
            f"{spec.weights} holds a {recorded!r} model, not {spec.name!r}: use "
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
