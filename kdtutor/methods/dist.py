"""DIST: knowledge distillation from a stronger teacher (Huang et al., 2022)."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from ..config import non_negative, positive
from ..losses.response import dist_loss
from .base import Distiller, HParams
from .registry import register_method


@dataclass(frozen=True)
class DISTHParams(HParams):
    """Defaults of Huang et al. (2022) on CIFAR-100: CE weight 1, beta (inter) = gamma (intra) = 1,
    T=4 (they use T=1 and beta = gamma = 2 on ImageNet)."""

    T: float = 4.0
    ce_weight: float = 1.0
    beta: float = 1.0
    gamma: float = 1.0

    def validate(self) -> None:
        positive("T", self.T, "dist")
        for name in ("ce_weight", "beta", "gamma"):
            non_negative(name, getattr(self, name), "dist")


@register_method
class DIST(Distiller):
    r""":math:`\mathcal{L} = \mathrm{CE} + \beta\,\mathcal{L}_{inter} + \gamma\,\mathcal{L}_{intra}`
    (see :func:`~kdtutor.losses.dist_loss`)."""

    name = "dist"
    paper = "Huang, You, Wang, Qian, Xu (2022). Knowledge Distillation from A Stronger Teacher"
    hparams_cls = DISTHParams

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        hp = self.hparams
        logits = self.student(x)
        inter, intra = dist_loss(logits, self.teacher_outputs(x, index).logits, hp.T)
        return logits, {
            "ce": hp.ce_weight * F.cross_entropy(logits, y),
            "inter": hp.beta * inter,
            "intra": hp.gamma * intra,
        }
