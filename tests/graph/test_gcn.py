from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from copyseek.errors import CopyseekError  # noqa: E402
from copyseek.graph.gcn import (  # noqa: E402
    GCNParams,
    GraphConvolution,
    TwoLayerGCN,
    collection_relevance,
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


def test_two_layer_gcn_has_one_output_column_per_class():
    x, _ = families(n_families=3, size=4, dim=8)
    s = sparse_tensor(knn_graph(x, k=3, symmetrize="union").normalized("rw-self"))
    assert TwoLayerGCN(8, 4, outputs=5)(torch.from_numpy(x), s).shape == (12, 5)
    assert TwoLayerGCN(8, 4)(torch.from_numpy(x), s).shape == (12, 1)


def hub_case():
    """Families 0-5 of 12 images; 2 clean images each; reports against family 0: 4 of its own members
    (true) and 2 members of each of families 1-5 (wrong), some of them nearer family 0's clean images
    than the true ones. Returns (vectors, family, clean rows, report rows)."""
    x, family = families(n_families=6, size=12, dim=32, noise=0.6, seed=4)
    clean = np.concatenate([np.flatnonzero(family == f)[:2] for f in range(6)])
    report = np.concatenate([np.flatnonzero(family == 0)[2:6]] + [np.flatnonzero(family == f)[2:4] for f in range(1, 6)])
    return x, family, clean, report


def test_collection_relevance_is_the_probability_of_the_reported_class():
    """A report of family 0 that belongs to another family has its own family's clean images and
    other members nearby: its probability of family 0 stays low; the true reports score high."""
    x, family, clean, report = hub_case()
    relevance = collection_relevance(x, clean, family[clean], report, np.zeros(len(report), int), GCNParams(epochs=100))
    true = family[report] == 0
    assert relevance[true].min() > relevance[~true].max()
    assert relevance[true].mean() > 0.5 > relevance[~true].mean()
    # the same image reported for every class: the relevances are a distribution over the classes
    row = np.flatnonzero(family == 3)[5]
    spread = collection_relevance(x, clean, family[clean], np.full(6, row), np.arange(6), GCNParams(epochs=100))
    assert spread.sum() == pytest.approx(1.0, abs=1e-5) and spread.argmax() == 3


def test_collection_relevance_takes_any_class_names_and_the_graph_only_images():
    """Class names are any values (mapped in sorted order); images without a label shape the graph
    only; the seed makes it deterministic."""
    x, family, clean, report = hub_case()
    params = GCNParams(epochs=30)
    named = collection_relevance(x, clean, np.array([f"ref{f}" for f in family[clean]]), report,
                                 np.full(len(report), "ref0"), params)
    numbered = collection_relevance(x, clean, family[clean] * 10, report, np.zeros(len(report), int), params)
    np.testing.assert_allclose(named, numbered, atol=1e-6)
    labelled = np.unique(np.r_[clean, report])
    inside = np.searchsorted(labelled, clean), np.searchsorted(labelled, report)
    without = collection_relevance(x[labelled], inside[0], family[clean], inside[1], np.zeros(len(report), int), params)
    assert np.abs(without - named).max() > 1e-3  # the unlabelled members change the graph


def test_collection_relevance_checks_its_labels():
    x, family, clean, report = hub_case()
    with pytest.raises(CopyseekError, match="same length"):
        collection_relevance(x, clean, family[clean][:-1], report, np.zeros(len(report), int))
    with pytest.raises(CopyseekError, match="clean image"):
        collection_relevance(x, clean, family[clean], report, np.full(len(report), 9))
    with pytest.raises(CopyseekError, match="lie in"):
        collection_relevance(x, clean, family[clean], np.array([len(x)]), np.array([0]))
    with pytest.raises(CopyseekError, match="at least one clean"):
        collection_relevance(x, np.zeros(0, int), np.zeros(0, int), report, np.zeros(len(report), int))
