"""The one training loop, shared by every method.

``fit`` asks the distiller for its optimizer groups, and for each batch calls the
distiller's ``train_step``, which runs its networks and asks :class:`~kdtutor.methods.steps.Steps`
to step one group or several (a student; peers; a discriminator or a generator). It then
evaluates every network the distiller exposes with the task's metrics, records a per-epoch
history and writes atomic checkpoints from which ``resume=`` continues bit-identically on
CPU. It knows nothing about any particular method.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm  # not tqdm.auto: it warns on stderr in Jupyter without ipywidgets

from .. import distributed
from ..cache import CacheOptions, CacheRefusedError, TeacherCache
from ..config import ConfigError, from_dict
from ..data import ArrayDataset, Batch, BatchLoader, build_augment
from ..data.torch_loaders import DataLoaderAdapter, DatasetLoader, SyntheticLoader
from ..data.transforms import BatchTransform, FixedViews
from ..errors import KDTutorError, NonFiniteLossError
from ..methods import Distiller, Steps, build_distiller
from ..seeding import seed_everything, set_deterministic
from ..tasks import Classification, Task, get_task, move_to
from .checkpoints import load_checkpoint, save_checkpoint
from .checks import check_networks_fit_data
from .config import Runtime, TrainConfig, resolve_device, resolve_runtime
from .evaluation import evaluate_networks
from .optim import build_optimizers
from .recorder import EpochEnd

logger = logging.getLogger("kdtutor.train")
epoch_log = logging.getLogger("kdtutor.train.epochs")
"""Where ``fit`` writes one line per epoch when it is given no ``log`` callable."""


@dataclass
class FitResult:
    """What a training run returns: the per-epoch history and its summary.

    ``best_acc`` and ``last_acc`` hold the run's score, the task's primary metric named in
    ``metric`` (accuracy in percent for classification; mAP@0.5, mIoU in percent, PSNR in
    dB for the other tasks), on the test split (the train split when no test split is
    given); ``seconds`` sums the epochs' times (building a teacher-output cache is not
    included; scoring the test split is, and each epoch's record gives its part as
    ``eval_seconds``).
    """

    method: str
    history: list[dict[str, Any]]
    best_acc: float
    best_epoch: int
    last_acc: float
    seconds: float
    config: dict[str, Any] = field(default_factory=dict)
    metric: str = "accuracy"
    runtime: dict[str, Any] = field(default_factory=dict)
    """How it was computed: device, autocast dtype, channels-last, compile, threads."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        unit = "" if self.metric == "psnr" else "%"
        return (
            f"{self.method}: best {self.best_acc:.2f}{unit} (epoch {self.best_epoch}), "
            f"last {self.last_acc:.2f}{unit}, {self.seconds:.1f} s"
        )


def _as_distiller(model: Distiller | nn.Module) -> Distiller:
    if isinstance(model, Distiller):
        return model
    if isinstance(model, nn.Module):
        return build_distiller("scratch", model)
    raise KDTutorError(
        f"fit() needs a Distiller or an nn.Module to train, got {type(model).__name__}: build "
        "one with kdtutor.methods.build_distiller(...) or kdtutor.models.build_model(...)."
    )


def _check_data(what: str, data: Any) -> None:
    if isinstance(data, str):
        raise KDTutorError(
            f"fit's {what} is the string {data!r}, not a dataset: load it first, e.g. "
            f"kdtutor.data.load_dataset({data!r}, 'train')."
        )
    if isinstance(data, DataLoader):
        return
    if not isinstance(data, (ArrayDataset, Dataset, Sequence)) or not hasattr(data, "__len__"):
        raise KDTutorError(
            f"fit's {what} must be a kdtutor ArrayDataset (load_dataset(...)), a map-style "
            f"torch.utils.data.Dataset or a DataLoader, got {type(data).__name__}."
        )
    if len(data) == 0:
        split = "training" if what == "train_data" else "test"
        raise KDTutorError(f"the {split} split is empty: check the dataset name, split and size.")
    if not isinstance(data, ArrayDataset):
        sample = data[0]
        if not isinstance(sample, (tuple, list)) or len(sample) != 2:
            raise KDTutorError(
                f"each sample of fit's {what} must be an (input, target) pair, but sample 0 is "
                f"{type(sample).__name__}: wrap the data in a Dataset whose __getitem__ returns "
                "(input, target)."
            )


