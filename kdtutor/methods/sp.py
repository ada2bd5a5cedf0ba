"""Similarity-preserving knowledge distillation (Tung & Mori, 2019)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import non_negative
from ..losses.relation import sp_loss
from .feature_base import FeatureDistiller, FeatureHParams
from .registry import register_method


@dataclass(frozen=True)
class SPHParams(FeatureHParams):
    """Defaults: CE weight 1 and ``beta`` = 3000 on the last stage's feature map, as in the
    paper's CIFAR experiments and RepDistiller (``-r 1 -a 0 -b 3000``, ``feat[-2]``).
    ``kd_weight`` > 0 adds Hinton's KD at temperature ``T``."""

    beta: float = 3000.0

    def validate(self) -> None:
        super().validate()
        non_negative("beta", self.beta, "sp")


@register_method
class SP(FeatureDistiller):
    r"""SP: samples that the teacher finds similar should look similar to the student,

    .. math::
        \mathcal{L} = \lambda_{CE}\,\mathrm{CE} + \beta\,\frac{1}{B^2}
            \big\|\tilde G_s - \tilde G_t\big\|_F^2 + \lambda_{KD}\,\mathcal{L}_{KD},

    with :math:`\tilde G` the row-normalised ``B x B`` Gram matrix of the flattened features
    (:func:`~kdtutor.losses.relation.sp_loss`). With several path pairs the terms are averaged."""

    name = "sp"
    family = "relation"
    paper = "Tung, Mori (2019). Similarity-Preserving Knowledge Distillation"
    hparams_cls = SPHParams
    path_policy = "last"
    uses_connectors = False

    def feature_losses(self, logits, y, student_features, teacher_features, teacher_logits, index):
        hp = self.hparams
        terms = [sp_loss(s, t) for s, t in zip(student_features, teacher_features, strict=True)]
        return hp.weighted_losses(
            logits, y, teacher_logits, {"sp": hp.beta * sum(terms) / len(terms)}
        )
