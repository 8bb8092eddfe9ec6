"""Toy descriptor sets with known families, shared by the graph tests."""

from __future__ import annotations

import numpy as np


def families(n_families: int = 30, size: int = 8, dim: int = 32, noise: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(vectors (n, dim) unit rows, family (n,)): members are a family centre plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_families, dim))
    x = np.repeat(centres, size, axis=0) + noise * rng.standard_normal((n_families * size, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), np.repeat(np.arange(n_families), size)
