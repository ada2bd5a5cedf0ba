"""Batch-level augmentations on normalised float tensors (B, C, H, W), vectorised.

Random transforms draw every random number from a ``torch.Generator`` passed at call time,
never from torch's global RNG, so a loader that seeds its generator from ``(seed, epoch)``
produces the same augmented batches after a checkpoint resume.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import unknown_name

__all__ = [
    "AUGMENTATIONS",
    "BatchTransform",
    "FixedViews",
    "Identity",
    "RandomCropFlip",
    "build_augment",
]


class BatchTransform:
    """Base class: a callable ``transform(x, generator) -> x`` on a batch.

    Attributes:
        deterministic: True when the output depends on the input only (no random numbers);
            then outputs computed once (e.g. cached teacher logits) stay valid.
    """

    deterministic: bool = True

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Transform the batch ``x`` (B, C, H, W); random transforms need ``generator``."""
        raise NotImplementedError

    def describe(self) -> str:
        """A stable string naming the transform and its settings (used in cache keys)."""
        raise NotImplementedError

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, ...] | None:
        """Draw a batch's random parameters, or ``None`` when the transform cannot split drawing
        from applying (then :class:`~kdtutor.data.BatchLoader` calls it whole, in order).

        Transforms that implement ``sample`` and :meth:`apply` can be prepared by loader
        worker threads, sharded across processes and frozen into :class:`FixedViews`.
        """
        return () if self.deterministic else None

    def apply(self, x: Tensor, *params: Tensor) -> Tensor:
        """Apply parameters drawn by :meth:`sample` to ``x`` (B, C, H, W)."""
        if self.deterministic:
            return self(x)
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.describe()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BatchTransform) and self.describe() == other.describe()

    def __hash__(self) -> int:
        return hash(self.describe())


class Identity(BatchTransform):
    """Return the batch unchanged."""

    deterministic = True

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Return ``x`` itself."""
        return x

    def describe(self) -> str:
        """``"Identity()"``."""
        return "Identity()"


class RandomCropFlip(BatchTransform):
    """Random crop after zero padding, and random horizontal flip, drawn per sample.

    The padding value is 0 of the *normalised* tensor, i.e. the dataset's mean colour (the
    usual CIFAR recipe pads the raw image with black; at 4 pixels the difference is minor).

    Args:
        padding: Pixels of zero padding on each side; the crop offset is uniform in
            ``[0, 2 * padding]`` along each axis. 0 disables cropping.
        flip: Flip each sample left-right with probability 1/2.
    """

    deterministic = False

    def __init__(self, padding: int = 4, flip: bool = True) -> None:
        if int(padding) != padding or padding < 0:
            raise ValueError(f"padding must be a non-negative integer, got {padding!r}.")
        self.padding = int(padding)
        self.flip = bool(flip)
        self.deterministic = self.padding == 0 and not self.flip

    def describe(self) -> str:
        """E.g. ``"RandomCropFlip(padding=4,flip=True)"``."""
        return f"RandomCropFlip(padding={self.padding},flip={self.flip})"

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """Draw the random parameters of a batch.

        Args:
            batch_size: Number of samples.
            generator: The CPU generator to draw from.

        Returns:
            ``(top, left, flipped)``: int64 crop offsets in ``[0, 2 * padding]`` and a bool
            flip flag, each of shape (batch_size,).
        """
        span = 2 * self.padding + 1
        top = torch.randint(0, span, (batch_size,), generator=generator)
        left = torch.randint(0, span, (batch_size,), generator=generator)
        if self.flip:
            flipped = torch.rand(batch_size, generator=generator) < 0.5
        else:
            flipped = torch.zeros(batch_size, dtype=torch.bool)
        return top, left, flipped

    def apply(self, x: Tensor, top: Tensor, left: Tensor, flipped: Tensor) -> Tensor:
        """Apply given crop offsets and flips (see :meth:`sample`) to the batch ``x``."""
        b, c, h, w = x.shape
        p = self.padding
        device = x.device
        top, left, flipped = top.to(device), left.to(device), flipped.to(device)
        padded = F.pad(x, (p, p, p, p)) if p else x
        rows = top[:, None] + torch.arange(h, device=device)  # (B, H)
        ar = torch.arange(w, device=device)
        cols = left[:, None] + torch.where(flipped[:, None], w - 1 - ar, ar)  # (B, W)
        out = padded.gather(2, rows.view(b, 1, h, 1).expand(b, c, h, w + 2 * p))
        return out.gather(3, cols.view(b, 1, 1, w).expand(b, c, h, w))

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Crop and flip each sample of ``x`` (B, C, H, W) with numbers from ``generator``.

        Raises:
            ValueError: ``generator`` is missing (the global RNG is never used).
        """
        if self.deterministic:
            return x
        if generator is None:
            raise ValueError(
                "RandomCropFlip needs an explicit torch.Generator (transform(x, generator)); "
                "kdtutor never draws augmentations from the global RNG, so that runs resume "
                "bit-identically. BatchLoader passes one seeded from (seed, epoch)."
            )
        return self.apply(x, *self.sample(x.shape[0], generator))


