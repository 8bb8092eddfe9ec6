"""Crops of a query for the global branch to search again, so it sees a copy that fills only part of
the query (a paste, a collage tile): the regions local verification found, plus a fixed set.
"""

from __future__ import annotations

import numpy as np

from copyseek.errors import CopyseekError

FIXED_BOXES = np.array(
    [
        [0.0, 0.0, 0.5, 0.5], [0.5, 0.0, 1.0, 0.5], [0.0, 0.5, 0.5, 1.0], [0.5, 0.5, 1.0, 1.0],  # 2x2 grid
        [0.2, 0.2, 0.8, 0.8],  # centre
        [0.0, 0.0, 0.5, 1.0], [0.5, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.5], [0.0, 0.5, 1.0, 1.0],  # halves
    ],
    np.float32,
)
"""(9, 4) x0, y0, x1, y1 as fractions of the query's width and height."""


def crop_boxes(
    width: int, height: int, regions: np.ndarray | None = None, *, margin: float = 0.05, min_side: int = 32,
    max_cover: float = 0.9, fixed: bool = True,
) -> np.ndarray:
    """(n, 4) int64 x0, y0, x1, y1 pixel boxes to crop from a width x height query: the regions (grown
    by `margin` of their size on each side), then the fixed boxes.

    regions: (m, 4) x0, y0, x1, y1 in query pixels, e.g. Candidates.extra["region"] of the local branch.
    Regions narrower than `min_side` pixels, or covering more than `max_cover` of the query (the
    whole query is searched anyway), are dropped, as are repeated boxes.
    """
    regions = np.zeros((0, 4)) if regions is None else np.asarray(regions, np.float64).reshape(-1, 4)
    if np.any(regions[:, 2:] < regions[:, :2]):
        raise CopyseekError("regions must be x0, y0, x1, y1 boxes with x0 <= x1 and y0 <= y1")
    grow = margin * (regions[:, 2:] - regions[:, :2])
    boxes = np.hstack([regions[:, :2] - grow, regions[:, 2:] + grow])
    if fixed:
        boxes = np.vstack([boxes, FIXED_BOXES * [width, height, width, height]])
    boxes = np.round(np.clip(boxes, 0, [width, height, width, height])).astype(np.int64)
    sides = boxes[:, 2:] - boxes[:, :2]
    cover = sides.prod(axis=1) / max(width * height, 1)
    boxes = boxes[(sides.min(axis=1) >= min_side) & (cover <= max_cover)]
    _, first = np.unique(boxes, axis=0, return_index=True)
    return boxes[np.sort(first)]


def query_crops(image: np.ndarray, regions: np.ndarray | None = None, **options) -> list[np.ndarray]:
    """Crops of an (H, W, 3) query image at `crop_boxes(W, H, regions, **options)`, in that order."""
    height, width = image.shape[:2]
    return [image[y0:y1, x0:x1].copy() for x0, y0, x1, y1 in crop_boxes(width, height, regions, **options)]
