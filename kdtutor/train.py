"""The one training loop, shared by every method.

``fit`` sums the named losses a :class:`~kdtutor.methods.Distiller` returns, steps the
optimizer and scheduler, evaluates, records a per-epoch history and writes atomic
checkpoints from which ``resume=`` continues bit-identically on CPU. It knows nothing about
any particular method.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from tqdm import tqdm  # not tqdm.auto: it warns on stderr in Jupyter without ipywidgets

from . import distributed
from .cache import attach_teacher_cache
from .config import ConfigError, from_dict, non_negative, positive
from .data import ArrayDataset, BatchLoader, build_augment
from .data.transforms import FixedViews
from .errors import CheckpointError, KDTutorError, NonFiniteLossError
from .io import atomic_save, safe_load
from .methods import Distiller, build_distiller
from .metrics import get_metric
from .seeding import rng_state, seed_everything, set_deterministic, set_rng_state

CHECKPOINT_FORMAT = "kdtutor-checkpoint/1"


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``fit`` needs besides the model and data. Defaults suit book-scale CPU runs.

    ``schedule="step"`` multiplies the learning rate by ``gamma`` at each of ``milestones``
    (epochs; RepDistiller: 150, 180, 210 of 240); ``"cosine"`` anneals it to zero.

    Teacher-output cache: ``cache`` (``"auto"``, True, False), ``cache_location``
    (``"memory"`` or memory-mapped ``"disk"`` files), ``cache_dtype`` (``"float16"`` halves
    it) and ``cache_views`` (with random ``augment``: cache this many fixed augmented views
    per image, an approximation of fresh augmentation; 0 disables the cache under it).

    GPU options (``None`` picks the default for the device; on CPU they change nothing):
    ``amp`` (autocast, default on CUDA) in ``amp_dtype`` (``"bfloat16"``; ``"float16"`` adds
    a gradient scaler), ``channels_last`` (default on CUDA), ``workers`` loader threads
    (default 2 on CUDA, 0 on CPU), ``pin_memory`` (default on CUDA), ``compile`` (False,
    True for ``torch.compile``'s default backend, or a backend name) and ``sync_batchnorm``
    (batch statistics over every GPU of a distributed run).
    """

    epochs: int = 10
    batch_size: int = 128
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_epochs: int = 0
    augment: str | None = None
    cache: bool | Literal["auto"] = "auto"
    cache_location: Literal["memory", "disk"] = "memory"
    cache_dtype: Literal["float32", "float16"] = "float32"
    cache_views: int = 0
    seed: int = 0
    deterministic: bool = False
    device: str | None = None
    amp: bool | None = None
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"
    channels_last: bool | None = None
    compile: bool | str = False
    workers: int | None = None
    pin_memory: bool | None = None
    sync_batchnorm: bool = False
    eval_batch_size: int = 512
    metric: str = "accuracy"
    max_grad_norm: float | None = None

    def validate(self) -> None:
        positive("epochs", self.epochs, "train")
        positive("batch_size", self.batch_size, "train")
        positive("eval_batch_size", self.eval_batch_size, "train")
        positive("lr", self.lr, "train")
        non_negative("momentum", self.momentum, "train")
        non_negative("weight_decay", self.weight_decay, "train")
        non_negative("warmup_epochs", self.warmup_epochs, "train")
        non_negative("seed", self.seed, "train")
        non_negative("cache_views", self.cache_views, "train")
        if self.workers is not None:
            non_negative("workers", self.workers, "train")
        if self.cache_location not in ("memory", "disk"):
            raise ConfigError(
                f"train.cache_location must be 'memory' or 'disk', got {self.cache_location!r}."
            )
        if self.cache_dtype not in ("float32", "float16"):
            raise ConfigError(
                f"train.cache_dtype must be 'float32' or 'float16', got {self.cache_dtype!r}."
            )
        if self.amp_dtype not in ("bfloat16", "float16"):
            raise ConfigError(
                f"train.amp_dtype must be 'bfloat16' or 'float16', got {self.amp_dtype!r}."
            )
        if self.optimizer not in ("sgd", "adam", "adamw"):
            raise ConfigError(
                f"train.optimizer must be 'sgd', 'adam' or 'adamw', got {self.optimizer!r}."
            )
        if self.schedule not in ("cosine", "step", "constant"):
            raise ConfigError(
                f"train.schedule must be 'cosine', 'step' or 'constant', got {self.schedule!r}."
            )
        if any(m <= 0 or m >= self.epochs for m in self.milestones):
            raise ConfigError(
                f"train.milestones must lie in 1..epochs-1 (epochs={self.epochs}), got {self.milestones}."
            )
        get_metric(self.metric)


