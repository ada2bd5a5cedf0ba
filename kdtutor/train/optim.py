"""The optimizers and learning-rate schedules of a run, one per optimizer group a distiller
declares (:class:`~kdtutor.methods.steps.OptimizerGroup`), from the :class:`TrainConfig`."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..errors import KDTutorError
from ..methods import OptimizerGroup
from .config import TrainConfig, lr_factor


def make_optimizer(
    params: Iterable[nn.Parameter], cfg: TrainConfig, group: OptimizerGroup | None = None
) -> torch.optim.Optimizer:
    """The optimizer of one group: the config's settings, overridden by the group's."""
    params = list(params)
    if not params:
        raise KDTutorError("nothing to train: the distiller has no trainable parameters.")
    group = group or OptimizerGroup(params)
    kind = group.optimizer or cfg.optimizer
    lr = group.lr if group.lr is not None else cfg.lr
    wd = group.weight_decay if group.weight_decay is not None else cfg.weight_decay
    if kind == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=cfg.momentum, weight_decay=wd, nesterov=cfg.nesterov
        )
    betas = group.betas or (0.9, 0.999)
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, betas=betas)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, betas=betas)
    raise KDTutorError(f"optimizer must be 'sgd', 'adam' or 'adamw', got {kind!r}.")


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, schedule: str | None = None
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-epoch learning-rate schedule (see :func:`~kdtutor.train.config.lr_factor`)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: lr_factor(epoch, cfg, schedule)
    )


def build_optimizers(
    groups: dict[str, OptimizerGroup], cfg: TrainConfig
) -> tuple[dict[str, torch.optim.Optimizer], dict[str, torch.optim.lr_scheduler.LambdaLR]]:
    """One optimizer and one scheduler per named group."""
    if not groups:
        raise KDTutorError("the distiller declares no optimizer groups: nothing to train.")
    seen: set[int] = set()
    optimizers, schedulers = {}, {}
    for name, group in groups.items():
        params = list(group.params)
        shared = [p for p in params if id(p) in seen]
        if shared:
            raise KDTutorError(
                f"optimizer group {name!r} repeats {len(shared)} parameters of an earlier group: "
                "each parameter must belong to one group."
            )
        seen.update(id(p) for p in params)
        try:
            optimizers[name] = make_optimizer(params, cfg, group)
        except KDTutorError as exc:
            raise KDTutorError(f"optimizer group {name!r}: {exc}") from None
        schedulers[name] = make_scheduler(optimizers[name], cfg, group.schedule)
    return optimizers, schedulers
