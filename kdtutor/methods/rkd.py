"""Relational knowledge distillation (Park, Kim, Lu, Cho, 2019)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import non_negative
from ..losses.relation import rkd_angle_loss, rkd_distance_loss
from .feature_base import FeatureDistiller, FeatureHParams
from .registry import register_method


@dataclass(frozen=True)
class RKDHParams(FeatureHParams):
    """Defaults: the paper's RKD-DA weights, distance 25 and angle 50 (Park et al. 2019, also
    RepDistiller's ``RKDLoss``), on the pooled embedding, with CE weight 1 and ``beta`` = 1
    (RepDistiller's CIFAR-100 protocol: ``-r 1 -a 0 -b 1``). ``kd_weight`` > 0 adds Hinton's KD
    at temperature ``T``."""

    beta: float = 1.0
    distance_weight: float = 25.0
    angle_weight: float = 50.0

    def validate(self) -> None:
        super().validate()
        for name in ("beta", "distance_weight", "angle_weight"):
            non_negative(name, getattr(self, name), "rkd")


@register_method
class RKD(FeatureDistiller):
    r"""RKD: the student's embedding keeps the teacher's pairwise distances and triplet angles,

    .. math::
        \mathcal{L} = \lambda_{CE}\,\mathrm{CE} + \beta\,\big(w_D\,\mathcal{L}_{RKD\text{-}D}
            + w_A\,\mathcal{L}_{RKD\text{-}A}\big) + \lambda_{KD}\,\mathcal{L}_{KD}

    (see :func:`~kdtutor.losses.relation.rkd_distance_loss` and
    :func:`~kdtutor.losses.relation.rkd_angle_loss`). Both terms compare ``B x B`` (or
    ``B x B x B``) relations, so the embedding widths may differ and no connector is needed."""

    name = "rkd"
    family = "relation"
    paper = "Park, Kim, Lu, Cho (2019). Relational Knowledge Distillation"
    hparams_cls = RKDHParams
    path_policy = "embedding"
    uses_connectors = False

    def feature_losses(self, logits, y, student_features, teacher_features, teacher_logits, index):
        hp = self.hparams
        s, t = student_features[0], teacher_features[0]
        terms = {
            "rkd_distance": hp.beta * hp.distance_weight * rkd_distance_loss(s, t),
            "rkd_angle": hp.beta * hp.angle_weight * rkd_angle_loss(s, t),
        }
        return hp.weighted_losses(logits, y, teacher_logits, terms)
