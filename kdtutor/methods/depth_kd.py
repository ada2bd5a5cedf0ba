"""Depth distillation: the teacher's log-depth map, and optionally a hint on its features.

The student regresses the true depth (the log-depth L1 of ``depth_scratch``) and copies the
teacher's log-depth map before upsampling (the response term); with ``hint_weight`` > 0 it
also matches the teacher's bottleneck features through a trainable connector (FitNets' hint,
:func:`~kdtutor.losses.feature.hint_loss`). The two terms are those issue 18 names ("the
teacher's depth map and features"); the depth-KD papers the design note cites (Pilzer et al.
2019, Wang et al. 2021) were not read, so no published weight or gain is claimed. Chapter 8's
labels: ``depth_kd`` (``hint_weight=0``) and ``depth_kd_hint``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from ..config import ConfigError, non_negative
from ..connectors import KINDS, build_connector, match_spatial
from ..losses.dense import log_depth_kd_loss, log_depth_l1
from ..losses.feature import hint_loss
from ._dense import DenseDistiller, output_map
from .base import HParams
from .feature_base import guess_input_shape, probe_shapes
from .registry import register_method

__all__ = ["DepthKD", "DepthKDHParams"]

_EPS = 1e-6  # the smallest depth whose log is taken (as log_depth_l1)


@dataclass(frozen=True)
class DepthKDHParams(HParams):
    """Defaults: ``response_weight`` (:math:`\\lambda_r`) 1 and ``hint_weight``
    (:math:`\\lambda_h`) 0, the design note's ``depth_kd`` (3.3: no published value was
    verified; its grid multiplies the weights by 0.3 and 3). ``logits_path``: the module whose
    output is the log-depth map before upsampling (the design's 1x1 ``"head"`` at 32 x 32;
    ``""``: the log of the network's output depth). ``feature_path``: the hinted feature (the
    design's bottleneck ``"enc.s3"``), read only when ``hint_weight`` > 0. ``connector``: the
    student-to-teacher map of the hint (:func:`~kdtutor.connectors.build_connector`; default
    ``"conv"``, FitNets' 1x1 conv + BN regressor)."""

    response_weight: float = 1.0
    hint_weight: float = 0.0
    logits_path: str = "head"
    feature_path: str = "enc.s3"
    connector: str = "conv"

    def validate(self) -> None:
        owner = self.owner()
        non_negative("response_weight", self.response_weight, owner)
        non_negative("hint_weight", self.hint_weight, owner)
        if self.connector not in KINDS:
            raise ConfigError(
                f"{owner}.connector must be one of {', '.join(KINDS)}; got {self.connector!r}."
            )
        if self.hint_weight > 0 and not self.feature_path:
            raise ConfigError(
                f"{owner}: hint_weight > 0 needs a feature_path (the teacher feature to hint, "
                "e.g. 'enc.s3'); set hint_weight=0 for the response term alone."
            )

    @classmethod
    def owner(cls) -> str:
        return "depth_kd"


@register_method
class DepthKD(DenseDistiller):
    r"""Depth KD: :math:`\mathcal{L} = \frac{1}{|V|}\sum_{i\in V}|\log\hat d^s_i - \log d_i| +
    \lambda_r\,\mathrm{mean}|\log\hat d^s - \log\hat d^t| + \lambda_h\,
    \mathrm{MSE}(c(F^s), F^t)`, the response term on the log-depth maps before upsampling
    (:func:`~kdtutor.losses.dense.log_depth_kd_loss`), the hint through a connector
    :math:`c` built from the probed channel counts (its output is resized to the teacher's
    map when the two differ in size). A term whose weight is 0 is neither computed nor
    logged.

    Args:
        student, teacher, hparams: as every :class:`~kdtutor.methods.Distiller`.
        input_shape: one sample's shape, to probe the hinted features' channels (default:
            the student's ``input_shape`` or ``(C, 32, 32)``).
    """

    name = "depth_kd"
    task = "depth"
    paper = (
        "depth map and feature distillation (issue 18's terms; cf. Pilzer et al. 2019, "
        "Wang et al. 2021, not verified)"
    )
    hparams_cls = DepthKDHParams
    loss_weights: ClassVar[tuple[str, ...]] = ("response_weight", "hint_weight")

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        hparams: DepthKDHParams | None = None,
        *,
        input_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__(student, teacher, hparams)
        hp: DepthKDHParams = self.hparams  # type: ignore[assignment]
        self.connector: nn.Module | None = None
        if hp.hint_weight > 0:
            assert teacher is not None
            shape = tuple(input_shape) if input_shape else guess_input_shape(student)
            path = hp.feature_path
            (s,) = probe_shapes(student, [self.student_paths[path]], shape, "student")
            (t,) = probe_shapes(teacher, [self.teacher_paths[path]], shape, "teacher")
            if len(s) != 3 or len(t) != 3:
                raise ConfigError(
                    f"depth_kd: the hint reads feature maps (C, H, W), but feature_path="
                    f"{hp.feature_path!r} gives {s} (student) and {t} (teacher). Name a "
                    "convolutional layer of both networks."
                )
            # channels only: the spatial sizes are matched per batch in forward
            self.connector = build_connector(
                (s[0], *s[1:]), (t[0], *s[1:]), hp.connector,  # type: ignore[arg-type]
                where=f"{hp.feature_path!r}",
            )  # fmt: skip

    def feature_path_hparams(self) -> dict[str, str]:
        hp: DepthKDHParams = self.hparams  # type: ignore[assignment]
        return {"feature_path": hp.feature_path} if hp.hint_weight > 0 else {}

    def _log_depth(self, compared: Tensor) -> Tensor:
        """The compared map as a log-depth: itself when read at ``logits_path``, the log of
        the output depth otherwise."""
        return compared if self.logits_path else compared.clamp_min(_EPS).log()

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Any, dict[str, Tensor]]:
        hp: DepthKDHParams = self.hparams  # type: ignore[assignment]
        student = self.student_maps(x)
        losses = {"depth": log_depth_l1(output_map(student.outputs), y)}
        if hp.response_weight == 0 and hp.hint_weight == 0:
            return student.outputs, losses
        teacher = self.teacher_outputs(x, index)
        if hp.response_weight > 0:
            response = log_depth_kd_loss(
                self._log_depth(student.logits), self._log_depth(teacher.logits)
            )
            losses["response"] = hp.response_weight * response
        if hp.hint_weight > 0:
            assert self.connector is not None
            target = teacher.features[hp.feature_path]
            hinted = match_spatial(
                self.connector(student.features[hp.feature_path]), target.shape[-2:]
            )
            losses["hint"] = hp.hint_weight * hint_loss(hinted, target)
        return student.outputs, losses
