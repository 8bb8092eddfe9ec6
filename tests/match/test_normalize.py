import numpy as np
import pytest

from copyseek.errors import CopyseekError
from copyseek.match.normalize import BackgroundNormalizer, CollectionNormalizer


def unit(rows):
    rows = np.asarray(rows, np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_offset_is_beta_times_mean_of_top_n_background_similarities():
    background = unit([[1, 0, 0], [0.8, 0.6, 0], [0, 1, 0], [0, 0, 1]])
    query = unit([[1, 0, 0]])
    offsets = BackgroundNormalizer(background, beta=0.5, n=2).offsets(query)
    assert offsets[0] == pytest.approx(0.5 * (1.0 + 0.8) / 2)


def test_n_larger_than_background_uses_all():
    background = unit([[1, 0], [0, 1]])
    assert BackgroundNormalizer(background, n=5).offsets(unit([[1, 1]]))[0] == pytest.approx(np.sqrt(0.5))


def collection_of(rows):
    from copyseek.describe.global_branch import VectorSearcher

    vectors = unit(rows)
    searcher = VectorSearcher(vectors.shape[1])
    searcher.add({"vectors": vectors})
    return searcher


def test_collection_offset_pools_background_and_references_past_the_nearest():
    background = unit([[0, 0, 1], [1, 1, 0]])  # similarities 0 and 0.707 to the query
    # the nearest reference (the query's own, 1.0) is skipped; then 0.8 and 0.6 join the background's 0.707
    collection = collection_of([[1, 0, 0], [0.8, 0.6, 0], [0.6, 0.8, 0], [0, 1, 0]])

    offsets = CollectionNormalizer(background, collection, beta=1.0, n=3, skip=1).offsets(unit([[1, 0, 0]]))
    assert offsets[0] == pytest.approx((0.8 + np.sqrt(0.5) + 0.6) / 3, abs=1e-6)
    with_nearest = CollectionNormalizer(background, collection, beta=1.0, n=3, skip=0).offsets(unit([[1, 0, 0]]))
    assert with_nearest[0] == pytest.approx((1.0 + 0.8 + np.sqrt(0.5)) / 3, abs=1e-6)


def test_collection_offset_grows_with_the_collection():

    background = unit([[0, 0, 1]])
    query = unit([[1, 0.1, 0]])
    small = CollectionNormalizer(background, collection_of([[1, 0.1, 0]]), n=2).offsets(query)[0]
    grown = CollectionNormalizer(background, collection_of([[1, 0.1, 0], [1, 0.3, 0], [1, 0.4, 0]]), n=2).offsets(query)[0]
    plain = BackgroundNormalizer(background, n=2).offsets(query)[0]
    assert small == pytest.approx(plain, abs=1e-6)  # only the skipped reference: the background alone
    assert grown > small + 0.5


def test_collection_offset_rejects_a_negative_skip():

    with pytest.raises(CopyseekError, match="nearest references"):
        CollectionNormalizer(unit([[1, 0]]), collection_of([[1, 0]]), skip=-1)
