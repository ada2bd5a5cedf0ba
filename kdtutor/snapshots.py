"""Early-stopped teachers: a zoo teacher's recipe run taken at an earlier epoch.

Cho & Hariharan (2019) find that a teacher whose training is stopped early can teach a small
student better than the same teacher trained to the end. Here ``NAME@E`` names the network of
zoo teacher ``NAME``'s recipe (same model, data, seed and ``epochs``-long schedule) after ``E``
of its epochs: its learning rate is where the full schedule has it then, not annealed. In a
spec it is ``zoo:NAME@E`` (``kdtutor distill --teacher zoo:shapes_cnn_large@10``).

Snapshots are not shipped: :func:`train_snapshots` (``kdtutor zoo train NAME --snapshots
5,10,20``) trains the recipe once up to its last requested epoch and keeps each snapshot
(float32, atomically written) with its record in ``<cache>/snapshots/`` (``$KDTUTOR_CACHE``,
see :func:`kdtutor.data.diskcache.cache_dir`). The zoo's own weights are never touched.

A snapshot is kept per training-set size: the recipe's own data by default, or the first
images of it that a reduced run passes (the smoke preset's 256), so that a test's tiny
snapshot is never taken for the real one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import KDTutorError
from .io import atomic_save, atomic_write_json, safe_load
from .zoo import MissingWeightsError, _build, _provided, get_recipe, split_snapshot, trained_on

__all__ = [
    "load_snapshot",
    "snapshot_dir",
    "snapshot_record",
    "split_snapshot",
    "train_snapshots",
]

FORMAT = "kdtutor-snapshot/1"


def snapshot_dir() -> Path:
    """``<cache>/snapshots``: where snapshots and their records live."""
    from .data.diskcache import cache_dir

    return cache_dir() / "snapshots"


def _recipe_train_size(base: str) -> int:
    from .data import dataset_info

    return int(dataset_info(get_recipe(base).dataset).sizes[0])


def _paths(base: str, epoch: int, train_size: int) -> tuple[Path, Path]:
    folder = snapshot_dir()
    stem = f"{base}@{epoch}" + ("" if train_size == _recipe_train_size(base) else f"_n{train_size}")
    return folder / f"{stem}.pt", folder / f"{stem}.json"


def snapshot_record(name: str, train_size: int | None = None) -> dict[str, Any]:
    """The record of snapshot ``NAME@E``: ``test_acc`` (the recipe's test score after epoch
    ``E``), ``epoch``, ``schedule_epochs``, ``train_size``, ``train_seconds`` (the first ``E``
    epochs) and ``train_config``.

    Args:
        name: ``NAME@E``.
        train_size: the training images it was trained on (default: the recipe's).

    Raises:
        kdtutor.zoo.MissingWeightsError: the snapshot was never trained (the message gives the
            command).
    """
    import json

    base, epoch = _checked(name)
    own = _recipe_train_size(base)
    size = own if train_size is None else train_size
    weights, record = _paths(base, epoch, size)
    if not (weights.exists() and record.exists()):
        how = (
            f"`kdtutor zoo train {base} --snapshots {epoch}` (the recipe up to epoch {epoch}; "
            "the zoo's own weights are not touched)"
            if size == own
            else f"train_snapshots({base!r}, [{epoch}], data=(train, test)) on those {size} images"
        )
        raise MissingWeightsError(
            f"the early-stopped teacher {base}@{epoch} (trained on {size:,} images) is not in "
            f"{snapshot_dir()}: train it with {how}."
        )
    return json.loads(record.read_text())


def _checked(name: str) -> tuple[str, int]:
    base, epoch = split_snapshot(name)
    if epoch is None:
        raise KDTutorError(f"{name!r} names no snapshot: write NAME@EPOCHS, e.g. {base}@10.")
    get_recipe(name)  # refuses an epoch outside the recipe's schedule
    return base, epoch


def load_snapshot(
    name: str, device: str | torch.device = "cpu", *, train_size: int | None = None
) -> nn.Module:
    """Build snapshot ``NAME@E`` (float32, eval mode), with ``trained_on`` from its recipe;
    ``train_size`` as :func:`snapshot_record`'s.

    Raises:
        kdtutor.zoo.MissingWeightsError: it was never trained (the message gives the command).
        kdtutor.errors.CheckpointError: its file is corrupt.
    """
    record = snapshot_record(name, train_size)  # refuses a missing one with the command
    base, epoch = _checked(name)
    weights, _ = _paths(base, epoch, int(record["train_size"]))
    blob = safe_load(weights, what=f"early-stopped teacher {base}@{epoch}")
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise KDTutorError(
            f"{weights} is not a kdtutor snapshot: delete it and train it again with "
            f"`kdtutor zoo train {base} --snapshots {epoch}`."
        )
    model = _build(get_recipe(base))
    model.load_state_dict(blob["state_dict"])
    model = model.to(device).eval()
    model.trained_on = trained_on(base)  # type: ignore[assignment]
    return model


def train_snapshots(
    name: str,
    epochs: Sequence[int],
    *,
    data: tuple[Any, Any] | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[int, dict[str, Any]]:
    """Train zoo teacher ``name``'s recipe (its model, seed, settings and full schedule) up
    to the last of ``epochs`` and keep the network after each of ``epochs``; snapshots
    already kept are not trained again. Returns each epoch's record (:func:`snapshot_record`).

    Args:
        name: a zoo teacher (``kdtutor zoo list``).
        epochs: the epochs to keep the network after, each below the recipe's epochs.
        data: ``(train, test)`` to train and score on instead of the recipe's own data
            (a reduced run's images); the snapshots are kept apart by training-set size.
        log: where the epoch lines go.

    Raises:
        KDTutorError: an epoch outside 1 .. the recipe's epochs - 1, or no epoch at all.
    """
    from .data import load_dataset
    from .seeding import seed_everything
    from .train import fit

    base = name.removeprefix("zoo:")
    wanted = sorted({int(e) for e in epochs})
    if not wanted:
        raise KDTutorError("give at least one epoch to keep a snapshot at, e.g. --snapshots 10.")
    for epoch in wanted:
        get_recipe(f"{base}@{epoch}")  # refuses an epoch outside the recipe's schedule
    recipe = get_recipe(base)
    if data is None:
        datasets = _provided(recipe, "datasets")
        if datasets is not None:
            data = datasets(recipe)
        else:
            data = load_dataset(recipe.dataset, "train"), load_dataset(recipe.dataset, "test")
    train, test = data
    size = len(train)
    missing = [e for e in wanted if not all(p.exists() for p in _paths(base, e, size))]
    if missing:
        config = {**recipe.train, "seed": recipe.seed, "stop_after": missing[-1]}
        if recipe.task != "classification":
            config["task"] = recipe.task
        snapshot_dir().mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()

        def keep(end: Any) -> None:
            epoch = len(end.history)
            if epoch not in missing:
                return
            weights, record = _paths(base, epoch, size)
            state = {k: v.detach().float().cpu() for k, v in end.student.state_dict().items()}
            atomic_save({"format": FORMAT, "name": f"{base}@{epoch}", "state_dict": state}, weights)
            last = end.history[-1]
            atomic_write_json(
                record,
                {
                    "name": f"{base}@{epoch}",
                    "epoch": epoch,
                    "schedule_epochs": int(recipe.train["epochs"]),
                    "train_size": size,
                    "test_acc": round(float(last[end.score_key]), 2) if end.score_key else None,
                    "train_seconds": round(time.perf_counter() - started, 2),
                    "train_config": {k: v for k, v in config.items() if k != "stop_after"},
                },
            )

        seed_everything(recipe.seed)
        fit(_build(recipe), train, test, config=config, log=log, on_epoch=keep)
    return {e: snapshot_record(f"{base}@{e}", size) for e in wanted}
