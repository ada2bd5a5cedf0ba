r"""Chapter 8's suite: distillation for detection, segmentation, depth, pose, faces,
super-resolution, video and lanes, each on its task's protocol, scored per image.

Every run is an :class:`Application` of :data:`APPLICATIONS` (the design note
``docs/design/applications.md``, table 4.3): a task, a label, a registered method with its
settings, a student and a teacher. Each task's data, schedule and cost are its
:class:`TaskProtocol` in :data:`APP_PROTOCOL` (table 4.2): the split sizes of
:data:`~kdtutor.data.task_splits.TASK_SIZES`, the students' batch and epochs, the book's SGD
(lr 0.05, cosine; detection lr 0.01 with gradients clipped to norm 35, FGD's FCOS config;
super-resolution Adam 1e-3 without weight decay).

**A run.** The student is built after seeding with the run's seed, so a KD run and the
``scratch`` run of one seed start from the same weights and see the batches in the same
order; its fixed normalisation holds the train split's channel statistics, as the zoo's
teachers do (:func:`~kdtutor.data.task_splits.split_stats`). ``fit`` scores it after every
epoch on the first ``eval_size`` (500) validation samples (the learning curve, ``best_score``
and ``best_epoch``); after the last epoch the student is scored once on the whole test split
(``score``, in the task's ``metric``) and its **per-image statistics** are written to
``cache_dir()/applications/<preset>/<task>/<label>-seed<s>.npz``
(:func:`~kdtutor.data.diskcache.save_npz`): right/wrong flags (video), intersections and unions
per class (segmentation), AbsRel sums and pixel counts (depth), PCK@0.2 hits and scored slots
per crop (pose), recall@1 hits per query (faces), PSNR-Y per image (super-resolution), CULane
TP/FP/FN per road (lanes), the detections and ground-truth boxes (detection). The per-image
statistics give the test score back exactly (:func:`per_image_score`), and
:func:`application_gains` resamples them. Seed-0 students are kept under
``cache_dir()/applications/<preset>/weights/`` for the pages' figures.

Labels without a teacher run their task's supervised baseline (``det_scratch``,
``seg_scratch``, ``depth_scratch``, ``pose_scratch``, ``face_scratch``, ``sr_scratch``,
``scratch``, ``lane_scratch``, ``sad``), the losses the zoo's teachers train with.
Super-resolution has a ``bicubic`` row (:data:`BICUBIC`: bicubic upsampling, no training).
Weight grids (``<label>_x<factor>``, ``fpd_alpha<a>``) run seed 0 only and are reported as
curves; the main rows keep their default weights (open question 7.4.6).

**Presets.** ``book``: the protocol, seeds 0-2, the eight zoo teachers of
:mod:`kdtutor.zoo_recipes.applications` (``zoo:<name>``; the suite refuses to start when one is
not trained, naming ``kdtutor zoo train <name>``). ``smoke``: every task in seconds, to check
the plumbing: 24 training samples, 8 validation and 16 test samples (faces: 200 and 400, two
faces per identity at least, so that recall and verification are defined), one epoch, batch
8, seed 0, no channel statistics (0 and 1), and for every ``zoo:`` teacher a **randomly
initialised** small network of the task (:attr:`TaskProtocol.smoke_teacher`, seeded by
:data:`SMOKE_TEACHER_SEED`): its scores say nothing about distillation.

``kdtutor bench --suite applications --preset book [--tasks ...] [--labels ...]`` writes
``data/results/applications_<preset>.csv`` (:data:`APPLICATION_COLUMNS`, the provenance of
:func:`~kdtutor.bench.knowledge.suite_header` on top); a finished ``(task, label, seed)`` is
never run again. :func:`write_application_gains` writes the gains with their intervals to
``data/results/applications_gains.csv``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataNotFoundError, KDTutorError, unknown_name
from .knowledge import (
    method_hparams,
    read_suite_csv,
    resumed_rows,
    run_tasks,
    suite_header,
    write_results,
)
from .provenance import results_path, torch_threads
from .significance import _percentile_bootstrap
from .stats import mean_std

__all__ = [
    "APPLICATIONS",
    "APPLICATION_COLUMNS",
    "APP_PRESETS",
    "APP_PROTOCOL",
    "BICUBIC",
    "GAIN_COLUMNS",
    "PUBLISHED_APPLICATIONS",
    "SMOKE_TEACHER_SEED",
    "Application",
    "TaskProtocol",
    "application_gains",
    "default_applications_path",
    "default_gains_path",
    "estimated_units",
    "get_application",
    "load_applications",
    "per_image_score",
    "run_application",
    "run_applications_suite",
    "select_applications",
    "task_protocol",
    "write_application_gains",
]

APP_PRESETS: tuple[str, ...] = ("smoke", "book")
"""The suite's presets (module docstring)."""

BICUBIC = "bicubic"
"""The ``method`` of super-resolution's ``bicubic`` row: the LR image upsampled x4 bicubically
(``F.interpolate(mode="bicubic", align_corners=False)``), not trained."""

SMOKE_TEACHER_SEED = 1234
"""Seed the smoke preset's random teachers are built with (the same teacher for every label
and seed of a task, so the teacher cache is shared)."""

_SMOKE_SIZES = {"train": 24, "validation": 8, "test": 16}
_SMOKE_FACES = {"train": 24, "validation": 200, "test": 400}  # >= 2 faces per identity
_SMOKE_BATCH = 8
_GRID_SEEDS = (0,)
_EVAL_BATCH = 256


@dataclass(frozen=True)
class TaskProtocol:
    """One task's data, schedule, networks and cost (the design note's table 4.2).

    Attributes:
        task: the suite's name of the task (``pose``, ``face``, ``video`` ...).
        task_name: the :mod:`kdtutor.tasks` task that scores it (``keypoints``,
            ``retrieval``, ``classification`` ...).
        dataset: the :func:`~kdtutor.data.task_splits.task_split` dataset.
        sizes: samples of the ``train``, ``validation`` and ``test`` splits (scenes for pose:
            about two crops each).
        eval_size: validation samples scored after every epoch (the learning curve).
        batch_size: the students' batch.
        epochs: the students' epochs.
        student: the students' model spec.
        teacher: the zoo teacher's name (:mod:`kdtutor.zoo_recipes.applications`).
        metric: the metric of the ``score`` column (the task's primary; detection: COCO's
            mAP@[.5:.95], ``map``).
        train: ``fit`` settings beyond the book's (optimizer, lr, gradient clipping).
        image_steps: training samples seen by a student run (sizes x epochs).
        ratio: a student step's cost relative to ``cnn_wide_s2``'s (the probes of 4.1).
        units: U (one book run of ``cnn_wide_s2``, about 100 core-seconds) of a student run
            alone, data and evaluation included (x1.10).
        smoke_teacher: the small network the smoke preset builds at random in place of the
            zoo teacher.
    """

    task: str
    task_name: str
    dataset: str
    sizes: Mapping[str, int]
    batch_size: int
    epochs: int
    student: str
    teacher: str
    metric: str
    ratio: float
    units: float
    smoke_teacher: str
    train: Mapping[str, Any] = field(default_factory=dict)
    eval_size: int = 500

    @property
    def image_steps(self) -> int:
        """Training samples a student run sees (pose: scenes x 2 crops, about)."""
        crops = 2 if self.task == "pose" else 1
        return self.sizes["train"] * crops * self.epochs

    @property
    def pair(self) -> str:
        """``teacher->student``, the ``pair`` column of the task's rows."""
        return f"{self.teacher}->{self.student.partition('(')[0]}"


def _protocol(
    task: str, task_name: str, dataset: str, student: str, teacher: str, metric: str, **rest: Any
) -> TaskProtocol:
    from ..data.task_splits import TASK_SIZES

    return TaskProtocol(
        task, task_name, dataset, dict(TASK_SIZES[dataset]), student=student, teacher=teacher,
        metric=metric, **rest,
    )  # fmt: skip


