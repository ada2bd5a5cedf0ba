"""FAKD: feature-affinity based knowledge distillation for super-resolution (He, Wu, Lu, Luo,
2020)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from ..cache import TeacherOutputs
from ..config import ConfigError, non_negative, positive
from ..errors import ShapeMismatchError
from ..losses.applications import fakd_loss
from ..models.common import FeatureAttributeError
from ._applications import (
    cache_paths,
    check_paths,
    forward_with_features,
    input_shape_of,
    output_map,
    paths_by_depth,
    probe,
)
from .registry import register_method
from .sr_kd import SRKD, SRKDHParams


@dataclass(frozen=True)
class FAKDHParams(SRKDHParams):
    """Defaults: the authors' x4 scripts (``code/scripts/train_rcan_SA_x4.sh``, ``option.py``,
    ``loss.py``, verified): ``alpha`` 0.5, the affinity term weighted ``beta`` = 10
    (``--feature_distilation_type 10*SA``) on ``layers`` = 3 pairs (``--features [1,2,3]``).

    ``student_paths`` / ``teacher_paths``: the paired blocks, shallow to deep (empty: each
    network's ``stage_names`` at relative depths 1/3, 2/3, 1: blocks 2, 4, 6 of a 6-block
    teacher and 1, 3, 4 of a 4-block student, the design's choice). ``eps``: added to each
    position's norm (the authors' 1e-7).
    """

    beta: float = 10.0
    layers: int = 3
    student_paths: tuple[str, ...] = ()
    teacher_paths: tuple[str, ...] = ()
    eps: float = 1e-7

    def validate(self) -> None:
        super().validate()
        non_negative("beta", self.beta, "fakd")
        positive("eps", self.eps, "fakd")
        if self.layers < 1:
            raise ConfigError(f"fakd.layers must be >= 1, got {self.layers}.")
        if len(self.student_paths) != len(self.teacher_paths):
            raise ConfigError(
                f"fakd.student_paths ({len(self.student_paths)}) and teacher_paths "
                f"({len(self.teacher_paths)}) must pair up one to one: give both or neither."
            )


def _default_paths(model: nn.Module, role: str, layers: int) -> tuple[str, ...]:
    names = getattr(model, "stage_names", None)
    if not names:
        raise FeatureAttributeError(
            f"fakd: the {role} ({type(model).__name__}) lists no stage_names (its residual "
            f"blocks) to pair: pass student_paths=(...) and teacher_paths=(...), {layers} each "
            "(kdtutor.features.list_paths(model) lists the modules)."
        )
    return paths_by_depth(tuple(names), layers)


@register_method
class FAKD(SRKD):
    r"""FAKD: SR output distillation plus the spatial affinities of paired blocks,

    .. math::
        \mathcal{L} = (1 - \alpha)\,\|S(x) - y_{HR}\|_1 + \alpha\,\|S(x) - T(x)\|_1
            + \beta \sum_{l} \big\|A(F^s_l) - A(F^t_l)\big\|_1,

    :math:`A(F) = \hat F^\top \hat F` the ``HW x HW`` cosine similarities of the positions'
    channel vectors (:func:`~kdtutor.losses.applications.spatial_affinity`,
    :func:`~kdtutor.losses.applications.fakd_loss`), so the widths may differ and no connector
    is needed. Logged as ``l1``, ``ts`` and ``fa``. The teacher's SR image is cached as
    ``logits`` and its block features by path (they are large: ``cache_location="disk"``)."""

    name = "fakd"
    paper = (
        "He, Wu, Lu, Luo (2020). FAKD: Feature-Affinity Based Knowledge Distillation for "
        "Efficient Image Super-Resolution"
    )
    hparams_cls = FAKDHParams
    loss_weights = ("beta",)

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        hparams: Any = None,
        *,
        input_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__(student, teacher, hparams)
        assert teacher is not None
        hp: FAKDHParams = self.hparams  # type: ignore[assignment]
        if hp.student_paths:
            self.student_paths, self.teacher_paths = hp.student_paths, hp.teacher_paths
        else:
            self.student_paths = _default_paths(student, "student", hp.layers)
            self.teacher_paths = _default_paths(teacher, "teacher", hp.layers)
        check_paths(
            student, self.student_paths, role="student", method=self.name, field="student_paths"
        )
        check_paths(
            teacher, self.teacher_paths, role="teacher", method=self.name, field="teacher_paths"
        )
        shape = input_shape_of(student, input_shape, (3, 16, 16))
        _, s_feats = probe(student, self.student_paths, shape, role="student", method=self.name)
        _, t_feats = probe(teacher, self.teacher_paths, shape, role="teacher", method=self.name)
        for sp, tp in zip(self.student_paths, self.teacher_paths, strict=True):
            s, t = s_feats[sp], t_feats[tp]
            if s.dim() != 4 or t.dim() != 4 or s.shape[2:] != t.shape[2:]:
                raise ShapeMismatchError(
                    f"fakd pairs maps of one spatial size, but the student's {sp!r} gives "
                    f"{tuple(s.shape[1:])} and the teacher's {tp!r} {tuple(t.shape[1:])}: choose "
                    "blocks that run at the same resolution (student_paths, teacher_paths)."
                )

    def teacher_feature_paths(self) -> Sequence[str]:
        return cache_paths(self.name, logits="sr", features=",".join(self.teacher_paths))

    def compute_teacher_outputs(self, x: Tensor) -> TeacherOutputs:
        assert self.teacher is not None
        self.teacher_forward_calls += 1
        out, features = forward_with_features(self.teacher, x, self.teacher_paths, detach=True)
        return TeacherOutputs(output_map(out).detach(), features)

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        hp: FAKDHParams = self.hparams  # type: ignore[assignment]
        out, features = forward_with_features(self.student, x, self.student_paths)
        sr = output_map(out)
        teacher = self.teacher_outputs(x, index)
        losses = self.output_losses(sr, y, teacher.logits)
        losses["fa"] = hp.beta * fakd_loss(
            [features[p] for p in self.student_paths],
            [teacher.features[p] for p in self.teacher_paths],
            hp.eps,
        )
        return sr, losses
