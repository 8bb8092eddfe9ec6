"""Training and test images for the detector, labelled by the edits themselves.

`SyntheticQueries` makes queries the way the benchmark builder does (random DISC21-style edit
chains, other photos as donors), from any photos (held-out ones for training): each sample is the
edited image squashed to S x S and its boxes (`copyseek.edits.Layout`: the copy, the overlays).
`benchmark_queries` reads a built benchmark's queries and their `layouts.json`, for testing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from copyseek.detect.regions import CLASSES
from copyseek.errors import CopyseekError

MIN_BOX = 2.0
"""Boxes narrower than this many input pixels are not targets (an emoji cut to a sliver)."""


@dataclass(frozen=True)
class Sample:
    """image (S, S, 3) uint8; boxes (n, 4) x0, y0, x1, y1 in its pixels; labels (n,) CLASSES indices;
    alternatives (m, 4): other photos that could be the copy as far as the image shows (Layout)."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    alternatives: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))

    def flipped(self) -> Sample:
        """The mirror image with its boxes mirrored."""
        width = self.image.shape[1]

        def mirrored(boxes: np.ndarray) -> np.ndarray:
            out = boxes.copy()
            out[:, [0, 2]] = width - boxes[:, [2, 0]]
            return out

        return Sample(self.image[:, ::-1].copy(), mirrored(self.boxes), self.labels, mirrored(self.alternatives))


def layout_boxes(layout, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A Layout (or its dict) rescaled to an image of `size` -> (boxes (n, 4), labels (n,))."""
    from copyseek.edits.layout import Layout

    layout = Layout.from_dict(layout) if isinstance(layout, dict) else layout
    layout = layout.resized(size)
    boxes = np.vstack([layout.copy[None], layout.overlays]).astype(np.float32)
    labels = np.array([CLASSES.index("copy")] + [CLASSES.index("overlay")] * len(layout.overlays), np.int64)
    keep = _wide_enough(boxes)
    return boxes[keep], labels[keep]


def layout_alternatives(layout, size: tuple[int, int]) -> np.ndarray:
    """A Layout's (or its dict's) alternatives rescaled to an image of `size` -> (m, 4)."""
    from copyseek.edits.layout import Layout

    layout = Layout.from_dict(layout) if isinstance(layout, dict) else layout
    boxes = layout.resized(size).alternatives.astype(np.float32)
    return boxes[_wide_enough(boxes)]


def _wide_enough(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2:] - boxes[:, :2] >= MIN_BOX).all(axis=1)


def load_photos(paths: Sequence[str | Path], max_side: int) -> list[Image.Image]:
    """RGB photos, each shrunk to at most `max_side` pixels (edits are relative to the size)."""
    from copyseek.errors import ImageSkip
    from copyseek.io.images import ImageFile, read_image

    photos = []
    for path in map(Path, paths):
        try:
            photo = Image.fromarray(read_image(ImageFile(path.stem, path), min_side=max_side).pixels)
        except ImageSkip:  # an unreadable photo is left out, as the benchmark builder does
            continue
        photo.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
        photos.append(photo)
    if len(photos) < 2:
        raise CopyseekError(f"need at least 2 readable photos to make training queries, got {len(photos)}")
    return photos


class SyntheticQueries:
    """Unlimited labelled queries from photos: `sample(rng)` edits a random photo with a random
    chain at `severity` drawn from `severities`, with up to 4 other photos as donors."""

    def __init__(self, photos: Sequence[Image.Image], input_size: int, severities: tuple[float, float] = (0.8, 2.0)):
        if len(photos) < 2:
            raise CopyseekError("need at least 2 photos (one to copy, one donor)")
        self.photos = list(photos)
        self.input_size = int(input_size)
        self.severities = severities

    def sample(self, rng: np.random.Generator) -> Sample:
        from copyseek.edits import random_edits_with_layout

        i = int(rng.integers(len(self.photos)))
        others = [j for j in rng.permutation(len(self.photos))[:5].tolist() if j != i][:4]
        severity = float(rng.uniform(*self.severities))
        edited, _, layout = random_edits_with_layout(
            self.photos[i], rng, severity=severity, donors=[self.photos[j] for j in others]
        )
        side = self.input_size
        boxes, labels = layout_boxes(layout, (side, side))
        image = np.asarray(edited.resize((side, side), Image.Resampling.BILINEAR))
        return Sample(image, boxes, labels, layout_alternatives(layout, (side, side)))

    def pool(self, n: int, rng: np.random.Generator, progress: bool = False) -> list[Sample]:
        """n samples made once (training cycles through them, mirrored at random)."""
        from copyseek.progress import progress_bar

        samples = []
        with progress_bar(n, "detector data", disable=not progress) as bar:
            for _ in range(n):
                samples.append(self.sample(rng))
                bar.update()
        return samples


def benchmark_queries(bench: str | Path) -> list[tuple[Path, dict[str, np.ndarray]]]:
    """A built benchmark's queries with their ground-truth boxes in query pixels:
    [(path, {class name: (m, 4) boxes})], in query id order (needs its layouts.json)."""
    bench = Path(bench)
    layouts_path = bench / "layouts.json"
    if not layouts_path.is_file():
        raise CopyseekError(f"{bench} has no layouts.json: rebuild it with this version's `copyseek bench build`")
    layouts = json.loads(layouts_path.read_text(encoding="utf-8"))
    out = []
    for query_id in sorted(layouts):
        path = bench / "queries" / f"{query_id}.jpg"
        boxes, labels = layout_boxes(layouts[query_id], tuple(layouts[query_id]["size"]))
        out.append((path, {name: boxes[labels == c] for c, name in enumerate(CLASSES)}))
    return out
