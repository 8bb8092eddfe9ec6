"""Selective Convolutional Network (SCN) for the detector: the whole network runs only where a
cheap guide says the copy is.

A guidance network reads a thumbnail of the query (S / THUMB pixels a side) and predicts, per cell
of CELL x CELL input pixels, whether the copy covers it. At inference the detector runs only on the
selected area: each connected group of selected cells, grown by `halo` cells, becomes a rectangle
(whole cells, so the stride-4 outputs align with the full image's); rectangles merge into their
bounding box when it overlaps or saves a network call's fixed cost (CALL_COST); every rectangle is
cropped and run through the whole dense network, and its outputs are written back into full-size
maps; elsewhere the heat is "no object". Where the crops would cost more than the whole image, the
dense network runs once on all of it. A crop that holds just the copy is what the
detector knows best, a whole-frame copy, so no context is kept around it unless `halo` asks.

Why whole-network crops (session 14) and not the heads alone (session 5's first design, tiles of
the stride-4 heads gathered with a one-cell halo into a batch): the heads are 14% of the student's
CPU time, and on a CPU at batch 1 gathering and scattering small tiles cost more than the 3x3
convolutions they skipped (31% slower, BENCHMARKS.md). A crop skips every stage at once, in a few
large dense convolutions.

Training multiplies the image (centred) by the upsampled guide probability, so the detection loss
reaches the guide (indirect supervision), with a small sparsity cost, plus, with `scn_direct` > 0,
a binary cross-entropy to masks made from the copy boxes (direct supervision). The paper (Selective
Convolutional Network, abstract only here) selects inside SSD / Pelee feature extraction; the
thumbnail guide, whole-network crops and these losses are our reading.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

CELL = 16
"""Guide cell side in input pixels (4 output cells of the stride-4 heads)."""

THUMB = 8
"""The guide reads the image shrunk by this factor (one stride-2 convolution then reaches CELL)."""

EMPTY_HEAT = -12.0
"""Heat logit written where nothing was computed (probability ~6e-6)."""

SPARSITY = 0.05
"""Weight of the mean guide probability in the guide loss: selecting costs."""

CALL_COST = 0.4
"""The fixed cost of one network call in image areas. On the student at 160 px, batch 1, 1 thread,
a call costs about 0.5-0.7 ms + 1.7-2.1 ms x the share of the image it covers (`bench_detect.py
--profile student`: 0.9-1.0 ms for a 64-px crop, 2.5-2.6 ms for the whole image), i.e. 0.25-0.4 of an
image; two crops are merged into their bounding box when that adds less area than this, and the
whole image runs once when that is cheaper than the crops."""

MIN_COVER = 0.25
"""A guide cell is a direct-supervision target when a copy box covers at least this share of it."""


def conv_relu(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    # no batch norm: at batch 1 on a CPU each extra op costs more than this net's arithmetic
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, dilation, dilation), nn.ReLU(inplace=True))


class Guide(nn.Module):
    """(B, 3, S, S) images in [0, 1] -> (B, 1, S / CELL, S / CELL) logits "the copy covers this cell".
    An 8x thumbnail, a stride-2, a plain and a dilated 3x3 convolution: 1.4 M multiply-accumulates
    at S = 160 (2.5% of the student detector's), 0.2 ms of CPU at batch 1."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(conv_relu(3, width // 2, 2), conv_relu(width // 2, width),
                                  conv_relu(width, width, dilation=2))
        self.out = nn.Conv2d(width, 1, 1)
        with torch.no_grad():
            self.out.bias.fill_(1.0)  # start by selecting everything

    def forward(self, images: Tensor) -> Tensor:
        return self.out(self.body(F.avg_pool2d(images - 0.5, THUMB)))


