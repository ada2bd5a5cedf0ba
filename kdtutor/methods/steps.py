"""Optimizer groups and the step a distiller asks the trainer to take: the part of the
contract between a method and the one trainer that is not ``forward``.

A distiller declares its trainable networks as named :class:`OptimizerGroup` s (one,
``"student"``, by default; a discriminator or a generator adds its own, with its own
optimizer, learning rate and schedule) and, in ``train_step``, asks :class:`Steps` to step a
group on a dict of named losses. ``Steps`` owns what every step needs and no method should
repeat: the non-finite check, the sum, the share of a distributed batch, ``zero_grad``,
backward (through a gradient scaler under float16), clipping and the optimizer step.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..errors import KDTutorError, NonFiniteLossError


@dataclass
class OptimizerGroup:
    """The parameters one optimizer steps, and how (``None``: the :class:`TrainConfig`'s).

    Attributes:
        params: the parameters (e.g. ``discriminator.parameters()``).
        optimizer: ``"sgd"``, ``"adam"`` or ``"adamw"``.
        lr: base learning rate.
        weight_decay: weight decay.
        betas: Adam's betas (DAFL and GAN discriminators often use ``(0.5, 0.999)``).
        schedule: ``"cosine"``, ``"step"`` or ``"constant"``.
    """

    params: Iterable[nn.Parameter]
    optimizer: Literal["sgd", "adam", "adamw"] | None = None
    lr: float | None = None
    weight_decay: float | None = None
    betas: tuple[float, float] | None = None
    schedule: Literal["cosine", "step", "constant"] | None = None


def check_finite(
    losses: dict[str, Tensor], epoch: int, step: int, lr: float, checkpoint: Path | None
) -> None:
    """Stop with :class:`NonFiniteLossError` naming the loss, the step and a fix."""
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


class Steps:
    """What ``Distiller.train_step`` calls to run its networks and step its optimizers.

    Args:
        module: what runs the distiller's ``forward`` (the distiller, or its
            ``DistributedDataParallel`` wrapper, which synchronises gradients).
        optimizers: one optimizer per group name.
        scaler: a float16 gradient scaler, or None.
        max_grad_norm: clip each group's gradient norm to this, or None.
        batch_share: the factor that weighs a process's slice of a distributed batch.
    """

    def __init__(
        self,
        module: nn.Module,
        optimizers: dict[str, torch.optim.Optimizer],
        *,
        scaler: torch.amp.GradScaler | None = None,
        max_grad_norm: float | None = None,
        checkpoint: Path | None = None,
    ) -> None:
        self.module = module
        self.optimizers = optimizers
        self.scaler = scaler
        self.max_grad_norm = max_grad_norm
        self.checkpoint = checkpoint
        self.epoch = 0
        self.count = 0
        self.batch_share = 1.0
        self._stepped = False
        self._checked: set[str] = set()

    def forward(self, batch: Any) -> tuple[Any, dict[str, Tensor]]:
        """The distiller's ``forward(x, y, rows)`` on a batch, through DDP when distributed."""
        return self.module(batch.x, batch.y, batch.rows)

    def step(self, group: str, losses: dict[str, Tensor]) -> Tensor:
        """Check, sum, back-propagate ``losses`` and step the optimizer of ``group``.

        Returns:
            The (detached) total that was back-propagated.
        """
        try:
            optimizer = self.optimizers[group]
        except KeyError:
            raise KDTutorError(
                f"train_step stepped optimizer group {group!r}, but the distiller declares "
                f"{sorted(self.optimizers)} in optimizer_groups()."
            ) from None
        if not losses:
            raise KDTutorError(f"step({group!r}) was given no losses.")
        check_finite(
            losses, self.epoch, self.count, optimizer.param_groups[0]["lr"], self.checkpoint
        )
        total = torch.stack([v.float() for v in losses.values()]).sum() * self.batch_share
        optimizer.zero_grad(set_to_none=True)
        params = [p for g in optimizer.param_groups for p in g["params"]]
        if self.scaler is None:
            total.backward()
            self._check_something_trains(group, losses, params)
            if self.max_grad_norm is not None:
                nn.utils.clip_grad_norm_(params, self.max_grad_norm)
            optimizer.step()
        else:
            self.scaler.scale(total).backward()
            self._check_something_trains(group, losses, params)
            if self.max_grad_norm is not None:
                self.scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(params, self.max_grad_norm)
            self.scaler.step(optimizer)
            self._stepped = True
        return total.detach()

    def _check_something_trains(
        self, group: str, losses: dict[str, Tensor], params: list[Tensor]
    ) -> None:
        """On a group's first step: refuse a loss that gives every parameter a zero gradient
        (every term weighted 0, or detached), which would train nothing and exit as if fine."""
        if group in self._checked:
            return
        self._checked.add(group)
        if any(p.grad is not None and bool(p.grad.ne(0).any()) for p in params):
            return
        terms = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
        raise KDTutorError(
            f"the first step of optimizer group {group!r} gave every parameter a zero gradient "
            f"(losses: {terms}): nothing would train. Give a loss term a positive weight (are "
            "ce_weight, kd_weight and the method's own weights all 0?)."
        )

    def end_batch(self) -> None:
        """Called by the trainer after ``train_step``: one scaler update per iteration."""
        if self.scaler is not None and self._stepped:
            self.scaler.update()
        self._stepped = False
        self.count += 1
