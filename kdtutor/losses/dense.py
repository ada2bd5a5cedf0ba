r"""Dense-prediction losses: segmentation, depth and pose distillation (chapter 8).

Pure functions of tensors, as the other loss families: the distillers of
:mod:`kdtutor.methods` (``skd``, ``cwd``, ``depth_kd``, ``fpd`` and the supervised
baselines ``seg_scratch``, ``depth_scratch``, ``pose_scratch``) call them on the maps they
capture. Maps are ``(B, C, H, W)``; every loss is a scalar averaged over the batch.

* Segmentation: the pixel-wise KL of structured KD (:func:`pixel_kd_loss`, Liu et al.
  2019), its pair-wise similarity term (:func:`pair_wise_loss` with
  :func:`similarity_matrix` and :func:`pool_nodes`), and channel-wise distillation
  (:func:`cwd_loss`, Shu et al. 2021). Pixel KD and CWD *are* Hinton's
  :func:`~kdtutor.losses.kd_loss` on reshaped logits: one row per pixel (a distribution over
  classes), one row per channel (a distribution over locations).
* Depth: the supervised log-depth L1 (:func:`log_depth_l1`) and the response term between
  two log-depth maps (:func:`log_depth_kd_loss`); the hint is FitNets'
  :func:`~kdtutor.losses.feature.hint_loss`.
* Pose: the heatmap MSE with ``target_weight`` masking (:func:`heatmap_mse`) and fast pose
  distillation (:func:`fpd_loss`, Zhang, Zhu, Ye 2019).

>>> import torch
>>> from kdtutor.losses import kd_loss
>>> from kdtutor.losses.dense import cwd_loss, pixel_kd_loss
>>> zs, zt = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
>>> per_pixel = lambda z: z.permute(0, 2, 3, 1).reshape(-1, 3)  # (B H W, K)
>>> torch.allclose(pixel_kd_loss(zs, zt), kd_loss(per_pixel(zs), per_pixel(zt), 1.0))
True
>>> per_channel = lambda z: z.reshape(2 * 3, 4 * 5)  # (B C, H W)
>>> torch.allclose(cwd_loss(zs, zt, 4.0), kd_loss(per_channel(zs), per_channel(zt), 4.0))
True

Sources (design note ``docs/design/applications.md``, 3.2-3.4): SKD's pixel-wise and
pair-wise terms were read at the authors' repository irfanICMLL/structure_knowledge_distillation
(``utils/criterion.py`` at ``3914ec7``: ``CriterionPixelWise``,
``CriterionPairWiseforWholeFeatAfterPool``; ``utils/utils.py`` at ``5cb4e49``:
``similarity``, ``sim_dis_compute``; ``run_train_val.sh``: ``lambda_pi`` 10, ``lambda_pa``
0.5, ``pool_scale`` 0.5, batch 8): **verified**. CWD's formula and its official ``tau`` 4
and weight 3 (TorchDistiller) are quoted from the references list, **not re-read**. FPD's
loss is the unofficial reproduction yuanyuanli85/Fast_Human_Pose_Estimation_Pytorch
(``example/mpii_kd.py`` at ``14604dc``: ``nn.MSELoss`` element means, ``kdloss_alpha``
0.5): **verified**. The depth terms follow issue 18's wording (the teacher's depth map and
features); no depth-KD paper was read, so they are **not verified** against one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ShapeMismatchError
from .response import kd_loss

__all__ = [
    "PIXEL_MODES",
    "cwd_loss",
    "fpd_loss",
    "heatmap_mse",
    "log_depth_kd_loss",
    "log_depth_l1",
    "node_kernel",
    "pair_wise_loss",
    "pixel_kd_loss",
    "pool_nodes",
    "similarity_matrix",
]

PIXEL_MODES: tuple[str, ...] = ("paper", "code")
"""Reductions of :func:`pixel_kd_loss`: the paper's mean KL, the authors' code's summed CE."""


def _check_map(t: Tensor, what: str) -> None:
    if t.dim() != 4:
        raise ShapeMismatchError(
            f"{what} needs maps of shape (B, C, H, W), got {tuple(t.shape)}. Read the network "
            "at a convolutional layer (a logits map or a feature map), not a pooled vector."
        )


