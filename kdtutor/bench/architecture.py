r"""Chapter 5's suite: teacher-student architecture (capacity gap, early-stopped KD, teacher
assistants, searched students, a ViT student), on the schemes suite's runner.

Every row is a :class:`~kdtutor.bench.schemes.Scheme` of :data:`ARCHITECTURE`, run by
:func:`~kdtutor.bench.schemes.run_schemes_suite` on the book protocol (20,000 ``shapes``
training images, 20 epochs, seeds 0-2), with the schemes suite's columns (accuracy, per-image
flags, learning curve, training and prior cost) and :data:`ARCHITECTURE_COLUMNS`' additions:
the split, the immediate teacher's accuracy, parameters and FLOPs, the path from the first
teacher, and how closely the network mimics its teacher, as the percentage of images where
their top-1 classes agree and as

.. math::
    \mathrm{KL}_{split} = \frac{T^2}{N}\sum_{i=1}^{N}
        \mathrm{KL}\big(p_t^T(x_i) \,\|\, p_s^T(x_i)\big), \qquad T = 4,

on the training images (``kl_train``) and on the row's images (``kl_test``): Cho & Hariharan
(2019) explain the capacity gap by small students "unable to mimic large teachers". Rows are
grouped by student (the ``pair`` column holds the student's spec), so that a page compares
the teachers and paths of one student.

The parts (:data:`PARTS`):

* ``gap``: the student alone and KD from each teacher of one design at four widths (the zoo
  family ``shapes_cnn_w8``, ``w16``, ``shapes_cnn_large`` (w32), ``w48``: :data:`FAMILY`),
  for ``cnn_wide_s2`` and ``cnn_tiny_s2``: the capacity-gap curve.
* ``es``: early-stopped teachers (Cho & Hariharan, 2019): the book teacher's recipe run
  taken after 5, 10 and 20 of its 30 epochs (``zoo:shapes_cnn_large@E``,
  :mod:`kdtutor.snapshots`), teaching both students; and KD stopped early (ESKD) at
  epochs 5 and 10.
* ``takd``: teacher-assistant paths (Mirzadeh et al., 2020) from ``shapes_cnn_large``
  through the family's architectures w16 and w8 trained as students
  (:func:`~kdtutor.chain.fit_chain`; direct KD is ``kd_w32``), each stage a row.
* ``search``: the hand-designed ResNet student alone and with KD, beside which the searched
  students (:func:`run_search`, :func:`searched_schemes`) are compared.
* ``deit``: the optimiser pilot of the ViT student (SGD of the protocol against AdamW, on the
  validation images); :func:`deit_schemes` builds DeiT's rows with the pilot's choice
  (:func:`pilot_choice`).

``kdtutor bench --suite architecture --preset book`` writes ``data/results/architecture_book.csv``
(resumable); ``kdtutor search`` runs a search whose scores are kept in
``data/results/search_<preset>.csv``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import KDTutorError
from ..methods.deit import DEIT_STUDENT
from .knowledge import canonical_preset, get_preset, preset_data
from .provenance import results_path
from .schemes import EXTRA_COLUMNS, SCHEME_COLUMNS, Scheme, run_schemes_suite
from .schemes import page_rows as _schemes_page_rows

__all__ = [
    "ADAMW",
    "ARCHITECTURE",
    "ARCHITECTURE_COLUMNS",
    "FAMILY",
    "PARTS",
    "PUBLISHED_ARCHITECTURE",
    "SEARCH_SETTINGS",
    "SNAPSHOT_EPOCHS",
    "STRATEGIES",
    "TEACHER",
    "VIT_ALONE",
    "default_architecture_path",
    "default_budget",
    "default_search_path",
    "deit_schemes",
    "page_rows",
    "pilot_choice",
    "run_architecture_suite",
    "run_search",
    "searched_schemes",
    "suite_command",
]

TEACHER = "zoo:shapes_cnn_large"
"""The book protocol's teacher (1.18M parameters, ``cnn_large``: widths 32-256)."""

