r"""Early-stopped knowledge distillation, ESKD (after Cho & Hariharan, ICCV 2019).

Cho & Hariharan find that larger, more accurate teachers often teach worse (a small student
cannot mimic a large teacher) and that stopping early mitigates it. Their abstract names
"stopping the teacher's training early"; this module is the other reading, the one
re-implementations call ESKD: the *student* is distilled for the first ``kd_epochs`` epochs,
then trained on the labels alone for the rest of its schedule. The paper's exact protocol
(which early stopping, at which epoch) was not verified from its text here; an early-stopped
*teacher* is a snapshot of the teacher's run, used with plain KD.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from ..config import non_negative
from .base import HParams
from .kd import KD, KDHParams
from .registry import register_method

__all__ = ["ESKD", "ESKDHParams"]


@dataclass(frozen=True)
class ESKDHParams(KDHParams):
    r"""KD's weights while distilling (``ce_weight`` 0.1, ``kd_weight`` 0.9, ``T`` = 4), so
    that ESKD and KD differ only in when the KD term stops.

    Attributes:
        kd_epochs: epochs (from the first) trained with KD's loss; from epoch ``kd_epochs``
            (0-based) on, the cross entropy alone. Our choice, 10: half the book's 20-epoch
            schedule (the paper's value is not verified). Runs shorter than 20 epochs scale
            it in proportion (:meth:`~kdtutor.methods.Distiller.scaled_hparams`).
        ce_weight_after: the cross entropy's weight after the stop. Our choice, 1: the loss
            of a student trained alone (keeping KD's 0.1 would cut the step size tenfold).
    """

    kd_epochs: int = 10
    ce_weight_after: float = 1.0

    def validate(self) -> None:
        super().validate()
        non_negative("kd_epochs", self.kd_epochs, "eskd")
        non_negative("ce_weight_after", self.ce_weight_after, "eskd")


@register_method
class ESKD(KD):
    r"""KD stopped early: Hinton's KD for the first ``kd_epochs`` epochs, then the labels alone.

    .. math::
        \mathcal{L}_e = \begin{cases}
            \lambda_{CE}\,\mathrm{CE}(z_s, y) + \lambda_{KD}\,T^2\,\frac1B\sum_i
                \mathrm{KL}\big(p^T_t(x_i) \,\|\, p^T_s(x_i)\big) & e < E_{KD} \\
            \lambda_{after}\,\mathrm{CE}(z_s, y) & e \ge E_{KD}
        \end{cases}

    for epoch :math:`e` (0-based), :math:`E_{KD}` = ``kd_epochs`` and :math:`\lambda_{after}`
    = ``ce_weight_after``. The switch is set by :meth:`on_epoch_start`, a function of the
    epoch alone, so a resumed run switches at the same epoch. The logged losses are KD's
    ``"ce"`` and ``"kd"`` before the stop, ``"ce"`` alone after it.

    Paper: Cho, Hariharan (2019), *On the Efficacy of Knowledge Distillation*, ICCV.
    """

    name = "eskd"
    family = "architecture"
    paper = "Cho, Hariharan (2019). On the Efficacy of Knowledge Distillation"
    hparams_cls = ESKDHParams
    epoch_hparams: ClassVar[Mapping[str, int]] = {"kd_epochs": 10}
    protocol_epochs: ClassVar[int] = 20
    """``kd_epochs``' default is counted in the book protocol's 20 epochs."""

    def __init__(
        self, student: nn.Module, teacher: nn.Module | None = None, hparams: HParams | None = None
    ) -> None:
        super().__init__(student, teacher, hparams)
        self.distilling = True
        """Whether this epoch's loss has the KD term (set by :meth:`on_epoch_start`)."""

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.distilling = epoch < self.hparams.kd_epochs

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        if self.distilling:
            return super().forward(x, y, index)
        logits = self.student(x)
        return logits, {"ce": self.hparams.ce_weight_after * F.cross_entropy(logits, y)}
