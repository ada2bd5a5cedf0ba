"""Plain convolutional networks small and fast enough to train on a CPU at book scale.

A VGG-like design (Simonyan & Zisserman 2015) with batch norm (Ioffe & Szegedy 2015): stages
of conv3x3-BN-ReLU blocks, 2x2 max pooling between stages (``ceil_mode``, so 8x8 inputs still
work), global average pooling, optional dropout and a linear classifier. Any input of at least
8x8 pixels works (32x32 shapes, 28x28 MNIST, 8x8 sklearn digits).

Presets (parameters and forward FLOPs for 10 classes and one 3x32x32 image, as counted by
:func:`kdtutor.models.model_summary`):

==============  ========================  =======  ======
preset          widths x blocks           params   MFLOPs
==============  ========================  =======  ======
``cnn_large``   (32, 64, 128, 256) x 2    1.18M    26.4
``cnn_medium``  (16, 32, 64, 128) x 2     295k     26.8
``cnn_small``   (16, 32, 64) x (2, 2, 1)  36.0k    15.0
``cnn_tiny``    (8, 16, 32) x (1, 2, 1)   8.8k     2.8
``cnn_micro``   (6, 12, 16) x 1           2.8k     0.9
==============  ========================  =======  ======

``cnn_large`` downsamples in its first convolution (stride 2), so its first stage works at
16x16 and it costs no more than ``cnn_medium`` while holding four times the parameters.

References:
    Simonyan, K., Zisserman, A. (2015). Very Deep Convolutional Networks for Large-Scale Image
    Recognition. ICLR.
    Ioffe, S., Szegedy, C. (2015). Batch Normalization: Accelerating Deep Network Training by
    Reducing Internal Covariate Shift. ICML.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .common import check_positive_int, conv3x3, init_cifar_weights, set_feature_paths
from .registry import register_model

__all__ = ["ConvBlock", "ConvNet", "ConvStage", "convnet"]

_PAPER = "VGG-style plain CNN (Simonyan & Zisserman 2015) with batch norm (Ioffe & Szegedy 2015)"


class ConvBlock(nn.Module):
    """``relu(bn(conv3x3(x)))`` with the ReLU as its own module (hook its input for pre-activations)."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = conv3x3(in_channels, channels, stride)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))


