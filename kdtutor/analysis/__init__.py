"""Measurements on teachers, students, losses and training runs, one module per family.

* :mod:`~kdtutor.analysis.dark_knowledge`: soft targets, their entropy, a teacher's class
  similarities, the norm of KD's gradient at each temperature;
* :mod:`~kdtutor.analysis.bias`: errors by class, and a copy of a classifier with the biases
  of some classes shifted (Hinton et al. 2015's change of prior).

Every name is importable from ``kdtutor.analysis``. These are what a second chapter, the
coursework or a user needs; the experiment a chapter teaches is written in that chapter
(CONTRIBUTING.md, "Where chapter code goes").
"""

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

__all__ = [
    "class_similarity_matrix",
    "entropy",
    "errors_by_class",
    "final_linear",
    "kd_gradient_norms",
    "mean_entropy_by_temperature",
    "most_similar_other_class",
    "predict_logits",
    "shift_class_bias",
    "soft_targets",
]
