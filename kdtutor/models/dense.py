"""The networks of chapter 8 (applications): detection, segmentation, depth, pose, faces,
super-resolution, video and lanes, small enough to train on a CPU, never pretrained.

Importing this module registers the names below with :func:`kdtutor.models.build_model`
(``kdtutor.models`` itself does not import it, so the chapters before 8 do not depend on
it)::

    import kdtutor.models.dense  # noqa: F401  (registration)
    model = build_model("fcos_t", num_classes=4)

Every network starts with a fixed :class:`Normalize` (the split's per-channel mean and std
as buffers, so a zoo teacher carries its own statistics; 0 and 1 by default), carries the
feature-path attributes of every kdtutor model (``stage_names``, ``preact_stage_names``,
``embedding_path``, ``num_classes``: :func:`kdtutor.models.set_feature_paths`) and a dict
``named_paths`` from the design note's names (``"logits"``, ``"high"``, ``"t2"``, ``"pool"``,
...) to module paths that :class:`kdtutor.features.FeatureExtractor` accepts. A dense
network has no pooled embedding: where none exists, ``embedding_path`` names the bottleneck
map (said per model).

==============  ==================================================  ==============================
name            input -> output (eval)                              parameters (measured)
==============  ==================================================  ==============================
``fcos_t``      list of ``(3, 64, 64)`` -> list of dicts            819,881 (K=4) / 823,920 (K=11)
``fcos_s``      ``boxes``, ``scores``, ``labels`` (torchvision)     219,097 (K=4) / 221,120 (K=11)
``lraspp_t``    ``(B, 3, 64, 64)`` -> ``{"out": (B, K, 64, 64)}``   470,696 (K=4) / 471,606 (K=11)
``lraspp_s``    same                                                77,616 (K=4) / 77,966 (K=11)
``depth_t``     ``(B, 3, 64, 64)`` -> depth ``(B, 1, 64, 64)``      473,345
``depth_s``     same                                                74,849
``pose_t``      ``(B, 3, 32, 32)`` -> heatmaps ``(B, 4, 16, 16)``   473,444
``pose_s``      same                                                74,876
``facenet_t``   ``(B, 3, 32, 32)`` -> embedding ``(B, 128)``        1,334,368 (1,000 identities)
``facenet_s``   same -> ``(B, 64)``                                 91,984 (1,000 identities)
``edsr_t``      ``(B, 3, 16, 16)`` -> ``(B, 3, 64, 64)``            271,536
``edsr_s``      same                                                25,968
``c3d_t``       ``(B, 8, 3, 32, 32)`` -> logits ``(B, 10)``         431,802
``tsn_s``       same (reads frames 0, 2, 4, 6)                      83,034
``lanenet_t``   ``(B, 3, 48, 128)`` -> ``out`` and ``exist`` maps   298,505
``lanenet_s``   same                                                75,145
==============  ==================================================  ==============================

(K counts the background, as torchvision does: 4 for the basic scenes, 11 for ten classes.)
The lane networks return ``{"out": (B, 5, 48, 128), "exist": (B, 4)}``.
The design note (``docs/design/applications.md``, section 3) gives the counts its probes
measured: FCOS (824 k, 221 k: at K = 11), faces, super-resolution and video are reproduced
exactly; LRASPP, depth, pose and lanes come out ``9 w^2 + 2 w`` parameters smaller (``w =
widths[0]``: 9,280 for the 32-wide teachers, 2,336 for ``lanenet_t``, 592 for the students),
because the probes' encoder had a second 3x3 conv-BN in its stem while the design's text,
followed here, gives the stem one. ``stem_convs=2`` restores it and reproduces the design's
481 k and 79 k (LRASPP at K = 11), 483 k and 75 k (depth), 300 k (``lanenet_t``).

**Verified at the source** (the installed torchvision 0.29.1, ``models/detection/fcos.py``,
``models/segmentation/lraspp.py``, ``ops/feature_pyramid_network.py``): FCOS's head
(``GroupNorm(32, C)``, so its width must be a multiple of 32), its level assignment (a
location of a level whose anchor size is ``s`` takes the boxes with ``4 s < max(l, t, r, b) <
8 s``, the first level from 0, the last to infinity), LRASPP's head and its bilinear
upsampling of the 1/4-resolution logits. **Not verified**: the architectures' papers
themselves (cited per model); the shapes of these small networks are the design note's own.

References:
    Tian, Z., Shen, C., Chen, H., He, T. (2019). FCOS: Fully Convolutional One-Stage Object
    Detection. ICCV.
    Lin, T.-Y. et al. (2017). Feature Pyramid Networks for Object Detection. CVPR.
    Howard, A. et al. (2019). Searching for MobileNetV3 (LR-ASPP). ICCV.
    Lim, B., Son, S., Kim, H., Nah, S., Lee, K. M. (2017). Enhanced Deep Residual Networks for
    Single Image Super-Resolution. CVPRW.
    Shi, W. et al. (2016). Real-Time Single Image and Video Super-Resolution Using an
    Efficient Sub-Pixel Convolutional Neural Network. CVPR.
    Tran, D., Bourdev, L., Fergus, R., Torresani, L., Paluri, M. (2015). Learning
    Spatiotemporal Features with 3D Convolutional Networks. ICCV.
    Wang, L. et al. (2016). Temporal Segment Networks. ECCV.
    Wang, F., Xiang, X., Cheng, J., Yuille, A. L. (2017). NormFace: L2 Hypersphere Embedding
    for Face Verification. ACM MM.
    Pan, X., Shi, J., Luo, P., Wang, X., Tang, X. (2018). Spatial As Deep: Spatial CNN for
    Traffic Scene Understanding (SCNN). AAAI.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.segmentation.lraspp import LRASPP
from torchvision.ops import FeaturePyramidNetwork

from ..errors import ShapeMismatchError
from ..losses.applications import cosine_logits
from .common import check_positive_int, set_feature_paths
from .registry import register_model
from .small_cnn import ConvBlock

__all__ = [
    "C3D",
    "EDSR",
    "TSN",
    "ConvBlock3d",
    "CosineHead",
    "DepthNet",
    "EncoderDecoder",
    "FPNDecoder",
    "FaceNet",
    "LaneNet",
    "Normalize",
    "PoseNet",
    "ResBlock",
    "SceneEncoder",
    "SceneFCOS",
    "SceneFPNBackbone",
    "SceneLRASPP",
    "TemporalMean",
    "c3d",
    "depth_net",
    "edsr",
    "face_net",
    "lane_net",
    "pose_net",
    "scene_fcos",
    "scene_lraspp",
    "tsn",
]

_FAMILY = "dense"


def _check_widths(widths: Sequence[int], count: int, name: str = "widths") -> tuple[int, ...]:
    widths = tuple(widths)
    if len(widths) != count:
        raise ValueError(f"{name} must give {count} channel counts, got {widths!r}.")
    for width in widths:
        check_positive_int(width, f"every entry of {name}")
    return widths


def _init_convs(module: nn.Module) -> None:
    """He normal (fan_out) convolutions, unit/zero norms, zero biases (the CIFAR convention)."""
    for m in module.modules():
        if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _shape(x: Tensor) -> str:
    return "x".join(map(str, x.shape))


def _check_batch(x: Any, dims: int, what: str, layout: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{what} takes a tensor {layout}, got {type(x).__name__}.")
    if x.dim() != dims:
        raise ShapeMismatchError(
            f"{what} takes a batch {layout} ({dims} dimensions), got a tensor of shape "
            f"{_shape(x)}. Add the batch dimension with x.unsqueeze(0) for one sample."
        )


# -- shared pieces -------------------------------------------------------------------------------


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, with ``mean`` and ``std`` stored as buffers.

    The channel axis is the third from the end, so images ``(B, C, H, W)`` and clips
    ``(B, T, C, H, W)`` both work. Because the statistics are buffers, they travel in the
    ``state_dict``: a trained network normalises its own inputs wherever it is loaded.

    Args:
        mean: One value per channel (default 0 for each of ``channels``).
        std: One positive value per channel (default 1).
        channels: The number of channels when ``mean`` and ``std`` are not given.

    Raises:
        ValueError: ``mean`` and ``std`` of different lengths, or a ``std`` not positive.
        ShapeMismatchError: (at call time) an input whose channel count differs.

    Example:
        >>> import torch
        >>> norm = Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
        >>> norm(torch.full((1, 3, 2, 2), 0.75)).unique()
        tensor([1.])
        >>> sorted(norm.state_dict())
        ['mean', 'std']
    """

    def __init__(
        self,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        channels: int = 3,
    ) -> None:
        super().__init__()
        if mean is None and std is None:
            check_positive_int(channels, "channels")
        n = len(mean) if mean is not None else len(std) if std is not None else channels
        mean_t = torch.zeros(n) if mean is None else torch.as_tensor(mean, dtype=torch.float32)
        std_t = torch.ones(n) if std is None else torch.as_tensor(std, dtype=torch.float32)
        if mean_t.dim() != 1 or std_t.shape != mean_t.shape:
            raise ValueError(
                f"mean and std must be flat sequences of one value per channel and of one "
                f"length; got mean {mean!r} and std {std!r}."
            )
        if bool((std_t <= 0).any()):
            raise ValueError(f"every std must be positive, got {std!r}.")
        self.register_buffer("mean", mean_t.reshape(-1, 1, 1).clone())
        self.register_buffer("std", std_t.reshape(-1, 1, 1).clone())

    @property
    def channels(self) -> int:
        """The number of channels the statistics are for."""
        return self.mean.shape[0]

    def _check(self, x: Tensor) -> None:
        if x.dim() < 3 or x.shape[-3] != self.channels:
            raise ShapeMismatchError(
                f"the network takes {self.channels}-channel inputs (channels third from the "
                f"end: images (B, C, H, W), clips (B, T, C, H, W)), got a tensor of shape "
                f"{_shape(x)}. Build it with in_channels (and mean/std) matching the data."
            )

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        return (x - self.mean) / self.std

    def inverse(self, x: Tensor) -> Tensor:
        """``x * std + mean``: back to the data's units (a super-resolution output)."""
        self._check(x)
        return x * self.std + self.mean

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


