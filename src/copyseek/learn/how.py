"""HOW (Tolias, Jenicek, Chum, ECCV 2020): deep local descriptors trained through a global one.

The network is a CNN trunk and a head without trained layers of its own:

- attention:  the L2 norm of each activation of the trunk's last stage, (N, H, W);
- smoothing:  3x3 average pooling of the activations (padding not counted);
- reduction:  a 1x1 convolution to `dim` (128) channels, initialised by PCA-whitening learned on
              local features of held-out photos and kept fixed while the trunk trains (as HOW);
- local descriptors: the reduced activations, L2-normalised per position, (N, dim, H, W).

Training sees the attention-weighted sum of the local descriptors (weighted SPoC), L2-normalised:
(N, 3, H, W) RGB 0..255 -> (N, dim) unit rows, so any loss of `copyseek.learn` trains it. At
inference the top-n local descriptors by attention, over several scales, are what ASMK aggregates
(`copyseek.how`). The exported ONNX returns the local maps of one scale (`export_how_onnx`).

Our reading where the paper's code was not followed: local descriptors are L2-normalised before
pooling and before ASMK; the pooled descriptor is not summed over scales in training (one scale,
as HOW's default training_scales = [1]).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from copyseek.errors import CopyseekError
from copyseek.learn.models import ARCHS, IMAGENET_MEAN, IMAGENET_STD, ResNet

ONNX_OPSET = 17


def l2_attention(x: Tensor) -> Tensor:
    """(N, C, H, W) activations -> (N, H, W) attention: the L2 norm over channels."""
    return x.norm(p=2, dim=1)


def smooth(x: Tensor, kernel: int = 3) -> Tensor:
    """(N, C, H, W) -> same shape: kernel x kernel average with stride 1, padding not counted."""
    return F.avg_pool2d(x, kernel, stride=1, padding=kernel // 2, count_include_pad=False)


def pca_whitening(features: np.ndarray, dim: int, eps: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
    """PCA-whitening of (n, C) features reduced to `dim` components: (mean (C,), projection (dim, C))
    such that (x - mean) @ projection.T has identity covariance (on the top `dim` components)."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise CopyseekError(f"PCA-whitening needs (n >= 2, C) features, got shape {features.shape}")
    if dim > features.shape[1]:
        raise CopyseekError(f"cannot reduce {features.shape[1]}-d features to {dim} dimensions")
    mean = features.mean(axis=0)
    centred = features - mean
    covariance = centred.T @ centred / len(features)
    eigval, eigvec = np.linalg.eigh(covariance)
    order = np.argsort(eigval)[::-1][:dim]
    projection = eigvec[:, order].T / np.sqrt(np.maximum(eigval[order], eps))[:, None]
    return mean.astype(np.float32), projection.astype(np.float32)


