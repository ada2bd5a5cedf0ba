"""What the detection distillers share: FCOS's training pass unrolled, the teacher's pass,
ground-truth boxes projected on the FPN levels, and a Distiller base that caches tensors.

torchvision's ``FCOS.forward`` returns only the losses in training and only the boxes in
eval; a distillation method needs what lies between: the FPN levels and the raw head outputs.
:func:`detector_forward` runs the model's own pieces in the model's own order
(``model.transform``, ``model.backbone``, ``model.head``, ``model.anchor_generator``,
``model.compute_loss``), so its losses are the model's (a test pins the equality: the
torchvision version is pinned, and ``compute_loss`` is a public method but not a documented
interface). The teacher runs the same pieces without ``compute_loss``
(:func:`teacher_detector_outputs`): its class logits, box regression, centerness and FPN
levels are tensors, one row per image, so the teacher-output cache stores them
(:class:`DetectionDistiller` sets ``tensor_teacher_outputs = True``).

Any torchvision-style one-stage detector with these attributes works (RetinaNet too, whose
head outputs differ); the methods of chapter 8 read FCOS's ``cls_logits``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..cache import TeacherOutputs
from ..errors import DataFormatError, KDTutorError, NotAModelError, ShapeMismatchError
from .base import Distiller
from .hparams import HParams

__all__ = [
    "DETECTOR_PARTS",
    "DetectionDistiller",
    "DetectorPass",
    "boxes_mask",
    "boxes_on_level",
    "check_detector",
    "detector_forward",
    "level_name",
    "run_detector",
    "teacher_detector_outputs",
]

DETECTOR_PARTS = ("transform", "backbone", "head", "anchor_generator", "compute_loss")
"""The attributes of a torchvision one-stage detector that :func:`run_detector` calls."""

HEAD_KEYS = ("cls_logits", "bbox_regression", "bbox_ctrness")
"""FCOS's head outputs, each ``(B, A, ·)`` over the ``A`` locations of every level."""


@dataclass
class DetectorPass:
    """One unrolled pass of a detector (:func:`run_detector`).

    Attributes:
        losses: the model's own training losses (FCOS: ``classification``,
            ``bbox_regression``, ``bbox_ctrness``); empty without targets.
        head_outputs: the head's raw outputs, e.g. ``cls_logits`` ``(B, A, K)``.
        features: the backbone's (FPN's) levels, finest first, ``(B, C, H_l, W_l)``.
        targets: the targets after ``model.transform`` (boxes in the pixels of the network's
            input), or ``None``.
        image_size: ``(H, W)`` of the batched, padded input tensor the backbone saw.
    """

    losses: dict[str, Tensor]
    head_outputs: dict[str, Tensor]
    features: list[Tensor]
    targets: list[dict[str, Tensor]] | None
    image_size: tuple[int, int]


def check_detector(model: Any, role: str = "student") -> None:
    """Refuse a model that is not a torchvision one-stage detector (FCOS, RetinaNet).

    Raises:
        NotAModelError: naming the missing parts and how to build a detector.
    """
    missing = [part for part in DETECTOR_PARTS if not hasattr(model, part)]
    if not isinstance(model, nn.Module) or missing:
        raise NotAModelError(
            f"the {role} must be a torchvision one-stage detector (e.g. "
            "torchvision.models.detection.FCOS, or kdtutor.models.dense's 'fcos_s'/'fcos_t'), "
            f"got {type(model).__name__} without {', '.join(missing) or 'nn.Module'}. The "
            "detection methods run the detector's transform, backbone (an FPN), head, anchor "
            "generator and compute_loss themselves."
        )


def _as_images(images: Tensor | Sequence[Tensor]) -> list[Tensor]:
    if isinstance(images, Tensor):
        if images.dim() != 4:
            raise ShapeMismatchError(
                f"a detector takes a batch of images (B, C, H, W) or a list of (C, H, W), got a "
                f"tensor of shape {tuple(images.shape)}."
            )
        return list(images.unbind(0))
    return list(images)


