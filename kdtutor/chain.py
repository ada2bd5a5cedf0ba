r"""Chains of distillation: each network of a path is taught by the one before it.

A chain starts from a trained, frozen teacher :math:`f_0` (a zoo teacher or any module) and
trains the networks of a path :math:`f_1, \dots, f_n` in turn, each by the same distillation
method with the previous one as its teacher. With Hinton's KD as the method (``"takd"``,
``"kd"``, ``"ban"``), stage :math:`k` minimises

.. math::
    \mathcal{L}_k = \lambda_{CE}\,\mathrm{CE}(z_k, y)
        + \lambda_{KD}\,T^2\,\frac1B\sum_{i=1}^{B}
          \mathrm{KL}\big(p^T_{k-1}(x_i) \,\|\, p^T_k(x_i)\big),

with :math:`p^T_{k-1}` the softened outputs of the frozen stage :math:`k-1`.

* **Teacher assistants** (TAKD; Mirzadeh, Farajtabar, Li, Levine, Matsukawa, Ghasemzadeh,
  2020, *Improved Knowledge Distillation via Teacher Assistant*): a large teacher, then
  networks of decreasing size, the student last; :func:`chain_paths` lists every path
  through a set of assistants (:math:`2^n` for :math:`n` of them).
* **Born-Again generations** (Furlanello, Lipton, Tschannen, Itti, Anandkumar, 2018,
  *Born-Again Neural Networks*): the same architecture at every stage, the teacher a
  network of that architecture trained alone.

With a ``store`` (a folder; ``True``: ``chains`` under the disk cache,
:func:`~kdtutor.data.diskcache.cache_dir`), each trained stage is saved atomically under a
key that names everything its weights depend on: the first teacher's weights, the training
data, the training settings, and for every stage up to this one its architecture, the
method, its hyperparameters and the seeds. Two paths with a common prefix (``T -> w16 -> S``
and ``T -> w16 -> w8 -> S``) then share the prefix's stages, and a resumed chain loads the
stages it finished instead of training them again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .errors import KDTutorError, NotAModelError, ShapeMismatchError

if TYPE_CHECKING:
    from .methods import Distiller
    from .train import FitResult

__all__ = ["ChainStage", "chain_paths", "fit_chain"]

_KEY_VERSION = "kdtutor-chain/1"

_NOT_WEIGHTS = frozenset({"eval_batch_size", "workers", "pin_memory", "metric", "cache_location"})
"""Training settings that cannot change a stage's weights (left out of its store key)."""

_PER_RUN = ("checkpoint", "resume")
"""``fit`` arguments naming one run's files, which the stages of a chain cannot share."""


@dataclass
class ChainStage:
    """One trained network of a chain.

    Attributes:
        spec: the network's model spec as given in the path (e.g. ``"cnn_wide_s2"``).
        network: the trained network, frozen (``requires_grad`` off) and in eval mode; the
            next stage's teacher.
        result: what ``fit`` returned for it; ``None`` when it was loaded from the store.
        key: its store key (a sha256 hex digest; empty without a store).
        weights: its file in the store (``None`` without a store).
    """

    spec: str
    network: nn.Module
    result: FitResult | None
    key: str = ""
    weights: Path | None = None


def chain_paths(assistants: Sequence[str]) -> list[tuple[str, ...]]:
    """Every order-preserving subset of ``assistants``: the assistants a path from the
    teacher to the student goes through, the direct path ``()`` first, shorter paths before
    longer ones (so each path's prefixes come before it).

    Mirzadeh et al. (2020) compare all :math:`2^n` paths through :math:`n` intermediate
    networks; list the assistants from the largest to the smallest.

    Example:
        >>> chain_paths(["w16", "w8"])
        [(), ('w16',), ('w8',), ('w16', 'w8')]

    Raises:
        KDTutorError: ``assistants`` is a single string, or holds a non-string or a
            repeated name.
    """
    if isinstance(assistants, str) or not isinstance(assistants, Sequence):
        raise KDTutorError(
            f"chain_paths takes a list of model specs, e.g. ['w16', 'w8'], got {assistants!r}."
        )
    items = list(assistants)
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise KDTutorError(f"each assistant must be a model spec string, got {item!r}.")
    repeated = sorted({item for item in items if items.count(item) > 1})
    if repeated:
        raise KDTutorError(
            f"assistants {repeated} are listed twice: list each intermediate network once, "
            "from the largest to the smallest."
        )
    return [c for r in range(len(items) + 1) for c in itertools.combinations(items, r)]


