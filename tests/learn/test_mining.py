"""Collection miners (learn/mining.py): manifold and Euclidean tuples, their batches, and training with them."""

import numpy as np
import pytest
import torch

from copyseek.errors import CopyseekError
from copyseek.graph.mining import MinedExamples
from copyseek.learn.config import TrainConfig
from copyseek.learn.data import Batch
from copyseek.learn.mining import (
    KnnMiner, ManifoldMiner, MinedBatches, MiningParams, PhotoBatches, PoolNegatives, describe_arrays,
    describe_photos, hardest_pool_negatives, mining_precision, square_photo,
)
from copyseek.learn.train import Trainer
from tests.graph.families import families
from tests.learn.tiny import tiny_model
from tests.making import write_photos


def chains(n_chains: int = 6, length: int = 8, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Families that are curved chains: the two ends of a chain are far apart in Euclidean terms but
    joined through the chain's middle (the manifold the paper mines), each chain close to another."""
    rng = np.random.default_rng(seed)
    vectors, family = [], []
    for c in range(n_chains):
        a, b = rng.standard_normal(dim), rng.standard_normal(dim)
        for t in np.linspace(0, 1, length):
            vectors.append(np.cos(1.2 * t) * a + np.sin(1.2 * t) * b + 0.05 * rng.standard_normal(dim))
            family.append(c)
    x = np.asarray(vectors)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), np.asarray(family)


@pytest.mark.parametrize("miner", [ManifoldMiner, KnnMiner])
def test_miners_find_positives_in_the_family(miner):
    vectors, family = families(n_families=12, size=6, noise=0.4)
    mined = miner(MiningParams(k_positive=3, k_negative=3, graph_k=5, anchors="all")).mine(vectors)
    assert len(mined.anchors) == len(vectors)
    assert mined.positives.shape == (len(vectors), 3) and mined.negatives.shape == (len(vectors), 3)
    assert not (mined.positives == mined.anchors[:, None]).any()
    assert mining_precision(mined, family)[0] > 0.8


def test_manifold_positives_are_not_euclidean_neighbours_but_knn_positives_are():
    vectors, family = chains()
    params = MiningParams(k_positive=2, k_negative=2, graph_k=3, euclidean_k=2, anchors="all")
    manifold = ManifoldMiner(params).mine(vectors)
    knn = KnnMiner(params).mine(vectors)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    nearest2 = np.argsort(-sims, axis=1)[:, :2]
    for anchor, positives in zip(manifold.anchors, manifold.positives):
        assert not np.isin(positives[positives >= 0], nearest2[anchor]).any()
    np.testing.assert_array_equal(np.sort(knn.positives, axis=1), np.sort(nearest2[knn.anchors], axis=1))
    assert mining_precision(manifold, family)[0] > 0.8  # far in Euclidean terms, yet in the chain


def test_manifold_negatives_are_euclidean_neighbours_outside_the_family():
    vectors, family = chains()
    params = MiningParams(k_positive=2, k_negative=4, graph_k=3, manifold_pool=8, anchors="all")
    manifold, knn = ManifoldMiner(params).mine(vectors), KnnMiner(params).mine(vectors)
    assert (manifold.negatives >= 0).any()
    assert mining_precision(manifold, family)[1] == 1.0 > mining_precision(knn, family)[1]


def test_stationary_anchors_are_fewer_than_all_images():
    vectors, _ = families(n_families=10, size=6, noise=0.4)
    stationary = ManifoldMiner(MiningParams(anchors="stationary", graph_k=5)).mine(vectors)
    assert 0 < len(stationary.anchors) < len(vectors)


def test_mining_precision_counts_only_mined_rows():
    mined = MinedExamples(np.array([0, 3]), np.array([[1, 2], [4, -1]]), np.array([[3, -1], [0, 5]]))
    family = np.array([0, 0, 1, 1, 1, 1])
    assert mining_precision(mined, family) == (pytest.approx(3 / 3 - 1 / 3), pytest.approx(2 / 3))


def test_k_values_scale_with_the_collection_and_are_checked():
    small, large = MiningParams().resolved(100), MiningParams().resolved(1_000_000)
    assert small.k_positive < large.k_positive and small.graph_k < large.graph_k
    assert MiningParams(k_positive=7).resolved(100).k_positive == 7
    assert MiningParams(graph_k=40).resolved(10).graph_k == 9  # never more neighbours than other images
    for bad in ({"k_positive": -1}, {"graph_k": 2.5}, {"anchors": "random"}, {"alpha": 1.0}):
        with pytest.raises(CopyseekError):
            MiningParams(**bad)


