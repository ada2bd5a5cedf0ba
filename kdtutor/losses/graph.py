r"""Losses of graph-based distillation: MHGD (Lee & Song, BMVC 2019).

Multi-head graph distillation compresses each sample's feature map :math:`X \in
\mathbb{R}^{HW \times C}` to its leading right singular vectors, builds with a multi-head
attention network a :math:`B \times B` graph over the samples of a batch per head, and asks the
student's graphs to match the teacher's. The pieces here are pure functions; the attention
network and the two training stages live in :mod:`kdtutor.methods.mhgd`.

Conventions (the authors' code, sseung0703/KD_methods_with_TF, ``nets/SVP.py`` and
``nets/Relation.py``): singular vectors are taken from the eigen-decomposition of
:math:`X^\top X` in descending order of eigenvalue; the student keeps 4, the teacher 1; each
teacher vector is paired with the student vector of largest :math:`|\cos|`, whose sign is
flipped to make the cosine positive; the transfer loss is the summed KL divergence between
row softmaxes of :math:`\tanh G`, the student's distribution first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ShapeMismatchError

__all__ = [
    "align_vectors",
    "estimator_loss",
    "graph_kl",
    "right_singular_vectors",
]


def _as_rows(x: Tensor) -> Tensor:
    """``(B, C, H, W) -> (B, HW, C)``; ``(B, D) -> (B, 1, D)`` (the code's vector case)."""
    if x.dim() == 4:
        return x.flatten(2).transpose(1, 2)
    if x.dim() == 2:
        return x.unsqueeze(1)
    raise ShapeMismatchError(
        f"right_singular_vectors takes feature maps (B, C, H, W) or vectors (B, D), got shape "
        f"{tuple(x.shape)}; choose a stage output or an embedding."
    )


class _GramEigenvectors(torch.autograd.Function):
    """Eigenvectors of :math:`A = X^\\top X`, descending, with the eigenvector gradient

    .. math:: \\bar X = 2 X V \\operatorname{sym}\\!\\big(F \\circ (V^\\top \\bar V)\\big) V^\\top,
        \\quad F_{ij} = 1/(\\lambda_j - \\lambda_i)\\ (i \\ne j),

    where :math:`F_{ij}` is set to 0 when :math:`|\\lambda_i - \\lambda_j|` is below a relative
    tolerance (repeated or zero eigenvalues of rank-deficient maps), as the authors' code does
    with ``removenan`` on the infinite entries. The eigenvalue gradient is not propagated
    (only the vectors are used)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        gram = x.transpose(1, 2) @ x
        eigenvalues, vectors = torch.linalg.eigh(gram)
        eigenvalues, vectors = eigenvalues.flip(-1), vectors.flip(-1)
        ctx.save_for_backward(x, eigenvalues, vectors)
        return vectors

    @staticmethod
    def backward(ctx, grad_v: Tensor) -> Tensor:  # type: ignore[override]
        x, lam, v = ctx.saved_tensors
        diff = lam.unsqueeze(-2) - lam.unsqueeze(-1)  # [i, j] = lam_j - lam_i
        scale = lam.abs().amax(-1, keepdim=True).unsqueeze(-1).clamp_min(1e-12)
        tol = 1e-6 * scale
        keep = diff.abs() > tol
        f = torch.where(keep, 1.0 / torch.where(keep, diff, torch.ones_like(diff)), 0.0)
        inner = f * (v.transpose(1, 2) @ grad_v)
        sym = inner + inner.transpose(1, 2)
        grad_gram = v @ (0.5 * sym) @ v.transpose(1, 2)
        return x @ (grad_gram + grad_gram.transpose(1, 2))


def right_singular_vectors(x: Tensor, k: int) -> Tensor:
    r"""The ``k`` leading right singular vectors of each sample's feature map, ``(B, k, C)``.

    A map ``(B, C, H, W)`` is read as the matrix :math:`X \in \mathbb{R}^{HW \times C}`; its
    right singular vectors are the eigenvectors of :math:`X^\top X`, in descending order of
    singular value (Lee & Song, 2019, after Lee et al.'s SVD-based KD, 2018). A vector ``(B,
    D)`` is a 1 x D matrix, whose one vector is :math:`x / \lVert x \rVert`. ``k`` is capped at
    :math:`\min(HW, C)`. Each vector is determined up to its sign (:func:`align_vectors` fixes
    the student's against the teacher's). Gradients flow through a stable eigenvector gradient
    (degenerate eigenvalue pairs contribute nothing), never ``inf``/``nan``.
    """
    if k < 1:
        raise ValueError(f"right_singular_vectors: k must be >= 1, got {k}.")
    rows = _as_rows(x)
    k = min(k, rows.shape[1], rows.shape[2])
    work = rows if rows.dtype == torch.float64 else rows.float()
    vectors = _GramEigenvectors.apply(work)
    return vectors[..., :k].transpose(1, 2).to(x.dtype)


def align_vectors(student: Tensor, teacher: Tensor) -> Tensor:
    r"""The student's singular vectors chosen and signed to match the teacher's, ``(B, m, C)``.

    ``student`` ``(B, k, C)`` and ``teacher`` ``(B, m, C)``: for each teacher vector
    :math:`t_j` the student vector :math:`s_{i^*}` with :math:`i^* = \arg\max_i |\langle s_i,
    t_j\rangle|` is taken and multiplied by :math:`\operatorname{sign}\langle s_{i^*},
    t_j\rangle` (the authors' ``Align_rsv``; a zero cosine keeps the sign, as ``tf.sign(0) =
    0`` would zero the vector instead).
    """
    if student.dim() != 3 or teacher.dim() != 3 or student.shape[::2] != teacher.shape[::2]:
        raise ShapeMismatchError(
            f"align_vectors needs (B, k, C) student and (B, m, C) teacher vectors with the same "
            f"B and C, got {tuple(student.shape)} and {tuple(teacher.shape)}; map the student's "
            "channels to the teacher's with a connector first."
        )
    cosine = student @ teacher.transpose(1, 2)  # (B, k, m)
    index = cosine.abs().argmax(1)  # (B, m)
    chosen = torch.gather(student, 1, index.unsqueeze(-1).expand(-1, -1, student.shape[-1]))
    sign = torch.gather(cosine, 1, index.unsqueeze(1)).squeeze(1).detach()  # (B, m)
    sign = torch.where(sign < 0, -1.0, 1.0).to(student.dtype)
    return chosen * sign.unsqueeze(-1)


def graph_kl(student_graph: Tensor, teacher_graph: Tensor) -> Tensor:
    r"""MHGD's transfer loss between per-head sample graphs ``(H, B, B)`` (any matching shape).

    .. math::
        \mathcal{L}_G = \sum_h \sum_i \mathrm{KL}\Big(\operatorname{softmax}\big(\tanh
            G^S_{h,i,:}\big)\,\Big\|\,\operatorname{softmax}\big(\tanh G^T_{h,i,:}\big)\Big)

    summed over heads and rows (not averaged), the student's distribution first, as in the
    authors' ``kld_loss`` (Lee & Song, 2019). Pass the teacher's graph without gradients.
    """
    if student_graph.shape != teacher_graph.shape:
        raise ShapeMismatchError(
            f"graph_kl: the student's graph has shape {tuple(student_graph.shape)} and the "
            f"teacher's {tuple(teacher_graph.shape)}; both must come from the same attention "
            "network on batches of the same size."
        )
    log_s = F.log_softmax(torch.tanh(student_graph), dim=-1)
    log_t = F.log_softmax(torch.tanh(teacher_graph), dim=-1)
    return (log_s.exp() * (log_s - log_t)).sum()


def estimator_loss(estimate: Tensor, target: Tensor) -> Tensor:
    r"""MHGD's stage-one loss: :math:`\frac1B \sum_b \big(1 - \langle \hat v_b, v_b\rangle\big)`
    for unit vectors ``(B, D)``, the estimated next-layer singular vector against the true one
    (Lee & Song, 2019)."""
    if estimate.shape != target.shape:
        raise ShapeMismatchError(
            f"estimator_loss: estimate {tuple(estimate.shape)} and target "
            f"{tuple(target.shape)} must have the same shape (B, D)."
        )
    return (1 - (estimate * target).sum(-1)).mean()
