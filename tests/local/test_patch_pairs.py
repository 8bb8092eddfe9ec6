import numpy as np
import pytest

from copyseek.errors import CopyseekError
from copyseek.local.features import Frames, SiftParams, detect_frames, downscaled_gray
from copyseek.local.patch_pairs import KINDS, Misregistration, make_pair, make_pairs, map_frames
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


def test_unknown_kind_is_refused():
    gray = downscaled_gray(photo(0), 448)[0]
    with pytest.raises(CopyseekError, match="unknown edit kind"):
        make_pair(gray, detect_frames(gray, SiftParams()), "swirl", np.random.default_rng(0))
