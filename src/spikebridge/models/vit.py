"""A small Vision Transformer (Dosovitskiy et al. 2021) for quick CPU runs, written with the
plain ops spikebridge converts: a patch-embedding conv, a class token and learned position
embeddings (parameters), pre-norm blocks of LayerNorm → multi-head self-attention (linear
q/k/v, q·kᵀ/√d, softmax, ·v) and LayerNorm → MLP (linear, activation, linear), each with a
residual add, then LayerNorm and a linear head on the class token.

In the SNN the MLP's activation is a site (GELU quantized, docs/methods.md §8) and the
attention products, softmax and LayerNorm are computed on decoded values (analog ops).
"""
from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}


class Attention(nn.Module):
    """softmax(q·kᵀ/√d)·v for ``heads`` heads of width d = dim/heads, then a projection."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        attention = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
        return self.proj((attention @ v).transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, activation: str):
        super().__init__()
        self.norm1, self.attention = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), ACTIVATIONS[activation](), nn.Linear(hidden, dim))

    def forward(self, x):
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT on image_size² inputs cut into patch_size² patches (image_size must be a multiple)."""

    def __init__(self, num_classes=10, in_channels=3, image_size=28, patch_size=4, dim=64, depth=4, heads=4,
                 mlp_ratio=2, activation="gelu"):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        tokens = (image_size // patch_size) ** 2
        self.patch = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.position = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio * dim, activation) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1) + self.position
        return self.head(self.norm(self.blocks(x))[:, 0])


def vit_tiny(num_classes=10, in_channels=3, image_size=28, patch_size=4, dim=64, depth=4, heads=4, mlp_ratio=2,
             activation="gelu"):
    """The small ViT of the benchmarks: 4 blocks of width 64, 4 heads, 49 tokens + class on 28x28."""
    return VisionTransformer(num_classes, in_channels, image_size, patch_size, dim, depth, heads, mlp_ratio,
                             activation)
