r"""What a training scheme costs: FLOPs counted on one real training step, and wall time.

Online and self distillation (chapter 4) trade a teacher for more networks trained at once,
so "does it beat training the student alone?" needs a cost axis: a scheme that trains two
peers for 20 epochs should be compared with a student trained for 40. This module gives
that axis, in floating-point operations (FLOPs) and in seconds.

**How FLOPs are counted.** As :func:`kdtutor.models.summary.model_summary` counts them:
:class:`torch.utils.flop_counter.FlopCounterMode` counts matrix multiplications and
convolutions, a multiply-add as 2 FLOPs, and ignores element-wise operations (activations,
batch norm, pooling, the losses, the optimizer's update). Around a whole training step it
also counts the backward pass, so nothing needs to be assumed about a method:

.. math::

    F_\mathrm{step} = \sum_{\text{trained nets}} (F_\mathrm{fwd} + F_\mathrm{bwd})
                    + \sum_{\text{frozen nets run}} F_\mathrm{fwd},
    \qquad F_\mathrm{bwd} \approx 2\,F_\mathrm{fwd},

because each layer's backward computes two products as large as its forward one, the
gradient of its input and of its weights (the "6 N FLOPs per token" of Kaplan et al., 2020,
Scaling Laws for Neural Language Models: 2 N forward, 4 N backward). The first layer needs
no input gradient (the images do not train), so a student's step costs a little under
:math:`3 F_\mathrm{fwd}` per sample: :math:`3 F - F_\mathrm{conv_1}`, 2.84 x for
``cnn_wide_s2``. Peers, branches, heads, no-grad re-forwards, discriminators and generators
are counted the same way, because the step that runs is the method's own ``train_step``.

**A run.** FLOPs are linear in the batch size, so for ``E`` epochs over ``N`` images

.. math::

    C_\mathrm{train} = \frac{F_\mathrm{step}(B)}{B}\, N E
                     \;+\; [\text{cached}]\; V N F_\mathrm{teacher},

where the second term is the teacher-output cache's one pass over the ``N`` images (``V``
fixed views with ``cache_views``, else 1), and a cached step runs no teacher. Evaluation is
not training and is left out.

**Seconds** are the wall time of the training epochs (``FitResult.seconds``); they depend on
the machine and its load, which is why the chapter's "equal cost" is measured in FLOPs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from ..cache import TeacherCache, TeacherOutputs
from ..config import ConfigError
from ..data import ArrayDataset, Batch, BatchLoader
from ..errors import KDTutorError, NotAModelError, ShapeMismatchError
from ..features import evaluating
from ..methods import Distiller, Steps
from ..tasks import move_to

if TYPE_CHECKING:
    from ..train import FitResult

__all__ = ["Cost", "network_flops", "run_cost", "step_flops", "teacher_cost"]


@dataclass(frozen=True)
class Cost:
    """The cost of some training: FLOPs and seconds, added and scaled together.

    Attributes:
        flops: training FLOPs: forward and backward of the trained networks, forward of the
            frozen ones (see the module docstring).
        seconds: wall time of the training epochs.

    Example:
        >>> run = Cost(flops=1.7e12, seconds=75.0)
        >>> teacher = Cost(flops=4.6e13, seconds=204.1)
        >>> total = run + teacher.scaled(1 / 3)  # the teacher amortised over three students
        >>> round(total.flops / 1e12, 2), round(total.seconds, 1)
        (17.03, 143.0)
    """

    flops: float = 0.0
    seconds: float = 0.0

    def __post_init__(self) -> None:
        for name in ("flops", "seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"Cost.{name} must be a number, got {value!r}.")
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"Cost.{name} must be finite and >= 0, got {value!r}.")
            object.__setattr__(self, name, float(value))

    def __add__(self, other: Cost) -> Cost:
        if not isinstance(other, Cost):
            return NotImplemented
        return Cost(self.flops + other.flops, self.seconds + other.seconds)

    def __radd__(self, other: Any) -> Cost:
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self  # so that sum(costs) starts from 0
        return NotImplemented

    def scaled(self, factor: float) -> Cost:
        """Both costs times ``factor`` (e.g. ``1 / 3``: a teacher shared by three students).

        Raises:
            ConfigError: for a negative or non-finite factor.
        """
        if isinstance(factor, bool) or not isinstance(factor, (int, float)):
            raise ConfigError(f"Cost.scaled needs a number, got {factor!r}.")
        if not math.isfinite(factor) or factor < 0:
            raise ConfigError(
                f"Cost.scaled needs a finite factor >= 0 (e.g. 1/3 to share a cost among "
                f"three runs), got {factor!r}."
            )
        return Cost(self.flops * factor, self.seconds * factor)

    def __str__(self) -> str:
        return f"{self.flops / 1e12:.3g} TFLOPs, {self.seconds:.1f} s"


class _BatchTeacherCache(TeacherCache):
    """A teacher-output cache holding one batch's outputs, looked up by the batch's rows.

    :func:`step_flops` puts it in place of a run's cache: its outputs are computed before the
    FLOP counter starts, so the counted step runs no teacher, as a cached run's steps do."""

    def __init__(self, rows: Tensor, outputs: TeacherOutputs) -> None:
        super().__init__("step_flops", outputs.logits, outputs.features)
        self._position = {int(r): i for i, r in enumerate(rows.reshape(-1).tolist())}

    def lookup(self, rows: Tensor, device: torch.device | str = "cpu") -> TeacherOutputs:
        try:
            where = [self._position[int(r)] for r in rows.reshape(-1).tolist()]
        except KeyError as exc:
            raise KDTutorError(
                f"during step_flops the method asked the teacher-output cache for row {exc.args[0]}, "
                "which is not in the batch being measured: its cached outputs are unknown here. "
                "Measure with teacher_cached=False (the teacher's forward is then counted)."
            ) from None
        self.hits += 1
        index = torch.tensor(where, dtype=torch.long, device=self.logits.device)
        return TeacherOutputs(
            self.logits.index_select(0, index).to(device),
            {k: v.index_select(0, index).to(device) for k, v in self.features.items()},
        )


