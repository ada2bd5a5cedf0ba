"""MARS: motion-augmented RGB stream, a student whose clip features imitate a stronger video
teacher's (Crasto, Weinzaepfel, Alahari, Schmid, 2019)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from ..cache import TeacherOutputs
from ..config import ConfigError, non_negative
from ..connectors import KINDS, build_connector
from ..errors import ShapeMismatchError
from ..losses.feature import hint_loss
from ._applications import (
    cache_paths,
    check_paths,
    forward_with_features,
    input_shape_of,
    named_path,
    output_map,
    probe,
    time_steps,
)
from .base import Distiller
from .hparams import LossWeights
from .registry import register_method


@dataclass(frozen=True)
class MARSHParams(LossWeights):
    """Defaults: MARS's ``--MARS_alpha 50`` on an ``nn.MSELoss`` mean between the pooled
    features, with the cross entropy weight 1 and no logit KD (craston/MARS ``MARS_train.py``,
    ``opts.py`` at ``8937134``, verified in the design note). ``kd_weight`` > 0 adds Hinton's
    KD at ``T`` (the design's ``kd_mars`` label).

    ``student_path`` / ``teacher_path``: the pooled clip embeddings (the design's ``pool``),
    compared through a ``connector`` (``"auto"``: a linear map when the widths differ, ours:
    MARS's two streams have equal widths). ``temporal``: add the per-time-step term (ours:
    "feature distillation across time") with weight ``temporal_alpha``, between the student's
    frame features at ``student_time_path`` (empty: the student's ``named_paths["frames"]``,
    ``temporal:input`` in ``kdtutor.models.dense``'s ``tsn_s``) and the teacher's temporal map
    at ``teacher_time_path`` (the design's ``t2``), each as ``(B, T, D)``
    (:func:`~kdtutor.methods._applications.time_steps`), through a per-step linear connector.
    """

    alpha: float = 50.0
    student_path: str = "pool"
    teacher_path: str = "pool"
    connector: str = "auto"
    temporal: bool = False
    temporal_alpha: float = 50.0
    student_time_path: str = ""
    teacher_time_path: str = "t2"

    def validate(self) -> None:
        super().validate()
        non_negative("alpha", self.alpha, "mars")
        non_negative("temporal_alpha", self.temporal_alpha, "mars")
        if self.connector not in KINDS:
            raise ConfigError(
                f"mars.connector must be one of {', '.join(KINDS)}; got {self.connector!r}."
            )

    @classmethod
    def owner(cls) -> str:
        return "mars"


@register_method
class MARS(Distiller):
    r"""MARS: the student's pooled clip feature imitates the teacher's,

    .. math::
        \mathcal{L} = \lambda_{CE}\,\mathrm{CE}(z_s, y)
            + \alpha\,\frac{1}{B D}\big\|P f_s - f_t\big\|_2^2
            \;\big[+ \alpha_T \frac{1}{B T D}\sum_{\tau}\big\|P_T g_{s,\tau} - g_{t,\tau}\big\|_2^2\big]
            \;\big[+ \lambda_{KD}\,\mathcal{L}_{KD}\big],

    the MSE of :func:`~kdtutor.losses.feature.hint_loss` between the features before the
    classifiers, through a linear connector :math:`P` (MARS's streams share a width; ours do
    not), the teacher frozen (the paper's teacher is a flow stream, ours a 3D network on more
    frames). Both networks take the same clip ``(B, T, 3, H, W)``, so the teacher cache's rows
    line up. Logged as ``ce``, ``mars`` (and ``mars_time``, ``kd``). The teacher's logits
    are cached with the features ``pool`` ``(B, D)`` and ``time`` ``(B, T, C)``."""

    name = "mars"
    family = "application"
    task = "classification"
    paper = (
        "Crasto, Weinzaepfel, Alahari, Schmid (2019). MARS: Motion-Augmented RGB Stream for "
        "Action Recognition"
    )
    hparams_cls = MARSHParams
    loss_weights = ("alpha", "temporal_alpha")

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
        hp: MARSHParams = self.hparams  # type: ignore[assignment]
        self.student_time_path = hp.student_time_path or named_path(student, "frames") or ""
        self.teacher_time_path = hp.teacher_time_path or named_path(teacher, "t2") or ""
        if hp.temporal and not (self.student_time_path and self.teacher_time_path):
            raise ConfigError(
                "mars.temporal=True compares the student's frame features with the teacher's "
                "temporal map, but no path was given and the networks name none "
                "(named_paths 'frames' and 't2'): pass student_time_path=... (e.g. the input "
                "of the student's temporal convolution, 'temporal:input') and "
                "teacher_time_path=... (default 't2')."
            )
        self.student_paths = [hp.student_path] + ([self.student_time_path] if hp.temporal else [])
        self.teacher_paths = [hp.teacher_path] + ([self.teacher_time_path] if hp.temporal else [])
        fields = ["student_path", "student_time_path"]
        for path, field in zip(self.student_paths, fields, strict=False):
            check_paths(student, [path], role="student", method=self.name, field=field)
        fields = ["teacher_path", "teacher_time_path"]
        for path, field in zip(self.teacher_paths, fields, strict=False):
            check_paths(teacher, [path], role="teacher", method=self.name, field=field)
        self.input_shape = input_shape_of(student, input_shape, (8, 3, 32, 32))
        _, s = probe(
            student, self.student_paths, self.input_shape, role="student", method=self.name
        )
        _, t = probe(
            teacher, self.teacher_paths, self.input_shape, role="teacher", method=self.name
        )
        s_pool, t_pool = s[hp.student_path].flatten(1), t[hp.teacher_path].flatten(1)
        self.connector = build_connector(
            (s_pool.shape[1],), (t_pool.shape[1],), hp.connector,  # type: ignore[arg-type]
            where=f"{hp.student_path!r} -> {hp.teacher_path!r}",
        )  # fmt: skip
        self.time_connector: nn.Module | None = None
        if hp.temporal:
            s_time = time_steps(s[self.student_time_path], 2)
            t_time = time_steps(t[self.teacher_time_path], 2)
            if s_time.shape[1] != t_time.shape[1]:
                raise ShapeMismatchError(
                    f"mars.temporal compares time step by time step, but the student's "
                    f"{self.student_time_path!r} has {s_time.shape[1]} steps and the teacher's "
                    f"{self.teacher_time_path!r} {t_time.shape[1]}: choose features with the same "
                    "number of time steps."
                )
            self.time_connector = build_connector(
                (s_time.shape[2],), (t_time.shape[2],), hp.connector,  # type: ignore[arg-type]
                where=f"{self.student_time_path!r} -> {self.teacher_time_path!r}",
            )  # fmt: skip

    def teacher_feature_paths(self) -> Sequence[str]:
        return cache_paths(
            self.name, pool=self.teacher_paths[0], time=",".join(self.teacher_paths[1:])
        )

    def compute_teacher_outputs(self, x: Tensor) -> TeacherOutputs:
        assert self.teacher is not None
        self.teacher_forward_calls += 1
        hp: MARSHParams = self.hparams  # type: ignore[assignment]
        out, features = forward_with_features(self.teacher, x, self.teacher_paths, detach=True)
        cached = {"pool": features[hp.teacher_path].flatten(1)}
        if hp.temporal:
            cached["time"] = time_steps(features[self.teacher_time_path], x.shape[0])
        return TeacherOutputs(output_map(out).detach(), cached)

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        hp: MARSHParams = self.hparams  # type: ignore[assignment]
        out, features = forward_with_features(self.student, x, self.student_paths)
        logits = output_map(out)
        teacher = self.teacher_outputs(x, index)
        terms = {
            "mars": hp.alpha
            * hint_loss(
                self.connector(features[hp.student_path].flatten(1)), teacher.features["pool"]
            )
        }
        if self.time_connector is not None:
            student_time = time_steps(features[self.student_time_path], x.shape[0])
            terms["mars_time"] = hp.temporal_alpha * hint_loss(
                self.time_connector(student_time), teacher.features["time"]
            )
        return logits, hp.weighted_losses(logits, y, teacher.logits, terms)
