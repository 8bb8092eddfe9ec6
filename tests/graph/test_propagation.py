from __future__ import annotations

import numpy as np
import pytest

from copyseek.errors import CopyseekError
from copyseek.graph.knn import knn_graph
from copyseek.graph.propagation import LabelPropagation, entropy_confidence
from tests.graph.families import families


def entropy_loop(row: np.ndarray) -> float:
    p = row / row.sum()
    return -sum(q * np.log(q) for q in p if q > 0)


class TestEntropyConfidence:
    def test_matches_a_plain_loop(self):
        z = np.random.default_rng(0).random((6, 4))
        expected = [1 - entropy_loop(r) / np.log(4) for r in z]
        np.testing.assert_allclose(entropy_confidence(z), expected)

    def test_extremes(self):
        np.testing.assert_allclose(entropy_confidence(np.array([[1.0, 0, 0], [1, 1, 1], [0, 0, 0]])), [1, 0, 0], atol=1e-12)
        np.testing.assert_array_equal(entropy_confidence(np.array([[2.0], [0.0]])), [1, 0])


@pytest.fixture(scope="module")
def data():
    x, family = families(n_families=20, size=10, noise=0.8, seed=1)
    return knn_graph(x, k=8, symmetrize="sum"), family


def one_seed_per_family(family, families_seeded):
    labels = np.full(len(family), -1)
    for f in families_seeded:
        labels[np.flatnonzero(family == f)[0]] = f
    return labels


class TestLabelPropagation:
    def test_labels_the_seeded_families(self, data):
        graph, family = data
        labels = one_seed_per_family(family, range(20))
        lp = LabelPropagation().fit(graph, labels)
        assert (lp.labels_ == family).mean() >= 0.9
        assert lp.scores_.shape == (graph.n_nodes, 20) and lp.iterations_ > 0
        assert (lp.confidence_[labels >= 0] == 1).all()

    def test_confident_half_is_more_accurate(self, data):
        graph, family = data
        lp = LabelPropagation().fit(graph, one_seed_per_family(family, range(20)))
        confident = lp.confidence_ >= np.median(lp.confidence_)
        right = lp.labels_ == family
        assert right[confident].mean() >= right[~confident].mean()

    def test_abstains_on_families_without_seeds(self, data):
        graph, family = data
        labels = one_seed_per_family(family, range(10))
        lp = LabelPropagation(abstain=0.02).fit(graph, labels)
        unseeded = family >= 10
        assert (lp.labels_[unseeded] == -1).mean() >= 0.8
        assert (lp.labels_[~unseeded] == family[~unseeded]).mean() >= 0.8
        everyone = LabelPropagation(abstain=0.0).fit(graph, labels)
        assert (everyone.labels_[unseeded] == -1).mean() < (lp.labels_[unseeded] == -1).mean()

    def test_balance_stops_a_crowded_class_from_flooding(self, data):
        graph, family = data
        labels = np.full(len(family), -1)
        labels[np.flatnonzero(family == 0)] = 0  # a whole family labelled
        labels[np.flatnonzero(family == 1)[:1]] = 1  # against one seed
        scores = LabelPropagation(balance=False).fit(graph, labels).scores_
        balanced = LabelPropagation(balance=True).fit(graph, labels).scores_
        np.testing.assert_allclose(balanced[:, 0], scores[:, 0] / 10)
        np.testing.assert_allclose(balanced[:, 1], scores[:, 1])

    def test_user_labels_are_kept_and_classes_may_be_any_ints(self, data):
        graph, family = data
        labels = np.where(one_seed_per_family(family, range(20)) >= 0, family * 10 + 7, -1)
        lp = LabelPropagation().fit(graph, labels)
        assert set(lp.classes_) == set(family * 10 + 7)
        np.testing.assert_array_equal(lp.labels_[labels >= 0], labels[labels >= 0])

    @pytest.mark.parametrize(
        "labels, word",
        [(np.full(200, -1), "at least one"), (np.zeros(5, int), "shape"), (np.zeros(200) + 0.5, "integers")],
    )
    def test_bad_labels_are_refused(self, data, labels, word):
        with pytest.raises(CopyseekError, match=word):
            LabelPropagation().fit(data[0], labels)

    @pytest.mark.parametrize("options", [{"alpha": 1.0}, {"abstain": -1.0}, {"min_confidence": 2.0}])
    def test_bad_parameters_are_refused(self, options):
        with pytest.raises(CopyseekError, match=list(options)[0]):
            LabelPropagation(**options)
