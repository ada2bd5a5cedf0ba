"""Relational knowledge distillation for metric learning (Park, Kim, Lu, Cho, 2019), on face
embeddings: RKD's distance and angle terms, no label term."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ..cache import TeacherOutputs
from ..config import non_negative
from ..losses.relation import rkd_angle_loss, rkd_distance_loss
from ._applications import (
    OUTPUT,
    FaceDistiller,
    FaceHParams,
    cache_paths,
    embedding_width,
    forward_with_features,
    named_path,
)
from .registry import register_method


@dataclass(frozen=True)
class FaceRKDHParams(FaceHParams):
    """Defaults: the metric-learning recipe of lenscloth/RKD's README (verified in the design
    note: ``--dist_ratio 1 --angle_ratio 2``, no triplet term, ``--l2normalize false`` for the
    student): ``distance_weight`` 1, ``angle_weight`` 2, ``ce_weight`` 0 (no label term; > 0
    adds the normalised softmax through a cosine head, an exercise).

    ``student_path``: where the student's embedding is read (empty: its
    ``named_paths["embedding"]``, the embedding before the L2 normalisation in
    ``kdtutor.models.dense``'s face networks, as RKD's recipe leaves the student's embedding
    unnormalised; the output for a network without one). ``teacher_path``: the teacher's
    (empty: its output, unit norm; lenscloth's teacher flag was not read). Both RKD terms are
    invariant to a common rescaling, but an L2 normalisation projects each sample onto the
    sphere on its own, which changes the distances and the angles alike.
    """

    distance_weight: float = 1.0
    angle_weight: float = 2.0
    ce_weight: float = 0.0
    teacher_path: str = ""

    def validate(self) -> None:
        super().validate()
        for name in ("distance_weight", "angle_weight", "ce_weight"):
            non_negative(name, getattr(self, name), "face_rkd")

    @classmethod
    def owner(cls) -> str:
        return "face_rkd"


@register_method
class FaceRKD(FaceDistiller):
    r"""RKD on the embeddings, for metric learning,

    .. math::
        \mathcal{L} = w_D\,\mathcal{L}_{RKD\text{-}D}(e_s, e_t) + w_A\,\mathcal{L}_{RKD\text{-}A}(e_s, e_t)
            \;[+\ \lambda_{CE}\,\mathrm{CE}(z_s, y)],

    :func:`~kdtutor.losses.rkd_distance_loss` and :func:`~kdtutor.losses.rkd_angle_loss`
    reused as they are (both compare ``B x B`` relations, so the widths may differ and there
    is no connector). Logged as ``rkd_distance`` and ``rkd_angle``. The teacher's embedding is
    cached as ``logits``."""

    name = "face_rkd"
    paper = "Park, Kim, Lu, Cho (2019). Relational Knowledge Distillation (metric learning)"
    hparams_cls = FaceRKDHParams
    loss_weights = ("distance_weight", "angle_weight")
    tensor_teacher_outputs = True

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        hparams: Any = None,
        *,
        input_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__(student, teacher, hparams, input_shape=input_shape)
        assert teacher is not None
        self.teacher_dim = embedding_width(
            teacher, self.hparams.teacher_path, self.input_shape, role="teacher",
            method=self.name, field="teacher_path",
        )  # fmt: skip

    def uses_head(self) -> bool:
        return self.hparams.ce_weight > 0

    def default_student_path(self, student: nn.Module) -> str:
        """RKD's recipe reads the student's embedding unnormalised: the model's
        ``named_paths["embedding"]`` where it names one (``bn`` in ``kdtutor.models.dense``'s
        face networks), else its output."""
        return named_path(student, "embedding") or OUTPUT

    def teacher_feature_paths(self) -> Sequence[str]:
        return cache_paths(self.name, logits="embedding", embedding=self.hparams.teacher_path)

    def compute_teacher_outputs(self, x: Tensor) -> TeacherOutputs:
        assert self.teacher is not None
        self.teacher_forward_calls += 1
        path = self.hparams.teacher_path
        _, features = forward_with_features(self.teacher, x, [path], detach=True)
        return TeacherOutputs(features[path].flatten(1))

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Any, dict[str, Tensor]]:
        hp: FaceRKDHParams = self.hparams  # type: ignore[assignment]
        out, e, _ = self.embed(x)
        t = self.teacher_outputs(x, index).logits
        losses = {
            "rkd_distance": hp.distance_weight * rkd_distance_loss(e, t),
            "rkd_angle": hp.angle_weight * rkd_angle_loss(e, t),
        }
        if self.head is not None:
            losses["ce"] = hp.ce_weight * F.cross_entropy(self.head(e), y)
        return out, losses
