"""Label propagation as a training loop (learn/pseudo.py)."""

import numpy as np
import pytest

from copyseek.errors import CopyseekError
from copyseek.learn.config import TrainConfig
from copyseek.learn.pseudo import (
    LPParams, PseudoLabelBatches, PseudoLabels, propagate_labels, read_labels, verified,
)
from tests.graph.families import families


def few_labels(family: np.ndarray, per_family: int) -> np.ndarray:
    labels = np.full(len(family), -1)
    for f in np.unique(family):
        labels[np.flatnonzero(family == f)[:per_family]] = f
    return labels


def test_propagated_labels_recover_the_families_with_one_label_each():
    vectors, family = families(n_families=10, size=8, noise=0.5)
    labels = few_labels(family, 1)
    pseudo = propagate_labels(vectors, labels, LPParams(k=5))
    assert (pseudo.labels[labels >= 0] == labels[labels >= 0]).all() and pseudo.seed.sum() == 10
    assert (pseudo.confidence[pseudo.seed] == 1).all() and ((pseudo.confidence >= 0) & (pseudo.confidence <= 1)).all()
    assert (pseudo.labels == family).mean() > 0.9
    np.testing.assert_allclose(pseudo.class_weight.mean(), 1.0)


def test_graph_k_follows_the_class_size_when_asked():
    assert LPParams(k=10, k_per_class=None).graph_k(750, 150) == 10
    assert LPParams().graph_k(750, 150) == 10  # the default: a fixed k
    assert LPParams(k=10, k_per_class=0.5).graph_k(750, 150) == 3  # families of 5: ceil(2.5)
    assert LPParams(k=10, k_per_class=0.5).graph_k(660, 60) == 6  # families of 11
    assert LPParams(k=4, k_per_class=0.5).graph_k(660, 60) == 4  # k caps it
    assert LPParams(k=10, k_per_class=0.5).graph_k(3, 1) == 2  # never more than the other photos
    with pytest.raises(CopyseekError, match="per class"):
        LPParams(k_per_class=0)


def test_small_families_do_not_leak_with_a_scaled_k_or_the_default_alpha():
    vectors, family = families(n_families=40, size=4, noise=0.5, seed=1)
    labels = few_labels(family, 1)
    unlabelled = labels < 0
    scaled = propagate_labels(vectors, labels, LPParams(k=10, alpha=0.99, k_per_class=0.5))
    fixed = propagate_labels(vectors, labels, LPParams(k=10, alpha=0.99, k_per_class=None))  # 10 neighbours, 3 in the family
    assert (scaled.labels[unlabelled] == family[unlabelled]).all()
    assert (fixed.labels[unlabelled] == family[unlabelled]).mean() < 0.98
    default = propagate_labels(vectors, labels)  # k = 10 too, but alpha 0.8 keeps the labels near their seeds
    assert (default.labels[unlabelled] == family[unlabelled]).all()


def test_weights_are_confidence_times_class_balance():
    pseudo = PseudoLabels(np.array([0, 0, 0, 1, -1]), np.array([1.0, 0.5, 0.2, 1.0, 0.0]),
                          np.array([True, False, False, True, False]), np.array([0.5, 1.5]))
    np.testing.assert_allclose(pseudo.weights, [0.5, 0.25, 0.1, 1.5, 0.0])


def test_uncertain_photos_are_drawn_less_often_and_classes_uniformly():
    pseudo = PseudoLabels(np.array([0, 0, 0, 1, 1, 1, 1, 1, 1]), np.array([1, 1, 0.1, 1, 1, 1, 1, 1, 1.0]),
                          np.zeros(9, bool), np.array([1.5, 0.5]))
    batches = PseudoLabelBatches(pseudo, classes_per_batch=2, views_per_class=2)
    rng = np.random.default_rng(0)
    drawn = np.concatenate([batches.sample(rng)[0] for _ in range(400)])
    counts = np.bincount(drawn, minlength=9)
    assert counts[2] < counts[0] / 3  # confidence 0.1 against 1
    assert counts[:3].sum() == counts[3:].sum()  # every batch holds both classes, 2 photos each
    with pytest.raises(CopyseekError, match="fewer than 2 classes"):
        PseudoLabelBatches(PseudoLabels(np.array([0, 0, 1]), np.ones(3), np.ones(3, bool), np.ones(2)), 2, 2)


def seeded_classes() -> PseudoLabels:
    """Two classes, each a labelled photo (rows 0 and 5) and four propagated ones of falling confidence."""
    return PseudoLabels(np.repeat([0, 1], 5), np.tile([1.0, 0.9, 0.8, 0.2, 0.1], 2), np.tile([True] + [False] * 4, 2),
                        np.ones(2))


