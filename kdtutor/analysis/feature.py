r"""Measuring feature-based distillation: attention maps, and their distance to a teacher's.

* :func:`attention_maps`: the normalised attention maps (Zagoruyko & Komodakis, 2017) of a
  model at some module paths, for a batch of images, ready to plot.
* :func:`attention_distance`: how far a student's maps are from a teacher's at paired paths,
  per image, :math:`\lVert \hat Q_s - \hat Q_t \rVert_2` (between 0 for identical maps and
  :math:`\sqrt 2` for maps without overlap), after the larger feature map is average-pooled to
  the smaller size as attention transfer does.

Chapter 3's feature notebook draws the maps of students trained with and without attention
transfer and measures their distance to the teacher's.

Example:
    >>> import torch
    >>> from kdtutor.models import build_model
    >>> model = build_model("cnn_tiny")
    >>> maps = attention_maps(model, ["stages.0", "stages.2"], torch.randn(2, 3, 32, 32))
    >>> [tuple(m.shape) for m in maps]
    [(2, 32, 32), (2, 8, 8)]
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..errors import KDTutorError
from ..features import probe_features
from ..losses.feature import attention_map, pool_to_smaller

__all__ = ["attention_distance", "attention_maps"]


def _features(model: nn.Module, paths: Sequence[str], x: Tensor) -> list[Tensor]:
    """The features of ``model`` at ``paths`` for ``x``, in eval mode (its mode is restored)."""
    _, features = probe_features(model, x, list(paths))
    return [features[p] for p in paths]


def attention_maps(
    model: nn.Module, paths: Sequence[str] | str, x: Tensor, p: float = 2.0
) -> list[Tensor]:
    r"""Normalised attention maps :math:`\hat Q = Q / \lVert Q \rVert_2`,
    :math:`Q = \sum_c |F_c|^p`, of ``model`` at each of ``paths`` for the images ``x``.

    The model runs once in eval mode without gradients (its train/eval mode is restored).

    Returns:
        One tensor of shape (B, H, W) per path, in the order of ``paths``.
    """
    paths = [paths] if isinstance(paths, str) else list(paths)
    return [attention_map(f, p, flatten=False) for f in _features(model, paths, x)]


def attention_distance(
    student: nn.Module,
    teacher: nn.Module,
    student_paths: Sequence[str] | str,
    teacher_paths: Sequence[str] | str,
    x: Tensor,
    p: float = 2.0,
) -> list[Tensor]:
    r"""Per-image distance :math:`\lVert \hat Q_s - \hat Q_t \rVert_2` between the student's and
    the teacher's attention maps at each pair of paths.

    The larger feature map of a pair is first average-pooled to the smaller one's size
    (:func:`kdtutor.losses.feature.pool_to_smaller`), as attention transfer does; channel
    counts may differ. The mean over images of this distance is the paper form of
    :func:`kdtutor.losses.feature.at_loss`.

    Returns:
        One tensor of shape (B,) per pair, values in :math:`[0, \sqrt 2]`.

    Raises:
        KDTutorError: ``student_paths`` and ``teacher_paths`` differ in length.
    """
    sp = [student_paths] if isinstance(student_paths, str) else list(student_paths)
    tp = [teacher_paths] if isinstance(teacher_paths, str) else list(teacher_paths)
    if len(sp) != len(tp):
        raise KDTutorError(
            f"{len(sp)} student paths but {len(tp)} teacher paths: give one teacher path per "
            "student path."
        )
    distances = []
    for fs, ft in zip(_features(student, sp, x), _features(teacher, tp, x), strict=True):
        s, t = pool_to_smaller(fs, ft)
        distances.append((attention_map(s, p) - attention_map(t, p)).norm(dim=1))
    return distances
