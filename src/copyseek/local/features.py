"""SIFT keypoints (frames) of a downscaled grayscale image, with a keypoint cap, their RootSIFT, and
mirror awareness.

A frame is a keypoint's position, size and orientation (`Frames`); any patch describer
(`copyseek.local.describers`) describes the same frames.

Mirror awareness costs no second extraction: SIFT's detector is symmetric, and the descriptor of a
keypoint seen in the mirrored image is a fixed permutation of its descriptor (the 4x4 spatial grid
flips along the keypoint's vertical axis and each gradient orientation o becomes -o). So the
mirrored query's descriptors are `desc[:, MIRROR_PERMUTATION]`, at the same keypoints.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from copyseek.errors import CopyseekError
from copyseek.validation import check_int, check_number

SIFT_DIM = 128


def _mirror_permutation() -> np.ndarray:
    """(128,) int64: OpenCV SIFT's layout is (row, col, orientation) = (4, 4, 8); mirroring reverses
    the rows (the keypoint frame's y axis) and negates the orientation bins."""
    bins = np.arange(SIFT_DIM).reshape(4, 4, 8)
    return bins[::-1][:, :, (-np.arange(8)) % 8].reshape(-1)


MIRROR_PERMUTATION = _mirror_permutation()


@dataclass(frozen=True)
class SiftParams:
    """How local features are extracted.

    max_side:           longest side, in pixels, of the grayscale image SIFT runs on (never upscaled).
    max_keypoints:      keep the strongest keypoints by detector response.
    contrast_threshold: OpenCV's DoG contrast threshold; lower than its 0.04 default so that flat,
                        low-contrast photos still yield keypoints (the cap removes the weak excess).
    """

    max_side: int = 448
    max_keypoints: int = 320
    contrast_threshold: float = 0.02

    def __post_init__(self) -> None:
        check_int("local max_side", self.max_side)
        check_int("local max_keypoints", self.max_keypoints)
        check_number("local contrast_threshold", self.contrast_threshold)
        if not 64 <= self.max_side <= 4096:
            raise CopyseekError(f"local max_side must be between 64 and 4096 pixels, got {self.max_side}")
        if not 8 <= self.max_keypoints <= 10000:
            raise CopyseekError(f"local max_keypoints must be between 8 and 10000, got {self.max_keypoints}")
        if not 0.0 < self.contrast_threshold < 1.0:
            raise CopyseekError(f"local contrast_threshold must be in (0, 1), got {self.contrast_threshold}")


def downscaled_gray(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """(H, W, 3) uint8 RGB -> ((h, w) uint8 gray with max(h, w) <= max_side, scale = h / H)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise CopyseekError(f"local features need (H, W, 3) uint8 RGB images, got {rgb.dtype} {rgb.shape}")
    height, width = rgb.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), scale


def root_sift(desc: np.ndarray) -> np.ndarray:
    """(n, 128) SIFT -> (n, 128) float32 RootSIFT: L1-normalise then square-root (unit L2 norm)."""
    desc = desc.astype(np.float32)
    desc /= np.maximum(desc.sum(axis=1, keepdims=True), 1e-7)
    return np.sqrt(desc)


@dataclass(frozen=True)
class Frames:
    """n oriented keypoint frames in pixels of one grayscale image.

    xy:    (n, 2) float32 centre (x right, y down; pixel centres at integers, as in OpenCV).
    size:  (n,) float32 OpenCV keypoint size (the detector's scale; SIFT's descriptor spans ~6 sizes).
    angle: (n,) float32 orientation in degrees, OpenCV's convention: the patch's x axis points
           along (cos angle, sin angle) in image coordinates.
    """

    xy: np.ndarray
    size: np.ndarray
    angle: np.ndarray

    def __len__(self) -> int:
        return len(self.xy)

    @classmethod
    def empty(cls) -> "Frames":
        return cls(np.zeros((0, 2), np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32))

    @classmethod
    def from_keypoints(cls, keypoints) -> "Frames":
        """From a sequence of cv2.KeyPoint."""
        if not len(keypoints):
            return cls.empty()
        return cls(
            np.array([kp.pt for kp in keypoints], np.float32).reshape(-1, 2),
            np.array([kp.size for kp in keypoints], np.float32),
            np.array([kp.angle for kp in keypoints], np.float32),
        )

    def select(self, keep: np.ndarray) -> "Frames":
        return Frames(self.xy[keep], self.size[keep], self.angle[keep])

    def to_keypoints(self) -> list:
        """cv2.KeyPoint list whose octave field names the SIFT pyramid layer of each size, so that
        OpenCV's `compute` describes a frame exactly as its detector would have."""
        return [
            cv2.KeyPoint(float(x), float(y), float(s), float(a) % 360.0, 0.0, sift_octave(float(s)))
            for (x, y), s, a in zip(self.xy, self.size, self.angle)
        ]


def sift_octave(size: float, layers: int = 3, sigma: float = 1.6) -> int:
    """OpenCV SIFT's packed octave field (octave | layer << 8) for a keypoint of `size`.

    OpenCV reports size = sigma * 2**(octave + 1 + layer / layers) (the first octave is the image
    upsampled twice, octave -1); `compute` reads the octave and layer to choose the blurred image.
    """
    level = np.log2(max(size, 1e-3) / sigma) - 1.0
    octave = max(int(np.floor(level)), -1)
    layer = int(np.clip(round((level - octave) * layers), 0, layers + 2))
    if layer == 0 and octave > -1:  # the detector finds extrema in layers 1..layers only
        octave, layer = octave - 1, layers
    return (octave & 255) | (layer << 8)


def detect_frames(gray: np.ndarray, params: SiftParams) -> Frames:
    """SIFT frames of a grayscale image (already downscaled), strongest first, at most
    params.max_keypoints."""
    sift = cv2.SIFT_create(nfeatures=params.max_keypoints, contrastThreshold=params.contrast_threshold)
    keypoints = sift.detect(gray, None)
    return Frames.from_keypoints(strongest(keypoints, params.max_keypoints)[0])


def strongest(keypoints, cap: int) -> tuple[list, np.ndarray]:
    """The `cap` strongest keypoints by response, strongest first (OpenCV keeps ties at its cap),
    and their indices in `keypoints`."""
    response = np.array([kp.response for kp in keypoints], np.float32)
    keep = np.argsort(-response, kind="stable")[:cap]
    return [keypoints[i] for i in keep], keep


def sift_features(rgb: np.ndarray, params: SiftParams) -> tuple[np.ndarray, np.ndarray]:
    """RootSIFT of the strongest keypoints of an RGB image.

    Returns xy (n, 2) float32 keypoint positions in pixels of `rgb` (x right, y down) and desc
    (n, 128) float32 RootSIFT, strongest first, n <= params.max_keypoints.
    """
    gray, scale = downscaled_gray(rgb, params.max_side)
    sift = cv2.SIFT_create(nfeatures=params.max_keypoints, contrastThreshold=params.contrast_threshold)
    keypoints, desc = sift.detectAndCompute(gray, None)
    if not keypoints:
        return np.zeros((0, 2), np.float32), np.zeros((0, SIFT_DIM), np.float32)
    keypoints, keep = strongest(keypoints, params.max_keypoints)
    xy = np.array([kp.pt for kp in keypoints], np.float32)
    # OpenCV's pt is in pixel units with pixel centres at integers; map back to the input image.
    xy = (xy + 0.5) / scale - 0.5
    return xy, root_sift(desc[keep])
