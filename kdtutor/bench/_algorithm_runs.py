"""The runners of chapter 6's suite (:mod:`kdtutor.bench.algorithms`): one function per way of
training an algorithm's student, each returning the rows of one (algorithm, seed).

Every runner builds its student after seeding with the run's seed, as the knowledge and
schemes suites do (seed ``s`` gives the initial weights of their runs of seed ``s``), trains
it with the package's :func:`~kdtutor.train.fit` (or :func:`~kdtutor.train.fit_sequence`),
counts its cost with :mod:`kdtutor.bench.cost` and scores every network it deploys with the schemes
suite's :func:`~kdtutor.bench.schemes._network_rows` (accuracy, per-image flags, learning
curve, costs). What a runner measures beyond those columns goes into the row's ``extra``
dict (JSON in the CSV).

* :func:`run_plain`: one ``fit`` on the data preset's training split (the schemes suite's
  single run), with the discriminator's accuracy after every epoch for ``adversarial`` and
  the teachers' weights for ``mtkd``;
* :func:`run_datafree`: a data-free distiller (DAFL, KD on noise) trained on its own batches,
  ``fit(d, None, test, steps_per_epoch=S)``;
* :func:`run_inversion`: DeepInversion's pool (:func:`~kdtutor.methods.deepinversion.invert`),
  then KD on it through the teacher cache;
* :func:`run_crossmodal`: supervision transfer from the RGB teacher to a geometry student,
  then fine-tuning on a few labelled geometry images (two rows); with ``method="scratch"``
  the few-label training alone;
* :func:`run_qat`: quantization-aware fine-tuning from the schemes suite's saved fp32
  student, or post-training calibration (``options["ptq"]``), with int8 size and latency;
* :func:`run_sequence`: the class-incremental sequence (:func:`~kdtutor.train.fit_sequence`)
  with the accuracy matrix, forgetting and, for iCaRL, the nearest-mean-of-exemplars matrix.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor, nn

from ..errors import KDTutorError

if TYPE_CHECKING:
    from .cost import Cost
    from .knowledge import Preset
    from .schemes import Scheme

__all__ = [
    "BUDGETS",
    "RUNNERS",
    "TASKS",
    "budget",
    "data_preset",
    "pair_label",
    "run_crossmodal",
    "run_datafree",
    "run_inversion",
    "run_plain",
    "run_qat",
    "run_sequence",
    "source_pair",
]


class Algorithm(Protocol):
    """What a runner reads of a suite entry: :class:`kdtutor.bench.algorithms.Algorithm`
    (defined there, with its checks; written here as a protocol so that this module does not
    import the one that imports it)."""

    @property
    def label(self) -> str: ...
    @property
    def runner(self) -> str: ...
    @property
    def method(self) -> str: ...
    @property
    def hparams(self) -> Mapping[str, Any]: ...
    @property
    def student(self) -> str | None: ...
    @property
    def data(self) -> str: ...
    @property
    def epochs(self) -> int | None: ...
    @property
    def split(self) -> str: ...
    @property
    def train(self) -> Mapping[str, Any]: ...
    @property
    def options(self) -> Mapping[str, Any]: ...
    @property
    def pair(self) -> str: ...

    def scheme(self, epochs: int | None = None) -> Scheme: ...


TASKS: tuple[tuple[int, int], ...] = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
"""The class-incremental sequence: one similar pair of ``shapes`` classes per task (circle and
ellipse, square and rectangle, ...), so each task is hard inside and easy across."""

BUDGETS: dict[str, dict[str, dict[str, Any]]] = {
    "book": {
        "plain": {"disc_images": 2000},
        "datafree": {"batch": 256, "steps": 20, "epochs": 20, "gen_width": 32},
        "inversion": {"pool": 1024, "iters": 200, "batch": 256, "epochs": 100},
        "crossmodal": {"labels": 1000},
        "qat": {"epochs": 5, "lr": 0.005, "calibration": 1024, "latency_runs": 50},
        "sequence": {"memory": 200},
    },
    "smoke": {
        "plain": {"disc_images": 128},
        "datafree": {"batch": 32, "steps": 2, "epochs": 1, "gen_width": 8},
        "inversion": {"pool": 32, "iters": 2, "batch": 16, "epochs": 1},
        "crossmodal": {"labels": 64},
        "qat": {"epochs": 2, "lr": 0.005, "calibration": 64, "latency_runs": 2},
        "sequence": {"memory": 40},
    },
}
"""Each runner's budget per preset (the design note's section 2.6 and 4.1 at book scale): DAFL's
generated batches (``batch`` x ``steps`` per epoch x ``epochs``; generator width), the
DeepInversion pool (``pool`` images, ``iters`` Adam steps per inversion ``batch``) and the
student's ``epochs`` over it, the cross-modal fine-tune's labelled images, the QAT fine-tune
(``epochs`` at ``lr``, cosine), PTQ's calibration images and the latency repeats, the exemplar
memory. An algorithm's ``options`` replace the book values (e.g. DAFL on mnist5k: width 16, 10
steps); at smoke scale the smoke values win."""

_SOURCE_PAIRS = {"shapes": "cnn_large->cnn_wide_s2", "mnist5k": "cnn_medium->cnn_tiny"}
_GEOMETRY_PAIR = "geometry:cnn_large->cnn_wide_s2"
_MNIST_PAIR = "mnist5k:cnn_medium->cnn_tiny"


# -- data, budgets, teachers -----------------------------------------------------------------
def data_preset(data: str, preset_name: str) -> Preset:
    """The preset an algorithm's data trains and scores on: the book protocol for ``shapes``;
    its geometry view for ``geometry`` (same sizes, dataset ``shapes_geometry``, pair
    ``geometry:cnn_large->cnn_wide_s2``); the mnist5k protocol for ``mnist5k`` (5,000
    digits, 1,000 test images, pair ``mnist5k:cnn_medium->cnn_tiny``; at smoke scale 256 and
    128 images, one epoch)."""
    from .knowledge import PRESETS, Pair, get_preset

    if preset_name not in ("smoke", "book"):
        raise KDTutorError(
            f"the algorithms suite runs at preset 'smoke' or 'book', not {preset_name!r}."
        )
    preset = get_preset(preset_name)
    if data == "shapes":
        return preset
    if data == "geometry":
        _register_geometry()
        pair = Pair(preset.pairs[0].teacher, preset.pairs[0].student, _GEOMETRY_PAIR)
        return dataclasses.replace(preset, dataset="shapes_geometry", pairs=(pair,))
    if data == "mnist5k":
        mnist = PRESETS["mnist5k"]
        pair = Pair(mnist.pairs[0].teacher, mnist.pairs[0].student, _MNIST_PAIR)
        mnist = dataclasses.replace(mnist, pairs=(pair,))
        if preset_name == "smoke":
            mnist = dataclasses.replace(mnist, epochs=1, seeds=(0,), train_size=256, test_size=128)
        return mnist
    raise KDTutorError(f"unknown data {data!r}: 'shapes', 'geometry' or 'mnist5k'.")


_GEOMETRY_REGISTERED = False


def _register_geometry() -> None:
    """Serve ``load_dataset("shapes_geometry", ...)`` in this process (worker processes too)."""
    global _GEOMETRY_REGISTERED
    if not _GEOMETRY_REGISTERED:
        from ..data.modalities import register_geometry_dataset

        register_geometry_dataset()
        _GEOMETRY_REGISTERED = True


def pair_label(algorithm: Algorithm, preset_name: str) -> str:
    """The ``pair`` column of an algorithm's rows: its own ``pair`` when set (the ViT rows'
    ``vit_p8->vit_s``), else its data preset's first pair (``cnn_large->cnn_wide_s2``,
    ``geometry:...``, ``mnist5k:...``)."""
    return algorithm.pair or data_preset(algorithm.data, preset_name).pairs[0].label


def source_pair(data: str) -> str:
    """The pair label the knowledge suite gives the rows an algorithm's references copy."""
    return _SOURCE_PAIRS[data]


