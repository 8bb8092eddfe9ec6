import numpy as np
import pytest

from copyseek.errors import CopyseekError
from copyseek.local.features import MIRROR_PERMUTATION, SiftParams, downscaled_gray, sift_features
from tests.local.conftest import photo


def test_keypoint_cap_keeps_the_strongest():
    image = photo(1, 640, 480)
    many_xy, many = sift_features(image, SiftParams(max_keypoints=300))
    few_xy, few = sift_features(image, SiftParams(max_keypoints=50))
    assert len(many) == 300 and few.shape == (50, 128) and few_xy.shape == (50, 2)
    # the 50 strongest are the first 50 of the 300 strongest
    assert np.abs(many_xy[:50] - few_xy).max() < 1e-3


def test_positions_are_in_pixels_of_the_input_image():
    image = photo(2, 1200, 800)
    gray, scale = downscaled_gray(image, 448)
    assert gray.shape == (299, 448) and scale == pytest.approx(448 / 1200)
    xy, _ = sift_features(image, SiftParams(max_side=448))
    assert xy[:, 0].max() > 900 and xy[:, 1].max() > 600
    assert (xy >= -1).all() and (xy[:, 0] < 1200).all() and (xy[:, 1] < 800).all()


def test_rootsift_is_unit_norm():
    _, desc = sift_features(photo(3), SiftParams())
    assert np.allclose(np.linalg.norm(desc, axis=1), 1.0, atol=1e-4)


def test_mirror_permutation_predicts_the_mirrored_image_descriptors():
    image = photo(4, 480, 360)
    params = SiftParams(max_keypoints=400)
    xy, desc = sift_features(image, params)
    mxy, mdesc = sift_features(np.ascontiguousarray(image[:, ::-1]), params)
    mxy[:, 0] = image.shape[1] - 1 - mxy[:, 0]
    gap = np.linalg.norm(xy[:, None] - mxy[None], axis=2)
    i, j = np.nonzero(gap < 1.0)  # OpenCV's keypoints are not exactly mirror-symmetric (sub-pixel)
    assert len(i) > 200
    permuted = np.linalg.norm(desc[i][:, MIRROR_PERMUTATION] - mdesc[j], axis=1)
    plain = np.linalg.norm(desc[i] - mdesc[j], axis=1)
    # several keypoints share a position (one per orientation); the best pairing must be near exact
    assert np.median(permuted) < 0.3 * np.median(plain)
    assert np.mean(np.minimum.reduceat(permuted, np.flatnonzero(np.r_[True, np.diff(i) > 0])) < 0.1) > 0.8


def test_permutation_is_an_involution():
    assert sorted(MIRROR_PERMUTATION) == list(range(128))
    assert (MIRROR_PERMUTATION[MIRROR_PERMUTATION] == np.arange(128)).all()


def test_flat_image_has_no_keypoints():
    xy, desc = sift_features(np.full((200, 300, 3), 128, np.uint8), SiftParams())
    assert xy.shape == (0, 2) and desc.shape == (0, 128)


@pytest.mark.parametrize(
    "bad", [np.zeros((50, 50), np.uint8), np.zeros((50, 50, 3), np.float32), np.zeros((5, 5, 4), np.uint8)]
)
def test_rejects_images_that_are_not_rgb_uint8(bad):
    with pytest.raises(CopyseekError, match="RGB"):
        sift_features(bad, SiftParams())


@pytest.mark.parametrize("kwargs", [{"max_side": 10}, {"max_keypoints": 0}, {"contrast_threshold": 0.0}])
def test_rejects_bad_parameters(kwargs):
    with pytest.raises(CopyseekError):
        SiftParams(**kwargs)
