"""Images made by tests (nothing from ../shared)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from copyseek.synthetic import synthetic_photo


def write_photos(folder: Path, count: int, seed: int = 0, prefix: str = "img", size=(320, 240)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{prefix}{i:04d}.jpg"
        synthetic_photo(np.random.default_rng(seed * 10_000 + i), *size).save(path, quality=92)
        paths.append(path)
    return paths


def crop_copy(source: Path, target: Path, fraction: float = 0.7, quality: int = 60) -> None:
    """An edited copy: central crop, resized, recompressed."""
    image = Image.open(source).convert("RGB")
    w, h = image.size
    dx, dy = int(w * (1 - fraction) / 2), int(h * (1 - fraction) / 2)
    image.crop((dx, dy, w - dx, h - dy)).resize((w // 2 + 7, h // 2 + 3)).save(target, quality=quality)