def _normalize(
    mean: Sequence[float] | None, std: Sequence[float] | None, channels: int
) -> Normalize:
    norm = Normalize(mean, std, channels)
    if norm.channels != channels:
        raise ValueError(
            f"mean/std give {norm.channels} channels but in_channels is {channels}: pass one "
            "value per input channel."
        )
    return norm


class SceneEncoder(nn.Module):
    """A plain stride-2 encoder: a conv-BN-ReLU stem and three stages of two conv-BN-ReLU
    (:class:`~kdtutor.models.small_cnn.ConvBlock`), the first of each stage with stride 2.

    Modules ``stem``, ``s1``, ``s2``, ``s3`` (each an ``nn.Sequential`` of ``ConvBlock``);
    their outputs are at 1/2, 1/4, 1/8 and 1/16 of the input (``stem_stride=2``), or at 1/4,
    1/8, 1/16 and 1/32 for the detection variant (``stem_stride=4``: a stem of two stride-2
    convolutions). ``forward`` returns an ordered dict of the maps named in ``outputs``.

    Args:
        widths: Channels of ``stem``, ``s1``, ``s2``, ``s3``.
        in_channels: Channels of the input.
        stem_stride: 2 (dense tasks) or 4 (detection).
        stem_convs: Convolutions in the stem (default 1 for stride 2, 2 for stride 4); the
            first ``log2(stem_stride)`` have stride 2. The design note's probes used 2 at
            stride 2 (see the module docstring).
        outputs: The stage names to return, in order, or a mapping ``{stage: key}`` that
            renames them (``{"s1": "low", "s3": "high"}`` for LRASPP).

    Raises:
        ShapeMismatchError: (at call time) an input whose height or width is not a multiple
            of the total stride (16, or 32 for ``stem_stride=4``).
    """

    STAGES = ("stem", "s1", "s2", "s3")

    def __init__(
        self,
        widths: Sequence[int] = (32, 64, 96, 128),
        in_channels: int = 3,
        stem_stride: int = 2,
        stem_convs: int | None = None,
        outputs: Sequence[str] | Mapping[str, str] = STAGES,
    ) -> None:
        super().__init__()
        widths = _check_widths(widths, 4)
        check_positive_int(in_channels, "in_channels")
        if stem_stride not in (2, 4):
            raise ValueError(f"stem_stride must be 2 or 4, got {stem_stride!r}.")
        strided = 1 if stem_stride == 2 else 2
        stem_convs = strided if stem_convs is None else stem_convs
        check_positive_int(stem_convs, "stem_convs")
        if stem_convs < strided:
            raise ValueError(f"a stem of stride {stem_stride} needs stem_convs >= {strided}.")
        names = dict(outputs) if isinstance(outputs, Mapping) else {s: s for s in outputs}
        unknown = [s for s in names if s not in self.STAGES]
        if unknown or not names:
            raise ValueError(f"outputs must name stages among {self.STAGES}, got {outputs!r}.")
        self.widths = widths
        self.stride = stem_stride * 8
        self.outputs = names
        self.stem = nn.Sequential(
            *(
                ConvBlock(in_channels if i == 0 else widths[0], widths[0], 2 if i < strided else 1)
                for i in range(stem_convs)
            )
        )
        self.s1 = nn.Sequential(ConvBlock(widths[0], widths[1], 2), ConvBlock(widths[1], widths[1]))
        self.s2 = nn.Sequential(ConvBlock(widths[1], widths[2], 2), ConvBlock(widths[2], widths[2]))
        self.s3 = nn.Sequential(ConvBlock(widths[2], widths[3], 2), ConvBlock(widths[3], widths[3]))
        _init_convs(self)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        h, w = x.shape[-2:]
        if h % self.stride or w % self.stride:
            raise ShapeMismatchError(
                f"the encoder downsamples {self.stride} times, so its input's height and width "
                f"must be multiples of {self.stride}; got {h}x{w}. The chapter's inputs are "
                "64x64 scenes, 32x32 pose crops and 48x128 roads; pad or resize yours."
            )
        out: OrderedDict[str, Tensor] = OrderedDict()
        for name in self.STAGES:
            x = getattr(self, name)(x)
            if name in self.outputs:
                out[self.outputs[name]] = x
        return out

    def stage_paths(self, prefix: str) -> tuple[str, ...]:
        """The dotted paths of the four stages under ``prefix`` (the encoder's own path)."""
        return tuple(f"{prefix}.{s}" for s in self.STAGES)

    def preact_paths(self, prefix: str) -> tuple[str, ...]:
        """The pre-ReLU inputs of each stage's last ReLU, as ``"<path>:input"``."""
        return tuple(f"{prefix}.{s}.{len(getattr(self, s)) - 1}.relu:input" for s in self.STAGES)