FAMILY: dict[str, str] = {
    "w8": "convnet(blocks_per_stage=2,stem_stride=2,widths=(8,16,32,64))",
    "w16": "convnet(blocks_per_stage=2,stem_stride=2,widths=(16,32,64,128))",
    "w32": "cnn_large",
    "w48": "convnet(blocks_per_stage=2,stem_stride=2,widths=(48,96,192,384))",
}
"""One design at four widths, ``cnn_large``'s (4 stages of 2 blocks, stride-2 stem), as model
specs: w32 is ``cnn_large`` itself. w16 and w8 are the teacher assistants of the ``takd`` part
(trained as students, by the protocol); as zoo teachers ``shapes_cnn_w8``, ``w16``, ``w48``
(trained alone by ``shapes_cnn_large``'s recipe, in :mod:`kdtutor.zoo_recipes.shapes`) they
make the capacity-gap curve."""

ARCHITECTURE_COLUMNS: tuple[str, ...] = (*SCHEME_COLUMNS, *EXTRA_COLUMNS)
"""The schemes suite's columns, then :data:`~kdtutor.bench.schemes.EXTRA_COLUMNS`: ``split``,
``teacher_acc``, ``teacher_params``, ``teacher_flops``, ``path``, ``agreement``,
``kl_train``, ``kl_test``."""

VIT_ALONE = "vit_tiny(patch_size=8)"
"""The ViT student without the distillation token (the "no distillation" baseline of DeiT's
Table 3): ``vit_tiny`` at patch 8, as :data:`~kdtutor.methods.deit.DEIT_STUDENT`."""

ADAMW: dict[str, Any] = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05, "warmup_epochs": 1}
"""The AdamW settings the ViT pilot tries against the protocol's SGD: DeiT trains its ViTs
with AdamW (Touvron et al. 2021); these values, for our 20-epoch, batch-64 runs, are our
choice (the design note, docs/design/architecture.md, section 3.3)."""

SNAPSHOT_EPOCHS: tuple[int, ...] = (5, 10, 20)
"""The epochs (of 30) after which the ``es`` part takes the book teacher's recipe run."""

_TINY = "cnn_tiny_s2"
_R8 = "resnet8_half_s2"
_PILOT = {"epochs": 5, "split": "val", "student": VIT_ALONE, "hparams": {"label_smoothing": 0.1}}


def _gap(suffix: str, student: str | None) -> tuple[Scheme, ...]:
    """KD from the family's other widths (w32 is the book's teacher, listed by hand)."""
    return tuple(
        Scheme(f"kd_{width}{suffix}", "kd", teacher=f"zoo:shapes_cnn_{width}", student=student)
        for width in ("w8", "w16", "w48")
    )


ARCHITECTURE: tuple[Scheme, ...] = (
    # gap: the students alone and taught by the book's teacher (w32)
    Scheme("scratch", "scratch"),
    Scheme("kd_w32", "kd", teacher=TEACHER),
    *_gap("", None),
    Scheme("scratch_tiny", "scratch", student=_TINY),
    Scheme("kd_w32_tiny", "kd", teacher=TEACHER, student=_TINY),
    *_gap("_tiny", _TINY),
    # es: early-stopped teachers, then KD stopped early
    *(
        Scheme(f"kd_w32_e{epoch}{suffix}", "kd", teacher=f"{TEACHER}@{epoch}", student=student)
        for suffix, student in (("", None), ("_tiny", _TINY))
        for epoch in SNAPSHOT_EPOCHS
    ),
    Scheme("eskd_5", "eskd", {"kd_epochs": 5}, teacher=TEACHER),
    Scheme("eskd_10", "eskd", {"kd_epochs": 10}, teacher=TEACHER),
    # takd: the paths through {w16, w8}
    Scheme("takd_w16", "takd", teacher=TEACHER, chain=(FAMILY["w16"],)),
    Scheme("takd_w8", "takd", teacher=TEACHER, chain=(FAMILY["w8"],)),
    Scheme("takd_w16_w8", "takd", teacher=TEACHER, chain=(FAMILY["w16"], FAMILY["w8"])),
    # search: the hand-designed ResNet student, beside which searched students are compared
    Scheme("scratch_r8", "scratch", student=_R8),
    Scheme("kd_r8", "kd", teacher=TEACHER, student=_R8),
    # deit: the ViT's optimiser pilot, on the validation images
    Scheme("vit_pilot_sgd", "scratch", **_PILOT),
    Scheme("vit_pilot_adamw", "scratch", train=ADAMW, **_PILOT),
)
"""The chapter's schemes, in the order of :data:`PARTS` (DeiT's final rows and the searched
students' come from :func:`deit_schemes` and :func:`searched_schemes`, as they depend on a
pilot and a search). Labels name the
teacher by its family width (``kd_w32``: KD from ``cnn_large``) and the student by a suffix
(``_tiny``: ``cnn_tiny_s2``, ``_r8``: ``resnet8_half_s2``; none: ``cnn_wide_s2``). The TAKD
students start from the same weights and see the same batches as ``kd_w32`` of the same seed,
so TAKD and direct KD are paired image by image."""