class Selective(nn.Module):
    """The guide and how the detector runs with it: gated in training, cropped at inference."""

    def __init__(self, threshold: float = 0.5, halo: int = 0):
        super().__init__()
        self.guide = Guide()
        self.threshold = threshold
        self.halo = halo
        self.dense = False  # True: ignore the guide (for measuring the dense cost, and for ONNX export)

    def gate(self, images: Tensor, logits: Tensor) -> Tensor:
        """Training: images (B, 3, S, S) faded to grey where the guide's probability is low."""
        gate = F.interpolate(torch.sigmoid(logits), scale_factor=CELL, mode="nearest")
        return 0.5 + (images - 0.5) * gate

    def run(self, dense: Callable[[Tensor], dict[str, Tensor]], images: Tensor, logits: Tensor,
            classes: int) -> dict[str, Tensor]:
        """Inference: `dense` (images -> the net's output maps) on the selected rectangles only.
        Returns heat (B, classes, S/4, S/4) (EMPTY_HEAT where not computed), log_size, size, offset
        (B, 2, S/4, S/4) and `tiles` (B, S/CELL, S/CELL) bool: the guide cells the network computed."""
        selected = (torch.sigmoid(logits[:, 0]) >= self.threshold).numpy()
        rectangles = [selected_rectangles(grid, self.halo) for grid in selected]
        if all(r == [(0, 0, *grid.shape)] for r, grid in zip(rectangles, selected)):  # no crop: no copying either
            return {**dense(images), "tiles": torch.ones(selected.shape, dtype=torch.bool)}
        batch, _, height, width = images.shape
        cells = (height // 4, width // 4)
        maps = {"heat": images.new_full((batch, classes, *cells), EMPTY_HEAT),
                "log_size": images.new_zeros((batch, 2, *cells)), "size": images.new_ones((batch, 2, *cells)),
                "offset": images.new_zeros((batch, 2, *cells))}
        tiles = torch.zeros(selected.shape, dtype=torch.bool)
        per_cell = CELL // 4
        for b in range(batch):
            for y0, x0, y1, x1 in rectangles[b]:
                out = dense(images[b : b + 1, :, y0 * CELL : y1 * CELL, x0 * CELL : x1 * CELL])
                for key, values in maps.items():
                    values[b, :, y0 * per_cell : y1 * per_cell, x0 * per_cell : x1 * per_cell] = out[key][0]
                tiles[b, y0:y1, x0:x1] = True
        return {**maps, "tiles": tiles}


def selected_rectangles(selected: np.ndarray, halo: int = 0) -> list[tuple[int, int, int, int]]:
    """(gy, gx) bool guide cells -> disjoint rectangles (y0, x0, y1, x1) in cells, end exclusive, to
    run the network on: each 8-connected group's bounding box grown by `halo` cells (clipped); then,
    while it lowers the cost (CALL_COST per call + the area, in images), two rectangles become their
    bounding box (always when they overlap); the whole grid when that is cheaper; none when nothing
    is selected."""
    from scipy import ndimage

    gy, gx = selected.shape
    whole = [(0, 0, gy, gx)]
    if selected.all():
        return whole
    groups, _ = ndimage.label(selected, structure=np.ones((3, 3)))
    rectangles = [(max(0, s[0].start - halo), max(0, s[1].start - halo), min(gy, s[0].stop + halo), min(gx, s[1].stop + halo))
                  for s in ndimage.find_objects(groups)]

    def area(r: tuple[int, int, int, int]) -> float:
        return (r[2] - r[0]) * (r[3] - r[1]) / (gy * gx)

    while len(rectangles) > 1:
        pairs = [(i, j) for i in range(len(rectangles)) for j in range(i + 1, len(rectangles))]
        merged = [_union(rectangles[i], rectangles[j]) for i, j in pairs]
        # what merging saves: one call, less the area the bounding box adds
        savings = [CALL_COST + area(rectangles[i]) + area(rectangles[j]) - area(m) for (i, j), m in zip(pairs, merged)]
        best = int(np.argmax(savings))
        i, j = pairs[best]
        if savings[best] <= 0 and not _overlap(rectangles[i], rectangles[j]):
            break
        rectangles = [r for k, r in enumerate(rectangles) if k not in (i, j)] + [merged[best]]
    if rectangles and len(rectangles) * CALL_COST + sum(map(area, rectangles)) >= CALL_COST + 1.0:
        return whole
    return rectangles


def _union(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def guide_targets(cover: Tensor) -> Tensor:
    """Masks from the boxes: (B, g, g) 1 inside a copy box at the stride-4 grid -> (B, 1, g/4, g/4)
    1 where a copy box covers at least MIN_COVER of the guide cell."""
    return (F.avg_pool2d(cover[:, None], CELL // 4) >= MIN_COVER).float()


def guide_loss(logits: Tensor, cover: Tensor) -> Tensor:
    """Direct supervision: binary cross-entropy of the guide to the masks from the copy boxes."""
    return F.binary_cross_entropy_with_logits(logits, guide_targets(cover))


def sparsity_loss(logits: Tensor) -> Tensor:
    """The share of cells selected (soft): what the guide pays for computing."""
    return SPARSITY * torch.sigmoid(logits).mean()
