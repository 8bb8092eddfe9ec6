from __future__ import annotations

import doctest

import numpy as np
import pytest

import copyseek.graph.knn as knn_module
from copyseek.errors import CopyseekError
from copyseek.graph.knn import GraphParams, KnnGraph, knn_graph
from tests.graph.families import families


def brute_force_lists(x: np.ndarray, k: int) -> np.ndarray:
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def test_docstring_examples_run():
    assert doctest.testmod(knn_module).failed == 0


class TestKnnGraph:
    def test_lists_are_the_exact_neighbours_without_self(self):
        x, _ = families()
        graph = knn_graph(x, k=5)
        assert graph.neighbors.shape == (len(x), 5)
        assert (graph.neighbors != np.arange(len(x))[:, None]).all()
        np.testing.assert_array_equal(np.sort(graph.neighbors, 1), np.sort(brute_force_lists(x, 5), 1))
        sims = np.take_along_axis(x @ x.T, graph.neighbors, 1)
        np.testing.assert_allclose(graph.similarities, sims, atol=1e-5)

    def test_self_is_dropped_even_behind_exact_duplicates(self):
        x = np.eye(4, dtype=np.float32)[[0, 0, 0, 1]]
        graph = knn_graph(x, k=2)
        for i in range(3):
            assert i not in graph.neighbors[i]
            assert set(graph.neighbors[i]) == {0, 1, 2} - {i}

    @pytest.mark.parametrize("symmetrize", ["mutual", "union", "sum"])
    def test_affinity_is_symmetric_without_self_loops(self, symmetrize):
        x, _ = families()
        a = knn_graph(x, k=4, symmetrize=symmetrize).affinity()
        assert abs(a - a.T).max() < 1e-12
        assert a.diagonal().max() == 0

    def test_symmetrizations_differ_as_documented(self):
        x, _ = families(noise=1.0)
        graphs = {s: knn_graph(x, k=3, symmetrize=s).affinity() for s in ("mutual", "union", "sum")}
        w = knn_graph(x, k=3).directed()
        assert graphs["mutual"].nnz < graphs["union"].nnz == graphs["sum"].nnz
        assert abs(graphs["sum"] - (w + w.T)).max() < 1e-12
        mutual = (w > 0).multiply(w.T > 0)
        assert (graphs["mutual"] > 0).sum() == mutual.sum()

    def test_weights_are_clipped_similarity_to_gamma(self):
        x = np.array([[1, 0], [0.8, 0.6], [-1, 0.01]], np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        graph = knn_graph(x, k=2, gamma=3.0, symmetrize="union")
        a = graph.affinity().toarray()
        assert a[0, 1] == pytest.approx(0.8**3, rel=1e-5)
        assert a[0, 2] == 0 and a[1, 2] == 0  # negative similarity: no edge

    def test_isolated_nodes_get_zero_rows_not_nan(self):
        x = np.eye(3, dtype=np.float32)  # orthogonal: every weight is 0
        graph = knn_graph(x, k=2)
        assert graph.isolated().tolist() == [0, 1, 2]
        s = graph.normalized("sym")
        assert np.isfinite(s.data).all() and s.nnz == 0
        rw = graph.normalized("rw-self").toarray()
        np.testing.assert_allclose(rw, np.eye(3))

    def test_normalizations(self):
        x, _ = families()
        graph = knn_graph(x, k=5, symmetrize="union")  # no isolated node
        a, d = graph.affinity().toarray(), graph.degrees()
        np.testing.assert_allclose(graph.normalized("sym").toarray(), a / np.sqrt(np.outer(d, d)), atol=1e-12)
        rw = graph.normalized("rw-self").toarray()
        np.testing.assert_allclose(rw.sum(1), 1.0)
        np.testing.assert_allclose(rw, (a + np.eye(len(a))) / (d + 1)[:, None], atol=1e-12)

    def test_edges_give_back_cosines(self):
        x, _ = families()
        graph = knn_graph(x, k=3)
        i, j, s = graph.edges()
        assert (i < j).all()
        np.testing.assert_allclose(s, np.einsum("ij,ij->i", x[i], x[j]), atol=1e-4)
        assert (graph.edges(min_similarity=0.5)[2] >= 0.5).all()

    def test_fewer_vectors_than_k_are_padded(self):
        graph = knn_graph(np.eye(2, dtype=np.float32), k=4)
        assert (graph.neighbors[:, 1:] == -1).all()
        assert graph.affinity().shape == (2, 2)


class TestChangingNodes:
    def test_extend_equals_building_from_scratch(self):
        x, _ = families()
        grown = knn_graph(x[:100], k=5).extend(x)
        np.testing.assert_array_equal(np.sort(grown.neighbors, 1), np.sort(knn_graph(x, k=5).neighbors, 1))

    def test_remove_equals_building_without_the_rows(self):
        x, _ = families()
        removed = np.arange(0, len(x), 7)
        keep = np.setdiff1d(np.arange(len(x)), removed)
        after = knn_graph(x, k=5).remove(removed, x[keep])
        np.testing.assert_array_equal(np.sort(after.neighbors, 1), np.sort(knn_graph(x[keep], k=5).neighbors, 1))

    def test_save_and_load_round_trip(self, tmp_path):
        x, _ = families()
        graph = knn_graph(x, k=4, gamma=2.0, symmetrize="sum")
        graph.save(tmp_path / "g.npz")
        back = KnnGraph.load(tmp_path / "g.npz")
        assert back.params == graph.params
        np.testing.assert_array_equal(back.neighbors, graph.neighbors)
        assert abs(back.affinity() - graph.affinity()).max() == 0


class TestValidation:
    @pytest.mark.parametrize(
        "options", [{"k": 0}, {"gamma": -1.0}, {"symmetrize": "max"}, {"nprobe": 0}, {"kk": 3}]
    )
    def test_bad_parameters_are_refused_by_name(self, options):
        with pytest.raises(CopyseekError) as error:
            knn_graph(np.eye(3, dtype=np.float32), **{"k": 2, **options})
        assert list(options)[0] in str(error.value)

    @pytest.mark.parametrize("bad", [np.zeros(5), np.full((3, 2), np.nan), np.array([["a", "b"]])])
    def test_bad_vectors_are_refused(self, bad):
        with pytest.raises(CopyseekError):
            knn_graph(bad, k=2)

    def test_extend_refuses_another_dimension(self):
        graph = knn_graph(np.eye(3, dtype=np.float32), k=1)
        with pytest.raises(CopyseekError, match="dimension"):
            graph.extend(np.eye(4, dtype=np.float32))

    def test_params_spec_round_trip(self):
        params = GraphParams(k=7, gamma=2.0, symmetrize="union")
        assert GraphParams(**params.spec()) == params
