from __future__ import annotations

import numpy as np
import pytest

from copyseek.graph.knn import GraphParams, knn_graph
from copyseek.store.graphs import graph_path, index_graph, index_vectors, updated
from copyseek.store.index import Index
from tests.graph.families import families
from tests.making import write_photos


@pytest.fixture
def tiny_options(tiny_onnx):
    return {"global": {"model": f"onnx:{tiny_onnx}", "resize": "square:64"}}


def same_lists(a, b) -> bool:
    return np.array_equal(np.sort(a.neighbors, 1), np.sort(b.neighbors, 1))


def test_the_graph_follows_the_index_as_it_grows(tmp_path, photos, tiny_options):
    params = GraphParams(k=3)
    with Index.create(tmp_path / "idx", options=tiny_options) as index:
        index.add(photos[0].parent, progress=False)
        first = index_graph(index, params)
        assert first.n_nodes == 12 and graph_path(index, params).is_file()
        index.add(write_photos(tmp_path / "more", 4, seed=5, prefix="new")[0].parent, progress=False)
        grown = index_graph(index, params)
        assert grown.n_nodes == 16
        assert same_lists(grown, knn_graph(index_vectors(index), **params.spec()))
    with Index.open(tmp_path / "idx") as index:  # reopened: read back, not rebuilt
        assert same_lists(index_graph(index, params), grown)


def test_removed_references_leave_the_graph():
    x, _ = families(n_families=10, size=5)
    ids = [f"R{i}" for i in range(len(x))]
    params = GraphParams(k=4)
    keep = [i for i in range(len(x)) if i % 6]
    kept_ids = [ids[i] for i in keep] + ["N1", "N2"]
    vectors = np.vstack([x[keep], x[:2] * -1])
    after = updated(knn_graph(x, **params.spec()), ids, kept_ids, vectors, params)
    assert same_lists(after, knn_graph(vectors, **params.spec()))
