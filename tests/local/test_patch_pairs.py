import numpy as np
import pytest

from copyseek.errors import CopyseekError
from copyseek.local.features import Frames, SiftParams, detect_frames, downscaled_gray
from copyseek.local.patch_pairs import (
    HPATCHES_LEVELS,
    HPATCHES_OVERLAP,
    KINDS,
    AffineJitter,
    Misregistration,
    disc_overlap,
    make_pair,
    make_pairs,
    map_frames,
)
from tests.local.conftest import photo


def test_map_frames_through_a_similarity():
    theta = np.deg2rad(30)
    similarity = np.array([[2 * np.cos(theta), -2 * np.sin(theta), 5], [2 * np.sin(theta), 2 * np.cos(theta), 7], [0, 0, 1]])
    frames = Frames(np.array([[10, 20]], np.float32), np.array([3.0], np.float32), np.array([45.0], np.float32))
    mapped = map_frames(frames, similarity)
    expected = similarity[:2, :2] @ [10, 20] + [5, 7]
    assert np.allclose(mapped.xy[0], expected, atol=1e-4)
    assert np.isclose(mapped.size[0], 6.0) and np.isclose(mapped.angle[0], 75.0)


def test_pairs_hold_true_correspondences_inside_both_images():
    pairs = list(make_pairs([photo(5)], KINDS, seed=3, sift=SiftParams(max_keypoints=128)))
    assert [p.kind for p in pairs] == list(KINDS)
    for pair in pairs:
        assert len(pair.frames) == len(pair.edited_frames) >= 20
        h, w = pair.edited.shape
        assert (pair.edited_frames.xy >= 0).all() and (pair.edited_frames.xy[:, 0] < w).all()
        assert (pair.edited_frames.xy[:, 1] < h).all()
    rotation = pairs[KINDS.index("rotation")]
    turn = (rotation.edited_frames.angle - rotation.frames.angle) % 360
    assert np.allclose(turn, turn[0], atol=0.01)  # one rotation for every frame


def test_pairs_are_deterministic_per_seed():
    first = list(make_pairs([photo(6)], ("homography",), seed=1))[0]
    again = list(make_pairs([photo(6)], ("homography",), seed=1))[0]
    other = list(make_pairs([photo(6)], ("homography",), seed=2))[0]
    assert np.array_equal(first.edited, again.edited) and not np.array_equal(first.edited_frames.xy, other.edited_frames.xy)


def test_misregistration_noise_has_the_asked_scale():
    frames = Frames(np.zeros((4000, 2), np.float32), np.full(4000, 2.0, np.float32), np.full(4000, 100.0, np.float32))
    rng = np.random.default_rng(0)
    assert Misregistration().apply(frames, rng) is frames
    moved = Misregistration(position=0.5).apply(frames, rng)
    turned = Misregistration(orientation=10).apply(frames, rng)
    assert np.isclose(moved.xy.std(), 1.0, atol=0.05) and np.array_equal(moved.angle, frames.angle)
    assert np.isclose(turned.angle.std(), 10, atol=0.5) and np.array_equal(turned.xy, frames.xy)
    with pytest.raises(CopyseekError):
        Misregistration(position=-1)


def _frames(xy, size, angle=None):
    xy, size = np.asarray(xy, np.float32).reshape(-1, 2), np.asarray(size, np.float32).reshape(-1)
    angle = np.zeros(len(size), np.float32) if angle is None else np.asarray(angle, np.float32)
    return Frames(xy, size, angle)


def test_disc_overlap_by_hand():
    base = _frames([[0, 0]] * 4, [1, 1, 1, 1])
    moved = _frames([[0, 0], [0, 0], [100, 0], [6, 0]], [1, 2, 1, 1])  # same; twice the radius; apart; d = r
    half = 2 * np.arccos(0.5) - 0.5 * np.sqrt(3)  # lens of two unit discs one radius apart (radius 1)
    expected = [1.0, 0.25, 0.0, half / (2 * np.pi - half)]
    assert np.allclose(disc_overlap(base, moved, radius=6.0), expected, atol=1e-6)
    assert np.allclose(disc_overlap(moved, base, radius=6.0), expected, atol=1e-6)  # symmetric


def test_hpatches_levels_have_the_asked_overlap_and_spread():
    n = 20000
    frames = _frames(np.zeros((n, 2)), np.full(n, 3.0), np.random.default_rng(1).uniform(0, 360, n))
    medians = []
    for name, jitter in HPATCHES_LEVELS.items():
        moved = jitter.apply(frames, np.random.default_rng(0))
        medians.append(float(np.median(disc_overlap(frames, moved))))
        assert abs(medians[-1] - HPATCHES_OVERLAP[name]) < 0.01, name
        m = jitter.magnitude
        turn = np.deg2rad((moved.angle - frames.angle + 180) % 360 - 180)
        log_scale = np.log(moved.size / frames.size)
        shift = np.linalg.norm(moved.xy, axis=1) / (jitter.radius * frames.size)
        for component in (turn, log_scale):  # uniform on (-m, m): std m / sqrt(3)
            assert np.abs(component).max() <= m + 1e-4 and np.isclose(component.std(), m / np.sqrt(3), rtol=0.03)
        assert shift.max() <= m * np.sqrt(2) + 1e-4 and np.isclose((moved.xy[:, 0] / (jitter.radius * 3.0)).std(), m / np.sqrt(3), rtol=0.03)
    assert medians[0] > medians[1] > medians[2]
    with pytest.raises(CopyseekError, match="magnitude"):
        AffineJitter(0.0)


def test_jitter_shift_is_in_units_of_the_frames_size():
    frames = _frames(np.zeros((4000, 2)), np.repeat([1.0, 4.0], 2000))
    offset = np.linalg.norm(AffineJitter(0.2, radius=1.5).apply(frames, np.random.default_rng(3)).xy, axis=1)
    assert offset[:2000].max() <= 0.2 * 1.5 * np.sqrt(2) + 1e-5
    assert np.isclose(offset[2000:].mean() / offset[:2000].mean(), 4.0, rtol=0.05)


def test_unknown_kind_is_refused():
    gray = downscaled_gray(photo(0), 448)[0]
    with pytest.raises(CopyseekError, match="unknown edit kind"):
        make_pair(gray, detect_frames(gray, SiftParams()), "swirl", np.random.default_rng(0))
