r"""Graph-based distillation by a multi-head attention network (MHGD; Lee & Song, BMVC 2019).

For consecutive paired stages :math:`l-1, l` each sample's feature map is compressed to its
leading right singular vector (:func:`~kdtutor.losses.graph.right_singular_vectors`; the
student's four, aligned to the teacher's one by :func:`~kdtutor.losses.graph.align_vectors`).
A multi-head attention network turns the vectors of a batch into one :math:`B \times B` graph
per head,

.. math:: G_h = \mathrm{BN}(W^s_h v^l)\, \mathrm{BN}(W^r_h v^{l-1})^\top,

and the student's graphs are taught the teacher's (:func:`~kdtutor.losses.graph.graph_kl`).

Stage one (``init_epochs``): only the attention network and an *estimator* are trained, on the
teacher alone: the estimator predicts :math:`v^l` from :math:`v^{l-1}` through the softmaxed
graphs (random head dropout), loss :func:`~kdtutor.losses.graph.estimator_loss`. Stage two:
the attention network is frozen (inference batch norm, no gradient) and applied to the
student's vectors. With ``clip="code"`` (the authors' ``Optimizer_w_MHGD``) each parameter's
transfer gradient is clipped to the norm of its task gradient times
:math:`\sigma(\text{epoch} - \text{init\_epochs})`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConfigError, non_negative
from ..errors import KDTutorError
from ..features import evaluating
from ..losses.graph import align_vectors, estimator_loss, graph_kl, right_singular_vectors
from .feature_base import FeatureDistiller, FeatureHParams
from .registry import register_method

__all__ = [
    "MHGD",
    "GraphEstimator",
    "MHGDHParams",
    "MultiHeadGraph",
    "clipped_surrogate",
    "mhgd_graphs",
]


@dataclass(frozen=True)
class MHGDHParams(FeatureHParams):
    """Defaults from the authors' code (sseung0703/KD_methods_with_TF): 8 heads, 4 student
    singular vectors, 40 of 140 epochs of stage one (scaled with the run's length), the
    transfer gradient clipped per parameter (``clip="code"``). ``beta`` weighs the transfer
    loss only with ``clip="none"`` (our choice; the code has no weight). ``compress``:
    ``"svd"`` (the paper) or ``"pool"`` (global average pooling, a stable fallback)."""

    init_epochs: int = 40
    beta: float = 1.0
    heads: int = 8
    student_vectors: int = 4
    clip: str = "code"
    compress: str = "svd"

    def validate(self) -> None:
        super().validate()
        non_negative("beta", self.beta, "mhgd")
        if self.heads < 1 or self.student_vectors < 1:
            raise ConfigError(
                f"mhgd: heads and student_vectors must be >= 1, got {self.heads} and "
                f"{self.student_vectors}."
            )
        if self.clip not in ("code", "none"):
            raise ConfigError(f"mhgd.clip must be 'code' or 'none', got {self.clip!r}.")
        if self.compress not in ("svd", "pool"):
            raise ConfigError(f"mhgd.compress must be 'svd' or 'pool', got {self.compress!r}.")


class MultiHeadGraph(nn.Module):
    """Per-head sample graphs ``(H, B, B)``: ``G_h[i, j] = <BN(FC(v^l_i))_h, BN(FC(v^{l-1}_j))_h>``
    (sender: the deeper vectors, receiver: the shallower; width ``(D_l + D_{l-1}) // 2``)."""

    def __init__(self, dim: int, prev_dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.width = heads, (dim + prev_dim) // 2
        self.sender = nn.Sequential(
            nn.Linear(dim, self.width * heads), nn.BatchNorm1d(self.width * heads)
        )
        self.receiver = nn.Sequential(
            nn.Linear(prev_dim, self.width * heads), nn.BatchNorm1d(self.width * heads)
        )

    def forward(self, v: Tensor, v_prev: Tensor) -> Tensor:
        """Graphs of the batch, ``(heads, B, B)``."""
        b = v.shape[0]
        s = self.sender(v).view(b, self.width, self.heads).permute(2, 0, 1)
        r = self.receiver(v_prev).view(b, self.width, self.heads).permute(2, 0, 1)
        return s @ r.transpose(1, 2)


class GraphEstimator(nn.Module):
    r"""Stage one's estimator: :math:`\hat v^l = \mathrm{normalize}(W_1 [\,\mathrm{softmax}(G_h)
    \,\mathrm{ReLU}(\mathrm{BN}(W_0 v^{l-1}))\,]_h)`, heads dropped at random in training (a
    head is kept where its normal noise exceeds the mean over heads, per sample)."""

    def __init__(self, dim: int, prev_dim: int, heads: int) -> None:
        super().__init__()
        width = (dim + prev_dim) // 2
        self.heads = heads
        self.fc0 = nn.Sequential(nn.Linear(prev_dim, width), nn.BatchNorm1d(width), nn.ReLU())
        self.fc1 = nn.Linear(width * heads, dim)
        nn.init.zeros_(self.fc1.bias)

    def forward(self, v_prev: Tensor, graph: Tensor) -> Tensor:
        """Unit estimates of the deeper vectors, ``(B, dim)``."""
        h, b, _ = graph.shape
        g = graph.softmax(-1)
        if self.training:
            noise = torch.randn(h, b, 1, device=g.device)
            g = g * (noise - noise.mean(0, keepdim=True) > 0).to(g.dtype)
        x = g @ self.fc0(v_prev)  # (H, B, width)
        x = x.permute(1, 0, 2).reshape(b, -1)
        return F.normalize(self.fc1(x), dim=-1)


def clipped_surrogate(
    params: list[nn.Parameter], task: Tensor, transfer: Tensor, scale: float
) -> Tensor:
    r"""A loss whose gradient is the transfer gradient clipped per parameter (Lee & Song's code).

    For each parameter :math:`p`, :math:`g_p = \nabla_p \mathcal{L}_{transfer}` is clipped to
    norm :math:`\text{scale} \cdot \lVert\nabla_p \mathcal{L}_{task}\rVert`
    (``tf.clip_by_norm``); the result is :math:`\sum_p \langle \operatorname{sg}(g_p), p\rangle`,
    whose gradient is the clipped :math:`g_p`. Parameters the task loss does not reach
    (connectors) keep their transfer gradient unclipped (the code has none). Both losses'
    graphs are kept for a later backward.
    """
    g_task = torch.autograd.grad(task, params, retain_graph=True, allow_unused=True)
    g_tr = torch.autograd.grad(transfer, params, retain_graph=True, allow_unused=True)
    total = task.new_zeros(())
    for p, gt, gd in zip(params, g_task, g_tr, strict=True):
        if gd is None:
            continue
        if gt is not None:
            limit = gt.norm() * scale
            norm = gd.norm()
            gd = gd * torch.where(
                norm > limit, limit / norm.clamp_min(1e-12), torch.ones_like(norm)
            )
        total = total + (gd.detach() * p).sum()
    return total


@register_method
class MHGD(FeatureDistiller):
    r"""Multi-head graph distillation (see the module docstring). Stage one logs ``"mha"``
    (the estimator loss); stage two logs

    .. math::
        \lambda_{CE}\,\mathrm{CE} + \sum_{l} \mathcal{L}_G\big(G^S_l, G^T_l\big)

    as ``"ce"`` and ``"mhgd"`` (with ``clip="none"``, ``beta`` times the transfer loss is what
    is back-propagated; with ``clip="code"`` its per-parameter clipped gradient).

    Deviations: a connector (``connector``, default 1x1 conv) maps each student stage to the
    teacher's channels before compression (the code's networks share widths); the teacher's
    sign is left as ``eigh`` returns it, as in the code; stage two's learning-rate steps are the
    trainer's schedule.
    """

    name = "mhgd"
    family = "graph"
    epoch_hparams: ClassVar[Mapping[str, int]] = {"init_epochs": 40}
    protocol_epochs: ClassVar[int] = 140
    paper = "Lee, Song (2019). Graph-based Knowledge Distillation by Multi-head Attention Network"
    hparams_cls = MHGDHParams
    path_policy = "stages"
    uses_connectors = True
    supports_ddp: ClassVar[bool] = False

    def build_modules(self) -> None:
        hp = self.hparams
        if len(self.teacher_paths) < 2:
            raise ConfigError(
                "mhgd builds graphs between consecutive feature pairs and needs at least two; "
                f"got {len(self.teacher_paths)} ({self.teacher_paths}). Give student_paths and "
                "teacher_paths with two or more stages each."
            )
        dims = []
        for path, shape in zip(self.teacher_paths, self.teacher_shapes, strict=True):
            if len(shape) not in (1, 3):
                raise KDTutorError(
                    f"mhgd compresses feature maps (C, H, W) or vectors (D,), but the teacher's "
                    f"feature at {path!r} has shape {shape}. Choose stage outputs."
                )
            dims.append(shape[0])
        self.graphs = nn.ModuleList(
            MultiHeadGraph(d, dp, hp.heads) for dp, d in itertools.pairwise(dims)
        )
        self.estimators = nn.ModuleList(
            GraphEstimator(d, dp, hp.heads) for dp, d in itertools.pairwise(dims)
        )

    # -- vectors and graphs -------------------------------------------------------------------
    def _compress(self, x: Tensor, k: int) -> Tensor:
        if self.hparams.compress == "pool":
            pooled = x.flatten(2).mean(-1) if x.dim() == 4 else x
            return F.normalize(pooled, dim=-1).unsqueeze(1)
        return right_singular_vectors(x, k)

    def teacher_vectors(self, features: list[Tensor]) -> list[Tensor]:
        """The teacher's leading singular vector per stage, ``(B, C_l)`` each (no gradient)."""
        with torch.no_grad():
            return [self._compress(f, 1)[:, 0] for f in features]

    def student_vectors(self, features: list[Tensor], teacher: list[Tensor]) -> list[Tensor]:
        """The student's (connected) vectors aligned to the teacher's, ``(B, C_l)`` each."""
        k = self.hparams.student_vectors
        out = []
        for f, t in zip(self.connect(features), teacher, strict=True):
            out.append(align_vectors(self._compress(f, k), t.unsqueeze(1))[:, 0])
        return out

    def graphs_of(self, vectors: list[Tensor]) -> list[Tensor]:
        """The ``(heads, B, B)`` graph of each consecutive pair of stages."""
        return [g(v, vp) for g, vp, v in zip(self.graphs, vectors, vectors[1:], strict=False)]

    # -- stages -------------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        super().on_epoch_start(epoch, epochs)
        frozen = not self.in_init_stage
        for p in [*self.graphs.parameters(), *self.estimators.parameters()]:
            p.requires_grad_(not frozen)

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        if not self.in_init_stage:
            return super().forward(x, y, index)
        with evaluating(self.student), torch.no_grad():
            logits = self.student(x)
        teacher = self.teacher_outputs(x, index)
        features = [teacher.features[p] for p in self.teacher_paths]
        return logits, self.feature_losses(logits, y, [], features, teacher.logits, index)

    def feature_losses(self, logits, y, student_features, teacher_features, teacher_logits, index):
        hp = self.hparams
        v_t = self.teacher_vectors(teacher_features)
        if self.in_init_stage:
            self.graphs.train(self.training)
            self.estimators.train(self.training)
            loss = logits.new_zeros(())
            for graph, est, vp, v in zip(self.graphs, self.estimators, v_t, v_t[1:], strict=False):
                loss = loss + estimator_loss(est(vp, graph(v, vp)), v)
            return {"mha": loss}
        self.graphs.eval()
        v_s = self.student_vectors(student_features, v_t)
        with torch.no_grad():
            g_t = self.graphs_of(v_t)
        g_s = self.graphs_of(v_s)
        transfer = sum(
            (graph_kl(s, t) for s, t in zip(g_s, g_t, strict=True)), logits.new_zeros(())
        )
        weight = 1.0 if hp.clip == "code" else hp.beta
        return hp.weighted_losses(logits, y, teacher_logits, {"mhgd": weight * transfer})

    def clip_scale(self) -> float:
        """The code's :math:`\\sigma(\\text{epoch} - \\text{init\\_epochs})`, 1 above 1 - 1e-8."""
        s = 1.0 / (1.0 + math.exp(-(self.epoch - self.hparams.init_epochs)))
        return 1.0 if s > 1 - 1e-8 else s

    def train_step(self, batch: Any, steps: Any) -> tuple[Any, dict[str, Tensor]]:
        outputs, losses = steps.forward(batch)
        if self.in_init_stage or self.hparams.clip != "code":
            steps.step("student", losses)
            return outputs, losses
        task = {k: v for k, v in losses.items() if k != "mhgd"}
        params = [p for p in self.trainable_parameters()]
        surrogate = clipped_surrogate(
            params, torch.stack(list(task.values())).sum(), losses["mhgd"], self.clip_scale()
        )
        steps.step("student", {**task, "mhgd": surrogate})
        return outputs, {k: v.detach() for k, v in losses.items()}


@torch.no_grad()
def mhgd_graphs(distiller: MHGD, x: Tensor) -> tuple[Tensor, Tensor]:
    """The last pair's teacher and student graphs ``(heads, B, B)`` on a batch ``x`` (eval
    mode), for figures."""
    with evaluating(distiller):
        _, s_feats = distiller.student_features(x)
        t = distiller.compute_teacher_outputs(x)
        v_t = distiller.teacher_vectors([t.features[p] for p in distiller.teacher_paths])
        v_s = distiller.student_vectors(s_feats, v_t)
        return distiller.graphs_of(v_t)[-1], distiller.graphs_of(v_s)[-1]
