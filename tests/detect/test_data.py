import numpy as np

from copyseek.detect.data import Sample, SyntheticQueries, layout_boxes, load_photos
from copyseek.detect.train import image_paths, load_pool, save_pool
from copyseek.edits import Layout


def test_synthetic_queries_are_labelled(photo_list):
    data = SyntheticQueries(load_photos(image_paths(str(photo_list)), 96), 64)
    rng = np.random.default_rng(0)
    samples = [data.sample(rng) for _ in range(12)]
    for s in samples:
        assert s.image.shape == (64, 64, 3) and s.image.dtype == np.uint8
        assert (s.labels == 0).sum() <= 1
        assert np.all(s.boxes >= 0) and np.all(s.boxes <= 64) and np.all(s.boxes[:, 2:] > s.boxes[:, :2])
    assert any((s.labels == 0).sum() == 1 for s in samples)
    assert all(np.all(s.alternatives >= 0) and np.all(s.alternatives <= 64) for s in samples)


def test_flip_mirrors_boxes():
    s = Sample(np.zeros((10, 20, 3), np.uint8), np.array([[2.0, 1.0, 6.0, 5.0]], np.float32), np.array([0]))
    assert np.allclose(s.flipped().boxes, [[14, 1, 18, 5]])


def test_layout_boxes_rescale_and_drop_slivers():
    layout = Layout((200, 100), np.array([0.0, 0.0, 100.0, 100.0]), np.array([[10.0, 10.0, 11.0, 90.0]]))
    boxes, labels = layout_boxes(layout, (100, 100))
    assert np.allclose(boxes, [[0, 0, 50, 100]]) and list(labels) == [0]  # the 0.5-px overlay is gone


def test_pool_round_trip(tmp_path):
    samples = [Sample(np.full((8, 8, 3), i, np.uint8), np.ones((i, 4), np.float32), np.zeros(i, np.int64),
                      np.full((2 - i, 4), i, np.float32)) for i in range(3)]
    save_pool(samples, tmp_path / "pool.npz")
    back = load_pool(tmp_path / "pool.npz")
    assert [len(s.labels) for s in back] == [0, 1, 2] and back[2].image[0, 0, 0] == 2
    assert [len(s.alternatives) for s in back] == [2, 1, 0] and back[1].alternatives[0, 0] == 1
    # a pool saved before alternatives were recorded loads with none
    np.savez(tmp_path / "old.npz", images=np.zeros((1, 8, 8, 3), np.uint8), counts=np.array([1]),
             boxes=np.ones((1, 4), np.float32), labels=np.zeros(1, np.int64))
    assert load_pool(tmp_path / "old.npz")[0].alternatives.shape == (0, 4)


def test_flip_mirrors_alternatives_too():
    s = Sample(np.zeros((10, 20, 3), np.uint8), np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
               np.array([[0.0, 0.0, 5.0, 10.0]], np.float32))
    assert np.allclose(s.flipped().alternatives, [[15, 0, 20, 10]])
