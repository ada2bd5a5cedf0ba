"""Channel-wise knowledge distillation for dense prediction (Shu et al., ICCV 2021).

Each channel of the logit map is turned into a distribution over the image's locations (a
softmax over H x W at temperature ``tau``), and the student matches the teacher's, channel by
channel: the student learns *where* each class is most salient, which suits dense tasks
better than matching each pixel's class distribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

from ..config import non_negative, positive
from ..losses.dense import cwd_loss
from ._dense import DenseDistiller, segmentation_ce
from .base import HParams
from .registry import register_method

__all__ = ["CWD", "CWDHParams"]


@dataclass(frozen=True)
class CWDHParams(HParams):
    """Defaults: the official code's ``tau`` 4 and loss weight 3 (TorchDistiller, quoted
    from the references list, not re-read); mmrazor's configs use ``tau`` 1 and weight 5 (an
    exercise of chapter 8). ``logits_path``: the module whose output is the ``(B, K, h, w)``
    logit map before upsampling (torchvision LRASPP's ``"classifier"``; ``""``: the
    network's output); student and teacher maps must have the same size (no interpolation).
    ``ignore_index``: mask value left out of the cross entropy."""

    ce_weight: float = 1.0
    cwd_weight: float = 3.0
    tau: float = 4.0
    logits_path: str = "classifier"
    ignore_index: int = 255

    def validate(self) -> None:
        owner = self.owner()
        non_negative("ce_weight", self.ce_weight, owner)
        non_negative("cwd_weight", self.cwd_weight, owner)
        non_negative("ignore_index", self.ignore_index, owner)
        positive("tau", self.tau, owner)


@register_method
class CWD(DenseDistiller):
    r"""Channel-wise distillation: :math:`\mathcal{L} = \lambda_{CE}\,\mathrm{CE}(z_s, y) +
    \lambda_{cwd}\,\frac{\tau^2}{C}\sum_c \mathrm{KL}\big(\phi(z^t_c)\,\|\,\phi(z^s_c)\big)`,
    :math:`\phi(z_c) = \mathrm{softmax}(z_c/\tau)` over the locations of channel :math:`c`,
    averaged over the batch (:func:`~kdtutor.losses.dense.cwd_loss`), on the logit maps
    before upsampling."""

    name = "cwd"
    task = "segmentation"
    paper = (
        "Shu, Liu, Gao, Yan, Shen (2021). Channel-wise Knowledge Distillation for Dense Prediction"
    )
    hparams_cls = CWDHParams
    loss_weights: ClassVar[tuple[str, ...]] = ("cwd_weight",)

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Any, dict[str, Tensor]]:
        hp: CWDHParams = self.hparams  # type: ignore[assignment]
        student = self.student_maps(x)
        teacher = self.teacher_outputs(x, index)
        ce = segmentation_ce(student.outputs, y, ignore_index=hp.ignore_index)
        losses = {"ce": hp.ce_weight * ce}
        if hp.cwd_weight > 0:
            losses["cwd"] = hp.cwd_weight * cwd_loss(student.logits, teacher.logits, hp.tau)
        return student.outputs, losses
