"""What feature- and relation-based methods share: paired feature paths, shapes and connectors.

A feature-based method compares student and teacher features at *pairs* of module paths. This
base class

* chooses the pairs (``student_paths`` / ``teacher_paths``, or a default from the models'
  ``stage_names``, ``preact_stage_names`` or ``embedding_path``, see :func:`default_paths`),
* runs both models once on a dummy input to learn the feature shapes (``input_shape``),
* builds one connector per pair where the method wants them (:mod:`kdtutor.connectors`),
* captures the student's features on each training step and reads the teacher's (possibly
  from the teacher-output cache), so a method only writes its loss.

Multi-stage methods (FitNets' hint stage, AB's and FT's pre-training) set ``init_epochs``:
for the first ``init_epochs`` epochs :attr:`FeatureDistiller.in_init_stage` is true and the
method returns its stage-one losses; the same trainer runs both stages.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from ..config import ConfigError
from ..connectors import KINDS, build_connector
from ..errors import KDTutorError, ShapeMismatchError
from ..features import FeatureExtractor, probe_features
from ..models.common import FeatureAttributeError
from .base import Distiller, HParams
from .hparams import LossWeights

PathPolicy = Literal["stages", "preact", "hint", "last", "embedding"]

__all__ = [
    "FeatureDistiller",
    "FeatureHParams",
    "PathPolicy",
    "default_paths",
    "pair_by_resolution",
    "probe_shapes",
]


@dataclass(frozen=True)
class FeatureHParams(LossWeights):
    """Fields every feature- and relation-based method accepts.

    ``ce_weight``, ``kd_weight`` and ``T`` (:class:`~kdtutor.methods.hparams.LossWeights`):
    the weights of the cross entropy (1) and of Hinton's KD term (0: none, e.g. 1 for CRD+KD).
    ``student_paths`` / ``teacher_paths``: module paths of the paired features (equal length;
    empty: the method's default pairs). ``connector``: the kind of connector per pair (see
    :func:`kdtutor.connectors.build_connector`; ignored by methods that need none).
    ``init_epochs``: epochs of the method's first stage (only for multi-stage methods).
    """

    student_paths: tuple[str, ...] = ()
    teacher_paths: tuple[str, ...] = ()
    connector: str = "auto"
    init_epochs: int = 0

    def validate(self) -> None:
        super().validate()
        if len(self.student_paths) != len(self.teacher_paths):
            raise ConfigError(
                f"student_paths ({len(self.student_paths)}) and teacher_paths "
                f"({len(self.teacher_paths)}) must pair up one to one: give both or neither."
            )
        if self.connector not in KINDS:
            raise ConfigError(
                f"connector must be one of {', '.join(KINDS)}; got {self.connector!r}."
            )
        if self.init_epochs < 0:
            raise ConfigError(f"init_epochs must be >= 0, got {self.init_epochs}.")


def _model_paths(model: nn.Module, attribute: str, role: str) -> tuple[str, ...]:
    value = getattr(model, attribute, None)
    if isinstance(value, str):
        value = (value,)
    if not value:
        raise FeatureAttributeError(
            f"the {role} ({type(model).__name__}) has no {attribute}, so the default feature "
            f"pairs cannot be chosen. Pass {role}_paths=(...) and the other side's paths "
            "explicitly (kdtutor.features.list_paths(model) lists them), or build the model "
            "with kdtutor.models.build_model."
        )
    return tuple(value)


def pair_by_resolution(
    student_sizes: Sequence[tuple[int, ...]], teacher_sizes: Sequence[tuple[int, ...]]
) -> list[tuple[int, int]]:
    """Pair stage indices by spatial size: each student stage with the deepest teacher stage of
    the closest size (in log scale), keeping the pairs in depth order and one student stage per
    teacher stage (the deeper student stage wins).

    Attention transfer and most feature methods compare maps of the *same* resolution
    (Zagoruyko & Komodakis, 2017, pair ResNet groups this way); pairing by depth instead would
    ask a one-block student stage to imitate a teacher stage two poolings deeper.
    """
    pairs: dict[int, int] = {}
    for i, s in enumerate(student_sizes):
        area = math.log(max(1, s[0] * s[1]))
        j = min(
            range(len(teacher_sizes)),
            key=lambda k: (
                abs(math.log(max(1, teacher_sizes[k][0] * teacher_sizes[k][1])) - area),
                -k,
            ),
        )
        pairs[j] = i  # a deeper student stage replaces a shallower one
    result = sorted((i, j) for j, i in pairs.items())
    # keep depth order on both sides
    kept: list[tuple[int, int]] = []
    for i, j in result:
        if not kept or j > kept[-1][1]:
            kept.append((i, j))
    return kept


def default_paths(
    student: nn.Module,
    teacher: nn.Module,
    policy: PathPolicy,
    input_shape: Sequence[int] | None = None,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Default (student paths, teacher paths) for a method's ``policy``.

    ``"stages"`` pairs the stage outputs: by spatial size when ``input_shape`` is given and the
    stages are feature maps (:func:`pair_by_resolution`), otherwise deepest with deepest (the
    shallowest extra stages of the deeper model are left out); ``"preact"`` does the same with
    the pre-ReLU stage features; ``"hint"`` takes the middle one of those pairs (FitNets' hint
    and guided layers); ``"last"`` the deepest stage of each model; ``"embedding"`` the
    pooled vectors the classifiers see.
    """
    if policy == "embedding":
        return (
            _model_paths(student, "embedding_path", "student"),
            _model_paths(teacher, "embedding_path", "teacher"),
        )
    attribute = "preact_stage_names" if policy == "preact" else "stage_names"
    s = _model_paths(student, attribute, "student")
    t = _model_paths(teacher, attribute, "teacher")
    if policy == "last":
        return (s[-1],), (t[-1],)
    pairs: list[tuple[int, int]] | None = None
    if input_shape is not None:
        s_shapes = probe_shapes(student, s, input_shape, "student")
        t_shapes = probe_shapes(teacher, t, input_shape, "teacher")
        if all(len(x) == 3 for x in (*s_shapes, *t_shapes)):
            pairs = pair_by_resolution([x[1:] for x in s_shapes], [x[1:] for x in t_shapes])
    if pairs is None:
        n = min(len(s), len(t))
        pairs = [(len(s) - n + k, len(t) - n + k) for k in range(n)]
    if policy == "hint":
        pairs = [pairs[len(pairs) // 2]]
    return tuple(s[i] for i, _ in pairs), tuple(t[j] for _, j in pairs)


def guess_input_shape(model: nn.Module) -> tuple[int, ...]:
    """``model.input_shape`` if set, else ``(C, 32, 32)`` from its first convolution, else
    ``(D,)`` from its first linear layer."""
    shape = getattr(model, "input_shape", None)
    if shape:
        return tuple(shape)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return (module.in_channels, 32, 32)
        if isinstance(module, nn.Linear):
            return (module.in_features,)
    raise KDTutorError(
        f"cannot guess the input shape of {type(model).__name__}: pass input_shape=(C, H, W)."
    )


def probe_shapes(
    model: nn.Module, paths: Sequence[str], input_shape: Sequence[int], role: str = "model"
) -> list[tuple[int, ...]]:
    """Per-sample shapes of the features at ``paths`` for inputs of ``input_shape``.

    The model runs once in eval mode on zeros (two samples, so batch norm and flattening
    behave), without gradients (:func:`~kdtutor.features.probe_features`); its train/eval
    modes are restored.
    """
    x = torch.zeros(2, *input_shape, device=next(model.parameters()).device)
    try:
        _, features = probe_features(model, x, list(paths))
    except RuntimeError as exc:
        raise ShapeMismatchError(
            f"the {role} ({type(model).__name__}) cannot take inputs of shape "
            f"{tuple(input_shape)}: {str(exc).splitlines()[0]}. Student and teacher must "
            "take the same images; pass input_shape=(C, H, W) of your data."
        ) from None
    return [tuple(features[p].shape[1:]) for p in paths]


class FeatureDistiller(Distiller):
    """Base of the feature- and relation-based methods (see the module docstring).

    Subclasses set ``path_policy`` and ``uses_connectors`` and implement :meth:`feature_losses`
    (and, if they own extra modules, :meth:`build_modules`).
    """

    hparams_cls: ClassVar[type[HParams]] = FeatureHParams
    path_policy: ClassVar[PathPolicy] = "stages"
    uses_connectors: ClassVar[bool] = True
    loss_weights: ClassVar[tuple[str, ...]] = ("beta",)

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        hparams: HParams | None = None,
        *,
        input_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__(student, teacher, hparams)
        assert teacher is not None  # every feature method requires a teacher
        hp: FeatureHParams = self.hparams  # type: ignore[assignment]
        self.input_shape = tuple(input_shape) if input_shape else guess_input_shape(student)
        if hp.student_paths:
            self.student_paths, self.teacher_paths = hp.student_paths, hp.teacher_paths
        else:
            self.student_paths, self.teacher_paths = default_paths(
                student, teacher, self.path_policy, self.input_shape
            )
        self.student_shapes = probe_shapes(student, self.student_paths, self.input_shape, "student")
        self.teacher_shapes = probe_shapes(teacher, self.teacher_paths, self.input_shape, "teacher")
        self.connectors = nn.ModuleList()
        if self.uses_connectors:
            for sp, tp, ss, ts in zip(
                self.student_paths,
                self.teacher_paths,
                self.student_shapes,
                self.teacher_shapes,
                strict=True,
            ):
                self.connectors.append(
                    build_connector(ss, ts, hp.connector, where=f"{sp!r} -> {tp!r}")  # type: ignore[arg-type]
                )
        self.epoch = 0
        self.build_modules()

    # -- for subclasses ---------------------------------------------------------------------
    def build_modules(self) -> None:
        """Create the method's own trainable modules (shapes are known by now)."""

    def feature_losses(
        self,
        logits: Tensor,
        y: Tensor,
        student_features: list[Tensor],
        teacher_features: list[Tensor],
        teacher_logits: Tensor,
        index: Tensor | None,
    ) -> dict[str, Tensor]:
        """The method's named, weighted losses for one batch: usually
        ``self.hparams.weighted_losses(logits, y, teacher_logits, {name: term})``, which adds
        the weighted cross entropy and, when ``kd_weight`` > 0, Hinton's KD term."""
        raise NotImplementedError

    @property
    def in_init_stage(self) -> bool:
        """True during the first ``init_epochs`` epochs (stage one of a multi-stage method)."""
        return self.epoch < self.hparams.init_epochs  # type: ignore[attr-defined]

    # -- the contract -----------------------------------------------------------------------
    def teacher_feature_paths(self) -> Sequence[str]:
        return self.teacher_paths

    def check_input(self, sample_shape: Sequence[int]) -> None:
        """Raise when the training data's sample shape differs from the one probed."""
        if tuple(sample_shape) != self.input_shape:
            raise ShapeMismatchError(
                f"{self.name!r} was built for inputs of shape {self.input_shape}, but the "
                f"training data has samples of shape {tuple(sample_shape)}. Build it with "
                f"input_shape={tuple(sample_shape)} (build_distiller(..., input_shape=...))."
            )

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.epoch = epoch

    def bind_data(self, train_data: Any) -> None:
        images = getattr(train_data, "images", None)
        if images is not None:
            self.check_input(images.shape[1:])

    def student_features(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The student's logits and its features at ``student_paths`` (with gradients)."""
        with FeatureExtractor(self.student, self.student_paths) as fx:
            logits = self.student(x)
        return logits, [fx.tensor(p) for p in self.student_paths]

    def connect(self, features: Sequence[Tensor]) -> list[Tensor]:
        """Student features mapped to the teacher's shapes by the connectors."""
        return [c(f) for c, f in zip(self.connectors, features, strict=True)]

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        logits, student_features = self.student_features(x)
        teacher = self.teacher_outputs(x, index)
        teacher_features = [teacher.features[p] for p in self.teacher_paths]
        losses = self.feature_losses(
            logits, y, student_features, teacher_features, teacher.logits, index
        )
        return logits, losses