def test_mined_batches_group_anchors_with_positives_and_give_negatives_their_own_labels():
    mined = MinedExamples(np.array([0, 5, 9]), np.array([[1, 2, 3], [6, 7, -1], [-1, -1, -1]]),
                          np.array([[4, 8], [0, 4], [1, 2]]))
    batches = MinedBatches(mined, groups_per_batch=2, items_per_group=3)
    assert len(batches) == 2  # anchor 9 has no positive
    for seed in range(10):
        rows, labels = batches.sample(np.random.default_rng(seed))
        assert len(set(rows.tolist())) == len(rows)
        by_row = dict(zip(rows.tolist(), labels.tolist()))
        assert by_row[0] == 0 and by_row[5] == 1
        assert sum(1 for r in (1, 2, 3) if by_row.get(r) == 0) == 2  # items_per_group - 1 positives
        assert by_row.get(4) in (None, 2 + 4)  # a negative: its own label
    with pytest.raises(CopyseekError, match="no anchor with a positive"):
        MinedBatches(MinedExamples(np.array([0]), np.full((1, 2), -1), np.full((1, 2), -1)), 2, 3)


def test_describe_photos_gives_unit_rows_and_keeps_the_models_mode(tmp_path):
    paths = write_photos(tmp_path, 5, size=(60, 40))
    model = tiny_model("resnet").train()
    vectors = describe_photos(model, paths, 32, batch_size=2, progress=False)
    assert vectors.shape == (5, 16) and model.training
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    model.eval()
    np.testing.assert_allclose(describe_photos(model, paths[:1], 32, progress=False), vectors[:1], atol=1e-5)


class FixedRows:
    """A sampler that always chooses the same photos, so that only the edits vary between batches."""

    def __init__(self, rows: list[int]):
        self.rows = np.asarray(rows)

    def sample(self, rng):
        return self.rows, np.zeros(len(self.rows), np.int64)


def flipped(image, rng, donors):
    return image.transpose(0)  # PIL's FLIP_LEFT_RIGHT: an edit that is easy to recognise


@pytest.mark.parametrize("edited", [0.0, 0.5, 1.0])
def test_photo_batches_edit_the_chosen_share_of_photos(tmp_path, edited):
    paths = write_photos(tmp_path, 4, size=(40, 40))
    # 200 rows, 4 files: a row drawn twice would always be edited (the next test)
    batches = PhotoBatches(paths * 50, FixedRows(list(range(200))), 32, augment=flipped, edited=edited)
    images = batches.next_batch(np.random.default_rng(0)).images.permute(0, 2, 3, 1).numpy()
    originals = np.stack([square_photo(p, 32) for p in paths] * 50)
    mirrors = originals[:, :, ::-1]
    unchanged = np.all(images == originals, axis=(1, 2, 3))
    assert np.all(unchanged | np.all(images == mirrors, axis=(1, 2, 3)))
    assert abs((~unchanged).mean() - edited) < 0.12


def test_a_photo_drawn_twice_in_a_batch_is_edited_the_second_time(tmp_path):
    paths = write_photos(tmp_path, 2, size=(40, 40))
    batches = PhotoBatches(paths, FixedRows([0, 1, 0, 0]), 32, augment=flipped, edited=0.0)
    images = batches.next_batch(np.random.default_rng(0)).images.permute(0, 2, 3, 1).numpy()
    original = square_photo(paths[0], 32)
    assert np.all(images[0] == original) and np.all(images[1] == square_photo(paths[1], 32))
    assert np.all(images[2] == original[:, ::-1]) and np.all(images[3] == original[:, ::-1])  # repeats: edited


def test_photo_batches_check_the_edited_share():
    with pytest.raises(CopyseekError, match="in \\[0, 1\\]"):
        PhotoBatches([], FixedRows([]), 32, augment=flipped, edited=1.5)
    with pytest.raises(CopyseekError, match="needs an augment"):
        PhotoBatches([], FixedRows([]), 32, edited=0.5)
    with pytest.raises(CopyseekError, match="photo_edits must be in"):
        TrainConfig(images="x", steps=1, photo_edits=-0.1).validate()


@pytest.mark.parametrize("loss", ["contrastive", "recall@k"])
def test_training_with_the_manifold_miner_needs_no_labels_nor_edits(tmp_path, loss):
    write_photos(tmp_path / "imgs", 8, size=(64, 48))
    config = TrainConfig(images=str(tmp_path / "imgs"), steps=2, miner="manifold", loss=loss, arch="resnet-small",
                         dim=16, image_size=32, classes_per_batch=3, views_per_class=3, chunk_size=8, device="cpu",
                         checkpoint_minutes=0.0, mine_k_positive=2, mine_graph_k=3, mine_anchors="all")
    trainer = Trainer(config, tmp_path / "run", progress=False)
    batch = trainer.source.next_batch(np.random.default_rng(0))
    labels = batch.labels.tolist()
    assert batch.images.shape[1:] == (3, 32, 32) and any(labels.count(label) > 1 for label in labels)
    row = trainer.step()
    assert float(row["loss"]) >= 0 and int(row["batch_size"]) >= 4


