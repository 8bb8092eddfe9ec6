"""The detector network: a small CNN backbone, a top-down neck and CenterNet heads, in plain torch.

    net = DetectorNet(NetConfig())                 # or NetConfig.preset("teacher")
    out = net(images)                              # (B, 3, S, S) float in [0, 1]
    out["heat"], out["size"], out["offset"]        # (B, C, S/4, S/4) logits, (B, 2, ...) cells, (B, 2, ...)
    out["log_size"]                                # (B, 2, S/4, S/4) what the size head predicts (log cells)
    out["stages"]                                  # feature maps at strides 4, 8, 16, 32 and the neck (HGD)

Widths and depths are parameters so that a teacher and a student of about a third of its cost share
one definition (`NetConfig.preset`). The neck and heads run at stride 4; an optional `Selective`
module (detect/scn.py) runs the whole network only on the crops a cheap guide selects.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from copyseek.detect.regions import CLASSES
from copyseek.errors import CopyseekError

STRIDE = 4
"""Output cell size in input pixels."""

MAX_LOG_SIZE = 6.0
"""Largest predicted log box side in cells (e^6 = 400 cells): keeps exp() finite early in training."""

HEAT_PRIOR = 0.1
"""Initial centre probability, so the focal loss starts small (CenterNet's bias init)."""


@dataclass(frozen=True)
class NetConfig:
    """widths: channels of the stem (stride 2) and the stages at strides 4, 8, 16, 32;
    depth: convolutions per stage after its strided one; neck: channels at stride 4;
    input_size: square input side in pixels (a multiple of 32); split_heads: one head branch per
    output (heat, size, offset) as CenterNet, instead of one shared; selective: run the network
    only on the crops a guidance network selects (SCN, detect/scn.py)."""

    widths: tuple[int, ...] = (16, 24, 48, 64, 96)
    depth: int = 1
    neck: int = 32
    input_size: int = 160
    split_heads: bool = False
    selective: bool = False

    def __post_init__(self):
        if len(self.widths) != 5 or any(int(w) < 1 for w in self.widths):
            raise CopyseekError(f"widths must be 5 positive channel counts, got {self.widths}")
        if self.depth < 0 or self.neck < 1:
            raise CopyseekError(f"depth must be >= 0 and neck >= 1, got depth={self.depth}, neck={self.neck}")
        if self.input_size < 32 or self.input_size % 32:
            raise CopyseekError(f"input_size must be a multiple of 32 (>= 32), got {self.input_size}")

    @classmethod
    def preset(cls, name: str, **changes) -> NetConfig:
        """"student" (the shipped size), "teacher" (6.7x its MACs, 3.4x its CPU time at batch 1:
        session 5's teacher, 3.9x the MACs, ran only 2.7x slower, short of HGD's ">= 3x faster"
        student) or "tiny" (tests)."""
        presets = {
            "student": {},
            "teacher": {"widths": (32, 56, 112, 144, 192), "depth": 2, "neck": 64},
            "tiny": {"widths": (4, 8, 8, 16, 16), "depth": 0, "neck": 8, "input_size": 64},
        }
        if name not in presets:
            raise CopyseekError(f"unknown detector preset {name!r}; choose from {', '.join(presets)}")
        return cls(**{**presets[name], **changes})

    @classmethod
    def from_dict(cls, data: dict) -> NetConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise CopyseekError(f"unknown detector settings: {', '.join(sorted(unknown))}")
        data = dict(data)
        if "widths" in data:
            data["widths"] = tuple(int(w) for w in data["widths"])
        return cls(**data)

    def to_dict(self) -> dict:
        return {**asdict(self), "widths": list(self.widths)}


def conv(cin: int, cout: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    """Convolution, batch norm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class Stage(nn.Module):
    """A strided convolution, then `depth` residual 3x3 convolutions."""

    def __init__(self, cin: int, cout: int, depth: int):
        super().__init__()
        self.down = conv(cin, cout, 2)
        self.blocks = nn.ModuleList(conv(cout, cout) for _ in range(depth))

    def forward(self, x: Tensor) -> Tensor:
        x = self.down(x)
        for block in self.blocks:
            x = x + block(x)
        return x


class GlobalContext(nn.Module):
    """Adds a projection of the image-wide mean: the copy is often the whole frame, larger than any
    receptive field."""

    def __init__(self, channels: int):
        super().__init__()
        self.project = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + torch.relu(self.project(x.mean(dim=(2, 3), keepdim=True)))


class HeadBranch(nn.Module):
    """A 3x3 convolution + BN + ReLU, then a 1x1 convolution to `outputs` channels."""

    def __init__(self, channels: int, outputs: int):
        super().__init__()
        self.smooth = conv(channels, channels)
        self.out = nn.Conv2d(channels, outputs, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.smooth(x))


class Heads(nn.Module):
    """Stride-4 neck features (B, neck, h, w) -> heat logits (B, C, h, w), log size and offset
    (B, 2, h, w), stacked as (B, C + 4, h, w). One shared branch, or (split) one branch per
    output as CenterNet does: three times the cost."""

    def __init__(self, channels: int, classes: int, split: bool = False):
        super().__init__()
        widths = (classes, 2, 2) if split else (classes + 4,)
        self.branches = nn.ModuleList(HeadBranch(channels, w) for w in widths)
        with torch.no_grad():
            self.branches[0].out.bias.zero_()
            self.branches[0].out.bias[:classes] = float(torch.logit(torch.tensor(HEAT_PRIOR)))
        self.classes = classes

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


class DetectorNet(nn.Module):
    """See the module docstring."""

    def __init__(self, config: NetConfig = NetConfig()):
        super().__init__()
        self.config = config
        w, d, n = config.widths, config.depth, config.neck
        self.stem = conv(3, w[0], 2)
        self.stages = nn.ModuleList(Stage(w[i], w[i + 1], d) for i in range(4))
        self.context = GlobalContext(w[4])
        self.lateral = nn.ModuleList(nn.Conv2d(w[i + 1], n, 1) for i in range(4))
        self.heads = Heads(n, len(CLASSES), config.split_heads)
        self.selective = None
        if config.selective:
            from copyseek.detect.scn import Selective

            self.selective = Selective()

    def backbone(self, images: Tensor) -> list[Tensor]:
        """(B, 3, S, S) in [0, 1] -> feature maps at strides 4, 8, 16, 32."""
        x = self.stem(images - 0.5)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        features[-1] = self.context(features[-1])
        return features

    def neck(self, features: list[Tensor]) -> Tensor:
        """Top-down: each coarser map, upsampled, added to the lateral projection of the finer one."""
        x = self.lateral[3](features[3])
        for i in (2, 1, 0):
            # to the finer map's size, not x2: SCN's crops are whole guide cells (16 px), not multiples of 32
            x = F.interpolate(x, size=features[i].shape[-2:], mode="nearest") + self.lateral[i](features[i])
        return x

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """See the module docstring; a selective net also returns `guide` (B, 1, S/16, S/16) logits and
        `tiles` (B, S/16, S/16) bool, the cells computed (all of them in training)."""
        if self.selective is None or self.selective.dense:
            return self.dense(images)
        logits = self.selective.guide(images)
        if self.training:
            out = self.dense(self.selective.gate(images, logits))
            return {**out, "guide": logits, "tiles": torch.sigmoid(logits[:, 0]) >= self.selective.threshold}
        return {**self.selective.run(self.dense, images, logits, self.heads.classes), "guide": logits}

    def dense(self, images: Tensor) -> dict[str, Tensor]:
        """The network on every pixel of `images` (B, 3, H, W), H and W multiples of 16."""
        features = self.backbone(images)
        neck = self.neck(features)
        raw = self.heads(neck)
        c = self.heads.classes
        # sizes are learnt in log space: a 10% error costs the same for an emoji and the whole frame
        log_size = raw[:, c : c + 2].clamp(max=MAX_LOG_SIZE)
        return {"heat": raw[:, :c], "log_size": log_size, "size": torch.exp(log_size), "offset": raw[:, c + 2 :],
                "stages": [*features, neck]}


def macs(config: NetConfig) -> int:
    """Multiply-accumulates of one dense forward pass at config.input_size (convolutions only)."""
    net = DetectorNet(NetConfig(**{**asdict(config), "selective": False})).eval()
    return count_macs(net, torch.zeros(1, 3, config.input_size, config.input_size))


def count_macs(module: nn.Module, *inputs) -> int:
    """Multiply-accumulates of the convolutions `module(*inputs)` runs (no gradients)."""
    total = 0

    def hook(layer: nn.Module, _inputs, output):
        nonlocal total
        k = layer.kernel_size[0] * layer.kernel_size[1] * layer.in_channels // layer.groups
        total += output.numel() * k

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for h in handles:
            h.remove()
    return total


def load_checkpoint(path: str | Path) -> tuple[DetectorNet, dict]:
    """A trained DetectorNet (eval mode) and the checkpoint's content."""
    path = Path(path)
    if not path.is_file():
        raise CopyseekError(f"no detector checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    net = DetectorNet(NetConfig.from_dict(state["net"]))
    try:
        net.load_state_dict(state["model"])
    except RuntimeError as error:  # e.g. a selective net saved before session 14's SCN (a stride-16 guide head)
        raise CopyseekError(f"{path} holds a detector of another layout than this version's; retrain it "
                            f"({str(error).splitlines()[0]})") from error
    return net.eval(), state
