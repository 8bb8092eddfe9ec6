"""Export a descriptor for `copyseek index --model onnx:PATH` (or torchscript:PATH).

The convention is the one of the SSCD model the engine loads: one input `image`, uint8 RGB NHWC with
dynamic batch, height and width; one output `embedding`, (N, dim) float32 unit rows; pixel
normalisation inside the graph; the resizing recorded in a JSON sidecar beside the model file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from copyseek.describe.preprocess import Preprocess, write_sidecar
from copyseek.errors import CopyseekError

ONNX_OPSET = 17


class NHWCWrapper(nn.Module):
    """(N, H, W, 3) uint8 -> the descriptor of (N, 3, H, W): the engine's input layout."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tensor:
        return self.model(image.permute(0, 3, 1, 2))


def _example(preprocess: Preprocess) -> Tensor:
    # Two images so that the batch axis is not specialised to 1 while tracing.
    return torch.randint(0, 256, (2, preprocess.size, preprocess.size, 3), dtype=torch.uint8)


def export_onnx(model: nn.Module, path: Path, preprocess: Preprocess, *, name: str) -> Path:
    """Write `model` (a Descriptor) as ONNX at `path` with its sidecar; returns the path."""
    try:
        import onnx  # noqa: F401  (torch's exporter needs it to serialise)
    except ImportError as exc:
        raise CopyseekError("exporting to ONNX needs the 'onnx' package: pip install onnx") from exc
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = NHWCWrapper(model).eval().cpu()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter announces its deprecation
        torch.onnx.export(
            wrapper, (_example(preprocess),), str(path), input_names=["image"], output_names=["embedding"],
            dynamic_axes={"image": {0: "batch", 1: "height", 2: "width"}, "embedding": {0: "batch"}},
            opset_version=ONNX_OPSET, dynamo=False,
        )
    write_sidecar(path, preprocess, name=name, dim=int(model.dim))
    return path


def export_torchscript(model: nn.Module, path: Path, preprocess: Preprocess, *, name: str) -> Path:
    """Write `model` as a traced TorchScript module at `path` with its sidecar; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = NHWCWrapper(model).eval().cpu()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(wrapper, (_example(preprocess),))
    traced.save(str(path))
    # "input" tells copyseek's TorchScript loader that this module takes raw uint8 NHWC pixels.
    write_sidecar(path, preprocess, name=name, dim=int(model.dim), input="nhwc-uint8")
    return path
