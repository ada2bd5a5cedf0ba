"""The knowledge-types suite: every response-, feature- and relation-based method, side by side.

``kdtutor bench --suite knowledge --preset book`` trains each method on the book-scale
protocol's three teacher-student pairs over three seeds on ``shapes`` (see :data:`BOOK_PAIRS`
and CONTRIBUTING.md, "The book-scale protocol") and writes one CSV row per run (best and last
test accuracy, time, and each test image's right/wrong flag) to
``data/results/knowledge_<preset>.csv``, with the command, commit, date and machine in ``#``
comment lines at the top. A run already in the file is skipped, so an interrupted suite
continues where it stopped. :func:`summarize` and :func:`compare_with_published` turn the rows
into the comparison chapter's table and rank correlation; :mod:`kdtutor.bench.report` adds
their uncertainty, and :mod:`kdtutor.bench.tuning` the equal tuning of the loss weights on
the preset's validation images.

The suite's methods, their families and their schedule-dependent hyperparameters are read from
the methods themselves (``family``, ``paper``, ``epoch_hparams``, ``scaled_hparams`` and
``loss_weights`` of each :class:`~kdtutor.methods.Distiller`): a newly registered response-,
feature- or relation-based method joins the suite without an edit here.

``--preset repdistiller`` (alias ``full``) is RepDistiller's protocol (Tian et al., 2020) on
CIFAR-100 from ``$KDTUTOR_DATA``: the four published pairs, 240 epochs, SGD momentum 0.9, lr 0.05
(x0.1 at 150, 180, 210), weight decay 5e-4, batch 64, crop+flip, each method's published loss
weights (our defaults), best and last accuracy. (RepDistiller uses lr 0.01 for MobileNet and
ShuffleNet students; none of the four pairs has one.) It runs on the GPU when there is one and
needs the four teachers, trained once with ``KDTUTOR_DATA=... kdtutor zoo train cifar100_<model>``
and stored in ``$KDTUTOR_DATA/teachers/`` (see :func:`load_pair_teacher`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataNotFoundError, KDTutorError, unknown_name
from ..io import atomic_write_text
from ..methods import get_method, list_methods
from .provenance import git_commit, machine, results_path, utc_now
from .published import PUBLISHED_CIFAR100, PUBLISHED_SOURCE, published_gains
from .significance import encode_correct
from .stats import mean_std, spearman

__all__ = [
    "FAMILY",
    "KNOWLEDGE_FAMILIES",
    "KNOWLEDGE_METHODS",
    "PRESETS",
    "PRESET_ALIASES",
    "PUBLISHED_CIFAR100",
    "Pair",
    "Preset",
    "canonical_preset",
    "compare_with_published",
    "default_results_path",
    "get_preset",
    "knowledge_methods",
    "load_results",
    "method_hparams",
    "preset_data",
    "read_suite_csv",
    "resumed_rows",
    "run_one",
    "run_suite",
    "run_tasks",
    "suite_header",
    "summarize",
    "write_results",
]

KNOWLEDGE_FAMILIES: tuple[str, ...] = ("baseline", "response", "feature", "relation")
"""The families the suite compares, in the order of its tables."""


def _paper_year(method: str) -> int:
    """The year in the method's ``paper`` ("Authors (2019). Title"; 0 without one)."""
    found = re.search(r"\((\d{4})\)", get_method(method).paper)
    return int(found.group(1)) if found else 0


def knowledge_methods() -> tuple[str, ...]:
    """Every registered method of a :data:`KNOWLEDGE_FAMILIES` family, ordered by family (in
    that order), then by the year of its paper, then by name: the baseline, then the
    response-, feature- and relation-based methods, oldest first."""
    rank = {family: i for i, family in enumerate(KNOWLEDGE_FAMILIES)}
    chosen = [m for m in list_methods() if get_method(m).family in rank]
    return tuple(sorted(chosen, key=lambda m: (rank[get_method(m).family], _paper_year(m), m)))


KNOWLEDGE_METHODS: tuple[str, ...] = knowledge_methods()
"""The suite's methods (:func:`knowledge_methods` of the methods registered on import)."""

