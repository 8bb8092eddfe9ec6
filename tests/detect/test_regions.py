import numpy as np
import pytest

from copyseek.detect.regions import (
    CLASSES, REGION_COLOURS, Regions, box_iou, decode, draw_regions, one_copy_scores, suppress_copies,
)
from copyseek.errors import CopyseekError


def test_decode_reads_peaks_sizes_and_offsets():
    heat = np.zeros((2, 10, 10), np.float32)
    heat[0, 4, 3] = 0.9   # a copy centred in cell (x=3, y=4)
    heat[0, 4, 4] = 0.5   # its neighbour, not a local maximum
    heat[1, 1, 8] = 0.6   # an overlay
    size = np.zeros((2, 10, 10), np.float32)
    size[:, 4, 3] = (4, 2)
    size[:, 1, 8] = (2, 2)
    offset = np.full((2, 10, 10), 0.5, np.float32)
    regions = decode(heat, size, offset, (100, 50))  # a cell is 10 x 5 pixels
    assert len(regions) == 2
    assert list(regions.labels) == [CLASSES.index("copy"), CLASSES.index("overlay")]
    assert np.allclose(regions.boxes[0], [15, 17.5, 55, 27.5])  # centre (3.5, 4.5) cells, 4 x 2 cells
    assert np.allclose(regions.scores, [0.9, 0.6])


def test_max_copies_keeps_the_best_copy_peaks_and_every_overlay():
    heat = np.zeros((2, 8, 8), np.float32)
    heat[0, 1, 1], heat[0, 5, 5], heat[0, 1, 6] = 0.4, 0.7, 0.5
    heat[1, 3, 3], heat[1, 6, 1] = 0.6, 0.3
    args = (np.ones((2, 8, 8)), np.zeros((2, 8, 8)), (80, 80))
    one = decode(heat, *args, max_copies=1)
    assert np.allclose(one.of("copy").scores, [0.7]) and np.allclose(one.of("overlay").scores, [0.6, 0.3])
    assert np.allclose(decode(heat, *args, max_copies=2, one_copy=False).of("copy").scores, [0.7, 0.5])
    assert len(decode(heat, *args).of("copy")) == 3


def test_box_iou():
    iou = box_iou(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]]))
    assert np.allclose(iou, [[1.0, 50 / 150, 0.0]])


def test_copy_peaks_of_one_box_are_suppressed_and_distinct_copies_kept():
    # three copy peaks: two 2 cells apart (both local maxima) with 8 x 8-cell boxes (IoU 0.6), one
    # far away; an overlay on the first copy is not a copy box and stays
    heat = np.zeros((2, 20, 20), np.float32)
    heat[0, 5, 5], heat[0, 5, 7], heat[0, 15, 15] = 0.9, 0.8, 0.5
    heat[1, 5, 5] = 0.6
    size = np.full((2, 20, 20), 8.0, np.float32)
    offset = np.zeros((2, 20, 20), np.float32)
    raw = {"one_copy": False}
    regions = decode(heat, size, offset, (100, 100), **raw)
    assert np.allclose(regions.of("copy").scores, [0.9, 0.5]) and np.allclose(regions.of("overlay").scores, [0.6])
    assert np.allclose(decode(heat, size, offset, (100, 100), copy_nms_iou=1.0, **raw).of("copy").scores, [0.9, 0.8, 0.5])
    assert np.allclose(decode(heat, size, offset, (100, 100), copy_nms_iou=0.7, **raw).of("copy").scores, [0.9, 0.8, 0.5])
    assert np.allclose(decode(heat, size, offset, (100, 100), max_copies=1).of("copy").scores, [0.9])


def test_suppress_copies_caps_copies_after_suppression_and_stops_at_the_limit():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [0, 0, 10, 10], [80, 80, 90, 90]], np.float32)
    labels = np.array([0, 0, 0, 1, 0])
    assert list(suppress_copies(boxes, labels, 0.5, 0, 10)) == [0, 2, 3, 4]
    assert list(suppress_copies(boxes, labels, 0.5, 2, 10)) == [0, 2, 3]
    assert list(suppress_copies(boxes, labels, 0.5, 0, 2)) == [0, 2]


def test_min_score_top_k_and_class_filter():
    heat = np.zeros((2, 6, 6), np.float32)
    heat[0, 1, 1], heat[0, 4, 4], heat[1, 1, 4] = 0.8, 0.3, 0.04
    regions = decode(heat, np.ones((2, 6, 6)), np.zeros((2, 6, 6)), (60, 60), top_k=5, min_score=0.05)
    assert len(regions) == 2
    assert len(regions.of("copy", 0.5)) == 1 and len(regions.of("overlay")) == 0
    assert len(decode(heat, np.ones((2, 6, 6)), np.zeros((2, 6, 6)), (60, 60), top_k=1)) == 1
    with pytest.raises(CopyseekError, match="unknown region class"):
        regions.of("emoji")


def test_regions_check_shapes():
    with pytest.raises(CopyseekError):
        Regions(np.zeros((2, 4)), np.zeros(3), np.zeros(3, np.int64))
    assert len(Regions.empty()) == 0


def test_one_copy_scores_are_the_chance_that_no_better_box_is_the_copy():
    boxes = np.zeros((4, 4), np.float32)
    regions = Regions(boxes, np.array([0.9, 0.6, 0.5, 0.4], np.float32), np.array([0, 1, 0, 0]))
    rescored = one_copy_scores(regions)
    assert np.allclose(rescored.of("copy").scores, [0.9, 0.5 * 0.1, 0.4 * 0.1 * 0.5])  # sure first: runners-up fall
    assert np.allclose(rescored.of("overlay").scores, [0.6]) and list(rescored.labels) == [0, 1, 0, 0]
    assert np.all(np.diff(rescored.scores) <= 0)  # best first again
    unsure = one_copy_scores(Regions(boxes[:2], np.array([0.4, 0.35], np.float32), np.array([0, 0])))
    assert np.allclose(unsure.scores, [0.4, 0.35 * 0.6])  # an unsure first keeps its runner-up high
    heat = np.zeros((2, 20, 20), np.float32)
    heat[0, 5, 5], heat[0, 15, 15] = 0.9, 0.5
    decoded = decode(heat, np.full((2, 20, 20), 4.0, np.float32), np.zeros((2, 20, 20), np.float32), (100, 100))
    assert np.allclose(decoded.scores, [0.9, 0.05])  # decode scores this way by default


def test_drawn_regions_outline_the_boxes_and_leave_the_rest():
    rgb = np.zeros((100, 200, 3), np.uint8)
    regions = Regions(np.array([[20, 10, 120, 90], [150, 20, 190, 40]], np.float32), np.array([0.9, 0.1], np.float32),
                      np.array([0, 1]))
    drawn = np.asarray(draw_regions(rgb, regions, min_score=0.5))
    assert drawn.shape == rgb.shape
    assert tuple(drawn[50, 20]) == REGION_COLOURS["copy"] and tuple(drawn[89, 70]) == REGION_COLOURS["copy"]
    assert not drawn[50, 70].any()  # inside the box: untouched
    assert not drawn[30, 170].any() and not drawn[20, 170].any()  # the weak overlay is below min_score