def test_seed_views_put_the_labelled_photos_in_every_class_of_a_batch():
    batches = PseudoLabelBatches(seeded_classes(), classes_per_batch=2, views_per_class=4, seed_views=0.5)
    rng = np.random.default_rng(0)
    for _ in range(50):
        rows, labels = batches.sample(rng)
        for c, seed in ((0, 0), (1, 5)):
            own = rows[labels == c]
            assert len(own) == 4 and (own == seed).sum() == 2  # half the views: the labelled photo, twice
            assert len(set(own[own != seed])) == 2  # the rest: distinct propagated photos


def test_confident_share_keeps_the_most_confident_propagated_photos():
    batches = PseudoLabelBatches(seeded_classes(), classes_per_batch=2, views_per_class=3, confident_share=0.5)
    rng = np.random.default_rng(0)
    drawn = set(np.concatenate([batches.sample(rng)[0] for _ in range(100)]).tolist())
    assert drawn == {0, 1, 2, 5, 6, 7}  # of 4 propagated photos a class, the 2 most confident
    with pytest.raises(CopyseekError, match="confident_share"):
        PseudoLabelBatches(seeded_classes(), 2, 2, confident_share=0.0)
    with pytest.raises(CopyseekError, match="seed_views"):
        PseudoLabelBatches(seeded_classes(), 2, 2, seed_views=1.5)
    with pytest.raises(CopyseekError, match="confident_share must be in"):
        TrainConfig(images="x", steps=1, confident_share=1.5).validate()
    with pytest.raises(CopyseekError, match="seed_views must be in"):
        TrainConfig(images="x", steps=1, seed_views=-0.5).validate()


def test_global_confident_share_keeps_the_surest_of_all_propagated_photos():
    pseudo = seeded_classes()
    pseudo.confidence[6:10] = [0.3, 0.25, 0.2, 0.15]  # class 1's propagated photos: all less sure than class 0's
    batches = PseudoLabelBatches(pseudo, 2, 3, seed_views=0.5, confident_share=0.25, confident_select="global")
    assert [m.tolist() for m in batches.members] == [[0, 1, 2], [5]]  # 2 of the 8 propagated photos, both class 0's
    with pytest.raises(CopyseekError, match="confident_select"):
        PseudoLabelBatches(pseudo, 2, 2, confident_select="best")


def test_verified_keeps_the_propagated_labels_a_labelled_photo_of_their_class_confirms():
    pseudo = seeded_classes()  # labelled photos 0 (class 0) and 5 (class 1)
    pseudo.labels[4] = 1  # photo 4, propagated into class 1
    asked = []

    def verify(photo: int, labelled: int) -> bool:
        asked.append((photo, labelled))
        return {1: 0, 2: 5, 4: 5, 6: 5}.get(photo) == labelled  # photo 2 matches only the other class's

    checked = verified(pseudo, verify)
    assert sorted(asked) == [(1, 0), (2, 0), (3, 0), (4, 5), (6, 5), (7, 5), (8, 5), (9, 5)]  # its own class's only
    np.testing.assert_array_equal(checked.confidence > 0, [1, 1, 0, 0, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(checked.labels, pseudo.labels)  # the labels stay as propagated
    assert pseudo.confidence[2] > 0  # the input is not changed
    drawn = set(np.concatenate([PseudoLabelBatches(checked, 2, 2).sample(np.random.default_rng(s))[0] for s in range(40)]))
    assert drawn <= {0, 1, 4, 5, 6}
    with pytest.raises(CopyseekError, match="pseudo_inliers must be >= 0"):
        TrainConfig(images="x", steps=1, pseudo_inliers=-1).validate()


def test_a_class_of_its_labelled_photo_alone_trains_only_with_seed_views():
    lonely = PseudoLabels(np.array([0, 0, 1, 2, 2]), np.ones(5), np.array([True, False, True, True, False]), np.ones(3))
    assert len(PseudoLabelBatches(lonely, 2, 2).members) == 2
    batches = PseudoLabelBatches(lonely, 3, 2, seed_views=0.5)
    rows, labels = batches.sample(np.random.default_rng(0))
    assert len(batches.members) == 3 and rows[labels == 1].tolist() == [2, 2]  # its two views: the photo, edited


def test_bad_inputs_are_refused():
    vectors, _ = families(n_families=3, size=4)
    with pytest.raises(CopyseekError, match="at least one labelled"):
        propagate_labels(vectors, np.full(12, -1))
    with pytest.raises(CopyseekError, match="integers"):
        propagate_labels(vectors, np.zeros(12))
    with pytest.raises(CopyseekError):
        LPParams(k=0)


def test_labels_csv_names_training_photos(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("image,label\nb,cats\nc,dogs\na,cats\n")
    labels, classes = read_labels(path, ["a", "b", "c", "d"])
    assert classes == ["cats", "dogs"] and labels.tolist() == [0, 0, 1, -1]
    path.write_text("image,label\nz,cats\n")
    with pytest.raises(CopyseekError, match="not training photos"):
        read_labels(path, ["a"])
