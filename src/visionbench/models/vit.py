"""A Vision Transformer for small images (28-64 px): patches sized for ~8x8 tokens."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import VisionbenchError
from .registry import register_model


def patch_size_for(img_size: int, tokens: int = 8) -> int:
    """The patch size dividing img_size whose grid is closest to tokens x tokens: 4 for 28 and
    32 px, 6 for 48, 8 for 64 (a 16-px ImageNet patch would leave 2x2 tokens at 32 px)."""
    sizes = [p for p in range(2, img_size + 1) if img_size % p == 0]
    if not sizes:
        raise VisionbenchError(f"vit_small needs inputs of at least 2 px, got {img_size}")
    return min(sizes, key=lambda p: (abs(img_size // p - tokens), p))


class SmallViT(nn.Module):
    """Patch embedding, class token, learned positions, pre-norm transformer, linear head."""

    def __init__(self, num_classes, in_chans, img_size, patch, dim, depth, heads, dropout, emb_dropout=0.0):
        super().__init__()
        self.emb_dropout = nn.Dropout(emb_dropout)  # on the embedded tokens (vit-pytorch's emb_dropout)
        grid = img_size // patch
        self.patch_embed = nn.Conv2d(in_chans, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, grid * grid + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, 2 * dim, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = self.emb_dropout(torch.cat([self.cls_token.expand(len(x), -1, -1), x], 1) + self.pos_embed)
        return self.head(self.norm(self.encoder(x))[:, 0])


@register_model
def vit_small(
    num_classes: int,
    in_chans: int = 3,
    img_size: int = 32,
    patch_size: int | None = None,
    dim: int = 192,
    depth: int = 6,
    heads: int = 3,
    dropout: float = 0.0,
    emb_dropout: float = 0.0,
) -> nn.Module:
    """ViT for 28-64 px images; patch size from the input size unless given; `emb_dropout` on
    the embedded tokens (write-up 002's ViT: dropout 0.1, emb_dropout 0.1)."""
    patch = patch_size or patch_size_for(img_size)
    if img_size % patch:
        raise VisionbenchError(
            f"vit_small: patch size {patch} does not divide the {img_size} px input",
            fix="leave model.kwargs.patch_size unset to choose one",
        )
    return SmallViT(num_classes, in_chans, img_size, patch, dim, depth, heads, dropout, emb_dropout)
