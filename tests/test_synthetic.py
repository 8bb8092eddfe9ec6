from __future__ import annotations

import numpy as np

from copyseek.synthetic import synthetic_graphic, synthetic_photo


def test_graphic_is_flat_and_reproducible():
    graphic = synthetic_graphic(np.random.default_rng(3), 200, 150)
    assert graphic.size == (200, 150) and graphic.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(graphic), np.asarray(synthetic_graphic(np.random.default_rng(3), 200, 150)))
    assert not np.array_equal(np.asarray(graphic), np.asarray(synthetic_graphic(np.random.default_rng(4), 200, 150)))
    # flat colours: a few dozen distinct pixels (text antialiasing), where a photo-like image has thousands
    colours = lambda image: len(np.unique(np.asarray(image).reshape(-1, 3), axis=0))  # noqa: E731
    assert colours(graphic) < 100 < 1000 < colours(synthetic_photo(np.random.default_rng(3), 200, 150))
