"""Regions (the detector's answer) and the decoding of CenterNet outputs into boxes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from copyseek.errors import CopyseekError

CLASSES = ("copy", "overlay")
"""Label i of a region is CLASSES[i]: the copied photo, or something drawn over it."""

COPIES_PER_IMAGE = 8
"""Copy boxes the detector reports per query, best first. An edit chain places one copy, but which
photo rectangle it is can be undecidable from the query (a paste into a donor photo against a donor
pasted over the copy; one tile of a collage), so the runners-up are kept as ranked alternatives.
Chosen on the e2-e4 benchmarks' queries with COPY_NMS_IOU (BENCHMARKS.md, issue 18); crop
policies that want one box take the first."""

ONE_COPY = True
"""Rescore the runners-up: an edit chain places one copy, so the k-th copy box's score becomes
s_k x (1 - s_1) ... (1 - s_(k-1)), the chance that it and no better box is the copy. A sure first
box then pushes its runners-up below the uncertain first boxes of other queries, where AP ranks all
queries' boxes together. Chosen on e2-e4 (copy AP50 +0.005 to +0.015 for four detectors), the first
box keeps its score, so policies that crop the first box are unchanged (BENCHMARKS.md, issue 18)."""

COPY_NMS_IOU = 0.5
"""A copy peak whose box overlaps a better copy box by more than this IoU is dropped: the max-pool
suppression of the heat map leaves such near-duplicates of one copy (peaks a few cells apart, or
at another scale), which as false positives cost AP and crops."""


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


def _peaks(heat: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """(C, h, w) maps, (n,) flat (class, cell) indices -> (n,) bool: which of those cells are the
    maximum of their 3x3 neighbourhood (CenterNet's max-pool suppression: one peak per object
    without box NMS). Only the cells asked about are compared: a decoder asks about those above its
    score floor, a few hundred of 3,200 at 160 px."""
    c, h, w = heat.shape
    padded = np.full((c, h + 2, w + 2), -np.inf, heat.dtype)  # np.pad costs more than the rest
    padded[:, 1:-1, 1:-1] = heat
    label, cell = np.divmod(cells, h * w)
    y, x = np.divmod(cell, w)
    neighbours = np.stack([padded[label, y + dy, x + dx] for dy in range(3) for dx in range(3)])
    return heat.reshape(-1)[cells] >= neighbours.max(axis=0)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, 4) and (m, 4) x0, y0, x1, y1 boxes -> (n, m) intersection over union."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    low = np.maximum(a[:, None, :2], b[None, :, :2])
    high = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(high - low, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).prod(axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def suppress_copies(boxes: np.ndarray, labels: np.ndarray, iou: float, max_copies: int, limit: int) -> np.ndarray:
    """Indices kept of (n, 4) boxes sorted best first, (n,) labels: every non-copy box, and greedily
    each copy box overlapping no kept copy box by more than `iou` (1: none is dropped), up to
    `max_copies` of them (0: no limit); the first `limit` of those."""
    copy = CLASSES.index("copy")
    is_copy = (np.asarray(labels) == copy).tolist()
    # the copies' overlaps computed at once: a box_iou call per copy box made decoding cost ~40% of
    # the small detector's network pass
    copies = [i for i, c in enumerate(is_copy) if c]
    position = {i: k for k, i in enumerate(copies)}
    overlaps = box_iou(boxes[copies], boxes[copies]).tolist() if copies else []
    kept: list[int] = []
    kept_copies: list[int] = []
    for i in range(len(boxes)):
        if len(kept) == limit:
            break
        if is_copy[i]:
            row = overlaps[position[i]]
            if (max_copies and len(kept_copies) >= max_copies) or any(row[position[j]] > iou for j in kept_copies):
                continue
            kept_copies.append(i)
        kept.append(i)
    return np.array(kept, np.int64)


def decode(
    heat: np.ndarray,
    size: np.ndarray,
    offset: np.ndarray,
    image_size: tuple[int, int],
    *,
    top_k: int = 20,
    min_score: float = 0.05,
    max_copies: int = 0,
    copy_nms_iou: float = COPY_NMS_IOU,
    one_copy: bool = ONE_COPY,
) -> Regions:
    """Boxes from one image's head outputs.

    heat:   (C, h, w) centre probabilities per class (after the sigmoid).
    size:   (2, h, w) box width and height in cells at each centre.
    offset: (2, h, w) the centre's sub-cell position (x, y) 0..1.
    image_size: (width, height) of the image the boxes are for; a cell is width / w by height / h.
    Keeps the `top_k` best local maxima scoring at least `min_score`; of the copy class, only
    boxes overlapping no better copy box by more than `copy_nms_iou` (IoU; 1: none dropped), and at most
    the `max_copies` best of those (0: no limit); `one_copy`: their scores as `one_copy_scores`.
    """
    h, w = heat.shape[1:]
    flat = heat.reshape(-1)
    # a cell that is no peak scores 0: with a floor <= 0 every cell is a candidate, else those above it
    above = np.flatnonzero(flat >= min_score) if min_score > 0 else np.arange(flat.size)
    candidate = np.where(_peaks(heat, above), flat[above], 0.0)
    ranked = np.argsort(-candidate, kind="stable")  # ties in cell order, as over the whole map
    keep = candidate[ranked] >= min_score
    order, scores = above[ranked][keep], candidate[ranked][keep]
    boxes, labels = _boxes(order, size, offset, (h, w), image_size)
    kept = suppress_copies(boxes, labels, copy_nms_iou, max_copies, top_k)
    regions = Regions(boxes[kept], scores[kept].astype(np.float32), labels[kept])
    return one_copy_scores(regions) if one_copy else regions


MIRROR_IOU = 0.55
"""A box of the mirror pass (detect/runtime.py, FLIP) and a box of the image of one class overlapping
by at least this IoU are one region."""


def mirrored(regions: Regions, width: float) -> Regions:
    """Regions found in an image's mirror -> the same regions in the image (x -> width - x)."""
    boxes = regions.boxes.copy()
    boxes[:, 0], boxes[:, 2] = width - regions.boxes[:, 2], width - regions.boxes[:, 0]
    return Regions(boxes, regions.scores, regions.labels)


