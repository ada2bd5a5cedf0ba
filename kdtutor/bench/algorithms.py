r"""Chapter 6's suite: adversarial, multi-teacher, cross-modal, graph-based, attention-based,
data-free, quantized and lifelong distillation, each on the book protocol where its task
allows, with what it costs.

Every run is an :class:`Algorithm` of :data:`ALGORITHMS`: a registered method, its settings,
its data (``shapes``, its ``geometry`` view, or ``mnist5k``) and the *runner* that trains it
(:data:`RUNNERS`): ``plain`` (one ``fit``, the schemes suite's run), ``datafree`` (a
generator's batches), ``inversion`` (DeepInversion's pool, then KD on it), ``crossmodal``
(transfer, then fine-tuning: two rows), ``qat`` (from the saved fp32 student) and
``sequence`` (a class-incremental sequence of 5 tasks), plus ``reuse``: the references
(the student alone, KD, AT and IRG on ``cnn_large -> cnn_wide_s2``; the student alone and KD
on mnist5k) are copied from the knowledge suite's CSVs, never run again when they are there
(:mod:`kdtutor.bench._algorithm_runs` holds the runners). Students are built after seeding
with the run's seed, so seed ``s`` starts from the weights of the knowledge and schemes
suites' runs of seed ``s`` and rows of one seed can be compared image by image (McNemar).

Rows have the schemes suite's columns (:data:`~kdtutor.bench.schemes.SCHEME_COLUMNS`:
accuracy, per-image flags, learning curve, training and prior cost) and ``extra``, a JSON dict
of what a family adds: the discriminator's accuracy after every epoch, the teachers' weights,
the accuracy matrix and forgetting of a sequence, iCaRL's nearest-mean-of-exemplars matrix,
int8 size and latency, the synthesis time of a pool. The ``pair`` column names the data and
the pair (``cnn_large->cnn_wide_s2``, ``geometry:cnn_large->cnn_wide_s2``,
``mnist5k:cnn_medium->cnn_tiny``, ``vit_p8->vit_s``), so
:func:`~kdtutor.bench.report.gains_with_intervals` applies per group (baseline ``scratch/student``,
``geo_full/student``, ``mnist_scratch/student``, ``vit_scratch/student``); the ``family``
column is the chapter's family (:data:`FAMILIES`), ``reference`` for the copied rows.

Entries that need zoo teachers not trained yet (``shapes_resnet14``, ``shapes_vit_p8``: the
design note's section 1.4, recipes in :mod:`kdtutor.zoo_recipes.shapes`) are *pending*
(:func:`pending_reason`): the suite skips them, and refuses them by name with the reason and
the command that would make them runnable. They run as soon as the teachers are in the zoo.

``kdtutor bench --suite algorithms --preset book [--families ...] [--labels ...]`` writes
``data/results/algorithms_book.csv`` (resumable: a finished label and seed is never run
again). Design: ``docs/design/algorithms.md``, section 4.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import KDTutorError, unknown_name
from ..methods.dafl import DAFL_CIFAR
from ._algorithm_runs import BUDGETS, RUNNERS, TASKS, data_preset, pair_label, source_pair
from .knowledge import (
    canonical_preset,
    default_results_path,
    get_preset,
    load_results,
    resumed_rows,
    run_tasks,
    suite_header,
    write_results,
)
from .provenance import results_path
from .schemes import SCHEME_COLUMNS, SPLITS, Scheme, load_schemes
from .tuning import FACTORS

__all__ = [
    "ALGORITHMS",
    "ALGORITHM_COLUMNS",
    "BUDGETS",
    "DATA",
    "FAMILIES",
    "PUBLISHED_ALGORITHMS",
    "RUNNERS",
    "TASKS",
    "VIT_PAIR",
    "VIT_STUDENT",
    "Algorithm",
    "default_algorithms_path",
    "estimated_units",
    "get_algorithm",
    "load_algorithms",
    "page_rows",
    "pending_algorithms",
    "pending_reason",
    "run_algorithm",
    "run_algorithms_suite",
    "select_algorithms",
    "vit_optimizer",
]

FAMILIES: tuple[str, ...] = (
    "reference", "adversarial", "multi_teacher", "cross_modal", "graph", "attention",
    "data_free", "quantized", "lifelong",
)  # fmt: skip
"""The chapter's families in its order, after ``reference`` (the rows copied from the knowledge
suite). Multi-teacher, cross-modal, ... name the methods' own ``family`` values."""

DATA: tuple[str, ...] = ("shapes", "geometry", "mnist5k")
"""What an algorithm trains and is scored on: the book protocol's ``shapes``, its depth-like
``geometry`` view (:mod:`kdtutor.data.modalities`), or the mnist5k protocol."""

ALGORITHM_COLUMNS: tuple[str, ...] = (*SCHEME_COLUMNS, "extra")
"""The schemes suite's columns (``method`` is ``label/network``), then ``extra``: a JSON dict
(``data``, and what the runner measured beyond the columns; see the runners of
:mod:`kdtutor.bench._algorithm_runs`)."""

VIT_STUDENT = "vit_tiny(dim=48,depth=4,heads=3,patch_size=8)"
"""The attention family's student: ``vit_tiny`` at width 48, depth 4, 3 heads, patch 8 (86.6k
parameters, 17 tokens: the heads and tokens of the ViT teacher ``shapes_vit_p8``, so their
attention maps compare directly)."""

VIT_PAIR = "vit_p8->vit_s"
"""The ``pair`` of the attention family's rows (the ViT teacher and student are not a protocol
pair)."""

_MEMBERS = ("shapes_resnet14", "shapes_vit_p8")


