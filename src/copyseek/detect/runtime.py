"""The detector at match time: an ONNX model run by onnxruntime, boxes decoded in numpy."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from copyseek.detect.regions import CLASSES, COPIES_PER_IMAGE, COPY_NMS_IOU, ONE_COPY, Regions, decode
from copyseek.errors import CopyseekError
from copyseek.io.onnx import cpu_session

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "detector.onnx"
"""The default detector: the `teacher` preset's network (379 MMACs, 7.6 MB), copy AP50 0.859 on 920
test queries with the mirror pass, ~14 CPU ms per image (BENCHMARKS.md issue 18, session 15)."""
SMALL = SHIPPED.with_name("detector-small.onnx")
"""The `student` preset's network (56 MMACs, 1.1 MB): copy AP50 0.847 on the same queries, ~5 CPU ms
per image (`copyseek detect --small`)."""
CROP_DETECTOR = SHIPPED.with_name("detector-crops.onnx")
"""Session 5's detector (copy AP50 0.643 on std + seed1 against 0.844 for SMALL, BENCHMARKS.md
issue 18), kept for the fused preset's crops: `sure-else-grid`'s thresholds were chosen with it,
and with session 14's detector the preset scored 0.0017 less muAP on the five benchmarks."""


FLIP = True
"""Run the network on the query and on its mirror, and average their centre and size maps (the
mirror's flipped back): copy AP50 -0.011 to +0.022 by benchmark set for session 14's and 15's
detectors, +0.003 for SMALL and +0.011 for SHIPPED on 920 test queries, for one more network pass
(1.2 CPU ms per image for SMALL, 5.7 for SHIPPED; BENCHMARKS.md issue 18, session 15)."""

MIRROR_SHIFT = 0
"""Cells by which the mirror's maps, flipped back, are moved right before averaging. Stride-2
convolutions on even sizes do not commute with the mirror: each one samples the mirror one input
pixel off, and the offsets add up through the strides (3 pixels at stride 4, more in the deeper
maps the neck brings up), so the flipped-back maps lie about a cell to the left of the image's.
Unmoved (0, the default), the averaged peaks blur: copy AP50 is highest (0.859 for SHIPPED on 920
test queries) but copy AP falls (0.574, against 0.681 without the mirror pass); moved by one cell
(`mirror_shift=1`) the boxes are tighter and AP50 lower (AP 0.691, AP50 0.846). BENCHMARKS.md
issue 18, session 15."""


def mirrored_back(maps: np.ndarray, shift: int = MIRROR_SHIFT) -> np.ndarray:
    """(N, C, h, w) maps of mirrored images -> flipped back to the images' orientation and moved
    `shift` cells right (the first column repeated), as aligned with the images' own maps."""
    flipped = maps[..., ::-1]
    if shift <= 0:
        return flipped
    return np.concatenate([np.repeat(flipped[..., :1], shift, axis=-1), flipped[..., :-shift]], axis=-1)


class Detector:
    """`detect(rgb) -> Regions` with an exported detector (detect/export.py).

    path: the .onnx file, with its .json sidecar beside it; top_k / min_score: decoding limits;
    max_copies: copy boxes kept per image (COPIES_PER_IMAGE; 0: every peak); copy_nms_iou: the
    overlap with a better copy box past which a copy box is dropped (COPY_NMS_IOU; 1: none);
    one_copy: runners-up scored as the chance that no better box is the copy (ONE_COPY); flip:
    average the maps of the image and of its mirror (FLIP), the mirror's moved `mirror_shift`
    cells (MIRROR_SHIFT).
    """

    def __init__(self, path: str | Path = SHIPPED, *, top_k: int = 20, min_score: float = 0.05,
                 max_copies: int = COPIES_PER_IMAGE, copy_nms_iou: float = COPY_NMS_IOU, one_copy: bool = ONE_COPY,
                 flip: bool = FLIP, mirror_shift: int = MIRROR_SHIFT, threads: int = 1):
        if mirror_shift < 0:
            raise CopyseekError(f"mirror_shift is a number of cells >= 0, got {mirror_shift}")
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
        self.mirror_shift = mirror_shift

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (S, S, 3) uint8, squashed as in training."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise CopyseekError(f"detect needs an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
        size = (self.input_size, self.input_size)
        return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))

    def maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N, S, S, 3) uint8 prepared images -> heat (N, C, S/4, S/4) centre probabilities, size
        (N, 2, ...) and offset (N, 2, ...); with `flip`, heat and size are the means of the image's
        and its mirror's (flipped back and moved `mirror_shift` cells right), the offsets the image's
        own (averaging them too changed nothing measurable)."""
        if not self.flip:
            return tuple(self.session.run(None, {"image": batch}))
        both = np.concatenate([batch, np.ascontiguousarray(batch[:, :, ::-1])])
        heat, size, offset = self.session.run(None, {"image": both})
        n = len(batch)
        heat_m, size_m = mirrored_back(heat[n:], self.mirror_shift), mirrored_back(size[n:], self.mirror_shift)
        return (heat[:n] + heat_m) / 2, (size[:n] + size_m) / 2, offset[:n]

    def detect_batch(self, images: list[np.ndarray]) -> list[Regions]:
        """Regions of each (H, W, 3) uint8 image, boxes in its own pixels."""
        if not images:
            return []
        heat, size, offset = self.maps(np.stack([self.prepare(image) for image in images]))
        return [
            decode(heat[i], size[i], offset[i], (image.shape[1], image.shape[0]), top_k=self.top_k,
                   min_score=self.min_score, max_copies=self.max_copies, copy_nms_iou=self.copy_nms_iou,
                   one_copy=self.one_copy)
            for i, image in enumerate(images)
        ]

    def detect(self, rgb: np.ndarray) -> Regions:
        """Regions of one (H, W, 3) uint8 RGB image: boxes in its pixels, best first."""
        return self.detect_batch([rgb])[0]


@cache
def load_detector(path: str | None = None, flip: bool = FLIP) -> Detector:
    """The detector at `path` (default: the one shipped in the package), loaded once per setting."""
    return Detector(SHIPPED if path is None else Path(path), flip=flip)