class FixedViews:
    """``views`` fixed random views of every image, drawn once: augmentation you can cache.

    View ``v`` of image ``i`` always has the same crop and flip (drawn from a generator seeded
    with ``(seed, v)``, independent of the training seed), so a frozen teacher's outputs on it
    can be computed once. During training each sample shows one of its views, picked at random
    every epoch. With few views this is an *approximation* of fresh augmentation: the student
    sees ``views`` variants of each image instead of a new one every epoch.

    Args:
        augment: A random transform that implements ``sample`` and ``apply``.
        n: Number of images in the dataset.
        views: Number of fixed views per image (at least 1).
        seed: Seed of the views (part of :meth:`describe`, hence of cache keys).
    """

    def __init__(self, augment: BatchTransform, n: int, views: int, seed: int = 0) -> None:
        if isinstance(views, bool) or int(views) != views or views < 1:
            raise ValueError(f"views must be a positive integer, got {views!r}.")
        if augment.deterministic:
            raise ValueError(
                f"fixed views need a random augmentation, got {augment.describe()}: without one "
                "every view is the same image; use views=0."
            )
        from ._random import mix_seed

        draws = []
        for v in range(int(views)):
            generator = torch.Generator().manual_seed(mix_seed(seed, v, _VIEW_STREAM))
            params = augment.sample(n, generator)
            if params is None:
                raise ValueError(
                    f"{augment.describe()} cannot draw its parameters apart from applying them "
                    "(no sample/apply), so its views cannot be fixed."
                )
            draws.append(params)
        # one (views, n) table per parameter
        self.table = tuple(torch.stack(parts) for parts in zip(*draws, strict=True))
        self.augment = augment
        self.n = int(n)
        self.views = int(views)
        self.seed = int(seed)

    def apply(self, x: Tensor, view: Tensor, index: Tensor) -> Tensor:
        """Show view ``view[b]`` of image ``index[b]`` for each sample ``b`` of ``x``."""
        return self.augment.apply(x, *(t[view, index] for t in self.table))

    def describe(self) -> str:
        """E.g. ``"FixedViews(RandomCropFlip(padding=4,flip=True),views=4,seed=0)"``."""
        return f"FixedViews({self.augment.describe()},views={self.views},seed={self.seed})"

    def __repr__(self) -> str:
        return self.describe()


_VIEW_STREAM = 3

#: Names accepted by :func:`build_augment`.
AUGMENTATIONS: dict[str, str] = {
    "none": "no augmentation (Identity)",
    "crop_flip": "RandomCropFlip(padding=4, flip=True): the CIFAR recipe",
    "crop": "RandomCropFlip(padding=4, flip=False): shifts only (for digits)",
    "flip": "RandomCropFlip(padding=0, flip=True): horizontal flips only",
}


def build_augment(name: str | BatchTransform | None) -> BatchTransform:
    """Build an augmentation from its name.

    Args:
        name: ``None`` or ``"none"`` (Identity), ``"crop_flip"``, ``"crop"``, ``"flip"``, or a
            :class:`BatchTransform`, returned as is.

    Returns:
        The transform.

    Raises:
        kdtutor.errors.UnknownNameError: An unknown name; the message suggests the closest.
    """
    if isinstance(name, BatchTransform):
        return name
    if name is None or name == "none":
        return Identity()
    if name == "crop_flip":
        return RandomCropFlip()
    if name == "crop":
        return RandomCropFlip(padding=4, flip=False)
    if name == "flip":
        return RandomCropFlip(padding=0, flip=True)
    raise unknown_name("augmentation", str(name), AUGMENTATIONS)