# -- detection: FCOS -----------------------------------------------------------------------------


class SceneFPNBackbone(nn.Module):
    """:class:`Normalize`, the detection :class:`SceneEncoder` (``body``, stride-4 stem: C3,
    C4, C5 at 1/8, 1/16, 1/32) and torchvision's ``FeaturePyramidNetwork`` (``fpn``) on
    C3-C5, returning an ordered dict of P3, P4, P5 (``"0"``, ``"1"``, ``"2"``), each with
    ``out_channels`` channels, as torchvision's FCOS expects of a backbone."""

    def __init__(
        self,
        widths: Sequence[int],
        fpn_channels: int,
        in_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        stem_convs: int | None = None,
    ) -> None:
        super().__init__()
        self.normalize = _normalize(mean, std, in_channels)
        self.body = SceneEncoder(
            widths, in_channels, 4, stem_convs, outputs={"s1": "0", "s2": "1", "s3": "2"}
        )
        self.fpn = FeaturePyramidNetwork(list(self.body.widths[1:]), fpn_channels)
        self.out_channels = fpn_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return self.fpn(self.body(self.normalize(x)))


class SceneFCOS(FCOS):
    """torchvision's ``FCOS`` whose ``forward`` first checks its images (a clear error for a
    wrong channel count or a missing batch), then runs torchvision's code unchanged.

    Built by :func:`scene_fcos`; the constructor is torchvision's.
    """

    def forward(
        self, images: Sequence[Tensor] | Tensor, targets: list[dict[str, Tensor]] | None = None
    ) -> Any:
        channels = self.backbone.normalize.channels
        if isinstance(images, Tensor) and images.dim() != 4:
            raise ShapeMismatchError(
                f"a detector takes a list of images (C, H, W) or a batch (B, C, H, W), got a "
                f"tensor of shape {_shape(images)}."
            )
        for image in images:
            if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != channels:
                got = _shape(image) if isinstance(image, Tensor) else type(image).__name__
                raise ShapeMismatchError(
                    f"a detector takes images ({channels}, H, W), got {got}. Pass a list of "
                    f"{channels}-channel images (or build the model with in_channels=...)."
                )
        return super().forward(list(images), targets)


@register_model(
    "fcos_s",
    family=_FAMILY,
    description="A ~221k-parameter FCOS student for 64-px scenes: encoder (16, 32, 64, 64), FPN 32, 2 head convs.",
    paper="Tian et al. 2019, FCOS: Fully Convolutional One-Stage Object Detection (ICCV)",
    defaults={"widths": (16, 32, 64, 64), "fpn_channels": 32, "head_convs": 2},
)
@register_model(
    "fcos_t",
    family=_FAMILY,
    description="A ~824k-parameter FCOS teacher for 64-px scenes: encoder (32, 64, 96, 128), FPN 64, 3 head convs.",
    paper="Tian et al. 2019, FCOS: Fully Convolutional One-Stage Object Detection (ICCV)",
)
def scene_fcos(
    num_classes: int = 4,
    in_channels: int = 3,
    widths: Sequence[int] = (32, 64, 96, 128),
    fpn_channels: int = 64,
    head_convs: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    image_size: int = 64,
    anchor_sizes: Sequence[int] = (2, 4, 8),
    score_thresh: float = 0.05,
    nms_thresh: float = 0.6,
    detections_per_img: int = 50,
    stem_convs: int | None = None,
) -> SceneFCOS:
    """FCOS (Tian et al. 2019) over the detection :class:`SceneEncoder` and an FPN.

    torchvision's ``FCOS`` with a :class:`SceneFPNBackbone` (encoder ``widths`` with a
    stride-4 stem, ``FeaturePyramidNetwork(widths[1:] -> fpn_channels)`` on C3-C5: P3 8x8, P4
    4x4, P5 2x2 at 64 px), ``FCOSHead(fpn_channels, 1, num_classes, head_convs)``,
    ``AnchorGenerator`` sizes ``((2,), (4,), (8,))`` (so P3 takes boxes whose farthest side is
    under 16 px from a location, P4 16-32, P5 the rest), ``min_size = max_size = image_size``
    and the transform's mean 0 / std 1: the transform is the identity on ``image_size``-px
    inputs (no resizing, no padding, no normalising), and the split's statistics are applied by
    ``backbone.normalize`` (buffers, in the state dict). Other sizes are resized by
    torchvision's transform (then padded to a multiple of 32, and the padding is normalised
    with the image: harmless, but unlike torchvision's order).

    Input and output (torchvision's contract): ``model(images, targets)`` in training mode
    with a list (or batch) of images ``(C, H, W)`` and target dicts ``{"boxes" (N, 4) xyxy
    pixels, "labels" (N,) int64}`` returns the loss dict ``{"classification",
    "bbox_regression", "bbox_ctrness"}``; in eval mode, ``model(images)`` returns one dict per
    image with ``"boxes"``, ``"scores"``, ``"labels"`` (at most ``detections_per_img``).

    Feature paths: ``stage_names`` are the FPN levels ``backbone.fpn.layer_blocks.{0,1,2}``
    (P3, P4, P5: ``(B, fpn_channels, 8|4|2, 8|4|2)`` at 64 px); no ``preact_stage_names``;
    ``embedding_path`` is C5, ``backbone.body.s3`` (``(B, widths[3], 2, 2)``; a detector has
    no pooled embedding). ``named_paths``: ``"fpn.0/1/2"`` (the FPN levels) and ``"c3"``,
    ``"c4"``, ``"c5"`` (``backbone.body.s1/s2/s3``). The head's outputs are computed per level
    by shared convolutions, so a hook sees only the last level: read them with the unrolled
    forward of the detection methods instead.

    Args:
        num_classes: Classification outputs, background included as torchvision counts it
            (labels are ``1 .. num_classes - 1``): 4 for the basic scenes.
        in_channels: Image channels.
        widths: Encoder channels (stem, C3, C4, C5).
        fpn_channels: FPN and head width; a multiple of 32 (the head's ``GroupNorm(32, C)``).
        head_convs: Convolutions in each head branch.
        mean, std: The split's per-channel statistics (default 0 and 1).
        image_size: The transform's ``min_size`` and ``max_size``.
        anchor_sizes: One anchor size per FPN level.
        score_thresh, nms_thresh, detections_per_img: torchvision's post-processing.
        stem_convs: Convolutions in the encoder's stem (default 2, both stride 2).

    Returns:
        The randomly initialised :class:`SceneFCOS` (no weights are ever downloaded).
    """
    widths = _check_widths(widths, 4)
    check_positive_int(fpn_channels, "fpn_channels")
    if fpn_channels % 32:
        raise ValueError(
            f"fpn_channels must be a multiple of 32: FCOS's head normalises with "
            f"GroupNorm(32, C); got {fpn_channels}."
        )
    check_positive_int(head_convs, "head_convs")
    check_positive_int(image_size, "image_size")
    anchor_sizes = tuple(anchor_sizes)
    if len(anchor_sizes) != 3:
        raise ValueError(f"anchor_sizes must give one size per FPN level (3), got {anchor_sizes}.")
    backbone = SceneFPNBackbone(widths, fpn_channels, in_channels, mean, std, stem_convs)
    model = SceneFCOS(
        backbone,
        num_classes=num_classes,
        min_size=image_size,
        max_size=image_size,
        image_mean=[0.0] * in_channels,
        image_std=[1.0] * in_channels,
        anchor_generator=AnchorGenerator(
            sizes=tuple((s,) for s in anchor_sizes), aspect_ratios=((1.0,),) * 3
        ),
        head=FCOSHead(fpn_channels, 1, num_classes, num_convs=head_convs),
        score_thresh=score_thresh,
        nms_thresh=nms_thresh,
        detections_per_img=detections_per_img,
    )
    fpn = tuple(f"backbone.fpn.layer_blocks.{i}" for i in range(3))
    set_feature_paths(
        model, stages=fpn, preact=(), embedding="backbone.body.s3", num_classes=num_classes
    )
    model.named_paths = {
        **{f"fpn.{i}": p for i, p in enumerate(fpn)},
        "c3": "backbone.body.s1",
        "c4": "backbone.body.s2",
        "c5": "backbone.body.s3",
    }
    return model


