"""Measurements on teachers, students, losses and training runs, one module per family.

* :mod:`~kdtutor.analysis.dark_knowledge`: soft targets, their entropy, a teacher's class
  similarities, the norm of KD's gradient at each temperature;
* :mod:`~kdtutor.analysis.bias`: errors by class, and a copy of a classifier with the biases
  of some classes shifted (Hinton et al. 2015's change of prior);
* :mod:`~kdtutor.analysis.response`: every response-based distance between a student's and a
  teacher's logits (KD, DKD's halves, DIST's terms, agreement, accuracy);
* :mod:`~kdtutor.analysis.feature`: attention maps, and their distance to a teacher's;
* :mod:`~kdtutor.analysis.relation`: how far a student's relations (SP, RKD distance and
  angle) are from its teacher's;
* :mod:`~kdtutor.analysis.runs`: the losses of every training step, and loss curves averaged
  over seeds;
* :mod:`~kdtutor.analysis.scenes`: a scene with its boxes, masks, keypoints and depth, and a
  grid of scenes (the data of chapter 8);
* :mod:`~kdtutor.analysis.applications`: grids of faces, clips, roads with their lanes, and
  super-resolution pairs (the data of chapter 8).

Every name is importable from ``kdtutor.analysis``; the drawing modules of chapter 8 (and
matplotlib with them) are imported on first use of one of their names. These are what a second chapter, the
coursework or a user needs; the experiment a chapter teaches is written in that chapter
(CONTRIBUTING.md, "Where chapter code goes").
"""

from __future__ import annotations

import importlib
from typing import Any

from ..train import predict_logits
from .bias import errors_by_class, final_linear, shift_class_bias
from .dark_knowledge import (
    class_similarity_matrix,
    entropy,
    kd_gradient_norms,
    mean_entropy_by_temperature,
    most_similar_other_class,
    soft_targets,
)
from .feature import attention_distance, attention_maps
from .relation import GAP_NAMES, relation_gaps
from .response import DIAGNOSTICS, response_diagnostics
from .runs import StepLosses, mean_loss_curves

_LAZY: dict[str, str] = {
    **dict.fromkeys(("draw_scene", "scene_grid"), "scenes"),
    **dict.fromkeys(("clip_grid", "face_grid", "road_grid", "sr_grid"), "applications"),
}
"""Names exported from a module imported on first use: ``name -> module``."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DIAGNOSTICS",
    "GAP_NAMES",
    "StepLosses",
    "attention_distance",
    "attention_maps",
    "class_similarity_matrix",
    "clip_grid",
    "draw_scene",
    "entropy",
    "errors_by_class",
    "face_grid",
    "final_linear",
    "kd_gradient_norms",
    "mean_entropy_by_temperature",
    "mean_loss_curves",
    "most_similar_other_class",
    "predict_logits",
    "relation_gaps",
    "response_diagnostics",
    "road_grid",
    "scene_grid",
    "shift_class_bias",
    "soft_targets",
    "sr_grid",
]
