"""Connectors: small trainable maps that bring a student feature to the teacher's shape.

Feature-based methods compare a student feature with a teacher feature, which rarely have the
same shape: a 36k-parameter student has fewer channels than its teacher, and the two may
downsample at different depths. A *connector* (FitNets' "regressor", Romero et al. 2015) maps
the student feature onto the teacher's shape and is trained with the student:

* channels differ (``C_s != C_t``): a 1x1 convolution followed by batch norm;
* spatial sizes differ: adaptive average pooling when the student map is larger, bilinear
  interpolation when it is smaller;
* vectors of different length (embeddings): a linear layer.

:func:`build_connector` chooses from the two *per-sample* shapes, ``(C, H, W)`` or ``(D,)``,
and raises :class:`~kdtutor.errors.ShapeMismatchError` naming both shapes when no connector of
the requested kind can match them.

Example:
    >>> connector = build_connector((16, 32, 32), (64, 8, 8))
    >>> connector
    Connector(resize 32x32->8x8, conv1x1+bn 16->64)
    >>> import torch
    >>> connector(torch.randn(2, 16, 32, 32)).shape
    torch.Size([2, 64, 8, 8])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ShapeMismatchError

__all__ = ["Connector", "ConnectorKind", "Resize", "build_connector", "match_spatial"]

ConnectorKind = Literal["auto", "conv", "linear", "interpolate", "identity"]
KINDS: tuple[str, ...] = ("auto", "conv", "linear", "interpolate", "identity")


def match_spatial(x: Tensor, size: Sequence[int]) -> Tensor:
    """Resize feature map ``x`` (N, C, H, W) to ``size`` (H', W').

    Average pooling when shrinking (it keeps the mean activation, as attention transfer and
    RepDistiller do) and bilinear interpolation when growing.
    """
    size = tuple(int(s) for s in size)
    if tuple(x.shape[-2:]) == size:
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class Resize(nn.Module):
    """Resize feature maps to a fixed spatial size (see :func:`match_spatial`)."""

    def __init__(self, size: Sequence[int]) -> None:
        super().__init__()
        self.size = tuple(int(s) for s in size)

    def forward(self, x: Tensor) -> Tensor:
        return match_spatial(x, self.size)


class Connector(nn.Sequential):
    """A student-to-teacher feature map; ``describe`` says what each part does."""

    def __init__(self, *parts: nn.Module, description: str = "identity") -> None:
        super().__init__(*parts)
        self.description = description

    def __repr__(self) -> str:
        return f"Connector({self.description})"


def _shape(shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(s) for s in shape)


def build_connector(
    student_shape: Sequence[int],
    teacher_shape: Sequence[int],
    kind: ConnectorKind = "auto",
    *,
    where: str = "",
) -> Connector:
    """A connector mapping student features of ``student_shape`` to ``teacher_shape``.

    Args:
        student_shape: one sample's feature shape, ``(C, H, W)`` or ``(D,)``.
        teacher_shape: the teacher's, in the same form.
        kind: ``"auto"`` adds only what the shapes need (nothing when they agree);
            ``"conv"`` always has a trainable 1x1 conv + BN (FitNets' regressor, OFD);
            ``"linear"`` a linear layer for vectors; ``"interpolate"`` resizes only (channels
            must agree); ``"identity"`` requires equal shapes.
        where: the pair of paths, for error messages.

    Raises:
        ShapeMismatchError: the shapes cannot be matched by this kind of connector.
    """
    s, t = _shape(student_shape), _shape(teacher_shape)
    at = f" at {where}" if where else ""
    if kind not in KINDS:
        raise ValueError(f"connector kind must be one of {', '.join(KINDS)}; got {kind!r}.")
    if len(s) != len(t) or len(s) not in (1, 3):
        raise ShapeMismatchError(
            f"no connector maps a student feature of shape {s} to a teacher feature of shape "
            f"{t}{at}: both must be feature maps (C, H, W) or both vectors (D,). Choose paths "
            "of the same kind in both models (stage outputs with stage outputs, embeddings "
            "with embeddings); kdtutor.features.feature_shapes(model, paths, input_shape) "
            "shows the shapes."
        )
    if kind == "identity" and s != t:
        raise ShapeMismatchError(
            f"student feature {s} and teacher feature {t}{at} differ and the connector kind "
            "is 'identity'. Use connector='auto' to add a 1x1 conv / resize / linear layer."
        )
    if len(s) == 1:
        if kind == "interpolate":
            raise ShapeMismatchError(
                f"connector 'interpolate' resizes feature maps, but{at} the features are "
                f"vectors {s} and {t}. Use connector='linear' or 'auto'."
            )
        if s == t and kind in ("auto", "identity"):
            return Connector()
        return Connector(nn.Linear(s[0], t[0]), description=f"linear {s[0]}->{t[0]}")

    if kind == "linear":
        raise ShapeMismatchError(
            f"connector 'linear' maps vectors, but{at} the features are maps {s} and {t}. "
            "Use connector='conv' or 'auto'."
        )
    conv: list[tuple[nn.Module, str]] = []
    if kind == "conv" or (kind == "auto" and s[0] != t[0]):
        conv = [
            (nn.Conv2d(s[0], t[0], kernel_size=1, bias=False), f"conv1x1+bn {s[0]}->{t[0]}"),
            (nn.BatchNorm2d(t[0]), ""),
        ]
    elif s[0] != t[0]:
        raise ShapeMismatchError(
            f"student feature {s} has {s[0]} channels and teacher feature {t} has {t[0]}{at}; "
            f"connector {kind!r} cannot change channels. Use connector='auto' or 'conv'."
        )
    resize = [(Resize(t[1:]), f"resize {s[1]}x{s[2]}->{t[1]}x{t[2]}")] if s[1:] != t[1:] else []
    # The 1x1 convolution runs on the smaller grid: resize first when shrinking.
    shrinking = s[1] * s[2] > t[1] * t[2]
    parts = resize + conv if shrinking else conv + resize
    return Connector(
        *(module for module, _ in parts),
        description=", ".join(text for _, text in parts if text) or "identity",
    )
