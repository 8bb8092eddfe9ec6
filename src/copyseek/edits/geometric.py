"""Geometric edits: crops, flips, rotations, resizes, pads, skew and perspective.

AugLy does the work where its parameters are fractions it can apply; sizes are computed here in
whole pixels (>= 1) because AugLy's `int(side * fraction)` turns 1-pixel sides into 0.
"""

from __future__ import annotations

import augly.image.functional as F
import numpy as np
from PIL import Image

from copyseek.edits import compat
from copyseek.edits.layout import Moved, affine, homography, shift
from copyseek.edits.params import color, log_factor, pick
from copyseek.edits.registry import register


def _pixels(side: int, fraction: float) -> int:
    """round(side * fraction), at least one pixel."""
    return max(1, round(side * fraction))


@register("crop", "geometric", weight=3.0, early=True)
def crop(image: Image.Image, rng: np.random.Generator, strength: float) -> Moved:
    """Keep a random window; each side keeps about 1 - 0.4 * strength of its length (60% at
    strength 1, 20% at 2), jittered per side."""
    width, height = image.size
    keep = np.clip((1.0 - 0.4 * strength) * rng.uniform(0.8, 1.25, size=2), 0.1, 1.0)
    crop_w, crop_h = _pixels(width, keep[0]), _pixels(height, keep[1])
    left = int(rng.integers(0, width - crop_w + 1))
    top = int(rng.integers(0, height - crop_h + 1))
    return Moved(image.crop((left, top, left + crop_w, top + crop_h)), shift(-left, -top))


@register("rotate", "geometric", weight=1.5, early=True)
def rotate(image: Image.Image, rng: np.random.Generator, strength: float) -> Moved:
    """Rotate by up to +-30 * strength degrees and crop the largest upright rectangle inside (AugLy)."""
    degrees = float(rng.choice((-1.0, 1.0)) * 30.0 * strength)
    rotated = F.rotate(image, degrees=degrees)
    if rotated.width < 1 or rotated.height < 1:  # a few-pixel image has no inner rectangle left
        rotated = image.rotate(degrees, Image.Resampling.BICUBIC, expand=True)
    # Both the expanded rotation and AugLy's crop keep the centre: p' = R (p - c_in) + c_out, with
    # Pillow's counter-clockwise turn written in image (y down) coordinates.
    cos, sin = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    matrix = np.array([[cos, sin, 0.0], [-sin, cos, 0.0]])
    centre_in, centre_out = np.array(image.size) / 2, np.array(rotated.size) / 2
    matrix[:, 2] = centre_out - matrix[:, :2] @ centre_in
    return Moved(rotated, affine(matrix))


@register("rotate90", "geometric", weight=0.5)
def rotate90(image: Image.Image, rng: np.random.Generator, strength: float) -> Moved:
    """Rotate by 90, 180 or 270 degrees (lossless)."""
    turn = pick(rng, (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270))
    width, height = image.size
    matrix = {  # counter-clockwise turns: (x, y) -> (y, W - x), (W - x, H - y), (H - y, x)
        Image.Transpose.ROTATE_90: [[0, 1, 0], [-1, 0, width]],
        Image.Transpose.ROTATE_180: [[-1, 0, width], [0, -1, height]],
        Image.Transpose.ROTATE_270: [[0, -1, height], [1, 0, 0]],
    }[turn]
    return Moved(image.transpose(turn), affine(np.array(matrix, np.float64)))


@register("hflip", "geometric", weight=1.5)
def hflip(image: Image.Image, rng: np.random.Generator, strength: float) -> Moved:
    """Mirror left-right (AugLy)."""
    return Moved(F.hflip(image), shift(image.width, 0.0, -1.0, 1.0))


@register("vflip", "geometric", weight=0.5)
def vflip(image: Image.Image, rng: np.random.Generator, strength: float) -> Moved:
    """Mirror top-bottom (AugLy)."""
    return Moved(F.vflip(image), shift(0.0, image.height, 1.0, -1.0))


@register("scale", "geometric")
def scale(image: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    """Downscale by 1 / (1 + 2 * strength) (a third at strength 1), keeping the aspect ratio."""
    factor = 1.0 / (1.0 + 2.0 * strength)
    return F.resize(image, width=_pixels(image.width, factor), height=_pixels(image.height, factor))


@register("aspect", "geometric")
def aspect(image: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    """Change the aspect ratio by a factor exp(+-0.7 * strength) (x2 or /2 at strength 1),
    keeping the area."""
    stretch = np.sqrt(log_factor(rng, strength, 0.7))
    return F.resize(image, width=_pixels(image.width, stretch), height=_pixels(image.height, 1.0 / stretch))


@register("pad", "geometric")
def pad(image: Image.Image, rng: np.random.Generator, strength: float) -> Moved:
    """Add borders of up to 30% * strength of the width / height on each side (AugLy)."""
    w_factor, h_factor = 0.3 * strength * rng.uniform(0.2, 1.0, size=2)
    return _centred(image, F.pad(image, w_factor=float(w_factor), h_factor=float(h_factor), color=color(rng)))


@register("pad_square", "geometric", weight=0.5)
def pad_square(image: Image.Image, rng: np.random.Generator, strength: float) -> Moved:
    """Pad the short side to make the image square (AugLy)."""
    return _centred(image, F.pad_square(image, color=color(rng)))


def _centred(image: Image.Image, padded: Image.Image) -> Moved:
    """`padded`: `image` with equal borders on opposite sides (AugLy's pads)."""
    return Moved(padded, shift((padded.width - image.width) // 2, (padded.height - image.height) // 2))


@register("skew", "geometric", weight=0.5)
def skew(image: Image.Image, rng: np.random.Generator, strength: float) -> Moved:
    """Shear along x or y by a factor of up to +-0.4 * strength (AugLy)."""
    factor = float(rng.choice((-1.0, 1.0)) * 0.4 * strength)
    axis = int(rng.integers(2))
    # AugLy samples input x + s (y - H/2) (axis 0) or y + s (x - W/2) (axis 1): invert it.
    if axis == 0:
        matrix = [[1.0, -factor, factor * image.height / 2], [0.0, 1.0, 0.0]]
    else:
        matrix = [[1.0, 0.0, 0.0], [-factor, 1.0, factor * image.width / 2]]
    return Moved(F.skew(image, skew_factor=factor, axis=axis), affine(np.array(matrix)))


@register("perspective", "geometric")
def perspective(image: Image.Image, rng: np.random.Generator, strength: float) -> Moved:
    """Perspective warp, corners moved by N(0, sigma) with sigma = 6% * strength of the mean side."""
    sigma = 0.06 * strength * (image.width + image.height) / 2
    warped, to_moved = compat.perspective_transform(image, rng, sigma)
    return Moved(warped, homography(to_moved))
