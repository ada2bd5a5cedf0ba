"""Wide Residual Networks (Zagoruyko & Komodakis 2016) as defined in RepDistiller (Tian et al. 2020).

WRN-d-k: a 16-channel 3x3 stem, three groups of ``n = (d - 4) / 6`` pre-activation basic
blocks with widths ``16k, 32k, 64k`` at strides 1, 2, 2, a final BN-ReLU, global average
pooling and a linear classifier. ``wrn_40_2 -> wrn_16_2`` is a teacher/student pair of the
RepDistiller benchmark. With ``num_classes=100`` the parameter counts equal RepDistiller's
(wrn_16_1 180,916; wrn_16_2 703,284; wrn_40_1 569,780; wrn_40_2 2,255,156).

Feature paths. The blocks are *pre-activation* (BN-ReLU-conv), so a group's output is a
residual sum that no ReLU follows inside the group. ``stage_names`` are the group outputs
``block1, block2, block3``, the features RepDistiller's methods (AT, FitNets, ...) use on
WRNs, although they are not post-activation. ``preact_stage_names`` are the inputs of the
ReLU that each group's output meets next (``block2.layer.0.relu1``, ``block3.layer.0.relu1``
and the final ``relu``): BN(group output), as RepDistiller's ``preact=True`` returns them.

References:
    Zagoruyko, S., Komodakis, N. (2016). Wide Residual Networks. BMVC.
    Tian, Y., Krishnan, D., Isola, P. (2020). Contrastive Representation Distillation. ICLR.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .common import conv1x1, conv3x3, init_cifar_weights, set_feature_paths
from .registry import register_model

__all__ = ["PreActBlock", "WideResNet", "wide_resnet"]

_PAPER = "Zagoruyko & Komodakis 2016, Wide Residual Networks (BMVC); CIFAR definitions of Tian et al. 2020 (RepDistiller, ICLR)"


class PreActBlock(nn.Module):
    """A pre-activation basic block: ``x + conv2(relu2(bn2(conv1(relu1(bn1(x))))))``.

    When the width or stride changes, the shortcut is a 1x1 convolution applied to
    ``relu1(bn1(x))`` (as in the reference code), otherwise it is the identity on ``x``.

    Args:
        in_channels: Input channels.
        channels: Output channels.
        stride: Stride of the first convolution (and of the shortcut).
        dropout: Dropout probability between the two convolutions.
    """

    def __init__(
        self, in_channels: int, channels: int, stride: int = 1, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU()
        self.conv1 = conv3x3(in_channels, channels, stride)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu2 = nn.ReLU()
        self.conv2 = conv3x3(channels, channels)
        self.dropout = dropout
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.shortcut = conv1x1(in_channels, channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        activated = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(activated)))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        out = self.conv2(out)
        shortcut = x if self.shortcut is None else self.shortcut(activated)
        return out + shortcut


class BlockGroup(nn.Module):
    """``n`` :class:`PreActBlock` in ``self.layer`` (named as in the reference code)."""

    def __init__(
        self, blocks: int, in_channels: int, channels: int, stride: int, dropout: float
    ) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *(
                PreActBlock(
                    in_channels if i == 0 else channels, channels, stride if i == 0 else 1, dropout
                )
                for i in range(blocks)
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-width for small images.

    Modules: ``conv1``, ``block1``, ``block2``, ``block3``, ``bn1``, ``relu``, ``avgpool``,
    ``flatten``, ``fc``.

    Args:
        depth: ``6n + 4`` (16, 22, 28, 40, ...).
        width: The widening factor ``k``.
        num_classes: Number of classes.
        in_channels: Channels of the input images.
        dropout: Dropout probability inside each block (0 in RepDistiller).
    """

    def __init__(
        self,
        depth: int,
        width: int,
        num_classes: int = 10,
        in_channels: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(
                f"a WRN's depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth}."
            )
        if width < 1:
            raise ValueError(f"the widening factor must be >= 1, got {width}.")
        blocks = (depth - 4) // 6
        widths = (16, 16 * width, 32 * width, 64 * width)
        self.conv1 = conv3x3(in_channels, widths[0])
        self.block1 = BlockGroup(blocks, widths[0], widths[1], 1, dropout)
        self.block2 = BlockGroup(blocks, widths[1], widths[2], 2, dropout)
        self.block3 = BlockGroup(blocks, widths[2], widths[3], 2, dropout)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(widths[3], num_classes)
        init_cifar_weights(self)
        set_feature_paths(
            self,
            stages=("block1", "block2", "block3"),
            preact=("block2.layer.0.relu1:input", "block3.layer.0.relu1:input", "relu:input"),
            embedding="fc:input",
            num_classes=num_classes,
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = self.relu(self.bn1(x))
        return self.fc(self.flatten(self.avgpool(x)))


def wide_resnet(
    num_classes: int = 10,
    in_channels: int = 3,
    depth: int = 16,
    width: int = 2,
    dropout: float = 0.0,
) -> WideResNet:
    """Build a :class:`WideResNet` (the builder behind ``wrn_16_1 ... wrn_40_2``).

    Args:
        num_classes: Number of classes.
        in_channels: Channels of the input images.
        depth: ``6n + 4``.
        width: Widening factor ``k``.
        dropout: Dropout probability inside each block.

    Returns:
        The model, randomly initialised.
    """
    return WideResNet(
        depth, width, num_classes=num_classes, in_channels=in_channels, dropout=dropout
    )


for _depth, _width, _note in (
    (16, 1, ""),
    (16, 2, " RepDistiller's student of wrn_40_2."),
    (40, 1, ""),
    (40, 2, " RepDistiller's teacher of wrn_16_2."),
):
    register_model(
        f"wrn_{_depth}_{_width}",
        family="wrn",
        description=f"WRN-{_depth}-{_width}: {(_depth - 4) // 6} pre-activation blocks per group, widths "
        f"{16 * _width}/{32 * _width}/{64 * _width}.{_note}",
        paper=_PAPER,
        defaults={"depth": _depth, "width": _width},
    )(wide_resnet)
