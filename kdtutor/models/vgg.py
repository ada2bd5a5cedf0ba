"""VGG networks with batch norm for small images (Simonyan & Zisserman 2015), as in RepDistiller.

Five blocks of 3x3 conv-BN-ReLU layers (64, 128, 256, 512, 512 channels) separated by 2x2 max
pooling, global average pooling and a single linear classifier (no fully connected stack).
``vgg13 -> vgg8`` is a teacher/student pair of the RepDistiller benchmark (Tian et al. 2020).
With ``num_classes=100`` the parameter counts equal RepDistiller's (vgg8 3,965,028; vgg11
9,277,284; vgg13 9,462,180; vgg16 14,774,436; vgg19 20,086,692).

As in the reference code, the fourth max pooling is applied only to inputs of 64 pixels or
more, so a 32x32 image reaches the last two blocks at 4x4.

References:
    Simonyan, K., Zisserman, A. (2015). Very Deep Convolutional Networks for Large-Scale Image
    Recognition. ICLR.
    Ioffe, S., Szegedy, C. (2015). Batch Normalization. ICML.
    Tian, Y., Krishnan, D., Isola, P. (2020). Contrastive Representation Distillation. ICLR.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn

from .common import init_cifar_weights, set_feature_paths
from .registry import register_model

__all__ = ["VGG", "VGG_CONFIGS", "vgg"]

_PAPER = "Simonyan & Zisserman 2015, Very Deep Convolutional Networks for Large-Scale Image Recognition (ICLR); CIFAR definitions of Tian et al. 2020 (RepDistiller, ICLR)"

#: Number of conv layers in each of the five blocks, by depth (the name's number counts the
#: weighted layers: convolutions plus the classifier, and the three FC layers of the original).
VGG_CONFIGS: dict[int, tuple[int, ...]] = {
    8: (1, 1, 1, 1, 1),
    11: (1, 1, 2, 2, 2),
    13: (2, 2, 2, 2, 2),
    16: (2, 2, 3, 3, 3),
    19: (2, 2, 4, 4, 4),
}
_WIDTHS = (64, 128, 256, 512, 512)


def _make_block(in_channels: int, channels: int, layers: int) -> nn.Sequential:
    """``layers`` conv(bias)-BN-ReLU triples named ``conv1, bn1, relu1, conv2, ...``."""
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    for i in range(1, layers + 1):
        modules[f"conv{i}"] = nn.Conv2d(in_channels, channels, 3, padding=1)
        modules[f"bn{i}"] = nn.BatchNorm2d(channels)
        modules[f"relu{i}"] = nn.ReLU()
        in_channels = channels
    return nn.Sequential(modules)


class VGG(nn.Module):
    """A VGG with batch norm for small images.

    Modules: ``block0 ... block4`` (each ending with its own ReLU), ``pool0 ... pool3``
    (max pooling), ``avgpool``, ``flatten``, ``classifier``.

    Args:
        layers: Conv layers per block, e.g. ``VGG_CONFIGS[13]``.
        num_classes: Number of classes.
        in_channels: Channels of the input images.
    """

    def __init__(self, layers: Sequence[int], num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if len(layers) != 5 or min(layers) < 1:
            raise ValueError(
                f"layers must give 5 positive conv counts, one per block, got {tuple(layers)}."
            )
        self.layers = tuple(layers)
        channels = in_channels
        for i, (width, count) in enumerate(zip(_WIDTHS, layers, strict=True)):
            setattr(self, f"block{i}", _make_block(channels, width, count))
            channels = width
            if i < 4:
                setattr(self, f"pool{i}", nn.MaxPool2d(2, 2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(channels, num_classes)
        init_cifar_weights(self, linear_std=0.01)
        set_feature_paths(
            self,
            stages=tuple(f"block{i}" for i in range(5)),
            preact=tuple(f"block{i}.relu{count}:input" for i, count in enumerate(layers)),
            embedding="classifier:input",
            num_classes=num_classes,
        )

    def forward(self, x: Tensor) -> Tensor:
        large = x.shape[-2] >= 64
        x = self.pool0(self.block0(x))
        x = self.pool1(self.block1(x))
        x = self.pool2(self.block2(x))
        x = self.block3(x)
        if large:
            x = self.pool3(x)
        x = self.block4(x)
        return self.classifier(self.flatten(self.avgpool(x)))


def vgg(num_classes: int = 10, in_channels: int = 3, depth: int = 13) -> VGG:
    """Build a :class:`VGG` of depth 8, 11, 13, 16 or 19 (the builder behind ``vgg8 ... vgg19``).

    Args:
        num_classes: Number of classes.
        in_channels: Channels of the input images.
        depth: One of the keys of :data:`VGG_CONFIGS`.

    Returns:
        The model, randomly initialised (He normal convolutions, N(0, 0.01) classifier).
    """
    if depth not in VGG_CONFIGS:
        raise ValueError(f"VGG depth must be one of {sorted(VGG_CONFIGS)}, got {depth}.")
    return VGG(VGG_CONFIGS[depth], num_classes=num_classes, in_channels=in_channels)


for _depth, _note in (
    (8, " RepDistiller's student of vgg13."),
    (11, ""),
    (13, " RepDistiller's teacher of vgg8."),
    (16, ""),
    (19, ""),
):
    register_model(
        f"vgg{_depth}",
        family="vgg",
        description=f"VGG-{_depth} with batch norm, conv layers per block {VGG_CONFIGS[_depth]}, one linear classifier.{_note}",
        paper=_PAPER,
        defaults={"depth": _depth},
    )(vgg)
