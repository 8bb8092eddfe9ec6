"""Regions (the detector's answer) and the decoding of CenterNet outputs into boxes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from copyseek.errors import CopyseekError

CLASSES = ("copy", "overlay")
"""Label i of a region is CLASSES[i]: the copied photo, or something drawn over it."""

COPIES_PER_IMAGE = 1
"""Copy boxes the detector reports per query: an edit chain places one copy of the photo (the
ISC2021 3rd-place solution likewise keeps only its best box). Extra copy peaks are near-duplicates
of the same copy at a lower score, and as false positives they cost AP and crops."""


@dataclass(frozen=True)
class Regions:
    """Boxes found in one image, best first.

    boxes:  (n, 4) float32 x0, y0, x1, y1 in the image's pixels (x0 <= x1, y0 <= y1).
    scores: (n,) float32 confidence 0..1.
    labels: (n,) int64 indices into CLASSES.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        n = len(self.scores)
        if self.boxes.shape != (n, 4) or self.labels.shape != (n,):
            raise CopyseekError(f"regions need (n, 4) boxes, (n,) scores and (n,) labels, got "
                                f"{self.boxes.shape}, {self.scores.shape}, {self.labels.shape}")

    def __len__(self) -> int:
        return len(self.scores)

    def of(self, label: str, min_score: float = 0.0) -> Regions:
        """The regions of one class (a name in CLASSES) scoring at least `min_score`."""
        if label not in CLASSES:
            raise CopyseekError(f"unknown region class {label!r}; choose from {', '.join(CLASSES)}")
        keep = (self.labels == CLASSES.index(label)) & (self.scores >= min_score)
        return Regions(self.boxes[keep], self.scores[keep], self.labels[keep])

    @classmethod
    def empty(cls) -> Regions:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


def _peaks(heat: np.ndarray) -> np.ndarray:
    """(C, h, w) -> bool mask of cells that are the maximum of their 3x3 neighbourhood (CenterNet's
    max-pool suppression: one peak per object without box NMS)."""
    padded = np.pad(heat, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    h, w = heat.shape[1:]
    neighbours = np.stack([padded[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)])
    return heat >= neighbours.max(axis=0)


def decode(
    heat: np.ndarray,
    size: np.ndarray,
    offset: np.ndarray,
    image_size: tuple[int, int],
    *,
    top_k: int = 20,
    min_score: float = 0.05,
    max_copies: int = 0,
) -> Regions:
    """Boxes from one image's head outputs.

    heat:   (C, h, w) centre probabilities per class (after the sigmoid).
    size:   (2, h, w) box width and height in cells at each centre.
    offset: (2, h, w) the centre's sub-cell position (x, y) 0..1.
    image_size: (width, height) of the image the boxes are for; a cell is width / w by height / h.
    Keeps the `top_k` best local maxima scoring at least `min_score`, and of the copy class only
    the `max_copies` best (0: no limit).
    """
    classes, h, w = heat.shape
    peaks = np.where(_peaks(heat), heat, 0.0)
    if max_copies > 0:
        copy_peaks = peaks[CLASSES.index("copy")].reshape(-1)  # a view: zeroing it edits `peaks`
        copy_peaks[np.argsort(-copy_peaks, kind="stable")[max_copies:]] = 0.0
    scores = peaks.reshape(-1)
    order = np.argsort(-scores)[:top_k]
    order = order[scores[order] >= min_score]
    label, cell = np.divmod(order, h * w)
    y, x = np.divmod(cell, w)
    cx, cy = x + offset[0, y, x], y + offset[1, y, x]
    bw, bh = np.maximum(size[0, y, x], 0), np.maximum(size[1, y, x], 0)
    sx, sy = image_size[0] / w, image_size[1] / h
    boxes = np.stack([(cx - bw / 2) * sx, (cy - bh / 2) * sy, (cx + bw / 2) * sx, (cy + bh / 2) * sy], axis=1)
    boxes = np.clip(boxes, 0, [image_size[0], image_size[1], image_size[0], image_size[1]])
    return Regions(boxes.astype(np.float32).reshape(-1, 4), scores[order].astype(np.float32), label.astype(np.int64))