class HowNet(nn.Module):
    """Trunk + HOW head. Images are (N, 3, H, W) RGB in 0..255 (uint8 or float), normalised inside.

    forward:  (N, 3, H, W) -> (N, dim) weighted SPoC of the local descriptors, unit rows.
    local:    (N, 3, H, W) -> (descriptors (N, dim, h, w) unit over dim, attention (N, h, w) >= 0).
    `stride` is the trunk's total stride (pixels per position of the maps).
    """

    def __init__(self, backbone: nn.Module, channels: int, dim: int = 128, stride: int = 32, smoothing: int = 3):
        super().__init__()
        if dim < 1 or dim > channels:
            raise CopyseekError(f"HOW dim must be in 1..{channels} (the trunk's channels), got {dim}")
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255)
        self.backbone = backbone
        self.reduction = nn.Conv2d(channels, dim, 1, bias=True)
        # The reduction stays the PCA-whitening it is initialised with (HOW trains the trunk only).
        self.reduction.requires_grad_(False)
        self.dim, self.channels, self.stride, self.smoothing = dim, channels, stride, smoothing

    def activations(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) 0..255 -> (N, channels, h, w) non-negative trunk activations."""
        return self.backbone((images.to(self.mean.dtype) - self.mean) / self.std)

    def local(self, images: Tensor) -> tuple[Tensor, Tensor]:
        x = self.activations(images)
        attention = l2_attention(x)
        reduced = self.reduction(smooth(x, self.smoothing) if self.smoothing > 1 else x)
        return F.normalize(reduced, dim=1), attention

    def forward(self, images: Tensor) -> Tensor:
        desc, attention = self.local(images)
        return F.normalize((desc * attention.unsqueeze(1)).sum(dim=(2, 3)), dim=1)

    def train(self, mode: bool = True) -> "HowNet":
        """Train mode with BatchNorm statistics frozen (as HOW: small batches of large images, and a
        trunk whose statistics were learned on far more data)."""
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self

    def smoothed_activations(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """What the reduction sees and the attention: ((N, channels, h, w), (N, h, w))."""
        x = self.activations(images)
        return (smooth(x, self.smoothing) if self.smoothing > 1 else x), l2_attention(x)

    def set_whitening(self, mean: np.ndarray, projection: np.ndarray) -> None:
        """Make the reduction x -> projection @ (x - mean): mean (channels,), projection (dim, channels)."""
        if projection.shape != (self.dim, self.channels) or mean.shape != (self.channels,):
            raise CopyseekError(f"whitening of shape {projection.shape} does not fit {self.channels} -> {self.dim}")
        with torch.no_grad():
            p = torch.from_numpy(projection).to(self.reduction.weight)
            self.reduction.weight.copy_(p[:, :, None, None])
            self.reduction.bias.copy_(-(p @ torch.from_numpy(mean).to(p)))


def build_how(arch: str, dim: int = 128, skip_stages: int = 0) -> HowNet:
    """A HOW network on the trunk of ResNet-style architecture `arch` (a key of learn.models.ARCHS),
    its last `skip_stages` stages removed (HOW's skip_layer: 1 gives stride-16 maps)."""
    if arch not in ARCHS:
        raise CopyseekError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHS)}")
    trunk = ARCHS[arch].backbone(224)
    if not isinstance(trunk, ResNet):
        raise CopyseekError(f"HOW needs a convolutional trunk; {arch!r} is not a ResNet")
    if not 0 <= skip_stages < len(trunk.stages):
        raise CopyseekError(f"skip_stages must be in 0..{len(trunk.stages) - 1}, got {skip_stages}")
    kept = len(trunk.stages) - skip_stages
    trunk.stages = trunk.stages[:kept]
    channels = trunk.stages[-1][-1].body[-1][0].out_channels
    trunk.out_channels = channels
    return HowNet(trunk, channels, dim, stride=4 * 2 ** (kept - 1))


def load_trunk_from_onnx(trunk: ResNet, path: Path) -> None:
    """Load the convolutions of one of our exported ResNet descriptors (e.g. copyseek-small's ONNX,
    whose BatchNorms the exporter folded into them) into `trunk`; each BatchNorm becomes the identity
    plus the folded bias. Convolutions are matched in execution order; stages `trunk` lacks are
    ignored, so a truncated trunk takes the first ones."""
    import onnx
    from onnx import numpy_helper

    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:  # onnx raises several private exception types
        raise CopyseekError(f"cannot read ONNX model {path}: {exc}") from None
    weights = {init.name: np.array(numpy_helper.to_array(init)) for init in graph.initializer}
    convs = [(weights[n.input[1]], weights[n.input[2]]) for n in graph.node if n.op_type == "Conv" and len(n.input) == 3]
    pairs = [(m[0], m[1]) for m in trunk.modules() if isinstance(m, nn.Sequential) and len(m) >= 2
             and isinstance(m[0], nn.Conv2d) and isinstance(m[1], nn.BatchNorm2d)]
    if len(convs) < len(pairs):
        raise CopyseekError(f"{path} has {len(convs)} convolutions; this trunk needs {len(pairs)}")
    with torch.no_grad():
        for (conv, norm), (weight, bias) in zip(pairs, convs):
            if tuple(conv.weight.shape) != weight.shape:
                raise CopyseekError(f"{path}: a convolution of shape {weight.shape} does not fit {tuple(conv.weight.shape)}")
            conv.weight.copy_(torch.from_numpy(weight))
            norm.weight.fill_(1.0)
            norm.bias.copy_(torch.from_numpy(bias))
            norm.running_mean.zero_()
            norm.running_var.fill_(1.0 - norm.eps)


