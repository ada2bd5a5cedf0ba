"""Vanilla knowledge distillation (Hinton, Vinyals, Dean, 2015)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from .base import Distiller
from .hparams import LossWeights
from .registry import register_method


@dataclass(frozen=True)
class KDHParams(LossWeights):
    """Defaults: T=4, ``ce_weight`` 0.1, ``kd_weight`` 0.9, as in RepDistiller's CIFAR-100
    protocol (Tian et al., 2020). Hinton et al. (2015) used T=20 on MNIST.
    ``scale_by_t2=False`` drops the :math:`T^2` factor of the KD term."""

    renamed: ClassVar[Mapping[str, str]] = {"alpha": "ce_weight", "beta": "kd_weight"}

    ce_weight: float = 0.1
    kd_weight: float = 0.9
    T: float = 4.0
    scale_by_t2: bool = True


@register_method
class KD(Distiller):
    r"""Hinton's KD: :math:`\mathcal{L} = \lambda_{CE}\,\mathrm{CE}(z_s, y) + \lambda_{KD}\,T^2\,
    \mathrm{KL}(p_t^T \| p_s^T)` with the KL averaged over the batch (see :func:`kd_loss`)."""

    name = "kd"
    family = "response"
    loss_weights = ("kd_weight",)
    paper = "Hinton, Vinyals, Dean (2015). Distilling the Knowledge in a Neural Network"
    hparams_cls = KDHParams

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        hp = self.hparams
        logits = self.student(x)
        teacher = self.teacher_outputs(x, index)
        return logits, hp.weighted_losses(logits, y, teacher.logits, scale_by_t2=hp.scale_by_t2)