def _resolve_task(cfg: TrainConfig, train_data: Any, test_data: Any) -> Task:
    name = cfg.task
    for data in (train_data, test_data):
        if name is None and data is not None:
            name = getattr(getattr(data, "dataset", data), "task", None)
    task = get_task(name or "classification")
    if cfg.metric is not None:
        if isinstance(task, Classification):
            task = Classification(cfg.metric)
        elif cfg.metric not in task.metric_names:
            raise ConfigError(
                f"train.metric {cfg.metric!r} is not a metric of task {task.name!r}: choose one of "
                f"{list(task.metric_names)}."
            )
    return task


def _train_loader(
    train_data: Any,
    distiller: Distiller,
    cfg: TrainConfig,
    task: Task,
    augment: BatchTransform,
    views: FixedViews | None,
    ctx: distributed.DistContext,
    rt: Runtime,
) -> Any:
    """Batches for training: the fast BatchLoader over an ArrayDataset, a seeded loader over
    any map-style Dataset, a user's DataLoader, or a data-free distiller's own batches."""
    if train_data is None:
        if not distiller.is_data_free:
            distiller.synthesize_batch(cfg.batch_size)  # raises: the method needs data
        if cfg.steps_per_epoch is None:
            raise ConfigError(
                f"fit() got no training data: a data-free distiller ({distiller.name!r}) "
                "synthesises its batches, so give steps_per_epoch=N (batches per epoch)."
            )
        return SyntheticLoader(distiller.synthesize_batch, cfg.batch_size, cfg.steps_per_epoch)
    if cfg.steps_per_epoch is not None:
        raise ConfigError(
            "steps_per_epoch is for data-free training (fit(distiller, None, test)): with a "
            "training set, an epoch is one pass over it."
        )
    if isinstance(train_data, ArrayDataset):
        return BatchLoader(
            train_data,
            cfg.batch_size,
            shuffle=True,
            seed=cfg.seed,
            augment=augment,
            views=views,
            shard=ctx.shard,
            workers=rt.workers,
            pin_memory=rt.pin_memory,
        )
    if cfg.augment is not None:
        raise ConfigError(
            f"train.augment={cfg.augment!r} transforms kdtutor ArrayDatasets; a "
            f"{type(train_data).__name__} brings its own transforms: put them in the dataset."
        )
    if ctx.enabled:
        raise KDTutorError(
            "distributed training shards kdtutor ArrayDatasets only: load the data with "
            "kdtutor.data (e.g. folder_dataset) or train in one process."
        )
    if isinstance(train_data, DataLoader):
        return DataLoaderAdapter(train_data)
    return DatasetLoader(
        train_data, cfg.batch_size, task.collate, shuffle=True, seed=cfg.seed, workers=rt.workers
    )


def _cache_unavailable(train_data: Any, task: Task, distiller: Distiller) -> str | None:
    """Why teacher outputs cannot be cached for this training data and task, or None.

    A distiller whose ``compute_teacher_outputs`` returns tensors on a task whose own outputs
    are not (a detector's head outputs rather than its lists of boxes) says so with a class
    attribute ``tensor_teacher_outputs = True``, and is cached whatever the task."""
    if train_data is None:
        return "a data-free distiller synthesises new inputs every step"
    if isinstance(train_data, DataLoader):
        return (
            "a DataLoader does not say which sample each row of a batch is; give fit the "
            "Dataset itself (or an ArrayDataset) to cache"
        )
    if getattr(distiller, "tensor_teacher_outputs", False):
        return None
    return task.uncacheable or None


def _open_cache(
    distiller: Distiller,
    train_data: Any,
    task: Task,
    augment: BatchTransform,
    options: CacheOptions,
    ctx: distributed.DistContext,
    device: torch.device,
) -> TeacherCache | None:
    """Put the teacher-output cache of this run in use (or none, saying why); in a
    distributed run rank 0 fills a disk cache and the others open it."""
    distiller.teacher_cache = None
    if distiller.teacher is None or options.mode is False:
        return None
    reason = _cache_unavailable(train_data, task, distiller)
    if reason is not None:
        if options.mode is True:
            raise CacheRefusedError(f"teacher-output cache refused: {reason}.")
        logger.info("teacher-output cache off: %s.", reason)
        return None

    def open_(build: bool = True) -> TeacherCache | None:
        return distiller.cache_teacher(
            train_data, augment, options=options, device=device, build=build
        )

    if ctx.enabled and options.location == "disk":
        if ctx.is_main:
            open_()
        distributed.barrier(ctx)
        return open_(build=ctx.is_main)
    return open_()


