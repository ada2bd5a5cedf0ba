"""Helpers every model family shares: argument checks, feature-path attributes, weight init.

Every model that :func:`kdtutor.models.build_model` returns carries four attributes that the
distillation methods rely on (they name modules by dotted path, see :mod:`kdtutor.features`):

``stage_names``
    Dotted module paths whose forward *output* is the feature map after each stage
    (post-activation for post-activation networks such as the CIFAR ResNets).
``preact_stage_names``
    Paths written ``"<module path>:input"`` whose *input* is the pre-ReLU feature of each
    stage, as needed by AB (Heo et al. 2019) and OFD (Heo et al. 2019). The module named is
    a dedicated ``nn.ReLU`` (never ``inplace``, never shared), so the hook sees the values
    before the activation. Empty where it has no meaning (e.g. a transformer).
``embedding_path``
    Where the pooled penultimate embedding (the classifier's input, before any dropout) is
    found, usually ``"fc:input"``.
``num_classes``
    The number of outputs of the classifier.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from ..errors import KDTutorError

__all__ = [
    "FeatureAttributeError",
    "check_positive_int",
    "conv1x1",
    "conv3x3",
    "init_cifar_weights",
    "make_divisible",
    "set_feature_paths",
    "stage_names",
]


class FeatureAttributeError(KDTutorError, ValueError):
    """A model lacks the feature-path attributes that kdtutor's models carry."""


def check_positive_int(value: object, name: str, fix: str = "") -> int:
    """Return ``value`` if it is an integer >= 1, else raise a ``ValueError`` naming the fix.

    Args:
        value: The value to check (``bool`` is refused although it is an ``int``).
        name: The argument's name, used in the message.
        fix: An extra sentence telling the user what to pass instead.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        message = f"{name} must be an integer >= 1, got {value!r}."
        if fix:
            message += " " + fix
        raise ValueError(message)
    return value


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    """A 3x3 convolution with padding 1 (the spatial size is kept when ``stride`` is 1)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    """A 1x1 convolution (a per-pixel linear map, optionally strided)."""
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=bias)


def set_feature_paths(
    model: nn.Module,
    *,
    stages: Iterable[str],
    preact: Iterable[str] = (),
    embedding: str,
    num_classes: int,
) -> nn.Module:
    """Attach ``stage_names``, ``preact_stage_names``, ``embedding_path`` and ``num_classes``.

    Every path is checked against ``model.get_submodule`` so a typo fails at build time.

    Args:
        model: The model to annotate (modified in place and returned).
        stages: Module paths whose outputs are the stage features.
        preact: ``"<path>:input"`` strings whose inputs are the pre-ReLU stage features.
        embedding: The embedding path, ``"<path>"`` or ``"<path>:input"``.
        num_classes: The classifier's number of outputs.

    Returns:
        The same ``model``.
    """
    stages = tuple(stages)
    preact = tuple(preact)
    for path in (*stages, *preact, embedding):
        module_path = path.removesuffix(":input")
        try:
            model.get_submodule(module_path)
        except AttributeError as exc:  # a bug in a model definition, not a user error
            raise FeatureAttributeError(
                f"{type(model).__name__} names the feature path {path!r}, but it has no module "
                f"{module_path!r}."
            ) from exc
    model.stage_names = stages
    model.preact_stage_names = preact
    model.embedding_path = embedding
    model.num_classes = num_classes
    return model


def stage_names(model: nn.Module) -> tuple[str, ...]:
    """Return ``model.stage_names``, the module paths of the stage outputs.

    Args:
        model: A model built by :func:`kdtutor.models.build_model` (or annotated with
            :func:`set_feature_paths`).

    Raises:
        FeatureAttributeError: If the model has no ``stage_names`` attribute; the message
            says how to name the modules by hand.
    """
    names = getattr(model, "stage_names", None)
    if not isinstance(names, tuple):
        children = [name for name, _ in model.named_children()]
        raise FeatureAttributeError(
            f"{type(model).__name__} has no stage_names attribute: it was not built by "
            "kdtutor.models.build_model. Pass the module paths of its stages yourself "
            f"(its top-level modules are {children}; list every path with "
            "[name for name, _ in model.named_modules()]), or set model.stage_names = (...)."
        )
    return names


def init_cifar_weights(model: nn.Module, linear_std: float | None = None) -> None:
    """Initialise convolutions, batch norms and linear layers as the CIFAR reference code does.

    Convolutions get He (Kaiming) normal init with ``mode="fan_out"`` (He et al. 2015), batch
    norms weight 1 and bias 0, linear layers a normal init with ``linear_std`` (when given) or
    PyTorch's default, and every bias zero.

    Args:
        model: The model to initialise in place.
        linear_std: Standard deviation of linear weights, ``None`` to keep PyTorch's default.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d | nn.GroupNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(module.weight, 0.0, linear_std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never dropping below 90% of it.

    The rule of the MobileNet reference code (Sandler et al. 2018).
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded
