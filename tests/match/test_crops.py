import numpy as np
import pytest

from copyseek.detect.regions import CLASSES, Regions
from copyseek.errors import CopyseekError
from copyseek.match.crops import CROP_POLICIES, USES_DETECTOR, CropRequest, masked_overlays
from copyseek.match.fusion import FusionParams


def regions(*rows):
    """rows of (x0, y0, x1, y1, score, label name)."""
    boxes = np.array([r[:4] for r in rows], np.float32).reshape(-1, 4)
    return Regions(boxes, np.array([r[4] for r in rows], np.float32), np.array([CLASSES.index(r[5]) for r in rows]))


IMAGE = np.full((200, 300, 3), 100, np.uint8)
DETECTED = regions((10, 10, 110, 90, 0.9, "copy"), (150, 100, 290, 190, 0.5, "copy"), (0, 0, 300, 200, 0.8, "copy"),
                   (200, 10, 240, 50, 0.7, "overlay"), (20, 150, 60, 190, 0.1, "overlay"))


def request(detected=DETECTED, local=np.zeros((0, 4)), frame_threshold=0.6):
    return CropRequest(IMAGE, local, detected, box_threshold=0.3, frame_threshold=frame_threshold)


def test_grid_is_the_fixed_boxes_and_local_regions():
    assert len(CROP_POLICIES["grid"](request())) == 9
    assert len(CROP_POLICIES["grid"](request(local=np.array([[50, 50, 150, 150]])))) == 10
    assert len(CROP_POLICIES["local"](request(local=np.array([[50, 50, 150, 150]])))) == 1
    assert "grid" not in USES_DETECTOR and "best" in USES_DETECTOR


def test_best_crops_the_best_copy_and_masks_overlays():
    crops = CROP_POLICIES["best"](request())
    assert len(crops) == 2
    assert crops[0].shape[:2] == (round(80 * 1.1), round(100 * 1.1))  # grown by 5% each side
    masked = crops[1]
    assert masked.shape == IMAGE.shape and np.array_equal(masked, IMAGE)  # a uniform image stays uniform


def test_boxes_take_every_copy_above_threshold_but_not_the_whole_frame():
    assert len(CROP_POLICIES["boxes"](request())) == 3  # two copies (the whole-frame one is dropped) + masked
    assert len(CROP_POLICIES["boxes+grid"](request())) == 3 + 9
    assert len(CROP_POLICIES["best"](request(Regions.empty()))) == 0


def test_masking_fills_overlays_and_refuses_large_ones():
    image = np.zeros((100, 100, 3), np.uint8)
    image[:, 50:] = 200
    masked = masked_overlays(image, np.array([[0.0, 0.0, 20.0, 20.0]]))
    assert masked[5, 5, 0] == int(200 * 5000 / 9600)  # the mean of the 9,600 pixels left uncovered
    assert masked[50, 80, 0] == 200
    assert masked_overlays(image, np.array([[0.0, 0.0, 100.0, 80.0]])) is None
    assert masked_overlays(image, np.zeros((0, 4))) is None


def test_fusion_params_check_the_policy():
    with pytest.raises(CopyseekError, match="unknown crop policy"):
        FusionParams(crop_policy="everything")
    with pytest.raises(CopyseekError, match="box_threshold"):
        FusionParams(box_threshold=2.0)
    with pytest.raises(CopyseekError, match="frame_threshold"):
        FusionParams(frame_threshold=-0.1)


def test_else_grid_policies_keep_the_grid_only_where_the_detector_cannot_place_the_copy():
    partial = regions((10, 10, 110, 90, 0.9, "copy"))
    whole = regions((0, 0, 300, 200, 0.8, "copy"))
    nothing = regions((10, 10, 110, 90, 0.2, "copy"))  # below box_threshold
    local = np.array([[50, 50, 150, 150]])
    for policy in ("best-else-grid", "partial-else-grid", "sure-else-grid"):
        assert policy in USES_DETECTOR
        crops = CROP_POLICIES[policy](request(partial, local))
        assert [c.shape[:2] for c in crops] == [(110, 110), (88, 110)]  # local region, then the copy box
        assert len(CROP_POLICIES[policy](request(nothing, local))) == 1 + 9  # as grid
    assert len(CROP_POLICIES["best-else-grid"](request(whole))) == 0  # the copy is the whole query
    assert len(CROP_POLICIES["partial-else-grid"](request(whole))) == 9
    assert len(CROP_POLICIES["partial-else-grid"](request(Regions.empty()))) == 9


def test_sure_else_grid_keeps_the_grid_for_a_whole_frame_box_below_frame_threshold():
    sure = CROP_POLICIES["sure-else-grid"]
    assert "sure-else-grid" in USES_DETECTOR
    whole = regions((0, 0, 300, 200, 0.625, "copy"), (200, 10, 240, 50, 0.7, "overlay"))
    assert [c.shape for c in sure(request(whole, frame_threshold=0.6))] == [IMAGE.shape]  # the masked query only
    assert len(sure(request(whole, frame_threshold=0.7))) == 9 + 1  # the grid and the masked query
    assert len(sure(request(whole, frame_threshold=0.625))) == 1  # the threshold itself counts as sure
    weak_partial = regions((10, 10, 110, 90, 0.35, "copy"))  # any partial box above box_threshold places the copy
    assert [c.shape[:2] for c in sure(request(weak_partial, frame_threshold=0.9))] == [(88, 110)]
    assert len(sure(request(Regions.empty(), frame_threshold=0.0))) == 9
    # a whole-frame box below box_threshold does not count, however low frame_threshold is
    assert len(sure(request(regions((0, 0, 300, 200, 0.2, "copy")), frame_threshold=0.0))) == 9
