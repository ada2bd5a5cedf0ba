"""What the dense distillers of chapter 8 share: maps read by module path, teacher outputs
as tensors, and the base class of ``skd``, ``cwd``, ``depth_kd``, ``fpd`` and the supervised
baselines ``seg_scratch``, ``depth_scratch``, ``pose_scratch``.

A dense network's output is often not what a distiller compares: torchvision's LRASPP
returns ``{"out": ...}`` upsampled x4 to the image, the depth nets ``exp`` of an upsampled
log-depth map. The loss is taken on the map *before* the deterministic upsampling (the
same information in 4 to 16 times fewer values to cache), read by a forward hook at the method's
``logits_path`` (:class:`~kdtutor.features.FeatureExtractor`; ``""``: the network's output
itself, ``outputs["out"]`` for a dict), and features at the method's feature paths
(:meth:`DenseDistiller.feature_path_hparams`). A path is a module path or a key of the
network's ``named_paths`` (the design note's names, which :mod:`kdtutor.models.dense` maps to
its modules: ``"high"`` is ``backbone.s3`` of its LRASPP), so each network may place a
feature where it likes. :meth:`DenseDistiller.compute_teacher_outputs`
returns them as a :class:`~kdtutor.cache.TeacherOutputs` of tensors (``logits`` = the
pre-upsample map, ``features`` by name), which the engine's teacher cache stores one row per
sample (design note ``docs/design/applications.md``, 2.1-2.2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cache import TeacherOutputs
from ..errors import DataFormatError, ShapeMismatchError, UnknownNameError, closest
from ..features import INPUT_SUFFIX, FeatureExtractor, FeatureTypeError
from .base import Distiller

__all__ = [
    "OUTPUT",
    "DenseDistiller",
    "DenseMaps",
    "heatmap_targets",
    "output_map",
    "read_maps",
    "resolve_path",
    "segmentation_ce",
]

OUTPUT = "<output>"
"""How :meth:`DenseDistiller.teacher_feature_paths` names the network's own output (an empty
``logits_path``) in the teacher cache's key."""


def output_map(outputs: Any, key: str = "out") -> Tensor:
    """The prediction map of a dense network's ``outputs``: ``outputs[key]`` for a dict (as
    torchvision's segmentation models return), else the tensor itself."""
    if isinstance(outputs, Mapping):
        if key not in outputs:
            raise FeatureTypeError(
                f"the network returned a dict with keys {list(outputs)} but no {key!r}: a dense "
                f"network returns its prediction map as a tensor or as {{{key!r}: map}} (as "
                "torchvision's segmentation models do)."
            )
        outputs = outputs[key]
    if not isinstance(outputs, Tensor):
        raise FeatureTypeError(
            f"the network returned a {type(outputs).__name__}, not a map: a dense network "
            f"returns a tensor (B, C, H, W) or a dict with {key!r}."
        )
    return outputs


def segmentation_ce(outputs: Any, y: Tensor, *, ignore_index: int = 255) -> Tensor:
    r"""The pixel-wise cross entropy of a segmentation network's ``outputs`` (a logits map
    ``(B, K, H, W)`` or ``{"out": map}``) against masks ``(B, H, W)`` of class indices,
    averaged over the pixels that are not ``ignore_index``:
    :math:`-\frac{1}{|V|}\sum_{i \in V} \log p_{i, y_i}`."""
    logits = output_map(outputs)
    if logits.dim() != 4 or tuple(y.shape) != (logits.shape[0], *logits.shape[2:]):
        raise ShapeMismatchError(
            f"segmentation logits {tuple(logits.shape)} do not fit masks {tuple(y.shape)}: the "
            "network must return (B, K, H, W) logits (or {'out': ...}) at the masks' (B, H, W) "
            "resolution."
        )
    return F.cross_entropy(logits, y.long(), ignore_index=ignore_index)


def resolve_path(model: nn.Module, path: str, *, hparam: str, role: str, method: str) -> str:
    """The module path ``path`` stands for in ``model``: ``path`` itself when it names a
    module (optionally ending in ``":input"``), else ``model.named_paths[path]`` (the design
    note's names, e.g. ``"high"`` -> ``"backbone.s3"`` in :mod:`kdtutor.models.dense`).

    Raises:
        UnknownNameError: neither, naming the hyperparameter to change and the choices.
    """
    modules = {name for name, _ in model.named_modules(remove_duplicate=False) if name}
    base = path[: -len(INPUT_SUFFIX)] if path.endswith(INPUT_SUFFIX) else path
    if path in modules or base in modules:
        return path
    named = getattr(model, "named_paths", None)
    named = dict(named) if isinstance(named, Mapping) else {}
    if path in named:
        return resolve_path(model, named[path], hparam=hparam, role=role, method=method)
    near = closest(base, [*modules, *named])
    guess = (" Did you mean " + " or ".join(map(repr, near)) + "?") if near else ""
    shown = ", ".join(sorted(modules)[:30]) + (" ..." if len(modules) > 30 else "")
    names = f" Its named_paths: {', '.join(sorted(named))}." if named else ""
    raise UnknownNameError(
        f"{method}: the {role} ({type(model).__name__}) has no module {base!r} for "
        f"{hparam}={path!r}.{guess} Pass {hparam}=... naming the layer to read (a module "
        "path, kdtutor.features.list_paths(model) lists them, or a key of the model's "
        f"named_paths). Its modules: {shown or 'none'}.{names}"
    )


class DenseMaps(NamedTuple):
    """What one pass of a dense network gives a distiller."""

    outputs: Any
    """The network's outputs as it returns them (a map, or a dict with ``"out"``)."""
    logits: Tensor
    """The map the method compares: the module output at ``logits_path``, or the output."""
    features: dict[str, Tensor]
    """The feature maps at the requested paths."""


