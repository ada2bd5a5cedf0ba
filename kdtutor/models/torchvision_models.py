"""Torchvision classification models under names ``tv:<name>``, randomly initialised, never downloaded.

``build_model("tv:resnet18", num_classes=10)`` calls
``torchvision.models.get_model("resnet18", weights=None, num_classes=10)``: the architecture
only, with random weights, so nothing is fetched from the network. Trained weights come from a
local file (``weights_path=...``), loaded with ``weights_only=True``.

``in_channels`` other than 3 replaces the first convolution (the first ``nn.Conv2d`` in module
order, which must take 3 channels) by a fresh one with the same shape otherwise.

The feature paths (``stage_names``, ``embedding_path``) are set by family heuristics: the
``layer1 ... layer4`` of ResNets, the blocks of RegNets' ``trunk_output``, the stages of
ShuffleNetV2, the encoder layers of ViTs, for VGG/AlexNet the ReLU before each max pooling of
``features``, for other ``features``-based models (MobileNet, EfficientNet, ConvNeXt, Swin,
DenseNet, SqueezeNet) each composite child of ``features`` (single layers are skipped: an
in-place ReLU may overwrite their outputs), otherwise the top-level children with parameters
(auxiliary heads excluded); the embedding is the input of ``fc``,
``classifier``, ``heads`` or ``head``. Torchvision's ReLUs are in place and shared within a
block, so no pre-activation paths are given (``preact_stage_names == ()``).
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from ..errors import KDTutorError, unknown_name
from .common import set_feature_paths
from .registry import ModelInfo
from .weights import load_weights

__all__ = ["PREFIX", "build_torchvision_model", "torchvision_info", "torchvision_names"]

PREFIX = "tv:"


def torchvision_names() -> list[str]:
    """The classification models torchvision can build (without the ``tv:`` prefix)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def torchvision_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of ``tv:<name>``; unknown names raise an error suggesting the closest."""
    short = _check_name(name)
    return ModelInfo(
        name=PREFIX + short,
        family="torchvision",
        description=f"torchvision.models.{short}, randomly initialised (weights=None), or loaded from weights_path.",
        paper="See the torchvision documentation of this model for its paper.",
    )


def _check_name(name: str) -> str:
    short = name.removeprefix(PREFIX)
    names = torchvision_names()
    if short not in names:
        raise unknown_name(
            "model",
            PREFIX + short,
            (PREFIX + n for n in names),
            hint="Only torchvision's classification models are offered (its detection and "
            "segmentation builders would download backbone weights).",
        )
    return short


def _replace_first_conv(model: nn.Module, in_channels: int, name: str) -> None:
    for path, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            if module.in_channels != 3 or module.groups != 1:
                break
            new = nn.Conv2d(
                in_channels,
                module.out_channels,
                module.kernel_size,
                stride=module.stride,
                padding=module.padding,
                dilation=module.dilation,
                bias=module.bias is not None,
                padding_mode=module.padding_mode,
            )
            parent_path, _, attr = path.rpartition(".")
            parent = model.get_submodule(parent_path) if parent_path else model
            setattr(parent, attr, new)
            return
    raise KDTutorError(
        f"cannot adapt tv:{name} to in_channels={in_channels}: its first convolution is not a plain "
        "3-channel nn.Conv2d. Build it with in_channels=3 and repeat grey images to 3 channels "
        "(e.g. x.expand(-1, 3, -1, -1))."
    )


#: Attribute names of classifiers, in order of preference.
_HEADS = ("fc", "classifier", "heads", "head")
#: Top-level modules that are never a stage.
_NOT_STAGES = (
    nn.Linear,
    nn.Dropout,
    nn.Flatten,
    nn.AdaptiveAvgPool2d,
    nn.AvgPool2d,
    nn.MaxPool2d,
    nn.Identity,
)


def _children(module: nn.Module, prefix: str) -> list[str]:
    return [f"{prefix}.{child}" for child, _ in module.named_children()]


def _feature_paths(model: nn.Module) -> tuple[tuple[str, ...], str]:
    """Family heuristics for (stage paths, embedding path) of a torchvision model."""
    if all(hasattr(model, f"layer{i}") for i in range(1, 5)):
        stages = [f"layer{i}" for i in range(1, 5)]
    elif hasattr(model, "trunk_output"):
        stages = _children(model.trunk_output, "trunk_output")
    elif all(hasattr(model, f"stage{i}") for i in (2, 3, 4)):
        stages = ["stage2", "stage3", "stage4"]
    elif hasattr(model, "encoder") and hasattr(model.encoder, "layers"):
        stages = _children(model.encoder.layers, "encoder.layers")
    elif isinstance(getattr(model, "features", None), nn.Module):
        children = list(model.features.named_children())
        flat = all(not any(True for _ in child.children()) for _, child in children)
        before_pool = [
            f"features.{children[i - 1][0]}"
            for i, (_, child) in enumerate(children)
            if isinstance(child, nn.MaxPool2d) and i > 0
        ]
        blocks = [
            f"features.{name}" for name, child in children if any(True for _ in child.children())
        ]
        if (
            flat and before_pool
        ):  # VGG, AlexNet: single layers; a stage ends before each max pooling
            stages = before_pool
        else:  # MobileNet, EfficientNet, ConvNeXt, Swin, DenseNet, SqueezeNet: the composite blocks
            stages = blocks or _children(model.features, "features")
    elif isinstance(getattr(model, "layers", None), nn.Module):
        stages = _children(model.layers, "layers")
    else:
        stages = []
        for child, module in model.named_children():
            if (
                child in _HEADS
                or child.lower().startswith("aux")
                or isinstance(module, _NOT_STAGES)
            ):
                continue
            if not any(True for _ in module.parameters()):
                continue
            if isinstance(module, nn.ModuleList):  # never called itself: name its members
                stages.extend(_children(module, child))
            else:
                stages.append(child)
    for head in _HEADS:
        if isinstance(getattr(model, head, None), nn.Module):
            return tuple(stages), f"{head}:input"
    linears = [path for path, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise KDTutorError(
            f"cannot find the classifier of {type(model).__name__} to set its embedding_path."
        )
    return tuple(stages), f"{linears[-1]}:input"


def build_torchvision_model(
    name: str,
    num_classes: int = 10,
    in_channels: int = 3,
    weights_path: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build ``torchvision.models.<name>`` with random weights (never downloads anything).

    Args:
        name: The torchvision name, with or without the ``tv:`` prefix (``"tv:resnet18"``).
        num_classes: Number of classes of the classifier.
        in_channels: Input channels; other than 3 replaces the first convolution.
        weights_path: A local state dict to load (``weights_only=True``); it must fit the model
            as built with these arguments.
        **kwargs: Passed on to ``torchvision.models.get_model`` (e.g. ``dropout=0.2``); ``weights``
            is refused (use ``weights_path``).

    Returns:
        The model, with ``stage_names``, ``preact_stage_names`` (empty), ``embedding_path`` and
        ``num_classes`` attributes.

    Raises:
        UnknownNameError: For a name torchvision does not know.
        CheckpointError: If ``weights_path`` cannot be read or does not fit.
    """
    import torchvision

    short = _check_name(name)
    for banned in ("weights", "weights_backbone", "pretrained"):
        if kwargs.get(banned) is not None:
            raise KDTutorError(
                f"tv:{short} got {banned}={kwargs[banned]!r}, but kdtutor never downloads weights. "
                "Pass weights_path= with a local state dict instead."
            )
        kwargs.pop(banned, None)
    model = torchvision.models.get_model(short, weights=None, num_classes=num_classes, **kwargs)
    if in_channels != 3:
        _replace_first_conv(model, in_channels, short)
    stages, embedding = _feature_paths(model)
    set_feature_paths(model, stages=stages, preact=(), embedding=embedding, num_classes=num_classes)
    if weights_path is not None:
        load_weights(model, weights_path)
    return model
