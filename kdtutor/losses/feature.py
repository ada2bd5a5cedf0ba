"""Feature-based losses: they compare what student and teacher compute inside the network.

Pure functions of tensors (no modules, no training loop). Each takes student and teacher
features that already have matching shapes where the method needs it (a connector from
:mod:`kdtutor.connectors` does the matching) and returns a scalar averaged over the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..connectors import match_spatial
from ..errors import ShapeMismatchError


def check_same_shape(student: Tensor, teacher: Tensor, what: str) -> None:
    """Raise a clear error when two features that must agree in shape do not."""
    if student.shape != teacher.shape:
        raise ShapeMismatchError(
            f"{what}: student feature {tuple(student.shape)} and teacher feature "
            f"{tuple(teacher.shape)} differ. Map the student feature with a connector "
            "(kdtutor.connectors.build_connector) or choose paths with equal shapes."
        )


def hint_loss(student: Tensor, teacher: Tensor) -> Tensor:
    r"""FitNets' hint loss (Romero et al., 2015): the mean squared error between the regressed
    student feature (the *hint*) and the teacher's guided-layer feature.

    .. math::
        \mathcal{L}_{HT} = \frac{1}{B\,C\,H\,W} \sum \big(r(F_s) - F_t\big)^2

    The paper writes :math:`\tfrac12\|\cdot\|^2` summed per sample; RepDistiller (and we) take
    the mean over all elements, which only rescales the weight ``beta`` (100 in RepDistiller).
    """
    check_same_shape(student, teacher, "hint_loss")
    return F.mse_loss(student, teacher)


def _check_maps(feature: Tensor, what: str) -> None:
    if feature.dim() != 4:
        raise ShapeMismatchError(
            f"{what} needs feature maps of shape (B, C, H, W), got {tuple(feature.shape)}. "
            "Choose convolutional stage outputs as paths (the default 'stages' paths), not "
            "pooled vectors or logits."
        )


def pool_to_smaller(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Bring two feature maps (B, C, H, W) to the same spatial size by adaptive average
    pooling the larger one to the smaller one's size (per dimension), as the attention-transfer
    code and RepDistiller do. Channel counts may differ; maps already equal in size come back
    unchanged."""
    size = (min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1]))
    return match_spatial(a, size), match_spatial(b, size)


def attention_map(feature: Tensor, p: float = 2.0, *, flatten: bool = True) -> Tensor:
    r"""Activation-based spatial attention map (Zagoruyko & Komodakis, 2017).

    .. math::
        Q = \operatorname{vec}\Big(\sum_{c=1}^{C} |F_c|^p\Big), \qquad
        \hat Q = \frac{Q}{\lVert Q \rVert_2}

    for a feature map :math:`F` of shape (B, C, H, W); returns :math:`\hat Q`, one unit vector
    of length :math:`HW` per sample (``flatten=False``: shaped (B, H, W), handy for plots).
    The authors' code takes the *mean* over channels of :math:`F^p`; after the normalisation
    the two agree (for even ``p``, :math:`F^p = |F|^p`).
    """
    _check_maps(feature, "attention_map")
    q = F.normalize(feature.abs().pow(p).sum(dim=1).flatten(1), dim=1)
    return q if flatten else q.view(feature.shape[0], *feature.shape[2:])


def at_loss(student: Tensor, teacher: Tensor, p: float = 2.0, mode: str = "code") -> Tensor:
    r"""Attention-transfer loss of one layer pair (Zagoruyko & Komodakis, 2017).

    Spatial sizes are first matched (:func:`pool_to_smaller`); channel counts may differ. With
    :math:`\hat Q` from :func:`attention_map` and :math:`B` samples:

    * ``mode="paper"`` (eq. 2 of the paper, a norm, not squared):
      :math:`\frac1B \sum_b \lVert \hat Q_s^{(b)} - \hat Q_t^{(b)} \rVert_2`;
    * ``mode="code"`` (the authors' code and RepDistiller, whose published numbers use it):
      :math:`\frac{1}{B\,HW} \sum_b \lVert \hat Q_s^{(b)} - \hat Q_t^{(b)} \rVert_2^2`,
      the mean over samples and positions of the squared difference.

    The weights (:math:`\beta/2` in the paper) are applied by the method.
    """
    _check_maps(student, "at_loss")
    _check_maps(teacher, "at_loss")
    s, t = pool_to_smaller(student, teacher)
    diff = attention_map(s, p) - attention_map(t, p)
    if mode == "code":
        return diff.pow(2).mean()
    if mode == "paper":
        return diff.norm(dim=1).mean()
    raise ValueError(f"at_loss mode must be 'paper' or 'code', got {mode!r}.")


