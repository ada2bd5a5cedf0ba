r"""Class-wise self-knowledge distillation, CS-KD (Yun, Park, Lee, Shin, 2020).

The student teaches itself: for each training image :math:`x` it also sees :math:`x'`, another
image of the same class, and its (detached) softened prediction on :math:`x'` is the soft
target of its prediction on :math:`x`. Images of one class are pulled towards predicting alike,
which regularises the "dark knowledge" of a single network without any teacher.

Pairs are drawn from the training set bound by :meth:`CSKD.bind_data` (``fit`` does it), one
partner per image and epoch (:func:`class_partners`), and read by each batch's dataset indices.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..config import ConfigError
from ..data import ArrayDataset
from ..data._random import mix_seed
from ..data.transforms import BatchTransform, build_augment
from ..errors import KDTutorError
from .base import Distiller, HParams
from .hparams import LossWeights
from .registry import register_method

__all__ = ["CSKD", "CSKDHParams", "class_partners"]

_PAIR_STREAM = 11
_PAIR_AUGMENT_STREAM = 12


def class_partners(targets: Tensor, seed: int, epoch: int, *, include_self: bool = False) -> Tensor:
    r"""One epoch's partner of every sample: another sample of the same class, drawn uniformly.

    For a class whose samples are :math:`i_1 < \dots < i_n` (dataset order), the partner of
    :math:`i_j` is :math:`i_{(j + o_j) \bmod n}` with :math:`o_j` uniform in
    :math:`\{1, \dots, n-1\}`: a uniform draw among the *other* images of the class, as the
    paper describes CS-KD's :math:`x'` (Yun et al., 2020, "another sample of the same class").
    ``include_self=True`` draws :math:`o_j` in :math:`\{0, \dots, n-1\}` instead, i.e. uniformly
    over the whole class, the image itself included: what the authors' ``PairBatchSampler``
    does (``random.choice(classwise_indices[y])``, alinlab/cs-kd ``datasets.py``). A class of
    one image pairs it with itself (its CS-KD term is then zero).

    The draws come from a ``torch.Generator`` seeded by a mix of ``(seed, epoch)``: the table
    is the same every time it is rebuilt for that epoch (so a resumed run sees the same
    pairs), and it changes from epoch to epoch.

    Args:
        targets: int64 ``(N,)`` labels, e.g. ``ArrayDataset.targets``.
        seed: the run's seed.
        epoch: the 0-based epoch.
        include_self: let an image be its own partner (the authors' code).

    Returns:
        int64 ``(N,)`` dataset indices: ``partners[i]`` has label ``targets[i]``.

    Example:
        >>> import torch
        >>> class_partners(torch.tensor([0, 1, 0, 1, 2]), seed=0, epoch=0).tolist()
        [2, 3, 0, 1, 4]
    """
    targets = torch.as_tensor(targets).cpu()
    if targets.ndim != 1 or targets.is_floating_point():
        raise KDTutorError(
            f"class_partners needs integer labels of shape (N,), got {targets.dtype} "
            f"{tuple(targets.shape)}: pass the dataset's targets (ArrayDataset.targets)."
        )
    targets = targets.to(torch.int64)
    partners = torch.arange(targets.numel(), dtype=torch.int64)
    if targets.numel() == 0:
        return partners
    if int(targets.min()) < 0:
        raise KDTutorError("class_partners needs labels >= 0 (class indices).")
    generator = torch.Generator().manual_seed(mix_seed(seed, epoch, _PAIR_STREAM))
    order = torch.argsort(targets, stable=True)  # the samples of each class, in dataset order
    counts = torch.bincount(targets).tolist()
    for members in torch.split(order, counts):
        n = members.numel()
        if n <= 1:
            continue  # no other image: paired with itself
        offset = torch.randint(0 if include_self else 1, n, (n,), generator=generator)
        partners[members] = members[(torch.arange(n) + offset) % n]
    return partners


@dataclass(frozen=True)
class CSKDHParams(LossWeights):
    """Defaults from the authors' code (alinlab/cs-kd, ``train.py``): ``T=4`` (``--temp``),
    ``kd_weight=1`` (the paper's :math:`\\lambda`, ``--lamda``: 1 on CIFAR-100 and
    TinyImageNet, 3 on the fine-grained datasets in their README), and the cross entropy
    unweighted (``ce_weight=1``).

    ``include_self`` lets an image be drawn as its own partner, as the authors' sampler does
    (see :func:`class_partners`); the default follows the paper (another image).
    ``pair_augment`` names the augmentation applied to the partners (a name of
    :func:`~kdtutor.data.transforms.build_augment`): the partners are read from the bound
    training set, so they are un-augmented unless it is given; give the same name as
    ``fit(augment=...)`` for pairs that look like the anchors (the authors' partners go
    through the same random crop and flip as the anchors)."""

    ce_weight: float = 1.0
    kd_weight: float = 1.0
    T: float = 4.0
    include_self: bool = False
    pair_augment: str | None = None

    def validate(self) -> None:
        super().validate()
        try:
            build_augment(self.pair_augment)
        except KDTutorError as error:
            raise ConfigError(f"cskd.pair_augment: {error}") from None


@register_method
class CSKD(Distiller):
    r"""CS-KD: the student's prediction on another image of the same class is its soft target.

    .. math::
        \mathcal{L} = \lambda_{CE}\,\mathrm{CE}(z(x), y)
            + \lambda\,T^2\,\frac1B\sum_{i=1}^{B}
              \mathrm{KL}\big(p^T(x'_i; \tilde\theta) \,\|\, p^T(x_i; \theta)\big),

    where :math:`x'_i` is the partner of :math:`x_i` (same label, :func:`class_partners`),
    :math:`p^T = \mathrm{softmax}(z / T)` and :math:`\tilde\theta` are the current weights
    treated as constants: the partners' forward runs under ``torch.no_grad()``, so no
    gradient reaches :math:`z(x')` (:func:`~kdtutor.losses.kd_loss` with the partners' logits
    as the teacher's). Logged as ``ce`` and ``kd`` (weighted by ``ce_weight`` and
    ``kd_weight`` = :math:`\lambda`).

    As in the authors' code (alinlab/cs-kd, ``train.py``): the cross entropy is on the
    anchors only; the partners go through the network in training mode (their own batch
    statistics, and their forward updates BatchNorm's running statistics) after the
    anchors. Their sampler puts ``batch_size`` anchors and as many partners in one step, so
    ``fit(batch_size=64)`` runs 64 anchors and 64 partners per step.

    Paper: Yun, Park, Lee, Shin (2020), *Regularizing Class-wise Predictions via
    Self-knowledge Distillation*, CVPR.
    """

    name = "cskd"
    family = "self"
    loss_weights = ("kd_weight",)
    paper = (
        "Yun, Park, Lee, Shin (2020). Regularizing Class-wise Predictions via Self-knowledge "
        "Distillation"
    )
    hparams_cls = CSKDHParams
    requires_teacher = False

    def __init__(
        self, student: nn.Module, teacher: nn.Module | None = None, hparams: HParams | None = None
    ) -> None:
        if teacher is not None:
            warnings.warn(
                "cskd needs no teacher (the student's predictions on other images of the same "
                "class are its soft targets): the teacher network given is ignored.",
                stacklevel=2,
            )
            teacher = None
        super().__init__(student, teacher, hparams)
        self._data: ArrayDataset | None = None
        self._seed = 0
        self._partners: Tensor | None = None
        self._pair_transform: BatchTransform = build_augment(self.hparams.pair_augment)
        self._pair_generator: torch.Generator | None = None

    # -- the partners --------------------------------------------------------------------------
    def bind_data(self, train_data: Any, *, seed: int | None = None) -> None:
        """Keep the training set the partners are read from, and draw epoch 0's partners.

        Args:
            train_data: the training split, an :class:`~kdtutor.data.ArrayDataset` (the one
                ``fit`` trains on: batches carry indices into it).
            seed: the seed of the partner draws; default ``torch.initial_seed()``, which is the
                run's seed inside ``fit`` (it seeds torch before binding the data).
        """
        if not isinstance(train_data, ArrayDataset):
            raise KDTutorError(
                f"cskd draws each image's partner from the training set by index, so it needs "
                f"an ArrayDataset, got {type(train_data).__name__}. Load the data with "
                "kdtutor.data.load_dataset(...) or wrap your tensors in "
                "kdtutor.data.ArrayDataset(images, targets, classes, name)."
            )
        self._data = train_data
        self._seed = int(torch.initial_seed() if seed is None else seed)
        self.on_epoch_start(0, 1)

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Draw this epoch's partners (and the partners' augmentation stream) from
        ``(seed, epoch)``, so that a run resumed at ``epoch`` pairs the same images."""
        if self._data is None:
            return
        hp: CSKDHParams = self.hparams  # type: ignore[assignment]
        self._partners = class_partners(
            self._data.targets, self._seed, epoch, include_self=hp.include_self
        )
        self._pair_generator = None
        if not self._pair_transform.deterministic:
            seed = mix_seed(self._seed, epoch, _PAIR_AUGMENT_STREAM)
            self._pair_generator = torch.Generator().manual_seed(seed)

    @property
    def partners(self) -> Tensor | None:
        """The current epoch's partner table (``None`` before :meth:`bind_data`)."""
        return self._partners

    def pair_inputs(self, index: Tensor | None, like: Tensor) -> Tensor:
        """The partners' inputs for a batch with dataset indices (or cache rows) ``index``,
        on ``like``'s device and in its memory format."""
        if self._data is None or self._partners is None:
            raise KDTutorError(
                "cskd has no training set to draw the partners from: call "
                "distiller.bind_data(train) first (fit does it)."
            )
        if index is None:
            raise KDTutorError(
                "cskd needs each batch's dataset indices to find the partners, and this batch "
                "has none (a DataLoader's batches carry no index): train with fit() on an "
                "ArrayDataset, or call distiller(x, y, index) with the indices of x."
            )
        rows = index.detach().to("cpu", torch.int64) % len(self._data)  # cache rows: view*N+i
        x_pair, _ = self._data.batch(self._partners[rows])
        if self._pair_generator is not None:
            x_pair = self._pair_transform(x_pair, self._pair_generator)
        x_pair = x_pair.to(like.device, non_blocking=True)
        if x_pair.ndim == 4 and like.is_contiguous(memory_format=torch.channels_last):
            x_pair = x_pair.contiguous(memory_format=torch.channels_last)
        return x_pair

    # -- the loss ------------------------------------------------------------------------------
    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        hp: CSKDHParams = self.hparams  # type: ignore[assignment]
        logits = self.student(x)
        pair_logits = None
        if hp.kd_weight > 0:
            x_pair = self.pair_inputs(index, x)
            with torch.no_grad():
                pair_logits = self.student(x_pair)
        return logits, hp.weighted_losses(logits, y, pair_logits)
