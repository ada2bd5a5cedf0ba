"""Activation-boundary distillation (Heo, Lee, Yun, Choi, 2019).

A ReLU network's decisions are shaped by *which* neurons fire, the activation boundaries, more
than by how strongly. AB transfers them: a squared hinge (:func:`~kdtutor.losses.feature.ab_loss`)
pushes each connected student pre-activation to the teacher's side of zero, by a margin. The
paper uses it to *initialise* the student (stage one, ``init_epochs`` epochs, AB loss only),
then trains with the labels (stage two).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from ..config import non_negative, positive
from ..losses.feature import ab_loss
from .feature_base import FeatureDistiller, FeatureHParams
from .registry import register_method

__all__ = ["AB", "ABHParams"]


@dataclass(frozen=True)
class ABHParams(FeatureHParams):
    r"""Defaults: RepDistiller's CIFAR-100 AB. Stage one: 30 epochs of the AB loss alone, with
    margin :math:`\mu = 1`, layer :math:`i = 1, \dots, n` weighted :math:`2^{i-n}` (the
    deepest 1) and the sum scaled by ``init_beta`` = 3/1000 (RepDistiller's ``ABLoss`` divides
    by 1000 and multiplies by 3). Stage two: CE only, since RepDistiller drops the AB term
    after the initialisation (``beta`` = 0; set it > 0 to keep it) and its AB runs use no KD
    (``kd_weight`` = 0). Connectors: 1x1 conv + BN."""

    connector: str = "conv"
    init_epochs: int = 30
    margin: float = 1.0
    init_beta: float = 3e-3
    beta: float = 0.0

    def validate(self) -> None:
        super().validate()
        positive("margin", self.margin, "ab")
        for name in ("init_beta", "beta"):
            non_negative(name, getattr(self, name), "ab")


@register_method
class AB(FeatureDistiller):
    r"""Activation-boundary distillation over the pre-ReLU stage features,

    .. math::
        \mathcal{L}_{AB}^{tot} = \sum_{i=1}^{n} 2^{i-n}\,\mathcal{L}_{AB}\big(r_i(s_i), t_i\big)

    with 1x1 conv + BN connectors :math:`r_i` and :math:`\mathcal{L}_{AB}` of
    :func:`~kdtutor.losses.feature.ab_loss`. Stage one (``init_epochs`` epochs):
    :math:`\beta_{init}\,\mathcal{L}_{AB}^{tot}` alone (``"ab"``), which trains the student's
    layers up to its last hooked stage and the connectors. Stage two (or the only stage):
    :math:`\lambda_{CE}\,\mathrm{CE} + \lambda_{KD}\,\mathcal{L}_{KD} + \beta\,
    \mathcal{L}_{AB}^{tot}`, where terms of zero weight are left out.

    Deviation: the paper weights all layers alike and initialises with its own schedule; the
    layer weights, the 3/1000 scale and the 30 epochs are RepDistiller's, whose published
    numbers use them.
    """

    name = "ab"
    family = "feature"
    loss_weights = ("init_beta",)
    epoch_hparams: ClassVar[Mapping[str, int]] = {"init_epochs": 30}
    paper = (
        "Heo, Lee, Yun, Choi (2019). Knowledge Transfer via Distillation of Activation "
        "Boundaries Formed by Hidden Neurons"
    )
    hparams_cls = ABHParams
    path_policy = "preact"

    def boundary_loss(
        self, student_features: list[Tensor], teacher_features: list[Tensor]
    ) -> Tensor:
        r"""The layer-weighted AB loss :math:`\mathcal{L}_{AB}^{tot}` (unscaled)."""
        connected = self.connect(student_features)
        n = len(connected)
        return sum(
            2.0 ** (i - n + 1) * ab_loss(s, t, self.hparams.margin)
            for i, (s, t) in enumerate(zip(connected, teacher_features, strict=True))
        )

    def feature_losses(self, logits, y, student_features, teacher_features, teacher_logits, index):
        hp = self.hparams
        if self.in_init_stage:
            return {"ab": hp.init_beta * self.boundary_loss(student_features, teacher_features)}
        terms = {}
        if hp.beta > 0:
            terms["ab"] = hp.beta * self.boundary_loss(student_features, teacher_features)
        return hp.weighted_losses(logits, y, teacher_logits, terms)
