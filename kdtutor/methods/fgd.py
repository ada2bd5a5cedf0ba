r"""FGD: Focal and Global Knowledge Distillation for Detectors (Yang et al., CVPR 2022), on
torchvision's FCOS.

On every FPN level :math:`k`, with :math:`f` a 1x1 align convolution (only when the channel
counts differ), the teacher's spatial and channel attentions :math:`A^S, A^C`
(:func:`~kdtutor.losses.detection.fgd_attention`) and the foreground / background masks
:math:`M^{fg}, M^{bg}` of the ground-truth boxes (:func:`~kdtutor.losses.detection.fgd_masks`):

.. math::
    \mathcal{L} = \mathcal{L}_{FCOS} + \sum_k \Big(
        \alpha L_{fg} + \beta L_{bg} + \gamma L_{at} + \lambda L_{global} \Big)_k

* :math:`L_{fg}, L_{bg} = \frac1B\sum M A^S_t A^C_t (F^t - f(F^s))^2`, focal feature terms
  (:func:`~kdtutor.losses.detection.fgd_feature_loss`);
* :math:`L_{at} = \frac1B(\sum |A^C_t - A^C_s| + \sum |A^S_t - A^S_s|)`, the student's
  attentions taken on :math:`f(F^s)` (:func:`~kdtutor.losses.detection.fgd_attention_loss`);
* :math:`L_{global} = \frac1B \sum (\mathcal{R}_t(F^t) - \mathcal{R}_s(f(F^s)))^2`, with two
  trainable :class:`GcBlock` s (:func:`~kdtutor.losses.detection.fgd_global_loss`).

**Verified** at ``yzd-v/FGD``: ``mmdet/distillation/losses/fgd.py`` at ``f1da292`` (the
formulas, reductions, mask rule, GcBlock and its initialisation) and
``configs/distillers/fgd/fgd_fcos_r101_distill_fcos_r50_2x_coco.py`` (the defaults below,
one loss module per FPN level on ``neck.fpn_convs.{0..4}``, 24 epochs, gradient clipping at
35, ``init_student=True``). Deviations, stated: 3 FPN levels here against 5; no
``init_student`` (the published student starts its neck and head from the teacher's, which
needs equal widths, and ours differ); boxes are projected with the level's stride over the
padded input (the code divides by the unpadded image size, the same at 64 px where the
transform does not pad); the first commit's transposed ``[w, h]`` mask (``04900ad``) is not
reproduced: the latest ``[h, w]`` is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import non_negative, positive
from ..errors import ShapeMismatchError
from ..losses.detection import (
    fgd_attention,
    fgd_attention_loss,
    fgd_feature_loss,
    fgd_global_loss,
    fgd_masks,
)
from ._detection import DetectionDistiller
from .hparams import HParams
from .registry import register_method

__all__ = ["FGD", "FGDHParams", "FGDLevel", "GcBlock"]


@dataclass(frozen=True)
class FGDHParams(HParams):
    """Defaults: the authors' FCOS config (R101 teacher, R50 student, COCO):
    ``temp=0.8``, ``alpha_fgd=0.0016``, ``beta_fgd=0.0008``, ``gamma_fgd=0.0008``,
    ``lambda_fgd=0.000008`` (**verified**, ``fgd_fcos_r101_distill_fcos_r50_2x_coco.py``).
    The temperature is named ``T`` as everywhere in kdtutor; the four weights keep the
    config's names (the paper's :math:`\\alpha, \\beta, \\gamma, \\lambda`; ``lambda`` is a
    Python keyword). The code's own defaults (0.5, 0.001, 0.0005, 0.001, 0.000005) are for
    its RetinaNet-style configs."""

    T: float = 0.8
    alpha_fgd: float = 0.0016
    beta_fgd: float = 0.0008
    gamma_fgd: float = 0.0008
    lambda_fgd: float = 0.000008

    def validate(self) -> None:
        super().validate()
        positive("T", self.T, "fgd")
        for key in ("alpha_fgd", "beta_fgd", "gamma_fgd", "lambda_fgd"):
            non_negative(key, getattr(self, key), "fgd")


class GcBlock(nn.Module):
    r"""A global-context block (Cao et al., 2019, GCNet) as FGD's code builds it:
    :math:`\mathcal{R}(F) = F + W_{v2}\,\mathrm{ReLU}(\mathrm{LN}(W_{v1} c))`, with the context
    :math:`c = \sum_j \mathrm{softmax}_j(W_k F)_j F_j` (a 1x1 conv to one channel, a softmax
    over positions) and a bottleneck of half the channels. Initialised as the code does:
    :math:`W_k` Kaiming-normal (fan in, ReLU gain) with zero bias, the last convolution
    :math:`W_{v2}` all zeros (so :math:`\mathcal{R}` starts as the identity); the others keep
    PyTorch's defaults (**verified**, ``reset_parameters`` at ``f1da292``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels < 2:
            raise ShapeMismatchError(
                f"a GcBlock needs at least 2 channels (its bottleneck has channels // 2), got "
                f"{channels}."
            )
        self.conv_mask = nn.Conv2d(channels, 1, kernel_size=1)
        self.channel_add = nn.Sequential(
            nn.Conv2d(channels, channels // 2, kernel_size=1),
            nn.LayerNorm([channels // 2, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // 2, channels, kernel_size=1),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.conv_mask.bias)
        last = self.channel_add[-1]
        assert isinstance(last, nn.Conv2d) and last.bias is not None
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def context(self, x: Tensor) -> Tensor:
        """The attention-pooled context :math:`c`, ``(B, C, 1, 1)``."""
        b, c, h, w = x.shape
        weights = F.softmax(self.conv_mask(x).reshape(b, 1, h * w), dim=2)  # (B, 1, HW)
        return torch.bmm(x.reshape(b, c, h * w), weights.transpose(1, 2)).reshape(b, c, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.channel_add(self.context(x))


class FGDLevel(nn.Module):
    """FGD's trainable parts on one FPN level: the align conv (1x1 with bias, only when the
    channel counts differ, as in the code; else the identity) and the student's and the
    teacher's GcBlocks."""

    def __init__(self, student_channels: int, teacher_channels: int) -> None:
        super().__init__()
        self.align: nn.Module = (
            nn.Conv2d(student_channels, teacher_channels, kernel_size=1)
            if student_channels != teacher_channels
            else nn.Identity()
        )
        self.gc_student = GcBlock(teacher_channels)
        self.gc_teacher = GcBlock(teacher_channels)


@register_method
class FGD(DetectionDistiller):
    """Focal and global distillation on every FPN level of an FCOS student (see the module's
    formula). ``forward`` returns ``(None, {"classification", "bbox_regression",
    "bbox_ctrness", "fgd_fg", "fgd_bg", "fgd_at", "fgd_global"})``, each FGD term weighted
    and summed over the levels."""

    name: ClassVar[str] = "fgd"
    paper: ClassVar[str] = (
        "Yang et al. (2022). Focal and Global Knowledge Distillation for Detectors"
    )
    hparams_cls: ClassVar[type[HParams]] = FGDHParams
    loss_weights: ClassVar[tuple[str, ...]] = ("alpha_fgd", "beta_fgd", "gamma_fgd", "lambda_fgd")
    protocol_epochs: ClassVar[int] = 24
    hparams: FGDHParams

    def __init__(
        self, student: nn.Module, teacher: nn.Module | None = None, hparams: HParams | None = None
    ) -> None:
        super().__init__(student, teacher, hparams)
        assert self.teacher is not None
        s, t = int(student.backbone.out_channels), int(self.teacher.backbone.out_channels)
        self.levels = nn.ModuleList(FGDLevel(s, t) for _ in range(self.num_levels))

    def level_losses(
        self, level: int, student: Tensor, teacher: Tensor, boxes: list[Tensor]
    ) -> dict[str, Tensor]:
        """The four unweighted terms on FPN level ``level``.

        Args:
            level: the level's index (0: finest), which selects its align conv and GcBlocks.
            student: the student's level :math:`F^s` ``(B, C_s, H, W)``, before the align.
            teacher: the teacher's :math:`F^t` ``(B, C_t, H, W)``.
            boxes: per image, the ground-truth boxes on this level's grid.

        Returns:
            ``{"fg", "bg", "at", "global"}``.
        """
        parts = self.levels[level]
        aligned = parts.align(student)
        if aligned.shape != teacher.shape:
            raise ShapeMismatchError(
                f"FGD level {level}: the aligned student map {tuple(aligned.shape)} and the "
                f"teacher's {tuple(teacher.shape)} differ."
            )
        fg, bg = fgd_masks(boxes, tuple(teacher.shape[-2:]))
        spatial_t, channel_t = fgd_attention(teacher, self.hparams.T)
        spatial_s, channel_s = fgd_attention(aligned, self.hparams.T)
        fg_loss, bg_loss = fgd_feature_loss(aligned, teacher, fg, bg, spatial_t, channel_t)
        return {
            "fg": fg_loss,
            "bg": bg_loss,
            "at": fgd_attention_loss(spatial_s, channel_s, spatial_t, channel_t),
            "global": fgd_global_loss(parts.gc_student(aligned), parts.gc_teacher(teacher)),
        }

    def forward(
        self, x: Tensor, y: Any, index: Tensor | None = None
    ) -> tuple[None, dict[str, Tensor]]:
        hp = self.hparams
        student = self.student_pass(x, y)
        teacher = self.teacher_pass(x, index, student)
        boxes = self.level_boxes(student)
        sums: dict[str, Any] = {"fg": 0.0, "bg": 0.0, "at": 0.0, "global": 0.0}
        for k, (p_s, p_t) in enumerate(
            zip(student.features, self.teacher_levels(teacher), strict=True)
        ):
            for key, value in self.level_losses(k, p_s, p_t, boxes[k]).items():
                sums[key] = sums[key] + value
        losses: dict[str, Tensor] = dict(student.losses)
        losses["fgd_fg"] = hp.alpha_fgd * sums["fg"]
        losses["fgd_bg"] = hp.beta_fgd * sums["bg"]
        losses["fgd_at"] = hp.gamma_fgd * sums["at"]
        losses["fgd_global"] = hp.lambda_fgd * sums["global"]
        return None, losses
