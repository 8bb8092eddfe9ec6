"""Checks at the boundary: every public entry point validates what it is given here and raises a
`CopyseekError` that names the bad value (scikit-learn's `check_array`, Faiss's input conversion).

Parameter dataclasses call the `check_*` helpers in `__post_init__`; option dicts (JSON-able, as an
index stores them) become such dataclasses through `from_options`, which refuses unknown keys, so
each dataclass is the one source of its defaults.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Knobs:
...     size: int = 4
...     def __post_init__(self):
...         check_int("size", self.size, minimum=1)
>>> from_options(Knobs, {"size": 8})
Knobs(size=8)
>>> from_options(Knobs, {"sise": 8}, "toy")
Traceback (most recent call last):
...
copyseek.errors.CopyseekError: unknown toy option 'sise' (known: size)
>>> Knobs(size=0)
Traceback (most recent call last):
...
copyseek.errors.CopyseekError: size must be an integer >= 1, got 0
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Collection, Mapping
from typing import Any, TypeVar

import numpy as np

from copyseek.errors import CopyseekError

T = TypeVar("T")


def from_options(cls: type[T], options: Mapping[str, Any], what: str | None = None, ignore: Collection[str] = ()) -> T:
    """An instance of the dataclass `cls` from a dict of its fields. Unknown keys raise (naming
    them and the known ones), except those in `ignore`, which are dropped (e.g. speed options that
    every branch is handed but only some use)."""
    if not isinstance(options, Mapping):
        raise CopyseekError(f"{what or cls.__name__} options must be a dict of names to values, got {options!r}")
    names = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(options) - names - set(ignore))
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        raise CopyseekError(
            f"unknown {what or cls.__name__} option{plural} {', '.join(map(repr, unknown))} "
            f"(known: {', '.join(sorted(names)) or 'none'})"
        )
    return cls(**{k: v for k, v in options.items() if k in names})


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """`value` as an int, if it is an integer (not a bool, not a float) within [minimum, maximum]."""
    bounds = _bounds(minimum, maximum)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise CopyseekError(f"{name} must be an integer{bounds}, got {value!r}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise CopyseekError(f"{name} must be an integer{bounds}, got {value!r}")
    return int(value)


def check_number(
    name: str, value: Any, minimum: float | None = None, maximum: float | None = None, *, open_minimum: bool = False
) -> float:
    """`value` as a float, if it is a finite real number within [minimum, maximum] (or (minimum, ...]
    with open_minimum)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise CopyseekError(f"{name} must be a finite number, got {value!r}")
    low = minimum is not None and (value <= minimum if open_minimum else value < minimum)
    if low or (maximum is not None and value > maximum):
        above = f" > {minimum}" if open_minimum else f" >= {minimum}"
        bounds = (above if minimum is not None else "") + (f" and <= {maximum}" if maximum is not None else "")
        raise CopyseekError(f"{name} must be a number{bounds}, got {value!r}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise CopyseekError(f"{name} must be true or false, got {value!r}")
    return bool(value)


def check_choice(name: str, value: Any, choices: Collection[Any]) -> Any:
    if value not in choices:
        raise CopyseekError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_vectors(vectors: Any, dim: int, what: str = "vectors") -> np.ndarray:
    """(n, dim) real vectors -> a C-contiguous float32 array, as Faiss wants it. A 1-D array is one
    vector. Wrong dimension, non-numeric dtype or non-finite values raise."""
    array = np.asarray(vectors)
    if array.ndim == 1:
        array = array[None]
    if array.dtype.kind not in "fiu":
        raise CopyseekError(f"{what} must be real numbers, got dtype {array.dtype}")
    if array.ndim != 2 or array.shape[1] != dim:
        raise CopyseekError(f"{what} must have shape (n, {dim}), got {array.shape}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise CopyseekError(f"{what} contain NaN or infinite values")
    return array


def check_codes(codes: Any, width: int, what: str = "codes") -> np.ndarray:
    """(n, width) uint8 codes (packed bits, PQ codes) -> a C-contiguous uint8 array."""
    array = np.asarray(codes)
    if array.ndim == 1:
        array = array[None]
    if array.dtype != np.uint8 or array.ndim != 2 or array.shape[1] != width:
        raise CopyseekError(f"{what} must be uint8 with shape (n, {width}), got {array.dtype} {array.shape}")
    return np.ascontiguousarray(array)


def check_image(image: Any, what: str = "image") -> np.ndarray:
    """An (H, W, 3) uint8 RGB array (at least 1x1), as every branch takes it."""
    if not isinstance(image, np.ndarray):
        raise CopyseekError(f"{what} must be a numpy array (H, W, 3) uint8 RGB, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise CopyseekError(f"{what} must be an (H, W, 3) uint8 RGB array, got {image.dtype} {image.shape}")
    return image


def check_images(images: Any, what: str = "images") -> list[np.ndarray]:
    """A list of (H, W, 3) uint8 RGB arrays (sizes may differ)."""
    if isinstance(images, np.ndarray) or not isinstance(images, (list, tuple)):
        raise CopyseekError(f"{what} must be a list of (H, W, 3) uint8 arrays, got {type(images).__name__}")
    return [check_image(image, f"{what}[{i}]") for i, image in enumerate(images)]


def _bounds(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum}, {maximum}]"
    if minimum is not None:
        return f" >= {minimum}"
    return f" <= {maximum}" if maximum is not None else ""
