r"""Cross-modal distillation (Gupta, Hoffman, Malik, 2016): supervision transfer between modalities.

A teacher trained on a labelled modality (RGB) supervises a student that sees *another*
modality of the same scene (depth): the student learns to reproduce the teacher's mid-level
representation of the paired RGB image, with no labels, and is then fine-tuned on the few
labelled images of its own modality.

Data flow (no change to the engine): the training split handed to ``fit`` is the *teacher's*
modality (RGB ``shapes``), so ``fit``'s checks and the teacher-output cache work as for any
method; the student's view of every row is read from a paired dataset bound by
:meth:`CrossModal.bind_data`, by the batch's dataset rows, as CS-KD reads its partners. The
test split handed to ``fit`` is the student's modality (e.g.
``kdtutor.data.modalities.geometry_dataset("test")``): that is what the student is scored on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..config import ConfigError, non_negative
from ..data import ArrayDataset
from ..data.modalities import MODALITIES, paired_view
from ..errors import KDTutorError, ShapeMismatchError
from ..losses.feature import hint_loss
from .feature_base import FeatureDistiller, FeatureHParams
from .registry import register_method

__all__ = ["TRANSFERS", "CrossModal", "CrossModalHParams"]

#: What the student is taught to reproduce: the deepest feature map, or the softened logits.
TRANSFERS: tuple[str, ...] = ("features", "logits")


@dataclass(frozen=True)
class CrossModalHParams(FeatureHParams):
    """``transfer="features"`` (Gupta et al.'s supervision transfer, the default): ``hint_weight``
    times the mean squared error between the student's deepest feature map on the paired view,
    through a connector (the paper's learned transformation), and the teacher's on the RGB
    image. ``transfer="logits"``: Hinton's KD term on the teacher's RGB logits instead,
    weighted by ``kd_weight`` (so set ``kd_weight`` > 0). Labels are not used by default
    (``ce_weight=0``): the transfer stage is unsupervised, as in the paper. ``T=4`` is the
    book's KD temperature. ``hint_weight=1`` with the *mean* over elements is our choice
    (the paper's weight and layer are not verified here). ``modality`` names the student's
    view (:data:`~kdtutor.data.modalities.MODALITIES`)."""

    ce_weight: float = 0.0
    kd_weight: float = 0.0
    T: float = 4.0
    hint_weight: float = 1.0
    transfer: str = "features"
    modality: str = "geometry"

    def validate(self) -> None:
        super().validate()
        non_negative("hint_weight", self.hint_weight, "crossmodal")
        if self.transfer not in TRANSFERS:
            raise ConfigError(
                f"crossmodal.transfer must be one of {', '.join(TRANSFERS)}; got {self.transfer!r}."
            )
        if self.modality not in MODALITIES:
            raise ConfigError(
                f"crossmodal.modality must be one of {', '.join(MODALITIES)}; got "
                f"{self.modality!r}."
            )
        taught = self.hint_weight if self.transfer == "features" else self.kd_weight
        if taught <= 0 and self.ce_weight <= 0:
            weight = "hint_weight" if self.transfer == "features" else "kd_weight"
            raise ConfigError(
                f"crossmodal with transfer={self.transfer!r} needs {weight} > 0 (or "
                "ce_weight > 0): otherwise the student learns nothing."
            )


@register_method
class CrossModal(FeatureDistiller):
    r"""Cross-modal distillation: the student sees view :math:`\tilde x` (e.g. geometry) of
    the scene whose RGB image :math:`x` the teacher sees.

    .. math::
        \mathcal{L} = \lambda_{hint}\,\mathrm{MSE}\big(c(\phi_s(\tilde x)), \phi_t(x)\big)
            \;[\text{features}] \quad\text{or}\quad
            \lambda_{KD}\,T^2\,\mathrm{KL}\big(p_t^T(x)\,\|\,p_s^T(\tilde x)\big)\;[\text{logits}]
            \;+\; \lambda_{CE}\,\mathrm{CE}(z_s(\tilde x), y),

    with :math:`\phi` the deepest stage (``path_policy="last"``) and :math:`c` the connector.
    Logged as ``hint`` (or ``kd``) and ``ce``. Then fine-tune the student on a few labelled
    images of its own modality with a plain ``fit`` (the paper's second step).

    The paired view is bound row for row with the training set: :meth:`bind_data` takes it
    from ``paired=`` or builds it with :func:`~kdtutor.data.modalities.paired_view` (RGB data
    must then be a prefix of a shapes split of seed 0 and the default difficulty). The
    student's view is read un-augmented: train with ``augment=None`` (fit's default), since a
    random crop of the RGB rows would not be applied to the paired rows.

    Paper: Gupta, Hoffman, Malik (2016), *Cross Modal Distillation for Supervision Transfer*,
    CVPR.
    """

    name = "crossmodal"
    family = "cross_modal"
    paper = "Gupta, Hoffman, Malik (2016). Cross Modal Distillation for Supervision Transfer"
    hparams_cls = CrossModalHParams
    path_policy = "last"
    loss_weights = ("hint_weight", "kd_weight")

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        hparams: Any = None,
        *,
        input_shape: Any = None,
    ) -> None:
        super().__init__(student, teacher, hparams, input_shape=input_shape)
        self._paired: ArrayDataset | None = None
        self._given: ArrayDataset | None = None

    # -- the paired view -------------------------------------------------------------------
    def pair_with(self, paired: ArrayDataset | None) -> None:
        """Use ``paired`` as the student's view of the next training set bound (``fit``
        binds it); ``None`` goes back to :func:`~kdtutor.data.modalities.paired_view`."""
        if paired is not None:
            self._check_paired(paired)
        self._given = paired

    @staticmethod
    def _check_paired(paired: Any) -> None:
        if not isinstance(paired, ArrayDataset):
            raise KDTutorError(
                f"crossmodal reads the student's view by row, so paired= must be an "
                f"ArrayDataset, got {type(paired).__name__}."
            )

    def bind_data(self, train_data: Any, *, paired: ArrayDataset | None = None) -> None:
        """Bind the student's view of ``train_data`` (the teacher's modality), row for row.

        Args:
            train_data: the RGB training set ``fit`` trains on (an :class:`ArrayDataset`).
            paired: the student's view: row ``i`` shows the scene of ``train_data``'s row
                ``i`` (same length and labels). Default: the one given to :meth:`pair_with`,
                else ``paired_view(train_data, hparams.modality)``.
        """
        if not isinstance(train_data, ArrayDataset):
            raise KDTutorError(
                f"crossmodal reads the student's view by each batch's dataset rows, so it needs "
                f"an ArrayDataset, got {type(train_data).__name__}. Load the data with "
                "kdtutor.data.load_dataset(...)."
            )
        super().bind_data(train_data)
        view = self._given
        if paired is not None:
            self._check_paired(paired)
            view = paired
        if view is None:
            view = paired_view(train_data, self.hparams.modality)  # type: ignore[attr-defined]
        if len(view) != len(train_data) or not torch.equal(view.targets, train_data.targets):
            raise ShapeMismatchError(
                f"the paired view ({len(view)} rows) must match the training set "
                f"({len(train_data)} rows) row for row, labels included: build it from the "
                "same indices (e.g. geometry_dataset(split, len(train), seed))."
            )
        self.check_input(view.images.shape[1:])
        self._paired = view
        if paired is not None:
            self._given = paired

    @property
    def paired(self) -> ArrayDataset | None:
        """The student's view bound by :meth:`bind_data` (``None`` before)."""
        return self._paired

    def student_inputs(self, index: Tensor | None, like: Tensor) -> Tensor:
        """The student's view of the batch whose dataset indices (or cache rows ``view * N +
        i``) are ``index``, on ``like``'s device and in its memory format."""
        if self._paired is None:
            raise KDTutorError(
                "crossmodal has no paired view: call distiller.bind_data(train) (fit does it), "
                "or bind_data(train, paired=view)."
            )
        if index is None:
            raise KDTutorError(
                "crossmodal needs each batch's dataset indices to read the student's view, and "
                "this batch has none (a DataLoader's batches carry no index): train with fit() "
                "on an ArrayDataset, or call distiller(x, y, index) with the indices of x."
            )
        rows = index.detach().to("cpu", torch.int64) % len(self._paired)
        x_view, _ = self._paired.batch(rows)
        x_view = x_view.to(like.device, non_blocking=True)
        if x_view.ndim == 4 and like.is_contiguous(memory_format=torch.channels_last):
            x_view = x_view.contiguous(memory_format=torch.channels_last)
        return x_view

    # -- the loss ---------------------------------------------------------------------------
    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        hp: CrossModalHParams = self.hparams  # type: ignore[assignment]
        logits, student_features = self.student_features(self.student_inputs(index, x))
        teacher = self.teacher_outputs(x, index)  # the RGB rows (cached by row)
        terms: dict[str, Tensor] = {}
        if hp.transfer == "features":
            connected = self.connect(student_features)
            hints = [
                hint_loss(s, teacher.features[p])
                for s, p in zip(connected, self.teacher_paths, strict=True)
            ]
            terms["hint"] = hp.hint_weight * sum(hints) / len(hints)
        return logits, hp.weighted_losses(logits, y, teacher.logits, terms)
