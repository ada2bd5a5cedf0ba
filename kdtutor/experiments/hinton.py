r"""Hinton, Vinyals and Dean (2015)'s MNIST experiments, reproduced at book scale.

Section 3 of *Distilling the Knowledge in a Neural Network* runs four experiments on MNIST
(60,000 training and 10,000 test digits):

1. a 1200-1200 teacher (dropout, weight constraints, inputs jittered by up to two pixels)
   makes 67 test errors; an 800-800 student without regularisation makes 146 alone and 74
   when it also matches the teacher's soft targets at :math:`T = 20`;
2. with every 3 left out of the transfer set, the distilled student makes 206 errors, 133 of
   them on the 1,010 test 3s; raising the bias of class 3 by 3.5 brings this to 109 errors, 14
   of them on 3s;
3. with a transfer set of only 7s and 8s, the student errs on 47.3% of the test set, and on
   13.2% once the biases of 7 and 8 are lowered by 7.6.

The paper chose both bias shifts "to optimize test performance", that is on the test set.
Here a shift is applied in two ways: Hinton's value as published (3.5, -7.6), and the value
that minimises the errors on a validation split carved from the *training* split
(:func:`split_validation`, :func:`tune_bias_shift`); the test split never chooses anything.

The pieces are small functions (:func:`transfer_subset`, :func:`shift_class_bias`,
:func:`errors_by_class`, :func:`bias_sweep`) and :func:`run_hinton_protocol` runs the whole
protocol for one seed and returns plain numbers.

Reference:
    Hinton, G., Vinyals, O., Dean, J. (2015). Distilling the Knowledge in a Neural Network.
    NIPS Deep Learning Workshop. arXiv:1503.02531.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..data import ArrayDataset
from ..errors import KDTutorError, NonFiniteLossError
from ..methods import Distiller, build_distiller
from ..models import build_model
from ..seeding import seed_everything
from ..train import fit, predict_logits

__all__ = [
    "HINTON_2015_MNIST",
    "HintonConfig",
    "bias_sweep",
    "errors_by_class",
    "final_linear",
    "predict_logits",
    "run_hinton_protocol",
    "shift_class_bias",
    "split_validation",
    "transfer_subset",
    "tune_bias_shift",
    "tune_learning_rate",
]

#: The numbers Hinton et al. (2015, section 3) report on MNIST (10,000 test images, 1,010 of them 3s).
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


# --------------------------------------------------------------------------------------------
# transfer sets
# --------------------------------------------------------------------------------------------
def _check_classes(classes: Iterable[int], num_classes: int, what: str) -> list[int]:
    out = []
    for c in classes:
        if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < num_classes:
            raise ValueError(f"{what} must be class indices in [0, {num_classes}), got {c!r}.")
        out.append(int(c))
    return out


def transfer_subset(
    dataset: ArrayDataset,
    keep_classes: Iterable[int] | None = None,
    drop_classes: Iterable[int] | None = None,
) -> ArrayDataset:
    """The images of ``dataset`` whose label is kept, in their original order.

    Pass exactly one of ``keep_classes`` (only these labels) and ``drop_classes`` (every label
    but these). The result keeps the dataset's classes, name, split and normalisation, so a
    model trained on it reads images exactly as on the full split.

    Args:
        dataset: The split to filter (usually the training split).
        keep_classes: Labels to keep, e.g. ``(7, 8)``.
        drop_classes: Labels to leave out, e.g. ``(3,)``.

    Returns:
        The filtered dataset.

    Raises:
        ValueError: Neither or both of the arguments, a label out of range, or an empty result.

    Example:
        >>> no_threes = transfer_subset(train, drop_classes=[3])  # doctest: +SKIP
    """
    if (keep_classes is None) == (drop_classes is None):
        raise ValueError("pass exactly one of keep_classes=... and drop_classes=....")
    k = dataset.num_classes
    if keep_classes is not None:
        chosen = _check_classes(keep_classes, k, "keep_classes")
    else:
        dropped = set(_check_classes(drop_classes or (), k, "drop_classes"))
        chosen = [c for c in range(k) if c not in dropped]
    mask = torch.isin(dataset.targets, torch.tensor(chosen, dtype=torch.int64))
    indices = torch.nonzero(mask).flatten()
    if indices.numel() == 0:
        raise ValueError(
            f"no image of {dataset!r} has a label in {sorted(chosen)}: the transfer set is empty."
        )
    return dataset.subset(indices)


def split_validation(dataset: ArrayDataset, per_class: int) -> tuple[ArrayDataset, ArrayDataset]:
    """Split ``dataset`` into ``(rest, validation)`` with ``per_class`` images of each class held out.

    The validation images are the *last* ``per_class`` images of each class in the dataset's
    order (``mnist5k``'s order inside a class is a fixed hash, so this is a fixed random
    choice); no random generator is involved, so every seed sees the same split.

    Args:
        dataset: A training split.
        per_class: Images of each class to hold out (>= 1, fewer than the class has).

    Returns:
        ``(rest, validation)``, both in the original order.
    """
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be an integer >= 1, got {per_class!r}.")
    counts = dataset.class_counts()
    if min(counts) <= per_class:
        raise ValueError(
            f"cannot hold out {per_class} images per class: the smallest class of {dataset!r} has "
            f"{min(counts)}. Choose per_class < {min(counts)}."
        )
    held = torch.zeros(len(dataset), dtype=torch.bool)
    for c in range(dataset.num_classes):
        members = torch.nonzero(dataset.targets == c).flatten()
        held[members[-per_class:]] = True
    rest = dataset.subset(torch.nonzero(~held).flatten())
    val = dataset.subset(torch.nonzero(held).flatten())
    return rest, val


# --------------------------------------------------------------------------------------------
# the final layer's bias
# --------------------------------------------------------------------------------------------
_HEAD_NAMES = ("fc", "classifier", "head", "linear")


def final_linear(model: nn.Module, layer: str | None = None) -> nn.Linear:
    """The ``nn.Linear`` that produces the logits of ``model``.

    Looks, in order, at the module named ``layer`` (a dotted path) if given; at an attribute
    ``fc``, ``classifier``, ``head`` or ``linear`` (an ``nn.Linear``, or a container whose last
    ``nn.Linear`` is taken); else at the last ``nn.Linear`` registered in the model. A
    :class:`~kdtutor.methods.Distiller` is searched through its student.

    Raises:
        KDTutorError: No ``nn.Linear`` is found, the one found has no bias, or its number of
            outputs differs from the model's ``num_classes``.
    """
    if isinstance(model, Distiller):
        model = model.student
    if layer is not None:
        try:
            found = model.get_submodule(layer)
        except AttributeError:
            raise KDTutorError(
                f"{type(model).__name__} has no module {layer!r}. Its Linear layers: "
                f"{[n for n, m in model.named_modules() if isinstance(m, nn.Linear)]}."
            ) from None
        if not isinstance(found, nn.Linear):
            raise KDTutorError(f"module {layer!r} is a {type(found).__name__}, not an nn.Linear.")
        linear: nn.Linear | None = found
        where = layer
    else:
        linear, where = None, ""
        for name in _HEAD_NAMES:
            head = getattr(model, name, None)
            if isinstance(head, nn.Linear):
                linear, where = head, name
                break
            if isinstance(head, nn.Module):
                inner = [m for m in head.modules() if isinstance(m, nn.Linear)]
                if inner:
                    linear, where = inner[-1], name
                    break
        if linear is None:
            named = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
            if not named:
                raise KDTutorError(
                    f"{type(model).__name__} has no nn.Linear layer, so there is no final bias to "
                    "shift. Pass layer='<dotted path>' naming the layer that produces the logits."
                )
            where, linear = named[-1]
    if linear.bias is None:
        raise KDTutorError(
            f"the final layer {where!r} of {type(model).__name__} has no bias (bias=False)."
        )
    num_classes = getattr(model, "num_classes", None)
    if isinstance(num_classes, int) and linear.out_features != num_classes:
        raise KDTutorError(
            f"the layer found ({where!r}, {linear.out_features} outputs) does not produce the "
            f"model's {num_classes} logits. Pass layer='<dotted path>' naming the right one."
        )
    return linear


@torch.no_grad()
def shift_class_bias(
    model: nn.Module, class_biases: Mapping[int, float], *, layer: str | None = None
) -> nn.Module:
    r"""A copy of ``model`` whose final-layer bias is shifted by ``class_biases[c]`` for class ``c``.

    Adding :math:`\delta` to the bias of class :math:`c` adds exactly :math:`\delta` to the
    logit :math:`z_c` of every input and changes nothing else: it moves the prior of the
    classifier towards (:math:`\delta > 0`) or away from class :math:`c`. Hinton et al. (2015)
    raise the bias of a class the student never saw (3) and lower those of the only classes it
    saw (7 and 8).

    Args:
        model: A classifier whose logits come from an ``nn.Linear`` (see :func:`final_linear`);
            a Distiller's student is used for a Distiller. It is not modified.
        class_biases: ``{class index: shift}``, e.g. ``{3: 3.5}`` or ``{7: -7.6, 8: -7.6}``.
        layer: Dotted path of the final layer, when it cannot be found automatically.

    Returns:
        The shifted copy, in the same train/eval mode as ``model``.
    """
    source = model.student if isinstance(model, Distiller) else model
    shifted = copy.deepcopy(source)
    linear = final_linear(shifted, layer)
    classes = _check_classes(class_biases, linear.out_features, "class_biases keys")
    assert linear.bias is not None
    for c in classes:
        linear.bias[c] += float(class_biases[c])
    return shifted


# --------------------------------------------------------------------------------------------
# counting errors
# --------------------------------------------------------------------------------------------
def _errors_from_logits(logits: Tensor, targets: Tensor, num_classes: int) -> Tensor:
    wrong = logits.argmax(dim=1) != targets
    return torch.bincount(targets[wrong], minlength=num_classes)


def errors_by_class(
    model: nn.Module,
    dataset: ArrayDataset,
    *,
    batch_size: int = 512,
    device: str | torch.device | None = None,
) -> Tensor:
    """How many images of each true class ``model`` misclassifies (argmax of its logits).

    Returns:
        An int64 tensor of shape ``(num_classes,)``; its sum is the total number of errors.
    """
    logits, targets = predict_logits(model, dataset, batch_size=batch_size, device=device)
    return _errors_from_logits(logits, targets, dataset.num_classes)


def bias_sweep(
    model: nn.Module,
    dataset: ArrayDataset,
    classes: Sequence[int],
    shifts: Sequence[float],
    *,
    batch_size: int = 512,
) -> Tensor:
    """Errors by class after shifting the bias of every class in ``classes`` by each of ``shifts``.

    A bias shift adds the same amount to the logits, so the logits are computed once and the
    shift is added to them (this equals :func:`shift_class_bias` followed by
    :func:`errors_by_class`, without copying the model per value).

    Returns:
        An int64 tensor ``(len(shifts), num_classes)``; ``.sum(1)`` gives the total errors.
    """
    logits, targets = predict_logits(model, dataset, batch_size=batch_size)
    cols = _check_classes(classes, logits.shape[1], "classes")
    rows = []
    for shift in shifts:
        z = logits.clone()
        z[:, cols] += float(shift)
        rows.append(_errors_from_logits(z, targets, dataset.num_classes))
    return torch.stack(rows)


def tune_bias_shift(
    model: nn.Module,
    validation: ArrayDataset,
    classes: Sequence[int],
    shifts: Sequence[float],
) -> tuple[float, Tensor]:
    """The shift (applied to the bias of every class in ``classes``) with the fewest errors on ``validation``.

    Pass a validation split carved from the *training* data (:func:`split_validation`), never
    the test split: a shift chosen on the test set, as in the paper, makes the test error an
    optimistic estimate. When several shifts tie, the middle one of the tied values is taken
    (the centre of the flat minimum, not its edge).

    Returns:
        ``(best shift, total validation errors for each shift)``.
    """
    if len(shifts) == 0:
        raise ValueError("shifts is empty: pass the values to try, e.g. [0.0, 0.5, ..., 10.0].")
    totals = bias_sweep(model, validation, classes, shifts).sum(dim=1)
    tied = torch.nonzero(totals == totals.min()).flatten().tolist()
    ordered = sorted(tied, key=lambda i: float(shifts[i]))
    return float(shifts[ordered[len(ordered) // 2]]), totals


# --------------------------------------------------------------------------------------------
# the protocol
# --------------------------------------------------------------------------------------------
def _grid(stop: float, step: float) -> tuple[float, ...]:
    return tuple(round(i * step, 6) for i in range(round(stop / step) + 1))


@dataclass(frozen=True)
class HintonConfig:
    """Settings of :func:`run_hinton_protocol` (defaults: the book-scale run on ``mnist5k``).

    Students are trained with SGD (momentum 0.9, no weight decay: Hinton's student had no
    regulariser), a cosine schedule, and no augmentation, so the teacher's outputs are cached.

    Attributes:
        student: Model name of the student (Hinton: 800-800, ``"mlp_800"``).
        student_kwargs: Extra options of the student's builder.
        T: Distillation temperature (Hinton: 20).
        ce_weight: Weight of the cross entropy on hard labels (Hinton: "a considerably lower
            weight" than the soft term).
        kd_weight: Weight of the :math:`T^2`-scaled KL to the teacher's soft targets.
        lr: Learning rate of the distilled students.
        lr_alone: Learning rates of the student trained alone: it is trained once with each,
            so that the comparison can give the baseline its best one (at :math:`T = 20` the
            :math:`T^2`-scaled soft loss needs a smaller rate than cross entropy alone).
        epochs: Epochs on the full transfer set.
        match_steps: Give a smaller transfer set proportionally more epochs, so every student
            makes about the same number of updates.
        val_per_class: Training images per class held out to tune the bias shifts.
        omit_class: The class left out of the "omitted class" transfer set (Hinton: 3).
        omit_shift: Hinton's shift of its bias (+3.5).
        only_classes: The classes of the "only these classes" transfer set (Hinton: 7, 8).
        only_shift: Hinton's shift of their biases (-7.6).
        omit_grid: Shifts tried for the omitted class (validation-tuned).
        only_grid: Shifts tried for the kept classes (validation-tuned).
        experiments: Which of ``"alone"``, ``"kd"``, ``"omit"``, ``"only"`` to run.
        train: Other :class:`~kdtutor.train.TrainConfig` fields.
    """

    student: str = "mlp_800"
    student_kwargs: dict[str, Any] = field(default_factory=dict)
    T: float = 20.0
    ce_weight: float = 0.1
    kd_weight: float = 0.9
    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.01
    lr_alone: tuple[float, ...] = (0.01, 0.1)
    match_steps: bool = True
    val_per_class: int = 50
    omit_class: int = 3
    omit_shift: float = HINTON_2015_MNIST["omit_shift"]
    only_classes: tuple[int, ...] = (7, 8)
    only_shift: float = HINTON_2015_MNIST["only_shift"]
    omit_grid: tuple[float, ...] = _grid(12.0, 0.25)
    only_grid: tuple[float, ...] = tuple(-s for s in _grid(20.0, 0.25))
    experiments: tuple[str, ...] = ("alone", "kd", "omit", "only")
    train: dict[str, Any] = field(
        default_factory=lambda: {"momentum": 0.9, "weight_decay": 0.0, "schedule": "cosine"}
    )

    def validate(self) -> None:
        unknown = set(self.experiments) - {"alone", "kd", "omit", "only"}
        if unknown:
            raise ValueError(
                f"unknown experiments {sorted(unknown)}: choose from 'alone', 'kd', 'omit', 'only'."
            )
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}.")


def _shift_report(
    model: nn.Module,
    test: ArrayDataset,
    validation: ArrayDataset,
    classes: Sequence[int],
    hinton_shift: float,
    grid: Sequence[float],
) -> dict[str, Any]:
    """Test errors before a bias shift, with Hinton's shift and with the validation-tuned one."""
    tuned, val_curve = tune_bias_shift(model, validation, classes, grid)
    shifts = [0.0, hinton_shift, tuned]
    test_rows = bias_sweep(model, test, classes, [*shifts, *grid])
    before, hinton, best = (test_rows[i] for i in range(3))
    return {
        "errors_by_class": before.tolist(),
        "errors": int(before.sum()),
        "hinton_shift": hinton_shift,
        "errors_by_class_hinton": hinton.tolist(),
        "errors_hinton": int(hinton.sum()),
        "tuned_shift": tuned,
        "errors_by_class_tuned": best.tolist(),
        "errors_tuned": int(best.sum()),
        "grid": [float(g) for g in grid],
        "val_errors": val_curve.tolist(),
        "test_errors": test_rows[3:].sum(dim=1).tolist(),
    }


def _epochs_for(cfg: HintonConfig, n: int, n_pool: int) -> int:
    """``cfg.epochs``, scaled up for a transfer set smaller than the pool when ``match_steps``."""
    if not cfg.match_steps:
        return cfg.epochs
    return max(cfg.epochs, round(cfg.epochs * n_pool / n))


def _train(
    seed: int,
    data: ArrayDataset,
    cfg: HintonConfig,
    teacher: nn.Module | None,
    lr: float,
    epochs: int,
) -> tuple[nn.Module, float]:
    """Train a fresh student (distilled when ``teacher`` is given); return it (eval mode) and seconds."""
    seed_everything(seed)
    model = build_model(
        cfg.student,
        num_classes=data.num_classes,
        in_channels=data.in_channels,
        image_size=data.image_size,
        **dict(cfg.student_kwargs),
    )
    runner: nn.Module = model
    if teacher is not None:
        runner = build_distiller(
            "kd", model, teacher, T=cfg.T, ce_weight=cfg.ce_weight, kd_weight=cfg.kd_weight
        )
    settings = {**cfg.train, "epochs": epochs, "batch_size": cfg.batch_size, "lr": lr}
    result = fit(runner, data, None, **settings, seed=seed)
    return model.eval(), result.seconds


def tune_learning_rate(
    seed: int,
    train: ArrayDataset,
    lrs: Sequence[float],
    config: HintonConfig | None = None,
    teacher: nn.Module | None = None,
) -> dict[float, int | None]:
    """Validation errors of the student trained alone (or distilled from ``teacher``) for each lr.

    The student trains on ``train`` minus the validation split of :func:`split_validation`
    (the same split :func:`run_hinton_protocol` uses) and is evaluated on that split. A run whose
    loss becomes NaN or infinite counts as ``None`` (diverged): at :math:`T = 20` the
    :math:`T^2`-scaled soft loss tolerates a smaller learning rate than cross entropy alone.

    Returns:
        ``{lr: validation errors or None}``, in the order of ``lrs``.
    """
    cfg = config or HintonConfig()
    pool, validation = split_validation(train, cfg.val_per_class)
    out: dict[float, int | None] = {}
    for lr in lrs:
        try:
            model, _ = _train(seed, pool, cfg, teacher, float(lr), cfg.epochs)
        except NonFiniteLossError:
            out[float(lr)] = None
            continue
        out[float(lr)] = int(errors_by_class(model, validation).sum())
    return out


def run_hinton_protocol(
    seed: int,
    teacher: nn.Module,
    train: ArrayDataset,
    test: ArrayDataset,
    config: HintonConfig | None = None,
    *,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run Hinton et al. (2015)'s MNIST experiments for one seed; return plain numbers.

    The last ``config.val_per_class`` training images of each class are held out (for tuning
    bias shifts only); every student trains on the rest, for about the same number of
    updates, and is evaluated once, after its last epoch, on ``test``:

    * ``"alone"``: the student on hard labels, once per learning rate in ``lr_alone``
      (``out["alone"]`` holds lists ``lr``, ``errors``, ``errors_by_class``, ``None`` where
      the loss diverged);
    * ``"kd"``: the student distilled from ``teacher`` (``ce_weight`` CE + ``kd_weight``
      :math:`T^2` KL);
    * ``"omit"``: distilled on a transfer set without ``omit_class``; test errors before and
      after shifting that class's bias (Hinton's value and the validation-tuned value);
    * ``"only"``: distilled on a transfer set of only ``only_classes``; the same, shifting
      their biases together.

    Args:
        seed: Seeds the student's initialisation and the batch order.
        teacher: A trained classifier (frozen by the distiller).
        train: The training split (the transfer sets are drawn from it).
        test: The test split (only evaluated, never used to choose anything).
        config: The settings (default :class:`HintonConfig`).
        log: Called with one line per trained student.

    Returns:
        A JSON-serialisable dict: ``seed``, ``n_test``, ``test_class_counts``, ``seconds``,
        ``sizes`` (transfer-set sizes) and, per experiment run, ``errors`` and
        ``errors_by_class`` (and for ``omit`` / ``only`` the shifted results, the shift grid,
        and the validation and test errors along it).
    """
    cfg = config or HintonConfig()
    cfg.validate()
    start = time.perf_counter()
    pool, validation = split_validation(train, cfg.val_per_class)

    def train_one(name: str, data: ArrayDataset, lr: float, distil: bool) -> nn.Module:
        epochs = _epochs_for(cfg, len(data), len(pool))
        model, seconds = _train(seed, data, cfg, teacher if distil else None, lr, epochs)
        if log is not None:
            log(
                f"seed {seed} {name}: {len(data)} images, {epochs} epochs, lr {lr:g}, {seconds:.1f} s"
            )
        return model

    out: dict[str, Any] = {
        "seed": seed,
        "n_test": len(test),
        "test_class_counts": test.class_counts(),
        "sizes": {"pool": len(pool), "validation": len(validation)},
        "config": {k: v for k, v in dataclasses.asdict(cfg).items() if not k.endswith("_grid")},
    }
    if "alone" in cfg.experiments:
        runs: dict[str, list[Any]] = {"lr": [], "errors": [], "errors_by_class": []}
        for lr in cfg.lr_alone:
            try:
                by_class = errors_by_class(train_one("alone", pool, lr, distil=False), test)
            except NonFiniteLossError:
                runs["lr"].append(lr)
                runs["errors"].append(None)
                runs["errors_by_class"].append(None)
                continue
            runs["lr"].append(lr)
            runs["errors"].append(int(by_class.sum()))
            runs["errors_by_class"].append(by_class.tolist())
        out["alone"] = runs
    if "kd" in cfg.experiments:
        by_class = errors_by_class(train_one("kd", pool, cfg.lr, distil=True), test)
        out["kd"] = {"errors": int(by_class.sum()), "errors_by_class": by_class.tolist()}
    if "omit" in cfg.experiments:
        data = transfer_subset(pool, drop_classes=[cfg.omit_class])
        out["sizes"]["omit"] = len(data)
        model = train_one(f"without {cfg.omit_class}s", data, cfg.lr, distil=True)
        report = _shift_report(
            model, test, validation, [cfg.omit_class], cfg.omit_shift, cfg.omit_grid
        )
        out["omit"] = {"class": cfg.omit_class, **report}
    if "only" in cfg.experiments:
        data = transfer_subset(pool, keep_classes=cfg.only_classes)
        out["sizes"]["only"] = len(data)
        model = train_one(f"only {cfg.only_classes}", data, cfg.lr, distil=True)
        report = _shift_report(
            model, test, validation, list(cfg.only_classes), cfg.only_shift, cfg.only_grid
        )
        out["only"] = {"classes": list(cfg.only_classes), **report}
    out["seconds"] = time.perf_counter() - start
    return out