PARTS: dict[str, tuple[str, ...]] = {
    "gap": (
        *("scratch", "kd_w8", "kd_w16", "kd_w32", "kd_w48"),
        *("scratch_tiny", "kd_w8_tiny", "kd_w16_tiny", "kd_w32_tiny", "kd_w48_tiny"),
    ),
    "es": (
        *("scratch", "kd_w32", *(f"kd_w32_e{e}" for e in SNAPSHOT_EPOCHS), "eskd_5", "eskd_10"),
        *("scratch_tiny", "kd_w32_tiny", *(f"kd_w32_e{e}_tiny" for e in SNAPSHOT_EPOCHS)),
    ),
    "takd": ("scratch", "kd_w32", "takd_w16", "takd_w8", "takd_w16_w8"),
    "search": ("scratch", "kd_w32", "scratch_r8", "kd_r8"),
    "deit": ("vit_pilot_sgd", "vit_pilot_adamw"),
}
"""The labels of each part of :data:`ARCHITECTURE` (a part's baseline and direct KD are
shared with the others)."""


def deit_schemes(optimizer: str = "sgd") -> tuple[Scheme, Scheme, Scheme]:
    """DeiT's rows with the optimiser the pilot chose (:func:`pilot_choice`): the ViT alone
    (``vit_alone``: label smoothing 0.1, no token), DeiT's hard distillation with the token
    (``deit_hard``: the method's defaults, ½ CE + ½ CE with the teacher's argmax) and its soft
    distillation with the token (``deit_soft``: the paper's soft values, λ = 0.1, τ = 3),
    both from the book's teacher (Touvron et al. 2021).

    Args:
        optimizer: ``"sgd"`` (the protocol's) or ``"adamw"`` (:data:`ADAMW`).
    """
    if optimizer not in ("sgd", "adamw"):
        raise KDTutorError(f"the ViT's optimizer is 'sgd' or 'adamw', got {optimizer!r}.")
    train = dict(ADAMW) if optimizer == "adamw" else {}
    soft = {"distillation": "soft", "ce_weight": 0.9, "kd_weight": 0.1, "T": 3.0}
    return (
        Scheme("vit_alone", "scratch", {"label_smoothing": 0.1}, student=VIT_ALONE, train=train),
        Scheme("deit_hard", "deit", teacher=TEACHER, student=DEIT_STUDENT, train=train),
        Scheme("deit_soft", "deit", soft, teacher=TEACHER, student=DEIT_STUDENT, train=train),
    )


def pilot_choice(rows: Sequence[Mapping[str, Any]]) -> str:
    """The optimiser of the ViT pilot with the higher mean last-epoch validation accuracy
    (``"sgd"`` or ``"adamw"``; a tie keeps the protocol's SGD).

    Raises:
        KDTutorError: the rows lack either pilot.
    """
    means = {}
    for optimizer in ("sgd", "adamw"):
        method = f"vit_pilot_{optimizer}/student"
        values = [float(r["last_acc"]) for r in rows if r["method"] == method]
        if not values:
            raise KDTutorError(
                f"no {method!r} rows: run the pilot first (`kdtutor bench --suite architecture "
                "--schemes vit_pilot_sgd,vit_pilot_adamw`)."
            )
        means[optimizer] = sum(values) / len(values)
    return "adamw" if means["adamw"] > means["sgd"] else "sgd"


