"""Finding image files and decoding them into RGB arrays, or a skip with its reason.

Every decoded image is (H, W, 3) uint8 RGB, upright (EXIF orientation applied), alpha composited on
white, 16-bit and float images rescaled to 8 bits, first frame of animations.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import struct
import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from copyseek.errors import CopyseekError, ImageSkip

IMAGE_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .jfif .png .webp .bmp .gif .tif .tiff .ppm .pgm .pbm .pnm .jp2 .j2k .heic .heif "
    ".avif .ico .tga .svg".split()
)
DEFAULT_MAX_PIXELS = 150_000_000
"""Images with more pixels are skipped (decompression-bomb guard): 150 MP is 450 MB of RGB."""

# We guard against decompression bombs ourselves, with a reason the user sees, before decoding.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class ImageFile:
    """An image file and its id (the file stem, as in DISC21: `Q00012.jpg` -> `Q00012`)."""

    id: str
    path: Path


@dataclass
class DecodedImage:
    """A decoded image: pixels (H, W, 3) uint8 RGB, plus what the index records about the file."""

    file: ImageFile
    pixels: np.ndarray
    sha1: str
    nbytes: int
    width: int
    height: int


def require_folder(root: str | os.PathLike) -> Path:
    """`root` as a Path; raises CopyseekError if it does not exist or is not a folder."""
    root = Path(root)
    if not root.exists():
        raise CopyseekError(f"folder not found: {root}")
    if not root.is_dir():
        raise CopyseekError(f"not a folder: {root}")
    return root


ID_SCHEMES = ("stem", "relative")
"""How a file's id is made: its stem (`a/Q00012.jpg` -> `Q00012`, DISC21's convention) or its path
relative to the folder given (`a/Q00012.jpg`), for collections whose file names repeat."""


def find_images(
    root: str | os.PathLike, ids: str = "stem", *, unique_ids: bool = True
) -> tuple[list[ImageFile], list[Path]]:
    """Image files below `root` (recursive, sorted by path) and the other files that were ignored.

    Hidden files and folders are ignored. ids: see ID_SCHEMES. Raises CopyseekError if `root` is
    not a folder or, with unique_ids (for indexes), if two images share an id.
    """
    if ids not in ID_SCHEMES:
        raise CopyseekError(f"unknown id scheme {ids!r}; choose from {', '.join(ID_SCHEMES)}")
    root = require_folder(root)
    images: list[ImageFile] = []
    ignored: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                images.append(ImageFile(path.relative_to(root).as_posix() if ids == "relative" else path.stem, path))
            else:
                ignored.append(path)
    images.sort(key=lambda f: str(f.path))
    if unique_ids:
        check_unique_ids(images)
    return images, ignored


def find_inputs(paths: Iterable[str | os.PathLike], ids: str = "stem") -> tuple[list[ImageFile], list[Path]]:
    """Image files named directly or found below folders, in the order given (see find_images).
    A file's relative id is its name. Raises CopyseekError for a path that does not exist or two
    images with one id."""
    images: list[ImageFile] = []
    ignored: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found, skipped = find_images(path, ids)
            images += found
            ignored += skipped
        elif path.exists() or path.is_symlink():
            images.append(ImageFile(path.name if ids == "relative" else path.stem, path))
        else:
            raise CopyseekError(f"not found: {path}")
    seen: set[str] = set()
    unique = []
    for f in images:  # a file named twice (itself and its folder) counts once
        if resolved(f.path) not in seen:
            seen.add(resolved(f.path))
            unique.append(f)
    check_unique_ids(unique)
    return unique, ignored


def resolved(path: Path) -> str:
    """The absolute path with symlinks resolved, as the index records it; a symlink loop or a
    dangling link stays as given (reading it is then skipped with the reason)."""
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):
        return str(path.absolute())


def check_unique_ids(files: Iterable[ImageFile]) -> None:
    """Raise CopyseekError naming the clashes if two files have the same id."""
    seen: dict[str, Path] = {}
    clashes: list[str] = []
    for f in files:
        if f.id in seen:
            clashes.append(f"  {f.id}: {seen[f.id]} and {f.path}")
        else:
            seen[f.id] = f.path
    if clashes:
        shown = "\n".join(clashes[:10]) + ("\n  ..." if len(clashes) > 10 else "")
        raise CopyseekError(
            f"{len(clashes)} image id(s) are used by two files (ids are file names without extension):\n{shown}"
        )


def decode_image(
    data: bytes, min_side: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode image bytes to (H, W, 3) uint8 RGB.

    min_side: the shorter side, in pixels, the caller needs. JPEGs are decoded at a reduced scale
        (DCT draft mode) that keeps at least that, and larger images are downscaled to about
        2 x min_side, so huge photos cost little. 0 keeps full resolution.
    Raises ImageSkip with a one-line reason for anything that cannot be used.
    """
    if not data:
        raise ImageSkip("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageSkip(
                    f"too large: {width}x{height} pixels exceeds the limit of {max_pixels:,} (decompression-bomb guard)"
                )
            if width < 1 or height < 1:
                raise ImageSkip(f"invalid size {width}x{height}")
            if min_side and image.format == "JPEG":
                image.draft("RGB", (min_side, min_side))
            image.seek(0)  # first frame of animations
            image.load()
            image = ImageOps.exif_transpose(image)
            rgb = to_rgb(image)
    except ImageSkip:
        raise
    except UnidentifiedImageError:
        raise ImageSkip("not an image, or a format Pillow cannot read") from None
    except Image.DecompressionBombError as exc:
        raise ImageSkip(f"too large: {exc}") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, ZeroDivisionError) as exc:
        raise ImageSkip(f"corrupt or truncated image: {one_line(exc)}") from None
    if min_side:
        rgb = cap_resolution(rgb, 2 * min_side)
    return rgb


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__