def _check_distributable(
    distiller: Distiller, cfg: TrainConfig, ctx: distributed.DistContext, device: torch.device
) -> None:
    if not ctx.enabled:
        return
    if not distiller.supports_ddp:
        raise KDTutorError(
            f"method {distiller.name!r} keeps state (memory banks, or networks stepped outside "
            "forward) that DistributedDataParallel would not synchronise across processes, so "
            "it cannot train with torchrun yet. Run it in one process."
        )
    if cfg.sync_batchnorm and device.type != "cuda":
        raise ConfigError(
            "sync_batchnorm needs CUDA devices (PyTorch's SyncBatchNorm runs on GPUs only); "
            "on CPU each process normalises with its own batch statistics: set it to False."
        )


def _to_device(batch: Batch, device: torch.device, channels_last: bool) -> Batch:
    x = move_to(batch.x, device, non_blocking=True)
    if channels_last and isinstance(x, torch.Tensor) and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return batch._replace(x=x, y=move_to(batch.y, device, non_blocking=True))


def _batch_len(batch: Batch, task: Task) -> int:
    """Samples in ``batch``: the task counts its targets (a dict of tensors, a list of boxes)."""
    return task.batch_size(batch.y) if batch.y is not None else len(batch.x)


def _step_schedule(scheduler: Any) -> None:
    """Advance one epoch of a group's schedule. A group that took no step this epoch (QKD's
    teacher before co-studying) still follows the epochs, so torch's warning that the
    optimizer has not stepped yet is expected there and silenced; the rate is unchanged."""
    if getattr(scheduler.optimizer, "_opt_called", False):
        scheduler.step()
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
        scheduler.step()


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------
def fit(
    model: Distiller | nn.Module,
    train_data: Any = None,
    test_data: Any = None,
    *,
    config: TrainConfig | dict[str, Any] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
    on_epoch: Callable[[EpochEnd], None] | None = None,
    **overrides: Any,
) -> FitResult:
    """Train a distiller (or a plain model, as ``scratch``) and return its history.

    Args:
        model: a :class:`~kdtutor.methods.Distiller`, or an ``nn.Module`` trained alone.
        train_data: the training split: an :class:`~kdtutor.data.ArrayDataset` (the fast,
            cacheable path), any map-style ``torch.utils.data.Dataset`` of ``(input,
            target)`` pairs, a ``DataLoader``, or ``None`` for a data-free distiller (with
            ``steps_per_epoch``).
        test_data: the split evaluated after each epoch (optional), of the same kinds.
        config: a :class:`TrainConfig` or a flat dict of its fields; ``overrides`` win.
        checkpoint: path written atomically after every epoch (model, optimizers,
            schedulers, RNG states, history).
        resume: a checkpoint to continue from (typically the same path as ``checkpoint``).
        progress: tqdm bars; default only when stderr is a terminal.
        log: called with one line per epoch (e.g. ``print``); by default the line goes to
            the ``kdtutor.train.epochs`` logger at level INFO.
        on_epoch: called after every epoch with an :class:`~kdtutor.train.recorder.EpochEnd`
            (the history so far, the student, the scored key); e.g. a
            :class:`~kdtutor.train.recorder.RunRecorder` (``metrics.jsonl``, best weights).

    Example:
        >>> result = fit(build_distiller("kd", student, teacher), train, test, epochs=5)  # doctest: +SKIP
        >>> result.best_acc, result.last_acc  # doctest: +SKIP
    """
    if isinstance(config, TrainConfig):
        cfg = dataclasses.replace(config, **overrides) if overrides else config
    else:
        cfg = from_dict(TrainConfig, {**(config or {}), **overrides}, what="train")
    cfg.validate()
    distiller = _as_distiller(model)
    if train_data is not None:
        _check_data("train_data", train_data)
    if test_data is not None:
        _check_data("test_data", test_data)
    task = _resolve_task(cfg, train_data, test_data)
    check_networks_fit_data(
        {"student": distiller.student, "teacher": distiller.teacher},
        train_data,
        test_data,
        classification=isinstance(task, Classification),
    )
    cache_options = cfg.cache_options()
    ctx = distributed.setup(torch.device(cfg.device).type if cfg.device else None)
    device = resolve_device(cfg.device, ctx.local_rank if ctx.enabled else None)
    rt = resolve_runtime(cfg, device)
    if rt.amp:
        precision = str(rt.amp_dtype).removeprefix("torch.")
        cache_options = dataclasses.replace(cache_options, precision=precision)
    seed_everything(cfg.seed)
    if cfg.deterministic:
        set_deterministic(True)
    if train_data is not None:
        distiller.bind_data(train_data)
    _check_distributable(distiller, cfg, ctx, device)
    distiller.to(device)
    if rt.channels_last:
        distiller.to(memory_format=torch.channels_last)
    if rt.compile_backend is not None:
        distiller.student.compile(backend=rt.compile_backend)
        if distiller.teacher is not None:
            distiller.teacher.compile(backend=rt.compile_backend)
    step_module: nn.Module = distiller
    if ctx.enabled:
        if cfg.sync_batchnorm:
            distiller.student = nn.SyncBatchNorm.convert_sync_batchnorm(distiller.student)
        step_module = nn.parallel.DistributedDataParallel(
            distiller,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=distiller.has_unused_parameters(),
        )

    augment = build_augment(cfg.augment)
    views = None
    if cfg.cache_views and cfg.cache is not False and isinstance(train_data, ArrayDataset):
        views = FixedViews(augment, len(train_data), cfg.cache_views)
        cache_options = dataclasses.replace(cache_options, views=views)
    loader = _train_loader(train_data, distiller, cfg, task, augment, views, ctx, rt)
    optimizers, schedulers = build_optimizers(distiller.optimizer_groups(), cfg)
    first_optimizer = next(iter(optimizers.values()))
    scaler = torch.amp.GradScaler(device.type) if rt.grad_scaler else None
    history: list[dict[str, Any]] = []
    start_epoch = 0
    checkpoint_path = Path(checkpoint) if checkpoint is not None and ctx.is_main else None

    if resume is not None:
        start_epoch, history = load_checkpoint(
            Path(resume), distiller, optimizers, schedulers, scaler
        )

    with _autocast(rt, device):  # cached outputs are what the teacher gives in training
        _open_cache(distiller, train_data, task, augment, cache_options, ctx, device)
    steps = Steps(
        step_module,
        optimizers,
        scaler=scaler,
        max_grad_norm=cfg.max_grad_norm,
        checkpoint=checkpoint_path,
    )
    show = ctx.is_main and (sys.stderr.isatty() if progress is None else progress)
    try:
        for epoch in range(start_epoch, cfg.stop_after or cfg.epochs):
            distiller.train()
            distiller.on_epoch_start(epoch, cfg.epochs)
            loader.set_epoch(epoch)
            steps.epoch = epoch
            lr = first_optimizer.param_groups[0]["lr"]
            sums: dict[str, float] = {}
            hits, scored, seen = 0.0, 0, 0
            epoch_start = time.perf_counter()
            bar = tqdm(
                loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not show, leave=False
            )
            for batch in bar:
                batch = _to_device(batch, device, rt.channels_last)
                n = _batch_len(batch, task)
                if batch.global_size is not None:  # DDP averages: weigh by the share of the batch
                    steps.batch_share = n * ctx.world_size / batch.global_size
                with _autocast(rt, device):
                    outputs, losses = distiller.train_step(batch, steps)
                steps.end_batch()
                for name, value in losses.items():
                    sums[name] = sums.get(name, 0.0) + float(value.detach()) * n
                score = None
                if outputs is not None and batch.y is not None:
                    score = task.train_score(outputs, batch.y)
                if score is not None:
                    hits, scored = hits + score[0], scored + score[1]
                seen += n
            _check_finite_weights(distiller, epoch, lr)
            for scheduler in schedulers.values():
                _step_schedule(scheduler)
            names = list(sums)
            *totals, hits, scored, seen = distributed.all_reduce_sum(
                [*sums.values(), hits, scored, seen], ctx
            )
            sums = dict(zip(names, totals, strict=True))
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "lr": lr,
                "losses": {k: v / seen for k, v in sums.items()},
                "loss": sum(sums.values()) / seen,
            }
            if scored:
                record[f"train_{task.short}"] = 100.0 * hits / scored
            if test_data is not None:
                eval_start = time.perf_counter()
                record.update(_test_record(distiller, test_data, task, cfg, ctx, device))
                record["eval_seconds"] = time.perf_counter() - eval_start
            record["seconds"] = time.perf_counter() - epoch_start
            history.append(record)
            if on_epoch is not None and ctx.is_main:
                # before the checkpoint: a kill in between repeats the epoch on resume, and
                # the callback's outputs (metrics.jsonl) then drop the repeated line
                on_epoch(_epoch_end(history, distiller, task))
            if checkpoint_path is not None:
                save_checkpoint(
                    checkpoint_path,
                    distiller,
                    optimizers,
                    schedulers,
                    epoch,
                    history,
                    cfg,
                    scaler,
                )
            if ctx.is_main:
                (log or epoch_log.info)(_epoch_line(record, task))
    finally:
        distiller.teacher_cache = None
        if cfg.deterministic:
            set_deterministic(False)
    result = _summarize(distiller.name, history, cfg, task)
    result.runtime = rt.describe()
    return result


