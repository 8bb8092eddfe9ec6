"""Procedural images, for the demo, tests and benchmarks (no image files needed): photo-like ones, and
flat graphics (logos, banners, slides) that have little texture for local features."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def synthetic_photo(rng: np.random.Generator, width: int = 480, height: int = 360) -> Image.Image:
    """A random RGB image with photo-like statistics: a smooth colour field, textured regions,
    shapes with soft edges and a few lines, all different from one seed to the next."""
    field = rng.random((rng.integers(2, 6), rng.integers(2, 6), 3)) * 255
    image = Image.fromarray(field.astype(np.uint8)).resize((width, height), Image.BICUBIC)
    texture = rng.normal(0, rng.uniform(4, 20), (height // 4 + 1, width // 4 + 1, 3))
    texture = np.asarray(Image.fromarray(np.clip(texture + 128, 0, 255).astype(np.uint8)).resize((width, height), Image.BILINEAR))
    pixels = np.clip(np.asarray(image, np.float32) + texture.astype(np.float32) - 128, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    scale = min(width, height)
    for _ in range(rng.integers(6, 16)):
        x, y = rng.integers(0, width), rng.integers(0, height)
        w, h = rng.integers(max(1, scale // 16), max(2, scale // 3), size=2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(0, 4)
        if kind == 0:
            draw.ellipse((x, y, x + w, y + h), fill=colour)
        elif kind == 1:
            draw.rectangle((x, y, x + w, y + h), fill=colour)
        elif kind == 2:
            points = [(int(x + rng.integers(-w, w)), int(y + rng.integers(-h, h))) for _ in range(rng.integers(3, 7))]
            draw.polygon(points, fill=colour)
        else:
            draw.line((x, y, x + w, y - h), fill=colour, width=int(rng.integers(2, 8)))
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))


def synthetic_graphic(rng: np.random.Generator, width: int = 320, height: int = 240) -> Image.Image:
    """A random flat graphic: one background colour, 2-6 hard-edged shapes of flat colour and a line
    of text; what logos, banners and slides look like, and where SIFT finds few keypoints."""
    image = Image.new("RGB", (width, height), tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    scale = min(width, height)
    for _ in range(rng.integers(2, 7)):
        x, y = int(rng.integers(0, width * 3 // 4)), int(rng.integers(0, height * 3 // 4))
        w, h = (int(v) for v in rng.integers(scale // 8, scale // 2, size=2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.integers(0, 2):
            draw.ellipse((x, y, x + w, y + h), fill=colour)
        else:
            draw.rectangle((x, y, x + w, y + h), fill=colour)
    letters = "".join(chr(int(c)) for c in rng.integers(65, 91, size=int(rng.integers(4, 12))))
    draw.text((int(rng.integers(4, width // 3)), int(rng.integers(4, height - 16))), letters,
              fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return image