def _check_pair(student: Tensor, teacher: Tensor, what: str) -> None:
    _check_map(student, what)
    _check_map(teacher, what)
    if student.shape != teacher.shape:
        raise ShapeMismatchError(
            f"{what}: the student's map {tuple(student.shape)} and the teacher's "
            f"{tuple(teacher.shape)} differ. Both must predict the same classes (channels) at "
            "the same resolution: build both with the same num_classes and output stride, or "
            "read both at layers of equal size (the method's logits_path)."
        )


def _pixels(logits: Tensor) -> Tensor:
    """``(B, K, H, W)`` -> ``(B H W, K)``: one row per pixel, its class logits."""
    return logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1])


def pixel_kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 1.0,
    *,
    mode: str = "paper",
) -> Tensor:
    r"""Pixel-wise distillation of structured KD (Liu, Chen, Liu, Qin, Luo, Wang, CVPR 2019).

    Each pixel :math:`i` of the ``(B, K, H', W')`` logit maps is a classification over
    :math:`K` classes, and the student matches the teacher's class distribution there:

    * ``mode="paper"`` (eq. 1, per image :math:`\frac{1}{W'H'}\sum_i
      \mathrm{KL}(q^t_i \| q^s_i)`, averaged over the batch):

      .. math::
          \mathcal{L}_{pi} = \frac{T^2}{B\,H'W'} \sum_{b}\sum_{i}
              \mathrm{KL}\big(q^t_{b,i} \,\|\, q^s_{b,i}\big),
          \qquad q = \mathrm{softmax}(z / T),

      which is exactly :func:`~kdtutor.losses.kd_loss` on the logits reshaped to one row
      per pixel, ``(B H' W', K)``;
    * ``mode="code"`` (the authors' ``CriterionPixelWise``): the cross entropy
      :math:`-\sum_{b,i,k} q^t \log q^s`, summed over the batch and divided by
      :math:`H'W'` only (times :math:`T^2`). It differs from the paper's value by the
      teacher's entropy (a constant) and by a factor :math:`B`: its gradient is exactly
      :math:`B` times the paper mode's, so with the script's batch of 8 its weight
      ``lambda_pi = 10`` acts as 80 on the paper's loss.

    SKD uses :math:`T = 1`. Both maps are the networks' outputs *before* upsampling to the
    image (same shape for student and teacher, as the authors' code asserts).

    Args:
        student_logits: ``(B, K, H, W)`` student logits.
        teacher_logits: ``(B, K, H, W)`` teacher logits (no gradient needed).
        temperature: :math:`T > 0` (1 in SKD).
        mode: ``"paper"`` or ``"code"``.

    Returns:
        A scalar tensor.
    """
    _check_pair(student_logits, teacher_logits, "pixel_kd_loss")
    if mode == "paper":
        return kd_loss(_pixels(student_logits), _pixels(teacher_logits), temperature)
    if mode == "code":
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}; SKD uses 1.")
        h, w = student_logits.shape[-2:]
        p_t = F.softmax(_pixels(teacher_logits) / temperature, dim=1)
        log_p_s = F.log_softmax(_pixels(student_logits) / temperature, dim=1)
        return -(p_t * log_p_s).sum() / (h * w) * temperature**2
    raise ValueError(f"pixel_kd_loss mode must be 'paper' or 'code', got {mode!r}.")


def node_kernel(size: tuple[int, int] | torch.Size, pool_scale: float = 0.5) -> tuple[int, int]:
    """The max-pooling window of SKD's pair-wise term: ``pool_scale`` times the map's height
    and width, rounded down (``int(H * scale)``, as the authors' code), at least 1 pixel."""
    if not 0 < pool_scale <= 1:
        raise ValueError(f"pool_scale must be in (0, 1], got {pool_scale}; SKD uses 0.5.")
    return max(1, int(size[0] * pool_scale)), max(1, int(size[1] * pool_scale))