def _check_finite_weights(distiller: Distiller, epoch: int, lr: float) -> None:
    """After each epoch: a step whose loss was finite can still leave NaN or infinite weights
    (a huge learning rate), which the next loss would only reveal if there were a next step."""
    for name, param in distiller.named_parameters():
        if param.requires_grad and not bool(torch.isfinite(param).all()):
            raise NonFiniteLossError(
                f"the weights {name} became NaN or infinite in epoch {epoch + 1} (learning rate "
                f"{lr:g}): training diverged. Lower the learning rate (e.g. lr=0.05) or clip "
                "gradients (max_grad_norm=5)."
            )


def _score_key(history: list[dict[str, Any]], task: Task) -> str | None:
    """The key scored as best and last: the test score, else the training score."""
    keys = (f"test_{task.short}", f"train_{task.short}")
    return next((k for k in keys if history and k in history[0]), None)


def _epoch_end(history: list[dict[str, Any]], distiller: Distiller, task: Task) -> EpochEnd:
    return EpochEnd(history, distiller.student, _score_key(history, task), task.higher_is_better)


def _autocast(rt: Runtime, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if not rt.amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=rt.amp_dtype)


def _test_record(
    distiller: Distiller,
    test_data: Any,
    task: Task,
    cfg: TrainConfig,
    ctx: distributed.DistContext,
    device: torch.device,
) -> dict[str, Any]:
    """``test_<short>``: the first network's primary score; ``test``: every network's every
    metric, when there is more than one of either."""
    metric = cfg.metric or task.primary
    scores, value = None, None
    if ctx.is_main:
        scores = evaluate_networks(
            distiller, test_data, task=task, batch_size=cfg.eval_batch_size, device=device
        )
        value = next(iter(scores.values()))[metric]
    record: dict[str, Any] = {f"test_{task.short}": distributed.broadcast_float(value, ctx)}
    if scores is not None and (len(scores) > 1 or len(next(iter(scores.values()))) > 1):
        record["test"] = scores
    return record


