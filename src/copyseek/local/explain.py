"""A picture of one match: query and reference side by side, inlier correspondences, the copied
region outlined in the query, and each branch's score printed above.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from copyseek.errors import CopyseekError

HEIGHT = 480
"""Pixels: both images are drawn at this height."""
BANNER = 40
GAP = 12
MAX_LINES = 200
"""Inlier lines drawn at most (evenly sampled), so dense matches stay readable."""


def _fit_height(rgb: np.ndarray, height: int) -> tuple[np.ndarray, float]:
    """(H, W, 3) uint8 -> (height, w, 3) uint8 and the scale factor."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise CopyseekError(f"draw_pair needs (H, W, 3) uint8 RGB images, got {rgb.dtype} {rgb.shape}")
    scale = height / rgb.shape[0]
    width = max(1, round(rgb.shape[1] * scale))
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR), scale


def _score_text(scores: dict[str, float]) -> str:
    return "   ".join(f"{name} {value:.4g}" for name, value in scores.items()) or "no scores"


def draw_pair(
    query_rgb: np.ndarray,
    reference_rgb: np.ndarray,
    pairs: np.ndarray | None,
    region: np.ndarray | None,
    scores: dict[str, float],
    path: str | Path,
) -> Path:
    """Write a PNG (or any format Pillow knows from the suffix) of the match and return its path.

    pairs:  (n, 4) inlier correspondences xq, yq, xr, yr in pixels of the two images (as in
            Verification.pairs); None or empty draws no lines.
    region: (4,) x0, y0, x1, y1 of the copied region in query pixels; None or all zeros draws none.
    scores: branch name -> score, printed in the banner in this order (e.g. {"global": 0.71,
            "local": 38, "fused": 0.93}).
    """
    query, q_scale = _fit_height(query_rgb, HEIGHT)
    reference, r_scale = _fit_height(reference_rgb, HEIGHT)
    offset = query.shape[1] + GAP
    canvas = np.full((BANNER + HEIGHT, offset + reference.shape[1], 3), 255, np.uint8)
    canvas[BANNER:, : query.shape[1]] = query
    canvas[BANNER:, offset:] = reference
    if pairs is not None and len(pairs):
        pairs = np.asarray(pairs, np.float64).reshape(-1, 4)
        shown = pairs[np.linspace(0, len(pairs) - 1, min(len(pairs), MAX_LINES)).astype(int)]
        starts = shown[:, :2] * q_scale + [0, BANNER]
        ends = shown[:, 2:] * r_scale + [offset, BANNER]
        for start, end in zip(np.round(starts).astype(int), np.round(ends).astype(int)):
            cv2.line(canvas, tuple(start), tuple(end), (0, 200, 0), 1, cv2.LINE_AA)
            cv2.circle(canvas, tuple(start), 3, (0, 120, 255), -1, cv2.LINE_AA)
            cv2.circle(canvas, tuple(end), 3, (0, 120, 255), -1, cv2.LINE_AA)
    if region is not None and np.any(region):
        x0, y0, x1, y1 = np.round(np.asarray(region, np.float64) * q_scale + [0, BANNER, 0, BANNER]).astype(int)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), (255, 40, 40), 3)
    text = _score_text(scores)
    cv2.putText(canvas, text, (10, BANNER - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 2, cv2.LINE_AA)
    path = Path(path)
    try:
        Image.fromarray(canvas).save(path)
    except (OSError, ValueError) as exc:
        raise CopyseekError(f"cannot write {path}: {exc}") from exc
    return path