# -- semantic segmentation: LRASPP ---------------------------------------------------------------


class SceneLRASPP(LRASPP):
    """torchvision's ``LRASPP`` over a :class:`SceneEncoder` that returns ``{"low": s1 (1/4),
    "high": s3 (1/16)}``, with a :class:`Normalize` (``normalize``) applied first.

    Modules: ``normalize``, ``backbone`` (the encoder), ``classifier`` (torchvision's
    ``LRASPPHead``, whose output is the logits at 1/4 resolution, before the bilinear
    upsampling to the input's size).
    """

    def __init__(
        self,
        widths: Sequence[int],
        num_classes: int,
        in_channels: int = 3,
        inter_channels: int = 64,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        stem_convs: int | None = None,
    ) -> None:
        encoder = SceneEncoder(
            widths, in_channels, 2, stem_convs, outputs={"s1": "low", "s3": "high"}
        )
        check_positive_int(inter_channels, "inter_channels")
        super().__init__(encoder, encoder.widths[1], encoder.widths[3], num_classes, inter_channels)
        self.normalize = _normalize(mean, std, in_channels)

    def forward(self, input: Tensor) -> dict[str, Tensor]:
        _check_batch(input, 4, "a segmentation network", "(B, C, H, W)")
        return super().forward(self.normalize(input))


@register_model(
    "lraspp_s",
    family=_FAMILY,
    description="A ~78k-parameter LR-ASPP student for 64-px scenes: encoder (8, 16, 32, 64), inter 32.",
    paper="Howard et al. 2019, Searching for MobileNetV3 (LR-ASPP head) (ICCV)",
    defaults={"widths": (8, 16, 32, 64), "inter_channels": 32},
)
@register_model(
    "lraspp_t",
    family=_FAMILY,
    description="A ~471k-parameter LR-ASPP teacher for 64-px scenes: encoder (32, 64, 96, 128), inter 64.",
    paper="Howard et al. 2019, Searching for MobileNetV3 (LR-ASPP head) (ICCV)",
)
def scene_lraspp(
    num_classes: int = 4,
    in_channels: int = 3,
    widths: Sequence[int] = (32, 64, 96, 128),
    inter_channels: int = 64,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    stem_convs: int | None = None,
) -> SceneLRASPP:
    """LR-ASPP (Howard et al. 2019) over a :class:`SceneEncoder`.

    ``LRASPP(backbone, low_channels=widths[1], high_channels=widths[3], num_classes,
    inter_channels)``: logits at 1/4 of the input (16x16 at 64 px), upsampled bilinearly
    (``align_corners=False``) to the input's size.

    Input ``(B, C, H, W)`` with H, W multiples of 16; output ``{"out": (B, num_classes, H,
    W)}`` (torchvision's segmentation contract; the ``segmentation`` task reads ``"out"``).

    Feature paths: ``stage_names`` ``backbone.stem``, ``backbone.s1``, ``backbone.s2``,
    ``backbone.s3`` (1/2 to 1/16: at 64 px ``(B, widths[i], 32|16|8|4, ...)``),
    ``preact_stage_names`` the inputs of each stage's last ReLU, ``embedding_path``
    ``backbone.s3`` (the bottleneck map; no pooled embedding). ``named_paths``:
    ``"logits"`` = ``classifier`` (the pre-upsample logits ``(B, K, H/4, W/4)``, what the
    distillers cache: the upsampling is deterministic), ``"low"`` = ``backbone.s1``,
    ``"high"`` = ``backbone.s3``.

    Args:
        num_classes: Classes, background included (4 for the basic scenes).
        in_channels: Image channels.
        widths: Encoder channels.
        inter_channels: The head's intermediate width.
        mean, std: The split's per-channel statistics (default 0 and 1).
        stem_convs: Convolutions in the encoder's stem (default 1; 2 reproduces the
            design's parameter counts).

    Returns:
        The randomly initialised :class:`SceneLRASPP`.
    """
    model = SceneLRASPP(widths, num_classes, in_channels, inter_channels, mean, std, stem_convs)
    enc = model.backbone
    set_feature_paths(
        model,
        stages=enc.stage_paths("backbone"),
        preact=enc.preact_paths("backbone"),
        embedding="backbone.s3",
        num_classes=num_classes,
    )
    model.named_paths = {"logits": "classifier", "low": "backbone.s1", "high": "backbone.s3"}
    return model


# -- encoder-decoders: depth, pose, lanes --------------------------------------------------------


class FPNDecoder(nn.Module):
    """An FPN-like decoder back to 1/2: a 1x1 lateral convolution per encoder stage
    (``lateral.0`` for the stem ... ``lateral.3`` for ``s3``) to ``channels``, summed top-down
    (each partial sum upsampled by nearest neighbours to the next stage's size), then one
    conv-BN-ReLU (``fuse``)."""

    def __init__(self, widths: Sequence[int], channels: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(w, channels, 1) for w in widths)
        self.fuse = ConvBlock(channels, channels)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        x = self.lateral[-1](features[-1])
        for i in range(len(features) - 2, -1, -1):
            lateral = self.lateral[i](features[i])
            x = lateral + F.interpolate(x, size=lateral.shape[-2:], mode="nearest")
        return self.fuse(x)


