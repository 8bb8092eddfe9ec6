import numpy as np
import pytest

from copyseek.match.normalize import BackgroundNormalizer


def unit(rows):
    rows = np.asarray(rows, np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_offset_is_beta_times_mean_of_top_n_background_similarities():
    background = unit([[1, 0, 0], [0.8, 0.6, 0], [0, 1, 0], [0, 0, 1]])
    query = unit([[1, 0, 0]])
    offsets = BackgroundNormalizer(background, beta=0.5, n=2).offsets(query)
    assert offsets[0] == pytest.approx(0.5 * (1.0 + 0.8) / 2)


def test_n_larger_than_background_uses_all():
    background = unit([[1, 0], [0, 1]])
    assert BackgroundNormalizer(background, n=5).offsets(unit([[1, 1]]))[0] == pytest.approx(np.sqrt(0.5))
