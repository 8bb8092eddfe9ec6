"""Training targets of the CenterNet heads, and their losses.

Per image, for each box: a Gaussian peak at its centre cell in its class's heat map (radius from
the box size, as CornerNet / CenterNet: the largest shift keeping IoU >= 0.7), and at that cell the
box's width and height in cells and the centre's sub-cell offset.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from copyseek.detect.regions import CLASSES

SIZE_WEIGHT = 1.0
"""Weight of the size L1 loss in log cells against the focal and offset losses. CenterNet's 0.1 on
sides in cells let the whole-frame copies (40 cells) dominate; in log space every box counts alike."""


def gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """CornerNet's radius: the smallest of the three corner-shift cases that keep IoU >= min_overlap."""
    b1, c1 = height + width, width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + np.sqrt(b1**2 - 4 * c1)) / 2
    b2, c2 = 2 * (height + width), (1 - min_overlap) * width * height
    r2 = (b2 + np.sqrt(b2**2 - 16 * c2)) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (height + width), (min_overlap - 1) * width * height
    r3 = (b3 + np.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return float(min(r1, r2, r3))


def make_targets(boxes: np.ndarray, labels: np.ndarray, grid: int, stride: int) -> dict[str, np.ndarray]:
    """Dense targets for one image.

    boxes: (n, 4) x0, y0, x1, y1 input pixels; labels: (n,) class indices; grid: cells per side.
    Returns heat (C, g, g) in 0..1, size (2, g, g) cells, offset (2, g, g), mask (g, g) 1 at centres.
    """
    heat = np.zeros((len(CLASSES), grid, grid), np.float32)
    size = np.zeros((2, grid, grid), np.float32)
    offset = np.zeros((2, grid, grid), np.float32)
    mask = np.zeros((grid, grid), np.float32)
    ys, xs = np.mgrid[0:grid, 0:grid]
    # largest first, so a small box whose centre falls in the same cell keeps its size
    order = np.argsort(-(boxes[:, 2:] - boxes[:, :2]).prod(axis=1)) if len(boxes) else []
    for i in order:
        x0, y0, x1, y1 = np.asarray(boxes[i], np.float64) / stride
        w, h = x1 - x0, y1 - y0
        if w <= 0 or h <= 0:
            continue
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        ix, iy = min(int(cx), grid - 1), min(int(cy), grid - 1)
        sigma = (2 * max(0.0, gaussian_radius(h, w)) + 1) / 6
        peak = np.exp(-((xs - ix) ** 2 + (ys - iy) ** 2) / (2 * sigma**2))
        heat[labels[i]] = np.maximum(heat[labels[i]], peak)
        size[:, iy, ix] = (w, h)
        offset[:, iy, ix] = (cx - ix, cy - iy)
        mask[iy, ix] = 1.0
    return {"heat": heat, "size": size, "offset": offset, "mask": mask}


def focal_loss(logits: Tensor, target: Tensor) -> Tensor:
    """CenterNet's penalty-reduced focal loss, summed and divided by the number of centres.
    logits, target: (B, C, h, w); per-location values are returned by `focal_map`."""
    return focal_map(logits, target).sum() / (target == 1).sum().clamp(min=1)


def focal_map(logits: Tensor, target: Tensor) -> Tensor:
    """(B, C, h, w) per-location focal loss terms (positive at centres, reduced near them)."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    positive = (target == 1).float()
    pos = -((1 - p) ** 2) * torch.log(p) * positive
    neg = -((1 - target) ** 4) * p**2 * torch.log(1 - p) * (1 - positive)
    return pos + neg


def detection_loss(out: dict[str, Tensor], targets: dict[str, Tensor]) -> dict[str, Tensor]:
    """The three CenterNet terms and their total: focal heat, L1 of the log size (x SIZE_WEIGHT), L1 offset."""
    mask = targets["mask"].unsqueeze(1)
    n = mask.sum().clamp(min=1)
    heat = focal_loss(out["heat"], targets["heat"])
    log_target = torch.log(targets["size"].clamp(min=1e-3))  # cells without a centre are masked out
    size = (F.l1_loss(out["log_size"], log_target, reduction="none") * mask).sum() / n
    offset = (F.l1_loss(out["offset"], targets["offset"], reduction="none") * mask).sum() / n
    return {"heat": heat, "size": size, "offset": offset, "total": heat + SIZE_WEIGHT * size + offset}
