"""Box AP and speed of a detector on a built benchmark's queries (their layouts.json is the truth)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from copyseek.detect.ap import evaluate_regions
from copyseek.detect.data import benchmark_queries
from copyseek.detect.regions import COPIES_PER_IMAGE, COPY_NMS_IOU, ONE_COPY, Regions, decode


class TorchDetector:
    """A DetectorNet (or its checkpoint) with the ONNX runtime's interface (for comparing trainings
    without exporting them, and for validating during training); `detect_batch(images) -> list[Regions]`.
    The net is used as it is (a training net is not switched to eval mode here)."""

    def __init__(self, source, *, top_k: int = 20, min_score: float = 0.05, max_copies: int = COPIES_PER_IMAGE,
                 copy_nms_iou: float = COPY_NMS_IOU, one_copy: bool = ONE_COPY):
        from copyseek.detect.model import DetectorNet, load_checkpoint

        self.net = source if isinstance(source, DetectorNet) else load_checkpoint(source)[0]
        self.input_size = self.net.config.input_size
        self.top_k, self.min_score = top_k, min_score
        self.max_copies, self.copy_nms_iou, self.one_copy = max_copies, copy_nms_iou, one_copy

    def detect_batch(self, images: list[np.ndarray]) -> list[Regions]:
        import torch

        from copyseek.detect.runtime import squash

        batch = np.stack([squash(im, self.input_size) for im in images])
        with torch.no_grad():
            out = self.net(torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255.0)
        heat, sz, off = torch.sigmoid(out["heat"]).numpy(), out["size"].numpy(), out["offset"].numpy()
        return [decode(heat[i], sz[i], off[i], (im.shape[1], im.shape[0]), top_k=self.top_k, min_score=self.min_score,
                       max_copies=self.max_copies, copy_nms_iou=self.copy_nms_iou, one_copy=self.one_copy)
                for i, im in enumerate(images)]


def load_queries(bench: str | Path, limit: int = 0) -> tuple[list[np.ndarray], list[dict]]:
    """A benchmark's query pixels and ground-truth boxes (the first `limit`, 0: all)."""
    from copyseek.io.images import ImageFile, read_image

    queries = benchmark_queries(bench)
    queries = queries[:limit] if limit else queries
    images = [read_image(ImageFile(path.stem, path)).pixels for path, _ in queries]
    return images, [truth for _, truth in queries]


def evaluate_detector(detector, images: list[np.ndarray], truths: list[dict], batch: int = 1) -> dict:
    """{"copy": {"AP50", "AP"}, "overlay": {...}, "ms_per_image": wall, "cpu_ms_per_image": this
    process's CPU time (steadier than wall time on a shared machine)} (one image per call by
    default, as at match time; resizing included)."""
    predicted: list[Regions] = []
    started, cpu_started = time.perf_counter(), time.process_time()
    for i in range(0, len(images), batch):
        predicted.extend(detector.detect_batch(images[i : i + batch]))
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    result = evaluate_regions(predicted, truths)
    result["ms_per_image"] = 1000 * seconds / max(1, len(images))
    result["cpu_ms_per_image"] = 1000 * cpu_seconds / max(1, len(images))
    return result
