"""ONNX export of a detector and its sidecar.

The model takes `image`: (N, S, S, 3) uint8 RGB (the query squashed to S x S) and returns `heat`
(N, C, S/4, S/4) centre probabilities, `size` (N, 2, ...) box sides in cells and `offset`
(N, 2, ...); decoding into boxes is numpy (detect/regions.py: decode). The sidecar
(detector.json) records the input size and the classes.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from copyseek.detect.model import DetectorNet
from copyseek.detect.regions import CLASSES

ONNX_OPSET = 17


class ExportWrapper(nn.Module):
    """uint8 NHWC in, probabilities out: everything the runtime needs besides decoding."""

    def __init__(self, net: DetectorNet):
        super().__init__()
        self.net = net

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.net(image.permute(0, 3, 1, 2).float() / 255.0)
        return torch.sigmoid(out["heat"]), out["size"], out["offset"]


def export_detector(net: DetectorNet, path: str | Path, free_size: bool = False) -> Path:
    """Write `net` as ONNX at `path` (+ the .json sidecar); returns the path. `free_size`: height
    and width left free too (the runtime feeds the input size; benchmarks time crops)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = net.config.input_size
    if net.selective is not None:  # ONNX gets the dense network: the crops are a torch-side saving
        net.selective.dense = True
    example = torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8)
    was_training = net.training
    # the wrapper in eval mode too: the exporter puts the wrapper back in its own mode afterwards,
    # which a fresh module's "training" would spread to the net
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter announces its deprecation
        torch.onnx.export(
            ExportWrapper(net).eval(), (example,), str(path), input_names=["image"],
            output_names=["heat", "size", "offset"],
            dynamic_axes={"image": {0: "batch", **({1: "height", 2: "width"} if free_size else {})},
                          **{name: {0: "batch"} for name in ("heat", "size", "offset")}},
            opset_version=ONNX_OPSET, dynamo=False,
        )
    if net.selective is not None:
        net.selective.dense = False
    net.train(was_training)
    sidecar = {"input_size": size, "classes": list(CLASSES), "net": net.config.to_dict()}
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=1), encoding="utf-8")
    return path
