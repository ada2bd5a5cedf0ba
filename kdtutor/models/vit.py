"""A small Vision Transformer (Dosovitskiy et al. 2021) with DeiT's distillation token (Touvron et al. 2021).

The image is cut into ``patch_size x patch_size`` patches, each linearly embedded; a learnt
class token (and, with ``distill_token=True``, a distillation token) is prepended, learnt
position embeddings are added, and pre-norm transformer blocks (multi-head self-attention
and an MLP, each with a residual connection) process the sequence. The class token's final
state feeds ``head``.

DeiT's distillation token is a second learnt token whose final state feeds a second
classifier ``head_dist``; during training ``head`` learns from the labels and ``head_dist``
from the teacher (hard-label distillation in the paper), and at inference the two heads'
logits are averaged. :meth:`VisionTransformer.forward` always returns that average (for a
model without the token, ``head``'s logits); a distiller reads the two heads separately with
forward hooks on ``head`` and ``head_dist`` or by calling :meth:`VisionTransformer.forward_heads`.

``vit_tiny`` (patch 4, width 96, depth 6, 3 heads, MLP ratio 2) is sized for 32x32 images on
a CPU: 64 patches, about 0.45M parameters. Other input sizes work: the position embeddings are
interpolated (bicubic) to the new patch grid.

References:
    Dosovitskiy, A., et al. (2021). An Image is Worth 16x16 Words: Transformers for Image
    Recognition at Scale. ICLR.
    Touvron, H., Cord, M., Douze, M., Massa, F., Sablayrolles, A., Jégou, H. (2021). Training
    data-efficient image transformers & distillation through attention. ICML.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import check_positive_int, set_feature_paths
from .registry import register_model

__all__ = ["Attention", "TransformerBlock", "VisionTransformer", "vit"]

_PAPER = "Dosovitskiy et al. 2021, An Image is Worth 16x16 Words (ICLR); distillation token of Touvron et al. 2021, DeiT (ICML)"


class Attention(nn.Module):
    """Multi-head self-attention, written out with matrix products (so every FLOP is counted).

    Args:
        dim: Token width.
        heads: Number of heads (``dim`` must be divisible by it).
        dropout: Dropout on the attention weights and the output projection.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"the width {dim} must be divisible by the number of heads {heads}.")
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_drop = nn.Dropout(dropout)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, dim = x.shape
        qkv = (
            self.qkv(x)
            .reshape(batch, tokens, 3, self.heads, dim // self.heads)
            .permute(2, 0, 3, 1, 4)
        )
        q, k, v = qkv.unbind(0)
        weights = self.attn_drop((q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1))
        out = (weights @ v).transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj_drop(self.proj(out))


class FeedForward(nn.Module):
    """``fc2(dropout(gelu(fc1(x))))`` with hidden width ``dim * ratio``."""

    def __init__(self, dim: int, ratio: float, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class TransformerBlock(nn.Module):
    """A pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_ratio, dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """A ViT classifier, optionally with DeiT's distillation token and head.

    Modules: ``patch_embed`` (a strided convolution), ``blocks.0 ... blocks.{depth-1}``,
    ``norm``, ``head`` and, with the distillation token, ``head_dist``. Parameters
    ``cls_token``, ``dist_token`` (optional) and ``pos_embed``.

    Feature paths: the stages are the blocks (their outputs are token sequences of shape
    ``(batch, tokens, dim)``, the class token first, then the distillation token if any,
    then the patches); there are no pre-activation features; the embedding is the normalised
    class token (``head:input``).

    Args:
        image_size: Input height and width the position embeddings are built for.
        patch_size: Patch height and width (must divide ``image_size``).
        num_classes: Number of classes.
        in_channels: Channels of the input images.
        dim: Token width.
        depth: Number of transformer blocks.
        heads: Attention heads per block.
        mlp_ratio: Hidden width of the MLPs relative to ``dim``.
        dropout: Dropout probability in attention, MLPs and after the position embedding.
        distill_token: Add DeiT's distillation token and ``head_dist``.
    """

    def __init__(
        self,
        image_size: int = 32,
        patch_size: int = 4,
        num_classes: int = 10,
        in_channels: int = 3,
        dim: int = 96,
        depth: int = 6,
        heads: int = 3,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        distill_token: bool = False,
    ) -> None:
        super().__init__()
        for value, name in (
            (image_size, "image_size"),
            (patch_size, "patch_size"),
            (dim, "dim"),
            (depth, "depth"),
            (heads, "heads"),
        ):
            check_positive_int(value, name)
        if image_size % patch_size:
            raise ValueError(f"patch_size {patch_size} must divide image_size {image_size}.")
        self.patch_size = patch_size
        self.grid = image_size // patch_size
        self.num_tokens = 2 if distill_token else 1
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim)) if distill_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens + self.grid**2, dim))
        self.pos_drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(
            *(TransformerBlock(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.head_dist = nn.Linear(dim, num_classes) if distill_token else None
        self._init_weights()
        set_feature_paths(
            self,
            stages=tuple(f"blocks.{i}" for i in range(depth)),
            preact=(),
            embedding="head:input",
            num_classes=num_classes,
        )

    @property
    def distill_token(self) -> bool:
        """Whether the model has DeiT's distillation token and ``head_dist``."""
        return self.dist_token is not None

    def _init_weights(self) -> None:
        for tensor in (self.cls_token, self.pos_embed, self.dist_token):
            if tensor is not None:
                nn.init.trunc_normal_(tensor, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _position_embedding(self, grid: tuple[int, int]) -> Tensor:
        """The position embeddings, the patch part resized to ``grid`` when it differs."""
        if grid == (self.grid, self.grid):
            return self.pos_embed
        tokens, patches = self.pos_embed[:, : self.num_tokens], self.pos_embed[:, self.num_tokens :]
        dim = patches.shape[-1]
        patches = patches.reshape(1, self.grid, self.grid, dim).permute(0, 3, 1, 2)
        patches = F.interpolate(patches, size=grid, mode="bicubic", align_corners=False)
        return torch.cat(
            [tokens, patches.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], dim)], dim=1
        )

    def forward_features(self, x: Tensor) -> Tensor:
        """The normalised token sequence after the last block, ``(batch, tokens, dim)``."""
        x = self.patch_embed(x)
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)
        tokens = [self.cls_token.expand(x.shape[0], -1, -1)]
        if self.dist_token is not None:
            tokens.append(self.dist_token.expand(x.shape[0], -1, -1))
        x = torch.cat([*tokens, x], dim=1) + self._position_embedding(grid)
        return self.norm(self.blocks(self.pos_drop(x)))

    def forward_heads(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Logits of ``head`` (class token) and ``head_dist`` (distillation token, or ``None``)."""
        x = self.forward_features(x)
        logits = self.head(x[:, 0])
        if self.head_dist is None:
            return logits, None
        return logits, self.head_dist(x[:, 1])

    def forward(self, x: Tensor) -> Tensor:
        """Class logits; with the distillation token, the mean of both heads (DeiT inference)."""
        logits, dist_logits = self.forward_heads(x)
        return logits if dist_logits is None else (logits + dist_logits) / 2


@register_model(
    "vit_tiny",
    family="vit",
    description="A tiny ViT for 32x32 images (patch 4, width 96, depth 6, 3 heads); distill_token=True adds DeiT's distillation token.",
    paper=_PAPER,
)
def vit(
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int | Sequence[int] = 32,
    patch_size: int = 4,
    dim: int = 96,
    depth: int = 6,
    heads: int = 3,
    mlp_ratio: float = 2.0,
    dropout: float = 0.0,
    distill_token: bool = False,
) -> VisionTransformer:
    """Build a :class:`VisionTransformer` (default: ``vit_tiny`` for 32x32 images).

    Args:
        num_classes: Number of classes.
        in_channels: Channels of the input images.
        image_size: Size the position embeddings are made for (square; other sizes are
            interpolated at run time). A ``(height, width)`` pair must be square.
        patch_size: Patch size.
        dim: Token width.
        depth: Number of transformer blocks.
        heads: Attention heads.
        mlp_ratio: MLP hidden width relative to ``dim``.
        dropout: Dropout probability.
        distill_token: Add DeiT's distillation token and the ``head_dist`` classifier
            (Touvron et al. 2021).

    Returns:
        The model, initialised as in DeiT (truncated normal, std 0.02).
    """
    if not isinstance(image_size, int):
        height, width = image_size
        if height != width:
            raise ValueError(
                f"vit_tiny is built for square images; got image_size={tuple(image_size)}."
            )
        image_size = height
    return VisionTransformer(
        image_size,
        patch_size,
        num_classes,
        in_channels,
        dim,
        depth,
        heads,
        mlp_ratio,
        dropout,
        distill_token,
    )