def to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow image mode -> (H, W, 3) uint8 RGB; alpha is composited on white."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # Pillow's convert("RGB") clips 16-bit/float values at 255: rescale by the real range instead.
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        gray = np.clip(scaled + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBa", "La"):  # premultiplied alpha: Pillow converts these only to their plain form
        image = image.convert(image.mode.upper())
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.ascontiguousarray(np.asarray(image.convert("RGB")))


def cap_resolution(rgb: np.ndarray, max_short_side: int) -> np.ndarray:
    """Downscale (H, W, 3) so its shorter side is at most `max_short_side` pixels."""
    height, width = rgb.shape[:2]
    short = min(height, width)
    if short <= max_short_side:
        return rgb
    scale = max_short_side / short
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR, reducing_gap=2.0))


def read_image(file: ImageFile, min_side: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Read and decode one file. Raises ImageSkip with the reason if it cannot be used."""
    try:
        data = file.path.read_bytes()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageSkip("symlink loop (the link points back to itself)") from None
        raise ImageSkip(f"cannot read file: {one_line(exc)}") from None
    pixels = decode_image(data, min_side, max_pixels)
    return DecodedImage(
        file=file,
        pixels=pixels,
        sha1=hashlib.sha1(data).hexdigest(),
        nbytes=len(data),
        width=pixels.shape[1],
        height=pixels.shape[0],
    )


def load_rgb(path: str | os.PathLike, min_side: int = 0) -> np.ndarray:
    """Decode one image file to (H, W, 3) uint8 RGB; raises CopyseekError with the reason."""
    path = Path(path)
    if not path.is_file():
        raise CopyseekError(f"image not found: {path}")
    try:
        return read_image(ImageFile(path.stem, path), min_side).pixels
    except ImageSkip as skip:
        raise CopyseekError(f"cannot use {path}: {skip.reason}") from None


def iter_decoded(
    files: list[ImageFile], min_side: int = 0, workers: int = 2, prefetch: int = 32
) -> Iterator[DecodedImage | tuple[ImageFile, ImageSkip]]:
    """Decode files in order on `workers` threads, `prefetch` images ahead of the consumer.

    Yields a DecodedImage, or (file, ImageSkip) for a file that cannot be used. Pillow releases the
    GIL while decoding, so this overlaps with model inference in the consumer's thread.
    """

    def work(file: ImageFile) -> DecodedImage | tuple[ImageFile, ImageSkip]:
        try:
            return read_image(file, min_side)
        except ImageSkip as skip:
            return file, skip
        except MemoryError:
            return file, ImageSkip("out of memory while decoding")

    if workers <= 0:
        yield from map(work, files)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        pending: deque = deque()
        remaining = iter(files)
        for file in remaining:
            pending.append(pool.submit(work, file))
            if len(pending) >= prefetch:
                break
        while pending:
            result = pending.popleft().result()
            next_file = next(remaining, None)
            if next_file is not None:
                pending.append(pool.submit(work, next_file))
            yield result
