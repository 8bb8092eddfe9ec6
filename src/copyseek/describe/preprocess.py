"""Resizing an RGB image to what a global model expects."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from copyseek.errors import CopyseekError

MODES = ("square", "short")


@dataclass(frozen=True)
class Preprocess:
    """How an image is resized before a global model sees it.

    mode: "square" resizes to size x size (aspect not kept, as SSCD's DISC21 evaluation at 320);
          "short" resizes the shorter side to `size` keeping the aspect ratio.
    size: pixels.
    The model itself normalises; inputs stay uint8 RGB.
    """

    mode: str = "square"
    size: int = 320

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise CopyseekError(f"preprocess mode must be one of {MODES}, got {self.mode!r}")
        if not 16 <= int(self.size) <= 4096:
            raise CopyseekError(f"preprocess size must be between 16 and 4096 pixels, got {self.size}")

    @classmethod
    def parse(cls, text: str) -> "Preprocess":
        """Parse "square:320" or "short:288"."""
        mode, _, size = text.partition(":")
        if not size.isdigit():
            raise CopyseekError(
                f"--resize must look like 'square:320', 'short:288' or 'square:224+short:256', got {text!r}"
            )
        return cls(mode, int(size))

    def __str__(self) -> str:
        return f"{self.mode}:{self.size}"

    @staticmethod
    def parse_views(text: str) -> tuple["Preprocess", ...]:
        """Parse one resizing or several joined by '+': "square:224+short:256" describes an image at
        both sizes (see GlobalBranch)."""
        views = tuple(Preprocess.parse(part.strip()) for part in text.split("+"))
        if len(set(views)) != len(views):
            raise CopyseekError(f"--resize lists the same resizing twice: {text!r}")
        return views

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) in pixels after resizing an image of width x height."""
        if self.mode == "square":
            return self.size, self.size
        scale = self.size / min(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (h, w, 3) uint8 RGB at the model's size (bilinear, antialiased)."""
        height, width = rgb.shape[:2]
        target = self.output_size(width, height)
        if (width, height) == target:
            return rgb
        return np.asarray(Image.fromarray(rgb).resize(target, Image.BILINEAR, reducing_gap=None))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocess":
        return cls(str(data["mode"]), int(data["size"]))


def sidecar_path(model_path: Path) -> Path:
    """The JSON file recording a model file's preprocessing: `model.onnx` -> `model.json`."""
    return Path(model_path).with_suffix(".json")


def read_sidecar(model_path: Path) -> dict:
    """The sidecar's content ({} if there is none). Keys: "preprocess" (Preprocess.to_dict()), "name"."""
    path = sidecar_path(model_path)
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CopyseekError(f"cannot read model sidecar {path}: {exc}") from exc


def write_sidecar(model_path: Path, preprocess: Preprocess, **extra) -> Path:
    """Record `preprocess` (and extra keys such as name, dim) beside a model file."""
    path = sidecar_path(model_path)
    path.write_text(json.dumps({"preprocess": preprocess.to_dict(), **extra}, indent=2) + "\n")
    return path