@dataclass
class FitResult:
    """What a training run returns: the per-epoch history and its summary.

    Accuracies are percentages on the test split (the train split when no test split is given);
    ``seconds`` sums the epochs' times (building a teacher-output cache is not included).
    """

    method: str
    history: list[dict[str, Any]]
    best_acc: float
    best_epoch: int
    last_acc: float
    seconds: float
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        return (
            f"{self.method}: best {self.best_acc:.2f}% (epoch {self.best_epoch}), "
            f"last {self.last_acc:.2f}%, {self.seconds:.1f} s"
        )


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------
def resolve_device(device: str | None = None, local_rank: int | None = None) -> torch.device:
    """``device`` if given, else CUDA when present (``cuda:<local_rank>`` in a distributed
    run), else CPU."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(device)
    if resolved.type == "cuda" and resolved.index is None and local_rank is not None:
        resolved = torch.device("cuda", local_rank)
    return resolved


@dataclass(frozen=True)
class Runtime:
    """The device-dependent choices :func:`fit` makes from a :class:`TrainConfig`."""

    device: torch.device
    amp: bool
    amp_dtype: torch.dtype
    channels_last: bool
    workers: int
    pin_memory: bool
    compile_backend: str | None

    @property
    def grad_scaler(self) -> bool:
        """float16 autocast needs loss scaling; bfloat16 has float32's range and does not."""
        return self.amp and self.amp_dtype == torch.float16


def resolve_runtime(cfg: TrainConfig, device: torch.device) -> Runtime:
    """Resolve the GPU options of ``cfg`` for ``device`` (defaults on CUDA, all off on CPU)."""
    cuda = device.type == "cuda"
    amp = cuda and (cfg.amp is None or cfg.amp)
    amp_dtype = torch.bfloat16 if cfg.amp_dtype == "bfloat16" else torch.float16
    if amp and amp_dtype == torch.bfloat16 and not _bf16_supported(device):
        amp_dtype = torch.float16  # pre-Ampere GPUs: float16 with a gradient scaler
    backend: str | None = None
    if cfg.compile:
        backend = "inductor" if cfg.compile is True else str(cfg.compile)
    return Runtime(
        device=device,
        amp=amp,
        amp_dtype=amp_dtype,
        channels_last=cuda if cfg.channels_last is None else bool(cfg.channels_last),
        workers=(2 if cuda else 0) if cfg.workers is None else int(cfg.workers),
        pin_memory=cuda if cfg.pin_memory is None else bool(cfg.pin_memory) and cuda,
        compile_backend=backend,
    )


def _bf16_supported(device: torch.device) -> bool:
    try:
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    except Exception:
        return False


