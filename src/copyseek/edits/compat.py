"""AugLy 1.0's `meme_format` and `perspective_transform`, which fail on current Pillow / NumPy
(`FreeTypeFont.getsize_multiline` was removed in Pillow 10, `np.float` in NumPy 1.24).

Same behaviour as AugLy's, with two changes: sizes are relative to the image (AugLy's are in
pixels) and the perspective's random corners come from the caller's Generator.
"""

from __future__ import annotations

import numpy as np
from augly import utils as augly_utils
from PIL import Image, ImageDraw, ImageFont

from copyseek.edits.params import Color

MEME_FONT = augly_utils.MEME_DEFAULT_FONT
MIN_CAPTION = 11  # pixels; AugLy requires a caption taller than 10


def _fit_font(
    draw: ImageDraw.ImageDraw, text: str, font_path: str, width: int, height: int
) -> ImageFont.FreeTypeFont:
    """The largest font (in steps of ~10%) whose rendering of `text` fits in width x height pixels."""
    size = max(1, height)
    while True:
        font = ImageFont.truetype(font_path, size)
        left, top, right, bottom = draw.multiline_textbbox((0, 0), text, font=font, align="center")
        if (right - left <= width and bottom - top <= height) or size == 1:
            return font
        size = max(1, min(size - 1, int(size * 0.9)))


def meme_format(
    image: Image.Image,
    text: str,
    *,
    caption_height: int,
    font_path: str = MEME_FONT,
    text_color: Color = (0, 0, 0),
    background: Color = (255, 255, 255),
) -> Image.Image:
    """A meme: `text` centred in a caption band of `caption_height` pixels above the RGB image.

    Returns an RGB image of size (W, H + caption_height); the text shrinks until it fits the band
    with a 5-pixel margin (down to 1 pt on tiny images, where it may be clipped).
    """
    caption_height = max(MIN_CAPTION, int(caption_height))
    width, height = image.size
    meme = Image.new("RGB", (width, height + caption_height), background)
    meme.paste(image, (0, caption_height))
    draw = ImageDraw.Draw(meme)
    font = _fit_font(draw, text, font_path, width - 10, caption_height - 10)
    draw.multiline_text(
        (width / 2, caption_height / 2), text, font=font, fill=text_color, anchor="mm", align="center"
    )
    return meme


def _perspective_coeffs(output_corners: np.ndarray, input_corners: np.ndarray) -> np.ndarray:
    """The 8 coefficients Pillow's PERSPECTIVE transform takes: they map output pixel (x, y) to
    input ((a x + b y + c) / (g x + h y + 1), (d x + e y + f) / (g x + h y + 1)).

    output_corners, input_corners: (4, 2) float, matching corners in pixels.
    """
    rows = []
    for (x, y), (u, v) in zip(output_corners, input_corners):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    # Least squares rather than solve: near-degenerate corners (1-pixel images) stay finite.
    coeffs, *_ = np.linalg.lstsq(np.asarray(rows, np.float64), input_corners.reshape(8), rcond=None)
    return coeffs


def perspective_transform(
    image: Image.Image, rng: np.random.Generator, sigma: float
) -> tuple[Image.Image, np.ndarray]:
    """Move each corner of the RGB image by N(0, sigma) pixels in x and y and warp (bicubic) the
    image onto the moved corners, keeping its size; uncovered areas are black.

    Returns the warped image and the (3, 3) homography taking input pixels to output pixels."""
    width, height = image.size
    corners = np.array([(0, 0), (width, 0), (width, height), (0, height)], np.float64)
    moved = corners + rng.normal(0.0, sigma, size=corners.shape)
    coeffs = _perspective_coeffs(moved, corners)
    warped = image.transform((width, height), Image.Transform.PERSPECTIVE, tuple(coeffs), Image.Resampling.BICUBIC)
    return warped, np.append(_perspective_coeffs(corners, moved), 1.0).reshape(3, 3)
