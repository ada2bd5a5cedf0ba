"""Fast pose distillation (Zhang, Zhu, Ye, CVPR 2019).

A small pose network regresses a mix of the ground-truth heatmaps and the teacher's:
``alpha MSE(H_s, H_t) + (1 - alpha) MSE(H_s, H_gt)``. With ``alpha = 0`` it is the supervised
baseline ``pose_scratch`` exactly; the reproduction's variant on unlabelled images (teacher
heatmaps only) is an exercise of chapter 8.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..config import ConfigError
from ..losses.dense import heatmap_mse
from ._dense import DenseDistiller, heatmap_targets
from .base import HParams
from .registry import register_method

__all__ = ["FPD", "FPDHParams"]


@dataclass(frozen=True)
class FPDHParams(HParams):
    """Defaults: the unofficial reproduction yuanyuanli85/Fast_Human_Pose_Estimation_Pytorch
    (``example/mpii_kd.py`` at ``14604dc``, read): ``kdloss_alpha`` 0.5 (``alpha``), both
    terms ``nn.MSELoss`` element means. ``use_target_weight``: multiply both heatmaps of a
    slot by its ``weight`` in both terms (the triangle's empty slot is neither trained nor
    distilled; the reproduction has no weights: MPII's missing joints have empty target
    maps). ``logits_path``: the module whose output is the heatmaps (``""``: the network's
    output, as the chapter's pose nets return them)."""

    alpha: float = 0.5
    use_target_weight: bool = True
    logits_path: str = ""

    def validate(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(
                f"fpd.alpha must be in [0, 1] (the teacher's share of the loss; 0.5 in the "
                f"reproduction, 0 is plain supervised regression), got {self.alpha!r}."
            )


@register_method
class FPD(DenseDistiller):
    r"""Fast pose distillation: :math:`\mathcal{L} = (1-\alpha)\,\mathrm{MSE}(w H_s, w H_{gt})
    + \alpha\,\mathrm{MSE}(w H_s, w H_t)` (:func:`~kdtutor.losses.dense.fpd_loss`, logged as
    the weighted terms ``"heatmap"`` and ``"fpd"``). With ``alpha = 0`` the teacher is not
    run and the losses are ``pose_scratch``'s; with ``alpha = 1`` only the teacher's term is
    left."""

    name = "fpd"
    task = "keypoints"
    paper = "Zhang, Zhu, Ye (2019). Fast Human Pose Estimation"
    hparams_cls = FPDHParams

    def forward(
        self, x: Tensor, y: Any, index: Tensor | None = None
    ) -> tuple[Any, dict[str, Tensor]]:
        hp: FPDHParams = self.hparams  # type: ignore[assignment]
        heatmaps, weight = heatmap_targets(y, self.name)
        weight = weight if hp.use_target_weight else None
        student = self.student_maps(x)
        losses: dict[str, Tensor] = {}
        if hp.alpha < 1:
            losses["heatmap"] = (1.0 - hp.alpha) * heatmap_mse(student.logits, heatmaps, weight)
        if hp.alpha > 0:
            teacher = self.teacher_outputs(x, index).logits
            losses["fpd"] = hp.alpha * heatmap_mse(student.logits, teacher, weight)
        return student.outputs, losses
