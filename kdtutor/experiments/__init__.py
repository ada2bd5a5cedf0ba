"""Experiments the chapters run at book scale: one module per paper or chapter section.

* :mod:`kdtutor.experiments.hinton`: Hinton, Vinyals and Dean (2015)'s MNIST experiments
  (student alone vs distilled, a transfer set without any 3, a transfer set of only 7s and
  8s, and the bias adjustments that follow them).
* :mod:`kdtutor.experiments.response`: what response-based students match (KD, TCKD, NCKD,
  DIST's inter/intra terms, agreement with the teacher) and mean loss curves over seeds.
* :mod:`kdtutor.experiments.feature`: attention maps and their distance to the teacher's,
  and per-step loss recording for multi-stage methods.
* :mod:`kdtutor.experiments.relation`: class-sorted batches, embeddings, how far a
  student's relations (SP, RKD distance and angle) are from the teacher's, and memory-bank
  sizes.

The chapter modules are imported by name (``from kdtutor.experiments.relation import ...``).
"""

from .hinton import (
    HINTON_2015_MNIST,
    HintonConfig,
    bias_sweep,
    errors_by_class,
    final_linear,
    run_hinton_protocol,
    shift_class_bias,
    split_validation,
    transfer_subset,
    tune_bias_shift,
    tune_learning_rate,
)

__all__ = [
    "HINTON_2015_MNIST",
    "HintonConfig",
    "bias_sweep",
    "errors_by_class",
    "final_linear",
    "run_hinton_protocol",
    "shift_class_bias",
    "split_validation",
    "transfer_subset",
    "tune_bias_shift",
    "tune_learning_rate",
]
