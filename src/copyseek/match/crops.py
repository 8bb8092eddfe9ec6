"""Crop policies of the fused pipeline: which parts of a query the global branch describes again.

A policy turns a query, the regions its local verification located and the regions a detector
found (`copyseek.detect.Regions`: boxes of the copied photo and of overlays) into crops; it does
not know how the regions were found. Registered policies:

    grid        the local regions, then the fixed boxes (2x2 grid, centre, halves): 9 + up to 3 crops
    local       the local regions alone
    best        the local regions, the best detected copy box, and the query with its detected
                overlays masked
    boxes       the local regions, every detected copy box scoring >= box_threshold, and the masked query
    boxes+grid  `boxes`, then the fixed boxes
    best-else-grid     `best` when the detector finds a copy box (the whole frame included), the
                       local regions and the fixed boxes (as `grid`) when it finds none
    partial-else-grid  `best` when the detector finds a partial copy box (one it is worth cropping
                       to), `grid` otherwise: the grid is kept for the queries the detector cannot place
    sure-else-grid     `best` when the detector finds a partial copy box, or a whole-frame copy box
                       scoring >= frame_threshold (it is sure the copy fills the query), `grid` otherwise

A copy box covering almost the whole query (max_cover) is left out: the whole query is described
anyway, and then only the overlay-masked query can add something.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from copyseek.detect.regions import Regions
from copyseek.errors import CopyseekError
from copyseek.local.regions import crop_boxes

MASK_MAX_COVER = 0.5
"""Overlays covering more of the query than this are not masked (little would be left)."""


@dataclass(frozen=True)
class CropRequest:
    """What a policy sees: image (H, W, 3) uint8; local (m, 4) pixel boxes located by the local
    branch; detected: the detector's regions (None when the policy does not use a detector);
    box_threshold: the least score of a detected box that counts; frame_threshold: the least score
    of a whole-frame copy box that replaces the grid (sure-else-grid)."""

    image: np.ndarray
    local: np.ndarray
    detected: Regions | None
    box_threshold: float
    frame_threshold: float


CropPolicy = Callable[[CropRequest], list[np.ndarray]]

CROP_POLICIES: dict[str, CropPolicy] = {}
USES_DETECTOR: set[str] = set()


def register_crop_policy(name: str, uses_detector: bool):
    """Decorator adding a policy (CropRequest -> list of (h, w, 3) crops) under `name`."""

    def add(fn: CropPolicy) -> CropPolicy:
        if name in CROP_POLICIES:
            raise CopyseekError(f"crop policy {name!r} is registered twice")
        CROP_POLICIES[name] = fn
        if uses_detector:
            USES_DETECTOR.add(name)
        return fn

    return add


def check_policy(name: str) -> str:
    if name not in CROP_POLICIES:
        raise CopyseekError(f"unknown crop policy {name!r}; choose from {', '.join(CROP_POLICIES)}")
    return name


def masked_overlays(image: np.ndarray, overlays: np.ndarray) -> np.ndarray | None:
    """The image with the (n, 4) overlay boxes filled with its mean colour, or None when there is
    nothing to mask or the boxes cover more than MASK_MAX_COVER of it."""
    if len(overlays) == 0:
        return None
    height, width = image.shape[:2]
    boxes = np.round(np.clip(overlays, 0, [width, height, width, height])).astype(np.int64)
    covered = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in boxes:
        covered[y0:y1, x0:x1] = True
    if not covered.any() or covered.mean() > MASK_MAX_COVER:
        return None
    masked = image.copy()
    masked[covered] = image[~covered].mean(axis=0).astype(np.uint8)
    return masked


def _crop(image: np.ndarray, boxes: np.ndarray) -> list[np.ndarray]:
    return [image[y0:y1, x0:x1].copy() for x0, y0, x1, y1 in boxes]


def _copies(request: CropRequest) -> Regions:
    """The detected copy regions scoring >= box_threshold, best first."""
    detected = request.detected
    return detected.of("copy", request.box_threshold) if detected is not None else Regions.empty()


def _copy_boxes(request: CropRequest, best_only: bool) -> np.ndarray:
    """(n, 4) detected copy boxes scoring >= box_threshold, best first (only the best: n <= 1)."""
    boxes = _copies(request).boxes
    return boxes[:1] if best_only else boxes


def _detected_crops(request: CropRequest, best_only: bool, fixed: bool) -> list[np.ndarray]:
    image, detected = request.image, request.detected
    height, width = image.shape[:2]
    copies = _copy_boxes(request, best_only)
    regions = np.vstack([request.local.reshape(-1, 4), copies.reshape(-1, 4)])
    crops = _crop(image, crop_boxes(width, height, regions, fixed=fixed))
    if detected is not None:
        masked = masked_overlays(image, detected.of("overlay", request.box_threshold).boxes)
        if masked is not None:
            crops.append(masked)
    return crops


@register_crop_policy("grid", uses_detector=False)
def grid_policy(request: CropRequest) -> list[np.ndarray]:
    height, width = request.image.shape[:2]
    return _crop(request.image, crop_boxes(width, height, request.local, fixed=True))


@register_crop_policy("local", uses_detector=False)
def local_policy(request: CropRequest) -> list[np.ndarray]:
    height, width = request.image.shape[:2]
    return _crop(request.image, crop_boxes(width, height, request.local, fixed=False))


@register_crop_policy("best", uses_detector=True)
def best_policy(request: CropRequest) -> list[np.ndarray]:
    return _detected_crops(request, best_only=True, fixed=False)


@register_crop_policy("boxes", uses_detector=True)
def boxes_policy(request: CropRequest) -> list[np.ndarray]:
    return _detected_crops(request, best_only=False, fixed=False)


@register_crop_policy("boxes+grid", uses_detector=True)
def boxes_grid_policy(request: CropRequest) -> list[np.ndarray]:
    return _detected_crops(request, best_only=False, fixed=True)


def _else_grid(request: CropRequest, frame_threshold: float) -> list[np.ndarray]:
    """`best` when the detector places the copy: a partial copy box scoring >= box_threshold, or a
    whole-frame one scoring >= frame_threshold; the local regions and the fixed boxes otherwise."""
    height, width = request.image.shape[:2]
    best = _copies(request)
    partial = len(crop_boxes(width, height, best.boxes[:1], fixed=False)) > 0  # whole-frame boxes are dropped
    placed = partial or (len(best) > 0 and float(best.scores[0]) >= frame_threshold)
    return _detected_crops(request, best_only=True, fixed=not placed)


@register_crop_policy("best-else-grid", uses_detector=True)
def best_else_grid_policy(request: CropRequest) -> list[np.ndarray]:
    # a detected copy, even the whole frame, says where the copy is: the fixed boxes would only
    # cut it up; without one the detector knows nothing and the grid's guesses are kept
    return _else_grid(request, frame_threshold=request.box_threshold)


@register_crop_policy("partial-else-grid", uses_detector=True)
def partial_else_grid_policy(request: CropRequest) -> list[np.ndarray]:
    # a partial copy box is the crop worth describing; a whole-frame box (dropped by crop_boxes as
    # the whole query is described anyway) leaves the grid's guesses
    return _else_grid(request, frame_threshold=np.inf)


@register_crop_policy("sure-else-grid", uses_detector=True)
def sure_else_grid_policy(request: CropRequest) -> list[np.ndarray]:
    # a weak whole-frame box is often a partial copy the detector did not place (a paste, a
    # collage tile): the grid's guesses are kept for it; a confident one replaces them
    return _else_grid(request, frame_threshold=request.frame_threshold)
