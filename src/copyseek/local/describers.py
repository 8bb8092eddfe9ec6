"""Patch describers: what the local branch computes at each SIFT keypoint (kornia's composition:
the detector gives frames, a describer describes them).

| name        | what                                                                   | dim |
|-------------|------------------------------------------------------------------------|-----|
| rootsift    | OpenCV SIFT, L1 + square root                                          | 128 |
| mkd:raw     | kornia's MKDDescriptor (polar + Cartesian kernels), no whitening       | 238 |
| mkd:pcawt   | MKD + PCA-whitening with attenuation learned on our held-out photos    | 128 |
| mkd:lw      | MKD + supervised learned whitening from our edits' correspondences     | 128 |
| kdp:polar   | deep trunk + polar explicit spatial encoding + learned whitening       | 128 |
| kdp:cart    | the same with the Cartesian encoding                                   | 128 |
| kdp:fc      | the same trunk with a fully connected head (the papers' baseline)      | 128 |

`mkd` and `kdp` name the shipped variant of each family (DEFAULT_VARIANTS); an index stores the
resolved name. The learned parts are our own small files beside this module (`mkd_whitening.npz`,
`kdp_<head>.npz`), made by `copyseek.learn.patches`; kornia's own MKD whitening, which downloads its
parameters at run time, is never used.

Each describer returns the descriptors of the mirrored image's frames too when asked (queries, so
that flipped copies match): RootSIFT by a fixed permutation, patch describers by describing the
patches with their rows reversed (`copyseek.local.patches`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

from copyseek.errors import CopyseekError
from copyseek.local.features import MIRROR_PERMUTATION, SIFT_DIM, Frames, SiftParams, detect_frames, root_sift, strongest
from copyseek.local.patches import extract_patches

HERE = Path(__file__).parent
MKD_WHITENING_PATH = HERE / "mkd_whitening.npz"
MKD_RAW_DIM = 238
DEFAULT_SUPPORT = 6.0
"""Patch side in keypoint sizes when a describer's file does not say (SIFT's own window)."""
DESCRIBE_BATCH = 1024
MIRROR_CHECK = 64
"""Synthetic patches on which the signs of MKD's mirrored components are derived and checked."""


