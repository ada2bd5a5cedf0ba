r"""Losses of attention-based distillation for vision transformers (MiniLM / MiniViT style).

Two forms of matching a teacher's self-attention:

* :func:`attention_kl`: the attention *probabilities* ``(B, H, N, N)`` of one block, row by
  row (MiniLM's attention-distribution transfer, Wang et al., 2020): heads and tokens must
  match, widths need not.
* :func:`qkv_relation_loss`: MiniViT's self-attention *relation* distillation (Zhang et al.,
  2022, after MiniLMv2): for every pair :math:`(i, j) \in \{q, k, v\}^2` the relation
  :math:`\operatorname{softmax}(X_i X_j^\top / \sqrt{d_r})` of teacher and student are compared
  by a soft cross entropy, and the nine terms averaged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ShapeMismatchError

__all__ = ["attention_kl", "qkv_relation_loss", "split_qkv"]


def attention_kl(student: Tensor, teacher: Tensor, eps: float = 1e-12) -> Tensor:
    r"""KL divergence between teacher and student attention rows, ``(B, H, N, N)`` each.

    .. math::
        \mathcal{L}_{AT} = \frac{1}{B\,H\,N} \sum_b \sum_h \sum_n
            \mathrm{KL}\big(A^{T}_{b,h}[n,:] \,\big\|\, A^{S}_{b,h}[n,:]\big)

    (Wang et al., 2020, MiniLM). The maps are probabilities (rows sum to 1), e.g. the output
    of ``blocks.i.attn.attn_drop`` of :class:`~kdtutor.models.vit.VisionTransformer`; ``eps``
    guards the logarithms. Pass the teacher's maps without gradients.
    """
    if student.dim() != 4 or student.shape != teacher.shape:
        raise ShapeMismatchError(
            f"attention_kl compares attention maps (B, heads, tokens, tokens) of equal shape; "
            f"got student {tuple(student.shape)} and teacher {tuple(teacher.shape)}. Pair "
            "blocks with the same number of heads and tokens (same patch size and image size)."
        )
    log_s = torch.log(student.clamp_min(eps))
    log_t = torch.log(teacher.clamp_min(eps))
    kl = (teacher * (log_t - log_s)).sum(-1)  # (B, H, N)
    return kl.mean()


def split_qkv(qkv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Queries, keys and values ``(B, N, dim)`` each from the output ``(B, N, 3 dim)`` of a
    ViT block's ``attn.qkv`` layer (heads concatenated, as :class:`~kdtutor.models.vit.Attention`
    lays them out)."""
    if qkv.dim() != 3 or qkv.shape[-1] % 3:
        raise ShapeMismatchError(
            f"split_qkv expects the qkv projection (B, N, 3*dim), got {tuple(qkv.shape)}; read "
            "it at 'blocks.<i>.attn.qkv'."
        )
    return qkv.chunk(3, dim=-1)  # type: ignore[return-value]


def _relations(x: Tensor, y: Tensor, heads: int) -> Tensor:
    b, n, d = x.shape
    if d % heads:
        raise ShapeMismatchError(
            f"qkv_relation_loss: the width {d} is not divisible by relation_heads={heads}."
        )
    dh = d // heads
    xh = x.reshape(b, n, heads, dh).transpose(1, 2)
    yh = y.reshape(b, n, heads, dh).transpose(1, 2)
    return (xh @ yh.transpose(-2, -1)) / math.sqrt(dh)  # (B, A_r, N, N)


def qkv_relation_loss(
    student: tuple[Tensor, Tensor, Tensor],
    teacher: tuple[Tensor, Tensor, Tensor],
    relation_heads: int = 1,
    temperature: float = 1.0,
) -> Tensor:
    r"""MiniViT's self-attention relation loss between ``(q, k, v)`` triples, ``(B, N, d)``.

    .. math::
        \mathcal{L}_{R} = \frac19 \sum_{i,j \in \{q,k,v\}} \frac{1}{B A_r N} \sum
            -\operatorname{softmax}\!\Big(\tfrac{T_i T_j^\top}{\sqrt{d_t/A_r}\,\tau}\Big)
            \log \operatorname{softmax}\!\Big(\tfrac{S_i S_j^\top}{\sqrt{d_s/A_r}\,\tau}\Big)

    (Zhang et al., 2022, MiniViT; Wang et al., 2021, MiniLMv2), row-wise soft cross entropy
    averaged over batch, relation heads :math:`A_r` and rows. Tokens must match; widths need not.
    """
    if len(student) != 3 or len(teacher) != 3:
        raise ShapeMismatchError("qkv_relation_loss takes (q, k, v) triples on both sides.")
    for s, t in zip(student, teacher, strict=True):
        if s.dim() != 3 or t.dim() != 3 or s.shape[:2] != t.shape[:2]:
            raise ShapeMismatchError(
                f"qkv_relation_loss: student {tuple(s.shape)} and teacher {tuple(t.shape)} must "
                "be (B, N, d) with the same batch and tokens."
            )
    total = student[0].new_zeros(())
    for i in range(3):
        for j in range(3):
            rs = _relations(student[i], student[j], relation_heads) / temperature
            rt = _relations(teacher[i], teacher[j], relation_heads) / temperature
            ce = -(F.softmax(rt, dim=-1) * F.log_softmax(rs, dim=-1)).sum(-1)
            total = total + ce.mean()
    return total / 9
