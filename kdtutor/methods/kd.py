"""Vanilla knowledge distillation (Hinton, Vinyals, Dean, 2015)."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from ..config import non_negative, positive
from ..losses.response import kd_loss
from .base import Distiller, HParams
from .registry import register_method


@dataclass(frozen=True)
class KDHParams(HParams):
    """Defaults: T=4, alpha (CE weight) 0.1, beta (KD weight) 0.9, as in RepDistiller's
    CIFAR-100 protocol (Tian et al., 2020). Hinton et al. (2015) used T=20 on MNIST."""

    T: float = 4.0
    alpha: float = 0.1
    beta: float = 0.9
    scale_by_t2: bool = True

    def validate(self) -> None:
        positive("T", self.T, "kd")
        non_negative("alpha", self.alpha, "kd")
        non_negative("beta", self.beta, "kd")


@register_method
class KD(Distiller):
    r"""Hinton's KD: :math:`\mathcal{L} = \alpha\,\mathrm{CE}(z_s, y) + \beta\,T^2\,
    \mathrm{KL}(p_t^T \| p_s^T)` with the KL averaged over the batch (see :func:`kd_loss`)."""

    name = "kd"
    paper = "Hinton, Vinyals, Dean (2015). Distilling the Knowledge in a Neural Network"
    hparams_cls = KDHParams

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        hp = self.hparams
        logits = self.student(x)
        teacher = self.teacher_outputs(x, index)
        return logits, {
            "ce": hp.alpha * F.cross_entropy(logits, y),
            "kd": hp.beta * kd_loss(logits, teacher.logits, hp.T, scale_by_t2=hp.scale_by_t2),
        }
