"""Model families by name: ``build_model("resnet8x4", num_classes=100)``.

Families (one module each): the CIFAR ResNets, Wide ResNets, VGGs, MobileNetV2 and
ShuffleNets of the RepDistiller benchmark (Tian et al. 2020), Hinton et al. 2015's MLPs,
plain CPU-sized CNNs (``cnn_large ... cnn_micro``), a tiny ViT with DeiT's distillation token
(Touvron et al. 2021), and any torchvision classification model as ``tv:<name>``.

Every model carries ``stage_names``, ``preact_stage_names``, ``embedding_path`` and
``num_classes`` (see :mod:`kdtutor.models.common`), so feature-based methods can name what
they distil without knowing the architecture. Add a model with the
:func:`~kdtutor.models.registry.register_model` decorator.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from . import cifar_resnet, mlp, mobilenetv2, shufflenet, small_cnn, vgg, vit, wrn  # noqa: F401  (registration)
from .common import FeatureAttributeError, check_positive_int, set_feature_paths, stage_names
from .registry import ModelInfo, get_entry, register_model, registered_names
from .summary import ModelSummary, count_parameters, format_summary_table, model_summary
from .torchvision_models import PREFIX as TORCHVISION_PREFIX
from .torchvision_models import build_torchvision_model, torchvision_info
from .weights import load_weights

__all__ = [
    "FeatureAttributeError",
    "ModelInfo",
    "ModelSummary",
    "build_model",
    "count_parameters",
    "format_summary_table",
    "list_models",
    "load_weights",
    "model_info",
    "model_summary",
    "register_model",
    "set_feature_paths",
    "stage_names",
]


def list_models(family: str | None = None) -> list[str]:
    """The registered model names, sorted.

    Torchvision models are not listed: any torchvision classification model can be built as
    ``"tv:<name>"`` (e.g. ``"tv:resnet18"``; see ``torchvision.models.list_models()``).

    Args:
        family: Only the names of this family (:attr:`ModelInfo.family`, the name of the
            defining module: ``"cifar_resnet"``, ``"wrn"``, ``"vgg"``, ``"mobilenetv2"``,
            ``"shufflenet"``, ``"mlp"``, ``"small_cnn"``, ``"vit"``).
    """
    names = registered_names()
    if family is None:
        return names
    return [n for n in names if get_entry(n).info.family == family]


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` (name, family, description, paper, defaults) of ``name``.

    Raises:
        UnknownNameError: For an unknown name; the message suggests the closest ones.
    """
    if name.startswith(TORCHVISION_PREFIX):
        return torchvision_info(name)
    return get_entry(name).info


def build_model(
    name: str,
    num_classes: int = 10,
    in_channels: int = 3,
    weights_path: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a model by name, randomly initialised (or loaded from a local state dict).

    Args:
        name: A name from :func:`list_models`, or ``"tv:<name>"`` for a torchvision model.
        num_classes: Number of classes.
        in_channels: Channels of the input images (1 for grey, 3 for colour).
        weights_path: A local state dict to load after building (``weights_only=True``).
        **kwargs: Options of the model's builder; they override a preset's defaults (e.g.
            ``build_model("cnn_small", dropout=0.2)``). ``image_size`` is accepted by every
            model and ignored by those that do not need it (the convolutional ones pool
            adaptively).

    Returns:
        The model, with ``stage_names``, ``preact_stage_names``, ``embedding_path`` and
        ``num_classes`` attributes.

    Raises:
        UnknownNameError: For an unknown name (the message suggests the closest).
        ValueError: For ``num_classes`` or ``in_channels`` below 1.
        TypeError: For a keyword the model does not take (the message lists those it does).
        CheckpointError: If ``weights_path`` cannot be read or does not fit.

    Example:
        >>> model = build_model("resnet8x4", num_classes=100)
        >>> model.stage_names
        ('layer1', 'layer2', 'layer3')
    """
    check_positive_int(
        num_classes,
        "num_classes",
        "Pass the number of classes of your dataset, e.g. num_classes=10.",
    )
    check_positive_int(in_channels, "in_channels", "Pass 1 for grey images or 3 for colour images.")
    if name.startswith(TORCHVISION_PREFIX):
        kwargs.pop("image_size", None)
        return build_torchvision_model(
            name, num_classes, in_channels, weights_path=weights_path, **kwargs
        )
    entry = get_entry(name)
    options, takes_any = entry.options()
    if "image_size" not in options:
        kwargs.pop("image_size", None)
    unknown = sorted(k for k in kwargs if k not in options)
    if unknown and not takes_any:
        raise TypeError(
            f"model {name!r} does not take {', '.join(map(repr, unknown))}. Its options are: "
            f"{', '.join(options) or 'none'} (plus num_classes, in_channels, weights_path)."
        )
    model = entry.builder(
        num_classes=num_classes, in_channels=in_channels, **{**entry.info.defaults, **kwargs}
    )
    missing = [
        a
        for a in ("stage_names", "preact_stage_names", "embedding_path", "num_classes")
        if not hasattr(model, a)
    ]
    if missing:
        raise FeatureAttributeError(
            f"the builder {entry.builder.__name__} of model {name!r} returned a model without {missing}; "
            "call kdtutor.models.set_feature_paths(model, ...) in the builder."
        )
    if weights_path is not None:
        load_weights(model, weights_path)
    return model