class EncoderDecoder(nn.Module):
    """:class:`Normalize`, a :class:`SceneEncoder` (``enc``), an :class:`FPNDecoder` (``dec``,
    width ``widths[0]``) and a 1x1 convolution (``head``) to ``out_channels`` maps at 1/2 of
    the input. :meth:`head_map` returns the head's output; subclasses turn it into their task's
    output. The head starts near zero (weights normal with std 0.001, bias 0), so the first
    predictions are flat: depth 1, heatmaps 0, uniform slot probabilities.

    Feature paths (for every subclass): ``stage_names`` ``enc.stem``, ``enc.s1``, ``enc.s2``,
    ``enc.s3`` (at 1/2, 1/4, 1/8, 1/16), ``preact_stage_names`` the inputs of each stage's last
    ReLU, and ``named_paths`` ``"logits"`` = ``head`` (the 1/2-resolution output map),
    ``"bottleneck"`` = ``enc.s3``, ``"decoder"`` = ``dec``.
    """

    def __init__(
        self,
        widths: Sequence[int],
        out_channels: int,
        in_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        stem_convs: int | None = None,
    ) -> None:
        super().__init__()
        check_positive_int(out_channels, "out_channels")
        self.normalize = _normalize(mean, std, in_channels)
        self.enc = SceneEncoder(widths, in_channels, 2, stem_convs)
        self.dec = FPNDecoder(self.enc.widths, self.enc.widths[0])
        self.head = nn.Conv2d(self.enc.widths[0], out_channels, 1)
        _init_convs(self)
        # He's fan_out init would give this 1x1 head a weight std of sqrt(2 / out_channels),
        # outputs of std ~5 at the start (log-depths of e^5); the pose convention instead
        # (Simple Baselines' final layer: normal std 0.001, bias 0; not verified at the source)
        nn.init.normal_(self.head.weight, std=0.001)
        nn.init.zeros_(self.head.bias)

    def encode(self, x: Tensor) -> OrderedDict[str, Tensor]:
        """The encoder's four maps of a batch ``(B, C, H, W)`` (checked)."""
        _check_batch(x, 4, f"{type(self).__name__}", "(B, C, H, W)")
        return self.enc(self.normalize(x))

    def head_map(self, features: Mapping[str, Tensor]) -> Tensor:
        """The head's output at 1/2 resolution from the encoder's maps."""
        return self.head(self.dec(list(features.values())))

    def _annotate(self, embedding: str, num_classes: int, **named: str) -> None:
        set_feature_paths(
            self,
            stages=self.enc.stage_paths("enc"),
            preact=self.enc.preact_paths("enc"),
            embedding=embedding,
            num_classes=num_classes,
        )
        self.named_paths = {"logits": "head", "bottleneck": "enc.s3", "decoder": "dec", **named}


class DepthNet(EncoderDecoder):
    """Monocular depth: the encoder-decoder predicts log-depth at 1/2 resolution (``head``),
    upsampled bilinearly x2 (``align_corners=False``) and exponentiated.

    Input ``(B, C, H, W)``; output the depth map ``(B, 1, H, W)`` (positive). ``named_paths``
    ``"logits"`` is the log-depth at 1/2, ``(B, 1, H/2, W/2)``, what the distillers compare and
    cache; ``embedding_path`` is ``enc.s3`` (the bottleneck map, ``(B, widths[3], H/16,
    W/16)``); ``num_classes`` is 1 (one output map).
    """

    def __init__(self, widths: Sequence[int], in_channels: int = 3, **kwargs: Any) -> None:
        super().__init__(widths, 1, in_channels, **kwargs)
        self._annotate("enc.s3", 1)

    def forward(self, x: Tensor) -> Tensor:
        log_depth = self.head_map(self.encode(x))
        up = F.interpolate(log_depth, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return up.exp()


class PoseNet(EncoderDecoder):
    """Top-down keypoint heatmaps: the encoder-decoder's output at 1/2 resolution, one map per
    keypoint slot, no upsampling (16x16 heatmaps for 32x32 crops).

    Input ``(B, C, H, W)``; output heatmaps ``(B, joints, H/2, W/2)``. ``embedding_path`` is
    ``enc.s3`` (the bottleneck map); ``num_classes`` is ``joints``.
    """

    def __init__(
        self, widths: Sequence[int], joints: int = 4, in_channels: int = 3, **kwargs: Any
    ) -> None:
        check_positive_int(joints, "joints")
        super().__init__(widths, joints, in_channels, **kwargs)
        self._annotate("enc.s3", joints)

    def forward(self, x: Tensor) -> Tensor:
        return self.head_map(self.encode(x))


class LaneNet(EncoderDecoder):
    """Lanes as SCNN and ENet-SAD pose them: slot logits (background + ``slots`` lanes) at 1/2
    resolution (``head``), upsampled bilinearly x2, and an existence head (the bottleneck
    ``enc.s3`` average-pooled, ``exist_pool``, then a linear layer, ``exist``).

    Input ``(B, C, H, W)`` (48x128 roads); output ``{"out": (B, 1 + slots, H, W) slot
    logits, "exist": (B, slots) existence logits}`` (the ``lanes`` task's contract).
    ``named_paths`` ``"logits"`` = ``head`` (``(B, 1 + slots, H/2, W/2)``, 24x64 for roads),
    ``"exist"`` = ``exist``; ``embedding_path`` is ``exist_pool`` (the pooled bottleneck
    ``(B, widths[3])``); ``num_classes`` is ``1 + slots``. SAD's blocks are ``enc.s1``,
    ``enc.s2``, ``enc.s3`` (1/4, 1/8, 1/16).
    """

    def __init__(
        self, widths: Sequence[int], slots: int = 4, in_channels: int = 3, **kwargs: Any
    ) -> None:
        check_positive_int(slots, "slots")
        super().__init__(widths, 1 + slots, in_channels, **kwargs)
        self.exist_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.exist = nn.Linear(self.enc.widths[3], slots)
        self._annotate("exist_pool", 1 + slots, exist="exist")

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = self.encode(x)
        logits = self.head_map(features)
        out = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return {"out": out, "exist": self.exist(self.exist_pool(features["s3"]))}


_DENSE_PAPER = "Own encoder-decoder (design note, section 3): a stride-2 encoder and an FPN-like decoder (Lin et al. 2017)"


@register_model(
    "depth_s",
    family=_FAMILY,
    description="A ~75k-parameter depth student for 64-px scenes: encoder-decoder (8, 16, 32, 64), log-depth at 1/2.",
    paper=_DENSE_PAPER,
    defaults={"widths": (8, 16, 32, 64)},
)
@register_model(
    "depth_t",
    family=_FAMILY,
    description="A ~473k-parameter depth teacher for 64-px scenes: encoder-decoder (32, 64, 96, 128), log-depth at 1/2.",
    paper=_DENSE_PAPER,
)
def depth_net(
    num_classes: int = 1,
    in_channels: int = 3,
    widths: Sequence[int] = (32, 64, 96, 128),
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    stem_convs: int | None = None,
) -> DepthNet:
    """A :class:`DepthNet`: ``(B, C, H, W)`` -> depth ``(B, 1, H, W)``.

    Args:
        num_classes: Ignored (one output map; ``build_model`` always passes one).
        in_channels: Image channels.
        widths: Encoder channels (the decoder's width is ``widths[0]``).
        mean, std: The split's per-channel statistics (default 0 and 1).
        stem_convs: Convolutions in the encoder's stem (default 1).
    """
    del num_classes
    return DepthNet(widths, in_channels, mean=mean, std=std, stem_convs=stem_convs)


@register_model(
    "pose_s",
    family=_FAMILY,
    description="A ~75k-parameter pose student for 32-px crops: encoder-decoder (8, 16, 32, 64), 4 heatmaps at 16x16.",
    paper=_DENSE_PAPER,
    defaults={"widths": (8, 16, 32, 64)},
)
@register_model(
    "pose_t",
    family=_FAMILY,
    description="A ~473k-parameter pose teacher for 32-px crops: encoder-decoder (32, 64, 96, 128), 4 heatmaps at 16x16.",
    paper=_DENSE_PAPER,
)
def pose_net(
    num_classes: int = 4,
    in_channels: int = 3,
    widths: Sequence[int] = (32, 64, 96, 128),
    joints: int = 4,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    stem_convs: int | None = None,
) -> PoseNet:
    """A :class:`PoseNet`: crops ``(B, C, H, W)`` -> heatmaps ``(B, joints, H/2, W/2)``.

    Args:
        num_classes: Ignored (``build_model`` always passes one): the heatmaps are set by
            ``joints``.
        in_channels: Image channels.
        widths: Encoder channels (the decoder's width is ``widths[0]``).
        joints: Keypoint slots per object (4 in the scenes).
        mean, std: The split's per-channel statistics (default 0 and 1).
        stem_convs: Convolutions in the encoder's stem (default 1).
    """
    del num_classes
    return PoseNet(widths, joints, in_channels, mean=mean, std=std, stem_convs=stem_convs)


@register_model(
    "lanenet_s",
    family=_FAMILY,
    description="A ~75k-parameter lane student for 48x128 roads: encoder-decoder (8, 16, 32, 64), 5 slot logits and 4 existence logits.",
    paper="SCNN / ENet-SAD's outputs (Pan et al. 2018; Hou et al. 2019) on an own encoder-decoder",
    defaults={"widths": (8, 16, 32, 64)},
)
@register_model(
    "lanenet_t",
    family=_FAMILY,
    description="A ~299k-parameter lane teacher for 48x128 roads: encoder-decoder (16, 32, 64, 128), 5 slot logits and 4 existence logits.",
    paper="SCNN / ENet-SAD's outputs (Pan et al. 2018; Hou et al. 2019) on an own encoder-decoder",
    defaults={"widths": (16, 32, 64, 128)},
)
def lane_net(
    num_classes: int = 5,
    in_channels: int = 3,
    widths: Sequence[int] = (16, 32, 64, 128),
    slots: int = 4,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    stem_convs: int | None = None,
) -> LaneNet:
    """A :class:`LaneNet`: roads ``(B, C, H, W)`` -> ``{"out": (B, 1 + slots, H, W), "exist":
    (B, slots)}``.

    Args:
        num_classes: Ignored (``build_model`` always passes one): the channels are
            ``1 + slots``.
        in_channels: Image channels.
        widths: Encoder channels (the decoder's width is ``widths[0]``).
        slots: Lane slots (CULane's 4).
        mean, std: The split's per-channel statistics (default 0 and 1).
        stem_convs: Convolutions in the encoder's stem (default 1).
    """
    del num_classes
    return LaneNet(widths, slots, in_channels, mean=mean, std=std, stem_convs=stem_convs)


# -- faces: embedding networks -------------------------------------------------------------------


class CosineHead(nn.Module):
    """A cosine classifier: ``logits_j = s * cos(W_j, e)`` (NormFace, Wang et al. 2017).

    .. math:: z_j = s \\, \\frac{W_j^\\top e}{\\lVert W_j \\rVert \\, \\lVert e \\rVert}

    Args:
        dim: Embedding width ``D``.
        num_classes: Identities (rows of ``W``, shape ``(num_classes, D)``; no bias).
        s: The scale (NormFace's ``s``; 16 in the design note, no margin).

    Example:
        >>> import torch
        >>> head = CosineHead(4, 3, s=16)
        >>> head(torch.randn(2, 4)).abs().max() <= 16
        tensor(True)
    """

    def __init__(self, dim: int, num_classes: int, s: float = 16.0) -> None:
        super().__init__()
        check_positive_int(dim, "dim")
        check_positive_int(num_classes, "num_classes")
        if not s > 0:
            raise ValueError(f"the scale s must be positive, got {s!r}.")
        self.s = float(s)
        self.dim, self.num_classes = dim, num_classes
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(dim))

    def forward(self, embedding: Tensor) -> Tensor:
        if embedding.dim() != 2 or embedding.shape[1] != self.dim:
            raise ShapeMismatchError(
                f"the cosine head takes embeddings (B, {self.dim}), got {_shape(embedding)}."
            )
        return cosine_logits(embedding, self.weight, self.s)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_classes={self.num_classes}, s={self.s}"


