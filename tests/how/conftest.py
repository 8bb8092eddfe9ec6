"""HOW fixtures: photos, and options for the tiny HOW model of tests/conftest.py."""

from __future__ import annotations

import numpy as np
import pytest

from copyseek.synthetic import synthetic_photo


def photo(seed: int, width: int = 256, height: int = 192) -> np.ndarray:
    return np.array(synthetic_photo(np.random.default_rng(seed), width, height))


@pytest.fixture
def branch_options(tiny_how) -> dict:
    return {"model": str(tiny_how), "max_side": 128, "scales": "1,0.5", "features": 60, "threads": 1}
