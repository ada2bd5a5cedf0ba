"""Data-parallel training across processes with PyTorch's own DistributedDataParallel.

Launch any kdtutor training with ``torchrun``::

    torchrun --nproc_per_node 4 -m kdtutor distill --dataset cifar100 ...

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address; the
first :func:`~kdtutor.train.fit` in each process then joins the process group (NCCL on GPUs,
gloo on CPUs), and

* every process sees the same shuffled order and takes the slice ``rank::world_size`` of each
  *global* batch of ``batch_size`` samples (so the results match one process with the same
  batch size, up to floating-point summation order);
* gradients are averaged by DDP, with each process's loss weighted by its share of the
  global batch, so a short last batch is averaged exactly as one process would;
* the epoch's losses and accuracy are summed over processes, only rank 0 evaluates, logs,
  shows progress bars and writes checkpoints and results.

Without ``torchrun`` (``WORLD_SIZE`` unset or 1) nothing here does anything.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import KDTutorError

__all__ = ["DistContext", "all_reduce_sum", "barrier", "broadcast_float", "setup"]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a (possibly one-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True in a run of several processes."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the process that logs, evaluates and writes files (rank 0)."""
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int] | None:
        """``(rank, world_size)`` for :class:`~kdtutor.data.BatchLoader`, or None alone."""
        return (self.rank, self.world_size) if self.enabled else None


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise KDTutorError(
            f"environment variable {name}={value!r} is not an integer; it is set by torchrun. "
            "Launch with `torchrun --nproc_per_node N -m kdtutor distill ...`."
        ) from None


def setup(device_type: str | None = None) -> DistContext:
    """Join the process group that ``torchrun`` describes in the environment (once per process).

    Args:
        device_type: ``"cuda"`` picks NCCL, anything else gloo. Default: CUDA when present.

    Returns:
        The process's :class:`DistContext` (rank 0 of 1 without ``torchrun``).
    """
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext()
    if not dist.is_available():
        raise KDTutorError(
            "WORLD_SIZE > 1 asks for distributed training, but this PyTorch build has no "
            "torch.distributed. Run one process, or install a PyTorch with distributed support."
        )
    if device_type is None:
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    backend = "nccl" if device_type == "cuda" else "gloo"
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, rank=rank, world_size=world)
    atexit.register(_shutdown)
    return DistContext(rank, world, local_rank)


def _shutdown() -> None:
    with contextlib.suppress(Exception):
        if dist.is_initialized():
            dist.destroy_process_group()


def all_reduce_sum(values: list[float], ctx: DistContext) -> list[float]:
    """The element-wise sum of ``values`` over every process (``values`` itself alone)."""
    if not ctx.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.cpu().tolist()


def broadcast_float(value: float | None, ctx: DistContext, src: int = 0) -> float:
    """Rank ``src``'s ``value`` on every process."""
    if not ctx.enabled:
        assert value is not None
        return value
    t = torch.tensor([value if value is not None else 0.0], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.broadcast(t, src)
    return float(t.item())


def barrier(ctx: DistContext) -> None:
    """Wait until every process gets here (no-op alone)."""
    if ctx.enabled:
        dist.barrier()
