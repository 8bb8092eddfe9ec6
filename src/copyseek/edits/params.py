"""Edit parameters: random draws from a numpy Generator (never global random state), and sizes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")

Color = tuple[int, int, int]


def pick(rng: np.random.Generator, items: Sequence[T]) -> T:
    """One item, uniformly."""
    return items[int(rng.integers(len(items)))]


def log_factor(rng: np.random.Generator, strength: float, max_log: float) -> float:
    """A multiplicative factor exp(+-strength * max_log), up or down with equal chance
    (so 1.0 at strength 0; strength 1 gives e**max_log or its inverse)."""
    return float(np.exp(rng.choice((-1.0, 1.0)) * strength * max_log))


def color(rng: np.random.Generator) -> Color:
    """Black, white or a random colour (pads and frames are mostly black or white)."""
    choice = rng.random()
    if choice < 0.35:
        return (0, 0, 0)
    if choice < 0.7:
        return (255, 255, 255)
    return tuple(int(c) for c in rng.integers(0, 256, size=3))


def position(rng: np.random.Generator, fraction: float) -> float:
    """Where an item spanning `fraction` (0..1) of a side can start, as a fraction of that side."""
    return float(rng.uniform(0.0, max(0.0, 1.0 - fraction)))


def scaled_to_area(size: tuple[int, int], box: tuple[int, int], area_fraction: float) -> tuple[int, int]:
    """(width, height) in pixels (>= 1) of an image of `size` scaled, aspect kept, to cover
    `area_fraction` of the area of `box` while fitting inside it."""
    width, height = size
    box_w, box_h = box
    factor = min(math.sqrt(area_fraction * box_w * box_h / (width * height)), box_w / width, box_h / height)
    return max(1, round(width * factor)), max(1, round(height * factor))
