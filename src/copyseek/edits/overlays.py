"""Overlay edits: emoji, text, stripes, meme captions and screenshot frames.

Emoji, fonts, caption words and screenshot templates are the assets AugLy ships (nothing is
downloaded); every choice among them is drawn from the caller's Generator, never left to AugLy's
defaults (its default text is drawn from Python's global `random` at import time).
"""

from __future__ import annotations

import json
import pickle
from functools import cache
from pathlib import Path

import augly.image.functional as F
import numpy as np
from augly import utils as augly_utils
from PIL import Image

from copyseek.edits import compat
from copyseek.edits.layout import Moved, changed_box, shift
from copyseek.edits.params import color, pick, position, scaled_to_area
from copyseek.edits.registry import register

LINE_TYPES = tuple(augly_utils.SUPPORTED_LINE_TYPES)


@cache
def emoji_paths() -> tuple[str, ...]:
    """AugLy's Twemoji PNGs, sorted."""
    return tuple(sorted(str(p) for p in Path(augly_utils.EMOJI_DIR).rglob("*.png")))


@cache
def font_paths() -> tuple[str, ...]:
    """AugLy's fonts that come with the character table (.pkl) `overlay_text` needs, sorted."""
    fonts = sorted(Path(augly_utils.FONTS_DIR).glob("*.ttf"))
    return tuple(str(f) for f in fonts if f.with_suffix(".pkl").exists())


@cache
def printable_indices(font_path: str) -> np.ndarray:
    """Positions, in the font's character table, of the characters that are printable: AugLy's
    tables include line breaks (CR, U+2029) that make Pillow's text layout fail."""
    with open(Path(font_path).with_suffix(".pkl"), "rb") as handle:
        codes = pickle.load(handle)
    return np.array([i for i, code in enumerate(codes) if chr(code).isprintable()], dtype=np.int64)


@cache
def caption_words() -> tuple[str, ...]:
    """English words for meme captions (the keys of AugLy's misspelling dictionary), sorted."""
    with open(augly_utils.MISSPELLING_DICTIONARY_PATH, encoding="utf-8") as handle:
        return tuple(sorted(word for word in json.load(handle) if word.isalpha()))


def _opacity(rng: np.random.Generator, strength: float) -> float:
    """Mostly opaque; more see-through at low strength, never below 0.4."""
    return float(np.clip(rng.uniform(0.5, 1.0) + 0.25 * strength, 0.4, 1.0))


@register("emoji", "overlay", weight=1.5)
def emoji(image: Image.Image, rng: np.random.Generator, strength: float) -> Moved:
    """1 + Poisson(strength) emoji (at most 4), each 10% to 20% + 20% * strength of the height."""
    boxes = []
    for _ in range(min(4, 1 + int(rng.poisson(strength)))):
        size = float(rng.uniform(0.1, 0.2 + 0.2 * strength))
        before = image
        image = F.overlay_emoji(
            image,
            emoji_path=pick(rng, emoji_paths()),
            opacity=_opacity(rng, strength),
            emoji_size=min(size, 1.0),
            x_pos=position(rng, size * image.height / image.width),
            y_pos=position(rng, size),
        ).convert("RGB")
        boxes.append(changed_box(before, image))
    return Moved(image, overlays=tuple(box for box in boxes if box is not None))


@register("text", "overlay", weight=2.0)
def text(image: Image.Image, rng: np.random.Generator, strength: float) -> Moved:
    """1 + Poisson(strength) lines (at most 4) of 4 to 20 random characters of a random AugLy font,
    8% to 12% + 10% * strength of the short side high, in a random colour."""
    n_lines = min(4, 1 + int(rng.poisson(strength)))
    font = pick(rng, font_paths())
    # AugLy's text is indices into the font's character table; it checks for Python ints.
    lines = [
        [int(i) for i in rng.choice(printable_indices(font), size=int(rng.integers(4, 21)))]
        for _ in range(n_lines)
    ]
    height = float(rng.uniform(0.08, 0.12 + 0.1 * strength))
    height = min(1.0, max(height, 1.0 / min(image.size)))  # AugLy needs a font of >= 1 pixel
    written = F.overlay_text(
        image,
        text=lines,
        font_file=font,
        font_size=height,
        opacity=_opacity(rng, strength),
        color=tuple(int(c) for c in rng.integers(0, 256, size=3)),
        x_pos=float(rng.uniform(0.0, 0.6)),
        y_pos=position(rng, height * n_lines),
    ).convert("RGB")
    box = changed_box(image, written)
    return Moved(written, overlays=() if box is None else (box,))


@register("stripes", "overlay", weight=0.5)
def stripes(image: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    """Solid, dashed or dotted stripes at a random angle, denser and more opaque with strength (AugLy)."""
    return F.overlay_stripes(
        image,
        line_width=float(rng.uniform(0.1, 0.5)),
        line_color=color(rng),
        line_angle=float(rng.uniform(-90.0, 90.0)),
        line_density=float(np.clip(rng.uniform(0.2, 0.5) + 0.2 * strength, 0.0, 0.9)),
        line_type=pick(rng, LINE_TYPES),
        line_opacity=float(np.clip(rng.uniform(0.3, 0.6) + 0.2 * strength, 0.0, 1.0)),
    )


@register("meme", "overlay")
def meme(image: Image.Image, rng: np.random.Generator, strength: float) -> Moved:
    """A caption band of 1 to 5 upper-case words, 15% to 35% of the height, above the image
    (mostly black on white, else white on black)."""
    words = [pick(rng, caption_words()).upper() for _ in range(int(rng.integers(1, 6)))]
    caption = " ".join(words[:3]) + ("\n" + " ".join(words[3:]) if len(words) > 3 else "")
    dark_on_light = rng.random() < 0.8
    framed = compat.meme_format(
        image,
        caption,
        caption_height=round(image.height * rng.uniform(0.15, 0.35)),
        text_color=(0, 0, 0) if dark_on_light else (255, 255, 255),
        background=(255, 255, 255) if dark_on_light else (0, 0, 0),
    )
    band = framed.height - image.height  # the caption band above the image is an overlay
    return Moved(framed, shift(0.0, band), overlays=((0.0, 0.0, float(framed.width), float(band)),))


@cache
def screenshot_boxes() -> dict[str, tuple[int, int, int, int]]:
    """AugLy's screenshot templates -> where the image goes: (left, top, right, bottom) pixels."""
    with open(augly_utils.BBOXES_PATH, encoding="utf-8") as handle:
        return {name: tuple(box) for name, box in json.load(handle).items()}


@register("screenshot", "overlay", frames=True)
def screenshot(image: Image.Image, rng: np.random.Generator, strength: float) -> Moved:
    """The image framed in AugLy's web or phone screenshot template."""
    template = pick(rng, sorted(screenshot_boxes()))
    left, top, right, bottom = screenshot_boxes()[template]
    # Fit the image to the template's slot first: AugLy's own fit rounds a 1-pixel side to 0.
    fitted = image.resize(scaled_to_area(image.size, (right - left, bottom - top), 1.0))
    framed = F.overlay_onto_screenshot(
        fitted, template_filepath=str(Path(augly_utils.SCREENSHOT_TEMPLATES_DIR) / template)
    )
    # AugLy scales the image into the slot keeping its aspect, centred (padded to the slot).
    factor = min((right - left) / image.width, (bottom - top) / image.height)
    dx = left + ((right - left) - image.width * factor) / 2
    dy = top + ((bottom - top) - image.height * factor) / 2
    return Moved(framed, shift(dx, dy, factor, factor))
