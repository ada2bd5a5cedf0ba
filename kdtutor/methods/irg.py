"""Knowledge distillation via instance relationship graph (Liu et al., 2019)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import non_negative
from ..losses.relation import irg_losses
from .feature_base import FeatureDistiller, FeatureHParams
from .registry import register_method


@dataclass(frozen=True)
class IRGHParams(FeatureHParams):
    """Defaults. ``w_edge`` = ``w_transform`` = 0.16: the authors' Caffe prototxts (ResNet20 ->
    ResNet20-x0.5 on CIFAR-10, batch 64) weight each edge and transformation loss by 0.005 with
    Caffe's ``EuclideanLoss`` (sum of squares over 2 x rows), i.e. 0.005 x 64 / 2 = 0.16 times
    a mean squared error at batch 64. ``w_vertex`` = 1: the weight of the paper's logits
    (vertex) loss is not in the released code and we could not confirm it, so 1 (a plain
    logits-MSE term, as in Ba & Caruana's regression) is our choice; set it to 0 to drop it.
    CE weight 1. ``kd_weight`` > 0 adds Hinton's KD at temperature ``T``."""

    w_vertex: float = 1.0
    w_edge: float = 0.16
    w_transform: float = 0.16

    def validate(self) -> None:
        super().validate()
        for name in ("w_vertex", "w_edge", "w_transform"):
            non_negative(name, getattr(self, name), "irg")


@register_method
class IRG(FeatureDistiller):
    r"""IRG: the batch is a graph with the samples as vertices and their (max-normalised,
    squared) distances as edges; the student mimics the teacher's graph on the pooled embedding
    :math:`e` and on the logits :math:`z`, and how the graph changes from one to the other:

    .. math::
        \mathcal{L} = \lambda_{CE}\,\mathrm{CE} + w_V\,\mathrm{MSE}(z_s, z_t)
            + w_E\,\big[\mathrm{MSE}(A(e_s), A(e_t)) + \mathrm{MSE}(A(z_s), A(z_t))\big]
            + w_T\,\mathrm{MSE}\big(A(z_s) - A(e_s),\, A(z_t) - A(e_t)\big)

    (see :func:`~kdtutor.losses.relation.irg_losses` for how this simplifies the paper's
    multi-layer graphs and its vertex transformation)."""

    name = "irg"
    family = "relation"
    loss_weights = ("w_vertex", "w_edge", "w_transform")
    paper = (
        "Liu, Cao, Li, Yuan, Hu, Li, Duan (2019). Knowledge Distillation via Instance "
        "Relationship Graph"
    )
    hparams_cls = IRGHParams
    path_policy = "embedding"
    uses_connectors = False

    def feature_losses(self, logits, y, student_features, teacher_features, teacher_logits, index):
        hp = self.hparams
        vertex, edge, transform = irg_losses(
            student_features[0], teacher_features[0], logits, teacher_logits
        )
        terms = {
            "irg_vertex": hp.w_vertex * vertex,
            "irg_edge": hp.w_edge * edge,
            "irg_transform": hp.w_transform * transform,
        }
        return hp.weighted_losses(logits, y, teacher_logits, terms)
