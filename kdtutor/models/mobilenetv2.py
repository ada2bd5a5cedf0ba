"""MobileNetV2 (Sandler et al. 2018) for small images, as defined in RepDistiller (Tian et al. 2020).

Inverted residual blocks: a 1x1 expansion (factor ``t``), a 3x3 depthwise convolution and a
linear 1x1 projection, with an identity shortcut when the shape is kept. RepDistiller's CIFAR
student ``mobilenetv2`` uses width multiplier 0.5 and expansion 6, a stride-2 stem (so a
32x32 image becomes 16x16) and a 1280-channel last 1x1 convolution; with ``num_classes=100``
it has 812,836 parameters, as there. Unlike torchvision's version, the first block (``t=1``)
keeps its expansion convolution, as in the reference code.

Feature paths. Stage outputs are linear (no ReLU after the projection), so ``stage_names``
are the block groups RepDistiller returns as features (``blocks.1``, ``blocks.2``,
``blocks.4``, ``blocks.6``) and ``preact_stage_names`` give the same tensors as the input of
the next module (``blocks.2:input``, ..., ``conv2:input``): the linear bottleneck is already
pre-activation.

References:
    Sandler, M., Howard, A., Zhu, M., Zhmoginov, A., Chen, L.-C. (2018). MobileNetV2: Inverted
    Residuals and Linear Bottlenecks. CVPR.
    Tian, Y., Krishnan, D., Isola, P. (2020). Contrastive Representation Distillation. ICLR.
"""

from __future__ import annotations

from torch import Tensor, nn

from .common import init_cifar_weights, make_divisible, set_feature_paths
from .registry import register_model

__all__ = ["InvertedResidual", "MobileNetV2", "mobilenetv2"]

_PAPER = "Sandler et al. 2018, MobileNetV2: Inverted Residuals and Linear Bottlenecks (CVPR); CIFAR definition of Tian et al. 2020 (RepDistiller, ICLR)"

#: (expansion t, channels c, blocks n, stride s) of each group; ``t=None`` means the model's
#: expansion ratio.
_SETTINGS: tuple[tuple[int | None, int, int, int], ...] = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)


def _conv_bn_relu(
    in_channels: int, channels: int, kernel: int, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
    )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> project (1x1, linear), plus ``x`` when shapes allow.

    Args:
        in_channels: Input channels.
        channels: Output channels.
        stride: Stride of the depthwise convolution.
        expansion: Expansion factor of the hidden width.
    """

    def __init__(self, in_channels: int, channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.use_shortcut = stride == 1 and in_channels == channels
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_shortcut else out


class MobileNetV2(nn.Module):
    """MobileNetV2 for small images.

    Modules: ``conv1`` (stride-2 stem), ``blocks.0 ... blocks.6`` (groups of
    :class:`InvertedResidual`), ``conv2`` (1x1 to the last width), ``avgpool``, ``flatten``,
    ``classifier``.

    Args:
        num_classes: Number of classes.
        in_channels: Channels of the input images.
        width_mult: Width multiplier applied to every layer but the last.
        expansion: Expansion factor of the inverted residuals (``t``).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        width_mult: float = 0.5,
        expansion: int = 6,
    ) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}.")
        channels = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(in_channels, channels, 3, stride=2)
        groups = []
        for t, c, n, s in _SETTINGS:
            width = int(c * width_mult)
            blocks = []
            for i in range(n):
                blocks.append(
                    InvertedResidual(
                        channels, width, s if i == 0 else 1, expansion if t is None else t
                    )
                )
                channels = width
            groups.append(nn.Sequential(*blocks))
        self.blocks = nn.ModuleList(groups)
        self.last_channels = make_divisible(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(channels, self.last_channels, 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(self.last_channels, num_classes)
        init_cifar_weights(self, linear_std=0.01)
        set_feature_paths(
            self,
            stages=("blocks.1", "blocks.2", "blocks.4", "blocks.6"),
            preact=("blocks.2:input", "blocks.3:input", "blocks.5:input", "conv2:input"),
            embedding="classifier:input",
            num_classes=num_classes,
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        for group in self.blocks:
            x = group(x)
        x = self.conv2(x)
        return self.classifier(self.flatten(self.avgpool(x)))


@register_model(
    "mobilenetv2",
    family="mobilenetv2",
    description="MobileNetV2 with width 0.5 and expansion 6 for 32x32 images (RepDistiller's 'MobileNetV2' student).",
    paper=_PAPER,
)
def mobilenetv2(
    num_classes: int = 10, in_channels: int = 3, width_mult: float = 0.5, expansion: int = 6
) -> MobileNetV2:
    """Build a :class:`MobileNetV2` (default: RepDistiller's width-0.5 CIFAR student).

    Args:
        num_classes: Number of classes.
        in_channels: Channels of the input images.
        width_mult: Width multiplier (0.5 in RepDistiller).
        expansion: Expansion factor ``t`` (6 in the paper).

    Returns:
        The model, randomly initialised.
    """
    return MobileNetV2(
        num_classes=num_classes, in_channels=in_channels, width_mult=width_mult, expansion=expansion
    )