def nst_loss(student: Tensor, teacher: Tensor) -> Tensor:
    r"""Neuron selectivity transfer (Huang & Wang, 2017): squared MMD with the polynomial
    kernel :math:`k(x, y) = (x^\top y)^2` (degree 2, :math:`c = 0`) between the student's and
    the teacher's channels.

    Each channel's map is flattened over space and L2-normalised, giving per sample the sets
    :math:`\{s_i\}_{i=1}^{C_s}` and :math:`\{t_j\}_{j=1}^{C_t}` of unit vectors in
    :math:`\mathbb{R}^{HW}` (spatial sizes matched first by :func:`pool_to_smaller`; channel
    counts may differ):

    .. math::
        \mathcal{L}_{MMD^2} = \frac{1}{C_s^2}\sum_{i,i'} k(s_i, s_{i'})
        + \frac{1}{C_t^2}\sum_{j,j'} k(t_j, t_{j'})
        - \frac{2}{C_s C_t}\sum_{i,j} k(s_i, t_j),

    averaged over the batch (as in the paper and RepDistiller).
    """
    _check_maps(student, "nst_loss")
    _check_maps(teacher, "nst_loss")
    s, t = pool_to_smaller(student, teacher)
    s = F.normalize(s.flatten(2), dim=2)
    t = F.normalize(t.flatten(2), dim=2)

    def kernel(a: Tensor, b: Tensor) -> Tensor:
        return (a @ b.transpose(1, 2)).pow(2)

    return kernel(s, s).mean() + kernel(t, t).mean() - 2 * kernel(s, t).mean()


def fsp_matrix(first: Tensor, second: Tensor) -> Tensor:
    r"""The FSP ("flow of solution procedure") matrix of Yim, Joo, Bae & Kim (2017) between two
    feature maps of the same network, :math:`F^1` (B, C1, H, W) and :math:`F^2` (B, C2, H, W):

    .. math::
        G_{ij} = \frac{1}{HW} \sum_{h,w} F^1_{i,h,w}\, F^2_{j,h,w},

    shape (B, C1, C2). When the spatial sizes differ the larger map is average-pooled to the
    smaller (RepDistiller; the paper pairs maps of equal size)."""
    _check_maps(first, "fsp_matrix")
    _check_maps(second, "fsp_matrix")
    a, b = pool_to_smaller(first, second)
    return a.flatten(2) @ b.flatten(2).transpose(1, 2) / (a.shape[-2] * a.shape[-1])


