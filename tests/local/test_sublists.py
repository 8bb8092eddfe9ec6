from dataclasses import replace

import numpy as np
import pytest

from copyseek.errors import CopyseekError
from copyseek.local import LocalSearcher, SearchParams
from copyseek.local.codec import Codec
from copyseek.local.search import pack_features
from copyseek.local.sublists import MAX_SPLIT, TARGET_LIST, SplitLists, auto_split, residuals


@pytest.fixture(scope="module")
def codec():
    return Codec.load()


@pytest.fixture(scope="module")
def small_codec(codec):
    """The shipped codec with its first 32 lists only: every list can be visited in a test."""
    return replace(codec, coarse=codec.coarse[:32])


@pytest.fixture(scope="module")
def stored(codec):
    """(codes, lists) of 20,000 random descriptors, as a chunk stores them."""
    x = np.random.default_rng(0).normal(size=(20_000, codec.dim)).astype(np.float32) * 0.1
    return codec.encode(x), codec.assign(x).astype(np.uint16)


def test_auto_split_keeps_lists_near_the_target_length():
    assert auto_split(3_200_000, 4096) == 1  # 10k references of 320 descriptors
    assert auto_split(320_000_000, 4096) == MAX_SPLIT  # 1M references
    for descriptors in (40_000_000, 80_000_000, 160_000_000):
        split = auto_split(descriptors, 4096)
        assert TARGET_LIST <= descriptors / (4096 * split) < 2 * TARGET_LIST
    assert auto_split(10**12, 4096) == MAX_SPLIT
    assert auto_split(10**12, 16384) == 4  # at most 65,536 lists: sub-list ids are uint16


def test_refuses_a_split_past_65536_lists(codec):
    with pytest.raises(CopyseekError, match="at most 65536 lists"):
        SplitLists(replace(codec, coarse=np.tile(codec.coarse, (2, 1))), np.zeros((16, codec.dim), np.float32))


@pytest.mark.parametrize("split", [3, 32, -1])
def test_rejects_a_split_that_is_not_a_power_of_two_up_to_16(split):
    with pytest.raises(CopyseekError, match="split"):
        SearchParams(split=split)


def test_each_descriptor_goes_to_the_nearest_sub_list_of_its_own_list(codec, stored):
    codes, lists = stored
    split = SplitLists.fit(codec, codes, lists, 4)
    ids = split.assign(codes, lists)
    assert split.centroids.shape == (4, codec.dim) and split.nlist == 4 * codec.nlist
    np.testing.assert_array_equal(ids // 4, lists)
    r = residuals(codec, codes, lists)
    distances = ((r[:, None, :] - split.centroids[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(ids % 4, distances.argmin(1))
    assert len(np.unique(ids % 4)) == 4  # the k-means centroids all get descriptors


def test_sub_list_ids_do_not_depend_on_the_decoding_block(codec, stored, monkeypatch):
    from copyseek.local import sublists as module

    codes, lists = stored
    split = SplitLists.fit(codec, codes, lists, 2)
    whole = split.assign(codes, lists)
    monkeypatch.setattr(module, "DECODE_BLOCK", 999)
    np.testing.assert_array_equal(split.assign(codes, lists), whole)


def test_quantizer_holds_the_sub_list_centroids_in_id_order(codec, stored):
    codes, lists = stored
    split = SplitLists.fit(codec, codes, lists, 2)
    probes = codec.coarse[[5, 77]] + split.centroids[[1, 0]]
    np.testing.assert_array_equal(split.quantizer().search(probes, 1)[1][:, 0], [5 * 2 + 1, 77 * 2 + 0])


def test_probe_returns_the_nearest_sub_lists_of_the_nearest_codec_lists(codec, stored):
    codes, lists = stored
    split = SplitLists.fit(codec, codes, lists, 8)
    x = codec.quantizer.decode(codes[:50])
    distances, ids = split.probe(x, 6)
    assert distances.shape == ids.shape == (50, 6)
    centres = split.quantizer().reconstruct_n(0, split.nlist)
    nearest_lists = codec.coarse_index.search(x, 6)[1]
    for row in range(50):
        candidates = (nearest_lists[row][:, None] * 8 + np.arange(8)).ravel()
        exact = ((x[row] - centres[candidates]) ** 2).sum(1)
        np.testing.assert_array_equal(np.sort(ids[row]), np.sort(candidates[np.argsort(exact)[:6]]))
        np.testing.assert_allclose(distances[row], ((x[row] - centres[ids[row]]) ** 2).sum(1), rtol=1e-4, atol=1e-4)


def searcher_of(codec, reference_features, **params) -> LocalSearcher:
    searcher = LocalSearcher(codec, SearchParams(flat_max=1000, **params))
    searcher.add(pack_features(codec, reference_features))
    return searcher


def test_split_index_visiting_every_list_finds_what_the_codec_lists_find(branch, small_codec, references, reference_features):
    """With every list visited both indexes scan all codes: the split changes the lists, not the results."""
    from tests.local.conftest import crop, jpeg

    query = branch.extract([jpeg(crop(references[3], (100, 80, 420, 330)))], query=True)
    found = []
    for split in (1, 4):
        searcher = searcher_of(small_codec, reference_features, nprobe=32, split_nprobe=32 * split, split=split)
        found.append(searcher.search(query, k=5)[0])
        assert searcher.index.nlist == 32 * split
    assert found[1].rows[0] == 3
    np.testing.assert_array_equal(found[0].rows, found[1].rows)
    np.testing.assert_array_equal(found[0].scores, found[1].scores)


def test_split_by_collection_size_is_the_default(branch, small_codec, references, reference_features, monkeypatch):
    from copyseek.local import sublists as module

    monkeypatch.setattr(module, "TARGET_LIST", 16)  # these ~12,000 descriptors then count as a large collection
    searcher = searcher_of(small_codec, reference_features, split_nprobe=7)
    assert searcher.search(branch.extract([references[5]], query=True), k=1)[0].rows[0] == 5
    assert searcher.index.nlist == 32 * auto_split(len(searcher.codes), 32) == 32 * MAX_SPLIT
    assert searcher.index.nprobe == 7
