from __future__ import annotations

import numpy as np
import pytest

from copyseek.errors import CopyseekError
from copyseek.graph.knn import knn_graph
from copyseek.graph.mining import mine_on_manifold, stationary_anchors


def chains(n_chains: int = 6, length: int = 20, dim: int = 16, seed: int = 0):
    """Curved 1-d manifolds: each chain walks away from its start, so its far end is far in Euclidean
    terms but joined to the start through the chain; chains pass near each other."""
    rng = np.random.default_rng(seed)
    points, label = [], []
    for c in range(n_chains):
        start, step = rng.standard_normal(dim), rng.standard_normal(dim)
        bend = rng.standard_normal(dim)
        for t in range(length):
            points.append(start + 0.15 * t * step + 0.01 * t * t * bend + 0.02 * rng.standard_normal(dim))
            label.append(c)
    x = np.array(points)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), np.array(label)


def test_anchors_are_local_degree_maxima():
    x, _ = chains()
    graph = knn_graph(x, k=5)
    anchors = stationary_anchors(graph)
    a, d = graph.affinity(), graph.degrees()
    assert len(anchors) > 0
    for row in anchors:
        assert d[row] >= d[a[row].indices].max()
    assert len(anchors) < graph.n_nodes


def test_positives_are_on_the_anchor_manifold_and_not_euclidean_neighbours():
    x, label = chains()
    graph = knn_graph(x, k=4)
    anchors = np.arange(0, len(x), 10)
    mined = mine_on_manifold(graph, x, anchors, k_positive=4, k_negative=4, euclidean_k=4)
    pos = mined.positives[mined.positives >= 0]
    owners = np.repeat(anchors, 4)[mined.positives.ravel() >= 0]
    assert len(pos) > 0
    assert (label[pos] == label[owners]).mean() >= 0.8
    for i, anchor in enumerate(anchors):
        s = x @ x[anchor]
        s[anchor] = -np.inf
        euclid = set(np.argsort(-s)[:4])
        assert not euclid & set(mined.positives[i][mined.positives[i] >= 0])
        assert set(mined.negatives[i][mined.negatives[i] >= 0]) <= euclid


def test_bad_input_is_refused():
    x, _ = chains()
    graph = knn_graph(x, k=4)
    with pytest.raises(CopyseekError):
        mine_on_manifold(graph, x[:10], np.array([0]))
    with pytest.raises(CopyseekError):
        mine_on_manifold(graph, x, np.array([0]), k_positive=0)
