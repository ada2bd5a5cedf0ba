r"""Losses of chapter 8's applications, part 2: face recognition, super-resolution and lanes.

Pure functions of tensors (no modules, no training loop), each with its formula, its paper
and its reduction. Where a method's term *is* an existing loss, the methods call that loss
and nothing is redefined here: face RKD is :func:`~kdtutor.losses.rkd_distance_loss` and
:func:`~kdtutor.losses.rkd_angle_loss`, MARS's feature term is
:func:`~kdtutor.losses.feature.hint_loss` (a mean squared error), and the identity-logit KD of
face KD is :func:`~kdtutor.losses.kd_loss`. :func:`pixel_kd_loss` is ``kd_loss`` on logits
reshaped to one row per pixel.

Sources (see ``docs/design/applications.md``): FAKD's spatial affinity was read in
Vincent-Hoo/Knowledge-Distillation-for-Super-resolution (``code/feature_transformation.py``
``spatial_similarity``, ``code/loss.py`` ``FeatureLoss``, at ``4e4f747``: verified); SAD's
attention maps in cardwing/Codes-for-Lane-Detection (``ENet-Label-Torch/models/init.lua`` at
``8c197ba``: verified, with the differences listed in :func:`sad_attention`); NormFace's
cosine logits from the paper (Wang et al. 2017; not read in code).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ShapeMismatchError

__all__ = [
    "cosine_logits",
    "embedding_cosine_loss",
    "existence_kd_loss",
    "fakd_loss",
    "sad_attention",
    "sad_loss",
    "spatial_affinity",
]


def cosine_logits(embeddings: Tensor, weight: Tensor, s: float = 16.0) -> Tensor:
    r"""Normalised-softmax logits (NormFace: Wang, Xiang, Cheng, Yuille, 2017, *NormFace: L2
    Hypersphere Embedding for Face Verification*): the scaled cosine between each embedding
    and each class's weight vector,

    .. math::
        z_{ik} = s \, \frac{e_i^\top w_k}{\|e_i\|_2 \, \|w_k\|_2},

    so :math:`\mathrm{CE}(z, y)` is the normalised softmax loss (CosFace's loss with margin 0).
    The scale :math:`s` sets how peaked the softmax can get (cosines lie in [-1, 1]); 16 is
    ours, in NormFace's range (it learns or sets :math:`s` between about 10 and 30).

    Args:
        embeddings: ``(B, D)``.
        weight: ``(K, D)``, one row per class (identity).
        s: the scale, > 0.

    Returns:
        ``(B, K)`` logits in ``[-s, s]``.
    """
    if embeddings.dim() != 2 or weight.dim() != 2 or embeddings.shape[1] != weight.shape[1]:
        raise ShapeMismatchError(
            f"cosine_logits takes embeddings (B, D) and class weights (K, D); got "
            f"{tuple(embeddings.shape)} and {tuple(weight.shape)}."
        )
    return s * F.linear(F.normalize(embeddings, dim=1), F.normalize(weight, dim=1))


def embedding_cosine_loss(student: Tensor, teacher: Tensor) -> Tensor:
    r"""One minus the cosine between each student embedding (already mapped to the teacher's
    width) and the teacher's, averaged over the batch:

    .. math::
        \mathcal{L}_{emb} = \frac1B \sum_i \Big(1 - \frac{s_i^\top t_i}{\|s_i\|_2\,\|t_i\|_2}\Big).

    Embedding-level KD for face recognition, in the direction of the angle only (retrieval
    scores embeddings by their cosine): FaceX-Zoo's embedding-KD rows and ShrinkTeaNet's
    angular distillation (Duong et al. 2019) both match directions; neither was read at
    source (**not verified**), the form is ours. The teacher carries no gradient.

    Args:
        student: ``(B, D)`` student embeddings mapped to the teacher's width.
        teacher: ``(B, D)``.
    """
    if student.shape != teacher.shape or student.dim() != 2:
        raise ShapeMismatchError(
            f"embedding_cosine_loss compares embeddings (B, D) of one width; got student "
            f"{tuple(student.shape)} and teacher {tuple(teacher.shape)}: map the student's "
            "with a linear connector first."
        )
    return (1.0 - F.cosine_similarity(student, teacher.detach(), dim=1)).mean()


def spatial_affinity(feature: Tensor, eps: float = 1e-7) -> Tensor:
    r"""FAKD's spatial affinity matrix (He, Wu, Lu, Luo, 2020, *FAKD: Feature-Affinity Based
    Knowledge Distillation for Efficient Image Super-Resolution*).

    With :math:`F \in \mathbb{R}^{C \times HW}` one sample's feature map and
    :math:`\hat F_{:,j} = F_{:,j} / (\|F_{:,j}\|_2 + \epsilon)` each position's channel vector
    normalised,

    .. math:: A = \hat F^\top \hat F \in \mathbb{R}^{HW \times HW},

    the cosine similarity of every pair of positions. It does not depend on the number of
    channels, so student and teacher maps of different widths compare directly (their spatial
    sizes must agree). :math:`\epsilon = 10^{-7}` is added to the norm, as the authors'
    ``spatial_similarity`` does (verified).

    Args:
        feature: ``(B, C, H, W)``.
        eps: added to each position's norm.

    Returns:
        ``(B, HW, HW)``.
    """
    if feature.dim() != 4:
        raise ShapeMismatchError(
            f"spatial_affinity takes feature maps (B, C, H, W), got {tuple(feature.shape)}."
        )
    f = feature.flatten(2)  # (B, C, HW)
    f = f / (f.pow(2).sum(1, keepdim=True).sqrt() + eps)
    return f.transpose(1, 2) @ f


def fakd_loss(
    student_features: Sequence[Tensor], teacher_features: Sequence[Tensor], eps: float = 1e-7
) -> Tensor:
    r"""FAKD's feature-affinity loss (He et al. 2020): the L1 distance between the spatial
    affinities (:func:`spatial_affinity`) of paired student and teacher feature maps, summed
    over the pairs,

    .. math::
        \mathcal{L}_{FA} = \sum_{l} \frac{1}{B\,(HW)^2}
            \big\| A(F^s_l) - A(F^t_l) \big\|_1 ,

    each pair's ``nn.L1Loss`` (a mean over the :math:`B (HW)^2` entries) and the sum over
    pairs as the authors' ``FeatureLoss`` computes it (verified). Their weight is 10
    (``--feature_distilation_type 10*SA``), applied by the method. The teacher's affinities
    carry no gradient.

    Args:
        student_features: ``L`` maps ``(B, C_s, H_l, W_l)``.
        teacher_features: ``L`` maps ``(B, C_t, H_l, W_l)`` (widths may differ, sizes may not).
        eps: see :func:`spatial_affinity`.
    """
    if len(student_features) != len(teacher_features) or not student_features:
        raise ShapeMismatchError(
            f"fakd_loss pairs student and teacher maps one to one; got {len(student_features)} "
            f"student and {len(teacher_features)} teacher maps."
        )
    total = student_features[0].new_zeros(())
    for s, t in zip(student_features, teacher_features, strict=True):
        if s.shape[0] != t.shape[0] or s.shape[2:] != t.shape[2:]:
            raise ShapeMismatchError(
                f"fakd_loss compares maps of one spatial size; got student {tuple(s.shape)} and "
                f"teacher {tuple(t.shape)}: pair blocks that run at the same resolution."
            )
        with torch.no_grad():
            target = spatial_affinity(t, eps)
        total = total + F.l1_loss(spatial_affinity(s, eps), target)
    return total


def existence_kd_loss(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    r"""Lane-existence distillation: the binary cross entropy of the student's existence
    logits against the teacher's existence probabilities,

    .. math::
        \mathcal{L}_{ex} = -\frac{1}{B S} \sum_{b,s} \big[\sigma(t_{bs}) \log \sigma(z_{bs})
            + (1 - \sigma(t_{bs})) \log (1 - \sigma(z_{bs}))\big],

    the existence branch's BCE (SCNN, ENet-SAD: Hou et al. 2019) with the teacher's soft
    targets in place of the labels. Ours (the design's ``lane_kd``); no paper distils
    existence this way that we read. The teacher carries no gradient.

    Args:
        student_logits: ``(B, S)`` existence logits of the S lane slots.
        teacher_logits: ``(B, S)``.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ShapeMismatchError(
            f"existence_kd_loss: student {tuple(student_logits.shape)} and teacher "
            f"{tuple(teacher_logits.shape)} existence logits differ; both must predict the "
            "same lane slots."
        )
    return F.binary_cross_entropy_with_logits(
        student_logits, torch.sigmoid(teacher_logits.detach())
    )


def sad_attention(feature: Tensor, size: Sequence[int] | None = None) -> Tensor:
    r"""SAD's attention map of one block (Hou, Ma, Liu, Loy, 2019, *Learning Lightweight Lane
    Detection CNNs by Self Attention Distillation*):

    .. math::
        \Psi(A) = \mathrm{softmax}_{HW}\Big(\mathcal{B}\big(\textstyle\sum_c A_c^2\big)\Big),

    the channels' squares summed at each position, resized by bilinear interpolation
    :math:`\mathcal{B}` to ``size`` and turned into a distribution over the positions by a
    softmax. The authors' Torch code (verified) applies ``Power(2)``, ``Sum`` over
    channels, ``SpatialUpSamplingBilinear(8)`` and ``SpatialSoftMax``; here the resize is
    PyTorch's ``align_corners=False`` to an exact size (Torch7's upsampling aligns corners,
    output ``(H - 1) 8 + 1``), and the softmax runs over the positions, as the paper says
    (Torch7's ``SpatialSoftMax`` is a softmax over the feature dimension at each position,
    so what it normalises after the channel sum depends on the tensor's layout there: the
    Lua code was read, not run).

    Args:
        feature: ``(B, C, H, W)``.
        size: the common ``(H', W')``; ``None`` keeps the map's own size.

    Returns:
        ``(B, H', W')``, each map summing to 1.
    """
    if feature.dim() != 4:
        raise ShapeMismatchError(
            f"sad_attention takes feature maps (B, C, H, W), got {tuple(feature.shape)}."
        )
    a = feature.pow(2).sum(1, keepdim=True)
    if size is not None and tuple(a.shape[-2:]) != tuple(size):
        a = F.interpolate(a, size=tuple(int(v) for v in size), mode="bilinear", align_corners=False)
    b, _, h, w = a.shape
    return F.softmax(a.reshape(b, h * w), dim=1).reshape(b, h, w)


def sad_loss(features: Sequence[Tensor], size: Sequence[int] | None = None) -> Tensor:
    r"""Self attention distillation (Hou et al. 2019): each block's attention map imitates the
    next (deeper) block's, which is the target and carries no gradient,

    .. math::
        \mathcal{L}_{SAD} = \sum_{m=1}^{M-1} \frac{1}{B H' W'}
            \big\| \Psi(A_m) - \mathrm{sg}\big[\Psi(A_{m+1})\big] \big\|_2^2 ,

    with :math:`\Psi` of :func:`sad_attention` at one common size (default: that of the
    largest map), the mean squared error per pair (Torch's ``MSECriterion``, verified) and the
    sum over the :math:`M - 1` successive pairs (each weighted 0.1 by the method, as the
    authors' criterion weights each of its two pairs).

    Args:
        features: ``M >= 2`` maps ``(B, C_m, H_m, W_m)``, shallow to deep.
        size: the common size; ``None``: the largest map's.
    """
    if len(features) < 2:
        raise ShapeMismatchError(
            f"sad_loss needs at least two successive blocks, got {len(features)}."
        )
    if size is None:
        size = max((tuple(f.shape[-2:]) for f in features), key=lambda s: s[0] * s[1])
    maps = [sad_attention(f, size) for f in features]
    total = maps[0].new_zeros(())
    for shallow, deep in itertools.pairwise(maps):
        total = total + F.mse_loss(shallow, deep.detach())
    return total
