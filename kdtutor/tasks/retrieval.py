"""Retrieval and verification on embeddings: face recognition and metric learning.

A network's eval output is an embedding ``(B, D)``; targets are identity labels ``(B,)``
(identities never seen in training, for the chapter's faces). The task keeps every
embedding of the split and scores them at the end, by cosine similarity (the embeddings
L2-normalised; ``normalize=False`` uses the negative squared Euclidean distance instead, as
lenscloth/RKD's ``recall`` does for its unnormalised students):

* recall@k (``recall1``, primary; ``recall5``): each sample in turn is the query, every other
  sample of the split the gallery; a query is a hit when one of its k most similar gallery
  samples has its identity (Song et al. CVPR 2016; lenscloth/RKD ``metric/utils.py``'s
  ``recall``, read in copies: squared distances, the query itself left out). This is
  torchmetrics' ``RetrievalHitRate(top_k=k)`` over the (query, gallery) pairs without the
  query itself, a query without any relevant item counting as a miss
  (``empty_target_action="neg"``, its default);
* verification over a fixed list of pairs (:func:`verification_pairs`: every pair of samples
  of one identity, and as many pairs of different identities drawn with a fixed seed): the
  LFW protocol's 10-fold accuracy (:func:`kfold_verification_accuracy`: the threshold that
  is best on 9 folds, applied to the 10th, the 10 accuracies averaged; Huang et al. 2007, as
  facenet's and insightface's ``calculate_roc`` run it, read in copies), and TAR at FAR 1e-2
  and 1e-3 (:func:`tar_at_far`, on torchmetrics' ``BinaryROC``).

All in percent.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ShapeMismatchError
from .base import Task, register_task

__all__ = [
    "Retrieval",
    "kfold_verification_accuracy",
    "recall_at_k",
    "similarity_matrix",
    "tar_at_far",
    "verification_pairs",
]


def similarity_matrix(embeddings: Tensor, normalize: bool = True) -> Tensor:
    """Pairwise similarities ``(N, N)`` in float64: cosine similarities of the embeddings
    (``normalize=True``), else negative squared Euclidean distances."""
    e = embeddings.double()
    if normalize:
        e = torch.nn.functional.normalize(e, dim=1)
        return e @ e.T
    return -torch.cdist(e, e).pow(2)


def recall_at_k(
    similarity: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)
) -> dict[int, float]:
    """Recall@k of every sample as a query against all the others, by torchmetrics'
    ``RetrievalHitRate``.

    Only each query's ``max(ks)`` most similar gallery samples are handed to torchmetrics
    (not all ``N - 1``): a hit within the top k for ``k <= max(ks)`` depends on nothing else,
    and a query with no relevant item among them is a miss either way, so the values are the
    same and the cost falls from ``N^2`` items to ``N max(ks)``.

    Args:
        similarity: ``(N, N)`` similarities, larger meaning closer.
        labels: ``(N,)`` identities.
        ks: the k of each recall@k.

    Returns:
        A dict from each k to recall@k, a fraction.
    """
    from torchmetrics.retrieval import RetrievalHitRate

    n = similarity.shape[0]
    if n < 2:
        return {k: float("nan") for k in ks}
    sim = similarity.double().clone()
    sim.fill_diagonal_(-float("inf"))
    top = min(max(ks), n - 1)
    scores, index = sim.topk(top, dim=1)
    relevant = labels[index] == labels[:, None]
    queries = torch.arange(n)[:, None].expand(n, top)
    out = {}
    for k in ks:
        metric = RetrievalHitRate(top_k=k)
        metric.update(scores.flatten(), relevant.flatten(), indexes=queries.flatten())
        out[k] = float(metric.compute())
    return out


def verification_pairs(
    labels: Tensor, seed: int = 0, max_pairs: int = 100_000, folds: int = 10
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A deterministic list of verification pairs and their folds.

    Positives: every pair ``i < j`` of samples with one label (a seeded subset of
    ``max_pairs`` if there are more); negatives: as many distinct pairs of different labels,
    drawn uniformly with a ``torch.Generator`` seeded with ``seed``. Each list is shuffled by
    the same generator and dealt round-robin into ``folds`` folds, so every fold holds a
    tenth of the positives and a tenth of the negatives (LFW's folds hold 300 of each).

    Returns:
        Four tensors of length P, ``(i, j, same, fold)``, the pairs' two sample indices
        (int64, ``i < j``), whether they share a label (bool) and their fold (int64).
    """
    gen = torch.Generator().manual_seed(seed)
    labels = labels.reshape(-1).cpu()
    n = labels.numel()
    pairs = []
    for label in torch.unique(labels):  # every pair i < j within each identity
        members = torch.nonzero(labels == label).flatten()
        a, b = torch.triu_indices(members.numel(), members.numel(), offset=1)
        pairs.append(torch.stack([members[a], members[b]], 1))
    pos = torch.cat(pairs) if pairs else torch.empty(0, 2, dtype=torch.int64)
    pos = pos[torch.argsort(pos[:, 0] * n + pos[:, 1])]
    negatives = n * (n - 1) // 2 - pos.shape[0]
    if pos.shape[0] > max_pairs:
        keep = torch.randperm(pos.shape[0], generator=gen)[:max_pairs].sort().values
        pos = pos[keep]
    pos_i, pos_j = pos[:, 0], pos[:, 1]
    want = min(pos_i.numel(), negatives)
    neg = torch.empty(0, dtype=torch.int64)
    while neg.numel() < want:
        a = torch.randint(n, (2 * want + 16,), generator=gen)
        b = torch.randint(n, (2 * want + 16,), generator=gen)
        lo, hi = torch.minimum(a, b), torch.maximum(a, b)
        code = lo[labels[lo] != labels[hi]] * n + hi[labels[lo] != labels[hi]]
        merged = torch.cat([neg, code])
        _, first = np.unique(merged.numpy(), return_index=True)
        neg = merged[torch.from_numpy(np.sort(first))]
    neg = neg[:want]
    neg_i, neg_j = neg // n, neg % n

    def deal(count: int) -> Tensor:
        order = torch.randperm(count, generator=gen)
        fold = torch.empty(count, dtype=torch.int64)
        fold[order] = torch.arange(count) % folds
        return fold

    return (
        torch.cat([pos_i, neg_i]),
        torch.cat([pos_j, neg_j]),
        torch.cat(
            [torch.ones(pos_i.numel(), dtype=torch.bool), torch.zeros(want, dtype=torch.bool)]
        ),
        torch.cat([deal(pos_i.numel()), deal(want)]),
    )


