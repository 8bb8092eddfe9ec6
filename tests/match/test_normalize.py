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


QUERY = [[1, 0, 0, 0]]
OWN = [1, 0, 0, 0]  # the reference the query copies
LOOK_ALIKES = [[0.45, 0, 0.893, 0], [0.3, 0, 0, 0.954]]  # cosine 0.45 and 0.3 to the query, not versions of OWN
VERSIONS = [[0.9, 0.436, 0, 0], [0.8, 0, 0.6, 0]]  # cosine 0.9 and 0.8 to OWN


def test_collection_offset_pools_background_and_references_past_the_nearest_and_its_versions():
    background = unit([[0.5, 0, 0, 0.866], [0, 1, 0, 0]])  # similarities 0.5 and 0 to the query
    collection = collection_of([OWN, *VERSIONS, *LOOK_ALIKES])
    offsets = CollectionNormalizer(background, collection, beta=1.0, n=3, skip=1).offsets(unit(QUERY))
    assert offsets[0] == pytest.approx((0.5 + 0.45 + 0.3) / 3, abs=1e-3)
    with_nearest = CollectionNormalizer(background, collection, beta=1.0, n=3, skip=0).offsets(unit(QUERY))
    assert with_nearest[0] == pytest.approx((1.0 + 0.9 + 0.8) / 3, abs=1e-3)


def test_collection_offset_grows_with_distinct_look_alikes_not_with_versions():
    background = unit([[0, 1, 0, 0]])
    plain = BackgroundNormalizer(background, n=2).offsets(unit(QUERY))[0]

    def offset(references):
        return CollectionNormalizer(background, collection_of(references), n=2).offsets(unit(QUERY))[0]

    assert offset([OWN]) == pytest.approx(plain, abs=1e-6)  # only the skipped reference: the background alone
    assert offset([OWN, *VERSIONS]) == pytest.approx(plain, abs=1e-6)
    assert offset([OWN, *LOOK_ALIKES]) == pytest.approx((0.45 + 0.3) / 2, abs=1e-3)


def test_removed_references_count_for_nothing():
    background = unit([[0, 1, 0, 0]])
    collection = collection_of([OWN, *LOOK_ALIKES])
    kept = CollectionNormalizer(background, collection, n=2).offsets(unit(QUERY))[0]
    removed = CollectionNormalizer(background, collection, n=2, removed=[False, True, False]).offsets(unit(QUERY))[0]
    assert kept == pytest.approx((0.45 + 0.3) / 2, abs=1e-3)
    assert removed == pytest.approx((0.3 + 0.0) / 2, abs=1e-3)  # the 0.45 look-alike is gone: the background's 0 joins
    with pytest.raises(CopyseekError, match="each of the collection's 3 rows"):
        CollectionNormalizer(background, collection, removed=[False])


def test_collection_offset_rejects_a_negative_skip():
    with pytest.raises(CopyseekError, match="nearest references"):
        CollectionNormalizer(unit([[1, 0]]), collection_of([[1, 0]]), skip=-1)


def test_best_of_versions_keeps_the_best_of_each_group_of_versions_in_order():
    from copyseek.match.normalize import best_of_versions

    photo, version, other, version_of_other = unit([[1, 0, 0, 0], [0.9, 0.2, 0, 0], [0, 0, 1, 0], [0, 0.1, 0.95, 0]])
    # best scored first: the version of a kept candidate goes, an unrelated one stays where it was
    assert best_of_versions(np.stack([photo, version, other, version_of_other])).tolist() == [0, 2]
    assert best_of_versions(np.stack([version, other, photo])).tolist() == [0, 1]
    # a candidate is compared with the kept ones only, not with those left out
    bridge = unit([[0.7, 0, 0.7, 0]])[0]  # a version of both photo and other (cosine 0.71 > 0.5 with each)
    assert best_of_versions(np.stack([photo, bridge, other])).tolist() == [0, 2]
    assert best_of_versions(np.zeros((0, 4), np.float32)).tolist() == []
    with pytest.raises(CopyseekError, match=r"\(m, dim\) vectors"):
        best_of_versions(photo)
