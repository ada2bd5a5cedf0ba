"""Training checkpoints: written atomically after every epoch, resumed bit-identically on CPU.

A checkpoint holds the distiller's trainable state (never the frozen teacher), each
optimizer group's optimizer and scheduler state, the RNG states, the gradient scaler and the
history so far. Format 1 (one optimizer) is still read, as the ``"student"`` group.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import CheckpointError
from ..io import atomic_save, safe_load
from ..seeding import rng_state, set_rng_state
from .config import TrainConfig

CHECKPOINT_FORMAT = "kdtutor-checkpoint/2"
_READABLE = ("kdtutor-checkpoint/1", CHECKPOINT_FORMAT)


def signature(state: dict[str, Tensor]) -> dict[str, list[int]]:
    """Parameter names and shapes: what must match for a checkpoint to fit a model."""
    return {k: list(v.shape) for k, v in state.items()}


def save_checkpoint(
    path: Path,
    distiller: Any,
    optimizers: dict[str, torch.optim.Optimizer],
    schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler],
    epoch: int,
    history: list[dict[str, Any]],
    cfg: TrainConfig,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """Write the state after (0-based) ``epoch`` to ``path`` atomically."""
    state = distiller.trainable_state_dict()
    atomic_save(
        {
            "format": CHECKPOINT_FORMAT,
            "method": distiller.name,
            "epoch": epoch,
            "model": state,
            "signature": signature(state),
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in schedulers.items()},
            "rng": rng_state(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "history": history,
            "config": {
                k: v for k, v in dataclasses.asdict(cfg).items() if not isinstance(v, tuple)
            },
        },
        path,
    )


def load_checkpoint(
    path: Path,
    distiller: Any,
    optimizers: dict[str, torch.optim.Optimizer],
    schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler],
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """Restore a run from ``path``; returns the epoch to start from and the history so far."""
    ckpt = safe_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") not in _READABLE:
        raise CheckpointError(
            f"{path} is not a kdtutor training checkpoint (expected format {CHECKPOINT_FORMAT})."
        )
    if ckpt["method"] != distiller.name:
        raise CheckpointError(
            f"{path} was saved by method {ckpt['method']!r}, but this run uses {distiller.name!r}. "
            "Resume with the same method, or start a new run without resume=."
        )
    expected = signature(distiller.trainable_state_dict())
    if ckpt["signature"] != expected:
        saved = ckpt["signature"]
        differing = [
            k for k in sorted(set(expected) | set(saved)) if expected.get(k) != saved.get(k)
        ][:3]
        raise CheckpointError(
            f"{path} was saved for another model: parameters {differing} differ in name or shape. "
            "Resume with the same student architecture (and connectors), or start a new run."
        )
    if "optimizers" in ckpt:
        opt_states, sched_states = ckpt["optimizers"], ckpt["schedulers"]
    else:  # format 1: a single optimizer
        opt_states, sched_states = {"student": ckpt["optimizer"]}, {"student": ckpt["scheduler"]}
    if set(opt_states) != set(optimizers):
        raise CheckpointError(
            f"{path} holds optimizer groups {sorted(opt_states)}, but this distiller declares "
            f"{sorted(optimizers)}: it was saved by another version of the method."
        )
    distiller.load_trainable_state_dict(ckpt["model"])
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(opt_states[name])
        schedulers[name].load_state_dict(sched_states[name])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    return int(ckpt["epoch"]) + 1, list(ckpt["history"])
