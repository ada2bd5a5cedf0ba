"""ShuffleNet V1 (Zhang et al. 2018) and V2 (Ma et al. 2018) for small images, as in RepDistiller.

Both use a 1x1, 24-channel stem without pooling (the CIFAR adaptation), three stages that each
halve the resolution, global average pooling and a linear classifier.

* ``shufflenetv1``: bottlenecks with grouped 1x1 convolutions (3 groups), a channel shuffle,
  a 3x3 depthwise convolution; stage widths 240/480/960 with 4/8/4 blocks; the first block of
  a stage concatenates an average-pooled shortcut. 949,258 parameters with 100 classes.
* ``shufflenetv2``: channel split, a 1x1-depthwise-1x1 branch and a shuffle; stage widths
  116/232/464 with 3/7/3 blocks after a down-sampling block, then a 1x1 convolution to 1024
  channels. 1,355,528 parameters with 100 classes.

Each block ends with a dedicated ``relu_out`` so ``"...relu_out:input"`` is the stage's
pre-activation (RepDistiller's ``preact``). In V2 the ReLU is applied to the concatenation of
the untouched half and the branch; the untouched half is already non-negative (every block
output is a ReLU output), so this equals the reference code's ReLU of the branch alone.

References:
    Zhang, X., Zhou, X., Lin, M., Sun, J. (2018). ShuffleNet: An Extremely Efficient
    Convolutional Neural Network for Mobile Devices. CVPR.
    Ma, N., Zhang, X., Zheng, H.-T., Sun, J. (2018). ShuffleNet V2: Practical Guidelines for
    Efficient CNN Architecture Design. ECCV.
    Tian, Y., Krishnan, D., Isola, P. (2020). Contrastive Representation Distillation. ICLR.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .common import conv1x1, set_feature_paths
from .registry import register_model

__all__ = ["ChannelShuffle", "ShuffleNetV1", "ShuffleNetV2", "shufflenetv1", "shufflenetv2"]

_PAPER_V1 = "Zhang et al. 2018, ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile Devices (CVPR); CIFAR definition of Tian et al. 2020 (RepDistiller, ICLR)"
_PAPER_V2 = "Ma et al. 2018, ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design (ECCV); CIFAR definition of Tian et al. 2020 (RepDistiller, ICLR)"


class ChannelShuffle(nn.Module):
    """Interleave the channels of ``groups`` groups: (g, C/g) -> (C/g, g) (Zhang et al. 2018)."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def _depthwise3x3(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False)


