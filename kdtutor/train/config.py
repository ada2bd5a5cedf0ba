"""What a training run is told: :class:`TrainConfig`, and the device-dependent choices made
from it (:class:`Runtime`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from ..cache import CacheOptions
from ..config import ConfigError, non_negative, positive


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``fit`` needs besides the model and data. Defaults suit book-scale CPU runs.

    ``schedule="step"`` multiplies the learning rate by ``gamma`` at each of ``milestones``
    (epochs; RepDistiller: 150, 180, 210 of 240); ``"cosine"`` anneals it to zero. These
    optimizer settings apply to every optimizer group of a distiller unless the group
    overrides them (:class:`~kdtutor.methods.steps.OptimizerGroup`).

    ``stop_after`` ends the run after that many epochs of the ``epochs``-long schedule,
    whose learning rate is then where the full schedule has it (an early-stopped run, as
    Cho & Hariharan's (2019) early-stopped teachers); ``None`` trains every epoch.

    ``task`` (``None``: the dataset's ``task`` attribute, else ``"classification"``) chooses
    how targets collate and how runs are scored; ``metric`` (``None``: the task's primary)
    the score reported as best and last. ``steps_per_epoch`` is for data-free distillers,
    which synthesise their batches (``fit(distiller, None, test)``).

    Teacher-output cache: ``cache`` (``"auto"``, True, False), ``cache_location``
    (``"memory"`` or memory-mapped ``"disk"`` files), ``cache_dtype`` (``"float16"`` halves
    it) and ``cache_views`` (with random ``augment``: cache this many fixed augmented views
    per image, an approximation of fresh augmentation; 0 disables the cache under it).

    Speed options (``None`` picks the default for the device, see :func:`resolve_runtime`):
    ``amp`` (autocast, default on CUDA; on a CPU with bfloat16 units ``amp=True`` runs
    bfloat16 autocast) in ``amp_dtype`` (``"bfloat16"``; ``"float16"`` adds a gradient
    scaler, GPUs only), ``channels_last`` (default on CUDA), ``workers`` loader threads
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
    task: str | None = None
    metric: str | None = None
    steps_per_epoch: int | None = None
    max_grad_norm: float | None = None
    stop_after: int | None = None

    def validate(self) -> None:
        positive("epochs", self.epochs, "train")
        positive("batch_size", self.batch_size, "train")
        positive("eval_batch_size", self.eval_batch_size, "train")
        positive("lr", self.lr, "train")
        if not math.isfinite(self.lr):
            raise ConfigError(f"train.lr must be a finite number, got {self.lr}.")
        non_negative("momentum", self.momentum, "train")
        non_negative("weight_decay", self.weight_decay, "train")
        non_negative("warmup_epochs", self.warmup_epochs, "train")
        non_negative("seed", self.seed, "train")
        non_negative("cache_views", self.cache_views, "train")
        if self.workers is not None:
            non_negative("workers", self.workers, "train")
        if self.steps_per_epoch is not None:
            positive("steps_per_epoch", self.steps_per_epoch, "train")
        if self.stop_after is not None:
            positive("stop_after", self.stop_after, "train")
            if self.stop_after > self.epochs:
                raise ConfigError(
                    f"train.stop_after={self.stop_after} lies beyond the schedule's "
                    f"{self.epochs} epochs: stop at most after epoch {self.epochs}."
                )
        self.cache_options()
        check_compile_backend(self.compile)
        if self.device is not None:
            _check_present(parse_device(self.device))
        _choice("amp_dtype", self.amp_dtype, ("bfloat16", "float16"))
        _choice("optimizer", self.optimizer, ("sgd", "adam", "adamw"))
        _choice("schedule", self.schedule, ("cosine", "step", "constant"))
        if self.schedule == "step" and not self.milestones:
            raise ConfigError(
                "train.schedule='step' needs milestones (epochs at which the rate drops, e.g. "
                "milestones=(150, 180, 210) of 240); without any the rate never changes: use "
                "schedule='constant' for that."
            )
        if any(m <= 0 or m >= self.epochs for m in self.milestones):
            raise ConfigError(
                f"train.milestones must lie in 1..epochs-1 (epochs={self.epochs}), got {self.milestones}."
            )

    def cache_options(self) -> CacheOptions:
        """The teacher-output cache settings, validated (in one place: :class:`CacheOptions`)."""
        return CacheOptions(mode=self.cache, location=self.cache_location, dtype=self.cache_dtype)


def _choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ConfigError(f"train.{name} must be one of {listed}, got {value!r}.")


def lr_factor(epoch: int, cfg: TrainConfig, schedule: str | None = None) -> float:
    """Multiplier of the base learning rate during (0-based) ``epoch`` (``schedule``
    overrides the config's)."""
    schedule = schedule or cfg.schedule
    if epoch < cfg.warmup_epochs:
        return (epoch + 1) / (cfg.warmup_epochs + 1)
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    span = max(1, cfg.epochs - cfg.warmup_epochs)
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - cfg.warmup_epochs) / span))


