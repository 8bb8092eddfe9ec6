"""Where the copied photo and the overlays lie in a query: boxes in, boxes out.

    from copyseek.detect import load_detector
    regions = load_detector().detect(rgb)          # (H, W, 3) uint8 -> Regions
    regions.boxes, regions.scores, regions.labels  # (n, 4) x0, y0, x1, y1 pixels; (n,); (n,) CLASSES

A single-stage anchor-free detector (CenterNet: a heat map of box centres per class, the box size
and the sub-cell offset at each centre) in plain torch, trained on synthetic queries whose boxes
the edits report themselves (`copyseek.edits.Layout`), exported to ONNX and run with onnxruntime.
Two ways to make it cheaper: Hands-on Guidance Distillation (detect/hgd.py) and the Selective
Convolutional Network (detect/scn.py). The fused pipeline's crop policy (match/fusion.py) consumes
the regions without knowing how they were found.
"""

from copyseek.detect.regions import CLASSES, Regions

__all__ = ["CLASSES", "Regions", "load_detector"]


def load_detector(path: str | None = None, flip: bool | None = None):
    """The shipped detector (or the ONNX model at `path`), loaded once per path; `flip`: run it on
    the image and its mirror too (None: runtime.FLIP)."""
    from copyseek.detect.runtime import FLIP
    from copyseek.detect.runtime import load_detector as load

    return load(path, FLIP if flip is None else flip)
