"""Photometric edits: colour, contrast, blur, noise, JPEG, pixelization, filters.

Noise and pixel shuffling are written here: AugLy's versions reseed NumPy's global generator
(`np.random.seed`), which would make them depend on, and change, state outside our Generator.
"""

from __future__ import annotations

import augly.image.functional as F
import numpy as np
from PIL import Image, ImageFilter

from copyseek.edits.params import log_factor, pick
from copyseek.edits.registry import register

MILD_FILTERS = (ImageFilter.DETAIL, ImageFilter.EDGE_ENHANCE, ImageFilter.SMOOTH_MORE)
STRONG_FILTERS = (ImageFilter.EDGE_ENHANCE_MORE, ImageFilter.CONTOUR, ImageFilter.EMBOSS)


@register("brightness", "photometric")
def brightness(image: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    """Brightness x exp(+-0.7 * strength) (x2 or /2 at strength 1) (AugLy)."""
    return F.brightness(image, factor=log_factor(rng, strength, 0.7))


@register("contrast", "photometric")
def contrast(image: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    """Contrast x exp(+-0.9 * strength) (AugLy)."""
    return F.contrast(image, factor=log_factor(rng, strength, 0.9))


@register("saturation", "photometric")
def saturation(image: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    """Saturation x exp(+-1.2 * strength) (AugLy)."""
    return F.saturation(image, factor=log_factor(rng, strength, 1.2))


@register("color_jitter", "photometric")
def color_jitter(image: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    """Brightness, contrast and saturation each x exp(+-0.4 * strength) (AugLy)."""
    return F.color_jitter(
        image,
        brightness_factor=log_factor(rng, strength, 0.4),
        contrast_factor=log_factor(rng, strength, 0.4),
        saturation_factor=log_factor(rng, strength, 0.4),
    )


@register("grayscale", "photometric")
def grayscale(image: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    """Grey levels by luminosity or channel average (AugLy)."""
    return F.grayscale(image, mode=pick(rng, ("luminosity", "average")))


@register("blur", "photometric", weight=1.5)
def blur(image: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    """Gaussian blur, radius 0.8% * strength of the long side (8 px on 1024 at strength 1) (AugLy)."""
    radius = max(0.1, 0.008 * strength * max(image.size))  # AugLy wants a positive radius
    return F.blur(image, radius=radius)


@register("sharpen", "photometric", weight=0.5)
def sharpen(image: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    """Sharpness x (1 + 6 * strength) (AugLy)."""
    return F.sharpen(image, factor=1.0 + 6.0 * strength)


@register("noise", "photometric")
def noise(image: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    """Additive Gaussian noise, standard deviation 25 * strength grey levels."""
    pixels = np.asarray(image, np.float32)
    noisy = pixels + rng.normal(0.0, 25.0 * strength, size=pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(noisy + 0.5, 0, 255).astype(np.uint8))


@register("jpeg", "photometric", weight=2.0)
def jpeg(image: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    """Re-encode as JPEG at quality 100 - 80 * strength (20 at strength 1, at least 3) (AugLy)."""
    quality = int(np.clip(round(100 - 80 * strength), 3, 100))
    return F.encoding_quality(image, quality=quality)


@register("pixelization", "photometric")
def pixelization(image: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    """Square blocks of 1 + 1.2% * strength of the long side pixels (13 px on 1024 at strength 1)."""
    block = 1.0 + 0.012 * strength * max(image.size)
    small = (max(1, round(image.width / block)), max(1, round(image.height / block)))
    return image.resize(small, Image.Resampling.BOX).resize(image.size, Image.Resampling.NEAREST)


@register("opacity", "photometric", weight=0.5)
def opacity(image: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    """Fade towards white: opacity 1 - 0.4 * strength, at least 0.25 (AugLy)."""
    return F.opacity(image, level=float(np.clip(1.0 - 0.4 * strength, 0.25, 1.0)))


@register("shuffle_pixels", "photometric", weight=0.3)
def shuffle_pixels(image: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    """Swap 15% * strength of the pixels among themselves."""
    pixels = np.array(image).reshape(-1, 3)
    count = int(min(1.0, 0.15 * strength) * len(pixels))
    chosen = rng.choice(len(pixels), size=count, replace=False)
    pixels[chosen] = pixels[rng.permutation(chosen)]
    return Image.fromarray(pixels.reshape(image.height, image.width, 3))


@register("filter", "photometric", weight=0.7)
def filter_(image: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    """A Pillow filter: detail / edge enhance / smooth, or above strength 0.8 also contour and
    emboss (AugLy)."""
    filters = MILD_FILTERS + (STRONG_FILTERS if strength > 0.8 else ())
    return F.apply_pil_filter(image, filter_type=pick(rng, filters))
