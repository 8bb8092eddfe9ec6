"""Selective Convolutional Network (SCN) for the detector's stride-4 heads (model.Heads).

A guidance head reads the stride-16 features and predicts, per tile of TILE x TILE output cells,
whether the heads must compute there. CenterNet reads boxes only at heat-map peaks, so the
informative tiles are those near box centres (the Gaussian peaks of the targets), not the whole
box. At inference the heads run only on the selected tiles: each tile is gathered with a HALO of
one cell (the 3x3 convolution's reach) into a batch, the dense convolutions run on that batch, and
the results are scattered back; the other cells get "no object" (masked multiplication alone would
save nothing on a CPU). Training runs the heads densely with their input multiplied by the upsampled
guide probability, so the detection loss reaches the guide (indirect supervision), plus, with
`scn_direct` > 0, a binary cross-entropy to masks made from the boxes (direct supervision). A small
sparsity term keeps the indirectly supervised guide from selecting everything.

The paper (Selective Convolutional Network, abstract only here) applies this to SSD / Pelee feature
extraction; which stages are selective and the losses above are our reading.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TILE = 4
"""Output cells per tile side: the guide's stride (16 px) over the heads' (4 px)."""

HALO = 1
"""Cells gathered around each tile: the 3x3 convolution's reach."""

EMPTY_HEAT = -12.0
"""Heat logit written where nothing was computed (probability ~6e-6)."""

SPARSITY = 0.05
"""Weight of the mean guide probability in the guide loss: selecting costs."""


class Selective(nn.Module):
    """Guidance head + tile-wise execution of `heads` (model.Heads)."""

    def __init__(self, guide_channels: int, heads: nn.Module, threshold: float = 0.5):
        super().__init__()
        self.guide = nn.Sequential(nn.Conv2d(guide_channels, 16, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(16, 1, 1))
        with torch.no_grad():
            self.guide[-1].bias.fill_(1.0)  # start by selecting everything
        self.heads = [heads]  # shared with the net (a list: not registered twice)
        self.threshold = threshold
        self.dense = False  # True: ignore the guide (for measuring the dense cost)

    def forward(self, neck: Tensor, guide_features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """neck (B, C, H, W) stride-4 features; guide_features (B, G, H/4, W/4).
        Returns raw head outputs (B, K, H, W), guide logits (B, 1, H/4, W/4) and the selected
        tiles (B, H/4, W/4) bool."""
        heads = self.heads[0]
        logits = self.guide(guide_features)
        if self.dense:
            return heads(neck), logits, torch.ones_like(logits[:, 0], dtype=torch.bool)
        probability = torch.sigmoid(logits)
        if self.training:
            gate = F.interpolate(probability, scale_factor=TILE, mode="nearest")
            return heads(neck * gate), logits, probability[:, 0] >= self.threshold
        selected = probability[:, 0] >= self.threshold
        return tiled_heads(heads, neck, selected), logits, selected


def tiled_heads(heads: nn.Module, neck: Tensor, selected: Tensor) -> Tensor:
    """Run `heads` on the selected tiles only: gather tile + halo patches, dense convolutions on the
    batch of patches, scatter back. neck (B, C, H, W); selected (B, H/TILE, W/TILE) bool."""
    batch, channels, height, width = neck.shape
    ty, tx = height // TILE, width // TILE
    k = heads.outputs
    out = neck.new_zeros(batch, ty, tx, k, TILE, TILE)
    out[..., : heads.classes, :, :] = EMPTY_HEAT
    if selected.any():
        side = TILE + 2 * HALO
        # a strided view of every tile with its halo (no copy); only the selected ones are gathered
        windows = F.pad(neck, (HALO,) * 4).unfold(2, side, TILE).unfold(3, side, TILE)  # (B, C, ty, tx, side, side)
        b, y, x = selected.nonzero(as_tuple=True)
        chosen = windows.permute(0, 2, 3, 1, 4, 5)[b, y, x]  # (n, C, side, side)
        # the 3x3 convolutions without padding read the halo and return TILE x TILE
        out[b, y, x] = heads(chosen, padding=0)
    return out.permute(0, 3, 1, 4, 2, 5).reshape(batch, k, height, width)


def guide_targets(heat: Tensor, level: float = 0.1) -> Tensor:
    """Masks from the boxes: (B, C, H, W) target heat maps -> (B, 1, H/TILE, W/TILE) 1 where a
    tile holds heat above `level` (near a box centre)."""
    return (F.max_pool2d(heat.amax(dim=1, keepdim=True), TILE) > level).float()


def guide_loss(logits: Tensor, heat: Tensor) -> Tensor:
    """Direct supervision: binary cross-entropy of the guide to the masks from the boxes."""
    return F.binary_cross_entropy_with_logits(logits, guide_targets(heat))


def sparsity_loss(logits: Tensor) -> Tensor:
    """The share of tiles selected (soft): what the indirectly supervised guide pays for computing."""
    return SPARSITY * torch.sigmoid(logits).mean()
