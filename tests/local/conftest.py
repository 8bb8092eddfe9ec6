"""Local-branch fixtures: procedural photos and copies edited with OpenCV (no files from ../shared)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from copyseek.local import LocalBranch, LocalSearcher
from copyseek.synthetic import synthetic_photo

N_REFERENCES = 40


def photo(seed: int, width: int = 512, height: int = 384) -> np.ndarray:
    """A procedural photo with random words written over it, so that every part has keypoints."""
    rng = np.random.default_rng(seed)
    image = np.array(synthetic_photo(rng, width, height))
    for _ in range(12):
        word = "".join(chr(c) for c in rng.integers(65, 91, int(rng.integers(3, 7))))
        origin = (int(rng.integers(-20, width - 40)), int(rng.integers(20, height + 10)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.putText(image, word, origin, cv2.FONT_HERSHEY_SIMPLEX, float(rng.uniform(0.5, 1.5)), colour, 2, cv2.LINE_AA)
    return image


def jpeg(image: np.ndarray, quality: int = 70) -> np.ndarray:
    _, data = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1].copy()


def paste(piece: np.ndarray, background: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """`piece` resized into `box` (x0, y0, x1, y1) of a copy of `background`."""
    x0, y0, x1, y1 = box
    out = background.copy()
    out[y0:y1, x0:x1] = cv2.resize(piece, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    return out


def crop(image: np.ndarray, box: tuple[int, int, int, int], scale: float = 1.0) -> np.ndarray:
    x0, y0, x1, y1 = box
    part = image[y0:y1, x0:x1]
    return cv2.resize(part, (round(part.shape[1] * scale), round(part.shape[0] * scale)), interpolation=cv2.INTER_AREA)


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union


@pytest.fixture(scope="session")
def branch() -> LocalBranch:
    return LocalBranch(threads=2)


@pytest.fixture(scope="session")
def references() -> list[np.ndarray]:
    return [photo(1000 + i) for i in range(N_REFERENCES)]


@pytest.fixture(scope="session")
def reference_features(branch, references):
    return branch.extract(references)


@pytest.fixture(scope="session")
def searcher(branch, reference_features) -> LocalSearcher:
    searcher = branch.new_searcher()
    searcher.add(branch.pack(reference_features))
    return searcher
