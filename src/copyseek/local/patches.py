"""Oriented square patches cut around keypoint frames, for the patch describers (MKD, KDP).

A patch of side `size` pixels covers `support` x the frame's size in the image, rotated by the
frame's angle: patch pixel (u, v) (u right, v down, in [-1, 1] at the patch's edges) samples the
image at xy + support * size / 2 * R(angle) (u, v). Large supports are sampled from a Gaussian
pyramid level whose pixels are at most twice smaller than the patch's, so that shrinking a frame to
`size` pixels does not alias.

Mirroring: the frame of a keypoint in the horizontally mirrored image (x -> W - 1 - x, angle ->
180 - angle, which is what SIFT detects there) gives the patch with its rows reversed, so mirrored
descriptors come from `patches[:, ::-1]` without a second extraction.
"""

from __future__ import annotations

import cv2
import numpy as np

from copyseek.errors import CopyseekError
from copyseek.local.features import Frames

PATCH_SIZE = 32
MAX_LEVELS = 6
REMAP_ROWS = 32000
"""OpenCV's remap maps must have fewer than 32768 rows: patches are sampled in groups below it."""


def pyramid(gray: np.ndarray, levels: int) -> list[np.ndarray]:
    """[gray, gray/2, gray/4, ...] as float32, `levels` long at most (stops at 8 pixels)."""
    out = [gray.astype(np.float32)]
    while len(out) < levels and min(out[-1].shape) >= 16:
        out.append(cv2.pyrDown(out[-1]))
    return out


def extract_patches(gray: np.ndarray, frames: Frames, support: float, size: int = PATCH_SIZE) -> np.ndarray:
    """(H, W) uint8 or float gray image, n frames -> (n, size, size) float32 patches, values 0..1.

    support: patch side in units of the frame's size (SIFT's own descriptor spans about 6).
    """
    if gray.ndim != 2:
        raise CopyseekError(f"patches need a (H, W) grayscale image, got shape {gray.shape}")
    if not support > 0:
        raise CopyseekError(f"patch support must be positive, got {support}")
    n = len(frames)
    out = np.zeros((n, size, size), np.float32)
    if n == 0:
        return out
    side = support * frames.size.astype(np.float64)  # patch side in image pixels
    levels = np.clip(np.floor(np.log2(np.maximum(side / size, 1.0))), 0, MAX_LEVELS - 1).astype(int)
    images = pyramid(gray, int(levels.max()) + 1)
    levels = np.minimum(levels, len(images) - 1)
    grid = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    u, v = np.meshgrid(grid, grid)  # (size, size): u varies along columns, v along rows
    angle = np.deg2rad(frames.angle.astype(np.float64))
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    half = (side / 2.0)[:, None, None]
    x = frames.xy[:, 0, None, None] + half * (cos * u - sin * v)
    y = frames.xy[:, 1, None, None] + half * (sin * u + cos * v)
    per_call = max(1, REMAP_ROWS // size)
    for level in np.unique(levels):
        image = images[level]
        # Pyramid pixel centres: level pixel i covers original pixels 2**level * i .. (+ 2**level - 1).
        scale = 2.0**level
        chosen = np.flatnonzero(levels == level)
        for start in range(0, len(chosen), per_call):
            ids = chosen[start : start + per_call]
            map_x = ((x[ids] + 0.5) / scale - 0.5).astype(np.float32).reshape(-1, size)
            map_y = ((y[ids] + 0.5) / scale - 0.5).astype(np.float32).reshape(-1, size)
            sampled = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
            out[ids] = sampled.reshape(len(ids), size, size)
    if gray.dtype == np.uint8:
        out /= 255.0
    return out


def mirror_frames(frames: Frames, width: int) -> Frames:
    """The frames of the same keypoints in the horizontally mirrored image of `width` pixels."""
    xy = frames.xy.copy()
    xy[:, 0] = width - 1 - xy[:, 0]
    return Frames(xy, frames.size.copy(), ((180.0 - frames.angle) % 360.0).astype(np.float32))