def read_maps(
    model: nn.Module,
    x: Tensor,
    logits_path: str,
    feature_paths: Mapping[str, str] | Sequence[str] = (),
    *,
    detach: bool = False,
) -> DenseMaps:
    """Run ``model`` on ``x`` once and capture the map at module path ``logits_path``
    (``""``: the output, :func:`output_map`) and the features at ``feature_paths`` by forward
    hooks.

    Args:
        model: the network.
        x: its input batch.
        logits_path: module path of the map to compare, or ``""``.
        feature_paths: module paths of features to capture, or a mapping from the names to
            return them under to module paths.
        detach: store detached tensors (a teacher).
    """
    named = (
        dict(feature_paths) if isinstance(feature_paths, Mapping) else {p: p for p in feature_paths}
    )
    paths = list(dict.fromkeys([*([logits_path] if logits_path else []), *named.values()]))
    if not paths:
        outputs = model(x)
        logits = output_map(outputs)
        return DenseMaps(outputs, logits.detach() if detach else logits, {})
    with FeatureExtractor(model, paths, detach=detach) as fx:
        outputs = model(x)
    logits = fx.tensor(logits_path) if logits_path else output_map(outputs)
    if detach:
        logits = logits.detach()
    return DenseMaps(outputs, logits, {name: fx.tensor(p) for name, p in named.items()})


class DenseDistiller(Distiller):
    """Base of the chapter-8 dense distillers (see the module docstring).

    Subclasses set ``task`` (the :mod:`kdtutor.tasks` name they are scored by), give their
    hyperparameters a ``logits_path`` where they read a map other than the output, and
    override :meth:`feature_path_hparams` when they read features. Paths are resolved on both
    networks when the distiller is built (:func:`resolve_path`: a module path, or a key of
    the network's ``named_paths``).
    """

    family = "application"
    task: ClassVar[str] = ""
    """The task whose targets ``forward`` reads (``fit(..., task=...)``)."""
    tensor_teacher_outputs: ClassVar[bool] = True
    """:meth:`compute_teacher_outputs` returns tensors, so the teacher cache can store them."""

    def __init__(
        self, student: nn.Module, teacher: nn.Module | None = None, hparams: Any = None
    ) -> None:
        super().__init__(student, teacher, hparams)
        self.student_paths = self._resolve(student, "student")
        """The student's module paths: ``""`` -> the compared map's (``""``: the output),
        then each feature's name -> its module path."""
        self.teacher_paths = self._resolve(teacher, "teacher") if teacher is not None else {}
        """The teacher's, alike."""

    def _resolve(self, net: nn.Module, role: str) -> dict[str, str]:
        def resolve(hparam: str, path: str) -> str:
            return resolve_path(net, path, hparam=hparam, role=role, method=self.name)

        logits = resolve("logits_path", self.logits_path) if self.logits_path else ""
        features = {path: resolve(h, path) for h, path in self.feature_path_hparams().items()}
        return {"": logits, **features}

    # -- for subclasses ---------------------------------------------------------------------
    @property
    def logits_path(self) -> str:
        """Module path of the map the method compares (``""``: the network's output)."""
        return str(getattr(self.hparams, "logits_path", ""))

    def feature_path_hparams(self) -> dict[str, str]:
        """The features this configuration reads, by the hyperparameter that names them
        (none by default; e.g. SKD's ``{"feature_path": "high"}`` when its pair-wise term is
        on). The value names the feature in :attr:`DenseMaps.features` and in the teacher's
        outputs, whatever module path it resolves to in each network
        (:func:`resolve_path`)."""
        return {}

    @staticmethod
    def _split(paths: Mapping[str, str]) -> tuple[str, dict[str, str]]:
        features = dict(paths)
        return features.pop(""), features

    # -- the networks' maps -----------------------------------------------------------------
    def student_maps(self, x: Tensor) -> DenseMaps:
        """The student's outputs, compared map and features (with gradients)."""
        logits, features = self._split(self.student_paths)
        return read_maps(self.student, x, logits, features)

    def teacher_feature_paths(self) -> Sequence[str]:
        """What the teacher cache keeps, for its key: the teacher's module path of the
        ``logits`` map (:data:`OUTPUT` for the output), then those of the features."""
        logits, features = self._split(self.teacher_paths)
        return (logits or OUTPUT, *features.values())

    def compute_teacher_outputs(self, x: Tensor) -> TeacherOutputs:
        """The teacher's compared map as ``logits`` and its features by name, as tensors
        (never cached here; :meth:`teacher_outputs` reads the cache when there is one)."""
        assert self.teacher is not None
        self.teacher_forward_calls += 1
        logits, features = self._split(self.teacher_paths)
        with torch.no_grad():
            maps = read_maps(self.teacher, x, logits, features, detach=True)
        return TeacherOutputs(maps.logits, maps.features)


def heatmap_targets(y: Any, method: str) -> tuple[Tensor, Tensor | None]:
    """The ground-truth heatmaps ``(B, J, h, w)`` and slot weights of a pose batch's targets
    (a dict with ``"heatmaps"`` and optionally ``"weight"``, as the chapter's pose crops and
    the ``keypoints`` task give them)."""
    if not isinstance(y, Mapping) or "heatmaps" not in y:
        got = f"a dict with keys {list(y)}" if isinstance(y, Mapping) else type(y).__name__
        raise DataFormatError(
            f"{method} trains on pose targets, a dict with 'heatmaps' (B, J, h, w) and "
            f"'weight' (B, J) (the keypoints task's format), but got {got}. Give fit the pose "
            "crops (task='keypoints')."
        )
    return y["heatmaps"], y.get("weight")