def budget(algorithm: Algorithm, preset_name: str) -> dict[str, Any]:
    """The runner's budget (:data:`BUDGETS`) with the algorithm's ``options``: at book scale
    the options replace the book values; at smoke scale the smoke values win, and only the
    options the smoke budget does not set apply (``ptq``, ``factor`` ...)."""
    base = BUDGETS["book"].get(algorithm.runner, {})
    values = {**base, **algorithm.options}
    if preset_name == "smoke":
        values.update(BUDGETS["smoke"].get(algorithm.runner, {}))
    return values


def _threads(preset: Preset) -> None:
    if preset.threads:
        torch.set_num_threads(preset.threads)


def resolve_teacher(
    algorithm: Algorithm, preset: Preset, preset_name: str, seed: int, student: str
) -> tuple[Any, Cost, str]:
    """The algorithm's teacher (frozen, or ``None``), what it cost before the run and its
    label: the schemes suite's :func:`~kdtutor.bench.schemes._resolve_teacher`, plus the extra
    zoo members of a multi-teacher run (``hparams["teachers"]``), charged and named too
    (``shapes_cnn_large+shapes_resnet14+...``); the distiller loads them itself."""
    from .cost import teacher_cost
    from .schemes import _resolve_teacher

    teacher, prior, label = _resolve_teacher(algorithm.scheme(), preset, preset_name, seed, student)
    members = tuple(algorithm.hparams.get("teachers", ()) or ())
    for name in members:
        prior = prior + teacher_cost(name)
    if members:
        label = "+".join((label, *(m.removeprefix("zoo:") for m in members)))
    return teacher, prior, label