def fit_chain(
    teacher: nn.Module | str,
    path: Sequence[str],
    train_data: Any,
    test_data: Any = None,
    *,
    method: str = "takd",
    hparams: Mapping[str, Any] | None = None,
    seed: int = 0,
    init_seed: Callable[[int], int] | None = None,
    store: str | os.PathLike[str] | bool | None = None,
    on_stage: Callable[[int, Distiller, FitResult | None], None] | None = None,
    **fit_kwargs: Any,
) -> list[ChainStage]:
    r"""Train the networks of ``path`` in turn, each distilled from the one before.

    Stage :math:`i` (0-based) seeds every generator with ``init_seed(i)``, builds
    ``path[i]`` (with the data's classes and channels), wraps it with
    ``build_distiller(method, network, previous, hparams)``, where ``previous`` is
    ``teacher`` for stage 0 and stage :math:`i-1`'s network after, trains it with
    ``fit(distiller, train_data, test_data, seed=seed, **fit_kwargs)``, calls
    ``on_stage(i, distiller, result)`` and freezes the network. Every stage is checked
    before the first one trains: the spec names a model, the method exists and takes a
    teacher, its hyperparameters and the training settings are valid, and each network can
    be distilled from the one before it (e.g. BAN's same-architecture rule).

    A chain of one stage is ``fit`` of ``method`` from ``teacher``: with
    ``init_seed(0) == seed`` its weights are those of the same run built by hand. The
    default ``init_seed`` is ``seed`` for every stage (TAKD: every student starts from the
    same weights as the direct KD run of that seed, and sees the same batches); Born-Again
    generations use ``lambda i: seed + 1000 * (i + 1)``, a new initialisation each.

    Args:
        teacher: the first teacher, trained (it is frozen and put in eval mode), or a model
            spec such as ``"zoo:shapes_cnn_large"``.
        path: the model specs to train, in order, the student last (``[ta, student]``).
        train_data: the training split (as ``fit`` takes it).
        test_data: the split each stage is scored on after every epoch (optional).
        method: the distillation method of every stage (``kdtutor methods``); ``"takd"``
            is Hinton's KD (Mirzadeh et al., 2020).
        hparams: the method's hyperparameters (its defaults otherwise), for every stage.
        seed: each stage's training seed (batch order, augmentation), ``fit``'s ``seed``.
        init_seed: stage index -> the seed its network is initialised from.
        store: a folder of trained stages to load instead of training again (``True``:
            ``cache_dir() / "chains"``); ``None``: train every stage.
        on_stage: called after each stage with its index, its distiller (as ``fit`` left
            it, the student still trainable: :func:`~kdtutor.bench.cost.run_cost` can
            count its step) and ``fit``'s result (``None`` for a stage from the store).
        **fit_kwargs: ``fit``'s other arguments (``epochs``, ``lr``, ``config``,
            ``on_epoch``, ...), the same for every stage; not ``checkpoint`` nor ``resume``
            (per-run files: a ``store`` resumes a chain stage by stage).

    Returns:
        One :class:`ChainStage` per network of ``path``, in order.

    Raises:
        KDTutorError: an empty path, a bad spec, a method without a teacher, bad settings.
        UnknownNameError: an unknown model or method name.
        ShapeMismatchError: the teacher predicts another number of classes than the data
            holds, or a stage cannot be distilled from the one before.

    Example:
        >>> stages = fit_chain("zoo:shapes_cnn_large", ["cnn_small", "cnn_tiny_s2"],
        ...                    train, test, epochs=20, store=True)  # doctest: +SKIP
        >>> stages[-1].result.last_acc  # doctest: +SKIP
    """
    from .methods import build_distiller, get_method
    from .seeding import seed_everything
    from .train import fit

    specs = _check_path(path)
    config = _train_config(fit_kwargs, seed)
    cls = get_method(method)
    if not cls.requires_teacher:
        raise KDTutorError(
            f"method {method!r} trains without a teacher, but each stage of a chain is taught "
            "by the one before: use a distillation method such as 'takd' (KD), 'kd' or 'ban'."
        )
    params = _method_hparams(cls, method, hparams)
    seeds = _stage_seeds(init_seed, seed, len(specs))
    shape = _input_shape(train_data)
    teacher = _resolve_teacher(teacher, train_data, shape)
    num_classes = _num_classes(teacher, train_data, shape)
    in_channels = shape[0] if shape else _first_channels(teacher)
    build = _builder(num_classes, in_channels)
    values = dict(hparams or {})

    def distiller_for(network: nn.Module, previous: nn.Module) -> Distiller:
        return build_distiller(method, network, previous, values, input_shape=shape)

    with torch.random.fork_rng(devices=[]):  # the checks build throwaway networks
        previous = teacher
        for i, spec in enumerate(specs):
            network = build(spec, i)
            distiller_for(network, previous)
            previous = network
    teacher.requires_grad_(False).eval()

    from .specs import parse_model_spec

    folder = _store_folder(store)
    key = ""
    if folder is not None:
        key = _base_key(teacher, train_data, config)
    stages: list[ChainStage] = []
    previous = teacher
    for i, spec in enumerate(specs):
        weights = None
        if folder is not None:
            canonical = parse_model_spec(spec).call  # one key whatever the spelling
            key = _digest(key, canonical, method, _canonical(params.as_dict()), str(seeds[i]))
            weights = folder / f"{key}.pt"
        seed_everything(seeds[i])
        network = build(spec, i)
        loaded = weights is not None and _load_stage(network, weights, key)
        distiller = distiller_for(network, previous)
        result = None
        if not loaded:
            result = fit(distiller, train_data, test_data, seed=seed, **fit_kwargs)
            if weights is not None:
                meta = _stage_meta(spec, i, specs, method, seed, seeds[i], key, train_data)
                meta.update(last_acc=result.last_acc, best_acc=result.best_acc)
                _save_stage(distiller.student, weights, meta)
        if on_stage is not None:
            on_stage(i, distiller, result)
        network = distiller.student.eval().requires_grad_(False)
        stages.append(ChainStage(spec, network, result, key, weights))
        previous = network
    return stages


