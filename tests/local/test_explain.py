import numpy as np
import pytest
from PIL import Image

from copyseek.errors import CopyseekError
from copyseek.local.explain import BANNER, GAP, HEIGHT, draw_pair


def test_draws_side_by_side_with_lines_region_and_scores(tmp_path):
    query = np.full((240, 320, 3), 200, np.uint8)
    reference = np.full((480, 480, 3), 60, np.uint8)
    pairs = np.array([[50, 60, 100, 120], [200, 100, 400, 200], [300, 200, 470, 470]], np.float32)
    region = np.array([40, 40, 200, 160])
    path = draw_pair(query, reference, pairs, region, {"global": 0.71, "local": 38}, tmp_path / "pair.png")
    picture = np.asarray(Image.open(path).convert("RGB"))
    assert picture.shape == (BANNER + HEIGHT, 640 + GAP + 480, 3)
    red = (picture[..., 0] > 200) & (picture[..., 1] < 80) & (picture[..., 2] < 80)
    green = (picture[..., 1] > 150) & (picture[..., 0] < 60) & (picture[..., 2] < 60)
    assert red[BANNER + 80, 80:400].any()  # the region's top edge at y = 40 * 2
    assert green.sum() > 200  # inlier lines
    assert (picture[:BANNER] < 50).all(axis=2).sum() > 100  # the printed scores


def test_no_matches_still_draws_the_pair(tmp_path):
    image = np.zeros((100, 100, 3), np.uint8)
    path = draw_pair(image, image, None, None, {}, tmp_path / "empty.png")
    assert Image.open(path).size == (2 * HEIGHT + GAP, BANNER + HEIGHT)


def test_unwritable_path_is_a_clear_error(tmp_path):
    image = np.zeros((100, 100, 3), np.uint8)
    with pytest.raises(CopyseekError, match="cannot write"):
        draw_pair(image, image, None, None, {}, tmp_path / "missing" / "pair.png")
    with pytest.raises(CopyseekError, match="RGB"):
        draw_pair(image[..., 0], image, None, None, {}, tmp_path / "pair.png")
