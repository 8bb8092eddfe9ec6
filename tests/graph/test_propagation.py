from __future__ import annotations

import numpy as np
import pytest

from copyseek.errors import CopyseekError
from copyseek.graph.knn import GraphParams, KnnGraph, knn_graph
from copyseek.graph import propagation
from copyseek.graph.propagation import LabelPropagation, entropy_confidence, margin_confidence
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


class TestMarginConfidence:
    def test_is_the_lead_over_the_runner_up_as_a_share_of_the_mass(self):
        z = np.array([[3.0, 1.0, 0.0], [1.0, 3.0, 0.0], [2.0, 2.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
        np.testing.assert_allclose(margin_confidence(z), [0.5, 0.5, 0.0, 1.0, 0.0])
        np.testing.assert_array_equal(margin_confidence(np.array([[2.0], [0.0]])), [1, 0])

    def test_a_tie_between_two_classes_is_unsure_though_entropy_calls_it_surer(self):
        tie, lead = [0.5, 0.5, 0.0, 0.0, 0.0], [0.4, 0.15, 0.15, 0.15, 0.15]
        z = np.array([tie, lead])
        assert entropy_confidence(z)[0] > entropy_confidence(z)[1]
        assert margin_confidence(z)[0] < margin_confidence(z)[1]


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

    def test_margin_confidence_is_the_fitted_nodes_margin_and_ranks_right_labels_first(self, data):
        graph, family = data
        labels = one_seed_per_family(family, range(20))
        lp = LabelPropagation(confidence="margin").fit(graph, labels)
        free = labels < 0
        # scores_ are kept in float32, the confidence comes from the float64 scores
        np.testing.assert_allclose(lp.confidence_[free], margin_confidence(lp.scores_)[free], rtol=1e-5)
        confident = lp.confidence_[free] >= np.median(lp.confidence_[free])
        right = (lp.labels_ == family)[free]
        assert right[confident].mean() >= right[~confident].mean()
        assert lp.get_params()["confidence"] == "margin"

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
        np.testing.assert_allclose(balanced[:, 0], scores[:, 0] / 10, rtol=1e-6)  # float32 scores
        np.testing.assert_allclose(balanced[:, 1], scores[:, 1], rtol=1e-6)

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

    @pytest.mark.parametrize(
        "options",
        [{"alpha": 1.0}, {"abstain": -1.0}, {"min_confidence": 2.0}, {"self_train": -0.1}, {"self_train": 1.5},
         {"self_weight": 0.0}, {"self_weight": 2.0}, {"self_rounds": 0}, {"self_rounds": 1.5}, {"self_rounds": True}, {"self_select": "best"},
         {"confidence": "softmax"}],
    )
    def test_bad_parameters_are_refused(self, options):
        with pytest.raises(CopyseekError, match=list(options)[0]):
            LabelPropagation(**options)


def graph_of(edges: list[tuple[int, int, float]], n: int) -> KnnGraph:
    """A union graph with exactly these weighted edges (i lists j)."""
    lists: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    for i, j, w in edges:
        lists[i].append((j, w))
    k = max(len(row) for row in lists)
    neighbors, sims = np.full((n, k), -1, np.int64), np.full((n, k), -np.inf, np.float32)
    for i, row in enumerate(lists):
        for c, (j, w) in enumerate(row):
            neighbors[i, c], sims[i, c] = j, w
    return KnnGraph(neighbors, sims, GraphParams(k=k, gamma=1.0, symmetrize="union"))


def chain_and_clique(length: int = 10, clique: int = 10, weak: float = 0.3):
    """Class 0: a seed at the head of a chain of `length` nodes; class 1: a seed in a clique, which
    touches the chain's far end by one weak edge. Plain LP's class-0 mass fades along the chain, so
    the clique's class wins the far end."""
    n = length + 1 + clique
    edges = [(i, i + 1, 1.0) for i in range(length)]
    members = range(length + 1, n)
    edges += [(i, j, 1.0) for i in members for j in members if i < j] + [(length, length + 1, weak)]
    labels = np.full(n, -1)
    labels[0], labels[length + 1] = 0, 1
    return graph_of(edges, n), np.array([0] * (length + 1) + [1] * clique), labels


class TestComponentsAndBlocks:
    """Propagation is solved per connected component, for the classes seeded there, CLASS_BLOCK
    classes at a time: the same scores as one dense solve over the whole graph."""

    @staticmethod
    def dense_scores(graph, labels, alpha):
        classes = np.unique(labels[labels >= 0])
        y = np.zeros((graph.n_nodes, len(classes)))
        y[labels >= 0, np.searchsorted(classes, labels[labels >= 0])] = 1.0
        s = graph.normalized("sym").toarray()
        return (1 - alpha) * np.linalg.solve(np.eye(graph.n_nodes) - alpha * s, y) / y.sum(axis=0)

    def test_scores_equal_one_dense_solve_in_blocks_of_any_size(self, monkeypatch):
        x, family = families(n_families=12, size=8, noise=0.8, seed=3)  # several components
        graph = knn_graph(x, k=5, symmetrize="mutual")
        from scipy.sparse.csgraph import connected_components

        assert connected_components(graph.normalized(), directed=False)[0] > 2
        labels = np.full(len(family), -1)
        labels[::7] = family[::7]  # some classes seeded in several places
        expected = self.dense_scores(graph, labels, 0.9)
        for block in (1, 3, 256):
            monkeypatch.setattr(propagation, "CLASS_BLOCK", block)
            lp = LabelPropagation(alpha=0.9, tol=1e-10).fit(graph, labels)
            np.testing.assert_allclose(lp.scores_, expected, rtol=1e-5, atol=1e-8)

    def test_a_component_without_seeds_of_a_class_gets_none_of_it(self):
        x, family = families(n_families=6, size=8, noise=0.3, seed=4)
        graph = knn_graph(x, k=4, symmetrize="mutual")
        from scipy.sparse.csgraph import connected_components

        component = connected_components(graph.normalized(), directed=False)[1]
        assert (component != component[0]).sum() > 10
        labels = np.full(len(family), -1)
        labels[0] = 7
        lp = LabelPropagation(alpha=0.99).fit(graph, labels)
        assert (lp.scores_[component != component[0]] == 0).all()
        assert (lp.labels_[component != component[0]] == -1).all()
        assert (lp.scores_[component == component[0]] > 0).all()


class TestScoreSummary:
    def test_blocks_in_any_split_give_the_dense_measures(self):
        rng = np.random.default_rng(5)
        z = rng.random((30, 11)) ** 3
        z[3] = 0.0
        z[4, [2, 7]] = 5.0  # a tie: the first class wins, as argmax
        for cuts in ([11], [1, 10], [4, 3, 4], [1] * 11):
            summary = propagation.ScoreSummary(30)
            start = 0
            for width in cuts:
                summary.add(np.arange(30), np.arange(start, start + width), z[:, start : start + width])
                start += width
            np.testing.assert_array_equal(summary.best, z.argmax(axis=1))
            np.testing.assert_allclose(summary.margin(), margin_confidence(z), atol=1e-12)
            np.testing.assert_allclose(summary.entropy(11), [1 - entropy_loop(r) / np.log(11) if r.sum() else 0 for r in z], atol=1e-12)

    def test_without_scores_the_labels_and_confidences_are_the_same(self, data):
        graph, family = data
        labels = one_seed_per_family(family, range(0, 20, 2))
        options = dict(abstain=0.01, self_train=0.1, self_select="class", confidence="margin")
        kept = LabelPropagation(**options).fit(graph, labels)
        lean = LabelPropagation(keep_scores=False, **options).fit(graph, labels)
        assert lean.scores_ is None and kept.scores_.shape == (graph.n_nodes, 10)
        for name in ("labels_", "confidence_", "mass_", "pseudo_seeds_"):
            np.testing.assert_array_equal(getattr(lean, name), getattr(kept, name))
        with pytest.raises(CopyseekError, match="keep_scores"):
            LabelPropagation(keep_scores="no")

    def test_progress_counts_the_component_label_pairs(self, data, capsys):
        graph, family = data
        labels = one_seed_per_family(family, range(4))
        LabelPropagation(progress=True, self_train=0.1).fit(graph, labels)
        err = capsys.readouterr().err
        assert "propagating" in err and "self-training 1/1" in err
        LabelPropagation().fit(graph, labels)
        assert capsys.readouterr().err == ""


class TestSelfTraining:
    def test_confident_pseudo_seeds_carry_a_label_further_along_a_chain(self):
        graph, truth, labels = chain_and_clique()
        plain = LabelPropagation(alpha=0.8).fit(graph, labels)
        tuned = LabelPropagation(alpha=0.8, self_train=0.6).fit(graph, labels)
        assert (tuned.labels_ == truth).sum() >= (plain.labels_ == truth).sum() + 2
        assert (tuned.labels_ == truth)[plain.labels_ == truth].all()  # nothing plain LP got right is lost
        assert tuned.pseudo_seeds_.sum() == int(0.6 * 19) and not tuned.pseudo_seeds_[labels >= 0].any()
        assert not plain.pseudo_seeds_.any()
        np.testing.assert_array_equal(tuned.labels_[labels >= 0], labels[labels >= 0])
        assert tuned.iterations_ > plain.iterations_  # both propagations counted

    def test_zero_is_plain_propagation_exactly(self, data):
        graph, family = data
        labels = one_seed_per_family(family, range(10))
        plain = LabelPropagation(abstain=0.01).fit(graph, labels)
        off = LabelPropagation(abstain=0.01, self_train=0.0, self_weight=0.5, self_rounds=3).fit(graph, labels)
        for name in ("labels_", "confidence_", "scores_", "mass_", "iterations_"):
            np.testing.assert_array_equal(getattr(off, name), getattr(plain, name))

    def test_pseudo_seeds_count_in_balance_by_weight(self, data):
        graph, family = data
        labels = one_seed_per_family(family, range(20))
        first = LabelPropagation(alpha=0.9, tol=1e-10).fit(graph, labels)
        lp = LabelPropagation(alpha=0.9, tol=1e-10, self_train=0.2, self_weight=0.5).fit(graph, labels)
        pseudo = np.flatnonzero(lp.pseudo_seeds_)
        assert len(pseudo) == int(0.2 * 180)
        # the most confident unlabelled nodes of the first propagation, as seeds of its best class
        assert first.confidence_[pseudo].min() >= np.delete(first.confidence_, np.r_[pseudo, np.flatnonzero(labels >= 0)]).max()
        y = np.zeros((len(family), 20))
        y[labels >= 0, labels[labels >= 0]] = 1.0
        y[pseudo, first.scores_[pseudo].argmax(axis=1)] = 0.5
        s = graph.normalized("sym").toarray()
        z = 0.1 * np.linalg.solve(np.eye(len(family)) - 0.9 * s, y) / y.sum(axis=0)
        np.testing.assert_allclose(lp.scores_, z, rtol=1e-6, atol=1e-9)  # scores are kept in float32
        np.testing.assert_allclose(lp.mass_, z.max(axis=1), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(lp.confidence_[labels < 0], entropy_confidence(z)[labels < 0], atol=1e-6)

    def test_abstention_and_min_confidence_still_apply(self, data):
        graph, family = data
        labels = one_seed_per_family(family, range(10))
        lp = LabelPropagation(abstain=0.02, self_train=0.3).fit(graph, labels)
        unseeded = family >= 10
        assert (lp.labels_[unseeded] == -1).mean() >= 0.8
        assert not lp.pseudo_seeds_[unseeded].any() or (lp.labels_[lp.pseudo_seeds_] >= 0).all()
        picky = LabelPropagation(min_confidence=0.5, self_train=0.3).fit(graph, labels)
        unsure = (picky.confidence_ < 0.5) & (labels < 0)
        assert unsure.any() and (picky.labels_[unsure] == -1).all()

    def test_per_class_selection_gives_the_less_confident_class_pseudo_seeds(self):
        graph, truth, labels = chain_and_clique()
        pick = {how: LabelPropagation(alpha=0.8, self_train=0.3, self_select=how).fit(graph, labels).pseudo_seeds_
                for how in ("global", "class")}
        assert (truth[pick["global"]] == 1).all()  # the clique's nodes are the most confident
        assert (truth[pick["class"]] == 0).sum() == 2  # 30% of the 6 chain nodes class 0 wins, rounded

    def test_per_class_selection_takes_the_fraction_of_each_class(self, data):
        graph, family = data
        labels = one_seed_per_family(family, range(20))
        first = LabelPropagation().fit(graph, labels)
        lp = LabelPropagation(self_train=0.25, self_select="class").fit(graph, labels)
        best = first.scores_.argmax(axis=1)
        unlabelled = labels < 0
        expected = np.rint(0.25 * np.bincount(best[unlabelled], minlength=20))
        np.testing.assert_array_equal(np.bincount(best[lp.pseudo_seeds_], minlength=20), expected)
        for c in range(20):  # each class's most confident nodes
            mine = unlabelled & (best == c)
            if lp.pseudo_seeds_[mine].any() and (~lp.pseudo_seeds_[mine]).any():
                assert first.confidence_[mine & lp.pseudo_seeds_].min() >= first.confidence_[mine & ~lp.pseudo_seeds_].max()

    def test_rounds_choose_fresh_pseudo_seeds_and_params_round_trip(self, data):
        graph, family = data
        labels = one_seed_per_family(family, range(20))
        lp = LabelPropagation(self_train=0.3, self_weight=0.5, self_rounds=3, self_select="class")
        assert LabelPropagation(**lp.get_params()).get_params() == lp.get_params()
        lp.fit(graph, labels)
        assert lp.pseudo_seeds_.sum() > 0
        assert (lp.labels_ == family).mean() >= 0.9
