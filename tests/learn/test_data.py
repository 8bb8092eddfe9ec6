import numpy as np
import pytest
from PIL import Image

from copyseek.describe.preprocess import Preprocess
from copyseek.errors import CopyseekError
from copyseek.learn.data import (
    EditAugment, OnlineViews, PrefetchedViews, ViewBank, ViewMaker, build_view_bank, discover_photos,
)
from tests.making import write_photos


def shift(image: Image.Image, rng: np.random.Generator, donors) -> Image.Image:
    """A cheap stand-in for the benchmark's edits: a random crop."""
    w, h = image.size
    dx, dy = rng.integers(0, w // 4), rng.integers(0, h // 4)
    return image.crop((dx, dy, dx + 3 * w // 4, dy + 3 * h // 4))


def test_each_photo_of_a_flat_folder_is_its_own_class(tmp_path):
    write_photos(tmp_path, 5, size=(64, 48))
    photos = discover_photos(tmp_path)
    assert len(photos.paths) == 5 and list(photos.labels) == [0, 1, 2, 3, 4]


def test_sub_folders_are_classes(tmp_path):
    write_photos(tmp_path / "cats", 2, size=(64, 48))
    write_photos(tmp_path / "dogs", 3, seed=1, size=(64, 48))
    photos = discover_photos(tmp_path)
    assert list(photos.labels) == [0, 0, 1, 1, 1]


def test_a_txt_list_names_the_photos_relative_to_itself(tmp_path):
    paths = write_photos(tmp_path / "imgs", 3, size=(64, 48))
    listing = tmp_path / "holdout.txt"
    listing.write_text("# held out\nimgs/img0000.jpg\n\n" + "\n".join(str(p) for p in paths[1:]) + "\n")
    assert discover_photos(listing).paths == [tmp_path / "imgs/img0000.jpg", *paths[1:]]
    listing.write_text("imgs/missing.jpg\n")
    with pytest.raises(CopyseekError, match="do not exist"):
        discover_photos(listing)


def test_too_few_images_is_an_error(tmp_path):
    write_photos(tmp_path, 1, size=(64, 48))
    with pytest.raises(CopyseekError, match="at least 2"):
        discover_photos(tmp_path)


def test_online_batches_are_classes_times_views(tmp_path):
    write_photos(tmp_path, 6, size=(96, 72))
    maker = ViewMaker(discover_photos(tmp_path), shift, decode_side=32)
    batch = OnlineViews(maker, 32, classes_per_batch=4, views_per_class=3).next_batch(np.random.default_rng(0))
    assert batch.images.shape == (12, 3, 32, 32) and batch.images.dtype.is_floating_point is False
    assert len(set(batch.labels.tolist())) == 4
    assert batch.labels.tolist() == sorted(batch.labels.tolist(), key=batch.labels.tolist().index)
    assert batch.teacher is None
    # The first view of a class is its photo unedited, the others are edits.
    assert not np.array_equal(batch.images[0].numpy(), batch.images[1].numpy())


def test_the_default_augment_makes_benchmark_edits_with_donors(tmp_path):
    write_photos(tmp_path, 4, size=(96, 72))
    maker = ViewMaker(discover_photos(tmp_path), EditAugment(), decode_side=32, include_original=False)
    views = maker.views(0, 3, np.random.default_rng(0))
    assert len(views) == 3 and all(v.mode == "RGB" for v in views)


class FakeTeacher:
    """Stands for a GlobalModel: the mean colour as a 3-d vector."""

    dim = 3
    preprocess = Preprocess("square", 24)

    def embed(self, images):
        v = images.reshape(len(images), -1, 3).mean(1) + 1
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("workers", [0, 2])
def test_view_bank_saves_views_and_teacher_embeddings(tmp_path, workers):
    write_photos(tmp_path / "imgs", 5, size=(96, 72))
    maker = ViewMaker(discover_photos(tmp_path / "imgs"), shift, decode_side=32)
    folder = build_view_bank(tmp_path / "bank", maker, 32, views_per_class=4, seed=3,
                             teacher=FakeTeacher(), teacher_spec="fake", workers=workers)
    bank = ViewBank(folder, classes_per_batch=3, views_per_class=2)
    assert bank.images.shape == (20, 32, 32, 3) and bank.teacher.shape == (20, 3)
    assert bank.meta["teacher"] == "fake"
    batch = bank.next_batch(np.random.default_rng(0))
    assert batch.images.shape == (6, 3, 32, 32) and batch.teacher.shape == (6, 3)
    assert batch.labels.tolist()[::2] == batch.labels.tolist()[1::2]
    # Same seed, same views, whatever the number of worker processes.
    again = build_view_bank(tmp_path / "bank2", maker, 32, views_per_class=4, seed=3)
    assert np.array_equal(np.load(again / "images.npy"), np.asarray(bank.images))


def test_batch_shape_is_validated(tmp_path):
    write_photos(tmp_path, 3, size=(64, 48))
    maker = ViewMaker(discover_photos(tmp_path), shift, decode_side=32)
    with pytest.raises(CopyseekError, match="2 views"):
        OnlineViews(maker, 32, classes_per_batch=2, views_per_class=1)


def test_colour_share_adds_a_colour_edit_to_that_share_of_the_views():
    from PIL import Image

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    plain, coloured = EditAugment(1.0), EditAugment(1.0, colour=1.0)
    differs = [np.asarray(plain(image, np.random.default_rng(s), [])).shape != np.asarray(coloured(image, np.random.default_rng(s), [])).shape
               or not np.array_equal(np.asarray(plain(image, np.random.default_rng(s), [])),
                                     np.asarray(coloured(image, np.random.default_rng(s), [])))
               for s in range(6)]
    assert all(differs)  # the same chain (same seed), then a colour edit
    assert all(np.array_equal(np.asarray(EditAugment(1.0, colour=0.0)(image, np.random.default_rng(s), [])),
                              np.asarray(plain(image, np.random.default_rng(s), []))) for s in range(3))
    with pytest.raises(CopyseekError, match="colour"):
        EditAugment(1.0, colour=1.5)


@pytest.mark.parametrize("workers", [1, 2])
def test_prefetched_views_are_numbered_batches_whatever_the_number_of_workers(tmp_path, workers):
    write_photos(tmp_path, 6, size=(96, 72))
    views = OnlineViews(ViewMaker(discover_photos(tmp_path), shift, decode_side=32), 32, classes_per_batch=3,
                        views_per_class=2)
    source = PrefetchedViews(views, workers, seed=5, first_batch=2)
    try:
        batches = [source.next_batch(np.random.default_rng(99)) for _ in range(3)]
    finally:
        source.close()
    # Batch k is what the views give with default_rng([seed, k]), from first_batch on.
    for k, batch in enumerate(batches, start=2):
        expected = views.next_batch(np.random.default_rng([5, k]))
        assert np.array_equal(batch.images.numpy(), expected.images.numpy())
        assert batch.labels.tolist() == expected.labels.tolist()
    assert not np.array_equal(batches[0].images.numpy(), batches[1].images.numpy())
    assert not source._shutdown.alive


def test_prefetched_views_need_a_worker_and_no_teacher(tmp_path):
    write_photos(tmp_path, 3, size=(64, 48))
    maker = ViewMaker(discover_photos(tmp_path), shift, decode_side=32)
    with pytest.raises(CopyseekError, match="at least 1 worker"):
        PrefetchedViews(OnlineViews(maker, 32, 2, 2), 0, seed=0)
    with pytest.raises(CopyseekError, match="view bank"):
        PrefetchedViews(OnlineViews(maker, 32, 2, 2, teacher=FakeTeacher()), 1, seed=0)
