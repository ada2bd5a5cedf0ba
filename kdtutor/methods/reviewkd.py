"""ReviewKD: distilling knowledge via knowledge review (Chen, Liu, Zhao, Jia, 2021).

Each student stage is compared with the teacher stage at the same depth, but *after* it has
been fused with the student's deeper stages: the attention-based fusion (ABF) modules run
from the deepest level to the shallowest, each mixing the level's own feature with the fused
result of the level below, so a shallow teacher feature is matched by a student feature that
has "reviewed" the deeper ones. The matching is the hierarchical context loss
(:func:`~kdtutor.losses.feature.hcl_loss`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import non_negative
from ..connectors import match_spatial
from ..errors import ShapeMismatchError
from ..losses.feature import hcl_loss
from .feature_base import FeatureDistiller, FeatureHParams
from .registry import register_method

__all__ = ["ABF", "ReviewKD", "ReviewKDHParams"]


@dataclass(frozen=True)
class ReviewKDHParams(FeatureHParams):
    r"""Defaults: mdistiller's CIFAR-100 ReviewKD (``CE_WEIGHT`` 1, ``REVIEWKD_WEIGHT`` 1, the
    ReviewKD term ramped up linearly over the first 20 epochs). ``mid_channels``: width of the
    ABF modules; 0 takes mdistiller's rule, :math:`\min(512, C)` with :math:`C` the channels
    of the student's deepest stage."""

    beta: float = 1.0
    warmup_epochs: int = 20
    mid_channels: int = 0

    def validate(self) -> None:
        super().validate()
        for name in ("beta", "warmup_epochs", "mid_channels"):
            non_negative(name, getattr(self, name), "reviewkd")


class ABF(nn.Module):
    r"""Attention-based fusion of one level.

    ``conv1x1 + BN`` maps the student feature to ``mid_channels``; when a residual from the
    deeper level is given (``fuse=True``), it is resized to this level's size (nearest
    neighbour), and a ``conv1x1 + sigmoid`` on the concatenation gives two attention maps
    :math:`a_0, a_1` with :math:`x \leftarrow a_0 x + a_1 r`. The result, resized to the
    teacher's spatial size, is the residual for the next shallower level, and
    ``conv3x3 + BN`` of it (``out_channels`` = the teacher's) is the level's output.
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        out_size: tuple[int, int],
        fuse: bool,
    ) -> None:
        super().__init__()
        self.out_size = out_size
        self.reduce = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(mid_channels),
        )
        self.attention = (
            nn.Sequential(nn.Conv2d(2 * mid_channels, 2, kernel_size=1), nn.Sigmoid())
            if fuse
            else None
        )
        self.out = nn.Sequential(
            nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        # Kaiming-uniform with a=1 (a linear layer's gain), as in the authors' code.
        nn.init.kaiming_uniform_(self.reduce[0].weight, a=1)
        nn.init.kaiming_uniform_(self.out[0].weight, a=1)

    def forward(self, x: Tensor, residual: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(output, fused)`` for student feature ``x`` and the deeper level's ``residual``."""
        x = self.reduce(x)
        if self.attention is not None:
            if residual is None:
                raise ValueError("this ABF fuses a deeper level: pass its residual.")
            residual = F.interpolate(residual, size=x.shape[-2:], mode="nearest")
            a = self.attention(torch.cat([x, residual], dim=1))
            x = x * a[:, :1] + residual * a[:, 1:]
        x = match_spatial(x, self.out_size)
        return self.out(x), x


@register_method
class ReviewKD(FeatureDistiller):
    r"""ReviewKD: :math:`\mathcal{L} = \lambda_{CE}\,\mathrm{CE} + w(e)\,\beta \sum_i
    \mathcal{L}_{HCL}\big(\mathrm{ABF}_i(s_i, r_{i+1}),\, t_i\big)` over the stage outputs,
    where :math:`r_{i+1}` is the fused feature of the deeper level (none at the deepest) and
    :math:`w(e) = \min((e+1)/e_{warm}, 1)` in epoch :math:`e` (0-based).

    Deviations from mdistiller's CIFAR code: (1) the teacher's *post*-ReLU stage outputs are
    the targets (mdistiller uses the teacher's pre-ReLU features) and the pooled embedding is
    not an extra 1x1 level; (2) the fused map is brought to the teacher's size by
    :func:`~kdtutor.connectors.match_spatial` (average pooling when shrinking, bilinear when
    growing) instead of nearest-neighbour interpolation (the two agree when sizes are equal,
    as in every mdistiller CIFAR pair); (3) ``mid_channels`` can be set (default: the same
    rule).
    """

    name = "reviewkd"
    family = "feature"
    epoch_hparams: ClassVar[Mapping[str, int]] = {"warmup_epochs": 20}
    paper = "Chen, Liu, Zhao, Jia (2021). Distilling Knowledge via Knowledge Review"
    hparams_cls = ReviewKDHParams
    path_policy = "stages"
    uses_connectors = False

    def build_modules(self) -> None:
        for path, shape in zip(
            (*self.student_paths, *self.teacher_paths),
            (*self.student_shapes, *self.teacher_shapes),
            strict=True,
        ):
            if len(shape) != 3:
                raise ShapeMismatchError(
                    f"reviewkd fuses feature maps (C, H, W), but {path!r} has shape {shape}. "
                    "Choose convolutional stage outputs as student_paths / teacher_paths."
                )
        mid = self.hparams.mid_channels or min(512, self.student_shapes[-1][0])
        last = len(self.student_paths) - 1
        self.abfs = nn.ModuleList(
            ABF(s[0], mid, t[0], (t[1], t[2]), fuse=i < last)
            for i, (s, t) in enumerate(zip(self.student_shapes, self.teacher_shapes, strict=True))
        )
        self.warmup = 1.0

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        super().on_epoch_start(epoch, epochs)
        warm = self.hparams.warmup_epochs
        self.warmup = 1.0 if warm == 0 else min((epoch + 1) / warm, 1.0)

    def review(self, student_features: list[Tensor]) -> list[Tensor]:
        """The ABF outputs, shallowest first, each shaped like its teacher feature."""
        outputs: list[Tensor] = []
        residual: Tensor | None = None
        for abf, feature in zip(reversed(self.abfs), reversed(student_features), strict=True):
            out, residual = abf(feature, residual)
            outputs.append(out)
        return outputs[::-1]

    def feature_losses(self, logits, y, student_features, teacher_features, teacher_logits, index):
        hp = self.hparams
        review = sum(
            hcl_loss(s, t)
            for s, t in zip(self.review(student_features), teacher_features, strict=True)
        )
        terms = {"reviewkd": self.warmup * hp.beta * review}
        return hp.weighted_losses(logits, y, teacher_logits, terms)
