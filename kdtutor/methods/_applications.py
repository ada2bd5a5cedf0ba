"""Pieces the distillers of chapter 8's second part share (faces, super-resolution, video, lanes).

* :class:`~kdtutor.models.dense.CosineHead` (imported here): the trainable identity
  classifier of the face methods. It belongs to the distiller, not to the deployed network
  (whose output is the embedding).
* :class:`FaceHParams`, :class:`FaceDistiller` and :func:`embedding_width`: the face
  methods' shared fields, their embedding and head, the width of an embedding at a path.
* Feature paths: :func:`check_paths` (a clear error naming the hyperparameter to set),
  :func:`forward_with_features` (a network's output and its features at some paths, through
  :class:`~kdtutor.features.FeatureExtractor`), :func:`probe` (the same on zeros, to size a
  connector or a head), :func:`paths_by_depth` (FAKD's layers at relative depths) and
  :func:`cache_paths` (what a distiller's teacher-cache key says it stores).
* Output contracts: :func:`~kdtutor.methods._dense.output_map` (the ``"out"`` of a dict
  output, imported here), :func:`lane_outputs`
  and :func:`time_steps` (clip features as ``(B, T, D)``).
* :class:`LaneLossWeights` and :func:`lane_label_losses`: the lane methods' supervised terms;
  :class:`SADHParams` and :class:`LaneDistiller`: self attention distillation from an epoch
  on, shared by ``sad`` and ``lane_kd``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConfigError, non_negative
from ..errors import ShapeMismatchError, UnknownNameError
from ..features import FeatureExtractor, evaluating
from ..losses.applications import sad_loss
from ..models.common import FeatureAttributeError
from ..models.dense import CosineHead
from ._dense import output_map
from .base import Distiller
from .hparams import HParams

__all__ = [
    "OUTPUT",
    "CosineHead",
    "FaceDistiller",
    "FaceHParams",
    "LaneDistiller",
    "LaneLossWeights",
    "SADHParams",
    "cache_paths",
    "check_identity_labels",
    "check_paths",
    "embedding_width",
    "forward_with_features",
    "input_shape_of",
    "lane_label_losses",
    "lane_outputs",
    "named_path",
    "output_map",
    "paths_by_depth",
    "probe",
    "sad_term",
    "time_steps",
]

OUTPUT = ""
"""The path that means "the network's output itself" (no hook)."""


def check_paths(
    model: nn.Module, paths: Sequence[str], *, role: str, method: str, field: str
) -> None:
    """Raise :class:`~kdtutor.errors.UnknownNameError` when a path names no module of
    ``model``, saying which hyperparameter to set (the empty path, the output, always exists)."""
    real = [p for p in paths if p != OUTPUT]
    if not real:
        return
    try:
        FeatureExtractor(model, real)
    except UnknownNameError as exc:
        raise UnknownNameError(
            f"{method}: the {role} ({type(model).__name__}) has no module for {field}={tuple(paths)!r}"
            f": {exc} Set {field}=... to the paths of your {role}."
        ) from None


def forward_with_features(
    model: nn.Module, x: Any, paths: Sequence[str], *, detach: bool = False
) -> tuple[Any, dict[str, Tensor]]:
    """``model(x)`` and its features at ``paths``, by path (the empty path maps to the output
    itself). With ``detach`` the features carry no graph (a teacher's)."""
    real = list(dict.fromkeys(p for p in paths if p != OUTPUT))
    if real:
        with FeatureExtractor(model, real, detach=detach) as fx:
            out = model(x)
        features = {p: fx.tensor(p) for p in real}
    else:
        out, features = model(x), {}
    if OUTPUT in paths:
        features[OUTPUT] = out.detach() if detach and isinstance(out, Tensor) else out
    return out, features


def named_path(model: nn.Module, key: str) -> str | None:
    """The module path a model gives for one of the design note's names (``"embedding"``,
    ``"logits"``, ``"frames"``, ...) in its ``named_paths`` dict, if it has one (the
    convention of ``kdtutor.models.dense``)."""
    paths = getattr(model, "named_paths", None)
    value = paths.get(key) if isinstance(paths, dict) else None
    return value if isinstance(value, str) and value else None


def input_shape_of(
    model: nn.Module, given: Sequence[int] | None, default: Sequence[int]
) -> tuple[int, ...]:
    """``given`` if set, else the model's ``input_shape`` attribute, else ``default``."""
    if given:
        return tuple(int(v) for v in given)
    shape = getattr(model, "input_shape", None)
    return tuple(int(v) for v in shape) if shape else tuple(default)


def probe(
    model: nn.Module, paths: Sequence[str], input_shape: Sequence[int], *, role: str, method: str
) -> tuple[Any, dict[str, Tensor]]:
    """The model's output and features at ``paths`` on two samples of zeros of
    ``input_shape``, in eval mode without gradients (modes restored)."""
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else "cpu"
    x = torch.zeros(2, *input_shape, device=device)
    try:
        with evaluating(model), torch.no_grad():
            return forward_with_features(model, x, paths, detach=True)
    except RuntimeError as exc:
        raise ShapeMismatchError(
            f"{method}: the {role} ({type(model).__name__}) cannot take inputs of shape "
            f"{tuple(input_shape)}: {str(exc).splitlines()[0]}. Pass input_shape=(...) of one "
            "sample of your data (build_distiller(..., input_shape=...))."
        ) from None


def paths_by_depth(names: Sequence[str], count: int) -> tuple[str, ...]:
    """``count`` of ``names`` (blocks in depth order) at relative depths ``1/count, 2/count,
    ..., 1``: block ``round(j n / count)`` (1-based) for ``j = 1..count``, so 6 blocks give
    blocks 2, 4, 6 and 4 blocks give 1, 3, 4 (FAKD's three layers, design note 3.6)."""
    n = len(names)
    if n < count:
        raise ConfigError(f"{count} layers are needed but the model lists only {n}: {names}.")
    picks = [max(1, round(j * n / count)) for j in range(1, count + 1)]
    return tuple(names[i - 1] for i in picks)


def cache_paths(method: str, **parts: Any) -> tuple[str, ...]:
    """What a distiller's ``compute_teacher_outputs`` stores, as the strings the teacher cache
    keys on (``teacher_feature_paths``): a ``#method/1`` tag, then ``name=value`` per part.
    Two distillers that store different things under one teacher never share a cache."""
    return (f"#{method}/1", *(f"{k}={v if v != OUTPUT else '(output)'}" for k, v in parts.items()))


def lane_outputs(out: Any, role: str = "student") -> tuple[Tensor, Tensor]:
    """``(out, exist)`` of a lane network's output ``{"out": (B, 1 + S, H, W), "exist": (B, S)}``."""
    if not isinstance(out, dict) or "out" not in out or "exist" not in out:
        got = sorted(out) if isinstance(out, dict) else type(out).__name__
        raise ShapeMismatchError(
            f"the {role} must return a dict {{'out': slot logits (B, 1 + S, H, W), 'exist': "
            f"existence logits (B, S)}} (the lanes task's contract); got {got}."
        )
    return out["out"], out["exist"]


def time_steps(feature: Tensor, batch: int) -> Tensor:
    """A clip network's per-time-step features as ``(B, T, D)``:

    * ``(B, C, T, H, W)`` (a 3D convolution's map): averaged over space;
    * ``(B, C, T)`` (a temporal ``Conv1d``'s input or output): transposed;
    * ``(B * T, C, H, W)`` (a 2D network run frame by frame): averaged over space, regrouped;
    * ``(B * T, C)`` (per-frame vectors): regrouped.
    """
    if feature.dim() == 5 and feature.shape[0] == batch:
        return feature.mean(dim=(3, 4)).transpose(1, 2)
    if feature.dim() == 3 and feature.shape[0] == batch:
        return feature.transpose(1, 2)
    if feature.dim() in (2, 4) and feature.shape[0] % batch == 0:
        flat = feature.mean(dim=(2, 3)) if feature.dim() == 4 else feature
        return flat.reshape(batch, feature.shape[0] // batch, flat.shape[1])
    raise ShapeMismatchError(
        f"cannot read per-time-step features of a batch of {batch} clips from a tensor of "
        f"shape {tuple(feature.shape)}: expected (B, C, T, H, W), (B, C, T), (B*T, C, H, W) or "
        "(B*T, C). Choose the path of a temporal feature."
    )


@dataclass(frozen=True)
class LaneLossWeights(HParams):
    """The supervised terms of the lane methods (ENet-SAD's criterion, verified in
    cardwing/Codes-for-Lane-Detection ``ENet-Label-Torch/models/init.lua``: segmentation
    cross entropy weight 1, existence BCE weight 0.1, background class weight ``-backWeight``,
    default 1 in ``opts.lua``; SCNN's 0.4 is not verified).

    ``ce_weight``: the slot segmentation cross entropy; ``background_weight``: the class
    weight of the background in it; ``exist_weight``: the existence BCE.
    """

    ce_weight: float = 1.0
    background_weight: float = 1.0
    exist_weight: float = 0.1

    def validate(self) -> None:
        super().validate()
        for name in ("ce_weight", "background_weight", "exist_weight"):
            non_negative(name, getattr(self, name), self.owner())


def lane_label_losses(out: Any, y: Any, hp: LaneLossWeights) -> dict[str, Tensor]:
    """``{"ce": ce_weight CE(out, mask), "exist": exist_weight BCE(exist, y_exist)}``; the CE
    over the 1 + S channels at every pixel with class weights ``(background_weight, 1, ...)``
    (PyTorch's weighted mean: divided by the summed weights of the pixels' labels)."""
    logits, exist = lane_outputs(out)
    if not isinstance(y, dict) or "mask" not in y or "exist" not in y:
        raise ShapeMismatchError(
            "lane targets must be a dict with 'mask' (B, H, W) and 'exist' (B, S) (the roads "
            f"data's targets); got {type(y).__name__}."
        )
    mask, target_exist = y["mask"], y["exist"]
    if logits.shape[-2:] != mask.shape[-2:] or exist.shape != target_exist.shape:
        raise ShapeMismatchError(
            f"lane outputs {tuple(logits.shape)} / {tuple(exist.shape)} do not match the "
            f"targets' mask {tuple(mask.shape)} / existence {tuple(target_exist.shape)}: the "
            "network must predict at the image's resolution, one existence logit per slot."
        )
    weight = torch.ones(logits.shape[1], device=logits.device, dtype=logits.dtype)
    weight[0] = hp.background_weight
    return {
        "ce": hp.ce_weight * F.cross_entropy(logits, mask.long(), weight=weight),
        "exist": hp.exist_weight
        * F.binary_cross_entropy_with_logits(exist, target_exist.to(exist.dtype)),
    }


def sad_term(features: Sequence[Tensor], weight: float) -> Tensor:
    """``weight`` times :func:`~kdtutor.losses.applications.sad_loss` (the weight applies to
    every pair of successive blocks, as the authors' criterion weights each pair 0.1)."""
    return weight * sad_loss(features)


@dataclass(frozen=True)
class SADHParams(LaneLossWeights):
    """Self attention distillation's fields (Hou et al. 2019; the criterion verified as in
    :class:`LaneLossWeights`).

    ``sad_weight``: the weight of each pair of successive blocks (0.1, the authors'
    criterion; 0: no SAD). ``sad_start``: the epoch (0-based) from which the SAD term is
    added; the paper adds SAD to a model already trained for a while (**not verified**), ours
    is two thirds of the 20-epoch book schedule, scaled for shorter runs by
    ``scaled_hparams``. ``sad_paths``: the student's blocks, shallow to deep (empty: the last
    three of its ``stage_names``, the encoder at /4, /8, /16 in the design's ``lanenet_s``).
    """

    sad_weight: float = 0.1
    sad_start: int = 13
    sad_paths: tuple[str, ...] = ()

    def validate(self) -> None:
        super().validate()
        non_negative("sad_weight", self.sad_weight, self.owner())
        non_negative("sad_start", self.sad_start, self.owner())
        if len(self.sad_paths) == 1:
            raise ConfigError(
                f"{self.owner()}.sad_paths needs at least two blocks (SAD compares successive "
                f"blocks); got {self.sad_paths!r}. Leave it empty for the student's stage_names."
            )


class LaneDistiller(Distiller):
    """Lane methods: the supervised terms, and SAD on the student's blocks from ``sad_start``
    on when the hyperparameters have a ``sad_weight`` > 0. Subclasses write ``forward``."""

    family = "application"
    task = "lanes"
    protocol_epochs = 20
    """The book's lane schedule (design note 4.2), which ``sad_start`` is counted in."""

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, hparams=None) -> None:
        super().__init__(student, teacher, hparams)
        self.epoch = 0
        self.sad_paths: tuple[str, ...] = ()
        hp = self.hparams
        if getattr(hp, "sad_weight", 0) > 0:
            self.sad_paths = hp.sad_paths or self._default_sad_paths(student)
            check_paths(
                student, self.sad_paths, role="student", method=self.name, field="sad_paths"
            )

    def _default_sad_paths(self, student: nn.Module) -> tuple[str, ...]:
        names = getattr(student, "stage_names", None)
        if not names or len(names) < 2:
            raise FeatureAttributeError(
                f"{self.name}: the student ({type(student).__name__}) lists no stage_names to "
                "take SAD's blocks from: pass sad_paths=(...) with two or more of its blocks, "
                "shallow to deep (kdtutor.features.list_paths(student) lists them), or "
                "sad_weight=0."
            )
        return tuple(names[-3:])

    @property
    def sad_active(self) -> bool:
        """Whether the SAD term is added in this epoch."""
        return bool(self.sad_paths) and self.epoch >= self.hparams.sad_start

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.epoch = epoch

    def student_forward(self, x: Tensor) -> tuple[Any, dict[str, Tensor]]:
        """The student's outputs and, when SAD is active, its blocks' features."""
        paths = self.sad_paths if self.sad_active else ()
        return forward_with_features(self.student, x, paths)

    def sad_losses(self, features: dict[str, Tensor], like: Tensor) -> dict[str, Tensor]:
        """``{"sad": ...}`` when the method has SAD (zero before ``sad_start``), else ``{}``."""
        if not self.sad_paths:
            return {}
        if not self.sad_active:
            return {"sad": like.new_zeros(())}
        return {"sad": sad_term([features[p] for p in self.sad_paths], self.hparams.sad_weight)}


@dataclass(frozen=True)
class FaceHParams(HParams):
    """Fields the face methods share.

    ``s``: the cosine head's scale (16, ours; NormFace's range). ``num_ids``: the training
    identities the head classifies (the faces' 1,000; labels must lie below it).
    ``student_path``: where the student's embedding is read (empty: the network's output,
    the deployed embedding, except in ``face_rkd``; a path reads a feature instead, e.g. the
    embedding before an L2 normalisation).
    """

    s: float = 16.0
    num_ids: int = 1000
    student_path: str = ""

    def validate(self) -> None:
        super().validate()
        if not self.s > 0:
            raise ConfigError(
                f"{self.owner()}.s (the cosine head's scale) must be > 0, got {self.s!r}."
            )
        if self.num_ids < 1:
            raise ConfigError(
                f"{self.owner()}.num_ids (identities the head classifies) must be >= 1, got "
                f"{self.num_ids!r}."
            )


def embedding_width(
    model: nn.Module, path: str, input_shape: Sequence[int], *, role: str, method: str, field: str
) -> int:
    """The width ``D`` of the embedding ``model`` gives at ``path`` (the output when empty),
    after checking the path exists; a feature that is not one vector per sample is refused."""
    check_paths(model, [path], role=role, method=method, field=field)
    _, features = probe(model, [path], input_shape, role=role, method=method)
    e = features[path]
    if not isinstance(e, Tensor) or e.dim() < 2 or e.flatten(1).shape[0] != 2:
        raise ShapeMismatchError(
            f"{method}: the {role}'s {field}={path!r} gives "
            f"{type(e).__name__ if not isinstance(e, Tensor) else tuple(e.shape)}, not an "
            "embedding (B, D): choose the path of the embedding."
        )
    if e.dim() > 2 and any(v != 1 for v in e.shape[2:]):
        raise ShapeMismatchError(
            f"{method}: the {role}'s {field}={path!r} gives a map {tuple(e.shape[1:])}, not an "
            "embedding (D,) per sample: choose the path of the pooled embedding."
        )
    return int(e.flatten(1).shape[1])


def check_identity_labels(train_data: Any, num_ids: int, method: str) -> None:
    """Refuse training data with more identities than the head classifies."""
    classes = getattr(train_data, "num_classes", None)
    if classes is None:
        names = getattr(train_data, "classes", None)
        classes = len(names) if names is not None and not isinstance(names, str) else None
    if classes is not None and classes > num_ids:
        raise ShapeMismatchError(
            f"{method}: the training data has {classes} identities but the cosine head "
            f"classifies {num_ids}: build it with num_ids={classes}."
        )


class FaceDistiller(Distiller):
    """What the face methods share: the student's embedding at ``student_path`` and, where
    the method has a label term, the trainable :class:`CosineHead` ``self.head`` over it.
    The head is a module of the distiller, not of the student: the deployed network's output
    is the embedding, which the ``retrieval`` task scores on unseen identities."""

    family = "application"
    task = "retrieval"
    default_input_shape: tuple[int, ...] = (3, 32, 32)

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        hparams: Any = None,
        *,
        input_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__(student, teacher, hparams)
        hp: FaceHParams = self.hparams  # type: ignore[assignment]
        self.input_shape = input_shape_of(student, input_shape, self.default_input_shape)
        self.student_path = hp.student_path or self.default_student_path(student)
        self.student_dim = embedding_width(
            student, self.student_path, self.input_shape, role="student", method=self.name,
            field="student_path",
        )  # fmt: skip
        self.head: CosineHead | None = None
        if self.uses_head():
            self.head = CosineHead(self.student_dim, hp.num_ids, hp.s)

    def uses_head(self) -> bool:
        """Whether the method trains an identity head (a label term)."""
        return True

    def default_student_path(self, student: nn.Module) -> str:
        """Where the embedding is read when ``student_path`` is empty: the network's output
        (the deployed, usually L2-normalised embedding)."""
        return OUTPUT

    def embed(self, x: Tensor, extra: Sequence[str] = ()) -> tuple[Any, Tensor, dict[str, Tensor]]:
        """The student's output, its embedding (flattened to ``(B, D)``) and any ``extra``
        features."""
        path = self.student_path
        out, features = forward_with_features(self.student, x, [path, *extra])
        return out, features[path].flatten(1), features

    def bind_data(self, train_data: Any) -> None:
        if self.head is not None:
            check_identity_labels(train_data, self.head.num_classes, self.name)