def searched_schemes(spec: str, tag: str) -> tuple[Scheme, Scheme]:
    """A searched student's final rows: KD from the book's teacher (``kd_<tag>``) and the
    student alone (``scratch_<tag>``), on the test images; pass them to
    :func:`run_architecture_suite` as ``extra``.

    Args:
        spec: the winner's model spec (``SearchResult.best.spec``).
        tag: a short name for the labels, e.g. ``"halving"``.
    """
    from ..specs import parse_model_spec

    parsed = parse_model_spec(spec)
    if parsed.kind != "registry" or parsed.weights is not None:
        raise KDTutorError(f"a searched student is a registry model spec, got {spec!r}.")
    if not tag or "/" in tag:
        raise KDTutorError(f"the tag names the rows (kd_<tag>): a short name, got {tag!r}.")
    return (
        Scheme(f"kd_{tag}", "kd", teacher=TEACHER, student=spec),
        Scheme(f"scratch_{tag}", "scratch", student=spec),
    )


def default_architecture_path(preset_name: str) -> Path:
    """``data/results/architecture_<preset>.csv`` (``$KDTUTOR_RESULTS`` replaces the folder)."""
    return results_path(f"architecture_{canonical_preset(preset_name)}.csv")


def _labels(parts: Sequence[str] | None, schemes: Sequence[str] | None) -> list[str] | None:
    if parts is not None and schemes is not None:
        raise KDTutorError("choose schemes by parts or by labels, not both.")
    if parts is None:
        return list(schemes) if schemes is not None else None
    if isinstance(parts, str):
        parts = [parts]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise KDTutorError(f"unknown parts {unknown}: the parts are {list(PARTS)}.")
    return list(dict.fromkeys(label for part in parts for label in PARTS[part]))


def run_architecture_suite(
    preset_name: str = "book",
    *,
    parts: Sequence[str] | None = None,
    schemes: Sequence[str] | None = None,
    extra: Sequence[Scheme] = (),
    seeds: Sequence[int] | None = None,
    out: str | os.PathLike[str] | None = None,
    jobs: int = 1,
    command: str | None = None,
    log: Callable[[str], None] | None = print,
) -> list[dict[str, Any]]:
    """Run every (scheme, seed) of :data:`ARCHITECTURE` (and ``extra``) not yet in ``out``;
    returns all rows (:data:`ARCHITECTURE_COLUMNS`, grouped by student).

    Args:
        preset_name: ``"smoke"`` or ``"book"``.
        parts: run only these parts (:data:`PARTS`), e.g. ``["takd"]``.
        schemes: or only these labels (of :data:`ARCHITECTURE` and ``extra``).
        extra: more schemes (:func:`deit_schemes`, :func:`searched_schemes`); with neither
            ``parts`` nor ``schemes`` they run too.
        seeds: the seeds (default: the preset's).
        out: the CSV (default :func:`default_architecture_path`).
        jobs: processes running schemes in parallel.
        command: the command recorded in the CSV's header.
        log: where progress lines go (``None``: nowhere).
    """
    if preset_name not in ("smoke", "book"):
        raise KDTutorError(
            f"the architecture suite runs on the book protocol: preset 'smoke' or 'book', not "
            f"{preset_name!r}."
        )
    labels = _labels(parts, schemes)
    if labels is None and extra:
        labels = [s.label for s in (*ARCHITECTURE, *extra)]
    return run_schemes_suite(
        preset_name,
        schemes=labels,
        seeds=seeds,
        out=out if out is not None else default_architecture_path(preset_name),
        jobs=jobs,
        command=command,
        log=log,
        catalogue=(*ARCHITECTURE, *extra),
        columns=ARCHITECTURE_COLUMNS,
        pair_by="student",
    )


def _searched_or_none(spec: str, tag: str) -> tuple[Scheme, ...]:
    try:
        return searched_schemes(spec, tag)
    except KDTutorError:
        return ()


