"""The detector at match time: an ONNX model run by onnxruntime, boxes decoded in numpy."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from copyseek.detect.regions import (CLASSES, COPIES_PER_IMAGE, COPY_NMS_IOU, ONE_COPY, Regions, decode, fuse_views,
                                     mirrored, one_copy_scores)
from copyseek.errors import CopyseekError
from copyseek.io.onnx import cpu_session

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "detector.onnx"
"""The default detector: the `teacher` preset's network (379 MMACs, 7.6 MB), copy AP50 0.859 and AP
0.701 on 920 test queries with the mirror pass, ~14 CPU ms per image (BENCHMARKS.md issue 18, session 15)."""
SMALL = SHIPPED.with_name("detector-small.onnx")
"""The `student` preset's network (56 MMACs, 1.1 MB): copy AP50 0.857 and AP 0.650 on the same
queries, ~5 CPU ms per image (`copyseek detect --small`)."""
CROP_DETECTOR = SHIPPED.with_name("detector-crops.onnx")
"""Session 5's detector (copy AP50 0.643 on std + seed1, BENCHMARKS.md issue 18), kept for the
fused preset's crops: `sure-else-grid`'s thresholds were chosen with it, and with session 14's
detector the preset scored 0.0017 less muAP on the five benchmarks."""


FLIP = True
"""Also run the network on the query's mirror, and fuse the regions of both views (the mirror's
mapped back; regions.fuse_views): on e2-e4, copy AP50 +0.015 for SHIPPED and +0.016 for SMALL, copy AP
+0.02 and +0.03, for one more network pass (5.7 and 1.2 CPU ms per image; BENCHMARKS.md issue
18, session 15). Averaging the two views' maps instead lost AP: stride-2 convolutions on even
sizes do not commute with the mirror, so the mirror's maps lie about a cell off."""


def squash(rgb: np.ndarray, side: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (side, side, 3) uint8: the whole image squashed to the network's input
    (bilinear), at match time and in evaluation as training's queries were (detect/data.py)."""
    return np.asarray(Image.fromarray(rgb).resize((side, side), Image.Resampling.BILINEAR))


class Detector:
    """`detect(rgb) -> Regions` with an exported detector (detect/export.py).

    path: the .onnx file, with its .json sidecar beside it; top_k / min_score: decoding limits;
    max_copies: copy boxes kept per image (COPIES_PER_IMAGE; 0: every peak); copy_nms_iou: the
    overlap with a better copy box past which a copy box is dropped (COPY_NMS_IOU; 1: none);
    one_copy: runners-up scored as the chance that no better box is the copy (ONE_COPY); flip:
    also find the regions in the image's mirror and fuse both views (FLIP).
    """

    def __init__(self, path: str | Path = SHIPPED, *, top_k: int = 20, min_score: float = 0.05,
                 max_copies: int = COPIES_PER_IMAGE, copy_nms_iou: float = COPY_NMS_IOU, one_copy: bool = ONE_COPY,
                 flip: bool = FLIP, threads: int = 1):
        path = Path(path)
        sidecar = path.with_suffix(".json")
        if not path.is_file() or not sidecar.is_file():
            raise CopyseekError(f"no detector at {path} (needs the .onnx file and its .json sidecar)")
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        if tuple(meta.get("classes", ())) != CLASSES:
            raise CopyseekError(f"detector {path} has classes {meta.get('classes')}, expected {list(CLASSES)}")
        self.input_size = int(meta["input_size"])
        self.session = cpu_session(path, threads, what="detector")
        self.path, self.top_k, self.min_score = path, top_k, min_score
        self.max_copies, self.copy_nms_iou, self.one_copy, self.flip = max_copies, copy_nms_iou, one_copy, flip

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (S, S, 3) uint8, squashed as in training."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise CopyseekError(f"detect needs an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
        return squash(rgb, self.input_size)

    def network(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N, S, S, 3) uint8 prepared images -> heat (M, C, S/4, S/4) centre probabilities, size
        (M, 2, ...) and offset (M, 2, ...): M = N, or 2N with `flip` (the N mirrors after them)."""
        if self.flip:
            batch = np.concatenate([batch, np.ascontiguousarray(batch[:, :, ::-1])])
        return tuple(self.session.run(None, {"image": batch}))

    def detect_batch(self, images: list[np.ndarray]) -> list[Regions]:
        """Regions of each (H, W, 3) uint8 image, boxes in its own pixels."""
        if not images:
            return []
        heat, size, offset = self.network(np.stack([self.prepare(image) for image in images]))
        settings = {"top_k": self.top_k, "min_score": self.min_score, "max_copies": self.max_copies,
                    "copy_nms_iou": self.copy_nms_iou}
        found = []
        for i, image in enumerate(images):
            frame = (image.shape[1], image.shape[0])
            if not self.flip:
                found.append(decode(heat[i], size[i], offset[i], frame, **settings, one_copy=self.one_copy))
                continue
            j = i + len(images)
            own = decode(heat[i], size[i], offset[i], frame, **settings, one_copy=False)
            other = mirrored(decode(heat[j], size[j], offset[j], frame, **settings, one_copy=False), frame[0])
            fused = fuse_views(own, other)
            found.append(one_copy_scores(fused) if self.one_copy else fused)
        return found

    def detect(self, rgb: np.ndarray) -> Regions:
        """Regions of one (H, W, 3) uint8 RGB image: boxes in its pixels, best first."""
        return self.detect_batch([rgb])[0]


@cache
def load_detector(path: str | None = None, flip: bool = FLIP) -> Detector:
    """The detector at `path` (default: the one shipped in the package), loaded once per setting."""
    return Detector(SHIPPED if path is None else Path(path), flip=flip)