def test_mirrored_regions_map_back_and_two_views_fuse_into_one_set():
    from copyseek.detect.regions import fuse_views, mirrored

    seen = Regions(np.array([[10.0, 5.0, 30.0, 25.0]], np.float32), np.array([0.8], np.float32), np.array([0]))
    assert mirrored(seen, 100).boxes.tolist() == [[70.0, 5.0, 90.0, 25.0]]
    own = Regions(np.array([[0, 0, 40, 40], [50, 50, 60, 60]], np.float32), np.array([0.9, 0.6], np.float32),
                  np.array([0, 1]))
    other = Regions(np.array([[4, 0, 44, 40], [50, 50, 60, 60], [0, 60, 10, 70]], np.float32),
                    np.array([0.3, 0.5, 0.4], np.float32), np.array([0, 0, 1]))
    fused = fuse_views(own, other)
    # the copy boxes pair (IoU 0.82): score-weighted mean box, mean score; the overlay at (50, 50)
    # has no overlay partner (the other view called it a copy), so every unpaired box keeps half its score
    assert np.allclose(fused.boxes[0], [1.0, 0, 41.0, 40]) and np.isclose(fused.scores[0], 0.6)
    assert sorted(zip(fused.scores.astype(float).round(3).tolist(), fused.labels.tolist())) == [(0.2, 1), (0.25, 0), (0.3, 1), (0.6, 0)]
    assert np.all(np.diff(fused.scores) <= 0)  # best first
    empty = Regions(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    assert len(fuse_views(empty, empty).boxes) == 0 and np.allclose(fuse_views(own, empty).scores, [0.45, 0.3])


def dense_decode(heat, size, offset, image_size, min_score, **settings):
    """The decoder as written before session 19: every cell's 3x3 maximum, the whole map sorted."""
    from copyseek.detect.regions import _boxes

    padded = np.pad(heat, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    h, w = heat.shape[1:]
    local_max = np.stack([padded[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)]).max(axis=0)
    scores = np.where(heat >= local_max, heat, 0.0).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    order = order[scores[order] >= min_score]
    boxes, labels = _boxes(order, size, offset, (h, w), image_size)
    kept = suppress_copies(boxes, labels, settings["copy_nms_iou"], settings["max_copies"], settings["top_k"])
    return Regions(boxes[kept], scores[order[kept]].astype(np.float32), labels[kept])


@pytest.mark.parametrize("min_score", [0.05, 0.3, 0.0])
def test_decoding_only_the_cells_above_the_floor_changes_nothing(min_score):
    rng = np.random.default_rng(7)
    for _ in range(20):
        heat = (rng.integers(0, 12, (2, 12, 12)) / 12).astype(np.float32) ** 3  # ties and plateaus too
        size, offset = rng.uniform(0, 6, (2, 12, 12)), rng.uniform(0, 1, (2, 12, 12))
        settings = {"top_k": 20, "max_copies": 3, "copy_nms_iou": 0.5}
        fast = decode(heat, size, offset, (120, 90), min_score=min_score, one_copy=False, **settings)
        slow = dense_decode(heat, size, offset, (120, 90), min_score, **settings)
        assert np.array_equal(fast.boxes, slow.boxes) and np.array_equal(fast.labels, slow.labels)
        assert np.array_equal(fast.scores, slow.scores)


def looped_fuse_views(own, other, iou):
    """The mirror fusion as written before session 19, one box at a time."""
    overlap = box_iou(own.boxes, other.boxes)
    paired = np.zeros(len(other.boxes), bool)
    boxes, scores, labels = [], [], []
    for k in range(len(own.boxes)):
        candidates = (overlap[k] >= iou) & (other.labels == own.labels[k]) & ~paired
        if candidates.any():
            j = int(np.argmax(np.where(candidates, overlap[k], -1.0)))
            paired[j] = True
            w_own, w_other = own.scores[k], other.scores[j]
            boxes.append((w_own * own.boxes[k] + w_other * other.boxes[j]) / max(w_own + w_other, 1e-12))
            scores.append((w_own + w_other) / 2)
        else:
            boxes.append(own.boxes[k])
            scores.append(own.scores[k] / 2)
        labels.append(own.labels[k])
    for j in np.flatnonzero(~paired):
        boxes.append(other.boxes[j])
        scores.append(other.scores[j] / 2)
        labels.append(other.labels[j])
    scores_array = np.asarray(scores, np.float32)
    order = np.argsort(-scores_array, kind="stable")
    return Regions(np.asarray(boxes, np.float32).reshape(-1, 4)[order], scores_array[order],
                   np.asarray(labels, np.int64)[order])


def test_fusing_the_views_on_whole_arrays_changes_nothing():
    from copyseek.detect.regions import fuse_views

    rng = np.random.default_rng(3)

    def regions(n):
        corner = rng.integers(0, 40, (n, 2)).astype(np.float32)  # a coarse grid: equal overlaps happen
        boxes = np.concatenate([corner, corner + rng.integers(5, 40, (n, 2))], axis=1).astype(np.float32)
        return Regions(boxes, np.sort(rng.integers(1, 10, n) / 10).astype(np.float32)[::-1].copy(), rng.integers(0, 2, n))

    for n, m in [(0, 0), (3, 0), (0, 4), (1, 1)] + [(int(a), int(b)) for a, b in rng.integers(1, 15, (40, 2))]:
        own, other = regions(n), regions(m)
        for iou in (0.0, 0.3, 0.55):
            fast, slow = fuse_views(own, other, iou), looped_fuse_views(own, other, iou)
            assert np.array_equal(fast.boxes, slow.boxes) and np.array_equal(fast.scores, slow.scores)
            assert np.array_equal(fast.labels, slow.labels)