def pool_nodes(feature: Tensor, kernel: tuple[int, int]) -> Tensor:
    """The nodes of SKD's pair-wise graph: ``feature`` max-pooled over non-overlapping
    ``kernel`` windows (stride = kernel, ``ceil_mode=True``: a partial window at the bottom
    or right edge is a node too), as the authors' ``nn.MaxPool2d`` does."""
    _check_map(feature, "pool_nodes")
    return F.max_pool2d(feature, kernel_size=kernel, stride=kernel, padding=0, ceil_mode=True)


def similarity_matrix(feature: Tensor, *, detach_norm: bool = False, eps: float = 1e-8) -> Tensor:
    r"""Cosine similarity between every pair of spatial nodes of a feature map.

    .. math::
        a_{ij} = \frac{f_i^\top f_j}{(\lVert f_i \rVert + \epsilon)(\lVert f_j \rVert + \epsilon)}

    for the ``C``-vectors :math:`f_i` at the :math:`N = HW` locations. The authors' code
    (``similarity`` in ``utils/utils.py``) adds :math:`\epsilon = 10^{-8}` to the norm and
    **detaches** it, so the gradient flows only through the numerator
    (``detach_norm=True``); the paper's cosine, differentiated as written, is the default.

    Args:
        feature: ``(B, C, H, W)``.
        detach_norm: treat the norms as constants in the backward pass (the authors' code).
        eps: added to each norm.

    Returns:
        ``(B, N, N)`` with :math:`N = HW` (row-major order of the locations).
    """
    _check_map(feature, "similarity_matrix")
    norm = feature.pow(2).sum(dim=1, keepdim=True).sqrt() + eps
    if detach_norm:
        norm = norm.detach()
    f = (feature / norm).flatten(2)  # (B, C, N)
    return torch.einsum("bcm,bcn->bmn", f, f)


def pair_wise_loss(
    student_feature: Tensor,
    teacher_feature: Tensor,
    pool_scale: float = 0.5,
    *,
    detach_norm: bool = False,
) -> Tensor:
    r"""Pair-wise distillation of structured KD (Liu et al., CVPR 2019, eq. 2).

    Both feature maps are max-pooled into nodes with the window :func:`node_kernel` of the
    *teacher's* map (:func:`pool_nodes`), the node similarities :math:`a_{ij}` are
    :func:`similarity_matrix`, and

    .. math::
        \mathcal{L}_{pa} = \frac{1}{B\,(W'H')^2} \sum_b \sum_{i \in \mathcal{R}}
            \sum_{j \in \mathcal{R}} \big(a^s_{b,ij} - a^t_{b,ij}\big)^2

    over the :math:`W'H'` nodes (the paper's per-image sum over pairs divided by
    :math:`(W'H')^2`, averaged over the batch; the authors' ``sim_dis_compute`` computes the
    same value). The channel counts may differ (no connector); the node grids must agree.

    Args:
        student_feature: ``(B, C_s, H, W)``.
        teacher_feature: ``(B, C_t, H, W)``.
        pool_scale: the pooling window as a fraction of the map (0.5 in SKD's script).
        detach_norm: the authors' detached norms (see :func:`similarity_matrix`).

    Returns:
        A scalar tensor.
    """
    _check_map(student_feature, "pair_wise_loss")
    _check_map(teacher_feature, "pair_wise_loss")
    kernel = node_kernel(teacher_feature.shape[-2:], pool_scale)
    s = pool_nodes(student_feature, kernel)
    t = pool_nodes(teacher_feature.detach(), kernel)
    if s.shape[0] != t.shape[0] or s.shape[-2:] != t.shape[-2:]:
        raise ShapeMismatchError(
            f"pair_wise_loss: the student's feature {tuple(student_feature.shape)} and the "
            f"teacher's {tuple(teacher_feature.shape)} pool to different node grids "
            f"({tuple(s.shape[-2:])} and {tuple(t.shape[-2:])}). Read both networks at "
            "layers of the same spatial size (the method's feature_path); channels may differ."
        )
    nodes = t.shape[-2] * t.shape[-1]
    a_s = similarity_matrix(s, detach_norm=detach_norm)
    a_t = similarity_matrix(t, detach_norm=detach_norm)
    return (a_s - a_t).pow(2).sum() / (t.shape[0] * nodes**2)


