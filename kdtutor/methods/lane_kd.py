"""Teacher distillation for lane detection: pixel-wise KD on the slot logits, existence KD,
and optionally self attention distillation (SKD's pixel term, Liu et al. 2019; SAD, Hou et
al. 2019)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from ..cache import TeacherOutputs
from ..config import non_negative
from ..losses.applications import existence_kd_loss
from ..losses.dense import pixel_kd_loss
from ._applications import (
    OUTPUT,
    LaneDistiller,
    SADHParams,
    cache_paths,
    check_paths,
    forward_with_features,
    lane_label_losses,
    lane_outputs,
    named_path,
)
from .hparams import LossWeights
from .registry import register_method


@dataclass(frozen=True)
class LaneKDHParams(LossWeights, SADHParams):
    """Defaults (ours; no published lane KD recipe was read): the supervised terms of
    ENet-SAD (CE 1, existence BCE 0.1), pixel-wise KD on the slot logits with weight
    ``kd_weight`` 1 at ``T`` = 1 (SKD's temperature; the design's grid multiplies the weight
    by 0.3 and 3), existence KD with weight ``exist_kd_weight`` 0.1 (the existence BCE's), and
    no SAD (``sad_weight`` 0; 0.1 is the design's ``sad_kd`` label).

    ``student_logits_path`` / ``teacher_logits_path``: the module whose output is the slot
    logits to distil, before any upsampling (empty: the network's ``logits_path`` attribute,
    else its ``named_paths["logits"]``, ``head`` at 24 x 64 in the lane networks of
    ``kdtutor.models.dense``, else its full-resolution ``"out"``). The teacher's map is
    cached; when the two maps differ in size the teacher's is resized to the student's,
    bilinearly.

    ``ce_weight``, ``kd_weight`` and ``T`` are named as in every method
    (:class:`~kdtutor.methods.hparams.LossWeights`), here the segmentation cross entropy and
    the pixel-wise KD term.
    """

    ce_weight: float = 1.0
    kd_weight: float = 1.0
    T: float = 1.0
    exist_kd_weight: float = 0.1
    sad_weight: float = 0.0
    student_logits_path: str = ""
    teacher_logits_path: str = ""

    def validate(self) -> None:
        super().validate()
        non_negative("exist_kd_weight", self.exist_kd_weight, "lane_kd")

    @classmethod
    def owner(cls) -> str:
        return "lane_kd"


def _logits_path(model: nn.Module, given: str) -> str:
    return given or getattr(model, "logits_path", None) or named_path(model, "logits") or OUTPUT


@register_method
class LaneKD(LaneDistiller):
    r"""Lane KD: the supervised terms, plus the teacher's slot distributions at every pixel and
    its existence probabilities,

    .. math::
        \mathcal{L} = \lambda_{CE}\,\mathrm{CE}_w + \lambda_{ex}\,\mathrm{BCE}
            + \lambda_{KD}\,\mathcal{L}_{pi}(z_s, z_t; T)
            + \lambda_{exKD}\,\mathrm{BCE}\big(e_s, \sigma(e_t)\big) + w_{SAD}\,\mathcal{L}_{SAD}

    (:func:`~kdtutor.losses.dense.pixel_kd_loss`, SKD's pixel term;
    :func:`~kdtutor.losses.applications.existence_kd_loss`; SAD as in ``sad``). The teacher's
    outputs are cached as ``logits`` = its slot logits (at ``teacher_logits_path``) and the
    feature ``exist`` = its existence logits."""

    name = "lane_kd"
    paper = (
        "Liu et al. (2019). Structured Knowledge Distillation for Semantic Segmentation (pixel "
        "term); Hou et al. (2019). Self Attention Distillation (SAD), for lanes"
    )
    hparams_cls = LaneKDHParams
    epoch_hparams: ClassVar[Mapping[str, int]] = {"sad_start": 13}
    loss_weights = ("kd_weight", "exist_kd_weight")
    tensor_teacher_outputs = True

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, hparams=None) -> None:
        super().__init__(student, teacher, hparams)
        assert teacher is not None
        hp: LaneKDHParams = self.hparams  # type: ignore[assignment]
        self.student_logits_path = _logits_path(student, hp.student_logits_path)
        self.teacher_logits_path = _logits_path(teacher, hp.teacher_logits_path)
        check_paths(
            student, [self.student_logits_path], role="student", method=self.name,
            field="student_logits_path",
        )  # fmt: skip
        check_paths(
            teacher, [self.teacher_logits_path], role="teacher", method=self.name,
            field="teacher_logits_path",
        )  # fmt: skip

    def teacher_feature_paths(self) -> Sequence[str]:
        return cache_paths(self.name, logits=self.teacher_logits_path, exist="exist")

    def compute_teacher_outputs(self, x: Tensor) -> TeacherOutputs:
        assert self.teacher is not None
        self.teacher_forward_calls += 1
        path = self.teacher_logits_path
        out, features = forward_with_features(self.teacher, x, [path], detach=True)
        full, exist = lane_outputs(out, "teacher")
        logits = full if path == OUTPUT else features[path]
        return TeacherOutputs(logits.detach(), {"exist": exist.detach()})

    def forward(
        self, x: Tensor, y: Any, index: Tensor | None = None
    ) -> tuple[Any, dict[str, Tensor]]:
        hp: LaneKDHParams = self.hparams  # type: ignore[assignment]
        paths = [self.student_logits_path, *(self.sad_paths if self.sad_active else ())]
        out, features = forward_with_features(self.student, x, paths)
        full, exist = lane_outputs(out)
        student_logits = (
            full if self.student_logits_path == OUTPUT else features[self.student_logits_path]
        )
        teacher = self.teacher_outputs(x, index)
        teacher_logits = teacher.logits
        if teacher_logits.shape[-2:] != student_logits.shape[-2:]:
            teacher_logits = F.interpolate(
                teacher_logits, size=student_logits.shape[-2:], mode="bilinear", align_corners=False
            )
        losses = lane_label_losses(out, y, hp)
        losses["kd"] = hp.kd_weight * pixel_kd_loss(student_logits, teacher_logits, hp.T)
        losses["exist_kd"] = hp.exist_kd_weight * existence_kd_loss(
            exist, teacher.features["exist"]
        )
        losses.update(self.sad_losses(features, losses["ce"]))
        return out, losses
