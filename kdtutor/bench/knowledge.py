"""The knowledge-types suite: every response-, feature- and relation-based method, side by side.

``kdtutor bench --suite knowledge --preset book`` trains each method on two teacher-student
pairs over three seeds on ``shapes`` and writes one CSV row per run (best and last test
accuracy, time) to ``data/results/knowledge_<preset>.csv``, with the command, commit, date and
machine in ``#`` comment lines at the top. A run already in the file is skipped, so an
interrupted suite continues where it stopped. :func:`summarize` and :func:`compare_with_published`
turn the rows into the comparison chapter's table and rank correlation.

The suite's methods, their families and their schedule-dependent hyperparameters are read from
the methods themselves (``family``, ``paper``, ``epoch_hparams`` and ``scaled_hparams`` of each
:class:`~kdtutor.methods.Distiller`): a newly registered response-, feature- or relation-based
method joins the suite without an edit here.

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
from collections.abc import Callable, Iterable, Sequence
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
    "run_one",
    "run_suite",
    "summarize",
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
SHAPES_PAIRS = (
    Pair("shapes_cnn_large", "cnn_small", "cnn_large->cnn_small"),
    Pair("shapes_cnn_large", "resnet8", "cnn_large->resnet8"),
)
REPDISTILLER_PAIRS = (
    Pair("wrn_40_2", "wrn_16_2", "wrn_40_2->wrn_16_2"),
    Pair("resnet56", "resnet20", "resnet56->resnet20"),
    Pair("resnet32x4", "resnet8x4", "resnet32x4->resnet8x4"),
    Pair("vgg13", "vgg8", "vgg13->vgg8"),
)

PRESETS: dict[str, Preset] = {
    # a few seconds per run: checks that every method runs, not what it finds
    "smoke": Preset("mnist5k", MNIST_PAIRS, epochs=1, seeds=(0,), train_size=256, test_size=128),
    # the comparison chapter's runs: about 40 s per run on one CPU core (about an hour for
    # 20 methods x 2 pairs x 3 seeds). The students learn mnist5k in a few epochs, while on
    # `shapes` they need about 20k images x 15 epochs (the "shapes" preset, about 5 min a run).
    "book": Preset("mnist5k", MNIST_PAIRS, epochs=8, seeds=(0, 1, 2)),
    "shapes": Preset("shapes", SHAPES_PAIRS, epochs=15, seeds=(0, 1, 2), batch_size=128),
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
            hint="Presets: smoke, book, shapes, repdistiller (alias full).",
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


def run_one(
    pair: Pair, method: str, seed: int, preset: Preset, hparams: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Train one (pair, method, seed) run of ``preset`` and return its CSV row."""
    import torch

    from ..data import load_dataset
    from ..methods import build_distiller
    from ..models import build_model
    from ..seeding import seed_everything
    from ..train import fit, predict_logits

    if preset.threads:
        torch.set_num_threads(preset.threads)
    train = load_dataset(preset.dataset, "train", size=preset.train_size)
    test = load_dataset(preset.dataset, "test", size=preset.test_size)
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


def _header(preset_name: str, command: str) -> list[str]:
    return [
        f"command: {command}",
        f"commit: {git_commit()}",
        f"date: {utc_now()}",
        f"machine: {machine()}",
        f"preset: {preset_name}",
    ]


def load_results(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Rows (with numeric fields converted) and the ``# key: value`` header of a suite CSV."""
    path = Path(path)
    if not path.exists():
        raise DataNotFoundError(
            f"no suite results at {path}: run `kdtutor bench --suite knowledge --preset book` "
            "to produce them."
        )
    header: dict[str, str] = {}
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            key, _, value = line[1:].strip().partition(":")
            header[key.strip()] = value.strip()
        elif line.strip():
            lines.append(line)
    rows = []
    for row in csv.DictReader(lines):
        for key in ("best_acc", "last_acc", "seconds"):
            row[key] = float(row[key])
        for key in ("seed", "best_epoch"):
            row[key] = int(row[key])
        row["correct"] = row.get("correct") or ""
        rows.append(row)
    return rows, header


def _write(path: Path, header: list[str], rows: Iterable[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    buffer.writelines(f"# {line}\n" for line in header)
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _run_task(task: tuple[Pair, str, int, Preset]) -> dict[str, Any]:
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
) -> list[dict[str, Any]]:
    """Run every (pair, method, seed) of the preset not yet in ``out``; returns all rows.

    Rows are written atomically after each finished run, so an interrupted suite loses at
    most the runs in flight. ``jobs > 1`` runs that many processes (one thread each).
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
    if not path.parent.is_dir():
        raise KDTutorError(
            f"cannot write suite results to {path}: the folder {path.parent} does not exist."
        )
    rows: list[dict[str, Any]] = []
    if path.exists():
        rows, old = load_results(path)
        if canonical_preset(old.get("preset", preset_name)) != preset_name:
            raise KDTutorError(
                f"{path} holds results of preset {old.get('preset')!r}, not {preset_name!r}: "
                "choose another --out or delete the file."
            )
    done = {(r["pair"], r["method"], int(r["seed"])) for r in rows}
    tasks = [
        (pair, method, seed, preset)
        for pair in chosen
        for method in methods
        for seed in seeds
        if (pair.label, method, seed) not in done
    ]
    header = _header(preset_name, command or "kdtutor " + " ".join(sys.argv[1:]))
    if epochs is not None:
        header.append(f"epochs: {epochs} (preset: {get_preset(preset_name).epochs})")
    if log:
        log(f"{len(tasks)} runs to do ({len(done)} already in {path})")

    def record(row: dict[str, Any]) -> None:
        rows.append(row)
        _write(path, header, rows)
        if log:
            log(
                f"{row['pair']:<22} {row['method']:<9} seed {row['seed']}  best {row['best_acc']:.2f}"
                f"  last {row['last_acc']:.2f}  {row['seconds']:.0f} s"
            )

    if jobs <= 1:
        for task in tasks:
            record(_run_task(task))
    else:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(jobs) as pool:
            for row in pool.imap_unordered(_run_task, tasks):
                record(row)
    if not tasks and not path.exists():
        _write(path, header, rows)
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
