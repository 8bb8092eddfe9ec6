"""Files of every awkward kind, written by tests (shared by the io and store tests)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from copyseek.synthetic import synthetic_photo


def photo(seed: int = 0, w: int = 200, h: int = 120) -> Image.Image:
    return synthetic_photo(np.random.default_rng(seed), w, h)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def bomb_png(width: int = 40_000, height: int = 40_000) -> bytes:
    """A tiny PNG whose header claims width x height pixels (decoding would need GBs)."""
    data = bytearray(png_bytes(Image.new("L", (8, 8))))
    ihdr = 8 + 8  # signature, then length + type of the IHDR chunk
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def exif_rotated_jpeg(seed: int = 1) -> bytes:
    """A 200x120 JPEG whose EXIF says: rotate 90 degrees (orientation 6) -> shown as 120x200."""
    image = photo(seed)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def animated_gif(seed: int = 2) -> bytes:
    frames = [photo(seed + i).convert("P") for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def sixteen_bit_png(seed: int = 3) -> bytes:
    gray = np.asarray(photo(seed).convert("L"), np.uint16) * 257
    return encoded(Image.fromarray(gray), "PNG")


def palette_alpha_png(seed: int = 4) -> bytes:
    """A palette PNG whose first 50 columns use the transparent palette entry 0."""
    indices = np.asarray(photo(seed).convert("P", palette=Image.ADAPTIVE, colors=255)).astype(np.uint8) + 1
    indices[:, :50] = 0
    image = Image.fromarray(indices, mode="P")
    palette = [0, 0, 0] + list(np.random.default_rng(seed).integers(0, 256, 255 * 3))
    image.putpalette([int(v) for v in palette])
    return encoded(image, "PNG", transparency=0)


GOOD = {
    "cmyk.jpg": lambda: encoded(photo(5).convert("CMYK"), "JPEG"),
    "sixteen.png": sixteen_bit_png,
    "palette_alpha.png": palette_alpha_png,
    "rgba.png": lambda: encoded(photo(6).convert("RGBA"), "PNG"),
    "gray.jpg": lambda: encoded(photo(7).convert("L"), "JPEG"),
    "animated.gif": animated_gif,
    "rotated.jpg": exif_rotated_jpeg,
    "tiny.png": lambda: encoded(photo(8, 3, 2), "PNG"),
}
"""Files that must decode."""

BAD = {
    "empty.jpg": lambda: b"",
    "text.jpg": lambda: b"this is not an image at all\n" * 20,
    "truncated.jpg": lambda: encoded(photo(9), "JPEG")[:600],
    "corrupt.png": lambda: png_bytes(photo(10))[:80] + bytes(range(256)) * 4,
    "drawing.svg": lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>',
    "bomb.png": bomb_png,
}
"""Files that must be skipped with a reason."""


def write_all(folder: Path, kinds: dict) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, make in kinds.items():
        path = folder / name
        path.write_bytes(make())
        paths.append(path)
    return paths
