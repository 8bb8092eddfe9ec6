from __future__ import annotations

import numpy as np
import pytest

from copyseek.local.verify import Verification


def verification(points_query, points_reference) -> Verification:
    pairs = np.hstack([np.asarray(points_query, np.float32), np.asarray(points_reference, np.float32)])
    return Verification(len(pairs), pairs, np.zeros(4, np.float32))


class TestCoverage:
    def test_is_the_smaller_share_of_the_two_images(self):
        # the inliers span 50 x 40 of a 100 x 100 query (0.2) and of a 200 x 100 reference (0.1)
        v = verification([(10, 10), (60, 50), (30, 20)], [(10, 10), (60, 50), (30, 20)])
        assert v.coverage((100, 100), (200, 100)) == pytest.approx(0.1)
        assert v.coverage((100, 100), (100, 100)) == pytest.approx(0.2)

    def test_a_small_patch_covers_little_and_no_inlier_nothing(self):
        patch = verification([(0, 0), (10, 10)], [(300, 200), (310, 210)])
        assert patch.coverage((320, 240), (320, 240)) == pytest.approx(100 / (320 * 240))
        assert Verification.none().coverage((320, 240), (320, 240)) == 0.0
