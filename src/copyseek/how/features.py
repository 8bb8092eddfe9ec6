"""HOW local descriptors of an image: a HOW network exported to ONNX (`copyseek.learn.how`), run
at several scales, the top-n positions by attention kept with their positions.

The ONNX model takes one (1, H, W, 3) uint8 RGB image of any size and returns `local`
(1, dim, h, w) unit descriptors and `attention` (1, h, w); its sidecar (model.json) gives dim and
stride. Running it needs only onnxruntime, not torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from copyseek.errors import CopyseekError
from copyseek.io.onnx import cpu_session


@dataclass(frozen=True)
class HowParams:
    """max_side: the image is resized so that its longer side is max_side x scale, for each scale.
    scales:   the scales (HOW's 2 ... 0.25; the default keeps 2-core CPUs fast).
    features: local descriptors kept per image, the highest attention first (HOW's n).
    """

    max_side: int = 512
    scales: tuple[float, ...] = (1.0, 0.707, 0.5)
    features: int = 300

    def __post_init__(self) -> None:
        if not 32 <= self.max_side <= 4096:
            raise CopyseekError(f"HOW max_side must be between 32 and 4096 pixels, got {self.max_side}")
        if not self.scales or any(not 0.1 <= s <= 4.0 for s in self.scales):
            raise CopyseekError(f"HOW scales must be a non-empty list of numbers in [0.1, 4], got {self.scales}")
        if self.features < 1:
            raise CopyseekError(f"HOW features must be positive, got {self.features}")

    @classmethod
    def parse_scales(cls, text: str | list | tuple) -> tuple[float, ...]:
        """'1,0.707,0.5' or a list -> a tuple of floats."""
        try:
            items = text.split(",") if isinstance(text, str) else list(text)
            return tuple(float(s) for s in items)
        except ValueError:
            raise CopyseekError(f"HOW scales must be numbers separated by commas, got {text!r}") from None


class HowExtractor:
    """Top-n multi-scale HOW descriptors of RGB images with an exported HOW model.

    __call__(image (H, W, 3) uint8, params) -> (desc (n, dim) float32 unit rows, xy (n, 2) float32
    centres of their cells in the image's pixels, attention (n,) float32), n <= params.features,
    highest attention first.
    """

    def __init__(self, path: str | Path, threads: int = 1):
        path = Path(path)
        sidecar = path.with_suffix(".json")
        if not path.is_file() or not sidecar.is_file():
            raise CopyseekError(f"HOW model {path} or its sidecar {sidecar.name} is missing (export one with copyseek train)")
        meta = json.loads(sidecar.read_text())
        if meta.get("kind") != "how":
            raise CopyseekError(f"{path} is not a HOW model (its sidecar does not say kind 'how')")
        self.path, self.dim, self.stride = path, int(meta["dim"]), int(meta["stride"])
        self.session = cpu_session(path, threads, what="HOW model")

    def maps(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One scale: (H, W, 3) uint8 -> (local (dim, h, w), attention (h, w))."""
        local, attention = self.session.run(None, {"image": np.ascontiguousarray(image[None])})
        return local[0], attention[0]

    def __call__(self, image: np.ndarray, params: HowParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return multiscale_top(self.maps, image, params, self.stride)


Maps = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""(H, W, 3) uint8 image -> (descriptors (dim, h, w), attention (h, w)) at one scale."""


def multiscale_top(maps: Maps, image: np.ndarray, params: HowParams, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The image resized for each of params.scales (longer side max_side x scale, bilinear), `maps`
    run on each, and the params.features positions of highest attention over all scales:
    (desc (n, dim) float32, xy (n, 2) float32 cell centres in the image's pixels, attention (n,))."""
    height, width = image.shape[:2]
    descs, xys, attentions = [], [], []
    for scale in params.scales:
        factor = params.max_side * scale / max(height, width)
        size = (max(stride, round(width * factor)), max(stride, round(height * factor)))
        resized = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
        local, attention = maps(resized)
        h, w = attention.shape
        rows, cols = np.mgrid[0:h, 0:w]
        descs.append(local.reshape(local.shape[0], -1).T)
        xys.append(np.stack([(cols.ravel() + 0.5) * width / w, (rows.ravel() + 0.5) * height / h], axis=1))
        attentions.append(attention.ravel())
    attention = np.concatenate(attentions)
    top = np.argsort(-attention, kind="stable")[: params.features]
    return (np.concatenate(descs)[top].astype(np.float32), np.concatenate(xys)[top].astype(np.float32),
            attention[top].astype(np.float32))


def describe_photos(maps: Maps, paths: list[Path], params: HowParams, stride: int, *,
                    progress: bool = False) -> np.ndarray:
    """The top-n descriptors of every photo in `paths`, stacked: (sum of n, dim) float32 (to learn
    a whitening or a codebook on photos that will not be indexed)."""
    from copyseek.io.images import load_rgb
    from copyseek.progress import progress_bar

    out = []
    with progress_bar(len(paths), "describing photos", disable=not progress) as bar:
        for path in paths:
            out.append(multiscale_top(maps, load_rgb(path, params.max_side), params, stride)[0])
            bar.update(1)
    return np.concatenate(out)
