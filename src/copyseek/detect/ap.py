"""Box average precision as COCO computes it (pycocotools' `COCOeval` for bounding boxes, one area
range, up to `max_detections` per image): per IoU threshold, detections of all images sorted by
score are matched greedily to the best still-unmatched ground truth box; precision is made
monotone and read at 101 recall points; AP is the mean over IoU 0.50:0.05:0.95, AP50 at 0.50."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from copyseek.detect.regions import CLASSES, Regions, box_iou

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def average_precision(
    detections: Sequence[tuple[np.ndarray, np.ndarray]], truths: Sequence[np.ndarray], iou: float
) -> float:
    """AP of one class at one IoU threshold.

    detections: per image, (boxes (n, 4), scores (n,)); truths: per image, (m, 4) boxes.
    Returns NaN when no image has a ground truth box (COCO's -1).
    """
    n_truths = sum(len(t) for t in truths)
    if n_truths == 0:
        return float("nan")
    records = []  # (score, is true positive)
    for (boxes, scores), truth in zip(detections, truths):
        order = np.argsort(-np.asarray(scores), kind="mergesort")
        overlaps = box_iou(np.asarray(boxes)[order], truth)
        taken = np.zeros(len(truth), bool)
        for i, d in enumerate(order):
            candidates = np.where(taken, -1.0, overlaps[i]) if len(truth) else np.zeros(0)
            best = int(np.argmax(candidates)) if len(candidates) else -1
            hit = best >= 0 and candidates[best] >= iou
            if hit:
                taken[best] = True
            records.append((float(scores[d]), hit))
    if not records:
        return 0.0
    records.sort(key=lambda r: -r[0])  # stable: ties keep image order, as COCO's mergesort does
    hits = np.array([r[1] for r in records], np.float64)
    tp, fp = np.cumsum(hits), np.cumsum(1 - hits)
    recall = tp / n_truths
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # monotone envelope
    at = np.searchsorted(recall, RECALL_POINTS, side="left")
    sampled = np.where(at < len(precision), precision[np.minimum(at, len(precision) - 1)], 0.0)
    return float(sampled.mean())


def evaluate_regions(
    predicted: Sequence[Regions], truths: Sequence[dict[str, np.ndarray]], max_detections: int = 100
) -> dict[str, dict[str, float]]:
    """Per class name: {"AP50": ..., "AP": ...} over images.

    predicted: one Regions per image; truths: per image, {class name: (m, 4) boxes}.
    """
    result = {}
    for c, name in enumerate(CLASSES):
        dets = []
        for regions in predicted:
            keep = np.nonzero(regions.labels == c)[0]
            keep = keep[np.argsort(-regions.scores[keep], kind="mergesort")][:max_detections]
            dets.append((regions.boxes[keep], regions.scores[keep]))
        boxes = [np.asarray(t.get(name, np.zeros((0, 4))), np.float64).reshape(-1, 4) for t in truths]
        per_iou = [average_precision(dets, boxes, float(t)) for t in IOU_THRESHOLDS]
        result[name] = {"AP50": per_iou[0], "AP": float(np.mean(per_iou))}
    return result
