r"""Multi-teacher distillation: averaged soft targets (You et al., 2017) and confidence-aware
weighting (CA-MKD, Zhang, Chen, Wang, 2022)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConfigError
from ..losses.multi_teacher import TEACHER_COMBINES, multi_teacher_kd
from ._teachers import STACK_PATH, TeacherEnsemble
from .base import Distiller
from .hparams import HParams, LossWeights
from .registry import register_method

__all__ = ["MTKD", "MTKDHParams"]


@dataclass(frozen=True)
class MTKDHParams(LossWeights):
    """Defaults: ``ce_weight`` 1, ``kd_weight`` 1, ``T`` 4: CA-MKD's ``-r 1 -a 1`` in its
    ``scripts/run.sh`` and ``kd_T`` 4 (Rorozhl/CA-MKD). ``combine`` is one of
    :data:`~kdtutor.losses.multi_teacher.TEACHER_COMBINES` (default: You et al.'s averaged
    soft targets). ``teachers`` names extra zoo teachers joined to the one given (CLI:
    ``--set teachers=mnist5k_cnn``); or pass ``teacher=TeacherEnsemble([...])``."""

    ce_weight: float = 1.0
    kd_weight: float = 1.0
    T: float = 4.0
    combine: str = "mean_targets"
    teachers: tuple[str, ...] = ()

    def validate(self) -> None:
        super().validate()
        if self.combine not in TEACHER_COMBINES:
            raise ConfigError(
                f"mtkd.combine must be one of {list(TEACHER_COMBINES)}, got {self.combine!r}."
            )


def _ensemble(teacher: nn.Module | None, names: Sequence[str]) -> nn.Module | None:
    if teacher is None or (isinstance(teacher, TeacherEnsemble) and not names):
        return teacher
    if isinstance(teacher, TeacherEnsemble):
        members = list(teacher.members)
    else:
        members = [teacher]
    if names:
        from ..zoo import load_teacher

        members += [load_teacher(n) for n in names]
    return TeacherEnsemble(members)


@register_method
class MTKD(Distiller):
    r"""Multi-teacher KD: :math:`\mathcal{L} = \lambda_{CE}\,\mathrm{CE}(z_s, y)
    + \lambda_{KD}\,\mathcal{L}_{MT}` with :math:`\mathcal{L}_{MT}` from
    :func:`~kdtutor.losses.multi_teacher.multi_teacher_kd`: by default
    :math:`T^2\,\mathrm{KL}(\frac1M\sum_k p_k^T \| p_s^T)` (You et al., 2017); with
    ``combine="camkd"``, each teacher's KD term weighted per sample by its confidence in the
    label (Zhang, Chen, Wang, 2022; CA-MKD's intermediate-feature term is not implemented).

    The teacher is wrapped in a :class:`~kdtutor.methods._teachers.TeacherEnsemble` (one
    teacher is an ensemble of one), whose stacked member logits are read, and cached, in one
    row. Scored networks: the student, and the teachers' ``ensemble``.
    """

    name = "mtkd"
    family = "multi_teacher"
    loss_weights = ("kd_weight",)
    paper = (
        "You, Xu, Xu, Tao (2017). Learning from Multiple Teacher Networks; Zhang, Chen, Wang "
        "(2022). Confidence-Aware Multi-Teacher Knowledge Distillation"
    )
    hparams_cls = MTKDHParams

    def __init__(
        self, student: nn.Module, teacher: nn.Module | None = None, hparams: HParams | None = None
    ) -> None:
        names = tuple(getattr(hparams, "teachers", ()) or ())
        super().__init__(student, _ensemble(teacher, names), hparams)
        hp = self.hparams
        if hp.combine in ("ebkd", "camkd") and len(self.teacher) < 2:
            raise ConfigError(
                f"mtkd: combine={hp.combine!r} weighs teachers against each other and needs at "
                f"least 2, got {len(self.teacher)}: pass teacher=TeacherEnsemble([...]) or "
                "name more zoo teachers with teachers=(...), or use combine='mean_targets'."
            )

    def teacher_feature_paths(self) -> Sequence[str]:
        return (STACK_PATH,)

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        hp = self.hparams
        logits = self.student(x)
        stack = self.teacher_outputs(x, index).features[STACK_PATH]
        losses = {"ce": hp.ce_weight * F.cross_entropy(logits, y)}
        if hp.kd_weight > 0:
            term = multi_teacher_kd(logits, stack, hp.T, hp.combine, y)
            losses["kd"] = hp.kd_weight * term
        return logits, losses

    def eval_networks(self) -> dict[str, Callable[[Any], Any]]:
        return {"student": self.predict, "ensemble": self.teacher}