class FaceNet(nn.Module):
    """An embedding network: a plain-CNN trunk (``stages``, ``avgpool``, ``flatten`` of
    :class:`~kdtutor.models.small_cnn.ConvNet`, its classifier dropped), ``embed`` (linear to
    ``D``), ``bn`` (``BatchNorm1d``), and the L2-normalised result as output. ``head`` (a
    :class:`CosineHead` over the training identities) is part of the module but **not** of its
    ``forward``: a distiller computes ``model.head(embedding)`` for its identity loss, and a
    trained teacher ships with its head (``with_head=False`` leaves it out, for a student whose
    distiller brings its own).

    Input ``(B, C, H, W)`` faces; output the embedding ``(B, D)``, unit norm (the ``retrieval``
    task's input). Feature paths: ``stage_names`` the trunk's stages (``stages.0 ...``),
    ``preact_stage_names`` its pre-ReLU maps, ``embedding_path`` ``bn`` (the embedding before
    L2 normalisation, ``(B, D)``: what RKD reads unnormalised); ``named_paths``
    ``"embedding"`` = ``bn``, ``"pooled"`` = ``flatten`` (the trunk's pooled vector),
    ``"head"`` (called by a distiller, never by ``forward``);
    ``num_classes`` is the head's identity count.
    """

    def __init__(
        self,
        trunk: str = "cnn_large",
        embedding_dim: int = 128,
        num_classes: int = 1000,
        in_channels: int = 3,
        s: float = 16.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        normalize_output: bool = True,
        with_head: bool = True,
    ) -> None:
        super().__init__()
        from . import build_model  # the package, once kdtutor.models is initialised

        check_positive_int(embedding_dim, "embedding_dim")
        self.normalize = _normalize(mean, std, in_channels)
        net = build_model(trunk, num_classes=1, in_channels=in_channels)
        for name in ("stages", "avgpool", "flatten"):
            if not hasattr(net, name):
                raise ValueError(
                    f"the trunk {trunk!r} is not a plain CNN (kdtutor.models.small_cnn: it has "
                    f"no {name!r}); use 'cnn_large', 'cnn_wide_s2' or another ConvNet preset."
                )
        self.stages, self.avgpool, self.flatten = net.stages, net.avgpool, net.flatten
        self.embed = nn.Linear(net.fc.in_features, embedding_dim)
        self.bn = nn.BatchNorm1d(embedding_dim)
        self.head = CosineHead(embedding_dim, num_classes, s) if with_head else None
        self.normalize_output = normalize_output
        set_feature_paths(
            self,
            stages=net.stage_names,
            preact=net.preact_stage_names,
            embedding="bn",
            num_classes=num_classes,
        )
        self.named_paths = {"embedding": "bn", "pooled": "flatten"}
        if with_head:
            self.named_paths["head"] = "head"

    def embedding(self, x: Tensor) -> Tensor:
        """The embedding before L2 normalisation, ``(B, D)``."""
        _check_batch(x, 4, "a face network", "(B, C, H, W)")
        x = self.flatten(self.avgpool(self.stages(self.normalize(x))))
        return self.bn(self.embed(x))

    def forward(self, x: Tensor) -> Tensor:
        e = self.embedding(x)
        return F.normalize(e, dim=1) if self.normalize_output else e