@dataclass(frozen=True)
class Algorithm:
    """One entry of the suite: a registered method, how it is trained, and on what.

    Attributes:
        label: the rows' name (``label/network``); resumed by label and seed.
        family: the chapter's family (:data:`FAMILIES`).
        runner: how it trains (:data:`RUNNERS`).
        method: the registered distiller (``kdtutor methods``).
        hparams: settings replacing the method's defaults.
        student: the student's model spec (``None``: the data preset's student).
        teacher: ``"none"``, ``"zoo"`` (the data preset's teacher) or ``"zoo:<name>"``.
        data: ``"shapes"``, ``"geometry"`` or ``"mnist5k"`` (:data:`DATA`).
        epochs: the schedule's length (``None``: the preset's; the ``datafree``,
            ``inversion``, ``qat`` runners take theirs from :data:`BUDGETS`).
        split: ``"test"`` or ``"val"`` (the adversarial weight's grid).
        seeds: the seeds it always runs (``None``: the suite's); the grid runs seed 0 only.
        train: ``fit`` settings replacing the preset's (not ``epochs`` nor ``seed``).
        options: the runner's budget replacing :data:`BUDGETS`' book values (and ``ptq``,
            ``factor``).
        pair: the ``pair`` column (empty: the data preset's first pair).
        grid: the grid it belongs to (``adv_tune``); ``options["factor"]`` is its factor.
        tuned_by: the grid whose best factor on validation images sets its loss weights.
        vit: its ``train`` follows the ViT optimiser pilot of chapter 5 (:func:`vit_optimizer`).
        pending: why it cannot run yet, besides missing zoo teachers (``""``: nothing).
        units: the design note's cost per seed in U (one book run of ``cnn_wide_s2``,
            about 100 core-seconds).
    """

    label: str
    family: str
    runner: str
    method: str
    hparams: Mapping[str, Any] = field(default_factory=dict)
    student: str | None = None
    teacher: str = "none"
    data: str = "shapes"
    epochs: int | None = None
    split: str = "test"
    seeds: tuple[int, ...] | None = None
    train: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    pair: str = ""
    grid: str = ""
    tuned_by: str = ""
    vit: bool = False
    pending: str = ""
    units: float = 0.0

    def __post_init__(self) -> None:
        _check_algorithm(self)

    def scheme(self, epochs: int | None = None) -> Scheme:
        """The algorithm as the schemes suite's :class:`~kdtutor.bench.schemes.Scheme` (what
        its helpers read: label, method, settings, teacher, student, split)."""
        return Scheme(
            self.label, self.method, dict(self.hparams), epochs=epochs or self.epochs,
            teacher=self.teacher, student=self.student, train=dict(self.train),
            split=self.split,
        )  # fmt: skip


def _check_algorithm(a: Algorithm) -> None:
    """Refuse an entry that cannot describe a run (before anything trains)."""
    if not isinstance(a.label, str) or not a.label or "/" in a.label:
        raise KDTutorError(
            f"an algorithm's label must be a non-empty name without '/' (rows are "
            f"label/network), got {a.label!r}."
        )
    for name, value, allowed in (("family", a.family, FAMILIES), ("runner", a.runner, RUNNERS),
                                 ("data", a.data, DATA), ("split", a.split, SPLITS)):  # fmt: skip
        if value not in allowed:
            raise KDTutorError(
                f"algorithm {a.label!r}: {name} must be one of {', '.join(allowed)}; got {value!r}."
            )
    if not isinstance(a.method, str) or not a.method:
        raise KDTutorError(f"algorithm {a.label!r}: method must be a method name.")
    for name in ("hparams", "train", "options"):
        if not isinstance(getattr(a, name), Mapping):
            raise KDTutorError(f"algorithm {a.label!r}: {name} must be a dict.")
    if a.seeds is not None:
        seeds = tuple(a.seeds)
        if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
            raise KDTutorError(
                f"algorithm {a.label!r}: seeds must be non-negative integers, got {a.seeds!r}."
            )
        object.__setattr__(a, "seeds", seeds)
    if a.grid and "factor" not in a.options:
        raise KDTutorError(f"algorithm {a.label!r}: a grid entry needs options['factor'].")
    a.scheme()  # the schemes suite's checks: teacher, epochs, student, train


def _adv_grid() -> tuple[Algorithm, ...]:
    """The validation grid of the adversarial weight: the default 0.1 times each factor."""
    return tuple(
        Algorithm(
            f"adv_tune_x{factor:g}",
            "adversarial",
            "plain",
            "adversarial",
            {"adv_weight": float(f"{0.1 * factor:.12g}")},
            teacher="zoo",
            split="val",
            seeds=(0,),
            options={"factor": factor},
            grid="adv_tune",
            units=1.3,
        )
        for factor in FACTORS
    )


_DAFL_MNIST = {"gen_width": 16, "steps": 10}
_ALONE_CE = {"ce_weight": 1.0, "kd_weight": 0.0}

