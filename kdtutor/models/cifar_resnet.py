"""CIFAR ResNets (He et al. 2016) as defined in RepDistiller (Tian et al. 2020).

Depth ``6n + 2``: a 3x3 stem convolution, three stages of ``n`` basic blocks (two 3x3
convolutions and an identity or 1x1 shortcut) at strides 1, 2, 2, global average pooling and
a linear classifier. ``resnet8 ... resnet110`` use widths 16 (stem) and 16/32/64 (stages);
``resnet8x4`` and ``resnet32x4`` use a 32-channel stem and stages four times as wide
(64/128/256), the teacher/student pair of the RepDistiller benchmark.

With ``num_classes=100`` the parameter counts equal RepDistiller's exactly (resnet8 83,892;
resnet56 861,620; resnet32x4 7,433,860; ...). One deliberate difference: the global pooling
is adaptive (RepDistiller uses a fixed 8x8 average pool), so any input size works and 32x32
inputs give the same result.

References:
    He, K., Zhang, X., Ren, S., Sun, J. (2016). Deep Residual Learning for Image Recognition. CVPR.
    Tian, Y., Krishnan, D., Isola, P. (2020). Contrastive Representation Distillation. ICLR.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .common import conv1x1, conv3x3, init_cifar_weights, set_feature_paths
from .registry import register_model

__all__ = ["BasicBlock", "CifarResNet", "cifar_resnet"]

_PAPER = "He et al. 2016, Deep Residual Learning for Image Recognition (CVPR); CIFAR definitions of Tian et al. 2020 (RepDistiller, ICLR)"


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a shortcut: ``relu_out(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    The final activation is the dedicated module ``relu_out``, so a forward hook on its input
    (``"...relu_out:input"``) sees the pre-activation sum used by AB and OFD.
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.conv2 = conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                conv1x1(in_channels, channels, stride), nn.BatchNorm2d(channels)
            )
        self.relu_out = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu_out(out + shortcut)


class CifarResNet(nn.Module):
    """A CIFAR ResNet of depth ``6n + 2`` with basic blocks.

    Modules: ``conv1 -> bn1 -> relu`` (stem), ``layer1``, ``layer2``, ``layer3`` (stages of
    :class:`BasicBlock`), ``avgpool``, ``flatten``, ``fc``.

    Args:
        depth: Total number of weighted layers, ``6n + 2`` (8, 14, 20, 32, 44, 56, 110, ...).
        widths: Four channel counts: the stem and the three stages.
        num_classes: Number of classes.
        in_channels: Channels of the input images.
        stem_stride: Stride of the stem convolution: 2 halves every feature map (a quarter of
            the FLOPs), as in the book-scale student ``resnet8_half_s2``.
    """

    def __init__(
        self,
        depth: int,
        widths: Sequence[int] = (16, 16, 32, 64),
        num_classes: int = 10,
        in_channels: int = 3,
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(
                f"a CIFAR ResNet's depth must be 6n+2 with n >= 1 (8, 14, 20, 32, ...), got {depth}."
            )
        if len(widths) != 4:
            raise ValueError(
                f"widths must give 4 channel counts (stem and 3 stages), got {tuple(widths)}."
            )
        blocks = (depth - 2) // 6
        stem, *stage_widths = widths
        self.conv1 = conv3x3(in_channels, stem, stride=stem_stride)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU()
        channels = stem
        stages = []
        for index, width in enumerate(stage_widths):
            stride = 1 if index == 0 else 2
            layers = []
            for block in range(blocks):
                layers.append(BasicBlock(channels, width, stride if block == 0 else 1))
                channels = width
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)
        init_cifar_weights(self)
        last = blocks - 1
        set_feature_paths(
            self,
            stages=("layer1", "layer2", "layer3"),
            preact=tuple(f"layer{i}.{last}.relu_out:input" for i in (1, 2, 3)),
            embedding="fc:input",
            num_classes=num_classes,
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.avgpool(x)))


_NARROW = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)


def cifar_resnet(
    num_classes: int = 10,
    in_channels: int = 3,
    depth: int = 20,
    widths: Sequence[int] = _NARROW,
    stem_stride: int = 1,
) -> CifarResNet:
    """Build a :class:`CifarResNet` (the builder behind ``resnet8 ... resnet32x4``).

    Args:
        num_classes: Number of classes.
        in_channels: Channels of the input images.
        depth: ``6n + 2``.
        widths: Stem and stage channel counts.
        stem_stride: Stride of the stem convolution (1 in the CIFAR ResNets).

    Returns:
        The model, randomly initialised (He et al. 2015 normal init for convolutions).
    """
    return CifarResNet(
        depth,
        tuple(widths),
        num_classes=num_classes,
        in_channels=in_channels,
        stem_stride=stem_stride,
    )


_PRESETS = {
    # name: (depth, widths, description)
    "resnet8": (8, _NARROW, "ResNet-8: 1 basic block per stage, widths 16/32/64."),
    "resnet14": (14, _NARROW, "ResNet-14: 2 basic blocks per stage, widths 16/32/64."),
    "resnet20": (
        20,
        _NARROW,
        "ResNet-20: 3 basic blocks per stage; RepDistiller's student of resnet56.",
    ),
    "resnet32": (32, _NARROW, "ResNet-32: 5 basic blocks per stage, widths 16/32/64."),
    "resnet44": (44, _NARROW, "ResNet-44: 7 basic blocks per stage, widths 16/32/64."),
    "resnet56": (
        56,
        _NARROW,
        "ResNet-56: 9 basic blocks per stage; RepDistiller's teacher of resnet20.",
    ),
    "resnet110": (110, _NARROW, "ResNet-110: 18 basic blocks per stage, widths 16/32/64."),
    "resnet8x4": (
        8,
        _WIDE,
        "ResNet-8 four times as wide (32-channel stem, stages 64/128/256); RepDistiller's student of resnet32x4.",
    ),
    "resnet32x4": (
        32,
        _WIDE,
        "ResNet-32 four times as wide (32-channel stem, stages 64/128/256); RepDistiller's teacher.",
    ),
}

for _name, (_depth, _widths, _description) in _PRESETS.items():
    register_model(
        _name,
        family="cifar_resnet",
        description=_description,
        paper=_PAPER,
        defaults={"depth": _depth, "widths": _widths},
    )(cifar_resnet)

register_model(
    "resnet8_half_s2",
    family="cifar_resnet",
    description=(
        "ResNet-8 at half width (stages 8/16/32) with a stride-2 stem (~20k parameters, "
        "1.6 MFLOPs on 32x32): the book-scale protocol's ResNet student, the size of cnn_wide_s2."
    ),
    paper=_PAPER,
    defaults={"depth": 8, "widths": (8, 8, 16, 32), "stem_stride": 2},
)(cifar_resnet)