def _best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold of highest accuracy for ``same = scores > threshold`` on one set of
    pairs, among every cut between distinct scores (the highest such threshold on a tie)."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], same[order]
    n, positives = len(s), int(y.sum())
    tp = np.concatenate([[0], np.cumsum(y)])  # accepting the m highest, m = 0 .. n
    m = np.arange(n + 1)
    correct = tp + (n - positives) - (m - tp)
    cut = np.ones(n + 1, dtype=bool)
    cut[1:n] = s[:-1] > s[1:]  # a threshold can only fall between distinct scores
    correct = np.where(cut, correct, -1)
    best = int(np.argmax(correct))
    if best == 0:
        return float(s[0]) if n else 0.0
    if best == n:
        return -np.inf
    return float((s[best - 1] + s[best]) / 2)


def kfold_verification_accuracy(scores: Tensor, same: Tensor, fold: Tensor) -> float:
    """The LFW protocol's verification accuracy: for each fold, the threshold of highest
    accuracy on the other folds (every cut between distinct scores tried, the highest on a
    tie: the exact limit of the fine threshold grid of facenet's ``calculate_roc``) is
    applied to the fold; the result is the mean of the fold accuracies.

    Args:
        scores: ``(P,)`` similarities of the pairs (larger: more alike).
        same: ``(P,)`` whether each pair shares an identity.
        fold: ``(P,)`` the fold of each pair.

    Returns:
        The mean fold accuracy, a fraction.
    """
    s = scores.double().cpu().numpy()
    y = same.cpu().numpy().astype(bool)
    f = fold.cpu().numpy()
    accuracies = []
    for k in np.unique(f):
        test = f == k
        threshold = _best_threshold(s[~test], y[~test])
        accuracies.append(float(np.mean((s[test] > threshold) == y[test])))
    return float(np.mean(accuracies)) if accuracies else float("nan")