# -- checks ---------------------------------------------------------------------------------------
def _check_path(path: Sequence[str]) -> list[str]:
    from .specs import parse_model_spec

    if isinstance(path, str) or not isinstance(path, Sequence):
        raise KDTutorError(
            f"a chain's path is a list of model specs, the student last (e.g. "
            f"['cnn_small', 'cnn_tiny_s2']), got {path!r}."
        )
    specs = list(path)
    if not specs:
        raise KDTutorError(
            "the chain has no stages: give at least one network to train, the student last "
            "(e.g. path=['cnn_tiny_s2'] is plain KD from the teacher)."
        )
    for i, spec in enumerate(specs):
        if not isinstance(spec, str):
            raise KDTutorError(
                f"stage {i} of the chain must be a model spec string such as 'cnn_small', got "
                f"{type(spec).__name__} {spec!r}."
            )
        if parse_model_spec(spec).kind == "zoo":
            raise KDTutorError(
                f"stage {i} of the chain is the zoo teacher {spec!r}, which is trained already: "
                "the stages of a chain are trained here. Name an architecture (e.g. "
                "'cnn_small'), or pass the zoo teacher as the chain's teacher."
            )
    return specs


def _train_config(fit_kwargs: Mapping[str, Any], seed: int) -> Any:
    """The stages' :class:`~kdtutor.train.TrainConfig`, validated before anything trains."""
    from .config import from_dict
    from .train import TrainConfig

    per_run = [k for k in _PER_RUN if k in fit_kwargs]
    if per_run:
        raise KDTutorError(
            f"fit_chain does not take {per_run}: they name one run's files, and a chain runs "
            "several. Pass store=... (a folder) to keep each finished stage and resume the "
            "chain from it."
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise KDTutorError(f"fit_chain's seed must be a non-negative integer, got {seed!r}.")
    not_config = {"config", "progress", "log", "on_epoch"}
    overrides = {k: v for k, v in fit_kwargs.items() if k not in not_config}
    overrides["seed"] = seed
    config = fit_kwargs.get("config")
    if isinstance(config, TrainConfig):
        cfg = dataclasses.replace(config, **overrides)
    else:
        cfg = from_dict(TrainConfig, {**(config or {}), **overrides}, what="train")
    cfg.validate()
    return cfg


def _method_hparams(cls: Any, method: str, hparams: Mapping[str, Any] | None) -> Any:
    from .config import from_dict

    if hparams is not None and not isinstance(hparams, Mapping):
        raise KDTutorError(
            f"hparams must be a dict of {method!r}'s hyperparameters (e.g. {{'T': 4}}), got "
            f"{hparams!r}."
        )
    params = from_dict(cls.hparams_cls, dict(hparams or {}), what=f"method {method!r}")
    params.validate()
    return params


def _stage_seeds(init_seed: Callable[[int], int] | None, seed: int, n: int) -> list[int]:
    if init_seed is None:
        return [seed] * n
    if not callable(init_seed):
        raise KDTutorError(
            f"init_seed must be a function of the stage index (e.g. lambda i: seed + 1000 * "
            f"(i + 1)), got {init_seed!r}."
        )
    seeds = [init_seed(i) for i in range(n)]
    for i, value in enumerate(seeds):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise KDTutorError(
                f"init_seed({i}) must give a non-negative integer seed, got {value!r}."
            )
    return seeds


def _input_shape(data: Any) -> tuple[int, ...] | None:
    """One sample's shape, when the data says it without being read (an ArrayDataset)."""
    images = getattr(data, "images", None)
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return tuple(int(s) for s in images.shape[1:])
    return None


def _resolve_teacher(teacher: Any, data: Any, shape: tuple[int, ...] | None) -> nn.Module:
    if isinstance(teacher, str):
        from .specs import build_from_spec

        classes = getattr(data, "num_classes", None)
        if classes is None:
            raise KDTutorError(
                f"the teacher {teacher!r} is named by a spec, but the training data does not "
                "say its number of classes: build the teacher first and pass the module."
            )
        channels = shape[0] if shape else 3
        return build_from_spec(teacher, num_classes=classes, in_channels=channels, role="teacher")
    if not isinstance(teacher, nn.Module):
        raise NotAModelError(
            f"the chain's teacher must be a trained nn.Module or a model spec such as "
            f"'zoo:shapes_cnn_large', got {type(teacher).__name__} {teacher!r}."
        )
    return teacher


def _num_classes(teacher: nn.Module, data: Any, shape: tuple[int, ...] | None) -> int:
    """The classes every stage predicts: the teacher's, which must be the data's."""
    data_classes = getattr(data, "num_classes", None)
    if data_classes is None:
        data_classes = getattr(getattr(data, "dataset", None), "num_classes", None)
    classes = getattr(teacher, "num_classes", None)
    if classes is None and shape is not None:
        with torch.no_grad():
            was_training = teacher.training
            teacher.eval()
            device = next(teacher.parameters(), torch.empty(0)).device
            out = teacher(torch.zeros((1, *shape), device=device))
            teacher.train(was_training)
        if isinstance(out, torch.Tensor) and out.ndim == 2:
            classes = int(out.shape[1])
    if classes is None:
        classes = data_classes
    if classes is None:
        raise KDTutorError(
            "cannot tell how many classes the chain's networks predict: neither the teacher "
            "(no num_classes attribute) nor the training data (no num_classes) says it. Give "
            "the teacher a num_classes attribute, or train on a kdtutor ArrayDataset."
        )
    if data_classes is not None and int(data_classes) != int(classes):
        raise ShapeMismatchError(
            f"the chain's teacher predicts {classes} classes but the training data has "
            f"{data_classes}: every stage learns the teacher's label space. Use a teacher "
            f"trained on this data (with {data_classes} classes), or data with {classes}."
        )
    return int(classes)


def _first_channels(teacher: nn.Module) -> int:
    from .models.summary import first_in_channels

    return first_in_channels(teacher) or 3


def _builder(num_classes: int, in_channels: int) -> Callable[[str, int], nn.Module]:
    from .specs import build_from_spec

    def build(spec: str, stage: int) -> nn.Module:
        return build_from_spec(
            spec, num_classes=num_classes, in_channels=in_channels, role=f"stage {stage} model"
        )

    return build


# -- the store --------------------------------------------------------------------------------------
def _store_folder(store: str | os.PathLike[str] | bool | None) -> Path | None:
    if store is None or store is False:
        return None
    if store is True:
        from .data.diskcache import cache_dir

        return cache_dir() / "chains"
    if not isinstance(store, (str, os.PathLike)):
        raise KDTutorError(
            f"store must be a folder (a path), True (the disk cache's 'chains' folder) or None, "
            f"got {store!r}."
        )
    folder = Path(store).expanduser()
    if folder.exists() and not folder.is_dir():
        raise KDTutorError(f"the chain store {folder} is a file: point store= at a folder.")
    return folder


def _digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _canonical(values: Mapping[str, Any]) -> str:
    return json.dumps(dict(values), sort_keys=True, default=repr)


def _base_key(teacher: nn.Module, data: Any, config: Any) -> str:
    """What every stage's weights depend on: the first teacher, the data, the settings."""
    from .cache import dataset_fingerprint, weights_digest

    if isinstance(data, torch.utils.data.DataLoader):
        raise KDTutorError(
            "a chain store needs training data it can fingerprint and replay in a fixed order "
            "(a kdtutor ArrayDataset or a map-style Dataset); a DataLoader has its own order. "
            "Pass its dataset instead, or store=None."
        )
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in _NOT_WEIGHTS}
    fingerprint = dataset_fingerprint(data) if data is not None else "no data"
    return _digest(_KEY_VERSION, weights_digest(teacher), fingerprint, _canonical(settings))


