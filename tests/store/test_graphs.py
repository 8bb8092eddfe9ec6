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
        first = index_graph(index, params).graph
        assert first.n_nodes == 12 and graph_path(index, params).is_file()
        index.add(write_photos(tmp_path / "more", 4, seed=5, prefix="new")[0].parent, progress=False)
        grown = index_graph(index, params)
        assert grown.graph.n_nodes == 16 and grown.ids == list(index.ids)
        np.testing.assert_array_equal(grown.nodes_of_rows(np.array([3, -1, 15])), [3, -1, 15])
        assert same_lists(grown.graph, knn_graph(index_vectors(index), **params.spec()))
    with Index.open(tmp_path / "idx") as index:  # reopened: read back, not rebuilt
        assert same_lists(index_graph(index, params).graph, grown.graph)


def test_removed_references_leave_the_graph():
    x, _ = families(n_families=10, size=5)
    ids = [f"R{i}" for i in range(len(x))]
    params = GraphParams(k=4)
    keep = [i for i in range(len(x)) if i % 6]
    kept_ids = [ids[i] for i in keep] + ["N1", "N2"]
    vectors = np.vstack([x[keep], x[:2] * -1])
    after = updated(knn_graph(x, **params.spec()), ids, kept_ids, vectors, params)
    assert same_lists(after, knn_graph(vectors, **params.spec()))


class FakeIndex:
    """What index_graph reads from an index: ids by searcher row (None = removed, features still
    stored until compaction), the global searcher's reconstruct, the folder."""

    def __init__(self, path, vectors, ids):
        self.path, self.ids, self.branches = path, ids, {"global": None}
        self._vectors = vectors

    def searchers(self):
        vectors = self._vectors

        class Searcher:
            def reconstruct(self, rows):
                return vectors[rows]

        return {"global": Searcher()}


def test_removed_but_stored_references_are_not_nodes(tmp_path):
    x, _ = families(n_families=6, size=5)
    ids = [f"R{i}" for i in range(len(x))]
    params = GraphParams(k=3)
    index = FakeIndex(tmp_path, x, ids)
    assert index_graph(index, params).graph.n_nodes == 30
    index.ids = [None if i in (0, 7) else r for i, r in enumerate(ids)]  # two references removed
    nodes = index_graph(index, params)
    assert nodes.ids == [r for r in index.ids if r is not None] and nodes.graph.n_nodes == 28
    np.testing.assert_array_equal(nodes.nodes_of_rows(np.array([0, 1, 7, 8])), [-1, 0, -1, 6])
    keep = [i for i in range(30) if i not in (0, 7)]
    assert same_lists(nodes.graph, knn_graph(x[keep], **params.spec()))