def cwd_loss(student_logits: Tensor, teacher_logits: Tensor, tau: float = 4.0) -> Tensor:
    r"""Channel-wise distillation (Shu, Liu, Gao, Yan, Shen, ICCV 2021).

    Each channel :math:`c` of a ``(B, C, H, W)`` map becomes a distribution over its
    :math:`HW` locations, :math:`\phi(y_c) = \mathrm{softmax}(y_c / \tau)`, and

    .. math::
        \mathcal{L}_{cwd} = \frac{\tau^2}{B\,C} \sum_b \sum_{c=1}^{C}
            \mathrm{KL}\big(\phi(y^t_{b,c}) \,\|\, \phi(y^s_{b,c})\big),

    which is exactly :func:`~kdtutor.losses.kd_loss` at :math:`T = \tau` on the maps
    reshaped to one row per channel, ``(B C, H W)``. The official code (TorchDistiller)
    uses :math:`\tau = 4` and weight 3; mmrazor's configs :math:`\tau = 1` and weight 5
    (both quoted from the references list, not re-read).

    Args:
        student_logits: ``(B, C, H, W)`` student map (logits, or a feature map matched to
            the teacher's channels).
        teacher_logits: ``(B, C, H, W)`` teacher map.
        tau: the temperature :math:`\tau > 0`.

    Returns:
        A scalar tensor.
    """
    _check_pair(student_logits, teacher_logits, "cwd_loss")
    b, c = student_logits.shape[:2]
    return kd_loss(student_logits.reshape(b * c, -1), teacher_logits.reshape(b * c, -1), tau)


def _depth_pair(pred: Tensor, target: Tensor, what: str) -> tuple[Tensor, Tensor]:
    if pred.shape != target.shape:
        if pred.numel() != target.numel():
            raise ShapeMismatchError(
                f"{what}: the predicted depth {tuple(pred.shape)} and the true depth "
                f"{tuple(target.shape)} differ: the network must predict one depth per pixel "
                "of the target map (B, 1, H, W)."
            )
        target = target.reshape(pred.shape)
    return pred, target


def log_depth_l1(pred: Tensor, target: Tensor, *, eps: float = 1e-6) -> Tensor:
    r"""The supervised depth loss of chapter 8: the mean absolute error of log-depths.

    .. math::
        \mathcal{L}_{depth} = \frac{1}{|V|} \sum_{i \in V} \big|\log \hat d_i - \log d_i\big|

    over the valid pixels :math:`V` (true depth :math:`d_i > 0`; pixels without depth are
    left out, as the ``depth`` task scores them). Predictions are clamped to at least
    ``eps`` before the log. The scenes' scale is fixed, so a scale-aware loss fits; Eigen et
    al.'s scale-invariant log loss is an exercise. This loss is ours (design note 3.3), not
    a paper's.

    Args:
        pred: predicted depth ``(B, 1, H, W)`` (positive: the networks end in ``exp``).
        target: true depth, the shape of ``pred`` (or ``(B, H, W)``).
        eps: the smallest prediction the log sees.

    Returns:
        A scalar tensor (0 when no pixel is valid).
    """
    pred, target = _depth_pair(pred, target, "log_depth_l1")
    valid = target > 0
    diff = (pred.clamp_min(eps).log() - target.clamp_min(eps).log()).abs()
    return (diff * valid).sum() / valid.sum().clamp_min(1)