def make_optimizer(params: Iterable[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    params = list(params)
    if not params:
        raise KDTutorError("nothing to train: the distiller has no trainable parameters.")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            nesterov=cfg.nesterov,
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(epoch: int, cfg: TrainConfig) -> float:
    """Multiplier of the base learning rate during (0-based) ``epoch``."""
    if epoch < cfg.warmup_epochs:
        return (epoch + 1) / (cfg.warmup_epochs + 1)
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    span = max(1, cfg.epochs - cfg.warmup_epochs)
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - cfg.warmup_epochs) / span))


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: lr_factor(epoch, cfg))


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    dataset: ArrayDataset,
    *,
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Logits of ``model`` (a Distiller's student, or any classifier) on every sample, in order.

    The model runs in ``eval()`` mode without gradients on ``device`` (default: the device its
    parameters are on); its previous train/eval mode is restored afterwards.

    Returns:
        ``(logits, labels)``: float32 ``(N, K)`` and int64 ``(N,)``, on the CPU.
    """
    if device is None:
        device = next(iter(model.parameters()), torch.empty(0)).device
    predict = model.predict if isinstance(model, Distiller) else model
    was_training = model.training
    model.eval()
    logits, labels = [], []
    try:
        for batch in BatchLoader(dataset, batch_size):
            logits.append(predict(batch.x.to(device)).float().cpu())
            labels.append(batch.y)
    finally:
        model.train(was_training)
    if not logits:
        raise KDTutorError(
            "cannot predict on an empty dataset split: check the dataset name, split and size."
        )
    return torch.cat(logits), torch.cat(labels)


def evaluate(
    model: nn.Module,
    dataset: ArrayDataset,
    *,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    metric: str = "accuracy",
) -> float:
    """The metric (a percentage) of ``model`` (a Distiller's student, or any classifier) on ``dataset``."""
    device = resolve_device(str(device) if device is not None else None)
    logits, labels = predict_logits(model, dataset, batch_size=batch_size, device=device)
    total, count = get_metric(metric)(logits, labels)
    return 100.0 * total / count


def _as_distiller(model: Distiller | nn.Module) -> Distiller:
    if isinstance(model, Distiller):
        return model
    if isinstance(model, nn.Module):
        return build_distiller("scratch", model)
    raise TypeError(f"fit() needs a Distiller or an nn.Module, got {type(model).__name__}.")


def _signature(state: dict[str, Tensor]) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in state.items()}


def _check_finite(
    losses: dict[str, Tensor], epoch: int, step: int, lr: float, checkpoint: Path | None
) -> None:
    for name, value in losses.items():
        if not torch.isfinite(value).all():
            kept = (
                f" The last good checkpoint ({checkpoint}) was kept; resume from it with a lower lr."
                if checkpoint is not None and checkpoint.exists()
                else ""
            )
            raise NonFiniteLossError(
                f"loss {name!r} became {value.item()} at epoch {epoch + 1}, step {step}. Lower the learning "
                f"rate (now {lr:g}), check the inputs for NaN/inf, or lower the loss weight or "
                f"temperature of {name!r}.{kept}"
            )


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------
def fit(
    model: Distiller | nn.Module,
    train_data: ArrayDataset,
    test_data: ArrayDataset | None = None,
    *,
    config: TrainConfig | dict[str, Any] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
    **overrides: Any,
) -> FitResult:
    """Train a distiller (or a plain model, as ``scratch``) and return its history.

    Args:
        model: a :class:`~kdtutor.methods.Distiller`, or an ``nn.Module`` trained alone.
        train_data: the training split.
        test_data: the split evaluated after each epoch (optional).
        config: a :class:`TrainConfig` or a flat dict of its fields; ``overrides`` win.
        checkpoint: path written atomically after every epoch (model, optimizer, scheduler,
            RNG states, history).
        resume: a checkpoint to continue from (typically the same path as ``checkpoint``).
        progress: tqdm bars; default only when stderr is a terminal.
        log: called with one line per epoch (e.g. ``print``).

    Example:
        >>> result = fit(build_distiller("kd", student, teacher), train, test, epochs=5)  # doctest: +SKIP
        >>> result.best_acc, result.last_acc  # doctest: +SKIP
    """
    if isinstance(config, TrainConfig):
        cfg = dataclasses.replace(config, **overrides) if overrides else config
    else:
        cfg = from_dict(TrainConfig, {**(config or {}), **overrides}, what="train")
    cfg.validate()
    if len(train_data) == 0:
        raise KDTutorError("the training split is empty: check the dataset name, split and size.")
    if test_data is not None and len(test_data) == 0:
        raise KDTutorError("the test split is empty: check the dataset name, split and size.")

    distiller = _as_distiller(model)
    ctx = distributed.setup(torch.device(cfg.device).type if cfg.device else None)
    device = resolve_device(cfg.device, ctx.local_rank if ctx.enabled else None)
    rt = resolve_runtime(cfg, device)
    seed_everything(cfg.seed)
    if cfg.deterministic:
        set_deterministic(True)
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
    views = (
        FixedViews(augment, len(train_data), cfg.cache_views)
        if cfg.cache_views and cfg.cache is not False
        else None
    )
    loader = BatchLoader(
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
    optimizer = make_optimizer(distiller.trainable_parameters(), cfg)
    scheduler = make_scheduler(optimizer, cfg)
    scaler = torch.amp.GradScaler(device.type) if rt.grad_scaler else None
    score = get_metric(cfg.metric)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    checkpoint_path = Path(checkpoint) if checkpoint is not None and ctx.is_main else None

    if resume is not None:
        start_epoch, history = _load_checkpoint(
            Path(resume), distiller, optimizer, scheduler, scaler
        )

    _attach_cache(distiller, train_data, augment, views, cfg, ctx, device)
    cache = distiller._cache
    show = ctx.is_main and (sys.stderr.isatty() if progress is None else progress)
    step = 0
    try:
        for epoch in range(start_epoch, cfg.epochs):
            distiller.train()
            distiller.on_epoch_start(epoch, cfg.epochs)
            loader.set_epoch(epoch)
            lr = optimizer.param_groups[0]["lr"]
            sums: dict[str, float] = {}
            hits, seen = 0.0, 0
            epoch_start = time.perf_counter()
            bar = tqdm(
                loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not show, leave=False
            )
            for batch in bar:
                x = batch.x.to(device, non_blocking=True)
                y = batch.y.to(device, non_blocking=True)
                if rt.channels_last and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                if cache is not None:
                    cache.batch_view = batch.view
                autocast = (
                    torch.autocast(device_type=device.type, dtype=rt.amp_dtype)
                    if rt.amp
                    else contextlib.nullcontext()
                )
                with autocast:
                    logits, losses = step_module(x, y, batch.index)
                _check_finite(losses, epoch, step, lr, checkpoint_path)
                total = torch.stack([v.float() for v in losses.values()]).sum()
                n = y.shape[0]
                if batch.global_size is not None:  # DDP averages: weigh by the share of the batch
                    total = total * (n * ctx.world_size / batch.global_size)
                optimizer.zero_grad(set_to_none=True)
                _backward_and_step(total, optimizer, scaler, distiller, cfg.max_grad_norm)
                step += 1
                for name, value in losses.items():
                    sums[name] = sums.get(name, 0.0) + float(value.detach()) * n
                s, _ = score(logits.detach().float(), y)
                hits, seen = hits + s, seen + n
            scheduler.step()
            names = list(sums)
            *totals, hits, seen = distributed.all_reduce_sum([*sums.values(), hits, seen], ctx)
            sums = dict(zip(names, totals, strict=True))
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "lr": lr,
                "losses": {k: v / seen for k, v in sums.items()},
                "loss": sum(sums.values()) / seen,
                "train_acc": 100.0 * hits / seen,
            }
            if test_data is not None:
                acc = None
                if ctx.is_main:
                    acc = evaluate(
                        distiller,
                        test_data,
                        batch_size=cfg.eval_batch_size,
                        device=device,
                        metric=cfg.metric,
                    )
                record["test_acc"] = distributed.broadcast_float(acc, ctx)
            record["seconds"] = time.perf_counter() - epoch_start
            history.append(record)
            if checkpoint_path is not None:
                _save_checkpoint(
                    checkpoint_path, distiller, optimizer, scheduler, epoch, history, cfg, scaler
                )
            if log is not None and ctx.is_main:
                log(_epoch_line(record))
    finally:
        if cache is not None:
            cache.batch_view = None
        distiller._cache = None
        if cfg.deterministic:
            set_deterministic(False)
    return _summarize(distiller.name, history, cfg)


def _backward_and_step(
    total: Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    distiller: Distiller,
    max_grad_norm: float | None,
) -> None:
    """One optimizer step, through a gradient scaler when float16 autocast needs one."""
    if scaler is None:
        total.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(list(distiller.trainable_parameters()), max_grad_norm)
        optimizer.step()
        return
    scaler.scale(total).backward()
    if max_grad_norm is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(list(distiller.trainable_parameters()), max_grad_norm)
    scaler.step(optimizer)
    scaler.update()


def _check_distributable(
    distiller: Distiller, cfg: TrainConfig, ctx: distributed.DistContext, device: torch.device
) -> None:
    if not ctx.enabled:
        return
    if not distiller.supports_ddp:
        raise KDTutorError(
            f"method {distiller.name!r} keeps per-sample state ({distiller.name} memory banks) that "
            "DistributedDataParallel would not synchronise across processes, so it cannot train "
            "with torchrun yet. Run it in one process."
        )
    if cfg.sync_batchnorm and device.type != "cuda":
        raise ConfigError(
            "sync_batchnorm needs CUDA devices (PyTorch's SyncBatchNorm runs on GPUs only); "
            "on CPU each process normalises with its own batch statistics: set it to False."
        )


def _attach_cache(
    distiller: Distiller,
    train_data: ArrayDataset,
    augment: Any,
    views: FixedViews | None,
    cfg: TrainConfig,
    ctx: distributed.DistContext,
    device: torch.device,
) -> None:
    """Attach the teacher-output cache; in a distributed run rank 0 fills a disk cache first."""
    options = {
        "mode": cfg.cache,
        "device": device,
        "location": cfg.cache_location,
        "dtype": cfg.cache_dtype,
        "views": views,
    }
    if ctx.enabled and cfg.cache_location == "disk":
        if ctx.is_main:
            attach_teacher_cache(distiller, train_data, augment, **options)
        distributed.barrier(ctx)
        if not ctx.is_main:
            attach_teacher_cache(distiller, train_data, augment, build=False, **options)
        return
    attach_teacher_cache(distiller, train_data, augment, **options)


def _epoch_line(record: dict[str, Any]) -> str:
    losses = " ".join(f"{k} {v:.4f}" for k, v in record["losses"].items())
    test = f" test {record['test_acc']:.2f}%" if "test_acc" in record else ""
    return (
        f"epoch {record['epoch']:3d}  lr {record['lr']:.4g}  {losses}  train {record['train_acc']:.2f}%"
        f"{test}  {record['seconds']:.1f}s"
    )


def _summarize(method: str, history: list[dict[str, Any]], cfg: TrainConfig) -> FitResult:
    key = "test_acc" if history and "test_acc" in history[0] else "train_acc"
    accs = [h[key] for h in history]
    best = max(range(len(accs)), key=accs.__getitem__)
    return FitResult(
        method=method,
        history=history,
        best_acc=accs[best],
        best_epoch=history[best]["epoch"],
        last_acc=accs[-1],
        seconds=sum(h["seconds"] for h in history),
        config=dataclasses.asdict(cfg),
    )


def _save_checkpoint(
    path: Path,
    distiller: Distiller,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epoch: int,
    history: list[dict[str, Any]],
    cfg: TrainConfig,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    state = distiller.trainable_state_dict()
    atomic_save(
        {
            "format": CHECKPOINT_FORMAT,
            "method": distiller.name,
            "epoch": epoch,
            "model": state,
            "signature": _signature(state),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_state(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "history": history,
            "config": {
                k: v for k, v in dataclasses.asdict(cfg).items() if not isinstance(v, tuple)
            },
        },
        path,
    )


def _load_checkpoint(
    path: Path,
    distiller: Distiller,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    ckpt = safe_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a kdtutor training checkpoint (expected format {CHECKPOINT_FORMAT})."
        )
    if ckpt["method"] != distiller.name:
        raise CheckpointError(
            f"{path} was saved by method {ckpt['method']!r}, but this run uses {distiller.name!r}. "
            "Resume with the same method, or start a new run without resume=."
        )
    expected = _signature(distiller.trainable_state_dict())
    if ckpt["signature"] != expected:
        saved = ckpt["signature"]
        differing = [
            k for k in sorted(set(expected) | set(saved)) if expected.get(k) != saved.get(k)
        ][:3]
        raise CheckpointError(
            f"{path} was saved for another model: parameters {differing} differ in name or shape. "
            "Resume with the same student architecture (and connectors), or start a new run."
        )
    distiller.load_trainable_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    return int(ckpt["epoch"]) + 1, list(ckpt["history"])


# --------------------------------------------------------------------------------------------
# several seeds
# --------------------------------------------------------------------------------------------
@dataclass
class SeedsResult:
    """Runs of one configuration over several seeds: mean and sample standard deviation (ddof=1)."""

    results: list[FitResult]
    seeds: list[int]

    @staticmethod
    def _mean_std(values: Sequence[float]) -> tuple[float, float]:
        t = torch.tensor(values, dtype=torch.float64)
        std = float(t.std(unbiased=True)) if len(values) > 1 else 0.0
        return float(t.mean()), std

    @property
    def best(self) -> tuple[float, float]:
        return self._mean_std([r.best_acc for r in self.results])

    @property
    def last(self) -> tuple[float, float]:
        return self._mean_std([r.last_acc for r in self.results])

    @property
    def method(self) -> str:
        return self.results[0].method

    def to_dict(self) -> dict[str, Any]:
        (bm, bs), (lm, ls) = self.best, self.last
        return {
            "method": self.method,
            "seeds": self.seeds,
            "best_mean": bm,
            "best_std": bs,
            "last_mean": lm,
            "last_std": ls,
            "runs": [r.to_dict() for r in self.results],
        }

    def __str__(self) -> str:
        (bm, bs), (lm, ls) = self.best, self.last
        return f"{self.method}: best {bm:.2f} ± {bs:.2f} | last {lm:.2f} ± {ls:.2f} ({len(self.seeds)} seeds)"


def parse_seeds(seeds: str | int | Sequence[int]) -> list[int]:
    """Accept ``"0,1,2"``, ``"0-4"``, ``3`` (meaning seed 3) or a sequence of ints."""
    if isinstance(seeds, bool):
        raise ConfigError(f"seeds must be integers, got {seeds!r}.")
    if isinstance(seeds, int):
        values = [seeds]
    elif isinstance(seeds, str):
        try:
            if "-" in seeds.strip()[1:] and "," not in seeds:
                lo, hi = seeds.split("-")
                values = list(range(int(lo), int(hi) + 1))
            else:
                values = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(
                f"could not read seeds {seeds!r}: write comma-separated non-negative integers like "
                "'0,1,2' or a range like '0-2'."
            ) from None
    else:
        values = list(seeds)
    if not values or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in values):
        raise ConfigError(
            f"seeds must be a non-empty list of non-negative integers, got {seeds!r}."
        )
    if len(set(values)) != len(values):
        raise ConfigError(f"seeds {values} repeat a value: every seed should appear once.")
    return values


def run_seeds(
    make: Callable[[int], Distiller | nn.Module],
    train_data: ArrayDataset,
    test_data: ArrayDataset | None = None,
    *,
    seeds: str | Sequence[int] = (0, 1, 2),
    seed_log: Callable[[str], None] | None = None,
    **fit_kwargs: Any,
) -> SeedsResult:
    """Build a fresh distiller per seed with ``make(seed)`` (after seeding) and ``fit`` it.

    A ``checkpoint=`` path may contain ``{seed}``, replaced by each run's seed.

    Example:
        >>> run = run_seeds(lambda s: build_distiller("kd", build_model("cnn_small"), teacher),
        ...                 train, test, seeds=[0, 1, 2], epochs=10)  # doctest: +SKIP
        >>> run.best  # (mean, std)  # doctest: +SKIP
    """
    seed_list = parse_seeds(seeds)
    checkpoint = fit_kwargs.pop("checkpoint", None)
    if checkpoint is not None and len(seed_list) > 1 and "{seed}" not in str(checkpoint):
        raise ConfigError(
            f"checkpoint {checkpoint!r} would be overwritten by each of the {len(seed_list)} seeds: "
            "put {seed} in the path, e.g. 'runs/kd-{seed}.pt'."
        )
    results = []
    for seed in seed_list:
        seed_everything(seed)
        path = str(checkpoint).replace("{seed}", str(seed)) if checkpoint is not None else None
        results.append(
            fit(make(seed), train_data, test_data, seed=seed, checkpoint=path, **fit_kwargs)
        )
        if seed_log is not None:
            seed_log(f"seed {seed}: {results[-1]}")
    return SeedsResult(results, seed_list)