@register_model(
    "facenet_s",
    family=_FAMILY,
    description="A ~92k-parameter face-embedding student: cnn_wide_s2's trunk, 64-d embedding, 1,000-identity cosine head (not in forward).",
    paper="NormFace (Wang et al. 2017) on the book's cnn_wide_s2 trunk",
    defaults={"trunk": "cnn_wide_s2", "embedding_dim": 64},
)
@register_model(
    "facenet_t",
    family=_FAMILY,
    description="A ~1.33M-parameter face-embedding teacher: cnn_large's trunk, 128-d embedding, 1,000-identity cosine head (not in forward).",
    paper="NormFace (Wang et al. 2017) on the book's cnn_large trunk",
)
def face_net(
    num_classes: int = 1000,
    in_channels: int = 3,
    trunk: str = "cnn_large",
    embedding_dim: int = 128,
    s: float = 16.0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    normalize_output: bool = True,
    with_head: bool = True,
) -> FaceNet:
    """A :class:`FaceNet`: faces ``(B, C, H, W)`` -> unit embeddings ``(B, embedding_dim)``.

    Args:
        num_classes: Training identities of the cosine ``head`` (1,000 for the faces).
        in_channels: Image channels.
        trunk: A :mod:`~kdtutor.models.small_cnn` preset (``cnn_large``, ``cnn_wide_s2``).
        embedding_dim: ``D``.
        s: The head's scale.
        mean, std: The split's per-channel statistics (default 0 and 1).
        normalize_output: Return the L2-normalised embedding (else the ``bn`` output).
        with_head: Build the cosine ``head`` (the design's parameter counts include it). A
            student whose distiller brings its own head (the chapter's face methods do) can
            leave it out: ``facenet_s`` then has 27,984 parameters.
    """
    return FaceNet(
        trunk, embedding_dim, num_classes, in_channels, s, mean, std, normalize_output, with_head
    )


# -- super-resolution: EDSR ----------------------------------------------------------------------