def log_depth_kd_loss(student_log_depth: Tensor, teacher_log_depth: Tensor) -> Tensor:
    r"""The response term of depth distillation: the mean absolute difference of the two
    networks' log-depth maps,

    .. math::
        \mathcal{L}_{r} = \frac{1}{B\,HW} \sum_{b,i}
            \big|\log \hat d^s_{b,i} - \log \hat d^t_{b,i}\big|,

    on the maps the networks predict before upsampling (design note 3.3, after issue 18's
    "the teacher's depth map"; the depth-KD papers it cites, Pilzer et al. 2019 and Wang et
    al. 2021, were not read: **not verified**).

    Args:
        student_log_depth: ``(B, 1, H, W)`` student log-depth.
        teacher_log_depth: the teacher's, same shape.

    Returns:
        A scalar tensor.
    """
    if student_log_depth.shape != teacher_log_depth.shape:
        raise ShapeMismatchError(
            f"log_depth_kd_loss: the student's log-depth {tuple(student_log_depth.shape)} and "
            f"the teacher's {tuple(teacher_log_depth.shape)} differ. Read both networks at "
            "layers of the same resolution (the method's logits_path)."
        )
    return (student_log_depth - teacher_log_depth.detach()).abs().mean()


def _weighted(heatmaps: Tensor, weight: Tensor | None) -> Tensor:
    if weight is None:
        return heatmaps
    b, j = heatmaps.shape[:2]
    if weight.numel() != b * j:
        raise ShapeMismatchError(
            f"target_weight {tuple(weight.shape)} must hold one weight per heatmap: "
            f"(B, J) or (B, J, 1) for heatmaps {tuple(heatmaps.shape)}."
        )
    return heatmaps * weight.reshape(b, j, 1, 1).to(heatmaps.dtype)


def heatmap_mse(pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    r"""The mean squared error between heatmaps, with ``target_weight`` masking.

    .. math::
        \mathcal{L} = \frac{1}{B\,J\,hw} \sum_{b,j,u} \big(w_{bj} H_{bj}(u) - w_{bj}
            \hat H_{bj}(u)\big)^2

    ``nn.MSELoss`` (the element mean) as the FPD reproduction uses it; the weight of a slot
    multiplies both maps (the convention of HRNet's ``JointsMSELoss``), so a slot with
    weight 0 (the triangle's empty fourth keypoint) contributes nothing while the divisor
    still counts every element.

    Args:
        pred: ``(B, J, h, w)`` predicted heatmaps.
        target: ``(B, J, h, w)`` target heatmaps (ground truth or a teacher's).
        weight: ``(B, J)`` or ``(B, J, 1)`` slot weights; ``None``: every slot counts.

    Returns:
        A scalar tensor.
    """
    _check_map(pred, "heatmap_mse")
    if pred.shape != target.shape:
        raise ShapeMismatchError(
            f"heatmap_mse: predicted heatmaps {tuple(pred.shape)} and targets "
            f"{tuple(target.shape)} differ: the network needs one heatmap per keypoint slot at "
            "the targets' resolution."
        )
    return F.mse_loss(_weighted(pred, weight), _weighted(target, weight))


def fpd_loss(
    student: Tensor,
    teacher: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    alpha: float = 0.5,
) -> Tensor:
    r"""Fast pose distillation (Zhang, Zhu, Ye, CVPR 2019, eq. 3):

    .. math::
        \mathcal{L}_{fpd} = \alpha\,\mathrm{MSE}(H_s, H_t) + (1 - \alpha)\,
            \mathrm{MSE}(H_s, H_{gt}),

    both terms :func:`heatmap_mse` (element means, ``target_weight`` masking in both: a
    slot the data does not score is not distilled either). :math:`\alpha = 0.5` in the
    reproduction's ``kdloss_alpha``; :math:`\alpha = 0` is plain supervised heatmap
    regression, exactly :func:`heatmap_mse` on the ground truth.

    Args:
        student: ``(B, J, h, w)`` student heatmaps :math:`H_s`.
        teacher: the teacher's :math:`H_t`, same shape (no gradient needed).
        target: the ground-truth heatmaps :math:`H_{gt}`, same shape.
        weight: ``(B, J)`` or ``(B, J, 1)`` slot weights, or ``None``.
        alpha: the weight :math:`\alpha \in [0, 1]` of the teacher's term.

    Returns:
        A scalar tensor.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}; FPD uses 0.5.")
    kd = heatmap_mse(student, teacher.detach(), weight)
    return alpha * kd + (1.0 - alpha) * heatmap_mse(student, target, weight)