ALGORITHMS: tuple[Algorithm, ...] = (
    # references, copied from the knowledge suite's CSVs (run when missing)
    Algorithm("scratch", "reference", "reuse", "scratch", units=1.0),
    Algorithm("kd", "reference", "reuse", "kd", teacher="zoo", units=1.0),
    Algorithm("at", "reference", "reuse", "at", teacher="zoo", units=1.1),
    Algorithm("irg", "reference", "reuse", "irg", teacher="zoo", units=1.3),
    Algorithm("mnist_scratch", "reference", "reuse", "scratch", data="mnist5k", units=0.3),
    Algorithm("mnist_kd", "reference", "reuse", "kd", teacher="zoo", data="mnist5k", units=0.3),
    # adversarial: the weight's grid on validation images, then the runs at the chosen weight
    *_adv_grid(),
    Algorithm("adv_logits", "adversarial", "plain", "adversarial", teacher="zoo",
              tuned_by="adv_tune", units=1.3),
    Algorithm("adv_features", "adversarial", "plain", "adversarial", {"target": "features"},
              teacher="zoo", tuned_by="adv_tune", units=1.3),
    # multi-teacher: KD from each new teacher alone, then the three combinations
    Algorithm("kd_resnet14", "multi_teacher", "plain", "kd", teacher="zoo:shapes_resnet14",
              units=1.0),
    Algorithm("kd_vit_p8", "multi_teacher", "plain", "kd", teacher="zoo:shapes_vit_p8",
              units=1.0),
    Algorithm("mt_mean", "multi_teacher", "plain", "mtkd", {"teachers": _MEMBERS},
              teacher="zoo", units=1.05),
    Algorithm("mt_ebkd", "multi_teacher", "plain", "mtkd",
              {"teachers": _MEMBERS, "combine": "ebkd"}, teacher="zoo", units=1.05),
    Algorithm("mt_camkd", "multi_teacher", "plain", "mtkd",
              {"teachers": _MEMBERS, "combine": "camkd"}, teacher="zoo", units=1.1),
    # cross-modal: the geometry student alone (all labels, 1,000 labels), then the transfers
    Algorithm("geo_full", "cross_modal", "plain", "scratch", data="geometry", units=1.0),
    Algorithm("geo_few", "cross_modal", "crossmodal", "scratch", data="geometry", units=1.0),
    Algorithm("xm_logits", "cross_modal", "crossmodal", "crossmodal",
              {"transfer": "logits", "kd_weight": 1.0}, teacher="zoo", data="geometry",
              units=1.1),
    Algorithm("xm_gupta", "cross_modal", "crossmodal", "crossmodal", teacher="zoo",
              data="geometry", units=1.2),
    # graph
    Algorithm("mhgd", "graph", "plain", "mhgd", teacher="zoo", units=1.6),
    # attention: the ViT student alone, with KD, with attention KD, all from the ViT teacher
    Algorithm("vit_scratch", "attention", "plain", "scratch", student=VIT_STUDENT,
              pair=VIT_PAIR, vit=True, units=2.0),
    Algorithm("vit_kd", "attention", "plain", "kd", student=VIT_STUDENT,
              teacher="zoo:shapes_vit_p8", pair=VIT_PAIR, vit=True, units=2.0),
    Algorithm("vit_attn_kd", "attention", "plain", "attnkd", student=VIT_STUDENT,
              teacher="zoo:shapes_vit_p8", pair=VIT_PAIR, vit=True, units=2.2),
    # data-free on shapes (DAFL's CIFAR-10 settings) and on mnist5k (its MNIST settings)
    Algorithm("noise_kd", "data_free", "datafree", "dafl", {**DAFL_CIFAR, "generator": "noise"},
              teacher="zoo", units=0.5),
    Algorithm("dafl", "data_free", "datafree", "dafl", dict(DAFL_CIFAR), teacher="zoo",
              units=4.5),
    Algorithm("deepinversion", "data_free", "inversion", "deepinversion", teacher="zoo",
              units=3.5),
    Algorithm("mnist_noise_kd", "data_free", "datafree", "dafl", {"generator": "noise"},
              teacher="zoo", data="mnist5k", options=_DAFL_MNIST, units=0.2),
    Algorithm("mnist_dafl", "data_free", "datafree", "dafl", teacher="zoo", data="mnist5k",
              options=_DAFL_MNIST, units=1.0),
    Algorithm("mnist_deepinversion", "data_free", "inversion", "deepinversion", teacher="zoo",
              data="mnist5k", units=2.5),
    # quantized: PTQ (calibration only), QAT alone and with KD at 8 and 4 bits, QKD at 4
    Algorithm("ptq8", "quantized", "qat", "qat", {"bits": 8}, teacher="zoo",
              options={"ptq": True}, units=0.0),
    Algorithm("ptq4", "quantized", "qat", "qat", {"bits": 4}, teacher="zoo",
              options={"ptq": True}, units=0.0),
    Algorithm("qat8", "quantized", "qat", "qat", {"bits": 8, **_ALONE_CE}, teacher="zoo",
              units=0.6),
    Algorithm("qat8_kd", "quantized", "qat", "qat", {"bits": 8}, teacher="zoo", units=0.6),
    Algorithm("qat4", "quantized", "qat", "qat", {"bits": 4, **_ALONE_CE}, teacher="zoo",
              units=0.6),
    Algorithm("qat4_kd", "quantized", "qat", "qat", {"bits": 4}, teacher="zoo", units=0.6),
    Algorithm("qkd4", "quantized", "qat", "qkd", {"bits": 4}, teacher="zoo", units=0.8),
    # lifelong: fine-tuning (LwF without its term), LwF, iCaRL
    Algorithm("finetune", "lifelong", "sequence", "lwf", {"lamb": 0.0}, units=1.0),
    Algorithm("lwf", "lifelong", "sequence", "lwf", units=1.2),
    Algorithm("icarl", "lifelong", "sequence", "icarl", units=1.3),
)  # fmt: skip
"""The chapter's runs (design note ``docs/design/algorithms.md``, 4.1-4.2), in the order they
run, each family's baselines first:

* ``reference``: ``scratch``, ``kd``, ``at``, ``irg`` (``cnn_large -> cnn_wide_s2``) and
  ``mnist_scratch``, ``mnist_kd`` (``cnn_medium -> cnn_tiny``, mnist5k's 8-epoch protocol),
  copied from ``knowledge_<preset>.csv`` and ``knowledge_mnist5k.csv``;
* ``adversarial``: the grid ``adv_tune_x0.01`` ... ``adv_tune_x10`` (the weight 0.1 times
  :data:`~kdtutor.bench.tuning.FACTORS`, seed 0, validation images), then ``adv_logits`` at
  the grid's best weight, and ``adv_features`` (the discriminator on pooled embeddings);
* ``multi_teacher``: KD from ``shapes_resnet14`` and from ``shapes_vit_p8`` alone, then the
  three teachers' averaged targets, EBKD and CA-MKD weights (pending until the two teachers
  are trained);
* ``cross_modal``: the geometry student alone on all labels (``geo_full``, the ceiling) and
  on 1,000 (``geo_few``, same steps), then logit and feature (Gupta's) transfer, each
  followed by that fine-tuning;
* ``graph``: MHGD (IRG is a reference); ``attention``: the ViT student alone, with KD and
  with attention KD from ``shapes_vit_p8`` (pending until it is trained);
* ``data_free``: KD on Gaussian noise, DAFL and DeepInversion on shapes and on mnist5k;
* ``quantized``: PTQ at 8 and 4 bits, QAT alone and with KD at 8 and 4 bits, QKD at 4;
* ``lifelong``: fine-tuning, LwF and iCaRL over the 5 tasks of :data:`TASKS`."""


