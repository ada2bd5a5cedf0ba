"""Knowledge distillation for face recognition: the teacher's identity distribution and its
embedding's direction (Hinton's KD on the identity heads; embedding-level KD, FaceX-Zoo's
and ShrinkTeaNet's angular idea)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..cache import TeacherOutputs
from ..config import ConfigError, non_negative
from ..connectors import KINDS, build_connector
from ..errors import KDTutorError, ShapeMismatchError
from ..losses.applications import embedding_cosine_loss
from ._applications import (
    FaceDistiller,
    FaceHParams,
    cache_paths,
    embedding_width,
    forward_with_features,
    output_map,
    probe,
)
from .hparams import LossWeights
from .registry import register_method


@dataclass(frozen=True)
class FaceKDHParams(LossWeights, FaceHParams):
    """Defaults (ours: no face KD recipe was read at source): the normalised softmax with
    ``ce_weight`` 1; Hinton's KD on the two cosine heads' logits with ``kd_weight`` 1 at
    ``T`` = 4 (the book's temperature); the embedding term ``emb_weight`` 1 through a
    ``connector`` = ``"linear"`` map ``P`` (64 -> 128 for the design's pair). The design's
    labels: ``kd`` = ``emb_weight=0``, ``emb`` = ``kd_weight=0``.

    ``teacher_path``: where the teacher's embedding is read (empty: its output).
    ``teacher_head_path``: the teacher's trained identity head (a module of the teacher that
    its ``forward`` does not call; the zoo's face teacher ships it as ``head``), applied to
    the teacher's output; needed only when ``kd_weight`` > 0.
    """

    kd_weight: float = 1.0
    emb_weight: float = 1.0
    teacher_path: str = ""
    teacher_head_path: str = "head"
    connector: str = "linear"

    def validate(self) -> None:
        super().validate()
        non_negative("emb_weight", self.emb_weight, "face_kd")
        if self.connector not in KINDS:
            raise ConfigError(
                f"face_kd.connector must be one of {', '.join(KINDS)}; got {self.connector!r}."
            )

    @classmethod
    def owner(cls) -> str:
        return "face_kd"


@register_method
class FaceKD(FaceDistiller):
    r"""Face KD,

    .. math::
        \mathcal{L} = \lambda_{CE}\,\mathrm{CE}(z_s, y)
            + \lambda_{KD}\,T^2\,\mathrm{KL}\big(p^T_t \,\|\, p^T_s\big)
            + \lambda_{emb}\,\frac1B\sum_i\big(1 - \cos(P e_{s,i}, e_{t,i})\big),

    with :math:`z_s` the distiller's cosine head on the student's embedding, :math:`z_t` the
    teacher's trained head on the teacher's output (:func:`~kdtutor.losses.kd_loss`), and
    :func:`~kdtutor.losses.applications.embedding_cosine_loss` through the linear connector
    :math:`P`. Logged as ``ce``, ``emb`` and ``kd``. The teacher's outputs are cached as
    ``logits`` = its head's logits (its embedding when ``kd_weight`` is 0) and the feature
    ``embedding``."""

    name = "face_kd"
    paper = (
        "Hinton, Vinyals, Dean (2015). Distilling the Knowledge in a Neural Network, on identity "
        "heads; embedding-level KD (FaceX-Zoo; Duong et al. 2019, ShrinkTeaNet)"
    )
    hparams_cls = FaceKDHParams
    loss_weights = ("kd_weight", "emb_weight")
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
        hp: FaceKDHParams = self.hparams  # type: ignore[assignment]
        self.teacher_dim = embedding_width(
            teacher, hp.teacher_path, self.input_shape, role="teacher", method=self.name,
            field="teacher_path",
        )  # fmt: skip
        self.teacher_head_path: str | None = None
        """The teacher's head, a module of the teacher (so never trained or checkpointed here)."""
        if hp.kd_weight > 0:
            self._check_teacher_head(teacher, hp)
            self.teacher_head_path = hp.teacher_head_path
        self.connector: nn.Module | None = None
        if hp.emb_weight > 0:
            self.connector = build_connector(
                (self.student_dim,), (self.teacher_dim,), hp.connector,  # type: ignore[arg-type]
                where="student embedding -> teacher embedding",
            )  # fmt: skip

    def uses_head(self) -> bool:
        hp: FaceKDHParams = self.hparams  # type: ignore[assignment]
        return hp.ce_weight > 0 or hp.kd_weight > 0

    def _check_teacher_head(self, teacher: nn.Module, hp: FaceKDHParams) -> None:
        modules = dict(teacher.named_modules())
        head = modules.get(hp.teacher_head_path) if hp.teacher_head_path else None
        if head is None:
            raise KDTutorError(
                f"face_kd: the teacher ({type(teacher).__name__}) has no identity head at "
                f"teacher_head_path={hp.teacher_head_path!r}, which the KD term (kd_weight="
                f"{hp.kd_weight}) needs. Attach the teacher's trained head as a submodule (the "
                "zoo's face teacher ships it as `head`) and name it, or set kd_weight=0 to "
                "distil the embedding only."
            )
        out, _ = probe(teacher, [], self.input_shape, role="teacher", method=self.name)
        try:
            with torch.no_grad():
                logits = head(output_map(out))
        except RuntimeError as exc:
            raise ShapeMismatchError(
                f"face_kd: the teacher's head {hp.teacher_head_path!r} cannot take the "
                f"teacher's output {tuple(output_map(out).shape)}: {str(exc).splitlines()[0]}."
            ) from None
        if logits.dim() != 2 or logits.shape[1] != hp.num_ids:
            raise ShapeMismatchError(
                f"face_kd: the teacher's head gives {tuple(logits.shape[1:])} logits but the "
                f"student's head classifies num_ids={hp.num_ids} identities: they must agree "
                f"(build it with num_ids={logits.shape[-1]})."
            )

    def teacher_feature_paths(self) -> Sequence[str]:
        hp: FaceKDHParams = self.hparams  # type: ignore[assignment]
        logits = self.teacher_head_path or "embedding"
        return cache_paths(self.name, embedding=hp.teacher_path, logits=logits)

    def compute_teacher_outputs(self, x: Tensor) -> TeacherOutputs:
        assert self.teacher is not None
        self.teacher_forward_calls += 1
        path = self.hparams.teacher_path
        out, features = forward_with_features(self.teacher, x, [path], detach=True)
        embedding = features[path].flatten(1)
        if self.teacher_head_path is None:
            return TeacherOutputs(embedding, {"embedding": embedding})
        with torch.no_grad():
            head = self.teacher.get_submodule(self.teacher_head_path)
            logits = head(output_map(out))
        return TeacherOutputs(logits, {"embedding": embedding})

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Any, dict[str, Tensor]]:
        hp: FaceKDHParams = self.hparams  # type: ignore[assignment]
        out, e, _ = self.embed(x)
        teacher = self.teacher_outputs(x, index)
        terms = {}
        if self.connector is not None:
            terms["emb"] = hp.emb_weight * embedding_cosine_loss(
                self.connector(e), teacher.features["embedding"]
            )
        if self.head is None:
            return out, terms
        teacher_logits = teacher.logits if self.teacher_head_path is not None else None
        return out, hp.weighted_losses(self.head(e), y, teacher_logits, terms)
