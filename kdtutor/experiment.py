"""Experiments as files: what ``kdtutor distill`` runs, written as YAML, shared, resumed.

An :class:`Experiment` names the data, the models, the method and its hyperparameters, the
seeds and every :class:`~kdtutor.train.TrainConfig` field. It is read from a plain YAML file
and validated by the same typed dataclasses the API uses (an unknown key names the closest
valid one), changed by ``key=value`` overrides, and written back, resolved, beside the
results, so that ``kdtutor distill --config runs/kd/config.yaml`` reruns it::

    dataset: shapes
    teacher: zoo:shapes_cnn_large
    student: cnn_small
    method: kd
    hparams: {T: 4}
    seeds: [0, 1, 2]
    train: {epochs: 15, lr: 0.05, schedule: cosine}

``task`` (default ``classification``) names the :mod:`kdtutor.tasks` task the targets are
for; chapter 8's datasets (``scenes``, ``faces``, ``sr``, ``clips``, ``roads``) serve the
tasks of :data:`~kdtutor.data.task_splits.DATASET_TASKS`::

    dataset: scenes
    task: detection
    teacher: zoo:scenes_fcos
    student: fcos_s
    method: fgd

Overrides are dotted keys (``train.lr=0.1``, ``hparams.T=8``); a bare
:class:`~kdtutor.train.TrainConfig` field (``epochs=3``) means ``train.<field>``.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import ConfigError, from_dict
from .errors import KDTutorError, closest, unknown_name

__all__ = [
    "Experiment",
    "apply_overrides",
    "load_experiment",
    "parse_override",
    "write_experiment",
]


@dataclass(frozen=True)
class Experiment:
    """One distillation experiment: data, models, method, seeds and training settings.

    ``teacher`` and ``student`` are model specs (:func:`kdtutor.specs.parse_model_spec`:
    ``cnn_small``, ``cnn_small:weights.pt``, ``zoo:shapes_cnn_large``, ``timm:resnet18``);
    ``train`` holds :class:`~kdtutor.train.TrainConfig` fields. ``task`` is the task the
    dataset's targets are for (a name of :func:`kdtutor.tasks.list_tasks`); the method must
    be one of that task's (``kdtutor methods --task TASK``).
    """

    dataset: str
    student: str
    teacher: str | None = None
    method: str = "kd"
    task: str = "classification"
    """The task of the targets (``detection``, ``segmentation``, ...); chapter 8's datasets
    are loaded by :func:`kdtutor.data.task_splits.task_split` for it."""
    hparams: dict[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] | str | int = (0,)
    """Seeds to run: a list, "0,1,2" or "0-4"; stored as a tuple."""
    scale: str | None = None
    train_size: int | None = None
    test_size: int | None = None
    data: str | None = None
    """Folder of real datasets (default ``$KDTUTOR_DATA``)."""
    train: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from .tasks import list_tasks
        from .train import TrainConfig, parse_seeds

        if self.task not in list_tasks():
            raise unknown_name("task", str(self.task), list_tasks(), hint="Give one with --task.")
        object.__setattr__(self, "seeds", tuple(parse_seeds(self.seeds)))
        if self.teacher in ("none", ""):
            object.__setattr__(self, "teacher", None)
        from_dict(TrainConfig, self.train, what="train").validate()

    def train_config(self) -> Any:
        """The validated :class:`~kdtutor.train.TrainConfig`."""
        from .train import TrainConfig

        return from_dict(TrainConfig, self.train, what="train")

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists, not tuples), ready for YAML or JSON."""
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def load_experiment(
    path: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    base: Mapping[str, Any] | None = None,
) -> Experiment:
    """Read an experiment from YAML (keys of :class:`Experiment`), then apply ``base`` (e.g.
    the command line's options) and ``overrides`` (``key=value``), in that order."""
    values: dict[str, Any] = {}
    if path is not None:
        values = _read_yaml(Path(path))
    values = _merge(values, dict(base or {}))
    values = apply_overrides(values, overrides)
    known = {f.name for f in dataclasses.fields(Experiment)}
    for key in values:
        if key not in known:
            near = closest(key, known)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise ConfigError(
                f"unknown key {key!r} for experiment.{hint} Valid keys: {', '.join(sorted(known))}."
            )
    if "dataset" not in values or "student" not in values:
        missing = [k for k in ("dataset", "student") if k not in values]
        raise ConfigError(
            f"the experiment names no {' and no '.join(missing)}: give --dataset and --student, "
            "or put them in the --config file."
        )
    return from_dict(Experiment, values, what="experiment")


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise KDTutorError(f"the experiment file {path} does not exist.")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(
            f"{path} must hold a mapping of experiment keys (dataset:, student:, train: ...), "
            f"got a {type(values).__name__}."
        )
    return values


def _merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """``a`` updated by ``b``, nested mappings merged key by key; neither input is changed."""
    out = copy.deepcopy(dict(a))
    for key, value in b.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=0.1"`` -> (["train", "lr"], 0.1); values are Python/YAML literals, else text."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(
            f"an override must look like KEY=VALUE (e.g. train.lr=0.1), got {text!r}."
        )
    raw = raw.strip()
    try:
        value: Any = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = yaml.safe_load(raw) if raw else ""
    return key.strip().split("."), value


def apply_overrides(values: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides to experiment values (a copy is returned)."""
    from .train import TrainConfig

    out = _merge({}, values)
    top = {f.name for f in dataclasses.fields(Experiment)}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for text in overrides:
        keys, value = parse_override(text)
        if len(keys) == 1 and keys[0] not in top and keys[0] in train_fields:
            keys = ["train", keys[0]]
        if keys[0] not in top:
            near = closest(keys[0], top | train_fields)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"unknown override key {keys[0]!r}.{hint}")
        if len(keys) > 2 or (len(keys) == 2 and keys[0] not in ("train", "hparams")):
            raise ConfigError(
                f"override {text!r}: only train.<field> and hparams.<name> take a dotted key."
            )
        if len(keys) == 2:
            out.setdefault(keys[0], {})[keys[1]] = value
        else:
            out[keys[0]] = value
    return out


def write_experiment(experiment: Experiment, path: str | os.PathLike[str]) -> Path:
    """Write the resolved experiment as YAML (atomically), loadable by :func:`load_experiment`."""
    from .io import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(experiment.to_dict(), sort_keys=False))
    return Path(path)
