r"""Detection KD: a soft classification term and an FPN hint (Chen et al., 2017; Li, Jin, Yan,
2017), on torchvision's FCOS.

.. math::
    \mathcal{L} = \mathcal{L}_{FCOS}
        + \lambda_{KD}\,\frac{T^2}{|L|}\sum_{l, c}
            \mathrm{BCE}\big(\sigma(z^s_{lc}/T), \sigma(z^t_{lc}/T)\big)
        + \lambda_{hint} \sum_k \mathrm{MSE}\big(a_k(P^s_k), P^t_k\big)

:math:`\mathcal{L}_{FCOS}` is the student's own focal, GIoU and centerness losses; the soft
term is :func:`~kdtutor.losses.detection.det_cls_kd` on FCOS's class logits at every
location :math:`l`; the hint compares each FPN level :math:`P_k` through :math:`a_k`, a 1x1
conv + BN connector (:func:`~kdtutor.connectors.build_connector`, Chen's adaptation layer).
``hint_region="boxes"`` restricts it to the ground-truth boxes projected on each level
(:func:`~kdtutor.losses.detection.masked_hint_loss`): Li et al.'s proposal-region mimic in
its one-stage form.

Sources: **not verified** at source (the design note's one-line descriptions of the papers).
Stated deviations: Chen's soft term is a class-weighted cross entropy over :math:`K+1`
softmax classes (background weight 1.5); FCOS has :math:`K` sigmoids and no background logit,
so the term here is per class and binary. Chen's teacher-bounded regression loss is left out
(FCOS regresses with GIoU on the positives it assigns itself). Li's mimic uses proposals;
FCOS has none, so the ground-truth boxes take their place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from torch import Tensor, nn

from ..config import ConfigError, non_negative, positive
from ..connectors import build_connector
from ..losses.detection import det_cls_kd, masked_hint_loss
from ..losses.feature import hint_loss
from ._detection import DetectionDistiller, DetectorPass, boxes_mask
from .hparams import HParams
from .registry import register_method

__all__ = ["DetKD", "DetKDHParams"]

HINT_REGIONS = ("all", "boxes")


@dataclass(frozen=True)
class DetKDHParams(HParams):
    """Defaults (ours; the papers' weights are for other detectors): ``T=1``,
    ``kd_weight=1``, ``hint_weight=1``, the hint over whole levels. ``kd_weight=0`` gives the
    hint alone (the book's ``fpn_hint`` row), ``hint_weight=0`` the soft term alone
    (``kd_cls``); the FCOS losses always keep weight 1."""

    T: float = 1.0
    kd_weight: float = 1.0
    hint_weight: float = 1.0
    hint_region: Literal["all", "boxes"] = "all"

    @classmethod
    def owner(cls) -> str:
        return "det_kd"

    def validate(self) -> None:
        super().validate()
        positive("T", self.T, "det_kd")
        non_negative("kd_weight", self.kd_weight, "det_kd")
        non_negative("hint_weight", self.hint_weight, "det_kd")
        if self.hint_region not in HINT_REGIONS:
            raise ConfigError(
                f"det_kd.hint_region must be 'all' (whole FPN levels) or 'boxes' (the "
                f"ground-truth boxes on each level, Li et al.'s mimic), got {self.hint_region!r}."
            )


@register_method
class DetKD(DetectionDistiller):
    """Chen et al.'s soft classification term and FPN hint, with Li et al.'s box-region
    hint as an option, for FCOS students (see the module's formula). ``forward`` returns
    ``(None, {"classification", "bbox_regression", "bbox_ctrness", "kd", "hint"})``, the
    last two weighted and left out when their weight is 0."""

    name: ClassVar[str] = "det_kd"
    paper: ClassVar[str] = (
        "Chen et al. (2017). Learning Efficient Object Detection Models with Knowledge "
        "Distillation; Li, Jin, Yan (2017). Mimicking Very Efficient Network for Object Detection"
    )
    hparams_cls: ClassVar[type[HParams]] = DetKDHParams
    loss_weights: ClassVar[tuple[str, ...]] = ("kd_weight", "hint_weight")
    hparams: DetKDHParams

    def __init__(
        self, student: nn.Module, teacher: nn.Module | None = None, hparams: HParams | None = None
    ) -> None:
        super().__init__(student, teacher, hparams)
        self.connectors = nn.ModuleList()
        if self.hparams.hint_weight > 0:
            assert self.teacher is not None
            s, t = int(student.backbone.out_channels), int(self.teacher.backbone.out_channels)
            for k in range(self.num_levels):
                self.connectors.append(
                    build_connector((s, 1, 1), (t, 1, 1), "conv", where=f"fpn.{k}")
                )

    def hint(self, student: DetectorPass, teacher_levels: list[Tensor]) -> Tensor:
        """The unweighted hint, summed over levels: the MSE of each connected student level
        with the teacher's, over whole levels or inside the projected boxes."""
        total: Any = 0.0
        boxes = self.level_boxes(student) if self.hparams.hint_region == "boxes" else None
        for k, (connector, p_s, p_t) in enumerate(
            zip(self.connectors, student.features, teacher_levels, strict=True)
        ):
            a = connector(p_s)
            if boxes is None:
                total = total + hint_loss(a, p_t)
            else:
                mask = boxes_mask(boxes[k], tuple(p_s.shape[-2:]))
                total = total + masked_hint_loss(a, p_t, mask)
        return total

    def forward(
        self, x: Tensor, y: Any, index: Tensor | None = None
    ) -> tuple[None, dict[str, Tensor]]:
        hp = self.hparams
        student = self.student_pass(x, y)
        teacher = self.teacher_pass(x, index, student)
        losses: dict[str, Tensor] = dict(student.losses)
        if hp.kd_weight > 0:
            soft = det_cls_kd(student.head_outputs["cls_logits"], teacher.logits, hp.T)
            losses["kd"] = hp.kd_weight * soft
        if hp.hint_weight > 0:
            losses["hint"] = hp.hint_weight * self.hint(student, self.teacher_levels(teacher))
        return None, losses
