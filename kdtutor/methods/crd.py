"""Contrastive representation distillation (Tian, Krishnan, Isola, 2020)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConfigError, non_negative, positive
from ..errors import KDTutorError
from ..losses.relation import crd_nce_from_scores, momentum_update
from .feature_base import FeatureDistiller, FeatureHParams
from .registry import register_method


@dataclass(frozen=True)
class CRDHParams(FeatureHParams):
    """Defaults: RepDistiller's CIFAR-100 CRD (Tian et al. 2020): CE weight 1, ``beta`` = 0.8,
    embeddings of width ``feat_dim`` = 128, ``num_negatives`` = 16384, temperature ``nce_t`` =
    0.07, memory momentum 0.5 (``-r 1 -a 0 -b 0.8``). CRD+KD is ``kd_weight=1`` (``-a 1``) at
    ``T`` = 4.

    ``negatives``: ``"instance"`` (default) draws the negatives uniformly among all other
    training samples, as the paper describes; ``"class"`` draws them among the samples of the
    *other classes*, which is what RepDistiller's default CIFAR-100 sampler (``mode='exact'``)
    did for the published numbers. Both draw with replacement (RepDistiller draws without
    replacement when there are enough candidates; with thousands of them the difference is
    negligible). The same negatives serve both directions, as in RepDistiller."""

    beta: float = 0.8
    feat_dim: int = 128
    num_negatives: int = 16384
    nce_t: float = 0.07
    momentum: float = 0.5
    negatives: str = "instance"

    def validate(self) -> None:
        super().validate()
        for name in ("feat_dim", "num_negatives", "nce_t"):
            positive(name, getattr(self, name), "crd")
        non_negative("beta", self.beta, "crd")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"crd.momentum must be in [0, 1), got {self.momentum!r}.")
        if self.negatives not in ("instance", "class"):
            raise ConfigError(
                f"crd.negatives must be 'instance' or 'class', got {self.negatives!r}."
            )


@register_method
class CRD(FeatureDistiller):
    r"""CRD: a contrastive objective that makes the student's embedding of a sample tell it
    apart from other samples the way the teacher's does.

    Both pooled embeddings go through trainable linear layers to ``feat_dim`` and are
    L2-normalised (:math:`v_s`, :math:`v_t`). Two memory banks hold one unit vector per
    training sample, :math:`M_s` (student side) and :math:`M_t` (teacher side); they are
    buffers (checkpointed with the student, never trained by the optimizer), sized by
    :meth:`bind_data`. For each sample, ``num_negatives`` = :math:`K` other indices are drawn
    and

    .. math::
        \mathcal{L} = \lambda_{CE}\,\mathrm{CE} + \beta\,\big[
            \mathcal{L}_{NCE}(v_t;\, M_s) + \mathcal{L}_{NCE}(v_s;\, M_t)\big]
            + \lambda_{KD}\,\mathcal{L}_{KD},

    with :math:`\mathcal{L}_{NCE}` of :func:`~kdtutor.losses.relation.crd_nce_loss` (teacher
    anchors against the student bank, student anchors against the teacher bank). Each
    direction's constant :math:`Z` is estimated once, on the first batch, as the mean of
    :math:`\exp(v \cdot m / \tau)` times :math:`N`, and kept as a buffer. After each step the
    banks' rows of the batch move towards the new embeddings with momentum 0.5 and are
    renormalised (:func:`~kdtutor.losses.relation.momentum_update`).

    CRD needs each batch's dataset indices (``fit`` passes them) and the training set's size
    (``fit`` calls :meth:`bind_data`). Deviation from RepDistiller: the banks start as uniform
    random vectors *normalised* to unit length (RepDistiller draws them uniform in
    :math:`\pm 1/\sqrt{D/3}`, of unit norm only on average)."""

    name = "crd"
    family = "relation"
    supports_ddp = False  # the memory banks are per-process state
    paper = "Tian, Krishnan, Isola (2020). Contrastive Representation Distillation"
    hparams_cls = CRDHParams
    path_policy = "embedding"
    uses_connectors = False

    @classmethod
    def scaled_hparams(cls, epochs: int, n_train: int | None = None) -> dict[str, Any]:
        """As :meth:`Distiller.scaled_hparams`, with ``num_negatives`` capped at the
        ``n_train - 1`` other training samples (a bank cannot hold more)."""
        values = super().scaled_hparams(epochs, n_train)
        if n_train is not None:
            values["num_negatives"] = min(CRDHParams().num_negatives, n_train - 1)
        return values

    def build_modules(self) -> None:
        hp = self.hparams
        self.embed_s = nn.Linear(math.prod(self.student_shapes[0]), hp.feat_dim)
        self.embed_t = nn.Linear(math.prod(self.teacher_shapes[0]), hp.feat_dim)
        self.register_buffer("memory_student", torch.empty(0, hp.feat_dim))
        self.register_buffer("memory_teacher", torch.empty(0, hp.feat_dim))
        # Z of the two directions: [teacher anchors vs student bank, student anchors vs teacher bank]
        self.register_buffer("nce_z", torch.full((2,), -1.0))
        for name in ("class_of", "class_order", "class_start", "class_count"):
            self.register_buffer(name, torch.empty(0, dtype=torch.long), persistent=False)
        self.num_negatives = 0

    # -- data-dependent state ---------------------------------------------------------------
    @property
    def n_data(self) -> int:
        """Rows of each memory bank (the training set's size; 0 before :meth:`bind_data`)."""
        return int(self.memory_student.shape[0])

    def bind_data(self, train_data: Any) -> None:
        """Size the memory banks by ``len(train_data)`` (kept if already of that size), set the
        effective number of negatives and, with ``negatives="class"``, index the labels."""
        super().bind_data(train_data)
        hp = self.hparams
        n = len(train_data)
        if n < 2:
            raise KDTutorError(f"CRD needs at least 2 training samples, got {n}.")
        k = hp.num_negatives
        if k > n - 1:
            warnings.warn(
                f"crd: num_negatives={k} exceeds the {n - 1} other training samples; using "
                f"{n - 1} negatives per sample.",
                stacklevel=2,
            )
            k = n - 1
        self.num_negatives = k
        device = self.memory_student.device
        if self.n_data != n:
            self.memory_student = self._random_bank(n, device)
            self.memory_teacher = self._random_bank(n, device)
            self.nce_z.fill_(-1.0)
        if hp.negatives == "class":
            self._index_classes(train_data, n, device)

    def _random_bank(self, n: int, device: torch.device) -> Tensor:
        dim = self.hparams.feat_dim
        stdv = 1.0 / math.sqrt(dim / 3)
        bank = torch.rand(n, dim, device=device) * (2 * stdv) - stdv
        return F.normalize(bank, dim=1)

    def _index_classes(self, train_data: Any, n: int, device: torch.device) -> None:
        targets = getattr(train_data, "targets", None)
        if targets is None:
            raise KDTutorError(
                "crd with negatives='class' needs the training labels (train_data.targets); "
                "use negatives='instance' for datasets without them."
            )
        targets = torch.as_tensor(targets, dtype=torch.long).reshape(-1).cpu()
        if targets.numel() != n:
            raise KDTutorError(f"train_data.targets has {targets.numel()} labels for {n} samples.")
        count = torch.bincount(targets)
        if int(count.max()) == n:
            raise KDTutorError(
                "crd with negatives='class' needs at least two classes in the training set."
            )
        self.class_of = targets.to(device)
        self.class_order = torch.argsort(targets, stable=True).to(device)
        self.class_count = count.to(device)
        self.class_start = (torch.cumsum(count, 0) - count).to(device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[override]
        # a checkpoint's banks may come from a dataset of another size: take their shape
        for name in ("memory_student", "memory_teacher"):
            saved = state_dict.get(prefix + name)
            if saved is not None and saved.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(saved, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- one step ---------------------------------------------------------------------------
    def sample_negatives(self, index: Tensor) -> Tensor:
        """``(B, K)`` indices of negatives for the samples ``index``, drawn with torch's global
        RNG (uniformly among the other samples, or among the other classes' samples)."""
        b, k, n = index.shape[0], self.num_negatives, self.n_data
        if self.hparams.negatives == "instance":
            r = torch.randint(0, n - 1, (b, k), device=index.device)
            return r + (r >= index[:, None]).long()
        cls = self.class_of[index]
        count, start = self.class_count[cls][:, None], self.class_start[cls][:, None]
        others = n - count
        r = (torch.rand(b, k, device=index.device) * others).long().clamp_max(others - 1)
        return self.class_order[r + (r >= start).long() * count]

    def _nce(self, slot: int, anchor: Tensor, bank: Tensor, index: Tensor, neg: Tensor) -> Tensor:
        scores = anchor @ bank.t()  # (B, N): every bank row, cheaper than gathering B*K rows
        pos, negs = scores.gather(1, index[:, None]).squeeze(1), scores.gather(1, neg)
        if float(self.nce_z[slot]) < 0:
            with torch.no_grad():
                both = torch.cat([pos[:, None], negs], dim=1) / self.hparams.nce_t
                self.nce_z[slot] = both.exp().mean() * self.n_data
        return crd_nce_from_scores(pos, negs, self.nce_z[slot], self.n_data, self.hparams.nce_t)

    def feature_losses(self, logits, y, student_features, teacher_features, teacher_logits, index):
        hp = self.hparams
        if self.n_data == 0:
            raise KDTutorError(
                "crd has no memory bank yet: call distiller.bind_data(train_data) before "
                "training (kdtutor.train.fit does it)."
            )
        if index is None:
            raise KDTutorError(
                "crd needs the dataset index of every sample of the batch (its memory bank has "
                "one row per training sample): call distiller(x, y, index) with index = the "
                "batch's positions in the training set, as kdtutor.train.fit does."
            )
        index = index.to(self.memory_student.device, torch.long).reshape(-1)
        views = self.teacher_cache.views if self.teacher_cache is not None else 0
        if index.numel() and (
            int(index.max()) >= self.n_data * max(1, views) or int(index.min()) < 0
        ):
            raise KDTutorError(
                f"crd: batch index out of range for a training set of {self.n_data} samples; "
                "bind_data was called with another dataset than the one being trained on."
            )
        index = index % self.n_data  # cache rows view * N + i of fixed views: sample i's bank row
        with torch.autocast(device_type=logits.device.type, enabled=False):
            v_s = F.normalize(self.embed_s(student_features[0].flatten(1).float()), dim=1)
            v_t = F.normalize(self.embed_t(teacher_features[0].flatten(1).float()), dim=1)
            neg = self.sample_negatives(index)
            nce = self._nce(0, v_t, self.memory_student, index, neg) + self._nce(
                1, v_s, self.memory_teacher, index, neg
            )
        if self.training:
            self.update_memory(index, v_s, v_t)
        return hp.weighted_losses(logits, y, teacher_logits, {"crd": hp.beta * nce})

    @torch.no_grad()
    def update_memory(self, index: Tensor, v_s: Tensor, v_t: Tensor) -> None:
        """Move the banks' rows ``index`` towards the new embeddings (momentum, renormalised)."""
        # out of place: this step's loss still holds the old banks for its backward pass
        m = self.hparams.momentum
        for name, new in (("memory_student", v_s), ("memory_teacher", v_t)):
            bank = getattr(self, name)
            setattr(self, name, bank.index_copy(0, index, momentum_update(bank[index], new, m)))