class ShuffleV1Block(nn.Module):
    """ShuffleNet V1 bottleneck.

    ``gconv1x1 -> BN -> ReLU -> shuffle -> dw3x3 -> BN -> ReLU -> gconv1x1 -> BN``, added to
    ``x`` (stride 1) or concatenated with ``avgpool3x3(x)`` (stride 2), then ``relu_out``.

    Args:
        in_channels: Input channels.
        channels: Channels of the residual branch's output.
        stride: 1 or 2.
        groups: Groups of the 1x1 convolutions.
        first: The network's first block, whose first 1x1 convolution is not grouped (its input,
            the stem, has too few channels).
    """

    def __init__(
        self, in_channels: int, channels: int, stride: int, groups: int, first: bool = False
    ) -> None:
        super().__init__()
        mid = channels // 4
        g = 1 if first else groups
        self.stride = stride
        self.conv1 = nn.Conv2d(in_channels, mid, 1, groups=g, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.relu1 = nn.ReLU()
        self.shuffle = ChannelShuffle(g)
        self.conv2 = _depthwise3x3(mid, stride)
        self.bn2 = nn.BatchNorm2d(mid)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(mid, channels, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()
        self.relu_out = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.shuffle(self.relu1(self.bn1(self.conv1(x))))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = self.shortcut(x)
        out = torch.cat([out, shortcut], 1) if self.stride == 2 else out + shortcut
        return self.relu_out(out)


class ShuffleNetV1(nn.Module):
    """ShuffleNet V1 for small images.

    Modules: ``conv1``, ``bn1``, ``relu`` (1x1 stem), ``layer1 ... layer3``, ``avgpool``,
    ``flatten``, ``linear``.

    Args:
        num_classes: Number of classes.
        in_channels: Channels of the input images.
        widths: Output channels of the three stages.
        blocks: Blocks per stage.
        groups: Groups of the 1x1 convolutions.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        widths: Sequence[int] = (240, 480, 960),
        blocks: Sequence[int] = (4, 8, 4),
        groups: int = 3,
    ) -> None:
        super().__init__()
        self.conv1 = conv1x1(in_channels, 24)
        self.bn1 = nn.BatchNorm2d(24)
        self.relu = nn.ReLU()
        channels = 24
        stages = []
        for stage, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            layers = []
            for i in range(count):
                # the first block concatenates its input, so its branch makes the difference
                branch = width - channels if i == 0 else width
                layers.append(
                    ShuffleV1Block(
                        channels, branch, 2 if i == 0 else 1, groups, first=stage == 0 and i == 0
                    )
                )
                channels = width
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(channels, num_classes)
        set_feature_paths(
            self,
            stages=("layer1", "layer2", "layer3"),
            preact=tuple(f"layer{i + 1}.{n - 1}.relu_out:input" for i, n in enumerate(blocks)),
            embedding="linear:input",
            num_classes=num_classes,
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(self.flatten(self.avgpool(x)))


class ShuffleV2Block(nn.Module):
    """ShuffleNet V2 basic unit: split channels in half, transform one half, concatenate, shuffle.

    ``x1, x2 = split(x)``; ``out = relu_out(cat(x1, bn3(conv3(bn2(dw3x3(relu1(bn1(conv1(x2)))))))))``;
    then a channel shuffle with 2 groups.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.half = half
        self.conv1 = conv1x1(half, half)
        self.bn1 = nn.BatchNorm2d(half)
        self.relu1 = nn.ReLU()
        self.conv2 = _depthwise3x3(half, 1)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = conv1x1(half, half)
        self.bn3 = nn.BatchNorm2d(half)
        self.relu_out = nn.ReLU()
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = x[:, : self.half], x[:, self.half :]
        out = self.relu1(self.bn1(self.conv1(x2)))
        out = self.bn3(self.conv3(self.bn2(self.conv2(out))))
        return self.shuffle(self.relu_out(torch.cat([x1, out], 1)))


class ShuffleV2DownBlock(nn.Module):
    """ShuffleNet V2 down-sampling unit: two stride-2 branches concatenated, then shuffled.

    Left: ``dw3x3/2 -> BN -> 1x1 -> BN -> ReLU``; right: ``1x1 -> BN -> ReLU -> dw3x3/2 -> BN
    -> 1x1 -> BN -> ReLU``; each gives half of ``channels``.
    """

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        mid = channels // 2
        self.conv1 = _depthwise3x3(in_channels, 2)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = conv1x1(in_channels, mid)
        self.bn2 = nn.BatchNorm2d(mid)
        self.relu2 = nn.ReLU()
        self.conv3 = conv1x1(in_channels, mid)
        self.bn3 = nn.BatchNorm2d(mid)
        self.relu3 = nn.ReLU()
        self.conv4 = _depthwise3x3(mid, 2)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = conv1x1(mid, mid)
        self.bn5 = nn.BatchNorm2d(mid)
        self.relu5 = nn.ReLU()
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: Tensor) -> Tensor:
        left = self.relu2(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = self.bn4(self.conv4(self.relu3(self.bn3(self.conv3(x)))))
        right = self.relu5(self.bn5(self.conv5(right)))
        return self.shuffle(torch.cat([left, right], 1))


class ShuffleNetV2(nn.Module):
    """ShuffleNet V2 (1x) for small images.

    Modules: ``conv1``, ``bn1``, ``relu`` (1x1 stem), ``layer1 ... layer3`` (a
    :class:`ShuffleV2DownBlock` then :class:`ShuffleV2Block` units), ``conv2``, ``bn2``,
    ``relu2`` (1x1 to ``last_channels``), ``avgpool``, ``flatten``, ``linear``.

    Args:
        num_classes: Number of classes.
        in_channels: Channels of the input images.
        widths: Output channels of the three stages.
        blocks: Basic units per stage (after the down-sampling unit).
        last_channels: Channels of the final 1x1 convolution.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        widths: Sequence[int] = (116, 232, 464),
        blocks: Sequence[int] = (3, 7, 3),
        last_channels: int = 1024,
    ) -> None:
        super().__init__()
        self.conv1 = conv1x1(in_channels, 24)
        self.bn1 = nn.BatchNorm2d(24)
        self.relu = nn.ReLU()
        channels = 24
        stages = []
        for width, count in zip(widths, blocks, strict=True):
            stages.append(
                nn.Sequential(
                    ShuffleV2DownBlock(channels, width),
                    *(ShuffleV2Block(width) for _ in range(count)),
                )
            )
            channels = width
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = conv1x1(channels, last_channels)
        self.bn2 = nn.BatchNorm2d(last_channels)
        self.relu2 = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(last_channels, num_classes)
        set_feature_paths(
            self,
            stages=("layer1", "layer2", "layer3"),
            preact=tuple(f"layer{i + 1}.{n}.relu_out:input" for i, n in enumerate(blocks)),
            embedding="linear:input",
            num_classes=num_classes,
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.linear(self.flatten(self.avgpool(x)))


@register_model(
    "shufflenetv1",
    family="shufflenet",
    description="ShuffleNet V1 (3 groups, stages 240/480/960) for 32x32 images, a RepDistiller student.",
    paper=_PAPER_V1,
)
def shufflenetv1(
    num_classes: int = 10,
    in_channels: int = 3,
    widths: Sequence[int] = (240, 480, 960),
    blocks: Sequence[int] = (4, 8, 4),
    groups: int = 3,
) -> ShuffleNetV1:
    """Build a :class:`ShuffleNetV1` (default: RepDistiller's ``ShuffleV1``).

    Args:
        num_classes: Number of classes.
        in_channels: Channels of the input images.
        widths: Stage output channels (each divisible by ``4 * groups``).
        blocks: Blocks per stage.
        groups: Groups of the 1x1 convolutions.

    Returns:
        The model, with PyTorch's default initialisation (as in the reference code).
    """
    return ShuffleNetV1(num_classes, in_channels, tuple(widths), tuple(blocks), groups)


@register_model(
    "shufflenetv2",
    family="shufflenet",
    description="ShuffleNet V2 1x (stages 116/232/464, 1024-channel head) for 32x32 images, a RepDistiller student.",
    paper=_PAPER_V2,
)
def shufflenetv2(
    num_classes: int = 10,
    in_channels: int = 3,
    widths: Sequence[int] = (116, 232, 464),
    blocks: Sequence[int] = (3, 7, 3),
    last_channels: int = 1024,
) -> ShuffleNetV2:
    """Build a :class:`ShuffleNetV2` (default: RepDistiller's ``ShuffleV2``, net size 1x).

    Args:
        num_classes: Number of classes.
        in_channels: Channels of the input images.
        widths: Stage output channels (even numbers).
        blocks: Basic units per stage after each down-sampling unit.
        last_channels: Channels of the final 1x1 convolution.

    Returns:
        The model, with PyTorch's default initialisation (as in the reference code).
    """
    return ShuffleNetV2(num_classes, in_channels, tuple(widths), tuple(blocks), last_channels)
