r"""DAFL: data-free learning of student networks (Chen, Wang, Xu, Yang, Liu, Shi, Xu, Xu,
Tian, ICCV 2019).

No training images: a generator :math:`G` maps noise :math:`z \sim \mathcal N(0, I)` to
images that the frozen teacher classifies confidently (one-hot loss), with strong
penultimate activations (activation loss) and balanced classes (information entropy); the
student learns the teacher's outputs on those images (KD at :math:`T = 1`). Defaults and
the generator follow the official code (huawei-noah/Data-Efficient-Model-Compression,
``DAFL/DAFL-train.py``, MNIST settings); :data:`DAFL_CIFAR` holds its CIFAR-10 settings
(``DAFL/README.md``).

Train it with ``fit(distiller, None, test, steps_per_epoch=N)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..config import ConfigError, non_negative, positive
from ..data.loader import Batch
from ..errors import KDTutorError
from ..features import FeatureExtractor
from ..losses.data_free import (
    activation_loss,
    information_entropy_loss,
    one_hot_loss,
)
from ..losses.response import kd_loss
from .base import Distiller
from .hparams import LossWeights
from .registry import register_method
from .steps import OptimizerGroup

if TYPE_CHECKING:
    from .steps import Steps

__all__ = ["DAFL", "DAFL_CIFAR", "GENERATORS", "MODES", "DAFLGenerator", "DAFLHParams"]

MODES: tuple[str, ...] = ("code", "paper")
"""``"code"``: the entropy term in ``log10`` (``DAFL-train.py``); ``"paper"``: natural log."""

GENERATORS: tuple[str, ...] = ("dafl", "noise")
"""``"dafl"``: the trained generator; ``"noise"``: images drawn from :math:`\\mathcal N(0, I)`
(the paper's "KD on normal-distribution data" baseline; no generator, same student steps)."""

DAFL_CIFAR: Mapping[str, Any] = {
    "oh": 0.05,
    "ie": 5.0,
    "a": 0.01,
    "lr_g": 0.02,
    "latent": 1000,
    "student_optimizer": "sgd",
    "lr_s": 0.1,
    "wd_s": 5e-4,
}
"""The official CIFAR-10 settings (``DAFL/README.md``: ``--lr_G 0.02 --lr_S 0.1
--latent_dim 1000 --oh 0.05 --ie 5 --act 0.01``; SGD momentum 0.9, weight decay 5e-4 in
``DAFL-train.py``). The README's ``--act`` is the script's ``--a``."""


@dataclass(frozen=True)
class DAFLHParams(LossWeights):
    """Defaults of the official ``DAFL-train.py`` (MNIST: LeNet-5 to LeNet-5-half).

    Attributes:
        ce_weight: must stay 0 (generated images have no labels).
        kd_weight, T: the student's KD term; the code's ``kdloss`` is weight 1 at T = 1.
        oh, ie, a: weights of the one-hot, information-entropy and activation losses.
        lr_g: the generator's Adam learning rate (default betas, as the code).
        latent: the dimension of :math:`z`.
        gen_width: the generator's channel width (the code: 128; a smaller one is our
            budget deviation).
        img_size: side of the generated images (a multiple of 4).
        channels: image channels; 0 takes the teacher's first convolution's.
        student_optimizer, lr_s, wd_s: the student's optimizer (the code: Adam 2e-3 without
            weight decay on MNIST, SGD 0.1 momentum 0.9 and weight decay 5e-4 on CIFAR).
        mode: ``"code"`` (log10 entropy) or ``"paper"`` (natural log).
        generator: ``"dafl"`` or ``"noise"`` (the KD-on-noise baseline).
        feature_path: the teacher's feature for the activation loss; empty: its
            ``embedding_path`` (the classifier's input, as the code's ``out_feature``).
    """

    ce_weight: float = 0.0
    kd_weight: float = 1.0
    T: float = 1.0
    oh: float = 1.0
    ie: float = 5.0
    a: float = 0.1
    lr_g: float = 0.2
    latent: int = 100
    gen_width: int = 128
    img_size: int = 32
    channels: int = 0
    student_optimizer: str = "adam"
    lr_s: float = 2e-3
    wd_s: float = 0.0
    mode: str = "code"
    generator: str = "dafl"
    feature_path: str = ""

    def validate(self) -> None:
        super().validate()
        if self.ce_weight != 0:
            raise ConfigError(
                f"dafl.ce_weight must be 0: generated images have no labels, got {self.ce_weight}."
            )
        positive("kd_weight", self.kd_weight, "dafl")
        for name in ("oh", "ie", "a", "wd_s", "channels"):
            non_negative(name, getattr(self, name), "dafl")
        for name in ("lr_g", "lr_s", "latent", "img_size"):
            positive(name, getattr(self, name), "dafl")
        if self.gen_width < 2 or self.gen_width % 2:
            raise ConfigError(f"dafl.gen_width must be an even number >= 2, got {self.gen_width}.")
        if self.img_size % 4:
            raise ConfigError(
                f"dafl.img_size must be a multiple of 4 (the generator upsamples twice), "
                f"got {self.img_size}."
            )
        checks = (
            ("mode", MODES),
            ("generator", GENERATORS),
            ("student_optimizer", ("sgd", "adam", "adamw")),
        )
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"dafl.{name} must be one of {', '.join(map(repr, allowed))}, "
                    f"got {getattr(self, name)!r}."
                )


