"""FSP: a gift from knowledge distillation (Yim, Joo, Bae & Kim, 2017)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from ..config import non_negative
from ..errors import KDTutorError
from ..losses.feature import fsp_loss
from .feature_base import FeatureDistiller, FeatureHParams
from .registry import register_method

__all__ = ["FSP", "FSPHParams"]


@dataclass(frozen=True)
class FSPHParams(FeatureHParams):
    """Defaults: CE + 50 x the FSP loss in one stage (RepDistiller's command line uses
    ``-b 50``; the FSP loss sums the per-pair means over consecutive stage pairs, as
    RepDistiller does, whose feature list also starts with the stem's output).

    The paper and RepDistiller train in two stages: first the FSP loss alone (RepDistiller:
    30 epochs, weight 1, on all but the classifier), then the task loss alone, the FSP term
    being dropped (RepDistiller sets it to 0 after its init stage, so its ``-b 50`` has no
    effect). Set ``init_epochs`` for that: during the first ``init_epochs`` epochs only
    ``beta`` x FSP is returned, afterwards only ``ce_weight`` x CE (for RepDistiller's
    schedule: ``init_epochs=30, beta=1``). The default is a single stage so that short runs
    still train the classifier."""

    beta: float = 50.0

    def validate(self) -> None:
        super().validate()
        non_negative("beta", self.beta, "fsp")


@register_method
class FSP(FeatureDistiller):
    r"""Flow of solution procedure. For consecutive paired stages :math:`i, i+1` of each network
    the FSP matrix :math:`G^i = F_i F_{i+1}^\top / (HW)` (channels by channels, see
    :func:`~kdtutor.losses.feature.fsp_matrix`) describes how the network transforms one stage
    into the next; the student matches the teacher's:

    .. math::
        \mathcal{L} = \mathrm{CE} + \beta \sum_i \operatorname{mean}\big((G^i_s - G^i_t)^2\big)

    The student's stage features are first brought to the teacher's shapes by connectors
    (1x1 conv + BN when channels differ), so student and teacher matrices have equal shapes;
    the paper (and RepDistiller) instead require equal channel counts. At least two stage
    pairs are needed. With ``init_epochs`` the method runs in the paper's two stages (see
    :class:`FSPHParams`)."""

    name = "fsp"
    family = "feature"
    epoch_hparams: ClassVar[Mapping[str, int]] = {"init_epochs": 30}
    paper = (
        "Yim, Joo, Bae & Kim (2017). A Gift from Knowledge Distillation: Fast Optimization, "
        "Network Minimization and Transfer Learning"
    )
    hparams_cls = FSPHParams
    path_policy = "stages"
    uses_connectors = True

    def build_modules(self) -> None:
        if len(self.student_paths) < 2:
            raise KDTutorError(
                f"fsp needs at least 2 paired stages (its matrices relate consecutive layers), "
                f"got {len(self.student_paths)}: {self.student_paths} -> {self.teacher_paths}. "
                "Pass two or more student_paths and teacher_paths, e.g. "
                "student_paths=('stages.0', 'stages.1'), teacher_paths=('stages.1', 'stages.2'), "
                "or use models with at least two stages."
            )

    def feature_losses(self, logits, y, student_features, teacher_features, teacher_logits, index):
        hp = self.hparams
        if self.in_init_stage:
            return {"fsp": hp.beta * fsp_loss(self.connect(student_features), teacher_features)}
        terms = {}
        if hp.init_epochs == 0:
            terms["fsp"] = hp.beta * fsp_loss(self.connect(student_features), teacher_features)
        return hp.weighted_losses(logits, y, teacher_logits, terms)
