"""Box AP against a hand-computed example (COCO's rules: greedy matching by score, monotone
precision, 101 recall points, IoU 0.50:0.05:0.95)."""

import numpy as np
import pytest

from copyseek.detect.ap import average_precision, evaluate_regions
from copyseek.detect.regions import Regions


# image A: truths g1, g2; detections d1 (0.9, exact on g1), d2 (0.8, nowhere), d3 (0.7, IoU 0.62 with g2)
# image B: truth g3; detection d4 (0.85, exact)
DETECTIONS = [
    (np.array([[0, 0, 10, 10], [50, 50, 60, 60], [20, 0, 30, 6.2]]), np.array([0.9, 0.8, 0.7])),
    (np.array([[5, 5, 25, 25]]), np.array([0.85])),
]
TRUTHS = [np.array([[0, 0, 10, 10], [20, 0, 30, 10]]), np.array([[5, 5, 25, 25]])]


def test_hand_example_at_each_threshold():
    # IoU 0.5: TP TP FP TP -> precision envelope 1 up to recall 2/3 (67 of 101 points), then 0.75
    assert average_precision(DETECTIONS, TRUTHS, 0.5) == pytest.approx((67 + 34 * 0.75) / 101)
    # IoU 0.65: d3 misses -> precision 1 up to recall 2/3, 0 beyond
    assert average_precision(DETECTIONS, TRUTHS, 0.65) == pytest.approx(67 / 101)


def test_evaluate_regions_averages_thresholds_and_separates_classes():
    predicted = [Regions(boxes.astype(np.float32), scores.astype(np.float32), np.zeros(len(scores), np.int64))
                 for boxes, scores in DETECTIONS]
    result = evaluate_regions(predicted, [{"copy": t} for t in TRUTHS])
    high, low = (67 + 34 * 0.75) / 101, 67 / 101
    assert result["copy"]["AP50"] == pytest.approx(high)
    assert result["copy"]["AP"] == pytest.approx((3 * high + 7 * low) / 10)  # 0.50, 0.55, 0.60 keep d3
    assert np.isnan(result["overlay"]["AP50"])  # no overlay truth anywhere


def test_a_truth_is_matched_once_and_missed_truths_cost_recall():
    dets = [(np.array([[0, 0, 10, 10], [0, 0, 10, 10]]), np.array([0.9, 0.8]))]
    # the duplicate is a false positive; half the truths are never found -> AP 0.5 (51 of 101 points)
    assert average_precision(dets, [np.array([[0, 0, 10, 10], [40, 40, 50, 50]])], 0.5) == pytest.approx(51 / 101)
