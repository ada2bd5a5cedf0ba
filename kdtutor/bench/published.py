"""Published numbers to compare our reduced-scale results against.

* :data:`PUBLISHED_CIFAR100`: CIFAR-100 top-1 accuracies (%). Source: the README of
  RepDistiller (Tian, Krishnan, Isola, 2020, "Contrastive Representation Distillation",
  ICLR), same-architecture pairs, 240 epochs, mean of runs; DKD from Zhao et al. (2022),
  "Decoupled Knowledge Distillation", CVPR (mdistiller). ``None`` marks a result the source
  does not report (FSP on vgg13 -> vgg8).
* :data:`HINTON_2015_MNIST`: the MNIST test errors of Hinton, Vinyals and Dean (2015),
  "Distilling the Knowledge in a Neural Network", section 3.
"""

from __future__ import annotations

PUBLISHED_SOURCE = (
    "RepDistiller README (Tian et al., 2020), CIFAR-100, 240 epochs; DKD: Zhao et al. (2022)"
)

_COLUMNS = (
    "teacher", "student", "kd", "fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "ab", "ft",
    "fsp", "nst", "crd", "crd+kd", "dkd",
)  # fmt: skip

_ROWS = {
    "wrn_40_2->wrn_16_2": (75.61, 73.26, 74.92, 73.58, 74.08, 73.83, 73.56, 74.11, 73.35,
                           74.54, 72.50, 73.25, 72.91, 73.68, 75.48, 75.64, 76.23),
    "resnet56->resnet20": (72.34, 69.06, 70.66, 69.21, 70.55, 69.67, 69.63, 70.38, 69.61,
                           70.34, 69.47, 69.84, 69.95, 69.60, 71.16, 71.63, 71.97),
    "resnet32x4->resnet8x4": (79.42, 72.50, 73.33, 73.50, 73.44, 72.94, 72.97, 73.09, 71.90,
                              73.64, 73.17, 72.86, 72.62, 73.30, 75.51, 75.46, 76.32),
    "vgg13->vgg8": (74.64, 70.36, 72.98, 71.02, 71.43, 72.68, 70.71, 71.23, 71.48, 72.88,
                    70.94, 70.58, None, 71.53, 73.94, 74.29, 74.68),
}  # fmt: skip

PUBLISHED_CIFAR100: dict[str, dict[str, float | None]] = {
    pair: dict(zip(_COLUMNS, values, strict=True)) for pair, values in _ROWS.items()
}
"""``PUBLISHED_CIFAR100[pair][column]``: top-1 % for columns teacher, student and each method."""


def published_gains() -> dict[str, float]:
    """Each method's mean gain over the student trained alone, across the published pairs.

    Pairs where a method has no number are skipped for that method.
    """
    gains: dict[str, list[float]] = {}
    for row in PUBLISHED_CIFAR100.values():
        student = row["student"]
        assert student is not None
        for method, value in row.items():
            if method in ("teacher", "student") or value is None:
                continue
            gains.setdefault(method, []).append(value - student)
    return {method: sum(v) / len(v) for method, v in gains.items()}


HINTON_2015_MNIST: dict[str, float] = {
    "n_train": 60_000,
    "n_test": 10_000,
    "n_test_3": 1_010,
    "T": 20.0,
    "teacher_errors": 67,
    "alone_errors": 146,
    "kd_errors": 74,
    "omit_errors": 206,
    "omit_class_errors": 133,
    "omit_shift": 3.5,
    "omit_errors_shifted": 109,
    "omit_class_errors_shifted": 14,
    "only_error_rate": 47.3,
    "only_shift": -7.6,
    "only_error_rate_shifted": 13.2,
}
"""Hinton et al. (2015, section 3) on MNIST (60,000 training and 10,000 test images, 1,010 of
them 3s): a 1200-1200 teacher makes ``teacher_errors``; an 800-800 student makes
``alone_errors`` alone and ``kd_errors`` distilled at ``T``. Distilled without any 3 it makes
``omit_errors`` (``omit_class_errors`` on 3s), and ``omit_errors_shifted``
(``omit_class_errors_shifted``) once the bias of 3 is raised by ``omit_shift``. Distilled on
7s and 8s only it errs on ``only_error_rate`` % of the test set, ``only_error_rate_shifted`` %
once the biases of 7 and 8 move by ``only_shift``."""
