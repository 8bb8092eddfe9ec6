import numpy as np
import pytest

from copyseek.errors import CopyseekError
from copyseek.local.features import Frames, SiftParams, detect_frames, downscaled_gray
from copyseek.local.patches import PATCH_SIZE, extract_patches, mirror_frames
from tests.local.conftest import photo


def _frames(n: int = 20, seed: int = 0, width: int = 512, height: int = 384) -> Frames:
    rng = np.random.default_rng(seed)
    xy = np.stack([rng.uniform(80, width - 80, n), rng.uniform(80, height - 80, n)], axis=1)
    return Frames(xy.astype(np.float32), rng.uniform(2, 12, n).astype(np.float32), rng.uniform(0, 360, n).astype(np.float32))


def test_shape_range_and_empty():
    gray = downscaled_gray(photo(0), 512)[0]
    patches = extract_patches(gray, _frames(), support=6)
    assert patches.shape == (20, PATCH_SIZE, PATCH_SIZE) and patches.dtype == np.float32
    assert 0.0 <= patches.min() and patches.max() <= 1.0 and patches.std() > 0.01
    assert extract_patches(gray, Frames.empty(), support=6).shape == (0, PATCH_SIZE, PATCH_SIZE)


def test_mirrored_image_gives_patches_with_rows_reversed():
    gray = downscaled_gray(photo(1), 512)[0]
    frames = detect_frames(gray, SiftParams(max_keypoints=64))
    mirrored = extract_patches(np.ascontiguousarray(gray[:, ::-1]), mirror_frames(frames, gray.shape[1]), 6)
    patches = extract_patches(gray, frames, 6)
    assert np.abs(mirrored - patches[:, ::-1]).mean() < 1e-3
    assert np.abs(mirrored - patches).mean() > 0.02  # the mirror is not a no-op


def test_rotated_image_at_rotated_frames_gives_the_same_patches():
    gray = downscaled_gray(photo(2), 512)[0]
    frames = _frames(seed=2)
    rotated = np.ascontiguousarray(np.rot90(gray))  # 90 degrees counter-clockwise: (x, y) -> (y, W-1-x)
    xy = np.stack([frames.xy[:, 1], gray.shape[1] - 1 - frames.xy[:, 0]], axis=1)
    turned = Frames(xy, frames.size, (frames.angle - 90) % 360)
    assert np.abs(extract_patches(rotated, turned, 6) - extract_patches(gray, frames, 6)).mean() < 1e-3


def test_large_supports_are_sampled_from_the_pyramid_without_aliasing():
    stripes = np.tile(((np.arange(512) // 1) % 2 * 255).astype(np.uint8), (512, 1))  # 1-pixel stripes
    frames = Frames(np.array([[256, 256]], np.float32), np.array([40.0], np.float32), np.zeros(1, np.float32))
    patch = extract_patches(stripes, frames, support=6)[0]
    assert patch.std() < 0.1  # 240 px shrunk to 32: the stripes average out instead of aliasing


def test_bad_input_is_refused():
    with pytest.raises(CopyseekError, match="grayscale"):
        extract_patches(np.zeros((10, 10, 3), np.uint8), _frames(), 6)
    with pytest.raises(CopyseekError, match="support"):
        extract_patches(np.zeros((10, 10), np.uint8), _frames(), 0)