def fsp_loss(student: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
    r"""FSP loss (Yim et al., 2017) over consecutive feature pairs of each network.

    ``student`` and ``teacher`` are equally long lists of feature maps with matching shapes
    (student maps already brought to the teacher's channels by connectors). With
    :math:`G^i = G(F_i, F_{i+1})` from :func:`fsp_matrix`:

    .. math::
        \mathcal{L}_{FSP} = \sum_{i=1}^{n-1} \operatorname{mean}\big((G^i_s - G^i_t)^2\big)

    The paper sums the squared entries (:math:`\lVert G^i_s - G^i_t\rVert_2^2`, equal weights
    :math:`\lambda_i`); RepDistiller (and we) average them, which rescales each pair's weight
    by :math:`1/(C_i C_{i+1})`.
    """
    if len(student) != len(teacher):
        raise ShapeMismatchError(
            f"fsp_loss: {len(student)} student features but {len(teacher)} teacher features; "
            "they must pair up one to one."
        )
    if len(student) < 2:
        raise ShapeMismatchError(
            f"fsp_loss needs at least 2 feature maps per network (FSP matrices relate "
            f"consecutive layers), got {len(student)}. Pair two or more stages, e.g. "
            "student_paths=('stages.0', 'stages.1') and the teacher's equivalents."
        )
    total = student[0].new_zeros(())
    for i in range(len(student) - 1):
        for s, t in ((student[i], teacher[i]), (student[i + 1], teacher[i + 1])):
            check_same_shape(s, t, f"fsp_loss (pair {i})")
        g_s = fsp_matrix(student[i], student[i + 1])
        g_t = fsp_matrix(teacher[i], teacher[i + 1])
        total = total + (g_s - g_t).pow(2).mean()
    return total


def vid_loss(mean: Tensor, variance: Tensor, target: Tensor) -> Tensor:
    r"""Variational information distillation (Ahn, Hu, Damianou, Lawrence & Dai, 2019): the
    negative log-likelihood of the teacher feature :math:`t` under a Gaussian with mean
    :math:`\mu` (regressed from the student) and a learnt per-channel variance
    :math:`\sigma_c^2`, without the constant :math:`\tfrac12\log 2\pi`:

    .. math::
        \mathcal{L}_{VID} = \frac{1}{B\,C\,H\,W}\sum_{b,c,h,w}
        \frac12\Big(\log\sigma_c^2 + \frac{(t_{bchw} - \mu_{bchw})^2}{\sigma_c^2}\Big)

    ``mean`` and ``target`` have one shape, (B, C, H, W) or (B, C); ``variance`` is (C,) and
    positive. The paper sums over channels and positions; RepDistiller (and we) average,
    which rescales the weight. The loss can be negative (small variances).
    """
    check_same_shape(mean, target, "vid_loss")
    if variance.shape != (mean.shape[1],):
        raise ShapeMismatchError(
            f"vid_loss: variance has shape {tuple(variance.shape)} but the features have "
            f"{mean.shape[1]} channels; give one variance per channel."
        )
    var = variance.view(1, -1, *([1] * (mean.dim() - 2)))
    return 0.5 * (var.log() + (target - mean).pow(2) / var).mean()


def ofd_margin(weight: Tensor, bias: Tensor) -> Tensor:
    r"""OFD's per-channel teacher margin from the batch norm before a ReLU (Heo, Kim, Yun, Park,
    Kwak & Choi, 2019).

    If the batch norm's output in channel :math:`c` is :math:`x \sim \mathcal{N}(\mu, \sigma^2)`
    with :math:`\mu = \beta_c` (its bias) and :math:`\sigma = |\gamma_c|` (its weight), the
    margin is the expected negative response

    .. math::
        m_c = \mathbb{E}[x \mid x < 0]
            = \mu - \sigma\,\frac{\varphi(\mu/\sigma)}{\Phi(-\mu/\sigma)}
            = \mu - \sigma\,\frac{\sqrt{2/\pi}}{\operatorname{erfcx}\big(\mu/(\sigma\sqrt2)\big)},

    evaluated in float64 through the scaled complementary error function
    :math:`\operatorname{erfcx}(z) = e^{z^2}\operatorname{erfc}(z)`, which stays accurate where
    :math:`\Phi(-\mu/\sigma) \approx 0`. Deviation: the authors' code (and mdistiller) replace
    the formula by :math:`-3\sigma` when :math:`\Phi(-\mu/\sigma) \le 0.001`; we keep the exact
    value there (it tends to :math:`-\sigma^2/\mu`, just below zero). A channel with
    :math:`\sigma = 0` gets :math:`\min(\mu, 0)`.
    """
    mu = bias.detach().double()
    sigma = weight.detach().double().abs()
    safe = torch.where(sigma > 0, sigma, torch.ones_like(sigma))
    # erfcx(-inf) = inf: the ratio then vanishes and the margin is mu (all mass below zero).
    ratio = math.sqrt(2.0 / math.pi) / torch.special.erfcx(mu / (safe * math.sqrt(2.0)))
    margin = torch.where(sigma > 0, mu - safe * ratio, mu.clamp(max=0.0))
    return margin.to(weight.dtype)


def negative_mean(features: Tensor) -> Tensor:
    r"""Per-channel mean of the negative values of ``features`` (B, C, ...), an empirical
    estimate of OFD's margin :math:`m_c = \mathbb{E}[t_c \mid t_c < 0]` for teachers whose
    pre-activation is not the output of a batch norm. Channels without a negative value get 0
    (the limit of :func:`ofd_margin` for channels that are almost never negative)."""
    x = features.detach().transpose(0, 1).reshape(features.shape[1], -1).double()
    count = (x < 0).sum(dim=1).clamp(min=1)
    return (x.clamp(max=0.0).sum(dim=1) / count).to(features.dtype)


def ofd_loss(student: Tensor, teacher: Tensor, margin: Tensor) -> Tensor:
    r"""OFD's partial L2 distance of one layer (Heo, Kim, Yun, Park, Kwak & Choi, 2019).

    With the teacher's pre-ReLU feature clipped from below by its margin (the *margin ReLU*),
    :math:`t' = \max(t, m_c)`, and the connected student pre-ReLU feature :math:`s`:

    .. math::
        \mathcal{L}_{OFD} = \frac1B \sum_{b,c,h,w} (s - t')^2 \;
            \mathbb{1}\big[\,s > t' \;\lor\; t' > 0\,\big]

    Where the teacher is negative (its ReLU outputs zero) any student value below the margin
    is as good as the teacher's, so only students above it are penalised. The sum over
    elements divided by the batch size :math:`B` is the authors' code (and mdistiller's);
    ``margin`` has one value per channel and broadcasts over the rest, e.g. shape (C, 1, 1).
    """
    check_same_shape(student, teacher, "ofd_loss")
    target = torch.maximum(teacher, margin.to(teacher))
    mask = (student > target) | (target > 0)
    return ((student - target).pow(2) * mask).sum() / student.shape[0]


def ab_loss(student: Tensor, teacher: Tensor, margin: float = 1.0) -> Tensor:
    r"""Activation-boundary loss of one layer (Heo, Lee, Yun & Choi, 2019): a squared
    hinge that pushes the connected student pre-activation :math:`s` to the teacher's side
    of the ReLU boundary, by at least ``margin`` :math:`\mu`:

    .. math::
        \mathcal{L}_{AB} = \frac1B \sum_{b,c,h,w}
            (s + \mu)^2\,\mathbb{1}[s > -\mu]\,\mathbb{1}[t \le 0]
            + (s - \mu)^2\,\mathbb{1}[s \le \mu]\,\mathbb{1}[t > 0]

    It only depends on the *sign* of the teacher's pre-activation :math:`t`: zero when
    :math:`s \ge \mu` wherever :math:`t > 0` and :math:`s \le -\mu` wherever :math:`t \le 0`.
    Summed over elements and divided by the batch size as in the authors' code and
    RepDistiller (the paper writes the sum per sample).
    """
    check_same_shape(student, teacher, "ab_loss")
    negative = (teacher <= 0) & (student > -margin)
    positive = (teacher > 0) & (student <= margin)
    loss = (student + margin).pow(2) * negative + (student - margin).pow(2) * positive
    return loss.sum() / student.shape[0]


def hcl_loss(student: Tensor, teacher: Tensor, levels: Sequence[int] = (4, 2, 1)) -> Tensor:
    r"""ReviewKD's hierarchical context loss of one pair of maps (Chen, Liu, Zhao & Jia, 2021).

    The mean squared error of the full maps plus those of their adaptive-average-pooled
    versions at each size :math:`l \times l` of ``levels`` smaller than the map, with
    weights halving from one level to the next, normalised by the sum of the weights:

    .. math::
        \mathcal{L}_{HCL} = \frac{\sum_k w_k\,\mathrm{MSE}\big(P_{l_k}(F_s), P_{l_k}(F_t)\big)}
                                 {\sum_k w_k}, \qquad w_k = 2^{-k},

    where :math:`k = 0` is the full map (:math:`P` the identity) and :math:`k = 1, 2, \dots`
    the used levels in order. As in the authors' code (and mdistiller) a level is used when
    :math:`l` is smaller than the map's size, :math:`\min(H, W)` here.
    """
    check_same_shape(student, teacher, "hcl_loss")
    loss = F.mse_loss(student, teacher)
    weight, total = 1.0, 1.0
    for level in levels:
        if level >= min(student.shape[-2:]):
            continue
        weight /= 2.0
        pooled_s = F.adaptive_avg_pool2d(student, (level, level))
        pooled_t = F.adaptive_avg_pool2d(teacher, (level, level))
        loss = loss + weight * F.mse_loss(pooled_s, pooled_t)
        total += weight
    return loss / total


def ft_loss(student_factor: Tensor, teacher_factor: Tensor, mode: str = "code") -> Tensor:
    r"""Factor-transfer loss (Kim, Park & Kwak, 2018) between the translator's factor
    :math:`F_S` and the paraphraser's factor :math:`F_T`, both (B, C, H, W) of one shape.

    * ``mode="paper"``: the L1 distance (:math:`p = 1`) of the flattened factors normalised to
      unit L2 norm, averaged over the batch,
      :math:`\frac1B\sum_b \big\lVert F_T^{(b)}/\lVert F_T^{(b)}\rVert_2
      - F_S^{(b)}/\lVert F_S^{(b)}\rVert_2 \big\rVert_1`;
    * ``mode="code"`` (RepDistiller's ``FactorTransfer``, whose published numbers and
      :math:`\beta = 200` use it): each factor is first reduced to a spatial map
      :math:`Q = \frac1C\sum_c F_c^2`, normalised per sample to unit L2 norm, and the loss is
      the *mean* absolute difference over samples and positions,
      :math:`\frac{1}{B\,HW}\sum_{b,h,w} |\hat Q_S - \hat Q_T|`.
    """
    check_same_shape(student_factor, teacher_factor, "ft_loss")
    if mode == "code":
        s = F.normalize(student_factor.pow(2).mean(dim=1).flatten(1), dim=1)
        t = F.normalize(teacher_factor.pow(2).mean(dim=1).flatten(1), dim=1)
        return (s - t).abs().mean()
    if mode == "paper":
        s = F.normalize(student_factor.flatten(1), dim=1)
        t = F.normalize(teacher_factor.flatten(1), dim=1)
        return (s - t).abs().sum(dim=1).mean()
    raise ValueError(f"ft_loss mode must be 'code' or 'paper', got {mode!r}.")
