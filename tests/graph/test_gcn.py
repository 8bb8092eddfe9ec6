from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from copyseek.errors import CopyseekError  # noqa: E402
from copyseek.graph.gcn import (  # noqa: E402
    GCNParams,
    GraphConvolution,
    gcn_relevance,
    graph_convolution,
    nearest_references,
    sparse_tensor,
)
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


def look_alike_case():
    """Class 0: 2 clean images, 4 true reports, 3 look-alikes; the look-alikes are images of class 1, next
    to class 1's 3 clean images, and class 1's centre is close to class 0's (so a per-class graph ties
    them to class 0's clean images). Returns (vectors, clean, noisy, negative, true, look-alike)."""
    rng = np.random.default_rng(3)
    dim = 16
    c0 = rng.standard_normal(dim)
    c1 = c0 + 0.9 * rng.standard_normal(dim)  # a near class
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    clean = unit(c0 + 0.3 * rng.standard_normal((2, dim)))
    true = unit(c0 + 0.9 * rng.standard_normal((4, dim)))  # hard true edits, far from the clean images
    look = unit(c1 + 0.3 * rng.standard_normal((3, dim)))
    other = unit(c1 + 0.3 * rng.standard_normal((3, dim)))  # class 1's clean images
    x = np.vstack([clean, true, look, other]).astype(np.float32)
    node = np.arange(len(x))
    is_clean, negative = node < 2, node >= 9
    noisy = ~is_clean & ~negative
    return x, is_clean, noisy, negative, (node >= 2) & (node < 6), (node >= 6) & (node < 9)


def test_context_negatives_lower_a_report_next_to_another_class():
    x, clean, noisy, negative, true, look = look_alike_case()
    params = GCNParams(k=3, epochs=100)
    alone = np.flatnonzero(~negative)
    without = gcn_relevance(x[alone], clean[alone], noisy[alone], params)
    with_context = gcn_relevance(x, clean, noisy, params, negative=negative)
    # the look-alikes drop, relative to the true reports, once class 1's clean images are in the graph
    gap_without = without[true[alone]].mean() - without[look[alone]].mean()
    gap_with = with_context[true].mean() - with_context[look].mean()
    assert with_context[look].max() < without[look[alone]].min()
    assert gap_with > gap_without + 0.1
    assert with_context[negative].max() < 0.5 < with_context[clean].min()


def test_an_all_false_negative_mask_is_the_paper_graph():
    x, clean, noisy, _, _, _ = look_alike_case()
    params = GCNParams(k=3, epochs=20)
    np.testing.assert_allclose(gcn_relevance(x, clean, noisy, params, negative=np.zeros(len(x), bool)),
                               gcn_relevance(x, clean, noisy, params), atol=1e-6)


def test_negatives_are_checked():
    x, clean, noisy, negative, _, _ = look_alike_case()
    with pytest.raises(CopyseekError, match="negative"):
        gcn_relevance(x, clean, noisy, negative=negative | clean)
    with pytest.raises(CopyseekError, match="negative"):
        gcn_relevance(x, clean, noisy & ~negative, negative=negative | noisy)
    with pytest.raises(CopyseekError, match="masks"):
        gcn_relevance(x, clean, noisy, negative=negative[:-1])


def test_nearest_references_excludes_itself_and_orders_by_similarity():
    p = np.array([[1, 0], [0.9, 0.436], [0, 1], [-1, 0], [0.6, 0.8]], np.float32)
    np.testing.assert_array_equal(nearest_references(p, np.array([0, 2]), 2), [[1, 4], [4, 1]])
    assert nearest_references(p, np.array([3]), 10).shape == (1, 4)  # at most the n - 1 others
    assert nearest_references(p, np.array([3]), 0).shape == (1, 0)
    with pytest.raises(CopyseekError, match=">= 0"):
        nearest_references(p, np.array([0]), -1)
    with pytest.raises(CopyseekError, match="rows"):
        nearest_references(p, np.array([5]), 1)


@pytest.mark.parametrize("options", [{"k": 0}, {"noisy_weight": 0.0}, {"dropout": 1.0}, {"context_references": -1}])
def test_bad_parameters_are_refused(options):
    with pytest.raises(CopyseekError):
        GCNParams(**options)


def test_masks_are_checked():
    x, _ = families(n_families=2, size=4)
    with pytest.raises(CopyseekError, match="clean"):
        gcn_relevance(x, np.zeros(8, bool), np.ones(8, bool))
    with pytest.raises(CopyseekError, match="both"):
        gcn_relevance(x, np.ones(8, bool), np.ones(8, bool))
