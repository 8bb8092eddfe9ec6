"""Progress bars on long work (stderr; disabled with --quiet or when not wanted)."""

from __future__ import annotations

from tqdm.auto import tqdm


def progress_bar(total: int, description: str, disable: bool = False, unit: str = "img"):
    """A tqdm bar showing count, rate (img/s) and time left."""
    return tqdm(total=total, desc=description, unit=unit, disable=disable, dynamic_ncols=True, smoothing=0.1)
