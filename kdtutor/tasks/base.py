"""The task interface the trainer talks to, and the registry of tasks by name."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.utils.data import default_collate

from ..errors import unknown_name


def move_to(value: Any, device: torch.device | str, non_blocking: bool = False) -> Any:
    """``value`` with every tensor inside (lists, tuples, dicts) moved to ``device``."""
    if isinstance(value, Tensor):
        return value.to(device, non_blocking=non_blocking)
    if isinstance(value, Mapping):
        return {k: move_to(v, device, non_blocking) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(move_to(v, device, non_blocking) for v in value)
    return value


class Task:
    """What the trainer needs to know of a task, and nothing about any method.

    A task names its metrics (``metric_names``, the ``primary`` one first reported as a
    run's score), builds fresh stateful metric objects (torchmetrics' ``update``/``compute``)
    and feeds them one batch of a network's outputs and the targets at a time. Scores are
    reported as the task's convention (percentages for accuracy, mAP and mIoU; dB for PSNR).

    Attributes:
        name: the registry name.
        primary: the metric a run is judged by (best/last epoch).
        short: the history key stem (``test_<short>``: ``test_acc`` for classification).
        higher_is_better: direction of the primary metric.
        unit: what follows the primary score when printed (``"%"``, ``" dB"``, ``""``).
        decimals: digits after the point when the primary score is printed.
        uncacheable: why teacher outputs cannot be cached for this task ("" if they can).
    """

    name: ClassVar[str] = ""
    primary: ClassVar[str] = ""
    short: ClassVar[str] = ""
    higher_is_better: ClassVar[bool] = True
    unit: ClassVar[str] = "%"
    decimals: ClassVar[int] = 2
    metric_names: ClassVar[tuple[str, ...]] = ()
    uncacheable: ClassVar[str] = ""
    """Why a teacher's outputs on this task cannot be cached ("" when they can)."""

    def collate(self, samples: Sequence[tuple[Any, Any]]) -> tuple[Any, Any]:
        """Stack a list of ``(input, target)`` samples into one batch (torch's default)."""
        return default_collate(list(samples))

    def format_score(self, value: float) -> str:
        """The primary score as the epoch line prints it: ``"93.25%"``, ``"24.10 dB"``,
        ``"0.115"``."""
        return f"{value:.{self.decimals}f}{self.unit}"

    def batch_size(self, y: Any) -> int:
        """How many samples a batch of targets ``y`` holds."""
        return len(y)

    def train_score(self, outputs: Any, y: Any) -> tuple[float, int] | None:
        """(sum, count) of the primary metric on a training batch, or None when the task has
        no cheap per-batch score (the history then has no ``train_<short>``)."""
        return None

    def metrics(self) -> dict[str, Any]:
        """Fresh metric objects by name (``update(preds, target)`` / ``compute()``)."""
        raise NotImplementedError

    def update(self, metrics: dict[str, Any], outputs: Any, y: Any) -> None:
        """Feed one batch of a network's eval outputs and its targets to every metric."""
        for metric in metrics.values():
            metric.update(outputs, y)

    def compute(self, metrics: dict[str, Any]) -> dict[str, float]:
        """The scores, in the task's reporting units."""
        return {name: float(m.compute()) for name, m in metrics.items()}


_TASKS: dict[str, Callable[[], Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator adding a task to the registry under ``cls.name``."""
    _TASKS[cls.name] = cls
    return cls


def list_tasks() -> list[str]:
    """Names of every registered task, sorted."""
    return sorted(_TASKS)


def get_task(task: str | Task) -> Task:
    """The task registered as ``task`` (a :class:`Task` is returned as it is)."""
    if isinstance(task, Task):
        return task
    try:
        return _TASKS[task]()
    except KeyError:
        raise unknown_name("task", str(task), _TASKS) from None
