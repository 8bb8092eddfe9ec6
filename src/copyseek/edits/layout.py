"""Where the copy and the overlays lie in an edited image, followed through a chain of edits.

An edit that moves the copied photo (crops, flips, pastes, frames) or covers part of it (emoji,
text, a pasted photo) returns a `Moved` instead of a bare image: the edited image, how it maps
points of its input to its output (`warp`), and the boxes it drew over the result. A chain folds
these into a `Layout`, the boxes a detector learns from, with no labelling:

    layout = Layout.whole(image.size)
    moved = edit_fn(image, ...)                        # Image or Moved
    layout = layout.after(moved)

Edits that keep the geometry (colour, blur, JPEG) return bare images: same size -> nothing moved;
a bare image of another size is a resize of the whole frame (scale, aspect).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

Warp = Callable[[np.ndarray], np.ndarray]
"""(n, 2) float x, y in input pixels -> (n, 2) x, y in output pixels."""

CHANGE_LEVEL = 12
"""Grey levels (any channel) above which a pixel counts as drawn over by an overlay."""


@dataclass(frozen=True)
class Moved:
    """An edit's result with its geometry: `warp` maps input points to output points (None: the
    whole frame is resized to the output's size); `overlays` are (x0, y0, x1, y1) output-pixel
    boxes of what the edit drew over the image; `alternatives` the boxes of other photos the edit
    placed that look as much like the copy as the copy does (a paste's other photo, a collage's
    other cells): which one is the copy depends only on the reference."""

    image: Image.Image
    warp: Warp | None = None
    overlays: tuple[tuple[float, float, float, float], ...] = ()
    alternatives: tuple[tuple[float, float, float, float], ...] = ()


def shift(dx: float, dy: float, sx: float = 1.0, sy: float = 1.0) -> Warp:
    """The warp x -> sx * x + dx, y -> sy * y + dy (a crop, a pad, a paste)."""
    return lambda points: points * [sx, sy] + [dx, dy]


def affine(matrix: np.ndarray) -> Warp:
    """The warp of a (2, 3) affine matrix acting on (x, y, 1)."""
    matrix = np.asarray(matrix, np.float64)
    return lambda points: points @ matrix[:, :2].T + matrix[:, 2]


def homography(matrix: np.ndarray) -> Warp:
    """The warp of a (3, 3) projective matrix acting on (x, y, 1)."""
    matrix = np.asarray(matrix, np.float64)

    def warp(points: np.ndarray) -> np.ndarray:
        mapped = np.hstack([points, np.ones((len(points), 1))]) @ matrix.T
        return mapped[:, :2] / np.where(np.abs(mapped[:, 2:]) < 1e-9, 1e-9, mapped[:, 2:])

    return warp


def changed_box(before: Image.Image, after: Image.Image) -> tuple[float, float, float, float] | None:
    """The (x0, y0, x1, y1) box of the pixels that differ by more than CHANGE_LEVEL between two
    images of the same size (what an overlay drew), or None when nothing changed."""
    diff = np.abs(np.asarray(after, np.int16) - np.asarray(before, np.int16)).max(axis=2) > CHANGE_LEVEL
    ys, xs = np.nonzero(diff)
    if len(xs) == 0:
        return None
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def _warp_boxes(boxes: np.ndarray, warp: Warp) -> np.ndarray:
    """(n, 4) boxes -> (n, 4) bounding boxes of their warped corners."""
    if len(boxes) == 0:
        return boxes
    x0, y0, x1, y1 = boxes.T
    corners = np.stack([np.stack([x0, y0], 1), np.stack([x1, y0], 1), np.stack([x1, y1], 1), np.stack([x0, y1], 1)], 1)
    mapped = warp(corners.reshape(-1, 2)).reshape(-1, 4, 2)
    return np.hstack([mapped.min(axis=1), mapped.max(axis=1)])


def _clip(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(n, 4) boxes clipped to a frame of `size` (width, height)."""
    return np.clip(np.asarray(boxes, np.float64).reshape(-1, 4), 0, [size[0], size[1], size[0], size[1]])


@dataclass(frozen=True)
class Layout:
    """Boxes in an image of `size` (width, height) pixels, as x0, y0, x1, y1 floats:
    copy (4,) the copied photo (an empty box when it left the frame), overlays (n, 4) what was
    drawn over it (emoji, text, pasted photos, caption bands), alternatives (m, 4) other photos
    that a detector cannot tell from the copy (Moved.alternatives)."""

    size: tuple[int, int]
    copy: np.ndarray
    overlays: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    alternatives: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))

    @classmethod
    def whole(cls, size: tuple[int, int]) -> Layout:
        """The layout of an unedited photo: the copy is the whole frame."""
        return cls(tuple(size), np.array([0.0, 0.0, size[0], size[1]]))

    def after(self, result: Image.Image | Moved) -> Layout:
        """The layout once `result` (an edit's output on the image this layout describes) is applied."""
        moved = result if isinstance(result, Moved) else Moved(result)
        size = moved.image.size
        warp = moved.warp
        if warp is None:
            warp = shift(0.0, 0.0, size[0] / self.size[0], size[1] / self.size[1])
        copy = _clip(_warp_boxes(self.copy[None], warp), size)[0]

        def carried(boxes: np.ndarray, added: tuple) -> np.ndarray:
            """Earlier boxes moved with the image, plus the edit's own; slivers under a pixel dropped."""
            boxes = np.vstack([_clip(_warp_boxes(boxes, warp), size), _clip(np.array(added, np.float64), size)])
            return boxes[(boxes[:, 2:] - boxes[:, :2] >= 1).all(axis=1)]

        return Layout(tuple(size), copy, carried(self.overlays, moved.overlays), carried(self.alternatives, moved.alternatives))

    def resized(self, size: tuple[int, int]) -> Layout:
        """The layout of the image resized to `size` (width, height)."""
        return self.after(Moved(Image.new("L", size)))

    def to_dict(self) -> dict:
        """JSON-ready: size, copy, overlays and (when there are any, so that layouts of edits without
        them read as before) alternatives, as rounded lists."""
        data = {
            "size": list(self.size),
            "copy": [round(float(v), 1) for v in self.copy],
            "overlays": [[round(float(v), 1) for v in box] for box in self.overlays],
        }
        if len(self.alternatives):
            data["alternatives"] = [[round(float(v), 1) for v in box] for box in self.alternatives]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Layout:
        def boxes(key: str) -> np.ndarray:
            return np.asarray(data.get(key, []), np.float64).reshape(-1, 4)

        return cls(tuple(data["size"]), np.asarray(data["copy"], np.float64), boxes("overlays"), boxes("alternatives"))
