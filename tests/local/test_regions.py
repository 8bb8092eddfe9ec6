import numpy as np
import pytest

from copyseek.errors import CopyseekError
from copyseek.local.regions import FIXED_BOXES, crop_boxes, query_crops


def test_fixed_crops_only():
    boxes = crop_boxes(400, 300)
    assert len(boxes) == len(FIXED_BOXES) == 9
    assert boxes[0].tolist() == [0, 0, 200, 150] and boxes[4].tolist() == [80, 60, 320, 240]


def test_regions_come_first_grown_and_clipped():
    boxes = crop_boxes(400, 300, np.array([[100, 100, 200, 180], [350, 250, 400, 300]]), margin=0.1)
    assert boxes[0].tolist() == [90, 92, 210, 188]
    assert boxes[1].tolist() == [345, 245, 400, 300]
    assert len(boxes) == 2 + 9


def test_tiny_whole_and_repeated_regions_are_dropped():
    regions = [[10, 10, 20, 20], [0, 0, 400, 300], [0, 0, 200, 150], [0, 0, 200, 150]]
    boxes = crop_boxes(400, 300, np.array(regions, np.float32), margin=0.0)
    assert boxes.tolist() == crop_boxes(400, 300).tolist()
    assert len(crop_boxes(400, 300, None, fixed=False)) == 0


def test_crops_are_the_boxes_pixels():
    image = np.arange(300 * 400 * 3, dtype=np.uint32).reshape(300, 400, 3).astype(np.uint8)
    crops = query_crops(image, np.array([[100, 50, 300, 250]]), margin=0.0)
    assert len(crops) == 10
    assert np.array_equal(crops[0], image[50:250, 100:300])
    assert crops[5].shape == (180, 240, 3) and crops[6].shape == (300, 200, 3)  # centre, left half


def test_rejects_inverted_boxes():
    with pytest.raises(CopyseekError, match="x0 <= x1"):
        crop_boxes(400, 300, np.array([[200, 0, 100, 50]]))