FAMILY: dict[str, str] = {m: get_method(m).family for m in KNOWLEDGE_METHODS}
"""Each suite method's family (its class's ``family``)."""


@dataclass(frozen=True)
class Pair:
    """A teacher-student pair: the teacher is a zoo name (``shapes_cnn_large``), or a model
    name whose zoo teacher is ``<dataset>_<model>`` (``resnet56`` on CIFAR-100:
    ``cifar100_resnet56``, stored in ``$KDTUTOR_DATA/teachers``)."""

    teacher: str
    student: str
    label: str


@dataclass(frozen=True)
class Preset:
    """Data sizes, schedule and seeds of a suite preset."""

    dataset: str
    pairs: tuple[Pair, ...]
    epochs: int
    seeds: tuple[int, ...]
    train_size: int | None = None
    test_size: int | None = None
    val_size: int | None = None
    """Validation images for the equal tuning (:mod:`kdtutor.bench.tuning`): the training
    split's images after the first ``train_size`` ones, never trained on."""
    batch_size: int = 64
    lr: float = 0.05
    schedule: str = "cosine"
    milestones: tuple[int, ...] = ()
    augment: str | None = None
    threads: int | None = 1
    train: dict[str, Any] = field(default_factory=dict)


MNIST_PAIRS = (
    Pair("mnist5k_cnn", "cnn_tiny", "cnn_medium->cnn_tiny"),
    Pair("mnist5k_cnn", "resnet8", "cnn_medium->resnet8"),
)
BOOK_PAIRS = (
    Pair("shapes_cnn_large", "cnn_wide_s2", "cnn_large->cnn_wide_s2"),
    Pair("shapes_cnn_large", "cnn_tiny_s2", "cnn_large->cnn_tiny_s2"),
    Pair("shapes_cnn_large", "resnet8_half_s2", "cnn_large->resnet8_half_s2"),
)
"""The book-scale protocol's pairs: one teacher, three students crossing size with family:
``cnn_wide_s2`` (a 24k-parameter plain CNN) against ``cnn_tiny_s2`` (the same design at 9k:
size) and against ``resnet8_half_s2`` (a 20k-parameter ResNet: family). The first pair is the
one the equal tuning runs on."""
REPDISTILLER_PAIRS = (
    Pair("wrn_40_2", "wrn_16_2", "wrn_40_2->wrn_16_2"),
    Pair("resnet56", "resnet20", "resnet56->resnet20"),
    Pair("resnet32x4", "resnet8x4", "resnet32x4->resnet8x4"),
    Pair("vgg13", "vgg8", "vgg13->vgg8"),
)

# the book-scale protocol (CONTRIBUTING.md, "The book-scale protocol"): 20,000 shapes
# images, 5,000 more for validation, 10,000 test images, 20 epochs
BOOK_PRESET = Preset(
    "shapes",
    BOOK_PAIRS,
    epochs=20,
    seeds=(0, 1, 2),
    train_size=20_000,
    val_size=5_000,
    test_size=10_000,
    batch_size=64,
)