def run_detector(
    model: nn.Module,
    images: Tensor | Sequence[Tensor],
    targets: Sequence[dict[str, Tensor]] | None = None,
) -> DetectorPass:
    """Run a torchvision one-stage detector's own pieces and keep what lies between them.

    ``model.transform`` (normalise, resize, batch and pad), ``model.backbone`` (the FPN
    levels), ``model.head``; with ``targets``, also ``model.anchor_generator`` and
    ``model.compute_loss``, exactly as ``FCOS.forward`` does in training, so the losses are
    the model's. The model's mode is the caller's (a student trains in ``train()``).

    Raises:
        NotAModelError: ``model`` is not such a detector.
        DataFormatError: a box with no width or height (as FCOS asserts).
    """
    check_detector(model, "model")
    batch = _as_images(images)
    if model.training and targets is None:
        raise KDTutorError(
            "a detector in training mode needs its targets (a list of {'boxes', 'labels'} "
            "dicts) to compute its losses; call model.eval() to run it without."
        )
    image_list, moved = model.transform(batch, None if targets is None else list(targets))
    if moved is not None:
        for i, target in enumerate(moved):
            boxes = target["boxes"]
            if boxes.dim() != 2 or boxes.shape[-1] != 4:
                raise DataFormatError(
                    f"image {i}'s target boxes have shape {tuple(boxes.shape)}, not (N, 4) xyxy."
                )
            if (boxes[:, 2:] <= boxes[:, :2]).any():
                raise DataFormatError(
                    f"image {i} has a box with no width or height ({boxes.tolist()}): every box "
                    "must have x1 > x0 and y1 > y0 (xyxy pixels)."
                )
    out = model.backbone(image_list.tensors)
    features = [out] if isinstance(out, Tensor) else list(out.values())
    head_outputs = model.head(features)
    losses: dict[str, Tensor] = {}
    if moved is not None:
        anchors = model.anchor_generator(image_list, features)
        per_level = [f.size(2) * f.size(3) for f in features]
        losses = model.compute_loss(moved, head_outputs, anchors, per_level)
    size = image_list.tensors.shape[-2:]
    return DetectorPass(losses, head_outputs, features, moved, (int(size[0]), int(size[1])))


def detector_forward(
    model: nn.Module,
    images: Tensor | Sequence[Tensor],
    targets: Sequence[dict[str, Tensor]] | None,
) -> tuple[dict[str, Tensor], dict[str, Tensor], list[Tensor]]:
    """FCOS's training branch unrolled: ``(losses, head_outputs, features)``.

    ``losses`` equal ``model(images, targets)`` in training mode (FCOS: ``classification``,
    ``bbox_regression``, ``bbox_ctrness``); ``head_outputs`` are the raw ``cls_logits``
    ``(B, A, K)``, ``bbox_regression`` ``(B, A, 4)`` and ``bbox_ctrness`` ``(B, A, 1)`` over
    the ``A`` locations of all levels (finest level first, each row-major); ``features`` the
    FPN levels. :func:`run_detector` also returns the transformed targets and input size.

    Example:
        >>> losses, head, levels = detector_forward(fcos, images, targets)  # doctest: +SKIP
        >>> head["cls_logits"].shape, [tuple(f.shape[-2:]) for f in levels]  # doctest: +SKIP
        (torch.Size([8, 84, 4]), [(8, 8), (4, 4), (2, 2)])
    """
    p = run_detector(model, images, targets)
    return p.losses, p.head_outputs, p.features


def level_name(level: int) -> str:
    """The teacher-output feature name of FPN level ``level``: ``"fpn.0"`` is the finest."""
    return f"fpn.{level}"


