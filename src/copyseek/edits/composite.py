"""DISC21's hard edits, which mix the image with other photos ("donors"): the copy pasted small
into another photo, another photo pasted over part of the copy, collages and blends.

Pillow directly rather than AugLy's `overlay_image`: that sizes the pasted image by its height
alone, so a very wide copy comes out 0 pixels wide or runs off the canvas.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from copyseek.edits.layout import Moved, shift
from copyseek.edits.params import color, scaled_to_area
from copyseek.edits.registry import Donors, register, to_rgb

GRIDS = ((1, 2), (2, 1), (1, 3), (3, 1), (2, 2), (2, 3), (3, 2), (3, 3))
"""Collage layouts as (rows, columns)."""


def _paste_at_random(
    canvas: Image.Image, piece: Image.Image, rng: np.random.Generator, opacity: float
) -> tuple[Image.Image, tuple[int, int]]:
    """A copy of `canvas` with `piece` (no larger than it) pasted at a random place, `opacity` 0..1,
    and that place (left, top)."""
    left = int(rng.integers(0, canvas.width - piece.width + 1))
    top = int(rng.integers(0, canvas.height - piece.height + 1))
    mask = None if opacity >= 1.0 else Image.new("L", piece.size, round(255 * opacity))
    result = canvas.copy()
    result.paste(piece, (left, top), mask)
    return result, (left, top)


def _fill(donor: Image.Image, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """An RGB donor resized and cropped (at a random place) to exactly `size`."""
    centering = tuple(float(c) for c in rng.uniform(0.0, 1.0, size=2))
    return ImageOps.fit(to_rgb(donor), size, Image.Resampling.BICUBIC, centering=centering)


def _donor(donors: Donors, rng: np.random.Generator) -> Image.Image:
    return to_rgb(donors[int(rng.integers(len(donors)))])


@register("paste_into", "composite", weight=2.5)
def paste_into(image: Image.Image, rng: np.random.Generator, strength: float, donors: Donors) -> Moved:
    """The image pasted into a donor photo, covering (0.55 - 0.2 * strength) x U(0.6, 1.4) of its
    area (21% to 49% at strength 1, 9% to 21% at 2). The donor is resized to the image's long side,
    so the result keeps about the image's resolution."""
    donor = _donor(donors, rng)
    side = max(image.size)
    canvas = donor.resize(scaled_to_area(donor.size, (side, side), 1.0))
    area = float(np.clip((0.55 - 0.2 * strength) * rng.uniform(0.6, 1.4), 0.03, 0.9))
    piece = image.resize(scaled_to_area(image.size, canvas.size, area))
    opacity = 1.0 if rng.random() < 0.8 else float(rng.uniform(0.6, 0.9))
    pasted, (left, top) = _paste_at_random(canvas, piece, rng, opacity)
    frame = (0.0, 0.0, float(pasted.width), float(pasted.height))  # the donor: a paste_over's copy looks like this
    return Moved(pasted, shift(left, top, piece.width / image.width, piece.height / image.height), alternatives=(frame,))


@register("paste_over", "composite", weight=1.5)
def paste_over(image: Image.Image, rng: np.random.Generator, strength: float, donors: Donors) -> Moved:
    """Part of a donor photo pasted over the image, covering (0.1 + 0.25 * strength) x U(0.7, 1.3)
    of its area (at most 60%), opacity 0.75 to 1."""
    donor = _donor(donors, rng)
    keep = rng.uniform(0.5, 1.0, size=2)
    window = _fill(donor, (max(1, round(donor.width * keep[0])), max(1, round(donor.height * keep[1]))), rng)
    area = float(np.clip((0.1 + 0.25 * strength) * rng.uniform(0.7, 1.3), 0.02, 0.6))
    piece = window.resize(scaled_to_area(window.size, image.size, area))
    pasted, (left, top) = _paste_at_random(image, piece, rng, float(rng.uniform(0.75, 1.0)))
    inset = (left, top, left + piece.width, top + piece.height)  # covers the copy, and looks like a paste_into's copy
    return Moved(pasted, overlays=(inset,), alternatives=(inset,))


@register("collage", "composite", weight=1.5)
def collage(image: Image.Image, rng: np.random.Generator, strength: float, donors: Donors) -> Moved:
    """A grid of the image and donor photos with optional gutters; up to 2 + 2.5 * strength cells
    (2 to 4 at strength 1). The collage's long side is about the image's."""
    grids = [grid for grid in GRIDS if grid[0] * grid[1] <= 2 + 2.5 * strength]
    rows, cols = grids[int(rng.integers(len(grids)))]
    factor = max(image.size) / max(cols * image.width, rows * image.height)
    cell = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    gutter = int(rng.integers(0, 2 + 0.02 * max(image.size))) if rng.random() < 0.5 else 0
    canvas = Image.new(
        "RGB", (cols * cell[0] + (cols + 1) * gutter, rows * cell[1] + (rows + 1) * gutter), color(rng)
    )
    copy_cell = int(rng.integers(rows * cols))
    donor_order = rng.permutation(len(donors))
    corners = [(gutter + col * (cell[0] + gutter), gutter + row * (cell[1] + gutter))
               for row, col in (divmod(index, cols) for index in range(rows * cols))]
    for index, corner in enumerate(corners):
        if index == copy_cell:
            tile = image.resize(cell)
        else:
            tile = _fill(donors[int(donor_order[index % len(donors)])], cell, rng)
        canvas.paste(tile, corner)
    left, top = corners[copy_cell]
    others = tuple((x, y, x + cell[0], y + cell[1]) for index, (x, y) in enumerate(corners) if index != copy_cell)
    return Moved(canvas, shift(left, top, cell[0] / image.width, cell[1] / image.height), alternatives=others)


@register("blend", "composite")
def blend(image: Image.Image, rng: np.random.Generator, strength: float, donors: Donors) -> Image.Image:
    """The image blended with a donor photo of the same size; the donor's weight is
    (0.15 + 0.25 * strength) x U(0.8, 1.2), at most 0.5 so the image stays the larger part."""
    alpha = float(np.clip((0.15 + 0.25 * strength) * rng.uniform(0.8, 1.2), 0.05, 0.5))
    return Image.blend(image, _fill(_donor(donors, rng), image.size, rng), alpha)