PRESETS: dict[str, Preset] = {
    # the book-scale protocol on 256 images for one epoch: checks that every method runs on
    # the protocol's pairs, not what it finds (a few seconds per run)
    "smoke": dataclasses.replace(
        BOOK_PRESET, epochs=1, seeds=(0,), train_size=256, val_size=128, test_size=128
    ),
    "book": BOOK_PRESET,
    # the first comparison's protocol (the 5,000 MNIST digits, 8 epochs, about 40 s a run on
    # one core), before the book-scale protocol: 1-2.5 points of headroom, 1,000 test images
    "mnist5k": Preset("mnist5k", MNIST_PAIRS, epochs=8, seeds=(0, 1, 2)),
    # RepDistiller's protocol (REFERENCES.md), on a GPU: fit picks CUDA when present, and
    # threads=None leaves torch's thread count alone
    "repdistiller": Preset(
        "cifar100",
        REPDISTILLER_PAIRS,
        epochs=240,
        seeds=(0, 1, 2),
        batch_size=64,
        lr=0.05,
        schedule="step",
        milestones=(150, 180, 210),
        augment="crop_flip",
        threads=None,
        train={"optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4, "gamma": 0.1},
    ),
}

PRESET_ALIASES: dict[str, str] = {"full": "repdistiller"}
"""Old preset names that still work: ``full`` is ``repdistiller`` (and writes its results file)."""
PRESETS.update({alias: PRESETS[name] for alias, name in PRESET_ALIASES.items()})


def canonical_preset(name: str) -> str:
    """The preset's own name (``full`` -> ``repdistiller``); unknown names are returned as is."""
    return PRESET_ALIASES.get(name, name)


def default_results_path(preset_name: str) -> Path:
    """``data/results/knowledge_<preset>.csv`` (``$KDTUTOR_RESULTS`` replaces the folder);
    an alias writes the file of the preset it names."""
    return results_path(f"knowledge_{canonical_preset(preset_name)}.csv")


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise unknown_name(
            "preset",
            name,
            PRESETS,
            hint="Presets: smoke, book, mnist5k, repdistiller (alias full).",
        ) from None


def method_hparams(method: str, epochs: int, n_train: int | None = None) -> dict[str, Any]:
    """The method's hyperparameters for a run of ``epochs`` epochs on ``n_train`` training
    samples (:meth:`~kdtutor.methods.Distiller.scaled_hparams`): those counted in epochs of
    the 240-epoch protocol are shrunk in proportion, and with ``n_train`` given the
    data-dependent ones are set too (CRD's number of negatives)."""
    return get_method(method).scaled_hparams(epochs, n_train)


def load_pair_teacher(pair: Pair, dataset: str, num_classes: int) -> Any:
    """The pair's trained teacher, from the zoo, with its checksum verified.

    ``pair.teacher`` is a zoo name, or a model name whose zoo teacher is
    ``<dataset>_<model>`` (``cifar100_resnet56``, stored in ``$KDTUTOR_DATA/teachers``). For
    older set-ups, a plain state dict at ``$KDTUTOR_DATA/teachers/<model>_<dataset>.pt`` is
    still read (without a checksum) when the zoo has no such teacher trained.
    """
    from ..io import safe_load
    from ..models import build_model
    from ..zoo import RECIPES, MissingWeightsError, load_teacher

    name = pair.teacher if pair.teacher in RECIPES else f"{dataset}_{pair.teacher}"
    if name not in RECIPES:
        raise DataNotFoundError(
            f"no zoo teacher {name!r} for the pair {pair.label!r}: add a recipe to "
            "kdtutor/zoo.py (RECIPES) and train it with `kdtutor zoo train NAME`."
        )
    try:
        return load_teacher(name)
    except MissingWeightsError as exc:
        root = os.environ.get("KDTUTOR_DATA")
        legacy = Path(root) / "teachers" / f"{pair.teacher}_{dataset}.pt" if root else None
        if legacy is None or not legacy.is_file():
            raise MissingWeightsError(
                f"the pair {pair.label!r} needs the trained teacher {name!r}: {exc}"
            ) from None
    model = build_model(pair.teacher, num_classes=num_classes)
    model.load_state_dict(safe_load(legacy, what=f"teacher {pair.teacher!r}"))
    return model.eval()


def preset_data(preset: Preset, split: str) -> Any:
    """The preset's ``"train"``, ``"val"`` or ``"test"`` images. The validation images are the
    training split's next ``val_size`` images after the first ``train_size`` (for ``shapes``,
    a larger size is a prefix-extension of a smaller one), so they are never trained on."""
    from ..data import load_dataset

    if split == "test":
        return load_dataset(preset.dataset, "test", size=preset.test_size)
    if split not in ("train", "val"):
        raise KDTutorError(f"split must be 'train', 'val' or 'test', got {split!r}.")
    if not preset.val_size:
        if split == "val":
            raise KDTutorError(
                f"the preset on {preset.dataset!r} has no validation split (val_size is unset)."
            )
        return load_dataset(preset.dataset, "train", size=preset.train_size)
    n_train = preset.train_size
    size = None if n_train is None else n_train + preset.val_size
    full = load_dataset(preset.dataset, "train", size=size)
    n_train = len(full) - preset.val_size if n_train is None else n_train
    if n_train < 1:
        raise KDTutorError(
            f"{preset.dataset!r} has {len(full)} training images: too few for a validation "
            f"split of {preset.val_size}."
        )
    if split == "train":
        return full.subset(n_train)
    return full.subset(range(n_train, n_train + preset.val_size))


def run_one(
    pair: Pair,
    method: str,
    seed: int,
    preset: Preset,
    hparams: dict[str, Any] | None = None,
    evaluate: str = "test",
) -> dict[str, Any]:
    """Train one (pair, method, seed) run of ``preset`` and return its CSV row; the
    accuracies are measured on ``evaluate`` (``"test"``, or ``"val"`` when tuning)."""
    import torch

    from ..methods import build_distiller
    from ..models import build_model
    from ..seeding import seed_everything
    from ..train import fit, predict_logits

    if preset.threads:
        torch.set_num_threads(preset.threads)
    train = preset_data(preset, "train")
    test = preset_data(preset, evaluate)
    # methods without a teacher (scratch, Tf-KD's virtual teacher) get none
    teacher = (
        load_pair_teacher(pair, preset.dataset, train.num_classes)
        if get_method(method).requires_teacher
        else None
    )
    seed_everything(seed)
    student = build_model(
        pair.student, num_classes=train.num_classes, in_channels=train.in_channels
    )
    values = {**method_hparams(method, preset.epochs, len(train)), **(hparams or {})}
    distiller = build_distiller(
        method, student, teacher, values, input_shape=tuple(train.images.shape[1:])
    )
    result = fit(
        distiller,
        train,
        test,
        epochs=preset.epochs,
        batch_size=preset.batch_size,
        lr=preset.lr,
        schedule=preset.schedule,
        milestones=preset.milestones,
        augment=preset.augment,
        seed=seed,
        **preset.train,
    )
    logits, labels = predict_logits(distiller.student, test)
    correct = (logits.argmax(dim=1) == labels).numpy()
    return {
        "pair": pair.label,
        "teacher": pair.teacher,
        "student": pair.student,
        "method": method,
        "family": get_method(method).family,
        "seed": seed,
        "best_acc": round(result.best_acc, 4),
        "best_epoch": result.best_epoch,
        "last_acc": round(result.last_acc, 4),
        "seconds": round(result.seconds, 2),
        "hparams": ";".join(f"{k}={v}" for k, v in sorted(values.items())),
        "correct": encode_correct(correct),
    }


COLUMNS = (
    "pair", "teacher", "student", "method", "family", "seed",
    "best_acc", "best_epoch", "last_acc", "seconds", "hparams", "correct",
)  # fmt: skip
"""CSV columns; ``correct`` is the final student's right/wrong flag per test image, in test-set
order (:func:`~kdtutor.bench.significance.encode_correct`; empty in rows of older suites), so
that methods can be compared image by image (McNemar, paired bootstrap)."""


def suite_header(preset_name: str, command: str) -> list[str]:
    """The ``#`` lines a results CSV starts with: command, commit, date, machine, preset."""
    return [
        f"command: {command}",
        f"commit: {git_commit()}",
        f"date: {utc_now()}",
        f"machine: {machine()}",
        f"preset: {preset_name}",
    ]


def read_suite_csv(
    path: str | os.PathLike[str], command: str = "kdtutor bench --suite knowledge --preset book"
) -> tuple[list[dict[str, str]], dict[str, str]]:
    """The rows (as text) and the ``# key: value`` header of a suite's CSV; a missing file
    raises :class:`~kdtutor.errors.DataNotFoundError` naming the ``command`` that writes it."""
    path = Path(path)
    if not path.exists():
        raise DataNotFoundError(f"no suite results at {path}: run `{command}` to produce them.")
    header: dict[str, str] = {}
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            key, _, value = line[1:].strip().partition(":")
            header[key.strip()] = value.strip()
        elif line.strip():
            lines.append(line)
    return list(csv.DictReader(lines)), header


def load_results(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Rows (with numeric fields converted) and the ``# key: value`` header of a suite CSV."""
    text_rows, header = read_suite_csv(path)
    rows: list[dict[str, Any]] = []
    for row in text_rows:
        for key in ("best_acc", "last_acc", "seconds"):
            row[key] = float(row[key])
        for key in ("seed", "best_epoch"):
            row[key] = int(row[key])
        row["correct"] = row.get("correct") or ""
        rows.append(row)
    return rows, header


def write_results(
    path: Path,
    header: list[str],
    rows: Iterable[dict[str, Any]],
    columns: Sequence[str] = COLUMNS,
) -> None:
    """Write ``rows`` as a CSV with ``# header`` lines on top, atomically (never half a file)."""
    buffer = io.StringIO()
    buffer.writelines(f"# {line}\n" for line in header)
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def resumed_rows(
    path: Path,
    preset_name: str,
    load: Callable[[Path], tuple[list[dict[str, Any]], dict[str, str]]] = load_results,
) -> list[dict[str, Any]]:
    """The rows a suite resumes from: those already in its CSV ``path`` (none when it does
    not exist yet), after checking that its folder exists and that it holds results of
    ``preset_name``. ``load`` reads the suite's CSV (default: :func:`load_results`)."""
    if not path.parent.is_dir():
        raise KDTutorError(
            f"cannot write suite results to {path}: the folder {path.parent} does not exist."
        )
    if not path.exists():
        return []
    rows, old = load(path)
    if canonical_preset(old.get("preset", preset_name)) != preset_name:
        raise KDTutorError(
            f"{path} holds results of preset {old.get('preset')!r}, not {preset_name!r}: "
            "choose another --out or delete the file."
        )
    return rows


def run_tasks(
    function: Callable[[Any], dict[str, Any]],
    tasks: Sequence[Any],
    jobs: int,
    record: Callable[[dict[str, Any]], None],
) -> None:
    """``record(function(task))`` for every task, in this process (``jobs`` <= 1) or in
    ``jobs`` spawned processes, recording each row as soon as its run finishes."""
    if jobs <= 1:
        for task in tasks:
            record(function(task))
        return
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        for row in pool.imap_unordered(function, tasks):
            record(row)


def _run_task(task: tuple[Pair, str, int, Preset, dict[str, Any]]) -> dict[str, Any]:
    return run_one(*task)


def run_suite(
    preset_name: str = "book",
    *,
    methods: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    pairs: Sequence[str] | None = None,
    epochs: int | None = None,
    out: str | os.PathLike[str] | None = None,
    jobs: int = 1,
    command: str | None = None,
    log: Callable[[str], None] | None = print,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    reuse: str | os.PathLike[str] | None = None,
) -> list[dict[str, Any]]:
    """Run every (pair, method, seed) of the preset not yet in ``out``; returns all rows.

    Rows are written atomically after each finished run, so an interrupted suite loses at
    most the runs in flight. ``jobs > 1`` runs that many processes (one thread each).
    ``overrides`` maps a method to hyperparameters replacing its defaults (the tuned loss
    weights of :mod:`kdtutor.bench.tuning`); the runs of a method without overrides are
    copied from the suite CSV ``reuse`` when it holds them (the same run, already made).
    """
    from ..zoo import scaled_milestones

    preset = get_preset(preset_name)
    preset_name = canonical_preset(preset_name)
    if epochs is not None:
        if epochs < 1:
            raise KDTutorError(f"epochs must be >= 1, got {epochs}.")
        if out is None:
            raise KDTutorError(
                "pass out= (--out) when overriding the preset's epochs, so that results of "
                "different schedules do not mix in one file."
            )
        milestones = scaled_milestones(preset.milestones, epochs, preset.epochs)
        schedule = "constant" if preset.schedule == "step" and not milestones else preset.schedule
        preset = dataclasses.replace(
            preset, epochs=epochs, milestones=milestones, schedule=schedule
        )
    methods = list(methods or knowledge_methods())
    for method in methods:
        get_method(method)
    seeds = list(seeds if seeds is not None else preset.seeds)
    labels = [p.label for p in preset.pairs]
    for label in pairs or ():
        if label not in labels:
            raise unknown_name("pair", label, labels, hint=f"Pairs of this preset: {labels}.")
    chosen = [p for p in preset.pairs if not pairs or p.label in pairs]
    path = Path(out) if out is not None else default_results_path(preset_name)
    rows = resumed_rows(path, preset_name)
    overrides = overrides or {}
    reused = 0
    if reuse is not None and Path(reuse).exists():
        have = {(r["pair"], r["method"], int(r["seed"])) for r in rows}
        for row in load_results(reuse)[0]:
            key = (row["pair"], row["method"], int(row["seed"]))
            if row["method"] in methods and row["method"] not in overrides and key not in have:
                rows.append(row)
                reused += 1
    done = {(r["pair"], r["method"], int(r["seed"])) for r in rows}
    tasks = [
        (pair, method, seed, preset, dict(overrides.get(method, {})))
        for pair in chosen
        for method in methods
        for seed in seeds
        if (pair.label, method, seed) not in done
    ]
    header = suite_header(preset_name, command or "kdtutor " + " ".join(sys.argv[1:]))
    if epochs is not None:
        header.append(f"epochs: {epochs} (preset: {get_preset(preset_name).epochs})")
    if log:
        log(
            f"{len(tasks)} runs to do ({len(done) - reused} already in {path}"
            + (f", {reused} copied from {reuse})" if reused else ")")
        )

    def record(row: dict[str, Any]) -> None:
        rows.append(row)
        write_results(path, header, rows)
        if log:
            log(
                f"{row['pair']:<22} {row['method']:<9} seed {row['seed']}  best {row['best_acc']:.2f}"
                f"  last {row['last_acc']:.2f}  {row['seconds']:.0f} s"
            )

    run_tasks(_run_task, tasks, jobs, record)
    if not tasks and (reused or not path.exists()):
        write_results(path, header, rows)
    return rows


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------
def summarize(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean +- std (over seeds) of best and last accuracy per (pair, method), suite order."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["pair"], row["method"]), []).append(row)
    order = {m: i for i, m in enumerate(knowledge_methods())}
    table = []
    for (pair, method), runs in groups.items():
        best, best_sd = mean_std([r["best_acc"] for r in runs])
        last, last_sd = mean_std([r["last_acc"] for r in runs])
        table.append(
            {
                "pair": pair,
                "method": method,
                "family": get_method(method).family if method in list_methods() else "",
                "seeds": len(runs),
                "best_mean": best,
                "best_std": best_sd,
                "last_mean": last,
                "last_std": last_sd,
                "seconds": sum(r["seconds"] for r in runs) / len(runs),
            }
        )
    table.sort(key=lambda r: (r["pair"], order.get(r["method"], len(order))))
    return table


@dataclass
class Comparison:
    """Our gains over the student alone beside the published ones, and their rank agreement."""

    methods: list[str]
    ours: list[float]
    published: list[float]
    spearman: float
    source: str = PUBLISHED_SOURCE

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"method": m, "ours_gain": o, "published_gain": p}
            for m, o, p in zip(self.methods, self.ours, self.published, strict=True)
        ]


def compare_with_published(table: Sequence[dict[str, Any]], key: str = "best_mean") -> Comparison:
    """Each method's gain over ``scratch`` averaged over our pairs, beside its mean published
    gain over the student alone (:func:`published_gains`), and Spearman's rho between them."""
    scratch = {r["pair"]: r[key] for r in table if r["method"] == "scratch"}
    if not scratch:
        raise KDTutorError("the results have no 'scratch' runs to measure gains against.")
    gains: dict[str, list[float]] = {}
    for r in table:
        if r["method"] != "scratch" and r["pair"] in scratch:
            gains.setdefault(r["method"], []).append(r[key] - scratch[r["pair"]])
    published = published_gains()
    methods = [m for m in knowledge_methods() if m in gains and m in published]
    ours = [sum(gains[m]) / len(gains[m]) for m in methods]
    theirs = [published[m] for m in methods]
    rho = spearman(ours, theirs) if len(methods) >= 2 else float("nan")
    return Comparison(methods, ours, theirs, rho)