@torch.no_grad()
def teacher_detector_outputs(model: nn.Module, images: Tensor | Sequence[Tensor]) -> TeacherOutputs:
    """The teacher's tensors for one batch (no ``compute_loss``, no box decoding): the class
    logits as ``logits`` ``(B, A, K)``, and features ``bbox_regression`` ``(B, A, 4)``,
    ``bbox_ctrness`` ``(B, A, 1)`` and ``fpn.0``, ``fpn.1``, ... (the FPN levels)."""
    p = run_detector(model, images, None)
    features = {key: p.head_outputs[key] for key in HEAD_KEYS[1:] if key in p.head_outputs}
    features.update({level_name(i): f for i, f in enumerate(p.features)})
    return TeacherOutputs(p.head_outputs["cls_logits"], features)


def boxes_on_level(
    boxes: Tensor, image_size: tuple[int, int], level_size: tuple[int, int]
) -> Tensor:
    """Pixel boxes ``(N, 4)`` xyxy (in the network's input, i.e. after ``model.transform``)
    projected on a level's grid of ``level_size`` ``(H_l, W_l)`` cells: ``x`` divided by the
    level's stride along the width, ``y`` along the height, where the stride is
    ``image_size // level_size`` as torchvision's anchor generator computes it (cell ``(i,
    j)`` covers pixels ``[j s, (j+1) s) x [i s, (i+1) s)``)."""
    stride_h = image_size[0] // level_size[0]
    stride_w = image_size[1] // level_size[1]
    scale = boxes.new_tensor([stride_w, stride_h, stride_w, stride_h])
    return boxes / scale


def boxes_mask(boxes: Sequence[Tensor], size: tuple[int, int]) -> Tensor:
    """The cells of a ``size`` ``(H, W)`` grid that a box covers, per image: cell ``(i, j)``
    (the square ``[j, j+1] x [i, i+1]``) is set when it overlaps one of the image's boxes
    (given in cells, :func:`boxes_on_level`) with positive area. ``(B, H, W)`` bool."""
    height, width = int(size[0]), int(size[1])
    device = boxes[0].device if len(boxes) else torch.device("cpu")
    mask = torch.zeros(len(boxes), height, width, dtype=torch.bool, device=device)
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    for b, image_boxes in enumerate(boxes):
        if image_boxes.numel() == 0:
            continue
        x0, y0 = torch.floor(image_boxes[:, 0]), torch.floor(image_boxes[:, 1])
        x1, y1 = torch.ceil(image_boxes[:, 2]) - 1, torch.ceil(image_boxes[:, 3]) - 1
        in_rows = (rows[None] >= y0[:, None]) & (rows[None] <= y1[:, None])
        in_cols = (cols[None] >= x0[:, None]) & (cols[None] <= x1[:, None])
        mask[b] = (in_rows[:, :, None] & in_cols[:, None, :]).any(dim=0)
    return mask


def _levels(model: nn.Module) -> int:
    sizes = getattr(model.anchor_generator, "sizes", None)
    return len(sizes) if sizes is not None else 0


def _classes(model: nn.Module) -> int | None:
    head = getattr(model.head, "classification_head", None)
    return getattr(head, "num_classes", None)