class PatchDescriber:
    """Describes keypoint frames of a grayscale image.

    name: resolved registry name (stored in an index's spec); dim: descriptor dimension.
    """

    name: str = ""
    dim: int = 0

    def describe(self, gray: np.ndarray, frames: Frames, *, mirrored: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """(H, W) uint8 gray, n frames -> (n, dim) float32 unit-norm descriptors, and those of the
        same keypoints in the mirrored image ((n, dim), or None unless `mirrored`)."""
        raise NotImplementedError

    def detect_and_describe(
        self, gray: np.ndarray, params: SiftParams, *, mirrored: bool = False
    ) -> tuple[Frames, np.ndarray, np.ndarray | None]:
        """SIFT frames of `gray` (strongest first, at most params.max_keypoints) and describe()."""
        frames = detect_frames(gray, params)
        return (frames, *self.describe(gray, frames, mirrored=mirrored))

    def fingerprint(self) -> str:
        """Short hash of the learned data behind the descriptor ('' when there is none)."""
        return ""


class RootSift(PatchDescriber):
    name = "rootsift"
    dim = SIFT_DIM

    def describe(self, gray, frames, *, mirrored=False):
        if len(frames) == 0:
            empty = np.zeros((0, SIFT_DIM), np.float32)
            return empty, (empty if mirrored else None)
        keypoints = frames.to_keypoints()
        computed, desc = cv2.SIFT_create().compute(gray, keypoints)
        if desc is None or len(computed) != len(frames):
            raise CopyseekError("OpenCV SIFT dropped keypoints while describing given frames")
        desc = root_sift(desc)
        return desc, (desc[:, MIRROR_PERMUTATION] if mirrored else None)

    def detect_and_describe(self, gray, params, *, mirrored=False):
        # One pass: OpenCV describes while detecting (no second scale space).
        sift = cv2.SIFT_create(nfeatures=params.max_keypoints, contrastThreshold=params.contrast_threshold)
        keypoints, desc = sift.detectAndCompute(gray, None)
        if not keypoints:
            empty = np.zeros((0, SIFT_DIM), np.float32)
            return Frames.empty(), empty, (empty if mirrored else None)
        keypoints, keep = strongest(keypoints, params.max_keypoints)
        desc = root_sift(desc[keep])
        return Frames.from_keypoints(keypoints), desc, (desc[:, MIRROR_PERMUTATION] if mirrored else None)


class PatchBased(PatchDescriber):
    """Describers of oriented 32x32 patches of `support` keypoint sizes: subclasses write
    describe_patches((B, 32, 32) float32 in 0..1) -> (B, dim) float32."""

    support: float = DEFAULT_SUPPORT

    def describe_patches(self, patches: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self, gray, frames, *, mirrored=False):
        patches = extract_patches(gray, frames, self.support)
        n = len(patches)
        if mirrored:
            patches = np.concatenate([patches, patches[:, ::-1]])
        desc = batched(self.describe_patches, patches, self.dim)
        return desc[:n], (desc[n:] if mirrored else None)


def batched(describe: Callable[[np.ndarray], np.ndarray], patches: np.ndarray, dim: int) -> np.ndarray:
    """describe() over (B, 32, 32) patches in batches of DESCRIBE_BATCH -> (B, dim) float32."""
    if len(patches) == 0:
        return np.zeros((0, dim), np.float32)
    return np.concatenate([describe(patches[i : i + DESCRIBE_BATCH]) for i in range(0, len(patches), DESCRIBE_BATCH)])


def _torch():
    try:
        import torch
    except ImportError as exc:  # the learn extra
        raise CopyseekError("the mkd and kdp local descriptors need torch and kornia: pip install 'copyseek[learn]'") from exc
    return torch


class MKD(PatchBased):
    """kornia's MKDDescriptor ('concat': polar + Cartesian, 238-d), then our whitening or none.

    whitening: a fitted `copyseek.local.whitening.Whitening`, or None for raw MKD.
    """

    def __init__(self, whitening=None, support: float = DEFAULT_SUPPORT, name: str = "mkd:raw", data: str = ""):
        self.whitening = whitening
        self.support = support
        self.name = name
        self.dim = MKD_RAW_DIM if whitening is None else int(whitening.projection_.shape[1])
        self._data = data

    @cached_property
    def _kernel(self):
        _torch()
        from kornia.feature import MKDDescriptor

        return MKDDescriptor(patch_size=32, kernel_type="concat", whitening=None)

    def raw(self, patches: np.ndarray) -> np.ndarray:
        """(B, 32, 32) patches -> (B, 238) float32 raw MKD."""
        torch = _torch()
        with torch.inference_mode():
            return self._kernel(torch.from_numpy(np.ascontiguousarray(patches[:, None], np.float32))).numpy()

    def describe_patches(self, patches):
        return self._whiten(self.raw(patches))

    def _whiten(self, raw: np.ndarray) -> np.ndarray:
        return raw if self.whitening is None else self.whitening.transform(raw)

    def describe(self, gray, frames, *, mirrored=False):
        # Mirrored descriptors from the raw ones (raw_mirror_signs), then both whitened: half the
        # kernel cost of describing the row-reversed patches.
        if not mirrored or self.raw_mirror_signs is None:
            return super().describe(gray, frames, mirrored=mirrored)
        raw = batched(self.raw, extract_patches(gray, frames, self.support), MKD_RAW_DIM)
        return self._whiten(raw), self._whiten(raw * self.raw_mirror_signs)

    @cached_property
    def raw_mirror_signs(self) -> np.ndarray | None:
        """(238,) +-1 such that the raw MKD of a patch with its rows reversed is raw * signs:
        reversing the rows negates the y coordinate, the polar angle and the gradient's
        orientation, and each of MKD's components (products of cosines and sines of those) is
        even or odd in them. Derived once on synthetic patches and checked there; None (describe
        the reversed patches instead) if the kernel's layout ever stops allowing it."""
        rng = np.random.default_rng(0)
        strip = cv2.GaussianBlur(rng.random((32, 32 * MIRROR_CHECK)).astype(np.float32), (0, 0), 1.5)
        patches = np.ascontiguousarray(strip.reshape(32, MIRROR_CHECK, 32).transpose(1, 0, 2))
        raw, reversed_raw = self.raw(patches), self.raw(np.ascontiguousarray(patches[:, ::-1]))
        signs = np.where((raw * reversed_raw).sum(axis=0) >= 0, 1.0, -1.0).astype(np.float32)
        return signs if np.abs(raw * signs - reversed_raw).max() <= 1e-4 else None

    def fingerprint(self) -> str:
        return self._data


class KDP(PatchBased):
    """A trained `copyseek.local.kdp.KDPNet` on 32x32 patches of `support` keypoint sizes."""

    def __init__(self, net, support: float = DEFAULT_SUPPORT, name: str = "kdp", data: str = ""):
        self.net = net
        self.support = support
        self.name = name
        self.dim = int(net.whiten.out_features)
        self._data = data

    def describe_patches(self, patches):
        torch = _torch()
        with torch.inference_mode():
            return self.net(torch.from_numpy(np.ascontiguousarray(patches[:, None], np.float32))).numpy()

    def fingerprint(self) -> str:
        return self._data


def file_fingerprint(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()[:16]


def _mkd(variant: str) -> PatchDescriber:
    from copyseek.local.whitening import Whitening

    if variant not in ("raw", "pcawt", "lw"):
        raise CopyseekError(f"unknown MKD variant {variant!r}; choose raw, pcawt or lw")
    try:
        with np.load(MKD_WHITENING_PATH) as data:
            support = float(data["support"])
            whitening = None if variant == "raw" else Whitening.from_arrays(data, variant)
    except OSError as exc:
        raise CopyseekError(f"cannot read the MKD whitening {MKD_WHITENING_PATH}: {exc}") from exc
    return MKD(whitening, support, f"mkd:{variant}", file_fingerprint(MKD_WHITENING_PATH))


def kdp_path(head: str) -> Path:
    return HERE / f"kdp_{head}.npz"


def _kdp(variant: str) -> PatchDescriber:
    _torch()
    from copyseek.local.kdp import HEADS

    if variant not in HEADS:
        raise CopyseekError(f"unknown KDP variant {variant!r}; choose from {', '.join(HEADS)}")
    return kdp_from_file(kdp_path(variant), f"kdp:{variant}")


def kdp_from_file(path: Path, name: str) -> KDP:
    """A KDP describer from a `copyseek.learn.patches kdp` weights file (e.g. a new training run,
    for `copyseek bench patches --kdp-weights`), named `name`."""
    _torch()
    from copyseek.local.kdp import load_weights

    net = load_weights(path)
    with np.load(path) as data:
        support = float(data["support"]) if "support" in data.files else DEFAULT_SUPPORT
    return KDP(net, support, name, file_fingerprint(path))


FAMILIES: dict[str, Callable[[str], PatchDescriber]] = {
    "rootsift": lambda variant: RootSift(),
    "mkd": _mkd,
    "kdp": _kdp,
}
"""Describer family -> constructor from its variant ('' for families without variants)."""

DEFAULT_VARIANTS: dict[str, str] = {"mkd": "lw", "kdp": "polar"}
"""The variant a bare family name means (the shipped one); stored resolved in an index's spec."""


def register_describer(family: str, constructor: Callable[[str], PatchDescriber], default_variant: str = "") -> None:
    FAMILIES[family] = constructor
    if default_variant:
        DEFAULT_VARIANTS[family] = default_variant


def resolve_name(name: str) -> str:
    """'mkd' -> 'mkd:lw' (the default variant); full names unchanged; unknown families refused."""
    family, _, variant = name.partition(":")
    if family not in FAMILIES:
        raise CopyseekError(f"unknown local descriptor {name!r}; choose from {', '.join(sorted(FAMILIES))}")
    variant = variant or DEFAULT_VARIANTS.get(family, "")
    return f"{family}:{variant}" if variant else family


def make_describer(name: str) -> PatchDescriber:
    """A describer by name: 'rootsift', 'mkd', 'mkd:pcawt', 'kdp:cart', ..."""
    family, _, variant = resolve_name(name).partition(":")
    return FAMILIES[family](variant)