class LocalMapsExport(nn.Module):
    """(1, H, W, 3) uint8 -> (descriptors (1, dim, h, w), attention (1, h, w)): the engine's layout."""

    def __init__(self, model: HowNet):
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.local(image.permute(0, 3, 1, 2))


def export_how_onnx(model: HowNet, path: Path, *, name: str, **extra) -> Path:
    """Write the local-map network as ONNX at `path` (input `image` uint8 NHWC, any size; outputs
    `local` and `attention`) with a JSON sidecar naming dim and stride; returns the path."""
    import json

    try:
        import onnx  # noqa: F401  (torch's exporter needs it to serialise)
    except ImportError as exc:
        raise CopyseekError("exporting to ONNX needs the 'onnx' package: pip install onnx") from exc
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = LocalMapsExport(model).eval().cpu()
    example = torch.randint(0, 256, (1, 96, 128, 3), dtype=torch.uint8)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter announces its deprecation
        torch.onnx.export(
            wrapper, (example,), str(path), input_names=["image"], output_names=["local", "attention"],
            dynamic_axes={"image": {1: "height", 2: "width"}, "local": {2: "h", 3: "w"}, "attention": {1: "h", 2: "w"}},
            opset_version=ONNX_OPSET, dynamo=False,
        )
    sidecar = {"kind": "how", "name": name, "dim": model.dim, "stride": model.stride, **extra}
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return path


def torch_maps(model: HowNet, *, smoothed: bool = False):
    """A `copyseek.how.features.Maps` running `model` in torch: the local descriptors, or with
    smoothed=True the smoothed trunk activations that the reduction's whitening is learned on."""

    def maps(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None]
            x = x.to(model.mean.device)
            desc, attention = model.smoothed_activations(x) if smoothed else model.local(x)
        return desc[0].cpu().numpy(), attention[0].cpu().numpy()

    return maps


def init_whitening(model: HowNet, paths: list[Path], params, *, progress: bool = False) -> None:
    """Initialise the reduction by PCA-whitening of the smoothed activations at the top-n positions
    (by attention, over params.scales) of the photos in `paths` (held out of every benchmark)."""
    from copyseek.how.features import describe_photos

    was_training = model.training
    model.eval()
    features = describe_photos(torch_maps(model, smoothed=True), paths, params, model.stride, progress=progress)
    model.set_whitening(*pca_whitening(features, model.dim))
    model.train(was_training)


def export_how_run(model: HowNet, out: Path, paths: list[Path], params, words: int, *, name: str, seed: int = 0,
                   progress: bool = False) -> Path:
    """Export `model` to out/model.onnx and learn its ASMK codebook (out/model.codebook.npz, k-means
    of `words` words) on the exported model's descriptors of `paths`; returns the model's path."""
    from copyseek.how.asmk import Codebook
    from copyseek.how.features import HowExtractor, describe_photos

    path = export_how_onnx(model, Path(out) / "model.onnx", name=name)
    extractor = HowExtractor(path)
    features = describe_photos(extractor.maps, paths, params, extractor.stride, progress=progress)
    Codebook.fit(features, min(words, len(features)), seed=seed).save(path.with_suffix(".codebook.npz"))
    return path