def test_fine_tuning_copyseek_small_starts_from_its_whole_descriptor(tmp_path):
    pytest.importorskip("onnx")
    from copyseek.describe.models import load_model

    paths = write_photos(tmp_path / "imgs", 4, size=(200, 160))
    config = TrainConfig(images=str(tmp_path / "imgs"), steps=1, init="copyseek-small", freeze_norm=1,
                         image_size=160, classes_per_batch=2, views_per_class=2, device="cpu")
    trainer = Trainer(config, tmp_path / "run", progress=False)
    assert trainer.model.training and not any(
        m.training for m in trainer.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    ours = describe_photos(trainer.model, paths, 160, progress=False)
    theirs = load_model("copyseek-small").embed(np.stack([square_photo(p, 160) for p in paths]))
    np.testing.assert_allclose(ours, theirs, atol=2e-2)


def test_hardest_pool_negatives_are_the_nearest_other_photos_one_per_photo():
    # classes 0..3; class 1 has two items close to class 0's item, class 2 one a little farther
    vectors = np.array([[1, 0, 0], [0.9, 0.1, 0], [0.95, 0.05, 0], [0.8, 0.6, 0], [0, 0, 1], [0, 1, 0]], np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = np.array([0, 1, 1, 2, 3, 0])
    got = hardest_pool_negatives(vectors, labels, np.array([0, 3, 9]), k=3)
    assert got[0].tolist() == [2, 3, 4]  # class 1's nearest item only, then class 2's (class 0's own rows never)
    assert got[1, 0] in (0, 1, 2, 3, 5) and 4 not in got[1]
    assert got[2].tolist() == [-1, -1, -1]  # a class without pool items gets none
    assert hardest_pool_negatives(vectors, labels, np.array([2]), k=5)[0].tolist()[-1] == -1  # 3 other classes


class FixedBatches:
    def __init__(self, labels):
        self.labels = labels

    def next_batch(self, rng):
        n = len(self.labels)
        return Batch(torch.zeros((n, 3, 32, 32), dtype=torch.uint8), torch.tensor(self.labels), None)


def test_pool_negatives_add_each_classes_hardest_pool_items_and_refresh_every_n_batches():
    model = tiny_model("resnet").eval()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(6), 2)
    source = PoolNegatives(FixedBatches([0, 0, 1, 1]), images, labels, model, every=3, negatives=2)
    batch = source.next_batch(rng)
    vectors = describe_arrays(model, images)
    expected = np.unique(hardest_pool_negatives(vectors, labels, np.array([0, 1]), 2))
    assert batch.labels.tolist() == [0, 0, 1, 1, *labels[expected].tolist()]
    assert torch.equal(batch.images[4:], torch.from_numpy(images[expected]).permute(0, 3, 1, 2))
    assert 0 not in labels[hardest_pool_negatives(vectors, labels, np.array([0]), 2)[0]]
    described = []
    source.refresh = lambda: described.append(1) or PoolNegatives.refresh(source)
    for _ in range(6):
        source.next_batch(rng)
    assert len(described) == 2  # at calls 3 and 6 (every 3), not at every batch
    with pytest.raises(CopyseekError, match="pool_every"):
        PoolNegatives(FixedBatches([0, 1]), images, labels, model, every=0, negatives=2)


def test_training_with_the_pool_miner_adds_pool_negatives_to_the_batches(tmp_path):
    write_photos(tmp_path / "imgs", 8, size=(64, 48))
    config = TrainConfig(images=str(tmp_path / "imgs"), steps=2, miner="pool", loss="contrastive", arch="resnet-small",
                         dim=16, image_size=32, classes_per_batch=3, views_per_class=2, chunk_size=8, device="cpu",
                         checkpoint_minutes=0.0, pool_every=1, pool_negatives=2, pool_views=1)
    trainer = Trainer(config, tmp_path / "run", progress=False)
    assert isinstance(trainer.source, PoolNegatives) and len(trainer.source.images) == 16
    batch = trainer.source.next_batch(np.random.default_rng(0))
    assert batch.images.shape[0] > 6 and batch.images.shape[1:] == (3, 32, 32)
    row = trainer.step()
    assert float(row["loss"]) >= 0 and int(row["batch_size"]) > 6
    with pytest.raises(CopyseekError, match="ranking losses only"):
        TrainConfig(images="x", steps=1, miner="pool", loss="distill").validate()