class DetectionDistiller(Distiller):
    """Base of the detection distillers: a torchvision FCOS student and teacher.

    ``forward`` returns ``(None, losses)`` in training (the student's three FCOS losses and
    the method's weighted terms; the engine scores the student's eval outputs, torchvision's
    list of dicts, through the ``detection`` task). The teacher's outputs are tensors
    (:func:`teacher_detector_outputs`), so the engine caches them
    (``tensor_teacher_outputs``). Subclasses write :meth:`forward` with
    :meth:`student_pass`, :meth:`teacher_pass` and :meth:`level_boxes`.

    Raises:
        NotAModelError: the student or teacher is not a one-stage detector.
        ShapeMismatchError: they have different numbers of FPN levels or of classes.
    """

    family: ClassVar[str] = "application"
    task: ClassVar[str] = "detection"
    tensor_teacher_outputs: ClassVar[bool] = True

    def __init__(
        self, student: nn.Module, teacher: nn.Module | None = None, hparams: HParams | None = None
    ) -> None:
        super().__init__(student, teacher, hparams)
        check_detector(student, "student")
        self.num_levels = _levels(student)
        if teacher is not None:
            check_detector(teacher, "teacher")
            if _levels(teacher) != self.num_levels:
                raise ShapeMismatchError(
                    f"the student's detector has {self.num_levels} FPN levels but the "
                    f"teacher's has {_levels(teacher)}: both must predict on the same levels "
                    "(the same anchor generator sizes and backbone strides)."
                )
            s, t = _classes(student), _classes(teacher)
            if s is not None and t is not None and s != t:
                raise ShapeMismatchError(
                    f"the student detects {s} classes but the teacher {t} (background "
                    f"included, as torchvision counts): build the student with num_classes={t}."
                )

    def teacher_feature_paths(self) -> Sequence[str]:
        """The names of the teacher's cached features (they key the cache; the teacher's
        pass is :meth:`compute_teacher_outputs`, not hooks)."""
        return ("bbox_regression", "bbox_ctrness", *(level_name(i) for i in range(self.num_levels)))

    def compute_teacher_outputs(self, x: Tensor) -> TeacherOutputs:
        """The teacher's class logits (``logits``), box regression, centerness and FPN
        levels on ``x`` (:func:`teacher_detector_outputs`; cached by the engine)."""
        assert self.teacher is not None
        self.teacher_forward_calls += 1
        return teacher_detector_outputs(self.teacher, x)

    def student_pass(self, x: Any, y: Any) -> DetectorPass:
        """The student's unrolled training pass (:func:`run_detector`)."""
        if y is None:
            raise KDTutorError(
                f"method {self.name!r} trains a detector on its boxes: give fit() a detection "
                "dataset (targets {'boxes', 'labels'}), e.g. kdtutor.data.scenes.ScenesDataset."
            )
        return run_detector(self.student, x, y)

    def teacher_pass(self, x: Any, index: Tensor | None, student: DetectorPass) -> TeacherOutputs:
        """The teacher's outputs for ``x`` (from the cache when the engine keeps one),
        checked against the student's pass: the same locations and level sizes."""
        if isinstance(x, Tensor):
            t = self.teacher_outputs(x, index)
        else:  # images of several sizes: never cached (the cache stacks its inputs)
            t = self.compute_teacher_outputs(x)
        s_logits = student.head_outputs["cls_logits"]
        if t.logits.shape != s_logits.shape:
            raise ShapeMismatchError(
                f"the teacher's class logits are {tuple(t.logits.shape)} but the student's "
                f"{tuple(s_logits.shape)}: the detectors must predict at the same locations "
                "(same input size, min_size/max_size, backbone strides and FPN levels) and "
                "classes."
            )
        for i, feature in enumerate(student.features):
            teacher_feature = t.features[level_name(i)]
            if teacher_feature.shape[-2:] != feature.shape[-2:]:
                raise ShapeMismatchError(
                    f"FPN level {i}: the teacher's map is {tuple(teacher_feature.shape[-2:])}, "
                    f"the student's {tuple(feature.shape[-2:])}: the backbones must have the "
                    "same strides."
                )
        return t

    def teacher_levels(self, outputs: TeacherOutputs) -> list[Tensor]:
        """The teacher's FPN levels, finest first, from its outputs."""
        return [outputs.features[level_name(i)] for i in range(self.num_levels)]

    @staticmethod
    def level_boxes(student: DetectorPass) -> list[list[Tensor]]:
        """Per level, per image: the ground-truth boxes projected on the level's grid."""
        assert student.targets is not None
        return [
            [
                boxes_on_level(t["boxes"], student.image_size, tuple(f.shape[-2:]))
                for t in student.targets
            ]
            for f in student.features
        ]
