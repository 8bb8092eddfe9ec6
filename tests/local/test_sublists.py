from dataclasses import replace

import numpy as np
import pytest

from copyseek.errors import CopyseekError
from copyseek.local import LocalSearcher, SearchParams
from copyseek.local.codec import Codec
from copyseek.local.search import pack_features
from copyseek.local.sublists import MAX_SPLIT, TARGET_LIST, SplitLists, auto_split, residuals, share_out


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
    counts = np.full(codec.nlist, 17)
    with pytest.raises(CopyseekError, match="at most 65536 lists"):
        SplitLists(codec, counts, np.zeros((counts.sum(), codec.dim), np.float32))


@pytest.mark.parametrize("split", [3, 32, -1])
def test_rejects_a_split_that_is_not_a_power_of_two_up_to_16(split):
    with pytest.raises(CopyseekError, match="split"):
        SearchParams(split=split)


def test_share_out_gives_long_lists_more_sub_lists_within_the_budget():
    sizes = np.array([0, 10, 100, 1000, 100_000])
    counts = share_out(sizes, 64)
    assert counts.sum() <= 64 and counts.min() >= 1
    assert list(counts[:3]) == [1, 1, 1] and counts[4] > 50 * counts[3] / 10
    # sub-lists end up about equally long: the longest is at most one sub-list length over the shortest split one
    lengths = sizes[3:] / counts[3:]
    assert lengths.max() <= 1.1 * lengths.min() + 1000 / counts[3]
    np.testing.assert_array_equal(share_out(sizes, 5), np.ones(5, np.int64))
    np.testing.assert_array_equal(share_out(sizes, 64, most=8), [1, 1, 1, 1, 8])  # a capped list keeps long sub-lists
    with pytest.raises(CopyseekError, match="cannot split"):
        share_out(sizes, 4)


def test_each_descriptor_goes_to_the_nearest_sub_list_of_its_own_list(codec, stored):
    codes, lists = stored
    split = SplitLists.fit(codec, codes, lists, 4)
    ids = split.assign(codes, lists).astype(np.int64)
    assert split.centroids.shape == (split.nlist, codec.dim) and codec.nlist < split.nlist <= 4 * codec.nlist
    np.testing.assert_array_equal(split.list_of()[ids], lists)
    r = residuals(codec, codes, lists)
    for row in np.random.default_rng(1).choice(len(codes), 300, replace=False):
        own = np.arange(split.first[lists[row]], split.first[lists[row] + 1])
        assert ids[row] == own[((r[row] - split.centroids[own]) ** 2).sum(1).argmin()]
    assert len(np.unique(ids)) > 0.9 * split.nlist  # the k-means centroids get descriptors


def test_long_lists_get_more_sub_lists(codec, stored):
    codes, lists = stored
    split = SplitLists.fit(codec, codes, lists, 4)
    sizes = np.bincount(lists, minlength=codec.nlist)
    long, short = sizes >= np.quantile(sizes, 0.9), sizes <= np.quantile(sizes, 0.1)
    assert split.counts[long].mean() > 2 * split.counts[short].mean()
    per_sub_list = np.bincount(split.assign(codes, lists), minlength=split.nlist)
    per_list = sizes[sizes > 0]
    # what a query descriptor scans: the expected length of the list it lands in
    assert (per_sub_list**2).sum() / per_sub_list.sum() < 0.5 * (per_list**2).sum() / per_list.sum()


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
    l1, l2 = np.flatnonzero(split.counts > 1)[:2]
    ids = [split.first[l1] + 1, split.first[l2]]
    probes = codec.coarse[[l1, l2]] + split.centroids[ids]
    quantizer = split.quantizer()
    quantizer.nprobe = codec.nlist  # every codec list: an exact search of all sub-list centroids
    np.testing.assert_array_equal(quantizer.search(probes, 1)[1][:, 0], ids)


def test_quantizer_returns_the_nearest_sub_lists_of_the_nearest_codec_lists(codec, stored):
    codes, lists = stored
    split = SplitLists.fit(codec, codes, lists, 8)
    x = codec.quantizer.decode(codes[:50])
    quantizer = split.quantizer()
    quantizer.nprobe = 6
    distances, ids = quantizer.search(x, 6)
    assert distances.shape == ids.shape == (50, 6)
    centres = codec.coarse[split.list_of()] + split.centroids
    nearest_lists = codec.coarse_index.search(x, 6)[1]
    for row in range(50):
        candidates = np.concatenate([np.arange(split.first[l], split.first[l + 1]) for l in nearest_lists[row]])
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
        assert 32 * (split > 1) < searcher.index.nlist <= 32 * split and searcher.index.nprobe == searcher.index.nlist
    assert found[1].rows[0] == 3
    np.testing.assert_array_equal(found[0].rows, found[1].rows)
    np.testing.assert_array_equal(found[0].scores, found[1].scores)


def test_split_by_collection_size_is_the_default(branch, small_codec, references, reference_features, monkeypatch):
    from copyseek.local import sublists as module

    monkeypatch.setattr(module, "TARGET_LIST", 16)  # these ~12,000 descriptors then count as a large collection
    searcher = searcher_of(small_codec, reference_features, split_nprobe=7)
    assert searcher.search(branch.extract([references[5]], query=True), k=1)[0].rows[0] == 5
    assert 32 < searcher.index.nlist <= 32 * auto_split(len(searcher.codes), 32) == 32 * MAX_SPLIT
    assert searcher.index.nprobe == 7