class ConvStage(nn.Module):
    """An optional 2x2 max pooling (``pool``) followed by :class:`ConvBlock` modules (``blocks``)."""

    def __init__(
        self, in_channels: int, channels: int, blocks: int, pool: bool, stride: int = 1
    ) -> None:
        super().__init__()
        self.pool: nn.Module = nn.MaxPool2d(2, ceil_mode=True) if pool else nn.Identity()
        self.blocks = nn.Sequential(
            *(
                ConvBlock(in_channels if i == 0 else channels, channels, stride if i == 0 else 1)
                for i in range(blocks)
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.pool(x))


class ConvNet(nn.Module):
    """A plain CNN: stages of conv-BN-ReLU blocks, max pooling between stages, GAP, linear.

    Modules: ``stages.0 ... stages.{S-1}`` (:class:`ConvStage`), ``avgpool``, ``flatten``,
    ``dropout``, ``fc``. The stage outputs are post-ReLU, the pre-activations are the inputs of
    each stage's last ReLU, the embedding is the pooled vector before dropout (``flatten``).

    Args:
        widths: Channels of each stage.
        blocks_per_stage: Conv blocks per stage: one int for all stages or one per stage.
        num_classes: Number of classes.
        in_channels: Channels of the input images.
        dropout: Dropout probability before the classifier.
        stem_stride: Stride of the very first convolution (2 halves the cost of everything).
    """

    def __init__(
        self,
        widths: Sequence[int] = (16, 32, 64),
        blocks_per_stage: int | Sequence[int] = 1,
        num_classes: int = 10,
        in_channels: int = 3,
        dropout: float = 0.0,
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        widths = tuple(widths)
        if not widths:
            raise ValueError("widths must name at least one stage, e.g. widths=(16, 32, 64).")
        for width in widths:
            check_positive_int(width, "every width")
        blocks = (
            (blocks_per_stage,) * len(widths)
            if isinstance(blocks_per_stage, int)
            else tuple(blocks_per_stage)
        )
        if len(blocks) != len(widths):
            raise ValueError(
                f"blocks_per_stage gives {len(blocks)} counts for {len(widths)} stages; "
                "pass one int or one count per width."
            )
        for count in blocks:
            check_positive_int(count, "every blocks_per_stage count")
        check_positive_int(stem_stride, "stem_stride")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        self.widths = widths
        self.blocks_per_stage = blocks
        stages = []
        channels = in_channels
        for i, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            stages.append(
                ConvStage(channels, width, count, pool=i > 0, stride=stem_stride if i == 0 else 1)
            )
            channels = width
        self.stages = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)
        init_cifar_weights(self)
        set_feature_paths(
            self,
            stages=tuple(f"stages.{i}" for i in range(len(widths))),
            preact=tuple(f"stages.{i}.blocks.{n - 1}.relu:input" for i, n in enumerate(blocks)),
            embedding="flatten",
            num_classes=num_classes,
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(self.flatten(self.avgpool(self.stages(x)))))


_PRESETS = {
    "cnn_large": (
        {"widths": (32, 64, 128, 256), "blocks_per_stage": 2, "stem_stride": 2},
        "A ~1.2M-parameter plain CNN (4 stages of 2 blocks, stride-2 stem): a teacher that is cheap on 32x32 images.",
    ),
    "cnn_medium": (
        {"widths": (16, 32, 64, 128), "blocks_per_stage": 2},
        "A ~0.3M-parameter plain CNN (4 stages of 2 blocks): a teacher or teacher assistant.",
    ),
    "cnn_small": (
        {"widths": (16, 32, 64), "blocks_per_stage": (2, 2, 1)},
        "A ~36k-parameter plain CNN (3 stages): a student.",
    ),
    "cnn_tiny": (
        {"widths": (8, 16, 32), "blocks_per_stage": (1, 2, 1)},
        "A ~9k-parameter plain CNN (3 stages): a small student.",
    ),
    "cnn_micro": (
        {"widths": (6, 12, 16), "blocks_per_stage": 1},
        "A ~3k-parameter plain CNN (3 convolutions): a very small student that may be too small to use soft targets.",
    ),
    # the book-scale protocol's students: the teacher's stride-2 stem, a quarter of the FLOPs
    "cnn_tiny_s2": (
        {"widths": (8, 16, 32), "blocks_per_stage": (1, 2, 1), "stem_stride": 2},
        "cnn_tiny with a stride-2 stem (~9k parameters, 0.7 MFLOPs on 32x32): the book-scale protocol's small CNN student.",
    ),
    "cnn_wide_s2": (
        {"widths": (16, 32, 64), "blocks_per_stage": 1, "stem_stride": 2},
        "Twice cnn_tiny_s2's width, one block per stage, a stride-2 stem (~24k parameters, 1.4 MFLOPs on 32x32): the book-scale protocol's larger CNN student.",
    ),
}


@register_model(
    "convnet",
    family="small_cnn",
    description="A configurable plain CNN: stages of conv3x3-BN-ReLU, max pooling between stages, GAP, linear.",
    paper=_PAPER,
)
def convnet(
    num_classes: int = 10,
    in_channels: int = 3,
    widths: Sequence[int] = (16, 32, 64),
    blocks_per_stage: int | Sequence[int] = 1,
    dropout: float = 0.0,
    stem_stride: int = 1,
) -> ConvNet:
    """Build a :class:`ConvNet` (the builder behind ``cnn_large ... cnn_micro``).

    Args:
        num_classes: Number of classes.
        in_channels: Channels of the input images.
        widths: Channels of each stage.
        blocks_per_stage: Conv blocks per stage (an int or one per stage).
        dropout: Dropout probability before the classifier.
        stem_stride: Stride of the first convolution.

    Returns:
        The model, randomly initialised (He normal convolutions).
    """
    return ConvNet(widths, blocks_per_stage, num_classes, in_channels, dropout, stem_stride)


for _name, (_defaults, _description) in _PRESETS.items():
    register_model(
        _name, family="small_cnn", description=_description, paper=_PAPER, defaults=_defaults
    )(convnet)
