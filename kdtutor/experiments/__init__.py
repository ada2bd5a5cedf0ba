"""Experiments from the papers, reproduced at book scale: one module per paper.

* :mod:`kdtutor.experiments.hinton`: Hinton, Vinyals and Dean (2015)'s MNIST experiments
  (student alone vs distilled, a transfer set without any 3, a transfer set of only 7s and
  8s, and the bias adjustments that follow them).
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