def suite_command(schemes: Sequence[str], extra: Sequence[Scheme] = (), jobs: int = 2) -> str:
    """The ``kdtutor bench`` command that runs ``schemes`` of :data:`ARCHITECTURE` and of
    ``extra`` (DeiT's rows become ``--deit``, a searched student's ``--searched TAG=SPEC``).

    Raises:
        KDTutorError: a label that neither :data:`ARCHITECTURE` nor ``extra`` holds, or an
            extra row that no option of the command makes.
    """
    by_label = {s.label: s for s in (*ARCHITECTURE, *extra)}
    unknown = [label for label in schemes if label not in by_label]
    if unknown:
        raise KDTutorError(f"unknown schemes {unknown}: see kdtutor.bench.architecture.")
    listed = {s.label for s in ARCHITECTURE}
    flags: dict[str, None] = {}
    for label in schemes:
        if label in listed:
            continue
        scheme = by_label[label]
        tag = label.split("_", 1)[-1]
        if scheme in deit_schemes("adamw") or scheme in deit_schemes("sgd"):
            flags[f"--deit {'adamw' if scheme.train else 'sgd'}"] = None
        elif scheme.student and scheme in _searched_or_none(scheme.student, tag):
            flags[f'--searched {tag}="{scheme.student}"'] = None
        else:
            raise KDTutorError(
                f"no option of `kdtutor bench` makes the row {label!r}: pass its scheme to "
                "run_architecture_suite(..., extra=...)."
            )
    return " ".join(
        ["kdtutor bench --suite architecture --preset book", f"--jobs {jobs}", *flags,
         f"--schemes {','.join(schemes)}"]
    )  # fmt: skip


def page_rows(
    scale: str,
    schemes: Sequence[str] | None = None,
    *,
    extra: Sequence[Scheme] = (),
    rerun: bool = False,
    jobs: int = 2,
    before: Sequence[str] = (),
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The rows of ``schemes`` (default: all of :data:`ARCHITECTURE` and ``extra``) and the
    CSV's header, as a page of chapter 5 reads them: at ``"smoke"`` scale a tiny suite runs
    now into a temporary folder (which also takes the disk cache, ``KDTUTOR_CACHE``); at any
    other scale the committed ``data/results/architecture_book.csv`` is read (``rerun``: its
    missing runs are made first, hours). See :func:`kdtutor.bench.schemes.page_rows`.

    Raises:
        KDTutorError: at book scale, a (scheme, seed) of the preset's seeds that the CSV
            lacks; the message gives the commands that make it (``before`` first, e.g.
            ``kdtutor zoo train ...``, then :func:`suite_command`).
    """
    catalogue = (*ARCHITECTURE, *extra)
    labels = list(schemes) if schemes is not None else [s.label for s in catalogue]
    rows, header = _schemes_page_rows(
        scale,
        labels,
        rerun=rerun,
        jobs=jobs,
        catalogue=catalogue,
        columns=ARCHITECTURE_COLUMNS,
        pair_by="student",
        name="architecture",
    )
    if scale != "smoke":
        seeds = [str(seed) for seed in get_preset("book").seeds]
        have = {(r["scheme"], str(r["seed"])) for r in rows}
        lacking = [s for s in labels if any((s, k) not in have for k in seeds)]
        if lacking:
            commands = [*before, suite_command(lacking, extra, jobs)]
            raise KDTutorError(
                f"{default_architecture_path('book').name} lacks rows of {', '.join(lacking)} "
                f"(seeds {', '.join(seeds)}). Set RERUN = True in the parameters cell (hours), "
                "or run:\n" + "\n".join(f"  {c}" for c in commands)
            )
    return [r for r in rows if r["scheme"] in labels], header


# -- searched students -----------------------------------------------------------------------
STRATEGIES: tuple[str, ...] = ("random", "halving")
""":func:`~kdtutor.search.random_search` and :func:`~kdtutor.search.successive_halving`."""

SEARCH_SETTINGS: dict[str, dict[str, int]] = {
    "smoke": {"epochs": 1, "min_epochs": 1, "max_epochs": 2},
    "book": {"epochs": 6, "min_epochs": 2, "max_epochs": 20},
}
"""Each preset's search schedule: random search trains every candidate for ``epochs``;
successive halving from ``min_epochs`` to ``max_epochs``. At book scale, 28 candidates at 6
epochs and 27 -> 9 -> 3 at 2, 6, 20 epochs both spend 168 candidate-epochs."""


def default_search_path(preset_name: str) -> Path:
    """``data/results/search_<preset>.csv``: the search's scores (a
    :class:`~kdtutor.search.ScoreMemo`), shared by both strategies."""
    return results_path(f"search_{canonical_preset(preset_name)}.csv")


def default_budget(preset_name: str = "book") -> float:
    """The FLOPs budget of a search: the forward FLOPs per image of the preset's largest
    hand-designed student (``resnet8_half_s2`` at book scale, about 1.62 MFLOPs), so every
    hand-designed student lies inside the searched space's budget."""
    from ..search import Candidate

    preset = get_preset(preset_name)
    return float(max(Candidate.from_spec(pair.student).flops for pair in preset.pairs))


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise KDTutorError(f"{name} must be a positive integer, got {value!r}.")
    return value