def _rows(
    distiller: Any,
    preset: Preset,
    algorithm: Algorithm,
    seed: int,
    *,
    curves: Mapping[str, str],
    train: Cost,
    prior: Cost,
    teacher: str,
    student: str,
    epochs: int | None = None,
    extra_networks: Mapping[str, Callable[[Any], Any]] | None = None,
    extra_flops: Mapping[str, float] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The schemes suite's rows of ``distiller``'s networks on the algorithm's split, each
    with a copy of ``extra``."""
    from .schemes import _network_rows

    scheme = algorithm.scheme(epochs=epochs) if epochs is not None else algorithm.scheme()
    rows = _network_rows(
        distiller, preset, scheme, seed, curves=curves, train=train, prior=prior,
        extra=extra_networks, extra_flops=extra_flops, teacher=teacher,
        path=">".join(n for n in (teacher, student) if n),
    )  # fmt: skip
    for row in rows:
        row["student"] = student
        row["extra"] = dict(extra or {})
    return rows


def _student(name: str, seed: int, data: Any) -> nn.Module:
    """The network of an algorithm for ``data``'s classes and channels, built after seeding:
    for 3-channel data the schemes suite's :func:`~kdtutor.bench.schemes._student` (the
    knowledge suite's initial weights of seed ``seed``), and the knowledge suite's
    ``build_model(..., in_channels=...)`` otherwise (mnist5k's one channel)."""
    from ..models import build_model
    from ..seeding import seed_everything
    from ..specs import parse_model_spec

    parsed = parse_model_spec(name)
    seed_everything(seed)
    return build_model(
        parsed.name, num_classes=data.num_classes, in_channels=data.in_channels,
        **parsed.options,
    )  # fmt: skip


def _accuracy(model: Callable[[Tensor], Tensor], data: Any) -> float:
    """Top-1 accuracy (%) of ``model`` on ``data`` (any callable: an int8 model has no
    parameters for ``kdtutor.train.evaluate`` to find its device by)."""
    from ..data import BatchLoader

    right = total = 0
    with torch.no_grad():
        for batch in BatchLoader(data, 512):
            right += int((model(batch.x).argmax(1) == batch.y).sum())
            total += len(batch.y)
    return 100.0 * right / max(total, 1)


# -- plain --------------------------------------------------------------------------------------
def run_plain(algorithm: Algorithm, seed: int, preset_name: str) -> list[dict[str, Any]]:
    """One ``fit`` of the algorithm's method on its data preset's training split, scored on
    its split after every epoch (the schemes suite's single run, through its helpers). An
    ``adversarial`` run records its discriminator's accuracy on held-out validation images
    after every epoch (``extra["disc_acc"]``,
    :func:`~kdtutor.methods.adversarial.discriminator_accuracy`); an ``mtkd`` run its
    teachers' accuracies and mean weights on the scored images (``extra["teachers"]``)."""
    from ..methods import build_distiller
    from ..train import fit
    from .cost import run_cost
    from .knowledge import method_hparams, preset_data
    from .schemes import _curves, _fit_settings

    preset = data_preset(algorithm.data, preset_name)
    _threads(preset)
    train = preset_data(preset, "train")
    epochs = algorithm.epochs or preset.epochs
    student = algorithm.student or preset.pairs[0].student
    hparams = {**method_hparams(algorithm.method, epochs, len(train)), **algorithm.hparams}
    teacher, prior, label = resolve_teacher(algorithm, preset, preset_name, seed, student)
    distiller = build_distiller(
        algorithm.method, _student(student, seed, train), teacher, hparams,
        input_shape=tuple(train.images.shape[1:]),
    )  # fmt: skip
    extra: dict[str, Any] = {}
    on_epoch = None
    if algorithm.method == "adversarial":
        from ..methods.adversarial import discriminator_accuracy

        held_out = preset_data(preset, "val")
        n = int(budget(algorithm, preset_name)["disc_images"])
        curve: list[float] = []
        extra["disc_acc"] = curve
        extra["disc_images"] = min(n, len(held_out))

        def on_epoch(end: Any) -> None:
            accuracy = discriminator_accuracy(distiller, held_out, n)  # type: ignore[arg-type]
            curve.append(round(accuracy, 2))

    settings = _fit_settings(preset, epochs, algorithm.train)
    scored = preset_data(preset, algorithm.split)
    result = fit(distiller, train, scored, seed=seed, on_epoch=on_epoch, **settings)
    cost = run_cost(
        distiller, train, result, batch_size=settings["batch_size"],
        teacher_cached=teacher is not None,
    )  # fmt: skip
    if algorithm.method == "mtkd":
        extra["teachers"] = _teacher_statistics(distiller, scored, label.split("+"))
    names = list(distiller.eval_networks())
    rows = _rows(
        distiller, preset, algorithm, seed, curves=_curves(result.history, names), train=cost,
        prior=prior, teacher=label, student=student, extra=extra,
    )  # fmt: skip
    for row in rows:
        if row["network"] == "ensemble":
            row["student"] = label  # the teachers' ensemble, scored as a classifier
    return rows


def _teacher_statistics(distiller: Any, data: Any, names: Sequence[str]) -> dict[str, Any]:
    """Each member's accuracy on ``data`` and its mean per-image weight under the run's
    ``combine`` (:func:`~kdtutor.losses.multi_teacher.teacher_weights`), overall and on the
    images it gets right and wrong."""
    from ..data import BatchLoader
    from ..losses.multi_teacher import teacher_weights

    stacks, labels = [], []
    with torch.no_grad():
        for batch in BatchLoader(data, 512):
            stacks.append(distiller.teacher.member_logits(batch.x).float())
            labels.append(batch.y)
    stack, y = torch.cat(stacks), torch.cat(labels)
    combine = distiller.hparams.combine
    weights = teacher_weights(stack, y, combine)
    right = stack.argmax(2) == y[:, None]

    def mean_where(mask: Tensor, k: int) -> float | None:
        chosen = weights[mask[:, k], k]
        return round(float(chosen.mean()), 6) if len(chosen) else None

    return {
        "combine": combine,
        "members": list(names),
        "accuracy": [round(100.0 * float(v), 4) for v in right.float().mean(0)],
        "mean_weight": [round(float(v), 6) for v in weights.mean(0)],
        "weight_when_right": [mean_where(right, k) for k in range(stack.shape[1])],
        "weight_when_wrong": [mean_where(~right, k) for k in range(stack.shape[1])],
    }


# -- data-free ------------------------------------------------------------------------------------
def run_datafree(algorithm: Algorithm, seed: int, preset_name: str) -> list[dict[str, Any]]:
    """A data-free distiller (``dafl``; ``generator="noise"``: KD on Gaussian images) trained
    on ``steps`` batches of ``batch`` generated images per epoch for ``epochs`` epochs, scored
    on the data preset's test split. Its cost is one real step
    (:func:`~kdtutor.bench.cost.step_flops`, the teacher counted inside it: there is no
    cache) times the steps."""
    from ..methods import build_distiller
    from ..train import fit
    from .cost import Cost, _training_seconds, step_flops
    from .knowledge import preset_data
    from .schemes import _curves, _fit_settings

    preset = data_preset(algorithm.data, preset_name)
    _threads(preset)
    spend = budget(algorithm, preset_name)
    test = preset_data(preset, "test")
    student = algorithm.student or preset.pairs[0].student
    teacher, prior, label = resolve_teacher(algorithm, preset, preset_name, seed, student)
    hparams = {**algorithm.hparams, "gen_width": int(spend["gen_width"]),
               "img_size": int(test.images.shape[-1])}  # fmt: skip
    distiller = build_distiller(algorithm.method, _student(student, seed, test), teacher, hparams)
    epochs, steps, batch = int(spend["epochs"]), int(spend["steps"]), int(spend["batch"])
    settings = _fit_settings(
        preset, epochs, {"batch_size": batch, "steps_per_epoch": steps, **algorithm.train}
    )
    result = fit(distiller, None, test, seed=seed, **settings)
    per_step = step_flops(distiller, distiller.synthesize_batch(batch), teacher_cached=False)
    cost = Cost(per_step * steps * epochs, _training_seconds(result))
    extra = {
        "batch": batch,
        "steps_per_epoch": steps,
        "generated_images": batch * steps * epochs,
        "gen_width": int(spend["gen_width"]) if hparams.get("generator") != "noise" else 0,
    }
    return _rows(
        distiller, preset, algorithm, seed, curves=_curves(result.history, ["student"]),
        train=cost, prior=prior, teacher=label, student=student, epochs=epochs, extra=extra,
    )  # fmt: skip


def run_inversion(algorithm: Algorithm, seed: int, preset_name: str) -> list[dict[str, Any]]:
    """DeepInversion: a pool of ``pool`` images inverted from the teacher (``iters`` Adam steps
    per batch of ``batch``, seeded by the run's seed, the method's other defaults:
    :class:`~kdtutor.methods.deepinversion.DeepInversionHParams`), made an ``ArrayDataset``
    (:func:`~kdtutor.methods.deepinversion.synthetic_dataset`), then KD on it for ``epochs``
    epochs with the method's student weights (CE 0, KD 1, T 4), through the teacher cache,
    scored once at the end (no curve: a 10,000-image evaluation after each of 100 short
    epochs would cost more than the student's training).
    The synthesis is the run's prior cost beside the teacher's: its FLOPs are one counted
    inversion step per image times the steps, its seconds measured."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..methods import build_distiller
    from ..methods.deepinversion import DeepInversionHParams, invert, synthetic_dataset
    from ..train import fit
    from .cost import Cost, run_cost
    from .knowledge import preset_data
    from .schemes import _fit_settings

    preset = data_preset(algorithm.data, preset_name)
    _threads(preset)
    spend = budget(algorithm, preset_name)
    train = preset_data(preset, "train")
    student = algorithm.student or preset.pairs[0].student
    teacher, prior, label = resolve_teacher(algorithm, preset, preset_name, seed, student)
    hp = DeepInversionHParams(**algorithm.hparams)
    pool, iters, batch = int(spend["pool"]), int(spend["iters"]), int(spend["batch"])
    shape = tuple(int(s) for s in train.images.shape[1:])
    options = {
        "lr": hp.lr, "r_feature": hp.r_feature, "var_scale": hp.var_scale, "l2": hp.l2,
        "jitter": hp.jitter, "img_size": shape[-1], "channels": shape[0],
        "num_classes": train.num_classes,
    }  # fmt: skip
    start = time.perf_counter()
    images, targets = invert(teacher, pool, batch=batch, iters=iters, seed=seed, **options)
    seconds = time.perf_counter() - start
    one = min(batch, pool)
    counter = FlopCounterMode(display=False)
    with counter:
        invert(teacher, one, batch=one, iters=1, seed=seed, **options)
    synthesis = Cost(counter.get_total_flops() / one * pool * iters, seconds)
    data = synthetic_dataset(images, targets, like=train, seed=seed)
    with torch.no_grad():
        hit = _accuracy(teacher, data)
    distiller = build_distiller(
        "kd", _student(student, seed, train), teacher,
        {"ce_weight": hp.ce_weight, "kd_weight": hp.kd_weight, "T": hp.T},
    )  # fmt: skip
    epochs = int(spend["epochs"])
    settings = _fit_settings(preset, epochs, algorithm.train)
    result = fit(distiller, data, None, seed=seed, **settings)
    cost = run_cost(distiller, data, result, batch_size=settings["batch_size"])
    extra = {
        "pool": pool,
        "iters": iters,
        "inversion_batch": batch,
        "synthesis_seconds": round(seconds, 2),
        "synthesis_flops": f"{synthesis.flops:.12g}",
        "teacher_pool_acc": round(hit, 4),
    }
    return _rows(
        distiller, preset, algorithm, seed, curves={}, train=cost, prior=prior + synthesis,
        teacher=label, student=student, epochs=epochs, extra=extra,
    )  # fmt: skip


# -- cross-modal --------------------------------------------------------------------------------
def few_label_epochs(preset: Preset, labels: int) -> int:
    """Epochs over ``labels`` images that take as many steps as a run of the preset (20
    epochs of 20,000 images at batch 64: 6,260 steps, so 391 epochs of 1,000 images)."""
    from .knowledge import preset_data

    n = len(preset_data(preset, "train"))
    steps = math.ceil(n / preset.batch_size) * preset.epochs
    return max(1, round(steps / math.ceil(labels / preset.batch_size)))


def run_crossmodal(algorithm: Algorithm, seed: int, preset_name: str) -> list[dict[str, Any]]:
    """Cross-modal supervision transfer, then fine-tuning (Gupta et al., 2016).

    The ``crossmodal`` distiller trains the geometry student on the RGB training split (the
    teacher's modality, its rows paired with their geometry view), scored on the geometry
    test split: row ``<label>/transfer``. Its student is then fine-tuned with the labels of
    the first ``labels`` geometry training images for as many steps as a book run
    (:func:`few_label_epochs`), scored once at the end (no curve: hundreds of epochs of a
    10,000-image evaluation would cost more than the training): row ``<label>/finetuned``,
    charged the transfer and the teacher. With ``method="scratch"`` (``geo_few``) only the
    few-label training runs, from a fresh student: row ``<label>/student``.
    """
    from ..methods import build_distiller
    from ..train import fit
    from .cost import Cost, run_cost
    from .knowledge import method_hparams, preset_data
    from .schemes import _curves, _fit_settings

    geometry = data_preset("geometry", preset_name)
    rgb = data_preset("shapes", preset_name)
    _threads(rgb)
    spend = budget(algorithm, preset_name)
    labels = int(spend["labels"])
    student = algorithm.student or geometry.pairs[0].student
    few = preset_data(geometry, "train").subset(labels)
    ft_epochs = few_label_epochs(rgb, labels)
    ft_settings = _fit_settings(geometry, ft_epochs, algorithm.train)
    extra: dict[str, Any] = {"labels": len(few), "finetune_epochs": ft_epochs}

    def finetune(network: nn.Module) -> tuple[Any, Cost]:
        ft = build_distiller("scratch", network)
        result = fit(ft, few, None, seed=seed, **ft_settings)
        return ft, run_cost(ft, few, result, batch_size=ft_settings["batch_size"])

    if algorithm.method == "scratch":
        ft, cost = finetune(_student(student, seed, few))
        return _rows(
            ft, geometry, algorithm, seed, curves={}, train=cost, prior=Cost(), teacher="",
            student=student, epochs=ft_epochs, extra=extra,
        )  # fmt: skip
    train = preset_data(rgb, "train")
    epochs = algorithm.epochs or rgb.epochs
    teacher, prior, label = resolve_teacher(algorithm, rgb, preset_name, seed, student)
    hparams = {**method_hparams(algorithm.method, epochs, len(train)), **algorithm.hparams}
    distiller = build_distiller(
        algorithm.method, _student(student, seed, train), teacher, hparams,
        input_shape=tuple(train.images.shape[1:]),
    )  # fmt: skip
    settings = _fit_settings(rgb, epochs, algorithm.train)
    result = fit(distiller, train, preset_data(geometry, "test"), seed=seed, **settings)
    cost = run_cost(distiller, train, result, batch_size=settings["batch_size"])
    transfer = _rows(
        distiller, geometry, algorithm, seed, curves=_curves(result.history, ["student"]),
        train=cost, prior=prior, teacher=label, student=student, extra=extra,
    )  # fmt: skip
    ft, ft_cost = finetune(copy.deepcopy(distiller.student))
    tuned = _rows(
        ft, geometry, algorithm, seed, curves={}, train=ft_cost, prior=prior + cost,
        teacher=label, student=student, epochs=ft_epochs, extra=extra,
    )  # fmt: skip
    for rows, network in ((transfer, "transfer"), (tuned, "finetuned")):
        for row in rows:
            row["network"], row["method"] = network, f"{algorithm.label}/{network}"
    return [*transfer, *tuned]


# -- quantized -----------------------------------------------------------------------------------
class _Scored(nn.Module):
    """A network scored as a run's ``student`` (a calibrated, untrained fake-quantized copy)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.student = network

    def eval_networks(self) -> dict[str, Callable[[Any], Any]]:
        return {"student": self.student}


def _qkd_cost(distiller: Any, train: Any, epochs: int, batch_size: int, seconds: float) -> Cost:
    """QKD's FLOPs phase by phase (one counted step of each phase times its epochs): the
    co-studying step also trains the teacher copy; nothing is cached."""
    from ..data import BatchLoader
    from .cost import Cost, step_flops

    batch = next(iter(BatchLoader(train, min(batch_size, len(train)))))
    saved, flops = distiller.phase, 0.0
    try:
        for epoch in range(epochs):
            distiller.phase = distiller.phase_of(epoch)
            flops += step_flops(distiller, batch, teacher_cached=False) / len(batch.y) * len(train)
    finally:
        distiller.phase = saved
    return Cost(flops, seconds)


def _latency(model: nn.Module, shape: Sequence[int], runs: int) -> dict[str, Any]:
    from ..compression import measure_latency

    out = {}
    for batch in (1, 256):
        timing = measure_latency(model, (batch, *shape), runs, warmup=2, threads=1)
        out[str(batch)] = {"min_ms": round(timing["min_ms"], 4),
                           "median_ms": round(timing["median_ms"], 4)}  # fmt: skip
    return out


def run_qat(algorithm: Algorithm, seed: int, preset_name: str) -> list[dict[str, Any]]:
    """Quantization from this seed's fp32 student (the schemes suite's saved ``scratch``
    weights, :func:`~kdtutor.bench.schemes._scratch_teacher`, retrained deterministically
    when missing): the method (``qat``, ``qkd``) fine-tunes its fake-quantized copy for
    ``epochs`` epochs at ``lr`` (cosine), Apprentice's scheme C; with ``options["ptq"]`` the
    copy is only calibrated on ``calibration`` training images (post-training quantization,
    epochs 0). Charged: the fp32 run, and the teacher when the loss uses it. ``extra`` holds
    the fp32 and int8 accuracies (the fake-quantized model converted,
    :func:`kdtutor.qat.convert_int8`), stored sizes, the packed size at ``bits`` and the
    latency of fp32 and int8 at batch 1 and 256 (one thread)."""
    from ..compression import stored_size_mb
    from ..data import BatchLoader
    from ..methods import build_distiller
    from ..qat import convert_int8, example_input, freeze, packed_size_mb, prepare_qat
    from ..train import fit
    from .cost import Cost, _training_seconds, network_flops, run_cost
    from .knowledge import method_hparams, preset_data
    from .schemes import _curves, _fit_settings, _scratch_cost, _scratch_teacher

    preset = data_preset(algorithm.data, preset_name)
    _threads(preset)
    spend = budget(algorithm, preset_name)
    train, test = preset_data(preset, "train"), preset_data(preset, "test")
    shape = tuple(int(s) for s in train.images.shape[1:])
    student = algorithm.student or preset.pairs[0].student
    fp32 = _scratch_teacher(preset_name, preset, student, seed).requires_grad_(True)
    fp32_acc = _accuracy(fp32.eval(), test)
    hparams = {**method_hparams(algorithm.method, int(spend["epochs"]), len(train)),
               **algorithm.hparams}  # fmt: skip
    bits = int(hparams.get("bits", 8))
    teacher, teacher_prior, label = resolve_teacher(algorithm, preset, preset_name, seed, student)
    ptq = bool(spend.get("ptq"))
    uses_teacher = not ptq and (
        algorithm.method == "qkd" or float(hparams.get("kd_weight", 0.9)) > 0
    )
    prior = _scratch_cost(preset, student, seed) + (teacher_prior if uses_teacher else Cost())
    extra: dict[str, Any] = {"bits": bits, "fp32_acc": round(fp32_acc, 4)}
    # the fake-quantized network's FLOPs are the float one's (FlopCounterMode cannot run a
    # prepared model under inference mode)
    fp32_flops = network_flops(fp32, shape)
    if ptq:
        prepared = prepare_qat(fp32, bits, example_input(fp32, shape[-1]))
        prepared.eval()
        calibration = train.subset(min(int(spend["calibration"]), len(train)))
        with torch.no_grad():
            for batch in BatchLoader(calibration, 256):
                prepared(batch.x)
        freeze(prepared)
        scored: Any = _Scored(prepared)
        flops = fp32_flops * len(calibration)
        cost, curves, epochs, network = Cost(flops), {}, 0, prepared
        extra["calibration"] = len(calibration)
    else:
        scored = build_distiller(algorithm.method, fp32, teacher, hparams)
        epochs = int(spend["epochs"])
        settings = _fit_settings(preset, epochs, {"lr": float(spend["lr"]), **algorithm.train})
        result = fit(scored, train, test, seed=seed, **settings)
        if algorithm.method == "qkd":
            seconds = _training_seconds(result)
            cost = _qkd_cost(scored, train, epochs, settings["batch_size"], seconds)
        else:
            cost = run_cost(scored, train, result, batch_size=settings["batch_size"])
        curves = _curves(result.history, ["student"])
        network = scored.student
    if not uses_teacher:
        label = ""
    int8 = convert_int8(network)
    runs = int(spend["latency_runs"])
    extra.update(
        int8_acc=round(_accuracy(int8, test), 4),
        fp32_mb=round(stored_size_mb(fp32), 6),
        int8_mb=round(stored_size_mb(int8), 6),
        packed_mb=round(packed_size_mb(fp32, bits), 6),
        latency={"fp32": _latency(fp32, shape, runs), "int8": _latency(int8, shape, runs)},
    )
    rows = _rows(
        scored, preset, algorithm, seed, curves=curves, train=cost, prior=prior, teacher=label,
        student=student, epochs=max(epochs, 1), extra_flops={"student": fp32_flops},
        extra=extra,
    )  # fmt: skip
    for row in rows:
        row["epochs"] = epochs
    return rows


# -- lifelong ------------------------------------------------------------------------------------
def _nme_accuracy(memory: Any, model: nn.Module, tests: Sequence[Any]) -> list[float]:
    """Nearest-mean-of-exemplars accuracy (%) of ``model`` on each of ``tests``, the class
    means from the memory as it is now."""
    from ..losses.lifelong import nme_scores
    from ..methods._memory import embed

    means = memory.class_means(model, int(getattr(model, "num_classes", 0)) or None)
    out = []
    for data in tests:
        x, y = data.batch(torch.arange(len(data)))
        scores = nme_scores(embed(model, x), means)
        out.append(round(100.0 * float((scores.argmax(1) == y).float().mean()), 4))
    return out


@contextlib.contextmanager
def _trainable(module: nn.Module) -> Iterator[None]:
    """``module``'s parameters trainable for a while (a step counted on a frozen model)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    module.requires_grad_(True)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def run_sequence(algorithm: Algorithm, seed: int, preset_name: str) -> list[dict[str, Any]]:
    """The class-incremental sequence of :data:`TASKS` (each task its classes' training and
    test images, the book schedule per task), through :func:`~kdtutor.train.fit_sequence`:
    task 0 trains this seed's fresh student, task i a copy of the model of task i - 1, which
    is its frozen teacher (``lwf``: ``old_classes`` the earlier tasks' classes; ``lamb=0`` is
    fine-tuning; ``icarl``: with an :class:`~kdtutor.methods._memory.ExemplarMemory` of
    ``memory`` exemplars, rebuilt by herding before each task and read by
    :func:`~kdtutor.methods._memory.with_memory`). The final model is scored on the whole
    test split (``student``; for iCaRL also ``nme``, the class means from the memory after
    its last update). ``extra``: the accuracy matrix (``accuracy[i][j]``: task j after task
    i, ``null`` before it is seen), the average after each task, the forgetting of each task
    but the last, and iCaRL's NME matrix (each row after the memory update that follows the
    task)."""
    from ..data import BatchLoader
    from ..methods import build_distiller
    from ..methods._memory import ExemplarMemory, with_memory
    from ..methods.icarl import ICaRL, ICaRLHParams
    from ..train import fit_sequence
    from .cost import Cost, _training_seconds, network_flops, run_cost, step_flops
    from .knowledge import preset_data
    from .schemes import _fit_settings

    preset = data_preset(algorithm.data, preset_name)
    _threads(preset)
    spend = budget(algorithm, preset_name)
    train, test = preset_data(preset, "train"), preset_data(preset, "test")
    student = algorithm.student or preset.pairs[0].student
    epochs = algorithm.epochs or preset.epochs
    settings = _fit_settings(preset, epochs, algorithm.train)
    splits = [(train.select_classes(g), test.select_classes(g)) for g in TASKS]
    icarl = algorithm.method == "icarl"
    memory = ExemplarMemory(total=int(spend["memory"])) if icarl else None
    tasks = [(with_memory(tr, memory), te) if memory is not None else (tr, te) for tr, te in splits]
    trainees: list[Any] = []
    sizes: list[int] = []
    nme_rows: list[list[float | None]] = []

    def nme_row(i: int, model: nn.Module) -> None:
        assert memory is not None
        memory.update(model, splits[i][0])
        scores = _nme_accuracy(memory, model, [te for _, te in splits[: i + 1]])
        nme_rows.append([*scores, *([None] * (len(TASKS) - i - 1))])

    def make(i: int, previous: nn.Module | None) -> Any:
        if previous is not None and memory is not None:
            nme_row(i - 1, previous)
        network = (
            copy.deepcopy(previous) if previous is not None else _student(student, seed, train)
        )
        old = tuple(c for g in TASKS[:i] for c in g)
        if icarl:
            hp = ICaRLHParams(**{**algorithm.hparams, "old_classes": old})
            trainee = ICaRL(network, previous, hp, memory=memory)
        else:
            values = {**algorithm.hparams, "old_classes": old, "new_classes": TASKS[i]}
            trainee = build_distiller(algorithm.method, network, previous, values)
        trainees.append(trainee)
        sizes.append(len(tasks[i][0]))
        return trainee

    result = fit_sequence(make, tasks, seed=seed, **settings)
    final = trainees[-1]
    if memory is not None:
        nme_row(len(TASKS) - 1, final.student)
    cost = Cost()
    for trainee, fitted, (tr, _), n in zip(trainees, result.results, splits, sizes, strict=True):
        with _trainable(trainee.student):  # each model but the last is frozen as a teacher
            if n == len(tr):
                cost = cost + run_cost(trainee, tr, fitted, batch_size=settings["batch_size"])
                continue
            # with exemplars the split is not an ArrayDataset: no teacher cache, count by hand
            batch = next(iter(BatchLoader(tr, min(settings["batch_size"], len(tr)))))
            per_image = step_flops(trainee, batch, teacher_cached=False) / len(batch.y)
        cost = cost + Cost(per_image * n * len(fitted.history), _training_seconds(fitted))
    extra: dict[str, Any] = {
        "tasks": [list(g) for g in TASKS],
        "accuracy": [[None if a is None else round(a, 4) for a in row] for row in result.accuracy],
        "average": [round(a, 4) for a in result.average],
        "forgetting": [round(f, 4) for f in result.forgetting],
        "train_images": sizes,
    }
    networks: dict[str, Callable[[Any], Any]] = {}
    flops: dict[str, float] = {}
    if memory is not None:
        from ..losses.lifelong import nme_scores
        from ..methods._memory import embed

        model = final.student
        means = memory.class_means(model, int(getattr(model, "num_classes", 0)) or None)
        networks["nme"] = lambda x: nme_scores(embed(model, x), means)
        flops["nme"] = network_flops(model, tuple(train.images.shape[1:]))
        extra.update(nme_accuracy=nme_rows, memory=int(spend["memory"]))
    return _rows(
        final, preset, algorithm, seed, curves={}, train=cost, prior=Cost(), teacher="",
        student=student, extra_networks=networks, extra_flops=flops, extra=extra,
    )  # fmt: skip


RUNNERS: dict[str, Callable[[Any, int, str], list[dict[str, Any]]]] = {
    "reuse": run_plain,
    "plain": run_plain,
    "datafree": run_datafree,
    "inversion": run_inversion,
    "crossmodal": run_crossmodal,
    "qat": run_qat,
    "sequence": run_sequence,
}
"""Each runner by name: ``reuse`` (a reference row, copied from the knowledge suite's CSV by
the suite; when the CSV lacks it, run as ``plain``), ``plain``, ``datafree``, ``inversion``,
``crossmodal``, ``qat`` and ``sequence``."""
