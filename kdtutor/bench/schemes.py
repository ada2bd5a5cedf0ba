"""The schemes suite: offline, online and self-distillation on one student, with what each costs.

Every scheme trains the book protocol's first student (``cnn_wide_s2``, :data:`BOOK_PRESET`)
and reports each network it can deploy (a peer, a branch, an exit, a generation, an ensemble)
as one CSV row: its accuracy, its right/wrong flag per test image, its test accuracy after
every epoch, and its cost. The cost is counted in training FLOPs (one real training step
counted by :func:`~kdtutor.bench.cost.step_flops`, times the steps of the run) and in seconds,
and split into the run itself (``train_*``) and what it needed before (``prior_*``): the
teacher's training for offline KD, the student trained alone for Tf-KD's self mode, the earlier
generations of a Born-Again chain. ``infer_flops`` is what the scored network costs per image
at test time (an ensemble of K networks costs K of them).

``kdtutor bench --suite schemes --preset book`` runs it into ``data/results/schemes_book.csv``
(resumable: a finished scheme and seed is never run again).

The runner serves any catalogue of :class:`Scheme` rows, not only :data:`SCHEMES`: a scheme
may name any zoo teacher (``teacher="zoo:<name>"``), a student by its model spec
(``"convnet(widths=(16,32,64),stem_stride=2)"``), a ``chain`` of assistants trained between
the teacher and the student (:func:`~kdtutor.chain.fit_chain`, each stage kept in a store so
that schemes sharing a prefix train it once), overrides of the training settings (``train``)
and the split it is scored on (``split="val"`` for choices made on validation images).
:func:`run_schemes_suite` and :func:`page_rows` take the catalogue, its CSV columns (extra
columns such as the teacher's accuracy and the student-teacher agreement are computed only when
asked for) and how rows are grouped (``pair_by``); chapter 5's catalogue is
:data:`kdtutor.bench.architecture.ARCHITECTURE`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import KDTutorError
from .knowledge import (
    COLUMNS,
    Preset,
    canonical_preset,
    get_preset,
    load_pair_teacher,
    load_results,
    method_hparams,
    preset_data,
    resumed_rows,
    run_tasks,
    suite_header,
    write_results,
)
from .provenance import results_path
from .significance import encode_correct

__all__ = [
    "EXTRA_COLUMNS",
    "PUBLISHED_SCHEME_GAINS",
    "SCHEMES",
    "SCHEME_COLUMNS",
    "SPLITS",
    "Scheme",
    "default_schemes_path",
    "load_schemes",
    "page_rows",
    "run_scheme",
    "run_schemes_suite",
]


SPLITS: tuple[str, ...] = ("test", "val")
"""The splits a scheme is scored on: the preset's test images (the default), or its validation
images (choices such as an optimiser pilot or a searched architecture; never the test set)."""

_PAIR_BY = ("preset", "student")
_TEACHERS = ("none", "zoo", "scratch")


@dataclass(frozen=True)
class Scheme:
    """One way of training the student: a registered method with its settings.

    Every field after ``method`` defaults to the schemes suite's behaviour, so a scheme of
    :data:`SCHEMES` needs only the fields it changes.

    Attributes:
        label: the scheme's name in the CSV (rows are ``label/network``).
        method: the registered distiller (``kdtutor methods``).
        hparams: settings replacing the method's defaults (e.g. ``{"num_peers": 4}``).
        epochs: the schedule's length (``None``: the preset's).
        teacher: ``"none"``, ``"zoo"`` (the pair's trained teacher, charged with its
            training), ``"zoo:<name>"`` (any zoo teacher of the preset's dataset, ``kdtutor zoo
            list``, charged with its training) or ``"scratch"`` (this seed's student trained
            alone: Tf-KD's self mode and generation 0 of a Born-Again chain, charged with that
            run).
        generations: more than 1 makes a Born-Again chain: generation g is taught by
            generation g - 1, and the ensembles of generations 0..g are scored too.
        student: the network trained (``None``: the pair's student): a registry name or a
            model spec in call form (``"convnet(stem_stride=2,widths=(16,32,64))"``).
        chain: model specs of the assistants trained between the teacher and the student,
            largest first (TAKD, Mirzadeh et al. 2020): stage i is distilled from stage i - 1
            by ``method`` (:func:`~kdtutor.chain.fit_chain`), the student last. Each stage is
            scored as its own row (network ``ta1``, ``ta2``, ...) and charged the teacher and
            the stages before it; the stages are stored, so schemes sharing a prefix train it
            once.
        train: settings of :func:`~kdtutor.train.fit` replacing the preset's (e.g.
            ``{"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05}``); not ``epochs``
            (use ``epochs``) nor ``seed`` (the suite's).
        split: ``"test"`` or ``"val"``: the images the run is scored on after every epoch
            and in its row (:data:`SPLITS`).
    """

    label: str
    method: str
    hparams: Mapping[str, Any] = field(default_factory=dict)
    epochs: int | None = None
    teacher: str = "none"
    generations: int = 1
    student: str | None = None
    chain: tuple[str, ...] = ()
    train: Mapping[str, Any] = field(default_factory=dict)
    split: str = "test"

    def __post_init__(self) -> None:
        _check_fields(self)


def _check_fields(scheme: Scheme) -> None:
    """Refuse a scheme whose fields cannot describe a run (before anything trains)."""
    label = scheme.label
    if not isinstance(label, str) or not label or "/" in label:
        raise KDTutorError(
            f"a scheme's label must be a non-empty name without '/' (rows are label/network), "
            f"got {label!r}."
        )
    if not isinstance(scheme.method, str) or not scheme.method:
        raise KDTutorError(
            f"scheme {label!r}: method must be a method name, got {scheme.method!r}."
        )
    if not isinstance(scheme.hparams, Mapping):
        raise KDTutorError(
            f"scheme {label!r}: hparams must be a dict of the method's hyperparameters, got "
            f"{scheme.hparams!r}."
        )
    teacher = scheme.teacher
    if not isinstance(teacher, str) or not (
        teacher in _TEACHERS or (teacher.startswith("zoo:") and teacher[4:].strip())
    ):
        raise KDTutorError(
            f"scheme {label!r}: teacher must be 'none', 'zoo' (the preset's teacher), "
            f"'zoo:<name>' (a zoo teacher, `kdtutor zoo list`) or 'scratch' (this seed's student "
            f"trained alone), got {teacher!r}."
        )
    for name, value in (("epochs", scheme.epochs), ("generations", scheme.generations)):
        if value is None and name == "epochs":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise KDTutorError(
                f"scheme {label!r}: {name} must be a positive integer, got {value!r}."
            )
    if isinstance(scheme.chain, str) or not isinstance(scheme.chain, Sequence):
        raise KDTutorError(
            f"scheme {label!r}: chain is a tuple of model specs, largest first (e.g. "
            f"('cnn_medium',)), got {scheme.chain!r}."
        )
    object.__setattr__(scheme, "chain", tuple(scheme.chain))
    for spec in scheme.chain:
        if not isinstance(spec, str) or not spec.strip():
            raise KDTutorError(
                f"scheme {label!r}: each assistant of the chain is a model spec string, got "
                f"{spec!r}."
            )
    if scheme.chain and teacher == "none":
        raise KDTutorError(
            f"scheme {label!r}: a chain distils each assistant from the one before, starting "
            "from a teacher: set teacher='zoo' or 'zoo:<name>'."
        )
    if scheme.chain and scheme.generations != 1:
        raise KDTutorError(
            f"scheme {label!r}: give either a chain of assistants or Born-Again generations, "
            "not both."
        )
    if scheme.student is not None and (not isinstance(scheme.student, str) or not scheme.student):
        raise KDTutorError(
            f"scheme {label!r}: student must be a model spec string or None, got "
            f"{scheme.student!r}."
        )
    if not isinstance(scheme.train, Mapping):
        raise KDTutorError(
            f"scheme {label!r}: train must be a dict of fit settings (e.g. {{'optimizer': "
            f"'adamw'}}), got {scheme.train!r}."
        )
    fixed = sorted({"epochs", "seed"} & set(scheme.train))
    if fixed:
        raise KDTutorError(
            f"scheme {label!r}: train cannot set {' or '.join(fixed)}: give the schedule's "
            "length as Scheme(epochs=...); the seed is the suite's."
        )
    if scheme.split not in SPLITS:
        raise KDTutorError(
            f"scheme {label!r}: split must be 'test' or 'val', got {scheme.split!r}."
        )


SCHEMES: tuple[Scheme, ...] = (
    Scheme("scratch", "scratch"),
    Scheme("scratch_e40", "scratch", epochs=40),
    Scheme("scratch_e80", "scratch", epochs=80),
    Scheme("scratch_r8", "scratch", student="resnet8_half_s2"),
    Scheme("kd", "kd", teacher="zoo"),
    Scheme("dml2", "dml"),
    Scheme("dml2_mixed", "dml", {"peers": ("resnet8_half_s2",)}),
    Scheme("dml4", "dml", {"num_peers": 4}),
    Scheme("one", "one"),
    Scheme("kdcl_naive", "kdcl", {"ensemble": "naive"}),
    Scheme("kdcl_minlogit", "kdcl", {"ensemble": "min_logit"}),
    Scheme("byot", "byot"),
    Scheme("ban", "ban", teacher="scratch", generations=3),
    Scheme("tfkd_self", "tfkd", {"mode": "self"}, teacher="scratch"),
    Scheme("cskd", "cskd"),
)
"""The chapter's schemes, in the order they run: the student alone first (at 20 epochs it is
generation 0 of the Born-Again chain and Tf-KD's teacher; at 40 and 80 epochs it draws the
frontier of what more training alone buys), then offline KD, online (DML with 2 peers, a
ResNet peer, 4 peers; ONE; KDCL's two ensembles) and self-distillation (BYOT, BAN, Tf-KD,
CS-KD)."""

SCHEME_COLUMNS: tuple[str, ...] = (
    *COLUMNS,
    "scheme", "network", "epochs", "train_flops", "prior_flops", "total_flops",
    "infer_flops", "train_seconds", "prior_seconds", "total_seconds", "curve",
)  # fmt: skip
"""The knowledge suite's columns (``method`` holds ``scheme/network``, ``student`` the
network's architecture), then the scheme, the network, the run's epochs, the costs and the
network's test accuracy after each epoch (``;``-joined; empty for an ensemble of
generations, which exists only at the end)."""

EXTRA_COLUMNS: tuple[str, ...] = (
    "split", "teacher_acc", "teacher_params", "teacher_flops", "path",
    "agreement", "kl_train", "kl_test",
)  # fmt: skip
r"""Columns a catalogue may add after :data:`SCHEME_COLUMNS` (computed only when its columns
name them): ``split`` (the images the row is scored on), ``teacher_acc`` (the run's immediate
teacher's accuracy on those images, in %), ``teacher_params`` and ``teacher_flops`` (its
parameters and forward FLOPs per image), ``path`` (the networks from the first teacher to the
row's network, ``>``-joined), ``agreement`` (the % of those images where the network's top-1
class is its teacher's), ``kl_train`` and ``kl_test`` (:math:`T^2\,\mathrm{KL}(p_t^T \,\|\,
p_s^T)` at :math:`T = 4`, averaged over the training images and over the row's images:
:func:`~kdtutor.analysis.response.response_diagnostics`'s ``kd``). Empty where the network has
no teacher."""


def _published(
    network: str, alone: float, distilled: float, source: str, *, error: bool = False
) -> dict[str, Any]:
    """One published result: the network alone and distilled, as top-1 accuracies (an error
    rate ``e`` becomes ``100 - e``), and the gain ``distilled - alone``, in points."""
    quoted = f"top-1 {'error' if error else 'accuracy'} {alone:.2f} -> {distilled:.2f}"
    if error:
        alone, distilled = 100.0 - alone, 100.0 - distilled
    return {
        "network": network,
        "dataset": "CIFAR-100",
        "alone": round(alone, 2),
        "distilled": round(distilled, 2),
        "gain": round(distilled - alone, 2),
        "quoted": quoted,
        "source": source,
    }


_MCL = (
    "winycg/MCL-OKD README (a re-implementation, not the paper's table): CIFAR-100, 300 "
    "epochs, {k} by the script's default (--num-branches 4), T = {t}"
)
_SELF_KD_LIB = "winycg/Self-KD-Lib README (a re-implementation): CIFAR-100, ResNet-50"
_TFKD = "yuanli2333/Teacher-free-Knowledge-Distillation (the authors' code): {where}"

PUBLISHED_SCHEME_GAINS: dict[str, tuple[dict[str, Any], ...]] = {
    "dml2": (
        _published("MobileNet", 73.65, 76.32,
                   "baiyfbupt/DML (PaddleSlim re-implementation): CIFAR-100, two MobileNet "
                   "peers"),
    ),
    "dml4": (
        _published("ResNet-32", 28.91, 24.92, _MCL.format(k="4 peers", t=2), error=True),
        _published("ResNet-110", 23.62, 21.51, _MCL.format(k="4 peers", t=2), error=True),
    ),
    "one": (
        _published("ResNet-32", 28.91, 25.74, _MCL.format(k="4 branches", t=3), error=True),
        _published("ResNet-110", 23.62, 22.19, _MCL.format(k="4 branches", t=3), error=True),
    ),
    "byot": (_published("ResNet-50", 77.79, 79.76, _SELF_KD_LIB),),
    "cskd": (_published("ResNet-50", 77.79, 79.99, _SELF_KD_LIB),),
    "tfkd_self": (
        _published("ResNet18", 75.87, 77.10, _TFKD.format(where="repository figures")),
        _published("MobileNetV2", 68.38, 70.96, _TFKD.format(where="repository figures")),
        _published("ResNeXt29-8x64d", 81.03, 82.08, _TFKD.format(where="README text")),
    ),
}  # fmt: skip
"""Published gains of the chapter's schemes over the same network trained alone, keyed by the
label in :data:`SCHEMES`: DML (Zhang et al., 2018), ONE (Lan et al., 2018), BYOT (Zhang et
al., 2019), CS-KD (Yun et al., 2020) and Tf-KD's self-training (Yuan et al., 2020). Schemes
without a verified published number are absent (Born-Again Networks, KDCL, DML with a ResNet
peer); offline KD's numbers are :data:`kdtutor.bench.PUBLISHED_CIFAR100`.

Each entry holds ``network``, ``dataset``, ``alone`` and ``distilled`` (top-1 accuracy in %,
an error rate ``e`` converted to ``100 - e``), ``gain`` = ``distilled - alone`` (points),
``quoted`` (the numbers as the source prints them) and ``source`` (the repository, and whether
it re-implements the method). All are CIFAR-100 results of ResNet- or MobileNet-sized networks
trained for hundreds of epochs (MCL-OKD: 300), not this suite's 20 epochs of a 24k-parameter
CNN on ``shapes``: compare directions, not sizes. MCL-OKD's scripts train 4 networks by
default, so its DML numbers sit under ``dml4``; its ONE has 4 branches where ours has 3."""

_NUMERIC = {
    "epochs": int,
    **{k: float for k in ("train_flops", "prior_flops", "total_flops", "infer_flops")},
    **{k: float for k in ("train_seconds", "prior_seconds", "total_seconds")},
}
_OPTIONAL_NUMERIC = {
    "teacher_params": int,
    **{k: float for k in ("teacher_acc", "teacher_flops", "agreement", "kl_train", "kl_test")},
}


def default_schemes_path(preset_name: str) -> Path:
    """``data/results/schemes_<preset>.csv`` (``$KDTUTOR_RESULTS`` replaces the folder)."""
    return results_path(f"schemes_{canonical_preset(preset_name)}.csv")


def load_schemes(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Rows (numbers converted, ``curve`` as a list of floats) and header of a schemes CSV
    (or of another catalogue's: its :data:`EXTRA_COLUMNS` are converted too, an empty one to
    ``None``)."""
    rows, header = load_results(path)
    for row in rows:
        for key, kind in _NUMERIC.items():
            row[key] = kind(row[key])
        for key, kind in _OPTIONAL_NUMERIC.items():
            if key in row:
                row[key] = kind(row[key]) if row[key] not in ("", None) else None
        row["curve"] = [float(v) for v in row["curve"].split(";")] if row["curve"] else []
    return rows, header


def _get_scheme(label: str, catalogue: Sequence[Scheme] = SCHEMES) -> Scheme:
    for scheme in catalogue:
        if scheme.label == label:
            return scheme
    from ..errors import unknown_name

    raise unknown_name("scheme", label, [s.label for s in catalogue])


def _check_catalogue(catalogue: Sequence[Scheme]) -> tuple[Scheme, ...]:
    if isinstance(catalogue, (str, Scheme)) or not isinstance(catalogue, Sequence):
        raise KDTutorError(
            f"a catalogue is a sequence of Scheme rows (e.g. SCHEMES), got {catalogue!r}."
        )
    schemes = tuple(catalogue)
    for scheme in schemes:
        if not isinstance(scheme, Scheme):
            raise KDTutorError(
                f"a catalogue holds Scheme rows, got {type(scheme).__name__} {scheme!r}."
            )
    labels = [s.label for s in schemes]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if not schemes or twice:
        raise KDTutorError(
            "a catalogue needs at least one scheme and distinct labels (a row is resumed by "
            f"its label and seed); repeated: {twice}."
        )
    return schemes


def _check_runnable(scheme: Scheme) -> None:
    """What can be checked without training: the method exists, the specs parse as registry
    models, a named zoo teacher has a recipe."""
    from ..methods import get_method
    from ..specs import parse_model_spec
    from ..zoo import get_recipe

    if get_method(scheme.method).requires_teacher and scheme.teacher == "none":
        raise KDTutorError(
            f"scheme {scheme.label!r}: method {scheme.method!r} needs a teacher: set teacher="
            "'zoo', 'zoo:<name>' or 'scratch'."
        )
    for role, spec in (("student", scheme.student), *(("assistant", s) for s in scheme.chain)):
        if spec is None:
            continue
        parsed = parse_model_spec(spec)
        if parsed.kind != "registry" or parsed.weights is not None:
            raise KDTutorError(
                f"scheme {scheme.label!r}: the {role} {spec!r} must be a registry model (a name "
                "or a call such as 'convnet(widths=(8,16,32))') trained here, not a zoo, timm "
                "or weights spec."
            )
    if scheme.teacher.startswith("zoo:"):
        get_recipe(scheme.teacher)


def _check_options(columns: Sequence[str], pair_by: str) -> tuple[str, ...]:
    columns = tuple(columns)
    missing = [c for c in SCHEME_COLUMNS if c not in columns]
    unknown = [c for c in columns if c not in SCHEME_COLUMNS and c not in EXTRA_COLUMNS]
    if missing or unknown:
        raise KDTutorError(
            f"a catalogue's columns are SCHEME_COLUMNS followed by any of EXTRA_COLUMNS "
            f"{EXTRA_COLUMNS}; missing {missing}, unknown {unknown}."
        )
    if pair_by not in _PAIR_BY:
        raise KDTutorError(
            f"pair_by must be 'preset' (the preset's first pair's label) or 'student' (the "
            f"row's student), got {pair_by!r}."
        )
    return columns


def _weights_path(preset_name: str, scheme: str, seed: int, generation: int = 0) -> Path:
    from ..data.diskcache import cache_dir

    folder = cache_dir() / "schemes" / preset_name
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{scheme}_seed{seed}_gen{generation}.pt"


def _fit_settings(
    preset: Preset, epochs: int, train: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``fit``'s settings for a run of the preset (all but the data and the seed), with a
    scheme's ``train`` overrides last."""
    return {
        "epochs": epochs,
        "batch_size": preset.batch_size,
        "lr": preset.lr,
        "schedule": preset.schedule,
        "milestones": preset.milestones,
        "augment": preset.augment,
        **preset.train,
        **(train or {}),
    }


def _fit(
    distiller: Any,
    preset: Preset,
    epochs: int,
    seed: int,
    *,
    split: str = "test",
    train: Mapping[str, Any] | None = None,
) -> Any:
    from ..train import fit

    return fit(
        distiller,
        preset_data(preset, "train"),
        preset_data(preset, split),
        seed=seed,
        **_fit_settings(preset, epochs, train),
    )


def _student(name: str, seed: int, weights: Path | None = None) -> Any:
    """The network of a scheme, built after seeding: ``name`` is a registry name or a model
    spec in call form (its options go to ``build_model``)."""
    from ..models import build_model
    from ..seeding import seed_everything
    from ..specs import parse_model_spec

    parsed = parse_model_spec(name)
    seed_everything(seed)
    return build_model(parsed.name, num_classes=10, weights_path=weights, **parsed.options)


def _scratch_teacher(preset_name: str, preset: Preset, student: str, seed: int) -> Any:
    """This seed's student trained alone (the ``scratch`` scheme), from its saved weights, or
    trained again (deterministically: the same run) when they are missing."""
    from ..methods import build_distiller
    from ..train.recorder import save_student

    path = _weights_path(preset_name, "scratch", seed)
    if not path.exists():
        distiller = build_distiller("scratch", _student(student, seed))
        _fit(distiller, preset, preset.epochs, seed)
        save_student(distiller.student, path, {"model": student, "seed": seed})
    teacher = _student(student, seed, path)
    return teacher.eval().requires_grad_(False)


def _curves(history: Sequence[dict[str, Any]], networks: Sequence[str]) -> dict[str, str]:
    out = {}
    for name in networks:
        values = [h["test"][name]["accuracy"] if "test" in h else h["test_acc"] for h in history]
        out[name] = ";".join(f"{v:.2f}" for v in values)
    return out


def _network_rows(
    distiller: Any,
    preset: Preset,
    scheme: Scheme,
    seed: int,
    *,
    curves: Mapping[str, str],
    train: Any,
    prior: Any,
    extra: Mapping[str, Callable[[Any], Any]] | None = None,
    extra_flops: Mapping[str, float] | None = None,
    teacher: str | None = None,
    path: str = "",
    columns: Sequence[str] = SCHEME_COLUMNS,
) -> list[dict[str, Any]]:
    """One row per network of ``distiller.eval_networks()`` (and of ``extra``), scored on the
    scheme's split; ``teacher`` labels the row's teacher (``None``: the pair's teacher for a
    ``"zoo"`` scheme, else none). The :data:`EXTRA_COLUMNS` that ``columns`` names are added
    (the teacher's are those of ``distiller.teacher``, the network's immediate teacher)."""
    import torch

    from ..data import BatchLoader
    from ..features import evaluating
    from ..methods import get_method
    from .cost import network_flops

    evaluate = preset_data(preset, scheme.split)
    networks = dict(distiller.eval_networks())
    networks.update(extra or {})
    wanted = set(columns) & set(EXTRA_COLUMNS)
    mimic = getattr(distiller, "teacher", None) if wanted else None
    keep_logits = mimic is not None and bool(wanted & {"agreement", "kl_test", "kl_train"})
    flags: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    with torch.no_grad(), evaluating(distiller):
        logits: dict[str, list[Any]] = {name: [] for name in networks}
        kept: dict[str, list[Any]] = {name: [] for name in networks}
        for batch in BatchLoader(evaluate, 512):
            for name, network in networks.items():
                out = network(batch.x)
                logits[name].append(out.argmax(dim=1) == batch.y)
                if keep_logits:
                    kept[name].append(out.float())
        flags = {name: torch.cat(v).numpy() for name, v in logits.items()}
        if keep_logits:
            outputs = {name: torch.cat(v) for name, v in kept.items()}
        seen: dict[str, Any] = {}
        if keep_logits and "kl_train" in wanted:  # in eval mode too: batch norm's statistics
            parts: dict[str, list[Any]] = {name: [] for name in networks}
            for batch in BatchLoader(preset_data(preset, "train"), 512):
                for name, network in networks.items():
                    parts[name].append(network(batch.x).float())
            seen = {name: torch.cat(v) for name, v in parts.items()}
    shape = tuple(evaluate.images.shape[1:])
    if teacher is None:
        teacher = preset.pairs[0].teacher if scheme.teacher == "zoo" else ""
    mimicry = _mimicry(outputs, seen, mimic, preset, evaluate) if mimic is not None else {}
    rows = []
    for name, correct in flags.items():
        curve = curves.get(name, "")
        accuracies = [float(v) for v in curve.split(";")] if curve else []
        last = 100.0 * float(correct.mean())
        best = max(accuracies) if accuracies else last
        infer = (extra_flops or {}).get(name)
        if infer is None:
            infer = network_flops(networks[name], shape)
        row = {
            "pair": preset.pairs[0].label,
            "teacher": teacher,
            "student": _network_architecture(distiller, scheme, preset, name),
            "method": f"{scheme.label}/{name}",
            "family": get_method(scheme.method).family,
            "seed": seed,
            "best_acc": round(best, 4),
            "best_epoch": accuracies.index(best) + 1 if accuracies else len(accuracies),
            "last_acc": round(last, 4),
            "seconds": round(train.seconds, 2),
            "hparams": ";".join(f"{k}={v}" for k, v in sorted(scheme.hparams.items())),
            "correct": encode_correct(correct),
            "scheme": scheme.label,
            "network": name,
            "epochs": scheme.epochs or preset.epochs,
            "train_flops": f"{train.flops:.12g}",
            "prior_flops": f"{prior.flops:.12g}",
            "total_flops": f"{(train + prior).flops:.12g}",
            "infer_flops": f"{infer:.12g}",
            "train_seconds": round(train.seconds, 2),
            "prior_seconds": round(prior.seconds, 2),
            "total_seconds": round((train + prior).seconds, 2),
            "curve": curve,
        }
        extras = {"split": scheme.split, "path": path, **mimicry.get("teacher", {})}
        extras.update(mimicry.get(name, {}))
        for column in EXTRA_COLUMNS:
            if column in wanted:
                row[column] = extras.get(column, "")
        rows.append(row)
    return rows


_TEACHER_LOGITS: dict[tuple[str, str], Any] = {}
"""Teacher logits by (weights digest, data fingerprint), kept for the process: the runs of a
suite that share a teacher read its outputs once per worker."""


def _teacher_logits(teacher: Any, data: Any) -> Any:
    from ..cache import dataset_fingerprint, weights_digest
    from ..train import predict_logits

    key = (weights_digest(teacher), dataset_fingerprint(data))
    if key not in _TEACHER_LOGITS:
        while len(_TEACHER_LOGITS) >= 8:
            _TEACHER_LOGITS.pop(next(iter(_TEACHER_LOGITS)))
        _TEACHER_LOGITS[key] = predict_logits(teacher, data)
    return _TEACHER_LOGITS[key]


def _mimicry(
    outputs: Mapping[str, Any],
    train_outputs: Mapping[str, Any],
    teacher: Any,
    preset: Preset,
    evaluate: Any,
) -> dict[str, dict[str, Any]]:
    """The teacher's columns (under ``"teacher"``), and each network's agreement with it and
    KL to it on the row's images (``outputs``: logits by network) and on the training images
    (``train_outputs``), under the network's name."""
    from ..analysis.response import response_diagnostics
    from .cost import network_flops

    teacher_eval, labels = _teacher_logits(teacher, evaluate)
    shape = tuple(evaluate.images.shape[1:])
    out: dict[str, dict[str, Any]] = {
        "teacher": {
            "teacher_acc": round(
                100.0 * float((teacher_eval.argmax(1) == labels).float().mean()), 4
            ),
            "teacher_params": sum(p.numel() for p in teacher.parameters()),
            "teacher_flops": f"{network_flops(teacher, shape):.12g}",
        }
    }
    if train_outputs:
        teacher_train, train_labels = _teacher_logits(teacher, preset_data(preset, "train"))
    for name, logits in outputs.items():
        test = response_diagnostics(logits, teacher_eval, labels, T=4.0)
        out[name] = {"agreement": round(test["agreement"], 4), "kl_test": round(test["kd"], 6)}
        if name in train_outputs:
            train = response_diagnostics(train_outputs[name], teacher_train, train_labels, T=4.0)
            out[name]["kl_train"] = round(train["kd"], 6)
    return out


def _network_architecture(distiller: Any, scheme: Scheme, preset: Preset, network: str) -> str:
    student = scheme.student or preset.pairs[0].student
    peers = tuple(scheme.hparams.get("peers", ()))
    if network.startswith("peer") and network[4:].isdigit() and int(network[4:]) > 1 and peers:
        return peers[int(network[4:]) - 2]
    if network == "ensemble" and peers:
        return "+".join((student, *peers))
    return student


def _train_snapshots(
    schemes: Sequence[Scheme], preset: Preset, log: Callable[[str], None] | None
) -> None:
    """Train the early-stopped teachers (``zoo:NAME@E``) that ``schemes`` need, once each
    and before the runs (which may run in parallel), on the preset's images."""
    from ..snapshots import split_snapshot, train_snapshots

    wanted: dict[str, set[int]] = {}
    for scheme in schemes:
        base, epoch = split_snapshot(scheme.teacher)
        if scheme.teacher.startswith("zoo:") and epoch is not None:
            wanted.setdefault(base, set()).add(epoch)
    if not wanted:
        return
    data = (preset_data(preset, "train"), preset_data(preset, "test"))
    for base, epochs in wanted.items():
        if log:
            log(f"early-stopped teachers {base} at epochs {sorted(epochs)} (kept once trained)")
        train_snapshots(base, sorted(epochs), data=data, log=None)


def _resolve_teacher(
    scheme: Scheme, preset: Preset, preset_name: str, seed: int, student: str
) -> tuple[Any, Any, str]:
    """The scheme's first teacher (frozen, or ``None``), what it cost before the run, and its
    label in the rows (``""`` for none and for this seed's scratch student)."""
    from ..snapshots import load_snapshot, split_snapshot
    from ..zoo import get_recipe, load_teacher
    from .cost import Cost, teacher_cost

    if scheme.teacher == "none":
        return None, Cost(), ""
    if scheme.teacher == "zoo":
        pair = preset.pairs[0]
        teacher = load_pair_teacher(pair, preset.dataset, preset_data(preset, "train").num_classes)
        return teacher, teacher_cost(pair.teacher), pair.teacher
    if scheme.teacher == "scratch":
        teacher = _scratch_teacher(preset_name, preset, student, seed)
        return teacher, _scratch_cost(preset, student, seed), ""
    recipe = get_recipe(scheme.teacher)
    if recipe.dataset != preset.dataset:
        raise KDTutorError(
            f"scheme {scheme.label!r}: the zoo teacher {recipe.name!r} was trained on "
            f"{recipe.dataset!r}, but the preset trains on {preset.dataset!r}: name a zoo "
            f"teacher of {preset.dataset!r} (`kdtutor zoo list`)."
        )
    name = scheme.teacher.removeprefix("zoo:")
    if split_snapshot(name)[1] is not None:  # early-stopped: on the preset's training images
        size = len(preset_data(preset, "train"))
        return load_snapshot(name, train_size=size), teacher_cost(name, size), name
    return load_teacher(recipe.name), teacher_cost(recipe.name), recipe.name


def run_scheme(
    scheme: Scheme | str,
    seed: int,
    preset: Preset | str = "book",
    *,
    preset_name: str | None = None,
    catalogue: Sequence[Scheme] = SCHEMES,
    columns: Sequence[str] = SCHEME_COLUMNS,
    pair_by: str = "preset",
) -> list[dict[str, Any]]:
    """Train one scheme on one seed and return one CSV row per network it scores.

    Args:
        scheme: a :class:`Scheme`, or the label of one in ``catalogue``.
        seed: the run's seed (its student's initialisation and batch order).
        preset: a preset or its name (``"smoke"``, ``"book"``).
        preset_name: the preset's name when ``preset`` is a :class:`Preset` (it names the
            folder of saved weights).
        catalogue: where a label is looked up.
        columns: the row's columns: :data:`SCHEME_COLUMNS`, then any of
            :data:`EXTRA_COLUMNS` (computed only when named).
        pair_by: the ``pair`` column: ``"preset"`` (the preset's first pair's label) or
            ``"student"`` (the row's network's architecture: rows grouped by student).
    """
    import torch

    from ..methods import build_distiller
    from ..train.recorder import save_student
    from .cost import run_cost

    scheme = _get_scheme(scheme, catalogue) if isinstance(scheme, str) else scheme
    columns = _check_options(columns, pair_by)
    if isinstance(preset, str):
        preset_name, preset = canonical_preset(preset), get_preset(preset)
    preset_name = preset_name or "book"
    if preset.threads:
        torch.set_num_threads(preset.threads)
    pair = preset.pairs[0]
    train_data = preset_data(preset, "train")
    epochs = scheme.epochs or preset.epochs
    student_name = scheme.student or pair.student
    hparams = {**method_hparams(scheme.method, epochs, len(train_data)), **scheme.hparams}
    shape = tuple(train_data.images.shape[1:])
    batch_size = _fit_settings(preset, epochs, scheme.train)["batch_size"]

    def one_run(teacher: Any, init_seed: int) -> tuple[Any, Any, Any]:
        distiller = build_distiller(
            scheme.method, _student(student_name, init_seed), teacher, hparams,
            input_shape=shape,
        )  # fmt: skip
        result = _fit(distiller, preset, epochs, seed, split=scheme.split, train=scheme.train)
        cost = run_cost(
            distiller, train_data, result, batch_size=batch_size,
            teacher_cached=teacher is not None,
        )  # fmt: skip
        return distiller, result, cost

    teacher, prior, label = _resolve_teacher(scheme, preset, preset_name, seed, student_name)
    if scheme.chain:
        rows = _chain(scheme, seed, preset, preset_name, teacher, prior, label, hparams, columns)
    elif scheme.generations == 1:
        distiller, result, cost = one_run(teacher, seed)
        if scheme.label == "scratch":
            path = _weights_path(preset_name, "scratch", seed)
            save_student(distiller.student, path, {"model": student_name, "seed": seed})
        names = list(distiller.eval_networks())
        rows = _network_rows(
            distiller, preset, scheme, seed,
            curves=_curves(result.history, names), train=cost, prior=prior, teacher=label,
            path=">".join(n for n in (label, student_name) if n), columns=columns,
        )  # fmt: skip
    else:
        rows = _born_again(
            scheme, seed, preset, teacher, prior, student_name, hparams, epochs, columns=columns
        )
    for row in rows:
        if pair_by == "student":
            row["pair"] = row["student"]
    return [{column: row.get(column, "") for column in columns} for row in rows]


def _scratch_cost(preset: Preset, student: str, seed: int) -> Any:
    """The FLOPs of this seed's scratch run, counted on a fresh distiller (they do not depend
    on the weights); its seconds are added by the suite from the scratch row."""
    from ..methods import build_distiller
    from .cost import Cost, step_flops

    distiller = build_distiller("scratch", _student(student, seed))
    train = preset_data(preset, "train")
    batch = train.batch(list(range(preset.batch_size)))
    per_image = step_flops(distiller, batch) / preset.batch_size
    return Cost(flops=per_image * len(train) * preset.epochs)


def _born_again(
    scheme: Scheme,
    seed: int,
    preset: Preset,
    generation0: Any,
    prior: Any,
    student: str,
    hparams: Mapping[str, Any],
    epochs: int,
    *,
    columns: Sequence[str] = SCHEME_COLUMNS,
) -> list[dict[str, Any]]:
    """Generations 1..G, each taught by the last (generation 0: the student alone), scored
    alone and as the ensembles of generations 0..g: a chain
    (:func:`~kdtutor.chain.fit_chain`) of G copies of the student's architecture, each
    initialised from its own seed; the batches follow the run's seed."""
    from ..chain import fit_chain
    from ..losses.schemes import ensemble_log_probs
    from .cost import network_flops, run_cost

    rows: list[dict[str, Any]] = []
    generations = [generation0]
    train = preset_data(preset, "train")
    shape = tuple(train.images.shape[1:])
    single = network_flops(generation0, shape)
    charged = [prior]  # the chain's cost so far: generation 0, then each generation trained
    settings = _fit_settings(preset, epochs, scheme.train)

    def rows_and_cost(stage: int, distiller: Any, result: Any) -> None:
        g = stage + 1
        cost = run_cost(distiller, train, result, batch_size=settings["batch_size"])
        generations.append(distiller.student.eval().requires_grad_(False))
        members = list(generations)

        def ensemble(x: Any, members: list[Any] = members) -> Any:
            return ensemble_log_probs([m(x) for m in members])

        gen_rows = _network_rows(
            distiller, preset, scheme, seed,
            curves={"student": _curves(result.history, ["student"])["student"]},
            train=cost, prior=charged[-1],
            extra={"ensemble": ensemble}, extra_flops={"ensemble": single * len(members)},
            teacher="", path=">".join(f"gen{k}" for k in range(g + 1)), columns=columns,
        )  # fmt: skip
        for row in gen_rows:
            row["network"] = f"gen{g}" if row["network"] == "student" else f"ens0-{g}"
            row["method"] = f"{scheme.label}/{row['network']}"
        rows.extend(gen_rows)
        charged.append(charged[-1] + cost)

    fit_chain(
        generation0, [student] * scheme.generations, train, preset_data(preset, scheme.split),
        method=scheme.method, hparams=hparams, seed=seed,
        init_seed=lambda stage: seed + 1000 * (stage + 1), on_stage=rows_and_cost,
        **settings,
    )  # fmt: skip
    return rows


def _chain_store(preset_name: str) -> Path:
    """The folder of a preset's stored chain stages (under the disk cache)."""
    from ..data.diskcache import cache_dir

    return cache_dir() / "schemes" / preset_name / "chains"


def _counted_cost(distiller: Any, train: Any, epochs: int, batch_size: int) -> Any:
    """The FLOPs :func:`~kdtutor.bench.cost.run_cost` would count for a run of ``epochs``
    epochs of ``distiller`` (its seconds unknown: 0), for a stage loaded from the store."""
    from types import SimpleNamespace

    from .cost import run_cost

    stand_in = SimpleNamespace(history=[{}] * epochs, seconds=0.0, config={}, method=None)
    return run_cost(distiller, train, stand_in, batch_size=batch_size)  # type: ignore[arg-type]


def _chain(
    scheme: Scheme,
    seed: int,
    preset: Preset,
    preset_name: str,
    teacher: Any,
    prior: Any,
    head: str,
    hparams: Mapping[str, Any],
    columns: Sequence[str],
) -> list[dict[str, Any]]:
    """The teacher -> assistants -> student chain of ``scheme``
    (:func:`~kdtutor.chain.fit_chain` with every stage initialised from ``seed``, TAKD's
    pairing with direct KD), one row per stage: ``ta1``, ``ta2``, ..., then ``student``. A
    stage is charged the teacher and the stages before it. Stages come from the preset's
    store when an earlier scheme trained them (same teacher, path prefix, method, settings
    and seed), with the cost and curve recorded beside their weights."""
    from ..chain import fit_chain
    from ..io import atomic_write_json
    from .cost import Cost, run_cost

    train = preset_data(preset, "train")
    epochs = scheme.epochs or preset.epochs
    settings = _fit_settings(preset, epochs, scheme.train)
    path = [*scheme.chain, scheme.student or preset.pairs[0].student]
    done: dict[int, tuple[Any, Any, str | None]] = {}

    def on_stage(i: int, distiller: Any, result: Any) -> None:
        if result is not None:
            cost = run_cost(distiller, train, result, batch_size=settings["batch_size"])
            done[i] = (distiller, cost, _curves(result.history, ["student"])["student"])
        else:
            done[i] = (
                distiller,
                _counted_cost(distiller, train, epochs, settings["batch_size"]),
                None,
            )

    stages = fit_chain(
        teacher, path, train, preset_data(preset, scheme.split), method=scheme.method,
        hparams=hparams, seed=seed, store=_chain_store(preset_name), on_stage=on_stage,
        **settings,
    )  # fmt: skip
    rows: list[dict[str, Any]] = []
    charged = prior
    for i, stage in enumerate(stages):
        distiller, cost, curve = done[i]
        record = stage.weights.with_suffix(".json") if stage.weights is not None else None
        if curve is not None and record is not None:
            atomic_write_json(
                record, {"flops": cost.flops, "seconds": cost.seconds, "curve": curve}
            )
        elif curve is None:
            known = _stage_record(record)
            if known is not None:
                cost, curve = Cost(known["flops"], known["seconds"]), known["curve"]
        network = "student" if i == len(stages) - 1 else f"ta{i + 1}"
        new = _network_rows(
            distiller, preset, scheme, seed, curves={"student": curve or ""}, train=cost,
            prior=charged, teacher=head if i == 0 else path[i - 1],
            path=">".join([head, *path[: i + 1]]), columns=columns,
        )  # fmt: skip
        for row in new:
            row["network"], row["method"], row["student"] = (
                network,
                f"{scheme.label}/{network}",
                path[i],
            )
        rows.extend(new)
        charged = charged + cost
    return rows


def _stage_record(path: Path | None) -> dict[str, Any] | None:
    """A stored stage's cost and curve, or ``None`` when missing or unreadable."""
    import json

    if path is None or not path.is_file():
        return None
    try:
        known = json.loads(path.read_text())
        return {"flops": float(known["flops"]), "seconds": float(known["seconds"]),
                "curve": str(known["curve"])}  # fmt: skip
    except (ValueError, KeyError, TypeError):
        return None


def _charge_scratch_seconds(row: dict[str, Any], rows: Sequence[dict[str, Any]]) -> None:
    """Add the wall time of this seed's scratch run (known from its row) to a row whose
    scheme was taught by it; :func:`run_scheme` counts its FLOPs but cannot time it."""
    for other in rows:
        if other["method"] == "scratch/student" and int(other["seed"]) == int(row["seed"]):
            extra = float(other["train_seconds"])
            row["prior_seconds"] = round(float(row["prior_seconds"]) + extra, 2)
            row["total_seconds"] = round(float(row["total_seconds"]) + extra, 2)
            return


def _run_scheme_task(task: tuple[Scheme, int, str, tuple[str, ...], str]) -> list[dict[str, Any]]:
    scheme, seed, preset_name, columns, pair_by = task
    return run_scheme(
        scheme, seed, preset_name, preset_name=preset_name, columns=columns, pair_by=pair_by
    )


def run_schemes_suite(
    preset_name: str = "book",
    *,
    schemes: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    out: str | os.PathLike[str] | None = None,
    jobs: int = 1,
    command: str | None = None,
    log: Callable[[str], None] | None = print,
    catalogue: Sequence[Scheme] = SCHEMES,
    columns: Sequence[str] = SCHEME_COLUMNS,
    pair_by: str = "preset",
) -> list[dict[str, Any]]:
    """Run every (scheme, seed) not yet in ``out``; returns all rows.

    The student alone (``scratch``) runs first for every seed: its weights are generation 0
    of the Born-Again chain and Tf-KD's teacher (saved under the disk cache; re-made by
    training again when missing); chains run shortest first, so that with one job the stages
    they share are stored before a longer chain needs them (with several jobs two chains may
    train a shared stage at once: the same weights, twice the time). Rows are written
    atomically after each scheme, so an interrupted suite loses only the schemes in flight.

    Args:
        preset_name: ``"smoke"`` or ``"book"`` (:data:`~kdtutor.bench.knowledge.PRESETS`).
        schemes: labels of ``catalogue`` to run (default: all of it).
        seeds: the seeds (default: the preset's).
        out: the CSV (default ``data/results/schemes_<preset>.csv``).
        jobs: processes running schemes in parallel.
        command: the command recorded in the CSV's header.
        log: where progress lines go (``None``: nowhere).
        catalogue: the schemes (default :data:`SCHEMES`).
        columns: the CSV's columns: :data:`SCHEME_COLUMNS`, then any of
            :data:`EXTRA_COLUMNS`.
        pair_by: ``"preset"`` or ``"student"`` (see :func:`run_scheme`).
    """
    preset = get_preset(preset_name)
    preset_name = canonical_preset(preset_name)
    catalogue = _check_catalogue(catalogue)
    columns = _check_options(columns, pair_by)
    labels = list(dict.fromkeys(schemes or [s.label for s in catalogue]))
    chosen = [_get_scheme(label, catalogue) for label in labels]
    for scheme in chosen:
        _check_runnable(scheme)
    seeds = list(seeds if seeds is not None else preset.seeds)
    path = Path(out) if out is not None else default_schemes_path(preset_name)
    rows = resumed_rows(path, preset_name)
    done = {(r["scheme"], int(r["seed"])) for r in rows}
    order = sorted(chosen, key=lambda s: (s.label != "scratch", len(s.chain)))
    tasks = [(scheme, seed, preset_name, columns, pair_by) for scheme in order for seed in seeds
             if (scheme.label, seed) not in done]  # fmt: skip
    header = suite_header(preset_name, command or "kdtutor " + " ".join(sys.argv[1:]))
    if log:
        log(f"{len(tasks)} scheme runs to do ({len(done)} already in {path})")
    _train_snapshots([task[0] for task in tasks], preset, log)

    def record(new: list[dict[str, Any]]) -> None:
        for row in new:
            if _get_scheme(row["scheme"], catalogue).teacher == "scratch":
                _charge_scratch_seconds(row, rows)
        rows.extend(new)
        write_results(path, header, rows, columns)
        if log:
            for row in new:
                log(
                    f"{row['method']:<22} seed {row['seed']}  last {row['last_acc']:.2f}  "
                    f"{float(row['total_flops']) / 1e12:.2f} TFLOPs  {row['seconds']:.0f} s"
                )

    run_tasks(_run_scheme_task, tasks, jobs, record)  # type: ignore[arg-type]
    return rows


def page_rows(
    scale: str,
    schemes: Sequence[str] | None = None,
    *,
    rerun: bool = False,
    jobs: int = 2,
    catalogue: Sequence[Scheme] = SCHEMES,
    columns: Sequence[str] = SCHEME_COLUMNS,
    pair_by: str = "preset",
    name: str = "schemes",
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """A suite's rows and header, as a page of the book reads them.

    At ``"smoke"`` scale (the tests) a tiny suite of ``schemes`` (default: all of
    ``catalogue``) runs now, one epoch on 256 images, into a temporary folder that also takes
    the disk cache (so the weights it saves go there: ``KDTUTOR_CACHE`` is set for this
    process). At any other scale the committed ``data/results/<name>_book.csv`` is read; with
    ``rerun`` the (scheme, seed) runs it lacks are made first (hours on 2 cores).
    ``catalogue``, ``columns`` and ``pair_by`` are :func:`run_schemes_suite`'s; ``name``
    names the CSV (``"schemes"``: ``schemes_book.csv``).
    """
    options = {"catalogue": catalogue, "columns": columns, "pair_by": pair_by}
    if scale == "smoke":
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix=f"kdtutor-{name}-"))
        os.environ["KDTUTOR_CACHE"] = str(folder / "cache")
        out = folder / f"{name}_smoke.csv"
        run_schemes_suite(
            "smoke", schemes=schemes, out=out, log=None, command="smoke page", **options
        )
        return load_schemes(out)
    out = results_path(f"{name}_book.csv")
    if rerun:
        run_schemes_suite("book", schemes=schemes, out=out, jobs=jobs, **options)
    return load_schemes(out)