APP_PROTOCOL: dict[str, TaskProtocol] = {
    p.task: p
    for p in (
        _protocol("detection", "detection", "scenes", "fcos_s", "scenes_fcos", "map",
                  batch_size=16, epochs=20, ratio=11.0, units=2.42, smoke_teacher="fcos_s",
                  train={"lr": 0.01, "max_grad_norm": 35.0}),
        _protocol("segmentation", "segmentation", "scenes", "lraspp_s", "scenes_lraspp", "miou",
                  batch_size=32, epochs=20, ratio=5.5, units=1.21, smoke_teacher="lraspp_s"),
        _protocol("depth", "depth", "scenes", "depth_s", "scenes_depth", "absrel",
                  batch_size=32, epochs=20, ratio=4.7, units=1.03, smoke_teacher="depth_s"),
        _protocol("pose", "keypoints", "scenes", "pose_s", "scenes_pose", "pck02",
                  batch_size=32, epochs=20, ratio=2.2, units=0.97, smoke_teacher="pose_s"),
        _protocol("face", "retrieval", "faces", "facenet_s(with_head=False)", "faces_cnn",
                  "recall1", batch_size=64, epochs=20, ratio=0.84, units=0.92,
                  smoke_teacher="facenet_s"),
        _protocol("superres", "superres", "sr", "edsr_s", "shapes_edsr", "psnr_y",
                  batch_size=32, epochs=25, ratio=4.0, units=1.10, smoke_teacher="edsr_s",
                  train={"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0}),
        _protocol("video", "classification", "clips", "tsn_s", "clips_c3d", "accuracy",
                  batch_size=32, epochs=15, ratio=5.0, units=1.65,
                  smoke_teacher="c3d_t(widths=(8,8,16,16,16,32))"),
        _protocol("lanes", "lanes", "roads", "lanenet_s", "roads_lane", "f1",
                  batch_size=32, epochs=20, ratio=10.3, units=2.27, smoke_teacher="lanenet_s"),
    )
}  # fmt: skip
"""The protocol of each task at book scale (design note 4.2), in the chapter's order:

============  ======================  =====  ======  ===========  =====  =================
task          train / val / test      batch  epochs  image-steps  ratio  U per scratch run
============  ======================  =====  ======  ===========  =====  =================
detection     4,000 / 1,000 / 2,000   16     20      80 k         11.0   2.42
segmentation  same scenes             32     20      80 k         5.5    1.21
depth         same scenes             32     20      80 k         4.7    1.03
pose          crops of 4,000 scenes   32     20      ~160 k       2.2    0.97
face          20,000 / 1,000 / 2,000  64     20      400 k        0.84   0.92
superres      4,000 / 500 / 2,000     32     25      100 k        4.0    1.10
video         8,000 / 1,000 / 2,000   32     15      120 k        5.0    1.65
lanes         4,000 / 1,000 / 2,000   32     20      80 k         10.3   2.27
============  ======================  =====  ======  ===========  =====  =================

The epochs are the design's before its pilot, which may move them."""


def task_protocol(task: str, preset: str = "book") -> TaskProtocol:
    """The protocol of ``task`` at ``preset``: :data:`APP_PROTOCOL`'s at book scale; at smoke
    scale its tiny sizes, one epoch, batch 8 (module docstring).

    Raises:
        UnknownNameError: an unknown task or preset.
    """
    preset = _check_preset(preset)
    protocol = _get_protocol(task)
    if preset == "book":
        return protocol
    sizes = _SMOKE_FACES if protocol.dataset == "faces" else _SMOKE_SIZES
    return dataclasses.replace(
        protocol, sizes=dict(sizes), epochs=1, batch_size=min(_SMOKE_BATCH, protocol.batch_size),
        eval_size=sizes["validation"],
    )  # fmt: skip


def _get_protocol(task: str) -> TaskProtocol:
    try:
        return APP_PROTOCOL[task]
    except (KeyError, TypeError):
        raise unknown_name(
            "application task", str(task), APP_PROTOCOL,
            hint="See kdtutor.bench.applications.APP_PROTOCOL.",
        ) from None  # fmt: skip


def _check_preset(preset: str) -> str:
    if preset not in APP_PRESETS:
        raise unknown_name(
            "applications preset", str(preset), APP_PRESETS,
            hint="The applications suite runs at 'smoke' or 'book'.",
        )  # fmt: skip
    return preset


# -- the catalogue ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Application:
    """One entry of the suite: a task, a label and how its student is trained.

    Attributes:
        task: a task of :data:`APP_PROTOCOL`.
        label: the rows' name within the task; resumed by ``(task, label, seed)``.
        method: a registered method of the task (``kdtutor methods --task ...``), or
            :data:`BICUBIC`.
        hparams: settings replacing the method's defaults.
        student: the student's model spec (default: the protocol's).
        teacher: ``"none"`` or ``"zoo:<name>"`` (the smoke preset replaces a zoo teacher by a
            random small one).
        seeds: the seeds it always runs (``None``: the suite's; grids and ``bicubic``: 0).
        grid: the label whose loss weights this entry scales (``""``: not a grid entry).
        factor: the grid's factor (or FPD's ``alpha``).
        units: the design note's cost of one seed in U (the protocol's scratch run times the
            method's overhead: x1.05 cached KD, x1.10-1.12 FGD, SKD, SAD, RKD, x1.25 FAKD).
    """

    task: str
    label: str
    method: str
    hparams: Mapping[str, Any] = field(default_factory=dict)
    student: str = ""
    teacher: str = "none"
    seeds: tuple[int, ...] | None = None
    grid: str = ""
    factor: float | None = None
    units: float = 0.0

    def __post_init__(self) -> None:
        protocol = _get_protocol(self.task)
        if not isinstance(self.label, str) or not self.label or "/" in self.label:
            raise KDTutorError(
                f"an application's label must be a non-empty name without '/', got {self.label!r}."
            )
        if not isinstance(self.method, str) or not self.method:
            raise KDTutorError(f"application {self.label!r}: method must be a method name.")
        if not isinstance(self.hparams, Mapping):
            raise KDTutorError(f"application {self.label!r}: hparams must be a dict.")
        if self.teacher != "none" and not (
            isinstance(self.teacher, str) and self.teacher.startswith("zoo:") and self.teacher[4:]
        ):
            raise KDTutorError(
                f"application {self.label!r}: teacher must be 'none' or 'zoo:<name>', got "
                f"{self.teacher!r}."
            )
        if self.seeds is not None:
            seeds = tuple(self.seeds)
            if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0
                                for s in seeds):  # fmt: skip
                raise KDTutorError(
                    f"application {self.label!r}: seeds must be non-negative integers, got "
                    f"{self.seeds!r}."
                )
            object.__setattr__(self, "seeds", seeds)
        if not self.student:
            object.__setattr__(self, "student", protocol.student)


def _entries(task: str, units: float, teacher: str, rows: Sequence[tuple]) -> list[Application]:
    """A task's entries from ``(label, method, hparams, overhead[, options])`` rows: units
    = the protocol's scratch run times the overhead; a method that needs no teacher gets
    none."""
    out = []
    needs_none = {BICUBIC, "det_scratch", "seg_scratch", "depth_scratch", "pose_scratch",
                  "face_scratch", "sr_scratch", "scratch", "lane_scratch", "sad"}  # fmt: skip
    for label, method, hparams, overhead, *options in rows:
        extra = options[0] if options else {}
        who = "none" if method in needs_none else teacher
        out.append(Application(task, label, method, hparams, teacher=who,
                               units=round(units * overhead, 4), **extra))  # fmt: skip
    return out


def _grid(label: str, method: str, base: Mapping[str, Any], weights: Sequence[str],
          factors: Sequence[float], overhead: float) -> list[tuple]:  # fmt: skip
    """Grid rows ``<label>_x<factor>``: ``base`` with each of ``weights`` times the factor."""
    return [
        (f"{label}_x{f:g}", method, {**base, **{w: float(f"{base.get(w, 1.0) * f:.12g}")
                                                for w in weights}},
         overhead, {"seeds": _GRID_SEEDS, "grid": label, "factor": f})
        for f in factors
    ]  # fmt: skip


_X = (0.3, 3.0)
_KD_CLS = {"hint_weight": 0.0}
_FPN_HINT = {"kd_weight": 0.0}
_KD_MARS = {"kd_weight": 0.9, "ce_weight": 0.1}  # the book's KD weights (T = 4), ours

APPLICATIONS: tuple[Application, ...] = (
    *_entries("detection", 2.42, "zoo:scenes_fcos", [
        ("scratch", "det_scratch", {}, 1.0),
        ("kd_cls", "det_kd", _KD_CLS, 1.05),
        ("fpn_hint", "det_kd", _FPN_HINT, 1.05),
        ("fgd", "fgd", {}, 1.12),
        *_grid("kd_cls", "det_kd", _KD_CLS, ["kd_weight"], _X, 1.05),
        *_grid("fpn_hint", "det_kd", _FPN_HINT, ["hint_weight"], _X, 1.05),
    ]),
    *_entries("segmentation", 1.21, "zoo:scenes_lraspp", [
        ("scratch", "seg_scratch", {}, 1.0),
        ("pixel", "skd", {"pair_weight": 0.0}, 1.05),
        ("skd", "skd", {}, 1.10),
        ("cwd", "cwd", {}, 1.05),
    ]),
    *_entries("depth", 1.03, "zoo:scenes_depth", [
        ("scratch", "depth_scratch", {}, 1.0),
        ("depth_kd", "depth_kd", {}, 1.05),
        ("depth_kd_hint", "depth_kd", {"hint_weight": 1.0}, 1.12),
        *_grid("depth_kd", "depth_kd", {}, ["response_weight"], _X, 1.05),
    ]),
    *_entries("pose", 0.97, "zoo:scenes_pose", [
        ("scratch", "pose_scratch", {}, 1.0),
        ("fpd", "fpd", {}, 1.05),
        *[(f"fpd_alpha{a:g}", "fpd", {"alpha": a}, 1.05,
           {"seeds": _GRID_SEEDS, "grid": "fpd", "factor": a}) for a in (0.25, 0.75, 1.0)],
    ]),
    *_entries("face", 0.92, "zoo:faces_cnn", [
        ("scratch", "face_scratch", {}, 1.0),
        ("kd", "face_kd", {"emb_weight": 0.0}, 1.05),
        ("emb", "face_kd", {"kd_weight": 0.0}, 1.05),
        ("rkd", "face_rkd", {}, 1.10),
        *_grid("emb", "face_kd", {"kd_weight": 0.0}, ["emb_weight"], _X, 1.05),
    ]),
    *_entries("superres", 1.10, "zoo:shapes_edsr", [
        ("bicubic", BICUBIC, {}, 0.0, {"seeds": (0,)}),
        ("scratch", "sr_scratch", {}, 1.0),
        ("sr_kd", "sr_kd", {}, 1.05),
        ("fakd", "fakd", {}, 1.25),
    ]),
    *_entries("video", 1.65, "zoo:clips_c3d", [
        ("scratch", "scratch", {}, 1.0),
        ("kd", "kd", {}, 1.05),
        ("mars", "mars", {}, 1.05),
        ("kd_mars", "mars", _KD_MARS, 1.08),
    ]),
    *_entries("lanes", 2.27, "zoo:roads_lane", [
        ("scratch", "lane_scratch", {}, 1.0),
        ("sad", "sad", {}, 1.10),
        ("lane_kd", "lane_kd", {}, 1.05),
        ("sad_kd", "lane_kd", {"sad_weight": 0.1}, 1.10),
        *_grid("lane_kd", "lane_kd", {}, ["kd_weight"], _X, 1.05),
    ]),
)  # fmt: skip
"""The chapter's runs (design note 4.3), each task's ``scratch`` first:

* detection: ``kd_cls`` (Chen's soft term alone: ``det_kd`` with ``hint_weight=0``),
  ``fpn_hint`` (the FPN hint alone), ``fgd``; grids x0.3 and x3 of both weights;
* segmentation: ``pixel`` (SKD's pixel term alone), ``skd`` (pixel + pair), ``cwd``;
* depth: ``depth_kd`` (the teacher's log-depth map), ``depth_kd_hint`` (and a hint of weight
  1, ours); grid x0.3, x3 of the response weight;
* pose: ``fpd`` (alpha 0.5); grid alpha 0.25, 0.75, 1;
* face: ``kd`` (logit KD on the identity heads), ``emb`` (embedding KD), ``rkd`` (RKD-D and
  RKD-A); grid x0.3, x3 of the embedding weight;
* super-resolution: ``bicubic`` (no training), ``sr_kd``, ``fakd``;
* video: ``kd`` (T 4, 0.9/0.1), ``mars`` (alpha 50), ``kd_mars`` (both: MARS with the book's
  KD weights, ours);
* lanes: ``sad`` (no teacher), ``lane_kd``, ``sad_kd`` (``lane_kd`` with SAD's 0.1); grid
  x0.3, x3 of the KD weight.

With 3 seeds: 84 student runs (~134 U) and 13 grid runs (~22 U), :func:`estimated_units`."""


def get_application(
    task: str, label: str, catalogue: Sequence[Application] = APPLICATIONS
) -> Application:
    """The entry of ``catalogue`` for ``(task, label)``.

    Raises:
        UnknownNameError: no such task or label (the message lists the task's labels).
    """
    _get_protocol(task)
    found = [a for a in catalogue if a.task == task]
    for entry in found:
        if entry.label == label:
            return entry
    raise unknown_name(
        f"{task} label", label, [a.label for a in found],
        hint="See kdtutor.bench.applications.APPLICATIONS.",
    )  # fmt: skip


def _check_catalogue(catalogue: Sequence[Application]) -> tuple[Application, ...]:
    if isinstance(catalogue, (str, Application)) or not isinstance(catalogue, Sequence):
        raise KDTutorError(f"a catalogue is a sequence of Application rows, got {catalogue!r}.")
    entries = tuple(catalogue)
    if not entries or any(not isinstance(e, Application) for e in entries):
        raise KDTutorError("a catalogue holds at least one Application row, and only those.")
    keys = [(a.task, a.label) for a in entries]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise KDTutorError(
            f"a catalogue's (task, label) pairs must be distinct (a row is resumed by task, "
            f"label and seed); repeated: {twice}."
        )
    return entries


def select_applications(
    tasks: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    catalogue: Sequence[Application] = APPLICATIONS,
) -> list[Application]:
    """The entries of ``tasks`` (all when ``None``) whose label is one of ``labels`` (all when
    ``None``), in catalogue order.

    Raises:
        KDTutorError: ``tasks`` or ``labels`` given as one string.
        UnknownNameError: a task the catalogue does not have, or a label none of the chosen
            tasks has (the messages list the valid names).
    """
    entries = _check_catalogue(catalogue)
    if isinstance(tasks, str) or isinstance(labels, str):
        raise KDTutorError("tasks and labels are lists of names, e.g. ['detection'].")
    known = list(dict.fromkeys(a.task for a in entries))
    for task in tasks or ():
        if task not in known:
            raise unknown_name(
                "application task", str(task), known,
                hint="See kdtutor.bench.applications.APP_PROTOCOL.",
            )  # fmt: skip
    chosen = [a for a in entries if tasks is None or a.task in tasks]
    available = list(dict.fromkeys(a.label for a in chosen))
    for label in labels or ():
        if label not in available:
            where = "/".join(tasks) if tasks else "application"
            raise unknown_name(
                f"{where} label", str(label), available,
                hint="See kdtutor.bench.applications.APPLICATIONS.",
            )  # fmt: skip
    return [a for a in chosen if labels is None or a.label in labels]


def estimated_units(catalogue: Sequence[Application] = APPLICATIONS, *, seeds: int = 3) -> float:
    """The suite's cost in U (one book run of ``cnn_wide_s2``, about 100 core-seconds) by the
    design note's per-run estimates: each entry's ``units`` times its seeds (``seeds``, or
    its own). With the defaults, the student runs (134 U) and the weight grids (22 U) of the
    design's table 4.3; the teachers (74 U) are the zoo's, not counted here."""
    return round(
        sum(a.units * (len(a.seeds) if a.seeds is not None else seeds)
            for a in _check_catalogue(catalogue)), 4,
    )  # fmt: skip


# -- published figures -----------------------------------------------------------------------------
def _published(
    task: str,
    method: str,
    dataset: str,
    metric: str,
    setting: str,
    *,
    quoted: str,
    source: str,
    status: str,
    scale: str,
    alone: float | None = None,
    distilled: float | None = None,
    teacher: float | None = None,
    values: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """One published figure (``gain`` = distilled - alone, in the metric's units)."""
    gain = round(distilled - alone, 4) if alone is not None and distilled is not None else None
    return {
        "task": task, "method": method, "dataset": dataset, "metric": metric,
        "setting": setting, "teacher": teacher, "alone": alone, "distilled": distilled,
        "gain": gain, "values": dict(values or {}), "quoted": quoted, "source": source,
        "status": status, "scale": scale,
    }  # fmt: skip


_FGD = "yzd-v/FGD README (design note, section 5)"
_COCO = ("COCO (118 k images, 80 classes), R101/RX101 teachers, 24 epochs, the student's neck "
         "and head initialised from the teacher's; ours 4,000 64-px scenes, 3 classes, no "
         "inheritance")  # fmt: skip
_FACEX = "JDAI-CV/FaceX-Zoo README at 84186a1 (design note, section 5)"
_FACES = "millions of real face images, LFW / MegaFace verification; ours 20,000 cartoon faces"


def _fgd(detector: str, alone: float, distilled: float) -> dict[str, Any]:
    return _published(
        "detection", "fgd", "COCO", "mAP", f"{detector} R50 student, FGD",
        alone=alone, distilled=distilled, quoted=f"{detector} R50 {alone} -> {distilled}",
        source=_FGD, status="verified", scale=_COCO,
    )  # fmt: skip


def _facex(method: str, lfw: float, megaface: float) -> dict[str, Any]:
    return _published(
        "face", method, "LFW / MegaFace", "accuracy %", f"FaceX-Zoo KDF, {method}",
        values={"lfw": lfw, "megaface": megaface}, quoted=f"{method} {lfw} / {megaface}",
        source=_FACEX, status="verified", scale=_FACES,
    )  # fmt: skip


PUBLISHED_APPLICATIONS: dict[str, tuple[dict[str, Any], ...]] = {
    "detection": (
        _fgd("RetinaNet", 37.4, 40.7), _fgd("Faster R-CNN", 38.4, 42.0),
        _fgd("RepPoints", 38.6, 42.0), _fgd("FCOS", 38.5, 42.7), _fgd("GFL", 40.2, 43.5),
        _published("detection", "fgd", "COCO", "mAP", "Mask R-CNN R50 student, FGD (box; mask "
                   "35.4 -> 37.8)", alone=39.2, distilled=42.1,
                   values={"mask_alone": 35.4, "mask_distilled": 37.8},
                   quoted="Mask R-CNN R50 39.2 -> 42.1 (mask 35.4 -> 37.8)", source=_FGD,
                   status="verified", scale=_COCO),
        _published("detection", "fgd", "COCO", "mAP", "mmrazor's FGD, RetinaNet R50",
                   alone=37.4, distilled=40.5, quoted="RetinaNet 37.4 -> 40.5",
                   source="mmrazor, as quoted in REFERENCES-2.md (not re-read)", status="REF",
                   scale=_COCO),
        _published("detection", "cwd", "COCO", "mAP", "mmrazor's CWD, GFL R50", alone=40.2,
                   distilled=41.9, quoted="GFL 40.2 -> 41.9",
                   source="mmrazor, as quoted in REFERENCES-2.md (not re-read)", status="REF",
                   scale=_COCO),
        _published("detection", "det_kd", "PASCAL VOC, KITTI, COCO", "mAP",
                   "Chen et al. 2017; Li, Jin, Yan 2017", quoted="no number quoted",
                   source="the papers (not read)", status="not verified", scale=_COCO),
    ),
    "segmentation": (
        _published("segmentation", "skd", "CamVid", "mIoU", "ESPNet student, SKD",
                   alone=57.8, distilled=61.4, values={"with_unlabelled": 65.1},
                   quoted="ESPNet 57.8 -> 61.4 (65.1 with 2,000 unlabelled images)",
                   source="irfanICMLL/structure_knowledge_distillation README",
                   status="verified",
                   scale="Cityscapes / CamVid at 480 x 360 and up, ImageNet-pretrained "
                         "students; ours 64-px scenes, 4 classes"),
        _published("segmentation", "cwd", "Cityscapes", "mIoU",
                   "PSPNet R101 (79.76) -> R18, CWD", teacher=79.76, alone=74.87,
                   distilled=75.54, quoted="R18 74.87 -> 75.54 (official README: runs vary "
                                           "74.6-75.0)",
                   source="mmrazor, as quoted in REFERENCES-2.md (not re-read)", status="REF",
                   scale="Cityscapes at 512 x 1024, ImageNet-pretrained students"),
    ),
    "depth": (),
    "pose": (
        _published("pose", "fpd", "MPII", "PCKh@0.5",
                   "8-stack hourglass teacher -> 2-stack mobile student, FPD (unofficial "
                   "reproduction)", teacher=88.33, alone=84.69, distilled=85.41,
                   values={"with_unlabelled": 85.69},
                   quoted="teacher 88.33; student 84.69 -> 85.41 (85.69 with unlabelled images)",
                   source="yuanyuanli85/Fast_Human_Pose_Estimation_Pytorch README",
                   status="verified",
                   scale="25.6 M / 2.3 M parameters, 256-px person crops, PCKh@0.5; ours "
                         "483 k / 75 k, 32-px crops, PCK@0.2 of the box side"),
    ),
    "face": (
        _facex("student (MobileFaceNet)", 99.70, 94.22), _facex("teacher", 99.82, 97.48),
        _facex("SoftTarget", 99.67, 94.29), _facex("FitNet", 99.72, 94.21),
        _facex("SNN_MIMIC", 99.73, 94.40), _facex("PKT", 99.63, 93.74),
        _published("face", "student", "LFW / MegaFace", "accuracy %",
                   "FaceX-Zoo KDF, the student at another revision",
                   values={"lfw": 99.60, "megaface": 90.39}, quoted="99.60 / 90.39",
                   source="JDAI-CV/FaceX-Zoo README at 75f2e37", status="verified",
                   scale=_FACES),
        _published("face", "rkd", "CUB-200-2011", "Recall@1",
                   "ResNet50-512 teacher -> ResNet18-64 student, RKD-D 1 + RKD-A 2",
                   values={"recall1": 57.63}, quoted="CUB Recall@1 57.63 (a reproduction)",
                   source="lenscloth/RKD README (the recipe, verified); the number: the "
                          "DeepSparkHub reproduction as quoted in REFERENCES-2.md",
                   status="REF",
                   scale="unseen CUB classes, ImageNet-pretrained backbones; ours 200 unseen "
                         "cartoon identities"),
    ),
    "superres": (
        _published("superres", "fakd", "Set5", "PSNR dB", "RCAN x4, 15.59 M -> 5.17 M, FAKD",
                   teacher=32.638, alone=32.321, distilled=32.462,
                   quoted="Set5 32.638 / 32.321 alone / 32.462 FAKD",
                   source="Vincent-Hoo/Knowledge-Distillation-for-Super-resolution "
                          "figure/result.png, as quoted in REFERENCES-2.md (not re-read)",
                   status="REF", scale="DIV2K 192-px patches, 200 epochs; ours 64-px shapes"),
        _published("superres", "fakd", "Urban100", "PSNR dB",
                   "RCAN x4, 15.59 M -> 5.17 M, FAKD", teacher=26.748, alone=26.340,
                   distilled=26.422, quoted="Urban100 26.748 / 26.340 / 26.422",
                   source="Vincent-Hoo/Knowledge-Distillation-for-Super-resolution "
                          "figure/result.png, as quoted in REFERENCES-2.md (not re-read)",
                   status="REF", scale="DIV2K 192-px patches, 200 epochs; ours 64-px shapes"),
    ),
    "video": (
        _published("video", "mars", "Kinetics-400 / HMDB51 / UCF101", "top-1 %",
                   "MARS (RGB stream distilled from flow), ResNeXt-101",
                   values={"kinetics400": 72.7, "hmdb51": 79.3, "ucf101": 97.4,
                           "rgb_kinetics400": 65.1, "rgb_hmdb51": 70.1, "rgb_ucf101": 94.5},
                   quoted="Kinetics-400 72.7 (no pretraining); HMDB51 79.3, UCF101 97.4 "
                          "(Kinetics pretraining); RGB baselines 65.1 / 70.1 / 94.5 (other "
                          "papers')",
                   source="craston/MARS README (a commented-out table)", status="verified",
                   scale="an optical-flow teacher of the same ResNeXt-101, 16-frame 112-px "
                         "clips; ours a 3D CNN teacher, 8-frame 32-px clips"),
    ),
    "lanes": (
        _published("lanes", "sad", "CULane / TuSimple", "F1 %", "ENet-SAD vs SCNN",
                   values={"culane_f1_enet_sad": 72.0, "culane_f1_scnn": 71.6,
                           "tusimple_enet_sad": 96.64, "tusimple_scnn": 96.53,
                           "params_m_enet_sad": 0.98, "params_m_scnn": 20.72,
                           "ms_enet_sad": 13.4, "ms_scnn": 133.5},
                   quoted="CULane F1 72.0 vs SCNN 71.6 (0.98 M vs 20.72 M parameters, 13.4 "
                          "vs 133.5 ms); TuSimple 96.64 vs 96.53; ENet without SAD: not in "
                          "the README",
                   source="cardwing/Codes-for-Lane-Detection README at 2b81eaa",
                   status="verified",
                   scale="288 x 800 real roads, ENet pretrained, SAD added late in training; "
                         "ours 48 x 128 procedural roads"),
    ),
}  # fmt: skip
"""Published figures for chapter 8's closing table (design note, section 5), keyed by task.

Each entry: ``task``, ``method``, ``dataset``, ``metric``, ``setting``, ``teacher``,
``alone``, ``distilled`` (where the source gives them), ``gain`` (distilled - alone),
``values`` (other numbers), ``quoted`` (as the source prints them), ``source``, ``status``
(``"verified"``: read at the source by the design note; ``"REF"``: quoted from the project's
reference notes, not re-read; ``"not verified"``) and ``scale`` (the difference of scale to
state beside ours). Depth has no verified figure. None of these was re-read for this module:
the status is the design note's."""


# -- running ---------------------------------------------------------------------------------------
APPLICATION_COLUMNS: tuple[str, ...] = (
    "task", "pair", "teacher", "student", "label", "method", "seed", "metric", "score",
    "best_score", "best_epoch", "seconds", "flops_step", "hparams", "extra",
)  # fmt: skip
"""The CSV's columns (design note 4.4): ``score`` is ``metric`` on the whole test split after
the last epoch; ``best_score`` and ``best_epoch`` the best of the per-epoch scores on the
validation samples; ``seconds`` ``fit``'s (the epochs and their validation scoring);
``flops_step`` the FLOPs of one training step at the protocol's batch
(:func:`~kdtutor.bench.cost.step_flops`, the teacher's outputs read from the cache);
``hparams`` the method's settings (JSON); ``extra`` a JSON dict: every test ``metrics``, the
learning ``curve``, ``val_last``, ``per_class_iou`` (segmentation), ``images`` (the per-image
statistics' count), ``stats`` (their npz, relative to ``cache_dir()``), ``weights`` (seed 0),
``params``, ``infer_flops`` (per sample), ``teacher_flops`` (per sample), ``grid`` and
``factor``."""


def default_applications_path(preset: str) -> Path:
    """``data/results/applications_<preset>.csv`` (``$KDTUTOR_RESULTS`` replaces the folder)."""
    return results_path(f"applications_{_check_preset(preset)}.csv")


def _stats_path(preset: str, task: str, label: str, seed: int) -> Path:
    return Path("applications") / preset / task / f"{label}-seed{seed}.npz"


def _stats_key(preset: str, task: str, label: str, seed: int) -> str:
    return f"applications/{preset}/{task}/{label}/seed{seed}"


class _Bicubic:
    """Bicubic x``scale`` upsampling as a network (the ``bicubic`` row)."""

    def __init__(self, scale: int) -> None:
        self.scale = scale

    def __call__(self, x: Any) -> Any:
        import torch.nn.functional as F

        return F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)


def _check_runnable(entry: Application, preset: str) -> None:
    """Refuse an entry whose method is not of its task, or (book) whose teacher is missing."""
    from ..launch import _method_task
    from ..methods import get_method

    protocol = _get_protocol(entry.task)
    if entry.method != BICUBIC:
        method = get_method(entry.method)
        if _method_task(method) != protocol.task_name:
            raise KDTutorError(
                f"application {entry.task}/{entry.label}: method {entry.method!r} is a "
                f"{_method_task(method)} method, but the task is scored as "
                f"{protocol.task_name!r}: pick one of `kdtutor methods --task "
                f"{protocol.task_name}`."
            )
        if method.requires_teacher and entry.teacher == "none":
            raise KDTutorError(
                f"application {entry.task}/{entry.label}: method {entry.method!r} needs a "
                "teacher: give teacher='zoo:<name>'."
            )
    if preset == "book":
        missing = _missing_teachers([entry])
        if missing:
            raise KDTutorError(_missing_message(missing))


def _missing_teachers(entries: Sequence[Application]) -> list[str]:
    """The zoo teachers of ``entries`` that no manifest lists (not trained yet)."""
    from ..zoo import trained_teachers

    trained = trained_teachers()
    names = dict.fromkeys(a.teacher[4:] for a in entries if a.teacher.startswith("zoo:"))
    return [n for n in names if n not in trained]


def _missing_message(missing: Sequence[str]) -> str:
    commands = "; ".join(f"`kdtutor zoo train {name}`" for name in missing)
    return (
        f"the book preset needs zoo teachers that are not trained: {', '.join(missing)}. "
        f"Train them first ({commands}; recipes in kdtutor.zoo_recipes.applications), or "
        "run only the labels without a teacher (--labels scratch)."
    )


def _resolve_teacher(entry: Application, protocol: TaskProtocol, preset: str, loaded: Any) -> Any:
    """``(teacher network or None, teacher column)``: the zoo teacher at book scale, a random
    small network of the task at smoke scale (module docstring)."""
    if entry.teacher == "none":
        return None, "none"
    from ..launch import _build_network
    from ..seeding import seed_everything

    if preset == "smoke":
        seed_everything(SMOKE_TEACHER_SEED)
        network = _build_network(protocol.smoke_teacher, loaded, role="teacher", stats=False)
        return network.eval(), f"random:{protocol.smoke_teacher}"
    from ..models.trained_on import check_trained_on
    from ..zoo import load_teacher

    teacher = load_teacher(entry.teacher[4:])
    check_trained_on(
        teacher, role="teacher", dataset=loaded.train.name, num_classes=loaded.num_classes,
        input_shape=loaded.input_shape,
    )  # fmt: skip
    return teacher, entry.teacher


def run_application(entry: Application, seed: int, preset: str = "book") -> dict[str, Any]:
    """Train one entry on one seed and return its CSV row (:data:`APPLICATION_COLUMNS`,
    ``hparams`` and ``extra`` as JSON), writing its per-image statistics (and, for seed 0, the
    student's weights) under ``cache_dir()/applications/<preset>/``.

    Args:
        entry: the :class:`Application` (:func:`get_application`).
        seed: the run's seed (its student's initial weights and batch order).
        preset: ``"smoke"`` or ``"book"``.

    Raises:
        KDTutorError: the method is not of the entry's task; at book scale, its zoo teacher
            is not trained (the message names ``kdtutor zoo train <name>``).
    """
    if not isinstance(entry, Application):
        raise KDTutorError(
            f"run_application takes an Application (get_application(task, label)), got {entry!r}."
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise KDTutorError(f"seed must be a non-negative integer, got {seed!r}.")
    preset = _check_preset(preset)
    _check_runnable(entry, preset)
    with torch_threads(1):
        return _run(entry, seed, preset, task_protocol(entry.task, preset))


def _run(entry: Application, seed: int, preset: str, protocol: TaskProtocol) -> dict[str, Any]:
    import kdtutor.models.dense  # noqa: F401  (registers the networks)

    from ..data.diskcache import cache_dir, save_npz
    from ..data.task_splits import task_split
    from ..launch import Loaded, _build_network, _data_shape
    from ..methods import build_distiller
    from ..seeding import seed_everything
    from ..train import fit
    from ..train.recorder import save_student
    from .cost import network_flops, step_flops

    def split(name: str) -> Any:
        size = protocol.sizes[name] if name != "validation" else protocol.eval_size
        return task_split(protocol.dataset, protocol.task_name, name, size)

    train, val, test = split("train"), split("validation"), split("test")
    loaded = Loaded(train, test, None, *_data_shape(train))
    teacher, teacher_column = _resolve_teacher(entry, protocol, preset, loaded)
    seed_everything(seed)
    student = _build_network(entry.student, loaded, role="student", stats=preset == "book")
    task = train.task
    extra: dict[str, Any] = {}
    if entry.method == BICUBIC:
        network: Any = _Bicubic(int(getattr(task, "scale", 4)))
        val_metrics, _ = _score(network, val, protocol.task_name)
        value = val_metrics[protocol.metric]
        best, best_epoch, seconds, flops, hparams = value, 0, 0.0, 0.0, {}
        extra.update(curve=[], val_last=value)
    else:
        values = {**method_hparams(entry.method, protocol.epochs, len(train)),
                  **entry.hparams}  # fmt: skip
        distiller = build_distiller(
            entry.method, student, teacher, values, input_shape=loaded.input_shape
        )
        hparams = dataclasses.asdict(distiller.hparams)
        result = fit(
            distiller, train, val, seed=seed, epochs=protocol.epochs,
            batch_size=protocol.batch_size, metric=protocol.metric, eval_batch_size=_EVAL_BATCH,
            **protocol.train,
        )  # fmt: skip
        best, best_epoch, seconds = result.best_acc, result.best_epoch, result.seconds
        curve = [h[f"test_{task.short}"] for h in result.history]
        evaluating = sum(h.get("eval_seconds", 0.0) for h in result.history)
        extra.update(
            curve=[round(v, 6) for v in curve],
            val_last=result.last_acc,
            eval_seconds=round(evaluating, 2),
        )
        batch = next(iter(_batches(train, protocol.batch_size, task)))
        flops = step_flops(distiller, batch, teacher_cached=teacher is not None)
        network = student
    metrics, stats = _score(network, test, protocol.task_name)
    score = metrics[protocol.metric]
    stats_path = _stats_path(preset, entry.task, entry.label, seed)
    save_npz(cache_dir() / stats_path, _stats_key(preset, entry.task, entry.label, seed), **stats)
    extra.update(metrics=metrics, images=_count(stats), stats=stats_path.as_posix())
    if entry.method != BICUBIC:
        extra["infer_flops"] = network_flops(student, loaded.input_shape)
        extra["params"] = sum(p.numel() for p in student.parameters())
    if teacher is not None:
        extra["teacher_flops"] = network_flops(teacher, loaded.input_shape)
    if protocol.task_name == "segmentation":
        extra["per_class_iou"] = _per_class_iou(stats)
    if entry.grid:
        extra.update(grid=entry.grid, factor=entry.factor)
    if seed == 0 and entry.method != BICUBIC:
        weights = Path("applications") / preset / "weights" / f"{entry.task}-{entry.label}.pt"
        (cache_dir() / weights).parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "model": entry.student,
            "seed": seed,
            "dataset": train.name,
            "num_classes": loaded.num_classes,
            "input_shape": list(loaded.input_shape),
        }
        save_student(student, cache_dir() / weights, meta)
        extra["weights"] = weights.as_posix()
    row = {
        "task": entry.task, "pair": protocol.pair, "teacher": teacher_column,
        "student": entry.student, "label": entry.label, "method": entry.method, "seed": seed,
        "metric": protocol.metric, "score": round(float(score), 6),
        "best_score": round(float(best), 6), "best_epoch": int(best_epoch),
        "seconds": round(float(seconds), 2), "flops_step": f"{float(flops):.12g}",
        "hparams": json.dumps(hparams, sort_keys=True, default=str),
        "extra": json.dumps(extra, sort_keys=True, default=_json_default),
    }  # fmt: skip
    return {column: row[column] for column in APPLICATION_COLUMNS}


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return str(value)


def _batches(data: Any, batch_size: int, task: Any) -> Any:
    from ..train.evaluation import test_batches

    return test_batches(data, batch_size, task)


# -- per-image statistics --------------------------------------------------------------------------
def _score(network: Any, data: Any, task_name: str) -> tuple[dict[str, float], dict[str, Any]]:
    """The task's metrics of ``network`` on ``data`` and its per-image statistics (module
    docstring), in one pass in eval mode."""
    import torch

    from ..features import evaluating

    task = data.task
    metrics = task.metrics()
    collect = _COLLECT[task_name]
    parts: list[dict[str, Any]] = []
    module = network if isinstance(network, torch.nn.Module) else torch.nn.Module()
    with evaluating(module), torch.no_grad():
        for batch in _batches(data, _EVAL_BATCH, task):
            outputs = network(batch.x)
            task.update(metrics, outputs, batch.y)
            parts.append(collect(outputs, batch.y, task))
    scores = task.compute(metrics)
    finish = _FINISH.get(task_name)
    stats = finish(parts, task) if finish else _concat(parts)
    return {k: float(v) for k, v in scores.items()}, stats


def _concat(parts: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def _out(outputs: Any) -> Any:
    return outputs["out"] if isinstance(outputs, dict) else outputs


def _collect_classification(outputs: Any, y: Any, task: Any) -> dict[str, np.ndarray]:
    return {"correct": (_out(outputs).argmax(1).cpu() == y.cpu()).numpy()}


def _collect_segmentation(outputs: Any, y: Any, task: Any) -> dict[str, np.ndarray]:
    logits = _out(outputs)
    pred, y = logits.argmax(1).cpu(), y.cpu()
    keep = y != task.ignore_index
    inter, union = [], []
    for k in range(logits.shape[1]):
        p, t = (pred == k) & keep, (y == k) & keep
        inter.append((p & t).flatten(1).sum(1))
        union.append((p | t).flatten(1).sum(1))
    import torch

    return {"intersection": torch.stack(inter, 1).numpy(), "union": torch.stack(union, 1).numpy()}


def _collect_depth(outputs: Any, y: Any, task: Any) -> dict[str, np.ndarray]:
    from ..tasks.depth import delta_accuracy, per_image_rmse

    pred, target = _out(outputs).double().cpu().reshape(y.shape), y.double().cpu()
    valid = target > 0
    rel = ((pred - target).abs() / target.clamp_min(1.17e-6)) * valid
    return {
        "abs_rel_sum": rel.flatten(1).sum(1).numpy(),
        "pixels": valid.flatten(1).sum(1).numpy(),
        "rmse": per_image_rmse(pred, target, valid).numpy(),
        "delta1_hits": (delta_accuracy(pred, target) & valid).flatten(1).sum(1).numpy(),
    }


def _collect_keypoints(outputs: Any, y: Any, task: Any) -> dict[str, np.ndarray]:
    from ..tasks.keypoints import decode_heatmaps, pck_hits

    pred = decode_heatmaps(_out(outputs).cpu())
    weight = y["weight"].cpu().reshape(pred.shape[:2]) > 0
    hits = pck_hits(pred, y["keypoints"][..., :2].cpu(), y["scale"].cpu().reshape(-1), 0.2)
    return {"hits": (hits & weight).numpy(), "weight": weight.numpy()}


def _collect_retrieval(outputs: Any, y: Any, task: Any) -> dict[str, Any]:
    return {"embeddings": _out(outputs).detach().float().cpu(), "labels": y.reshape(-1).cpu()}


def _finish_retrieval(parts: Sequence[Mapping[str, Any]], task: Any) -> dict[str, np.ndarray]:
    """Recall@1 per query: whether its most similar other sample is of its identity (the
    ranking :func:`~kdtutor.tasks.retrieval.recall_at_k` hands to torchmetrics)."""
    import torch

    from ..tasks.retrieval import similarity_matrix

    e = torch.cat([p["embeddings"] for p in parts])
    labels = torch.cat([p["labels"] for p in parts])
    sim = similarity_matrix(e, task.normalize)
    sim.fill_diagonal_(-float("inf"))
    nearest = sim.topk(1, dim=1).indices[:, 0]
    return {"hit1": (labels[nearest] == labels).numpy()}


def _collect_superres(outputs: Any, y: Any, task: Any) -> dict[str, np.ndarray]:
    from ..tasks.superres import quantize, rgb_to_y, shave

    pred, target = _out(outputs).detach().double().cpu(), y.double().cpu()
    if task.quantize:
        pred = quantize(pred)
    mse = (shave(rgb_to_y(pred), task.scale) - shave(rgb_to_y(target), task.scale)).pow(2)
    return {"psnr_y": (-10.0 * mse.flatten(1).mean(1).log10()).numpy()}


def _collect_lanes(outputs: Any, y: Any, task: Any) -> dict[str, np.ndarray]:
    """CULane's TP, FP, FN and TuSimple's accuracy per road: the task's own counting, fed
    one road at a time."""
    counts: dict[str, list[float]] = {"tp": [], "fp": [], "fn": [], "tusimple": []}
    for i in range(len(y["points"])):
        single = task.metrics()
        task.update(single, {k: v[i : i + 1] for k, v in outputs.items()},
                    {k: v[i : i + 1] for k, v in y.items()})  # fmt: skip
        state = single["lanes"]
        for key in counts:
            counts[key].append(getattr(state, key))
    return {k: np.asarray(v, dtype=np.float64 if k == "tusimple" else np.int64)
            for k, v in counts.items()}  # fmt: skip


def _collect_detection(outputs: Any, y: Any, task: Any) -> dict[str, Any]:
    return {"dets": [{k: v.detach().cpu() for k, v in o.items()} for o in outputs],
            "gts": [{k: v.cpu() for k, v in t.items()} for t in y]}  # fmt: skip


def _finish_detection(parts: Sequence[Mapping[str, Any]], task: Any) -> dict[str, np.ndarray]:
    """The detections and ground truth of every image, flattened with their image index."""
    dets = [d for p in parts for d in p["dets"]]
    gts = [g for p in parts for g in p["gts"]]

    def flat(items: Sequence[Mapping[str, Any]], keys: Sequence[str], prefix: str) -> dict:
        index = [np.full(len(it["labels"]), i, np.int64) for i, it in enumerate(items)]
        out = {f"{prefix}_image": np.concatenate(index or [np.zeros(0, np.int64)])}
        for key in keys:
            width = (4,) if key == "boxes" else ()
            arrays = [it[key].numpy().reshape(-1, *width) for it in items]
            out[f"{prefix}_{key}"] = np.concatenate(arrays or [np.zeros((0, *width))])
        return out

    return {
        **flat(dets, ("boxes", "scores", "labels"), "det"),
        **flat(gts, ("boxes", "labels"), "gt"),
        "images": np.asarray(len(gts), np.int64),
    }


_COLLECT: dict[str, Callable[[Any, Any, Any], dict[str, Any]]] = {
    "classification": _collect_classification,
    "segmentation": _collect_segmentation,
    "depth": _collect_depth,
    "keypoints": _collect_keypoints,
    "retrieval": _collect_retrieval,
    "superres": _collect_superres,
    "lanes": _collect_lanes,
    "detection": _collect_detection,
}
_FINISH: dict[str, Callable[[Sequence[Mapping[str, Any]], Any], dict[str, np.ndarray]]] = {
    "retrieval": _finish_retrieval,
    "detection": _finish_detection,
}


def _count(stats: Mapping[str, np.ndarray]) -> int:
    """How many images (crops, queries, clips) the statistics cover."""
    if "images" in stats:
        return int(stats["images"])
    return len(next(iter(stats.values())))


def _per_class_iou(stats: Mapping[str, np.ndarray]) -> list[float | None]:
    inter, union = stats["intersection"].sum(0), stats["union"].sum(0)
    return [round(100.0 * float(i) / float(u), 6) if u else None
            for i, u in zip(inter, union, strict=True)]  # fmt: skip


def _detection_map(stats: Mapping[str, np.ndarray], idx: np.ndarray, metric: str) -> float:
    """COCO's mAP (``map`` or ``map_50``, %) of the images ``idx`` (repeats allowed: each copy
    is one more image), through the ``detection`` task's own evaluation (pycocotools)."""
    import torch

    from ..tasks import get_task

    task = get_task("detection")
    metrics = task.metrics()

    def image(prefix: str, i: int, keys: Sequence[str]) -> dict[str, Any]:
        rows = stats[f"{prefix}_image"] == i
        out = {k: torch.as_tensor(stats[f"{prefix}_{k}"][rows]) for k in keys}
        out["boxes"] = out["boxes"].reshape(-1, 4).float()
        out["labels"] = out["labels"].long()
        if "scores" in out:
            out["scores"] = out["scores"].float()
        return out

    dets = [image("det", int(i), ("boxes", "scores", "labels")) for i in idx]
    gts = [image("gt", int(i), ("boxes", "labels")) for i in idx]
    task.update(metrics, dets, gts)
    return task.compute(metrics)[metric]


def _statistic(task_name: str, metric: str) -> Callable[[Mapping[str, np.ndarray], np.ndarray],
                                                         float]:  # fmt: skip
    """The test score as a function of the per-image statistics of the images ``idx``."""

    def classification(s: Mapping[str, np.ndarray], idx: np.ndarray) -> float:
        return 100.0 * float(s["correct"][idx].mean())

    def segmentation(s: Mapping[str, np.ndarray], idx: np.ndarray) -> float:
        inter, union = s["intersection"][idx].sum(0), s["union"][idx].sum(0)
        present = union > 0  # torchmetrics' macro mean leaves out classes absent from both
        return 100.0 * float(np.mean(inter[present] / union[present])) if present.any() else 0.0

    def depth(s: Mapping[str, np.ndarray], idx: np.ndarray) -> float:
        return float(s["abs_rel_sum"][idx].sum() / s["pixels"][idx].sum())

    def keypoints(s: Mapping[str, np.ndarray], idx: np.ndarray) -> float:
        return 100.0 * float(s["hits"][idx].sum() / s["weight"][idx].sum())

    def retrieval(s: Mapping[str, np.ndarray], idx: np.ndarray) -> float:
        return 100.0 * float(s["hit1"][idx].mean())

    def superres(s: Mapping[str, np.ndarray], idx: np.ndarray) -> float:
        return float(s["psnr_y"][idx].mean())

    def lanes(s: Mapping[str, np.ndarray], idx: np.ndarray) -> float:
        tp, fp, fn = (float(s[k][idx].sum()) for k in ("tp", "fp", "fn"))
        return 100.0 * 2 * tp / (2 * tp + fp + fn) if tp else 0.0

    def detection(s: Mapping[str, np.ndarray], idx: np.ndarray) -> float:
        return _detection_map(s, idx, metric)

    return locals()[task_name]  # type: ignore[no-any-return]


def per_image_score(task: str, stats: Mapping[str, np.ndarray]) -> float:
    """The test score (the task's ``metric``) recomputed from a run's per-image statistics
    (the npz its row's ``extra["stats"]`` names): the same value as the row's ``score``, up
    to float rounding (mIoU: the macro mean over the classes present; AbsRel and PCK: ratios
    of pooled sums; F1: from the pooled TP, FP, FN; detection: COCOeval)."""
    protocol = _get_protocol(task)
    return _statistic(protocol.task_name, protocol.metric)(stats, np.arange(_count(stats)))


# -- the suite -------------------------------------------------------------------------------------
_NUMERIC = {"score": float, "best_score": float, "seconds": float, "flops_step": float,
            "seed": int, "best_epoch": int}  # fmt: skip


def _read(path: Path) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Rows (numbers converted, ``hparams`` and ``extra`` kept as JSON text) and the ``#
    key: value`` header of an applications CSV."""
    text_rows, header = read_suite_csv(path, "kdtutor bench --suite applications --preset book")
    rows: list[dict[str, Any]] = list(text_rows)
    missing = [c for c in APPLICATION_COLUMNS if rows and c not in rows[0]]
    if missing:
        raise KDTutorError(f"{path} is not an applications CSV (no columns {missing}).")
    for row in rows:
        for key, kind in _NUMERIC.items():
            row[key] = kind(row[key])
    return rows, header


def load_applications(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Rows and header of an applications CSV, numbers converted and ``hparams`` and
    ``extra`` parsed from JSON."""
    rows, header = _read(Path(path))
    for row in rows:
        row["hparams"] = json.loads(row["hparams"]) if row["hparams"] else {}
        row["extra"] = json.loads(row["extra"]) if row["extra"] else {}
    return rows, header


def _run_task(task: tuple[Application, int, str]) -> dict[str, Any]:
    """One (entry, seed) of the suite (module level: worker processes run it)."""
    entry, seed, preset = task
    return run_application(entry, seed, preset)


def run_applications_suite(
    preset: str = "book",
    *,
    tasks: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    out: str | os.PathLike[str] | None = None,
    jobs: int = 1,
    command: str | None = None,
    log: Callable[[str], None] | None = print,
    catalogue: Sequence[Application] = APPLICATIONS,
) -> list[dict[str, Any]]:
    """Run every ``(task, label, seed)`` of the chosen entries not yet in ``out``; returns all
    rows (numbers converted, ``hparams`` and ``extra`` as JSON text).

    Rows are written atomically after each run, so an interrupted suite loses only the runs
    in flight and continues where it stopped.

    Args:
        preset: ``"smoke"`` or ``"book"`` (module docstring).
        tasks: run only these tasks (:data:`APP_PROTOCOL`; default all).
        labels: run only these labels of the chosen tasks.
        seeds: the seeds (default: book 0, 1, 2; smoke 0); grids and ``bicubic`` run seed 0.
        out: the CSV (default :func:`default_applications_path`).
        jobs: processes running entries in parallel.
        command: the command recorded in the CSV's header.
        log: where progress lines go (``None``: nowhere).
        catalogue: the entries (default :data:`APPLICATIONS`).

    Raises:
        UnknownNameError: an unknown preset, task or label.
        KDTutorError: at book scale, a chosen entry's zoo teacher is not trained (the message
            names ``kdtutor zoo train <name>``); ``out``'s folder is missing or it holds
            another preset's results.
    """
    preset = _check_preset(preset)
    chosen = select_applications(tasks, labels, catalogue)
    for entry in chosen:
        _check_runnable(entry, "smoke")  # the method against the task (zoo teachers below)
    if preset == "book":
        missing = _missing_teachers(chosen)
        if missing:
            raise KDTutorError(_missing_message(missing))
    if seeds is not None:
        seeds = list(seeds)
        if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0
                            for s in seeds):  # fmt: skip
            raise KDTutorError(f"seeds must be non-negative integers, got {seeds!r}.")
    run_seeds = list(seeds) if seeds is not None else ([0, 1, 2] if preset == "book" else [0])
    path = Path(out) if out is not None else default_applications_path(preset)
    rows = resumed_rows(path, preset, load=_read)
    done = {(r["task"], r["label"], int(r["seed"])) for r in rows}
    header = suite_header(preset, command or "kdtutor " + " ".join(sys.argv[1:]))
    todo = [(a, s, preset) for a in chosen for s in (a.seeds or run_seeds)
            if (a.task, a.label, s) not in done]  # fmt: skip
    if log:
        log(f"{len(todo)} application runs to do ({len(done)} already in {path})")

    def record(row: dict[str, Any]) -> None:
        rows.append(row)
        write_results(path, header, rows, APPLICATION_COLUMNS)
        if log:
            log(f"{row['task']:<13} {row['label']:<16} seed {row['seed']}  {row['metric']} "
                f"{float(row['score']):.4f}  {float(row['seconds']):.0f} s")  # fmt: skip

    if not path.exists():
        write_results(path, header, rows, APPLICATION_COLUMNS)
    run_tasks(_run_task, todo, jobs, record)
    return rows


# -- gains -----------------------------------------------------------------------------------------
GAIN_COLUMNS: tuple[str, ...] = (
    "task", "label", "method", "metric", "higher_is_better", "seeds", "images", "score",
    "score_std", "baseline_score", "gain", "low", "high", "gain_std",
)  # fmt: skip
"""The columns of :func:`write_application_gains`' CSV (see :func:`application_gains`)."""


def default_gains_path(preset: str = "book") -> Path:
    """``data/results/applications_gains.csv`` (book; ``applications_gains_<preset>.csv``
    otherwise)."""
    preset = _check_preset(preset)
    return results_path("applications_gains.csv" if preset == "book" else
                        f"applications_gains_{preset}.csv")  # fmt: skip


def _row_extra(row: Mapping[str, Any]) -> dict[str, Any]:
    extra = row.get("extra") or {}
    return json.loads(extra) if isinstance(extra, str) else dict(extra)


def _load_stats(row: Mapping[str, Any], preset: str | None) -> dict[str, np.ndarray]:
    from ..data.diskcache import cache_dir, load_npz

    relative = _row_extra(row).get("stats")
    path = cache_dir() / relative if relative else None
    key_preset = Path(relative).parts[1] if relative else (preset or "")
    key = _stats_key(key_preset, row["task"], row["label"], int(row["seed"]))
    stats = load_npz(path, key) if path is not None else None
    if stats is None:
        raise DataNotFoundError(
            f"the per-image statistics of {row['task']}/{row['label']} seed {row['seed']} are "
            f"missing ({path or 'the row names none'}): run that row again (delete it from the "
            "CSV and resume the suite), with KDTUTOR_CACHE as it was."
        )
    return stats


def application_gains(
    rows: Sequence[Mapping[str, Any]],
    task: str,
    *,
    baseline: str = "scratch",
    confidence: float = 0.95,
    n_resamples: int | None = None,
    seed: int = 0,
    grids: bool = False,
) -> list[dict[str, Any]]:
    """Each label's gain over ``baseline`` on ``task``, with a paired bootstrap interval over
    the test images and the seed-paired standard deviation.

    For a label with per-image statistics :math:`S_s` for its seeds :math:`s` and the
    baseline's :math:`B_r`, and :math:`f(S, I)` the task's score of the images :math:`I`
    (:func:`per_image_score`'s formula),

    .. math::
        g(I) = \\frac{1}{|s|}\\sum_s f(S_s, I) - \\frac{1}{|r|}\\sum_r f(B_r, I),

    the ``gain`` is :math:`g` of all images, and ``low``/``high`` the percentile interval of
    :math:`g(I^*)` over ``n_resamples`` resamples :math:`I^*` of the images with replacement,
    the same :math:`I^*` for every network (paired: the test-set sampling of the gain, as
    :func:`~kdtutor.bench.report.gains_with_intervals` gives it for accuracy; scipy's
    bootstrap). ``gain_std`` is the sample standard deviation (ddof 1; 0 for one seed) over
    the seeds both have of :math:`f(S_s) - f(B_s)` (same initial weights and batch order:
    the seed noise of the gain itself). Detection resamples COCOeval (pycocotools through the
    ``detection`` task): 200 resamples by default, minutes per label at book scale.

    Args:
        rows: the suite's rows (:func:`load_applications`, or as
            :func:`run_applications_suite` returns them); their per-image statistics are read
            from ``cache_dir()`` (``extra["stats"]``).
        task: a task of :data:`APP_PROTOCOL`.
        baseline: the label the gains are measured against.
        confidence: the interval's coverage.
        n_resamples: bootstrap resamples (default 2,000; detection 200).
        seed: the resampling's seed.
        grids: also the grid entries (seed 0 only).

    Returns:
        One dict per label other than ``baseline`` (in the rows' order): ``task``, ``label``,
        ``method``, ``metric``, ``higher_is_better`` (a negative gain is better for depth's
        AbsRel), ``seeds``, ``images``, ``score`` and ``score_std`` (mean and std over the
        label's seeds), ``baseline_score``, ``gain``, ``low``, ``high``, ``gain_std``.

    Raises:
        UnknownNameError: an unknown task.
        KDTutorError: no rows of the task or of the baseline, or statistics of different
            test sets.
        DataNotFoundError: a row's per-image statistics are missing.
    """
    from ..tasks import get_task

    protocol = _get_protocol(task)
    statistic = _statistic(protocol.task_name, protocol.metric)
    mine = [r for r in rows if r["task"] == task and (grids or not _row_extra(r).get("grid"))]
    if not mine:
        raise KDTutorError(f"no rows of the task {task!r} in these results.")
    runs: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    methods: dict[str, str] = {}
    for row in mine:
        runs.setdefault(row["label"], {})[int(row["seed"])] = _load_stats(row, None)
        methods[row["label"]] = row["method"]
    if baseline not in runs:
        raise KDTutorError(
            f"no {baseline!r} rows of the task {task!r}: the gains are measured against them "
            f"(`kdtutor bench --suite applications --tasks {task} --labels {baseline}`)."
        )
    sizes = {_count(s) for by_seed in runs.values() for s in by_seed.values()}
    if len(sizes) != 1:
        raise KDTutorError(
            f"the {task} rows were scored on test sets of different sizes {sorted(sizes)}: "
            "compare rows of one preset."
        )
    n = sizes.pop()
    resamples = n_resamples or (200 if protocol.task_name == "detection" else 2000)
    base = runs[baseline]

    def mean_score(by_seed: Mapping[int, Mapping[str, np.ndarray]], idx: np.ndarray) -> float:
        return float(np.mean([statistic(s, idx) for s in by_seed.values()]))

    memo: dict[bytes, float] = {}

    def base_score(idx: np.ndarray) -> float:
        """The baseline's score of ``idx``, computed once per resample (the resamples are the
        same for every label: same seed, same size)."""
        key = hashlib.blake2b(idx.tobytes(), digest_size=16).digest()
        if key not in memo:
            memo[key] = mean_score(base, idx)
        return memo[key]

    everything = np.arange(n)
    out = []
    for label, by_seed in runs.items():
        if label == baseline:
            continue

        def gain(idx: np.ndarray, by_seed: Mapping[int, Any] = by_seed) -> float:
            idx = np.asarray(idx, dtype=np.int64)
            return mean_score(by_seed, idx) - base_score(idx)

        value = gain(everything)
        low, high = _percentile_bootstrap(
            (everything,), gain, confidence, resamples, seed, vectorized=False
        )
        scores = [statistic(s, everything) for s in by_seed.values()]
        paired = [statistic(s, everything) - statistic(base[k], everything)
                  for k, s in by_seed.items() if k in base]  # fmt: skip
        score, score_std = mean_std(scores)
        out.append({
            "task": task, "label": label, "method": methods[label], "metric": protocol.metric,
            "higher_is_better": get_task(protocol.task_name).higher_is_better,
            "seeds": len(by_seed), "images": n, "score": score, "score_std": score_std,
            "baseline_score": base_score(everything), "gain": value, "low": low, "high": high,
            "gain_std": mean_std(paired)[1] if paired else math.nan,
        })  # fmt: skip
    return out


def write_application_gains(
    rows: Sequence[Mapping[str, Any]],
    out: str | os.PathLike[str] | None = None,
    *,
    preset: str = "book",
    tasks: Sequence[str] | None = None,
    command: str | None = None,
    log: Callable[[str], None] | None = print,
) -> list[dict[str, Any]]:
    """:func:`application_gains` of every task the rows hold (or ``tasks``), written to
    ``out`` (default :func:`default_gains_path`) with the suite's provenance header; returns
    the gains."""
    present = list(dict.fromkeys(r["task"] for r in rows))
    gains = []
    for task in tasks if tasks is not None else present:
        found = application_gains(rows, task)
        gains.extend(found)
        if log:
            for g in found:
                log(f"{task:<13} {g['label']:<16} gain {g['gain']:+.4f} "
                    f"[{g['low']:+.4f}, {g['high']:+.4f}] ± {g['gain_std']:.4f}")  # fmt: skip
    path = Path(out) if out is not None else default_gains_path(preset)
    header = suite_header(preset, command or "kdtutor " + " ".join(sys.argv[1:]))
    write_results(path, header, gains, GAIN_COLUMNS)
    return gains
