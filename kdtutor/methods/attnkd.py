r"""Attention distillation for vision transformers (MiniLM / MiniViT style).

The student's self-attention in one block is taught the teacher's: with ``mode="probs"`` the
attention probabilities (MiniLM, Wang et al., 2020; :func:`~kdtutor.losses.attention.attention_kl`),
read at ``blocks.<i>.attn.attn_drop`` (its output *is* the softmaxed map, ``(B, H, N, N)``);
with ``mode="relation"`` MiniViT's q/k/v relations (Zhang et al., 2022;
:func:`~kdtutor.losses.attention.qkv_relation_loss`), read at ``blocks.<i>.attn.qkv``. Both
models must be :class:`~kdtutor.models.vit.VisionTransformer` s (or have ``blocks.<i>.attn``
laid out the same way) with the same number of tokens; ``"probs"`` also needs the same heads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import ConfigError, non_negative, positive
from ..errors import KDTutorError, ShapeMismatchError
from ..features import FeatureExtractor, evaluating
from ..losses.attention import attention_kl, qkv_relation_loss, split_qkv
from .base import HParams
from .feature_base import FeatureDistiller, FeatureHParams
from .registry import register_method

__all__ = ["AttnKD", "AttnKDHParams", "attention_maps"]


@dataclass(frozen=True)
class AttnKDHParams(FeatureHParams):
    """Defaults: MiniViT's (``TEMPERATURE=1``, ``QKV_LOSS_WEIGHT=1``, ``AR=1``) with CE and
    Hinton's KD at weight 1 (our choice). ``student_block`` / ``teacher_block``: which block
    (negative counts from the last). ``mode``: ``"probs"`` or ``"relation"``."""

    kd_weight: float = 1.0
    T: float = 1.0
    attn_weight: float = 1.0
    mode: str = "probs"
    student_block: int = -1
    teacher_block: int = -1
    relation_heads: int = 1

    def validate(self) -> None:
        super().validate()
        non_negative("attn_weight", self.attn_weight, "attnkd")
        positive("relation_heads", self.relation_heads, "attnkd")
        if self.mode not in ("probs", "relation"):
            raise ConfigError(f"attnkd.mode must be 'probs' or 'relation', got {self.mode!r}.")


def _block_path(model: nn.Module, block: int, leaf: str, role: str) -> str:
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Sequential) or not all(
        hasattr(getattr(b, "attn", None), "attn_drop") for b in blocks
    ):
        raise KDTutorError(
            f"attnkd reads self-attention maps, but the {role} ({type(model).__name__}) has no "
            "blocks.<i>.attn.attn_drop; use a vision transformer (build_model('vit_tiny', ...)) "
            f"or pass {role}_paths explicitly."
        )
    n = len(blocks)
    if not -n <= block < n:
        raise ConfigError(f"attnkd: {role}_block={block} is out of range for {n} blocks.")
    return f"blocks.{block % n}.attn.{leaf}"


@register_method
class AttnKD(FeatureDistiller):
    r"""Attention distillation (see the module docstring):

    .. math::
        \mathcal{L} = \lambda_{CE}\,\mathrm{CE} + w\,\mathcal{L}_{attn} + \lambda_{KD}\,\mathrm{KD}

    with :math:`\mathcal{L}_{attn}` the row KL of the attention maps (``"probs"``) or MiniViT's
    relation loss (``"relation"``), logged as ``"attn"``.
    """

    name = "attnkd"
    family = "attention"
    paper = (
        "Wang et al. (2020). MiniLM: Deep Self-Attention Distillation for Task-Agnostic "
        "Compression of Pre-Trained Transformers; Zhang et al. (2022). MiniViT: Compressing "
        "Vision Transformers with Weight Multiplexing"
    )
    hparams_cls = AttnKDHParams
    loss_weights = ("attn_weight",)
    path_policy = "last"
    uses_connectors = False

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        hparams: HParams | None = None,
        *,
        input_shape: Sequence[int] | None = None,
    ) -> None:
        hp = hparams if hparams is not None else AttnKDHParams()
        if isinstance(hp, AttnKDHParams) and teacher is not None and not hp.student_paths:
            leaf = "attn_drop" if hp.mode == "probs" else "qkv"
            hp = dataclasses.replace(
                hp,
                student_paths=(_block_path(student, hp.student_block, leaf, "student"),),
                teacher_paths=(_block_path(teacher, hp.teacher_block, leaf, "teacher"),),
            )
        super().__init__(student, teacher, hp, input_shape=input_shape)

    def build_modules(self) -> None:
        hp = self.hparams
        if len(self.student_paths) != 1:
            raise ConfigError("attnkd matches one block: give one student and one teacher path.")
        (s,), (t,) = self.student_shapes, self.teacher_shapes
        if hp.mode == "probs" and s != t:
            raise ShapeMismatchError(
                f"attnkd compares attention maps (heads, tokens, tokens) directly, but the "
                f"student's are {s} and the teacher's {t}. Give the student the teacher's "
                "number of heads and patch size, or use mode='relation' (heads may differ)."
            )
        if hp.mode == "relation" and s[:-1] != t[:-1]:
            raise ShapeMismatchError(
                f"attnkd (relation) needs the same tokens on both sides, got qkv outputs {s} "
                f"and {t}; use the same patch size and image size."
            )

    def feature_losses(self, logits, y, student_features, teacher_features, teacher_logits, index):
        hp = self.hparams
        (s,), (t,) = student_features, teacher_features
        if hp.mode == "probs":
            loss = attention_kl(s, t.detach())
        else:
            teacher_qkv = tuple(x.detach() for x in split_qkv(t))
            loss = qkv_relation_loss(split_qkv(s), teacher_qkv, hp.relation_heads)  # type: ignore[arg-type]
        return hp.weighted_losses(logits, y, teacher_logits, {"attn": hp.attn_weight * loss})


@torch.no_grad()
def attention_maps(model: nn.Module, x: Tensor, block: int = -1) -> Tensor:
    """The attention probabilities ``(B, H, N, N)`` of ``block`` of a ViT on ``x`` (eval mode)."""
    path = _block_path(model, block, "attn_drop", "model")
    with evaluating(model), FeatureExtractor(model, [path]) as fx:
        model(x)
    return fx.tensor(path)
