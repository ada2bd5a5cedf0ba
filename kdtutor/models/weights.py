"""Load a local state dict into a model, with errors that say what does not fit and why."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from ..io import safe_load

__all__ = ["load_weights"]

#: Keys under which training checkpoints commonly nest the model's state dict.
_NESTED_KEYS = ("state_dict", "model", "model_state_dict", "student")


def _extract_state_dict(obj: Any, path: str) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    if isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            inner = obj.get(key)
            if (
                isinstance(inner, Mapping)
                and inner
                and all(isinstance(v, torch.Tensor) for v in inner.values())
            ):
                return inner
    raise CheckpointError(
        f"{path} does not hold a state dict (a mapping of parameter names to tensors), nor one under "
        f"the keys {list(_NESTED_KEYS)}. Save weights with torch.save(model.state_dict(), path)."
    )


def load_weights(model: nn.Module, path: str | os.PathLike[str], strict: bool = True) -> nn.Module:
    """Load the state dict saved at ``path`` into ``model`` (``weights_only=True``, on CPU).

    A checkpoint whose state dict is nested under ``"state_dict"``, ``"model"``,
    ``"model_state_dict"`` or ``"student"`` is accepted too.

    Args:
        model: The model, built with the same architecture options as the saved one.
        path: A file written by ``torch.save(model.state_dict(), path)``.
        strict: Require the keys to match exactly.

    Returns:
        The same ``model``.

    Raises:
        CheckpointError: If the file is missing, unsafe or corrupt, or its tensors do not fit
            the model (the message lists the first differences and the likely fix).
    """
    path = os.fspath(path)
    state = _extract_state_dict(safe_load(path, what="weights file"), path)
    own = model.state_dict()
    shape_mismatch = [
        f"{key}: file {tuple(value.shape)} vs model {tuple(own[key].shape)}"
        for key, value in state.items()
        if key in own and own[key].shape != value.shape
    ]
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    if shape_mismatch or (strict and (missing or unexpected)):
        parts = []
        if shape_mismatch:
            parts.append(f"{len(shape_mismatch)} shape mismatch(es), e.g. {shape_mismatch[:3]}")
        if strict and missing:
            parts.append(f"{len(missing)} key(s) missing from the file, e.g. {missing[:3]}")
        if strict and unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) in the file, e.g. {unexpected[:3]}")
        raise CheckpointError(
            f"the weights in {path} do not fit {type(model).__name__}: " + "; ".join(parts) + ". "
            "Build the model with the same name, num_classes and in_channels as the saved one "
            "(a classifier shape mismatch usually means another num_classes)."
        )
    model.load_state_dict(state, strict=strict)
    return model
