"""Trainable global descriptors in plain torch: backbone -> pooling -> projection -> L2 normalisation.

Every model takes images as (N, 3, H, W) RGB with values in 0..255 (uint8 or float) and normalises
them itself, so that exported graphs take raw pixels (see `copyseek.learn.export`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from copyseek.errors import CopyseekError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class GeM(nn.Module):
    """Generalised mean pooling with a learnable exponent p: (N, C, H, W) -> (N, C).

    p = 1 is average pooling and p -> inf max pooling; inputs are clamped at eps, so they should be
    non-negative (e.g. after a ReLU).
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)


class AvgPool(nn.Module):
    """Average pooling for feature maps that may be negative (transformer tokens): (N, C, H, W) -> (N, C)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3))


def conv_bn(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18 style): (N, c_in, H, W) -> (N, c_out, H/s, W/s)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(conv_bn(c_in, c_out, 3, stride), conv_bn(c_out, c_out, 3, 1, relu=False))
        # The last BN starts at zero so that each block starts as the identity (easier from scratch).
        nn.init.zeros_(self.body[-1][1].weight)
        self.shortcut = (
            nn.Identity() if stride == 1 and c_in == c_out else conv_bn(c_in, c_out, 1, stride, relu=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet-style trunk: a stride-4 stem, then one stage per width, each halving the resolution
    after the first. (N, 3, H, W) float -> (N, widths[-1], H/32, W/32), non-negative."""

    def __init__(self, widths: tuple[int, ...], depths: tuple[int, ...], stem: int = 24):
        super().__init__()
        if len(widths) != len(depths) or not widths:
            raise CopyseekError(f"ResNet needs one depth per width, got widths={widths} depths={depths}")
        self.stem = nn.Sequential(conv_bn(3, stem, 3, 2), conv_bn(stem, stem, 3, 2))
        stages, c_in = [], stem
        for i, (width, depth) in enumerate(zip(widths, depths)):
            blocks = [BasicBlock(c_in if j == 0 else width, width, 2 if i > 0 and j == 0 else 1) for j in range(depth)]
            stages.append(nn.Sequential(*blocks))
            c_in = width
        self.stages = nn.Sequential(*stages)
        self.out_channels = widths[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))


class SelfAttention(nn.Module):
    """Multi-head self-attention: (N, L, C) -> (N, L, C). Written out rather than nn.MultiheadAttention,
    whose inference fast path does not export to ONNX."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise CopyseekError(f"attention width {dim} must be a multiple of its {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        n, length, dim = x.shape
        q, k, v = self.qkv(x).view(n, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # (N, heads, L, C / heads)
        return self.out(y.transpose(1, 2).reshape(n, length, dim))


class ViTBlock(nn.Module):
    """Pre-norm transformer block: (N, L, C) -> (N, L, C)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """A small vision transformer over non-overlapping patches: (N, 3, H, W) float -> (N, dim, H/p, W/p).

    The learned position embeddings are defined on the grid of `image_size` and resized (bilinear)
    to the grid of each input, so any input size works, in torch and in exported graphs.
    """

    def __init__(self, image_size: int, patch: int = 16, dim: int = 192, depth: int = 6, heads: int = 3,
                 mlp_ratio: float = 4.0):
        super().__init__()
        if image_size % patch:
            raise CopyseekError(f"ViT image size {image_size} must be a multiple of its patch size {patch}")
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        grid = image_size // patch
        self.pos = nn.Parameter(torch.randn(1, dim, grid, grid) * 0.02)
        self.blocks = nn.Sequential(*[ViTBlock(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.out_channels = dim

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)  # (N, C, h, w)
        h, w = x.shape[-2:]
        # Always resized (the identity at the training size) so that traced graphs stay size-agnostic.
        x = x + F.interpolate(self.pos, size=(h, w), mode="bilinear", align_corners=False)
        tokens = self.norm(self.blocks(x.flatten(2).transpose(1, 2)))  # (N, h*w, C)
        return tokens.transpose(1, 2).unflatten(2, (h, w))


class Descriptor(nn.Module):
    """Image -> unit global descriptor: normalise pixels, backbone, pool, linear projection, L2.

    forward: (N, 3, H, W) RGB in 0..255 (uint8 or float) -> (N, dim) float32 with unit rows.
    """

    def __init__(self, backbone: nn.Module, pool: nn.Module, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255)
        self.backbone = backbone
        self.pool = pool
        self.projection = nn.Linear(backbone.out_channels, dim)
        self.dim = dim

    def forward(self, images: Tensor) -> Tensor:
        x = (images.to(self.mean.dtype) - self.mean) / self.std
        return F.normalize(self.projection(self.pool(self.backbone(x))), dim=1)


@dataclass(frozen=True)
class Arch:
    """A named architecture: how to build its backbone for a training size, and which pooling suits it."""

    backbone: Callable[[int], nn.Module]
    pool: Callable[[], nn.Module]


ARCHS: dict[str, Arch] = {
    # The fast student: ~620 img/s at 160 px through onnxruntime on 2 cores (SSCD: ~80 at 320 px).
    "resnet-small": Arch(lambda size: ResNet((32, 64, 128, 256), (1, 1, 1, 1), stem=24), GeM),
    "resnet-medium": Arch(lambda size: ResNet((48, 96, 192, 384), (1, 2, 2, 1), stem=32), GeM),
    "resnet18": Arch(lambda size: ResNet((64, 128, 256, 512), (2, 2, 2, 2), stem=64), GeM),
    # Transformer tokens can be negative: average, not GeM.
    "vit-tiny": Arch(lambda size: ViT(size, patch=16, dim=192, depth=6, heads=3), AvgPool),
}


def build_model(arch: str, dim: int = 512, image_size: int = 224) -> Descriptor:
    """A freshly initialised descriptor of architecture `arch` (a key of ARCHS)."""
    if arch not in ARCHS:
        raise CopyseekError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHS)}")
    if dim < 1:
        raise CopyseekError(f"descriptor dimension must be positive, got {dim}")
    spec = ARCHS[arch]
    return Descriptor(spec.backbone(image_size), spec.pool(), dim)