def tar_at_far(scores: Tensor, same: Tensor, far: float) -> float:
    """The true accept rate at a false accept rate, read on the ROC curve of torchmetrics'
    ``BinaryROC`` (exact: a point per distinct score; its float32 rates are rounded back to
    counts over the number of pairs) and linearly interpolated between its points; where the
    curve has several points at ``far`` exactly, the highest TAR.

    Returns:
        TAR at ``far``, a fraction.
    """
    from torchmetrics.classification import BinaryROC

    roc = BinaryROC()
    roc.update(scores.double().cpu(), same.long().cpu())
    fpr, tpr, _ = roc.compute()
    # torchmetrics returns the rates in float32 (0.1 becomes 0.10000000149): back to the
    # exact fractions of counts they are, so a FAR that falls on a vertex reads that vertex
    negatives, positives = int((~same.bool()).sum()), int(same.bool().sum())
    fpr = np.round(fpr.double().numpy() * negatives) / max(negatives, 1)
    tpr = np.round(tpr.double().numpy() * positives) / max(positives, 1)
    i = int(np.searchsorted(fpr, far, side="right")) - 1  # last point with fpr <= far
    if i < 0:
        return 0.0
    if fpr[i] == far or i == len(fpr) - 1:
        return float(tpr[i])
    step = (far - fpr[i]) / (fpr[i + 1] - fpr[i])
    return float(tpr[i] + step * (tpr[i + 1] - tpr[i]))


class _Embeddings:
    """Every embedding and label of the split, scored at the end."""

    def __init__(self, normalize: bool, seed: int) -> None:
        self.normalize, self.seed = normalize, seed
        self.embeddings: list[Tensor] = []
        self.labels: list[Tensor] = []

    def update(self, embeddings: Tensor, labels: Tensor) -> None:
        self.embeddings.append(embeddings.detach().float().cpu())
        self.labels.append(labels.reshape(-1).cpu())

    def compute(self) -> dict[str, float]:
        e, labels = torch.cat(self.embeddings), torch.cat(self.labels)
        sim = similarity_matrix(e, self.normalize)
        recall = recall_at_k(sim, labels, (1, 5))
        i, j, same, fold = verification_pairs(labels, self.seed)
        scores = sim[i, j]
        return {
            "recall1": 100.0 * recall[1],
            "recall5": 100.0 * recall[5],
            "verification_acc": 100.0 * kfold_verification_accuracy(scores, same, fold),
            "tar_far_1e-2": 100.0 * tar_at_far(scores, same, 1e-2),
            "tar_far_1e-3": 100.0 * tar_at_far(scores, same, 1e-3),
        }


@register_task
class Retrieval(Task):
    """Embeddings ``(B, D)`` against identity labels ``(B,)``, scored over the whole split:
    recall@1 (primary) and recall@5 by torchmetrics' ``RetrievalHitRate``, the 10-fold
    verification accuracy (written here) and TAR at FAR 1e-2 and 1e-3 (on torchmetrics'
    ``BinaryROC``), in percent.

    Args:
        normalize: score by cosine similarity (default) rather than by the negative squared
            Euclidean distance.
        seed: the seed of the negative verification pairs and of the folds.
    """

    name = "retrieval"
    primary = "recall1"
    short = "recall1"
    metric_names = ("recall1", "recall5", "verification_acc", "tar_far_1e-2", "tar_far_1e-3")

    def __init__(self, normalize: bool = True, seed: int = 0) -> None:
        self.normalize, self.seed = normalize, seed

    def metrics(self) -> dict[str, Any]:
        return {"embeddings": _Embeddings(self.normalize, self.seed)}

    def update(self, metrics: dict[str, Any], outputs: Any, y: Any) -> None:
        embeddings = outputs["out"] if isinstance(outputs, dict) else outputs
        if embeddings.dim() != 2 or embeddings.shape[0] != y.reshape(-1).shape[0]:
            raise ShapeMismatchError(
                f"retrieval scores embeddings (B, D) against labels (B,): got outputs "
                f"{tuple(embeddings.shape)} and labels {tuple(y.shape)}."
            )
        metrics["embeddings"].update(embeddings, y)

    def compute(self, metrics: dict[str, Any]) -> dict[str, float]:
        return metrics["embeddings"].compute()