def resolve_device(device: str | None = None, local_rank: int | None = None) -> torch.device:
    """``device`` if given, else CUDA when present (``cuda:<local_rank>`` in a distributed
    run), else CPU."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = parse_device(device)
    _check_present(resolved)
    if resolved.type == "cuda" and resolved.index is None and local_rank is not None:
        resolved = torch.device("cuda", local_rank)
    return resolved


def parse_device(device: str | torch.device) -> torch.device:
    """``torch.device(device)``, with an error that lists the valid names."""
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"unknown device {device!r}: use cpu, cuda, cuda:N or mps (or leave it unset to "
            "use a GPU when there is one)."
        ) from None


def _check_present(device: torch.device) -> None:
    """Refuse a device this machine does not have, before anything is moved to it."""
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(
                f"device {str(device)!r} is not present: this machine has no usable CUDA GPU. "
                "Use device='cpu' (--device cpu), or leave it unset."
            )
        if device.index is not None and device.index >= count:
            raise ConfigError(
                f"device {str(device)!r} is not present: this machine has {count} CUDA "
                f"GPU(s), cuda:0 to cuda:{count - 1}."
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' is not present on this machine: use device='cpu'.")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {str(device)!r} is not supported: use cpu, cuda or mps.")


def check_compile_backend(backend: bool | str) -> None:
    """Refuse a ``torch.compile`` backend name torch does not know (before any training)."""
    if isinstance(backend, bool):
        return
    import torch._dynamo

    known = torch._dynamo.list_backends(exclude_tags=())
    if backend not in known:
        from ..errors import unknown_name

        raise unknown_name("compile backend", backend, known, hint="compile=True picks inductor.")


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

    def describe(self) -> dict[str, object]:
        """What a result records of how it was computed."""
        return {
            "device": str(self.device),
            "amp": str(self.amp_dtype).removeprefix("torch.") if self.amp else False,
            "channels_last": self.channels_last,
            "compile": self.compile_backend or False,
            "threads": torch.get_num_threads(),
        }

    @property
    def grad_scaler(self) -> bool:
        """float16 autocast needs loss scaling; bfloat16 has float32's range and does not."""
        return self.amp and self.amp_dtype == torch.float16


def resolve_runtime(cfg: TrainConfig, device: torch.device) -> Runtime:
    """Resolve the speed options of ``cfg`` for ``device``.

    On CUDA, autocast, channels-last, loader threads and pinned memory are on by default.
    On CPU everything is off by default. ``amp=True`` there runs bfloat16 autocast where the
    CPU has bfloat16 units (AVX512-BF16 or AMX; float32 where it has none, and float16
    autocast is for GPUs only); with ``channels_last=True`` it made a KD step 2.4x faster
    on this project's 2-core machine, but the book-scale KD run lost 1.3 points on average
    over 3 seeds (``kdtutor bench --levers``), so it stays a choice, not the default.
    """
    cuda = device.type == "cuda"
    amp_dtype = torch.bfloat16 if cfg.amp_dtype == "bfloat16" else torch.float16
    if cuda:
        amp = cfg.amp is None or cfg.amp
        if amp and amp_dtype == torch.bfloat16 and not _bf16_supported(device):
            amp_dtype = torch.float16  # pre-Ampere GPUs: float16 with a gradient scaler
    else:
        amp = bool(cfg.amp) and amp_dtype == torch.bfloat16 and cpu_bf16_supported()
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


def cpu_bf16_supported() -> bool:
    """Whether this CPU computes bfloat16 matrix products natively (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _bf16_supported(device: torch.device) -> bool:
    try:
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    except Exception:
        return False
