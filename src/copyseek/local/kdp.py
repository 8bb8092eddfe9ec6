"""The kernelized deep patch descriptor (KDP): a small fully convolutional trunk on 32x32 patches
whose 8x8 activation map is encoded with explicit spatial feature maps, as in "Explicit Spatial
Encoding for Deep Local Descriptors" (Mukundan, Tolias, Chum, CVPR 2019).

    patch (B, 1, 32, 32) -> per-patch standardisation -> trunk (L2-Net/HardNet style: 3x3 convs,
    BN without affine, ReLU; two stride-2 convs) -> (B, C, 8, 8) -> head -> (B, dims), unit L2

Heads:
- 'cart' / 'polar': every activation is multiplied by a von Mises embedding of its position, in
  Cartesian (x, y) or polar (rho, phi) coordinates, and summed over the map (kornia's
  `ExplicitSpacialEncoding`: (B, C, 8, 8) -> (B, C * d_emb), Gaussian mask, L2), then a learned
  linear layer (the whitening) to `dims`, L2. This replaces the fully connected layer.
- 'fc': the baseline: the map flattened and a fully connected layer to `dims`, L2.

Channel widths and depth are ours (8-16-32, five convolutions, 1.9 M multiply-adds per patch, so
that a query's 2000 patches take a fraction of a second on a busy core and training fits in ~10
minutes on one thread); the paper's trunk is L2-Net's seven convolutions of 32-64-128 channels. Weights are stored as float16 .npz
(`save_weights` / `load_weights`); requires torch and kornia.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from copyseek.errors import CopyseekError

HEADS = ("cart", "polar", "fc")
WIDTHS = (8, 16, 32)
MAP_SIZE = 8


def _conv(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout, affine=False), nn.ReLU()]


class PatchTrunk(nn.Module):
    """(B, 1, 32, 32) patches -> (B, widths[-1], 8, 8) non-negative activations."""

    def __init__(self, widths: tuple[int, int, int] = WIDTHS):
        super().__init__()
        a, b, c = widths
        layers = _conv(1, a) + _conv(a, b, 2) + _conv(b, b) + _conv(b, c, 2) + _conv(c, c)
        self.layers = nn.Sequential(*layers)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        # Per-patch standardisation (as L2-Net): invariance to affine intensity changes.
        flat = patches.flatten(1)
        mean = flat.mean(dim=1).view(-1, 1, 1, 1)
        std = flat.std(dim=1).view(-1, 1, 1, 1)
        return self.layers((patches - mean) / (std + 1e-4))


class KDPNet(nn.Module):
    """Trunk + head ('cart', 'polar' or 'fc') -> (B, dims) unit-norm descriptors."""

    def __init__(self, head: str = "polar", dims: int = 128, widths: tuple[int, int, int] = WIDTHS):
        super().__init__()
        if head not in HEADS:
            raise CopyseekError(f"unknown KDP head {head!r}; choose from {', '.join(HEADS)}")
        self.head_kind = head
        self.trunk = PatchTrunk(widths)
        channels = widths[-1]
        if head == "fc":
            self.encode = nn.Flatten()
            encoded = channels * MAP_SIZE * MAP_SIZE
        else:
            from kornia.feature.mkd import ExplicitSpacialEncoding

            self.encode = ExplicitSpacialEncoding(head, fmap_size=MAP_SIZE, in_dims=channels, do_gmask=True, do_l2=True)
            encoded = self.encode.odims
        self.whiten = nn.Linear(encoded, dims)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, 1, 32, 32) float patches (any intensity scale) -> (B, dims), unit L2 norm."""
        if patches.ndim != 4 or patches.shape[1:] != (1, 32, 32):
            raise CopyseekError(f"KDP needs (B, 1, 32, 32) patches, got {tuple(patches.shape)}")
        y = self.whiten(self.encode(self.trunk(patches)))
        return nn.functional.normalize(y, dim=1)


def save_weights(net: KDPNet, path: Path, support: float) -> None:
    """Learned parameters and BN statistics as float16 arrays (the spatial embeddings are rebuilt),
    with the patch support (side in keypoint sizes) the net was trained on."""
    arrays = {
        name: value.detach().cpu().numpy().astype(np.float16)
        for name, value in net.state_dict().items()
        if value.is_floating_point() and not name.startswith("encode.")
    }
    np.savez(path, head=np.array(net.head_kind), dims=np.array(net.whiten.out_features), support=np.array(support), **arrays)


def load_weights(path: Path) -> KDPNet:
    """A KDPNet in eval mode from save_weights' file."""
    try:
        with np.load(path) as data:
            net = KDPNet(str(data["head"]), int(data["dims"]))
            state = {k: torch.from_numpy(data[k].astype(np.float32)) for k in data.files if k not in ("head", "dims", "support")}
    except (OSError, KeyError, ValueError) as exc:
        raise CopyseekError(f"cannot read KDP weights {path}: {exc}") from exc
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("encode.") and not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise CopyseekError(f"KDP weights {path} do not fit the network (missing {missing}, unexpected {unexpected})")
    return net.eval()