def _stage_meta(
    spec: str,
    stage: int,
    specs: Sequence[str],
    method: str,
    seed: int,
    init: int,
    key: str,
    data: Any,
) -> dict[str, Any]:
    from .specs import parse_model_spec

    meta: dict[str, Any] = {
        "model": parse_model_spec(spec).call,
        "chain_key": key,
        "chain_stage": stage,
        "chain_path": list(specs[: stage + 1]),
        "method": method,
        "seed": seed,
        "init_seed": init,
    }
    if getattr(data, "name", None) and getattr(data, "num_classes", None):
        meta.update(dataset=data.name, num_classes=data.num_classes)
        shape = _input_shape(data)
        if shape:
            meta["input_shape"] = list(shape)
    return meta


def _save_stage(network: nn.Module, path: Path, meta: dict[str, Any]) -> None:
    from .train.recorder import save_student

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_student(network, path, meta)
    except OSError as exc:
        warnings.warn(
            f"could not save the chain stage to {path} ({exc}); it will be trained again next "
            "time. Point store= at a writable folder.",
            RuntimeWarning,
            stacklevel=3,
        )


def _load_stage(network: nn.Module, path: Path, key: str) -> bool:
    """Load a stored stage's weights into ``network``; False (with a warning for a file that
    cannot be used) when the stage must be trained."""
    from .io import safe_load

    if not path.is_file():
        return False
    try:
        blob = safe_load(path, what="chain stage")
        if not isinstance(blob, dict) or blob.get("chain_key") != key:
            raise ValueError("the file was written for another stage")
        state, own = blob["state_dict"], network.state_dict()
        # checked before loading: a failed load_state_dict leaves the network half loaded
        if set(state) != set(own) or any(state[k].shape != own[k].shape for k in own):
            raise ValueError("its tensors do not fit the stage's network")
        network.load_state_dict(state)
        return True
    except Exception as exc:  # a truncated or foreign file must not stop the chain
        warnings.warn(
            f"ignoring the unreadable chain stage {path} ({type(exc).__name__}: {exc}); "
            "training the stage again.",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