def _check_distiller(distiller: Any, what: str) -> None:
    if isinstance(distiller, Distiller):
        return
    if isinstance(distiller, nn.Module):
        raise NotAModelError(
            f"{what} needs a Distiller (it runs the method's train_step), got a plain "
            f"{type(distiller).__name__}: wrap it, e.g. "
            "kdtutor.methods.build_distiller('scratch', model)."
        )
    raise NotAModelError(
        f"{what} needs a Distiller, got {type(distiller).__name__}: build one with "
        "kdtutor.methods.build_distiller(...)."
    )


def _device_of(module: nn.Module) -> torch.device:
    first = next(module.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _as_batch(batch: Any, device: torch.device) -> Batch:
    if isinstance(batch, Batch):
        pass
    elif isinstance(batch, (tuple, list)) and len(batch) == 2:
        batch = Batch(batch[0], batch[1], None)
    else:
        raise KDTutorError(
            f"step_flops needs a kdtutor.data.Batch (or an (x, y) pair), got "
            f"{type(batch).__name__}: take one from kdtutor.data.BatchLoader(train_data, 64)."
        )
    return batch._replace(x=move_to(batch.x, device), y=move_to(batch.y, device))


def _fork_rng(device: torch.device) -> AbstractContextManager[Any]:
    """Fork the CPU RNG and the RNG of ``device`` only (not every accelerator's)."""
    if device.type == "cpu":
        return torch.random.fork_rng(devices=[])
    index = device.index
    if index is None:
        index = torch.get_device_module(device.type).current_device()
    return torch.random.fork_rng(devices=[index], device_type=device.type)


def _sgd_lr0(name: str, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if not params:
        raise KDTutorError(
            f"optimizer group {name!r} of the distiller has no parameters: nothing to train "
            "in it, so its step cannot be counted."
        )
    return torch.optim.SGD(params, lr=0.0)


def step_flops(distiller: Distiller, batch: Batch, *, teacher_cached: bool = True) -> int:
    r"""FLOPs of one real training step of ``distiller`` on ``batch``: forward and backward of
    every network it trains, forward of every frozen one it runs.

    The step is the method's own ``train_step`` (so K peers, sequential re-forwards, extra
    heads or a discriminator are all counted), run in train mode with an SGD optimizer of
    learning rate 0 per group of ``distiller.optimizer_groups()`` through
    :class:`~kdtutor.methods.Steps`, inside :class:`~torch.utils.flop_counter.FlopCounterMode`
    and :func:`torch.random.fork_rng`. Afterwards the distiller is as it was: its
    ``state_dict`` (weights and batch-norm running statistics) is restored bit for bit, as
    are its gradients, train/eval modes, teacher cache and teacher call count, and the RNG.

    Counting follows :func:`~kdtutor.models.summary.model_summary` (a multiply-add = 2 FLOPs;
    element-wise operations, losses and the optimizer's update are not counted). For a
    student alone it is :math:`3F_\mathrm{fwd} - F_\mathrm{conv_1}` per sample (backward =
    2 x forward, Kaplan et al., 2020; the first layer computes no input gradient).

    The distiller must be ready to step, as during ``fit``: methods with per-epoch or
    per-dataset state (``bind_data``, ``on_epoch_start``) need those called first (a
    distiller returned by ``fit`` is ready). Python attributes a step changes outside the
    ``state_dict`` are not restored.

    Args:
        distiller: the method to measure.
        batch: one training batch (:class:`~kdtutor.data.Batch`, e.g. from
            :class:`~kdtutor.data.BatchLoader`; an ``(x, y)`` pair with
            ``teacher_cached=False`` or no teacher). It is moved to the distiller's device.
        teacher_cached: count the step as a cached run takes it: the teacher's outputs are
            computed before the counter starts and served by a stand-in cache keyed by
            ``batch.rows``. ``False``: the teacher runs inside the step and is counted (a run
            with ``cache=False`` or random augmentation). No effect without a teacher.

    Returns:
        The FLOPs of the step, for the whole batch.

    Raises:
        NotAModelError: ``distiller`` is not a Distiller.
        KDTutorError: a cached count of a batch without ``rows``.
    """
    _check_distiller(distiller, "step_flops")
    device = _device_of(distiller)
    batch = _as_batch(batch, device)
    stub = teacher_cached and distiller.teacher is not None
    if stub and batch.rows is None:
        raise KDTutorError(
            "step_flops(teacher_cached=True) reads the teacher's outputs by the batch's cache "
            "rows, but this batch has rows=None: take the batch from "
            "kdtutor.data.BatchLoader, give it rows (e.g. batch._replace(rows=torch.arange(B))), "
            "or count the teacher's forward with teacher_cached=False."
        )
    snapshot = {k: v.detach().clone() for k, v in distiller.state_dict().items()}
    grads = [(p, p.grad) for p in distiller.parameters()]
    modes = [(m, m.training) for m in distiller.modules()]
    saved_cache, saved_calls = distiller.teacher_cache, distiller.teacher_forward_calls
    counter = FlopCounterMode(display=False)
    try:
        with _fork_rng(device):
            distiller.teacher_cache = None
            if stub:
                assert batch.rows is not None
                outputs = distiller.compute_teacher_outputs(batch.x)
                distiller.teacher_cache = _BatchTeacherCache(batch.rows, outputs)
            optimizers = {
                name: _sgd_lr0(name, list(group.params))
                for name, group in distiller.optimizer_groups().items()
            }
            steps = Steps(distiller, optimizers)
            distiller.train()
            with counter:
                distiller.train_step(batch, steps)
            steps.end_batch()
    finally:
        distiller.load_state_dict(snapshot)
        for param, grad in grads:
            param.grad = grad
        for module, training in modes:
            module.training = training
        distiller.teacher_cache = saved_cache
        distiller.teacher_forward_calls = saved_calls
    return int(counter.get_total_flops())


def _training_seconds(result: FitResult) -> float:
    """``result.seconds`` less the evaluation time ``fit`` records per epoch
    (``eval_seconds``; histories from before it did include their evaluation)."""
    evaluation = sum(float(h.get("eval_seconds", 0.0)) for h in result.history)
    return max(0.0, float(result.seconds) - evaluation)


def run_cost(
    distiller: Distiller,
    train_data: ArrayDataset,
    result: FitResult,
    *,
    batch_size: int,
    teacher_cached: bool = True,
) -> Cost:
    r"""The training cost of a finished run: :math:`C = F_\mathrm{step}(B)/B \cdot N E`
    (+ :math:`V N F_\mathrm{teacher}` for filling the teacher cache when ``teacher_cached``).

    :math:`F_\mathrm{step}(B)` is :func:`step_flops` on the first ``B`` images of
    ``train_data`` (in order, un-augmented); FLOPs are linear in the batch size, so the last
    partial batch of each epoch is counted exactly. ``N = len(train_data)``, ``E`` the epochs
    in ``result.history`` (all of them for a resumed run), ``V`` the run's ``cache_views``
    (1 without fixed views) and :math:`F_\mathrm{teacher}` the teacher's forward FLOPs per
    image (:func:`network_flops`). Seconds: ``result.seconds`` (the epochs' wall time; the
    cache fill is not in it), less the per-epoch ``eval_seconds`` (the scoring of the test
    split).

    Args:
        distiller: the distiller the run trained (as ``fit`` left it).
        train_data: the run's training split.
        result: what ``fit`` returned for the run.
        batch_size: images in the measured batch (the run's batch size is the natural choice;
            any size gives the same FLOPs for methods whose step is linear in it).
        teacher_cached: the run read the teacher from its cache (``fit``'s default with an
            ``ArrayDataset`` and no random augmentation); ``False`` counts the teacher's
            forward in every step instead, and no cache fill.

    Returns:
        The run's :class:`Cost`.
    """
    _check_distiller(distiller, "run_cost")
    if not isinstance(train_data, ArrayDataset):
        raise KDTutorError(
            f"run_cost reads its measured batch from a kdtutor ArrayDataset, got "
            f"{type(train_data).__name__}. For other data, count one batch with "
            "step_flops(distiller, batch) and scale it by N / B * epochs yourself."
        )
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ConfigError(f"run_cost's batch_size must be a positive integer, got {batch_size!r}.")
    method = getattr(result, "method", None)
    if method and method != distiller.name:
        raise KDTutorError(
            f"run_cost was given the result of a {method!r} run but a {distiller.name!r} "
            "distiller: pass the distiller that run trained."
        )
    n = len(train_data)
    epochs = len(result.history)
    b = min(int(batch_size), n)
    batch = next(iter(BatchLoader(train_data, b)))
    flops = step_flops(distiller, batch, teacher_cached=teacher_cached) / b * n * epochs
    if teacher_cached and distiller.teacher is not None:
        views = int((result.config or {}).get("cache_views") or 0) or 1
        flops += views * n * network_flops(distiller.teacher, tuple(batch.x.shape[1:]))
    return Cost(flops, _training_seconds(result))


def teacher_cost(zoo_name: str, train_size: int | None = None) -> Cost:
    r"""What training a zoo teacher cost, from its manifest entry: :math:`F_\mathrm{step}(B)/B
    \cdot N E` FLOPs for a ``scratch`` step of its model (:func:`step_flops`), ``N`` the
    default train split of its dataset and ``E`` the epochs of the configuration it was
    trained with, and the ``train_seconds`` the manifest records.

    ``train_seconds`` is the wall time of the whole ``kdtutor zoo train`` call (evaluation
    included) on the machine and threads the entry's ``machine`` names (2 threads for the
    shipped teachers), not comparable with a one-thread run's seconds: compare FLOPs.
    ``shapes_cnn_large``: 30 epochs over 20,000 images, about
    :math:`(3 \cdot 26.40 - 0.44)\,\mathrm{MFLOPs} \cdot 600{,}000 = 47.3\,\mathrm{TFLOPs}`.

    An early-stopped teacher ``NAME@E`` (:mod:`kdtutor.snapshots`) cost its recipe's first
    ``E`` epochs over the images it was trained on, and the seconds its record gives.

    Args:
        zoo_name: a zoo teacher (``kdtutor zoo list``), with or without the ``zoo:`` prefix,
            or an early-stopped one, ``NAME@E``.
        train_size: an early-stopped teacher's training images (default: its recipe's).

    Raises:
        UnknownNameError: no such teacher.
        kdtutor.zoo.MissingWeightsError: the teacher has no manifest entry (it was never
            trained), or the snapshot was never kept.
    """
    from ..data import dataset_info
    from ..methods import build_distiller
    from ..models import build_model
    from ..snapshots import snapshot_record, split_snapshot
    from ..zoo import MissingWeightsError, describe_dir, get_recipe, read_manifest, recipe_dir

    recipe = get_recipe(zoo_name)
    stopped = split_snapshot(zoo_name)[1]
    if stopped is not None:  # an early-stopped teacher: its recipe's first epochs
        record = snapshot_record(zoo_name, train_size)
        entry = {"train_config": record["train_config"], "train_seconds": record["train_seconds"]}
        train_size = int(record["train_size"])
    else:
        folder = recipe_dir(recipe)
        entry = read_manifest(folder).get(recipe.name) if folder is not None else None
    if entry is None:
        raise MissingWeightsError(
            f"zoo teacher {recipe.name!r} has no manifest entry in {describe_dir(recipe)}, so "
            f"what its training cost was never recorded: train it first (`kdtutor zoo train "
            f"{recipe.name}`)."
        )
    made = entry.get("recipe") or {}
    config = entry.get("train_config") or made.get("train") or recipe.train
    if "epochs" not in config:
        from ..train.config import TrainConfig

        config = {**config, "epochs": TrainConfig().epochs}
    info = dataset_info(entry.get("dataset", recipe.dataset))
    model = build_model(
        made.get("model", recipe.model),
        num_classes=info.num_classes,
        in_channels=info.in_channels,
        **made.get("model_kwargs", recipe.model_kwargs),
    )
    b = 2  # FLOPs are linear in the batch; two images keep batch norm in train mode defined
    shape = (b, info.in_channels, info.image_size, info.image_size)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    y = torch.arange(b) % info.num_classes
    batch = Batch(x, y, torch.arange(b), rows=torch.arange(b))
    per_image = step_flops(build_distiller("scratch", model), batch) / b
    epochs = stopped if stopped is not None else int(config["epochs"])
    images = train_size if stopped is not None and train_size else info.sizes[0]
    flops = per_image * images * epochs
    return Cost(flops, float(entry.get("train_seconds", 0.0)))


def network_flops(network: Callable[[Tensor], Tensor], input_shape: Sequence[int]) -> float:
    """Forward FLOPs per sample of ``network`` (inference cost), counted as
    :func:`~kdtutor.models.summary.model_summary` counts them.

    ``network`` is a module, a module's method (a distiller's ``predict``) or any function of
    a batch (an ensemble of peers: the FLOPs of every network it runs). It runs once without
    gradients on two samples of zeros; a module, or the module of a method, runs in eval
    mode and gets its train/eval modes back. A plain function runs its networks in the modes
    they are in: put them in eval mode first (batch norm in train mode would update its
    running statistics).

    Args:
        network: what to measure.
        input_shape: one sample's shape, without the batch, e.g. ``(3, 32, 32)``.

    Returns:
        FLOPs of one sample's forward pass.
    """
    if not callable(network):
        raise NotAModelError(
            f"network_flops needs a module or a function of a batch, got {type(network).__name__}."
        )
    shape = tuple(input_shape)
    if not shape or any(isinstance(s, bool) or int(s) != s or s < 1 for s in shape):
        raise ShapeMismatchError(
            f"input_shape must be one sample's positive shape without the batch, e.g. "
            f"(3, 32, 32), got {input_shape!r}."
        )
    module = network if isinstance(network, nn.Module) else getattr(network, "__self__", None)
    is_module = isinstance(module, nn.Module)
    device = _device_of(module) if is_module else torch.device("cpu")
    x = torch.zeros((2, *(int(s) for s in shape)), device=device)
    modes = evaluating(module) if is_module else nullcontext()
    counter = FlopCounterMode(display=False)
    try:
        with modes, torch.inference_mode(), counter:
            network(x)
    except RuntimeError as exc:
        raise ShapeMismatchError(
            f"the network cannot take samples of shape {shape}: {str(exc).splitlines()[0]}. "
            "input_shape is one sample's shape without the batch, e.g. (3, 32, 32)."
        ) from None
    return counter.get_total_flops() / 2
