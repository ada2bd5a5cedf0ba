"""Size, compute and speed of a model: parameters, megabytes, FLOPs, CPU latency.

The three costs the introduction chapter compares (and that distillation trades against
accuracy):

* **parameters** and **size**: the bytes of the parameters and buffers as stored;
* **FLOPs**: floating-point operations of one forward pass, counted by PyTorch's
  :class:`torch.utils.flop_counter.FlopCounterMode`, which counts a multiply-add as 2 FLOPs
  for matrix multiplications and convolutions (so ``nn.Linear(10, 5)`` costs 100 FLOPs per
  sample) and ignores element-wise operations (ReLU, batch norm in eval, additions, pooling);
* **latency**: the median wall time of an eval forward pass under ``torch.inference_mode``
  after a warm-up, on the model's device.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..features import evaluating

__all__ = ["ModelSummary", "count_parameters", "format_summary_table", "model_summary"]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (each shared parameter counted once).

    Args:
        model: Any module.
        trainable_only: Count only parameters with ``requires_grad=True``.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@dataclass(frozen=True)
class ModelSummary:
    """The costs of one model for one input shape.

    Attributes:
        name: A label for tables (the class name unless given).
        params: All parameters.
        trainable_params: Parameters with ``requires_grad=True``.
        size_mb: Bytes of parameters and buffers as stored (float32 for kdtutor's models),
            divided by 2**20.
        flops: Forward FLOPs for the whole batch of ``input_shape``.
        flops_per_sample: ``flops`` divided by the batch size.
        latency_ms: Median wall time of one forward pass of the batch, in milliseconds
            (``None`` when not measured).
        input_shape: The input shape used, batch first.
        device: The device the model ran on.
    """

    name: str
    params: int
    trainable_params: int
    size_mb: float
    flops: int
    flops_per_sample: float
    latency_ms: float | None
    input_shape: tuple[int, ...]
    device: str

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (e.g. for ``pandas.DataFrame``)."""
        return asdict(self)


def _size_mb(model: nn.Module) -> float:
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def model_summary(
    model: nn.Module,
    input_shape: Sequence[int] = (1, 3, 32, 32),
    latency_runs: int = 20,
    warmup_runs: int = 3,
    name: str | None = None,
) -> ModelSummary:
    """Measure parameters, size, FLOPs and latency of ``model`` on zeros of ``input_shape``.

    The model is switched to ``eval()`` for the measurement and its previous training mode is
    restored afterwards. FLOPs follow the counting of ``FlopCounterMode`` (see the module
    docstring).

    Args:
        model: The model; inputs are created on the device of its first parameter.
        input_shape: Shape of the input batch, batch first, e.g. ``(1, 3, 32, 32)``.
        latency_runs: Number of timed forward passes (``0`` skips the latency).
        warmup_runs: Untimed forward passes before timing.
        name: Label of the row in :func:`format_summary_table`.

    Returns:
        A :class:`ModelSummary`.
    """
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) < 2 or min(input_shape) < 1:
        raise ValueError(
            f"input_shape must be a positive batch-first shape such as (1, 3, 32, 32), got {input_shape}."
        )
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    x = torch.zeros(input_shape, device=device)
    with evaluating(model), torch.inference_mode():
        counter = FlopCounterMode(display=False)
        with counter:
            model(x)
        flops = int(counter.get_total_flops())
        latency = None
        if latency_runs > 0:
            for _ in range(warmup_runs):
                model(x)
            times = []
            for _ in range(latency_runs):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                model(x)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times.append(time.perf_counter() - start)
            latency = statistics.median(times) * 1e3
    return ModelSummary(
        name=name or type(model).__name__,
        params=count_parameters(model),
        trainable_params=count_parameters(model, trainable_only=True),
        size_mb=_size_mb(model),
        flops=flops,
        flops_per_sample=flops / input_shape[0],
        latency_ms=latency,
        input_shape=input_shape,
        device=str(device),
    )


def _human(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


def format_summary_table(rows: Iterable[ModelSummary]) -> str:
    """A plain-text table of summaries, one row per model, columns aligned.

    Columns: model, parameters, trainable parameters, size (MB), FLOPs per sample, latency
    (ms, ``-`` when not measured).

    Args:
        rows: Summaries from :func:`model_summary`.

    Returns:
        The table, lines separated by newlines (no trailing newline).
    """
    header = ("model", "params", "trainable", "size MB", "FLOPs/sample", "latency ms")
    lines = [
        (
            row.name,
            f"{row.params:,}",
            f"{row.trainable_params:,}",
            f"{row.size_mb:.2f}",
            _human(row.flops_per_sample),
            "-" if row.latency_ms is None else f"{row.latency_ms:.2f}",
        )
        for row in rows
    ]
    widths = [max(len(r[i]) for r in (header, *lines)) for i in range(len(header))]

    def render(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join((first, *rest)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([render(header), rule, *(render(r) for r in lines)])


def first_in_channels(model: nn.Module) -> int | None:
    """Input channels of a model's first convolution (None when it starts with a linear layer
    or has no convolution)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
        if isinstance(module, nn.Linear):
            return None
    return None