def fuse_views(own: Regions, other: Regions, iou: float = MIRROR_IOU) -> Regions:
    """Regions of one image found twice (in it, and in its mirror mapped back) -> one set, best first.

    Each box of `own` (best first) is paired with the best-overlapping unpaired box of `other` of
    its class at IoU >= `iou`: the pair becomes their score-weighted mean box with the mean score;
    a box seen by one view only keeps its box at half its score (the other view gave it 0)."""
    # the pairing is greedy (best own box first) over plain lists; the rest is arithmetic on whole
    # arrays: a loop of small numpy calls per box cost about as much as decoding a view
    overlap = box_iou(own.boxes, other.boxes)
    eligible = (overlap >= iou) & (own.labels[:, None] == other.labels[None, :])
    rows = np.where(eligible, overlap, -1.0).tolist()
    free = [True] * len(other.boxes)
    partner = np.full(len(own.boxes), -1, np.int64)
    for k, row in enumerate(rows):
        j = max((j for j, o in enumerate(row) if o >= 0 and free[j]), key=row.__getitem__, default=-1)
        if j >= 0:
            free[j] = False
            partner[k] = j
    paired = partner >= 0
    mate = np.where(paired, partner, 0)
    if len(other.boxes):
        w_other, mate_boxes = np.where(paired, other.scores[mate], 0).astype(np.float32), other.boxes[mate]
    else:
        w_other, mate_boxes = np.zeros_like(own.scores), own.boxes
    w_own = own.scores
    total = np.maximum(w_own + w_other, 1e-12)[:, None]
    mean_boxes = (w_own[:, None] * own.boxes + w_other[:, None] * mate_boxes) / total
    alone = np.flatnonzero(free)
    boxes = np.concatenate([np.where(paired[:, None], mean_boxes, own.boxes), other.boxes[alone]]).astype(np.float32)
    own_scores = np.where(paired, (w_own + w_other) / 2, w_own / 2)
    scores = np.concatenate([own_scores, other.scores[alone] / 2]).astype(np.float32)
    labels = np.concatenate([own.labels, other.labels[alone]]).astype(np.int64)
    order = np.argsort(-scores, kind="stable")
    return Regions(boxes.reshape(-1, 4)[order], scores[order], labels[order])


def one_copy_scores(regions: Regions) -> Regions:
    """Regions (best first) with the k-th copy box scored s_k x prod_(j < k) (1 - s_j) (ONE_COPY),
    re-sorted best first; other classes keep their scores."""
    scores = regions.scores.copy()
    copies = np.flatnonzero(regions.labels == CLASSES.index("copy"))
    if len(copies) > 1:
        none_better = np.concatenate([[1.0], np.cumprod(1.0 - regions.scores[copies[:-1]])])
        scores[copies] = (regions.scores[copies] * none_better).astype(np.float32)
    order = np.argsort(-scores, kind="stable")
    return Regions(regions.boxes[order], scores[order], regions.labels[order])


def _boxes(order: np.ndarray, size: np.ndarray, offset: np.ndarray, grid: tuple[int, int],
           image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Flat (class, cell) indices of heat-map peaks -> (n, 4) float32 boxes in image pixels and (n,) labels."""
    h, w = grid
    label, cell = np.divmod(order, h * w)
    y, x = np.divmod(cell, w)
    cx, cy = x + offset[0, y, x], y + offset[1, y, x]
    bw, bh = np.maximum(size[0, y, x], 0), np.maximum(size[1, y, x], 0)
    sx, sy = image_size[0] / w, image_size[1] / h
    boxes = np.stack([(cx - bw / 2) * sx, (cy - bh / 2) * sy, (cx + bw / 2) * sx, (cy + bh / 2) * sy], axis=1)
    boxes = np.clip(boxes, 0, [image_size[0], image_size[1], image_size[0], image_size[1]])
    return boxes.astype(np.float32).reshape(-1, 4), label.astype(np.int64)


REGION_COLOURS = {"copy": (0, 200, 80), "overlay": (230, 40, 40)}


def draw_regions(rgb: np.ndarray, regions: Regions, min_score: float = 0.0):
    """A PIL image of `rgb` (H, W, 3) uint8 with the regions scoring >= min_score drawn as boxes
    (copy green, overlay red; the best copy box thicker), each labelled with its class and score."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(rgb).convert("RGB")
    draw = ImageDraw.Draw(image)
    width = max(1, round(max(image.size) / 250))
    best_copy = True
    for box, score, label in zip(regions.boxes, regions.scores, regions.labels):
        if score < min_score:
            continue
        name = CLASSES[int(label)]
        thick = 2 * width if name == "copy" and best_copy else width
        best_copy = best_copy and name != "copy"
        x0, y0, x1, y1 = (float(v) for v in box)
        draw.rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=REGION_COLOURS[name], width=thick)
        draw.text((x0 + thick + 1, y0 + thick), f"{name} {score:.2f}", fill=REGION_COLOURS[name])
    return image