def run_search(
    preset_name: str = "book",
    *,
    strategy: str = "halving",
    teacher: str = TEACHER,
    method: str = "kd",
    budget_flops: float | None = None,
    pool: int = 28,
    eta: int = 3,
    epochs: int | None = None,
    min_epochs: int | None = None,
    max_epochs: int | None = None,
    seed: int = 0,
    out: str | os.PathLike[str] | None = None,
    space: Any = None,
) -> Any:
    r"""Search a student for ``teacher`` within a FLOPs budget, scoring each candidate by a
    short ``method`` run on the preset's validation images (AKD's idea, Liu et al. 2020,
    reduced to its skeleton: :mod:`kdtutor.search`).

    The pool is ``space.sample(pool, budget_flops, seed)`` (default space:
    :class:`~kdtutor.search.SearchSpace`). ``"random"`` scores every candidate of the pool
    for ``epochs``; ``"halving"`` runs successive halving on its first
    :math:`\eta \lfloor n / \eta \rfloor` candidates (27 of 28), ``min_epochs`` to
    ``max_epochs``. Scores are kept in ``out`` (a :class:`~kdtutor.search.ScoreMemo`), so a
    killed search resumes and the two strategies share what they both score.

    Args:
        preset_name: ``"smoke"`` or ``"book"`` (:data:`SEARCH_SETTINGS` gives the epochs).
        strategy: ``"random"`` or ``"halving"``.
        teacher: a trained teacher's spec (``zoo:<name>`` or ``NAME:weights.pt``).
        method: the scoring run's method (``"kd"``; ``"scratch"`` scores without teacher).
        budget_flops: the largest forward FLOPs per image (default :func:`default_budget`).
        pool: candidates drawn.
        eta: successive halving keeps one candidate in ``eta``.
        epochs: random search's epochs (default: the preset's).
        min_epochs: successive halving's first rung (default: the preset's).
        max_epochs: its last rung (default: the preset's).
        seed: seeds the draw and every scoring run.
        out: the scores' CSV (default :func:`default_search_path`).
        space: a :class:`~kdtutor.search.SearchSpace` (default: the chapter's).

    Returns:
        The :class:`~kdtutor.search.SearchResult`.
    """
    import torch

    from ..methods import get_method
    from ..search import SearchSpace, kd_score, random_search, successive_halving
    from ..specs import build_from_spec, parse_model_spec

    if preset_name not in SEARCH_SETTINGS:
        raise KDTutorError(
            f"a search runs on the book protocol: preset 'smoke' or 'book', not {preset_name!r}."
        )
    if strategy not in STRATEGIES:
        raise KDTutorError(f"strategy must be 'random' or 'halving', got {strategy!r}.")
    given = {"epochs": epochs, "min_epochs": min_epochs, "max_epochs": max_epochs}
    other = ("min_epochs", "max_epochs") if strategy == "random" else ("epochs",)
    wrong = [name for name in other if given[name] is not None]
    if wrong:
        raise KDTutorError(
            f"{' and '.join(wrong)} belong to the other strategy: random search takes epochs, "
            "successive halving min_epochs and max_epochs."
        )
    settings = {**SEARCH_SETTINGS[preset_name], **{k: v for k, v in given.items() if v is not None}}
    for name, value in (*settings.items(), ("pool", pool), ("eta", eta)):
        _positive_int(value, name)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise KDTutorError(f"seed must be a non-negative integer, got {seed!r}.")
    memo = Path(out) if out is not None else default_search_path(preset_name)
    if not memo.parent.is_dir():
        raise KDTutorError(
            f"cannot keep the search's scores in {memo}: the folder {memo.parent} does not exist."
        )
    preset = get_preset(preset_name)
    if preset.threads:
        torch.set_num_threads(preset.threads)
    train, val = preset_data(preset, "train"), preset_data(preset, "val")
    network = None
    if get_method(method).requires_teacher:
        parsed = parse_model_spec(teacher)
        if parsed.kind == "registry" and parsed.weights is None:
            raise KDTutorError(
                f"the teacher {teacher!r} would be an untrained network: name a trained one, "
                "zoo:<name> (`kdtutor zoo list`) or NAME:weights.pt."
            )
        network = build_from_spec(
            teacher, num_classes=train.num_classes, in_channels=train.in_channels, role="teacher"
        )
    budget = default_budget(preset_name) if budget_flops is None else budget_flops
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0:
        raise KDTutorError(f"the FLOPs budget must be a positive number, got {budget!r}.")
    if not math.isfinite(budget):
        raise KDTutorError(f"the FLOPs budget must be finite, got {budget!r}.")
    space = space if space is not None else SearchSpace()
    candidates = space.sample(pool, max_flops=float(budget), seed=seed)
    score = kd_score(
        network, train, val, method=method, seed=seed, batch_size=preset.batch_size,
        lr=preset.lr, schedule=preset.schedule, milestones=preset.milestones,
        augment=preset.augment, cache_location="disk", **preset.train,
    )  # fmt: skip
    if strategy == "random":
        return random_search(candidates, score, epochs=settings["epochs"], memo=memo)
    trimmed = candidates[: eta * (len(candidates) // eta)] or candidates
    return successive_halving(
        trimmed, score, min_epochs=settings["min_epochs"], max_epochs=settings["max_epochs"],
        eta=eta, memo=memo,
    )  # fmt: skip


# -- published numbers -------------------------------------------------------------------------
def _published(
    part: str,
    dataset: str,
    network: str,
    top1: float,
    *,
    setting: str,
    source: str,
    baseline: float | None = None,
    teacher: str | None = None,
    teacher_top1: float | None = None,
    flops: float | None = None,
    params: float | None = None,
) -> dict[str, Any]:
    """One published top-1 accuracy, with the student's accuracy without distillation
    (``baseline``) and the gain ``top1 - baseline`` in points where the source gives both."""
    return {
        "part": part,
        "dataset": dataset,
        "network": network,
        "setting": setting,
        "top1": top1,
        "baseline": baseline,
        "gain": round(top1 - baseline, 2) if baseline is not None else None,
        "teacher": teacher,
        "teacher_top1": teacher_top1,
        "flops": flops,
        "params": params,
        "source": source,
    }


_DEIT3 = (
    "Touvron et al. (2021), Table 3 (ImageNet top-1), as transcribed by a third-party reading note"
)
_DEIT2 = (
    "Touvron et al. (2021), Table 2 (ImageNet top-1, student DeiT-B with distillation, by "
    "teacher), as transcribed by a third-party reading note; baseline: Table 3's DeiT-B "
    "without distillation"
)
_DEKD = (
    "yuanli2333/Teacher-free-Knowledge-Distillation (the authors' repository figure, De-KD: a "
    "poorly trained teacher); CIFAR-100"
)
_FASTDF = "zju-vipa/Fast-Datafree README (KD on real data, CIFAR-100)"
_DNA = "changlin31/DNA README (ImageNet top-1; FLOPs and parameters where it prints them)"


def _deit_table3() -> tuple[dict[str, Any], ...]:
    values = {
        "DeiT-Ti": (72.2, 72.2, 74.3, 74.5),
        "DeiT-S": (79.8, 79.8, 80.9, 81.2),
        "DeiT-B": (81.8, 81.8, 83.0, 83.4),
    }
    settings = ("no distillation", "soft", "hard", "hard, distillation token (class+distillation)")
    return tuple(
        _published("deit", "ImageNet", network, top1, setting=setting, baseline=row[0],
                   source=_DEIT3 + ("; the README gives 79.9 for DeiT-S"
                                    if network == "DeiT-S" and i == 0 else ""))
        for network, row in values.items()
        for i, (setting, top1) in enumerate(zip(settings, row, strict=True))
    )  # fmt: skip


PUBLISHED_ARCHITECTURE: dict[str, tuple[dict[str, Any], ...]] = {
    "gap": (
        _published("gap", "ImageNet", "DeiT-B", 81.9, setting="teacher DeiT-B", baseline=81.8,
                   teacher="DeiT-B", teacher_top1=81.8, source=_DEIT2),
        _published("gap", "ImageNet", "DeiT-B", 82.7, setting="teacher RegNetY-4GF",
                   baseline=81.8, teacher="RegNetY-4GF", teacher_top1=80.0, source=_DEIT2),
        _published("gap", "ImageNet", "DeiT-B", 83.1, setting="teacher RegNetY-16GF",
                   baseline=81.8, teacher="RegNetY-16GF", teacher_top1=82.9, source=_DEIT2),
        _published("gap", "CIFAR-100", "MobileNetV2", 70.65, setting="KD from a poor teacher",
                   baseline=68.38, teacher="ResNet18", teacher_top1=15.48, source=_DEKD),
        _published("gap", "CIFAR-100", "ResNet18", 77.23, setting="KD from a poor teacher",
                   baseline=75.87, teacher="ResNet50", teacher_top1=45.82, source=_DEKD),
        _published("gap", "CIFAR-100", "ResNet-18", 75.07, setting="KD", baseline=77.10,
                   teacher="VGG-11", teacher_top1=71.32, source=_FASTDF),
    ),
    "search": (
        _published("search", "ImageNet", "DNA-a", 77.1, setting="searched (DNA)", flops=348e6,
                   params=4.2e6, source=_DNA),
        _published("search", "ImageNet", "DNA-b", 77.5, setting="searched (DNA)", source=_DNA),
        _published("search", "ImageNet", "DNA-c", 77.8, setting="searched (DNA)", source=_DNA),
        _published("search", "ImageNet", "DNA-d", 78.4, setting="searched (DNA)", flops=611e6,
                   params=6.4e6, source=_DNA),
    ),
    "deit": (
        *_deit_table3(),
        _published("deit", "ImageNet", "DeiT-B", 83.24,
                   setting="hard, distillation token (mmrazor re-implementation)",
                   teacher="RegNetY-160",
                   source="open-mmlab/mmrazor configs/distill README (a re-implementation)"),
    ),
}  # fmt: skip
"""Published numbers for the chapter's parts, as top-1 accuracies in %, keyed by part:

* ``gap``: a more accurate teacher is not always a better one. DeiT's Table 2 (a DeiT-B
  student gains more from a RegNetY-4GF teacher at 80.0 % than from a DeiT-B teacher at
  81.8 %), Tf-KD's De-KD (teachers at 15.48 % and 45.82 % still lift their students by 2.27
  and 1.36 points) and Fast-Datafree's CIFAR-100 KD (a VGG-11 teacher at 71.32 % leaves a
  ResNet-18 2.03 points below its 77.10 % alone);
* ``search``: DNA's searched ImageNet models (Li et al. 2020; FLOPs and parameters of DNA-b
  and DNA-c not recorded);
* ``deit``: DeiT's Table 3 (Touvron et al. 2021) for Ti, S and B: no distillation, soft,
  hard, and hard with the distillation token (gains over no distillation), and mmrazor's
  re-implementation of DeiT-B.

Each entry holds ``part``, ``dataset``, ``network``, ``setting``, ``top1``, ``baseline`` (the
network without distillation, or ``None``), ``gain`` (``top1 - baseline``, points),
``teacher``, ``teacher_top1``, ``flops``, ``params`` and ``source``. Every number was taken
from the project's reference notes (REFERENCES-2.md), which name these sources. TAKD's tables
(Mirzadeh et al. 2020), Cho & Hariharan (2019) and Search-to-Distill (Liu et al. 2020) are
absent: the notes mark their numbers as not verified. All are ImageNet or CIFAR-100 results
of networks trained for hundreds of epochs, not this suite's 20 epochs on ``shapes``: compare
directions, not sizes."""