class ResBlock(nn.Module):
    """EDSR's residual block: ``x + res_scale * conv2(relu(conv1(x)))``, no batch norm."""

    def __init__(self, channels: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        return x + self.res_scale * self.conv2(self.relu(self.conv1(x)))


class EDSR(nn.Module):
    """EDSR-style super-resolution (Lim et al. 2017): a conv ``head``, ``blocks`` residual
    blocks without batch norm (``body``), a global skip, and a sub-pixel tail (``tail``: one
    convolution to ``C * scale^2`` channels and ``PixelShuffle(scale)``, Shi et al. 2016),
    between :class:`Normalize` and its inverse (EDSR's ``sub_mean`` / ``add_mean``).

    Input LR ``(B, C, h, w)``; output ``(B, C, scale h, scale w)`` in the data's units (not
    clamped). Feature paths: ``stage_names`` the blocks ``body.0 ... body.{blocks-1}``
    (``(B, features, h, w)``), no ``preact_stage_names``, ``embedding_path`` the last block
    (no pooled embedding); ``named_paths`` ``"fakd.0/1/2"``: the blocks at relative depths
    1/3, 2/3 and 1 (block ``round(k n / 3)``, 1-based: blocks 2, 4, 6 of 6 and 1, 3, 4 of 4,
    FAKD's three features in the design note); ``num_classes`` is ``C`` (output channels).
    The tail has no convolution after the shuffle, and the body no convolution after its
    blocks (EDSR has both): the design's parameter counts (272 k, 26 k) are this network's.
    """

    def __init__(
        self,
        features: int = 48,
        blocks: int = 6,
        scale: int = 4,
        in_channels: int = 3,
        res_scale: float = 1.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        for value, name in ((features, "features"), (blocks, "blocks"), (scale, "scale")):
            check_positive_int(value, name)
        self.scale = scale
        self.normalize = _normalize(mean, std, in_channels)
        self.head = nn.Conv2d(in_channels, features, 3, padding=1)
        self.body = nn.Sequential(*(ResBlock(features, res_scale) for _ in range(blocks)))
        self.tail = nn.Sequential(
            nn.Conv2d(features, in_channels * scale**2, 3, padding=1), nn.PixelShuffle(scale)
        )
        stages = tuple(f"body.{i}" for i in range(blocks))
        set_feature_paths(
            self, stages=stages, preact=(), embedding=stages[-1], num_classes=in_channels
        )
        picks = [max(1, round((k + 1) * blocks / 3)) - 1 for k in range(3)]
        self.named_paths = {f"fakd.{k}": f"body.{i}" for k, i in enumerate(picks)}

    def forward(self, x: Tensor) -> Tensor:
        _check_batch(x, 4, "a super-resolution network", "(B, C, h, w) of LR images")
        h = self.head(self.normalize(x))
        return self.normalize.inverse(self.tail(self.body(h) + h))


@register_model(
    "edsr_s",
    family=_FAMILY,
    description="A ~26k-parameter EDSR-style x4 student: 16 features, 4 residual blocks, sub-pixel tail.",
    paper="Lim et al. 2017, Enhanced Deep Residual Networks for Single Image Super-Resolution (CVPRW)",
    defaults={"features": 16, "blocks": 4},
)
@register_model(
    "edsr_t",
    family=_FAMILY,
    description="A ~272k-parameter EDSR-style x4 teacher: 48 features, 6 residual blocks, sub-pixel tail.",
    paper="Lim et al. 2017, Enhanced Deep Residual Networks for Single Image Super-Resolution (CVPRW)",
)
def edsr(
    num_classes: int = 3,
    in_channels: int = 3,
    features: int = 48,
    blocks: int = 6,
    scale: int = 4,
    res_scale: float = 1.0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> EDSR:
    """An :class:`EDSR`: LR ``(B, C, h, w)`` -> SR ``(B, C, scale h, scale w)``.

    Args:
        num_classes: Ignored (``build_model`` always passes one): the output has the input's
            channels.
        in_channels: Image channels.
        features: Width of the body.
        blocks: Residual blocks.
        scale: Upscaling factor (4: LR 16x16 -> 64x64).
        res_scale: EDSR's residual scaling (1 for small networks; 0.1 for EDSR's large one).
        mean, std: The split's per-channel statistics (default 0 and 1).
    """
    del num_classes
    return EDSR(features, blocks, scale, in_channels, res_scale, mean, std)


# -- action recognition: a 3D CNN and a 2D + temporal network ------------------------------------


def _check_clip(x: Tensor, what: str, channels: int) -> None:
    _check_batch(x, 5, what, f"of clips (B, T, {channels}, H, W)")
    if x.shape[2] != channels and x.shape[1] == channels:
        raise ShapeMismatchError(
            f"{what} takes clips (B, T, C, H, W), frames second; got {_shape(x)}, which looks "
            "like (B, C, T, H, W): pass x.transpose(1, 2)."
        )


class ConvBlock3d(nn.Module):
    """``relu(bn(conv3d(x)))``, 3x3x3 with padding 1, the ReLU its own module."""

    def __init__(
        self, in_channels: int, channels: int, stride: tuple[int, int, int] = (1, 1, 1)
    ) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm3d(channels)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))


class C3D(nn.Module):
    """A small 3D CNN (after Tran et al. 2015): six :class:`ConvBlock3d` in four stages named
    by their temporal stride, global average pooling and a linear classifier.

    Stages (widths ``w0 .. w5``, default 16, 32, 32, 64, 64, 128; strides ``(t, h, w)``):
    ``t1`` = ``w0`` stride (1, 2, 2); ``t2`` = ``w1`` stride (2, 2, 2), ``w2``; ``t4`` = ``w3``
    stride (2, 2, 2), ``w4``; ``t8`` = ``w5`` stride (2, 2, 2). On an 8-frame 32x32 clip their
    outputs are ``(B, C, T, H, W)`` = ``(B, 16, 8, 16, 16)``, ``(B, 32, 4, 8, 8)``, ``(B, 64, 2,
    4, 4)``, ``(B, 128, 1, 2, 2)``; ``pool`` gives the clip embedding ``(B, 128)``.

    Input clips ``(B, T, C, H, W)`` (the clips' layout; permuted inside); output logits ``(B,
    num_classes)``. Feature paths: ``stage_names`` ``t1``, ``t2``, ``t4``, ``t8`` (5-D maps),
    ``preact_stage_names`` the inputs of each stage's last ReLU, ``embedding_path`` ``pool``;
    ``named_paths`` ``"pool"`` and ``"t2"`` (the map with 4 time steps that MARS's temporal
    variant reads).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        widths: Sequence[int] = (16, 32, 32, 64, 64, 128),
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        w = _check_widths(widths, 6)
        check_positive_int(num_classes, "num_classes")
        self.normalize = _normalize(mean, std, in_channels)
        self.t1 = nn.Sequential(ConvBlock3d(in_channels, w[0], (1, 2, 2)))
        self.t2 = nn.Sequential(ConvBlock3d(w[0], w[1], (2, 2, 2)), ConvBlock3d(w[1], w[2]))
        self.t4 = nn.Sequential(ConvBlock3d(w[2], w[3], (2, 2, 2)), ConvBlock3d(w[3], w[4]))
        self.t8 = nn.Sequential(ConvBlock3d(w[4], w[5], (2, 2, 2)))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten())
        self.fc = nn.Linear(w[5], num_classes)
        _init_convs(self)
        stages = ("t1", "t2", "t4", "t8")
        set_feature_paths(
            self,
            stages=stages,
            preact=tuple(f"{s}.{len(getattr(self, s)) - 1}.relu:input" for s in stages),
            embedding="pool",
            num_classes=num_classes,
        )
        self.named_paths = {"pool": "pool", "t2": "t2"}

    def forward(self, x: Tensor) -> Tensor:
        _check_clip(x, "c3d", self.normalize.channels)
        x = self.normalize(x).transpose(1, 2)  # (B, C, T, H, W)
        return self.fc(self.pool(self.t8(self.t4(self.t2(self.t1(x))))))


class TemporalMean(nn.Module):
    """The mean over the last (time) axis: ``(B, C, T) -> (B, C)``."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=-1)


class TSN(nn.Module):
    """A 2D + temporal network (after TSN, Wang et al. 2016): it takes the same clip as the
    3D teacher and reads only ``frames`` (default 0, 2, 4, 6), runs a 2D CNN on each
    (``frame``: a stride-2 stem and two stages of two conv-BN-ReLU, 16, 32, 64; then
    ``frame_pool``), a temporal ``Conv1d``-BN-ReLU over the frame embeddings (``temporal``),
    the mean over time (``pool``) and a linear classifier (``fc``).

    Input clips ``(B, T, C, H, W)`` with ``T > max(frames)``; output logits ``(B,
    num_classes)``. Feature paths: ``stage_names`` ``frame.stem``, ``frame.s1``, ``frame.s2``
    (2-D maps whose batch is **B x len(frames)**, clip-major: the frames are folded into the
    batch), ``preact_stage_names`` their last ReLUs' inputs, ``embedding_path`` ``pool`` (the
    clip embedding ``(B, 64)``); ``named_paths`` ``"pool"`` and ``"frames"`` =
    ``temporal:input`` (the frame embeddings ``(B, 64, len(frames))``, time last).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        widths: Sequence[int] = (16, 32, 64),
        frames: Sequence[int] = (0, 2, 4, 6),
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        w = _check_widths(widths, 3)
        check_positive_int(num_classes, "num_classes")
        frames = tuple(frames)
        if not frames or any(
            isinstance(f, bool) or not isinstance(f, int) or f < 0 for f in frames
        ):
            raise ValueError(
                f"frames must be frame indices >= 0, e.g. (0, 2, 4, 6); got {frames!r}."
            )
        self.frames = frames
        self.normalize = _normalize(mean, std, in_channels)
        self.frame = nn.Sequential(
            OrderedDict(
                stem=nn.Sequential(ConvBlock(in_channels, w[0], 2)),
                s1=nn.Sequential(ConvBlock(w[0], w[1], 2), ConvBlock(w[1], w[1])),
                s2=nn.Sequential(ConvBlock(w[1], w[2], 2), ConvBlock(w[2], w[2])),
            )
        )
        self.frame_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.temporal = nn.Sequential(
            nn.Conv1d(w[2], w[2], 3, padding=1, bias=False), nn.BatchNorm1d(w[2]), nn.ReLU()
        )
        self.pool = TemporalMean()
        self.fc = nn.Linear(w[2], num_classes)
        _init_convs(self)
        stages = ("frame.stem", "frame.s1", "frame.s2")
        set_feature_paths(
            self,
            stages=stages,
            preact=("frame.stem.0.relu:input", "frame.s1.1.relu:input", "frame.s2.1.relu:input"),
            embedding="pool",
            num_classes=num_classes,
        )
        self.named_paths = {"pool": "pool", "frames": "temporal:input"}

    def forward(self, x: Tensor) -> Tensor:
        _check_clip(x, "tsn", self.normalize.channels)
        if x.shape[1] <= max(self.frames):
            raise ShapeMismatchError(
                f"tsn reads frames {self.frames} but the clip has {x.shape[1]} frames "
                f"({_shape(x)}); the chapter's clips have 8."
            )
        x = self.normalize(x[:, list(self.frames)])
        b, t = x.shape[:2]
        e = self.frame_pool(self.frame(x.flatten(0, 1)))  # (B T, C), clip-major
        e = e.reshape(b, t, -1).transpose(1, 2)  # (B, C, T)
        return self.fc(self.pool(self.temporal(e)))


@register_model(
    "c3d_t",
    family=_FAMILY,
    description="A ~432k-parameter 3D CNN teacher for 8-frame 32x32 clips: six Conv3d-BN-ReLU (16-128), three temporal strides of 2.",
    paper="Tran et al. 2015, Learning Spatiotemporal Features with 3D Convolutional Networks (ICCV)",
)
def c3d(
    num_classes: int = 10,
    in_channels: int = 3,
    widths: Sequence[int] = (16, 32, 32, 64, 64, 128),
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> C3D:
    """A :class:`C3D`: clips ``(B, T, C, H, W)`` -> logits ``(B, num_classes)``.

    Args:
        num_classes: Actions (10 for the clips).
        in_channels: Frame channels.
        widths: The six convolutions' channels.
        mean, std: The split's per-channel statistics (default 0 and 1).
    """
    return C3D(num_classes, in_channels, widths, mean, std)


@register_model(
    "tsn_s",
    family=_FAMILY,
    description="A ~83k-parameter 2D+temporal student for 8-frame clips: reads frames 0, 2, 4, 6, a 2D CNN (16, 32, 64) per frame, a temporal Conv1d.",
    paper="Wang et al. 2016, Temporal Segment Networks (ECCV), with a temporal convolution",
)
def tsn(
    num_classes: int = 10,
    in_channels: int = 3,
    widths: Sequence[int] = (16, 32, 64),
    frames: Sequence[int] = (0, 2, 4, 6),
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> TSN:
    """A :class:`TSN`: clips ``(B, T, C, H, W)`` -> logits ``(B, num_classes)``, reading only
    ``frames``.

    Args:
        num_classes: Actions (10 for the clips).
        in_channels: Frame channels.
        widths: The per-frame CNN's channels.
        frames: The frame indices read (every other frame of 8 by default).
        mean, std: The split's per-channel statistics (default 0 and 1).
    """
    return TSN(num_classes, in_channels, widths, frames, mean, std)
