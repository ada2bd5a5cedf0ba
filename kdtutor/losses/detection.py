r"""Detection distillation losses: pure functions of tensors (no modules, no training loop).

Two methods of chapter 8 use them, on torchvision's FCOS (:mod:`kdtutor.methods.det_kd`,
:mod:`kdtutor.methods.fgd`; the detector's own pass is :mod:`kdtutor.methods._detection`):

* :func:`det_cls_kd` and :func:`masked_hint_loss`: the soft classification term and the
  region-restricted hint of Chen et al. (2017) and Li, Jin, Yan (2017), in the per-class
  binary form FCOS's sigmoid head calls for;
* :func:`fgd_masks`, :func:`fgd_attention`, :func:`fgd_feature_loss`,
  :func:`fgd_attention_loss` and :func:`fgd_global_loss`: the pieces of Focal and Global
  Distillation (Yang et al., CVPR 2022), per FPN level.

Sources. FGD's formulas, reductions and mask rule are **verified** against the authors' code,
``yzd-v/FGD`` ``mmdet/distillation/losses/fgd.py`` at commit ``f1da292`` (read in this
session). Chen's and Li's are **not verified** (the design note's one-line descriptions of the
papers); the binary form is ours, stated as a deviation.

Boxes given to the FGD functions are already on the level's grid: ``(x0, y0, x1, y1)`` in
cells, ``x`` along the width ``W`` (the last axis), ``y`` along the height ``H``
(:func:`kdtutor.methods._detection.boxes_on_level` projects pixel boxes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ShapeMismatchError
from .feature import check_same_shape

__all__ = [
    "det_cls_kd",
    "fgd_attention",
    "fgd_attention_loss",
    "fgd_feature_loss",
    "fgd_global_loss",
    "fgd_masks",
    "masked_hint_loss",
]


def det_cls_kd(student_logits: Tensor, teacher_logits: Tensor, T: float = 1.0) -> Tensor:
    r"""The soft classification term for a sigmoid detection head, per class and location.

    .. math::
        \mathcal{L}_{cls} = \frac{T^2}{|L|} \sum_{l \in L} \sum_{c=1}^{K}
            \mathrm{BCE}\big(\sigma(z^s_{lc}/T),\ \sigma(z^t_{lc}/T)\big),
        \qquad \mathrm{BCE}(q, p) = -p \log q - (1-p) \log (1-q),

    with :math:`L` every location of every image of the batch (FCOS's ``(B, A)`` anchors
    points, ``|L| = B A``), :math:`z` the class logits ``(B, A, K)`` and :math:`\sigma` the
    sigmoid. Reduction: summed over classes, averaged over locations, times :math:`T^2` (as
    Hinton's KD, so the gradient's scale does not shrink with :math:`T`).

    Chen et al. (2017, "Learning Efficient Object Detection Models with Knowledge
    Distillation") distil a softmax over :math:`K+1` classes with a class-weighted cross
    entropy (background weight 1.5); FCOS has :math:`K` independent sigmoids and no background
    logit, so this is the per-class binary form of the same soft target (a stated deviation;
    Chen's form **not verified** at source). The cross entropy includes the teacher's own
    entropy, a constant: the term is not 0 when the student equals the teacher, its gradient is.

    Args:
        student_logits: :math:`z^s`, ``(..., K)`` (FCOS: ``(B, A, K)``).
        teacher_logits: :math:`z^t`, the same shape (no gradient flows into it).
        T: the temperature, > 0.
    """
    check_same_shape(student_logits, teacher_logits, "det_cls_kd")
    if not T > 0:
        raise ValueError(f"det_cls_kd: T must be > 0, got {T!r}.")
    target = torch.sigmoid(teacher_logits.detach() / T)
    per_location = student_logits.numel() // max(1, student_logits.shape[-1])
    total = F.binary_cross_entropy_with_logits(student_logits / T, target, reduction="sum")
    return T * T * total / max(1, per_location)


def masked_hint_loss(student: Tensor, teacher: Tensor, mask: Tensor) -> Tensor:
    r"""A hint restricted to a region: the mean squared error over the cells where ``mask``
    is set (every channel), 0 when no cell is.

    .. math::
        \mathcal{L}_{hint}^{M} = \frac{1}{C \sum_{b,h,w} M_{bhw}} \sum_{b,c,h,w}
            M_{bhw} \big(a(F^s)_{bchw} - F^t_{bchw}\big)^2

    With ``mask`` the ground-truth boxes projected on the level, this is the one-stage form of
    Li, Jin, Yan (2017, "Mimicking Very Efficient Network for Object Detection"), who mimic the
    teacher inside the region proposals and normalise by their size (**not verified** at
    source: the design note's description; proposals become ground-truth boxes here, since
    FCOS has no proposals). With a mask of ones it is FitNets' :func:`~kdtutor.losses.feature.hint_loss`.

    Args:
        student: the (connected) student feature :math:`a(F^s)`, ``(B, C, H, W)``.
        teacher: the teacher's :math:`F^t`, the same shape.
        mask: ``(B, H, W)``, bool or 0/1.
    """
    check_same_shape(student, teacher, "masked_hint_loss")
    if mask.shape != (student.shape[0], *student.shape[2:]):
        raise ShapeMismatchError(
            f"masked_hint_loss: the mask {tuple(mask.shape)} must be (B, H, W) = "
            f"{(student.shape[0], *student.shape[2:])} for features {tuple(student.shape)}."
        )
    m = mask.to(student.dtype).unsqueeze(1)
    cells = m.sum()
    squared = ((student - teacher.detach()) ** 2 * m).sum()
    return squared / (cells * student.shape[1]).clamp_min(1.0)


def fgd_masks(boxes: Sequence[Tensor], size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    r"""FGD's foreground and background masks on one FPN level (Yang et al., 2022, eq. 1-3).

    For image :math:`b` and each box :math:`j` on the grid, the authors' code takes the cells
    rows :math:`\lfloor y_0 \rfloor .. \lceil y_1 \rceil` and columns
    :math:`\lfloor x_0 \rfloor .. \lceil x_1 \rceil`, *both ends included* (so a box is grown
    by up to one cell), and

    .. math::
        M^{fg}_{bhw} = \max_{j \ni (h, w)} \frac{1}{H_j W_j},\quad
        H_j = \lceil y_1 \rceil + 1 - \lfloor y_0 \rfloor,\
        W_j = \lceil x_1 \rceil + 1 - \lfloor x_0 \rfloor;
        \qquad
        M^{bg}_{bhw} = \frac{[M^{fg}_{bhw} = 0]}{\sum_{h', w'} [M^{fg}_{bh'w'} = 0]}

    (overlapping boxes take the larger value, i.e. the smaller box; the background mask is
    left unnormalised, all zeros, when boxes cover the whole level). The size :math:`H_j W_j`
    counts cells that fall outside the grid for a box at the border, as the code does.
    **Verified**: ``yzd-v/FGD`` ``mmdet/distillation/losses/fgd.py`` at ``f1da292``, which
    indexes the mask ``[h, w]``; the first commit (``04900ad``) indexed it ``[w, h]``
    (transposed), fixed later; this follows the latest.

    Args:
        boxes: per image, ``(N_b, 4)`` boxes ``(x0, y0, x1, y1)`` in grid cells, inside the
            grid (:func:`kdtutor.methods._detection.boxes_on_level`).
        size: the level's ``(H, W)``.

    Returns:
        ``(fg, bg)``, each ``(B, H, W)`` float32.
    """
    height, width = int(size[0]), int(size[1])
    device = boxes[0].device if len(boxes) else torch.device("cpu")
    fg = torch.zeros(len(boxes), height, width, device=device)
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    for b, image_boxes in enumerate(boxes):
        if image_boxes.numel() == 0:
            continue
        if image_boxes.dim() != 2 or image_boxes.shape[1] != 4:
            raise ShapeMismatchError(
                f"fgd_masks: image {b}'s boxes are {tuple(image_boxes.shape)}, not (N, 4) "
                "(x0, y0, x1, y1) on the level's grid."
            )
        x0 = torch.floor(image_boxes[:, 0]).long()
        y0 = torch.floor(image_boxes[:, 1]).long()
        x1 = torch.ceil(image_boxes[:, 2]).long()
        y1 = torch.ceil(image_boxes[:, 3]).long()
        value = 1.0 / ((y1 + 1 - y0) * (x1 + 1 - x0)).float()
        in_rows = (rows[None] >= y0[:, None]) & (rows[None] <= y1[:, None])  # (N, H)
        in_cols = (cols[None] >= x0[:, None]) & (cols[None] <= x1[:, None])  # (N, W)
        inside = in_rows[:, :, None] & in_cols[:, None, :]  # (N, H, W)
        fg[b] = (inside.float() * value[:, None, None]).amax(dim=0)
    bg = (fg == 0).float()
    count = bg.sum(dim=(1, 2), keepdim=True)
    bg = torch.where(count > 0, bg / count.clamp_min(1.0), bg)
    return fg, bg


def fgd_attention(feature: Tensor, T: float) -> tuple[Tensor, Tensor]:
    r"""FGD's spatial and channel attention of a feature map (Yang et al., 2022, eq. 4-6).

    .. math::
        A^S = H W \,\mathrm{softmax}_{hw}\Big(\frac{1}{C}\sum_c |F_{chw}| \,/\, T\Big),\qquad
        A^C = C \,\mathrm{softmax}_{c}\Big(\frac{1}{HW}\sum_{h,w} |F_{chw}| \,/\, T\Big)

    per image, so each map averages to 1. **Verified** (``get_attention`` at ``f1da292``).

    Args:
        feature: ``(B, C, H, W)``.
        T: the temperature (the FCOS config's ``temp`` = 0.8).

    Returns:
        ``(spatial (B, H, W), channel (B, C))``.
    """
    if feature.dim() != 4:
        raise ShapeMismatchError(
            f"fgd_attention needs a feature map (B, C, H, W), got {tuple(feature.shape)}."
        )
    b, c, h, w = feature.shape
    value = feature.abs()
    spatial = h * w * F.softmax((value.mean(dim=1) / T).reshape(b, -1), dim=1)
    channel = c * F.softmax(value.mean(dim=(2, 3)) / T, dim=1)
    return spatial.reshape(b, h, w), channel


def fgd_feature_loss(
    student: Tensor,
    teacher: Tensor,
    fg: Tensor,
    bg: Tensor,
    spatial: Tensor,
    channel: Tensor,
) -> tuple[Tensor, Tensor]:
    r"""FGD's focal feature terms, foreground and background (Yang et al., 2022, eq. 7).

    .. math::
        L_{fg} = \frac1B \sum_{b,c,h,w} M^{fg}_{bhw} A^S_{bhw} A^C_{bc}
            \big(F^t_{bchw} - f(F^s)_{bchw}\big)^2,\qquad
        L_{bg} = \text{the same with } M^{bg}

    with the *teacher's* attentions :math:`A^S, A^C` (:func:`fgd_attention` of :math:`F^t`)
    and :math:`f` the 1x1 align convolution. The paper weights them by :math:`\alpha` and
    :math:`\beta`; the caller does. The code multiplies by square roots and takes a summed MSE,
    which is this sum; divided by the batch size :math:`B`. **Verified** (``get_fea_loss``).

    Args:
        student: :math:`f(F^s)`, ``(B, C, H, W)``.
        teacher: :math:`F^t`, the same shape (no gradient flows into it).
        fg, bg: the masks of :func:`fgd_masks`, ``(B, H, W)``.
        spatial, channel: the teacher's attentions, ``(B, H, W)`` and ``(B, C)``.

    Returns:
        ``(L_fg, L_bg)``.
    """
    check_same_shape(student, teacher, "fgd_feature_loss")
    weight = spatial.detach().unsqueeze(1) * channel.detach()[:, :, None, None]
    squared = weight * (teacher.detach() - student) ** 2
    batch = student.shape[0]
    fg_loss = (squared * fg.unsqueeze(1)).sum() / batch
    bg_loss = (squared * bg.unsqueeze(1)).sum() / batch
    return fg_loss, bg_loss


def fgd_attention_loss(
    spatial_s: Tensor, channel_s: Tensor, spatial_t: Tensor, channel_t: Tensor
) -> Tensor:
    r"""FGD's attention term (Yang et al., 2022, eq. 8), without its weight :math:`\gamma`.

    .. math::
        L_{at} = \frac1B \Big(\sum_{b,c} |A^C_{t,bc} - A^C_{s,bc}|
            + \sum_{b,h,w} |A^S_{t,bhw} - A^S_{s,bhw}|\Big)

    The paper writes an :math:`l_1` loss of the two attentions; the code sums the absolute
    differences and divides by the batch size. **Verified** (``get_mask_loss``).
    """
    check_same_shape(spatial_s, spatial_t, "fgd_attention_loss (spatial)")
    check_same_shape(channel_s, channel_t, "fgd_attention_loss (channel)")
    batch = spatial_s.shape[0]
    return (
        (channel_s - channel_t.detach()).abs().sum() + (spatial_s - spatial_t.detach()).abs().sum()
    ) / batch


def fgd_global_loss(student_global: Tensor, teacher_global: Tensor) -> Tensor:
    r"""FGD's global term (Yang et al., 2022, eq. 9-10), without its weight :math:`\lambda`.

    .. math::
        L_{global} = \frac1B \sum \big(\mathcal{R}(F^t) - \mathcal{R}(f(F^s))\big)^2,\qquad
        \mathcal{R}(F) = F + W_{v2}\,\mathrm{ReLU}\big(\mathrm{LN}(W_{v1}
            \textstyle\sum_{j} \frac{e^{W_k F_j}}{\sum_m e^{W_k F_m}} F_j)\big)

    :math:`\mathcal{R}` is a GcBlock (Cao et al., 2019), one trainable block for the student
    and one for the teacher (:class:`kdtutor.methods.fgd.GcBlock`); this function takes their
    outputs. Summed squared error divided by the batch size. **Verified** (``get_rela_loss``).
    Gradients reach the teacher-side block through ``teacher_global``, as in the code.
    """
    check_same_shape(student_global, teacher_global, "fgd_global_loss")
    return ((student_global - teacher_global) ** 2).sum() / student_global.shape[0]
