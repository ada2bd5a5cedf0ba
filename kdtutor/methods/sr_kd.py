"""Output distillation for super-resolution: the student imitates the teacher's SR image as
well as the HR image (FAKD's ``TS`` term, He et al. 2020)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from ..cache import TeacherOutputs
from ..config import ConfigError
from ..errors import ShapeMismatchError
from ._applications import cache_paths, output_map
from .base import Distiller
from .hparams import HParams
from .registry import register_method


@dataclass(frozen=True)
class SRKDHParams(HParams):
    """Default ``alpha`` = 0.5: FAKD's scripts (``--alpha 0.5``; the weights ``1 - alpha``
    and ``alpha`` of the ``DS`` and ``TS`` terms in ``code/loss.py``, verified)."""

    alpha: float = 0.5

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(
                f"{self.owner()}.alpha weighs the teacher's image against the HR image and must "
                f"lie in [0, 1]; got {self.alpha!r} (FAKD uses 0.5)."
            )


@register_method
class SRKD(Distiller):
    r"""SR output distillation,

    .. math::
        \mathcal{L} = (1 - \alpha)\,\big\|S(x) - y_{HR}\big\|_1 + \alpha\,\big\|S(x) - T(x)\big\|_1,

    each an ``nn.L1Loss`` mean (FAKD's ``DS`` and ``TS`` terms, logged as ``l1`` and ``ts``).
    The teacher's SR image is cached as ``logits``."""

    name = "sr_kd"
    family = "application"
    task = "superres"
    paper = (
        "He, Wu, Lu, Luo (2020). FAKD: Feature-Affinity Based Knowledge Distillation for "
        "Efficient Image Super-Resolution (teacher-output term)"
    )
    hparams_cls = SRKDHParams
    tensor_teacher_outputs = True

    def teacher_feature_paths(self) -> Sequence[str]:
        return cache_paths(self.name, logits="sr")

    def compute_teacher_outputs(self, x: Tensor) -> TeacherOutputs:
        assert self.teacher is not None
        self.teacher_forward_calls += 1
        return TeacherOutputs(output_map(self.teacher(x)).detach())

    def output_losses(self, sr: Tensor, y: Tensor, teacher_sr: Tensor) -> dict[str, Tensor]:
        """``{"l1": (1 - alpha) L1(S, HR), "ts": alpha L1(S, T)}``."""
        alpha = self.hparams.alpha
        if teacher_sr.shape != sr.shape:
            raise ShapeMismatchError(
                f"the teacher's SR images {tuple(teacher_sr.shape)} and the student's "
                f"{tuple(sr.shape)} differ: both must upscale by the same factor."
            )
        return {
            "l1": (1.0 - alpha) * F.l1_loss(sr, y),
            "ts": alpha * F.l1_loss(sr, teacher_sr),
        }

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        sr = output_map(self.student(x))
        teacher = self.teacher_outputs(x, index)
        return sr, self.output_losses(sr, y, teacher.logits)
