"""Scoring networks on a test split: every network a distiller exposes, by the task's metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..data import ArrayDataset, BatchLoader
from ..errors import KDTutorError
from ..features import evaluating
from ..tasks import Task, get_task, move_to
from .config import resolve_device


def _default_device(model: nn.Module) -> torch.device:
    return next(iter(model.parameters()), torch.empty(0)).device


def _networks(model: nn.Module) -> dict[str, Callable[[Any], Any]]:
    """What a model exposes for evaluation: a distiller's ``eval_networks()``, or itself."""
    networks = getattr(model, "eval_networks", None)
    return networks() if callable(networks) else {"model": model}


def test_batches(data: Any, batch_size: int, task: Task) -> Any:
    """Batches of a test split in order: an ArrayDataset, a map-style Dataset or a DataLoader."""
    from ..data.torch_loaders import DataLoaderAdapter, DatasetLoader

    if isinstance(data, ArrayDataset):
        return BatchLoader(data, batch_size)
    if isinstance(data, torch.utils.data.DataLoader):
        return DataLoaderAdapter(data)
    return DatasetLoader(data, batch_size, task.collate)


@torch.no_grad()
def evaluate_networks(
    model: nn.Module,
    data: Any,
    *,
    task: str | Task = "classification",
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> dict[str, dict[str, float]]:
    """Score every network ``model`` exposes on ``data``: ``{network: {metric: value}}``.

    A :class:`~kdtutor.methods.Distiller` exposes ``eval_networks()`` (the student; each
    peer and the ensemble of an online method); any other module is scored as ``"model"``.
    The model runs in ``eval()`` mode without gradients; its previous mode is restored.
    """
    task = get_task(task)
    device = torch.device(device) if device is not None else _default_device(model)
    networks = _networks(model)
    metrics = {name: task.metrics() for name in networks}
    seen = 0
    with evaluating(model):
        for batch in test_batches(data, batch_size, task):
            x = move_to(batch.x, device)
            for name, network in networks.items():
                task.update(metrics[name], network(x), batch.y)
            seen += 1
    if not seen:
        raise KDTutorError(
            "cannot evaluate on an empty dataset split: check the dataset name, split and size."
        )
    return {name: task.compute(m) for name, m in metrics.items()}


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
        device = _default_device(model)
    predict = getattr(model, "predict", model)
    logits, labels = [], []
    with evaluating(model):
        for batch in BatchLoader(dataset, batch_size):
            logits.append(predict(batch.x.to(device)).float().cpu())
            labels.append(batch.y)
    if not logits:
        raise KDTutorError(
            "cannot predict on an empty dataset split: check the dataset name, split and size."
        )
    return torch.cat(logits), torch.cat(labels)


def evaluate(
    model: nn.Module,
    dataset: Any,
    *,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    metric: str | None = None,
    task: str | Task = "classification",
) -> float:
    """The primary score of ``model`` (a distiller's first evaluated network, usually the
    student, or any model) on ``dataset``: accuracy in percent for classification."""
    device = resolve_device(str(device) if device is not None else None)
    task = get_task(task)
    if metric is not None and task.name == "classification":
        from ..tasks import Classification

        task = Classification(metric)
    scores = evaluate_networks(model, dataset, task=task, batch_size=batch_size, device=device)
    return next(iter(scores.values()))[metric or task.primary]
