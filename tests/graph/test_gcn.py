from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from copyseek.errors import CopyseekError  # noqa: E402
from copyseek.graph.gcn import GCNParams, GraphConvolution, gcn_relevance, graph_convolution, sparse_tensor  # noqa: E402
from copyseek.graph.knn import knn_graph  # noqa: E402
from tests.graph.families import families  # noqa: E402


class TestLayer:
    def test_function_is_s_x_w_and_matches_a_dense_loop(self):
        x, _ = families(n_families=3, size=4, dim=8)
        s = knn_graph(x, k=3, symmetrize="union").normalized("rw-self")
        w = torch.randn(8, 5)
        out = graph_convolution(torch.from_numpy(x), sparse_tensor(s), w)
        dense = s.toarray()
        expected = np.array([[sum(dense[i, j] * (x[j] @ w.numpy()[:, c]) for j in range(len(x))) for c in range(5)] for i in range(len(x))])
        np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)

    def test_module_has_gradients_and_checks_shapes(self):
        layer = GraphConvolution(4, 2)
        s = sparse_tensor(knn_graph(np.eye(3, 4, dtype=np.float32), k=1).normalized("rw-self"))
        out = layer(torch.ones(3, 4), s)
        out.sum().backward()
        assert out.shape == (3, 2) and layer.weight.grad is not None
        with pytest.raises(CopyseekError, match="shapes"):
            layer(torch.ones(3, 5), s)


def test_relevance_ranks_reports_near_the_clean_images_first():
    x, family = families(n_families=6, size=12, dim=32, noise=0.6, seed=4)
    rng = np.random.default_rng(0)
    clean = np.zeros(len(x), bool)
    clean[rng.choice(np.flatnonzero(family == 0), 3, replace=False)] = True
    noisy = ~clean & ((family == 0) | (rng.random(len(x)) < 0.3))
    relevance = gcn_relevance(x, clean, noisy, GCNParams(epochs=60))
    right, wrong = relevance[noisy & (family == 0)], relevance[noisy & (family != 0)]
    assert right.mean() > wrong.mean() + 0.2
    assert ((relevance >= 0) & (relevance <= 1)).all()


@pytest.mark.parametrize("options", [{"k": 0}, {"noisy_weight": 0.0}, {"dropout": 1.0}])
def test_bad_parameters_are_refused(options):
    with pytest.raises(CopyseekError):
        GCNParams(**options)


def test_masks_are_checked():
    x, _ = families(n_families=2, size=4)
    with pytest.raises(CopyseekError, match="clean"):
        gcn_relevance(x, np.zeros(8, bool), np.ones(8, bool))
    with pytest.raises(CopyseekError, match="both"):
        gcn_relevance(x, np.ones(8, bool), np.ones(8, bool))