def _epoch_line(record: dict[str, Any], task: Task) -> str:
    losses = " ".join(f"{k} {v:.4f}" for k, v in record["losses"].items())
    train = record.get(f"train_{task.short}")
    test = record.get(f"test_{task.short}")
    return (
        f"epoch {record['epoch']:3d}  lr {record['lr']:.4g}  {losses}"
        + (f"  train {task.format_score(train)}" if train is not None else "")
        + (f"  test {task.format_score(test)}" if test is not None else "")
        + f"  {record['seconds']:.1f}s"
    )


def _summarize(
    method: str, history: list[dict[str, Any]], cfg: TrainConfig, task: Task
) -> FitResult:
    metric = cfg.metric or task.primary
    key = _score_key(history, task)
    if key is None:  # no score at all (e.g. detection without a test split)
        scores = [math.nan] * len(history)
        best = len(history) - 1
    else:
        scores = [h[key] for h in history]
        pick = max if task.higher_is_better else min
        best = pick(range(len(scores)), key=scores.__getitem__)
    return FitResult(
        method=method,
        history=history,
        best_acc=scores[best],
        best_epoch=history[best]["epoch"],
        last_acc=scores[-1],
        seconds=sum(h["seconds"] for h in history),
        config=dataclasses.asdict(cfg),
        metric=metric,
    )
