"""In-memory image datasets: uint8 tensors, normalised on the fly, with a content fingerprint."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["ArrayDataset", "channel_stats"]


def channel_stats(images: Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images, in [0, 1] units.

    Args:
        images: uint8 tensor (N, C, H, W).
        chunk: Images processed at a time (bounds the float64 temporaries).

    Returns:
        ``(mean, std)``, each a tuple of ``C`` floats (population std over all pixels).
    """
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(
            f"expected a non-empty (N, C, H, W) tensor, got shape {tuple(images.shape)}."
        )
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for lo in range(0, images.shape[0], chunk):
        block = images[lo : lo + chunk].to(torch.float64).div_(255.0)
        total += block.sum(dim=(0, 2, 3))
        total_sq += block.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(1e-12).sqrt()
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


class ArrayDataset(Dataset):
    """A labelled image dataset held in memory as uint8, normalised when read.

    Treat the tensors as read-only: datasets are cached and shared between callers.

    Attributes:
        images: uint8 tensor (N, C, H, W).
        targets: int64 tensor (N,).
        classes: Class names; ``targets`` index into it.
        name: Dataset name (e.g. ``"shapes"``).
        split: ``"train"`` or ``"test"`` (or any label the creator chose).
        mean: Per-channel mean in [0, 1] units, subtracted when reading.
        std: Per-channel standard deviation in [0, 1] units, divided by when reading.
    """

    def __init__(
        self,
        images: Tensor,
        targets: Tensor,
        classes: Sequence[str],
        name: str,
        split: str = "train",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        """Wrap ``images`` and ``targets``.

        Args:
            images: uint8 tensor (N, C, H, W).
            targets: Integer tensor (N,) of labels in ``[0, len(classes))``.
            classes: Class names.
            name: Dataset name, part of the fingerprint.
            split: Split name, part of the fingerprint.
            mean: Per-channel mean in [0, 1] units; computed from ``images`` when omitted
                (pass the train split's values for a test split).
            std: Per-channel std in [0, 1] units; computed with ``mean`` when omitted.

        Raises:
            ValueError: Wrong dtypes or shapes, labels out of range, or bad statistics.
        """
        if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                "images must be a uint8 tensor of shape (N, C, H, W), got "
                f"{getattr(images, 'dtype', type(images))} {tuple(getattr(images, 'shape', ()))}."
            )
        targets = torch.as_tensor(targets)
        if targets.ndim != 1 or targets.shape[0] != images.shape[0]:
            raise ValueError(
                f"targets must have shape ({images.shape[0]},), got {tuple(targets.shape)}."
            )
        if targets.is_floating_point() or targets.is_complex():
            raise ValueError(f"targets must be integers, got {targets.dtype}.")
        self.images = images.contiguous()
        self.targets = targets.to(torch.int64).contiguous()
        self.classes = list(classes)
        if self.targets.numel() and not 0 <= int(self.targets.min()) <= int(
            self.targets.max()
        ) < len(self.classes):
            raise ValueError(
                f"labels must lie in [0, {len(self.classes)}), got "
                f"[{int(self.targets.min())}, {int(self.targets.max())}]."
            )
        self.name = name
        self.split = split
        if mean is None or std is None:
            mean, std = channel_stats(self.images)
        c = images.shape[1]
        if len(mean) != c or len(std) != c or min(std) <= 0:
            raise ValueError(f"mean and std need {c} values each, std positive; got {mean}, {std}.")
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        m = torch.tensor(self.mean, dtype=torch.float32).view(1, c, 1, 1)
        s = torch.tensor(self.std, dtype=torch.float32).view(1, c, 1, 1)
        self._scale = 1.0 / (255.0 * s)
        self._shift = -m / s
        self._fingerprint: str | None = None

    # -- sizes -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        """Number of image channels (1 for grey, 3 for RGB)."""
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        """Side of the (square) images in pixels; the height if they are not square."""
        return int(self.images.shape[2])

    # -- reading -----------------------------------------------------------------------------

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        """Return ``(image, label)``: a normalised float32 (C, H, W) tensor and an int."""
        x = self.images[index].to(torch.float32) * self._scale[0] + self._shift[0]
        return x, int(self.targets[index])

    def batch(self, indices: Tensor | Sequence[int]) -> tuple[Tensor, Tensor]:
        """Gather a batch with vectorised indexing.

        Args:
            indices: int64 tensor (or sequence) of dataset indices.

        Returns:
            ``(x, y)``: normalised float32 (B, C, H, W) and int64 (B,).
        """
        idx = torch.as_tensor(indices, dtype=torch.int64)
        x = self.images.index_select(0, idx).to(torch.float32)
        x.mul_(self._scale).add_(self._shift)
        return x, self.targets.index_select(0, idx)

    def normalize(self, images: Tensor) -> Tensor:
        """Turn uint8 (or 0..255 float) images (B, C, H, W) into normalised float32."""
        return images.to(torch.float32) * self._scale + self._shift

    def denormalize(self, x: Tensor) -> Tensor:
        """Undo the normalisation: float images in [0, 1] (for plotting), same shape as ``x``."""
        c = self.in_channels
        m = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(c, 1, 1)
        s = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(c, 1, 1)
        return (x * s + m).clamp(0.0, 1.0)

    def class_counts(self) -> list[int]:
        """Number of images of each class, in class order."""
        return torch.bincount(self.targets, minlength=self.num_classes).tolist()

    # -- identity ------------------------------------------------------------------------------

    def fingerprint(self) -> str:
        """sha256 (hex) of name, split, shapes, image and label bytes, mean and std (cached).

        Two datasets with the same fingerprint give the same batches, so it is safe as a cache
        key for anything computed from the data (e.g. teacher logits).
        """
        if self._fingerprint is None:
            digest = hashlib.sha256()
            header = {
                "name": self.name,
                "split": self.split,
                "shape": list(self.images.shape),
                "mean": self.mean,
                "std": self.std,
            }
            digest.update(json.dumps(header, sort_keys=True).encode())
            digest.update(np.ascontiguousarray(self.images.numpy()).data)
            digest.update(np.ascontiguousarray(self.targets.numpy()).data)
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def subset(self, n_or_indices: int | Tensor | Sequence[int]) -> ArrayDataset:
        """A smaller dataset with the same classes, name, split and normalisation.

        Args:
            n_or_indices: An int ``n`` for the first ``n`` samples (a view, no copy), or the
                indices to keep (in that order).

        Returns:
            The new dataset.
        """
        if isinstance(n_or_indices, int | np.integer):
            n = int(n_or_indices)
            if not 0 <= n <= len(self):
                raise ValueError(f"subset size must be in [0, {len(self)}], got {n}.")
            images, targets = self.images[:n], self.targets[:n]
        else:
            idx = torch.as_tensor(n_or_indices, dtype=torch.int64)
            images, targets = self.images.index_select(0, idx), self.targets.index_select(0, idx)
        return ArrayDataset(
            images, targets, self.classes, self.name, self.split, mean=self.mean, std=self.std
        )

    def select_classes(self, classes: Sequence[int]) -> ArrayDataset:
        """The samples whose label is in ``classes`` (in dataset order), labels unchanged:
        one task of a class-incremental sequence.

        >>> from kdtutor.data import load_dataset
        >>> first = load_dataset("digits", "train").select_classes([0, 1])
        >>> sorted(set(first.targets.tolist()))
        [0, 1]
        """
        wanted = torch.as_tensor(list(classes), dtype=self.targets.dtype)
        unknown = [c for c in wanted.tolist() if not 0 <= c < self.num_classes]
        if unknown:
            raise ValueError(
                f"classes {unknown} are not labels of {self.name!r} (0..{self.num_classes - 1})."
            )
        return self.subset(torch.nonzero(torch.isin(self.targets, wanted)).flatten())

    def __repr__(self) -> str:
        return (
            f"ArrayDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"classes={self.num_classes}, shape={tuple(self.images.shape[1:])})"
        )