class DAFLGenerator(nn.Module):
    r"""DAFL's generator (``DAFL-train.py``), of width :math:`w`: ``Linear(z, w (S/4)^2)``,
    BN(w), x2 upsampling, conv w-w, BN(w, eps 0.8), LeakyReLU 0.2, x2 upsampling,
    conv w-w/2, BN(w/2, eps 0.8), LeakyReLU 0.2, conv w/2-C, tanh, BN(C, no affine).

    (The ``0.8`` is the BatchNorm's *eps*, a DCGAN habit the code keeps.)
    """

    def __init__(self, latent: int, channels: int, img_size: int, width: int = 128) -> None:
        super().__init__()
        self.latent, self.width, self.init_size = latent, width, img_size // 4
        self.fc = nn.Linear(latent, width * self.init_size**2)
        self.bn0 = nn.BatchNorm2d(width)
        self.block1 = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1),
            nn.BatchNorm2d(width, 0.8),
            nn.LeakyReLU(0.2),
        )
        self.block2 = nn.Sequential(
            nn.Conv2d(width, width // 2, 3, padding=1),
            nn.BatchNorm2d(width // 2, 0.8),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width // 2, channels, 3, padding=1),
            nn.Tanh(),
            nn.BatchNorm2d(channels, affine=False),
        )

    def forward(self, z: Tensor) -> Tensor:
        x = self.fc(z).view(z.shape[0], self.width, self.init_size, self.init_size)
        x = nn.functional.interpolate(self.bn0(x), scale_factor=2)
        x = nn.functional.interpolate(self.block1(x), scale_factor=2)
        return self.block2(x)


@register_method
class DAFL(Distiller):
    r"""DAFL. Each step draws :math:`z`, generates :math:`x = G(z)` and runs the teacher once
    (logits :math:`z^T` and penultimate features :math:`f^T`), then

    1. steps the ``generator`` group (Adam, ``lr_g``) on
       :math:`\mathcal L_G = oh\,\mathcal L_{oh} + ie\,\mathcal L_{ie} + a\,\mathcal L_a`
       (:func:`~kdtutor.losses.data_free.one_hot_loss`,
       :func:`~kdtutor.losses.data_free.information_entropy_loss`,
       :func:`~kdtutor.losses.data_free.activation_loss`; logged already weighted as
       ``onehot``, ``entropy``, ``activation``);
    2. steps the ``student`` group on
       ``kd_weight`` :math:`T^2\,\mathrm{KL}(p^T_t \| p^T_s)` (``kd``, batch mean; the code:
       weight 1, :math:`T = 1`) with :math:`x` and :math:`z^T` detached.

    The student's inputs and targets are taken before the generator's update, so the two
    steps equal the code's single backward of the sum followed by both optimizers' steps.
    The generator and its optimizer are checkpointed with the student. ``generator="noise"``
    replaces :math:`G(z)` by Gaussian images and skips step 1.
    """

    name = "dafl"
    family = "data_free"
    paper = (
        "Chen, Wang, Xu, Yang, Liu, Shi, Xu, Xu, Tian (2019). Data-Free Learning of Student "
        "Networks"
    )
    hparams_cls = DAFLHParams
    supports_ddp = False
    protocol_epochs = 200

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from ..models.summary import first_in_channels

        hp: DAFLHParams = self.hparams  # type: ignore[assignment]
        assert self.teacher is not None
        channels = hp.channels or first_in_channels(self.teacher)
        if not channels:
            raise KDTutorError(
                "dafl cannot tell how many channels the teacher's images have: pass "
                "channels=... (e.g. channels=3)."
            )
        self.channels = int(channels)
        self.feature_path = hp.feature_path or getattr(self.teacher, "embedding_path", "")
        if not self.feature_path:
            raise KDTutorError(
                "dafl's activation loss reads the teacher's penultimate features, but the "
                "teacher has no embedding_path: pass feature_path=... (a module path from "
                "kdtutor.features.list_paths(teacher), e.g. 'fc:input')."
            )
        FeatureExtractor(self.teacher, [self.feature_path]).remove()  # checks the path
        self.generator: DAFLGenerator | None = None
        if hp.generator == "dafl":
            self.generator = DAFLGenerator(hp.latent, self.channels, hp.img_size, hp.gen_width)

    def optimizer_groups(self) -> dict[str, OptimizerGroup]:
        hp: DAFLHParams = self.hparams  # type: ignore[assignment]
        groups = {
            "student": OptimizerGroup(
                list(self.student.parameters()),
                optimizer=hp.student_optimizer,  # type: ignore[arg-type]
                lr=hp.lr_s,
                weight_decay=hp.wd_s,
            )
        }
        if self.generator is not None:
            groups["generator"] = OptimizerGroup(
                list(self.generator.parameters()),
                optimizer="adam",
                lr=hp.lr_g,
                weight_decay=0.0,
                betas=(0.9, 0.999),
                schedule="constant",
            )
        return groups

    def synthesize_batch(self, batch_size: int) -> Batch:
        """``batch_size`` latent codes :math:`z \\sim \\mathcal N(0, I)` (torch's global RNG,
        which ``fit`` seeds and checkpoints); the images are made in :meth:`train_step`."""
        return Batch(torch.randn(batch_size, self.hparams.latent), None, None)  # type: ignore[attr-defined]

    def generate(self, z: Tensor) -> Tensor:
        """Images for latent codes ``z`` (Gaussian noise with ``generator="noise"``)."""
        hp: DAFLHParams = self.hparams  # type: ignore[assignment]
        if self.generator is None:
            return torch.randn(z.shape[0], self.channels, hp.img_size, hp.img_size, device=z.device)
        return self.generator(z)

    def generator_losses(self, teacher_logits: Tensor, features: Tensor) -> dict[str, Tensor]:
        """The generator's weighted losses ``{"onehot", "entropy", "activation"}``."""
        hp: DAFLHParams = self.hparams  # type: ignore[assignment]
        base = "10" if hp.mode == "code" else "e"
        return {
            "onehot": hp.oh * one_hot_loss(teacher_logits),
            "entropy": hp.ie * information_entropy_loss(teacher_logits, base),
            "activation": hp.a * activation_loss(features),
        }

    def train_step(self, batch: Batch, steps: Steps) -> tuple[Any, dict[str, Tensor]]:
        assert self.teacher is not None
        hp: DAFLHParams = self.hparams  # type: ignore[assignment]
        images = self.generate(batch.x)
        with FeatureExtractor(self.teacher, [self.feature_path]) as fx:
            teacher_logits = self.teacher(images)
            features = fx.tensor(self.feature_path)
        self.teacher_forward_calls += 1
        logged: dict[str, Tensor] = {}
        if self.generator is not None:
            g = self.generator_losses(teacher_logits, features)
            steps.step("generator", g)
            logged = {k: v.detach() for k, v in g.items()}
        student_logits = self.student(images.detach())
        losses = {"kd": hp.kd_weight * kd_loss(student_logits, teacher_logits.detach(), hp.T)}
        steps.step("student", losses)
        return None, {**logged, "kd": losses["kd"].detach()}

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        raise KDTutorError(
            "dafl is data-free: train it with fit(distiller, None, test, steps_per_epoch=N), "
            "which calls train_step on its own generated batches."
        )