# -- published figures ---------------------------------------------------------------------------
def _published(
    family: str,
    dataset: str,
    network: str,
    setting: str,
    *,
    quoted: str,
    source: str,
    verified: bool,
    status: str,
    use: str = "comparison",
    alone: float | None = None,
    distilled: float | None = None,
    values: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """One published figure: the network alone and distilled where the source gives both
    (``gain`` = distilled - alone, points), other numbers in ``values``."""
    gain = round(distilled - alone, 2) if alone is not None and distilled is not None else None
    return {
        "family": family, "dataset": dataset, "network": network, "setting": setting,
        "alone": alone, "distilled": distilled, "gain": gain, "values": dict(values or {}),
        "quoted": quoted, "source": source, "verified": verified, "status": status, "use": use,
    }  # fmt: skip


_DAFL = (
    "huawei-noah/Data-Efficient-Model-Compression, DAFL/figure/{table} (the paper's table, "
    "read as an image)"
)
_VITKD = "yzd-v/cls_KD vitkd.md (ViTKD, Yang et al. 2022): ImageNet top-1"

PUBLISHED_ALGORITHMS: dict[str, tuple[dict[str, Any], ...]] = {
    "adversarial": (
        _published("adversarial", "ImageNet", "ResNet-50, MobileNetV3-S 0.75, EfficientNet-B0",
                   "MEAL V2: KL to the teachers' mean softmax + discriminator, no labels",
                   values={"MEAL-V1 ResNet-50": 78.21, "MEAL-V2 ResNet-50 (224)": 80.67,
                           "MEAL-V2 ResNet-50 (380)": 81.72,
                           "MEAL-V2 MobileNetV3-S 0.75": 67.60,
                           "MEAL-V2 EfficientNet-B0": 78.29},
                   quoted="MEAL-V1 ResNet-50 78.21; V2 ResNet-50 80.67 (224), 81.72 (380); "
                          "MobileNetV3-S 0.75 67.60; EfficientNet-B0 78.29",
                   source="szq0214/MEAL-V2 README, as quoted in REFERENCES-2.md (not re-read)",
                   verified=False, status="REF", use="context"),
    ),
    "multi_teacher": (),
    "cross_modal": (),
    "graph": (
        _published("graph", "CIFAR-100", "student of the paper", "MHGD vs the student alone",
                   values={"gain": 7.05}, quoted="+7.05% over the student alone",
                   source="sseung0703/MHGD README (the paper's abstract)", verified=True,
                   status="verified"),
    ),
    "attention": (
        _published("attention", "ImageNet", "DeiT-Tiny", "ViTKD, teacher DeiT III-Small",
                   alone=74.42, distilled=76.06, quoted="DeiT-Tiny 74.42 -> 76.06",
                   source=_VITKD, verified=True, status="verified"),
        _published("attention", "ImageNet", "DeiT-Small", "ViTKD", alone=80.55,
                   distilled=81.95, quoted="DeiT-Small 80.55 -> 81.95", source=_VITKD,
                   verified=True, status="verified"),
        _published("attention", "ImageNet", "DeiT-Base", "ViTKD", alone=81.76,
                   distilled=83.46, quoted="DeiT-Base 81.76 -> 83.46", source=_VITKD,
                   verified=True, status="verified"),
    ),
    "data_free": (
        _published("data_free", "MNIST", "LeNet-5 -> LeNet-5-half", "DAFL", alone=98.65,
                   distilled=98.20,
                   values={"teacher": 98.91, "alone": 98.65, "kd": 98.91, "noise_kd": 88.01,
                           "dafl": 98.20},
                   quoted="teacher 98.91, student alone 98.65, KD 98.91, KD on "
                          "normal-distribution noise 88.01, DAFL 98.20",
                   source=_DAFL.format(table="Table1.jpg"), verified=True, status="verified"),
        _published("data_free", "CIFAR-10", "ResNet-34 -> ResNet-18", "DAFL", alone=93.92,
                   distilled=92.22,
                   values={"teacher": 95.58, "alone": 93.92, "kd": 94.34, "noise_kd": 14.89,
                           "dafl": 92.22},
                   quoted="95.58 / 93.92 / 94.34 / noise 14.89 / DAFL 92.22",
                   source=_DAFL.format(table="Table2.jpg"), verified=True, status="verified"),
        _published("data_free", "CIFAR-100", "ResNet-34 -> ResNet-18", "DAFL", alone=76.53,
                   distilled=74.47,
                   values={"teacher": 77.84, "alone": 76.53, "kd": 76.87, "noise_kd": 1.44,
                           "dafl": 74.47},
                   quoted="77.84 / 76.53 / 76.87 / noise 1.44 / DAFL 74.47",
                   source=_DAFL.format(table="Table2.jpg"), verified=True, status="verified"),
        _published("data_free", "CIFAR-10", "ResNet-34 -> ResNet-18",
                   "DeepInversion (2,000 iterations), DAFL, ZSKT: accuracy and synthesis hours",
                   values={"teacher": 95.70, "deepinversion_2k": 93.26, "dafl": 92.22,
                           "zskt": 93.32, "deepinversion_2k_hours": 42.1, "dafl_hours": 2.73,
                           "zskt_hours": 1.67},
                   quoted="teacher 95.70; DeepInv-2k 93.26 (42.1 h); DAFL 92.22 (2.73 h); "
                          "ZSKT 93.32 (1.67 h)",
                   source="zju-vipa/Fast-Datafree README (FastDF's benchmark)", verified=True,
                   status="verified"),
    ),
    "quantized": (
        _published("quantized", "ImageNet", "ResNet, ResNet-18", "QKD (qualitative)",
                   quoted="full-precision accuracy recovered at W3A3 (ResNet); +1.3 points over "
                          "prior methods at W4A4 (ResNet-18)",
                   source="Kim et al. (2019), QKD, the abstract", verified=True,
                   status="verified", use="direction"),
    ),
    "lifelong": (
        _published("lifelong", "CIFAR-100", "VGG16", "LwF toy reproduction, 90 old + 10 new "
                   "classes: old task with and without LwF", alone=63.10, distilled=69.83,
                   quoted="old task 69.83 with LwF vs 63.10 without",
                   source="mtayyab454/lwf, as quoted in REFERENCES-2.md; absent from the "
                          "stored README version: not found at the source",
                   verified=False, status="not found at source", use="none"),
    ),
}  # fmt: skip
"""Published figures for the chapter's closing table, keyed by family (design note 4.4).

Each entry holds ``family``, ``dataset``, ``network``, ``setting``, ``alone`` and
``distilled`` (top-1 %, where the source gives both), ``gain`` (points), ``values`` (the other
numbers), ``quoted`` (as the source prints them), ``source``, ``verified`` (read at the source:
repository file or the paper's abstract page), ``status`` (``"verified"``, ``"REF"``: quoted
from the project's reference notes and not re-read, or ``"not found at source"``) and
``use``: ``"comparison"`` (beside our gain), ``"direction"`` (qualitative), ``"context"``
(not a gain over the same student) or ``"none"`` (not to be quoted as a result).
Multi-teacher (CA-MKD's README has no table) and cross-modal (Gupta et al.'s detection mAPs
were not read) have no verified figure. All are results of networks trained for hundreds of
epochs on ImageNet, CIFAR or MNIST, not this suite's 20 epochs on ``shapes``: compare
directions, not sizes."""


# -- the catalogue -------------------------------------------------------------------------------
def get_algorithm(label: str, catalogue: Sequence[Algorithm] = ALGORITHMS) -> Algorithm:
    """The entry of ``catalogue`` labelled ``label``.

    Raises:
        UnknownNameError: no such label (the message lists them).
    """
    for algorithm in catalogue:
        if algorithm.label == label:
            return algorithm
    raise unknown_name(
        "algorithm label", label, [a.label for a in catalogue],
        hint="See kdtutor.bench.algorithms.ALGORITHMS.",
    )  # fmt: skip


def _check_catalogue(catalogue: Sequence[Algorithm]) -> tuple[Algorithm, ...]:
    if isinstance(catalogue, (str, Algorithm)) or not isinstance(catalogue, Sequence):
        raise KDTutorError(f"a catalogue is a sequence of Algorithm rows, got {catalogue!r}.")
    entries = tuple(catalogue)
    for entry in entries:
        if not isinstance(entry, Algorithm):
            raise KDTutorError(f"a catalogue holds Algorithm rows, got {entry!r}.")
    labels = [a.label for a in entries]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if not entries or twice:
        raise KDTutorError(
            "a catalogue needs at least one algorithm and distinct labels (a row is resumed by "
            f"its label and seed); repeated: {twice}."
        )
    return entries


def _zoo_teachers(algorithm: Algorithm) -> list[str]:
    """The zoo teachers an algorithm loads (its teacher and a multi-teacher run's members)."""
    names = []
    if algorithm.teacher == "zoo":
        names.append(data_preset(algorithm.data, "book").pairs[0].teacher)
    elif algorithm.teacher.startswith("zoo:"):
        names.append(algorithm.teacher[4:])
    names.extend(str(n).removeprefix("zoo:") for n in algorithm.hparams.get("teachers", ()))
    return names


def pending_reason(algorithm: Algorithm) -> str:
    """Why ``algorithm`` cannot run yet (``""`` when it can): its ``pending`` note, or the zoo
    teachers it needs that have no recipe or were never trained, with the command that trains
    them. Entries pending only on the zoo become runnable once the teachers are trained."""
    if algorithm.pending:
        return algorithm.pending
    from ..zoo import all_recipes, trained_teachers

    trained = trained_teachers()
    recipes = all_recipes()
    missing = []
    for name in dict.fromkeys(_zoo_teachers(algorithm)):
        if name not in recipes:
            missing.append(
                f"{name} has no zoo recipe (add one to a module of kdtutor/zoo_recipes/, "
                f"then `kdtutor zoo train {name}`)"
            )
        elif name not in trained:
            missing.append(f"{name} is not trained (`kdtutor zoo train {name}`)")
    return "needs zoo teachers: " + "; ".join(missing) if missing else ""


def pending_algorithms(catalogue: Sequence[Algorithm] = ALGORITHMS) -> dict[str, str]:
    """Every pending entry of ``catalogue`` and why (:func:`pending_reason`), in its order."""
    reasons = {a.label: pending_reason(a) for a in _check_catalogue(catalogue)}
    return {label: why for label, why in reasons.items() if why}


def estimated_units(
    catalogue: Sequence[Algorithm] = ALGORITHMS,
    *,
    seeds: int = 3,
    pending: bool = True,
    references: bool = False,
) -> float:
    """The suite's cost in U (one book run of ``cnn_wide_s2``, about 100 core-seconds) by the
    design note's per-run estimates: ``units`` times the seeds of each entry (``seeds``, or
    its own: the grid's one). With the defaults, the design note's 122 U (pending entries
    included, references excluded: they are copied)."""
    total = 0.0
    for a in _check_catalogue(catalogue):
        if (a.family == "reference" and not references) or (not pending and pending_reason(a)):
            continue
        total += a.units * (len(a.seeds) if a.seeds is not None else seeds)
    return round(total, 4)


def select_algorithms(
    families: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    catalogue: Sequence[Algorithm] = ALGORITHMS,
) -> list[Algorithm]:
    """The entries of ``families`` and ``labels`` (all of ``catalogue`` when both are
    ``None``), in catalogue order, with what they depend on: the grid that tunes an entry
    (``tuned_by``) and, unless chosen by label only, the references of their data.

    Raises:
        UnknownNameError: a family or label ``catalogue`` does not have (the message lists them).
    """
    entries = _check_catalogue(catalogue)
    known = [f for f in FAMILIES if any(a.family == f for a in entries)]
    for family in families or ():
        if family not in known:
            raise unknown_name(
                "family", family, known, hint="See kdtutor.bench.algorithms.FAMILIES."
            )
    for label in labels or ():
        get_algorithm(label, entries)
    everything = families is None and labels is None
    chosen = {
        a.label
        for a in entries
        if everything or a.family in (families or ()) or a.label in (labels or ())
    }
    tuned = {a.tuned_by for a in entries if a.label in chosen and a.tuned_by}
    chosen |= {a.label for a in entries if a.grid and a.grid in tuned}
    if families is not None:
        datas = {a.data for a in entries if a.label in chosen}
        chosen |= {a.label for a in entries if a.family == "reference" and a.data in datas}
    return [a for a in entries if a.label in chosen]


def default_algorithms_path(preset_name: str) -> Path:
    """``data/results/algorithms_<preset>.csv`` (``$KDTUTOR_RESULTS`` replaces the folder)."""
    return results_path(f"algorithms_{canonical_preset(preset_name)}.csv")


def load_algorithms(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Rows and header of an algorithms CSV: the schemes suite's conversions
    (:func:`~kdtutor.bench.schemes.load_schemes`) and ``extra`` parsed from JSON."""
    rows, header = load_schemes(path)
    for row in rows:
        row["extra"] = json.loads(row["extra"]) if row.get("extra") else {}
    return rows, header


def vit_optimizer(preset_name: str) -> tuple[str, str]:
    """The optimiser of the ViT rows and where it comes from: chapter 5's pilot
    (:func:`~kdtutor.bench.architecture.pilot_choice` on ``architecture_<preset>.csv``) when
    that CSV holds both pilots, else the protocol's ``"sgd"``."""
    from .architecture import default_architecture_path, pilot_choice

    path = default_architecture_path(preset_name)
    if path.exists():
        try:
            return pilot_choice(load_schemes(path)[0]), f"the ViT pilot in {path.name}"
        except KDTutorError:
            pass
    return "sgd", "the protocol (no ViT pilot rows yet)"


def _with_vit(algorithm: Algorithm, optimizer: str) -> Algorithm:
    if not algorithm.vit or optimizer == "sgd":
        return algorithm
    from .architecture import ADAMW

    return dataclasses.replace(algorithm, train={**ADAMW, **algorithm.train})


def _tuned(
    algorithm: Algorithm, rows: Sequence[Mapping[str, Any]], catalogue: Sequence[Algorithm]
) -> Algorithm:
    """``algorithm`` with the loss weights of the best entry of its grid (validation accuracy
    of the last epoch; ties go to the factor nearest 1, as
    :func:`~kdtutor.bench.tuning.tuned_factors` decides)."""
    from ..methods import get_method
    from .tuning import tuned_factors

    grid = [a for a in catalogue if a.grid == algorithm.tuned_by]
    results = []
    for entry in grid:
        found = [r for r in rows if r["scheme"] == entry.label and r["network"] == "student"]
        if not found:
            raise KDTutorError(
                f"{algorithm.label!r} takes its loss weight from the {algorithm.tuned_by!r} grid "
                f"(validation images), which has no {entry.label!r} row yet: run it first "
                f"(`kdtutor bench --suite algorithms --labels {entry.label}`)."
            )
        results.append({"method": algorithm.method, "factor": entry.options["factor"],
                        "last_acc": float(found[0]["last_acc"])})  # fmt: skip
    factor = tuned_factors(results)[algorithm.method]
    best = next(a for a in grid if a.options["factor"] == factor)
    weights = {k: best.hparams[k] for k in get_method(algorithm.method).loss_weights
               if k in best.hparams}  # fmt: skip
    return dataclasses.replace(
        algorithm, hparams={**algorithm.hparams, **weights},
        options={**algorithm.options, "tuned_factor": factor},
    )  # fmt: skip


# -- running ---------------------------------------------------------------------------------------
def run_algorithm(
    algorithm: Algorithm | str,
    seed: int,
    preset: str = "book",
    *,
    catalogue: Sequence[Algorithm] = ALGORITHMS,
    optimizer: str | None = None,
) -> list[dict[str, Any]]:
    """Train one algorithm on one seed and return its rows (:data:`ALGORITHM_COLUMNS`,
    ``extra`` as JSON).

    Args:
        algorithm: an :class:`Algorithm`, or the label of one in ``catalogue``.
        seed: the run's seed (its student's initial weights and batch order).
        preset: ``"smoke"`` or ``"book"``.
        catalogue: where a label is looked up.
        optimizer: the ViT rows' optimiser (``None``: :func:`vit_optimizer`'s).

    Raises:
        KDTutorError: the algorithm is pending (:func:`pending_reason`), or tuned by a grid
            without results (pass the tuned entry itself: the suite resolves it).
    """
    if isinstance(algorithm, str):
        algorithm = get_algorithm(algorithm, catalogue)
    preset_name = canonical_preset(preset)
    data_preset(algorithm.data, preset_name)  # refuses other presets
    why = pending_reason(algorithm)
    if why:
        raise KDTutorError(f"algorithm {algorithm.label!r} cannot run yet: {why}.")
    if algorithm.tuned_by and "tuned_factor" not in algorithm.options:
        raise KDTutorError(
            f"{algorithm.label!r} takes its loss weight from the {algorithm.tuned_by!r} grid: run "
            "it through run_algorithms_suite (which resolves the grid's choice)."
        )
    from ..methods import get_method

    get_method(algorithm.method)
    choice = optimizer or (vit_optimizer(preset_name)[0] if algorithm.vit else "sgd")
    algorithm = _with_vit(algorithm, choice)
    rows = RUNNERS[algorithm.runner](algorithm, seed, preset_name)
    pair = pair_label(algorithm, preset_name)
    out = []
    for row in rows:
        extra = {"data": algorithm.data, **row.pop("extra", {})}
        if algorithm.vit:
            extra["optimizer"] = choice
        if algorithm.tuned_by:
            extra["tuned"] = {"grid": algorithm.tuned_by,
                              "factor": algorithm.options["tuned_factor"]}  # fmt: skip
        row.update(pair=pair, family=algorithm.family, seed=seed)
        row["extra"] = json.dumps(extra, sort_keys=True)
        out.append({column: row.get(column, "") for column in ALGORITHM_COLUMNS})
    return out


def _run_task(task: tuple[Algorithm, int, str, str]) -> list[dict[str, Any]]:
    """One (algorithm, seed) of the suite (module level: worker processes run it)."""
    algorithm, seed, preset_name, optimizer = task
    return run_algorithm(algorithm, seed, preset_name, optimizer=optimizer)


def _default_reuse(preset_name: str) -> dict[str, Path]:
    reuse = {"shapes": default_results_path(preset_name)}
    if preset_name == "book":
        reuse["mnist5k"] = default_results_path("mnist5k")
    return reuse


def _reference_cost(algorithm: Algorithm, preset_name: str) -> dict[str, Any]:
    """The FLOPs columns of a reference copied from the knowledge suite: a step of a fresh
    distiller counted (:func:`~kdtutor.bench.schemes._counted_cost`) times the preset's
    epochs, and the teacher's training as the prior (the schemes suite's ``kd`` charges)."""
    from ..methods import build_distiller
    from ._algorithm_runs import _student, resolve_teacher
    from .cost import network_flops
    from .knowledge import method_hparams, preset_data
    from .schemes import _counted_cost

    preset = data_preset(algorithm.data, preset_name)
    train = preset_data(preset, "train")
    student = preset.pairs[0].student
    teacher, prior, label = resolve_teacher(algorithm, preset, preset_name, 0, student)
    shape = tuple(train.images.shape[1:])
    distiller = build_distiller(
        algorithm.method, _student(student, 0, train), teacher,
        method_hparams(algorithm.method, preset.epochs, len(train)), input_shape=shape,
    )  # fmt: skip
    counted = _counted_cost(distiller, train, preset.epochs, preset.batch_size)
    infer = network_flops(distiller.student, shape)
    return {"train_flops": counted.flops, "prior": prior, "teacher": label,
            "infer_flops": infer, "epochs": preset.epochs}  # fmt: skip


def _copy_references(
    chosen: Sequence[Algorithm],
    seeds: Sequence[int],
    preset_name: str,
    reuse: Mapping[str, str | os.PathLike[str] | None],
    done: set[tuple[str, int]],
) -> list[dict[str, Any]]:
    """Rows of the reference entries copied from the knowledge suite's CSVs (``reuse``: data
    -> CSV), for the seeds not yet ``done``."""
    copied = []
    for algorithm in chosen:
        path = reuse.get(algorithm.data) if algorithm.runner == "reuse" else None
        if path is None or not Path(path).exists():
            continue
        wanted = [s for s in (algorithm.seeds or seeds) if (algorithm.label, s) not in done]
        source = {
            int(r["seed"]): r
            for r in load_results(path)[0]
            if r["pair"] == source_pair(algorithm.data) and r["method"] == algorithm.method
            and r.get("correct")
        }  # fmt: skip
        found = [s for s in wanted if s in source]
        if not found:
            continue
        cost = _reference_cost(algorithm, preset_name)
        prior = cost["prior"]
        for seed in found:
            src = source[seed]
            seconds = float(src["seconds"])
            row = {
                **{k: src[k] for k in ("student", "best_acc", "best_epoch", "last_acc",
                                       "seconds", "hparams", "correct")},
                "pair": pair_label(algorithm, preset_name), "teacher": cost["teacher"],
                "method": f"{algorithm.label}/student", "family": algorithm.family,
                "seed": seed, "scheme": algorithm.label, "network": "student",
                "epochs": cost["epochs"], "train_flops": f"{cost['train_flops']:.12g}",
                "prior_flops": f"{prior.flops:.12g}",
                "total_flops": f"{cost['train_flops'] + prior.flops:.12g}",
                "infer_flops": f"{cost['infer_flops']:.12g}", "train_seconds": seconds,
                "prior_seconds": round(prior.seconds, 2),
                "total_seconds": round(seconds + prior.seconds, 2), "curve": "",
                "extra": json.dumps({"data": algorithm.data,
                                     "copied_from": Path(path).name}, sort_keys=True),
            }  # fmt: skip
            copied.append({column: row.get(column, "") for column in ALGORITHM_COLUMNS})
    return copied


def _charge_scratch_seconds(row: dict[str, Any], rows: Sequence[Mapping[str, Any]]) -> None:
    """Add the seconds of this seed's fp32 student (the ``scratch`` row) to a quantized row,
    which :func:`~kdtutor.bench._algorithm_runs.run_qat` charges only in FLOPs."""
    for other in rows:
        if other["method"] == "scratch/student" and int(other["seed"]) == int(row["seed"]):
            extra = float(other["train_seconds"])
            row["prior_seconds"] = round(float(row["prior_seconds"]) + extra, 2)
            row["total_seconds"] = round(float(row["total_seconds"]) + extra, 2)
            return


def run_algorithms_suite(
    preset_name: str = "book",
    *,
    families: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    out: str | os.PathLike[str] | None = None,
    jobs: int = 1,
    command: str | None = None,
    log: Callable[[str], None] | None = print,
    catalogue: Sequence[Algorithm] = ALGORITHMS,
    reuse: Mapping[str, str | os.PathLike[str] | None] | None = None,
    optimizer: str | None = None,
) -> list[dict[str, Any]]:
    """Run every (algorithm, seed) not yet in ``out``; returns all rows.

    References are copied first from the knowledge suite's CSVs (``reuse``) where they hold
    the seed, and run otherwise; then every other entry runs in catalogue order, and the
    entries tuned by a grid (``adv_logits``) after the grid, at its choice. Pending entries
    (:func:`pending_reason`) are skipped with a line in the log; asked for by label, or as a
    family with nothing runnable, they are refused with the reason. Rows are written
    atomically after each run, so an interrupted suite loses only the runs in flight.

    Args:
        preset_name: ``"smoke"`` or ``"book"``.
        families: run only these families (:data:`FAMILIES`), with their references.
        labels: or (also) these labels.
        seeds: the seeds (default: the preset's; the grid always runs seed 0).
        out: the CSV (default :func:`default_algorithms_path`).
        jobs: processes running algorithms in parallel.
        command: the command recorded in the CSV's header.
        log: where progress lines go (``None``: nowhere).
        catalogue: the entries (default :data:`ALGORITHMS`).
        reuse: data (``"shapes"``, ``"mnist5k"``) -> the knowledge CSV its references are
            copied from (default: ``knowledge_<preset>.csv``, and ``knowledge_mnist5k.csv``
            at book scale; ``{}`` copies nothing).
        optimizer: the ViT rows' optimiser (``None``: :func:`vit_optimizer`'s choice).
    """
    preset_name = canonical_preset(preset_name)
    if preset_name not in ("smoke", "book"):
        raise KDTutorError(
            f"the algorithms suite runs at preset 'smoke' or 'book', not {preset_name!r}."
        )
    if optimizer not in (None, "sgd", "adamw"):
        raise KDTutorError(f"the ViT optimizer is 'sgd' or 'adamw', got {optimizer!r}.")
    preset = get_preset(preset_name)
    entries = _check_catalogue(catalogue)
    if isinstance(families, str) or isinstance(labels, str):
        raise KDTutorError("families and labels are lists of names, e.g. ['quantized'].")
    chosen = select_algorithms(families, labels, entries)
    reasons = {a.label: pending_reason(a) for a in chosen}
    for label in labels or ():
        if reasons[label]:
            raise KDTutorError(f"algorithm {label!r} cannot run yet: {reasons[label]}.")
    for family in families or ():
        members = [a for a in chosen if a.family == family]
        if members and all(reasons[a.label] for a in members):
            why = "; ".join(f"{a.label}: {reasons[a.label]}" for a in members)
            raise KDTutorError(f"no algorithm of family {family!r} can run yet ({why}).")
    runnable = [a for a in chosen if not reasons[a.label]]
    seeds = list(seeds if seeds is not None else preset.seeds)
    path = Path(out) if out is not None else default_algorithms_path(preset_name)
    rows = resumed_rows(path, preset_name)
    done = {(r["scheme"], int(r["seed"])) for r in rows}
    sources = _default_reuse(preset_name) if reuse is None else dict(reuse)
    copied = _copy_references(runnable, seeds, preset_name, sources, done)
    rows.extend(copied)
    done |= {(r["scheme"], int(r["seed"])) for r in copied}
    choice, why = (optimizer, "asked for") if optimizer else vit_optimizer(preset_name)
    header = [
        *suite_header(preset_name, command or "kdtutor " + " ".join(sys.argv[1:])),
        f"vit optimizer: {choice} ({why})",
    ]

    def tasks_of(entries: Sequence[Algorithm]) -> list[tuple[Algorithm, int, str, str]]:
        return [(a, s, preset_name, choice) for a in entries for s in (a.seeds or seeds)
                if (a.label, s) not in done]  # fmt: skip

    first = tasks_of([a for a in runnable if not a.tuned_by])
    later = [a for a in runnable if a.tuned_by]
    if log:
        for label, reason in reasons.items():
            if reason:
                log(f"skipped {label}: {reason}")
        for a, seed, *_ in first:
            if a.runner == "reuse":
                where = sources.get(a.data)
                log(f"reference {a.label} seed {seed} runs: {where or 'no knowledge CSV'} has "
                    "no row of it with per-image flags")  # fmt: skip
        todo = len(first) + len(tasks_of(later))
        log(f"{todo} algorithm runs to do ({len(done) - len(copied)} already in {path}"
            + (f", {len(copied)} references copied)" if copied else ")"))  # fmt: skip

    def record(new: list[dict[str, Any]]) -> None:
        for row in new:
            if row["family"] == "quantized":
                _charge_scratch_seconds(row, rows)
        rows.extend(new)
        write_results(path, header, rows, ALGORITHM_COLUMNS)
        if log:
            for row in new:
                log(
                    f"{row['method']:<26} seed {row['seed']}  last {float(row['last_acc']):.2f}"
                    f"  {float(row['total_flops']) / 1e12:.2f} TFLOPs"
                    f"  {float(row['seconds']):.0f} s"
                )

    if copied or not path.exists():
        write_results(path, header, rows, ALGORITHM_COLUMNS)
    run_tasks(_run_task, first, jobs, record)  # type: ignore[arg-type]
    second = tasks_of([_tuned(a, rows, entries) for a in later if tasks_of([a])])
    run_tasks(_run_task, second, jobs, record)  # type: ignore[arg-type]
    return rows


def page_rows(
    scale: str, labels: Sequence[str] | None = None, *, rerun: bool = False, jobs: int = 2
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The suite's rows and header (:func:`load_algorithms`), as a page of chapter 6 reads them.

    At ``"smoke"`` scale a tiny suite of ``labels`` (default: every runnable entry) runs now,
    one epoch on 256 images, into a temporary folder that also takes the disk cache
    (``KDTUTOR_CACHE`` is set for this process), copying nothing. At any other scale the
    committed ``data/results/algorithms_book.csv`` is read; with ``rerun`` the runs it lacks
    are made first (hours on 2 cores).
    """
    if scale == "smoke":
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="kdtutor-algorithms-"))
        os.environ["KDTUTOR_CACHE"] = str(folder / "cache")
        out = folder / "algorithms_smoke.csv"
        run_algorithms_suite(
            "smoke", labels=labels, out=out, log=None, command="smoke page", reuse={}
        )
        return load_algorithms(out)
    out = results_path("algorithms_book.csv")
    if rerun:
        run_algorithms_suite("book", labels=labels, out=out, jobs=jobs)
    return load_algorithms(out)
