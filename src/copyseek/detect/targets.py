"""Training targets of the CenterNet heads, and their losses.

Per image, for each box: a Gaussian peak at its centre cell in its class's heat map (radius from
the box size, as CornerNet / CenterNet: the largest shift keeping IoU >= 0.7), and at that cell the
box's width and height in cells and the centre's sub-cell offset.

Alternatives (other photos that could be the copy as far as the image shows: a paste's other photo,
a collage's other cells; edits/layout.py) are soft copy targets: a peak of height `weight` < 1,
learnt with the quality focal loss (Li et al., Generalized Focal Loss, 2020), whose optimum is
p = weight, so the detector proposes every candidate ranked below the sure copies instead of
learning to suppress what is a copy in other queries.
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


def make_targets(boxes: np.ndarray, labels: np.ndarray, grid: int, stride: int,
                 alternatives: np.ndarray | None = None, alternative_weight: float = 0.0) -> dict[str, np.ndarray]:
    """Dense targets for one image.

    boxes: (n, 4) x0, y0, x1, y1 input pixels; labels: (n,) class indices; grid: cells per side;
    alternatives: (m, 4) boxes that could be the copy, targets of weight `alternative_weight` (0:
    none, they stay negatives). Returns heat (C, g, g) in 0..1, centres (C, g, g) the weight of
    each box centre (1, or the alternatives' weight), size (2, g, g) cells, offset (2, g, g),
    mask (g, g) 1 at centres, cover (g, g) the share of each cell inside the copy box (what SCN's
    guide must select).
    """
    heat = np.zeros((len(CLASSES), grid, grid), np.float32)
    centres = np.zeros((len(CLASSES), grid, grid), np.float32)
    size = np.zeros((2, grid, grid), np.float32)
    offset = np.zeros((2, grid, grid), np.float32)
    mask = np.zeros((grid, grid), np.float32)
    cover = np.zeros((grid, grid), np.float32)
    ys, xs = np.mgrid[0:grid, 0:grid]
    copy = CLASSES.index("copy")
    weights = np.ones(len(boxes))
    if alternatives is not None and len(alternatives) and alternative_weight > 0:
        boxes = np.vstack([alternatives, boxes])
        labels = np.concatenate([np.full(len(alternatives), copy), labels])
        weights = np.concatenate([np.full(len(alternatives), alternative_weight), weights])
    # alternatives first, then the largest boxes first: a box whose centre falls in the cell of a
    # larger one (or of an alternative) keeps its size
    order = np.lexsort((-(boxes[:, 2:] - boxes[:, :2]).prod(axis=1), weights)) if len(boxes) else []
    for i in order:
        x0, y0, x1, y1 = np.asarray(boxes[i], np.float64) / stride
        w, h = x1 - x0, y1 - y0
        if w <= 0 or h <= 0:
            continue
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        ix, iy = min(int(cx), grid - 1), min(int(cy), grid - 1)
        sigma = (2 * max(0.0, gaussian_radius(h, w)) + 1) / 6
        peak = weights[i] * np.exp(-((xs - ix) ** 2 + (ys - iy) ** 2) / (2 * sigma**2))
        heat[labels[i]] = np.maximum(heat[labels[i]], peak)
        centres[labels[i], iy, ix] = max(centres[labels[i], iy, ix], weights[i])
        size[:, iy, ix] = (w, h)
        offset[:, iy, ix] = (cx - ix, cy - iy)
        mask[iy, ix] = 1.0
        if labels[i] == copy and weights[i] == 1.0:
            inside_x = np.clip(np.minimum(np.arange(1, grid + 1), x1) - np.maximum(np.arange(grid), x0), 0, 1)
            inside_y = np.clip(np.minimum(np.arange(1, grid + 1), y1) - np.maximum(np.arange(grid), y0), 0, 1)
            cover = np.maximum(cover, inside_y[:, None] * inside_x[None, :])
    return {"heat": heat, "centres": centres, "size": size, "offset": offset, "mask": mask, "cover": cover}


def focal_loss(logits: Tensor, target: Tensor, centres: Tensor | None = None) -> Tensor:
    """CenterNet's penalty-reduced focal loss, summed and divided by the number of centres.
    logits, target, centres: (B, C, h, w); per-location values are returned by `focal_map`."""
    centres = (target == 1).float() if centres is None else centres
    return focal_map(logits, target, centres).sum() / (centres > 0).sum().clamp(min=1)


def focal_map(logits: Tensor, target: Tensor, centres: Tensor | None = None) -> Tensor:
    """(B, C, h, w) per-location focal loss terms: at a centre of weight w, the quality focal loss
    -|w - p|^2 (w log p + (1 - w) log(1 - p)) (CenterNet's positive term when w = 1); elsewhere
    CenterNet's negative term, reduced near centres by (1 - target)^4. centres: (B, C, h, w)
    weights, 0 off centres (default: 1 where target is 1)."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    centres = (target == 1).float() if centres is None else centres
    positive = (centres > 0).float()
    pos = -((centres - p).abs() ** 2) * (centres * torch.log(p) + (1 - centres) * torch.log(1 - p)) * positive
    neg = -((1 - target) ** 4) * p**2 * torch.log(1 - p) * (1 - positive)
    return pos + neg


def detection_loss(out: dict[str, Tensor], targets: dict[str, Tensor]) -> dict[str, Tensor]:
    """The three CenterNet terms and their total: focal heat, L1 of the log size (x SIZE_WEIGHT), L1 offset."""
    mask = targets["mask"].unsqueeze(1)
    n = mask.sum().clamp(min=1)
    heat = focal_loss(out["heat"], targets["heat"], targets.get("centres"))
    log_target = torch.log(targets["size"].clamp(min=1e-3))  # cells without a centre are masked out
    size = (F.l1_loss(out["log_size"], log_target, reduction="none") * mask).sum() / n
    offset = (F.l1_loss(out["offset"], targets["offset"], reduction="none") * mask).sum() / n
    return {"heat": heat, "size": size, "offset": offset, "total": heat + SIZE_WEIGHT * size + offset}
