"""DIST: knowledge distillation from a stronger teacher (Huang et al., 2022)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..config import non_negative
from ..losses.response import dist_loss
from .base import Distiller
from .hparams import LossWeights
from .registry import register_method


@dataclass(frozen=True)
class DISTHParams(LossWeights):
    """Defaults of Huang et al. (2022) on CIFAR-100: CE weight 1, ``beta`` (inter) = ``gamma``
    (intra) = 1, T=4 (they use T=1 and beta = gamma = 2 on ImageNet). ``beta`` and ``gamma``
    keep the paper's names; ``kd_weight`` > 0 adds Hinton's KD term (default 0)."""

    beta: float = 1.0
    gamma: float = 1.0

    def validate(self) -> None:
        super().validate()
        for name in ("beta", "gamma"):
            non_negative(name, getattr(self, name), "dist")


@register_method
class DIST(Distiller):
    r""":math:`\mathcal{L} = \lambda_{CE}\,\mathrm{CE} + \beta\,\mathcal{L}_{inter}
    + \gamma\,\mathcal{L}_{intra}` (see :func:`~kdtutor.losses.dist_loss`)."""

    name = "dist"
    family = "response"
    loss_weights = ("beta", "gamma")
    paper = "Huang, You, Wang, Qian, Xu (2022). Knowledge Distillation from A Stronger Teacher"
    hparams_cls = DISTHParams

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        hp = self.hparams
        logits = self.student(x)
        teacher_logits = self.teacher_outputs(x, index).logits
        inter, intra = dist_loss(logits, teacher_logits, hp.T)
        terms = {"inter": hp.beta * inter, "intra": hp.gamma * intra}
        return logits, hp.weighted_losses(logits, y, teacher_logits, terms)
